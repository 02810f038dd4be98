//! The engine, one incident at a time: alert → incident → target → culprit → decision → revert →
//! forge. Every entry point (`demo`, later `serve` and `simulate`) goes through here.

mod chatops;
mod github;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use secrecy::SecretString;

use crate::adapters::git::{GitError, GitRepo};
use crate::adapters::github::{GitHubApp, RepoId};
use crate::config::{Config, ForgeKind, RepoConfig, WorkloadConfig};
use crate::domain::alert::{Alert, Incident, Source, Status, group, parse_alertmanager, summarise};
use crate::domain::culprit::CommitSha;
use crate::domain::culprit::{Culprit, Query, Subject, TraceError};
use crate::domain::pause::set_paused;
use crate::domain::policy::{Decision, Facts, decide, most_severe};
use crate::domain::redact::redact_url;
use crate::domain::render::{
    AlertView, ChangeView, CulpritView, LaterView, Link, OriginalPr, PrView, render_pr,
};
use crate::domain::revert::{ModeChoice, branch_name};
use crate::domain::rules::{Rule, annotated_rules, check_promql};
use crate::metrics::Metrics;
use crate::revert::{BuiltRevert, RevertError, build_revert, trace};
use github::GitHub;

/// Work waiting for the engine.
pub enum Job {
    /// The alerts of one webhook delivery or one rule; `received` starts the duration metric.
    /// A webhook delivery is in the journal as `entry` until it is finished with.
    Alerts {
        source: Source,
        alerts: Vec<Alert>,
        received: std::time::Instant,
        entry: Option<crate::journal::EntryId>,
        attempts: u32,
    },
    /// A comment with `/metricops` commands.
    Comment(crate::domain::forge_event::Comment),
}

/// A pull request, as a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrLink {
    pub number: u64,
    pub url: String,
}

/// Where the revert went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The branch was pushed (and, on GitHub, the pull request opened) for a person to merge.
    Proposed { branch: String, pr: Option<PrLink> },
    /// The revert was there already: the alert re-confirms it, nothing new is made.
    AlreadyProposed { branch: String, pr: Option<PrLink> },
    /// The revert landed on the target branch.
    Merged { branch: String, pr: Option<PrLink> },
    /// GitHub merges it once the required checks pass.
    AutoMergeEnabled { branch: String, pr: PrLink },
    /// Policy said merge, GitHub would not (yet); the pull request stays open for a person.
    MergeRefused { branch: String, pr: PrLink, reason: String },
    /// A person cancelled this culprit's revert recently: nothing is proposed again.
    Suppressed { branch: String, pr: PrLink },
}

impl Delivery {
    pub fn label(&self) -> &'static str {
        match self {
            Delivery::Proposed { .. } => "proposed",
            Delivery::AlreadyProposed { .. } => "already_proposed",
            Delivery::Merged { .. } => "merged",
            Delivery::AutoMergeEnabled { .. } => "auto_merge_enabled",
            Delivery::MergeRefused { .. } => "merge_refused",
            Delivery::Suppressed { .. } => "suppressed",
        }
    }
    pub fn pr(&self) -> Option<&PrLink> {
        match self {
            Delivery::Proposed { pr, .. }
            | Delivery::AlreadyProposed { pr, .. }
            | Delivery::Merged { pr, .. } => pr.as_ref(),
            Delivery::AutoMergeEnabled { pr, .. }
            | Delivery::MergeRefused { pr, .. }
            | Delivery::Suppressed { pr, .. } => Some(pr),
        }
    }
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
    /// The culprit's merged pull request (GitHub).
    pub original_pr: Option<crate::adapters::github::PullRequest>,
    /// What the revert commit paused so the bad version is not promoted again.
    pub paused: Vec<String>,
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
    /// Build the revert and its PR text, deliver nothing (`simulate` without `--execute`).
    pub dry_run: bool,
    pub metrics: Arc<Metrics>,
    github: Option<GitHub>,
    /// Repository roles for ChatOps, kept a minute: `(repo, login)` → (when asked, role).
    roles: std::sync::Mutex<std::collections::HashMap<(String, String), (std::time::Instant, String)>>,
}

impl<'c> Engine<'c> {
    /// An engine for plain git remotes only.
    pub fn new(config: &'c Config) -> Self {
        let state_dir = config.state_dir();
        Engine {
            config,
            state_dir,
            dry_run: false,
            metrics: Arc::new(Metrics::default()),
            github: None,
            roles: Default::default(),
        }
    }

