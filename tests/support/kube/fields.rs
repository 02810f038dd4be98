//! Field ownership (`metadata.managedFields`) and server-side apply, after the apiserver's
//! structured-merge-diff, simplified:
//!
//! - a field path is a leaf of the object: a scalar, an empty object, or an atomic list; lists with a
//!   merge key (built-in kinds only: `containers` by `name`, …, see `resources::merge_key`) are
//!   associative, element by element (`[name="app"]`), `metadata.finalizers` is a set and
//!   `metadata.ownerReferences` is keyed by `uid` for every kind; every other list, and every list of
//!   a CRD (Argo CD's and Flux's schemas mark none `x-kubernetes-list-type: map`), is atomic;
//! - managers are told apart by (name, operation, subresource), as in the apiserver: "x" applying
//!   and "x" updating are two owners;
//! - an Apply conflicts when it sets a field to a value other than the live one while another
//!   manager owns that field (409 with the apiserver's message and `FieldManagerConflict` causes);
//!   `force` takes the fields over. Equal values are shared. Fields the applier owned before and no
//!   longer applies are removed unless someone else owns them;
//! - an Update (create, PUT, merge/JSON/strategic patch) gives its manager the fields it changed,
//!   taking them from every other manager, without conflicts; removed fields lose their owners.
//!
//! Not modelled: per-version conversion of field sets, `x-kubernetes-map-type: atomic`, defaulting
//! of applied configurations, and the "unset a field another manager shares" subtleties.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::resources::merge_key;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Field(String),
    /// An element of an associative list, by its key fields (canonical JSON object).
    Key(String),
    /// An element of a set (JSON of the value).
    Set(String),
}

pub type Path = Vec<Seg>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manager {
    pub name: String,
    /// "Apply" | "Update"
    pub operation: &'static str,
    /// "" | "status"
    pub subresource: String,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub manager: Manager,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

#[derive(Clone, Debug, Default)]
pub struct Owners {
    pub entries: Vec<Entry>,
}

pub struct Conflict {
    pub manager: Manager,
    pub api_version: String,
    pub time: String,
    pub path: Path,
}

/// Which part of the object a write may touch: the main resource (everything but `status` when the
/// resource has a status subresource) or `/status` (only `status`).
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub subresource: &'a str,
    pub has_status: bool,
    pub crd: bool,
}

impl Scope<'_> {
    fn admits(&self, p: &Path) -> bool {
        let is_status = matches!(p.first(), Some(Seg::Field(f)) if f == "status");
        if self.subresource == "status" { is_status } else { !(is_status && self.has_status) }
    }
}

const SYSTEM_META: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The field paths of `obj` within `scope` (system fields excluded).
pub fn leaves(obj: &Value, scope: Scope) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta {
                        if !SYSTEM_META.contains(&mk.as_str()) {
                            walk(
                                mv,
                                vec![Seg::Field("metadata".into()), Seg::Field(mk.clone())],
                                mk,
                                true,
                                scope.crd,
                                &mut out,
                            );
                        }
                    }
                }
                continue;
            }
            walk(v, vec![Seg::Field(k.clone())], k, false, scope.crd, &mut out);
        }
    }
    out.retain(|p| scope.admits(p));
    out
}

/// The key of an element of the list `field` (None: the list is atomic).
fn list_key(field: &str, in_meta: bool, crd: bool) -> Option<&'static str> {
    if in_meta && field == "ownerReferences" {
        return Some("uid");
    }
    if crd { None } else { merge_key(field) }
}

fn key_seg(key: &str, elem: &Value) -> Option<Seg> {
    let id = elem.get(key)?;
    let mut m = Map::new();
    m.insert(key.to_string(), id.clone());
    Some(Seg::Key(Value::Object(m).to_string()))
}

