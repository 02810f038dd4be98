//! What the cluster says, as an index (pure): the Argo CD `Application`s, the Flux
//! `Kustomization`s, `HelmRelease`s and `GitRepository`s, and the workloads with the deploy record
//! the admission webhook wrote on them. The watchers (`adapters/kube.rs`) feed it objects as JSON
//! values; the engine asks it which repository, branch and paths deploy a workload (a zero-config
//! target), when its version went live, and how a rollback is going.
//!
//! A workload is found in an Application's `status.resources`, a Kustomization's
//! `status.inventory`, or through the GitOps marks it carries (Argo CD's tracking id or instance
//! label, Flux's `kustomize.toolkit.fluxcd.io/*` and `helm.toolkit.fluxcd.io/*` labels).

use super::image_updater::{LiveUpdater, UpdaterKind, live_updater};
use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::admission::{DeployRecord, WorkloadKind};

/// `namespace/name` of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey { namespace: namespace.to_string(), name: name.to_string() }
    }

    pub fn of(v: &Value) -> Option<ObjectKey> {
        Some(ObjectKey {
            namespace: str_at(v, "/metadata/namespace").unwrap_or_default(),
            name: str_at(v, "/metadata/name")?,
        })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One source of an Argo CD Application.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgoSource {
    pub repo_url: String,
    pub path: Option<String>,
    pub target_revision: Option<String>,
    /// Set for a chart from a Helm repository (not git).
    pub chart: Option<String>,
    /// `ref:` of a multi-source values source.
    pub ref_name: Option<String>,
    /// Helm `valueFiles` (`$values/...` point into the source with that `ref`).
    pub value_files: Vec<String>,
}

/// An Argo CD Application as the index keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgoApp {
    pub key: ObjectKey,
    pub sources: Vec<ArgoSource>,
    /// `spec.sources` rather than `spec.source` (the revisions are then per source).
    pub multi: bool,
    pub resources: Vec<(String, ObjectKey)>,
    pub sync_status: Option<String>,
    pub revisions: Vec<String>,
    pub operation_phase: Option<String>,
    pub health: Option<String>,
}

/// A Flux Kustomization.
#[derive(Clone, Debug, PartialEq)]
pub struct FluxKustomization {
    pub key: ObjectKey,
    pub source: Option<ObjectKey>,
    pub path: String,
    pub inventory: Vec<(String, ObjectKey)>,
    pub last_applied_revision: Option<String>,
    pub ready: Option<bool>,
}

/// A Flux HelmRelease (v2).
#[derive(Clone, Debug, PartialEq)]
pub struct FluxHelmRelease {
    pub key: ObjectKey,
    /// The GitRepository its chart comes from, when it is one.
    pub git_source: Option<ObjectKey>,
    pub chart_path: Option<String>,
    /// The Kustomization that applied it (its labels).
    pub parent: Option<ObjectKey>,
    pub ready: Option<bool>,
    /// `status.history[0]`: (chart version, status).
    pub latest: Option<(String, String)>,
}

/// A Flux GitRepository.
#[derive(Clone, Debug, PartialEq)]
pub struct GitRepository {
    pub key: ObjectKey,
    pub url: String,
    pub branch: Option<String>,
}

/// A live workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub key: ObjectKey,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub record: Option<DeployRecord>,
    /// Container → image, as the pod template has it now.
    pub images: crate::domain::admission::Images,
}

/// Which GitOps object deploys a workload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Deployer {
    ArgoApplication(ObjectKey),
    FluxKustomization(ObjectKey),
    FluxHelmRelease(ObjectKey),
}

impl Deployer {
    fn of(kind: Kind, key: &ObjectKey) -> Option<Deployer> {
        match kind {
            Kind::Application => Some(Deployer::ArgoApplication(key.clone())),
            Kind::Kustomization => Some(Deployer::FluxKustomization(key.clone())),
            Kind::HelmRelease => Some(Deployer::FluxHelmRelease(key.clone())),
            _ => None,
        }
    }

    pub fn key(&self) -> &ObjectKey {
        match self {
            Deployer::ArgoApplication(k) | Deployer::FluxKustomization(k) | Deployer::FluxHelmRelease(k) => k,
        }
    }