    /// An engine that also speaks to GitHub as the App, its async calls run on `runtime`. Call the
    /// engine from outside the runtime (a worker thread): it blocks on each GitHub call.
    pub fn with_github(config: &'c Config, app: Arc<GitHubApp>, runtime: tokio::runtime::Handle) -> Self {
        let mut e = Engine::new(config);
        e.github = Some(GitHub { app, rt: runtime });
        e
    }

    /// As the config says: with the GitHub App when there is a `github:` section.
    pub fn from_config(config: &'c Config, runtime: &tokio::runtime::Handle) -> anyhow::Result<Self> {
        match &config.github {
            None => Ok(Engine::new(config)),
            Some(g) => {
                let app = {
                    let _guard = runtime.enter();
                    GitHubApp::new(&g.app_settings()?)?
                };
                Ok(Engine::with_github(config, Arc::new(app), runtime.clone()))
            }
        }
    }

    fn github(&self) -> anyhow::Result<&GitHub> {
        self.github.as_ref().context("this repo has `forge: github`, but the engine has no GitHub App (no `github:` section in the config?)")
    }

    /// The token for git over HTTPS, for repos on GitHub.
    fn git_auth(&self, repo: &RepoConfig) -> anyhow::Result<Option<SecretString>> {
        match repo.forge {
            ForgeKind::Git => Ok(None),
            ForgeKind::Github => {
                let gh = self.github()?;
                let id = RepoId::from_url(&repo.url)
                    .with_context(|| format!("owner/name of {}", redact_url(&repo.url)))?;
                Ok(Some(gh.block(gh.app.git_token(&id))?))
            }
        }
    }

    /// Handles one Alertmanager v4 webhook body.
    pub fn handle_alertmanager(&self, body: &str, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let alerts = parse_alertmanager(body)?;
        Ok(self.handle_alerts(Source::Alertmanager, &alerts, std::time::Instant::now(), now))
    }

    /// Handles the alerts of one delivery: grouped per workload, one incident each. `received` is
    /// when they arrived (for the duration metric), `now` the clock the policy uses.
    pub fn handle_alerts(
        &self,
        source: Source,
        alerts: &[Alert],
        received: std::time::Instant,
        now: DateTime<Utc>,
    ) -> Report {
        let (incidents, unplaced) =
            group(alerts, |a| self.config.workload_for(&a.labels).map(|w| w.name.clone()));
        let mut report = Report::default();
        for (alert, reason) in unplaced {
            let outcome = if alert.status == Status::Resolved { "resolved" } else { "unmatched" };
            self.metrics.alert(source.label(), outcome);
            tracing::info!(source = source.label(), alert = %alert.name, reason = %reason, "alert passed over");
            report.passed_over.push((alert.clone(), reason));
        }
        for incident in incidents {
            for _ in &incident.alerts {
                self.metrics.alert(source.label(), "acted");
            }
            let id = incident.id.clone();
            match self.handle_incident(incident, now) {
                Ok(o) => {
                    self.metrics.incident(o.decision.label(), received.elapsed().as_secs_f64());
                    if let Some(r) = &o.revert {
                        self.metrics.revert(r.mode.label());
                    }
                    if let Some(d) = &o.delivery {
                        self.metrics.delivery(d.label());
                    }
                    report.outcomes.push(o)
                }
                Err(e) => {
                    self.metrics.incident("failed", received.elapsed().as_secs_f64());
                    self.metrics.error(error_kind(&e));
                    tracing::error!(incident = %id, error = %format!("{e:#}"), "incident failed");
                    report.failed.push((id, format!("{e:#}")));
                }
            }
        }
        report
    }