fn walk(v: &Value, path: Path, field: &str, in_meta: bool, crd: bool, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(Seg::Field(k.clone()));
                walk(c, p, k, false, crd, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let is_set = in_meta && field == "finalizers";
            let key = list_key(field, in_meta, crd);
            if is_set {
                for e in a {
                    let mut p = path.clone();
                    p.push(Seg::Set(e.to_string()));
                    out.insert(p);
                }
            } else if let Some(key) = key.filter(|k| a.iter().all(|e| e.get(*k).is_some())) {
                for e in a {
                    let mut p = path.clone();
                    p.push(key_seg(key, e).unwrap());
                    out.insert(p.clone());
                    if let Value::Object(m) = e {
                        for (k, c) in m {
                            let mut p2 = p.clone();
                            p2.push(Seg::Field(k.clone()));
                            walk(c, p2, k, false, crd, out);
                        }
                    }
                }
            } else {
                out.insert(path);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

fn elem_matches(e: &Value, key: &str) -> bool {
    let Ok(Value::Object(k)) = serde_json::from_str::<Value>(key) else { return false };
    k.iter().all(|(kk, kv)| e.get(kk) == Some(kv))
}

fn set_elem(e: &Value, x: &str) -> bool {
    serde_json::from_str::<Value>(x).is_ok_and(|v| v == *e)
}

/// The value at a field path.
pub fn get<'a>(v: &'a Value, p: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for s in p {
        cur = match (s, cur) {
            (Seg::Field(f), Value::Object(m)) => m.get(f)?,
            (Seg::Key(k), Value::Array(a)) => a.iter().find(|e| elem_matches(e, k))?,
            (Seg::Set(x), Value::Array(a)) => a.iter().find(|e| set_elem(e, x))?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes what is at a field path (and the objects and lists it leaves empty).
fn remove(v: &mut Value, p: &[Seg]) {
    let Some((last, parent)) = p.split_last() else { return };
    let mut cur = &mut *v;
    for s in parent {
        let next = match (s, cur) {
            (Seg::Field(f), Value::Object(m)) => m.get_mut(f),
            (Seg::Key(k), Value::Array(a)) => a.iter_mut().find(|e| elem_matches(e, k)),
            (Seg::Set(x), Value::Array(a)) => a.iter_mut().find(|e| set_elem(e, x)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (Seg::Field(f), Value::Object(m)) => {
            m.remove(f);
        }
        (Seg::Key(k), Value::Array(a)) => a.retain(|e| !elem_matches(e, k)),
        (Seg::Set(x), Value::Array(a)) => a.retain(|e| !set_elem(e, x)),
        _ => {}
    }
    if parent.len() > 1
        && get(v, parent).is_some_and(|x| {
            x.as_object().is_some_and(Map::is_empty) || x.as_array().is_some_and(Vec::is_empty)
        })
    {
        remove(v, parent);
    }
}

/// Merges an applied configuration into the live object: objects field by field, associative
/// lists element by element, sets by union, atomic lists and scalars replaced.
fn merge_applied(live: &mut Value, applied: &Value, field: &str, in_meta: bool, crd: bool) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) => merge_applied(lv, av, k, false, crd),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            if in_meta && field == "finalizers" {
                for e in a {
                    if !l.contains(e) {
                        l.push(e.clone());
                    }
                }
                return;
            }
            match list_key(field, in_meta, crd)
                .filter(|k| a.iter().chain(l.iter()).all(|e| e.get(*k).is_some()))
            {
                Some(key) => {
                    for e in a {
                        match l.iter_mut().find(|x| x.get(key) == e.get(key)) {
                            Some(x) => merge_applied(x, e, "", false, crd),
                            None => l.push(e.clone()),
                        }
                    }
                }
                None => *l = a.clone(),
            }
        }
        (l, a) => *l = a.clone(),
    }
}

/// `metadata` of an applied configuration merges with `in_meta` set for its direct children.
fn merge_object(live: &mut Value, applied: &Value, crd: bool) {
    let (Value::Object(l), Value::Object(a)) = (&mut *live, applied) else {
        *live = applied.clone();
        return;
    };
    for (k, av) in a {
        if k == "metadata" {
            let lm = l.entry("metadata").or_insert_with(|| json!({}));
            if let (Value::Object(lm), Value::Object(am)) = (lm, av) {
                for (mk, mv) in am {
                    match lm.get_mut(mk) {
                        Some(x) => merge_applied(x, mv, mk, true, crd),
                        None => {
                            lm.insert(mk.clone(), mv.clone());
                        }
                    }
                }
            }
        } else {
            match l.get_mut(k) {
                Some(x) => merge_applied(x, av, k, false, crd),
                None => {
                    l.insert(k.clone(), av.clone());
                }
            }
        }
    }
}

/// Keeps only the parts of an applied configuration within the scope (a main-resource apply of a
/// kind with a status subresource drops `status`; an apply to `/status` keeps only `status`, plus
/// the type and name).
pub fn scoped(applied: &Value, scope: Scope) -> Value {
    let mut a = applied.clone();
    if let Value::Object(m) = &mut a {
        if scope.subresource == "status" {
            m.retain(|k, _| matches!(k.as_str(), "status" | "apiVersion" | "kind" | "metadata"));
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.retain(|k, _| k == "name" || k == "namespace" || k == "resourceVersion");
            }
        } else if scope.has_status {
            m.remove("status");
        }
    }
    a
}

impl Owners {
    fn entry_mut(&mut self, m: &Manager, api_version: &str, time: &str) -> &mut Entry {
        match self.entries.iter().position(|e| e.manager == *m) {
            Some(i) => {
                let e = &mut self.entries[i];
                e.time = time.to_string();
                e.api_version = api_version.to_string();
                e
            }
            None => {
                self.entries.push(Entry {
                    manager: m.clone(),
                    api_version: api_version.to_string(),
                    time: time.to_string(),
                    fields: BTreeSet::new(),
                });
                self.entries.last_mut().unwrap()
            }
        }
    }

    fn prune(&mut self) {
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Records an Update from `old` (None: a create) to `new` by `manager`.
    pub fn update(
        &mut self,
        old: Option<&Value>,
        new: &Value,
        manager: &Manager,
        api_version: &str,
        time: &str,
        scope: Scope,
    ) {
        let empty = json!({});
        let old = old.unwrap_or(&empty);
        let before = leaves(old, scope);
        let after = leaves(new, scope);
        let changed: BTreeSet<Path> = after
            .iter()
            .filter(|p| {
                !before.contains(*p) || (!matches!(p.last(), Some(Seg::Key(_))) && get(old, p) != get(new, p))
            })
            .cloned()
            .collect();
        let removed: BTreeSet<Path> = before.difference(&after).cloned().collect();
        for e in &mut self.entries {
            e.fields.retain(|p| !removed.contains(p) && !changed.contains(p));
        }
        if !changed.is_empty() {
            self.entry_mut(manager, api_version, time).fields.extend(changed);
        }
        self.prune();
    }

    /// Server-side apply of `applied` (already [`scoped`]) onto `live` (None: the object is
    /// created). Ok(the new object) or Err(the conflicts).
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        live: Option<&Value>,
        applied: &Value,
        manager: &Manager,
        api_version: &str,
        time: &str,
        force: bool,
        scope: Scope,
    ) -> Result<Value, Vec<Conflict>> {
        let empty = json!({});
        let live_v = live.unwrap_or(&empty);
        let fields = leaves(applied, scope);
        let mut conflicts = Vec::new();
        let mut taken: BTreeSet<Path> = BTreeSet::new();
        for p in &fields {
            if matches!(p.last(), Some(Seg::Key(_))) {
                continue;
            }
            let (Some(lv), av) = (get(live_v, p), get(applied, p)) else { continue };
            if Some(lv) == av {
                continue;
            }
            for e in self.entries.iter().filter(|e| e.manager != *manager && e.fields.contains(p)) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    time: e.time.clone(),
                    path: p.clone(),
                });
            }
            taken.insert(p.clone());
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        let mut new = live_v.clone();
        let previous: BTreeSet<Path> =
            self.entries.iter().find(|e| e.manager == *manager).map(|e| e.fields.clone()).unwrap_or_default();
        let mut dropped: Vec<&Path> = previous
            .difference(&fields)
            .filter(|p| !self.entries.iter().any(|e| e.manager != *manager && e.fields.contains(*p)))
            .collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in dropped {
            remove(&mut new, p);
        }
        merge_object(&mut new, applied, scope.crd);
        if force {
            for e in self.entries.iter_mut().filter(|e| e.manager != *manager) {
                e.fields.retain(|p| !taken.contains(p));
            }
        }
        let e = self.entry_mut(manager, api_version, time);
        e.fields = fields;
        self.prune();
        Ok(new)
    }

    /// As `metadata.managedFields`.
    pub fn render(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    let mut tree = json!({});
                    for p in &e.fields {
                        let mut node = &mut tree;
                        for s in p {
                            let k = match s {
                                Seg::Field(f) => format!("f:{f}"),
                                Seg::Key(k) => format!("k:{k}"),
                                Seg::Set(v) => format!("v:{v}"),
                            };
                            node = node.as_object_mut().unwrap().entry(k).or_insert_with(|| json!({}));
                        }
                        if matches!(p.last(), Some(Seg::Key(_))) {
                            node.as_object_mut().unwrap().insert(".".into(), json!({}));
                        }
                    }
                    let mut m = json!({
                        "manager": e.manager.name,
                        "operation": e.manager.operation,
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": tree,
                    });
                    if !e.manager.subresource.is_empty() {
                        m["subresource"] = json!(e.manager.subresource);
                    }
                    m
                })
                .collect(),
        )
    }

    /// From `metadata.managedFields` (a fixture's, say); entries that do not parse are skipped.
    pub fn parse(managed: &Value) -> Owners {
        let mut entries = Vec::new();
        for m in managed.as_array().into_iter().flatten() {
            let (Some(name), Some(op)) = (m["manager"].as_str(), m["operation"].as_str()) else { continue };
            let operation = if op == "Apply" { "Apply" } else { "Update" };
            let mut fields = BTreeSet::new();
            parse_node(&m["fieldsV1"], vec![], &mut fields);
            entries.push(Entry {
                manager: Manager {
                    name: name.to_string(),
                    operation,
                    subresource: m["subresource"].as_str().unwrap_or("").to_string(),
                },
                api_version: m["apiVersion"].as_str().unwrap_or("").to_string(),
                time: m["time"].as_str().unwrap_or("").to_string(),
                fields,
            });
        }
        Owners { entries }
    }
}

