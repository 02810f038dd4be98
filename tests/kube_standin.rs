//! Self-tests of the Kubernetes API stand-in (tests/support/kube), driven by the real clients:
//! kube's `Api`, kube-runtime's watcher and reflector, kube-lease-manager. Each also checks that the
//! stand-in refuses what the apiserver refuses (a stand-in that accepts anything proves nothing).
//! No timing is asserted: waits poll with a generous deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PartialObjectMeta, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::support::kube::{KubeApi, load_fixture};

const APP: &str = "argoproj.io/v1alpha1";

fn application_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    )
}

fn kustomization_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    )
}

/// Polls `cond` until it holds; panics after `deadline` saying what it waited for.
async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "gave up waiting for {what} after {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error (Status), got {other:?}"),
    }
}

fn shop() -> KubeApi {
    let k = KubeApi::start();
    for f in [
        "fixtures/kube/argocd/application.single-source.yaml",
        "fixtures/kube/argocd/application.multi-source.yaml",
        "fixtures/kube/flux/kustomization.yaml",
        "fixtures/kube/flux/gitrepository.yaml",
        "fixtures/kube/flux/helmrelease.yaml",
        "fixtures/kube/workloads/deployment.checkout.yaml",
        "fixtures/kube/workloads/deployment.payments.yaml",
        "fixtures/kube/workloads/statefulset.yaml",
        "fixtures/kube/workloads/daemonset.yaml",
        "fixtures/kube/workloads/cronjob.yaml",
    ] {
        k.put(load_fixture(f));
    }
    k
}

#[tokio::test]
async fn kube_standin_reflector_follows_edits_deletes_and_relists_after_410() {
    let k = shop();
    let ar = application_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(k.client().await, "argocd", &ar);
    let writer = Writer::new(ar.clone());
    let store = writer.as_reader();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(stream.for_each(move |ev| {
        log.lock().unwrap().push(match ev {
            Ok(watcher::Event::Init) => "init".into(),
            Ok(watcher::Event::InitApply(o)) => format!("init-apply {}", o.metadata.name.unwrap()),
            Ok(watcher::Event::InitDone) => "init-done".into(),
            Ok(watcher::Event::Apply(o)) => format!("apply {}", o.metadata.name.unwrap()),
            Ok(watcher::Event::Delete(o)) => format!("delete {}", o.metadata.name.unwrap()),
            Err(watcher::Error::WatchError(s)) => format!("error {} {}", s.code, s.reason),
            Err(e) => format!("error {e}"),
        });
        async {}
    }));

    eventually("both Applications in the store", Duration::from_secs(20), || store.len() == 2).await;
    let checkout = ObjectRef::new_with("checkout", ar.clone()).within("argocd");
    assert_eq!(store.get(&checkout).unwrap().data["spec"]["source"]["path"], "apps/checkout");

    // Argo CD (played by the test) syncs to a new revision: the store sees it.
    let sha = "8f3876a5d2c4e1f0b9a7c6d5e4f3a2b1c0d9e8f7";
    k.set_status(APP, "Application", "argocd", "checkout", json!({"sync": {"revision": sha}}));
    eventually("the new revision in the store", Duration::from_secs(20), || {
        store.get(&checkout).is_some_and(|a| a.data["status"]["sync"]["revision"] == sha)
    })
    .await;

    k.delete(APP, "Application", "argocd", "checkout-chart");
    let multi_gone = || store.state().iter().all(|a| a.metadata.name.as_deref() != Some("checkout-chart"));
    let names: Vec<String> = store.state().iter().map(|a| a.metadata.name.clone().unwrap()).collect();
    assert!(names.iter().any(|n| n == "checkout-chart") || multi_gone(), "{names:?}");
    eventually("the deleted Application gone from the store", Duration::from_secs(20), || {
        store.len() == 1 && multi_gone()
    })
    .await;
    assert!(seen.lock().unwrap().iter().any(|e| e.starts_with("delete ")), "{:?}", seen.lock().unwrap());

    // etcd compacts past the watcher's resourceVersion and the watch is cut: the re-watch gets
    // 410 Expired, the watcher relists, and the store is still right.
    k.clear_requests();
    k.compact();
    k.drop_watches();
    eventually("the 410 and a relist", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        let e = s.iter().position(|e| e == "error 410 Expired");
        e.is_some_and(|i| s[i..].iter().any(|x| x == "init-done"))
    })
    .await;
    let relists = k
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.is_watch() && r.path.ends_with("/applications"))
        .count();
    assert!(relists >= 1, "no relist after the 410: {:?}", k.requests());
    let live = k.list(APP, "Application", Some("argocd"));
    assert_eq!(store.len(), live.len());
    for o in &live {
        let name = o["metadata"]["name"].as_str().unwrap();
        let cached = store.get(&ObjectRef::new_with(name, ar.clone()).within("argocd")).expect("cached");
        assert_eq!(cached.metadata.resource_version.as_deref(), o["metadata"]["resourceVersion"].as_str());
    }

    // And it keeps following after the relist.
    k.set_status(APP, "Application", "argocd", "checkout", json!({"health": {"status": "Degraded"}}));
    eventually("an edit after the relist", Duration::from_secs(20), || {
        store.get(&checkout).is_some_and(|a| a.data["status"]["health"]["status"] == "Degraded")
    })
    .await;
    task.abort();
}

