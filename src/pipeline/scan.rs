//! Unfinished work, found again: a revert branch pushed whose pull request was never opened (the
//! process died, or the forge failed, between the push and the PR). Run at start and at each tick;
//! what to do with each branch is `domain::reconcile::unfinished`.

use super::Engine;
use crate::config::ForgeKind;
use crate::domain::reconcile::{FoundBranch, Unfinished, WORKLOAD_TRAILER, trailer, unfinished};
use crate::domain::revert::{BRANCH_PREFIX, reverted_culprit};
use crate::forge::{PrState, RepoId};

/// A branch older than this is not opened by itself: a person looks at it.
const MAX_AGE: chrono::Duration = chrono::Duration::days(7);

impl Engine {
    /// A revert PR was closed: its branch is deleted (a failure is logged; the scan leaves a branch
    /// with a closed PR alone).
    pub async fn revert_closed(&self, repo: &RepoId, branch: &str, merged: bool) {
        if merged {
            self.revert_pr_merged(repo, branch).await;
        }
        let Ok(forge) = self.forge() else { return };
        match forge.delete_branch(repo, branch).await {
            Ok(()) => tracing::info!(%repo, %branch, merged, "revert PR closed; branch deleted"),
            Err(e) => {
                self.metrics.error("delete_branch");
                tracing::warn!(%repo, %branch, error = %e, "revert PR closed; could not delete its branch")
            }
        }
    }

    /// Looks at every `forge: github` repository's revert branches and opens the PR of each that
    /// has none. Problems are logged and counted; the next tick looks again.
    pub async fn finish_unfinished(&self, now: chrono::DateTime<chrono::Utc>) {
        for repo_cfg in self.config.repos.iter().filter(|r| r.forge == ForgeKind::Github) {
            let span = tracing::info_span!("scan", repo = %repo_cfg.name);
            let _ = tracing::Instrument::instrument(
                async {
                    if let Err(e) = self.scan_repo(repo_cfg, now).await {
                        self.metrics.error("scan");
                        tracing::warn!(error = %format!("{e:#}"), "could not look for unfinished reverts; the next tick tries again");
                    }
                },
                span,
            )
            .await;
        }
    }

    async fn scan_repo(
        &self,
        repo_cfg: &crate::config::RepoConfig,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let forge = self.forge()?.clone();
        let repo = RepoId::from_url(&repo_cfg.url).context("owner/name of the repository")?;
        let site = self.place(repo_cfg, "").await?;
        let heads = {
            let site = site.clone();
            self.blocking(move |e| {
                e.with_mirror(&site.repo, |m| Ok(m.remote_heads(&site.url, site.auth.as_ref())?))
            })
            .await?
        };
        let branches: Vec<String> =
            heads.into_iter().map(|(n, _)| n).filter(|n| n.starts_with(BRANCH_PREFIX)).collect();
        if branches.is_empty() {
            return Ok(());
        }
        let open = forge.open_pulls(&repo).await?;
        for branch in branches {
            if open.iter().any(|p| p.head.name == branch) {
                continue;
            }
            let (site, b) = (site.clone(), branch.clone());
            let message = self
                .blocking(move |e| {
                    e.with_mirror(&site.repo, |m| {
                        let head = m.fetch(&site.url, &b, site.auth.as_ref())?;
                        Ok(m.commit_info(&head)?)
                    })
                })
                .await?;
            let workload = trailer(&message.message, WORKLOAD_TRAILER).map(str::to_string);
            // An incident of this workload may be delivering this very revert now (at a restart
            // the journal's replay runs beside this scan): the branch's PRs are listed in the
            // workload's turn, held until the PR is opened. Listed outside it, the scan could open
            // a second PR for the culprit between the incident's merge and its branch's deletion.
            let _turn = match workload.as_deref() {
                Some(w) => Some(self.turn(w).await),
                None => None,
            };
            let has_pr = !forge.pulls_for(&repo, &branch, PrState::All).await?.is_empty();
            let found = FoundBranch {
                branch: branch.clone(),
                has_pr,
                committed: message.time.with_timezone(&chrono::Utc),
            };
            match unfinished(&found, true, now, MAX_AGE) {
                Unfinished::Complete => {}
                Unfinished::Stale => {
                    tracing::warn!(%branch, committed = %found.committed, "a revert branch without a PR, too old to open one by itself; delete it or open its PR by hand")
                }
                Unfinished::OpenItsPr => {
                    let base = workload
                        .as_deref()
                        .and_then(|w| self.config.workloads.iter().find(|c| c.name == w))
                        .map(|w| w.branch(repo_cfg))
                        .unwrap_or_else(|| repo_cfg.branch.clone());
                    let culprit = reverted_culprit(&message.message).unwrap_or_default();
                    let title = message.message.lines().next().unwrap_or("metricops revert").to_string();
                    let body = format!(
                        "## metricops: rollback found unfinished\n\nThe revert branch `{branch}` was pushed, and its pull request was never opened (the bot stopped, or the forge failed, in between). Opened now from the revert commit:\n\n```\n{}\n```\n\nThe next alert for this workload brings the full details here; `/metricops help` lists the commands.\n\n<!-- metricops: culprit={culprit} incident={}@recovered -->\n",
                        message.message.trim_end(),
                        workload.as_deref().unwrap_or("unknown"),
                    );
                    let (pr, opened) = forge.open_or_find_pull(&repo, &title, &body, &branch, &base).await?;
                    if let Some(cfg) = self.config.github.as_ref() {
                        self.dress(forge.as_ref(), cfg, &repo, &pr, None).await;
                    }
                    self.metrics.delivery("recovered");
                    tracing::info!(%branch, pr = pr.number, opened, "opened the PR of a revert branch left without one");
                }
            }
        }
        Ok(())
    }
}