    /// Rules that workloads carry in their manifests (`metricops.dev/rule`, with
    /// `metricops.dev/rule-for`), read at each workload's branch tip. Problems are logged and skipped.
    pub fn annotation_rules(&self) -> Vec<Rule> {
        use crate::domain::culprit::History;
        let mut rules = Vec::new();
        for w in &self.config.workloads {
            let found = (|| -> anyhow::Result<Vec<Rule>> {
                let repo_cfg =
                    self.config.repo(&w.repo.value).context("workload's repo is not configured")?;
                let branch = w.branch(repo_cfg);
                let mirror = self.mirror(&repo_cfg.name)?;
                let auth = self.git_auth(repo_cfg)?;
                let tip = mirror.fetch(&repo_cfg.url, &branch, auth.as_ref())?;
                let history = mirror.history(&w.paths);
                let mut out = Vec::new();
                for f in history.files(&tip)?.into_iter().filter(|f| !f.symlink) {
                    let path = f.path;
                    let text = String::from_utf8_lossy(&history.read(f.blob)?).into_owned();
                    for (name, expr, for_) in annotated_rules(&text) {
                        let rule_name =
                            format!("{}:{}", w.name, if name.is_empty() { "rule" } else { &name });
                        if let Err(e) = check_promql(&rule_name, &expr) {
                            tracing::error!(file = %path, error = %e, "annotation rule skipped");
                            continue;
                        }
                        let for_ = for_
                            .as_deref()
                            .and_then(crate::config::parse_duration)
                            .unwrap_or_else(chrono::Duration::zero);
                        out.push(Rule {
                            name: rule_name,
                            workload: w.name.clone(),
                            expr,
                            for_,
                            severity: Some("critical".into()),
                            origin: path.clone(),
                        });
                    }
                }
                Ok(out)
            })();
            match found {
                Ok(r) => rules.extend(r),
                Err(e) => {
                    tracing::error!(workload = %w.name, error = %format!("{e:#}"), "could not read annotation rules")
                }
            }
        }
        rules
    }

