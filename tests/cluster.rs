//! The cluster side against the Kubernetes API stand-in (tests/support/kube), with `metricops
//! serve` as a child process given `KUBECONFIG`: a workload with no `workloads:` entry resolved
//! through its Argo CD Application, the deploy record's time in the decision, the refresh asked
//! for, the rollback followed to confirmed; two replicas on one Lease, the holder killed
//! mid-confirmation and the other finishing it; and `serve` with no cluster at all.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::{Manifests, TOKEN, git};
use crate::support::http::{free_port, get, request, wait_until};
use crate::support::kube::{KubeApi, load_fixture};

const APPS: &str = "argoproj.io/v1alpha1";

struct Replica {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(config: &Path, kube: &KubeApi, name: &str, dir: &Path) -> Replica {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_metricops"))
            .args(["serve", "--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kube.kubeconfig_in_namespace("metricops"))
            .env("POD_NAME", name)
            .env("METRICOPS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("metricops serve starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = Replica { child, addr, log };
        wait_until(&format!("{name} to be ready"), Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).is_ok() && get(addr, "/readyz").0 == 200
        });
        r
    }

    fn readyz(&self) -> String {
        get(self.addr, "/readyz").1
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        get(self.addr, "/metrics").1
    }

    fn alert(&self, status: &str) -> (u16, String) {
        let now = chrono::Utc::now().to_rfc3339();
        let body = format!(
            r#"{{"version":"4","status":"{status}","receiver":"metricops","groupKey":"g","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am","alerts":[{{"status":"{status}","labels":{{"alertname":"CheckoutErrors","namespace":"shop","deployment":"checkout","severity":"critical"}},"annotations":{{}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom","fingerprint":"c0ffee00c0ffee00"}}]}}"#
        );
        let auth = format!("Bearer {TOKEN}");
        request(
            self.addr,
            "POST",
            "/webhooks/alertmanager",
            &[("Content-Type", "application/json"), ("Authorization", &auth)],
            &body,
        )
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifests repo with checkout at 1.4.2, then 1.5.0 (the culprit); the stand-in with the
/// Argo CD Application deploying it (synced at the culprit) and the live Deployment with the deploy
/// record the admission webhook wrote five minutes ago; and a config with no `workloads:` entry.
fn setup(m: &Manifests, kube: &KubeApi) -> (String, std::path::PathBuf) {
    let bad = m.deploy("1.5.0");
    let url = m.bare.display().to_string();
    let mut app = load_fixture("fixtures/kube/argocd/application.single-source.yaml");
    app["spec"]["source"] = json!({"repoURL": url, "path": "apps/checkout", "targetRevision": "main"});
    app["status"]["sync"] = json!({"status": "Synced", "revision": bad});
    app["status"]["resources"] = json!([{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "shop", "name": "checkout", "status": "Synced", "health": {"status": "Healthy"}}]);
    kube.put(app);
    let mut d = load_fixture("fixtures/kube/workloads/deployment.checkout.yaml");
    let deployed = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    d["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "checkout", "image": "ghcr.io/shop/checkout:1.5.0"}]);
    let a = d["metadata"]["annotations"].as_object_mut().unwrap();
    a.insert("metricops.dev/deployed-at".into(), json!(deployed));
    a.insert("metricops.dev/images".into(), json!(r#"{"checkout":"ghcr.io/shop/checkout:1.5.0"}"#));
    kube.put(d);
    kube.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "metricops"}}));
    std::fs::write(m.dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(
        &config,
        format!(
            "repos:\n- name: shop\n  url: {url}\nworkloads: []\npolicy:\n  action: merge\n  max_culprit_age: 24h\nserver:\n  webhook_auth:\n    bearer_token_file: {token}\ncluster:\n  lease_duration: 3s\n  confirm_timeout: 10m\nstate_dir: {state}\n",
            token = m.dir.path().join("token").display(),
            state = m.dir.path().join("state").display(),
        ),
    )
    .unwrap();
    (bad, config)
}

fn application(kube: &KubeApi) -> Value {
    kube.get(APPS, "Application", "argocd", "checkout").expect("the Application")
}

fn kept(kube: &KubeApi) -> Option<Value> {
    let a = application(kube);
    a["metadata"]["annotations"]["metricops.dev/confirm"].as_str().map(|t| serde_json::from_str(t).unwrap())
}

/// Argo CD syncs `rev`, reports `health`.
fn argo_syncs(kube: &KubeApi, rev: &str, health: &str) {
    kube.edit(APPS, "Application", "argocd", "checkout", |a| {
        a["status"]["sync"] = json!({"status": "Synced", "revision": rev});
        a["status"]["operationState"]["phase"] = json!("Succeeded");
        a["status"]["health"] = json!({"status": health});
    });
}

#[test]
fn a_workload_found_through_argo_cd_is_reverted_and_the_rollback_confirmed() {
    let m = Manifests::new(None);
    let kube = KubeApi::start();
    let (bad, config) = setup(&m, &kube);
    let one = Replica::start(&config, &kube, "metricops-0", m.dir.path());
    wait_until("the replica to lead", Duration::from_secs(30), || one.readyz().contains("(this replica"));
    wait_until("the Applications to be watched", Duration::from_secs(30), || {
        one.readyz().contains("watch applications.argoproj.io: watching (1 listed)")
    });
    assert!(
        one.readyz().contains("watch kustomizations.kustomize.toolkit.fluxcd.io: watching (0 listed)"),
        "{}",
        one.readyz()
    );

    // No workloads: entry: the Application names the repository and path.
    let (code, text) = one.alert("firing");
    assert_eq!(code, 200, "{text}");
    wait_until("the revert to land on main", Duration::from_secs(60), || m.main() != bad);
    let revert = m.main();
    let msg = git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(msg.contains(&format!("Metricops-Culprit: {bad}")), "{msg}");
    assert!(one.log().contains("the deploy record names the version live"), "{}", one.log());

    // The refresh asked for, and the rollback kept on the Application.
    wait_until("the rollback to be kept on the Application", Duration::from_secs(30), || {
        kept(&kube).is_some()
    });
    let k = kept(&kube).unwrap();
    assert_eq!(k["revert"], revert.as_str());
    assert_eq!(k["workload"], "shop/checkout");
    let refreshed = || {
        kube.requests().iter().any(|r| {
            r.method == "PATCH"
                && r.path == "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/checkout"
                && r.body.pointer("/metadata/annotations/argocd.argoproj.io~1refresh")
                    == Some(&json!("normal"))
        })
    };
    wait_until("the refresh patch on the Application", Duration::from_secs(30), refreshed);

    // Argo CD applies the revert, healthy; the alert resolves.
    argo_syncs(&kube, &revert, "Progressing");
    wait_until("the synced step", Duration::from_secs(30), || {
        kept(&kube).is_some_and(|k| k["passed"].as_array().is_some_and(|p| p.len() == 1))
    });
    argo_syncs(&kube, &revert, "Healthy");
    assert_eq!(one.alert("resolved").0, 200);
    wait_until("the rollback to be confirmed", Duration::from_secs(30), || {
        one.log().contains("rollback: merged → synced in") && one.log().contains("✅")
    });
    wait_until("the kept rollback to be dropped", Duration::from_secs(30), || kept(&kube).is_none());
    let metrics = one.metrics();
    if std::env::var("SHOW_LOG").is_ok() {
        eprintln!("{}", one.log());
    }
    assert!(metrics.contains(r#"metricops_rollbacks_total{outcome="confirmed"} 1"#), "{metrics}");
    for step in ["synced", "healthy", "resolved"] {
        assert!(
            metrics.contains(&format!(r#"metricops_rollback_step_seconds_count{{step="{step}"}} 1"#)),
            "{step}: {metrics}"
        );
    }
}

#[test]
fn the_leader_killed_mid_confirmation_the_other_replica_finishes_it() {
    let m = Manifests::new(None);
    let kube = KubeApi::start();
    let (bad, config) = setup(&m, &kube);
    let a = Replica::start(&config, &kube, "metricops-a", m.dir.path());
    wait_until("a to lead", Duration::from_secs(30), || a.readyz().contains("(this replica"));
    let b = Replica::start(&config, &kube, "metricops-b", m.dir.path());
    wait_until("b to see a leading", Duration::from_secs(30), || {
        b.readyz().contains("leader: metricops-a (not this replica, metricops-b")
    });
    let lease = kube.get("coordination.k8s.io/v1", "Lease", "metricops", "metricops").expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "metricops-a");

    // The alert reaches the follower: any replica acts on webhooks.
    assert_eq!(b.alert("firing").0, 200);
    wait_until("the revert to land on main", Duration::from_secs(60), || m.main() != bad);
    let revert = m.main();
    wait_until("the rollback to be kept", Duration::from_secs(30), || kept(&kube).is_some());
    argo_syncs(&kube, &revert, "Progressing");
    wait_until("the leader to see it synced", Duration::from_secs(30), || {
        kept(&kube).is_some_and(|k| k["passed"].as_array().is_some_and(|p| p.len() == 1))
    });
    assert!(a.log().contains("rollback: merged → synced in"), "{}", a.log());
    a.kill();

    // b takes the Lease once a's lapses, and finishes the rollback a began.
    wait_until("b to lead", Duration::from_secs(60), || {
        b.readyz().contains("leader: metricops-b (this replica")
    });
    argo_syncs(&kube, &revert, "Healthy");
    assert_eq!(b.alert("resolved").0, 200);
    wait_until("b to confirm the rollback", Duration::from_secs(30), || kept(&kube).is_none());
    let log = b.log();
    assert!(log.contains("this replica leads now"), "{log}");
    assert!(log.contains("✅"), "{log}");
    assert!(b.metrics().contains(r#"metricops_rollbacks_total{outcome="confirmed"} 1"#));
    // One revert, whoever acted.
    let reverts = git(&m.bare, &["log", "--format=%s", "main"]);
    assert_eq!(reverts.lines().filter(|l| l.starts_with("Revert")).count(), 1, "{reverts}");
}

#[test]
fn serve_without_a_cluster_says_so_and_still_answers_admission_reviews() {
    let m = Manifests::new(None);
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(&config, m.config_text("")).unwrap();
    let port = free_port();
    let log = m.dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricops"))
        .args(["serve", "--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", m.dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", m.dir.path())
        .env("METRICOPS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("serve to be ready", Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/readyz").0 == 200
    });
    let ready = get(addr, "/readyz").1;
    assert!(ready.contains("cluster: off (no Kubernetes client"), "{ready}");
    assert!(ready.contains("(no cluster, no Lease: alone)"), "{ready}");
    let review = std::fs::read_to_string(format!(
        "{}/fixtures/kube/admission/deployment.create.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let (code, body) =
        request(addr, "POST", "/webhooks/admission", &[("Content-Type", "application/json")], &review);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""allowed":true"#), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cluster side off"), "{text}");
}

/// An argocd-image-updater ImageUpdater of checkout in the manifests repo, and another one only in
/// the cluster: the bad tag is excluded in the revert commit in the first, through the API (a
/// JSON patch) in the second, and the live copy of the first is left to Argo CD.
#[test]
fn the_bad_tag_is_excluded_from_argocd_image_updater_in_git_or_through_the_api() {
    const IU: &str = "argocd-image-updater.argoproj.io/v1alpha1";
    let m = Manifests::new(None);
    let in_git = "apiVersion: argocd-image-updater.argoproj.io/v1alpha1\nkind: ImageUpdater\nmetadata:\n  name: shop-git\n  namespace: argocd\nspec:\n  applicationRefs:\n    - namePattern: checkout\n      images:\n        - alias: checkout\n          imageName: ghcr.io/shop/checkout\n          commonUpdateSettings:\n            updateStrategy: semver # pinned by platform\n";
    m.write("argocd/image-updaters.yaml", in_git, "argocd-image-updater for checkout");
    let kube = KubeApi::start();
    let (bad, config) = setup(&m, &kube);
    kube.put(load_fixture("fixtures/kube/argocd-image-updater/imageupdater.shop.yaml"));
    let mut live_copy: Value =
        serde_json::to_value(serde_saphyr::from_str::<Value>(in_git).unwrap()).unwrap();
    live_copy["metadata"]["annotations"] = json!({"argocd.argoproj.io/tracking-id": "platform:argocd-image-updater.argoproj.io/ImageUpdater:argocd/shop-git"});
    kube.put(live_copy);

    let one = Replica::start(&config, &kube, "metricops-0", m.dir.path());
    wait_until("the ImageUpdaters to be watched", Duration::from_secs(30), || {
        one.readyz().contains("watch imageupdaters.argocd-image-updater.argoproj.io: watching (2 listed)")
    });
    assert_eq!(one.alert("firing").0, 200);
    wait_until("the revert to land on main", Duration::from_secs(60), || m.main() != bad);

    // In Git: the revert commit itself adds the tag, every other byte kept.
    let file = git(&m.bare, &["show", "main:argocd/image-updaters.yaml"]);
    assert_eq!(
        format!("{file}\n"),
        in_git.replace(
            "          commonUpdateSettings:\n",
            "          commonUpdateSettings:\n            ignoreTags:\n              - \"1.5.0\"\n"
        )
    );
    let msg = git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(msg.contains("Metricops-Excluded: 1.5.0 ImageUpdater argocd/shop-git"), "{msg}");
    let kustomization = git(&m.bare, &["show", "main:apps/checkout/overlays/prod/kustomization.yaml"]);
    assert!(kustomization.contains("newTag: \"1.4.2\""), "the revert itself: {kustomization}");

    // Not in Git: patched through the API, with a test of what was read.
    wait_until("the ImageUpdater not in Git to be patched", Duration::from_secs(30), || {
        kube.get(IU, "ImageUpdater", "argocd", "shop").unwrap()["spec"]["applicationRefs"][0]["images"][0]["commonUpdateSettings"]
            ["ignoreTags"]
            == json!(["latest", "1.5.0"])
    });
    let patches: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/imageupdaters/"))
        .collect();
    assert_eq!(patches.len(), 1, "one patch, on the ImageUpdater not in Git: {patches:?}");
    assert!(patches[0].path.ends_with("/namespaces/argocd/imageupdaters/shop"), "{patches:?}");
    assert_eq!(patches[0].body[0]["op"], "test", "{:?}", patches[0].body);
    let live_git = kube.get(IU, "ImageUpdater", "argocd", "shop-git").unwrap();
    assert!(
        live_git["spec"]["applicationRefs"][0]["images"][0]["commonUpdateSettings"]
            .get("ignoreTags")
            .is_none()
    );
    let log = one.log();
    assert!(log.contains("in this commit (argocd/image-updaters.yaml)"), "{log}");
    assert!(
        log.contains(
            "ImageUpdater argocd/shop — through the Kubernetes API (the object is not in this repository)"
        ),
        "{log}"
    );
}
