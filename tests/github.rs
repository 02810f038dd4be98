//! The bot as a GitHub App, driven end to end through the GitHub stand-in (`support::github`), which
//! checks every request against GitHub's OpenAPI description and serves git over the real
//! `git http-backend`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use metricops::config::Config;
use metricops::domain::policy::{Decision, IgnoreReason};
use metricops::pipeline::{Delivery, Report};

use crate::support::github::GitHub;
use crate::support::*;

pub(crate) const CHECKOUT: &str = "ghcr.io/shop/checkout";
pub(crate) const INSTALLATION: u64 = 77;
pub(crate) const SECRET: &str = "webhook secret for tests";

/// A manifests repo on the stand-in with a bad deploy whose original PR was merged by dana.
pub(crate) struct World {
    pub gh: GitHub,
    pub bare: PathBuf,
    pub culprit: String,
    pub original_pr: u64,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

/// Commits in `Repo` are a minute apart from 1_790_000_000; the alert fires an hour later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_003_600, 0).unwrap()
}

pub(crate) fn alert(fingerprint: &str) -> String {
    let starts = (now() - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    std::fs::read_to_string(format!("{}/fixtures/alertmanager/demo-firing.json", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("{{STARTS_AT}}", &starts)
        .replace("6f3c1d2e9a7b4c10", fingerprint)
}

impl World {
    pub fn new() -> World {
        World::on(GitHub::start())
    }

    /// The same repository and history on a stand-in laid out as GitHub Enterprise Server.
    pub fn enterprise() -> World {
        World::on(GitHub::start_enterprise())
    }

    pub(crate) fn on(gh: GitHub) -> World {
        let bare = gh.add_repo("shop", "manifests", INSTALLATION);
        gh.add_collaborator("shop", "manifests", "dana");
        gh.add_collaborator("shop", "manifests", "oncall");
        let work = Repo::new();
        work.write("apps/checkout/base/deployment.yaml", &deployment("checkout", CHECKOUT));
        work.write("apps/checkout/overlays/prod/kustomization.yaml", &kustomization(CHECKOUT, "1.4.2"));
        work.commit("Add checkout");
        work.write("apps/checkout/overlays/prod/kustomization.yaml", &kustomization(CHECKOUT, "1.5.0"));
        let culprit = work.commit("deploy checkout 1.5.0 to prod");
        work.write("README.md", "shop manifests\n");
        work.commit("docs");
        push(&work, &bare, "main");
        let original_pr = gh.add_merged_pull(
            "shop",
            "manifests",
            "dana",
            "Deploy checkout 1.5.0",
            "ci/checkout-1.5.0",
            &culprit,
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.pem"), gh.private_key_pem()).unwrap();
        std::fs::write(dir.path().join("webhook-secret"), format!("{SECRET}\n")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        World { gh, bare, culprit, original_pr, dir, rt }
    }

    pub fn config(&self, action: &str, extra_github: &str, state: &str) -> Config {
        let text = self.config_text(action, extra_github);
        let mut c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        c.state_dir = Some(self.dir.path().join(state));
        c
    }

    /// The config's text (no `state_dir`: `config` sets it; a file for `serve` needs one added).
    pub fn config_text(&self, action: &str, extra_github: &str) -> String {
        format!(
            "repos:\n- name: shop\n  url: {url}\n  forge: github\nworkloads:\n- name: shop/checkout\n  match: {{namespace: shop, deployment: checkout}}\n  repo: shop\n  paths: [apps/checkout/overlays/prod]\n  image: {CHECKOUT}\n  pause: [{{file: clusters/prod/checkout-automation.yaml, kind: ImageUpdateAutomation}}]\n\
policy:\n  action: {action}\n  max_culprit_age: 24h\n\
github:\n  app_id: {app}\n  private_key_file: {key}\n  webhook_secret_file: {secret}\n  api_url: {api}\n  reviewers: [oncall]\n{budget}{extra_github}",
            budget = if extra_github.contains("retry_budget") { "" } else { "  retry_budget: 5s\n" },
            url = self.gh.git_url("shop", "manifests"),
            app = crate::support::github::APP_ID,
            key = self.dir.path().join("app.pem").display(),
            secret = self.dir.path().join("webhook-secret").display(),
            api = self.gh.url(),
        )
    }

    pub fn run(&self, config: &Config, body: &str) -> Report {
        let config = std::sync::Arc::new(config.clone());
        let engine = {
            let _guard = self.rt.enter();
            metricops::wiring::Wired::engine_only(config).unwrap()
        };
        self.rt.block_on(engine.handle_alertmanager(body, now())).unwrap()
    }

    pub fn branch(&self) -> String {
        format!("metricops/revert-{}", &self.culprit[..12])
    }

    pub fn main_file(&self) -> String {
        git_show(&self.bare, "main", "apps/checkout/overlays/prod/kustomization.yaml")
    }
}

fn push(work: &Repo, bare: &Path, branch: &str) {
    work.git(&["push", "-q", bare.to_str().unwrap(), branch]);
}

fn git_show(bare: &Path, rev: &str, path: &str) -> String {
    let out = std::process::Command::new("git")
        .args(["show", &format!("{rev}:{path}")])
        .current_dir(bare)
        .output()
        .unwrap();
    assert!(out.status.success(), "git show {rev}:{path}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn git_in(bare: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").args(args).current_dir(bare).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub(crate) fn delivery(report: &Report) -> Delivery {
    assert!(report.failed.is_empty(), "incident failed: {:?}", report.failed);
    report.outcomes.first().and_then(|o| o.delivery.clone()).expect("a delivery")
}

#[test]
fn a_502_on_the_installation_token_is_retried_within_the_budget() {
    let w = World::new();
    let config = w.config("propose", "", "state");
    w.gh.fail_next("POST", "/app/installations/", 502, &[], 2);
    let d = delivery(&w.run(&config, &alert("fp-1")));
    assert!(matches!(d, Delivery::Proposed { .. }), "{d:?}");
    let tokens: Vec<u16> =
        w.gh.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/access_tokens"))
            .map(|r| r.status)
            .collect();
    assert_eq!(tokens[..3], [502, 502, 201], "{tokens:?}");
    w.gh.assert_faithful();

    // One that keeps failing: a give-up in one short line, GitHub's status and text.
    let w = World::new();
    let config = w.config("propose", "  retry_budget: 1s\n", "state");
    w.gh.fail_next("POST", "/app/installations/", 502, &[], 1000);
    let r = w.run(&config, &alert("fp-1"));
    let (_, e) = r.failed.first().expect("the incident fails");
    assert!(
        e.contains("/access_tokens: gave up after") && e.contains("last: 502 Bad Gateway: Bad Gateway"),
        "{e}"
    );
    assert!(!e.contains("GitHub: GitHub:") && !e.contains('\n'), "{e}");
}

#[test]
fn a_pull_request_github_made_while_answering_502_is_dressed_all_the_same() {
    let w = World::new();
    // GitHub creates the PR, the answer is a 502; the bot's retry then gets 422 "already exists".
    w.gh.fail_next_after_doing("POST", "/repos/shop/manifests/pulls", 502, 1);
    let config = w.config("propose", "", "state");
    let d = delivery(&w.run(&config, &alert("fp-1")));
    let pr = d.pr().expect("a PR").number;
    let pulls = w.gh.pulls("shop", "manifests");
    assert_eq!(pulls.iter().filter(|p| p.head_ref == w.branch()).count(), 1, "one PR: {pulls:#?}");
    let p = pulls.iter().find(|p| p.number == pr).unwrap();
    assert_eq!(p.labels, ["metricops", "rollback"], "labelled though GitHub answered 502");
    let mut reviewers = p.requested_reviewers.clone();
    reviewers.sort();
    assert_eq!(reviewers, ["dana", "oncall"]);
    w.gh.assert_faithful();
}

#[test]
fn configured_reviewers_are_asked_even_when_the_culprits_author_is_not_a_collaborator() {
    let w = World::new();
    // dana merged the bad deploy but has left the repository: GitHub refuses a request that names her.
    w.gh.set_permission("shop", "manifests", "dana", "none");
    let config = w.config("propose", "", "state");
    let d = delivery(&w.run(&config, &alert("fp-1")));
    let pr = d.pr().expect("a PR").number;
    let p = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.number == pr).unwrap();
    assert_eq!(p.requested_reviewers, ["oncall"], "the configured reviewer is still asked");
    w.gh.assert_faithful();
}

#[test]
fn an_alert_opens_one_pull_request_with_body_labels_and_reviewers() {
    let w = World::new();
    let config = w.config("propose", "", "state");
    let d = delivery(&w.run(&config, &alert("fp-1")));
    let Delivery::Proposed { branch, pr: Some(pr) } = d else { panic!("not proposed: {d:?}") };
    assert_eq!(branch, w.branch());

    let pulls = w.gh.pulls("shop", "manifests");
    let open: Vec<_> = pulls.iter().filter(|p| p.state == "open").collect();
    assert_eq!(open.len(), 1, "{pulls:#?}");
    let p = open[0];
    assert_eq!(p.number, pr.number);
    assert_eq!(p.title, "Revert shop/checkout: checkout 1.5.0 → 1.4.2");
    assert_eq!((p.head_ref.as_str(), p.base_ref.as_str()), (w.branch().as_str(), "main"));
    for want in [
        "CheckoutErrorBudgetBurn",
        "critical",
        "0.073",
        "`ghcr.io/shop/checkout` from `1.5.0` to `1.4.2`",
        w.culprit.as_str(),
        &format!("from #{} [Deploy checkout 1.5.0]", w.original_pr),
        "by @dana",
        "**Decision:** propose",
        "**Revert mode:** commit",
        "[runbook](https://runbooks.example/checkout-errors)",
        "/metricops approve",
    ] {
        assert!(p.body.contains(want), "PR body lacks {want:?}:\n{}", p.body);
    }
    assert_eq!(p.labels, ["metricops", "rollback"]);
    let mut reviewers = p.requested_reviewers.clone();
    reviewers.sort();
    assert_eq!(reviewers, ["dana", "oncall"]);
    // The branch GitHub has is the revert: main's tip plus one commit that puts 1.4.2 back.
    let bare = &w.bare;
    assert_eq!(
        git_show(bare, &w.branch(), "apps/checkout/overlays/prod/kustomization.yaml"),
        kustomization(CHECKOUT, "1.4.2")
    );
    assert_eq!(
        git_in(bare, &["rev-parse", &format!("{}^", w.branch())]),
        git_in(bare, &["rev-parse", "main"])
    );
    assert_eq!(w.main_file(), kustomization(CHECKOUT, "1.5.0"), "propose must not touch main");
    // Git over HTTP: the token goes with the first request (no 401 round trip first), one ref
    // advertisement for the fetch and one for the push.
    let git: Vec<(String, u16, String)> =
        w.gh.requests()
            .into_iter()
            .filter(|r| r.path.contains(".git/"))
            .map(|r| (r.path.rsplit('/').next().unwrap_or_default().to_string(), r.status, r.auth))
            .collect();
    assert!(git.iter().all(|(_, s, a)| *s == 200 && a == "token"), "{git:#?}");
    let count = |p: &str| git.iter().filter(|(q, _, _)| q == p).count();
    assert_eq!(count("refs?service=git-upload-pack"), 1, "{git:#?}");
    assert_eq!(count("refs?service=git-receive-pack"), 1, "{git:#?}");
    w.gh.assert_faithful();
}

#[test]
fn later_alerts_update_the_same_pull_request_and_repeats_stay_quiet() {
    let w = World::new();
    let config = w.config("propose", "", "state");
    let first = delivery(&w.run(&config, &alert("fp-1")));
    let number = first.pr().unwrap().number;
    // A new alert for the same culprit: the same PR, one comment.
    let second = delivery(&w.run(&config, &alert("fp-2")));
    assert_eq!(second, Delivery::AlreadyProposed { branch: w.branch(), pr: first.pr().cloned() });
    // Alertmanager's repeat of the same alert: no new comment.
    delivery(&w.run(&config, &alert("fp-2")));
    delivery(&w.run(&config, &alert("fp-1")));
    let pulls = w.gh.pulls("shop", "manifests");
    let ours: Vec<_> = pulls.iter().filter(|p| p.head_ref == w.branch()).collect();
    assert_eq!(ours.len(), 1, "{pulls:#?}");
    assert_eq!(ours[0].number, number);
    assert_eq!(ours[0].comments.len(), 1, "{:#?}", ours[0].comments);
    assert!(
        ours[0].comments[0].contains("Still firing")
            && ours[0].comments[0].contains("CheckoutErrorBudgetBurn"),
        "{}",
        ours[0].comments[0]
    );
    w.gh.assert_faithful();
}

#[test]
fn two_replicas_racing_end_with_one_pull_request() {
    let w = World::new();
    let a = w.config("propose", "", "replica-a");
    let b = w.config("propose", "", "replica-b");
    let body = alert("fp-1");
    let (da, db) = std::thread::scope(|s| {
        let ta = s.spawn(|| delivery(&w.run(&a, &body)));
        let tb = s.spawn(|| delivery(&w.run(&b, &body)));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let pulls = w.gh.pulls("shop", "manifests");
    assert_eq!(pulls.iter().filter(|p| p.head_ref == w.branch()).count(), 1, "{pulls:#?}");
    assert_eq!(da.pr().map(|p| p.number), db.pr().map(|p| p.number), "{da:?} vs {db:?}");
    // Whoever came second, it says so rather than failing.
    let labels = [da.label(), db.label()];
    assert!(labels.contains(&"proposed") || labels.contains(&"already_proposed"), "{labels:?}");
    // And a replica that restarts later (fresh state) finds it too.
    let c = w.config("propose", "", "replica-c");
    assert!(matches!(delivery(&w.run(&c, &body)), Delivery::AlreadyProposed { .. }));
    w.gh.assert_faithful();
}

#[test]
fn merge_policy_merges_the_revert_and_deletes_its_branch() {
    let w = World::new();
    let config = w.config("merge", "  merge_method: squash\n", "state");
    let d = delivery(&w.run(&config, &alert("fp-1")));
    let Delivery::Merged { branch, pr: Some(pr) } = d else { panic!("not merged: {d:?}") };
    assert_eq!(branch, "main");
    assert_eq!(w.main_file(), kustomization(CHECKOUT, "1.4.2"));
    let msg = git_in(&w.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(msg.starts_with(&format!("Revert \"deploy checkout 1.5.0 to prod\" (#{})", pr.number)), "{msg}");
    assert!(
        msg.contains(&format!("Metricops-Culprit: {}", w.culprit)),
        "the landed commit keeps the trailers:\n{msg}"
    );
    let p = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.number == pr.number).unwrap();
    assert!(p.merged && p.state == "closed", "{p:?}");
    assert!(!w.gh.branches("shop", "manifests").iter().any(|(b, _)| *b == w.branch()), "branch not deleted");
    // The next alert finds the revert landed: main no longer runs 1.5.0, nothing more is opened.
    let again = w.run(&config, &alert("fp-1"));
    let o = again.outcomes.first().unwrap_or_else(|| panic!("{again:?}"));
    assert_eq!((o.decision.label(), o.delivery.is_none()), ("already_rolled_back", true), "{o:?}");
    let named = matches!(&o.decision, Decision::Ignore(IgnoreReason::AlreadyRolledBack { by }) if by.contains("Revert"));
    assert!(named, "the reason names the commit that set it back: {:?}", o.decision);
    assert_eq!(w.gh.pulls("shop", "manifests").iter().filter(|p| p.head_ref == w.branch()).count(), 1);
    w.gh.assert_faithful();
}

#[test]
fn auto_merge_switched_off_in_the_repository_is_said_once_on_the_pr_and_fails_nothing() {
    let w = World::new();
    // Checks required, and "Allow auto-merge" left off: GitHub's default.
    w.gh.protect("shop", "manifests", "main", &["ci/kubeconform"]);
    let config = w.config("merge", "", "state");
    for fp in ["fp-1", "fp-2"] {
        let d = delivery(&w.run(&config, &alert(fp)));
        let Delivery::MergeRefused { reason, .. } = &d else { panic!("not refused: {d:?}") };
        assert!(reason.contains("Allow auto-merge"), "{reason}");
    }
    let pr = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.head_ref == w.branch()).unwrap();
    assert_eq!(pr.state, "open");
    let said: Vec<String> =
        w.gh.comments_on("shop", "manifests", pr.number)
            .into_iter()
            .map(|(_, _, b)| b)
            .filter(|b| b.contains("refuses auto-merge"))
            .collect();
    assert_eq!(said.len(), 1, "said once, not at every alert: {said:#?}");
    assert!(said[0].contains("Settings → General → Allow auto-merge"), "{}", said[0]);
    assert_eq!(w.main_file(), kustomization(CHECKOUT, "1.5.0"), "nothing merged");
    w.gh.assert_faithful();
}

#[test]
fn on_github_enterprise_auto_merge_goes_to_api_graphql() {
    let w = World::enterprise();
    assert!(w.gh.url().ends_with("/api/v3"), "api_url as GHES users write it: {}", w.gh.url());
    w.gh.protect("shop", "manifests", "main", &["ci/kubeconform"]);
    w.gh.allow_auto_merge("shop", "manifests");
    let d = delivery(&w.run(&w.config("merge", "", "state"), &alert("fp-1")));
    assert!(matches!(d, Delivery::AutoMergeEnabled { .. }), "{d:?}");
    let graphql: Vec<_> =
        w.gh.requests()
            .into_iter()
            .filter(|r| r.path.contains("graphql"))
            .map(|r| (r.path, r.status))
            .collect();
    assert_eq!(graphql, vec![("/api/graphql".to_string(), 200)], "GraphQL where GHES serves it");
    w.gh.assert_faithful();
}

#[test]
fn protected_branches_get_auto_merge_and_the_closed_webhook_deletes_the_branch() {
    let w = World::new();
    w.gh.protect("shop", "manifests", "main", &["ci/kubeconform"]);
    w.gh.allow_auto_merge("shop", "manifests");
    let config = w.config("merge", "  merge_method: rebase\n", "state");
    let d = delivery(&w.run(&config, &alert("fp-1")));
    let Delivery::AutoMergeEnabled { pr, .. } = d else { panic!("no auto-merge: {d:?}") };
    let p = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.number == pr.number).unwrap();
    assert_eq!(p.auto_merge.as_deref().map(str::to_lowercase).as_deref(), Some("rebase"));
    assert!(!p.merged);
    assert_eq!(w.main_file(), kustomization(CHECKOUT, "1.5.0"), "nothing lands before the checks pass");
    w.gh.complete_checks("shop", "manifests", pr.number);
    assert_eq!(w.main_file(), kustomization(CHECKOUT, "1.4.2"));

    // GitHub then sends `pull_request` closed; the bot deletes the branch.
    let server =
        w.rt.block_on(metricops::server::start(
            std::sync::Arc::new(w.config("merge", "", "server")),
            "127.0.0.1:0",
        ))
        .unwrap();
    let payload = closed_payload(pr.number, &w.branch(), true);
    let (status, text) = post_webhook(
        server.addr,
        "pull_request",
        "d-closed-1",
        &payload,
        Some(&GitHub::sign_webhook(SECRET, payload.as_bytes())),
    );
    assert_eq!(status, 200, "{text}");
    wait_until(
        || !w.gh.branches("shop", "manifests").iter().any(|(b, _)| *b == w.branch()),
        "the revert branch to be deleted",
    );
    w.rt.block_on(server.stop());
    w.gh.assert_faithful();
}

#[test]
fn not_installed_says_so_and_nothing_is_pushed() {
    let w = World::new();
    w.gh.uninstall("shop", "manifests");
    let config = w.config("propose", "", "state");
    let report = w.run(&config, &alert("fp-1"));
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("not installed on shop/manifests"), "{}", report.failed[0].1);
    assert!(w.gh.pulls("shop", "manifests").iter().all(|p| p.head_ref != w.branch()));
    w.gh.assert_faithful();
}

#[test]
fn server_errors_and_rate_limits_are_retried_and_a_give_up_is_redriven_by_the_next_alert() {
    let w = World::new();
    let config = w.config("propose", "", "state");
    w.gh.fail_next("POST", "/repos/shop/manifests/pulls", 502, &[], 2);
    w.gh.fail_next(
        "POST",
        "/repos/shop/manifests/issues",
        403,
        &[("retry-after", "1"), ("x-ratelimit-remaining", "0")],
        1,
    );
    let d = delivery(&w.run(&config, &alert("fp-1")));
    assert!(matches!(d, Delivery::Proposed { .. }), "{d:?}");
    let p = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.head_ref == w.branch()).unwrap();
    assert_eq!(p.labels, ["metricops", "rollback"], "the rate-limited label call was retried");
    let creates =
        w.gh.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/repos/shop/manifests/pulls")
            .map(|r| r.status)
            .collect::<Vec<_>>();
    assert_eq!(creates, [502, 502, 201]);

    // A GitHub that keeps failing: the incident fails with a clear error, and the next alert re-drives.
    let w = World::new();
    let config = w.config("propose", "  retry_budget: 1s\n", "state");
    w.gh.fail_next("POST", "/repos/shop/manifests/pulls", 503, &[], 3);
    let report = w.run(&config, &alert("fp-1"));
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        report.failed[0].1.contains("gave up") && report.failed[0].1.contains("503"),
        "{}",
        report.failed[0].1
    );
    let d = delivery(&w.run(&config, &alert("fp-1")));
    assert!(matches!(d, Delivery::Proposed { .. } | Delivery::AlreadyProposed { .. }), "{d:?}");
    assert_eq!(w.gh.pulls("shop", "manifests").iter().filter(|p| p.head_ref == w.branch()).count(), 1);
    w.gh.assert_faithful();
}

#[test]
fn the_webhook_refuses_forgeries_replays_and_oversized_bodies() {
    let w = World::new();
    let config = w.config("propose", "  webhook_max_bytes: 65536\n", "server");
    let server = w.rt.block_on(metricops::server::start(std::sync::Arc::new(config), "127.0.0.1:0")).unwrap();
    let ping = r#"{"zen":"Keep it logically awesome.","hook_id":1,"hook":{"type":"App","id":1,"name":"web","active":true,"events":["pull_request"],"config":{"content_type":"json","url":"http://x"},"updated_at":"2026-01-01T00:00:00Z","created_at":"2026-01-01T00:00:00Z","app_id":4242}}"#;
    let good = GitHub::sign_webhook(SECRET, ping.as_bytes());
    let (s, t) = post_webhook(server.addr, "ping", "d-1", ping, None);
    assert_eq!(s, 401, "unsigned: {t}");
    assert!(t.contains("X-Hub-Signature-256"), "{t}");
    let (s, t) = post_webhook(
        server.addr,
        "ping",
        "d-1",
        ping,
        Some(&GitHub::sign_webhook("wrong secret", ping.as_bytes())),
    );
    assert_eq!(s, 401, "forged: {t}");
    let (s, t) = post_webhook(server.addr, "ping", "d-1", &ping.replace("awesome", "AWESOME"), Some(&good));
    assert_eq!(s, 401, "tampered body: {t}");
    let (s, t) = post_webhook(server.addr, "ping", "d-1", ping, Some(&good));
    assert_eq!((s, t.as_str()), (200, "pong\n"));
    let (s, t) = post_webhook(server.addr, "ping", "d-1", ping, Some(&good));
    assert_eq!(s, 200);
    assert!(t.contains("handled already"), "replay: {t}");
    let big = format!("{{\"zen\":\"{}\"}}", "x".repeat(70_000));
    let (s, _) =
        post_webhook(server.addr, "ping", "d-2", &big, Some(&GitHub::sign_webhook(SECRET, big.as_bytes())));
    assert_eq!(s, 413);
    let star = r#"{"action":"created","starred_at":"2026-01-01T00:00:00Z","repository":{"id":1,"name":"manifests","full_name":"shop/manifests"},"sender":{"login":"eve","id":2}}"#;
    let (s, t) =
        post_webhook(server.addr, "star", "d-3", star, Some(&GitHub::sign_webhook(SECRET, star.as_bytes())));
    assert_eq!(s, 202, "{t}");
    // A real installation_repositories delivery is understood.
    let added = std::fs::read_to_string(format!(
        "{}/fixtures/github/octokit.installation_repositories.added.payload.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let (s, t) = post_webhook(
        server.addr,
        "installation_repositories",
        "d-4",
        &added,
        Some(&GitHub::sign_webhook(SECRET, added.as_bytes())),
    );
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("installation 957387: 1 repos recorded"), "{t}");
    w.rt.block_on(server.stop());
}

fn closed_payload(number: u64, branch: &str, merged: bool) -> String {
    let text = std::fs::read_to_string(format!(
        "{}/fixtures/github/octokit.pull_request.closed.unmerged.payload.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["number"] = number.into();
    v["pull_request"]["number"] = number.into();
    v["pull_request"]["head"]["ref"] = branch.into();
    v["pull_request"]["head"]["repo"]["full_name"] = "shop/manifests".into();
    v["repository"]["full_name"] = "shop/manifests".into();
    v["pull_request"]["merged"] = merged.into();
    if merged {
        v["pull_request"]["merged_at"] = "2026-09-21T12:00:00Z".into();
    }
    v.to_string()
}

/// A plain HTTP/1.1 POST, the way GitHub's hookshot sends it.
pub(crate) fn post_webhook(
    addr: std::net::SocketAddr,
    event: &str,
    delivery: &str,
    body: &str,
    signature: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let sig = signature.map(|v| format!("X-Hub-Signature-256: {v}\r\n")).unwrap_or_default();
    write!(
        s,
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: GitHub-Hookshot/test\r\nContent-Type: application/json\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\n{sig}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer (413) before it has read all of an oversized body.
    let _ = s.write_all(body.as_bytes());
    // Read the answer: headers, then Content-Length bytes (the server may keep the connection open).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!(
                "reading the answer to {event} {delivery}: {e} (read so far: {:?})",
                String::from_utf8_lossy(&out)
            ),
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if len.is_some_and(|n| rest.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Waits for something another thread does (no timing is asserted: a generous deadline only turns a
/// hang into a failure).
pub(crate) fn wait_until(cond: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The cluster writes of the rollback followers, played in memory: a kept rollback shows in the
/// index at once, as the watch would bring it back, or (`lagging`) not yet: the writes wait in
/// `unseen` until `catch_up`, as a watch event still on its way.
#[derive(Default)]
struct EchoWrites {
    index: std::sync::Arc<std::sync::RwLock<metricops::domain::cluster::ClusterIndex>>,
    refreshed: std::sync::Mutex<Vec<String>>,
    lagging: bool,
    unseen: std::sync::Mutex<Vec<(metricops::domain::cluster::Deployer, Option<String>)>>,
}

impl EchoWrites {
    fn echo(&self, d: &metricops::domain::cluster::Deployer, rollback: Option<String>) {
        let mut ix = self.index.write().unwrap();
        match rollback {
            Some(r) => drop(ix.confirming.insert(d.clone(), r)),
            None => drop(ix.confirming.remove(d)),
        }
    }

    /// The watch brings the writes made so far.
    fn catch_up(&self) {
        for (d, r) in std::mem::take(&mut *self.unseen.lock().unwrap()) {
            self.echo(&d, r);
        }
    }
}

impl metricops::pipeline::confirm::ClusterWrites for EchoWrites {
    fn refresh<'a>(
        &'a self,
        d: &'a metricops::domain::cluster::Deployer,
        _now: DateTime<Utc>,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<String>> {
        self.refreshed.lock().unwrap().push(d.to_string());
        Box::pin(async { Ok("refresh".to_string()) })
    }
    fn keep<'a>(
        &'a self,
        d: &'a metricops::domain::cluster::Deployer,
        rollback: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        let rollback = rollback.map(str::to_string);
        if self.lagging {
            self.unseen.lock().unwrap().push((d.clone(), rollback));
        } else {
            self.echo(d, rollback);
        }
        Box::pin(async { Ok(()) })
    }
    fn exclude<'a>(
        &'a self,
        x: &'a metricops::domain::image_updater::ApiExclusion,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { anyhow::bail!("no ImageUpdater in this test: {}", x.key) })
    }
}

/// A revert PR merged by the bot and its rollback begun, on a cluster where the Argo CD
/// Application deploying shop/checkout from the repository is healthy at the old commit.
struct MergedRevert {
    pr: u64,
    merge_commit: String,
    app: serde_json::Value,
    index: std::sync::Arc<std::sync::RwLock<metricops::domain::cluster::ClusterIndex>>,
    writes: std::sync::Arc<EchoWrites>,
    engine: metricops::pipeline::Engine,
}

impl MergedRevert {
    fn new(w: &World, lagging: bool) -> Self {
        let config = w.config("merge", "", "state");
        let d = delivery(&w.run(&config, &alert("fp-1")));
        let Delivery::Merged { pr: Some(pr), .. } = d else { panic!("not merged: {d:?}") };
        let merge_commit = git_in(&w.bare, &["rev-parse", "main"]);
        let index =
            std::sync::Arc::new(std::sync::RwLock::new(metricops::domain::cluster::ClusterIndex::default()));
        let mut app: serde_json::Value =
            crate::support::kube::load_fixture("fixtures/kube/argocd/application.single-source.yaml");
        app["spec"]["source"] = serde_json::json!({"repoURL": w.gh.git_url("shop", "manifests"), "path": "apps/checkout/overlays/prod", "targetRevision": "main"});
        app["status"]["resources"] = serde_json::json!([{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "shop", "name": "checkout"}]);
        app["status"]["health"] = serde_json::json!({"status": "Healthy"});
        index.write().unwrap().upsert(&app);
        let writes = std::sync::Arc::new(EchoWrites { index: index.clone(), lagging, ..Default::default() });
        let mut engine = {
            let _guard = w.rt.enter();
            metricops::wiring::Wired::engine_only(std::sync::Arc::new(config)).unwrap()
        };
        engine.cluster = Some(index.clone());
        engine.cluster_writes = Some(writes.clone());
        // GitHub's `pull_request` closed (merged): the rollback begins at the merge commit.
        let repo = metricops::forge::RepoId { owner: "shop".into(), name: "manifests".into() };
        w.rt.block_on(engine.revert_closed(&repo, &w.branch(), true));
        writes.catch_up();
        MergedRevert { pr: pr.number, merge_commit, app, index, writes, engine }
    }

    /// Argo CD synced the merge commit, healthy; the object carries what the bot kept on it.
    fn synced_healthy(&mut self) {
        let app = &mut self.app;
        app["status"]["sync"] = serde_json::json!({"status": "Synced", "revision": self.merge_commit});
        app["status"]["operationState"]["phase"] = serde_json::json!("Succeeded");
        let kept = self.index.read().unwrap().confirming.values().next().cloned().expect("the rollback kept");
        app["metadata"]["annotations"]["metricops.dev/confirm"] = serde_json::json!(kept);
        self.index.write().unwrap().upsert(app);
    }

    /// The bot's rollback comments on the PR: (id, body).
    fn comments(&self, w: &World) -> Vec<(u64, String)> {
        w.gh.comments_on("shop", "manifests", self.pr)
            .into_iter()
            .filter(|(_, _, b)| b.contains("<!-- metricops:confirm "))
            .map(|(id, _, b)| (id, b))
            .collect()
    }

    /// The Application, as the follower names it.
    fn deployer(&self) -> metricops::domain::cluster::Deployer {
        self.index.read().unwrap().confirming.keys().next().cloned().expect("a rollback kept")
    }

    fn comment_edits(w: &World) -> usize {
        w.gh.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.contains("/issues/comments/"))
            .count()
    }
}

#[test]
fn a_merged_revert_pr_gets_one_rollback_comment_edited_as_steps_come() {
    use metricops::pipeline::confirm::Firing;
    let w = World::new();
    let mut m = MergedRevert::new(&w, false);
    assert_eq!(m.writes.refreshed.lock().unwrap().as_slice(), ["Argo CD Application argocd/checkout"]);
    let first = m.comments(&w);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0].1.contains(&format!("<!-- metricops:confirm {} -->", m.merge_commit)), "{}", first[0].1);
    assert!(
        first[0].1.contains("**Rollback in progress.** merged → waiting to be synced…"),
        "{}",
        first[0].1
    );

    // Argo CD syncs the merge commit, healthy; no alert fires any more.
    m.synced_healthy();
    w.rt.block_on(m.engine.follow_rollbacks(&Firing::Alertmanager(vec![]), Utc::now()));
    let after = m.comments(&w);
    assert_eq!(after.len(), 1, "one comment, edited in place: {after:#?}");
    assert_eq!(after[0].0, first[0].0, "the same comment");
    assert!(after[0].1.contains("**Rollback confirmed.** merged → synced in"), "{}", after[0].1);
    assert!(after[0].1.contains("→ SLO resolved in") && after[0].1.contains("✅"), "{}", after[0].1);
    assert!(m.index.read().unwrap().confirming.is_empty(), "the kept rollback is dropped at the end");
    assert_eq!(MergedRevert::comment_edits(&w), 1);
    w.gh.assert_faithful();
}

/// The index is fed by a watch: right after the follower writes, it may still show the copy
/// before. A look then must not tell the steps again nor count the rollback twice (it did, and
/// `metricops_rollbacks_total{outcome="confirmed"}` read 2 for one rollback in CI).
#[test]
fn a_look_before_the_watch_brings_the_last_write_back_tells_nothing_twice() {
    use metricops::pipeline::confirm::Firing;
    let w = World::new();
    let mut m = MergedRevert::new(&w, true);
    m.synced_healthy();
    let look = |m: &MergedRevert| {
        w.rt.block_on(m.engine.follow_rollbacks(&Firing::Alertmanager(vec![]), Utc::now()))
    };
    look(&m);
    assert!(m.comments(&w)[0].1.contains("**Rollback confirmed.**"), "{:#?}", m.comments(&w));
    assert_eq!(
        m.writes.unseen.lock().unwrap().last(),
        Some(&(m.deployer(), None)),
        "the kept rollback dropped"
    );
    // The watch has not brought the drop yet: the index still holds the copy from before the end.
    assert_eq!(m.index.read().unwrap().confirming.len(), 1);
    look(&m);
    look(&m);
    let metrics = m.engine.metrics.render();
    assert!(metrics.contains(r#"metricops_rollbacks_total{outcome="confirmed"} 1"#), "{metrics}");
    for step in ["synced", "healthy", "resolved"] {
        assert!(
            metrics.contains(&format!(r#"metricops_rollback_step_seconds_count{{step="{step}"}} 1"#)),
            "{step}: {metrics}"
        );
    }
    assert_eq!(MergedRevert::comment_edits(&w), 1, "the comment is edited once");
    let drops = m.writes.unseen.lock().unwrap().iter().filter(|(_, r)| r.is_none()).count();
    assert_eq!(drops, 3, "the drop is asked again while the index still shows the rollback");
    m.writes.catch_up();
    assert!(m.index.read().unwrap().confirming.is_empty());
    look(&m);
    assert!(m.writes.unseen.lock().unwrap().is_empty(), "nothing more to write once the drop is seen");
    w.gh.assert_faithful();
}

#[test]
fn an_image_updater_exclusion_through_the_api_is_in_the_pr_and_a_failed_one_is_said_on_it() {
    let w = World::new();
    let config = w.config("propose", "", "state");
    // The cluster holds an ImageUpdater of checkout that the repository does not.
    let index =
        std::sync::Arc::new(std::sync::RwLock::new(metricops::domain::cluster::ClusterIndex::default()));
    let updater: serde_json::Value =
        crate::support::kube::load_fixture("fixtures/kube/argocd-image-updater/imageupdater.shop.yaml");
    index.write().unwrap().upsert(&updater);
    let writes = std::sync::Arc::new(EchoWrites { index: index.clone(), ..Default::default() });
    let mut engine = {
        let _guard = w.rt.enter();
        metricops::wiring::Wired::engine_only(std::sync::Arc::new(config)).unwrap()
    };
    engine.cluster = Some(index);
    engine.cluster_writes = Some(writes);
    let report = w.rt.block_on(engine.handle_alertmanager(&alert("fp-1"), now())).unwrap();
    let d = delivery(&report);
    let Delivery::Proposed { pr: Some(pr), .. } = d else { panic!("not proposed: {d:?}") };
    let body = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.number == pr.number).unwrap().body;
    assert!(body.contains("**argocd-image-updater** would promote"), "{body}");
    assert!(
        body.contains("to ignoreTags of image `checkout` on ImageUpdater argocd/shop — through the Kubernetes API (the object is not in this repository)"),
        "{body}"
    );
    // The patch failed (this test's cluster refuses it): said on the PR, with what to run by hand.
    let said: Vec<String> =
        w.gh.comments_on("shop", "manifests", pr.number).into_iter().map(|(_, _, b)| b).collect();
    let c = said
        .iter()
        .find(|b| b.contains("could not be excluded through the Kubernetes API"))
        .unwrap_or_else(|| panic!("{said:#?}"));
    assert!(c.contains("no ImageUpdater in this test: argocd/shop"), "{c}");
    assert!(
        c.contains(
            "kubectl -n argocd patch imageupdaters.argocd-image-updater.argoproj.io shop --type=json -p '"
        ),
        "{c}"
    );
    w.gh.assert_faithful();
}
