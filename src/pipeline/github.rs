//! Delivery through the forge's pull requests (the GitHub App): push the revert branch, open (or
//! find) its pull request, label it, ask for reviews, re-confirm it on later alerts, and merge it
//! when policy says so. What to do is `domain::reconcile::next_step`; this does it.
//!
//! One pull request per culprit: the branch name is deterministic, an open PR with that head is
//! looked for first, and a racing replica (a refused push, a 422 "already exists") ends in finding
//! and reusing its PR.

use anyhow::Context;

use super::{Delivery, Engine, Outcome, PrLink, Site, push};
use crate::adapters::git::GitError;
use crate::adapters::git_https;
use crate::config::GitHubConfig;
use crate::domain::reconcile::{ClosedRevert, NextStep, OpenRevert, StaysOpen, next_step};
use crate::domain::render::OriginalPr;
use crate::forge::{Forge, Merge, PrState, PullRequest, RepoId};

/// The hidden marker that says which alerts a PR body or comment already reports.
fn alerts_marker(outcome: &Outcome) -> String {
    let mut fps: Vec<&str> = outcome.incident.alerts.iter().map(|a| a.fingerprint.as_str()).collect();
    fps.sort();
    fps.dedup();
    if fps.len() <= 50 {
        return format!("<!-- metricops: alerts={} -->", fps.join(","));
    }
    // A storm: the set named by a digest (FNV-1a), so the marker stays short and still tells a
    // repeat from a new set.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in fps.join(",").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("<!-- metricops: alerts={}-alerts-{h:016x} -->", fps.len())
}

/// Whether a revert PR carries the configured labels (dressing adds them first, then asks for
/// reviews): one that does not was never dressed, whoever opened it.
fn dressed(pr: &PullRequest, cfg: &GitHubConfig) -> bool {
    cfg.labels.iter().all(|want| pr.labels.iter().any(|l| l.name == *want))
}

fn label_names(pr: &PullRequest) -> Vec<String> {
    pr.labels.iter().map(|l| l.name.clone()).collect()
}

pub(super) fn link(pr: &PullRequest) -> PrLink {
    PrLink { number: pr.number, url: pr.html_url.clone() }
}

impl Engine {
    fn github_config(&self) -> anyhow::Result<&GitHubConfig> {
        self.config.github.as_ref().context("no `github:` section in the config")
    }

