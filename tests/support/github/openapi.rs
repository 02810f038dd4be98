//! A small, generic checker of requests and responses against GitHub's OpenAPI description
//! (`fixtures/github/api.github.com.json`): path templates, declared query parameters, JSON
//! bodies against their schemas (required, types, nullable, enum, items, oneOf/anyOf/allOf, $ref).

use std::sync::OnceLock;

use serde_json::Value;

pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/github/api.github.com.json");
        let text = std::fs::read_to_string(p).expect("read the OpenAPI description");
        serde_json::from_str(&text).expect("the OpenAPI description is JSON")
    })
}

/// `#/components/examples/<name>` value, cloned.
pub fn example(name: &str) -> Value {
    let v = &spec()["components"]["examples"][name]["value"];
    assert!(!v.is_null(), "no OpenAPI example {name}");
    v.clone()
}

/// Follows `$ref`s (`#/a/b/c`) until the value is not a reference.
pub fn resolve(mut v: &'static Value) -> &'static Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        v = pointer(r);
    }
    v
}

fn pointer(r: &str) -> &'static Value {
    static NULL: Value = Value::Null;
    spec().pointer(r.trim_start_matches('#')).unwrap_or(&NULL)
}

/// The operation a request maps to.
pub struct Op {
    pub template: String,
    pub method: String,
    pub op: &'static Value,
    path_item: &'static Value,
}

/// Every path template, split into segments once (splitting ~1,000 of them per request was most of
/// the stand-in's own time).
fn templates() -> &'static [(&'static str, Vec<&'static str>)] {
    static T: OnceLock<Vec<(&'static str, Vec<&'static str>)>> = OnceLock::new();
    T.get_or_init(|| {
        spec()["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(|k| (k.as_str(), k.trim_start_matches('/').split('/').collect()))
            .collect()
    })
}

/// Finds the path template for a (raw, not percent-decoded) request path. `Err` says what is wrong.
pub fn find(method: &str, path: &str) -> Result<Op, String> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(usize, bool, &'static str)> = None; // (literal segments, exact length, template)
    for &(template, ref t) in templates() {
        if let Some((lits, exact)) = matches(t, &segs) {
            let better = match best {
                None => true,
                Some((bl, be, _)) => (exact, lits) > (be, bl),
            };
            if better {
                best = Some((lits, exact, template));
            }
        }
    }
    let Some((_, _, template)) = best else {
        return Err(format!("GitHub has no {method} {path}"));
    };
    let path_item = &spec()["paths"][template];
    let m = method.to_ascii_lowercase();
    match path_item.get(&m) {
        Some(op) => Ok(Op { template: template.to_string(), method: method.to_string(), op, path_item }),
        None => Err(format!("GitHub has no {method} {path} (path {template} has no {method})")),
    }
}

fn matches(t: &[&str], segs: &[&str]) -> Option<(usize, bool)> {
    let mut lits = 0;
    for (i, ts) in t.iter().enumerate() {
        let is_param = ts.starts_with('{') && ts.ends_with('}');
        let last = i + 1 == t.len();
        if i >= segs.len() {
            return None;
        }
        if is_param {
            if segs[i].is_empty() {
                return None;
            }
            if last {
                return Some((lits, segs.len() == t.len()));
            }
        } else if *ts != segs[i] {
            return None;
        } else {
            lits += 1;
        }
    }
    (segs.len() == t.len()).then_some((lits, true))
}

