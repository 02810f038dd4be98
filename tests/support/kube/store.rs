//! The stand-in's etcd and registry: objects, the global resourceVersion counter, the kept history
//! (for watches from a resourceVersion and for consistent list pages), open watches, and the writes
//! with the apiserver's rules (preconditions, generation, status subresource, finalizers, field
//! ownership).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::fields::{self, Manager, Owners, Scope};
use super::resources::{RESOURCES, ResourceType};
use super::selector::Selector;
use super::status::{self, Status};

/// (resource index, namespace ("" when cluster-scoped), name)
pub type Key = (usize, String, String);

pub struct Stored {
    pub obj: Value,
    pub owners: Owners,
}

pub struct HistEvent {
    pub rv: u64,
    pub key: Key,
    /// "ADDED" | "MODIFIED" | "DELETED"
    pub etype: &'static str,
    /// The object after the write (the last state, with the delete's resourceVersion, for DELETED).
    pub obj: Value,
    pub prev: Option<Value>,
}

pub struct Watcher {
    pub id: u64,
    pub res: usize,
    pub ns: Option<String>,
    pub sel: Selector,
    pub meta_only: bool,
    pub tx: tokio::sync::mpsc::UnboundedSender<String>,
    /// Wakes the watch to send a BOOKMARK now (`KubeApi::bookmark_now`).
    pub nudge: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The body as JSON (YAML bodies of apply patches converted); Null when empty, a string when
    /// neither parses.
    pub body: Value,
    pub status: u16,
}

impl Recorded {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        form_pairs(&self.query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }
}

pub struct Fault {
    pub method: String,
    pub prefix: String,
    pub code: u16,
    pub left: usize,
}

pub struct State {
    pub token: String,
    pub server_url: String,
    /// The global counter (etcd's revision): the resourceVersion of the last write.
    pub rv: u64,
    /// Watches and list pages from a resourceVersion older than this get 410 Expired.
    pub compacted: u64,
    pub objects: BTreeMap<Key, Stored>,
    pub history: Vec<HistEvent>,
    pub watchers: Vec<Watcher>,
    pub next_watcher: u64,
    pub bookmark_every: Duration,
    pub requests: Vec<Recorded>,
    pub faults: Vec<Fault>,
    /// (verb, plural) pairs RBAC denies.
    pub forbidden: Vec<(String, String)>,
    /// API groups whose CRDs are not installed.
    pub uninstalled: Vec<String>,
    pub rng: u64,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a write is made: who, and through which part of the resource.
pub struct WriteCtx<'a> {
    pub manager: String,
    pub subresource: &'a str,
    pub dry_run: bool,
}

fn meta<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

fn scope(rt: &ResourceType, subresource: &str) -> Scope<'static> {
    Scope {
        subresource: if subresource == "status" { "status" } else { "" },
        has_status: rt.status,
        crd: rt.crd,
    }
}

/// The content that, when it changes, bumps `metadata.generation`.
fn spec_content(rt: &ResourceType, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Value::Object(m) = &mut v {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if rt.status {
            m.remove("status");
        }
    }
    v
}

/// An object with its system fields and managed fields dropped, to tell a no-op write.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