    pub(super) async fn deliver_to_github(
        &self,
        place: Site,
        mut outcome: Outcome,
        listed: anyhow::Result<Vec<PullRequest>>,
        advertised: Option<git_https::Advertisement>,
    ) -> anyhow::Result<(Outcome, Delivery)> {
        let forge = self.forge()?.clone();
        let cfg = self.github_config()?;
        let repo = RepoId::from_url(&place.url)
            .with_context(|| format!("owner/name of {}", crate::domain::redact::redact_url(&place.url)))?;
        let branch = place.revert_branch.clone();

        // Gathered: the culprit's revert PRs, open and closed, in one listing (asked with the
        // culprit's own PR, before deciding).
        let (open, closed): (Vec<PullRequest>, Vec<PullRequest>) =
            listed?.into_iter().partition(|p| p.state == "open");
        let open = open.into_iter().next();
        // Decide.
        let step = next_step(
            &outcome.decision,
            open.as_ref().map(|p| OpenRevert { number: p.number, labels: label_names(p) }).as_ref(),
            &closed
                .iter()
                .map(|p| ClosedRevert {
                    number: p.number,
                    labels: label_names(p),
                    closed_at: p
                        .closed_at
                        .as_deref()
                        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                        .map(|c| c.with_timezone(&chrono::Utc)),
                    merged: p.is_merged(),
                })
                .collect::<Vec<_>>(),
            &cfg.labels,
            place.now,
            self.config.cancel_suppress(),
        );
        // Act.
        match step {
            NextStep::Reconfirm { dress, merge, .. } => {
                let pr = open.context("an open PR to re-confirm")?;
                tracing::info!(pr = pr.number, "revert PR open already; the alert re-confirms it");
                if dress {
                    self.dress(forge.as_ref(), cfg, &repo, &pr, outcome.original_pr.as_ref()).await;
                }
                self.reconfirm(forge.as_ref(), &repo, &pr, &outcome).await?;
                match merge {
                    Ok(()) => {
                        let message = self.head_message(&place, &branch).await?;
                        let d = self.merge(forge.as_ref(), cfg, &repo, &pr, &message, &branch).await?;
                        Ok((outcome, d))
                    }
                    Err(why) => {
                        if why == StaysOpen::HeldByAPerson {
                            tracing::info!(pr = pr.number, "held by a person: no automatic merge");
                        }
                        Ok((outcome, Delivery::AlreadyProposed { branch, pr: Some(link(&pr)) }))
                    }
                }
            }
            NextStep::AlreadyMerged { pr } => {
                let pr = closed.iter().find(|p| p.number == pr).context("the merged PR")?;
                tracing::info!(pr = pr.number, "this culprit's revert is merged already; nothing more to do");
                Ok((outcome, Delivery::AlreadyProposed { branch, pr: Some(link(pr)) }))
            }
            NextStep::StaySuppressed { pr } => {
                let pr = closed.iter().find(|p| p.number == pr).context("the cancelled PR")?;
                tracing::info!(
                    pr = pr.number,
                    "a person cancelled this culprit's revert recently; not proposed again"
                );
                Ok((outcome, Delivery::Suppressed { branch, pr: link(pr) }))
            }
            NextStep::OpenRevert { merge } => {
                let original = outcome.original_pr.clone();
                let original_view = original.as_ref().map(|p| OriginalPr {
                    number: p.number,
                    url: p.html_url.clone(),
                    title: p.title.clone(),
                    author: p.author().map(str::to_string),
                });
                let (o, built, message, pushed) = self
                    .blocking(move |e| {
                        e.with_mirror(&place.repo, |mirror| {
                            // The revert's objects travel in the push and stay out of the mirror.
                            mirror.write_in_memory()?;
                            let t = place.target(mirror);
                            let built = e.build_inner(&t, &mut outcome, original_view)?;
                            let message = mirror.commit_info(&built.commit)?.message;
                            let pushed = git_https::with_advertisement(advertised, || {
                                push(&t, &built.commit, t.revert_branch)
                            });
                            mirror.delete_branch(t.revert_branch)?;
                            let mut pushed_now = true;
                            match pushed {
                                Ok(()) => {}
                                // Someone (a racing replica) pushed this branch first: use theirs.
                                Err(e)
                                    if e.downcast_ref::<GitError>()
                                        .is_some_and(|g| matches!(g, GitError::PushRejected { .. })) =>
                                {
                                    tracing::warn!(branch = %t.revert_branch, "the revert branch exists at GitHub already (another replica?); reusing it");
                                    pushed_now = false;
                                }
                                Err(e) => return Err(e),
                            }
                            Ok((outcome, built, message, pushed_now))
                        })
                    })
                    .await?;
                outcome = o;
                // Another replica may have opened and merged this culprit's revert while we built
                // ours (and deleted its branch, which our push then made again): look once more.
                // Only where a replica merges by itself: by policy (the same for every replica)
                // this one would merge too. Where reverts are only proposed, a merge within this
                // fraction of a second would be a person's of a PR just opened; the look after
                // opening (below) still closes a duplicate then.
                let now =
                    if merge { forge.pulls_for(&repo, &branch, PrState::All).await? } else { Vec::new() };
                if let Some(merged) = now.iter().find(|p| p.is_merged()) {
                    if pushed && let Err(e) = forge.delete_branch(&repo, &branch).await {
                        tracing::warn!(error = %e, %branch, "could not delete the revert branch pushed again");
                    }
                    tracing::info!(
                        pr = merged.number,
                        "another replica's revert of this culprit merged meanwhile; nothing more to do"
                    );
                    return Ok((outcome, Delivery::AlreadyProposed { branch, pr: Some(link(merged)) }));
                }
                outcome.revert = Some(built);
                let (title, body) = outcome.pr.clone().context("no PR text was rendered")?;
                let body = format!("{body}\n{}\n", alerts_marker(&outcome));
                let (pr, opened) =
                    forge.open_or_find_pull(&repo, &title, &body, &branch, &outcome.branch).await?;
                if opened {
                    tracing::info!(pr = pr.number, url = %pr.html_url, "revert PR opened");
                    // Another replica may have merged its PR for this culprit between our last look
                    // and our open (GitHub lets a PR be opened from the branch until it is deleted):
                    // then ours is closed at once, saying why, and theirs stands.
                    let all = forge.pulls_for(&repo, &branch, PrState::All).await?;
                    if let Some(merged) = all.iter().find(|p| p.is_merged() && p.number != pr.number) {
                        let text = format!(
                            "Another replica merged #{}, this same revert, a moment before this one was opened: closing this one.\n",
                            merged.number
                        );
                        forge.comment(&repo, pr.number, &text).await?;
                        forge.close_pull(&repo, pr.number).await?;
                        tracing::warn!(
                            pr = pr.number,
                            merged = merged.number,
                            "another replica merged this culprit's revert first; closed the duplicate"
                        );
                        return Ok((outcome, Delivery::AlreadyProposed { branch, pr: Some(link(merged)) }));
                    }
                } else {
                    tracing::info!(
                        pr = pr.number,
                        "the revert PR exists already (another replica's, or one GitHub made while answering an error); reusing it"
                    );
                }
                // Dressed whoever opened it: a PR GitHub created while answering 502 has no labels yet.
                if opened || !dressed(&pr, cfg) {
                    self.dress(forge.as_ref(), cfg, &repo, &pr, original.as_ref()).await;
                }
                if merge {
                    let d = self.merge(forge.as_ref(), cfg, &repo, &pr, &message, &branch).await?;
                    return Ok((outcome, d));
                }
                let d = if opened {
                    Delivery::Proposed { branch, pr: Some(link(&pr)) }
                } else {
                    Delivery::AlreadyProposed { branch, pr: Some(link(&pr)) }
                };
                Ok((outcome, d))
            }
        }
    }

