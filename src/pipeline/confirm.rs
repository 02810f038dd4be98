//! The rollback confirmed: after a revert lands, the deployer (Argo CD Application, Flux
//! Kustomization or HelmRelease) is asked to refresh, and the rollback is followed — synced at (or
//! after) the revert commit, healthy, the alert resolved — on the PR as one comment edited in
//! place, in the log, and in `/metrics`. The rollback being followed is kept on the deployer's
//! object (`metricops.dev/confirm`), so whichever replica holds the Lease follows it, and a new
//! leader finishes what the old one started.

use crate::domain::image_updater::ApiExclusion;
use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::Engine;
use crate::config::ForgeKind;
use crate::domain::alert::{Alert, Status};
use crate::domain::cluster::{Deployer, ObjectKey};
use crate::domain::confirm::{Ended, Progress, Rollback, Seen};
use crate::forge::{PrState, RepoId};

/// The writes the followers make to the cluster (`adapters::kube::Cluster`, or a fake in tests).
pub trait ClusterWrites: Send + Sync {
    /// Asks the deployer to look at Git now; says what it asked.
    fn refresh<'a>(&'a self, d: &'a Deployer, now: DateTime<Utc>) -> BoxFuture<'a, anyhow::Result<String>>;
    /// Keeps the rollback on the deployer's object (`None`: removes it).
    fn keep<'a>(&'a self, d: &'a Deployer, rollback: Option<&'a str>) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Excludes a tag from argocd-image-updater through the API (a JSON patch with tests).
    fn exclude<'a>(&'a self, x: &'a ApiExclusion) -> BoxFuture<'a, anyhow::Result<()>>;
}

impl ClusterWrites for crate::adapters::kube::Cluster {
    fn refresh<'a>(&'a self, d: &'a Deployer, now: DateTime<Utc>) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(crate::adapters::kube::Cluster::refresh(self, d, now))
    }
    fn keep<'a>(&'a self, d: &'a Deployer, rollback: Option<&'a str>) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(crate::adapters::kube::Cluster::keep(self, d, rollback))
    }
    fn exclude<'a>(&'a self, x: &'a ApiExclusion) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(crate::adapters::kube::Cluster::exclude(self, x))
    }
}

/// (workload, alert name) → the last status heard and when.
type Heard = HashMap<(String, String), (Status, DateTime<Utc>)>;

/// The alert notifications seen, per workload and alert name: the last status and when.
#[derive(Default)]
pub struct AlertStates {
    seen: Mutex<Heard>,
}

impl AlertStates {
    pub fn note(&self, workload: &str, alert: &Alert, now: DateTime<Utc>) {
        let mut s = self.seen.lock().expect("alert states lock");
        s.insert((workload.to_string(), alert.name.clone()), (alert.status, now));
    }

    /// Whether the workload's alerts (those named, or all seen) were last said resolved after
    /// `since`; `None` when nothing was heard of them since.
    fn resolved_since(&self, workload: &str, names: &[String], since: DateTime<Utc>) -> Option<bool> {
        let s = self.seen.lock().expect("alert states lock");
        let mine: Vec<_> = s
            .iter()
            .filter(|((w, n), _)| w == workload && (names.is_empty() || names.contains(n)))
            .map(|(_, v)| *v)
            .collect();
        if mine.is_empty() {
            return None;
        }
        if mine.iter().any(|(st, _)| *st == Status::Firing) {
            return Some(false);
        }
        mine.iter().any(|(_, at)| *at >= since).then_some(true)
    }
}

/// What is known of the alerts firing now: Alertmanager's answer, when its API is configured.
pub enum Firing {
    /// The alerts Alertmanager says fire now.
    Alertmanager(Vec<Alert>),
    /// No API: the notifications the engine received (from Alertmanager, Grafana or the evaluator).
    Notifications,
}