    /// The Flux GitRepository to refresh with it (Argo CD refreshes its own source).
    pub fn flux_source<'a>(&self, index: &'a ClusterIndex) -> Option<&'a ObjectKey> {
        match self {
            Deployer::ArgoApplication(_) => None,
            Deployer::FluxKustomization(k) => index.kustomizations.get(k)?.source.as_ref(),
            Deployer::FluxHelmRelease(k) => {
                let hr = index.helm_releases.get(k)?;
                hr.git_source
                    .as_ref()
                    .or_else(|| index.kustomizations.get(hr.parent.as_ref()?)?.source.as_ref())
            }
        }
    }
}

impl std::fmt::Display for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deployer::ArgoApplication(k) => write!(f, "Argo CD Application {k}"),
            Deployer::FluxKustomization(k) => write!(f, "Flux Kustomization {k}"),
            Deployer::FluxHelmRelease(k) => write!(f, "Flux HelmRelease {k}"),
        }
    }
}

/// Where a workload comes from in Git: found with no `workloads:` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub repo_url: String,
    /// `None`: the repository's default branch (`HEAD`, or no revision given).
    pub branch: Option<String>,
    pub paths: Vec<String>,
    pub deployer: Deployer,
}

/// How a rollback shows in the deployer's status.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RolloutStatus {
    /// The revision (commit sha) it applied last, for the repository in question.
    pub revision: Option<String>,
    /// Synced (Argo CD: sync Synced and the last operation Succeeded; Flux: Ready=True).
    pub synced: bool,
    /// Healthy (Argo CD: health Healthy; Flux: Ready=True, the HelmRelease's latest release deployed).
    pub healthy: bool,
    /// What it says, for a person (`sync OutOfSync, operation Running, health Progressing`).
    pub said: String,
}

/// The index.
#[derive(Clone, Debug, Default)]
pub struct ClusterIndex {
    pub apps: BTreeMap<ObjectKey, ArgoApp>,
    pub kustomizations: BTreeMap<ObjectKey, FluxKustomization>,
    pub helm_releases: BTreeMap<ObjectKey, FluxHelmRelease>,
    pub git_repositories: BTreeMap<ObjectKey, GitRepository>,
    pub workloads: BTreeMap<ObjectKey, Workload>,
    /// Rollbacks being followed: the deployer objects' `metricops.dev/confirm` annotation.
    pub confirming: BTreeMap<Deployer, String>,
    /// argocd-image-updater's `ImageUpdater`s, and Applications carrying its `image-list`.
    pub image_updaters: BTreeMap<(UpdaterKind, ObjectKey), LiveUpdater>,
}

/// The annotation a rollback being followed is kept in, on its deployer's object.
pub const CONFIRM: &str = "metricops.dev/confirm";

/// The kind of an object by its `apiVersion` group and `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Application,
    Kustomization,
    HelmRelease,
    GitRepository,
    /// argocd-image-updater's `ImageUpdater`.
    ImageUpdater,
    Workload(WorkloadKind),
}

impl Kind {
    pub fn of(v: &Value) -> Option<Kind> {
        let api = v.get("apiVersion")?.as_str()?;
        let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
        let kind = v.get("kind")?.as_str()?;
        Some(match (group, kind) {
            ("argoproj.io", "Application") => Kind::Application,
            ("kustomize.toolkit.fluxcd.io", "Kustomization") => Kind::Kustomization,
            ("helm.toolkit.fluxcd.io", "HelmRelease") => Kind::HelmRelease,
            ("source.toolkit.fluxcd.io", "GitRepository") => Kind::GitRepository,
            (super::image_updater::GROUP, "ImageUpdater") => Kind::ImageUpdater,
            (g, k) => Kind::Workload(WorkloadKind::from_group_kind(g, k)?),
        })
    }
}

