//! The HTTP side: authentication, routing of the apiserver's paths, content negotiation, and the
//! verbs (list, watch, get, create, update, patch, delete, deletecollection), with the request log.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::patch::{self, JsonPatchError};
use super::resources::{self, RESOURCES, ResourceType};
use super::selector::Selector;
use super::status::Status;
use super::store::{self, Recorded, State, WriteCtx, form_pairs};

pub type Shared = Arc<Mutex<State>>;

pub fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The user the test token authenticates as (named in 403 messages).
pub const USER: &str = "system:serviceaccount:metricops:metricops";

enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
    Watch(Body),
}

impl From<Status> for Reply {
    fn from(s: Status) -> Reply {
        Reply::Json(s.code, s.to_json())
    }
}

/// What a request is for.
enum Target {
    Root,
    Version,
    Health,
    ApiVersions,
    Groups,
    Group(String),
    Resources(String, String),
    /// (resource, namespace or None for all/cluster-scoped, name, subresource)
    Res {
        res: usize,
        ns: Option<String>,
        name: Option<String>,
        sub: Option<String>,
    },
    /// Not served at all: the apiserver's mux answers `404 page not found` in plain text.
    PageNotFound,
    NoSuchResource,
}

fn route(path: &str, uninstalled: &[String]) -> Target {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        [] => return Target::Root,
        ["version"] => return Target::Version,
        ["healthz" | "livez" | "readyz"] => return Target::Health,
        ["api"] => return Target::ApiVersions,
        ["apis"] => return Target::Groups,
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g] => {
            return if resources::serves_group(g) && !uninstalled.iter().any(|u| u == g) {
                Target::Group(g.to_string())
            } else {
                Target::PageNotFound
            };
        }
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Target::PageNotFound,
    };
    if !resources::serves(group, version) || uninstalled.iter().any(|u| u == group) {
        return Target::PageNotFound;
    }
    if rest.is_empty() {
        return Target::Resources(group.to_string(), version.to_string());
    }
    let find = |plural: &str| resources::by_plural(group, version, plural);
    let s = |x: &&str| Some(x.to_string());
    let t = match rest {
        // A namespace's own subresources: /api/v1/namespaces/{name}/status
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            find("namespaces").map(|res| (res, None, s(name), s(sub)))
        }
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => match find(plural) {
            Some(res) if RESOURCES[res].namespaced => {
                Some((res, s(ns), tail.first().and_then(s), tail.get(1).and_then(s)))
            }
            _ => None,
        },
        [plural, tail @ ..] if tail.len() <= 2 => match find(plural) {
            Some(res) if !RESOURCES[res].namespaced || tail.is_empty() => {
                Some((res, None, tail.first().and_then(s), tail.get(1).and_then(s)))
            }
            _ => None,
        },
        _ => None,
    };
    match t {
        Some((res, ns, name, sub)) => {
            if sub.as_deref().is_some_and(|x| x != "status" || !RESOURCES[res].status) {
                return Target::NoSuchResource;
            }
            Target::Res { res, ns, name, sub }
        }
        None => Target::NoSuchResource,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum As {
    Full,
    Meta,
    MetaList,
}

/// Content negotiation of `Accept`: the first media range the stand-in can answer.
fn negotiate(headers: &HeaderMap) -> Result<As, Status> {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("").trim();
    if accept.is_empty() {
        return Ok(As::Full);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(String, String)> = parts
            .filter_map(|p| {
                p.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            })
            .filter(|(k, _)| k != "q")
            .collect();
        if !matches!(media, "application/json" | "*/*" | "application/*") {
            continue;
        }
        let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        match get("as") {
            None => return Ok(As::Full),
            Some(a @ ("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if get("g") == Some("meta.k8s.io") && get("v") == Some("v1") =>
            {
                return Ok(if a == "PartialObjectMetadata" { As::Meta } else { As::MetaList });
            }
            Some(_) => continue,
        }
    }
    Err(Status::not_acceptable())
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers.get("content-type").and_then(|v| v.to_str().ok()).map(|s| s.to_string())
}

fn base_type(ct: Option<&str>) -> String {
    ct.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A body as JSON; YAML (apply patches, `application/yaml` creates) through serde-saphyr.
pub fn parse_body(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body".into());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(je) => {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            serde_saphyr::from_str::<Value>(text).map_err(|ye| format!("{je}; as YAML: {ye}"))
        }
    }
}

fn recorded_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    parse_body(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

pub async fn entry(
    axum::extract::State(state): axum::extract::State<Shared>,
    req: axum::extract::Request,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let query = parts.uri.query().unwrap_or("").to_string();
    let mut rec = Recorded {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: query.clone(),
        content_type: content_type(&parts.headers),
        accept: parts.headers.get("accept").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: recorded_body(&bytes),
        status: 0,
    };
    let reply = handle(&state, &parts.method, parts.uri.path(), &query, &parts.headers, &bytes);
    let (status, body, ctype) = match reply {
        Reply::Json(code, v) => (code, Body::from(v.to_string()), "application/json"),
        Reply::Text(code, t) => (code, Body::from(t), "text/plain; charset=utf-8"),
        Reply::Watch(b) => (200, b, "application/json"),
    };
    rec.status = status;
    lock(&state).requests.push(rec);
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-cache, private")
        .body(body)
        .unwrap()
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

fn handle(
    state: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let q = form_pairs(query);
    let param = |k: &str| q.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
    {
        let mut s = lock(state);
        let want = format!("Bearer {}", s.token);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            return Status::unauthorized().into();
        }
        let m = method.as_str();
        if let Some(f) = s
            .faults
            .iter_mut()
            .find(|f| f.left > 0 && (f.method.is_empty() || f.method == m) && path.starts_with(&f.prefix))
        {
            f.left -= 1;
            let code = f.code;
            s.faults.retain(|f| f.left > 0);
            return Status::injected(code).into();
        }
    }
    let (uninstalled, server) = {
        let s = lock(state);
        (s.uninstalled.clone(), s.server_url.clone())
    };
    let target = route(path, &uninstalled);
    let is_get = *method == Method::GET;
    match target {
        Target::Root if is_get => Reply::Json(
            200,
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}),
        ),
        Target::Version if is_get => Reply::Json(200, resources::version()),
        Target::Health if is_get => Reply::Text(200, "ok"),
        Target::ApiVersions if is_get => discovery(headers, resources::api_versions(&server)),
        Target::Groups if is_get => discovery(headers, resources::api_group_list(&uninstalled)),
        Target::Group(g) if is_get => discovery(headers, resources::api_group(&g)),
        Target::Resources(g, v) if is_get => discovery(headers, resources::api_resource_list(&g, &v)),
        Target::PageNotFound => Reply::Text(404, "404 page not found\n"),
        Target::NoSuchResource => Status::no_such_resource().into(),
        Target::Res { res, ns, name, sub } => {
            let rt = &RESOURCES[res];
            let verb = match (method.as_str(), &name, truthy(param("watch"))) {
                ("GET", None, true) => "watch",
                ("GET", None, false) => "list",
                ("GET", Some(_), _) => "get",
                ("POST", None, _) => "create",
                ("PUT", Some(_), _) => "update",
                ("PATCH", Some(_), _) => "patch",
                ("DELETE", Some(_), _) => "delete",
                ("DELETE", None, _) => "deletecollection",
                _ => return Status::method_not_allowed().into(),
            };
            {
                let s = lock(state);
                if s.forbidden.iter().any(|(v, p)| (v == verb || v == "*") && (p == rt.plural || p == "*")) {
                    return Status::forbidden(
                        rt,
                        name.as_deref().unwrap_or(""),
                        verb,
                        ns.as_deref().unwrap_or(""),
                        USER,
                    )
                    .into();
                }
            }
            // A namespaced resource's writes need a namespace in the path.
            if rt.namespaced && ns.is_none() && !matches!(verb, "list" | "watch") {
                return Status::method_not_allowed().into();
            }
            let ns_s = ns.clone().unwrap_or_default();
            let accept = match negotiate(headers) {
                Ok(a) => a,
                Err(e) => return e.into(),
            };
            let result = match verb {
                "list" | "watch" | "deletecollection" => {
                    let sel = match Selector::parse(param("labelSelector"), param("fieldSelector")) {
                        Ok(s) => s,
                        Err(e) => return e.into(),
                    };
                    match verb {
                        "watch" => return watch(state, res, ns, sel, accept != As::Full, &q),
                        "list" => {
                            if accept == As::Meta {
                                return Status::not_acceptable().into();
                            }
                            list(&lock(state), res, ns.as_deref(), &sel, accept == As::MetaList, &q)
                                .map(|v| (200, v))
                        }
                        _ => delete_collection(&mut lock(state), res, ns.as_deref(), &sel, truthy_dry(&q)),
                    }
                }
                _ if accept == As::MetaList => return Status::not_acceptable().into(),
                "get" => lock(state).get(res, &ns_s, name.as_deref().unwrap()).map(|s| (200, s.obj.clone())),
                "create" => create(state, res, &ns_s, headers, body, &q),
                "update" => replace(
                    state,
                    res,
                    &ns_s,
                    name.as_deref().unwrap(),
                    sub.as_deref().unwrap_or(""),
                    headers,
                    body,
                    &q,
                ),
                "patch" => patch_verb(
                    state,
                    rt,
                    res,
                    &ns_s,
                    name.as_deref().unwrap(),
                    sub.as_deref().unwrap_or(""),
                    headers,
                    body,
                    &q,
                ),
                "delete" => {
                    let opts =
                        if body.is_empty() { json!({}) } else { parse_body(body).unwrap_or(json!({})) };
                    let dry = truthy_dry(&q)
                        || opts["dryRun"].as_array().is_some_and(|a| a.iter().any(|x| x == "All"));
                    lock(state).delete(res, &ns_s, name.as_deref().unwrap(), &opts, dry).map(|v| (200, v))
                }
                _ => Err(Status::method_not_allowed()),
            };
            match result {
                Ok((code, v)) => {
                    let is_status = v["kind"] == "Status";
                    Reply::Json(
                        code,
                        if accept == As::Meta && !is_status { store::render(&v, true) } else { v },
                    )
                }
                Err(e) => e.into(),
            }
        }
        _ => Status::method_not_allowed().into(),
    }
}

fn discovery(headers: &HeaderMap, v: Value) -> Reply {
    match negotiate(headers) {
        Ok(As::Full) => Reply::Json(200, v),
        Ok(_) => Status::not_acceptable().into(),
        Err(e) => e.into(),
    }
}

fn truthy_dry(q: &[(String, String)]) -> bool {
    q.iter().any(|(k, v)| k == "dryRun" && v == "All")
}

fn field_manager(q: &[(String, String)], headers: &HeaderMap) -> String {
    if let Some((_, m)) = q.iter().find(|(k, v)| k == "fieldManager" && !v.is_empty()) {
        return m.clone();
    }
    // managerOrUserAgent: the user agent up to its first '/'.
    let ua = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
    let prefix = ua.split('/').next().unwrap_or("");
    if prefix.is_empty() { "unknown".to_string() } else { prefix.to_string() }
}

fn object_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Status> {
    let ct = base_type(content_type(headers).as_deref());
    if !matches!(ct.as_str(), "application/json" | "application/yaml" | "") {
        return Err(Status::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ]));
    }
    parse_body(body).map_err(|e| Status::bad_request(format!("the object provided is unrecognized: {e}")))
}

