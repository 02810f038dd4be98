//! The engine, one incident at a time: alert → incident → target → culprit → decision → revert →
//! forge. Every entry point (`demo`, later `serve` and `simulate`) goes through here.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::adapters::git::{GitError, GitRepo};
use crate::config::{Config, WorkloadConfig};
use crate::domain::alert::{Alert, Incident, group, parse_alertmanager};
use crate::domain::culprit::{Culprit, Query, Subject};
use crate::domain::policy::{Decision, decide};
use crate::domain::render::{AlertView, ChangeView, CulpritView, Link, PrView, render_pr, PR_BODY, PR_TITLE};
use crate::domain::revert::{ModeChoice, branch_name};
use crate::revert::{BuiltRevert, build_revert, trace};

/// Where the revert went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The branch was pushed for a person to merge.
    Proposed { branch: String },
    /// The branch was there already: the alert re-confirms the open revert, nothing new is made.
    AlreadyProposed { branch: String },
    /// The revert was pushed straight to the target branch.
    Merged { branch: String },
}

#[derive(Debug)]
pub struct Outcome {
    pub incident: Incident,
    pub workload: String,
    pub repo_url: String,
    pub branch: String,
    pub paths: Vec<String>,
    pub subject: Subject,
    pub culprit: Culprit,
    pub decision: Decision,
    pub revert: Option<BuiltRevert>,
    pub patch: Option<String>,
    pub delivery: Option<Delivery>,
    pub pr: Option<(String, String)>,
}

/// What happened to one webhook delivery.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Alerts not acted on, with the reason (logged and counted, never dropped silently).
    pub passed_over: Vec<(Alert, String)>,
    /// Incidents that failed, with the error.
    pub failed: Vec<(String, String)>,
}

pub struct Engine<'c> {
    pub config: &'c Config,
    pub state_dir: PathBuf,
}

impl<'c> Engine<'c> {
    pub fn new(config: &'c Config) -> Self {
        let state_dir = config.state_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("metricops"));
        Engine { config, state_dir }
    }

    /// Handles one Alertmanager v4 webhook body.
    pub fn handle_alertmanager(&self, body: &str, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let alerts = parse_alertmanager(body)?;
        let (incidents, unplaced) = group(&alerts, |a| self.config.workload_for(&a.labels).map(|w| w.name.clone()));
        let mut report = Report::default();
        for (alert, reason) in unplaced {
            tracing::info!(alert = %alert.name, reason = %reason, "alert passed over");
            report.passed_over.push((alert.clone(), reason));
        }
        for incident in incidents {
            let id = incident.id.clone();
            match self.handle_incident(incident, now) {
                Ok(o) => report.outcomes.push(o),
                Err(e) => {
                    tracing::error!(incident = %id, error = %format!("{e:#}"), "incident failed");
                    report.failed.push((id, format!("{e:#}")));
                }
            }
        }
        Ok(report)
    }

    fn mirror(&self, name: &str) -> anyhow::Result<GitRepo> {
        let path = self.state_dir.join("mirrors").join(format!("{name}.git"));
        if path.join("HEAD").exists() {
            Ok(GitRepo::open(&path)?)
        } else {
            std::fs::create_dir_all(&path).with_context(|| format!("creating mirror {}", path.display()))?;
            Ok(GitRepo::init_bare(&path)?)
        }
    }

    pub fn handle_incident(&self, incident: Incident, now: DateTime<Utc>) -> anyhow::Result<Outcome> {
        let w: &WorkloadConfig = self.config.workloads.iter().find(|w| w.name == incident.workload).context("workload vanished from config")?;
        let repo_cfg = self.config.repo(&w.repo.value).context("workload's repo is not configured")?;
        let branch = w.branch.clone().unwrap_or_else(|| repo_cfg.branch.clone());
        let subject = match (&w.image, &w.key) {
            (Some(i), _) => Subject::Image(i.clone()),
            (None, Some(k)) => Subject::Key(k.clone()),
            (None, None) => anyhow::bail!("workload {} has neither image nor key", w.name),
        };
        let span = tracing::info_span!("incident", id = %incident.id);
        let _enter = span.enter();

        let mirror = self.mirror(&repo_cfg.name)?;
        let tip = mirror.fetch(&repo_cfg.url, &branch).with_context(|| format!("fetching {branch} from {}", repo_cfg.url))?;
        tracing::info!(repo = %repo_cfg.url, %branch, tip = %tip.short(), "fetched");
        let query = Query { subject: subject.clone(), tag: None, digest: None };
        let culprit = trace(&mirror, &tip.0, &query, &w.paths)?;
        tracing::info!(culprit = %culprit.commit.sha.short(), version = %culprit.version, "culprit found");
        let decision = decide(&self.config.policy(), &culprit.commit, incident.started_at(), now);
        tracing::info!(decision = decision.label(), "decided");
        let mut outcome = Outcome {
            workload: w.name.clone(),
            repo_url: repo_cfg.url.clone(),
            branch: branch.clone(),
            paths: w.paths.clone(),
            subject: subject.clone(),
            culprit,
            decision: decision.clone(),
            revert: None,
            patch: None,
            delivery: None,
            pr: None,
            incident,
        };
        if let Decision::Ignore(reason) = &decision {
            tracing::info!(reason = reason.label(), "ignored: {reason}");
            return Ok(outcome);
        }
        let revert_branch = branch_name(&outcome.culprit.commit.sha.0);
        // One revert per culprit: its branch at the remote means it is proposed already.
        let heads = mirror.remote_heads(&repo_cfg.url)?;
        if decision == Decision::Propose && heads.iter().any(|(n, _)| *n == revert_branch) {
            tracing::info!(branch = %revert_branch, "revert already proposed; alert re-confirms it");
            outcome.delivery = Some(Delivery::AlreadyProposed { branch: revert_branch });
            return Ok(outcome);
        }
        mirror.delete_branch(&revert_branch)?;
        let reason = reason_text(&outcome);
        let built = build_revert(&mirror, &outcome.culprit, &subject, &tip, ModeChoice::Auto, Some(&revert_branch), &reason, now)?;
        tracing::info!(commit = %built.commit.short(), mode = built.mode.label(), "revert built");
        outcome.patch = Some(mirror.patch(&tip, &built.commit)?);
        outcome.pr = Some(self.render(&outcome, &built, &decision)?);
        let delivery = match decision {
            Decision::Merge => {
                push(&mirror, &repo_cfg.url, &built, &branch)?;
                Delivery::Merged { branch: branch.clone() }
            }
            _ => {
                push(&mirror, &repo_cfg.url, &built, &revert_branch)?;
                Delivery::Proposed { branch: revert_branch }
            }
        };
        tracing::info!(?delivery, "delivered");
        outcome.delivery = Some(delivery);
        outcome.revert = Some(built);
        Ok(outcome)
    }

    fn render(&self, o: &Outcome, built: &BuiltRevert, decision: &Decision) -> anyhow::Result<(String, String)> {
        let view = pr_view(o, built, decision);
        Ok(render_pr(&view, PR_TITLE, PR_BODY)?)
    }
}