impl ClusterIndex {
    /// An object seen (added or changed). Objects of other kinds, or unreadable, are left out.
    pub fn upsert(&mut self, v: &Value) {
        let (Some(kind), Some(key)) = (Kind::of(v), ObjectKey::of(v)) else { return };
        if let Some(d) = Deployer::of(kind, &key) {
            match v.pointer("/metadata/annotations").and_then(|a| a.get(CONFIRM)).and_then(Value::as_str) {
                Some(c) => drop(self.confirming.insert(d, c.to_string())),
                None => drop(self.confirming.remove(&d)),
            }
        }
        if matches!(kind, Kind::Application | Kind::ImageUpdater) {
            let k =
                if kind == Kind::Application { UpdaterKind::Application } else { UpdaterKind::ImageUpdater };
            match live_updater(v) {
                Some(u) => drop(self.image_updaters.insert((k, key.clone()), u)),
                None => drop(self.image_updaters.remove(&(k, key.clone()))),
            }
        }
        match kind {
            Kind::ImageUpdater => {}
            Kind::Application => {
                self.apps.insert(key.clone(), argo_app(key, v));
            }
            Kind::Kustomization => {
                self.kustomizations.insert(key.clone(), kustomization(key, v));
            }
            Kind::HelmRelease => {
                self.helm_releases.insert(key.clone(), helm_release(key, v));
            }
            Kind::GitRepository => {
                let url = str_at(v, "/spec/url").unwrap_or_default();
                let branch = str_at(v, "/spec/ref/branch");
                self.git_repositories.insert(key.clone(), GitRepository { key, url, branch });
            }
            Kind::Workload(kind) => {
                let labels = string_map(v.pointer("/metadata/labels"));
                let annotations = string_map(v.pointer("/metadata/annotations"));
                let record = DeployRecord::from_annotations(&annotations);
                let images = crate::domain::admission::images(v, kind);
                self.workloads
                    .insert(key.clone(), Workload { kind, key, labels, annotations, record, images });
            }
        }
    }

    /// An object deleted.
    pub fn remove(&mut self, v: &Value) {
        let (Some(kind), Some(key)) = (Kind::of(v), ObjectKey::of(v)) else { return };
        self.forget(kind, &key);
    }

    fn forget(&mut self, kind: Kind, key: &ObjectKey) {
        if let Some(d) = Deployer::of(kind, key) {
            self.confirming.remove(&d);
        }
        let key = key.clone();
        match kind {
            Kind::ImageUpdater => drop(self.image_updaters.remove(&(UpdaterKind::ImageUpdater, key))),
            Kind::Application => {
                self.image_updaters.remove(&(UpdaterKind::Application, key.clone()));
                drop(self.apps.remove(&key))
            }
            Kind::Kustomization => drop(self.kustomizations.remove(&key)),
            Kind::HelmRelease => drop(self.helm_releases.remove(&key)),
            Kind::GitRepository => drop(self.git_repositories.remove(&key)),
            Kind::Workload(_) => drop(self.workloads.remove(&key)),
        }
    }

    /// After a full list of one kind (a watch restarted): what was not in it is gone.
    pub fn keep_only(&mut self, kind: Kind, listed: &std::collections::BTreeSet<ObjectKey>) {
        let stale: Vec<ObjectKey> = match kind {
            Kind::ImageUpdater => self
                .image_updaters
                .keys()
                .filter(|(k, key)| *k == UpdaterKind::ImageUpdater && !listed.contains(key))
                .map(|(_, key)| key.clone())
                .collect(),
            Kind::Application => self.apps.keys().filter(|k| !listed.contains(k)).cloned().collect(),
            Kind::Kustomization => {
                self.kustomizations.keys().filter(|k| !listed.contains(k)).cloned().collect()
            }
            Kind::HelmRelease => self.helm_releases.keys().filter(|k| !listed.contains(k)).cloned().collect(),
            Kind::GitRepository => {
                self.git_repositories.keys().filter(|k| !listed.contains(k)).cloned().collect()
            }
            Kind::Workload(wk) => self
                .workloads
                .values()
                .filter(|w| w.kind == wk && !listed.contains(&w.key))
                .map(|w| w.key.clone())
                .collect(),
        };
        for k in stale {
            self.forget(kind, &k);
        }
    }

    /// The deploy record of a workload, when the admission webhook wrote one.
    pub fn deploy(&self, workload: &ObjectKey) -> Option<&DeployRecord> {
        self.workloads.get(workload)?.record.as_ref()
    }

