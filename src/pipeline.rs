//! The engine: alert → incident → target → culprit → decision → revert → forge, each incident
//! gathered (git, the forge), decided (`domain::policy`, `domain::reconcile`) and acted on. Every
//! entry point (`demo`, `serve`, `simulate`) goes through here.

mod background;
mod chatops;
pub mod confirm;
mod github;
mod keep;
use keep::history_trailers;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};

use secrecy::SecretString;

use crate::adapters::git::{GitError, GitRepo};
use crate::adapters::git_https;
use crate::config::{Config, ForgeKind, RepoConfig, WorkloadConfig};
use crate::domain::alert::{Alert, Incident, Source, Status, group, parse_alertmanager, summarise};
use crate::domain::culprit::CommitSha;
use crate::domain::culprit::{Culprit, Query, Subject, TraceError};
use crate::domain::image_updater::{
    GROUP, How, UpdaterKind, api_exclusions, excludable, exclude_in_file, may_hold_updater,
};
use crate::domain::pause::set_paused;
use crate::domain::policy::{Decision, Facts, decide, most_severe};
use crate::domain::reconcile::{
    EXCLUDED_TRAILER, LandedRevert, PAUSED_TRAILER, WORKLOAD_TRAILER, common_labels, opted_out,
    revert_counts, running_version, trailer,
};
use crate::domain::redact::redact_url;
use crate::domain::render::{
    AlertView, ChangeView, CulpritView, LaterView, Link, OriginalPr, PrView, render_pr,
};
use crate::domain::revert::{ModeChoice, branch_name};
use crate::domain::rules::{Rule, annotated_rules, check_promql};
use crate::forge::{Forge, PrState, PullRequest, RepoId};
use crate::metrics::Metrics;
use crate::revert::{BuiltRevert, RevertError, build_revert, trace};
use tracing::Instrument;

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
    pub original_pr: Option<PullRequest>,
    /// What the revert commit paused so the bad version is not promoted again.
    pub paused: Vec<String>,
    /// Where the bad tag was excluded from argocd-image-updater (in the revert commit, or to be
    /// patched through the API once the revert is delivered).
    pub excluded: Vec<crate::domain::image_updater::Excluded>,
    /// The API patches still to make (objects not in the repository).
    pub api_exclusions: Vec<crate::domain::image_updater::ApiExclusion>,
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

/// The engine: one reconcile per workload at a time, up to `server.concurrency` at once; git work
/// on tokio's blocking pool (one step at a time per mirror), forge calls awaited. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub config: Arc<Config>,
    pub state_dir: PathBuf,
    /// Build the revert and its PR text, deliver nothing (`simulate` without `--execute`).
    pub dry_run: bool,
    pub metrics: Arc<Metrics>,
    forge: Option<Arc<dyn Forge>>,
    /// Repository roles for ChatOps, kept a minute: `(repo, login)` → (when asked, role).
    roles: Arc<Mutex<Roles>>,
    /// One reconcile per workload at a time.
    turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// One git step per mirror at a time (fetch and trace, or build and push).
    mirrors: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Incidents worked on at once.
    bound: Arc<tokio::sync::Semaphore>,
    /// What the cluster says (fed by the watchers of `adapters::kube`), when one is watched.
    pub cluster: Option<Arc<std::sync::RwLock<crate::domain::cluster::ClusterIndex>>>,
    /// The cluster writes of the rollback followers.
    pub cluster_writes: Option<Arc<dyn confirm::ClusterWrites>>,
    /// The alert notifications seen, for the rollback followers.
    pub alert_states: Arc<confirm::AlertStates>,
    /// The rollbacks this replica followed, as it last wrote them: the index is fed by a watch,
    /// which may still show an older copy after a write, and a step or an end is told once.
    followed: Arc<Mutex<HashMap<crate::domain::cluster::Deployer, crate::domain::confirm::Rollback>>>,
}

/// `(repo, login)` → (when asked, role).
type Roles = HashMap<(String, String), (std::time::Instant, String)>;

/// Incidents worked on at once unless `server.concurrency` says otherwise.
const CONCURRENCY: usize = 4;

/// A workload's version live in the cluster, from its deploy record.
struct Live {
    version: crate::domain::image_ref::Version,
    deployed_at: DateTime<Utc>,
}

/// What git says about an incident: the tip fetched, the culprit, and the history facts.
struct Gathered {
    tip: CommitSha,
    culprit: Culprit,
    /// Metricops reverts on this branch since the cooldown (or the day) began.
    landed: Vec<LandedRevert>,
    /// Reverts landed in the last day on the other repositories' branches (mirrors as last fetched).
    reverts_today_elsewhere: u32,
    /// A manifest in scope with `metricops.dev/rollback: "off"`.
    manifest_off: Option<String>,
}

