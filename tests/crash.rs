//! `metricops serve` killed (SIGKILL) at each stage of an incident on GitHub, then started again
//! with nothing re-sent: it ends with exactly one revert PR, dressed, merged once — or, when even
//! the journal is lost, with the PR of the pushed branch opened by the scan at start.

use std::time::Duration;

use crate::github::{CHECKOUT, World, alert};
use crate::journal::serve;
use crate::support::http::{free_port, request, wait_until};
use crate::support::kustomization;

/// The config file for `serve`: the world's, with a state dir, the culprit's age not a question
/// (the world's commits are dated September 2026) and `action`.
fn config_file(w: &World, action: &str) -> std::path::PathBuf {
    let text = w.config_text(action, "").replace("max_culprit_age: 24h", "max_culprit_age: 3650d");
    let path = w.dir.path().join("metricops.yaml");
    std::fs::write(&path, format!("{text}state_dir: {}\n", w.dir.path().join("state").display())).unwrap();
    path
}

fn post_alert(port: u16) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (code, text) = request(
        addr,
        "POST",
        "/webhooks/alertmanager",
        &[("Content-Type", "application/json")],
        &alert("fp-1"),
    );
    assert_eq!(code, 200, "{text}");
}

#[test]
fn killed_at_each_stage_of_an_incident_it_ends_with_one_revert_merged_once() {
    for (method, prefix, stage) in [
        ("POST", "/repos/shop/manifests/pulls", "after the push, before the PR"),
        ("POST", "/repos/shop/manifests/issues/", "after the PR, before its labels"),
        ("PUT", "/repos/shop/manifests/pulls/", "before the merge"),
    ] {
        let w = World::new();
        let config = config_file(&w, "merge");
        w.gh.hold_next(method, prefix);
        let port = free_port();
        let mut first = serve(&config, port);
        post_alert(port);
        wait_until(&format!("serve to reach the stage {stage}"), Duration::from_secs(60), || {
            w.gh.held() == 1
        });
        first.0.kill().unwrap();
        first.0.wait().unwrap();
        w.gh.release();
        assert_eq!(
            w.main_file(),
            kustomization(CHECKOUT, "1.5.0"),
            "{stage}: nothing merged before the kill"
        );

        let _second = serve(&config, port);
        wait_until(&format!("{stage}: the revert merged after the restart"), Duration::from_secs(60), || {
            w.main_file() == kustomization(CHECKOUT, "1.4.2")
        });
        let prs: Vec<_> =
            w.gh.pulls("shop", "manifests").into_iter().filter(|p| p.head_ref == w.branch()).collect();
        assert_eq!(prs.len(), 1, "{stage}: one PR for the culprit: {prs:#?}");
        assert!(prs[0].merged, "{stage}: merged");
        assert!(prs[0].labels.iter().any(|l| l == "metricops"), "{stage}: dressed: {:?}", prs[0].labels);
        let reverts = crate::e2e::git(&w.bare, &["log", "--format=%H", "--grep=Metricops-Culprit", "main"]);
        assert_eq!(reverts.lines().count(), 1, "{stage}: one revert on main:\n{reverts}");
        w.gh.assert_faithful();
    }
}

#[test]
fn with_the_journal_lost_too_the_scan_opens_the_pushed_branchs_pr() {
    let w = World::new();
    let config = config_file(&w, "propose");
    w.gh.hold_next("POST", "/repos/shop/manifests/pulls");
    let port = free_port();
    let mut first = serve(&config, port);
    post_alert(port);
    wait_until("serve to push the branch and ask for the PR", Duration::from_secs(60), || w.gh.held() == 1);
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    w.gh.release();
    // The state dir is gone (a new pod without its volume): no journal, no mirror.
    std::fs::remove_dir_all(w.dir.path().join("state")).unwrap();
    let _second = serve(&config, port);
    wait_until("the scan at start to open the PR and dress it", Duration::from_secs(60), || {
        w.gh.pulls("shop", "manifests").iter().any(|p| p.head_ref == w.branch() && !p.labels.is_empty())
    });
    let prs: Vec<_> =
        w.gh.pulls("shop", "manifests").into_iter().filter(|p| p.head_ref == w.branch()).collect();
    assert_eq!(prs.len(), 1);
    assert_eq!(prs[0].state, "open", "propose: a person merges it");
    assert!(prs[0].body.contains("found unfinished") && prs[0].body.contains(&w.culprit), "{}", prs[0].body);
    assert!(prs[0].labels.iter().any(|l| l == "metricops"), "{:?}", prs[0].labels);
    w.gh.assert_faithful();
}
