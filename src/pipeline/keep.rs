//! Decisions that outlive the process: every decision the engine carried out (an ignore with its
//! reason included), a rollback's steps and people's commands are kept in `state_dir/decisions/`
//! and, with `history.notes`, as a git note on the culprit (or the landed revert) in the manifests
//! repository. Keeping never fails an incident: a failure is logged and counted.

use chrono::{DateTime, Utc};

use super::{Engine, Outcome};
use crate::domain::culprit::CommitSha;
use crate::domain::history::{ALERT_TRAILER, INCIDENT_TRAILER, Kept, VERSIONS_TRAILER};
use crate::domain::reconcile::WORKLOAD_TRAILER;
use crate::history::{DecisionLog, kept_decision};

/// The trailers of a revert commit the history reads back: workload, incident, alerts, versions.
pub(super) fn history_trailers(o: &Outcome) -> Vec<(&'static str, String)> {
    let (groups, _) = crate::domain::alert::summarise(&o.incident.alerts, 5);
    let alerts: Vec<String> = groups
        .iter()
        .map(|g| match &g.first.severity {
            Some(s) => format!("{} ({s})", g.first.name),
            None => g.first.name.clone(),
        })
        .collect();
    let to = o.culprit.previous.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
    vec![
        (WORKLOAD_TRAILER, o.workload.clone()),
        (INCIDENT_TRAILER, o.incident.id.clone()),
        // One line whatever an alert's name holds: a newline would end the trailer block.
        (ALERT_TRAILER, alerts.join(", ").replace(|c: char| c.is_control(), " ")),
        (VERSIONS_TRAILER, format!("{} -> {to}", o.culprit.version)),
    ]
}

impl Engine {
    /// Keeps the decision of a handled incident.
    pub(super) async fn keep_outcome(&self, o: &Outcome, now: DateTime<Utc>) {
        let k = Kept::Decision(Box::new(kept_decision(o, now)));
        let repo = self.workload(&o.workload).ok().map(|(_, r)| r.name);
        self.keep(repo, Some(o.culprit.commit.sha.clone()), k).await;
    }

    /// Keeps a record: in the log, and as a note on `on` in `repo` when `history.notes` is on.
    pub(crate) async fn keep(&self, repo: Option<String>, on: Option<CommitSha>, k: Kept) {
        let mut note = None;
        if self.config.history.notes
            && let (Some(repo), Some(on)) = (repo, on)
            && let Some(repo_cfg) = self.config.repo(&repo).cloned()
        {
            match self.git_auth(&repo_cfg).await {
                Ok(auth) => note = Some((repo_cfg, auth, on)),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "no git token for the decision's note"),
            }
        }
        let r = self
            .blocking(move |e| {
                let path = DecisionLog::new(&e.state_dir).record(&k)?;
                tracing::debug!(file = %path.display(), "decision kept");
                if let Some((repo_cfg, auth, on)) = note {
                    e.with_mirror(&repo_cfg.name, |m| {
                        m.add_note(&repo_cfg.url, auth.as_ref(), &on, &k, Utc::now())?;
                        tracing::info!(on = %on.short(), "decision kept as a git note (refs/notes/metricops)");
                        Ok(())
                    })?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            self.metrics.error("history_keep");
            tracing::warn!(error = %format!("{e:#}"), "could not keep the decision for the history");
        }
    }
}
