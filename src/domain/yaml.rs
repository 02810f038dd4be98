//! A YAML tree that remembers where every scalar sits in the source, byte for byte.
//!
//! Built on `serde-saphyr`'s `Spanned<T>`; values are read from the source text itself, so a plain
//! `1.10` stays `1.10` (not the float 1.1) and `y` stays `y` (not YAML 1.1's `true`).

use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// How a scalar is written, which decides whether it can be edited in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// A block scalar (`|`, `>`), an alias (`*a`), or a quoted scalar with escapes: read, never edited.
    Other,
}

#[derive(Clone, Debug)]
pub enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Scalar, Node)>),
}

#[derive(Clone, Debug)]
pub struct Scalar {
    /// The value as a string (for a plain scalar, its exact source text).
    pub text: String,
    /// Byte range of `text` in the source (inside the quotes), when it can be replaced in place.
    pub content: Option<Range<usize>>,
    pub style: Style,
    /// 1-based line.
    pub line: usize,
    pub is_null: bool,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn scalar(&self) -> Option<&Scalar> {
        match self {
            Node::Scalar(s) if !s.is_null => Some(s),
            _ => None,
        }
    }

    pub fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Node::scalar).map(|s| s.text.as_str())
    }

    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |n, k| n.get(k))
    }
}

/// Parses every document of a YAML stream. Empty documents are dropped.
pub fn parse_documents(src: &str) -> Result<Vec<Node>, String> {
    let raw: Vec<Spanned<Raw>> = serde_saphyr::from_multiple(src).map_err(|e| first_line(&e.to_string()))?;
    Ok(raw.into_iter().map(|r| convert(src, r)).collect())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("invalid YAML").trim_start_matches("error: ").to_string()
}

enum Raw {
    Scalar(Option<String>),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

fn convert(src: &str, n: Spanned<Raw>) -> Node {
    match n.value {
        Raw::Seq(items) => Node::Seq(items.into_iter().map(|i| convert(src, i)).collect()),
        Raw::Map(entries) => Node::Map(
            entries
                .into_iter()
                .filter_map(|(k, v)| {
                    let key = match convert(src, k) {
                        Node::Scalar(s) => s,
                        _ => return None,
                    };
                    Some((key, convert(src, v)))
                })
                .collect(),
        ),
        Raw::Scalar(value) => {
            let line = n.referenced.line() as usize;
            let span = n.referenced.span();
            let range = match (span.byte_offset(), span.byte_len()) {
                (Some(o), Some(l)) => Some(o as usize..(o + l) as usize),
                _ => None,
            };
            let raw = range.clone().and_then(|r| src.get(r));
            Node::Scalar(scalar_from(value, raw, range, line))
        }
    }
}

fn scalar_from(value: Option<String>, raw: Option<&str>, range: Option<Range<usize>>, line: usize) -> Scalar {
    let Some(raw) = raw else {
        let text = value.unwrap_or_default();
        return Scalar { text, content: None, style: Style::Other, line, is_null: false };
    };
    let range = range.expect("raw text comes from a range");
    let quoted = |q: char| raw.len() >= 2 && raw.starts_with(q) && raw.ends_with(q);
    if quoted('"') || quoted('\'') {
        let inner = &raw[1..raw.len() - 1];
        let style = if raw.starts_with('"') { Style::DoubleQuoted } else { Style::SingleQuoted };
        let text = value.unwrap_or_else(|| inner.to_string());
        // Editable only when the value is exactly the bytes between the quotes (no escapes).
        let content = (text == inner && !inner.contains('\\')).then(|| range.start + 1..range.end - 1);
        let style = if content.is_some() { style } else { Style::Other };
        return Scalar { text, content, style, line, is_null: false };
    }
    let multi_line = value.as_deref().is_some_and(|v| v.contains('\n'));
    if raw.starts_with('*') || multi_line || raw.contains('\n') {
        return Scalar {
            text: value.unwrap_or_default(),
            content: None,
            style: Style::Other,
            line,
            is_null: false,
        };
    }
    let is_null = raw.is_empty() || raw == "~" || raw == "null" || raw == "Null" || raw == "NULL";
    Scalar { text: raw.to_string(), content: Some(range), style: Style::Plain, line, is_null }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v)))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(x) = a.next_element()? {
            items.push(x);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key()? {
            let v = a.next_value()?;
            entries.push((k, v));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_source_text_and_byte_range() {
        let src = "a: 1.10\nb: \"x:1\" # c\nc: 'it''s'\nd: |\n  hi\ny: ~\nk: \"é\"\n";
        let docs = parse_documents(src).unwrap();
        let d = &docs[0];
        let a = d.get("a").unwrap().scalar().unwrap();
        assert_eq!((a.text.as_str(), &src[a.content.clone().unwrap()]), ("1.10", "1.10"));
        let b = d.get("b").unwrap().scalar().unwrap();
        assert_eq!((b.style, &src[b.content.clone().unwrap()], b.line), (Style::DoubleQuoted, "x:1", 2));
        let c = d.get("c").unwrap().scalar().unwrap();
        assert_eq!((c.text.as_str(), c.content.clone(), c.style), ("it's", None, Style::Other));
        assert_eq!(d.get("d").unwrap().scalar().unwrap().style, Style::Other);
        assert!(d.get("y").unwrap().scalar().is_none(), "~ is null");
        let k = d.get("k").unwrap().scalar().unwrap();
        assert_eq!(&src[k.content.clone().unwrap()], "é");
    }

    #[test]
    fn several_documents_and_crlf() {
        let src = "a: 1\r\n---\r\nb: two\r\n";
        let docs = parse_documents(src).unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[1].get("b").unwrap().scalar().unwrap();
        assert_eq!(&src[b.content.clone().unwrap()], "two");
        assert_eq!(b.line, 3);
    }
}
