//! `metricops trace` against real repositories.

use crate::support::*;

const API: &str = "ghcr.io/shop/api";

#[test]
fn names_the_bump_with_previous_version_and_other_files() {
    let r = Repo::new();
    r.write("apps/api/deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.0"));
    r.commit("add api");
    r.write("apps/api/deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.1")).write("CHANGELOG.md", "1.1");
    let bump = r.commit("deploy api 1.1");
    r.write("README.md", "later, unrelated");
    let later = r.commit("docs");
    let j = trace(&r, &["--image", API]);
    assert_eq!(j["commit"], bump);
    assert_eq!(j["parent"], r.git(&["rev-parse", &format!("{bump}^")]));
    assert_eq!((j["tag"].as_str(), j["previous_tag"].as_str()), (Some("1.1"), Some("1.0")));
    assert_eq!(j["digest"], serde_json::Value::Null);
    assert_eq!(j["subject"], "deploy api 1.1");
    assert_eq!(j["author"], "Dana Developer <dana@example.com>");
    assert!(j["time"].as_str().unwrap().ends_with("+00:00"), "RFC 3339: {}", j["time"]);
    assert_eq!(
        j["changes"],
        serde_json::json!([{
            "file": "apps/api/deploy.yaml", "line": 11, "old": "1.0", "new": "1.1", "old_image": null,
            "slot": "Deployment/shop/api|spec.template.spec.containers[name=api].image",
            "workload": "Deployment/shop/api container api",
            "now": {"file": "apps/api/deploy.yaml", "line": 11, "version": "1.1"},
        }])
    );
    assert_eq!(j["later"], serde_json::json!([]));
    assert_eq!(j["other_files"], serde_json::json!(["CHANGELOG.md"]));
    // Bare repositories answer the same; --rev searches from elsewhere.
    let bare = r.bare_clone();
    let b = metricops(&["trace", "--repo", bare.to_str().unwrap(), "--image", API, "--json"]).json();
    assert_eq!(b["commit"], bump);
    let from_first = trace(&r, &["--image", API, "--rev", &format!("{later}~2")]);
    assert_eq!(from_first["tag"], "1.0");
    assert_eq!(
        from_first["previous_tag"],
        serde_json::Value::Null,
        "first appearance has no previous version"
    );
}

#[test]
fn a_merge_that_brought_the_bump_in_is_the_culprit() {
    let r = Repo::new();
    r.write("deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.0"));
    r.commit("init");
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.write("deploy.yaml", &deployment("api", "ghcr.io/shop/api:2.0"));
    let side = r.commit("bump on a branch");
    r.git(&["checkout", "-q", "main"]);
    r.write("other.yaml", "a: 1\n");
    r.commit("meanwhile on main");
    r.git(&["merge", "-q", "--no-ff", "-m", "Merge pull request #7 from feature", "feature"]);
    let merge = r.head();
    let j = trace(&r, &["--image", API]);
    assert_eq!(j["commit"], merge, "first-parent history: the merge is where 2.0 arrived\n{}", r.log());
    assert_ne!(j["commit"], side);
    assert_eq!(j["previous_tag"], "1.0");
}

#[test]
fn returns_renames_and_digest_only_changes() {
    let r = Repo::new();
    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    r.write("a/deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.2"));
    r.commit("1.2");
    r.write("a/deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.3"));
    r.commit("1.3");
    r.write("a/deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.2"));
    let back = r.commit("back to 1.2");
    r.git(&["mv", "a", "b"]);
    r.commit("move manifests");
    let j = trace(&r, &["--image", API]);
    assert_eq!(j["commit"], back, "the move is not the culprit; the return to 1.2 is");
    assert_eq!(j["previous_tag"], "1.3");
    // --tag asks for the latest time the image became that version, current or not.
    let j = trace(&r, &["--image", API, "--tag", "1.3"]);
    assert_eq!(j["subject"], "1.3");
    // Same tag, new digest: a change of version.
    r.write("b/deploy.yaml", &deployment("api", &format!("ghcr.io/shop/api:main@{d1}")));
    r.commit("main d1");
    r.write("b/deploy.yaml", &deployment("api", &format!("ghcr.io/shop/api:main@{d2}")));
    let redigest = r.commit("main d2");
    let j = trace(&r, &["--image", API]);
    assert_eq!(j["commit"], redigest);
    assert_eq!((j["tag"].as_str(), j["digest"].as_str()), (Some("main"), Some(d2.as_str())));
    assert_eq!(
        (j["previous_tag"].as_str(), j["previous_digest"].as_str()),
        (Some("main"), Some(d1.as_str()))
    );
    let j = trace(&r, &["--image", API, "--digest", &d1]);
    assert_eq!(j["subject"], "main d1");
}

