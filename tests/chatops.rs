//! ChatOps end to end through the GitHub stand-in: people comment on the revert PR, GitHub delivers
//! `issue_comment`, the bot reacts and answers, once per command.

use std::sync::Arc;

use metricops::pipeline::Delivery;

use crate::github::{SECRET, World, alert, delivery, post_webhook, wait_until};
use crate::support::github::GitHub;

const BOT: &str = "metricops-test[bot]";

struct Chat {
    w: World,
    server: metricops::server::Running,
    pr: u64,
    deliveries: std::cell::Cell<u32>,
}

impl Chat {
    /// A proposed revert PR, and the bot serving webhooks.
    fn new() -> Chat {
        let w = World::new();
        w.gh.set_permission("shop", "manifests", "rita", "read");
        w.gh.set_permission("shop", "manifests", "dana", "read");
        w.gh.set_permission("shop", "manifests", "max", "maintain");
        let config = w.config("propose", "", "state");
        let d = delivery(&w.run(&config, &alert("fp-1")));
        let pr = d.pr().expect("a PR").number;
        let server = w
            .rt
            .block_on(metricops::server::start(Arc::new(w.config("propose", "", "server")), "127.0.0.1:0"))
            .unwrap();
        Chat { w, server, pr, deliveries: std::cell::Cell::new(0) }
    }

    /// `login` comments `body`; GitHub delivers it; returns the comment id.
    fn say(&self, login: &str, body: &str) -> (u64, u16) {
        self.say_on(self.pr, login, body)
    }

    fn say_on(&self, pr: u64, login: &str, body: &str) -> (u64, u16) {
        let (id, payload) = self.w.gh.comment_as("shop", "manifests", pr, login, body);
        self.deliveries.set(self.deliveries.get() + 1);
        let (status, text) = post_webhook(
            self.server.addr,
            "issue_comment",
            &format!("c-{}", self.deliveries.get()),
            &payload,
            Some(&GitHub::sign_webhook(SECRET, payload.as_bytes())),
        );
        assert!(status == 200 || status == 202, "{status} {text}");
        (id, status)
    }

    /// The bot's replies after comment `id`, waiting for `n` of them.
    fn replies_after(&self, id: u64, n: usize) -> Vec<String> {
        self.replies_on(self.pr, id, n)
    }

    fn replies_on(&self, pr: u64, id: u64, n: usize) -> Vec<String> {
        let get = || {
            self.w
                .gh
                .comments_on("shop", "manifests", pr)
                .into_iter()
                .filter(|(cid, who, _)| *cid > id && who == BOT)
                .map(|(_, _, b)| b)
                .collect::<Vec<_>>()
        };
        wait_until(|| get().len() >= n, "the bot's replies");
        get()
    }

    fn pull(&self) -> crate::support::github::Pull {
        self.w.gh.pulls("shop", "manifests").into_iter().find(|p| p.number == self.pr).unwrap()
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        self.w.gh.assert_faithful();
    }
}

#[test]
fn hold_stops_policy_merges_until_unhold_and_approve_merges() {
    let c = Chat::new();
    let (id, status) = c.say("oncall", "Looking into it.\n/metricops hold");
    assert_eq!(status, 200);
    let r = c.replies_after(id, 1);
    assert!(r[0].starts_with("@oncall held: no automatic merge"), "{r:?}");
    assert_eq!(c.w.gh.reactions("shop", "manifests", id), [(BOT.to_string(), "eyes".to_string())]);
    assert!(c.pull().labels.contains(&"metricops:hold".to_string()));
    // Policy now says merge, but the PR is held: the alert only re-confirms.
    let merge = c.w.config("merge", "", "state");
    let d = delivery(&c.w.run(&merge, &alert("fp-2")));
    assert!(matches!(d, Delivery::AlreadyProposed { .. }), "{d:?}");
    assert_eq!(c.pull().state, "open");
    let (id, _) = c.say("max", "/metricops unhold");
    assert!(c.replies_after(id, 1)[0].contains("unheld"));
    assert!(!c.pull().labels.contains(&"metricops:hold".to_string()));
    let (id, _) = c.say("oncall", "/metricops approve");
    let r = c.replies_after(id, 1);
    assert!(r[0].contains("merged into `main`"), "{r:?}");
    assert!(c.pull().merged);
    assert_eq!(c.w.main_file(), crate::support::kustomization("ghcr.io/shop/checkout", "1.4.2"));
}