    /// The culprit's merged pull request on GitHub (for the PR body, the author's review and the
    /// opt-out label). A failure is logged: the revert does not depend on it.
    fn original_pr(&self, repo: &RepoConfig, sha: &str) -> Option<crate::adapters::github::PullRequest> {
        let gh = self.github.as_ref()?;
        let id = RepoId::from_url(&repo.url)?;
        match gh.block(gh.app.pulls_with_commit(&id, sha)) {
            Ok(prs) => prs.into_iter().find(|p| p.is_merged()),
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the culprit's pull request; going on without it");
                None
            }
        }
    }

    /// Everything the policy needs to know, read from git, the alerts and the forge.
    #[allow(clippy::too_many_arguments)]
    fn facts(
        &self,
        mirror: &GitRepo,
        repo: &RepoConfig,
        tip: &CommitSha,
        w: &WorkloadConfig,
        incident: &Incident,
        culprit: &Culprit,
        original: Option<&crate::adapters::github::PullRequest>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Facts> {
        let policy = self.config.policy();
        let since = now - policy.cooldown.max(chrono::Duration::hours(24));
        let day_ago = now - chrono::Duration::hours(24);
        let mut last_revert = None;
        let mut reverts_today_repo = 0;
        for (info, workload) in recent_reverts(mirror, tip, since)? {
            if info.time.with_timezone(&Utc) >= day_ago {
                reverts_today_repo += 1;
            }
            if workload.as_deref() == Some(w.name.as_str()) {
                last_revert = last_revert.max(Some(info.time.with_timezone(&Utc)));
            }
        }
        // Other repos: their mirrors as last fetched (not fetched again for this).
        let mut reverts_today = reverts_today_repo;
        for other in self.config.repos.iter().filter(|r| r.name != repo.name) {
            let path = self.state_dir.join("mirrors").join(format!("{}.git", other.name));
            let branch = format!("refs/remotes/origin/{}", other.branch);
            if let Ok(m) = GitRepo::open(&path)
                && let Ok(t) = m.resolve(&branch)
            {
                reverts_today += recent_reverts(&m, &t, day_ago).map(|v| v.len() as u32).unwrap_or(0);
            }
        }
        let alerts = &incident.alerts;
        let mut labels = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
        labels.retain(|k, v| alerts.iter().all(|a| a.labels.get(k) == Some(v)));
        let opted_out = if let Some(a) =
            alerts.iter().find(|a| a.labels.get(OPT_OUT_ALERT_LABEL).is_some_and(|v| v == "off"))
        {
            Some(format!("label {OPT_OUT_ALERT_LABEL}=\"off\" on alert {}", a.name))
        } else if let Some(file) = opted_out_in_manifests(mirror, tip, &w.paths)? {
            Some(format!("annotation metricops.dev/rollback: \"off\" in {file}"))
        } else {
            original
                .filter(|p| p.labels.iter().any(|l| l.name == self.config.opt_out_label()))
                .map(|p| format!("label {:?} on #{}", self.config.opt_out_label(), p.number))
        };
        let running_version = alerts.iter().find_map(|a| {
            let image = a.labels.get("image")?;
            let r = crate::domain::image_ref::ImageRef::parse(image)?;
            let subject = culprit.image.as_deref().or(w.image.as_deref())?;
            crate::domain::image_ref::same_repository(subject, &r.repository).then(|| r.version.to_string())
        });
        let rolled_back_by = culprit.set_back_by().map(|l| format!("{} {:?}", l.commit.short(), l.summary));
        Ok(Facts {
            rolled_back_by,
            culprit: culprit.commit.clone(),
            culprit_version: culprit.version.to_string(),
            running_version,
            alert_started: incident.started_at(),
            severity: most_severe(alerts.iter().filter_map(|a| a.severity.as_deref())),
            labels,
            last_revert,
            reverts_today_repo,
            reverts_today,
            opted_out,
        })
    }

    fn mirror(&self, name: &str) -> anyhow::Result<GitRepo> {
        let path = self.state_dir.join("mirrors").join(format!("{name}.git"));
        if path.join("HEAD").exists() {
            for stale in crate::adapters::git::clear_stale_locks(&path, std::time::Duration::from_secs(60)) {
                tracing::warn!(mirror = %path.display(), lock = %stale.display(), "removed a lock file a crash left in the mirror");
            }
            Ok(GitRepo::open(&path)?)
        } else {
            std::fs::create_dir_all(&path).with_context(|| format!("creating mirror {}", path.display()))?;
            Ok(GitRepo::init_bare(&path)?)
        }
    }

    /// The culprit of an incident: the change that made current the version running when the
    /// alert started (give or take `causality_grace`), and what changed the same references after
    /// it. When the image was not even there then, the newest change is named (and policy ignores
    /// it: the alert started before the deploy).
    fn trace_incident(
        &self,
        mirror: &GitRepo,
        tip: &CommitSha,
        w: &WorkloadConfig,
        subject: &Subject,
        incident: &Incident,
    ) -> anyhow::Result<Culprit> {
        let at = incident.started_at() + self.config.policy().causality_grace;
        let query = Query { at: Some(at), ..Query::new(subject.clone()) };
        match trace(mirror, &tip.0, &query, &w.paths) {
            Ok(c) => {
                if !c.later.is_empty() {
                    tracing::info!(later = c.later.len(), first_bad = %c.commit.sha.short(), "changes followed the first bad one; the revert sets them back too");
                }
                Ok(c)
            }
            Err(RevertError::Trace(TraceError::NotRunningAt { .. })) => {
                Ok(trace(mirror, &tip.0, &Query::new(subject.clone()), &w.paths)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn handle_incident(&self, incident: Incident, now: DateTime<Utc>) -> anyhow::Result<Outcome> {
        let w: &WorkloadConfig = self
            .config
            .workloads
            .iter()
            .find(|w| w.name == incident.workload)
            .context("workload vanished from config")?;
        let repo_cfg = self.config.repo(&w.repo.value).context("workload's repo is not configured")?;
        let branch = w.branch(repo_cfg);
        let subject = w.subject();
        let span = tracing::info_span!("incident", id = %incident.id);
        let _enter = span.enter();

        let mirror = self.mirror(&repo_cfg.name)?;
        let auth = self.git_auth(repo_cfg)?;
        let step = std::time::Instant::now();
        let tip = mirror
            .fetch(&repo_cfg.url, &branch, auth.as_ref())
            .with_context(|| format!("fetching {branch} from {}", redact_url(&repo_cfg.url)))?;
        tracing::info!(repo = %repo_cfg.url, %branch, tip = %tip.short(), "fetched");
        self.metrics.step("fetch", step.elapsed().as_secs_f64());
        let step = std::time::Instant::now();
        let culprit = self.trace_incident(&mirror, &tip, w, &subject, &incident)?;
        self.metrics.step("trace", step.elapsed().as_secs_f64());
        tracing::info!(culprit = %culprit.commit.sha.short(), version = %culprit.version, "culprit found");
        let original_pr = match repo_cfg.forge {
            ForgeKind::Github => self.original_pr(repo_cfg, &culprit.commit.sha.0),
            ForgeKind::Git => None,
        };
        let facts = self.facts(&mirror, repo_cfg, &tip, w, &incident, &culprit, original_pr.as_ref(), now)?;
        let decision = decide(&self.config.policy(), &facts, now);
        tracing::info!(decision = decision.label(), "decided");
        let mut outcome = Outcome {
            workload: w.name.clone(),
            repo_url: redact_url(&repo_cfg.url),
            branch: branch.clone(),
            paths: w.paths.clone(),
            subject: subject.clone(),
            culprit,
            decision: decision.clone(),
            revert: None,
            patch: None,
            delivery: None,
            pr: None,
            original_pr,
            paused: Vec::new(),
            incident,
        };
        if let Decision::Ignore(reason) = &decision {
            tracing::info!(reason = reason.label(), "ignored: {reason}");
            return Ok(outcome);
        }
        let revert_branch = branch_name(&outcome.culprit.commit.sha.0);
        let target = Target {
            mirror: &mirror,
            repo: repo_cfg,
            auth: auth.as_ref(),
            tip: &tip,
            revert_branch: &revert_branch,
            now,
        };
        if self.dry_run {
            let built = self.build(&target, &mut outcome, None)?;
            outcome.revert = Some(built);
            tracing::info!("dry run: nothing delivered");
            return Ok(outcome);
        }
        let step = std::time::Instant::now();
        let delivery = match repo_cfg.forge {
            ForgeKind::Git => self.deliver_to_git(&target, &mut outcome)?,
            ForgeKind::Github => self.deliver_to_github(&target, &mut outcome)?,
        };
        self.metrics.step("deliver", step.elapsed().as_secs_f64());
        tracing::info!(delivery = delivery.label(), pr = ?delivery.pr().map(|p| p.number), "delivered");
        outcome.delivery = Some(delivery);
        Ok(outcome)
    }

    /// Plain git: the branch on the remote is the proposal; merging is pushing to the target branch.
    fn deliver_to_git(&self, t: &Target, outcome: &mut Outcome) -> anyhow::Result<Delivery> {
        // One revert per culprit: its branch at the remote means it is proposed already.
        let heads = t.mirror.remote_heads(&t.repo.url, t.auth)?;
        if outcome.decision == Decision::Propose && heads.iter().any(|(n, _)| n == t.revert_branch) {
            tracing::info!(branch = %t.revert_branch, "revert already proposed; alert re-confirms it");
            return Ok(Delivery::AlreadyProposed { branch: t.revert_branch.to_string(), pr: None });
        }
        let built = self.build(t, outcome, None)?;
        let delivery = match outcome.decision {
            Decision::Merge => {
                push(t, &built.commit, &outcome.branch)?;
                Delivery::Merged { branch: outcome.branch.clone(), pr: None }
            }
            _ => {
                push(t, &built.commit, t.revert_branch)?;
                Delivery::Proposed { branch: t.revert_branch.to_string(), pr: None }
            }
        };
        outcome.revert = Some(built);
        Ok(delivery)
    }

    /// Builds the revert commit on the fetched tip, with its patch and PR text.
    fn build(
        &self,
        t: &Target,
        outcome: &mut Outcome,
        original_pr: Option<OriginalPr>,
    ) -> anyhow::Result<BuiltRevert> {
        let step = std::time::Instant::now();
        let built = self.build_inner(t, outcome, original_pr);
        self.metrics.step("build", step.elapsed().as_secs_f64());
        built
    }

    fn build_inner(
        &self,
        t: &Target,
        outcome: &mut Outcome,
        original_pr: Option<OriginalPr>,
    ) -> anyhow::Result<BuiltRevert> {
        t.mirror.delete_branch(t.revert_branch)?;
        let reason = reason_text(outcome);
        let mut built = build_revert(
            t.mirror,
            &outcome.culprit,
            &outcome.subject,
            t.tip,
            ModeChoice::Auto,
            Some(t.revert_branch),
            &reason,
            &[(WORKLOAD_TRAILER, outcome.workload.clone())],
            t.now,
        )?;
        tracing::info!(commit = %built.commit.short(), mode = built.mode.label(), "revert built");
        self.pause_repromotion(t, outcome, &mut built)?;
        outcome.patch = Some(t.mirror.patch(t.tip, &built.commit)?);
        let view = pr_view(outcome, &built, &outcome.decision, original_pr);
        outcome.pr = Some(render_pr(&view, &self.config.templates.title, &self.config.templates.body)?);
        Ok(built)
    }
}

impl Engine<'_> {
    /// Pauses what would promote the bad version again (the workload's `pause` targets), in the
    /// revert commit itself: one commit, reviewed and landed together. Targets already paused, or
    /// that cannot be edited, are logged and left alone; the revert never depends on them.
    fn pause_repromotion(
        &self,
        t: &Target,
        outcome: &mut Outcome,
        built: &mut BuiltRevert,
    ) -> anyhow::Result<()> {
        let Some(w) = self.config.workloads.iter().find(|w| w.name == outcome.workload) else {
            return Ok(());
        };
        let mut edits = Vec::new();
        for target in &w.pause {
            let Some(text) = t.mirror.read_file(&built.commit, &target.file)? else {
                tracing::warn!(file = %target.file, "pause target not found at the branch tip; not paused");
                continue;
            };
            match set_paused(&text, target, true) {
                Ok(Some(new)) => {
                    edits.push((target.file.clone(), new));
                    outcome.paused.push(target.describe());
                }
                Ok(None) => tracing::info!(target = %target.describe(), "paused already"),
                Err(e) => tracing::warn!(error = %e, "could not pause re-promotion"),
            }
        }
        if edits.is_empty() {
            return Ok(());
        }
        let tree = t.mirror.tree_with(&built.commit, &edits)?;
        let mut message = built.message.clone();
        for p in &outcome.paused {
            message.push_str(&format!("{PAUSED_TRAILER}: {p}\n"));
        }
        let commit = t.mirror.write_commit(tree, t.tip, &message, t.now)?;
        t.mirror.delete_branch(&built.branch)?;
        t.mirror.create_branch(&built.branch, &commit)?;
        tracing::info!(paused = ?outcome.paused, commit = %commit.short(), "re-promotion paused in the revert commit");
        built.files.extend(edits.into_iter().map(|(f, _)| f));
        built.commit = commit;
        built.message = message;
        Ok(())
    }
}

/// The trailer naming what a revert paused (`/metricops resume` undoes it).
pub(crate) const PAUSED_TRAILER: &str = "Metricops-Paused";

/// The trailer naming the workload a revert was for (cooldown reads it back).
pub(crate) const WORKLOAD_TRAILER: &str = "Metricops-Workload";

/// The alert label that turns rollback off (label names cannot carry `metricops.dev/rollback`).
const OPT_OUT_ALERT_LABEL: &str = "metricops_rollback";

/// Metricops reverts on the first-parent history from `tip` back to `since`, with the workload each
/// names (commits landed by a squash or rebase merge keep the trailers).
fn recent_reverts(
    mirror: &GitRepo,
    tip: &CommitSha,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<(crate::domain::culprit::CommitInfo, Option<String>)>> {
    let mut out = Vec::new();
    let mut cur = Some(tip.clone());
    while let Some(c) = cur {
        let info = mirror.commit_info(&c)?;
        if info.time.with_timezone(&Utc) < since {
            break;
        }
        if crate::domain::revert::reverted_culprit(&info.message).is_some() {
            let workload = info
                .message
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{WORKLOAD_TRAILER}: ")).map(|s| s.trim().to_string()));
            out.push((info.clone(), workload));
        }
        cur = info.parents.first().cloned();
    }
    Ok(out)
}

/// The first manifest in scope whose metadata says `metricops.dev/rollback: "off"`.
fn opted_out_in_manifests(
    mirror: &GitRepo,
    tip: &CommitSha,
    paths: &[String],
) -> anyhow::Result<Option<String>> {
    use crate::domain::culprit::History;
    let history = mirror.history(paths);
    for f in history.files(tip)?.into_iter().filter(|f| !f.symlink) {
        let (path, bytes) = (f.path, history.read(f.blob)?);
        if !bytes.windows(18).any(|w| w == b"metricops.dev/roll") {
            continue;
        }
        if crate::domain::rules::rollback_off(&String::from_utf8_lossy(&bytes)) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// What a delivery works on.
pub(crate) struct Target<'a> {
    pub mirror: &'a GitRepo,
    pub repo: &'a RepoConfig,
    pub auth: Option<&'a SecretString>,
    pub tip: &'a CommitSha,
    pub revert_branch: &'a str,
    pub now: DateTime<Utc>,
}

fn push(t: &Target, commit: &CommitSha, branch: &str) -> anyhow::Result<()> {
    match t.mirror.push(&t.repo.url, commit, branch, t.auth) {
        Ok(()) => Ok(()),
        Err(e @ GitError::PushRejected { .. }) => Err(anyhow::Error::new(e)
            .context("the remote refused the revert's push (it moved on, or it is locked); serve tries the delivery again with backoff")),
        Err(e) => Err(e.into()),
    }
}

/// The metric label of what made an incident fail.
fn error_kind(e: &anyhow::Error) -> &'static str {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<GitError>()
                .map(|g| g.metric_label())
                .or_else(|| {
                    c.downcast_ref::<crate::adapters::github::GitHubError>().map(|g| g.metric_label())
                })
                .or_else(|| c.downcast_ref::<crate::revert::RevertError>().map(|r| r.kind()))
        })
        .unwrap_or("other")
}

/// Kinds of alert (name and severity) told in a PR body, and in a commit message; links in a PR.
const MAX_ALERT_GROUPS: usize = 20;
const MAX_REASON_GROUPS: usize = 5;
const MAX_LINKS: usize = 10;

fn reason_text(o: &Outcome) -> String {
    let (groups, left_out) = summarise(&o.incident.alerts, MAX_REASON_GROUPS);
    let mut alerts: Vec<String> = groups
        .iter()
        .map(|g| {
            format!(
                "{}{} ({}) firing since {}",
                g.first.name,
                if g.count > 1 { format!(" ×{}", g.count) } else { String::new() },
                g.first.severity.as_deref().unwrap_or("no severity"),
                g.earliest.to_rfc3339()
            )
        })
        .collect();
    if left_out > 0 {
        alerts.push(format!("{left_out} more kind(s) of alert"));
    }
    let now = o
        .culprit
        .changes
        .first()
        .map(|c| c.tip.version.to_string())
        .unwrap_or_else(|| o.culprit.version.to_string());
    let mut text = format!(
        "metricops: {} for workload {}; {} goes back from {} to {}.",
        alerts.join(", "),
        o.workload,
        o.culprit.image.as_deref().unwrap_or("the tag"),
        now,
        o.culprit.previous.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
    );
    if !o.culprit.later.is_empty() {
        text.push_str(&format!(
            " The first bad version, {}, came with {}; {} later change(s) followed it.",
            o.culprit.version,
            o.culprit.commit.sha.short(),
            o.culprit.later.len()
        ));
    }
    text
}

pub fn pr_view(
    o: &Outcome,
    built: &BuiltRevert,
    decision: &Decision,
    original_pr: Option<OriginalPr>,
) -> PrView {
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
    let mut seen = std::collections::HashSet::new();
    links.retain(|l| seen.insert(l.url.clone()));
    links.truncate(MAX_LINKS);
    let (alert_groups, alert_groups_left_out) = summarise(&o.incident.alerts, MAX_ALERT_GROUPS);
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
        alerts: alert_groups
            .iter()
            .map(|g| AlertView {
                name: g.first.name.clone(),
                count: g.count,
                severity: g.first.severity.clone(),
                starts_at: g.earliest.to_rfc3339(),
                value: g.first.annotations.get("value").cloned(),
                summary: g.first.annotations.get("summary").cloned(),
            })
            .collect(),
        alerts_total: o.incident.alerts.len(),
        alert_groups_left_out,
        changes: o
            .culprit
            .changes
            .iter()
            .map(|c| ChangeView {
                file: c.file.clone(),
                line: c.line,
                workload: c.workload.as_ref().map(|w| w.to_string()),
            })
            .collect(),
        first_bad: o.culprit.version.to_string(),
        later: o
            .culprit
            .later
            .iter()
            .map(|l| LaterView {
                sha: l.commit.0.clone(),
                subject: l.summary.clone(),
                time: l.time.to_rfc3339(),
                from: l.old.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into()),
                to: l.new.to_string(),
            })
            .collect(),
        culprit: CulpritView {
            sha: o.culprit.commit.sha.0.clone(),
            subject: o.culprit.commit.summary.clone(),
            author: format!("{} <{}>", o.culprit.commit.author, o.culprit.commit.author_email),
            time: o.culprit.commit.time.to_rfc3339(),
        },
        original_pr,
        paused: o.paused.clone(),
        decision: decision.label().to_string(),
        decision_reason,
        mode: built.mode.label().to_string(),
        mode_reason: built.why.clone(),
        links,
    }
}
