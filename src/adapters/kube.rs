//! The Kubernetes cluster (kube 5, rustls with ring): the client from the standard places
//! (in-cluster service account, else `KUBECONFIG` / `~/.kube/config`); watchers (list then watch,
//! no polling; a 410 Gone relists) of Argo CD `Application`s, Flux `Kustomization`s,
//! `HelmRelease`s and `GitRepository`s and of the workloads, feeding the pure `ClusterIndex`; the
//! Lease that says which replica leads; and the few writes the bot makes: the refresh annotations
//! (Argo CD `argocd.argoproj.io/refresh`, Flux `reconcile.fluxcd.io/requestedAt`) and the
//! `metricops.dev/confirm` annotation that keeps a rollback being followed.
//!
//! A kind the cluster does not serve (no Flux installed, say) is retried with backoff and said
//! once in the log and in `/readyz`; nothing else waits for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::domain::cluster::{CONFIRM, ClusterIndex, Deployer, Kind, ObjectKey};
use crate::domain::image_updater::{ApiExclusion, UpdaterKind};

/// What is watched: group, version, kind, plural.
const WATCHED: [(&str, &str, &str, &str); 9] = [
    ("argoproj.io", "v1alpha1", "Application", "applications"),
    ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations"),
    ("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases"),
    ("source.toolkit.fluxcd.io", "v1", "GitRepository", "gitrepositories"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("argocd-image-updater.argoproj.io", "v1alpha1", "ImageUpdater", "imageupdaters"),
];

fn resource(kind: &str) -> ApiResource {
    let (g, v, k, plural) = WATCHED.iter().find(|w| w.2 == kind).expect("a watched kind");
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
}

/// The field manager the bot's writes go under.
const MANAGER: &str = "metricops";

/// The connected cluster.
pub struct Cluster {
    client: kube::Client,
    pub index: Arc<RwLock<ClusterIndex>>,
    /// Per watched kind (`applications.argoproj.io`): how its watch stands.
    watches: Arc<Mutex<BTreeMap<String, String>>>,
    pub leadership: Arc<Leadership>,
    /// Fired when the index changes (the rollback followers look again).
    pub changed: Arc<tokio::sync::Notify>,
}

/// Who leads: this replica's identity, whether it holds the Lease, and who does.
pub struct Leadership {
    pub identity: String,
    /// Whether this replica leads, as a watch channel (subscribe to wait for a turn).
    leader: tokio::sync::watch::Sender<bool>,
    holder: Mutex<Option<String>>,
    lease: String,
    namespace: String,
}

impl Leadership {
    /// One replica without a cluster leads alone.
    pub fn alone() -> Arc<Leadership> {
        Arc::new(Leadership {
            identity: identity(),
            leader: tokio::sync::watch::channel(true).0,
            holder: Mutex::new(None),
            lease: String::new(),
            namespace: String::new(),
        })
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Follows this replica's turns: `true` while it leads.
    pub fn turns(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leader.subscribe()
    }

    fn set(&self, leading: bool) {
        if self.leader.send_if_modified(|l| std::mem::replace(l, leading) != leading) {
            if leading {
                tracing::info!(identity = %self.identity, lease = %format!("{}/{}", self.namespace, self.lease), "this replica leads now: the evaluator and the rollback followers run here");
            } else {
                tracing::info!(identity = %self.identity, "this replica no longer leads: its leader work stops");
            }
        }
    }

    /// For `/readyz`.
    pub fn said(&self) -> String {
        if self.lease.is_empty() {
            return format!("leader: {} (no cluster, no Lease: alone)", self.identity);
        }
        let holder = self.holder.lock().expect("holder lock").clone();
        match (self.is_leader(), holder) {
            (true, _) => {
                format!("leader: {} (this replica; Lease {}/{})", self.identity, self.namespace, self.lease)
            }
            (false, Some(h)) if !h.is_empty() => {
                format!(
                    "leader: {h} (not this replica, {}; Lease {}/{})",
                    self.identity, self.namespace, self.lease
                )
            }
            (false, _) => format!(
                "leader: none yet ({} is waiting for Lease {}/{})",
                self.identity, self.namespace, self.lease
            ),
        }
    }
}

/// This replica's name: `POD_NAME` (the Downward API), else the host name and the process id.
fn identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

impl Cluster {
    /// The client from the standard places, or why there is none (then the cluster side is off).
    pub async fn connect(config: &crate::config::ClusterConfig) -> Result<Cluster, String> {
        if !config.enabled() {
            return Err("cluster.enabled is false".into());
        }
        crate::adapters::install_crypto_provider();
        let client = kube::Client::try_default().await.map_err(|e| {
            format!(
                "no Kubernetes client: not in a cluster, and no usable KUBECONFIG or ~/.kube/config ({e})"
            )
        })?;
        let namespace = config
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| client.default_namespace().to_string());
        let leadership = Arc::new(Leadership {
            identity: identity(),
            leader: tokio::sync::watch::channel(false).0,
            holder: Mutex::new(None),
            lease: config.lease().to_string(),
            namespace,
        });
        Ok(Cluster {
            client,
            index: Default::default(),
            watches: Default::default(),
            leadership,
            changed: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Starts a watcher per kind, feeding the index; they run until the process ends.
    pub fn watch(&self) {
        for (group, _, kind, plural) in WATCHED {
            let ar = resource(kind);
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            let (index, watches, changed) = (self.index.clone(), self.watches.clone(), self.changed.clone());
            let name = format!("{plural}.{}", if group.is_empty() { "core" } else { group });
            watches.lock().expect("watches lock").insert(name.clone(), "starting".into());
            tokio::spawn(async move {
                let mut listed: Option<BTreeSet<ObjectKey>> = None;
                let mut failing: Option<String> = None;
                let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
                while let Some(event) = stream.next().await {
                    let event = match event {
                        Ok(e) => e,
                        Err(e) => {
                            let why = watch_error(&e);
                            if failing.as_deref() != Some(&why) {
                                tracing::warn!(kind = %name, error = %why, "cannot watch; retrying with backoff");
                                watches.lock().expect("watches lock").insert(name.clone(), why.clone());
                                failing = Some(why);
                            }
                            continue;
                        }
                    };
                    if failing.take().is_some() {
                        tracing::info!(kind = %name, "watching again");
                    }
                    let mut ix = index.write().expect("cluster index lock");
                    match event {
                        watcher::Event::Init => listed = Some(BTreeSet::new()),
                        watcher::Event::InitApply(o) => {
                            let v = value(&ar, o);
                            if let (Some(l), Some(k)) = (listed.as_mut(), key_of(&v)) {
                                l.insert(k);
                            }
                            ix.upsert(&v);
                        }
                        watcher::Event::InitDone => {
                            let kind_of = Kind::of(&json!({"apiVersion": ar.api_version, "kind": ar.kind}));
                            if let (Some(l), Some(k)) = (listed.take(), kind_of) {
                                ix.keep_only(k, &l);
                                watches
                                    .lock()
                                    .expect("watches lock")
                                    .insert(name.clone(), format!("watching ({} listed)", l.len()));
                            }
                        }
                        watcher::Event::Apply(o) => ix.upsert(&value(&ar, o)),
                        watcher::Event::Delete(o) => ix.remove(&value(&ar, o)),
                    }
                    drop(ix);
                    changed.notify_waiters();
                }
            });
        }
    }

    /// Holds or waits for the Lease, until the process ends: a replica that cannot renew (the API
    /// server unreachable, a conflict it lost) stops leading at once, and tries again.
    pub fn lead(&self, duration: Duration) {
        let (client, me) = (self.client.clone(), self.leadership.clone());
        let secs = duration.as_secs().max(2);
        let grace = (secs / 3).max(1);
        tokio::spawn(async move {
            let holder_api: Api<k8s_openapi::api::coordination::v1::Lease> =
                Api::namespaced(client.clone(), &me.namespace);
            loop {
                let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &me.lease)
                    .with_namespace(&me.namespace)
                    .with_identity(&me.identity)
                    .with_duration(secs)
                    .with_grace(grace)
                    // One field manager per replica: the Lease is kept apart by server-side-apply conflicts.
                    .with_field_manager(format!("{MANAGER}-{}", me.identity))
                    .build()
                    .await;
                let manager = match built {
                    Ok(m) => m,
                    Err(e) => {
                        me.set(false);
                        tracing::warn!(error = %e, lease = %me.lease, "cannot use the Lease; retrying");
                        tokio::time::sleep(Duration::from_secs(grace)).await;
                        continue;
                    }
                };
                loop {
                    let step = tokio::time::timeout(Duration::from_secs(grace), manager.changed()).await;
                    match step {
                        Ok(Ok(leading)) => me.set(leading),
                        Ok(Err(e)) => {
                            me.set(false);
                            tracing::warn!(error = %e, "the Lease could not be renewed or read; not leading until it can");
                            tokio::time::sleep(Duration::from_secs(grace)).await;
                            break;
                        }
                        Err(_) => {}
                    }
                    if let Ok(l) = holder_api.get(&me.lease).await {
                        let h = l.spec.and_then(|s| s.holder_identity);
                        *me.holder.lock().expect("holder lock") = h;
                    }
                }
            }
        });
    }

    /// What `/readyz` says about the cluster.
    pub fn said(&self) -> String {
        let watches = self.watches.lock().expect("watches lock");
        let mut out = String::new();
        for (k, v) in watches.iter() {
            out.push_str(&format!("watch {k}: {v}\n"));
        }
        out
    }

    fn api(&self, d: &Deployer) -> Api<DynamicObject> {
        let kind = match d {
            Deployer::ArgoApplication(_) => "Application",
            Deployer::FluxKustomization(_) => "Kustomization",
            Deployer::FluxHelmRelease(_) => "HelmRelease",
        };
        Api::namespaced_with(self.client.clone(), &d.key().namespace, &resource(kind))
    }

    /// Asks the deployer to look at Git now rather than at its next poll: Argo CD's refresh
    /// annotation; Flux's `reconcile.fluxcd.io/requestedAt` on the GitRepository and then on the
    /// Kustomization or HelmRelease. Says what it asked.
    pub async fn refresh(&self, d: &Deployer, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
        let params = PatchParams::default();
        match d {
            Deployer::ArgoApplication(k) => {
                let patch = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}});
                self.api(d).patch(&k.name, &params, &Patch::Merge(&patch)).await?;
                Ok(format!("argocd.argoproj.io/refresh: normal on Application {k}"))
            }
            Deployer::FluxKustomization(k) | Deployer::FluxHelmRelease(k) => {
                let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}});
                let source = d.flux_source(&self.index.read().expect("cluster index lock")).cloned();
                let mut said = Vec::new();
                if let Some(src) = source {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(self.client.clone(), &src.namespace, &resource("GitRepository"));
                    api.patch(&src.name, &params, &Patch::Merge(&patch)).await?;
                    said.push(format!("GitRepository {src}"));
                }
                self.api(d).patch(&k.name, &params, &Patch::Merge(&patch)).await?;
                said.push(d.to_string());
                Ok(format!("reconcile.fluxcd.io/requestedAt: {at} on {}", said.join(" and ")))
            }
        }
    }

    /// Keeps (or, with `None`, removes) the rollback being followed on the deployer's object.
    pub async fn keep(&self, d: &Deployer, rollback: Option<&str>) -> anyhow::Result<()> {
        let patch = json!({"metadata": {"annotations": {CONFIRM: rollback}}});
        self.api(d).patch(&d.key().name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }
}