impl Engine {
    /// An engine for plain git remotes only.
    pub fn new(config: Arc<Config>) -> Self {
        let state_dir = config.state_dir();
        let n = config.server.concurrency.unwrap_or(CONCURRENCY).max(1);
        Engine {
            config,
            state_dir,
            dry_run: false,
            metrics: Arc::new(Metrics::default()),
            forge: None,
            roles: Default::default(),
            turns: Default::default(),
            mirrors: Default::default(),
            bound: Arc::new(tokio::sync::Semaphore::new(n)),
            cluster: None,
            cluster_writes: None,
            alert_states: Default::default(),
            followed: Default::default(),
        }
    }

    /// An engine whose `forge: github` repos go through `forge` (the GitHub App, or a fake in tests).
    pub fn with_forge(config: Arc<Config>, forge: Arc<dyn Forge>) -> Self {
        let mut e = Engine::new(config);
        e.forge = Some(forge);
        e
    }

    /// The forge, for a repo whose config says `forge: github`.
    fn forge(&self) -> anyhow::Result<&Arc<dyn Forge>> {
        self.forge.as_ref().context("this repo has `forge: github`, but the engine has no GitHub App (no `github:` section in the config?)")
    }

    /// Runs a git step on the engine's git threads (below the request threads in priority: see
    /// `background`), in the current tracing span.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let this = self.clone();
        let span = tracing::Span::current();
        match background::spawn(move || span.in_scope(|| f(&this))).await {
            Ok(r) => r,
            Err(e) => anyhow::bail!("a git step stopped before it finished: {e}"),
        }
    }

    /// Holds the mirror of `repo` for one git step, and gives it.
    fn with_mirror<T>(&self, repo: &str, f: impl FnOnce(&GitRepo) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let lock = self.mirrors.lock().expect("mirrors lock").entry(repo.to_string()).or_default().clone();
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mirror = self.mirror(repo)?;
        f(&mirror)
    }

    /// The workload's turn: one reconcile of it at a time.
    async fn turn(&self, workload: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.turns.lock().expect("turns lock").entry(workload.to_string()).or_default().clone();
        lock.lock_owned().await
    }

    /// The workload and its repo, by name: a `workloads:` entry, else one found in the cluster
    /// (`zero_config`).
    fn workload(&self, name: &str) -> anyhow::Result<(WorkloadConfig, RepoConfig)> {
        if let Some(w) = self.config.workloads.iter().find(|w| w.name == name) {
            let repo = self.config.repo(&w.repo.value).context("workload's repo is not configured")?;
            return Ok((w.clone(), repo.clone()));
        }
        let found = self.zero_config(name);
        found.map_err(|why| anyhow::anyhow!("workload {name:?} is not configured (any more), and {why}"))
    }

    /// A workload with no `workloads:` entry, from what the cluster says deploys it: the Argo CD
    /// Application or Flux object's repository (which must be one of `repos:`), branch and paths,
    /// and the image its deploy record names (the container named like the workload, or the only
    /// one). `Err` says why not.
    fn zero_config(&self, name: &str) -> Result<(WorkloadConfig, RepoConfig), String> {
        let Some(cluster) = &self.cluster else {
            return Err("no cluster is watched to find it in".into());
        };
        let Some((ns, n)) = name.split_once('/') else {
            return Err("it is not a NAMESPACE/NAME the cluster could know".into());
        };
        let key = crate::domain::cluster::ObjectKey::new(ns, n);
        let index = cluster.read().expect("cluster index lock");
        let Some(target) = index.target(&key) else {
            return Err(format!(
                "no Argo CD Application or Flux Kustomization/HelmRelease in the cluster deploys {name} from Git"
            ));
        };
        let Some(repo) =
            self.config.repos.iter().find(|r| crate::domain::cluster::same_repo(&r.url, &target.repo_url))
        else {
            return Err(format!(
                "{} deploys it from {}, which is not one of `repos:` (add it there to let metricops revert it)",
                target.deployer,
                redact_url(&target.repo_url)
            ));
        };
        // The deploy record's images, else the pod template's as the watch saw them.
        let images =
            index.deploy(&key).map(|r| &r.images).or_else(|| index.workloads.get(&key).map(|w| &w.images));
        let image = images.and_then(|images| {
            let image = images.get(n).or_else(|| (images.len() == 1).then(|| images.values().next())?)?;
            crate::domain::image_ref::ImageRef::parse(image).map(|i| i.repository)
        });
        let Some(image) = image else {
            return Err(format!(
                "{} deploys it, but the cluster shows no container named like it (nor a single one): add a `workloads:` entry with `image:`",
                target.deployer
            ));
        };
        let w = WorkloadConfig {
            name: name.to_string(),
            match_labels: Default::default(),
            repo: serde_saphyr::Spanned::new(
                repo.name.clone(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
            branch: target.branch.clone(),
            paths: target.paths.clone(),
            image: Some(image),
            key: None,
            pause: Vec::new(),
        };
        Ok((w, repo.clone()))
    }

    /// The workload an alert is about: a `workloads:` entry, else `NAMESPACE/NAME` of a workload
    /// the cluster knows how to revert (see `zero_config`; why not is logged).
    fn workload_of(&self, labels: &std::collections::BTreeMap<String, String>) -> Option<String> {
        if let Some(w) = self.config.workload_for(labels) {
            return Some(w.name.clone());
        }
        self.cluster.as_ref()?;
        let ns = labels.get("namespace")?;
        let name = self.config.workload_labels.iter().find_map(|l| labels.get(l))?;
        let full = format!("{ns}/{name}");
        match self.zero_config(&full) {
            Ok(_) => Some(full),
            Err(why) => {
                tracing::info!(workload = %full, "not found in the cluster either: {why}");
                None
            }
        }
    }

    /// The token for git over HTTPS, for repos on GitHub.
    async fn git_auth(&self, repo: &RepoConfig) -> anyhow::Result<Option<SecretString>> {
        match repo.forge {
            ForgeKind::Git => Ok(None),
            ForgeKind::Github => {
                let id = RepoId::from_url(&repo.url)
                    .with_context(|| format!("owner/name of {}", redact_url(&repo.url)))?;
                Ok(Some(self.forge()?.git_token(&id).await?))
            }
        }
    }

    /// Where a git step goes: the repo, its token, a branch (a command's step fetches its own tip).
    pub(crate) async fn place(&self, repo_cfg: &RepoConfig, branch: &str) -> anyhow::Result<Site> {
        Ok(Site {
            repo: repo_cfg.name.clone(),
            url: repo_cfg.url.clone(),
            auth: self.git_auth(repo_cfg).await?,
            tip: CommitSha(String::new()),
            revert_branch: branch.to_string(),
            now: chrono::Utc::now(),
        })
    }

    /// Handles one Alertmanager v4 webhook body.
    pub async fn handle_alertmanager(&self, body: &str, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let alerts = parse_alertmanager(body)?;
        Ok(self.handle_alerts(Source::Alertmanager, &alerts, std::time::Instant::now(), now).await)
    }

    /// Handles the alerts of one delivery: grouped per workload, one incident each, the incidents
    /// at once (each workload one at a time). `received` is when they arrived (for the duration
    /// metric), `now` the clock the policy uses.
    pub async fn handle_alerts(
        &self,
        source: Source,
        alerts: &[Alert],
        received: std::time::Instant,
        now: DateTime<Utc>,
    ) -> Report {
        let (incidents, unplaced) = group(alerts, |a| self.workload_of(&a.labels));
        let mut report = Report::default();
        if self.cluster.is_some() {
            for a in alerts {
                if let Some(w) = self.workload_of(&a.labels) {
                    self.alert_states.note(&w, a, now);
                }
            }
        }
        for (alert, reason) in unplaced {
            let outcome = if alert.status == Status::Resolved { "resolved" } else { "unmatched" };
            self.metrics.alert(source.label(), outcome);
            tracing::info!(source = source.label(), alert = %alert.name, reason = %reason, "alert passed over");
            report.passed_over.push((alert.clone(), reason));
        }
        let work = incidents.into_iter().map(|incident| {
            for _ in &incident.alerts {
                self.metrics.alert(source.label(), "acted");
            }
            let id = incident.id.clone();
            async move { (id, self.handle_incident(incident, now).await) }
        });
        for (id, result) in futures::future::join_all(work).await {
            match result {
                Ok(o) => {
                    self.metrics.incident(o.decision.label(), received.elapsed().as_secs_f64());
                    if let Some(r) = &o.revert {
                        self.metrics.revert(r.mode.label());
                    }
                    if let Some(d) = &o.delivery {
                        self.metrics.delivery(d.label());
                    }
                    // Landed by a push (plain git): the rollback is followed from here. On GitHub
                    // the merged PR's webhook begins it, at the merge commit.
                    if let (Some(Delivery::Merged { pr: None, .. }), Some(built)) = (&o.delivery, &o.revert)
                        && !self.dry_run
                        && let Ok((_, repo_cfg)) = self.workload(&o.workload)
                        && repo_cfg.forge == ForgeKind::Git
                    {
                        let names: Vec<String> = o.incident.alerts.iter().map(|a| a.name.clone()).collect();
                        self.begin_rollback(&o.workload, &repo_cfg.url, &built.commit.0, None, names, now)
                            .await;
                    }
                    if !self.dry_run {
                        self.keep_outcome(&o, now).await;
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
    pub async fn annotation_rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for w in &self.config.workloads {
            let name = w.name.clone();
            let found = async {
                let (_, repo_cfg) = self.workload(&name)?;
                let repo_cfg = &repo_cfg;
                let auth = self.git_auth(repo_cfg).await?;
                self.blocking(move |e| {
                    let (w, repo_cfg) = e.workload(&name)?;
                    let (w, repo_cfg) = (&w, &repo_cfg);
                    e.with_mirror(&repo_cfg.name, |mirror| {
                        annotation_rules_at(mirror, w, repo_cfg, auth.as_ref())
                    })
                })
                .await
            };
            match found.await {
                Ok(r) => rules.extend(r),
                Err(e) => {
                    tracing::error!(workload = %w.name, error = %format!("{e:#}"), "could not read annotation rules")
                }
            }
        }
        rules
    }

    fn mirror(&self, name: &str) -> anyhow::Result<GitRepo> {
        let path = self.state_dir.join("mirrors").join(format!("{name}.git"));
        if path.join("HEAD").exists() {
            for stale in crate::adapters::git::clear_stale_locks(&path, std::time::Duration::from_secs(60)) {
                tracing::warn!(mirror = %path.display(), lock = %stale.display(), "removed a lock file a crash left in the mirror");
            }
            let mirror = GitRepo::open(&path)?;
            // Once per process: the branches reverts were built on are the remote's business.
            static TIDIED: std::sync::OnceLock<Mutex<std::collections::HashSet<PathBuf>>> =
                std::sync::OnceLock::new();
            if TIDIED.get_or_init(Default::default).lock().expect("tidied lock").insert(path.clone()) {
                match mirror.drop_own_refs() {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(mirror = %path.display(), refs = n, "removed the mirror's own revert branches left from before")
                    }
                    Err(e) => {
                        tracing::warn!(mirror = %path.display(), error = %e, "could not remove the mirror's own revert branches")
                    }
                }
            }
            Ok(mirror)
        } else {
            std::fs::create_dir_all(&path).with_context(|| format!("creating mirror {}", path.display()))?;
            Ok(GitRepo::init_bare(&path)?)
        }
    }

    /// Gathers what git says: fetch, the culprit, the reverts landed, the opt-out annotations.
    fn gather(
        &self,
        mirror: &GitRepo,
        w: &WorkloadConfig,
        repo_cfg: &RepoConfig,
        auth: Option<&SecretString>,
        incident: &Incident,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Gathered> {
        let branch = w.branch(repo_cfg);
        let step = std::time::Instant::now();
        let tip = mirror
            .fetch(&repo_cfg.url, &branch, auth)
            .with_context(|| format!("fetching {branch} from {}", redact_url(&repo_cfg.url)))?;
        tracing::info!(repo = %redact_url(&repo_cfg.url), %branch, tip = %tip.short(), "fetched");
        self.metrics.step("fetch", step.elapsed().as_secs_f64());
        let step = std::time::Instant::now();
        let culprit = self.trace_incident(mirror, &tip, w, incident)?;
        self.metrics.step("trace", step.elapsed().as_secs_f64());
        tracing::info!(culprit = %culprit.commit.sha.short(), version = %culprit.version, "culprit found");
        let since = now - self.config.policy().cooldown.max(chrono::Duration::hours(24));
        let landed = landed_reverts(mirror, &tip, since)?;
        let day_ago = now - chrono::Duration::hours(24);
        let mut reverts_today_elsewhere = 0;
        for other in self.config.repos.iter().filter(|r| r.name != repo_cfg.name) {
            let path = self.state_dir.join("mirrors").join(format!("{}.git", other.name));
            let branch = format!("refs/remotes/origin/{}", other.branch);
            if let Ok(m) = GitRepo::open(&path)
                && let Ok(t) = m.resolve(&branch)
            {
                reverts_today_elsewhere +=
                    landed_reverts(&m, &t, day_ago).map(|v| v.len() as u32).unwrap_or(0);
            }
        }
        let manifest_off = opted_out_in_manifests(mirror, &tip, &w.paths)?;
        Ok(Gathered { tip, culprit, landed, reverts_today_elsewhere, manifest_off })
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
        incident: &Incident,
    ) -> anyhow::Result<Culprit> {
        let subject = w.subject();
        // The version the admission webhook saw go live, when there is a record: its change is the
        // culprit whatever the commit times say (the policy then compares the deploy time).
        if let Some(live) = self.live(w) {
            let query = Query {
                tag: live.version.tag.clone(),
                digest: live.version.digest.clone(),
                ..Query::new(subject.clone())
            };
            match trace(mirror, &tip.0, &query, &w.paths) {
                Ok(c) => {
                    tracing::info!(version = %live.version, deployed_at = %live.deployed_at.to_rfc3339(), "the deploy record names the version live");
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(version = %live.version, error = %e, "the version the deploy record names is not found in Git; tracing by time instead")
                }
            }
        }
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
                Ok(trace(mirror, &tip.0, &Query::new(subject), &w.paths)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The workload's image as its deploy record (the admission webhook's annotations, watched in
    /// the cluster) has it: the version live and since when.
    fn live(&self, w: &WorkloadConfig) -> Option<Live> {
        let cluster = self.cluster.as_ref()?;
        let image = w.image.as_deref()?;
        let (ns, name) = w.name.split_once('/')?;
        let index = cluster.read().expect("cluster index lock");
        let record = index.deploy(&crate::domain::cluster::ObjectKey::new(ns, name))?;
        let version = record.images.values().find_map(|i| {
            let r = crate::domain::image_ref::ImageRef::parse(i)?;
            crate::domain::image_ref::same_repository(image, &r.repository).then_some(r.version)
        })?;
        (!version.is_empty()).then_some(Live { version, deployed_at: record.deployed_at })
    }

    /// Everything the policy needs to know, from what was gathered (pure).
    fn facts(
        &self,
        w: &WorkloadConfig,
        incident: &Incident,
        g: &Gathered,
        original: Option<&PullRequest>,
        now: DateTime<Utc>,
    ) -> Facts {
        let alerts = &incident.alerts;
        let (last_revert, reverts_today_repo) = revert_counts(&g.landed, &w.name, now);
        let labels: Vec<String>;
        let culprit_pr = match original {
            Some(p) => {
                labels = p.labels.iter().map(|l| l.name.clone()).collect();
                Some((p.number, labels.as_slice()))
            }
            None => None,
        };
        let culprit = &g.culprit;
        let live = self.live(w);
        let running_version = running_version(alerts, culprit.image.as_deref().or(w.image.as_deref()))
            .or_else(|| live.as_ref().map(|l| l.version.to_string()));
        let deployed_at =
            live.filter(|l| l.version.to_string() == culprit.version.to_string()).map(|l| l.deployed_at);
        Facts {
            deployed_at,
            rolled_back_by: culprit.set_back_by().map(|l| format!("{} {:?}", l.commit.short(), l.summary)),
            culprit: culprit.commit.clone(),
            culprit_version: culprit.version.to_string(),
            running_version,
            alert_started: incident.started_at(),
            severity: most_severe(alerts.iter().filter_map(|a| a.severity.as_deref())),
            labels: common_labels(alerts),
            last_revert,
            reverts_today_repo,
            reverts_today: reverts_today_repo + g.reverts_today_elsewhere,
            opted_out: opted_out(alerts, g.manifest_off.as_deref(), culprit_pr, self.config.opt_out_label()),
        }
    }

    /// One incident, gathered, decided and acted on: fetch and trace (git), the culprit's PR (the
    /// forge), the decision (pure), then the revert delivered.
    pub async fn handle_incident(&self, incident: Incident, now: DateTime<Utc>) -> anyhow::Result<Outcome> {
        let span = tracing::info_span!("incident", id = %incident.id);
        self.reconcile(incident, now).instrument(span).await
    }

    async fn reconcile(&self, incident: Incident, now: DateTime<Utc>) -> anyhow::Result<Outcome> {
        let name = incident.workload.clone();
        let _turn = self.turn(&name).await;
        let _permit = self.bound.acquire().await.context("the engine is stopping")?;
        let (w, repo_cfg) = self.workload(&name)?;
        let (w, repo_cfg) = (&w, &repo_cfg);
        let auth = self.git_auth(repo_cfg).await?;
        let (incident, g) = {
            let auth = auth.clone();
            self.blocking(move |e| {
                let (w, repo_cfg) = e.workload(&incident.workload)?;
                let (w, repo_cfg) = (&w, &repo_cfg);
                let g = e.with_mirror(&repo_cfg.name, |m| {
                    e.gather(m, w, repo_cfg, auth.as_ref(), &incident, now)
                })?;
                Ok((incident, g))
            })
            .await?
        };
        let revert_branch = branch_name(&g.culprit.commit.sha.0);
        // On GitHub the decision needs the culprit's PR and the delivery the culprit's revert PRs:
        // both asked at once (one round trip instead of two; an ignored incident wastes the second).
        // And the push's first round trip (the remote's refs) does not depend on the decision:
        // asked at the same time, used by the push if there is one.
        let (original_pr, listed, advertised) = match repo_cfg.forge {
            ForgeKind::Github if !self.dry_run => {
                let (url, token) = (repo_cfg.url.clone(), auth.clone());
                let (original, listed, advertised) = tokio::join!(
                    self.original_pr(repo_cfg, &g.culprit.commit.sha.0),
                    self.revert_prs(repo_cfg, &revert_branch),
                    background::spawn(move || git_https::advertise_push(&url, token.as_ref()))
                );
                (original, Some(listed), advertised.ok().flatten())
            }
            ForgeKind::Github => (self.original_pr(repo_cfg, &g.culprit.commit.sha.0).await, None, None),
            ForgeKind::Git => (None, None, None),
        };
        let decision =
            decide(self.config.policy(), &self.facts(w, &incident, &g, original_pr.as_ref(), now), now);
        tracing::info!(decision = decision.label(), "decided");
        let tip = g.tip.clone();
        let mut outcome = Outcome {
            workload: w.name.clone(),
            repo_url: redact_url(&repo_cfg.url),
            branch: w.branch(repo_cfg),
            paths: w.paths.clone(),
            subject: w.subject(),
            culprit: g.culprit,
            decision: decision.clone(),
            revert: None,
            patch: None,
            delivery: None,
            pr: None,
            original_pr,
            paused: Vec::new(),
            excluded: Vec::new(),
            api_exclusions: Vec::new(),
            incident,
        };
        if let Decision::Ignore(reason) = &decision {
            tracing::info!(reason = reason.label(), "ignored: {reason}");
            return Ok(outcome);
        }
        let place =
            Site { repo: repo_cfg.name.clone(), url: repo_cfg.url.clone(), auth, tip, revert_branch, now };
        if self.dry_run {
            let (mut outcome, built) = self.build(place, outcome, None).await?;
            outcome.revert = Some(built);
            tracing::info!("dry run: nothing delivered");
            return Ok(outcome);
        }
        let step = std::time::Instant::now();
        let delivery = match repo_cfg.forge {
            ForgeKind::Git => {
                let (o, d) = self.deliver_to_git(place, outcome).await?;
                outcome = o;
                d
            }
            ForgeKind::Github => {
                let listed = listed.context("the revert PRs were not looked up")?;
                let (o, d) = self.deliver_to_github(place, outcome, listed, advertised).await?;
                outcome = o;
                d
            }
        };
        self.metrics.step("deliver", step.elapsed().as_secs_f64());
        tracing::info!(delivery = delivery.label(), pr = ?delivery.pr().map(|p| p.number), "delivered");
        outcome.delivery = Some(delivery);
        self.exclude_through_the_api(&outcome).await;
        Ok(outcome)
    }

    /// The culprit's merged pull request on GitHub (for the PR body, the author's review and the
    /// opt-out label). A failure is logged: the revert does not depend on it.
    async fn original_pr(&self, repo: &RepoConfig, sha: &str) -> Option<PullRequest> {
        let forge = self.forge.as_ref()?;
        let id = RepoId::from_url(&repo.url)?;
        match forge.pulls_with_commit(&id, sha).await {
            Ok(prs) => prs.into_iter().find(|p| p.is_merged()),
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the culprit's pull request; going on without it");
                None
            }
        }
    }

    /// The revert PRs, open and closed, whose head is the culprit's revert branch.
    async fn revert_prs(&self, repo: &RepoConfig, branch: &str) -> anyhow::Result<Vec<PullRequest>> {
        let id = RepoId::from_url(&repo.url)
            .with_context(|| format!("owner/name of {}", redact_url(&repo.url)))?;
        self.forge()?.pulls_for(&id, branch, PrState::All).await.map_err(Into::into)
    }

    /// Plain git: the branch on the remote is the proposal; merging is pushing to the target branch.
    async fn deliver_to_git(&self, place: Site, outcome: Outcome) -> anyhow::Result<(Outcome, Delivery)> {
        self.blocking(move |e| {
            let mut outcome = outcome;
            e.with_mirror(&place.repo, |mirror| {
                let t = place.target(mirror);
                // One revert per culprit: its branch at the remote means it is proposed already.
                let heads = mirror.remote_heads(t.url, t.auth)?;
                if outcome.decision == Decision::Propose && heads.iter().any(|(n, _)| n == t.revert_branch) {
                    tracing::info!(branch = %t.revert_branch, "revert already proposed; alert re-confirms it");
                    let d = Delivery::AlreadyProposed { branch: t.revert_branch.to_string(), pr: None };
                    return Ok((outcome, d));
                }
                // The revert's objects travel in the push and stay out of the mirror.
                mirror.write_in_memory()?;
                let built = e.build_inner(&t, &mut outcome, None)?;
                let (pushed, delivery) = match outcome.decision {
                    Decision::Merge => (
                        push(&t, &built.commit, &outcome.branch),
                        Delivery::Merged { branch: outcome.branch.clone(), pr: None },
                    ),
                    _ => (
                        push(&t, &built.commit, t.revert_branch),
                        Delivery::Proposed { branch: t.revert_branch.to_string(), pr: None },
                    ),
                };
                mirror.delete_branch(t.revert_branch)?;
                pushed?;
                outcome.revert = Some(built);
                Ok((outcome, delivery))
            })
        })
        .await
    }

    /// Builds the revert commit on the fetched tip, with its patch and PR text (a git step).
    async fn build(
        &self,
        place: Site,
        outcome: Outcome,
        original_pr: Option<OriginalPr>,
    ) -> anyhow::Result<(Outcome, BuiltRevert)> {
        self.blocking(move |e| {
            let mut outcome = outcome;
            let built =
                e.with_mirror(&place.repo, |m| e.build_inner(&place.target(m), &mut outcome, original_pr))?;
            Ok((outcome, built))
        })
        .await
    }

    fn build_inner(
        &self,
        t: &Target,
        outcome: &mut Outcome,
        original_pr: Option<OriginalPr>,
    ) -> anyhow::Result<BuiltRevert> {
        let step = std::time::Instant::now();
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
            &history_trailers(outcome),
            t.now,
        )?;
        tracing::info!(commit = %built.commit.short(), mode = built.mode.label(), "revert built");
        self.pause_repromotion(t, outcome, &mut built)?;
        outcome.patch = Some(t.mirror.patch(t.tip, &built.commit)?);
        let view = pr_view(outcome, &built, &outcome.decision, original_pr);
        outcome.pr = Some(render_pr(&view, &self.config.templates.title, &self.config.templates.body)?);
        self.metrics.step("build", step.elapsed().as_secs_f64());
        Ok(built)
    }

    /// Pauses what would promote the bad version again (the workload's `pause` targets), in the
    /// revert commit itself: one commit, reviewed and landed together. Targets already paused, or
    /// that cannot be edited, are logged and left alone; the revert never depends on them.
    fn pause_repromotion(
        &self,
        t: &Target,
        outcome: &mut Outcome,
        built: &mut BuiltRevert,
    ) -> anyhow::Result<()> {
        let pause = self.config.workloads.iter().find(|w| w.name == outcome.workload).map(|w| &w.pause[..]);
        let mut edits = Vec::new();
        for target in pause.unwrap_or_default() {
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
        self.exclude_bad_tag(t, outcome, built, &mut edits)?;
        if edits.is_empty() {
            return Ok(());
        }
        let tree = t.mirror.tree_with(&built.commit, &edits)?;
        let mut message = built.message.clone();
        for p in &outcome.paused {
            message.push_str(&format!("{PAUSED_TRAILER}: {p}\n"));
        }
        for e in outcome.excluded.iter().filter(|e| matches!(e.how, How::InTheRevertCommit { .. })) {
            message.push_str(&format!("{EXCLUDED_TRAILER}: {} {} {}\n", e.tag, e.kind.as_str(), e.object));
        }
        let commit = t.mirror.write_commit(tree, t.tip, &message, t.now)?;
        t.mirror.delete_branch(&built.branch)?;
        t.mirror.create_branch(&built.branch, &commit)?;
        tracing::info!(paused = ?outcome.paused, excluded = outcome.excluded.len(), commit = %commit.short(), "re-promotion stopped in the revert commit");
        built.files.extend(edits.into_iter().map(|(f, _)| f));
        built.commit = commit;
        built.message = message;
        Ok(())
    }
}

impl Engine {
    /// argocd-image-updater would promote the bad tag again: it is excluded in every updater
    /// object of the repository that names the image (edits added to `edits`, in the revert
    /// commit), and, for live ones the repository does not hold, planned as API patches made once
    /// the revert is delivered. Never fails the revert: what cannot be done is logged.
    fn exclude_bad_tag(
        &self,
        t: &Target,
        outcome: &mut Outcome,
        built: &BuiltRevert,
        edits: &mut Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let Some(image) = outcome.culprit.image.clone() else { return Ok(()) };
        let version = outcome.culprit.version.to_string();
        let tag = match excludable(&version) {
            Ok(t) => t.to_string(),
            Err(why) => {
                tracing::info!("argocd-image-updater exclusion skipped: {why}");
                return Ok(());
            }
        };
        let mut found = Vec::new();
        for (file, text) in t.mirror.files_containing(&built.commit, GROUP, MAX_UPDATER_FILE)? {
            // A file edited already (a pause target) is edited further from its new text.
            let text = edits.iter().find(|(f, _)| *f == file).map(|(_, t)| t.clone()).unwrap_or(text);
            if !may_hold_updater(&text) {
                continue;
            }
            match exclude_in_file(&file, &text, &image, &tag) {
                Ok(r) => {
                    found.extend(r.found);
                    if let Some(new) = r.text {
                        edits.retain(|(f, _)| *f != file);
                        edits.push((file.clone(), new));
                    }
                    for e in r.excluded {
                        tracing::info!("argocd-image-updater: {}", e.describe());
                        outcome.excluded.push(e);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not exclude the bad tag from argocd-image-updater")
                }
            }
        }
        if let Some(cluster) = &self.cluster {
            let index = cluster.read().expect("cluster index lock");
            let live: Vec<_> = index.image_updaters.values().collect();
            for x in api_exclusions(&live, &image, &tag, &found) {
                outcome.excluded.push(x.excluded.clone());
                outcome.api_exclusions.push(x);
            }
        }
        Ok(())
    }

    /// The planned argocd-image-updater exclusions through the API, made now the revert is
    /// delivered. A failure is logged with what to run by hand, and said on the PR.
    async fn exclude_through_the_api(&self, outcome: &Outcome) {
        let Some(writes) = &self.cluster_writes else { return };
        let mut failed = Vec::new();
        for x in &outcome.api_exclusions {
            match writes.exclude(x).await {
                Ok(()) => tracing::info!("argocd-image-updater: {}", x.excluded.describe()),
                Err(e) => {
                    let by_hand = format!(
                        "kubectl -n {} patch {} {} --type=json -p '{}'",
                        x.key.namespace,
                        match x.kind {
                            UpdaterKind::ImageUpdater => "imageupdaters.argocd-image-updater.argoproj.io",
                            UpdaterKind::Application => "applications.argoproj.io",
                        },
                        x.key.name,
                        x.patch
                    );
                    tracing::error!(error = %format!("{e:#}"), by_hand = %by_hand, "could not exclude the bad tag from argocd-image-updater");
                    failed.push(format!("- {} {}: {e:#}. By hand: `{by_hand}`", x.kind.as_str(), x.key));
                }
            }
        }
        if failed.is_empty() {
            return;
        }
        let (Some(forge), Some(pr)) = (&self.forge, outcome.delivery.as_ref().and_then(|d| d.pr())) else {
            return;
        };
        let Some(repo) = RepoId::from_url(&outcome.repo_url) else { return };
        let body = format!(
            "argocd-image-updater may promote `{}` again: the tag could not be excluded through the Kubernetes API.\n\n{}\n",
            outcome.culprit.version,
            failed.join("\n")
        );
        if let Err(e) = forge.comment(&repo, pr.number, &body).await {
            tracing::warn!(error = %e, "could not say so on the PR");
        }
    }
}

/// The rules annotated in a workload's manifests at its branch tip.
fn annotation_rules_at(
    mirror: &GitRepo,
    w: &WorkloadConfig,
    repo_cfg: &RepoConfig,
    auth: Option<&SecretString>,
) -> anyhow::Result<Vec<Rule>> {
    use crate::domain::culprit::History;
    let tip = mirror.fetch(&repo_cfg.url, &w.branch(repo_cfg), auth)?;
    let history = mirror.history(&w.paths);
    let mut out = Vec::new();
    for f in history.files(&tip)?.into_iter().filter(|f| !f.symlink) {
        let path = f.path;
        let text = String::from_utf8_lossy(&history.read(f.blob)?).into_owned();
        for (name, expr, for_) in annotated_rules(&text) {
            let rule_name = format!("{}:{}", w.name, if name.is_empty() { "rule" } else { &name });
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
}

/// Metricops reverts on the first-parent history from `tip` back to `since`, with the workload each
/// names (commits landed by a squash or rebase merge keep the trailers).
fn landed_reverts(
    mirror: &GitRepo,
    tip: &CommitSha,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<LandedRevert>> {
    let mut out = Vec::new();
    let mut cur = Some(tip.clone());
    while let Some(c) = cur {
        let info = mirror.commit_info(&c)?;
        let time = info.time.with_timezone(&Utc);
        if time < since {
            break;
        }
        if crate::domain::revert::reverted_culprit(&info.message).is_some() {
            let workload = trailer(&info.message, WORKLOAD_TRAILER).map(str::to_string);
            out.push(LandedRevert { time, workload });
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

/// Where a delivery goes, as owned values: carried into git steps on the blocking pool.
#[derive(Clone)]
pub(crate) struct Site {
    /// The repo's configured name (its mirror).
    pub repo: String,
    pub url: String,
    pub auth: Option<SecretString>,
    pub tip: CommitSha,
    pub revert_branch: String,
    pub now: DateTime<Utc>,
}

impl Site {
    pub fn target<'a>(&'a self, mirror: &'a GitRepo) -> Target<'a> {
        Target {
            mirror,
            url: &self.url,
            auth: self.auth.as_ref(),
            tip: &self.tip,
            revert_branch: &self.revert_branch,
            now: self.now,
        }
    }
}

/// What a git step of a delivery works on.
pub(crate) struct Target<'a> {
    pub mirror: &'a GitRepo,
    pub url: &'a str,
    pub auth: Option<&'a SecretString>,
    pub tip: &'a CommitSha,
    pub revert_branch: &'a str,
    pub now: DateTime<Utc>,
}

fn push(t: &Target, commit: &CommitSha, branch: &str) -> anyhow::Result<()> {
    match t.mirror.push(t.url, commit, branch, t.auth) {
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
/// Manifests bigger than this are not looked into for argocd-image-updater objects.
const MAX_UPDATER_FILE: usize = 1 << 20;
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
        excluded: o.excluded.iter().map(|e| e.describe()).collect(),
        decision: decision.label().to_string(),
        decision_reason,
        mode: built.mode.label().to_string(),
        mode_reason: built.why.clone(),
        links,
    }
}
