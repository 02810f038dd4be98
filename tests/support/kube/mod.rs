//! A stateful stand-in for the Kubernetes API server, modelled on the real apiserver (and on the
//! requests kube-rs, kube-runtime's watcher and kube-lease-manager make): the resources metricops
//! reads and writes (apps/v1 Deployments, StatefulSets, DaemonSets; batch/v1 CronJobs; Argo CD
//! Applications; Flux Kustomizations, HelmReleases, GitRepositories; coordination.k8s.io/v1 Leases;
//! v1 Namespaces and ConfigMaps), with a global resourceVersion counter and a kept history as etcd's,
//! list paging (`limit`/`continue`, consistent pages), label and field selectors, metadata-only
//! answers (`PartialObjectMetadata[List]`), watches (from a resourceVersion, BOOKMARKs, the 410
//! `Expired` ERROR event after [`KubeApi::compact`], `sendInitialEvents`), create/replace/delete,
//! merge, JSON and strategic merge patches, server-side apply with field ownership and conflicts,
//! optimistic concurrency (409 on a stale resourceVersion), the `/status` subresource, finalizers,
//! and `Status` bodies worded as the apiserver's. What it simplifies is said where it does it
//! (`fields.rs` for apply, `patch.rs` for strategic merge, `store.rs` for the registry rules).
//!
//! It runs on its own thread and tokio runtime (as the GitHub stand-in does), so it serves
//! `#[tokio::test]`s, plain tests, and the metricops binary run as a child process with
//! `KUBECONFIG` = [`KubeApi::kubeconfig`]. Every request needs `Authorization: Bearer <token>`
//! (the kubeconfig's); anything else gets 401 with the apiserver's `Status`.

#![allow(dead_code)]

mod fields;
mod http;
mod patch;
mod resources;
mod selector;
mod status;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

pub use store::Recorded;

use fields::{Manager, Owners, Scope};
use http::{Shared, lock};
use resources::RESOURCES;
use store::State;