    /// Which objects deploy a workload: those that list it, then those its marks name.
    pub fn deployers(&self, w: &ObjectKey) -> Vec<Deployer> {
        let mut out = Vec::new();
        let listed = |rs: &[(String, ObjectKey)]| {
            rs.iter().any(|(k, o)| o == w && WorkloadKind::from_group_kind(group_of(k), kind_of(k)).is_some())
        };
        for app in self.apps.values().filter(|a| listed(&a.resources)) {
            out.push(Deployer::ArgoApplication(app.key.clone()));
        }
        for k in self.kustomizations.values().filter(|k| listed(&k.inventory)) {
            out.push(Deployer::FluxKustomization(k.key.clone()));
        }
        if let Some(live) = self.workloads.get(w) {
            let marks = |key: &str| live.labels.get(key).or_else(|| live.record.as_ref()?.origin.get(key));
            if let (Some(name), Some(ns)) =
                (marks("helm.toolkit.fluxcd.io/name"), marks("helm.toolkit.fluxcd.io/namespace"))
            {
                let hr = ObjectKey::new(ns, name);
                if self.helm_releases.contains_key(&hr) {
                    out.insert(0, Deployer::FluxHelmRelease(hr));
                }
            }
            if let (Some(name), Some(ns)) =
                (marks("kustomize.toolkit.fluxcd.io/name"), marks("kustomize.toolkit.fluxcd.io/namespace"))
            {
                let k = Deployer::FluxKustomization(ObjectKey::new(ns, name));
                if !out.contains(&k) && self.kustomizations.contains_key(&ObjectKey::new(ns, name)) {
                    out.push(k);
                }
            }
            let app_name = live
                .annotations
                .get("argocd.argoproj.io/tracking-id")
                .or_else(|| live.record.as_ref()?.origin.get("argocd.argoproj.io/tracking-id"))
                .and_then(|id| id.split_once(':').map(|(app, _)| app.to_string()))
                .or_else(|| marks("app.kubernetes.io/instance").cloned());
            if let Some(name) = app_name {
                // `namespace_app` in tracking ids of apps outside Argo CD's namespace.
                for app in self.apps.values() {
                    let d = Deployer::ArgoApplication(app.key.clone());
                    let named =
                        app.key.name == name || format!("{}_{}", app.key.namespace, app.key.name) == name;
                    if named && !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
        }
        out
    }

    /// Where a workload comes from in Git: the first deployer whose source is a Git repository.
    pub fn target(&self, w: &ObjectKey) -> Option<Target> {
        self.deployers(w).into_iter().find_map(|d| self.target_of(&d))
    }

    /// Where one deployer takes the workload from.
    pub fn target_of_deployer(&self, d: &Deployer) -> Option<Target> {
        self.target_of(d)
    }

    fn target_of(&self, d: &Deployer) -> Option<Target> {
        match d {
            Deployer::ArgoApplication(k) => {
                let app = self.apps.get(k)?;
                // A Git source with a path; the values sources (`ref:`) its charts point into add paths.
                let git = app.sources.iter().find(|s| s.chart.is_none() && s.path.is_some())?;
                let mut paths = vec![git.path.clone().unwrap_or_default()];
                for s in &app.sources {
                    for f in &s.value_files {
                        if let Some(rest) = f.strip_prefix('$')
                            && let Some((r, file)) = rest.split_once('/')
                            && app.sources.iter().any(|v| {
                                v.ref_name.as_deref() == Some(r) && same_repo(&v.repo_url, &git.repo_url)
                            })
                        {
                            paths.push(file.to_string());
                        }
                    }
                }
                Some(Target {
                    repo_url: git.repo_url.clone(),
                    branch: branch_of(git.target_revision.as_deref()),
                    paths: clean_paths(paths),
                    deployer: d.clone(),
                })
            }
            Deployer::FluxKustomization(k) => {
                let ks = self.kustomizations.get(k)?;
                let repo = self.git_repositories.get(ks.source.as_ref()?)?;
                Some(Target {
                    repo_url: repo.url.clone(),
                    branch: repo.branch.clone(),
                    paths: clean_paths(vec![ks.path.clone()]),
                    deployer: d.clone(),
                })
            }
            Deployer::FluxHelmRelease(k) => {
                let hr = self.helm_releases.get(k)?;
                let parent = hr.parent.as_ref().and_then(|p| self.kustomizations.get(p));
                // The chart's own repository when it is Git, else the one the HelmRelease itself
                // (and its `values`) lives in.
                let (repo, mut paths) = match (&hr.git_source, &hr.chart_path) {
                    (Some(src), Some(chart)) => (self.git_repositories.get(src)?, vec![chart.clone()]),
                    _ => (self.git_repositories.get(parent?.source.as_ref()?)?, vec![]),
                };
                if let Some(p) = parent
                    && p.source
                        .as_ref()
                        .and_then(|s| self.git_repositories.get(s))
                        .is_some_and(|r| r.key == repo.key)
                {
                    paths.push(p.path.clone());
                }
                Some(Target {
                    repo_url: repo.url.clone(),
                    branch: repo.branch.clone(),
                    paths: clean_paths(paths),
                    deployer: d.clone(),
                })
            }
        }
    }

    /// How a deployer's rollout stands, for the repository `repo_url`.
    pub fn rollout(&self, d: &Deployer, repo_url: &str) -> Option<RolloutStatus> {
        match d {
            Deployer::ArgoApplication(k) => {
                let app = self.apps.get(k)?;
                let revision = if app.multi {
                    let i = app
                        .sources
                        .iter()
                        .position(|s| s.chart.is_none() && same_repo(&s.repo_url, repo_url));
                    i.and_then(|i| app.revisions.get(i).cloned())
                } else {
                    app.revisions.first().cloned()
                };
                let sync = app.sync_status.as_deref().unwrap_or("unknown");
                let op = app.operation_phase.as_deref().unwrap_or("none");
                let health = app.health.as_deref().unwrap_or("unknown");
                Some(RolloutStatus {
                    revision,
                    synced: sync == "Synced" && op == "Succeeded",
                    healthy: health == "Healthy",
                    said: format!("sync {sync}, operation {op}, health {health}"),
                })
            }
            Deployer::FluxKustomization(k) => {
                let ks = self.kustomizations.get(k)?;
                let ready = ks.ready == Some(true);
                Some(RolloutStatus {
                    revision: ks.last_applied_revision.as_deref().and_then(flux_sha).map(str::to_string),
                    synced: ready,
                    healthy: ready,
                    said: format!(
                        "last applied {}, Ready={}",
                        ks.last_applied_revision.as_deref().unwrap_or("nothing"),
                        ready_text(ks.ready)
                    ),
                })
            }
            Deployer::FluxHelmRelease(k) => {
                let hr = self.helm_releases.get(k)?;
                let parent = hr.parent.as_ref().and_then(|p| self.kustomizations.get(p));
                let revision = parent
                    .and_then(|p| p.last_applied_revision.as_deref())
                    .and_then(flux_sha)
                    .map(str::to_string);
                let ready = hr.ready == Some(true);
                let deployed = hr.latest.as_ref().is_some_and(|(_, s)| s == "deployed");
                Some(RolloutStatus {
                    revision,
                    synced: ready && parent.is_some_and(|p| p.ready == Some(true)),
                    healthy: ready && deployed,
                    said: format!(
                        "Ready={}, latest release {}",
                        ready_text(hr.ready),
                        hr.latest.as_ref().map(|(v, s)| format!("{v} {s}")).unwrap_or_else(|| "none".into())
                    ),
                })
            }
        }
    }
}

fn ready_text(r: Option<bool>) -> &'static str {
    match r {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// The commit of a Flux revision: `main@sha1:<sha>`, `sha1:<sha>`, the older `main/<sha>`, or a
/// bare sha.
pub fn flux_sha(rev: &str) -> Option<&str> {
    let sha = match rev.rsplit_once("sha1:") {
        Some((_, sha)) => sha,
        None => rev.rsplit_once('/').map(|(_, s)| s).unwrap_or(rev),
    };
    (sha.len() >= 7 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
}

/// Two repository URLs that name one repository (scheme, `.git`, case of the host and an scp-like
/// `git@host:owner/name` aside).
pub fn same_repo(a: &str, b: &str) -> bool {
    repo_key(a) == repo_key(b)
}

/// A repository URL reduced for comparison: `host/owner/name`, lower case.
pub fn repo_key(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    let rest = match u.split_once("://") {
        Some((_, r)) => r.to_string(),
        None => match u.split_once(':') {
            Some((host, path)) if !host.contains('/') => format!("{host}/{path}"),
            _ => u.to_string(),
        },
    };
    let rest = rest.rsplit_once('@').filter(|(user, _)| !user.contains('/')).map(|(_, r)| r).unwrap_or(&rest);
    rest.to_ascii_lowercase()
}

fn branch_of(rev: Option<&str>) -> Option<String> {
    match rev.map(str::trim) {
        None | Some("") | Some("HEAD") => None,
        Some(r) => Some(r.strip_prefix("refs/heads/").unwrap_or(r).to_string()),
    }
}

fn clean_paths(paths: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        let p = p.trim().trim_start_matches("./").trim_matches('/').to_string();
        let p = if p == "." { String::new() } else { p };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    // The whole repository ("" or ".") covers every other path.
    if out.iter().any(String::is_empty) { vec![] } else { out }
}

fn group_of(kind: &str) -> &str {
    kind.split_once('/').map(|(g, _)| g).unwrap_or("")
}
fn kind_of(kind: &str) -> &str {
    kind.split_once('/').map(|(_, k)| k).unwrap_or(kind)
}

fn str_at(v: &Value, p: &str) -> Option<String> {
    v.pointer(p)?.as_str().map(str::to_string)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn ready(v: &Value) -> Option<bool> {
    let c = v.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "Ready")?;
    Some(c["status"] == "True")
}

fn argo_source(s: &Value) -> ArgoSource {
    ArgoSource {
        repo_url: str_at(s, "/repoURL").unwrap_or_default(),
        path: str_at(s, "/path"),
        target_revision: str_at(s, "/targetRevision"),
        chart: str_at(s, "/chart"),
        ref_name: str_at(s, "/ref"),
        value_files: s
            .pointer("/helm/valueFiles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
    }
}

fn argo_app(key: ObjectKey, v: &Value) -> ArgoApp {
    let (sources, multi) = match v.pointer("/spec/sources").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => (list.iter().map(argo_source).collect(), true),
        _ => (v.pointer("/spec/source").map(argo_source).into_iter().collect(), false),
    };
    let resources = v
        .pointer("/status/resources")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    let group = str_at(r, "/group").unwrap_or_default();
                    let kind = str_at(r, "/kind")?;
                    let ns = str_at(r, "/namespace").unwrap_or_default();
                    Some((format!("{group}/{kind}"), ObjectKey::new(&ns, &str_at(r, "/name")?)))
                })
                .collect()
        })
        .unwrap_or_default();
    let revisions = match v.pointer("/status/sync/revisions").and_then(Value::as_array) {
        Some(r) => r.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        None => str_at(v, "/status/sync/revision").into_iter().collect(),
    };
    ArgoApp {
        key,
        sources,
        multi,
        resources,
        sync_status: str_at(v, "/status/sync/status"),
        revisions,
        operation_phase: str_at(v, "/status/operationState/phase"),
        health: str_at(v, "/status/health/status"),
    }
}

