//! A YAML tree that remembers where every scalar sits in the source, byte for byte.
//!
//! Built on `serde-saphyr`'s `Spanned<T>`; values are read from the source text itself, so a plain
//! `1.10` stays `1.10` (not the float 1.1) and `y` stays `y` (not YAML 1.1's `true`). A value
//! reached through an alias (`*tag`) or a merge key (`<<: *base`) points at the scalar where the
//! anchor defines it, so it can be edited there. YAML written inside a literal block string
//! (`patch: |`) can be parsed again with every position in the outer file's terms.

use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// How a scalar is written, which decides whether it can be edited in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// A literal block scalar (`|`): its lines are the source's lines less the indentation.
    Literal,
    /// A folded block scalar (`>`), or a quoted scalar with escapes: read, never edited.
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
    /// For an alias, the range of the anchor's scalar.
    pub content: Option<Range<usize>>,
    pub style: Style,
    /// 1-based line where the value is written (for an alias or a merged key: the anchor's line).
    pub line: usize,
    /// 1-based line where the value is used (the alias), `line` otherwise.
    pub used_line: usize,
    pub is_null: bool,
    /// For a literal block scalar: byte offset of its first content character and its indentation.
    pub block: Option<(usize, usize)>,
}

impl Scalar {
    /// Whether the value comes from an anchor elsewhere (`*a`, `<<: *a`).
    pub fn aliased(&self) -> bool {
        self.line != self.used_line
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().rev().find(|(k, _)| k.text == key).map(|(_, v)| v),
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

    /// The first and last source line of every scalar below this node (keys included).
    pub fn lines(&self) -> Option<(usize, usize)> {
        fn widen(acc: &mut Option<(usize, usize)>, line: usize) {
            *acc = Some(match *acc {
                None => (line, line),
                Some((a, b)) => (a.min(line), b.max(line)),
            });
        }
        fn walk(n: &Node, acc: &mut Option<(usize, usize)>) {
            match n {
                Node::Scalar(s) => {
                    widen(acc, s.line);
                    widen(acc, s.used_line);
                }
                Node::Seq(items) => items.iter().for_each(|i| walk(i, acc)),
                Node::Map(entries) => entries.iter().for_each(|(k, v)| {
                    widen(acc, k.used_line);
                    walk(v, acc);
                }),
            }
        }
        let mut acc = None;
        walk(self, &mut acc);
        acc
    }
}

/// The parser's settings: tolerant where real manifests are (a repeated key keeps the last value,
/// as Helm and kubectl read it; big generated files and deep CRD schemas pass), strict nowhere else.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 100_000;
    budget.max_nodes = 10_000_000;
    budget.max_events = 20_000_000;
    budget.max_depth = 512;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    // Aliases are replayed as they are read: an alias bomb (`a1: [*a0, *a0, …]`, nine levels) would
    // otherwise grow to the node budget. Real manifests share a few values, not millions.
    o.alias_limits.max_total_replayed_events = 100_000;
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    o.emit_comments = false;
    o.with_snippet = false;
    o
}

/// Parses every document of a YAML stream. Empty documents are dropped.
pub fn parse_documents(src: &str) -> Result<Vec<Node>, String> {
    let raw: Vec<Spanned<Raw>> =
        serde_saphyr::from_multiple_with_options(src, options()).map_err(|e| first_line(&e.to_string()))?;
    let lines = Lines::new(src);
    Ok(raw.into_iter().map(|r| convert(src, &lines, r)).collect())
}

/// Lines as the rest of metricops counts them (a line ends at `\n`, as git and the line diff see
/// it). YAML also ends a line at a lone `\r`: where the text has one, lines are counted again from
/// the byte offsets.
struct Lines(Option<Vec<usize>>);

impl Lines {
    fn new(src: &str) -> Lines {
        let b = src.as_bytes();
        let lone_cr = b.iter().enumerate().any(|(i, c)| *c == b'\r' && b.get(i + 1) != Some(&b'\n'));
        Lines(lone_cr.then(|| memchr::memchr_iter(b'\n', b).collect()))
    }

    fn line(&self, offset: Option<u64>, yaml_line: usize) -> usize {
        match (&self.0, offset) {
            (Some(newlines), Some(o)) => 1 + newlines.partition_point(|&p| p < o as usize),
            _ => yaml_line,
        }
    }
}

/// The documents written inside a literal block scalar, with every line and byte range in the
/// outer source's terms. `None` when the block holds no YAML collection. When the block's lines do
/// not map exactly onto the source (tabs, an explicit indentation indicator), values are still read
/// but none of them is editable.
pub fn parse_embedded(src: &str, s: &Scalar) -> Option<Vec<Node>> {
    let (start, indent) = s.block?;
    let mut docs = parse_documents(&s.text).ok()?;
    docs.retain(|d| !matches!(d, Node::Scalar(_)));
    if docs.is_empty() {
        return None;
    }
    let map = BlockMap::new(src, start, indent, &s.text);
    for d in &mut docs {
        remap(d, &map, s.line);
    }
    Some(docs)
}

