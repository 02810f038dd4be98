//! The engine's scenarios against the in-memory forge: a real bare repository for git, pull
//! requests in memory. Retry, restart, race, hold, cancel, merge and the scan at start, in
//! milliseconds; the GitHub stand-in (tests/support/github) covers the same end to end over HTTP.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::{Delivery, Engine, Report};
use crate::config::Config;
use crate::domain::alert::{Source, parse_generic};
use crate::domain::reconcile::{CANCELLED_LABEL, HOLD_LABEL};
use crate::forge::memory::MemoryForge;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\n  namespace: shop\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: ghcr.io/shop/checkout:{V}\n";

/// A manifests repository (bare, as the forge holds it) with 1.4.2 deployed two hours ago and the
/// culprit, 1.5.0, an hour ago.
struct World {
    dir: tempfile::TempDir,
    forge: Arc<MemoryForge>,
    culprit: String,
    now: DateTime<Utc>,
}

fn commit(repo: &git2::Repository, version: &str, when: DateTime<Utc>, message: &str) -> git2::Oid {
    let blob = repo.blob(DEPLOYMENT.replace("{V}", version).as_bytes()).unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("deployment.yaml", blob, 0o100644).unwrap();
    let checkout = tb.write().unwrap();
    let mut apps = repo.treebuilder(None).unwrap();
    apps.insert("checkout", checkout, 0o040000).unwrap();
    let apps = apps.write().unwrap();
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("apps", apps, 0o040000).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::new("Dev", "dev@shop.test", &git2::Time::new(when.timestamp(), 0)).unwrap();
    let parent = repo.find_reference("refs/heads/main").ok().and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("refs/heads/main"), &sig, &sig, message, &tree, &parents).unwrap()
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("acme").join("manifests.git");
        let repo = git2::Repository::init_bare(&bare).unwrap();
        let now = Utc::now();
        commit(&repo, "1.4.2", now - Duration::hours(2), "deploy checkout 1.4.2");
        let culprit = commit(&repo, "1.5.0", now - Duration::hours(1), "deploy checkout 1.5.0").to_string();
        let forge = Arc::new(MemoryForge::new(&bare));
        forge.with(|s| s.collaborators = vec!["alice".into()]);
        World { dir, forge, culprit, now }
    }

    fn bare(&self) -> std::path::PathBuf {
        self.dir.path().join("acme").join("manifests.git")
    }

    fn config(&self, action: &str) -> Arc<Config> {
        let text = format!(
            "repos:\n- name: shop\n  url: {bare}\n  forge: github\ngithub:\n  app_id: 1\n  private_key_file: /nonexistent/app.pem\n  reviewers: [alice]\nworkloads:\n- name: shop/checkout\n  repo: shop\n  paths: [apps/checkout]\n  image: ghcr.io/shop/checkout\npolicy:\n  action: {action}\n  max_culprit_age: 24h\nstate_dir: {state}\n",
            bare = self.bare().display(),
            state = self.dir.path().join("state").display(),
        );
        Arc::new(Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
    }

    /// A fresh engine on the same state dir: what a restart gives.
    fn engine(&self, action: &str) -> Engine {
        Engine::with_forge(self.config(action), self.forge.clone())
    }

    fn alert(&self, engine: &Engine, fingerprint: &str) -> Report {
        let body = format!(
            r#"{{"name":"CheckoutErrors","severity":"critical","fingerprint":"{fingerprint}","startsAt":"{}","labels":{{"namespace":"shop","deployment":"checkout"}}}}"#,
            (self.now - Duration::minutes(10)).to_rfc3339()
        );
        let alerts = parse_generic(&body, self.now).unwrap();
        rt().block_on(engine.handle_alerts(Source::Generic, &alerts, std::time::Instant::now(), self.now))
    }

    fn main_file(&self) -> String {
        let r = git2::Repository::open_bare(self.bare()).unwrap();
        let c = r.find_reference("refs/heads/main").unwrap().peel_to_commit().unwrap();
        let e = c.tree().unwrap().get_path(Path::new("apps/checkout/deployment.yaml")).unwrap();
        String::from_utf8(r.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
    }

    fn branch(&self) -> String {
        format!("metricops/revert-{}", &self.culprit[..12])
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn delivered(r: &Report) -> Delivery {
    assert!(r.failed.is_empty(), "failed: {:?}", r.failed);
    r.outcomes.first().and_then(|o| o.delivery.clone()).unwrap_or_else(|| panic!("no delivery: {r:?}"))
}

#[test]
fn a_revert_pr_is_opened_dressed_and_reconfirmed_once_per_new_set_of_alerts() {
    let w = World::new();
    let e = w.engine("propose");
    let d = delivered(&w.alert(&e, "a1"));
    assert!(matches!(d, Delivery::Proposed { ref branch, pr: Some(_) } if *branch == w.branch()), "{d:?}");
    w.forge.with(|s| {
        assert_eq!(s.pulls.len(), 1);
        let pr = &s.pulls[0];
        assert!(pr.labels.iter().any(|l| l.name == "metricops"), "{:?}", pr.labels);
        assert_eq!(s.reviewers.get(&pr.number).cloned().unwrap_or_default(), vec!["alice".to_string()]);
        assert!(pr.body.as_deref().unwrap().contains(&format!("culprit={}", w.culprit)));
    });
    // The same alert again: nothing new, no comment. A new alert: one comment.
    assert!(matches!(delivered(&w.alert(&e, "a1")), Delivery::AlreadyProposed { .. }));
    assert!(w.forge.with(|s| s.comments.is_empty()));
    assert!(matches!(delivered(&w.alert(&e, "a2")), Delivery::AlreadyProposed { .. }));
    assert!(matches!(delivered(&w.alert(&e, "a2")), Delivery::AlreadyProposed { .. }));
    w.forge.with(|s| {
        assert_eq!(s.pulls.len(), 1, "one PR per culprit");
        assert_eq!(s.comments.get(&1).map(Vec::len), Some(1), "{:?} {:?}", s.comments, s.calls);
    });
    assert!(w.main_file().contains("1.5.0"), "propose leaves main alone");
}

#[test]
fn a_failure_between_the_push_and_the_pr_is_finished_by_the_next_attempt_with_one_pr() {
    let w = World::new();
    let e = w.engine("propose");
    w.forge.fail_next("open_or_find_pull", 1);
    let r = w.alert(&e, "a1");
    assert_eq!(r.failed.len(), 1, "the 502 fails the incident: {r:?}");
    assert!(w.forge.with(|s| s.pulls.is_empty()));
    // The retry (what serve does with backoff) finds the branch pushed and opens its PR.
    let d = delivered(&w.alert(&e, "a1"));
    assert!(matches!(d, Delivery::Proposed { .. }), "{d:?}");
    assert_eq!(w.forge.with(|s| s.pulls.len()), 1);
}

#[test]
fn after_a_restart_the_open_pr_is_found_again_not_doubled() {
    let w = World::new();
    delivered(&w.alert(&w.engine("propose"), "a1"));
    // A new process, the same state dir and forge.
    let d = delivered(&w.alert(&w.engine("propose"), "a1"));
    assert!(matches!(d, Delivery::AlreadyProposed { .. }), "{d:?}");
    assert_eq!(w.forge.with(|s| s.pulls.len()), 1);
}

#[test]
fn a_pr_another_replica_opened_is_reused_and_dressed() {
    let w = World::new();
    // The other replica pushed the branch and opened the PR, then died before dressing it.
    delivered(&w.alert(&w.engine("propose"), "a1"));
    w.forge.with(|s| {
        s.pulls[0].labels.clear();
        s.reviewers.clear();
    });
    let d = delivered(&w.alert(&w.engine("propose"), "a2"));
    assert!(matches!(d, Delivery::AlreadyProposed { .. }), "{d:?}");
    w.forge.with(|s| {
        assert_eq!(s.pulls.len(), 1);
        assert!(s.pulls[0].labels.iter().any(|l| l.name == "metricops"), "dressed now");
        assert_eq!(s.reviewers.get(&1).map(Vec::len), Some(1));
    });
}

#[test]
fn merge_policy_merges_unless_a_person_holds_it() {
    let w = World::new();
    // Proposed first, then held by a person; policy says merge from here on.
    delivered(&w.alert(&w.engine("propose"), "a1"));
    w.forge.with(|s| s.pulls[0].labels.push(crate::adapters::github::Label { name: HOLD_LABEL.into() }));
    let e = w.engine("merge");
    let d = delivered(&w.alert(&e, "a1"));
    assert!(matches!(d, Delivery::AlreadyProposed { .. }), "held: {d:?}");
    assert!(w.main_file().contains("1.5.0"));
    w.forge.with(|s| s.pulls[0].labels.retain(|l| l.name != HOLD_LABEL));
    let d = delivered(&w.alert(&e, "a1"));
    assert!(matches!(d, Delivery::Merged { .. }), "unheld: {d:?}");
    assert!(w.main_file().contains("1.4.2"), "{}", w.main_file());
    assert!(w.forge.with(|s| s.calls.contains(&"delete_branch")));
}

#[test]
fn auto_merge_switched_off_is_said_on_the_pr_once() {
    let w = World::new();
    w.forge.with(|s| s.requires_checks = true);
    let e = w.engine("merge");
    for _ in 0..2 {
        let d = delivered(&w.alert(&e, "a1"));
        assert!(matches!(d, Delivery::MergeRefused { .. }), "{d:?}");
    }
    w.forge.with(|s| {
        let said: Vec<_> =
            s.comments.get(&1).into_iter().flatten().filter(|c| c.contains("auto-merge is off")).collect();
        assert_eq!(said.len(), 1, "{:?}", s.comments);
    });
    w.forge.with(|s| s.auto_merge_allowed = true);
    assert!(matches!(delivered(&w.alert(&e, "a1")), Delivery::AutoMergeEnabled { .. }));
}

#[test]
fn a_cancel_suppresses_the_culprit_within_its_window() {
    let w = World::new();
    let e = w.engine("propose");
    delivered(&w.alert(&e, "a1"));
    w.forge.with(|s| {
        let pr = &mut s.pulls[0];
        pr.state = "closed".into();
        pr.closed_at = Some(Utc::now().to_rfc3339());
        pr.labels.push(crate::adapters::github::Label { name: CANCELLED_LABEL.into() });
    });
    assert!(matches!(delivered(&w.alert(&e, "a2")), Delivery::Suppressed { .. }));
    assert_eq!(w.forge.with(|s| s.pulls.len()), 1);
    // Cancelled long ago: proposed again.
    w.forge.with(|s| s.pulls[0].closed_at = Some((Utc::now() - Duration::days(30)).to_rfc3339()));
    assert!(matches!(delivered(&w.alert(&e, "a3")), Delivery::Proposed { .. }));
    assert_eq!(w.forge.with(|s| s.pulls.len()), 2);
}

#[test]
fn the_scan_opens_the_pr_of_a_revert_branch_left_without_one() {
    let w = World::new();
    let e = w.engine("propose");
    // Every PR call fails: the branch is pushed, no PR.
    w.forge.fail_next("open_or_find_pull", 1);
    assert_eq!(w.alert(&e, "a1").failed.len(), 1);
    assert!(w.forge.with(|s| s.pulls.is_empty()));
    rt().block_on(e.finish_unfinished(Utc::now()));
    w.forge.with(|s| {
        assert_eq!(s.pulls.len(), 1, "opened from the branch");
        let pr = &s.pulls[0];
        assert_eq!(pr.head.name, w.branch());
        assert_eq!(pr.base.name, "main");
        let body = pr.body.as_deref().unwrap();
        assert!(
            body.contains("found unfinished") && body.contains(&format!("culprit={}", w.culprit)),
            "{body}"
        );
        assert!(body.contains("incident=shop/checkout@recovered"), "{body}");
        assert!(pr.labels.iter().any(|l| l.name == "metricops"));
    });
    // Nothing more to do: a second scan opens nothing.
    rt().block_on(e.finish_unfinished(Utc::now()));
    assert_eq!(w.forge.with(|s| s.pulls.len()), 1);
}

#[test]
fn workloads_are_reconciled_one_at_a_time_and_an_alert_storm_makes_one_pr() {
    let w = World::new();
    let e = w.engine("propose");
    let rt = rt();
    let reports = rt.block_on(async {
        let runs = (0..6).map(|i| {
            let e = e.clone();
            let w = &w;
            async move {
                let body = format!(
                    r#"{{"name":"CheckoutErrors","fingerprint":"f{i}","startsAt":"{}","labels":{{"namespace":"shop","deployment":"checkout"}}}}"#,
                    (w.now - Duration::minutes(10)).to_rfc3339()
                );
                let alerts = parse_generic(&body, w.now).unwrap();
                e.handle_alerts(Source::Generic, &alerts, std::time::Instant::now(), w.now).await
            }
        });
        futures::future::join_all(runs).await
    });
    let proposed = reports.iter().filter(|r| matches!(delivered(r), Delivery::Proposed { .. })).count();
    assert_eq!(proposed, 1, "one opens it, the others re-confirm");
    assert_eq!(w.forge.with(|s| s.pulls.len()), 1);
}