#[test]
fn readers_are_refused_the_culprit_author_may_hold_and_bots_are_ignored() {
    let c = Chat::new();
    let (id, _) = c.say("rita", "/metricops approve");
    let r = c.replies_after(id, 1);
    assert_eq!(
        r[0].lines().next().unwrap(),
        "@rita you need write access to this repository to `/metricops approve` (you have Read)."
    );
    assert_eq!(c.pull().state, "open");
    // dana wrote the reverted change: she may hold it, not approve it.
    let (id, _) = c.say("dana", "/metricops hold");
    assert!(c.replies_after(id, 1)[0].contains("held"));
    let (id, _) = c.say("dana", "/metricops approve");
    assert!(c.replies_after(id, 1)[0].contains("you need write access"));
    assert!(!c.pull().merged);
    // Anyone may ask for status and help.
    let (id, _) = c.say("rita", "/metricops status");
    let r = c.replies_after(id, 1);
    assert!(
        r[0].contains(&format!("#{} is open, held", c.pr)) && r[0].contains("**Decision:** propose"),
        "{r:?}"
    );
    // A bot's command is not obeyed, nor even acknowledged.
    let before = c.w.gh.comments_on("shop", "manifests", c.pr).len();
    let (id, status) = c.say("renovate[bot]", "/metricops approve");
    assert_eq!(status, 202);
    assert!(c.w.gh.reactions("shop", "manifests", id).is_empty());
    assert_eq!(c.w.gh.comments_on("shop", "manifests", c.pr).len(), before + 1, "only the bot's own comment");
}

#[test]
fn cancel_closes_deletes_the_branch_and_the_culprit_is_not_proposed_again() {
    let c = Chat::new();
    let (id, _) = c.say("oncall", "/metricops cancel the dashboard was wrong, not the deploy");
    let r = c.replies_after(id, 1);
    assert!(
        r[0].contains("cancelled (the dashboard was wrong, not the deploy): closed, branch deleted"),
        "{r:?}"
    );
    let p = c.pull();
    assert_eq!((p.state.as_str(), p.merged), ("closed", false));
    assert!(!c.w.gh.branches("shop", "manifests").iter().any(|(b, _)| *b == c.w.branch()));
    let config = c.w.config("propose", "", "state");
    let d = delivery(&c.w.run(&config, &alert("fp-3")));
    assert!(matches!(d, Delivery::Suppressed { .. }), "{d:?}");
    assert_eq!(
        c.w.gh.pulls("shop", "manifests").iter().filter(|p| p.head_ref == c.w.branch()).count(),
        1,
        "no second PR"
    );
}

#[test]
fn code_blocks_quotes_edits_and_two_commands_in_one_comment() {
    let c = Chat::new();
    let (id, status) = c.say("oncall", "To merge, say:\n```\n/metricops approve\n```\n> /metricops cancel");
    assert_eq!(status, 202, "no command outside code and quotes");
    assert!(c.w.gh.reactions("shop", "manifests", id).is_empty());
    // An edit that adds a command is not a new comment: not obeyed.
    let payload = c.w.gh.edit_comment_payload("shop", "manifests", id, "/metricops approve");
    let (s, _) = post_webhook(
        c.server.addr,
        "issue_comment",
        "c-edit",
        &payload,
        Some(&GitHub::sign_webhook(SECRET, payload.as_bytes())),
    );
    assert_eq!(s, 202);
    // Two commands, two answers, in order; an unknown verb gets a suggestion and the help.
    let (id, _) = c.say("oncall", "/metricops status\n/metricops aprove");
    let r = c.replies_after(id, 2);
    assert!(r[0].contains("is open"), "{r:?}");
    assert!(
        r[1].contains("Did you mean `/metricops approve`?") && r[1].contains("Commands (one per line"),
        "{r:?}"
    );
    assert_eq!(c.w.gh.reactions("shop", "manifests", id).len(), 1, "one 👀 per comment");
    assert!(!c.pull().merged, "an edit or a typo never merges");
}

fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn retry_rebuilds_the_revert_on_the_new_tip() {
    let c = Chat::new();
    // Someone lands an unrelated change on main after the revert was proposed.
    let work = tempfile::tempdir().unwrap();
    git_in(work.path(), &["clone", "-q", c.w.bare.to_str().unwrap(), "w"]);
    let w = work.path().join("w");
    std::fs::write(w.join("NOTES.md"), "on-call notes\n").unwrap();
    git_in(&w, &["add", "-A"]);
    git_in(&w, &["-c", "user.name=Ops", "-c", "user.email=ops@shop.example", "commit", "-q", "-m", "notes"]);
    git_in(&w, &["push", "-q", "origin", "main"]);
    let main = git_in(&c.w.bare, &["rev-parse", "main"]);
    let (id, _) = c.say("oncall", "/metricops retry");
    let r = c.replies_after(id, 1);
    assert!(r[0].contains("rebuilt on `main`"), "{r:?}");
    assert_eq!(
        git_in(&c.w.bare, &["rev-parse", &format!("{}^", c.w.branch())]),
        main,
        "the revert now sits on the new tip"
    );
    assert_eq!(c.pull().head_sha, git_in(&c.w.bare, &["rev-parse", &c.w.branch()]));
}

#[test]
fn rollback_on_a_merged_pull_request_opens_or_merges_its_revert() {
    let c = Chat::new();
    // The culprit's own PR: its revert is the open one already.
    let (id, _) = c.say_on(c.w.original_pr, "oncall", "/metricops rollback");
    let r = c.replies_on(c.w.original_pr, id, 1);
    assert!(r[0].contains(&format!("open already: #{}", c.pr)), "{r:?}");
    // Close that one, then a maintainer asks for the rollback with --merge; a reader may not.
    let (id, _) = c.say("oncall", "/metricops cancel");
    c.replies_after(id, 1);
    let (id, _) = c.say_on(c.w.original_pr, "rita", "/metricops rollback --merge");
    assert!(c.replies_on(c.w.original_pr, id, 1)[0].contains("you need write access"));
    let (id, _) = c.say_on(c.w.original_pr, "max", "/metricops rollback --merge");
    let r = c.replies_on(c.w.original_pr, id, 1);
    assert!(
        r[0].contains("and merged it into `main`")
            && r[0].contains(&format!("#{} is reverted", c.w.original_pr)),
        "{r:?}"
    );
    assert_eq!(c.w.main_file(), crate::support::kustomization("ghcr.io/shop/checkout", "1.4.2"));
    let rollback =
        c.w.gh
            .pulls("shop", "manifests")
            .into_iter()
            .filter(|p| p.title.starts_with(&format!("Revert #{}:", c.w.original_pr)))
            .collect::<Vec<_>>();
    assert_eq!(rollback.len(), 1);
    assert!(
        rollback[0].merged && rollback[0].body.contains("@max asked for the revert"),
        "{:?}",
        rollback[0]
    );
    // Dressed as every revert: labels, the configured reviewer and the merged PR's author.
    assert_eq!(rollback[0].labels, ["metricops", "rollback"]);
    let mut reviewers = rollback[0].requested_reviewers.clone();
    reviewers.sort();
    assert_eq!(reviewers, ["dana", "oncall"]);
    // A revert PR is not rolled back.
    let (id, _) = c.say("max", "/metricops rollback");
    assert!(c.replies_after(id, 1)[0].contains("a revert is not reverted"));
}

const AUTOMATION: &str = "apiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageUpdateAutomation\nmetadata:\n  name: checkout\n  namespace: flux-system\nspec:\n  interval: 1m\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n";

