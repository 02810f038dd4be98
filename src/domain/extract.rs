//! Image references in manifest text: where each one is, byte for byte, and what it says.
//!
//! One walk over every YAML document serves every layout: Kubernetes workloads, kustomize
//! `images:`, Helm values (`image: {registry, repository, tag}`, `image: "repo:tag"`), Flux
//! `HelmRelease` `spec.values`, Argo CD `Application` sources, argocd-image-updater write-back
//! files, and operators' custom resources. Text that is not YAML falls back to `image:` lines.

use std::ops::Range;

use serde::Serialize;

use super::image_ref::{ImageRef, Version, is_digest, is_tag};
use super::yaml::{Node, Scalar, parse_documents};

/// Where a version sits in the file, and how to write another one there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// One scalar holds `repository[:tag][@digest]`; the version (with its `:`/`@`) is `suffix`.
    Inline { suffix: Range<usize> },
    /// The tag and the digest are scalars of their own (`tag:`, `newTag:`, `digest:`).
    Fields { tag: Option<Range<usize>>, digest: Option<Range<usize>> },
    /// Readable but not editable in place (escaped quotes, aliases, block scalars).
    ReadOnly,
}

impl Site {
    /// Byte span of the version text itself (no separator).
    pub fn version_span(&self) -> Option<Range<usize>> {
        match self {
            Site::Inline { suffix } if suffix.len() > 1 => Some(suffix.start + 1..suffix.end),
            Site::Inline { .. } | Site::ReadOnly => None,
            Site::Fields { tag, digest } => match (tag, digest) {
                (Some(t), Some(d)) => Some(t.start.min(d.start)..t.end.max(d.end)),
                (Some(r), None) | (None, Some(r)) => Some(r.clone()),
                (None, None) => None,
            },
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub file: String,
    /// 1-based line of the version.
    pub line: usize,
    /// `None` for a tag kept under a key with no repository beside it (`imageTag: 3.16.2`).
    pub repository: Option<String>,
    /// Other names the same entry answers to (kustomize's `name` when `newName` is set).
    pub aliases: Vec<String>,
    pub version: Version,
    pub site: Site,
    pub workload: Option<Workload>,
    /// Dotted path of the version inside the values (Helm) or the document, `frontend.image.tag`.
    pub key: Option<String>,
    pub layout: Layout,
    /// Flux image-automation setter marker on the line (`ns:policy[:tag]`).
    pub policy: Option<String>,
}

impl Occurrence {
    /// What identifies this reference across versions of its file: the same slot, whatever its value.
    pub fn slot(&self) -> (Option<&Workload>, Option<&str>, Option<&str>) {
        (self.workload.as_ref(), self.key.as_deref(), self.repository.as_deref())
    }

    pub fn fallback(&self) -> bool {
        self.layout == Layout::Fallback
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

/// Every image reference in `text`. Never panics; text that is not YAML uses the line fallback.
pub fn extract(file: &str, text: &str) -> Extraction {
    let mut out = Extraction::default();
    match parse_documents(text) {
        Ok(docs) => {
            for doc in &docs {
                let mut w = Walker::new(file, text, doc);
                w.walk(doc, &mut Vec::new());
                out.occurrences.extend(w.found);
            }
            add_setter_only_sites(file, text, &mut out.occurrences);
        }
        Err(e) => {
            out.notes.push(format!("{file}: not valid YAML ({e}); matched `image:` lines instead"));
            out.occurrences = fallback(file, text);
        }
    }
    out
}

/// The scalars at a dotted key (`nexus.imageTag`, `frontend.image.tag`), taken as image versions.
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
    for doc in &docs {
        let mut w = Walker::new(file, text, doc);
        w.key_only = Some(key.to_string());
        w.walk(doc, &mut Vec::new());
        out.occurrences.extend(w.found);
    }
    out
}

const POD_SPEC_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
const WORKLOAD_KINDS: [&str; 8] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
    "ReplicationController",
];

struct Walker<'a> {
    file: &'a str,
    src: &'a str,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    writeback_file: bool,
    key_only: Option<String>,
    found: Vec<Occurrence>,
}

impl<'a> Walker<'a> {
    fn new(file: &'a str, src: &'a str, doc: &Node) -> Self {
        let base = file.rsplit('/').next().unwrap_or(file);
        Walker {
            file,
            src,
            kind: doc.str_at("kind").map(str::to_string),
            namespace: doc.path(&["metadata", "namespace"]).and_then(Node::scalar).map(|s| s.text.clone()),
            name: doc.path(&["metadata", "name"]).and_then(Node::scalar).map(|s| s.text.clone()),
            writeback_file: base.starts_with(".argocd-source"),
            key_only: None,
            found: Vec::new(),
        }
    }