#[tokio::test]
#[allow(deprecated)]
async fn kube_standin_metadata_watchers_get_partial_object_metadata() {
    let k = shop();
    let client = k.client().await;

    // kube 5's way: Api<PartialObjectMeta<K>>.
    let meta: Api<PartialObjectMeta<Deployment>> = Api::namespaced(client.clone(), "shop");
    let mut events = watcher(meta, watcher::Config::default()).boxed();
    let mut names = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(o) => {
                assert_eq!(o.types.as_ref().unwrap().kind, "PartialObjectMetadata");
                assert_eq!(o.types.as_ref().unwrap().api_version, "meta.k8s.io/v1");
                let ann = o.metadata.annotations.clone().unwrap_or_default();
                assert!(ann.contains_key("metricops.dev/rule"), "{ann:?}");
                names.push(o.metadata.name.unwrap());
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    names.sort();
    assert_eq!(names, ["checkout", "payments"]);
    k.edit("apps/v1", "Deployment", "shop", "checkout", |d| {
        d["metadata"]["annotations"]["metricops.dev/paused"] = json!("true");
    });
    loop {
        if let watcher::Event::Apply(o) = events.try_next().await.unwrap().unwrap() {
            assert_eq!(o.metadata.annotations.unwrap()["metricops.dev/paused"], "true");
            break;
        }
    }
    let reqs = k.requests();
    let list =
        reqs.iter().find(|r| r.path == "/apis/apps/v1/namespaces/shop/deployments" && !r.is_watch()).unwrap();
    assert!(list.accept.as_deref().unwrap().contains("as=PartialObjectMetadataList"), "{list:?}");
    let w = reqs.iter().find(|r| r.is_watch()).unwrap();
    assert!(w.accept.as_deref().unwrap().contains("as=PartialObjectMetadata;"), "{w:?}");
    assert_eq!(w.param("allowWatchBookmarks").as_deref(), Some("true"));

    // The deprecated metadata_watcher sends the same requests.
    let plain: Api<Deployment> = Api::namespaced(client, "shop");
    let mut old = kube::runtime::metadata_watcher(plain, watcher::Config::default()).boxed();
    let mut n = 0;
    loop {
        match old.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(o) => {
                assert!(o.metadata.annotations.unwrap().contains_key("metricops.dev/rule"));
                n += 1;
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(n, 2);
}

#[tokio::test]
async fn kube_standin_streaming_list_watcher_fills_a_store() {
    let k = shop();
    let api: Api<Deployment> = Api::all(k.client().await);
    let mut events = watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut n = 0;
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(_) => n += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(n, 2);
    let w = k.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(w.param("sendInitialEvents").as_deref(), Some("true"));
    assert_eq!(w.param("resourceVersionMatch").as_deref(), Some("NotOlderThan"));
}

/// A JSON patch through kube's client (the kube crate's `Patch::Json` needs a feature metricops
/// does not enable).
async fn json_patch(client: &kube::Client, path: &str, patch: Value) -> Result<Value, kube::Error> {
    let req = http::Request::patch(path)
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&patch).unwrap())
        .unwrap();
    client.request::<Value>(req).await
}

#[tokio::test]
async fn kube_standin_patches_change_objects() {
    let k = shop();
    let client = k.client().await;
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "argocd", &application_resource());
    let before = k.get(APP, "Application", "argocd", "checkout").unwrap();

    // The Argo CD hard-refresh annotation, as a merge patch.
    let pp = PatchParams::default();
    let merged = apps
        .patch(
            "checkout",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.metadata.annotations.as_ref().unwrap()["argocd.argoproj.io/refresh"], "hard");
    assert_eq!(
        merged.metadata.annotations.as_ref().unwrap()["argocd.argoproj.io/manifest-generate-paths"],
        "."
    );
    let rv0: u64 = before["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let rv1: u64 = merged.metadata.resource_version.clone().unwrap().parse().unwrap();
    assert!(rv1 > rv0);
    assert_eq!(
        merged.metadata.generation,
        before["metadata"]["generation"].as_i64(),
        "metadata only: same generation"
    );
    let rec = k.requests().into_iter().rfind(|r| r.method == "PATCH").unwrap();
    assert_eq!(rec.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(rec.body["metadata"]["annotations"]["argocd.argoproj.io/refresh"], "hard");

    // A JSON patch: the image, and an annotation whose key needs `~1`.
    let path = "/apis/apps/v1/namespaces/shop/deployments/checkout";
    let d0 = k.get("apps/v1", "Deployment", "shop", "checkout").unwrap();
    let image = d0["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    let out = json_patch(
        &client,
        path,
        json!([
            {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": image},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "ghcr.io/acme/checkout:9.9.9"},
            {"op": "add", "path": "/metadata/annotations/metricops.dev~1paused", "value": "true"},
        ]),
    )
    .await
    .unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/checkout:9.9.9");
    assert_eq!(out["metadata"]["annotations"]["metricops.dev/paused"], "true");
    assert_eq!(out["metadata"]["generation"].as_i64(), d0["metadata"]["generation"].as_i64().map(|g| g + 1));

    // A strategic merge patch merges containers by name (the second container stays).
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let n_containers = d0["spec"]["template"]["spec"]["containers"].as_array().unwrap().len();
    let first = d0["spec"]["template"]["spec"]["containers"][0]["name"].as_str().unwrap().to_string();
    let d = deps
        .patch(
            "checkout",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": first, "image": "ghcr.io/acme/checkout:1.14.1"}]}}}})),
        )
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), n_containers);
    assert_eq!(containers[0].image.as_deref(), Some("ghcr.io/acme/checkout:1.14.1"));

    // A CRD has no strategic merge patch: 415, as the apiserver.
    let e = api_error(apps.patch("checkout", &pp, &Patch::Strategic(json!({"spec": {}}))).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));

    // Refused JSON patches: a failing test, a path that is not there: 422, nothing written.
    let rv =
        k.get("apps/v1", "Deployment", "shop", "checkout").unwrap()["metadata"]["resourceVersion"].clone();
    let e = api_error(
        json_patch(&client, path, json!([{"op": "test", "path": "/spec/replicas", "value": 99}]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    let e = api_error(
        json_patch(&client, path, json!([{"op": "remove", "path": "/spec/nosuchfield"}])).await.unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    let e = api_error(
        json_patch(
            &client,
            path,
            json!([{"op": "replace", "path": "/metadata/labels/no~1such", "value": "x"}]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    let e = api_error(json_patch(&client, path, json!({"op": "add"})).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"), "not a patch document: {e:?}");
    assert_eq!(
        k.get("apps/v1", "Deployment", "shop", "checkout").unwrap()["metadata"]["resourceVersion"],
        rv
    );
}

#[tokio::test]
async fn kube_standin_stale_resource_version_is_409() {
    let k = shop();
    let client = k.client().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let mut d = deps.get("payments").await.unwrap();
    let stale = d.metadata.resource_version.clone().unwrap();
    k.edit("apps/v1", "Deployment", "shop", "payments", |o| o["spec"]["replicas"] = json!(5));

    d.spec.as_mut().unwrap().replicas = Some(7);
    let e = api_error(deps.replace("payments", &PostParams::default(), &d).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on deployments.apps \"payments\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // The same through a patch carrying the stale resourceVersion.
    let e = api_error(
        deps.patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "spec": {"replicas": 7}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(k.get("apps/v1", "Deployment", "shop", "payments").unwrap()["spec"]["replicas"], 5);

    // With the current one it goes through, and status is not written through the main resource.
    let mut d = deps.get("payments").await.unwrap();
    d.spec.as_mut().unwrap().replicas = Some(7);
    d.status =
        Some(k8s_openapi::api::apps::v1::DeploymentStatus { replicas: Some(42), ..Default::default() });
    let out = deps.replace("payments", &PostParams::default(), &d).await.unwrap();
    assert_eq!(out.spec.unwrap().replicas, Some(7));
    assert_ne!(out.status.and_then(|s| s.replicas), Some(42));
}

#[tokio::test]
async fn kube_standin_refuses_what_the_apiserver_refuses() {
    let k = shop();
    let client = k.client().await;
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "argocd", &application_resource());

    // Create of an existing object: 409 AlreadyExists.
    let mut obj: DynamicObject =
        serde_json::from_value(load_fixture("fixtures/kube/argocd/application.single-source.yaml")).unwrap();
    obj.metadata.resource_version = None;
    obj.metadata.uid = None;
    let e = api_error(apps.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "applications.argoproj.io \"checkout\" already exists");
    // … with a resourceVersion set: refused as the apiserver does (500, its wording).
    obj.metadata.name = Some("checkout-2".into());
    obj.metadata.resource_version = Some("12".into());
    let e = api_error(apps.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!(e.code, 500);
    assert_eq!(e.message, "resourceVersion should not be set on objects to be created");
    // Into a namespace that does not exist: 404.
    let nowhere: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "nowhere", &application_resource());
    obj.metadata.resource_version = None;
    obj.metadata.namespace = None;
    let e = api_error(nowhere.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"nowhere\" not found"));
    // A get of a missing object: 404 NotFound with the apiserver's message.
    let e = api_error(apps.get("nope").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "applications.argoproj.io \"nope\" not found")
    );

    // Unknown resource of a served group: a 404 Status; an unknown group: 404 (plain text, as the
    // apiserver's mux answers; kube turns it into a 404 error too).
    let projects = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "AppProject"),
        "appprojects",
    );
    let e = api_error(
        Api::<DynamicObject>::namespaced_with(client.clone(), "argocd", &projects)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    let widgets =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let e = api_error(
        Api::<DynamicObject>::all_with(client.clone(), &widgets)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    k.uninstall("argoproj.io");
    let e = api_error(apps.get("checkout").await.unwrap_err());
    assert_eq!(e.code, 404, "Argo CD not installed");

    // Server-side apply without a field manager: 422; force on a merge patch: 422.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let raw = http::Request::patch("/apis/apps/v1/namespaces/shop/deployments/checkout")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 3\n".to_vec())
        .unwrap();
    let e = api_error(client.request::<Value>(raw).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    let raw = http::Request::patch("/apis/apps/v1/namespaces/shop/deployments/checkout?force=true")
        .header("content-type", "application/merge-patch+json")
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(api_error(client.request::<Value>(raw).await.unwrap_err()).code, 422);
    // Field selectors the apiserver does not support: 400.
    let e = api_error(deps.list(&ListParams::default().fields("spec.replicas=1")).await.unwrap_err());
    assert_eq!((e.code, e.message.as_str()), (400, "field label not supported: spec.replicas"));
    // RBAC says no: 403.
    k.forbid("patch", "deployments");
    let e = api_error(
        deps.patch("checkout", &PatchParams::default(), &Patch::Merge(json!({}))).await.unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
}

#[tokio::test]
async fn kube_standin_wants_the_token() {
    let k = KubeApi::start();
    // No token at all.
    let addr: std::net::SocketAddr = k.url().trim_start_matches("http://").parse().unwrap();
    let (code, body) =
        tokio::task::spawn_blocking(move || crate::support::http::get(addr, "/apis/apps/v1/deployments"))
            .await
            .unwrap();
    assert_eq!(code, 401);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    // A wrong token through kube's client.
    let text = std::fs::read_to_string(k.kubeconfig()).unwrap().replace(&k.token(), "not-the-token");
    let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let bad = kube::Client::try_from(config).unwrap();
    let e = api_error(Api::<Deployment>::all(bad).list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    // The right one.
    let v = k.client().await.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
}

#[tokio::test]
async fn kube_standin_serves_tls_with_the_kubeconfig_ca() {
    let k = KubeApi::start_tls();
    assert!(k.url().starts_with("https://localhost:"));
    let text = std::fs::read_to_string(k.kubeconfig()).unwrap();
    assert!(text.contains("certificate-authority-data: "), "{text}");
    let client = k.client().await;
    assert_eq!(client.apiserver_version().await.unwrap().minor, "33");
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
}

#[tokio::test]
async fn kube_standin_lists_page_and_select() {
    let k = shop();
    for i in 0..3 {
        let mut d = load_fixture("fixtures/kube/workloads/deployment.payments.yaml");
        d["metadata"]["name"] = json!(format!("extra-{i}"));
        d["metadata"]["labels"] = json!({"tier": if i == 1 { "web" } else { "worker" }});
        k.put(d);
    }
    let deps: Api<Deployment> = Api::namespaced(k.client().await, "shop");
    let first = deps.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rv = first.metadata.resource_version.clone().unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    // A write between pages does not show in the next page (same snapshot).
    k.delete("apps/v1", "Deployment", "shop", "payments");
    let mut names: Vec<String> = first.items.iter().map(|d| d.metadata.name.clone().unwrap()).collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = deps.list(&ListParams::default().limit(2).continue_token(&t)).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        names.extend(page.items.iter().map(|d| d.metadata.name.clone().unwrap()));
        token = page.metadata.continue_;
    }
    assert_eq!(names, ["checkout", "extra-0", "extra-1", "extra-2", "payments"]);
    // A continue token from before a compaction: 410 Expired.
    let again = deps.list(&ListParams::default().limit(1)).await.unwrap();
    k.compact();
    let e = api_error(
        deps.list(
            &ListParams::default().limit(1).continue_token(again.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));

    let sel = |l: ListParams| {
        let deps = deps.clone();
        async move {
            deps.list(&l)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|d| d.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(sel(ListParams::default().labels("tier=web")).await, ["extra-1"]);
    assert_eq!(sel(ListParams::default().labels("tier!=web,tier")).await, ["extra-0", "extra-2"]);
    assert_eq!(sel(ListParams::default().labels("tier in (web,worker)")).await.len(), 3);
    assert_eq!(sel(ListParams::default().labels("app.kubernetes.io/instance=checkout")).await, ["checkout"]);
    assert_eq!(sel(ListParams::default().fields("metadata.name=extra-2")).await, ["extra-2"]);
    // Items of a built-in kind's list carry no apiVersion/kind; a CRD's do.
    let raw: Value = k
        .client()
        .await
        .request(http::Request::get("/apis/apps/v1/deployments").body(vec![]).unwrap())
        .await
        .unwrap();
    assert_eq!(raw["kind"], "DeploymentList");
    assert!(raw["items"][0].get("kind").is_none());
    let raw: Value = k
        .client()
        .await
        .request(http::Request::get("/apis/argoproj.io/v1alpha1/applications").body(vec![]).unwrap())
        .await
        .unwrap();
    assert_eq!(raw["items"][0]["kind"], "Application");
}

#[tokio::test]
async fn kube_standin_watch_bookmarks_timeouts_and_410() {
    let k = shop();
    let deps: Api<Deployment> = Api::namespaced(k.client().await, "shop");
    let list = deps.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut w = deps.watch(&WatchParams::default().timeout(60), &rv).await.unwrap().boxed();
    k.edit("apps/v1", "Deployment", "shop", "checkout", |d| d["spec"]["replicas"] = json!(4));
    k.bookmark_now();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Modified(d) => assert_eq!(d.spec.unwrap().replicas, Some(4)),
        other => panic!("{other:?}"),
    }
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, k.resource_version().to_string()),
        other => panic!("{other:?}"),
    }
    // A watch from before the edit replays it from the history.
    let mut replay = deps.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    assert!(matches!(replay.try_next().await.unwrap().unwrap(), WatchEvent::Modified(_)));
    // The stream ends at timeoutSeconds.
    let mut short = deps
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &k.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(Duration::from_secs(30), short.try_next()).await.unwrap().unwrap().is_none()
    );
    // After compaction, an old resourceVersion gets the ERROR event with the 410.
    k.compact();
    let mut old = deps.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with(&format!("too old resource version: {rv} (")), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    // A delete through the API: watchers see DELETED.
    deps.delete("checkout", &DeleteParams::default()).await.unwrap();
    loop {
        match w.try_next().await.unwrap().unwrap() {
            WatchEvent::Deleted(d) => {
                assert_eq!(d.metadata.name.as_deref(), Some("checkout"));
                break;
            }
            WatchEvent::Bookmark(_) | WatchEvent::Modified(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn kube_standin_status_subresource_and_finalizers() {
    let k = shop();
    let client = k.client().await;
    // Flux kinds have a status subresource: the main resource ignores status, /status only status.
    let ks: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "flux-system", &kustomization_resource());
    let out = ks
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}, "status": {"lastAppliedRevision": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(out.data["spec"]["suspend"], true);
    assert_ne!(out.data["status"]["lastAppliedRevision"], "x");
    let out = ks
        .patch_status(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"suspend": false}, "status": {"lastAppliedRevision": "main@sha1:abc"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.data["status"]["lastAppliedRevision"], "main@sha1:abc");
    assert_eq!(out.data["spec"]["suspend"], true);
    // Argo CD's Application has none: status is written through the main resource, /status is 404.
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "argocd", &application_resource());
    let out = apps
        .patch(
            "checkout",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"sync": {"status": "OutOfSync"}}})),
        )
        .await
        .unwrap();
    assert_eq!(out.data["status"]["sync"]["status"], "OutOfSync");
    let e = api_error(
        apps.patch_status("checkout", &PatchParams::default(), &Patch::Merge(json!({}))).await.unwrap_err(),
    );
    assert_eq!(e.code, 404);

    // The Application has Argo CD's finalizer: a delete marks it, removing the finalizer deletes it.
    let gone = apps.delete("checkout", &DeleteParams::default()).await.unwrap();
    let marked = gone.left().expect("the object, still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(apps.get("checkout").await.is_ok());
    apps.patch("checkout", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert_eq!(api_error(apps.get("checkout").await.unwrap_err()).code, 404);
    // Without finalizers a delete answers the Status of success.
    let done = apps.delete("checkout-chart", &DeleteParams::default()).await.unwrap();
    let mut multi = k.get(APP, "Application", "argocd", "checkout-chart");
    if multi.is_some() {
        // The fixture has the finalizer too: Argo CD (the test) finishes it.
        k.edit(APP, "Application", "argocd", "checkout-chart", |a| a["metadata"]["finalizers"] = json!([]));
        multi = k.get(APP, "Application", "argocd", "checkout-chart");
    } else {
        assert!(done.is_right());
    }
    assert!(multi.is_none());
}

#[tokio::test]
async fn kube_standin_server_side_apply_conflicts_like_the_apiserver() {
    let k = KubeApi::start();
    k.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "metricops"}}));
    let leases: Api<Lease> = Api::namespaced(k.client().await, "metricops");
    let apply = |who: &str, force: bool| {
        let leases = leases.clone();
        let who = who.to_string();
        async move {
            let mut pp = PatchParams::apply(&who);
            pp.force = force;
            let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": who, "leaseDurationSeconds": 2}});
            leases.patch("leader", &pp, &Patch::Apply(body)).await
        }
    };
    // Apply creates it.
    let l = apply("a", false).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("a"));
    let mf = l.metadata.managed_fields.unwrap();
    assert_eq!((mf[0].manager.as_deref(), mf[0].operation.as_deref()), (Some("a"), Some("Apply")));
    // Another manager changing a field "a" owns: 409 Conflict, the apiserver's message and cause.
    let e = api_error(apply("b", false).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(e.message, "Apply failed with 1 conflict: conflict with \"a\": .spec.holderIdentity");
    let causes = e.details.unwrap().causes;
    assert_eq!(
        (causes[0].reason.as_str(), causes[0].field.as_str()),
        ("FieldManagerConflict", ".spec.holderIdentity")
    );
    // The same value is shared, no conflict; force takes the field over.
    let same = leases
        .patch("leader", &PatchParams::apply("c"), &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"leaseDurationSeconds": 2}})))
        .await;
    assert!(same.is_ok(), "{same:?}");
    let l = apply("b", true).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // A strategic merge patch (an Update) is never a conflict; it moves ownership.
    leases
        .patch("leader", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"holderIdentity": "d"}})))
        .await
        .unwrap();
    assert!(apply("a", false).await.is_err(), "holderIdentity is now owned by the updater");
    // Wrong apiVersion in the applied configuration: 400.
    let e = api_error(
        leases
            .patch(
                "leader",
                &PatchParams::apply("a"),
                &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1beta1", "kind": "Lease"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_standin_two_lease_managers_one_leader_then_takeover() {
    use kube_lease_manager::LeaseManagerBuilder;
    let k = KubeApi::start();
    k.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "metricops"}}));
    let build = |id: &'static str| {
        let client_fut = k.client();
        async move {
            LeaseManagerBuilder::new(client_fut.await, "metricops-leader")
                .with_namespace("metricops")
                .with_identity(id)
                // Renewed every second, two seconds before it would run out.
                .with_duration(3)
                .with_grace(2)
                .build()
                .await
                .unwrap()
        }
    };
    let (a, b) = (build("replica-a").await, build("replica-b").await);
    let (rx_a, task_a) = a.watch().await;
    let (rx_b, task_b) = b.watch().await;
    let holder = || {
        k.get("coordination.k8s.io/v1", "Lease", "metricops", "metricops-leader")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    eventually("one leader", Duration::from_secs(30), || *rx_a.borrow() || *rx_b.borrow()).await;
    // Never both, for a while.
    for _ in 0..50 {
        assert!(!(*rx_a.borrow() && *rx_b.borrow()), "two leaders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_leads = *rx_a.borrow();
    let (leader, other_rx, leader_task, other_task) =
        if a_leads { ("replica-a", rx_b, task_a, task_b) } else { ("replica-b", rx_a, task_b, task_a) };
    assert_eq!(holder().as_deref(), Some(leader));
    // The leader stops renewing (its task dies without releasing): after the lease runs out the
    // other takes over.
    leader_task.abort();
    let follower = if a_leads { "replica-b" } else { "replica-a" };
    eventually("the other replica to take over", Duration::from_secs(60), || *other_rx.borrow()).await;
    assert_eq!(holder().as_deref(), Some(follower));
    let l = k.get("coordination.k8s.io/v1", "Lease", "metricops", "metricops-leader").unwrap();
    assert!(l["spec"]["leaseTransitions"].as_i64().unwrap() >= 2, "{l}");
    // What kube-lease-manager sent: create, get, server-side apply with its field manager, strategic patches.
    let reqs = k.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST"
                && r.path == "/apis/coordination.k8s.io/v1/namespaces/metricops/leases")
    );
    assert!(reqs.iter().any(|r| r.method == "PATCH"
        && r.content_type.as_deref() == Some("application/apply-patch+yaml")
        && r.param("fieldManager").is_some_and(|m| m.starts_with("kube-lease-manager-"))));
    assert!(reqs.iter().any(|r| r.content_type.as_deref() == Some("application/strategic-merge-patch+json")));
    drop(other_rx);
    let _ = tokio::time::timeout(Duration::from_secs(10), other_task).await;
}