impl Engine {
    /// The deployer of a workload whose repository is `repo_url`: the one the zero-config target
    /// names, else the first that deploys it.
    fn deployer_of(&self, workload: &str, repo_url: &str) -> Option<Deployer> {
        let index = self.cluster.as_ref()?.read().expect("cluster index lock");
        let (ns, name) = workload.split_once('/')?;
        let key = ObjectKey::new(ns, name);
        if let Some(t) = index.target(&key)
            && crate::domain::cluster::same_repo(&t.repo_url, repo_url)
        {
            return Some(t.deployer);
        }
        // Another deployer of the workload, but only one that deploys it from this repository.
        index.deployers(&key).into_iter().find(|d| {
            index
                .target_of_deployer(d)
                .is_some_and(|t| crate::domain::cluster::same_repo(&t.repo_url, repo_url))
        })
    }

    /// A revert landed on the branch (`revert`: the commit there): the deployer is asked to
    /// refresh and the rollback is kept on its object for the leader to follow. Without a cluster,
    /// or when nothing there deploys the workload, this is logged and nothing is followed.
    pub async fn begin_rollback(
        &self,
        workload: &str,
        repo_url: &str,
        revert: &str,
        pr: Option<u64>,
        alerts: Vec<String>,
        merged_at: DateTime<Utc>,
    ) {
        let Some(writes) = self.cluster_writes.clone() else {
            tracing::info!(%workload, revert = %revert, "revert landed; no cluster is watched, so the rollback is not followed");
            return;
        };
        let Some(d) = self.deployer_of(workload, repo_url) else {
            self.metrics.rollback("not_followed");
            tracing::warn!(%workload, "revert landed, but no Argo CD Application or Flux object in the cluster deploys this workload: the rollback is not followed");
            return;
        };
        if let Some(kept) = self.cluster.as_ref().and_then(|c| c.read().ok()?.confirming.get(&d).cloned())
            && serde_json::from_str::<Rollback>(&kept).is_ok_and(|r| r.revert == revert && r.ended.is_none())
        {
            tracing::info!(deployer = %d, %revert, "this rollback is followed already");
            return;
        }
        let rollback = Rollback {
            workload: workload.to_string(),
            repo_url: repo_url.to_string(),
            revert: revert.to_string(),
            pr,
            merged_at,
            alerts,
            passed: vec![],
            ended: None,
        };
        let text = serde_json::to_string(&rollback).expect("a rollback serialises");
        if let Err(e) = writes.keep(&d, Some(&text)).await {
            self.metrics.error("cluster_write");
            tracing::warn!(deployer = %d, error = %format!("{e:#}"), "cannot keep the rollback on the deployer's object; it is not followed");
            return;
        }
        match writes.refresh(&d, Utc::now()).await {
            Ok(asked) => {
                tracing::info!(deployer = %d, %revert, "revert landed; asked for a refresh ({asked}); following the rollback")
            }
            Err(e) => {
                self.metrics.error("cluster_write");
                tracing::warn!(deployer = %d, error = %format!("{e:#}"), "could not ask for a refresh; the rollback waits for the deployer's next poll")
            }
        }
        self.tell(&d, &rollback).await;
    }