/// Inner line starts, and the outer offset of each inner line's first byte (when they match).
struct BlockMap {
    inner_starts: Vec<usize>,
    outer_starts: Option<Vec<usize>>,
}

impl BlockMap {
    fn new(src: &str, start: usize, indent: usize, inner: &str) -> BlockMap {
        let mut inner_starts = Vec::new();
        let mut outer_starts = Vec::new();
        let mut ok =
            start >= indent && src.get(start - indent..start).is_some_and(|p| p.bytes().all(|b| b == b' '));
        let mut outer = start.saturating_sub(indent);
        let mut at = 0;
        for line in inner.split_inclusive('\n') {
            inner_starts.push(at);
            at += line.len();
            if !ok {
                continue;
            }
            let body = line.trim_end_matches(['\n', '\r']);
            let outer_line_end = src[outer..].find('\n').map(|i| outer + i).unwrap_or(src.len());
            let outer_line = src[outer..outer_line_end].trim_end_matches('\r');
            if body.is_empty() {
                ok = outer_line.bytes().all(|b| b == b' ');
                outer_starts.push(outer + indent.min(outer_line.len()));
            } else {
                ok = outer_line.len() == indent + body.len()
                    && outer_line.as_bytes()[..indent].iter().all(|b| *b == b' ')
                    && &outer_line[indent..] == body;
                outer_starts.push(outer + indent);
            }
            outer = (outer_line_end + 1).min(src.len());
        }
        BlockMap { inner_starts, outer_starts: ok.then_some(outer_starts) }
    }

    fn outer(&self, inner: usize) -> Option<usize> {
        let starts = self.outer_starts.as_ref()?;
        let k = self.inner_starts.partition_point(|s| *s <= inner).checked_sub(1)?;
        Some(starts[k] + (inner - self.inner_starts[k]))
    }
}

fn remap(n: &mut Node, map: &BlockMap, first_line: usize) {
    let fix = |s: &mut Scalar| {
        s.content =
            s.content.take().and_then(|r| Some(map.outer(r.start)?..map.outer(r.end.saturating_sub(1))? + 1));
        if s.content.is_none() && s.style != Style::Other {
            s.style = Style::Other;
        }
        s.line += first_line - 1;
        s.used_line += first_line - 1;
        s.block = s.block.and_then(|(start, indent)| Some((map.outer(start)?, indent)));
    };
    match n {
        Node::Scalar(s) => fix(s),
        Node::Seq(items) => items.iter_mut().for_each(|i| remap(i, map, first_line)),
        Node::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            fix(k);
            remap(v, map, first_line);
        }),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("invalid YAML").trim_start_matches("error: ").to_string()
}

