//! Stopping argocd-image-updater from promoting a reverted tag again. Its v1 `ImageUpdater` has no
//! suspend field, so the bad tag is excluded instead: added to `ignoreTags` of that image
//! (`spec.images[].commonUpdateSettings.ignoreTags`), or, in the annotation form, to an Argo CD
//! Application's `argocd-image-updater.argoproj.io/<alias>.ignore-tags`. In the revert commit when
//! the object is in the repository (one commit, reviewed with the revert); otherwise by a JSON
//! patch through the Kubernetes API, with `test` operations so a concurrent change is not lost.
//! The exclusion is not undone by `resume`: the tag stays bad; a fix comes as a new tag.

use serde_json::{Value, json};

use super::cluster::ObjectKey;
use super::image_ref::{is_digest, same_repository};
use super::pause::insert_entry;
use super::yaml::{Node, Style, parse_documents};

/// The API group of argocd-image-updater's CRD and the prefix of its annotations.
pub const GROUP: &str = "argocd-image-updater.argoproj.io";
/// The annotation naming the images of an Application (annotation form): `alias=repo[:constraint], …`.
pub const IMAGE_LIST: &str = "argocd-image-updater.argoproj.io/image-list";

/// The two objects argocd-image-updater takes its tag filters from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpdaterKind {
    /// `argocd-image-updater.argoproj.io/v1alpha1` `ImageUpdater`: `ignoreTags` per image.
    ImageUpdater,
    /// An Argo CD Application carrying `image-list`: `<alias>.ignore-tags` annotations.
    Application,
}

impl UpdaterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdaterKind::ImageUpdater => "ImageUpdater",
            UpdaterKind::Application => "Application",
        }
    }
}

/// One object and image alias the tag was excluded on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub kind: UpdaterKind,
    /// `namespace/name`, or the name alone when the manifest leaves the namespace to kustomize.
    pub object: String,
    pub alias: String,
    pub tag: String,
    pub how: How,
}

/// Where the exclusion was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// In the revert commit, in this file.
    InTheRevertCommit { file: String },
    /// Through the Kubernetes API (the object is not in this repository). `tracked` names the
    /// GitOps tool that manages the object from elsewhere, which may set it back.
    ThroughTheApi { tracked: Option<String> },
}

impl Excluded {
    /// One line for the PR and the log.
    pub fn describe(&self) -> String {
        let field = match self.kind {
            UpdaterKind::ImageUpdater => format!("ignoreTags of image `{}`", self.alias),
            UpdaterKind::Application => format!("`{GROUP}/{}.ignore-tags`", self.alias),
        };
        let what = format!("`{}` added to {field} on {} {}", self.tag, self.kind.as_str(), self.object);
        match &self.how {
            How::InTheRevertCommit { file } => format!("{what} — in this commit ({file})"),
            How::ThroughTheApi { tracked: None } => {
                format!("{what} — through the Kubernetes API (the object is not in this repository)")
            }
            How::ThroughTheApi { tracked: Some(by) } => format!(
                "{what} — through the Kubernetes API; the object is managed by {by} from another repository, \
                 which may set it back: add the tag there too"
            ),
        }
    }
}

/// What one manifest file gave: the new text (when something was excluded), the exclusions, and
/// every updater object of that image found in it (excluded already or not).
#[derive(Debug, Default, PartialEq)]
pub struct InFile {
    pub text: Option<String>,
    pub excluded: Vec<Excluded>,
    pub found: Vec<(UpdaterKind, String)>,
}

/// Whether a file may hold an updater object (a cheap test before parsing).
pub fn may_hold_updater(text: &str) -> bool {
    text.contains(GROUP)
}

/// The version text argocd-image-updater can filter: a tag, not a digest.
pub fn excludable(version: &str) -> Result<&str, String> {
    let tag = version.split('@').next().unwrap_or(version);
    if tag.is_empty() || is_digest(version) {
        return Err(format!(
            "version {version} is a digest: argocd-image-updater filters tags; pin the tag instead"
        ));
    }
    Ok(tag)
}