    /// Labels and review requests. Failures here are logged: the PR is what matters.
    pub(super) async fn dress(
        &self,
        forge: &dyn Forge,
        cfg: &GitHubConfig,
        repo: &RepoId,
        pr: &PullRequest,
        original: Option<&PullRequest>,
    ) {
        if !cfg.labels.is_empty()
            && let Err(e) = forge.add_labels(repo, pr.number, &cfg.labels).await
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
            && let Err(e) = forge.request_reviewers(repo, pr.number, &configured, &cfg.team_reviewers).await
        {
            tracing::warn!(error = %e, reviewers = ?configured, teams = ?cfg.team_reviewers, "could not request reviews from the configured reviewers");
        }
        if let Some(a) = author
            && let Err(e) = forge.request_reviewers(repo, pr.number, std::slice::from_ref(&a), &[]).await
        {
            tracing::warn!(error = %e, author = %a, "could not request a review from the culprit's author (not a collaborator?)");
        }
    }

    /// A later alert on an open revert: one comment per new set of alerts, none for a repeat.
    async fn reconfirm(
        &self,
        forge: &dyn Forge,
        repo: &RepoId,
        pr: &PullRequest,
        outcome: &Outcome,
    ) -> anyhow::Result<()> {
        let marker = alerts_marker(outcome);
        if pr.body.as_deref().is_some_and(|b| b.contains(&marker)) {
            return Ok(());
        }
        let comments = forge.comments(repo, pr.number).await?;
        if comments.iter().any(|c| c.contains(&marker)) {
            return Ok(());
        }
        let (groups, left_out) =
            crate::domain::alert::summarise(&outcome.incident.alerts, super::MAX_ALERT_GROUPS);
        let mut lines: Vec<String> = groups
            .iter()
            .map(|g| {
                format!(
                    "- **{}**{} ({}) firing since {}{}",
                    g.first.name,
                    if g.count > 1 { format!(" ×{}", g.count) } else { String::new() },
                    g.first.severity.as_deref().unwrap_or("no severity"),
                    g.earliest.to_rfc3339(),
                    g.first.annotations.get("summary").map(|s| format!(": {s}")).unwrap_or_default()
                )
            })
            .collect();
        if left_out > 0 {
            lines.push(format!("- and {left_out} more kind(s) of alert"));
        }
        let body = format!(
            "Still firing for `{}`; this revert is still the proposed fix ({}).\n\n{}\n\n{marker}\n",
            outcome.workload,
            outcome.decision.label(),
            lines.join("\n")
        );
        forge.comment(repo, pr.number, &body).await?;
        Ok(())
    }

    /// The revert branch's head commit message, for the merge commit (it carries the
    /// `Metricops-*` trailers).
    pub(super) async fn head_message(&self, place: &Site, branch: &str) -> anyhow::Result<String> {
        let (place, branch) = (place.clone(), branch.to_string());
        self.blocking(move |e| {
            e.with_mirror(&place.repo, |m| {
                let head = m.fetch(&place.url, &branch, place.auth.as_ref())?;
                Ok(m.commit_info(&head)?.message)
            })
        })
        .await
    }

    /// Merge by policy: auto-merge where checks are required, else merge now, guarded by the head sha.
    pub(super) async fn merge(
        &self,
        forge: &dyn Forge,
        cfg: &GitHubConfig,
        repo: &RepoId,
        pr: &PullRequest,
        message: &str,
        branch: &str,
    ) -> anyhow::Result<Delivery> {
        let (headline, body) =
            message.split_once('\n').map(|(h, b)| (h.trim(), b.trim())).unwrap_or((message.trim(), ""));
        let headline = format!("{headline} (#{})", pr.number);
        if forge.requires_checks(repo, &pr.base.name).await? {
            match forge.enable_auto_merge(repo, pr, cfg.merge_method, &headline, body).await {
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
                    let said = forge.comments(repo, pr.number).await?.iter().any(|c| c.contains(MARK));
                    if !said {
                        let text = format!(
                            "Policy says this revert should merge, but GitHub refuses auto-merge here: {reason}. Merge it by hand once the checks pass, or turn the setting on for next time.\n\n{MARK}\n"
                        );
                        forge.comment(repo, pr.number, &text).await?;
                    }
                    return Ok(Delivery::MergeRefused { branch: branch.to_string(), pr: link(pr), reason });
                }
                Err(e) => return Err(e.into()),
            }
        }
        match forge.merge(repo, pr.number, &pr.head.sha, cfg.merge_method, &headline, body).await? {
            Merge::Merged { sha } => {
                tracing::info!(pr = pr.number, %sha, "revert merged");
                if let Err(e) = forge.delete_branch(repo, branch).await {
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