fn create(
    state: &Shared,
    res: usize,
    ns: &str,
    headers: &HeaderMap,
    body: &[u8],
    q: &[(String, String)],
) -> Result<(u16, Value), Status> {
    let obj = object_body(headers, body)?;
    let ctx = WriteCtx { manager: field_manager(q, headers), subresource: "", dry_run: truthy_dry(q) };
    lock(state).create(res, ns, obj, &ctx).map(|v| (201, v))
}

#[allow(clippy::too_many_arguments)]
fn replace(
    state: &Shared,
    res: usize,
    ns: &str,
    name: &str,
    sub: &str,
    headers: &HeaderMap,
    body: &[u8],
    q: &[(String, String)],
) -> Result<(u16, Value), Status> {
    let obj = object_body(headers, body)?;
    let ctx = WriteCtx { manager: field_manager(q, headers), subresource: sub, dry_run: truthy_dry(q) };
    let mut s = lock(state);
    let exists = s.objects.contains_key(&(res, ns.to_string(), name.to_string()));
    if !exists && RESOURCES[res].create_on_update && sub.is_empty() {
        if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(Status::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                obj["metadata"]["name"].as_str().unwrap_or("")
            )));
        }
        let mut obj = obj;
        obj["metadata"]["name"] = json!(name);
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        return s.create(res, ns, obj, &ctx).map(|v| (201, v));
    }
    s.update(res, ns, name, obj, &ctx).map(|v| (200, v))
}

