//! Delivery through the GitHub App: push the revert branch, open (or find) its pull request, label
//! it, ask for reviews, re-confirm it on later alerts, and merge it when policy says so.
//!
//! One pull request per culprit: the branch name is deterministic, an open PR with that head is
//! looked for first, and a racing replica (a refused push, a 422 "already exists") ends in finding
//! and reusing its PR.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;

use super::{Delivery, Engine, Outcome, PrLink, Target, push};
use crate::adapters::git::GitError;
use crate::adapters::github::{GitHubApp, Merge, PullRequest, RepoId};
use crate::config::GitHubConfig;
use crate::domain::policy::Decision;
use crate::domain::render::OriginalPr;

/// The App and the runtime its calls run on.
pub(crate) struct GitHub {
    pub app: Arc<GitHubApp>,
    pub rt: tokio::runtime::Handle,
}

impl GitHub {
    pub fn block<T, E>(&self, f: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        self.rt.block_on(f)
    }
}

/// The label `/metricops hold` puts on a revert PR: no automatic merge while it is there.
pub(crate) const HOLD_LABEL: &str = "metricops:hold";
/// The label `/metricops cancel` leaves on the closed PR: the culprit is not proposed again for a while.
pub(crate) const CANCELLED_LABEL: &str = "metricops:cancelled";

/// The hidden marker that says which alerts a PR body or comment already reports.
fn alerts_marker(outcome: &Outcome) -> String {
    let mut fps: Vec<&str> = outcome.incident.alerts.iter().map(|a| a.fingerprint.as_str()).collect();
    fps.sort();
    fps.dedup();
    format!("<!-- metricops: alerts={} -->", fps.join(","))
}

/// Whether a revert PR carries the configured labels (dressing adds them first, then asks for
/// reviews): one that does not was never dressed, whoever opened it.
fn dressed(pr: &PullRequest, cfg: &GitHubConfig) -> bool {
    cfg.labels.iter().all(|want| pr.labels.iter().any(|l| l.name == *want))
}

pub(super) fn link(pr: &PullRequest) -> PrLink {
    PrLink { number: pr.number, url: pr.html_url.clone() }
}