impl Op {
    fn parameters(&self) -> Vec<&'static Value> {
        let mut out = vec![];
        for src in [&self.path_item["parameters"], &self.op["parameters"]] {
            if let Some(a) = src.as_array() {
                out.extend(a.iter().map(resolve));
            }
        }
        out
    }

    /// Violations in the query string (names must be declared `in: query`; enums and integers checked).
    pub fn check_query(&self, query: &[(String, String)]) -> Vec<String> {
        let params = self.parameters();
        let mut errs = vec![];
        for (k, v) in query {
            let Some(p) = params.iter().find(|p| p["in"] == "query" && p["name"] == k.as_str()) else {
                errs.push(format!(
                    "{} {}: query parameter `{k}` is not declared",
                    self.method, self.template
                ));
                continue;
            };
            let schema = resolve(&p["schema"]);
            let as_json = match schema["type"].as_str() {
                Some("integer") => match v.parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        errs.push(format!(
                            "{} {}: query `{k}={v}` is not an integer",
                            self.method, self.template
                        ));
                        continue;
                    }
                },
                Some("boolean") => Value::Bool(v == "true"),
                _ => Value::String(v.clone()),
            };
            validate(&as_json, schema, &format!("query.{k}"), &mut errs);
        }
        for p in params.iter().filter(|p| p["in"] == "query" && p["required"] == true) {
            if !query.iter().any(|(k, _)| p["name"] == k.as_str()) {
                errs.push(format!(
                    "{} {}: required query parameter `{}` missing",
                    self.method, self.template, p["name"]
                ));
            }
        }
        errs
    }

    /// Violations in the body (`None` = no body sent).
    pub fn check_body(&self, body: Option<&Value>) -> Vec<String> {
        let rb = resolve(&self.op["requestBody"]);
        let mut errs = vec![];
        if rb.is_null() {
            if body.is_some_and(|b| !b.is_null()) {
                errs.push(format!("{} {}: GitHub takes no request body here", self.method, self.template));
            }
            return errs;
        }
        let Some(body) = body else {
            if rb["required"] == true {
                errs.push(format!("{} {}: request body is required", self.method, self.template));
            }
            return errs;
        };
        let schema = &rb["content"]["application/json"]["schema"];
        if schema.is_null() {
            return errs;
        }
        validate(body, schema, "body", &mut errs);
        errs.into_iter().map(|e| format!("{} {}: {e}", self.method, self.template)).collect()
    }

    /// Violations of a response against the schema documented for its status (undocumented statuses and
    /// statuses without a JSON schema are not checked).
    pub fn check_response(&self, status: u16, body: Option<&Value>) -> Vec<String> {
        let resp = resolve(&self.op["responses"][status.to_string()]);
        let schema = &resp["content"]["application/json"]["schema"];
        let mut errs = vec![];
        if schema.is_null() {
            return errs;
        }
        match body {
            None => errs.push("no JSON body".to_string()),
            Some(b) => validate(b, schema, "response", &mut errs),
        }
        errs.into_iter()
            .map(|e| format!("stand-in response {status} to {} {}: {e}", self.method, self.template))
            .collect()
    }
}

/// Validates `v` against `schema`, pushing human-readable errors.
pub fn validate(v: &Value, schema: &'static Value, at: &str, errs: &mut Vec<String>) {
    let s = resolve(schema);
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            validate(v, sub, at, errs);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s[key].as_array() {
            let mut first: Option<Vec<String>> = None;
            let ok = alts.iter().any(|alt| {
                let mut e = vec![];
                validate(v, alt, at, &mut e);
                if first.is_none() {
                    first = Some(e.clone());
                }
                e.is_empty()
            });
            if !ok {
                errs.push(format!("{at}: matches none of {key} ({})", first.unwrap_or_default().join("; ")));
            }
        }
    }
    if v.is_null() {
        if s["nullable"] != true && s.get("type").is_some() {
            errs.push(format!("{at}: null where {} expected", s["type"]));
        }
        return;
    }
    if let Some(t) = s["type"].as_str() {
        let ok = match t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => true,
        };
        if !ok {
            errs.push(format!("{at}: expected {t}, got {}", short(v)));
            return;
        }
    }
    if let Some(en) = s["enum"].as_array()
        && !en.contains(v)
    {
        errs.push(format!("{at}: {} is not one of {}", short(v), Value::Array(en.clone())));
    }
    if let Some(o) = v.as_object() {
        if let Some(req) = s["required"].as_array() {
            for r in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    errs.push(format!("{at}: required field `{r}` missing"));
                }
            }
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, sub) in props {
                if let Some(x) = o.get(k) {
                    validate(x, sub, &format!("{at}.{k}"), errs);
                }
            }
        }
    }
    if let Some(a) = v.as_array() {
        if let Some(min) = s["minItems"].as_u64()
            && (a.len() as u64) < min
        {
            errs.push(format!("{at}: fewer than {min} items"));
        }
        if !s["items"].is_null() {
            for (i, x) in a.iter().enumerate() {
                validate(x, &s["items"], &format!("{at}[{i}]"), errs);
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s }
}