/// Excludes `tag` of `image` (a repository) in every updater object of `file` that names it,
/// splicing a line or a value and leaving every other byte as it was; the result is parsed again.
pub fn exclude_in_file(file: &str, text: &str, image: &str, tag: &str) -> Result<InFile, String> {
    let mut out = InFile::default();
    let mut current = text.to_string();
    // One edit at a time (each moves the offsets after it); a file holds a handful of objects.
    for _ in 0..64 {
        let docs = parse_documents(&current).map_err(|e| format!("{file}: not valid YAML: {e}"))?;
        let mut edit = None;
        out.found.clear();
        for doc in &docs {
            for slot in slots(doc, image) {
                out.found.push((slot.kind, slot.object.clone()));
                if edit.is_none() && !slot.tags.iter().any(|t| t == tag) {
                    edit = Some(slot);
                }
            }
        }
        let Some(slot) = edit else {
            out.found.sort();
            out.found.dedup();
            if !out.excluded.is_empty() {
                out.text = Some(current);
            }
            return Ok(out);
        };
        let next = slot.add(&current, tag, file)?;
        let reread = parse_documents(&next).map_err(|e| format!("{file}: the edit did not parse: {e}"))?;
        let now_there = reread.iter().flat_map(|d| slots(d, image)).any(|s| {
            s.kind == slot.kind
                && s.object == slot.object
                && s.alias == slot.alias
                && s.tags.iter().any(|t| t == tag)
        });
        if !now_there {
            return Err(format!("{file}: the edit did not read back as {tag} excluded"));
        }
        out.excluded.push(Excluded {
            kind: slot.kind,
            object: slot.object.clone(),
            alias: slot.alias.clone(),
            tag: tag.to_string(),
            how: How::InTheRevertCommit { file: file.to_string() },
        });
        current = next;
    }
    Err(format!("{file}: too many updater objects in one file; exclude {tag} by hand"))
}

/// Where one image's tag filter lives in a document.
struct Slot<'a> {
    kind: UpdaterKind,
    object: String,
    alias: String,
    tags: Vec<String>,
    place: Place<'a>,
}

enum Place<'a> {
    /// `spec.images[i]`, with its `commonUpdateSettings` and `ignoreTags` when present.
    UpdaterImage { item: &'a Node, settings: Option<&'a Node>, ignore: Option<&'a Node> },
    /// The Application's annotations, with the alias's ignore-tags value when present.
    Annotation { annotations: &'a Node, key: String, value: Option<&'a Node> },
}

fn object_name(doc: &Node) -> String {
    let name =
        doc.path(&["metadata", "name"]).and_then(Node::scalar).map(|s| s.text.clone()).unwrap_or_default();
    match doc.path(&["metadata", "namespace"]).and_then(Node::scalar) {
        Some(ns) => format!("{}/{name}", ns.text),
        None => name,
    }
}

/// `repo[:tag-or-constraint]` → `repo` (a registry port stays).
fn repository_of(image: &str) -> &str {
    let image = image.trim();
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// `image-list`'s entries: `alias=repo[:constraint]`; an entry without an alias has none to
/// carry settings, so it is left out.
pub fn image_list(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|e| e.split_once('='))
        .map(|(a, i)| (a.trim().to_string(), repository_of(i).to_string()))
        .filter(|(a, i)| !a.is_empty() && !i.is_empty())
        .collect()
}

/// The items of a JSON array that may be absent, numbered.
fn arrays(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    v.and_then(Value::as_array).into_iter().flatten().enumerate()
}