    fn is_workload(&self) -> bool {
        self.kind.as_deref().is_some_and(|k| WORKLOAD_KINDS.contains(&k))
    }

    /// Index in `path` where Helm values begin, if the path is inside values.
    fn values_root(&self, path: &[String]) -> usize {
        if self.kind.as_deref() == Some("HelmRelease")
            && path.len() >= 2
            && path[0] == "spec"
            && path[1] == "values"
        {
            return 2;
        }
        if let Some(i) = path.windows(2).position(|w| w[0] == "helm" && w[1] == "valuesObject") {
            return i + 2;
        }
        0
    }

    fn layout_here(&self, path: &[String]) -> Layout {
        let in_values_object = path.windows(2).any(|w| w[0] == "helm" && w[1] == "valuesObject");
        match self.kind.as_deref() {
            _ if self.writeback_file => Layout::ArgocdImageUpdater,
            Some("HelmRelease") if path.starts_with(&["spec".into(), "values".into()]) => Layout::HelmRelease,
            Some("Application" | "ApplicationSet") if in_values_object => Layout::ArgocdApplication,
            Some(_) if self.is_workload() => Layout::Workload,
            Some(_) => Layout::CustomResource,
            None => Layout::HelmValues,
        }
    }

    fn dotted(&self, path: &[String], leaf: &str) -> String {
        dotted_from(&path[self.values_root(path)..], leaf)
    }

    fn workload(&self, container: Option<String>) -> Option<Workload> {
        let name = self.name.clone()?;
        let kind = self.kind.clone()?;
        Some(Workload { kind, namespace: self.namespace.clone(), name, container })
    }

    fn policy_on_line(&self, line: usize) -> Option<String> {
        setter_marker(self.src.lines().nth(line.saturating_sub(1))?).map(|(p, _)| p)
    }

    fn walk(&mut self, node: &Node, path: &mut Vec<String>) {
        match node {
            Node::Map(entries) => {
                if let Some(key) = self.key_only.clone() {
                    self.key_sites(node, path, &key);
                } else {
                    self.map_rules(node, path);
                }
                for (k, v) in entries {
                    path.push(k.text.clone());
                    self.walk(v, path);
                    path.pop();
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    self.walk(item, path);
                    path.pop();
                }
            }
            Node::Scalar(_) => {}
        }
    }

    fn map_rules(&mut self, map: &Node, path: &[String]) {
        let parent = path.last().map(String::as_str).unwrap_or("");
        let grandparent = path.len().checked_sub(2).map(|i| path[i].as_str()).unwrap_or("");
        // `image: repo:tag` (containers, CR `spec.image`, Helm `image: "repo:tag"`).
        if let Some(s) = map.get("image").and_then(Node::scalar) {
            let in_pod_list = POD_SPEC_LISTS.contains(&grandparent) && parent.starts_with('[');
            let container = if in_pod_list { map.str_at("name").map(str::to_string) } else { None };
            let layout = self.layout_here(path);
            let workload = match layout {
                Layout::HelmValues => None,
                _ => self.workload(container),
            };
            let key = self.dotted(path, "image");
            self.inline(s, 0, layout, workload, Some(key), Vec::new());
        }
        // `{registry?, repository, tag?, digest?}` side by side, or `image: {name, tag}`.
        let repo_node =
            map.get("repository").or_else(|| if parent == "image" { map.get("name") } else { None });
        if let Some(repo) = repo_node.and_then(Node::scalar) {
            let tag = map.get("tag").and_then(Node::scalar);
            let digest = map.get("digest").and_then(Node::scalar);
            if tag.is_some() || digest.is_some() {
                let repository = match map.str_at("registry") {
                    Some(reg) if !reg.is_empty() => format!("{}/{}", reg.trim_end_matches('/'), repo.text),
                    _ => repo.text.clone(),
                };
                let layout = self.layout_here(path);
                let workload = if layout == Layout::HelmValues { None } else { self.workload(None) };
                let key = self.dotted(path, if tag.is_some() { "tag" } else { "digest" });
                self.fields(Some(repository), Vec::new(), tag, digest, layout, workload, Some(key));
            }
        }
        // kustomize `images:` (also Flux Kustomization `spec.images`) and Argo CD `kustomize.images`.
        if let Some(Node::Seq(items)) = map.get("images") {
            let argo = parent == "kustomize";
            for item in items {
                match item {
                    Node::Map(_) if !argo => self.kustomize_entry(item),
                    Node::Scalar(s) if argo => self.argo_image_string(s),
                    _ => {}
                }
            }
        }
        // Argo CD `helm.parameters: [{name, value}]`.
        if parent == "helm"
            && let Some(Node::Seq(params)) = map.get("parameters")
        {
            self.helm_parameters(params);
        }
    }