fn kustomization(key: ObjectKey, v: &Value) -> FluxKustomization {
    let source = (str_at(v, "/spec/sourceRef/kind").as_deref() == Some("GitRepository"))
        .then(|| {
            let ns = str_at(v, "/spec/sourceRef/namespace").unwrap_or_else(|| key.namespace.clone());
            Some(ObjectKey::new(&ns, &str_at(v, "/spec/sourceRef/name")?))
        })
        .flatten();
    // Inventory ids: `<namespace>_<name>_<group>_<kind>` (names have no `_`).
    let inventory = v
        .pointer("/status/inventory/entries")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .filter_map(|e| {
                    let id = e.get("id")?.as_str()?;
                    let parts: Vec<&str> = id.split('_').collect();
                    (parts.len() == 4)
                        .then(|| (format!("{}/{}", parts[2], parts[3]), ObjectKey::new(parts[0], parts[1])))
                })
                .collect()
        })
        .unwrap_or_default();
    FluxKustomization {
        source,
        path: str_at(v, "/spec/path").unwrap_or_default(),
        inventory,
        last_applied_revision: str_at(v, "/status/lastAppliedRevision"),
        ready: ready(v),
        key,
    }
}

fn helm_release(key: ObjectKey, v: &Value) -> FluxHelmRelease {
    let git_source = (str_at(v, "/spec/chart/spec/sourceRef/kind").as_deref() == Some("GitRepository"))
        .then(|| {
            let ns =
                str_at(v, "/spec/chart/spec/sourceRef/namespace").unwrap_or_else(|| key.namespace.clone());
            Some(ObjectKey::new(&ns, &str_at(v, "/spec/chart/spec/sourceRef/name")?))
        })
        .flatten();
    let labels = string_map(v.pointer("/metadata/labels"));
    let parent = match (
        labels.get("kustomize.toolkit.fluxcd.io/name"),
        labels.get("kustomize.toolkit.fluxcd.io/namespace"),
    ) {
        (Some(n), Some(ns)) => Some(ObjectKey::new(ns, n)),
        _ => None,
    };
    let latest = v
        .pointer("/status/history/0")
        .map(|h| (str_at(h, "/chartVersion").unwrap_or_default(), str_at(h, "/status").unwrap_or_default()));
    FluxHelmRelease {
        git_source,
        chart_path: str_at(v, "/spec/chart/spec/chart"),
        parent,
        ready: ready(v),
        latest,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "8f2c1e9a4b7d3f6e0a1c2b3d4e5f60718293a4b5";

    fn checkout() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "checkout", "namespace": "shop",
                            "annotations": {"metricops.dev/deployed-at": "2026-12-01T10:00:00Z",
                                            "metricops.dev/images": "{\"app\":\"ghcr.io/acme/checkout:1.5.0\"}",
                                            "metricops.dev/previous-images": "{\"app\":\"ghcr.io/acme/checkout:1.4.2\"}"}}})
    }

    fn app(status: Value) -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "checkout", "namespace": "argocd"},
               "spec": {"source": {"repoURL": "https://github.com/acme/manifests.git", "path": "apps/checkout", "targetRevision": "HEAD"}},
               "status": status})
    }

    #[test]
    fn an_argo_application_listing_the_workload_is_its_target() {
        let mut ix = ClusterIndex::default();
        ix.upsert(&checkout());
        ix.upsert(&app(json!({"resources": [{"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "checkout"},
                                              {"kind": "Service", "namespace": "shop", "name": "checkout"}],
                               "sync": {"status": "Synced", "revision": SHA},
                               "operationState": {"phase": "Succeeded"}, "health": {"status": "Healthy"}})));
        let w = ObjectKey::new("shop", "checkout");
        let t = ix.target(&w).unwrap();
        assert_eq!(t.repo_url, "https://github.com/acme/manifests.git");
        assert_eq!(t.branch, None, "HEAD is the repository's default branch");
        assert_eq!(t.paths, vec!["apps/checkout".to_string()]);
        assert_eq!(t.deployer, Deployer::ArgoApplication(ObjectKey::new("argocd", "checkout")));
        let r = ix.rollout(&t.deployer, "git@github.com:Acme/manifests").unwrap();
        assert_eq!(r.revision.as_deref(), Some(SHA));
        assert!(r.synced && r.healthy, "{}", r.said);
        assert_eq!(ix.deploy(&w).unwrap().versions_of("ghcr.io/acme/checkout").1.as_deref(), Some("1.4.2"));
        // Gone from the cluster, gone from the index.
        ix.remove(&app(json!({})));
        assert_eq!(ix.target(&w), None);
    }

    #[test]
    fn the_tracking_id_names_the_app_when_its_status_lists_nothing_yet() {
        let mut ix = ClusterIndex::default();
        let mut w = checkout();
        w["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] =
            json!("checkout:apps/Deployment:shop/checkout");
        ix.upsert(&w);
        ix.upsert(&app(json!({})));
        assert_eq!(
            ix.target(&ObjectKey::new("shop", "checkout")).unwrap().paths,
            vec!["apps/checkout".to_string()]
        );
        let r = ix
            .rollout(
                &Deployer::ArgoApplication(ObjectKey::new("argocd", "checkout")),
                "https://github.com/acme/manifests",
            )
            .unwrap();
        assert!(!r.synced && !r.healthy);
        assert_eq!(r.said, "sync unknown, operation none, health unknown");
    }

    #[test]
    fn multi_source_apps_take_the_git_path_and_the_values_files() {
        let mut ix = ClusterIndex::default();
        ix.upsert(&json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "payments", "namespace": "argocd"},
            "spec": {"sources": [
                {"repoURL": "https://charts.acme.dev", "chart": "payments", "targetRevision": "2.1.0",
                 "helm": {"valueFiles": ["$values/envs/prod/payments.yaml"]}},
                {"repoURL": "https://github.com/acme/manifests.git", "targetRevision": "main", "ref": "values"},
                {"repoURL": "https://github.com/acme/manifests.git", "targetRevision": "main", "path": "apps/payments"}]},
            "status": {"resources": [{"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "payments"}],
                       "sync": {"status": "Synced", "revisions": ["2.1.0", SHA, SHA]}}}));
        let t = ix.target(&ObjectKey::new("shop", "payments")).unwrap();
        assert_eq!(t.branch.as_deref(), Some("main"));
        assert_eq!(t.paths, vec!["apps/payments".to_string(), "envs/prod/payments.yaml".to_string()]);
        assert_eq!(ix.rollout(&t.deployer, &t.repo_url).unwrap().revision.as_deref(), Some(SHA));
    }

    fn flux(ix: &mut ClusterIndex, applied: &str, ready: &str) {
        ix.upsert(&json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "manifests", "namespace": "flux-system"},
            "spec": {"url": "ssh://git@github.com/acme/manifests", "ref": {"branch": "prod"}}}));
        ix.upsert(&json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"path": "./clusters/prod/apps", "sourceRef": {"kind": "GitRepository", "name": "manifests"}},
            "status": {"lastAppliedRevision": applied,
                       "conditions": [{"type": "Ready", "status": ready}],
                       "inventory": {"entries": [{"id": "shop_payments_apps_Deployment", "v": "v1"}]}}}));
    }

    #[test]
    fn a_flux_kustomization_with_its_git_repository() {
        let mut ix = ClusterIndex::default();
        flux(&mut ix, &format!("prod@sha1:{SHA}"), "True");
        let t = ix.target(&ObjectKey::new("shop", "payments")).unwrap();
        assert_eq!(t.repo_url, "ssh://git@github.com/acme/manifests");
        assert_eq!(
            (t.branch.as_deref(), t.paths.clone()),
            (Some("prod"), vec!["clusters/prod/apps".to_string()])
        );
        let r = ix.rollout(&t.deployer, &t.repo_url).unwrap();
        assert_eq!(r.revision.as_deref(), Some(SHA));
        assert!(r.synced);
        flux(&mut ix, &format!("prod/{SHA}"), "False");
        let r = ix.rollout(&t.deployer, &t.repo_url).unwrap();
        assert_eq!(r.revision.as_deref(), Some(SHA));
        assert!(!r.synced);
    }

    #[test]
    fn a_helm_release_follows_its_parent_kustomization() {
        let mut ix = ClusterIndex::default();
        flux(&mut ix, &format!("sha1:{SHA}"), "True");
        ix.upsert(&json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "ledger", "namespace": "shop",
                         "labels": {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
            "spec": {"chart": {"spec": {"chart": "./charts/ledger", "sourceRef": {"kind": "GitRepository", "name": "manifests", "namespace": "flux-system"}}}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "history": [{"chartVersion": "0.4.1", "status": "deployed"}]}}));
        ix.upsert(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ledger", "namespace": "shop",
                         "labels": {"helm.toolkit.fluxcd.io/name": "ledger", "helm.toolkit.fluxcd.io/namespace": "shop"}}}));
        let t = ix.target(&ObjectKey::new("shop", "ledger")).unwrap();
        assert_eq!(t.deployer, Deployer::FluxHelmRelease(ObjectKey::new("shop", "ledger")));
        assert_eq!(t.paths, vec!["charts/ledger".to_string(), "clusters/prod/apps".to_string()]);
        let r = ix.rollout(&t.deployer, &t.repo_url).unwrap();
        assert_eq!(r.revision.as_deref(), Some(SHA));
        assert!(r.synced && r.healthy, "{}", r.said);
    }

    #[test]
    fn revisions_and_urls_in_their_many_spellings() {
        assert_eq!(flux_sha(&format!("main@sha1:{SHA}")), Some(SHA));
        assert_eq!(flux_sha(&format!("main/{SHA}")), Some(SHA));
        assert_eq!(flux_sha(&format!("sha1:{SHA}")), Some(SHA));
        assert_eq!(flux_sha(SHA), Some(SHA));
        assert_eq!(flux_sha("v1.2.0"), None);
        assert!(same_repo("https://github.com/Acme/manifests.git", "git@github.com:acme/manifests"));
        assert!(same_repo("ssh://git@github.com/acme/manifests/", "https://github.com/acme/manifests"));
        assert!(!same_repo("https://github.com/acme/manifests", "https://github.com/acme/other"));
    }
}