const PATCH_TYPES_CRD: [&str; 3] =
    ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"];
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

#[allow(clippy::too_many_arguments)]
fn patch_verb(
    state: &Shared,
    rt: &ResourceType,
    res: usize,
    ns: &str,
    name: &str,
    sub: &str,
    headers: &HeaderMap,
    body: &[u8],
    q: &[(String, String)],
) -> Result<(u16, Value), Status> {
    let ct = base_type(content_type(headers).as_deref());
    let accepted: &[&str] = if rt.crd { &PATCH_TYPES_CRD } else { &PATCH_TYPES };
    if !accepted.contains(&ct.as_str()) {
        return Err(Status::unsupported_media_type(accepted));
    }
    let is_apply = ct == "application/apply-patch+yaml";
    let force = q.iter().find(|(k, _)| k == "force").map(|(_, v)| v.as_str());
    if force.is_some() && !is_apply {
        return Err(Status::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &[("force", "FieldValueForbidden", "Forbidden: may not be specified for non-apply patch".into())],
        ));
    }
    let has_manager = q.iter().any(|(k, v)| k == "fieldManager" && !v.is_empty());
    if is_apply && !has_manager {
        return Err(Status::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &[("fieldManager", "FieldValueRequired", "Required value: is required for apply patch".into())],
        ));
    }
    let ctx = WriteCtx { manager: field_manager(q, headers), subresource: sub, dry_run: truthy_dry(q) };
    if is_apply {
        let applied =
            parse_body(body).map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
        let (obj, created) = lock(state).apply(res, ns, name, applied, truthy(force), &ctx)?;
        return Ok((if created { 201 } else { 200 }, obj));
    }
    let p: Value = serde_json::from_slice(body)
        .map_err(|e| Status::bad_request(format!("error decoding patch: {e}")))?;
    let mut s = lock(state);
    let mut obj = s.get(res, ns, name)?.obj.clone();
    match ct.as_str() {
        "application/merge-patch+json" => {
            if !p.is_object() {
                return Err(Status::bad_request(
                    "error decoding patch: the merge patch is not a JSON object",
                ));
            }
            patch::merge(&mut obj, &p)
        }
        "application/strategic-merge-patch+json" => {
            if !p.is_object() {
                return Err(Status::bad_request(
                    "error decoding patch: the strategic merge patch is not a JSON object",
                ));
            }
            patch::strategic(&mut obj, &p)
        }
        _ => patch::json_patch(&mut obj, &p).map_err(|e| match e {
            JsonPatchError::Decode(m) => Status::bad_request(m),
            JsonPatchError::Apply(m) => Status::unprocessable(&m),
        })?,
    }
    if !obj.is_object() || !obj["metadata"].is_object() {
        return Err(Status::unprocessable("the patched object is not a Kubernetes object"));
    }
    s.update(res, ns, name, obj, &ctx).map(|v| (200, v))
}

