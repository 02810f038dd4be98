//! `metricops revert` against real repositories: the trees it builds, byte for byte.

use serde_json::Value;

use crate::support::*;

const API: &str = "ghcr.io/shop/api";

fn revert(repo: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["revert", "--repo", repo.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let r = metricops(&all);
    assert_eq!(r.code, 0, "revert {args:?} failed: {}{}", r.stdout, r.stderr);
    r.json()
}

#[test]
fn auto_reverts_the_whole_commit_when_it_only_bumped_the_image() {
    let r = Repo::new();
    r.write("prod/kustomization.yaml", &kustomization(API, "1.0"));
    r.commit("init");
    r.write("prod/kustomization.yaml", &kustomization(API, "1.1"));
    let bump = r.commit("deploy api 1.1");
    r.write("README.md", "x");
    let head = r.commit("docs");
    let status_before = r.git(&["status", "--porcelain"]);
    let j = revert(r.path(), &["--image", API]);
    assert_eq!((j["mode"].as_str(), j["culprit"].as_str()), (Some("commit"), Some(bump.as_str())));
    let branch = format!("metricops/revert-{}", &bump[..12]);
    assert_eq!(j["branch"], branch);
    // One new commit on top of HEAD; HEAD and the working tree untouched.
    assert_eq!(r.git(&["rev-parse", &format!("{branch}^")]), head);
    assert_eq!(r.head(), head);
    assert_eq!(r.git(&["status", "--porcelain"]), status_before);
    assert_eq!(r.show(&branch, "prod/kustomization.yaml"), kustomization(API, "1.0"));
    let msg = r.git(&["log", "-1", "--format=%B", &branch]);
    assert!(msg.starts_with(&format!("Revert \"deploy api 1.1\"\n\nThis reverts commit {bump}.\n")), "{msg}");
    assert!(
        msg.contains(&format!("Metricops-Culprit: {bump}")) && msg.contains("Metricops-Mode: commit"),
        "{msg}"
    );
    // `git revert` would have made the same tree.
    r.git(&["revert", "--no-edit", &bump]);
    assert_eq!(r.git(&["rev-parse", "HEAD^{tree}"]), r.git(&["rev-parse", &format!("{branch}^{{tree}}")]));
    // An existing branch elsewhere is never moved.
    let again = metricops(&[
        "revert",
        "--repo",
        r.path().to_str().unwrap(),
        "--image",
        API,
        "--rev",
        &head,
        "--branch",
        "main",
        "--json",
    ]);
    assert_eq!(again.json()["error"]["kind"], "branch_exists");
}

#[test]
fn a_commit_bumping_several_services_is_reverted_surgically() {
    let r = Repo::new();
    r.write("prod/values.yaml", "api:\n  image:\n    repository: ghcr.io/shop/api\n    tag: \"1.0\"   # api\nweb:\n  image:\n    repository: ghcr.io/shop/web\n    tag: '7.0'\n");
    r.commit("init");
    let bumped = "api:\n  image:\n    repository: ghcr.io/shop/api\n    tag: \"1.1\"   # api\nweb:\n  image:\n    repository: ghcr.io/shop/web\n    tag: '7.1'\n";
    r.write("prod/values.yaml", bumped);
    r.commit("release train");
    let j = revert(r.path(), &["--image", API]);
    assert_eq!(j["mode"], "surgical");
    assert!(j["why"].as_str().unwrap().contains("other lines in prod/values.yaml"), "{j}");
    let got = r.show(j["branch"].as_str().unwrap(), "prod/values.yaml");
    assert_eq!(got, bumped.replace("\"1.1\"", "\"1.0\""), "only api's tag goes back; web stays at 7.1");
}

#[test]
fn auto_falls_back_to_surgical_when_a_later_commit_touched_the_same_lines() {
    let r = Repo::new();
    let d = |tag: &str, replicas: u32| {
        format!(
            "kind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      containers:\n      - name: api\n        image: ghcr.io/shop/api:{tag}\n"
        )
    };
    r.write("deploy.yaml", &d("1.0", 2));
    r.commit("init");
    r.write("deploy.yaml", &d("1.1", 2));
    let bump = r.commit("api 1.1");
    r.write(
        "deploy.yaml",
        &d("1.1", 2)
            .replace("image: ghcr.io/shop/api:1.1", "image: ghcr.io/shop/api:1.1 # pinned after load test"),
    );
    r.commit("annotate image line");
    let dir = r.path().to_str().unwrap();
    let conflict = metricops(&["revert", "--repo", dir, "--commit", &bump, "--json"]);
    assert_eq!(conflict.code, 1);
    let e = &conflict.json()["error"];
    assert_eq!(
        (e["kind"].as_str(), e["files"].clone()),
        (Some("conflict"), serde_json::json!(["deploy.yaml"])),
        "{e}"
    );
    let j = revert(r.path(), &["--image", API]);
    assert_eq!(j["mode"], "surgical");
    assert!(j["why"].as_str().unwrap().contains("conflicts"), "{j}");
    assert_eq!(
        r.show(j["branch"].as_str().unwrap(), "deploy.yaml"),
        d("1.0", 2)
            .replace("image: ghcr.io/shop/api:1.0", "image: ghcr.io/shop/api:1.0 # pinned after load test")
    );
}

#[test]
fn surgical_edits_keep_crlf_comments_and_quotes_in_a_bare_repository() {
    let r = Repo::new();
    let text = |tag: &str| {
        format!(
            "# Überschrift: keep me\r\nimages:\r\n  - name: ghcr.io/shop/api   # the API\r\n    newTag: '{tag}'  # quoted on purpose\r\n  - name: other\r\n    newTag: \"9\"\r\n"
        )
    };
    r.write("k/kustomization.yaml", &text("1.0"));
    r.commit("init");
    r.write("k/kustomization.yaml", &text("1.1")).write("k/notes.txt", "release notes\n");
    r.commit("api 1.1 with notes");
    let bare = r.bare_clone();
    let j = revert(&bare, &["--image", API, "--mode", "surgical", "--branch", "rollback/api"]);
    assert_eq!((j["mode"].as_str(), j["branch"].as_str()), (Some("surgical"), Some("rollback/api")));
    let out = std::process::Command::new("git")
        .args(["show", "rollback/api:k/kustomization.yaml"])
        .current_dir(&bare)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text("1.0"));
    let notes = std::process::Command::new("git")
        .args(["show", "rollback/api:k/notes.txt"])
        .current_dir(&bare)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(notes.stdout).unwrap(),
        "release notes\n",
        "surgical mode leaves the rest of the commit in place"
    );
}