pub struct KubeApi {
    url: String,
    token: String,
    ca_pem: Option<String>,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

/// A Kubernetes object from a YAML (or JSON) file, the path relative to the crate root
/// (`fixtures/kube/argocd/application.single-source.yaml`).
pub fn load_fixture(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    http::parse_body(text.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn key_of(api_version: &str, kind: &str, ns: &str, name: &str) -> store::Key {
    let res = resources::by_kind(api_version, kind)
        .unwrap_or_else(|| panic!("the stand-in does not serve {api_version} {kind}"));
    let ns = if RESOURCES[res].namespaced { ns.to_string() } else { String::new() };
    (res, ns, name.to_string())
}

impl KubeApi {
    /// Plain HTTP on 127.0.0.1 (kube accepts `http://` with a bearer token).
    pub fn start() -> KubeApi {
        KubeApi::serve(false)
    }

    /// HTTPS at `https://localhost:PORT` with a throwaway self-signed certificate (openssl CLI),
    /// given to clients as the kubeconfig's `certificate-authority-data`, as a real cluster is.
    pub fn start_tls() -> KubeApi {
        KubeApi::serve(true)
    }

    fn serve(with_tls: bool) -> KubeApi {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = with_tls.then(|| super::throwaway_cert(dir.path()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (url, ca_pem) = match &tls {
            Some((cert, _)) => {
                (format!("https://localhost:{port}"), Some(std::fs::read_to_string(cert).unwrap()))
            }
            None => (format!("http://127.0.0.1:{port}"), None),
        };
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        let mut st = State {
            token: String::new(),
            server_url: url.clone(),
            rv: 0,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watchers: Vec::new(),
            next_watcher: 0,
            bookmark_every: Duration::from_secs(60),
            requests: Vec::new(),
            faults: Vec::new(),
            forbidden: Vec::new(),
            uninstalled: Vec::new(),
            rng: seed ^ u64::from(port).rotate_left(40),
        };
        st.token = format!("standin-{}", st.random_hex(24));
        // What a new cluster has.
        st.rv = 100;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ctx = store::WriteCtx { manager: "kube-apiserver".into(), subresource: "", dry_run: false };
            st.create(
                0,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &ctx,
            )
            .expect("namespace");
        }
        let token = st.token.clone();
        let state: Shared = Arc::new(Mutex::new(st));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("kube-standin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let app = axum::Router::new().fallback(http::entry).with_state(st);
                    match tls {
                        None => {
                            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                            tokio::select! {
                                r = axum::serve(l, app) => r.expect("serve"),
                                _ = rx => {}
                            }
                        }
                        Some((cert, key)) => {
                            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                                .await
                                .expect("TLS certificate and key");
                            let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)
                                .expect("TLS listener")
                                .serve(app.into_make_service());
                            tokio::select! {
                                r = server => r.expect("serve"),
                                _ = rx => {}
                            }
                        }
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        KubeApi { url, token, ca_pem, state, shutdown: Some(tx), thread: Some(thread), dir }
    }

    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Writes (again) and returns `kubeconfig` in the stand-in's temp dir: one cluster (the
    /// server URL, and the CA when TLS), one user with the bearer token, one context (namespace
    /// `default`), current-context set. For a child process: `KUBECONFIG=<this path>`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_in_namespace("default")
    }

    /// The same with the context's namespace set (what `Client::default_namespace` gives).
    pub fn kubeconfig_in_namespace(&self, namespace: &str) -> PathBuf {
        let ca = match &self.ca_pem {
            Some(pem) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
            ),
            None => String::new(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\n{ca}users:\n- name: standin\n  user:\n    token: {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n    namespace: {namespace}\ncurrent-context: standin\npreferences: {{}}\n",
            url = self.url,
            token = self.token,
        );
        let path = self.dir.path().join(format!("kubeconfig-{namespace}"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A `kube::Config` from [`KubeApi::kubeconfig`] (read as the product reads it).
    pub async fn client_config(&self) -> kube::Config {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig parses");
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube::Config from the kubeconfig")
    }

    /// A `kube::Client` for the stand-in (call inside a tokio runtime).
    pub async fn client(&self) -> kube::Client {
        if self.ca_pem.is_some() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        kube::Client::try_from(self.client_config().await).expect("kube::Client")
    }

    // ---- the test's side: no HTTP, no auth, no request log ----

    fn write_as(&self, manager: &str, obj: Value) -> Value {
        let api_version = obj["apiVersion"].as_str().expect("object has apiVersion").to_string();
        let kind = obj["kind"].as_str().expect("object has kind").to_string();
        let name = obj["metadata"]["name"].as_str().expect("object has metadata.name").to_string();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let key = key_of(&api_version, &kind, &ns, &name);
        let rt = &RESOURCES[key.0];
        let mut s = lock(&self.state);
        if rt.namespaced && !s.namespace_exists(&key.1) {
            let ctx = store::WriteCtx { manager: manager.into(), subresource: "", dry_run: false };
            s.create(
                0,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": key.1}}),
                &ctx,
            )
            .expect("namespace");
        }
        let mut obj = obj;
        let cur = s.objects.get(&key).map(|st| (st.obj.clone(), st.owners.clone()));
        {
            let uid = s.uid();
            let m = obj["metadata"].as_object_mut().expect("metadata is an object");
            m.remove("resourceVersion");
            if rt.namespaced {
                m.insert("namespace".into(), json!(key.1));
            } else {
                m.remove("namespace");
            }
            let keep = |f: &str| cur.as_ref().and_then(|(c, _)| c["metadata"].get(f).cloned());
            if !m.contains_key("uid") {
                m.insert("uid".into(), keep("uid").unwrap_or_else(|| json!(uid)));
            }
            if !m.contains_key("creationTimestamp") {
                m.insert(
                    "creationTimestamp".into(),
                    keep("creationTimestamp").unwrap_or_else(|| json!(store::now())),
                );
            }
            if rt.generation && !m.contains_key("generation") {
                let g = keep("generation").and_then(|g| g.as_i64()).map(|g| g + 1).unwrap_or(1);
                m.insert("generation".into(), json!(g));
            }
        }
        let owners = match obj["metadata"].get("managedFields") {
            Some(mf) => Owners::parse(mf),
            None => {
                let mut o = cur.as_ref().map(|(_, o)| o.clone()).unwrap_or_default();
                let mgr =
                    Manager { name: manager.to_string(), operation: "Update", subresource: String::new() };
                let sc = Scope { subresource: "", has_status: false, crd: rt.crd };
                o.update(cur.as_ref().map(|(c, _)| c), &obj, &mgr, &rt.api_version(), &store::now(), sc);
                o
            }
        };
        s.commit(key, Some((obj, owners)))
    }

    /// Creates or replaces an object as given (a fixture: apiVersion, kind, metadata; status kept,
    /// uid, creationTimestamp and generation kept when given; resourceVersion assigned). Its
    /// namespace is created when missing. Its fields are owned by "kubectl-client-side-apply"
    /// (Update), unless it carries `metadata.managedFields`. Emits ADDED/MODIFIED.
    pub fn put(&self, obj: Value) -> Value {
        self.write_as("kubectl-client-side-apply", obj)
    }

    /// [`KubeApi::put`] with another field manager (e.g. "argocd-controller").
    pub fn put_as(&self, manager: &str, obj: Value) -> Value {
        self.write_as(manager, obj)
    }

    /// The stored object (with resourceVersion, uid, managedFields), or None. `ns` is ignored for
    /// cluster-scoped kinds.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let key = key_of(api_version, kind, ns, name);
        lock(&self.state).objects.get(&key).map(|s| s.obj.clone())
    }

    /// The stored objects of a kind, in `ns` (None: all), in key order.
    pub fn list(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Vec<Value> {
        let res = key_of(api_version, kind, "", "").0;
        lock(&self.state)
            .objects
            .iter()
            .filter(|(k, _)| k.0 == res && ns.is_none_or(|n| n == k.1))
            .map(|(_, s)| s.obj.clone())
            .collect()
    }

    /// Removes an object at once (a controller that finished its finalizers): DELETED is sent.
    /// Returns the last state, or None when there was none.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let key = key_of(api_version, kind, ns, name);
        let mut s = lock(&self.state);
        if !s.objects.contains_key(&key) {
            return None;
        }
        Some(s.commit(key, None))
    }

    /// Changes an object as a controller would (anything, status included), bumping its
    /// resourceVersion (and generation when the spec changed) and emitting MODIFIED; the
    /// fields changed become `manager`'s. Removing the last finalizer of an object being deleted
    /// deletes it. Panics when the object does not exist.
    pub fn edit_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Value {
        let key = key_of(api_version, kind, ns, name);
        let rt = &RESOURCES[key.0];
        let mut s = lock(&self.state);
        let (cur, mut owners) = s
            .objects
            .get(&key)
            .map(|st| (st.obj.clone(), st.owners.clone()))
            .unwrap_or_else(|| panic!("edit: no {kind} {ns}/{name}"));
        let mut new = cur.clone();
        f(&mut new);
        for f in ["uid", "creationTimestamp", "resourceVersion", "name", "namespace"] {
            new["metadata"][f] = cur["metadata"][f].clone();
        }
        if !rt.namespaced
            && let Some(m) = new["metadata"].as_object_mut()
        {
            m.remove("namespace");
        }
        if rt.generation {
            let spec = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    if rt.status {
                        m.remove("status");
                    }
                }
                v
            };
            if spec(&new) != spec(&cur) && new["metadata"]["generation"] == cur["metadata"]["generation"] {
                let g = cur["metadata"]["generation"].as_i64().unwrap_or(0);
                new["metadata"]["generation"] = json!(g + 1);
            }
        }
        let mgr = Manager { name: manager.to_string(), operation: "Update", subresource: String::new() };
        let sc = Scope { subresource: "", has_status: false, crd: rt.crd };
        owners.update(Some(&cur), &new, &mgr, &rt.api_version(), &store::now(), sc);
        let gone = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        let stored = s.commit(key.clone(), Some((new, owners)));
        if gone {
            s.commit(key, None);
        }
        stored
    }

    /// [`KubeApi::edit_as`] by "metricops-test-controller".
    pub fn edit(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Value {
        self.edit_as("metricops-test-controller", api_version, kind, ns, name, f)
    }

    /// Merges `status` (RFC 7386) into the object's status, as its controller would.
    pub fn set_status(&self, api_version: &str, kind: &str, ns: &str, name: &str, status: Value) -> Value {
        self.edit(api_version, kind, ns, name, |o| {
            if !o["status"].is_object() {
                o["status"] = json!({});
            }
            patch::merge(&mut o["status"], &status);
        })
    }

    /// The latest resourceVersion (etcd's revision).
    pub fn resource_version(&self) -> u64 {
        lock(&self.state).rv
    }

    /// etcd compaction after the cluster moved on: a write elsewhere (the kube-controller-manager
    /// Lease in kube-system is renewed, as it is every few seconds in a real cluster), then the
    /// history up to it dropped. A watch or a `continue` token from an older resourceVersion gets
    /// 410 Expired; open watches go on (see [`KubeApi::drop_watches`] to make clients re-watch).
    pub fn compact(&self) {
        let mut s = lock(&self.state);
        let key = (
            resources::by_kind("coordination.k8s.io/v1", "Lease").unwrap(),
            "kube-system".to_string(),
            "kube-controller-manager".to_string(),
        );
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let (obj, owners) = match s.objects.get(&key) {
            Some(st) => {
                let mut o = st.obj.clone();
                o["spec"]["renewTime"] = json!(now);
                (o, st.owners.clone())
            }
            None => {
                let uid = s.uid();
                (
                    json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": "kube-controller-manager", "namespace": "kube-system", "uid": uid, "creationTimestamp": store::now()},
                        "spec": {"holderIdentity": "control-plane_0b5f2c1e", "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
                    }),
                    Owners::default(),
                )
            }
        };
        s.commit(key, Some((obj, owners)));
        s.compact();
    }

    /// Ends every open watch (as an apiserver restart or a load balancer does): clients re-watch
    /// from their last resourceVersion.
    pub fn drop_watches(&self) {
        lock(&self.state).watchers.clear();
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        let mut s = lock(&self.state);
        s.watchers.retain(|w| !w.tx.is_closed());
        s.watchers.len()
    }

    /// Every open watch that allowed bookmarks sends a BOOKMARK at the current resourceVersion now.
    pub fn bookmark_now(&self) {
        for w in &lock(&self.state).watchers {
            w.nudge.notify_one();
        }
    }

    /// How often open watches send BOOKMARKs (default 60 s, about the apiserver's).
    pub fn set_bookmark_interval(&self, every: Duration) {
        lock(&self.state).bookmark_every = every;
    }

    /// Every request so far (authenticated or not), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// The next `n` authenticated requests get `code` (with a Status body) and do nothing.
    /// kube-client retries 429, 503 and 504 by itself (its default policy: up to 15 times, from
    /// 5 ms, honouring Retry-After), so a few of those are invisible to the caller; 500 is not retried.
    pub fn fail_next(&self, n: usize, code: u16) {
        self.fail_matching("", "/", code, n);
    }

    /// The same for requests with this method ("" any) and a path starting with `path_prefix`.
    pub fn fail_matching(&self, method: &str, path_prefix: &str, code: u16, n: usize) {
        lock(&self.state).faults.push(store::Fault {
            method: method.to_string(),
            prefix: path_prefix.to_string(),
            code,
            left: n,
        });
    }

    /// RBAC denies `verb` ("get", "list", "watch", "create", "update", "patch", "delete",
    /// "deletecollection", or "*") on `plural` ("applications", …, or "*"): 403 Forbidden.
    pub fn forbid(&self, verb: &str, plural: &str) {
        lock(&self.state).forbidden.push((verb.to_string(), plural.to_string()));
    }

    /// The CRDs of an API group are not installed ("argoproj.io", say): its paths answer
    /// `404 page not found` (plain text, as the apiserver's mux) and discovery omits it.
    pub fn uninstall(&self, group: &str) {
        lock(&self.state).uninstalled.push(group.to_string());
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        lock(&self.state).watchers.clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