/// A comma-separated ignore-tags value, as argocd-image-updater splits it.
pub fn split_tags(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

fn scalars(n: Option<&Node>) -> Vec<String> {
    match n {
        Some(Node::Seq(items)) => items.iter().filter_map(Node::scalar).map(|s| s.text.clone()).collect(),
        _ => Vec::new(),
    }
}

fn slots<'a>(doc: &'a Node, image: &str) -> Vec<Slot<'a>> {
    let api = doc.str_at("apiVersion").unwrap_or("");
    let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
    let mut out = Vec::new();
    match (group, doc.str_at("kind")) {
        (GROUP, Some("ImageUpdater")) => {
            // Images under `spec.images` (early v1) and under each `spec.applicationRefs[]`.
            let mut items: Vec<&Node> = Vec::new();
            if let Some(Node::Seq(i)) = doc.path(&["spec", "images"]) {
                items.extend(i);
            }
            if let Some(Node::Seq(refs)) = doc.path(&["spec", "applicationRefs"]) {
                for r in refs {
                    if let Some(Node::Seq(i)) = r.get("images") {
                        items.extend(i);
                    }
                }
            }
            for item in items {
                let (Some(alias), Some(name)) = (item.str_at("alias"), item.str_at("imageName")) else {
                    continue;
                };
                if !same_repository(repository_of(name), image) {
                    continue;
                }
                let settings = item.get("commonUpdateSettings");
                let ignore = settings.and_then(|s| s.get("ignoreTags"));
                out.push(Slot {
                    kind: UpdaterKind::ImageUpdater,
                    object: object_name(doc),
                    alias: alias.to_string(),
                    tags: scalars(ignore),
                    place: Place::UpdaterImage { item, settings, ignore },
                });
            }
        }
        ("argoproj.io", Some("Application")) => {
            let Some(annotations) = doc.path(&["metadata", "annotations"]) else { return out };
            let Some(list) = annotations.str_at(IMAGE_LIST) else { return out };
            for (alias, repo) in image_list(list) {
                if !same_repository(&repo, image) {
                    continue;
                }
                let key = format!("{GROUP}/{alias}.ignore-tags");
                let value = annotations.get(&key);
                out.push(Slot {
                    kind: UpdaterKind::Application,
                    object: object_name(doc),
                    tags: value.and_then(Node::scalar).map(|s| split_tags(&s.text)).unwrap_or_default(),
                    alias,
                    place: Place::Annotation { annotations, key, value },
                });
            }
        }
        _ => {}
    }
    out
}

impl Slot<'_> {
    fn add(&self, text: &str, tag: &str, file: &str) -> Result<String, String> {
        let quoted = format!("\"{tag}\"");
        match &self.place {
            Place::UpdaterImage { item, settings: None, .. } => insert_entry(
                text,
                item,
                &format!("commonUpdateSettings:\n  ignoreTags:\n    - {quoted}"),
                file,
            ),
            Place::UpdaterImage { settings: Some(s), ignore: None, .. } => {
                insert_entry(text, s, &format!("ignoreTags:\n  - {quoted}"), file)
            }
            Place::UpdaterImage { ignore: Some(Node::Seq(items)), .. } => {
                append_to_seq(text, items, &quoted, file)
            }
            Place::UpdaterImage { ignore: Some(_), .. } => {
                Err(format!("{file}: ignoreTags of image `{}` is not a list; add {tag} by hand", self.alias))
            }
            Place::Annotation { annotations, key, value: None } => {
                insert_entry(text, annotations, &format!("{key}: {quoted}"), file)
            }
            Place::Annotation { value: Some(Node::Scalar(s)), key, .. } => {
                let r = s
                    .content
                    .clone()
                    .filter(|_| matches!(s.style, Style::Plain | Style::SingleQuoted | Style::DoubleQuoted))
                    .ok_or_else(|| format!("{file}: {key} cannot be edited in place; add {tag} by hand"))?;
                let sep = if s.text.trim().is_empty() { "" } else { ", " };
                if s.style == Style::Plain && s.text.trim().is_empty() {
                    return Err(format!("{file}: {key} is empty; add {tag} by hand"));
                }
                Ok(format!("{}{}{sep}{tag}{}", &text[..r.start], &s.text, &text[r.end..]))
            }
            Place::Annotation { key, .. } => Err(format!("{file}: {key} is not a string; add {tag} by hand")),
        }
    }
}

/// A new last item of a list written in block style (`- "a"` lines) or flow style (`["a"]`).
fn append_to_seq(text: &str, items: &[Node], quoted: &str, file: &str) -> Result<String, String> {
    let Some(last) = items.last().and_then(Node::scalar) else {
        return Err(format!("{file}: an empty ignoreTags list; add {quoted} by hand"));
    };
    let r = last
        .content
        .clone()
        .ok_or_else(|| format!("{file}: ignoreTags cannot be edited; add {quoted} by hand"))?;
    let closing = match last.style {
        Style::SingleQuoted | Style::DoubleQuoted => 1,
        _ => 0,
    };
    let opening = closing;
    let start = r.start - opening;
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let lead = &text[line_start..start];
    let before = text[..start].trim_end();
    if before.ends_with('[') || before.ends_with(',') {
        // Flow style: `, "tag"` after the last item.
        let end = r.end + closing;
        return Ok(format!("{}, {quoted}{}", &text[..end], &text[end..]));
    }
    if lead.trim() != "-" {
        return Err(format!(
            "{file}: ignoreTags is written in a way it cannot be extended; add {quoted} by hand"
        ));
    }
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let line_end = text[r.end..].find('\n').map(|i| r.end + i + 1).unwrap_or(text.len());
    let sep = if line_end == text.len() && !text.ends_with('\n') { eol } else { "" };
    Ok(format!("{}{sep}{lead}{quoted}{eol}{}", &text[..line_end], &text[line_end..]))
}

