//! The three patch formats the apiserver applies itself (server-side apply is in `fields.rs`):
//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! JSON patch errors are worded as the apiserver's library (evanphx/json-patch) words them; the
//! apiserver answers them with 422 (`NewGenericServerResponse(http.StatusUnprocessableEntity, …)`
//! in `endpoints/handlers/patch.go`), a patch document that does not decode with 400.

use serde_json::{Map, Value};

use super::resources::merge_key;

/// RFC 7386: objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Why a JSON patch was refused: `Decode` → 400, `Apply` → 422.
#[derive(Debug)]
pub enum JsonPatchError {
    Decode(String),
    Apply(String),
}

/// RFC 6902 (add, remove, replace, move, copy, test), with RFC 6901 pointers (`~1` is `/`, `~0` is `~`).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let Value::Array(ops) = patch else {
        return Err(JsonPatchError::Decode(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        ));
    };
    for op in ops {
        let Some(o) = op.as_object() else {
            return Err(JsonPatchError::Decode(
                "json: cannot unmarshal non-object into Go value of type jsonpatch.Operation".into(),
            ));
        };
        let kind = o.get("op").and_then(Value::as_str).unwrap_or("");
        let path = o.get("path").and_then(Value::as_str);
        let value = o.get("value");
        let missing_path = || JsonPatchError::Apply(format!("{kind} operation missing path"));
        match kind {
            "add" => {
                let path = path.ok_or_else(missing_path)?;
                let v = value
                    .ok_or_else(|| JsonPatchError::Apply("add operation, missing value field".into()))?;
                add(doc, path, v.clone())?;
            }
            "remove" => {
                let path = path.ok_or_else(missing_path)?;
                remove(doc, path).map_err(|e| {
                    JsonPatchError::Apply(format!("Unable to remove nonexistent key: {e}: missing value"))
                })?;
            }
            "replace" => {
                let path = path.ok_or_else(missing_path)?;
                let v = value
                    .ok_or_else(|| JsonPatchError::Apply("replace operation, missing value field".into()))?;
                let slot = pointer_mut(doc, path).ok_or_else(|| {
                    JsonPatchError::Apply(format!(
                        "replace operation does not apply: doc is missing key: {path}: missing value"
                    ))
                })?;
                *slot = v.clone();
            }
            "move" | "copy" => {
                let from = o
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or_else(|| JsonPatchError::Apply(format!("{kind} operation missing from")))?;
                let path = path.ok_or_else(missing_path)?;
                let v = pointer(doc, from).cloned().ok_or_else(|| {
                    JsonPatchError::Apply(format!(
                        "{kind} operation does not apply: doc is missing from path: {from}: missing value"
                    ))
                })?;
                if kind == "move" {
                    if path.starts_with(&format!("{from}/")) {
                        return Err(JsonPatchError::Apply(format!(
                            "Unable to move '{from}' into its child '{path}'"
                        )));
                    }
                    remove(doc, from).map_err(|e| {
                        JsonPatchError::Apply(format!("Unable to remove nonexistent key: {e}: missing value"))
                    })?;
                }
                add(doc, path, v)?;
            }
            "test" => {
                let path = path.ok_or_else(missing_path)?;
                let want = value.cloned().unwrap_or(Value::Null);
                match pointer(doc, path) {
                    Some(have) if *have == want => {}
                    None if want.is_null() => {}
                    _ => {
                        return Err(JsonPatchError::Apply(format!(
                            "testing value {path} failed: test failed"
                        )));
                    }
                }
            }
            other => return Err(JsonPatchError::Apply(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(())
}

fn tokens(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(vec![]);
    }
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if allow_end && token == "-" {
        return Some(len);
    }
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let i: usize = token.parse().ok()?;
    (i < len || (allow_end && i == len)).then_some(i)
}

fn pointer<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get(&t)?,
            Value::Array(a) => a.get(index(&t, a.len(), false)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t)?,
            Value::Array(a) => {
                let i = index(&t, a.len(), false)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn split(path: &str) -> Option<(String, String)> {
    let toks = tokens(path)?;
    let last = toks.last()?.clone();
    let cut = path.rfind('/')?;
    Some((path[..cut].to_string(), last))
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), JsonPatchError> {
    if path.is_empty() {
        *doc = v;
        return Ok(());
    }
    let missing = || {
        JsonPatchError::Apply(format!(
            "add operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    let (parent, last) = split(path).ok_or_else(missing)?;
    match pointer_mut(doc, &parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last, v);
        }
        Value::Array(a) => {
            let i = index(&last, a.len(), true).ok_or_else(|| {
                JsonPatchError::Apply(format!("Unable to access invalid index: {last}: invalid index"))
            })?;
            a.insert(i, v);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

/// Err(the last token) when there is nothing at `path`.
fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path).ok_or_else(|| path.to_string())?;
    match pointer_mut(doc, &parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or(last),
        Some(Value::Array(a)) => match index(&last, a.len(), false) {
            Some(i) => Ok(a.remove(i)),
            None => Err(last),
        },
        _ => Err(last),
    }
}

/// Strategic merge patch for the built-in kinds: objects merge, `null` removes, lists with a merge
/// key (containers by `name`, …, see [`merge_key`]) merge element by element (`$patch: delete` in an
/// element removes it), `metadata.finalizers` merges as a set (its `patchStrategy: merge`),
/// `$patch: replace` on an object replaces it; `$setElementOrder/…`, `$retainKeys` and
/// `$deleteFromPrimitiveList/…` are accepted and ignored. Every other list is replaced, as its
/// strategy is (the default). CRDs get 415 before this (the apiserver has no schema for them).
pub fn strategic(target: &mut Value, patch: &Value) {
    strategic_at(target, patch, "")
}

fn strategic_at(target: &mut Value, patch: &Value, field: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut v = patch.clone();
        strip_directives(&mut v);
        *target = v;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (v, merge_key(k), t.get_mut(k)) {
            (Value::Array(items), Some(key), Some(Value::Array(cur))) => {
                for item in items {
                    let id = item.get(key).cloned();
                    let pos = id.as_ref().and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            cur.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic_at(&mut cur[i], item, k),
                        (None, false) => {
                            let mut item = item.clone();
                            strip_directives(&mut item);
                            cur.push(item);
                        }
                    }
                }
            }
            (Value::Array(items), None, Some(Value::Array(cur)))
                if k == "finalizers" && field == "metadata" =>
            {
                for item in items {
                    if !cur.contains(item) {
                        cur.push(item.clone());
                    }
                }
            }
            (Value::Object(_), _, Some(cur @ Value::Object(_))) => strategic_at(cur, v, k),
            _ => {
                let mut v = v.clone();
                strip_directives(&mut v);
                t.insert(k.clone(), v);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}