#[test]
fn merge_culprits_revert_against_the_first_parent() {
    let r = Repo::new();
    r.write("deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.0"));
    r.commit("init");
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.write("deploy.yaml", &deployment("api", "ghcr.io/shop/api:2.0"));
    r.commit("bump");
    r.git(&["checkout", "-q", "main"]);
    r.git(&["merge", "-q", "--no-ff", "-m", "Merge feature", "feature"]);
    let merge = r.head();
    let j = revert(r.path(), &["--commit", &merge, "--mode", "commit"]);
    assert_eq!(j["culprit"], merge);
    assert_eq!(
        r.show(j["branch"].as_str().unwrap(), "deploy.yaml"),
        deployment("api", "ghcr.io/shop/api:1.0")
    );
}

#[test]
fn nothing_to_go_back_to_is_a_clear_error() {
    let r = Repo::new();
    r.write("deploy.yaml", &deployment("api", "ghcr.io/shop/api:1.0"));
    r.commit("init");
    let run = metricops(&[
        "revert",
        "--repo",
        r.path().to_str().unwrap(),
        "--image",
        API,
        "--mode",
        "surgical",
        "--json",
    ]);
    let e = &run.json()["error"];
    assert_eq!(e["kind"], "no_previous_version");
    assert!(e["message"].as_str().unwrap().contains("--mode commit"), "{e}");
}

#[test]
fn a_key_in_several_documents_reverts_the_newest_change_and_says_so() {
    // Several HelmReleases in one file, each with `spec.values.image.tag` (Weave Flux's flux-patch.yaml).
    let release = |name: &str, tag: &str| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: radix\nspec:\n  values:\n    image:\n      tag: {tag}\n"
        )
    };
    let file = |op: &str, api: &str| format!("{}---\n{}", release("operator", op), release("api", api));
    let r = Repo::new();
    r.write("flux-patch.yaml", &file("master-a", "master-x"));
    r.commit("init");
    r.write("flux-patch.yaml", &file("master-b", "master-x"));
    r.commit("operator b");
    r.write("flux-patch.yaml", &file("master-b", "master-y"));
    let api = r.commit("api y");
    // `trace` cannot tell which one is asked about.
    let t = metricops(&[
        "trace",
        "--repo",
        r.path().to_str().unwrap(),
        "--key",
        "spec.values.image.tag",
        "--json",
    ]);
    assert_eq!(t.json()["error"]["kind"], "ambiguous", "{}", t.stdout);
    // `revert` undoes the latest bump among them, and the warning names the others.
    let all = ["revert", "--repo", r.path().to_str().unwrap(), "--key", "spec.values.image.tag", "--json"];
    let run = metricops(&all);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!((j["culprit"].as_str(), j["to"].as_str()), (Some(api.as_str()), Some("master-x")));
    assert!(
        run.stderr.contains("several current versions") && run.stderr.contains("master-b"),
        "{}",
        run.stderr
    );
    assert_eq!(r.show(j["branch"].as_str().unwrap(), "flux-patch.yaml"), file("master-b", "master-x"));
}