#[test]
fn the_revert_suspends_flux_image_automation_and_resume_opens_the_undo() {
    // Flux's ImageUpdateAutomation for checkout lives in the repo (added after the bad deploy).
    let w = World::new();
    let work = tempfile::tempdir().unwrap();
    git_in(work.path(), &["clone", "-q", w.bare.to_str().unwrap(), "w"]);
    let clone = work.path().join("w");
    std::fs::create_dir_all(clone.join("clusters/prod")).unwrap();
    std::fs::write(clone.join("clusters/prod/checkout-automation.yaml"), AUTOMATION).unwrap();
    git_in(&clone, &["add", "-A"]);
    git_in(
        &clone,
        &[
            "-c",
            "user.name=Ops",
            "-c",
            "user.email=ops@shop.example",
            "commit",
            "-q",
            "-m",
            "flux: image automation for checkout",
        ],
    );
    git_in(&clone, &["push", "-q", "origin", "main"]);

    let config = w.config("propose", "", "state");
    let d = delivery(&w.run(&config, &alert("fp-1")));
    let pr = d.pr().unwrap().number;
    let bare = w.bare.clone();
    let file =
        |rev: &str| git_in(&bare, &["show", &format!("{rev}:clusters/prod/checkout-automation.yaml")]) + "\n";
    assert_eq!(
        file(&w.branch()),
        AUTOMATION.replace("spec:\n", "spec:\n  suspend: true\n"),
        "suspended in the revert commit"
    );
    assert_eq!(
        git_in(&w.bare, &["rev-list", "--count", &format!("main..{}", w.branch())]),
        "1",
        "one commit: revert and pause land together"
    );
    let msg = git_in(&w.bare, &["log", "-1", "--format=%B", &w.branch()]);
    assert!(
        msg.contains("Metricops-Paused: ImageUpdateAutomation in clusters/prod/checkout-automation.yaml"),
        "{msg}"
    );
    let body = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.number == pr).unwrap().body;
    assert!(body.contains("**Re-promotion paused**") && body.contains("`/metricops resume`"), "{body}");

    let server =
        w.rt.block_on(metricops::server::start(Arc::new(w.config("propose", "", "server")), "127.0.0.1:0"))
            .unwrap();
    let c = Chat { w, server, pr, deliveries: std::cell::Cell::new(0) };
    let (id, _) = c.say("oncall", "/metricops approve");
    assert!(c.replies_after(id, 1)[0].contains("merged into `main`"));
    assert!(file("main").contains("suspend: true"));
    let (id, _) = c.say("oncall", "/metricops resume");
    let r = c.replies_after(id, 1);
    assert!(
        r[0].contains("to resume: ImageUpdateAutomation in clusters/prod/checkout-automation.yaml"),
        "{r:?}"
    );
    let resume = format!("metricops/resume-{}", &c.w.culprit[..12]);
    assert!(file(&resume).contains("suspend: false"));
    assert!(c.w.gh.pulls("shop", "manifests").iter().any(|p| p.head_ref == resume && p.state == "open"));
    // Asked again: the same PR, and the reply says so.
    let (id, _) = c.say("oncall", "/metricops resume");
    let r = c.replies_after(id, 1);
    assert!(r[0].contains("the open #") && !r[0].contains("opened #"), "{r:?}");
    assert_eq!(c.w.gh.pulls("shop", "manifests").iter().filter(|p| p.head_ref == resume).count(), 1);
}

#[test]
fn rollback_merge_merges_the_revert_that_is_open_already() {
    let c = Chat::new();
    let (id, _) = c.say_on(c.w.original_pr, "max", "/metricops rollback --merge");
    let r = c.replies_on(c.w.original_pr, id, 1);
    assert!(
        r[0].contains(&format!("open already: #{}", c.pr)) && r[0].contains("and merged it into `main`"),
        "{r:?}"
    );
    assert!(c.pull().merged, "the open revert is merged");
    assert_eq!(c.w.main_file(), crate::support::kustomization("ghcr.io/shop/checkout", "1.4.2"));
}

#[test]
fn hold_then_status_in_one_comment_reports_the_hold() {
    let c = Chat::new();
    let (id, _) = c.say("oncall", "/metricops hold\n/metricops status");
    let r = c.replies_after(id, 2);
    assert!(r[1].contains("held (no automatic merge)"), "{r:?}");
}

#[test]
fn a_command_that_fails_inside_the_bot_replies_without_the_internal_error() {
    let c = Chat::new();
    // The repository cannot be fetched: the retry fails inside the bot.
    let away = c.w.bare.with_extension("away");
    std::fs::rename(&c.w.bare, &away).unwrap();
    let (id, _) = c.say("oncall", "/metricops retry");
    let r = c.replies_after(id, 1);
    std::fs::rename(&away, &c.w.bare).unwrap();
    assert!(r[0].contains("`/metricops retry` failed inside the bot"), "{r:?}");
    assert!(r[0].contains(&format!("reference `{id}-retry`")), "{r:?}");
    let text = r[0].split("<sub>In response to").next().unwrap();
    for leak in ["http", "127.0.0.1", "git:", "fetching"] {
        assert!(!text.contains(leak), "the reply carries internal text ({leak}): {r:?}");
    }
}