    fn argo_layout(&self) -> Layout {
        if self.writeback_file { Layout::ArgocdImageUpdater } else { Layout::ArgocdApplication }
    }

    fn kustomize_entry(&mut self, item: &Node) {
        let Some(name) = item.get("name").and_then(Node::scalar) else { return };
        let tag = item.get("newTag").and_then(Node::scalar);
        let digest = item.get("digest").and_then(Node::scalar);
        if tag.is_none() && digest.is_none() {
            return;
        }
        let (repository, aliases) = match item.str_at("newName") {
            Some(new_name) => (new_name.to_string(), vec![name.text.clone()]),
            None => (name.text.clone(), Vec::new()),
        };
        let key = format!("images[name={}].{}", name.text, if tag.is_some() { "newTag" } else { "digest" });
        self.fields(Some(repository), aliases, tag, digest, Layout::Kustomize, None, Some(key));
    }

    /// Argo CD kustomize image override: `repo:tag`, `alias=repo:tag`, `repo=repo2@sha256:…`.
    fn argo_image_string(&mut self, s: &Scalar) {
        let (offset, aliases) = match s.text.split_once('=') {
            Some((alias, _)) => (alias.len() + 1, vec![alias.to_string()]),
            None => (0, Vec::new()),
        };
        let layout = self.argo_layout();
        self.inline(s, offset, layout, None, None, aliases);
    }

    fn helm_parameters(&mut self, params: &[Node]) {
        let value_of = |name: &str| {
            params
                .iter()
                .find(|p| p.str_at("name") == Some(name))
                .and_then(|p| p.get("value"))
                .and_then(Node::scalar)
        };
        for p in params {
            let Some(name) = p.str_at("name") else { continue };
            let Some(value) = p.get("value").and_then(Node::scalar) else { continue };
            let layout = self.argo_layout();
            if let Some(prefix) = name.strip_suffix("tag").filter(|pre| pre.is_empty() || pre.ends_with('.'))
            {
                let repository = value_of(&format!("{prefix}repository")).map(|r| {
                    match value_of(&format!("{prefix}registry")) {
                        Some(reg) => format!("{}/{}", reg.text, r.text),
                        None => r.text.clone(),
                    }
                });
                let digest = value_of(&format!("{prefix}digest"));
                self.fields(
                    repository,
                    Vec::new(),
                    Some(value),
                    digest,
                    layout,
                    None,
                    Some(name.to_string()),
                );
            } else if name == "image" || name.ends_with(".image") {
                self.inline(value, 0, layout, None, Some(name.to_string()), Vec::new());
            }
        }
    }