impl State {
    pub fn random_hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                char::from_digit(((x >> 33) % 16) as u32, 16).unwrap()
            })
            .collect()
    }

    pub fn uid(&mut self) -> String {
        let h = self.random_hex(32);
        format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
    }

    fn suffix(&mut self) -> String {
        const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.random_hex(10)
            .as_bytes()
            .chunks(2)
            .map(|c| A[usize::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap() % A.len()] as char)
            .collect()
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(0, String::new(), ns.to_string()))
    }

    /// Stores a write (None: a delete), gives it the next resourceVersion, keeps it in the history
    /// and sends it to the open watches. Returns the object as stored.
    pub fn commit(&mut self, key: Key, new: Option<(Value, Owners)>) -> Value {
        self.rv += 1;
        let rv = self.rv.to_string();
        let prev = self.objects.get(&key).map(|s| s.obj.clone());
        let (etype, obj) = match new {
            Some((mut obj, owners)) => {
                obj["metadata"]["resourceVersion"] = json!(rv);
                let managed = owners.render();
                if let Some(m) = obj["metadata"].as_object_mut() {
                    if managed.as_array().is_some_and(|a| !a.is_empty()) {
                        m.insert("managedFields".into(), managed);
                    } else {
                        m.remove("managedFields");
                    }
                }
                let etype = if prev.is_some() { "MODIFIED" } else { "ADDED" };
                self.objects.insert(key.clone(), Stored { obj: obj.clone(), owners });
                (etype, obj)
            }
            None => {
                let mut obj = self.objects.remove(&key).map(|s| s.obj).expect("delete of a stored object");
                obj["metadata"]["resourceVersion"] = json!(rv);
                ("DELETED", obj)
            }
        };
        let ev = HistEvent { rv: self.rv, key, etype, obj: obj.clone(), prev };
        self.fan_out(&ev);
        self.history.push(ev);
        obj
    }

    fn fan_out(&mut self, ev: &HistEvent) {
        self.watchers.retain(|w| match event_line(w.res, w.ns.as_deref(), &w.sel, w.meta_only, ev) {
            Some(line) => w.tx.send(line).is_ok(),
            None => !w.tx.is_closed(),
        });
    }

    /// Objects of a resource as they were at `rv` (the current ones when `rv` is the latest),
    /// rebuilt from the kept history. Err(410) when compacted away.
    pub fn snapshot(&self, res: usize, rv: u64) -> Result<BTreeMap<(String, String), Value>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        let mut items: BTreeMap<(String, String), Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == res)
            .map(|(k, s)| ((k.1.clone(), k.2.clone()), s.obj.clone()))
            .collect();
        for ev in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if ev.key.0 != res {
                continue;
            }
            let k = (ev.key.1.clone(), ev.key.2.clone());
            match &ev.prev {
                Some(p) => {
                    items.insert(k, p.clone());
                }
                None => {
                    items.remove(&k);
                }
            }
        }
        Ok(items)
    }

    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    // ---- writes, with the apiserver's rules ----

    /// POST. `body` is the object sent; `ns` is the URL's namespace ("" for cluster-scoped).
    pub fn create(&mut self, res: usize, ns: &str, mut body: Value, ctx: &WriteCtx) -> Result<Value, Status> {
        let rt = &RESOURCES[res];
        check_type(rt, &mut body)?;
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        let mut name = meta(&body, "name").unwrap_or("").to_string();
        if name.is_empty() {
            match meta(&body, "generateName") {
                Some(g) if !g.is_empty() => {
                    name = format!("{g}{}", self.suffix());
                    body["metadata"]["name"] = json!(name);
                }
                _ => {
                    return Err(Status::invalid(
                        rt.kind,
                        rt.group,
                        "",
                        &[(
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        if meta(&body, "resourceVersion").is_some_and(|r| !r.is_empty()) {
            return Err(Status::internal("resourceVersion should not be set on objects to be created"));
        }
        check_namespace(rt, ns, &mut body)?;
        if rt.namespaced && !self.namespace_exists(ns) {
            return Err(Status::namespace_not_found(ns));
        }
        let key = (res, ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(Status::already_exists(rt, &name));
        }
        let uid = self.uid();
        let m = body["metadata"].as_object_mut().unwrap();
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now()));
        for f in ["deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
            m.remove(f);
        }
        if rt.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if rt.status
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        if rt.kind == "Namespace" {
            body["spec"] = json!({"finalizers": ["kubernetes"]});
            body["status"] = json!({"phase": "Active"});
            body["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        let mut owners = Owners::default();
        let mgr = Manager { name: ctx.manager.clone(), operation: "Update", subresource: String::new() };
        owners.update(None, &body, &mgr, &rt.api_version(), &now(), scope(rt, ""));
        if ctx.dry_run {
            body["metadata"]["managedFields"] = owners.render();
            return Ok(body);
        }
        Ok(self.commit(key, Some((body, owners))))
    }

    pub fn get(&self, res: usize, ns: &str, name: &str) -> Result<&Stored, Status> {
        self.objects
            .get(&(res, ns.to_string(), name.to_string()))
            .ok_or_else(|| Status::not_found(&RESOURCES[res], name))
    }

    /// An Update of an existing object to `cand` (a PUT body, or the current object patched):
    /// preconditions, the parts the subresource may change, generation, field ownership,
    /// finalizers; a no-op is not written (no new resourceVersion, no event), as the apiserver does.
    pub fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        mut cand: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, Status> {
        let rt = &RESOURCES[res];
        let key = (res, ns.to_string(), name.to_string());
        let cur = self.get(res, ns, name)?.obj.clone();
        check_type(rt, &mut cand)?;
        if !cand["metadata"].is_object() {
            cand["metadata"] = json!({});
        }
        self.check_preconditions(rt, name, &cur, &cand)?;
        match meta(&cand, "name") {
            Some(n) if n != name => {
                return Err(Status::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => cand["metadata"]["name"] = json!(name),
        }
        check_namespace(rt, ns, &mut cand)?;
        let new = self.finish(rt, &cur, cand, ctx.subresource)?;
        let mgr = Manager {
            name: ctx.manager.clone(),
            operation: "Update",
            subresource: if ctx.subresource == "status" { "status".into() } else { String::new() },
        };
        let mut owners = self.objects[&key].owners.clone();
        owners.update(Some(&cur), &new, &mgr, &rt.api_version(), &now(), scope(rt, ctx.subresource));
        self.write(key, &cur, new, owners, ctx.dry_run)
    }

    /// A server-side apply (PATCH application/apply-patch+yaml). Creates the object when missing.
    pub fn apply(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        applied: Value,
        force: bool,
        ctx: &WriteCtx,
    ) -> Result<(Value, bool), Status> {
        let rt = &RESOURCES[res];
        if !applied.is_object() {
            return Err(Status::bad_request(
                "error decoding YAML: the applied configuration is not an object",
            ));
        }
        let av = applied["apiVersion"].as_str().unwrap_or("");
        if av != rt.api_version() {
            return Err(Status::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {av}, expected: {}",
                rt.api_version()
            )));
        }
        let kind = applied["kind"].as_str().unwrap_or("");
        if kind != rt.kind {
            return Err(Status::bad_request(format!(
                "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
                rt.kind
            )));
        }
        if !applied["metadata"]["managedFields"].is_null() {
            return Err(Status::bad_request("metadata.managedFields must be nil"));
        }
        if let Some(n) = meta(&applied, "name").filter(|n| *n != name) {
            return Err(Status::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut applied = applied.clone();
        check_namespace(rt, ns, &mut applied)?;
        let key = (res, ns.to_string(), name.to_string());
        let sc = scope(rt, ctx.subresource);
        let mgr = Manager {
            name: ctx.manager.clone(),
            operation: "Apply",
            subresource: if ctx.subresource == "status" { "status".into() } else { String::new() },
        };
        let scoped = fields::scoped(&applied, sc);
        let time = now();
        match self.objects.get(&key).map(|s| (s.obj.clone(), s.owners.clone())) {
            None => {
                if ctx.subresource == "status" {
                    return Err(Status::not_found(rt, name));
                }
                if meta(&applied, "resourceVersion").is_some_and(|r| !r.is_empty()) {
                    return Err(Status::internal(
                        "resourceVersion should not be set on objects to be created",
                    ));
                }
                let mut owners = Owners::default();
                let mut obj = owners
                    .apply(None, &scoped, &mgr, &rt.api_version(), &time, force, sc)
                    .map_err(|c| conflict_status(&c))?;
                obj["apiVersion"] = json!(rt.api_version());
                obj["kind"] = json!(rt.kind);
                obj["metadata"]["name"] = json!(name);
                if rt.namespaced {
                    obj["metadata"]["namespace"] = json!(ns);
                    if !self.namespace_exists(ns) {
                        return Err(Status::namespace_not_found(ns));
                    }
                }
                let uid = self.uid();
                obj["metadata"]["uid"] = json!(uid);
                obj["metadata"]["creationTimestamp"] = json!(now());
                if rt.generation {
                    obj["metadata"]["generation"] = json!(1);
                }
                if ctx.dry_run {
                    obj["metadata"]["managedFields"] = owners.render();
                    return Ok((obj, true));
                }
                Ok((self.commit(key, Some((obj, owners))), true))
            }
            Some((cur, mut owners)) => {
                self.check_preconditions(rt, name, &cur, &applied)?;
                let merged = owners
                    .apply(Some(&cur), &scoped, &mgr, &rt.api_version(), &time, force, sc)
                    .map_err(|c| conflict_status(&c))?;
                let new = self.finish(rt, &cur, merged, ctx.subresource)?;
                Ok((self.write(key, &cur, new, owners, ctx.dry_run)?, false))
            }
        }
    }

    /// `metadata.resourceVersion` and `metadata.uid` in a body are preconditions.
    fn check_preconditions(
        &self,
        rt: &ResourceType,
        name: &str,
        cur: &Value,
        cand: &Value,
    ) -> Result<(), Status> {
        if let Some(rv) = meta(cand, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta(cur, "resourceVersion")
        {
            return Err(Status::modified(rt, name));
        }
        if let Some(uid) = meta(cand, "uid").filter(|u| !u.is_empty())
            && Some(uid) != meta(cur, "uid")
        {
            return Err(Status::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(cur, "uid").unwrap_or("")
                ),
            ));
        }
        Ok(())
    }

    /// The new object from the current one and a candidate: system metadata kept, only the parts
    /// the subresource may write taken, generation bumped on a spec change.
    fn finish(
        &self,
        rt: &ResourceType,
        cur: &Value,
        mut cand: Value,
        subresource: &str,
    ) -> Result<Value, Status> {
        let mut new = if rt.status && subresource == "status" {
            let mut n = cur.clone();
            match cand.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut().unwrap().remove("status");
                }
            }
            n
        } else {
            if rt.status {
                match cur.get("status") {
                    Some(s) => cand["status"] = s.clone(),
                    None => {
                        cand.as_object_mut().unwrap().remove("status");
                    }
                }
            }
            cand
        };
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        let m = new["metadata"].as_object_mut().unwrap();
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"]
        {
            match cur["metadata"].get(f) {
                Some(v) => {
                    m.insert(f.into(), v.clone());
                }
                None => {
                    m.remove(f);
                }
            }
        }
        m.remove("managedFields");
        m.insert("resourceVersion".into(), cur["metadata"]["resourceVersion"].clone());
        if rt.generation && spec_content(rt, &new) != spec_content(rt, cur) {
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if cur["metadata"]["deletionTimestamp"].is_string() {
            let old: Vec<&Value> =
                cur["metadata"]["finalizers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(added) =
                new["metadata"]["finalizers"].as_array().into_iter().flatten().find(|f| !old.contains(f))
            {
                return Err(Status::invalid(
                    rt.kind,
                    rt.group,
                    cur["metadata"]["name"].as_str().unwrap_or(""),
                    &[(
                        "metadata.finalizers",
                        "FieldValueForbidden",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added}}}"
                        ),
                    )],
                ));
            }
        }
        Ok(new)
    }

    /// Writes an update unless it is a no-op; an object being deleted whose last finalizer went is
    /// removed.
    fn write(
        &mut self,
        key: Key,
        cur: &Value,
        new: Value,
        owners: Owners,
        dry_run: bool,
    ) -> Result<Value, Status> {
        if comparable(cur) == comparable(&new) && fields_equal(&self.objects[&key].owners, &owners) {
            return Ok(cur.clone());
        }
        if dry_run {
            let mut n = new;
            n["metadata"]["managedFields"] = owners.render();
            return Ok(n);
        }
        let being_deleted = new["metadata"]["deletionTimestamp"].is_string();
        let no_finalizers = new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        let stored = self.commit(key.clone(), Some((new, owners)));
        if being_deleted && no_finalizers {
            self.commit(key, None);
        }
        Ok(stored)
    }

    /// DELETE. Ok(the response body).
    pub fn delete(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> Result<Value, Status> {
        let rt = &RESOURCES[res];
        let key = (res, ns.to_string(), name.to_string());
        let cur = self.get(res, ns, name)?.obj.clone();
        let pre = &opts["preconditions"];
        if let Some(uid) = pre["uid"].as_str()
            && Some(uid) != meta(&cur, "uid")
        {
            return Err(Status::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(&cur, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && Some(rv) != meta(&cur, "resourceVersion")
        {
            return Err(Status::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta(&cur, "resourceVersion").unwrap_or("")
                ),
            ));
        }
        let uid = meta(&cur, "uid").unwrap_or("").to_string();
        let has_finalizers = cur["metadata"]["finalizers"].as_array().is_some_and(|a| !a.is_empty());
        if has_finalizers {
            if cur["metadata"]["deletionTimestamp"].is_string() {
                return Ok(cur);
            }
            let mut new = cur.clone();
            new["metadata"]["deletionTimestamp"] = json!(now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(g) = cur["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
                new["metadata"]["generation"] = json!(g + 1);
            }
            if dry_run {
                return Ok(new);
            }
            let owners = self.objects[&key].owners.clone();
            return Ok(self.commit(key, Some((new, owners))));
        }
        if dry_run {
            return Ok(status::deleted(rt, name, &uid));
        }
        if rt.kind == "Namespace" {
            let inside: Vec<Key> =
                self.objects.keys().filter(|k| k.1 == name && RESOURCES[k.0].namespaced).cloned().collect();
            for k in inside {
                self.commit(k, None);
            }
        }
        self.commit(key, None);
        Ok(status::deleted(rt, name, &uid))
    }
}

fn fields_equal(a: &Owners, b: &Owners) -> bool {
    a.entries.len() == b.entries.len()
        && a.entries.iter().zip(&b.entries).all(|(x, y)| x.manager == y.manager && x.fields == y.fields)
}

fn conflict_status(conflicts: &[fields::Conflict]) -> Status {
    let causes = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", fields::print_manager(c)),
                "field": fields::path_string(&c.path),
            })
        })
        .collect();
    Status::apply_conflict(fields::conflict_message(conflicts), causes)
}

/// apiVersion and kind of a body: must match the endpoint's; filled in when absent (a custom
/// resource must carry its kind, as unstructured decoding requires).
fn check_type(rt: &ResourceType, body: &mut Value) -> Result<(), Status> {
    if !body.is_object() {
        return Err(Status::bad_request("the body of the request is not a JSON object"));
    }
    match body["apiVersion"].as_str() {
        Some(av) if av != rt.api_version() => {
            return Err(Status::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        Some(_) => {}
        None if rt.crd => {
            return Err(Status::bad_request(format!("Object 'apiVersion' is missing in '{body}'")));
        }
        None => body["apiVersion"] = json!(rt.api_version()),
    }
    match body["kind"].as_str() {
        Some(k) if k != rt.kind => Err(Status::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        ))),
        Some(_) => Ok(()),
        None if rt.crd => Err(Status::bad_request(format!("Object 'Kind' is missing in '{body}'"))),
        None => {
            body["kind"] = json!(rt.kind);
            Ok(())
        }
    }
}

fn check_namespace(rt: &ResourceType, ns: &str, body: &mut Value) -> Result<(), Status> {
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    if !rt.namespaced {
        if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    }
    match meta(body, "namespace") {
        Some(n) if !n.is_empty() && n != ns => Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            body["metadata"]["namespace"] = json!(ns);
            Ok(())
        }
    }
}

/// An object as a watch event, a get or a list item sends it: the full object, or its
/// `PartialObjectMetadata` (meta.k8s.io/v1).
pub fn render(obj: &Value, meta_only: bool) -> Value {
    if meta_only {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
    } else {
        obj.clone()
    }
}

/// The watch event line for a watcher, or None when the change is not for it. An object that
/// stops matching the selector is sent as DELETED, one that starts matching as ADDED (as the
/// apiserver's watch cache does).
pub fn event_line(
    res: usize,
    ns: Option<&str>,
    sel: &Selector,
    meta_only: bool,
    ev: &HistEvent,
) -> Option<String> {
    if ev.key.0 != res || ns.is_some_and(|n| n != ev.key.1) {
        return None;
    }
    let now_matches = ev.etype != "DELETED" && sel.matches(&ev.obj);
    let was_matching = match (&ev.prev, ev.etype) {
        (_, "DELETED") => sel.matches(&ev.obj),
        (Some(p), _) => sel.matches(p),
        (None, _) => false,
    };
    let (etype, obj) = match (was_matching, now_matches) {
        (false, true) => ("ADDED", ev.obj.clone()),
        (true, true) => (if ev.prev.is_some() { "MODIFIED" } else { "ADDED" }, ev.obj.clone()),
        (true, false) if ev.etype == "DELETED" => ("DELETED", ev.obj.clone()),
        (true, false) => {
            let mut old = ev.prev.clone().unwrap_or_else(|| ev.obj.clone());
            old["metadata"]["resourceVersion"] = ev.obj["metadata"]["resourceVersion"].clone();
            ("DELETED", old)
        }
        (false, false) => return None,
    };
    Some(json!({"type": etype, "object": render(&obj, meta_only)}).to_string() + "\n")
}

/// A BOOKMARK event line at `rv`.
pub fn bookmark_line(rt: &ResourceType, meta_only: bool, rv: u64, initial_end: bool) -> String {
    let (kind, av) = if meta_only {
        ("PartialObjectMetadata".to_string(), "meta.k8s.io/v1".to_string())
    } else {
        (rt.kind.to_string(), rt.api_version())
    };
    let mut m = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": av, "metadata": m}}).to_string() + "\n"
}

pub fn error_line(s: &Status) -> String {
    json!({"type": "ERROR", "object": s.to_json()}).to_string() + "\n"
}
