//! Image references in manifest text: where each one is, byte for byte, what it says, and which
//! slot it fills.
//!
//! A *slot* is the field a version is written in, named the same way in every version of the file:
//! the document (`Kind/namespace/name`, or `doc<N>` for a document without both) and the path to
//! the field inside it (`spec.template.spec.containers[name=api].image`). The culprit search follows
//! slots through history, so a registry or repository change in the same edit still has a previous
//! version.
//!
//! One walk over every YAML document serves every layout: Kubernetes workloads, kustomize
//! `images:` (also a tag carried in `newName`), Helm values (`image: {registry, repository, tag}`,
//! `tag: 1.2.3@sha256:…`, `image` + `imageTag`, `image: "repo:tag"`), Flux `HelmRelease`
//! `spec.values`, Argo CD `Application` sources and helm parameters, argocd-image-updater
//! write-back files, Flux image-automation setter markers on any key, operators' custom resources,
//! and YAML written inside literal block strings (kustomize inline patches, Helm values strings,
//! `extraInitContainers: |`). Text that is not YAML falls back to `image:` lines.

use std::ops::Range;
use std::rc::Rc;

use serde::Serialize;

use super::image_ref::{ImageRef, Version, is_digest, is_tag};
use super::yaml::{Node, Scalar, Style, parse_documents, parse_embedded};

/// Where a version sits in the file, and how to write another one there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// One scalar holds `repository[:tag][@digest]`; the version (with its `:`/`@`) is `suffix`.
    Inline { suffix: Range<usize> },
    /// The tag and the digest are scalars of their own (`tag:`, `newTag:`, `digest:`).
    Fields { tag: Option<Range<usize>>, digest: Option<Range<usize>> },
    /// One scalar holds `tag@digest` (Renovate's digest pinning of a split `tag:` field).
    TagAtDigest { range: Range<usize> },
    /// Readable but not editable in place, and why.
    ReadOnly(&'static str),
}

impl Site {
    /// Byte span of the version text itself (no separator).
    pub fn version_span(&self) -> Option<Range<usize>> {
        match self {
            Site::Inline { suffix } if suffix.len() > 1 => Some(suffix.start + 1..suffix.end),
            Site::Inline { .. } | Site::ReadOnly(_) => None,
            Site::TagAtDigest { range } => Some(range.clone()),
            Site::Fields { tag, digest } => match (tag, digest) {
                (Some(t), Some(d)) => Some(t.start.min(d.start)..t.end.max(d.end)),
                (Some(r), None) | (None, Some(r)) => Some(r.clone()),
                (None, None) => None,
            },
        }
    }

    /// The byte ranges an edit of this site rewrites.
    pub fn ranges(&self) -> Vec<Range<usize>> {
        match self {
            Site::Inline { suffix } => vec![suffix.clone()],
            Site::TagAtDigest { range } => vec![range.clone()],
            Site::Fields { tag, digest } => tag.iter().chain(digest.iter()).cloned().collect(),
            Site::ReadOnly(_) => Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    Workload,
    Kustomize,
    HelmValues,
    HelmRelease,
    ArgocdApplication,
    ArgocdImageUpdater,
    CustomResource,
    FluxSetter,
    /// Not valid YAML: matched on an `image:` line.
    Fallback,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::Workload => "workload",
            Layout::Kustomize => "kustomize",
            Layout::HelmValues => "helm-values",
            Layout::HelmRelease => "helm-release",
            Layout::ArgocdApplication => "argocd-application",
            Layout::ArgocdImageUpdater => "argocd-image-updater",
            Layout::CustomResource => "custom-resource",
            Layout::FluxSetter => "flux-setter",
            Layout::Fallback => "fallback",
        }
    }
}

/// The object an image belongs to, where the manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Workload {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub container: Option<String>,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/", self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}", self.name)?;
        if let Some(c) = &self.container {
            write!(f, " container {c}")?;
        }
        Ok(())
    }
}

/// The field a version is written in: the same in every version of a file, whatever its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    /// `Kind/namespace/name` (namespace empty when the file does not say), `doc<N>`, or `lines`.
    pub doc: String,
    /// The field's path inside the document: `spec.values.image.tag`, `images[name=api]`.
    pub path: String,
}

impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}", self.doc, self.path)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub file: String,
    /// 1-based line of the version (the tag's, or the digest's when there is no tag).
    pub line: usize,
    pub slot: SlotId,
    /// First and last line whose change may change this version (the enclosing fields, the anchor).
    pub region: (usize, usize),
    /// `None` for a tag kept under a key with no repository beside it (`imageTag: 3.16.2`).
    pub repository: Option<String>,
    /// Other names the same entry answers to (kustomize's `name` when `newName` is set).
    pub aliases: Vec<String>,
    pub version: Version,
    pub site: Site,
    pub workload: Option<Workload>,
    /// Dotted path of the version inside Helm values (values files, `HelmRelease` `spec.values`,
    /// Argo CD `valuesObject` / `values`), or inside the document: `frontend.image.tag`.
    pub key: Option<String>,
    pub layout: Layout,
    /// Written inside a block string (an inline patch, a values string).
    pub embedded: bool,
    /// Flux image-automation setter marker on the line (`ns:policy`).
    pub policy: Option<String>,
}