    /// A revert PR merged on GitHub (its `pull_request` webhook): the rollback begins, at the
    /// merge commit.
    pub(crate) async fn revert_pr_merged(&self, repo: &RepoId, branch: &str) {
        let Ok(forge) = self.forge() else { return };
        let Some(repo_cfg) =
            self.config.repos.iter().find(|r| RepoId::from_url(&r.url).as_ref() == Some(repo)).cloned()
        else {
            return;
        };
        let pulls = match forge.pulls_for(repo, branch, PrState::Closed).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%repo, %branch, error = %e, "cannot read the merged revert PR; the rollback is not followed");
                return;
            }
        };
        let Some(pr) = pulls.into_iter().find(|p| p.is_merged()) else { return };
        let (Some(sha), Some(body)) = (pr.merge_commit_sha.clone(), pr.body.clone()) else { return };
        let Some(incident) = super::chatops::marker(&body, "incident") else { return };
        let workload = incident.rsplit_once('@').map(|(w, _)| w.to_string()).unwrap_or(incident);
        let merged_at = pr
            .merged_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        self.begin_rollback(&workload, &repo_cfg.url, &sha, Some(pr.number), vec![], merged_at).await;
    }

    /// One look at every rollback kept in the cluster (the leader calls it when the index changes
    /// and every few seconds): steps passed are told, an end is told and the rollback dropped.
    pub async fn follow_rollbacks(&self, firing: &Firing, now: DateTime<Utc>) {
        let (Some(index), Some(writes)) = (self.cluster.clone(), self.cluster_writes.clone()) else { return };
        let kept: Vec<(Deployer, String)> = index
            .read()
            .expect("cluster index lock")
            .confirming
            .iter()
            .map(|(d, t)| (d.clone(), t.clone()))
            .collect();
        let deadline = self.config.cluster.confirm_timeout();
        self.followed.lock().expect("followed lock").retain(|d, _| kept.iter().any(|(k, _)| k == d));
        for (d, text) in kept {
            let mut rollback: Rollback = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(deployer = %d, error = %e, "the kept rollback cannot be read; dropped");
                    let _ = writes.keep(&d, None).await;
                    continue;
                }
            };
            // The watch may not have brought this replica's last write yet: what it wrote wins.
            if let Some(last) = self.followed.lock().expect("followed lock").get(&d)
                && last.is_further_than(&rollback)
            {
                rollback = last.clone();
            }
            if rollback.ended.is_some() {
                let _ = writes.keep(&d, None).await;
                continue;
            }
            let seen = self.seen(&d, &rollback, firing).await;
            let before = rollback.passed.len();
            let progress = rollback.observe(&seen, now, deadline);
            for (step, at) in &rollback.passed[before..] {
                self.metrics.rollback_step(
                    step.label(),
                    (*at - rollback.merged_at).num_milliseconds() as f64 / 1000.0,
                );
            }
            let kept = match &progress {
                Progress::Nothing => continue,
                Progress::Passed(_) => Some(serde_json::to_string(&rollback).expect("a rollback serialises")),
                Progress::Ended(e) => {
                    self.metrics.rollback(match e {
                        Ended::Confirmed => "confirmed",
                        Ended::TimedOut { step, .. } => match step {
                            crate::domain::confirm::Step::Synced => "timed_out_synced",
                            crate::domain::confirm::Step::Healthy => "timed_out_healthy",
                            crate::domain::confirm::Step::Resolved => "timed_out_resolved",
                        },
                    });
                    None
                }
            };
            self.followed.lock().expect("followed lock").insert(d.clone(), rollback.clone());
            self.tell(&d, &rollback).await;
            self.keep_rollback(&rollback, now).await;
            if let Err(e) = writes.keep(&d, kept.as_deref()).await {
                self.metrics.error("cluster_write");
                tracing::warn!(deployer = %d, error = %format!("{e:#}"), "cannot update the kept rollback; the next look tries again");
            }
        }
    }

    /// What the cluster, git and the alerts say of a rollback now.
    async fn seen(&self, d: &Deployer, r: &Rollback, firing: &Firing) -> Seen {
        let status = self
            .cluster
            .as_ref()
            .and_then(|c| c.read().expect("cluster index lock").rollout(d, &r.repo_url))
            .unwrap_or_default();
        let at_revert = match &status.revision {
            Some(rev) if rev.eq_ignore_ascii_case(&r.revert) => true,
            Some(rev) => self.contains(&r.workload, rev, &r.revert).await,
            None => false,
        };
        let alert_resolved = match firing {
            Firing::Alertmanager(alerts) => !alerts.iter().any(|a| {
                (r.alerts.is_empty() || r.alerts.contains(&a.name))
                    && self.workload_of(&a.labels).as_deref() == Some(r.workload.as_str())
            }),
            Firing::Notifications => {
                self.alert_states.resolved_since(&r.workload, &r.alerts, r.merged_at) == Some(true)
            }
        };
        Seen { at_revert, synced: status.synced, healthy: status.healthy, alert_resolved, said: status.said }
    }

    /// Whether commit `rev` has `revert` in its history (the deployer applied a later commit).
    /// The workload's branch is fetched when the mirror does not know `rev` yet.
    async fn contains(&self, workload: &str, rev: &str, revert: &str) -> bool {
        let Ok((w, repo_cfg)) = self.workload(workload) else { return false };
        let auth = self.git_auth(&repo_cfg).await.ok().flatten();
        let (rev, revert) = (rev.to_string(), revert.to_string());
        let r = self
            .blocking(move |e| {
                e.with_mirror(&repo_cfg.name, |m| {
                    let known = |m: &crate::adapters::git::GitRepo| {
                        let (a, b) = (git2::Oid::from_str(&rev).ok()?, git2::Oid::from_str(&revert).ok()?);
                        m.repo.find_commit(a).ok()?;
                        m.repo.find_commit(b).ok()?;
                        Some(a == b || m.repo.graph_descendant_of(a, b).unwrap_or(false))
                    };
                    if let Some(k) = known(m) {
                        return Ok(k);
                    }
                    let _ = m.fetch(&repo_cfg.url, &w.branch(&repo_cfg), auth.as_ref());
                    Ok(known(m).unwrap_or(false))
                })
            })
            .await;
        r.unwrap_or(false)
    }

    /// Keeps a rollback's steps for the history (a note on the landed revert, with `history.notes`).
    async fn keep_rollback(&self, r: &Rollback, now: DateTime<Utc>) {
        let repo = self
            .config
            .repos
            .iter()
            .find(|c| crate::domain::cluster::same_repo(&c.url, &r.repo_url))
            .map(|c| c.name.clone());
        let k = crate::domain::history::Kept::Rollback(crate::domain::history::KeptRollback {
            at: now,
            workload: r.workload.clone(),
            revert: r.revert.clone(),
            pr: r.pr,
            merged_at: r.merged_at,
            passed: r.passed.clone(),
            ended: r.ended.as_ref().map(|e| match e {
                Ended::Confirmed => "confirmed".to_string(),
                Ended::TimedOut { step, said } => format!("{} did not come in time: {said}", step.label()),
            }),
        });
        self.keep(repo, Some(crate::domain::culprit::CommitSha(r.revert.clone())), k).await;
    }

    /// Tells a rollback's state: the PR comment (edited in place) with a forge, and the log.
    async fn tell(&self, d: &Deployer, r: &Rollback) {
        let deadline = self.config.cluster.confirm_timeout();
        let line = r.line(deadline);
        match &r.ended {
            Some(Ended::TimedOut { .. }) => {
                tracing::warn!(workload = %r.workload, deployer = %d, revert = %r.revert, "rollback not confirmed: {line}")
            }
            _ => {
                tracing::info!(workload = %r.workload, deployer = %d, revert = %r.revert, "rollback: {line}")
            }
        }
        let Some(number) = r.pr else { return };
        let Some(repo_cfg) =
            self.config.repos.iter().find(|c| {
                c.forge == ForgeKind::Github && crate::domain::cluster::same_repo(&c.url, &r.repo_url)
            })
        else {
            return;
        };
        let (Ok(forge), Some(repo)) = (self.forge(), RepoId::from_url(&repo_cfg.url)) else { return };
        let body = r.comment(&d.to_string(), deadline);
        if let Err(e) = forge.upsert_comment(&repo, number, &r.marker(), &body).await {
            self.metrics.error("confirm_comment");
            tracing::warn!(pr = number, error = %e, "could not update the rollback comment on the PR; the next step tries again");
        }
    }
}
