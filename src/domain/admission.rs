//! What the mutating admission webhook answers (pure): the deploy record written onto the workload
//! as annotations by JSON Patch, and the problems of its `metricops.dev/rule` as warnings. It never
//! denies: a deploy is never blocked by metricops. The wire format (AdmissionReview) is the
//! server's (`server/admission.rs`); this module sees the request's parts as plain values.
//!
//! Recorded on Deployment, StatefulSet, DaemonSet and CronJob, on CREATE and on an UPDATE that
//! changes an image (an UPDATE that changes none records nothing new, and keeps the record the
//! object had when the new object dropped it, as `kubectl replace` does):
//! - `metricops.dev/deployed-at`: when the API server admitted it (RFC 3339, seconds);
//! - `metricops.dev/images`: container → image, JSON;
//! - `metricops.dev/previous-images`: the images before, on an UPDATE that changed one;
//! - `metricops.dev/origin`: the GitOps origin the object shows (Argo CD's tracking id or instance
//!   label, Flux's kustomize-/helm-controller labels), JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

pub const DEPLOYED_AT: &str = "metricops.dev/deployed-at";
pub const IMAGES: &str = "metricops.dev/images";
pub const PREVIOUS_IMAGES: &str = "metricops.dev/previous-images";
pub const ORIGIN: &str = "metricops.dev/origin";
pub const RULE: &str = "metricops.dev/rule";
pub const RULE_FOR: &str = "metricops.dev/rule-for";

/// The operation of an admission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    /// DELETE, CONNECT: passed untouched.
    Other,
}

impl Operation {
    pub fn parse(s: &str) -> Operation {
        match s {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            _ => Operation::Other,
        }
    }
}

/// The workload kinds recorded, by API group and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl WorkloadKind {
    pub fn from_group_kind(group: &str, kind: &str) -> Option<WorkloadKind> {
        match (group, kind) {
            ("apps", "Deployment") => Some(WorkloadKind::Deployment),
            ("apps", "StatefulSet") => Some(WorkloadKind::StatefulSet),
            ("apps", "DaemonSet") => Some(WorkloadKind::DaemonSet),
            ("batch", "CronJob") => Some(WorkloadKind::CronJob),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// Where the pod spec is.
    fn pod_spec(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::CronJob => &["spec", "jobTemplate", "spec", "template", "spec"],
            _ => &["spec", "template", "spec"],
        }
    }
}

/// One admission request, as values.
pub struct Request<'a> {
    pub kind: Option<WorkloadKind>,
    pub operation: Operation,
    pub dry_run: bool,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
}

/// The answer: always allowed; a JSON Patch (RFC 6902 operations) and warnings for kubectl.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
}

/// Container name → image, init containers included, in name order.
pub type Images = BTreeMap<String, String>;

/// What the admission webhook answers to one request.
pub fn answer(req: &Request, now: DateTime<Utc>) -> Answer {
    answer_checking(req, now, &promql_problem)
}

/// Why `expr` is not valid PromQL (the parser's first line), or `None`.
pub fn promql_problem(expr: &str) -> Option<String> {
    promql_parser::parser::parse(expr).err().map(|e| e.lines().next().unwrap_or("").trim().to_string())
}

/// `answer`, with the PromQL check given: the server passes a memoised one (a parse costs about
/// 0.35 ms — the parser's tables and the matchers' regexes are built each time — and a cluster
/// sends the same few rules again and again).
pub fn answer_checking(req: &Request, now: DateTime<Utc>, promql: &dyn Fn(&str) -> Option<String>) -> Answer {
    let (Some(kind), Some(object)) = (req.kind, req.object) else {
        return Answer::default();
    };
    if req.operation == Operation::Other {
        return Answer::default();
    }
    let warnings = rule_warnings(object, promql);
    if req.dry_run {
        return Answer { patch: vec![], warnings };
    }
    let images = images(object, kind);
    let annotations = annotations(object);
    let mut set: Vec<(&str, String)> = Vec::new();
    let old_images = req.old_object.map(|o| images_of(o, kind));
    let changed = match (&old_images, req.operation) {
        (_, Operation::Create) | (None, _) => true,
        (Some(old), _) => old != &images,
    };
    if changed {
        set.push((DEPLOYED_AT, now.to_rfc3339_opts(SecondsFormat::Secs, true)));
        set.push((IMAGES, json_text(&images)));
        if req.operation == Operation::Update
            && let Some(old) = &old_images
        {
            set.push((PREVIOUS_IMAGES, json_text(old)));
        }
        if let Some(origin) = origin(object) {
            set.push((ORIGIN, origin));
        }
    } else if let Some(old) = req.old_object {
        // Nothing new: the record the object had stays, where the new object dropped it.
        let before = annotations_of(old);
        for key in [DEPLOYED_AT, IMAGES, PREVIOUS_IMAGES, ORIGIN] {
            if let Some(v) = before.get(key)
                && !annotations.contains_key(key)
            {
                set.push((key, v.clone()));
            }
        }
    }
    set.retain(|(k, v)| annotations.get(*k) != Some(v));
    let mut patch = Vec::new();
    if !set.is_empty() {
        match object.get("metadata") {
            // The API server always sends metadata; a review without it still gets a patch that applies.
            None => patch.push(json!({"op": "add", "path": "/metadata", "value": {"annotations": {}}})),
            Some(m) if !m.is_object() => {
                let mut warnings = warnings;
                warnings.push("metricops: the object's metadata is not an object; nothing recorded".into());
                return Answer { patch: vec![], warnings };
            }
            Some(m) if m.get("annotations").and_then(Value::as_object).is_none() => {
                patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
            }
            Some(_) => {}
        }
    }
    for (k, v) in set {
        patch.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v}));
    }
    Answer { patch, warnings }
}