impl Occurrence {
    pub fn fallback(&self) -> bool {
        self.layout == Layout::Fallback
    }

    /// Whether `key` names this reference: its path in the document (optionally `doc|path`), its
    /// key inside Helm values, or an Argo CD helm parameter's name.
    pub fn answers_to_key(&self, key: &str) -> bool {
        let (doc, key) = match key.split_once('|') {
            Some((d, k)) => (Some(d), k),
            None => (None, key),
        };
        if doc.is_some_and(|d| !doc_matches(&self.slot.doc, d)) {
            return false;
        }
        self.slot.path == key
            || self.key.as_deref() == Some(key)
            || self.slot.path.ends_with(&format!("parameters[name={key}]"))
    }
}

/// `Kind/ns/name` against what a person wrote: `Kind/ns/name`, `ns/name`, `Kind/name` or `name`.
pub fn doc_matches(doc: &str, asked: &str) -> bool {
    if doc == asked {
        return true;
    }
    let parts: Vec<&str> = doc.split('/').collect();
    let [kind, ns, name] = parts[..] else {
        return false;
    };
    let asked_parts: Vec<&str> = asked.split('/').collect();
    match asked_parts[..] {
        [n] => n == name,
        [a, n] => n == name && (a == ns || a.eq_ignore_ascii_case(kind)),
        [k, a, n] => n == name && a == ns && k.eq_ignore_ascii_case(kind),
        _ => false,
    }
}

/// Everything found in one file, and why anything was passed over.
#[derive(Clone, Debug, Default)]
pub struct Extraction {
    pub occurrences: Vec<Occurrence>,
    pub notes: Vec<String>,
}

/// Whether a path names a file that may hold manifests.
pub fn is_manifest_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".yaml") || name.ends_with(".yml") || name.starts_with(".argocd-source")
}

/// Text from a file's bytes with every byte that is not UTF-8 replaced by `?`, so byte offsets stay
/// those of the file; and a note naming the first such line.
pub fn text_of(file: &str, bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(t) => (t.to_string(), None),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len());
            let mut first_bad = None;
            let mut rest = bytes;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(t) => {
                        out.push_str(t);
                        break;
                    }
                    Err(e) => {
                        let good = e.valid_up_to();
                        out.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                        let bad = e.error_len().unwrap_or(rest.len() - good);
                        first_bad.get_or_insert(out.len());
                        out.extend(std::iter::repeat_n('?', bad));
                        rest = &rest[good + bad..];
                    }
                }
            }
            let line = first_bad.map(|at| out[..at].matches('\n').count() + 1).unwrap_or(1);
            (
                out,
                Some(format!(
                    "{file}:{line}: bytes that are not UTF-8, read as '?' (the file is kept as it is)"
                )),
            )
        }
    }
}

/// Every image reference in `text`. Never panics; text that is not YAML uses the line fallback.
pub fn extract(file: &str, text: &str) -> Extraction {
    let mut out = Extraction::default();
    match parse_documents(text) {
        Ok(docs) => {
            let lines = Rc::new(line_starts(text));
            for (i, doc) in docs.iter().enumerate() {
                let mut w = Walker::new(file, text, lines.clone(), doc, i, None);
                w.walk(doc, &mut Vec::new());
                out.occurrences.extend(w.found);
                out.notes.extend(w.notes);
            }
        }
        Err(e) => {
            out.notes.push(format!("{file}: not valid YAML ({e}); matched `image:` lines instead"));
            out.occurrences =
                fallback(file, text, 0, 1, &SlotId { doc: "lines".into(), path: String::new() });
        }
    }
    unique_slots(&mut out.occurrences);
    out
}

/// Every image reference in the documents of `text` that mention one of `focus` (a document that
/// mentions none holds no reference to what is asked about). A long stream of many documents —
/// a generated `gotk-components.yaml`, a rendered release — is then parsed only where it matters;
/// positions, lines and document numbers stay those of the whole file. Anything else reads the
/// whole file as [`extract`] does.
pub fn extract_focused(file: &str, text: &str, focus: &[&str]) -> Extraction {
    const WORTH_IT: usize = 64 * 1024;
    if text.len() < WORTH_IT || focus.iter().any(|f| f.is_empty()) {
        return extract(file, text);
    }
    let Some(chunks) = documents(text) else { return extract(file, text) };
    let keep: Vec<&DocChunk> =
        chunks.iter().filter(|c| focus.iter().any(|f| text[c.range.clone()].contains(f))).collect();
    if keep.len() == chunks.len() || chunks.len() < 2 {
        return extract(file, text);
    }
    // The kept documents in place, every other byte a space (line breaks kept): the same offsets.
    let mut masked = vec![b' '; text.len()];
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            masked[i] = b'\n';
        }
    }
    for c in &keep {
        masked[c.range.clone()].copy_from_slice(&text.as_bytes()[c.range.clone()]);
    }
    let Ok(masked) = String::from_utf8(masked) else { return extract(file, text) };
    let mut out = Extraction::default();
    match parse_documents(&masked) {
        Ok(docs) if docs.len() == keep.len() => {
            let lines = Rc::new(line_starts(text));
            for (doc, chunk) in docs.iter().zip(&keep) {
                let mut w = Walker::new(file, text, lines.clone(), doc, chunk.index, None);
                w.walk(doc, &mut Vec::new());
                out.occurrences.extend(w.found);
                out.notes.extend(w.notes);
            }
        }
        // A kept document that is not valid YAML, or one that turns out empty: the whole file.
        _ => return extract(file, text),
    }
    unique_slots(&mut out.occurrences);
    out
}