#[test]
fn base_and_overlays_need_a_path_and_then_name_the_overlay_bump() {
    let r = Repo::new();
    r.write("apps/api/base/deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.0"));
    r.write("apps/api/overlays/staging/kustomization.yaml", &kustomization(API, "1.4"));
    r.write("apps/api/overlays/prod/kustomization.yaml", &kustomization(API, "1.3"));
    r.commit("init");
    r.write("apps/api/overlays/prod/kustomization.yaml", &kustomization(API, "1.4"));
    let prod = r.commit("promote api 1.4 to prod");
    let amb = metricops(&["trace", "--repo", r.path().to_str().unwrap(), "--image", API, "--json"]);
    assert_ne!(amb.code, 0);
    let e = &amb.json()["error"];
    assert_eq!(e["kind"], "ambiguous");
    assert!(e["message"].as_str().unwrap().contains("--path"), "{e}");
    assert_eq!(e["versions"].as_array().unwrap().len(), 2, "{e}");
    let j = trace(&r, &["--image", API, "--path", "apps/api/overlays/prod"]);
    assert_eq!(j["commit"], prod);
    assert_eq!(j["changes"][0]["file"], "apps/api/overlays/prod/kustomization.yaml");
    // The same tag in two files (staging had 1.4 first): the latest commit that made a place 1.4.
    let j = trace(&r, &["--image", API, "--path", "apps/api/overlays"]);
    assert_eq!(j["commit"], prod);
    // A file path works as scope too.
    let j = trace(&r, &["--image", API, "--path", "apps/api/overlays/staging/kustomization.yaml"]);
    assert_eq!(j["subject"], "init");
}

#[test]
fn helm_keys_and_other_layouts() {
    let r = Repo::new();
    r.write("charts/nexus/values.yaml", "nexus:\n  imageTag: 3.16.1\n  port: 8081\n");
    r.write(
        "clusters/prod/release.yaml",
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\nspec:\n  values:\n    image:\n      repository: ghcr.io/shop/web\n      tag: 5.0.0\n",
    );
    r.write(
        "argocd/app.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: cart\nspec:\n  source:\n    kustomize:\n      images:\n      - ghcr.io/shop/cart:2.0\n",
    );
    r.commit("init");
    r.write("charts/nexus/values.yaml", "nexus:\n  imageTag: 3.16.2\n  port: 8081\n");
    let nexus = r.commit("nexus 3.16.2");
    r.write("clusters/prod/release.yaml", &r.read("clusters/prod/release.yaml").replace("5.0.0", "5.1.0"));
    let web = r.commit("web 5.1.0");
    r.write("argocd/app.yaml", &r.read("argocd/app.yaml").replace("2.0", "2.1"));
    let cart = r.commit("cart 2.1");
    let j = trace(&r, &["--key", "nexus.imageTag"]);
    assert_eq!(
        (j["commit"].as_str(), j["tag"].as_str(), j["previous_tag"].as_str()),
        (Some(nexus.as_str()), Some("3.16.2"), Some("3.16.1"))
    );
    assert_eq!(j["image"], serde_json::Value::Null);
    assert_eq!(trace(&r, &["--image", "ghcr.io/shop/web"])["commit"], web);
    assert_eq!(trace(&r, &["--image", "ghcr.io/shop/cart"])["commit"], cart);
}

