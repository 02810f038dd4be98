//! ChatOps handlers: one answer per command. The comment gets 👀 at once, then each command its own
//! reply. Parsing and who-may-do-what are in `domain/chatops.rs`; this does the GitHub calls.

use anyhow::Context;

use super::github::{CANCELLED_LABEL, GitHub, HOLD_LABEL};
use super::{Delivery, Engine, Target};
use crate::adapters::github::{PullRequest, RepoId};
use crate::config::{ForgeKind, RepoConfig};
use crate::domain::chatops::{Line, Permission, Place, Verb, Who, authorize, help, parse};
use crate::domain::culprit::{CommitSha, Culprit, Query, Subject};
use crate::domain::forge_event::Comment;
use crate::domain::revert::{BRANCH_PREFIX, ModeChoice, branch_name};
use crate::revert::build_revert;

/// A value of the hidden `<!-- metricops: culprit=… incident=… -->` marker in a revert PR's body.
fn marker(body: &str, key: &str) -> Option<String> {
    let line = body.lines().find(|l| l.starts_with("<!-- metricops:") && l.contains(&format!("{key}=")))?;
    line.split(&format!("{key}=")).nth(1)?.split_whitespace().next().map(str::to_string)
}

impl Engine<'_> {
    /// Handles the commands in one new comment; returns the replies posted.
    pub fn handle_comment(&self, c: &Comment) -> anyhow::Result<Vec<String>> {
        if c.author_is_bot || !c.on_pull {
            return Ok(Vec::new());
        }
        let lines = parse(&c.body);
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let gh = self.github()?;
        let repo =
            RepoId::from_url(&format!("/{}", c.repo)).with_context(|| format!("repository {:?}", c.repo))?;
        let Some(repo_cfg) = self
            .config
            .repos
            .iter()
            .find(|r| r.forge == ForgeKind::Github && RepoId::from_url(&r.url).as_ref() == Some(&repo))
        else {
            tracing::info!(repo = %c.repo, "a command on a repository that is not configured; ignored");
            return Ok(Vec::new());
        };
        if let Err(e) = gh.block(gh.app.react(&repo, c.id, "eyes")) {
            tracing::warn!(error = %e, "could not react to the comment");
        }
        let mut pr = gh.block(gh.app.pull(&repo, c.number))?;
        let place = if pr.head.name.starts_with(BRANCH_PREFIX) {
            Place::RevertPr
        } else if pr.is_merged() {
            Place::MergedPr
        } else {
            Place::OtherPr
        };
        let permission = Permission::parse(&self.role(gh, &repo, &c.author)?);
        let allowed = self
            .config
            .github
            .as_ref()
            .is_some_and(|g| g.chatops_users.iter().any(|u| u.eq_ignore_ascii_case(&c.author)));
        let mut replies = Vec::new();
        for line in lines {
            let text = match line {
                Line::Reply(text) => text,
                Line::Command(verb) => {
                    let culprit_author = place == Place::RevertPr
                        && permission < Permission::Write
                        && !allowed
                        && self.culprit_author(gh, &repo, &pr).as_deref() == Some(c.author.as_str());
                    let who = Who { login: c.author.clone(), permission, allowed, culprit_author };
                    match authorize(&verb, &who, place) {
                        Err(why) => why,
                        Ok(()) => self.act(gh, repo_cfg, &repo, &pr, &verb, c).unwrap_or_else(|e| {
                            // What went wrong inside stays in the log (it can name hosts, paths, a
                            // remote's answer); the reply gives a reference to find it by.
                            let reference = format!("{}-{}", c.id, verb.name());
                            tracing::error!(verb = verb.name(), reference = %reference, error = %format!("{e:#}"), "command failed");
                            internal_error_reply(verb.name(), &reference)
                        }),
                    }
                }
            };
            let body =
                format!("@{} {text}\n\n<sub>In response to [this comment]({}).</sub>\n", c.author, c.url);
            gh.block(gh.app.comment(&repo, c.number, &body))?;
            replies.push(text);
            // The next command of the same comment sees what this one did (`hold` then `status`).
            if let Ok(now) = gh.block(gh.app.pull(&repo, c.number)) {
                pr = now;
            }
        }
        Ok(replies)
    }

    /// A user's role on the repository, asked of GitHub at most once a minute.
    fn role(&self, gh: &GitHub, repo: &RepoId, login: &str) -> anyhow::Result<String> {
        let key = (repo.to_string(), login.to_ascii_lowercase());
        if let Some((at, role)) = self.roles.lock().expect("roles lock").get(&key)
            && at.elapsed() < std::time::Duration::from_secs(60)
        {
            return Ok(role.clone());
        }
        let role = gh.block(gh.app.permission(repo, login))?;
        self.roles.lock().expect("roles lock").insert(key, (std::time::Instant::now(), role.clone()));
        Ok(role)
    }

    /// The author of the culprit's merged pull request, from the revert PR's culprit marker.
    fn culprit_author(&self, gh: &GitHub, repo: &RepoId, pr: &PullRequest) -> Option<String> {
        let sha = marker(pr.body.as_deref()?, "culprit")?;
        let prs = gh.block(gh.app.pulls_with_commit(repo, &sha)).ok()?;
        prs.into_iter().find(|p| p.is_merged()).and_then(|p| p.author().map(str::to_string))
    }

    fn act(
        &self,
        gh: &GitHub,
        repo_cfg: &RepoConfig,
        repo: &RepoId,
        pr: &PullRequest,
        verb: &Verb,
        c: &Comment,
    ) -> anyhow::Result<String> {
        let open = pr.state == "open";
        let held = pr.labels.iter().any(|l| l.name == HOLD_LABEL);
        Ok(match verb {
            Verb::Help => help(),
            Verb::Status => format!(
                "#{} is {}{}; head `{}` on `{}`, base `{}`.{}",
                pr.number,
                if pr.is_merged() { "merged" } else { &pr.state },
                if held { ", held (no automatic merge)" } else { "" },
                &pr.head.sha[..pr.head.sha.len().min(12)],
                pr.head.name,
                pr.base.name,
                pr.body
                    .as_deref()
                    .and_then(|b| b.lines().find(|l| l.starts_with("**Decision:**")))
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default()
            ),
            Verb::Approve | Verb::Hold | Verb::Unhold | Verb::Cancel { .. } | Verb::Retry if !open => {
                format!(
                    "#{} is {} already; nothing to do.",
                    pr.number,
                    if pr.is_merged() { "merged" } else { "closed" }
                )
            }
            Verb::Hold => {
                gh.block(gh.app.add_labels(repo, pr.number, &[HOLD_LABEL.to_string()]))?;
                "held: no automatic merge for this revert until `/metricops unhold`.".into()
            }
            Verb::Unhold => {
                gh.block(gh.app.remove_label(repo, pr.number, HOLD_LABEL))?;
                "unheld: policy may merge this revert again.".into()
            }
            Verb::Cancel { reason } => {
                gh.block(gh.app.add_labels(repo, pr.number, &[CANCELLED_LABEL.to_string()]))?;
                gh.block(gh.app.close_pull(repo, pr.number))?;
                gh.block(gh.app.delete_branch(repo, &pr.head.name))?;
                tracing::info!(pr = pr.number, by = %c.author, reason = ?reason, "revert cancelled");
                format!(
                    "cancelled{}: closed, branch deleted. This culprit is not proposed again for {}h.",
                    reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
                    self.config.cancel_suppress().num_hours()
                )
            }
            Verb::Approve => {
                if held {
                    gh.block(gh.app.remove_label(repo, pr.number, HOLD_LABEL))?;
                }
                let cfg = self.config.github.as_ref().context("no `github:` section")?;
                let mirror = self.mirror(&repo_cfg.name)?;
                let auth = self.git_auth(repo_cfg)?;
                let tip = mirror.fetch(&repo_cfg.url, &pr.base.name, auth.as_ref())?;
                let t = Target {
                    mirror: &mirror,
                    repo: repo_cfg,
                    auth: auth.as_ref(),
                    tip: &tip,
                    revert_branch: &pr.head.name,
                    now: chrono::Utc::now(),
                };
                let message = self.head_message(&t, &pr.head.name)?;
                match self.merge(gh, cfg, repo, pr, &message, &pr.head.name)? {
                    Delivery::Merged { .. } => format!(
                        "merged into `{}`; the branch is deleted. Argo CD or Flux rolls back from there.",
                        pr.base.name
                    ),
                    Delivery::AutoMergeEnabled { .. } => {
                        "auto-merge enabled: GitHub merges this revert once the required checks pass.".into()
                    }
                    Delivery::MergeRefused { reason, .. } => {
                        format!("GitHub will not merge it now: {reason}")
                    }
                    other => other.label().to_string(),
                }
            }
            Verb::Retry => self.retry(repo_cfg, pr)?,
            Verb::Resume => self.resume(gh, repo_cfg, repo, pr)?,
            Verb::Rollback { merge } => self.rollback(gh, repo_cfg, repo, pr, *merge, c)?,
        })
    }

    /// Rebuilds the revert on the base branch's current tip and force-pushes the PR's branch.
    fn retry(&self, repo_cfg: &RepoConfig, pr: &PullRequest) -> anyhow::Result<String> {
        let (culprit_sha, w) = match self.revert_pr_subject(pr) {
            Ok(found) => found,
            Err(why) => return Ok(format!("{why}; cannot rebuild it.")),
        };
        let subject = w.subject();
        let mirror = self.mirror(&repo_cfg.name)?;
        let auth = self.git_auth(repo_cfg)?;
        let tip = mirror.fetch(&repo_cfg.url, &pr.base.name, auth.as_ref())?;
        let culprit = crate::revert::trace(&mirror, &tip.0, &Query::new(subject.clone()), &w.paths)?;
        if culprit.commit.sha.0 != culprit_sha {
            return Ok(format!(
                "`{}` now has {} from {}, not from {}: this revert no longer applies. `/metricops cancel` it; the next alert proposes what is right now.",
                w.name,
                culprit.version,
                culprit.commit.sha.short(),
                &culprit_sha[..culprit_sha.len().min(12)]
            ));
        }
        mirror.delete_branch(&pr.head.name)?;
        let reason = format!("metricops: rebuilt on {} by /metricops retry.", tip.short());
        let built = build_revert(
            &mirror,
            &culprit,
            &subject,
            &tip,
            ModeChoice::Auto,
            Some(&pr.head.name),
            &reason,
            &[(super::WORKLOAD_TRAILER, w.name.clone())],
            chrono::Utc::now(),
        )?;
        mirror.force_push(&repo_cfg.url, &built.commit, &pr.head.name, auth.as_ref())?;
        Ok(format!(
            "rebuilt on `{}` at {} ({} mode: {}); the branch now points at {}.",
            pr.base.name,
            tip.short(),
            built.mode.label(),
            built.why,
            built.commit.short()
        ))
    }

    /// The culprit and the configured workload a revert PR's marker names, or why not.
    fn revert_pr_subject(
        &self,
        pr: &PullRequest,
    ) -> Result<(String, &crate::config::WorkloadConfig), String> {
        let body = pr.body.as_deref().unwrap_or("");
        let (Some(culprit), Some(incident)) = (marker(body, "culprit"), marker(body, "incident")) else {
            return Err("this PR's body has no metricops marker (culprit, incident)".into());
        };
        let workload = incident.rsplit_once('@').map(|(w, _)| w.to_string()).unwrap_or(incident);
        let w = self
            .config
            .workloads
            .iter()
            .find(|w| w.name == workload)
            .ok_or_else(|| format!("workload {workload:?} is no longer configured"))?;
        Ok((culprit, w))
    }

    /// Opens the pull request that resumes what the revert paused (set back on the base branch's tip).
    fn resume(
        &self,
        gh: &GitHub,
        repo_cfg: &RepoConfig,
        repo: &RepoId,
        pr: &PullRequest,
    ) -> anyhow::Result<String> {
        let (culprit, w) = match self.revert_pr_subject(pr) {
            Ok(found) => found,
            Err(why) => return Ok(format!("{why}; nothing to resume.")),
        };
        let mirror = self.mirror(&repo_cfg.name)?;
        let auth = self.git_auth(repo_cfg)?;
        let tip = mirror.fetch(&repo_cfg.url, &pr.base.name, auth.as_ref())?;
        let mut edits = Vec::new();
        let mut what = Vec::new();
        for target in &w.pause {
            if let Some(text) = mirror.read_file(&tip, &target.file)?
                && let Ok(Some(new)) = crate::domain::pause::set_paused(&text, target, false)
            {
                edits.push((target.file.clone(), new));
                what.push(target.describe());
            }
        }
        if edits.is_empty() {
            return Ok(format!("nothing is paused for `{}` on `{}`.", w.name, pr.base.name));
        }
        let branch = format!("metricops/resume-{}", &culprit[..culprit.len().min(12)]);
        let tree = mirror.tree_with(&tip, &edits)?;
        let message = format!(
            "Resume re-promotion of {}\n\nPaused by the revert in #{}; resumed by /metricops resume.\n\n{}\n",
            w.name,
            pr.number,
            what.iter().map(|d| format!("- {d}")).collect::<Vec<_>>().join("\n")
        );
        let commit = mirror.write_commit(tree, &tip, &message, chrono::Utc::now())?;
        mirror.delete_branch(&branch)?;
        mirror.create_branch(&branch, &commit)?;
        mirror.force_push(&repo_cfg.url, &commit, &branch, auth.as_ref())?;
        let title = format!("Resume re-promotion of {}", w.name);
        let (created, opened) =
            gh.block(gh.app.open_or_find_pull(repo, &title, &message, &branch, &pr.base.name))?;
        Ok(format!(
            "{} #{} to resume: {}. Merge it when the fixed version is ready to go out.",
            if opened { "opened" } else { "rebuilt on the current tip, the open" },
            created.number,
            what.join("; ")
        ))
    }

    /// Opens (or merges, with `--merge`) the revert of a merged pull request's merge commit.
    fn rollback(
        &self,
        gh: &GitHub,
        repo_cfg: &RepoConfig,
        repo: &RepoId,
        pr: &PullRequest,
        merge: bool,
        c: &Comment,
    ) -> anyhow::Result<String> {
        let sha =
            pr.merge_commit_sha.clone().context("GitHub gives no merge commit for this pull request")?;
        let mirror = self.mirror(&repo_cfg.name)?;
        let auth = self.git_auth(repo_cfg)?;
        let tip = mirror.fetch(&repo_cfg.url, &pr.base.name, auth.as_ref())?;
        let commit = mirror
            .commit_info(&CommitSha(sha.clone()))
            .with_context(|| format!("the merge commit {sha} is not on {}", pr.base.name))?;
        let branch = branch_name(&sha);
        if let Some(open) = gh.block(gh.app.open_pull_for(repo, &branch))? {
            let already = format!("the rollback of #{} is open already: #{}", pr.number, open.number);
            if !merge {
                return Ok(format!("{already}."));
            }
            // `--merge` merges it as policy would, whoever opened it.
            let cfg = self.config.github.as_ref().context("no `github:` section")?;
            let head = mirror.fetch(&repo_cfg.url, &branch, auth.as_ref())?;
            let message = mirror.commit_info(&head)?.message;
            return Ok(merge_reply(&already, self.merge(gh, cfg, repo, &open, &message, &branch)?, pr));
        }
        let culprit = Culprit {
            parent: commit.parents.first().cloned(),
            commit,
            image: None,
            version: Default::default(),
            previous: None,
            changes: Vec::new(),
            other_files: Vec::new(),
            later: Vec::new(),
            notes: Vec::new(),
        };
        let subject = Subject::Image(format!("#{}", pr.number));
        mirror.delete_branch(&branch)?;
        let reason = format!("Rollback of #{} asked for by @{} (/metricops rollback).", pr.number, c.author);
        let built = build_revert(
            &mirror,
            &culprit,
            &subject,
            &tip,
            ModeChoice::Commit,
            Some(&branch),
            &reason,
            &[],
            chrono::Utc::now(),
        )?;
        mirror.push(&repo_cfg.url, &built.commit, &branch, auth.as_ref())?;
        let title = format!("Revert #{}: {}", pr.number, pr.title);
        let body = format!(
            "## metricops: rollback of #{}

@{} asked for the revert of #{} ([{}]({})){}.

This reverts commit {sha} on `{}`.

{}

<!-- metricops: culprit={sha} incident=rollback@{} -->
",
            pr.number,
            c.author,
            pr.number,
            pr.title,
            pr.html_url,
            pr.author().map(|a| format!(" by @{a}")).unwrap_or_default(),
            pr.base.name,
            help().lines().next().unwrap_or(""),
            pr.number
        );
        let (created, _) = gh.block(gh.app.open_or_find_pull(repo, &title, &body, &branch, &pr.base.name))?;
        // Labels and reviews as every revert gets them (the merged PR's author is the culprit's).
        if let Some(cfg) = self.config.github.as_ref() {
            self.dress(gh, cfg, repo, &created, Some(pr));
        }
        if !merge {
            return Ok(format!(
                "opened #{} to revert #{}; merge it, or `/metricops approve` there.",
                created.number, pr.number
            ));
        }
        let cfg = self.config.github.as_ref().context("no `github:` section")?;
        let opened = format!("opened #{}", created.number);
        Ok(merge_reply(&opened, self.merge(gh, cfg, repo, &created, &built.message, &branch)?, pr))
    }
}

/// What became of a rollback's merge, after `what` ("opened #12", "the rollback of #7 is open
/// already: #12").
fn merge_reply(what: &str, d: Delivery, reverted: &PullRequest) -> String {
    match d {
        Delivery::Merged { .. } => {
            format!("{what}, and merged it into `{}`: #{} is reverted.", reverted.base.name, reverted.number)
        }
        Delivery::AutoMergeEnabled { .. } => {
            format!("{what}; auto-merge is on, GitHub merges it once the required checks pass.")
        }
        Delivery::MergeRefused { reason, .. } => format!("{what}; GitHub will not merge it now: {reason}"),
        other => format!("{what} ({})", other.label()),
    }
}

/// The reply to a command that failed inside the bot: no internal error text, a reference into the log.
fn internal_error_reply(verb: &str, reference: &str) -> String {
    format!(
        "`/metricops {verb}` failed inside the bot. Its log has the details under reference `{reference}`; the command may be tried again."
    )
}