impl Cluster {
    /// Excludes a tag from argocd-image-updater by a JSON patch whose tests fail if the object
    /// changed since it was read (then nothing is written, and the error says so).
    pub async fn exclude(&self, x: &ApiExclusion) -> anyhow::Result<()> {
        let kind = match x.kind {
            UpdaterKind::ImageUpdater => "ImageUpdater",
            UpdaterKind::Application => "Application",
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &x.key.namespace, &resource(kind));
        let patch: json_patch::Patch = serde_json::from_value(x.patch.clone())?;
        api.patch(&x.key.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await?;
        Ok(())
    }
}

/// The object as a JSON value, with its `apiVersion` and `kind` (list items may come without).
fn value(ar: &ApiResource, o: DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(ar.api_version));
        m.insert("kind".into(), json!(ar.kind));
    }
    v
}

fn key_of(v: &Value) -> Option<ObjectKey> {
    let name = v.pointer("/metadata/name")?.as_str()?;
    let ns = v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    Some(ObjectKey::new(ns, name))
}

/// A watch failure, for a person: a kind not served is said so.
fn watch_error(e: &watcher::Error) -> String {
    let text = e.to_string();
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match api {
        Some(404) => "not served by this cluster (the CRD is not installed?)".into(),
        Some(401) | Some(403) => {
            format!("not allowed: give the service account list and watch on it ({text})")
        }
        _ => text,
    }
}