fn delete_collection(
    s: &mut State,
    res: usize,
    ns: Option<&str>,
    sel: &Selector,
    dry: bool,
) -> Result<(u16, Value), Status> {
    let rt = &RESOURCES[res];
    let keys: Vec<(String, String)> = s
        .objects
        .iter()
        .filter(|(k, st)| k.0 == res && ns.is_none_or(|n| n == k.1) && sel.matches(&st.obj))
        .map(|(k, _)| (k.1.clone(), k.2.clone()))
        .collect();
    let mut items = Vec::new();
    for (kns, name) in keys {
        let before = s.get(res, &kns, &name)?.obj.clone();
        let out = s.delete(res, &kns, &name, &json!({}), dry)?;
        items.push(if out["kind"] == "Status" { before } else { out });
    }
    Ok((
        200,
        json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
    ))
}

fn parse_rv(v: &str) -> Result<u64, Status> {
    v.parse().map_err(|_| Status::bad_request(format!("invalid resource version: {v:?}")))
}

fn continue_token(rv: u64, ns: &str, name: &str) -> String {
    let start = if ns.is_empty() { format!("{name}\u{0}") } else { format!("{ns}/{name}\u{0}") };
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String), Status> {
    let bad = |why: &str| Status::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad("server does not recognize this encoded version"));
    }
    let rv = v["rv"]
        .as_u64()
        .ok_or_else(|| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start =
        v["start"].as_str().ok_or_else(|| bad("encoded start key is missing"))?.trim_end_matches('\u{0}');
    let (ns, name) = start.rsplit_once('/').unwrap_or(("", start));
    Ok((rv, ns.to_string(), name.to_string()))
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn list_options_invalid(field: &str, msg: &str) -> Status {
    Status::invalid(
        "ListOptions",
        "meta.k8s.io",
        "",
        &[(field, "FieldValueForbidden", format!("Forbidden: {msg}"))],
    )
}

/// list: `{Kind}List` (or `PartialObjectMetadataList`) at one resourceVersion, paged by `limit` and
/// `continue` (every page from the same snapshot, as etcd reads at the first page's revision).
fn list(
    s: &State,
    res: usize,
    ns: Option<&str>,
    sel: &Selector,
    meta_only: bool,
    q: &[(String, String)],
) -> Result<Value, Status> {
    let rt = &RESOURCES[res];
    let param = |k: &str| q.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let rv_param = param("resourceVersion");
    let rv_match = param("resourceVersionMatch");
    let cont = param("continue");
    if rv_match.is_some() && rv_param.is_none() {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if cont.is_some() && rv_param.is_some_and(|r| r != "0") {
        return Err(list_options_invalid(
            "resourceVersion",
            "specifying resource version is not allowed when using continue",
        ));
    }
    if let Some(m) = rv_match
        && m != "Exact"
        && m != "NotOlderThan"
    {
        return Err(Status::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            &[(
                "resourceVersionMatch",
                "FieldValueNotSupported",
                format!("Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""),
            )],
        ));
    }
    let limit: Option<usize> = match param("limit") {
        Some(l) => Some(l.parse().map_err(|_| Status::bad_request(format!("invalid limit: {l:?}")))?),
        None => None,
    }
    .filter(|l| *l > 0);
    let (at, after) = if let Some(tok) = cont {
        let (rv, kns, kname) = decode_continue(tok)?;
        if rv < s.compacted {
            return Err(Status::expired(CONTINUE_EXPIRED));
        }
        (rv, Some((kns, kname)))
    } else {
        match rv_param {
            None | Some("0") => (s.rv, None),
            Some(r) => {
                let n = parse_rv(r)?;
                if n > s.rv {
                    return Err(Status::too_large_resource_version(n, s.rv));
                }
                if rv_match == Some("Exact") {
                    if n < s.compacted {
                        return Err(Status::expired(format!(
                            "too old resource version: {n} ({})",
                            s.compacted
                        )));
                    }
                    (n, None)
                } else {
                    (s.rv, None)
                }
            }
        }
    };
    let snap = s.snapshot(res, at).map_err(|_| Status::expired(CONTINUE_EXPIRED))?;
    let mut matching: Vec<(&(String, String), &Value)> = snap
        .iter()
        .filter(|(k, o)| ns.is_none_or(|n| n == k.0) && sel.matches(o))
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .collect();
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if let Some(l) = limit
        && matching.len() > l
    {
        let rest = matching.len() - l;
        matching.truncate(l);
        let (kns, kname) = matching.last().unwrap().0;
        metadata["continue"] = json!(continue_token(at, kns, kname));
        if sel.is_empty() {
            metadata["remainingItemCount"] = json!(rest);
        }
    }
    let items: Vec<Value> = matching
        .into_iter()
        .map(|(_, o)| {
            let mut v = store::render(o, meta_only);
            if !meta_only
                && !rt.crd
                && let Some(m) = v.as_object_mut()
            {
                m.remove("apiVersion");
                m.remove("kind");
            }
            v
        })
        .collect();
    let (kind, av) = if meta_only {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string())
    } else {
        (rt.list_kind(), rt.api_version())
    };
    Ok(json!({"kind": kind, "apiVersion": av, "metadata": metadata, "items": items}))
}

/// An open watch: its queue of event lines, fed under the state lock by every write.
struct Open {
    state: Shared,
    id: u64,
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    res: usize,
    meta_only: bool,
    bookmarks: bool,
    deadline: tokio::time::Instant,
    last_bookmark: tokio::time::Instant,
    nudge: Arc<tokio::sync::Notify>,
    done: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.watchers.retain(|w| w.id != self.id);
    }
}