#[tokio::test]
async fn kube_standin_discovery_lists_the_served_resources() {
    let k = KubeApi::start();
    let client = k.client().await;
    let d = kube::discovery::Discovery::new(client.clone()).run().await.unwrap();
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    let (ar, caps) = d.resolve_gvk(&gvk).expect("Applications discovered");
    assert_eq!(ar.plural, "applications");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
    let (lease, _) = d.resolve_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease")).unwrap();
    assert_eq!(lease.plural, "leases");
    let (ns, caps) = d.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace")).unwrap();
    assert_eq!((ns.plural.as_str(), caps.scope), ("namespaces", kube::discovery::Scope::Cluster));
    // Without Argo CD installed, its group is not discovered.
    k.uninstall("argoproj.io");
    let d = kube::discovery::Discovery::new(client).run().await.unwrap();
    assert!(d.resolve_gvk(&gvk).is_none());
    assert!(d.has_group("kustomize.toolkit.fluxcd.io"));
}

#[tokio::test]
async fn kube_standin_apply_merges_containers_by_name() {
    let k = shop();
    let deps: Api<Deployment> = Api::namespaced(k.client().await, "shop");
    let d0 = k.get("apps/v1", "Deployment", "shop", "checkout").unwrap();
    let containers = d0["spec"]["template"]["spec"]["containers"].as_array().unwrap().clone();
    let name = containers[0]["name"].as_str().unwrap();
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout"},
        "spec": {"template": {"spec": {"containers": [{"name": name, "image": "ghcr.io/acme/checkout:1.14.1"}]}}},
    });
    // kubectl (the fixture's owner) set that image: without force, a conflict naming the field.
    let e = api_error(
        deps.patch("checkout", &PatchParams::apply("metricops"), &Patch::Apply(&body)).await.unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains(&format!(".spec.template.spec.containers[name=\"{name}\"].image")),
        "{}",
        e.message
    );
    assert!(e.message.contains("\"kubectl-client-side-apply\" using apps/v1"), "{}", e.message);
    let d =
        deps.patch("checkout", &PatchParams::apply("metricops").force(), &Patch::Apply(&body)).await.unwrap();
    let got = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(got.len(), containers.len(), "the other container stays");
    assert_eq!(got[0].image.as_deref(), Some("ghcr.io/acme/checkout:1.14.1"));
    let mf = d.metadata.managed_fields.unwrap();
    let mine = mf.iter().find(|m| m.manager.as_deref() == Some("metricops")).unwrap();
    let fields = serde_json::to_value(mine.fields_v1.as_ref().unwrap()).unwrap();
    let key = format!("k:{{\"name\":\"{name}\"}}");
    assert!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"][&key]["f:image"].is_object(),
        "{fields}"
    );
    // The generation moved with the spec.
    assert_eq!(d.metadata.generation, d0["metadata"]["generation"].as_i64().map(|g| g + 1));
}