/// A JSON Pointer reference token: `~` → `~0`, `/` → `~1` (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn json_text(images: &Images) -> String {
    serde_json::to_string(images).unwrap_or_default()
}

fn annotations_of(object: &Value) -> BTreeMap<String, String> {
    annotations(object)
}

fn annotations(object: &Value) -> BTreeMap<String, String> {
    string_map(object.pointer("/metadata/annotations"))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn images_of(object: &Value, kind: WorkloadKind) -> Images {
    images(object, kind)
}

/// The images of a workload's pod template.
pub fn images(object: &Value, kind: WorkloadKind) -> Images {
    let mut spec = object;
    for k in kind.pod_spec() {
        match spec.get(k) {
            Some(v) => spec = v,
            None => return Images::new(),
        }
    }
    let mut out = Images::new();
    for list in ["initContainers", "containers"] {
        for c in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let (Some(name), Some(image)) =
                (c.get("name").and_then(Value::as_str), c.get("image").and_then(Value::as_str))
            {
                out.insert(name.to_string(), image.to_string());
            }
        }
    }
    out
}

/// Argo CD's and Flux's marks on the object, as JSON; `None` when it shows none.
fn origin(object: &Value) -> Option<String> {
    let labels = string_map(object.pointer("/metadata/labels"));
    let annotations = annotations(object);
    let mut out = BTreeMap::new();
    if let Some(id) = annotations.get("argocd.argoproj.io/tracking-id") {
        out.insert("argocd.argoproj.io/tracking-id".to_string(), id.clone());
    } else if let Some(i) = labels.get("app.kubernetes.io/instance") {
        out.insert("app.kubernetes.io/instance".to_string(), i.clone());
    }
    for (k, v) in &labels {
        if k.starts_with("kustomize.toolkit.fluxcd.io/") || k.starts_with("helm.toolkit.fluxcd.io/") {
            out.insert(k.clone(), v.clone());
        }
    }
    (!out.is_empty()).then(|| serde_json::to_string(&out).unwrap_or_default())
}

/// The problems of the workload's `metricops.dev/rule` and `metricops.dev/rule-for`.
fn rule_warnings(object: &Value, promql: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let annotations = annotations(object);
    let mut out = Vec::new();
    if let Some(expr) = annotations.get(RULE)
        && let Some(first) = promql(expr)
    {
        out.push(format!("metricops: {RULE} is not valid PromQL ({first}); metricops will not evaluate it"));
    }
    if let Some(f) = annotations.get(RULE_FOR) {
        if crate::domain::schedule::parse_duration(f).is_none() {
            out.push(format!(
                "metricops: {RULE_FOR} {f:?} is not a duration (write 90s, 5m, 1h or 1d); the rule fires without waiting"
            ));
        }
        if !annotations.contains_key(RULE) {
            out.push(format!("metricops: {RULE_FOR} is set but {RULE} is not; it has no effect"));
        }
    }
    out
}

/// The deploy record a live workload carries (written by `answer`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeployRecord {
    pub deployed_at: DateTime<Utc>,
    pub images: Images,
    pub previous_images: Option<Images>,
    pub origin: BTreeMap<String, String>,
}