fn parse_node(node: &Value, path: Path, out: &mut BTreeSet<Path>) {
    let Some(m) = node.as_object() else { return };
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let seg = if let Some(f) = k.strip_prefix("f:") {
            Seg::Field(f.to_string())
        } else if let Some(j) = k.strip_prefix("k:") {
            match serde_json::from_str::<Value>(j) {
                Ok(v) => Seg::Key(v.to_string()),
                Err(_) => continue,
            }
        } else if let Some(j) = k.strip_prefix("v:") {
            match serde_json::from_str::<Value>(j) {
                Ok(v) => Seg::Set(v.to_string()),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        let mut p = path.clone();
        p.push(seg);
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(p);
        } else {
            parse_node(child, p, out);
        }
    }
}

/// A field path as the apiserver prints it: `.spec.template.spec.containers[name="app"].image`.
pub fn path_string(p: &Path) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Key(k) => {
                let inner = serde_json::from_str::<Value>(k)
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .map(|m| m.iter().map(|(a, b)| format!("{a}={b}")).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                s.push_str(&format!("[{inner}]"));
            }
            Seg::Set(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// How the apiserver names a manager in conflict messages (`printManager`).
pub fn print_manager(c: &Conflict) -> String {
    let mut s = format!("{:?}", c.manager.name);
    if !c.manager.subresource.is_empty() {
        s.push_str(&format!(" with subresource {:?}", c.manager.subresource));
    }
    if c.manager.operation == "Update" {
        if c.time.is_empty() {
            s.push_str(&format!(" using {}", c.api_version));
        } else {
            s.push_str(&format!(" using {} at {}", c.api_version, c.time));
        }
    }
    s
}

/// `getConflictMessage` of the apiserver.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            print_manager(c),
            path_string(&c.path)
        );
    }
    let mut managers: Vec<String> = conflicts.iter().map(print_manager).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in &managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| print_manager(c) == *m) {
            lines.push(format!("- {}", path_string(&c.path)));
        }
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}