fn push(mirror: &GitRepo, url: &str, built: &BuiltRevert, branch: &str) -> anyhow::Result<()> {
    match mirror.push(url, &built.commit, branch) {
        Ok(()) => Ok(()),
        Err(e @ GitError::PushRejected { .. }) => Err(anyhow::Error::new(e).context("the remote moved on while the revert was built; the next alert re-drives it")),
        Err(e) => Err(e.into()),
    }
}

fn reason_text(o: &Outcome) -> String {
    let alerts: Vec<String> = o
        .incident
        .alerts
        .iter()
        .map(|a| format!("{} ({}) firing since {}", a.name, a.severity.as_deref().unwrap_or("no severity"), a.starts_at.to_rfc3339()))
        .collect();
    format!(
        "metricops: {} for workload {}; {} goes back from {} to {}.",
        alerts.join(", "),
        o.workload,
        o.culprit.image.as_deref().unwrap_or("the tag"),
        o.culprit.version,
        o.culprit.previous.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
    )
}

pub fn pr_view(o: &Outcome, built: &BuiltRevert, decision: &Decision) -> PrView {
    let image = built.image.clone();
    let mut links = Vec::new();
    for a in &o.incident.alerts {
        for (key, name) in [("runbook_url", "runbook"), ("dashboard_url", "dashboard")] {
            if let Some(u) = a.annotations.get(key) {
                links.push(Link { name: name.into(), url: u.clone() });
            }
        }
        if !a.generator_url.is_empty() {
            links.push(Link { name: "alert query".into(), url: a.generator_url.clone() });
        }
    }
    links.dedup_by(|a, b| a.url == b.url);
    let decision_reason = match decision {
        Decision::Merge => "policy says merge: the revert lands on the branch at once".to_string(),
        Decision::Propose => "policy says propose: a person merges it".to_string(),
        Decision::Ignore(r) => r.to_string(),
    };
    PrView {
        workload: o.workload.clone(),
        incident: o.incident.id.clone(),
        image_short: image.rsplit('/').next().unwrap_or(&image).to_string(),
        image,
        from: built.from.clone(),
        to: built.to.clone().unwrap_or_else(|| "(none)".into()),
        alerts: o
            .incident
            .alerts
            .iter()
            .map(|a| AlertView {
                name: a.name.clone(),
                severity: a.severity.clone(),
                starts_at: a.starts_at.to_rfc3339(),
                value: a.annotations.get("value").cloned(),
                summary: a.annotations.get("summary").cloned(),
            })
            .collect(),
        changes: o.culprit.changes.iter().map(|c| ChangeView { file: c.file.clone(), line: c.line, workload: c.workload.as_ref().map(|w| w.to_string()) }).collect(),
        culprit: CulpritView {
            sha: o.culprit.commit.sha.0.clone(),
            subject: o.culprit.commit.summary.clone(),
            author: format!("{} <{}>", o.culprit.commit.author, o.culprit.commit.author_email),
            time: o.culprit.commit.time.to_rfc3339(),
        },
        decision: decision.label().to_string(),
        decision_reason,
        mode: built.mode.label().to_string(),
        mode_reason: built.why.clone(),
        links,
    }
}