impl DeployRecord {
    /// From a workload's annotations; `None` without a readable `deployed-at` and `images`.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Option<DeployRecord> {
        let deployed_at = DateTime::parse_from_rfc3339(a.get(DEPLOYED_AT)?).ok()?.with_timezone(&Utc);
        let images = serde_json::from_str(a.get(IMAGES)?).ok()?;
        let previous_images = a.get(PREVIOUS_IMAGES).and_then(|p| serde_json::from_str(p).ok());
        let origin = a.get(ORIGIN).and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
        Some(DeployRecord { deployed_at, images, previous_images, origin })
    }

    /// The tag (or digest) its images give `image` (a repository such as `ghcr.io/acme/checkout`),
    /// now and before.
    pub fn versions_of(&self, image: &str) -> (Option<String>, Option<String>) {
        let find = |imgs: &Images| imgs.values().find_map(|i| version_of(i, image));
        (find(&self.images), self.previous_images.as_ref().and_then(find))
    }
}

/// `ghcr.io/acme/checkout:1.4.2` → `1.4.2` when it is an image of `repository`.
fn version_of(image: &str, repository: &str) -> Option<String> {
    let r = crate::domain::image_ref::ImageRef::parse(image)?;
    if !crate::domain::image_ref::same_repository(&r.repository, repository) {
        return None;
    }
    r.version.tag.clone().or_else(|| r.version.digest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn deployment(image: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "checkout", "namespace": "shop", "annotations": annotations,
                         "labels": {"app.kubernetes.io/instance": "checkout", "kustomize.toolkit.fluxcd.io/name": "apps"}},
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "migrate", "image": "ghcr.io/acme/migrate:7"}],
                "containers": [{"name": "app", "image": image}, {"name": "proxy", "image": "envoyproxy/envoy:v1.30"}]}}}
        })
    }

    /// Applies a JSON Patch the way the API server does (the ops `answer` emits: add to objects).
    fn apply(mut v: Value, patch: &[Value]) -> Value {
        for op in patch {
            assert_eq!(op["op"], "add");
            let path = op["path"].as_str().unwrap();
            let (parent, key) = path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            v.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key, op["value"].clone());
        }
        v
    }

    fn req<'a>(op: Operation, object: &'a Value, old: Option<&'a Value>) -> Request<'a> {
        Request {
            kind: Some(WorkloadKind::Deployment),
            operation: op,
            dry_run: false,
            object: Some(object),
            old_object: old,
        }
    }

    #[test]
    fn a_create_records_time_images_and_origin() {
        let obj = deployment("ghcr.io/acme/checkout:1.4.2", json!({}));
        let a = answer(&req(Operation::Create, &obj, None), t("2026-12-01T10:00:00Z"));
        assert!(a.warnings.is_empty());
        assert_eq!(a.patch[0]["path"], "/metadata/annotations/metricops.dev~1deployed-at");
        let after = apply(obj, &a.patch);
        let ann = annotations(&after);
        let r = DeployRecord::from_annotations(&ann).unwrap();
        assert_eq!(r.deployed_at, t("2026-12-01T10:00:00Z"));
        assert_eq!(r.images["app"], "ghcr.io/acme/checkout:1.4.2");
        assert_eq!(r.images["migrate"], "ghcr.io/acme/migrate:7");
        assert_eq!(r.previous_images, None);
        assert_eq!(r.origin["app.kubernetes.io/instance"], "checkout");
        assert_eq!(r.origin["kustomize.toolkit.fluxcd.io/name"], "apps");
        assert_eq!(r.versions_of("ghcr.io/acme/checkout"), (Some("1.4.2".into()), None));
    }

    #[test]
    fn an_object_without_annotations_gets_the_map_first() {
        let mut obj = deployment("nginx:1.25", json!({}));
        obj["metadata"].as_object_mut().unwrap().remove("annotations");
        let a = answer(&req(Operation::Create, &obj, None), t("2026-12-01T10:00:00Z"));
        assert_eq!(a.patch[0], json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        let after = apply(obj, &a.patch);
        assert!(DeployRecord::from_annotations(&annotations(&after)).is_some());
    }

    #[test]
    fn an_update_that_changes_an_image_keeps_the_images_before() {
        let old = apply(
            deployment("ghcr.io/acme/checkout:1.4.2", json!({})),
            &answer(
                &req(Operation::Create, &deployment("ghcr.io/acme/checkout:1.4.2", json!({})), None),
                t("2026-12-01T10:00:00Z"),
            )
            .patch,
        );
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("ghcr.io/acme/checkout:1.5.0");
        let a = answer(&req(Operation::Update, &new, Some(&old)), t("2026-12-02T09:30:00Z"));
        let r = DeployRecord::from_annotations(&annotations(&apply(new, &a.patch))).unwrap();
        assert_eq!(r.deployed_at, t("2026-12-02T09:30:00Z"));
        assert_eq!(r.versions_of("ghcr.io/acme/checkout"), (Some("1.5.0".into()), Some("1.4.2".into())));
    }

    #[test]
    fn an_update_that_changes_no_image_records_nothing_new() {
        let first = deployment("ghcr.io/acme/checkout:1.4.2", json!({}));
        let old = apply(
            first.clone(),
            &answer(&req(Operation::Create, &first, None), t("2026-12-01T10:00:00Z")).patch,
        );
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert_eq!(
            answer(&req(Operation::Update, &scaled, Some(&old)), t("2026-12-03T00:00:00Z")),
            Answer::default()
        );
        // A replace that dropped the record gets it back as it was.
        let mut replaced = scaled.clone();
        replaced["metadata"]["annotations"] = json!({"team": "shop"});
        let a = answer(&req(Operation::Update, &replaced, Some(&old)), t("2026-12-03T00:00:00Z"));
        let r = DeployRecord::from_annotations(&annotations(&apply(replaced, &a.patch))).unwrap();
        assert_eq!(r.deployed_at, t("2026-12-01T10:00:00Z"));
    }

    #[test]
    fn dry_runs_unknown_kinds_and_deletes_get_no_patch() {
        let obj = deployment("nginx:1.25", json!({RULE: "rate(x[5m] > 0"}));
        let mut r = req(Operation::Create, &obj, None);
        r.dry_run = true;
        let a = answer(&r, t("2026-12-01T10:00:00Z"));
        assert!(a.patch.is_empty());
        assert_eq!(a.warnings.len(), 1, "warnings still come back on a dry run");
        r.dry_run = false;
        r.kind = None;
        assert_eq!(answer(&r, t("2026-12-01T10:00:00Z")), Answer::default());
        let r = req(Operation::Other, &obj, None);
        assert_eq!(answer(&r, t("2026-12-01T10:00:00Z")), Answer::default());
    }

    #[test]
    fn bad_rules_come_back_as_warnings() {
        let obj = deployment(
            "nginx:1.25",
            json!({RULE: "sum(rate(http_requests_total[5m]) > 0", RULE_FOR: "5 minutes"}),
        );
        let a = answer(&req(Operation::Create, &obj, None), t("2026-12-01T10:00:00Z"));
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
        assert!(a.warnings[0].contains("not valid PromQL"), "{}", a.warnings[0]);
        assert!(a.warnings[1].contains("\"5 minutes\" is not a duration"), "{}", a.warnings[1]);
        assert!(!a.patch.is_empty(), "a bad rule does not stop the record");
        let good = deployment("nginx:1.25", json!({RULE: "rate(x[5m]) > 0", RULE_FOR: "5m"}));
        assert!(answer(&req(Operation::Create, &good, None), t("2026-12-01T10:00:00Z")).warnings.is_empty());
    }

    #[test]
    fn cron_jobs_have_their_pod_spec_deeper() {
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "r", "image": "acme/report:3"}]}}}}}});
        assert_eq!(images(&cj, WorkloadKind::CronJob)["r"], "acme/report:3");
    }

    #[test]
    fn keys_are_escaped_as_json_pointer_tokens() {
        assert_eq!(escape("metricops.dev/images"), "metricops.dev~1images");
        assert_eq!(escape("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn an_object_without_metadata_gets_a_patch_that_applies_and_bad_metadata_records_nothing() {
        let now = DateTime::parse_from_rfc3339("2025-10-09T08:53:20Z").unwrap().with_timezone(&Utc);
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        fn req(o: &Value) -> Request<'_> {
            Request {
                kind: Some(WorkloadKind::Deployment),
                operation: Operation::Create,
                dry_run: false,
                object: Some(o),
                old_object: None,
            }
        }
        let a = answer(&req(&object), now);
        let mut patched = object.clone();
        let p: json_patch::Patch = serde_json::from_value(Value::Array(a.patch)).unwrap();
        json_patch::patch(&mut patched, &p).expect("the patch applies");
        assert_eq!(
            patched.pointer("/metadata/annotations/metricops.dev~1deployed-at"),
            Some(&json!("2025-10-09T08:53:20Z"))
        );
        let mut bad = object.clone();
        bad["metadata"] = json!("name");
        let a = answer(&req(&bad), now);
        assert!(a.patch.is_empty());
        assert!(a.warnings.iter().any(|w| w.contains("metadata is not an object")), "{:?}", a.warnings);
    }
}