impl Engine<'_> {
    pub(super) fn deliver_to_github(&self, t: &Target, outcome: &mut Outcome) -> anyhow::Result<Delivery> {
        let gh = self.github()?;
        let cfg = self.config.github.as_ref().context("no `github:` section in the config")?;
        let repo = RepoId::from_url(&t.repo.url)
            .with_context(|| format!("owner/name of {}", crate::domain::redact::redact_url(&t.repo.url)))?;
        let branch = t.revert_branch;

        if let Some(pr) = gh.block(gh.app.open_pull_for(&repo, branch))? {
            tracing::info!(pr = pr.number, "revert PR open already; the alert re-confirms it");
            if !dressed(&pr, cfg) {
                self.dress(gh, cfg, &repo, &pr, outcome.original_pr.as_ref());
            }
            self.reconfirm(gh, &repo, &pr, outcome)?;
            if pr.labels.iter().any(|l| l.name == HOLD_LABEL) {
                tracing::info!(pr = pr.number, "held by a person: no automatic merge");
            } else if outcome.decision == Decision::Merge {
                let message = self.head_message(t, branch)?;
                return self.merge(gh, cfg, &repo, &pr, &message, branch);
            }
            return Ok(Delivery::AlreadyProposed { branch: branch.to_string(), pr: Some(link(&pr)) });
        }

        // `/metricops cancel` on this culprit's revert, recently: people said no.
        let suppress = self.config.cancel_suppress();
        let cancelled = gh.block(gh.app.pulls_for(&repo, branch, "closed"))?.into_iter().find(|p| {
            p.labels.iter().any(|l| l.name == CANCELLED_LABEL)
                && p.closed_at
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .is_some_and(|c| t.now - c.with_timezone(&chrono::Utc) < suppress)
        });
        if let Some(pr) = cancelled {
            tracing::info!(
                pr = pr.number,
                "a person cancelled this culprit's revert recently; not proposed again"
            );
            return Ok(Delivery::Suppressed { branch: branch.to_string(), pr: link(&pr) });
        }
        let original = outcome.original_pr.clone();
        let original_view = original.as_ref().map(|p| OriginalPr {
            number: p.number,
            url: p.html_url.clone(),
            title: p.title.clone(),
            author: p.author().map(str::to_string),
        });
        let built = self.build(t, outcome, original_view)?;
        let message = t.mirror.commit_info(&built.commit)?.message;
        match push(t, &built.commit, branch) {
            Ok(()) => {}
            // Someone (a racing replica) pushed this branch first: use theirs.
            Err(e)
                if e.downcast_ref::<GitError>()
                    .is_some_and(|g| matches!(g, GitError::PushRejected { .. })) =>
            {
                tracing::warn!(%branch, "the revert branch exists at GitHub already (another replica?); reusing it");
            }
            Err(e) => return Err(e),
        }
        outcome.revert = Some(built);
        let (title, body) = outcome.pr.clone().context("no PR text was rendered")?;
        let body = format!("{body}\n{}\n", alerts_marker(outcome));
        let (pr, opened) =
            gh.block(gh.app.open_or_find_pull(&repo, &title, &body, branch, &outcome.branch))?;
        if opened {
            tracing::info!(pr = pr.number, url = %pr.html_url, "revert PR opened");
        } else {
            tracing::info!(
                pr = pr.number,
                "the revert PR exists already (another replica's, or one GitHub made while answering an error); reusing it"
            );
        }
        // Dressed whoever opened it: a PR GitHub created while answering 502 has no labels yet.
        if opened || !dressed(&pr, cfg) {
            self.dress(gh, cfg, &repo, &pr, original.as_ref());
        }
        if !opened && outcome.decision != Decision::Merge {
            return Ok(Delivery::AlreadyProposed { branch: branch.to_string(), pr: Some(link(&pr)) });
        }
        if outcome.decision == Decision::Merge {
            return self.merge(gh, cfg, &repo, &pr, &message, branch);
        }
        Ok(Delivery::Proposed { branch: branch.to_string(), pr: Some(link(&pr)) })
    }

    /// Labels and review requests. Failures here are logged: the PR is what matters.
    pub(super) fn dress(
        &self,
        gh: &GitHub,
        cfg: &GitHubConfig,
        repo: &RepoId,
        pr: &PullRequest,
        original: Option<&PullRequest>,
    ) {
        if !cfg.labels.is_empty()
            && let Err(e) = gh.block(gh.app.add_labels(repo, pr.number, &cfg.labels))
        {
            tracing::warn!(error = %e, "could not label the revert PR");
        }
        // GitHub refuses a review request to the PR's own author (the App), and refuses a whole
        // request when one login in it is not a collaborator: the configured reviewers and the
        // culprit's author are asked apart, so a refusal of one never loses the other.
        let me = pr.author().unwrap_or_default().to_string();
        let mut configured = cfg.reviewers.clone();
        configured.retain(|u| *u != me);
        configured.sort();
        configured.dedup();
        let author = original
            .and_then(|p| p.user.as_ref())
            .filter(|u| cfg.request_review_from_author && u.kind != "Bot" && u.login != me)
            .map(|u| u.login.clone())
            .filter(|a| !configured.contains(a));
        if (!configured.is_empty() || !cfg.team_reviewers.is_empty())
            && let Err(e) =
                gh.block(gh.app.request_reviewers(repo, pr.number, &configured, &cfg.team_reviewers))
        {
            tracing::warn!(error = %e, reviewers = ?configured, teams = ?cfg.team_reviewers, "could not request reviews from the configured reviewers");
        }
        if let Some(a) = author
            && let Err(e) = gh.block(gh.app.request_reviewers(repo, pr.number, std::slice::from_ref(&a), &[]))
        {
            tracing::warn!(error = %e, author = %a, "could not request a review from the culprit's author (not a collaborator?)");
        }
    }

    /// A later alert on an open revert: one comment per new set of alerts, none for a repeat.
    fn reconfirm(
        &self,
        gh: &GitHub,
        repo: &RepoId,
        pr: &PullRequest,
        outcome: &Outcome,
    ) -> anyhow::Result<()> {
        let marker = alerts_marker(outcome);
        if pr.body.as_deref().is_some_and(|b| b.contains(&marker)) {
            return Ok(());
        }
        let comments = gh.block(gh.app.comments(repo, pr.number))?;
        if comments.iter().any(|c| c.contains(&marker)) {
            return Ok(());
        }
        let lines: Vec<String> = outcome
            .incident
            .alerts
            .iter()
            .map(|a| {
                format!(
                    "- **{}** ({}) firing since {}{}",
                    a.name,
                    a.severity.as_deref().unwrap_or("no severity"),
                    a.starts_at.to_rfc3339(),
                    a.annotations.get("summary").map(|s| format!(": {s}")).unwrap_or_default()
                )
            })
            .collect();
        let body = format!(
            "Still firing for `{}`; this revert is still the proposed fix ({}).\n\n{}\n\n{marker}\n",
            outcome.workload,
            outcome.decision.label(),
            lines.join("\n")
        );
        gh.block(gh.app.comment(repo, pr.number, &body))?;
        Ok(())
    }

    /// The revert commit's message, for the merge commit (it carries the `Metricops-*` trailers).
    pub(super) fn head_message(&self, t: &Target, branch: &str) -> anyhow::Result<String> {
        let head = t.mirror.fetch(&t.repo.url, branch, t.auth)?;
        Ok(t.mirror.commit_info(&head)?.message)
    }

    /// Merge by policy: auto-merge where checks are required, else merge now, guarded by the head sha.
    pub(super) fn merge(
        &self,
        gh: &GitHub,
        cfg: &GitHubConfig,
        repo: &RepoId,
        pr: &PullRequest,
        message: &str,
        branch: &str,
    ) -> anyhow::Result<Delivery> {
        let (headline, body) =
            message.split_once('\n').map(|(h, b)| (h.trim(), b.trim())).unwrap_or((message.trim(), ""));
        let headline = format!("{headline} (#{})", pr.number);
        if gh.block(gh.app.requires_checks(repo, &pr.base.name))? {
            match gh.block(gh.app.enable_auto_merge(repo, pr, cfg.merge_method, &headline, body)) {
                Ok(()) => {
                    tracing::info!(
                        pr = pr.number,
                        "auto-merge enabled; GitHub merges once the required checks pass"
                    );
                    return Ok(Delivery::AutoMergeEnabled { branch: branch.to_string(), pr: link(pr) });
                }
                // The repository setting is off (GitHub's default): no retry changes that. Said on the
                // PR once; the revert stays open for a person.
                Err(e) if e.to_string().contains("Auto merge is not allowed") => {
                    let reason = "auto-merge is off in this repository's settings (Settings → General → Allow auto-merge), and the branch needs checks before a merge".to_string();
                    tracing::warn!(pr = pr.number, %reason, "policy says merge; the revert stays open for a person");
                    const MARK: &str = "<!-- metricops: auto-merge-off -->";
                    let said = gh.block(gh.app.comments(repo, pr.number))?.iter().any(|c| c.contains(MARK));
                    if !said {
                        let text = format!(
                            "Policy says this revert should merge, but GitHub refuses auto-merge here: {reason}. Merge it by hand once the checks pass, or turn the setting on for next time.\n\n{MARK}\n"
                        );
                        gh.block(gh.app.comment(repo, pr.number, &text))?;
                    }
                    return Ok(Delivery::MergeRefused { branch: branch.to_string(), pr: link(pr), reason });
                }
                Err(e) => return Err(e.into()),
            }
        }
        match gh.block(gh.app.merge(repo, pr.number, &pr.head.sha, cfg.merge_method, &headline, body))? {
            Merge::Merged { sha } => {
                tracing::info!(pr = pr.number, %sha, "revert merged");
                if let Err(e) = gh.block(gh.app.delete_branch(repo, branch)) {
                    tracing::warn!(error = %e, %branch, "merged, but could not delete the branch");
                }
                Ok(Delivery::Merged { branch: pr.base.name.clone(), pr: Some(link(pr)) })
            }
            Merge::HeadMoved => anyhow::bail!(
                "the head of #{} moved while merging; serve tries the delivery again with backoff",
                pr.number
            ),
            Merge::NotMergeable(reason) => {
                tracing::warn!(pr = pr.number, %reason, "GitHub will not merge the revert now; it stays open for a person");
                Ok(Delivery::MergeRefused { branch: branch.to_string(), pr: link(pr), reason })
            }
        }
    }
}