/// An updater object in the cluster, as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveUpdater {
    pub kind: UpdaterKind,
    pub key: ObjectKey,
    pub images: Vec<LiveImage>,
    /// The GitOps tool managing the object, when its labels or annotations say so.
    pub tracked: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveImage {
    pub alias: String,
    pub repository: String,
    pub ignore_tags: Vec<String>,
    /// ImageUpdater: the image entry's JSON pointer (`/spec/applicationRefs/0/images/1`), and
    /// whether `commonUpdateSettings` and `ignoreTags` exist. Application: `has_ignore` says whether
    /// the annotation exists.
    pub path: String,
    pub has_settings: bool,
    pub has_ignore: bool,
    /// Application: the annotation's value as written (the patch tests it).
    pub raw: Option<String>,
}

/// Reads an ImageUpdater, or an Application with `image-list`, from its JSON.
pub fn live_updater(v: &Value) -> Option<LiveUpdater> {
    let api = v.get("apiVersion")?.as_str()?;
    let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
    let key = ObjectKey::of(v)?;
    let annotations = v.pointer("/metadata/annotations");
    let labels = v.pointer("/metadata/labels");
    let tracked = if annotations.and_then(|a| a.get("argocd.argoproj.io/tracking-id")).is_some()
        || labels.and_then(|l| l.get("app.kubernetes.io/instance")).is_some()
    {
        Some("Argo CD".to_string())
    } else if labels.and_then(|l| l.get("kustomize.toolkit.fluxcd.io/name")).is_some() {
        Some("Flux".to_string())
    } else {
        None
    };
    match (group, v.get("kind")?.as_str()?) {
        (GROUP, "ImageUpdater") => {
            let mut entries: Vec<(String, &Value)> = Vec::new();
            for (n, i) in arrays(v.pointer("/spec/images")) {
                entries.push((format!("/spec/images/{n}"), i));
            }
            for (r, app_ref) in arrays(v.pointer("/spec/applicationRefs")) {
                for (n, i) in arrays(app_ref.get("images")) {
                    entries.push((format!("/spec/applicationRefs/{r}/images/{n}"), i));
                }
            }
            let images = entries
                .into_iter()
                .filter_map(|(path, i)| {
                    let settings = i.get("commonUpdateSettings");
                    let ignore = settings.and_then(|s| s.get("ignoreTags"));
                    Some(LiveImage {
                        alias: i.get("alias")?.as_str()?.to_string(),
                        repository: repository_of(i.get("imageName")?.as_str()?).to_string(),
                        ignore_tags: ignore
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                            .unwrap_or_default(),
                        path,
                        has_settings: settings.is_some_and(Value::is_object),
                        has_ignore: ignore.is_some_and(Value::is_array),
                        raw: None,
                    })
                })
                .collect();
            Some(LiveUpdater { kind: UpdaterKind::ImageUpdater, key, images, tracked })
        }
        ("argoproj.io", "Application") => {
            let list = annotations?.get(IMAGE_LIST)?.as_str()?;
            let images = image_list(list)
                .into_iter()
                .map(|(alias, repository)| {
                    let value = annotations
                        .and_then(|a| a.get(format!("{GROUP}/{alias}.ignore-tags")))
                        .and_then(Value::as_str);
                    LiveImage {
                        ignore_tags: value.map(split_tags).unwrap_or_default(),
                        has_ignore: value.is_some(),
                        raw: value.map(str::to_string),
                        alias,
                        repository,
                        path: String::new(),
                        has_settings: true,
                    }
                })
                .collect();
            // An Application's own tracking label names itself in app-of-apps only when a parent
            // manages it; Argo CD labels the Applications it creates with the parent's instance.
            Some(LiveUpdater { kind: UpdaterKind::Application, key, images, tracked })
        }
        _ => None,
    }
}

/// A patch to make through the API, and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiExclusion {
    pub kind: UpdaterKind,
    pub key: ObjectKey,
    /// A JSON patch (RFC 6902) whose `test` operations make it fail if the object changed under it.
    pub patch: Value,
    pub excluded: Excluded,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The API patches that exclude `tag` of `image` on the live updaters the repository did not