impl Open {
    /// The queued events and a BOOKMARK at the current resourceVersion, taken under the lock so
    /// that no event at or before that resourceVersion can come after it.
    fn drain_with_bookmark(&mut self) -> String {
        let s = lock(&self.state);
        let mut out = String::new();
        while let Ok(line) = self.rx.try_recv() {
            out.push_str(&line);
        }
        out.push_str(&store::bookmark_line(&RESOURCES[self.res], self.meta_only, s.rv, false));
        out
    }
}

fn watch(
    state: &Shared,
    res: usize,
    ns: Option<String>,
    sel: Selector,
    meta_only: bool,
    q: &[(String, String)],
) -> Reply {
    let param = |k: &str| q.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
    let bookmarks = truthy(param("allowWatchBookmarks"));
    let send_initial = param("sendInitialEvents").map(|v| v == "true" || v == "1");
    let rv_match = param("resourceVersionMatch").filter(|v| !v.is_empty());
    if send_initial.is_some() && rv_match != Some("NotOlderThan") {
        return list_options_invalid(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        )
        .into();
    }
    if send_initial.is_none() && rv_match.is_some() {
        return list_options_invalid(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        )
        .into();
    }
    if send_initial == Some(true) && !bookmarks {
        return Status::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            &[(
                "allowWatchBookmarks",
                "FieldValueRequired",
                "Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set"
                    .into(),
            )],
        )
        .into();
    }
    let timeout = match param("timeoutSeconds") {
        Some(t) => match t.parse::<u64>() {
            Ok(t) => Duration::from_secs(t),
            Err(_) => return Status::bad_request(format!("invalid timeoutSeconds: {t:?}")).into(),
        },
        None => Duration::from_secs(1800),
    };
    let rv = param("resourceVersion").filter(|v| !v.is_empty());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut s = lock(state);
    let rt = &RESOURCES[res];
    let matches_ns = |k: &(usize, String, String)| k.0 == res && ns.as_deref().is_none_or(|n| n == k.1);
    let initial = |s: &State| -> Vec<String> {
        s.objects
            .iter()
            .filter(|(k, st)| matches_ns(k) && sel.matches(&st.obj))
            .map(|(_, st)| {
                json!({"type": "ADDED", "object": store::render(&st.obj, meta_only)}).to_string() + "\n"
            })
            .collect()
    };
    let mut lines = Vec::new();
    let mut end_now = false;
    match (rv, send_initial) {
        (_, Some(true)) => {
            if let Some(r) = rv {
                match parse_rv(r) {
                    Ok(n) if n > s.rv => {
                        lines.push(store::error_line(&Status::too_large_resource_version(n, s.rv)));
                        end_now = true;
                    }
                    Ok(_) => {}
                    Err(e) => return e.into(),
                }
            }
            if !end_now {
                lines.extend(initial(&s));
                lines.push(store::bookmark_line(rt, meta_only, s.rv, true));
            }
        }
        (None | Some("0"), _) => {
            if send_initial != Some(false) {
                lines.extend(initial(&s));
            }
        }
        (Some(r), _) => {
            let n = match parse_rv(r) {
                Ok(n) => n,
                Err(e) => return e.into(),
            };
            if n < s.compacted {
                // The apiserver answers 200 and sends the 410 as the stream's one event.
                lines.push(store::error_line(&Status::expired(format!(
                    "too old resource version: {n} ({})",
                    s.compacted
                ))));
                end_now = true;
            } else if n > s.rv {
                lines.push(store::error_line(&Status::too_large_resource_version(n, s.rv)));
                end_now = true;
            } else {
                for ev in s.history.iter().filter(|e| e.rv > n) {
                    if let Some(l) = store::event_line(res, ns.as_deref(), &sel, meta_only, ev) {
                        lines.push(l);
                    }
                }
            }
        }
    }
    for l in lines {
        let _ = tx.send(l);
    }
    s.next_watcher += 1;
    let id = s.next_watcher;
    let nudge = Arc::new(tokio::sync::Notify::new());
    if !end_now {
        s.watchers.push(store::Watcher {
            id,
            res,
            ns: ns.clone(),
            sel: sel.clone(),
            meta_only,
            tx,
            nudge: nudge.clone(),
        });
    } else {
        drop(tx);
    }
    drop(s);
    let now = tokio::time::Instant::now();
    let open = Open {
        state: state.clone(),
        id,
        rx,
        res,
        meta_only,
        bookmarks,
        deadline: now + timeout,
        last_bookmark: now,
        nudge,
        done: false,
    };
    let stream = futures::stream::unfold(open, |mut o| async move {
        if o.done {
            return None;
        }
        let every = lock(&o.state).bookmark_every;
        let next_bookmark = o.last_bookmark + every;
        tokio::select! {
            biased;
            line = o.rx.recv() => line.map(|l| (Ok::<Bytes, Infallible>(Bytes::from(l)), o)),
            _ = tokio::time::sleep_until(o.deadline) => {
                o.done = true;
                // The apiserver sends a last bookmark just before it ends a watch at its timeout.
                o.bookmarks.then(|| (Ok(Bytes::from(o.drain_with_bookmark())), o))
            }
            _ = tokio::time::sleep_until(next_bookmark), if o.bookmarks => {
                o.last_bookmark = tokio::time::Instant::now();
                Some((Ok(Bytes::from(o.drain_with_bookmark())), o))
            }
            _ = o.nudge.notified(), if o.bookmarks => {
                o.last_bookmark = tokio::time::Instant::now();
                Some((Ok(Bytes::from(o.drain_with_bookmark())), o))
            }
        }
    });
    Reply::Watch(Body::from_stream(stream))
}