enum Raw {
    Scalar(Option<String>),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

fn convert(src: &str, lines: &Lines, n: Spanned<Raw>) -> Node {
    match n.value {
        Raw::Seq(items) => Node::Seq(items.into_iter().map(|i| convert(src, lines, i)).collect()),
        Raw::Map(entries) => Node::Map(
            entries
                .into_iter()
                .filter_map(|(k, v)| {
                    let key = match convert(src, lines, k) {
                        Node::Scalar(s) => s,
                        _ => return None,
                    };
                    Some((key, convert(src, lines, v)))
                })
                .collect(),
        ),
        Raw::Scalar(value) => {
            let span = n.defined.span();
            let line = lines.line(span.byte_offset(), n.defined.line() as usize);
            let used_line = match n.referenced.line() {
                0 => 0,
                l => lines.line(n.referenced.span().byte_offset(), l as usize),
            };
            let range = match (span.byte_offset(), span.byte_len()) {
                (Some(o), Some(l)) => Some(o as usize..(o + l) as usize),
                _ => None,
            };
            let column = n.defined.column() as usize;
            let mut s = scalar_from(src, value, range, line, column);
            s.used_line = if used_line == 0 { line } else { used_line };
            Node::Scalar(s)
        }
    }
}

fn scalar_from(
    src: &str,
    value: Option<String>,
    range: Option<Range<usize>>,
    line: usize,
    column: usize,
) -> Scalar {
    let other = |text: String| Scalar {
        text,
        content: None,
        style: Style::Other,
        line,
        used_line: line,
        is_null: false,
        block: None,
    };
    let Some(range) = range.filter(|r| src.get(r.clone()).is_some()) else {
        return other(value.unwrap_or_default());
    };
    let raw = &src[range.clone()];
    let quoted = |q: char| raw.len() >= 2 && raw.starts_with(q) && raw.ends_with(q);
    if quoted('"') || quoted('\'') {
        let inner = &raw[1..raw.len() - 1];
        let style = if raw.starts_with('"') { Style::DoubleQuoted } else { Style::SingleQuoted };
        let text = value.unwrap_or_else(|| inner.to_string());
        // Editable only when the value is exactly the bytes between the quotes (no escapes).
        let content = (text == inner && !inner.contains('\\') && !inner.contains('\n'))
            .then(|| range.start + 1..range.end - 1);
        let style = if content.is_some() { style } else { Style::Other };
        return Scalar { text, content, style, line, used_line: line, is_null: false, block: None };
    }
    let multi_line = value.as_deref().is_some_and(|v| v.contains('\n'));
    if multi_line || raw.contains('\n') {
        let text = value.unwrap_or_default();
        // A literal block starts on a line of its own, after `|` (and its indicators) on the line above.
        let head = &src[..range.start];
        let line_start = head.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let indent = range.start - line_start;
        let above = head[..line_start.saturating_sub(1)].rsplit('\n').next().unwrap_or("");
        let indicator = above.split(" #").next().unwrap_or("").trim_end();
        let literal = head[line_start..].bytes().all(|b| b == b' ')
            && column == indent + 1
            && (indicator.ends_with('|') || indicator.ends_with("|-") || indicator.ends_with("|+"));
        if literal {
            return Scalar {
                text,
                content: None,
                style: Style::Literal,
                line,
                used_line: line,
                is_null: false,
                block: Some((range.start, indent)),
            };
        }
        return other(text);
    }
    if raw.starts_with('*') || raw.starts_with('&') || raw.starts_with('!') {
        return other(value.unwrap_or_default());
    }
    let is_null = raw.is_empty() || raw == "~" || raw == "null" || raw == "Null" || raw == "NULL";
    Scalar {
        text: raw.to_string(),
        content: Some(range),
        style: Style::Plain,
        line,
        used_line: line,
        is_null,
        block: None,
    }
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
    fn a_lone_carriage_return_does_not_shift_line_numbers() {
        // Found by the surgical_edit fuzz target: YAML ends a line at a lone CR, git and the line
        // diff do not; lines are the latter's.
        let docs = parse_documents("\rx: 1\ny: 2\n").unwrap();
        assert_eq!(docs[0].get("y").unwrap().scalar().unwrap().line, 2, "{docs:?}");
        let crlf = parse_documents("x: 1\r\ny: 2\r\n").unwrap();
        assert_eq!(crlf[0].get("y").unwrap().scalar().unwrap().line, 2);
    }

    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            src.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 9].join(", ")));
        }
        let e = parse_documents(&src).unwrap_err();
        assert!(e.contains("alias") || e.contains("limit") || e.contains("budget"), "{e}");
        // A few shared values still read.
        let ok = parse_documents("base: &b {image: x:1}\nuse: *b\nmore: *b\n").unwrap();
        assert!(ok[0].get("more").is_some());
    }

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
        assert_eq!(d.get("d").unwrap().scalar().unwrap().style, Style::Literal);
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

    #[test]
    fn aliases_and_merge_keys_point_at_the_anchor() {
        let src = "base: &base\n  image: &img\n    tag: 1.0\nmain:\n  <<: *base\nkopia:\n  image: *img\nt: &t \"2.0\"\nu: *t\n";
        let d = &parse_documents(src).unwrap()[0];
        let anchor = d.path(&["base", "image", "tag"]).unwrap().scalar().unwrap().clone();
        for path in [&["main", "image", "tag"][..], &["kopia", "image", "tag"]] {
            let s = d.path(path).unwrap().scalar().unwrap();
            assert_eq!(
                (s.content.clone(), s.line, s.aliased()),
                (anchor.content.clone(), 3, true),
                "{path:?}"
            );
        }
        let u = d.get("u").unwrap().scalar().unwrap();
        assert_eq!((&src[u.content.clone().unwrap()], u.line, u.used_line), ("2.0", 8, 9));
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let d = &parse_documents("a: 1\nb: 2\na: 3\n").unwrap()[0];
        assert_eq!(d.str_at("a"), Some("3"));
    }

    #[test]
    fn yaml_inside_a_literal_block_has_outer_positions() {
        let src = "kind: Kustomization\npatches:\n- patch: |-\n    - op: replace\n      path: /spec/x\n      value:\n        image: ghcr.io/a/b:1.2 # c\n  target:\n    kind: Deployment\n";
        let d = &parse_documents(src).unwrap()[0];
        let Some(Node::Seq(p)) = d.get("patches") else { panic!() };
        let block = p[0].get("patch").unwrap().scalar().unwrap();
        assert_eq!(block.style, Style::Literal);
        let inner = parse_embedded(src, block).unwrap();
        let Node::Seq(ops) = &inner[0] else { panic!() };
        let image = ops[0].path(&["value", "image"]).unwrap().scalar().unwrap();
        assert_eq!((image.line, &src[image.content.clone().unwrap()]), (7, "ghcr.io/a/b:1.2"));
        // A folded block is read but not mapped.
        let folded = parse_documents("p: >\n  image: a:1\n").unwrap();
        assert_eq!(folded[0].get("p").unwrap().scalar().unwrap().style, Style::Other);
    }

    #[test]
    fn a_block_that_does_not_map_exactly_is_read_only() {
        // Tab-indented content is not the source line less the indentation.
        let src = "p: |2\n    image: a:1\n";
        let d = &parse_documents(src).unwrap()[0];
        let s = d.get("p").unwrap().scalar().unwrap();
        if let Some(inner) = parse_embedded(src, s) {
            let image = inner[0].get("image").unwrap().scalar().unwrap();
            assert!(image.content.is_none() || &src[image.content.clone().unwrap()] == "a:1");
        }
    }
}