/// hold (`in_git`: the objects found in the repository, by kind and `ns/name` or `name`).
pub fn api_exclusions(
    live: &[&LiveUpdater],
    image: &str,
    tag: &str,
    in_git: &[(UpdaterKind, String)],
) -> Vec<ApiExclusion> {
    let mut out = Vec::new();
    for u in live {
        let named = |o: &String| *o == u.key.to_string() || *o == u.key.name;
        if in_git.iter().any(|(k, o)| *k == u.kind && named(o)) {
            continue;
        }
        for i in u.images.iter().filter(|i| same_repository(&i.repository, image)) {
            if i.ignore_tags.iter().any(|t| t == tag) {
                continue;
            }
            let patch = match u.kind {
                UpdaterKind::ImageUpdater => {
                    let at = &i.path;
                    let mut ops =
                        vec![json!({"op": "test", "path": format!("{at}/alias"), "value": i.alias})];
                    if !i.has_settings {
                        ops.push(json!({"op": "add", "path": format!("{at}/commonUpdateSettings"), "value": {"ignoreTags": [tag]}}));
                    } else if !i.has_ignore {
                        ops.push(json!({"op": "add", "path": format!("{at}/commonUpdateSettings/ignoreTags"), "value": [tag]}));
                    } else {
                        let path = format!("{at}/commonUpdateSettings/ignoreTags");
                        ops.push(json!({"op": "test", "path": path, "value": i.ignore_tags}));
                        ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": tag}));
                    }
                    Value::Array(ops)
                }
                UpdaterKind::Application => {
                    let path = format!(
                        "/metadata/annotations/{}",
                        escape(&format!("{GROUP}/{}.ignore-tags", i.alias))
                    );
                    if let Some(old) = &i.raw {
                        let new =
                            if old.trim().is_empty() { tag.to_string() } else { format!("{old}, {tag}") };
                        json!([{"op": "test", "path": path, "value": old}, {"op": "replace", "path": path, "value": new}])
                    } else {
                        json!([{"op": "add", "path": path, "value": tag}])
                    }
                }
            };
            out.push(ApiExclusion {
                kind: u.kind,
                key: u.key.clone(),
                patch,
                excluded: Excluded {
                    kind: u.kind,
                    object: u.key.to_string(),
                    alias: i.alias.clone(),
                    tag: tag.to_string(),
                    how: How::ThroughTheApi { tracked: u.tracked.clone() },
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATER: &str = "apiVersion: argocd-image-updater.argoproj.io/v1alpha1\nkind: ImageUpdater\nmetadata:\n  name: shop\n  namespace: argocd\nspec:\n  applicationRefs:\n    - namePattern: \"shop-*\"\n  images:\n    - alias: checkout\n      imageName: ghcr.io/acme/checkout:1.4.0\n    - alias: cart\n      imageName: ghcr.io/acme/cart\n      commonUpdateSettings:\n        updateStrategy: semver\n    - alias: web\n      imageName: ghcr.io/acme/web\n      commonUpdateSettings:\n        ignoreTags:\n          - latest # never\n";

    const APP: &str = "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: shop\n  annotations:\n    argocd-image-updater.argoproj.io/image-list: co=ghcr.io/acme/checkout:~1.4, web=ghcr.io/acme/web\n    argocd-image-updater.argoproj.io/web.ignore-tags: latest, dev\nspec:\n  project: default\n";

    fn one(text: &str, image: &str) -> InFile {
        exclude_in_file("argocd/updater.yaml", text, image, "1.4.2").unwrap()
    }

    #[test]
    fn an_image_without_settings_gets_them_after_its_alias_line() {
        let r = one(UPDATER, "ghcr.io/acme/checkout");
        assert_eq!(
            r.text.as_deref().unwrap(),
            UPDATER.replace(
                "    - alias: checkout\n",
                "    - alias: checkout\n      commonUpdateSettings:\n        ignoreTags:\n          - \"1.4.2\"\n"
            )
        );
        assert_eq!(r.found, vec![(UpdaterKind::ImageUpdater, "argocd/shop".to_string())]);
        assert_eq!(
            r.excluded[0].describe(),
            "`1.4.2` added to ignoreTags of image `checkout` on ImageUpdater argocd/shop — in this commit (argocd/updater.yaml)"
        );
        // Again: excluded already, found, nothing to write.
        let again = one(r.text.as_deref().unwrap(), "ghcr.io/acme/checkout");
        assert_eq!((again.text, again.excluded.len(), again.found.len()), (None, 0, 1));
    }

    #[test]
    fn settings_without_ignore_tags_and_an_existing_list_are_extended_in_place() {
        let cart = one(UPDATER, "ghcr.io/acme/cart").text.unwrap();
        assert_eq!(
            cart,
            UPDATER.replace(
                "      commonUpdateSettings:\n        updateStrategy: semver\n",
                "      commonUpdateSettings:\n        ignoreTags:\n          - \"1.4.2\"\n        updateStrategy: semver\n"
            )
        );
        let web = one(UPDATER, "ghcr.io/acme/web").text.unwrap();
        assert_eq!(web, UPDATER.replace("- latest # never\n", "- latest # never\n          - \"1.4.2\"\n"));
        let flow =
            UPDATER.replace("ignoreTags:\n          - latest # never\n", "ignoreTags: [latest, \"dev\"]\n");
        let out = one(&flow, "ghcr.io/acme/web").text.unwrap();
        assert_eq!(out, flow.replace("[latest, \"dev\"]", "[latest, \"dev\", \"1.4.2\"]"));
        let crlf = UPDATER.replace('\n', "\r\n");
        assert!(
            one(&crlf, "ghcr.io/acme/web")
                .text
                .unwrap()
                .contains("- latest # never\r\n          - \"1.4.2\"\r\n")
        );
    }

    #[test]
    fn the_annotation_form_adds_to_the_aliases_ignore_tags() {
        let web = one(APP, "ghcr.io/acme/web");
        assert_eq!(
            web.text.unwrap(),
            APP.replace("web.ignore-tags: latest, dev", "web.ignore-tags: latest, dev, 1.4.2")
        );
        let co = one(APP, "ghcr.io/acme/checkout");
        assert_eq!(
            co.text.unwrap(),
            APP.replace(
                "  annotations:\n",
                "  annotations:\n    argocd-image-updater.argoproj.io/co.ignore-tags: \"1.4.2\"\n"
            )
        );
        assert_eq!(co.excluded[0].object, "shop");
        assert!(
            co.excluded[0]
                .describe()
                .contains("`argocd-image-updater.argoproj.io/co.ignore-tags` on Application shop")
        );
    }

    #[test]
    fn other_images_and_files_are_left_alone_and_a_digest_cannot_be_excluded() {
        assert_eq!(one(UPDATER, "ghcr.io/acme/other"), InFile::default());
        assert_eq!(one("kind: Deployment\nspec: {}\n", "ghcr.io/acme/web"), InFile::default());
        // docker.io/library/nginx and nginx are one image.
        let nginx = "apiVersion: argocd-image-updater.argoproj.io/v1alpha1\nkind: ImageUpdater\nmetadata:\n  name: n\nspec:\n  images:\n  - alias: nginx\n    imageName: docker.io/library/nginx:1.17.10\n";
        assert_eq!(one(nginx, "nginx").excluded.len(), 1);
        assert!(
            excludable("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").is_err()
        );
        assert_eq!(excludable("1.4.2").unwrap(), "1.4.2");
        let bad = UPDATER.replace("ignoreTags:\n          - latest # never\n", "ignoreTags: latest\n");
        let e = exclude_in_file("u.yaml", &bad, "ghcr.io/acme/web", "1.4.2").unwrap_err();
        assert!(e.contains("not a list") && e.contains("by hand"), "{e}");
    }

    #[test]
    fn images_under_application_refs_are_found_in_git_and_live() {
        let nested = "apiVersion: argocd-image-updater.argoproj.io/v1alpha1\nkind: ImageUpdater\nmetadata:\n  name: shop\n  namespace: argocd\nspec:\n  applicationRefs:\n    - namePattern: \"shop-*\"\n      images:\n        - alias: checkout\n          imageName: ghcr.io/acme/checkout\n          commonUpdateSettings:\n            updateStrategy: semver\n";
        let out = one(nested, "ghcr.io/acme/checkout").text.unwrap();
        assert_eq!(
            out,
            nested.replace(
                "          commonUpdateSettings:\n",
                "          commonUpdateSettings:\n            ignoreTags:\n              - \"1.4.2\"\n"
            )
        );
        let doc = json!({
            "apiVersion": "argocd-image-updater.argoproj.io/v1alpha1", "kind": "ImageUpdater",
            "metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {"applicationRefs": [
                {"namePattern": "other", "images": [{"alias": "web", "imageName": "ghcr.io/acme/web"}]},
                {"namePattern": "shop-*", "images": [{"alias": "checkout", "imageName": "ghcr.io/acme/checkout:1.4.0"}]},
            ]}
        });
        let u = live(doc.clone());
        let x = api_exclusions(&[&u], "ghcr.io/acme/checkout", "1.4.2", &[]);
        let after = apply(&doc, &x[0].patch).unwrap();
        assert_eq!(
            after.pointer("/spec/applicationRefs/1/images/0/commonUpdateSettings/ignoreTags"),
            Some(&json!(["1.4.2"]))
        );
    }

    fn live(v: Value) -> LiveUpdater {
        live_updater(&v).unwrap()
    }

    fn apply(doc: &Value, patch: &Value) -> Result<Value, String> {
        let mut d = doc.clone();
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        json_patch::patch(&mut d, &p).map_err(|e| e.to_string())?;
        Ok(d)
    }

    #[test]
    fn live_objects_not_in_git_get_a_json_patch_that_tests_what_it_read() {
        let doc = json!({
            "apiVersion": "argocd-image-updater.argoproj.io/v1alpha1", "kind": "ImageUpdater",
            "metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {"applicationRefs": [{"namePattern": "shop-*"}], "images": [
                {"alias": "checkout", "imageName": "ghcr.io/acme/checkout"},
                {"alias": "web", "imageName": "ghcr.io/acme/web:1.0", "commonUpdateSettings": {"ignoreTags": ["latest"]}},
            ]}
        });
        let u = live(doc.clone());
        let all = [&u];
        let co = api_exclusions(&all, "ghcr.io/acme/checkout", "1.4.2", &[]);
        assert_eq!(co.len(), 1);
        let after = apply(&doc, &co[0].patch).unwrap();
        assert_eq!(after.pointer("/spec/images/0/commonUpdateSettings/ignoreTags"), Some(&json!(["1.4.2"])));
        let web = api_exclusions(&all, "ghcr.io/acme/web", "1.4.2", &[]);
        let after = apply(&doc, &web[0].patch).unwrap();
        assert_eq!(
            after.pointer("/spec/images/1/commonUpdateSettings/ignoreTags"),
            Some(&json!(["latest", "1.4.2"]))
        );
        // Changed under it (another tag added meanwhile): the patch fails rather than lose it.
        let mut moved = doc.clone();
        moved["spec"]["images"][1]["commonUpdateSettings"]["ignoreTags"] = json!(["latest", "dev"]);
        assert!(apply(&moved, &web[0].patch).is_err());
        // Found in Git: not patched through the API. Excluded already: nothing to do.
        assert!(
            api_exclusions(
                &all,
                "ghcr.io/acme/web",
                "1.4.2",
                &[(UpdaterKind::ImageUpdater, "argocd/shop".into())]
            )
            .is_empty()
        );
        assert!(api_exclusions(&all, "ghcr.io/acme/web", "latest", &[]).is_empty());
        assert!(
            web[0]
                .excluded
                .describe()
                .contains("through the Kubernetes API (the object is not in this repository)")
        );
    }

    #[test]
    fn a_live_application_gets_its_annotation_and_a_tracked_one_is_said_to_be_managed_elsewhere() {
        let doc = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "shop", "namespace": "argocd",
                "labels": {"app.kubernetes.io/instance": "apps"},
                "annotations": {IMAGE_LIST: "co=ghcr.io/acme/checkout", "argocd-image-updater.argoproj.io/co.ignore-tags": "latest,dev"}},
            "spec": {}
        });
        let u = live(doc.clone());
        let x = api_exclusions(&[&u], "ghcr.io/acme/checkout", "1.4.2", &[]);
        let after = apply(&doc, &x[0].patch).unwrap();
        assert_eq!(
            after.pointer("/metadata/annotations/argocd-image-updater.argoproj.io~1co.ignore-tags"),
            Some(&json!("latest,dev, 1.4.2"))
        );
        assert!(x[0].excluded.describe().contains("managed by Argo CD from another repository"));
    }
}