/// One document of a YAML stream, found by its `---` line: its bytes and its number among the
/// documents that are not empty (as [`parse_documents`] counts them).
struct DocChunk {
    range: std::ops::Range<usize>,
    index: usize,
}

/// The documents of a stream, split at its `---` lines (a document marker can never be part of a
/// scalar). `None` for a stream with `...` end markers, which this split does not follow.
fn documents(text: &str) -> Option<Vec<DocChunk>> {
    let marker = |line: &str, m: &str| {
        line.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
    };
    let mut starts = vec![0];
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if marker(line, "...") {
            return None;
        }
        if at > 0 && marker(line, "---") {
            starts.push(at);
        }
        at += line.len();
    }
    starts.push(text.len());
    let mut out = Vec::new();
    let mut index = 0;
    for w in starts.windows(2) {
        let range = w[0]..w[1];
        // Empty: nothing but blank lines, comments, directives and the marker itself.
        let content = text[range.clone()].lines().any(|l| {
            let body = l.strip_prefix("---").unwrap_or(l).trim();
            !(body.is_empty() || body.starts_with('#') || l.starts_with('%'))
        });
        if content {
            out.push(DocChunk { range, index });
            index += 1;
        }
    }
    Some(out)
}

/// The references a dotted key names (`nexus.imageTag`, `frontend.image.tag`,
/// `spec.values.image.tag`, `HelmRelease/ns/name|spec.values.image.tag`), taken as image versions.
/// The key is read inside Helm values (values files, `HelmRelease` `spec.values`, Argo CD
/// `valuesObject`), as an Argo CD helm parameter name, and from each document's root.
pub fn find_key(file: &str, text: &str, key: &str) -> Extraction {
    let mut out = Extraction::default();
    let docs = match parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            out.notes.push(format!("{file}: not valid YAML ({e}); keys cannot be looked up"));
            return out;
        }
    };
    let lines = Rc::new(line_starts(text));
    for (i, doc) in docs.iter().enumerate() {
        let mut w = Walker::new(file, text, lines.clone(), doc, i, Some(key));
        w.walk(doc, &mut Vec::new());
        out.occurrences.extend(w.found.into_iter().filter(|o| o.answers_to_key(key)));
        out.notes.extend(w.notes);
    }
    unique_slots(&mut out.occurrences);
    out
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1)).collect()
}

/// Two references in one file never share a slot: later ones get `#2`, `#3`.
fn unique_slots(found: &mut [Occurrence]) {
    let mut seen: std::collections::HashSet<SlotId> = std::collections::HashSet::new();
    for o in found.iter_mut() {
        let base = o.slot.clone();
        let mut n = 2;
        while !seen.insert(o.slot.clone()) {
            o.slot = SlotId { doc: base.doc.clone(), path: format!("{}#{n}", base.path) };
            n += 1;
        }
    }
}

const POD_SPEC_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
const WORKLOAD_KINDS: [&str; 11] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
    "ReplicationController",
    "Rollout",
    "DeploymentConfig",
    "PodTemplate",
];

/// The document a walk is in: its identity and kind.
#[derive(Clone)]
struct Doc {
    kind: Option<String>,
    api: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    id: String,
}

impl Doc {
    fn of(node: &Node, index: usize) -> Doc {
        let kind = node.str_at("kind").map(str::to_string);
        let api = node.str_at("apiVersion").map(str::to_string);
        let meta = |k: &str| node.path(&["metadata", k]).and_then(Node::scalar).map(|s| s.text.clone());
        let (namespace, name) = (meta("namespace"), meta("name"));
        let id = match (&kind, &name) {
            (Some(k), Some(n)) => format!("{k}/{}/{n}", namespace.as_deref().unwrap_or("")),
            _ => format!("doc{index}"),
        };
        Doc { kind, api, namespace, name, id }
    }

    fn named(&self) -> bool {
        self.kind.is_some() && self.name.is_some()
    }
}

struct Walker<'a> {
    file: &'a str,
    src: &'a str,
    /// The document the slots belong to (the outer one, for YAML inside a block string).
    outer: Doc,
    /// The document being read (the inner one inside a block string).
    doc: Doc,
    writeback_file: bool,
    embedded: bool,
    key: Option<&'a str>,
    /// Byte offset where each line starts.
    line_starts: Rc<Vec<usize>>,
    /// Whether the file has any Flux setter marker at all.
    markers: bool,
    found: Vec<Occurrence>,
    notes: Vec<String>,
}