#[test]
fn templated_files_are_read_by_the_fallback_and_say_so() {
    let r = Repo::new();
    let tpl = |t: &str| {
        format!(
            "spec:\n  containers:\n  - name: a\n    image: ghcr.io/shop/tpl:{t}\n{{{{- if .Values.x }}}}\n  : broken\n"
        )
    };
    r.write("chart/templates/d.yaml", &tpl("1.0"));
    r.commit("init");
    r.write("chart/templates/d.yaml", &tpl("1.1"));
    let bump = r.commit("tpl 1.1");
    let run =
        metricops(&["trace", "--repo", r.path().to_str().unwrap(), "--image", "ghcr.io/shop/tpl", "--json"]);
    assert_eq!(run.json()["commit"], bump);
    assert!(
        run.stderr.contains("not valid YAML") && run.stderr.contains("chart/templates/d.yaml"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn errors_are_clear_in_text_and_json() {
    let r = Repo::new();
    r.write("d.yaml", &deployment("api", "ghcr.io/shop/api:1.0"));
    r.write("e.yaml", &deployment("web", "ghcr.io/shop/web:1.0"));
    r.commit("init");
    let dir = r.path().to_str().unwrap();
    let not_found = metricops(&["trace", "--repo", dir, "--image", "ghcr.io/shop/ap", "--json"]);
    assert_eq!(not_found.code, 1);
    let e = &not_found.json()["error"];
    assert_eq!(e["kind"], "image_not_found");
    assert_eq!(e["available"], serde_json::json!(["ghcr.io/shop/api", "ghcr.io/shop/web"]), "nearest first");
    let text = metricops(&["trace", "--repo", dir, "--image", "ghcr.io/shop/ap"]);
    assert!(
        text.stderr.starts_with(
            "error: image ghcr.io/shop/ap not found in scope; images there, nearest first: ghcr.io/shop/api"
        ),
        "{}",
        text.stderr
    );
    let bad_rev = metricops(&["trace", "--repo", dir, "--rev", "nope", "--image", "x", "--json"]);
    assert_eq!(bad_rev.json()["error"]["kind"], "unknown_revision");
    let tmp = tempfile::tempdir().unwrap();
    let not_repo = metricops(&["trace", "--repo", tmp.path().to_str().unwrap(), "--image", "x", "--json"]);
    assert_eq!(not_repo.json()["error"]["kind"], "not_a_repository");
    let usage = metricops(&["trace", "--repo", dir]);
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("--image") && usage.stderr.contains("--key"), "{}", usage.stderr);
}

#[test]
fn a_100_mb_file_a_symlink_and_a_submodule_in_scope_do_not_stop_the_search() {
    let r = Repo::new();
    r.write("apps/x/deployment.yaml", &deployment("x", "ghcr.io/s/x:1.0.0"));
    // 100 MB of generated YAML that never names the image.
    let line = "      - name: some-generated-key\n        value: \"0123456789abcdef0123456789abcdef\"\n";
    let big = format!("kind: ConfigMap\ndata:\n  items:\n{}", line.repeat(100 * 1024 * 1024 / line.len()));
    r.write("apps/x/bundle.yaml", &big);
    std::os::unix::fs::symlink("../../../../etc/passwd", r.path().join("apps/x/passwd.yaml")).unwrap();
    r.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        "160000,1234567890123456789012345678901234567890,apps/x/vendored",
    ]);
    r.commit("x at 1.0.0, with a bundle, a symlink and a submodule");
    r.write("apps/x/deployment.yaml", &deployment("x", "ghcr.io/s/x:1.1.0"));
    let culprit = r.commit("deploy x 1.1.0");
    let v = trace(&r, &["--image", "ghcr.io/s/x", "--path", "apps/x"]);
    assert_eq!(v["commit"], culprit.as_str(), "{v}");
    assert_eq!(v["previous_tag"], "1.0.0", "{v}");
}