    fn inline(
        &mut self,
        s: &Scalar,
        offset: usize,
        layout: Layout,
        workload: Option<Workload>,
        key: Option<String>,
        aliases: Vec<String>,
    ) {
        let Some(text) = s.text.get(offset..) else { return };
        let Some(r) = ImageRef::parse(text) else { return };
        if r.version.is_empty() {
            return;
        }
        // The parse trims; locate the repository within the scalar's content.
        let lead = text.len() - text.trim_start().len();
        let site = match &s.content {
            Some(c) => {
                let start = c.start + offset + lead + r.repository_len();
                Site::Inline { suffix: start..start + r.version.inline_suffix().len() }
            }
            None => Site::ReadOnly,
        };
        let policy = self.policy_on_line(s.line);
        self.found.push(Occurrence {
            file: self.file.to_string(),
            line: s.line,
            repository: Some(r.repository),
            aliases,
            version: r.version,
            site,
            workload,
            key,
            layout,
            policy,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn fields(
        &mut self,
        repository: Option<String>,
        aliases: Vec<String>,
        tag: Option<&Scalar>,
        digest: Option<&Scalar>,
        layout: Layout,
        workload: Option<Workload>,
        key: Option<String>,
    ) {
        let tag_text = tag.map(|t| t.text.trim().to_string()).filter(|t| is_tag(t));
        let digest_text = digest.map(|d| d.text.trim().to_string()).filter(|d| is_digest(d));
        if tag_text.is_none() && digest_text.is_none() {
            return;
        }
        let editable = |s: Option<&Scalar>| s.map(|s| s.content.clone());
        let site = match (editable(tag), editable(digest)) {
            (Some(None), _) | (_, Some(None)) => Site::ReadOnly,
            (t, d) => Site::Fields {
                tag: t.flatten().filter(|_| tag_text.is_some()),
                digest: d.flatten().filter(|_| digest_text.is_some()),
            },
        };
        let line = tag.or(digest).map(|s| s.line).unwrap_or(0);
        let policy = self.policy_on_line(line);
        self.found.push(Occurrence {
            file: self.file.to_string(),
            line,
            repository,
            aliases,
            version: Version { tag: tag_text, digest: digest_text },
            site,
            workload,
            key,
            layout,
            policy,
        });
    }

    fn key_sites(&mut self, map: &Node, path: &[String], key: &str) {
        let Node::Map(entries) = map else { return };
        for (k, v) in entries {
            let Some(s) = v.scalar() else { continue };
            if self.dotted(path, &k.text) == key || dotted_from(path, &k.text) == key {
                self.key_scalar(s, key, path);
            }
        }
        if path.last().map(String::as_str) == Some("helm")
            && let Some(Node::Seq(params)) = map.get("parameters")
        {
            for p in params {
                if p.str_at("name") == Some(key)
                    && let Some(s) = p.get("value").and_then(Node::scalar)
                {
                    self.key_scalar(s, key, path);
                }
            }
        }
    }

    fn key_scalar(&mut self, s: &Scalar, key: &str, path: &[String]) {
        let layout = if path.last().map(String::as_str) == Some("helm") {
            self.argo_layout()
        } else {
            self.layout_here(path)
        };
        let text = s.text.trim();
        if text.contains(':') || text.contains('@') {
            self.inline(s, 0, layout, None, Some(key.to_string()), Vec::new());
            if let Some(o) = self.found.last_mut() {
                o.repository = None;
            }
        } else {
            self.fields(None, Vec::new(), Some(s), None, layout, None, Some(key.to_string()));
        }
    }
}

fn dotted_from(path: &[String], leaf: &str) -> String {
    let mut s = String::new();
    for seg in path {
        if !seg.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(seg);
    }
    if !s.is_empty() {
        s.push('.');
    }
    s.push_str(leaf);
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

/// Tags marked for Flux image automation (`tag: 1.0 # {"$imagepolicy": "ns:p:tag"}`) that no other
/// rule found, because no repository stands beside them.
fn add_setter_only_sites(file: &str, text: &str, found: &mut Vec<Occurrence>) {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let start = offset;
        offset += line.len();
        let Some((policy, Some(field))) = setter_marker(line) else { continue };
        if field != "tag" || found.iter().any(|o| o.line == line_no) {
            continue;
        }
        let Some((_, value_part)) = line.split_once(':') else { continue };
        let value_start = start + line.len() - value_part.len();
        let before_comment = value_part.split(" #").next().unwrap_or("");
        let lead = before_comment.len() - before_comment.trim_start().len();
        let mut v = before_comment.trim();
        let mut quote = 0;
        if v.len() >= 2 && (v.starts_with('"') || v.starts_with('\'')) {
            v = &v[1..v.len() - 1];
            quote = 1;
        }
        if !is_tag(v) {
            continue;
        }
        let s = value_start + lead + quote;
        found.push(Occurrence {
            file: file.to_string(),
            line: line_no,
            repository: None,
            aliases: Vec::new(),
            version: Version::tag(v),
            site: Site::Fields { tag: Some(s..s + v.len()), digest: None },
            workload: None,
            key: None,
            layout: Layout::FluxSetter,
            policy: Some(policy),
        });
    }
}

/// Matches `image: <ref>` lines in text that is not valid YAML.
fn fallback(file: &str, text: &str) -> Vec<Occurrence> {
    let mut found = Vec::new();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        let t = line.trim_start();
        let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
        let Some(after) = t.strip_prefix("image:") else { continue };
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
        let Some(r) = ImageRef::parse(v) else { continue };
        if r.version.is_empty() {
            continue;
        }
        let suffix_start = value_start + skip + r.repository_len();
        found.push(Occurrence {
            file: file.to_string(),
            line: i + 1,
            repository: Some(r.repository.clone()),
            aliases: Vec::new(),
            site: Site::Inline { suffix: suffix_start..suffix_start + r.version.inline_suffix().len() },
            version: r.version,
            workload: None,
            key: None,
            layout: Layout::Fallback,
            policy: setter_marker(line).map(|(p, _)| p),
        });
    }
    found
}

#[cfg(test)]
mod tests;
