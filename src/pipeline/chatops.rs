//! ChatOps handlers: one answer per command. The comment gets 👀 at once, then each command its own
//! reply. Parsing and who-may-do-what are in `domain/chatops.rs`; this does the GitHub calls.

use anyhow::Context;

use super::github::{CANCELLED_LABEL, GitHub, HOLD_LABEL};
use super::{Delivery, Engine, Target};
use crate::adapters::github::{PullRequest, RepoId};
use crate::config::{ForgeKind, RepoConfig};
use crate::domain::chatops::{Line, Permission, Place, Verb, Who, authorize, help, parse};
use crate::domain::forge_event::Comment;
use crate::domain::revert::BRANCH_PREFIX;

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
        let repo = RepoId::from_url(&format!("/{}", c.repo)).with_context(|| format!("repository {:?}", c.repo))?;
        let Some(repo_cfg) = self.config.repos.iter().find(|r| r.forge == ForgeKind::Github && RepoId::from_url(&r.url).as_ref() == Some(&repo)) else {
            tracing::info!(repo = %c.repo, "a command on a repository that is not configured; ignored");
            return Ok(Vec::new());
        };
        if let Err(e) = gh.block(gh.app.react(&repo, c.id, "eyes")) {
            tracing::warn!(error = %e, "could not react to the comment");
        }
        let pr = gh.block(gh.app.pull(&repo, c.number))?;
        let place = if pr.head.name.starts_with(BRANCH_PREFIX) {
            Place::RevertPr
        } else if pr.is_merged() {
            Place::MergedPr
        } else {
            Place::OtherPr
        };
        let permission = Permission::parse(&gh.block(gh.app.permission(&repo, &c.author))?);
        let allowed = self.config.github.as_ref().is_some_and(|g| g.chatops_users.iter().any(|u| u.eq_ignore_ascii_case(&c.author)));
        let mut replies = Vec::new();
        for line in lines {
            let text = match line {
                Line::Reply(text) => text,
                Line::Command(verb) => {
                    let culprit_author = place == Place::RevertPr && permission < Permission::Write && !allowed && self.culprit_author(gh, &repo, &pr).as_deref() == Some(c.author.as_str());
                    let who = Who { login: c.author.clone(), permission, allowed, culprit_author };
                    match authorize(&verb, &who, place) {
                        Err(why) => why,
                        Ok(()) => self.act(gh, repo_cfg, &repo, &pr, &verb, c).unwrap_or_else(|e| {
                            tracing::error!(verb = verb.name(), error = %format!("{e:#}"), "command failed");
                            format!("`/metricops {}` failed: {e}. The logs have the details.", verb.name())
                        }),
                    }
                }
            };
            let body = format!("@{} {text}\n\n<sub>In response to [this comment]({}).</sub>\n", c.author, c.url);
            gh.block(gh.app.comment(&repo, c.number, &body))?;
            replies.push(text);
        }
        Ok(replies)
    }

    /// The author of the culprit's merged pull request, from the revert PR's culprit marker.
    fn culprit_author(&self, gh: &GitHub, repo: &RepoId, pr: &PullRequest) -> Option<String> {
        let sha = pr.body.as_deref()?.split("culprit=").nth(1)?.split_whitespace().next()?.to_string();
        let prs = gh.block(gh.app.pulls_with_commit(repo, &sha)).ok()?;
        prs.into_iter().find(|p| p.is_merged()).and_then(|p| p.author().map(str::to_string))
    }

    fn act(&self, gh: &GitHub, repo_cfg: &RepoConfig, repo: &RepoId, pr: &PullRequest, verb: &Verb, c: &Comment) -> anyhow::Result<String> {
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
                pr.body.as_deref().and_then(|b| b.lines().find(|l| l.starts_with("**Decision:**"))).map(|d| format!(" {d}")).unwrap_or_default()
            ),
            _ if !open => format!("#{} is {} already; nothing to do.", pr.number, if pr.is_merged() { "merged" } else { "closed" }),
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
                let t = Target { mirror: &mirror, repo: repo_cfg, auth: auth.as_ref(), tip: &tip, revert_branch: &pr.head.name, now: chrono::Utc::now() };
                let message = self.head_message(&t, &pr.head.name)?;
                match self.merge(gh, cfg, repo, pr, &message, &pr.head.name)? {
                    Delivery::Merged { .. } => format!("merged into `{}`; the branch is deleted. Argo CD or Flux rolls back from there.", pr.base.name),
                    Delivery::AutoMergeEnabled { .. } => "auto-merge enabled: GitHub merges this revert once the required checks pass.".into(),
                    Delivery::MergeRefused { reason, .. } => format!("GitHub will not merge it now: {reason}"),
                    other => format!("{}", other.label()),
                }
            }
            Verb::Retry => "`/metricops retry` is not available yet: close this PR with `/metricops cancel` and let the next alert propose a fresh one, or rebase the branch by hand.".into(),
            Verb::Rollback { .. } => "`/metricops rollback` is not available yet: use `metricops revert --commit <merge sha>` and open the PR by hand.".into(),
        })
    }
}