impl<'a> Walker<'a> {
    fn new(
        file: &'a str,
        src: &'a str,
        line_starts: Rc<Vec<usize>>,
        node: &Node,
        index: usize,
        key: Option<&'a str>,
    ) -> Self {
        let base = file.rsplit('/').next().unwrap_or(file);
        let doc = Doc::of(node, index);
        Walker {
            file,
            src,
            outer: doc.clone(),
            doc,
            writeback_file: base.starts_with(".argocd-source"),
            embedded: false,
            key,
            markers: src.contains("$imagepolicy"),
            line_starts,
            found: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn is_workload(&self) -> bool {
        self.doc.kind.as_deref().is_some_and(|k| WORKLOAD_KINDS.contains(&k))
    }

    /// Index in `path` where Helm values begin, if the path is inside values.
    fn values_root(&self, path: &[String]) -> usize {
        if self.outer.kind.as_deref() == Some("HelmRelease")
            && path.len() >= 2
            && path[0] == "spec"
            && path[1] == "values"
        {
            return 2;
        }
        if let Some(i) =
            path.windows(2).position(|w| w[0] == "helm" && (w[1] == "valuesObject" || w[1] == "values(str)"))
        {
            return i + 2;
        }
        0
    }

    fn layout_here(&self, path: &[String]) -> Layout {
        let in_values =
            path.windows(2).any(|w| w[0] == "helm" && (w[1] == "valuesObject" || w[1] == "values(str)"));
        match self.outer.kind.as_deref() {
            _ if self.writeback_file => Layout::ArgocdImageUpdater,
            Some("HelmRelease") if path.starts_with(&["spec".into(), "values".into()]) => Layout::HelmRelease,
            Some("Application" | "ApplicationSet") if in_values => Layout::ArgocdApplication,
            Some("Kustomization") => Layout::Kustomize,
            Some(_) if self.is_workload() => Layout::Workload,
            Some(_) => Layout::CustomResource,
            None if self.doc.kind.is_some() && self.is_workload() => Layout::Workload,
            None => Layout::HelmValues,
        }
    }

    fn workload(&self, container: Option<String>) -> Option<Workload> {
        let d = if self.doc.named() { &self.doc } else { &self.outer };
        let kind = d.kind.clone()?;
        if kind == "Kustomization" && !d.api.as_deref().unwrap_or("").contains("toolkit.fluxcd.io") {
            return None;
        }
        let container = if WORKLOAD_KINDS.contains(&kind.as_str()) { container } else { None };
        Some(Workload { kind, namespace: d.namespace.clone(), name: d.name.clone()?, container })
    }

    /// The text of a 1-based line.
    fn line_text(&self, line: usize) -> Option<&'a str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self.line_starts.get(line).map(|e| e - 1).unwrap_or(self.src.len());
        self.src.get(start..end)
    }

    fn policy_on_line(&self, line: usize) -> Option<String> {
        if !self.markers {
            return None;
        }
        setter_marker(self.line_text(line)?).map(|(p, _)| p)
    }

    fn walk(&mut self, node: &Node, path: &mut Vec<String>) {
        match node {
            Node::Map(entries) => {
                let container = container_of(path, node);
                self.map_rules(node, path, container.clone());
                self.setter_rules(node, path, container);
                if let Some(key) = self.key {
                    self.key_sites(node, path, key);
                }
                for (k, v) in entries {
                    if let Node::Scalar(s) = v
                        && s.style == Style::Literal
                        && mentions_image(&s.text)
                    {
                        path.push(format!("{}(str)", k.text));
                        self.walk_embedded(s, path);
                        path.pop();
                        continue;
                    }
                    path.push(k.text.clone());
                    self.walk(v, path);
                    path.pop();
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let sel = match item.get("name").and_then(Node::scalar) {
                        Some(n) if matches!(item, Node::Map(_)) => format!("[name={}]", n.text),
                        _ => format!("[{i}]"),
                    };
                    path.push(sel);
                    self.walk(item, path);
                    path.pop();
                }
            }
            Node::Scalar(_) => {}
        }
    }

    /// YAML inside a block string: walked with the outer document's identity and lines.
    fn walk_embedded(&mut self, s: &Scalar, path: &mut Vec<String>) {
        let saved = (self.doc.clone(), self.embedded);
        match parse_embedded(self.src, s) {
            Some(docs) => {
                for (i, d) in docs.iter().enumerate() {
                    let inner = Doc::of(d, i);
                    self.doc = if inner.named() { inner } else { saved.0.clone() };
                    self.embedded = true;
                    if i > 0 {
                        path.push(format!("[doc{i}]"));
                    }
                    self.walk(d, path);
                    if i > 0 {
                        path.pop();
                    }
                }
            }
            None => {
                // Not YAML inside: literal `image:` lines, numbered in the outer file.
                if let Some((start, indent)) = s.block {
                    let slot = SlotId { doc: self.outer.id.clone(), path: dotted_from(path, "") };
                    let line_start = start - indent;
                    let len: usize = self.src[line_start..]
                        .split_inclusive('\n')
                        .take(s.text.lines().count())
                        .map(str::len)
                        .sum();
                    let block = &self.src[line_start..line_start + len];
                    let mut found = fallback(self.file, block, line_start, s.line, &slot);
                    for o in &mut found {
                        o.embedded = true;
                        o.layout = self.layout_here(path);
                    }
                    self.found.extend(found);
                }
            }
        }
        (self.doc, self.embedded) = saved;
    }

    fn key_of(&self, path: &[String], leaf: &str) -> String {
        dotted_from(&path[self.values_root(path)..], leaf)
    }

    fn slot(&self, path: &[String], leaf: &str) -> SlotId {
        SlotId { doc: self.outer.id.clone(), path: dotted_from(path, leaf) }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        slot: SlotId,
        line: usize,
        region: (usize, usize),
        repository: Option<String>,
        aliases: Vec<String>,
        version: Version,
        site: Site,
        workload: Option<Workload>,
        key: Option<String>,
        layout: Layout,
    ) {
        let policy = self.policy_on_line(line);
        self.found.push(Occurrence {
            file: self.file.to_string(),
            line,
            slot,
            region,
            repository,
            aliases,
            version,
            site,
            workload,
            key,
            layout,
            embedded: self.embedded,
            policy,
        });
    }

    fn map_rules(&mut self, map: &Node, path: &[String], container: Option<String>) {
        let parent = path.last().map(String::as_str).unwrap_or("");
        let layout = self.layout_here(path);
        let workload = if layout == Layout::HelmValues { None } else { self.workload(container) };
        // `image: repo:tag` (containers, CR `spec.image`, Helm `image: "repo:tag"`).
        let mut image_done = false;
        if let Some(s) = map.get("image").and_then(Node::scalar)
            && let Some(r) = reference(&s.text)
            && !r.version.is_empty()
        {
            image_done = true;
            let slot = self.slot(path, "image");
            let key = self.key_of(path, "image");
            self.inline(s, 0, r, slot, layout, workload.clone(), Some(key), Vec::new());
        }
        // `{registry?, repository, tag?, digest?}` side by side, `image: {name, tag}`, `image: R` + `tag: T`.
        let tag = map.get("tag").and_then(Node::scalar);
        let digest = map.get("digest").and_then(Node::scalar);
        if !image_done && (tag.is_some() || digest.is_some()) {
            let imageish = parent.to_ascii_lowercase().contains("image");
            let repo_node = ["repository", "repo", "image"]
                .iter()
                .find_map(|k| map.get(k).and_then(Node::scalar))
                .or_else(|| if imageish { map.get("name").and_then(Node::scalar) } else { None });
            if (repo_node.is_some() || imageish) && !repo_node.is_some_and(|r| templated(&r.text)) {
                let repository =
                    repo_node.and_then(|r| repository_of(&r.text)).map(|repo| match map.str_at("registry") {
                        Some(reg) if !reg.is_empty() && !templated(reg) => {
                            format!("{}/{}", reg.trim_end_matches('/'), repo)
                        }
                        _ => repo,
                    });
                let leaf = if tag.is_some() { "tag" } else { "digest" };
                let slot = self.slot(path, leaf);
                let key = self.key_of(path, leaf);
                self.fields(
                    map,
                    slot,
                    repository,
                    Vec::new(),
                    tag,
                    digest,
                    layout,
                    workload.clone(),
                    Some(key),
                );
            }
        }
        // `image: R` (no tag) beside `imageTag: T` (older charts).
        for tk in ["imageTag", "image_tag", "ImageTag"] {
            if let Some(t) = map.get(tk).and_then(Node::scalar) {
                let repository = map
                    .get("image")
                    .or_else(|| map.get("Image"))
                    .and_then(Node::scalar)
                    .and_then(|s| repository_of(&s.text));
                let slot = self.slot(path, tk);
                let key = self.key_of(path, tk);
                self.fields(
                    map,
                    slot,
                    repository,
                    Vec::new(),
                    Some(t),
                    None,
                    layout,
                    workload.clone(),
                    Some(key),
                );
            }
        }
        // kustomize `images:` (also Flux Kustomization `spec.images`) and Argo CD `kustomize.images`.
        if let Some(Node::Seq(items)) = map.get("images") {
            let mut images = path.to_vec();
            images.push("images".into());
            for item in items {
                match item {
                    Node::Map(_) => self.kustomize_entry(item, &images),
                    Node::Scalar(s) if !s.is_null => self.image_string(s, &images),
                    _ => {}
                }
            }
        }
        // Helm parameters `[{name, value}]` (Argo CD Applications, image-updater write-back files).
        if let Some(Node::Seq(params)) = map.get("parameters") {
            let mut at = path.to_vec();
            at.push("parameters".into());
            self.helm_parameters(params, &at);
        }
    }

    fn argo_layout(&self) -> Layout {
        if self.writeback_file { Layout::ArgocdImageUpdater } else { Layout::ArgocdApplication }
    }

    fn kustomize_entry(&mut self, item: &Node, images: &[String]) {
        let Some(name) = item.get("name").and_then(Node::scalar) else {
            return;
        };
        let tag = item.get("newTag").and_then(Node::scalar);
        let digest = item.get("digest").and_then(Node::scalar);
        let new_name = item.get("newName").and_then(Node::scalar);
        let layout =
            if self.outer.kind.as_deref().is_some_and(|k| k == "Application" || k == "ApplicationSet") {
                self.argo_layout()
            } else {
                Layout::Kustomize
            };
        let mut at = images.to_vec();
        at.push(format!("[name={}]", name.text));
        let slot = SlotId { doc: self.outer.id.clone(), path: dotted_from(&at, "") };
        if tag.is_none() && digest.is_none() {
            // The tag rides in `newName` (`newName: registry/x/api:662e17c`, no `newTag`).
            if let Some(n) = new_name
                && let Some(r) = reference(&n.text)
                && !r.version.is_empty()
            {
                let aliases = vec![name.text.clone()];
                self.inline(n, 0, r, slot, layout, None, Some(dotted_from(&at, "newName")), aliases);
            }
            return;
        }
        let (repository, aliases) = match new_name {
            Some(n) => (repository_of(&n.text).unwrap_or_else(|| n.text.clone()), vec![name.text.clone()]),
            None => (name.text.clone(), Vec::new()),
        };
        let key = dotted_from(&at, if tag.is_some() { "newTag" } else { "digest" });
        self.fields(item, slot, Some(repository), aliases, tag, digest, layout, None, Some(key));
    }

    /// Argo CD kustomize image override: `repo:tag`, `alias=repo:tag`, `repo=repo2@sha256:…`.
    fn image_string(&mut self, s: &Scalar, images: &[String]) {
        let (offset, aliases) = match s.text.split_once('=') {
            Some((alias, _)) => (alias.len() + 1, vec![alias.to_string()]),
            None => (0, Vec::new()),
        };
        let Some(r) = s.text.get(offset..).and_then(reference) else {
            return;
        };
        if r.version.is_empty() {
            return;
        }
        let mut at = images.to_vec();
        at.push(format!("[{}]", aliases.first().cloned().unwrap_or_else(|| r.repository.clone())));
        let slot = SlotId { doc: self.outer.id.clone(), path: dotted_from(&at, "") };
        let layout = match self.outer.kind.as_deref() {
            _ if self.writeback_file => Layout::ArgocdImageUpdater,
            Some("Application" | "ApplicationSet") => Layout::ArgocdApplication,
            _ => Layout::Kustomize,
        };
        self.inline(s, offset, r, slot, layout, None, None, aliases);
    }

    fn helm_parameters(&mut self, params: &[Node], at: &[String]) {
        let value_of = |name: &str| {
            params
                .iter()
                .find(|p| p.str_at("name") == Some(name))
                .and_then(|p| p.get("value"))
                .and_then(Node::scalar)
        };
        for p in params {
            let Some(name) = p.str_at("name") else {
                continue;
            };
            let Some(value) = p.get("value").and_then(Node::scalar) else {
                continue;
            };
            if templated(&value.text) {
                continue;
            }
            let layout = self.argo_layout();
            let mut here = at.to_vec();
            here.push(format!("[name={name}]"));
            let slot = SlotId { doc: self.outer.id.clone(), path: dotted_from(&here, "") };
            let lower = name.to_ascii_lowercase();
            let tag_suffix = ["imagetag", "image_tag", "tag"].into_iter().find(|s| {
                lower.ends_with(s) && {
                    let pre = &lower[..lower.len() - s.len()];
                    pre.is_empty() || pre.ends_with('.') || pre.ends_with('_')
                }
            });
            if let Some(suffix) = tag_suffix {
                let prefix = &name[..name.len() - suffix.len()];
                let repository = ["repository", "repo", "name", "image"]
                    .iter()
                    .find_map(|c| value_of(&format!("{prefix}{c}")))
                    .and_then(|r| repository_of(&r.text))
                    .map(|r| match value_of(&format!("{prefix}registry")) {
                        Some(reg) => format!("{}/{}", reg.text.trim_end_matches('/'), r),
                        None => r,
                    });
                let digest = value_of(&format!("{prefix}digest"));
                self.fields(
                    p,
                    slot,
                    repository,
                    Vec::new(),
                    Some(value),
                    digest,
                    layout,
                    None,
                    Some(name.to_string()),
                );
            } else if (lower == "image" || lower.ends_with(".image") || lower.ends_with("_image"))
                && let Some(r) = reference(&value.text)
                && !r.version.is_empty()
            {
                self.inline(value, 0, r, slot, layout, None, Some(name.to_string()), Vec::new());
            }
        }
    }

    /// Flux image-automation setter markers (`# {"$imagepolicy": "ns:policy[:tag]"}`) on a value
    /// that no other rule read: a Flux Kustomization substitution, a tag with no repository beside it.
    fn setter_rules(&mut self, map: &Node, path: &[String], container: Option<String>) {
        let Node::Map(entries) = map else { return };
        if !self.markers {
            return;
        }
        let mut marked = Vec::new();
        for (k, v) in entries {
            let Some(s) = v.scalar() else { continue };
            if s.style == Style::Literal
                || s.style == Style::Other && s.content.is_none()
                || templated(&s.text)
                || s.text.is_empty()
            {
                continue;
            }
            let Some(line) = self.line_text(s.line) else {
                continue;
            };
            if let Some((policy, field)) = setter_marker(line) {
                marked.push((k, s, policy, field));
            }
        }
        let names: Vec<(String, String)> = marked
            .iter()
            .filter(|m| m.3.as_deref() == Some("name"))
            .map(|m| (m.2.clone(), m.1.text.clone()))
            .collect();
        for (k, s, policy, field) in &marked {
            let covered = self
                .found
                .iter()
                .any(|o| o.line == s.line || s.content.as_ref().is_some_and(|c| o.site.ranges().contains(c)));
            if covered {
                continue;
            }
            let chart = k.text.to_ascii_lowercase().contains("chart")
                || k.text.to_ascii_lowercase().contains("version")
                || policy.rsplit(':').next().is_some_and(|p| p.ends_with("-chart"));
            if chart {
                continue;
            }
            let repository = names.iter().find(|(p, _)| p == policy).and_then(|(_, n)| repository_of(n));
            let slot = self.slot(path, &k.text);
            let key = self.key_of(path, &k.text);
            let layout = Layout::FluxSetter;
            let workload = self.workload(container.clone());
            match field.as_deref() {
                Some("tag") => {
                    self.fields(map, slot, repository, Vec::new(), Some(s), None, layout, workload, Some(key))
                }
                Some("digest") => {
                    self.fields(map, slot, repository, Vec::new(), None, Some(s), layout, workload, Some(key))
                }
                None => {
                    if let Some(r) = reference(&s.text).filter(|r| !r.version.is_empty()) {
                        self.inline(s, 0, r, slot, layout, workload, Some(key), Vec::new());
                    }
                }
                _ => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn inline(
        &mut self,
        s: &Scalar,
        offset: usize,
        r: ImageRef,
        slot: SlotId,
        layout: Layout,
        workload: Option<Workload>,
        key: Option<String>,
        aliases: Vec<String>,
    ) {
        let Some(text) = s.text.get(offset..) else {
            return;
        };
        // The parse trims; locate the repository within the scalar's content.
        let lead = text.len() - text.trim_start().len();
        let site = match &s.content {
            Some(c) => {
                let start = c.start + offset + lead + r.repository_len();
                Site::Inline { suffix: start..start + r.version.inline_suffix().len() }
            }
            None => Site::ReadOnly(read_only_why(s)),
        };
        let region = (s.line.min(s.used_line), s.line.max(s.used_line));
        self.push(slot, s.line, region, Some(r.repository), aliases, r.version, site, workload, key, layout);
    }

    #[allow(clippy::too_many_arguments)]
    fn fields(
        &mut self,
        map: &Node,
        slot: SlotId,
        repository: Option<String>,
        aliases: Vec<String>,
        tag: Option<&Scalar>,
        digest: Option<&Scalar>,
        layout: Layout,
        workload: Option<Workload>,
        key: Option<String>,
    ) {
        if tag.is_some_and(|t| templated(&t.text)) || digest.is_some_and(|d| templated(&d.text)) {
            return;
        }
        let (tag_text, tag_digest) = match tag {
            Some(t) => split_tag(t.text.trim()),
            None => (None, None),
        };
        let digest_text = digest.map(|d| d.text.trim().to_string()).filter(|d| is_digest(d));
        if tag.is_some() && tag_text.is_none() && tag_digest.is_none() {
            return;
        }
        if tag_digest.is_some() && digest_text.is_some() {
            // `tag: 1.2@sha256:…` and a `digest:` field: which one counts is the chart's choice.
            let line = tag.map(|t| t.line).unwrap_or(0);
            let region = map.lines().unwrap_or((line, line));
            let version = Version { tag: tag_text, digest: digest_text };
            self.push(
                slot,
                line,
                region,
                repository,
                aliases,
                version,
                Site::ReadOnly("both the tag field and a digest field carry a digest"),
                workload,
                key,
                layout,
            );
            return;
        }
        let version = Version { tag: tag_text.clone(), digest: digest_text.clone().or(tag_digest.clone()) };
        if version.is_empty() {
            return;
        }
        let editable = |s: &Scalar| s.content.clone();
        let site = match (tag, digest) {
            (Some(t), _) if tag_digest.is_some() => match editable(t) {
                Some(range) => Site::TagAtDigest { range },
                None => Site::ReadOnly(read_only_why(t)),
            },
            (t, d) => {
                let unreadable = t
                    .filter(|t| t.content.is_none())
                    .or(d.filter(|d| d.content.is_none() && digest_text.is_some()));
                match unreadable {
                    Some(s) => Site::ReadOnly(read_only_why(s)),
                    None => Site::Fields {
                        tag: t.and_then(editable).filter(|_| tag_text.is_some()),
                        digest: d.and_then(editable).filter(|_| digest_text.is_some()),
                    },
                }
            }
        };
        let line = tag.or(digest).map(|s| s.line).unwrap_or(0);
        let mut region = map.lines().unwrap_or((line, line));
        for s in tag.iter().chain(digest.iter()) {
            region = (region.0.min(s.line), region.1.max(s.line));
        }
        self.push(slot, line, region, repository, aliases, version, site, workload, key, layout);
    }

    /// Key mode: a scalar at the key's path that no rule read is a tag (or a reference) of its own.
    fn key_sites(&mut self, map: &Node, path: &[String], key: &str) {
        let Node::Map(entries) = map else { return };
        let (doc, key) = match key.split_once('|') {
            Some((d, k)) => (Some(d), k),
            None => (None, key),
        };
        if doc.is_some_and(|d| !doc_matches(&self.outer.id, d)) {
            return;
        }
        for (k, v) in entries {
            let Some(s) = v.scalar() else { continue };
            let full = dotted_from(path, &k.text);
            let relative = self.key_of(path, &k.text);
            if full != key && relative != key {
                continue;
            }
            if self.found.iter().any(|o| {
                o.line == s.line && (o.slot.path == full || o.key.as_deref() == Some(relative.as_str()))
            }) {
                continue;
            }
            let slot = self.slot(path, &k.text);
            let layout = self.layout_here(path);
            let workload = if layout == Layout::HelmValues { None } else { self.workload(None) };
            match reference(&s.text)
                .filter(|r| r.version.tag.is_some() && s.text.contains(':') && !is_digest(s.text.trim()))
            {
                Some(r) => {
                    self.inline(s, 0, r, slot, layout, workload, Some(relative), Vec::new());
                    if let Some(o) = self.found.last_mut() {
                        o.repository = None;
                    }
                }
                None => {
                    self.fields(map, slot, None, Vec::new(), Some(s), None, layout, workload, Some(relative))
                }
            }
        }
    }
}

/// The container a map describes, when it is an item of a pod spec's container list.
fn container_of(path: &[String], map: &Node) -> Option<String> {
    let n = path.len();
    let in_list = n >= 2 && POD_SPEC_LISTS.contains(&path[n - 2].as_str()) && path[n - 1].starts_with('[');
    in_list.then(|| map.str_at("name").map(str::to_string)).flatten()
}

fn read_only_why(s: &Scalar) -> &'static str {
    match s.style {
        Style::Literal | Style::Other if s.text.contains('\n') => "a block scalar",
        _ if s.aliased() => "an alias whose anchor cannot be edited",
        _ => "quoted with escapes",
    }
}

/// Whether a block string may hold image references worth parsing.
fn mentions_image(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    text.contains('\n') && (lower.contains("image") || lower.contains("tag"))
}

/// `{{ .Values.x }}`, `${VAR}`, `<%= x %>`: filled in elsewhere, never a version of its own.
fn templated(v: &str) -> bool {
    v.contains("{{") || v.contains("${") || v.contains("<%")
}

/// An image reference, unless the text is templated or not one.
fn reference(text: &str) -> Option<ImageRef> {
    if templated(text) {
        return None;
    }
    let lower = text.trim().to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "null" | "none" | "yes" | "no" | "ifnotpresent" | "always" | "never"
    ) {
        return None;
    }
    ImageRef::parse(text)
}

/// The repository part of a value that may carry a tag too (`image: example/server:1.0`).
fn repository_of(text: &str) -> Option<String> {
    if templated(text) || text.trim().is_empty() {
        return None;
    }
    ImageRef::parse(text).map(|r| r.repository)
}

/// A tag field's text as tag and digest: `1.2.3@sha256:…`, `sha256:…`, `@sha256:…`, `1.2.3`.
fn split_tag(t: &str) -> (Option<String>, Option<String>) {
    if let Some((tag, digest)) = t.split_once('@') {
        if !is_digest(digest) || !(tag.is_empty() || is_tag(tag)) {
            return (None, None);
        }
        return ((!tag.is_empty()).then(|| tag.to_string()), Some(digest.to_string()));
    }
    if is_digest(t) {
        return (None, Some(t.to_string()));
    }
    (is_tag(t).then(|| t.to_string()), None)
}

fn dotted_from(path: &[String], leaf: &str) -> String {
    let mut s = String::new();
    for seg in path.iter().map(String::as_str).chain((!leaf.is_empty()).then_some(leaf)) {
        if !seg.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(seg);
    }
    s
}

/// `# {"$imagepolicy": "ns:name[:tag|:name|:digest]"}` on a line: the policy and the field.
pub fn setter_marker(line: &str) -> Option<(String, Option<String>)> {
    let at = line.find("\"$imagepolicy\"")?;
    let rest = &line[at + "\"$imagepolicy\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let value = &rest[..rest.find('"')?];
    let mut parts: Vec<&str> = value.split(':').collect();
    let field = if parts.len() == 3 { parts.pop().map(str::to_string) } else { None };
    Some((parts.join(":"), field))
}

/// Matches `image: <ref>` lines in text that is not valid YAML. `offset` and `first_line` place
/// `text` in the file; slots are numbered per repository (`image-line[repo#k]`) under `base`.
fn fallback(file: &str, text: &str, offset: usize, first_line: usize, base: &SlotId) -> Vec<Occurrence> {
    let mut found: Vec<Occurrence> = Vec::new();
    let mut at = offset;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = at;
        at += line.len();
        let t = line.trim_start();
        let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
        let Some(after) = t.strip_prefix("image:") else {
            continue;
        };
        let value_start = start + line.len() - after.len();
        let lead = after.len() - after.trim_start().len();
        let mut v = after.trim_start();
        let mut skip = lead;
        if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
            v = &v[1..];
            skip += 1;
            v = v.split(q).next().unwrap_or("");
        } else {
            v = v.split(|c: char| c.is_whitespace() || c == '#').next().unwrap_or("");
        }
        let Some(r) = reference(v) else { continue };
        if r.version.is_empty() {
            continue;
        }
        let k = found.iter().filter(|o| o.repository.as_deref() == Some(r.repository.as_str())).count() + 1;
        let prefix = if base.path.is_empty() { String::new() } else { format!("{}.", base.path) };
        let suffix_start = value_start + skip + r.repository_len();
        let line_no = first_line + i;
        found.push(Occurrence {
            file: file.to_string(),
            line: line_no,
            slot: SlotId { doc: base.doc.clone(), path: format!("{prefix}image-line[{}#{k}]", r.repository) },
            region: (line_no, line_no),
            repository: Some(r.repository.clone()),
            aliases: Vec::new(),
            site: Site::Inline { suffix: suffix_start..suffix_start + r.version.inline_suffix().len() },
            version: r.version,
            workload: None,
            key: None,
            layout: Layout::Fallback,
            embedded: false,
            policy: setter_marker(line).map(|(p, _)| p),
        });
    }
    found
}

#[cfg(test)]
mod tests;
