//! The config file: repositories, workloads and policy. Types and validation, no I/O but reading the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_saphyr::Spanned;

use secrecy::SecretString;

use crate::domain::culprit::Subject;
use crate::domain::policy::{Action, MergeRule, Policy};
use crate::domain::render::{PR_BODY, PR_TITLE};
use crate::domain::rules::{Rule, check_promql, parse_objective, slo_expr};
use crate::domain::schedule::Window;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repos: Vec<RepoConfig>,
    pub workloads: Vec<WorkloadConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Where local mirrors of the repositories live (default: the system temp dir).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The GitHub App, for repos with `forge: github`.
    #[serde(default)]
    pub github: Option<GitHubConfig>,
    /// A directory with your own `pr_title.txt` and/or `pr_body.md` (minijinja); missing files fall
    /// back to the built-in ones.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Alert labels that name a workload (with `namespace`), for workloads without `match`.
    #[serde(default = "default_workload_labels")]
    pub workload_labels: Vec<String>,
    /// `metricops serve`.
    #[serde(default)]
    pub server: ServerConfig,
    /// The built-in evaluator's Prometheus.
    #[serde(default)]
    pub prometheus: Option<PrometheusConfig>,
    /// Alertmanager's API: asked for the alerts firing now when `serve` starts.
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Rules the built-in evaluator watches.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The rollback history: where decisions are kept besides `state_dir/decisions/`.
    #[serde(default)]
    pub history: HistoryConfig,
    /// The Kubernetes cluster `serve` runs in (found in-cluster, or through `KUBECONFIG` /
    /// `~/.kube/config`): watches, the Lease, rollback confirmation.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The PR templates in use (loaded by `Config::load`).
    #[serde(skip)]
    pub templates: Templates,
    /// The settings as typed values, made once by `parse` (durations, windows in their timezone).
    #[serde(skip)]
    typed: Typed,
}

/// What `parse` makes of the settings once they passed validation.
#[derive(Clone, Debug, Default)]
struct Typed {
    policy: Policy,
    retry: Option<Retry>,
}

fn default_workload_labels() -> Vec<String> {
    ["deployment", "statefulset", "daemonset", "app", "app_kubernetes_io_name"].map(String::from).to_vec()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Alerts waiting for the engine; a full queue answers 503 (default 256).
    #[serde(default)]
    pub queue: Option<usize>,
    /// Auth for the alert webhooks (Alertmanager's `http_config`): a bearer token, or basic auth.
    #[serde(default)]
    pub webhook_auth: Option<WebhookAuthConfig>,
    /// Auth for the read-only history (`GET /ui`, `/api/history`): a bearer token, or basic auth;
    /// omitted, anyone who can reach the server may read it.
    #[serde(default)]
    pub ui_auth: Option<WebhookAuthConfig>,
    /// Serve HTTPS with this certificate chain and key (PEM).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// A delivery with a failed incident is tried again: first after this, doubling up to `max`, at
    /// most `attempts` times in all (defaults 5s, 5m, 30).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Incidents worked on at once, each workload one at a time (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Connections open at once; one more is answered 503 (default 512).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// How long a client may take: `header` (the TLS handshake, each request's headers; 10s),
    /// `idle` (a keep-alive connection with nothing to do; 60s), `request` (a whole request, the
    /// body included; 30s).
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Also keep every decision as a git note on the culprit commit (`refs/notes/metricops`),
    /// pushed to the manifests repository (compare-and-swap), where any replica and `metricops
    /// history` read it. Off by default: it writes to your repository.
    #[serde(default)]
    pub notes: bool,
    /// How often, at most, `serve` asks the forge for the revert PRs' states that `/ui` and
    /// `/api/history` show (one listing per repository; default 60s).
    #[serde(default)]
    pub forge_refresh: Option<Spanned<String>>,
}

impl HistoryConfig {
    pub fn forge_refresh(&self) -> std::time::Duration {
        std_duration(&self.forge_refresh).unwrap_or(std::time::Duration::from_secs(60))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub idle: Option<Spanned<String>>,
    #[serde(default)]
    pub request: Option<Spanned<String>>,
}

/// The listener's timeouts, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub header: std::time::Duration,
    pub idle: std::time::Duration,
    pub request: std::time::Duration,
}

impl ServerConfig {
    pub fn timeouts(&self) -> Timeouts {
        let d = |v: &Option<Spanned<String>>, default: u64| {
            std_duration(v).filter(|d| !d.is_zero()).unwrap_or(std::time::Duration::from_secs(default))
        };
        Timeouts {
            header: d(&self.timeouts.header, 10),
            idle: d(&self.timeouts.idle, 60),
            request: d(&self.timeouts.request, 30),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default)]
    pub first: Option<Spanned<String>>,
    #[serde(default)]
    pub max: Option<Spanned<String>>,
    #[serde(default)]
    pub attempts: Option<u32>,
}

/// The retry settings, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub first: std::time::Duration,
    pub max: std::time::Duration,
    pub attempts: u32,
}

impl Config {
    /// Where the bot keeps its mirrors and journal: `state_dir`, or `$TMPDIR/metricops`.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("metricops"))
    }
}

impl ServerConfig {
    fn build_retry(&self) -> Retry {
        let d = |v: &Option<Spanned<String>>, default: u64| {
            std_duration(v).unwrap_or(std::time::Duration::from_secs(default))
        };
        Retry {
            first: d(&self.retry.first, 5),
            max: d(&self.retry.max, 300),
            attempts: self.retry.attempts.unwrap_or(30).max(1),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAuthConfig {
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// What the alert webhooks accept, secrets read from their files.
#[derive(Clone)]
pub enum WebhookAuth {
    Open,
    Bearer(SecretString),
    Basic { username: String, password: SecretString },
}

impl ServerConfig {
    pub fn webhook_auth(&self) -> anyhow::Result<WebhookAuth> {
        auth(self.webhook_auth.as_ref(), "server.webhook_auth")
    }

    /// What `GET /ui` and `/api/history` accept.
    pub fn ui_auth(&self) -> anyhow::Result<WebhookAuth> {
        auth(self.ui_auth.as_ref(), "server.ui_auth")
    }
}

fn auth(c: Option<&WebhookAuthConfig>, key: &str) -> anyhow::Result<WebhookAuth> {
    match c {
        None => Ok(WebhookAuth::Open),
        Some(WebhookAuthConfig { bearer_token_file: Some(f), username: None, password_file: None }) => {
            Ok(WebhookAuth::Bearer(read_secret(f, &format!("{key}.bearer_token_file"))?))
        }
        Some(WebhookAuthConfig { bearer_token_file: None, username: Some(u), password_file: Some(f) }) => {
            Ok(WebhookAuth::Basic {
                username: u.clone(),
                password: read_secret(f, &format!("{key}.password_file"))?,
            })
        }
        Some(_) => anyhow::bail!("{key}: give either bearer_token_file, or username and password_file"),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// e.g. http://alertmanager:9093
    pub url: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// e.g. http://prometheus:9090
    pub url: String,
    /// How often rules are evaluated (default 15s).
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    /// How long one query may take before the rule counts as unknown (default 10s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `false`: never look for a cluster (the admission webhook still answers).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The Lease the replicas share (default `metricops`), in `lease_namespace` (default: the
    /// pod's namespace, else the kubeconfig context's).
    #[serde(default)]
    pub lease: Option<String>,
    #[serde(default)]
    pub lease_namespace: Option<String>,
    /// How long a holder keeps the Lease without renewing it (default 15s): a replica that stops
    /// leading stops its leader work within it.
    #[serde(default)]
    pub lease_duration: Option<Spanned<String>>,
    /// How long a merged revert is followed until synced, healthy and resolved (default 30m).
    #[serde(default)]
    pub confirm_timeout: Option<Spanned<String>>,
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
    pub fn lease(&self) -> &str {
        self.lease.as_deref().unwrap_or("metricops")
    }
    pub fn lease_duration(&self) -> std::time::Duration {
        std_duration(&self.lease_duration)
            .filter(|d| d.as_secs() >= 2)
            .unwrap_or(std::time::Duration::from_secs(15))
    }
    pub fn confirm_timeout(&self) -> chrono::Duration {
        self.confirm_timeout
            .as_ref()
            .and_then(|s| parse_duration(&s.value))
            .unwrap_or(chrono::Duration::minutes(30))
    }
}

impl PrometheusConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std_duration(&self.timeout).filter(|d| !d.is_zero()).unwrap_or(std::time::Duration::from_secs(10))
    }

    pub fn interval(&self) -> std::time::Duration {
        std_duration(&self.interval).unwrap_or(std::time::Duration::from_secs(15))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// The configured workload this rule guards.
    pub workload: String,
    /// A PromQL condition: any sample in the result means the rule holds.
    #[serde(default)]
    pub expr: Option<String>,
    /// Or an SLO, turned into multi-window, multi-burn-rate conditions.
    #[serde(default)]
    pub slo: Option<SloConfig>,
    /// How long the condition must hold before the rule fires (default 0s).
    #[serde(default, rename = "for")]
    pub for_: Option<Spanned<String>>,
    #[serde(default)]
    pub severity: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// e.g. "99.9%"
    pub objective: String,
    /// PromQL for good events per second over `{{window}}`, e.g. `sum(rate(http_requests_total{code!~"5.."}[{{window}}]))`.
    pub good: String,
    /// PromQL for all events per second over `{{window}}`.
    pub total: String,
}

/// PR title and body templates.
#[derive(Clone, Debug)]
pub struct Templates {
    pub title: String,
    pub body: String,
}

impl Default for Templates {
    fn default() -> Self {
        Templates { title: PR_TITLE.to_string(), body: PR_BODY.to_string() }
    }
}

/// Where pull requests go: a plain git remote (branches only), or GitHub through the App.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    #[default]
    Git,
    Github,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    pub app_id: u64,
    /// The App's private key (PEM, PKCS#1 or PKCS#8).
    pub private_key_file: PathBuf,
    /// The webhook secret, for `POST /webhooks/github`.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(default = "default_api_url")]
    pub api_url: String,
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Users asked to review every revert.
    #[serde(default)]
    pub reviewers: Vec<String>,
    /// Teams (slugs) asked to review every revert.
    #[serde(default)]
    pub team_reviewers: Vec<String>,
    /// Ask the author of the culprit's pull request to review the revert.
    #[serde(default = "yes")]
    pub request_review_from_author: bool,
    #[serde(default)]
    pub merge_method: MergeMethod,
    /// People obeyed by ChatOps whatever their repository role.
    #[serde(default)]
    pub chatops_users: Vec<String>,
    /// Webhook bodies above this many bytes are refused with 413 (GitHub sends at most 25 MB).
    #[serde(default = "default_webhook_max_bytes")]
    pub webhook_max_bytes: usize,
    /// How long one GitHub call may retry 5xx answers and rate limits before it gives up.
    #[serde(default)]
    pub retry_budget: Option<Spanned<String>>,
}

fn default_api_url() -> String {
    "https://api.github.com".into()
}
fn default_labels() -> Vec<String> {
    vec!["metricops".into(), "rollback".into()]
}
fn yes() -> bool {
    true
}
fn default_webhook_max_bytes() -> usize {
    25 * 1024 * 1024
}

impl GitHubConfig {
    pub fn retry_budget(&self) -> std::time::Duration {
        std_duration(&self.retry_budget).unwrap_or(std::time::Duration::from_secs(60))
    }

    /// The App's private key, read from its file into a secret.
    pub fn private_key(&self) -> anyhow::Result<SecretString> {
        read_secret(&self.private_key_file, "github.private_key_file")
    }

    pub fn webhook_secret(&self) -> anyhow::Result<Option<SecretString>> {
        self.webhook_secret_file.as_ref().map(|p| read_secret(p, "github.webhook_secret_file")).transpose()
    }
}

/// Reads a secret from a file (trailing newline dropped). Errors name the file, never the content.
pub fn read_secret(path: &Path, key: &str) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{key}: reading {}", path.display()))?;
    let text = text.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!text.is_empty(), "{key}: {} is empty", path.display());
    Ok(SecretString::from(text.to_string()))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub name: String,
    /// A git URL or a local path; pushes go here (plain git forge).
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// `git` (push branches to `url`) or `github` (the App opens pull requests).
    #[serde(default)]
    pub forge: ForgeKind,
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    pub name: String,
    /// Alert labels that all must be equal for an alert to be about this workload. Without it, a
    /// workload named `NAMESPACE/NAME` matches alerts with `namespace: NAMESPACE` and any of the
    /// `workload_labels` equal to NAME.
    #[serde(rename = "match", default)]
    pub match_labels: BTreeMap<String, String>,
    pub repo: Spanned<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// What to pause after a revert so the bad version is not promoted again (Flux
    /// `ImageUpdateAutomation`, Kargo `ProjectConfig` stage auto-promotion), by file in the repo.
    #[serde(default)]
    pub pause: Vec<crate::domain::pause::PauseTarget>,
}

impl WorkloadConfig {
    /// What is traced: the image, or the key holding the tag (`parse` checks one is given).
    pub fn subject(&self) -> Subject {
        match (&self.image, &self.key) {
            (Some(i), _) => Subject::Image(i.clone()),
            (None, Some(k)) => Subject::Key(k.clone()),
            (None, None) => Subject::Image(String::new()),
        }
    }

    /// The branch the workload is deployed from: its own, else its repo's.
    pub fn branch(&self, repo: &RepoConfig) -> String {
        self.branch.clone().unwrap_or_else(|| repo.branch.clone())
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub max_culprit_age: Option<Spanned<String>>,
    #[serde(default)]
    pub causality_grace: Option<Spanned<String>>,
    #[serde(default)]
    pub cooldown: Option<Spanned<String>>,
    /// Per repo, in 24 hours (default 10; 0 turns the cap off).
    #[serde(default)]
    pub max_reverts_per_day_per_repo: Option<u32>,
    /// Over all repos, in 24 hours (default 20; 0 turns the cap off).
    #[serde(default)]
    pub max_reverts_per_day: Option<u32>,
    /// IANA timezone for `freeze` and `merge_rules[].when` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// 5-field cron windows in which nothing is reverted.
    #[serde(default)]
    pub freeze: Vec<Spanned<String>>,
    #[serde(default)]
    pub merge_rules: Vec<MergeRuleConfig>,
    /// A label on the culprit's pull request that turns rollback off for it (default `metricops/no-rollback`).
    #[serde(default)]
    pub opt_out_label: Option<String>,
    /// After `/metricops cancel`, the culprit is not proposed again for this long (default 24h).
    #[serde(default)]
    pub cancel_suppress: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRuleConfig {
    #[serde(default)]
    pub severity: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// 5-field cron window, e.g. `"* 0-8,18-23 * * MON-FRI"`.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError(vec![one_line(&e.to_string())]))?;
        let mut problems = Vec::new();
        for w in &c.workloads {
            if !c.repos.iter().any(|r| r.name == w.repo.value) {
                let names: Vec<&str> = c.repos.iter().map(|r| r.name.as_str()).collect();
                problems.push(format!("line {} column {}: workload {:?} names repo {:?}, which is not under `repos` (there: {})", w.repo.referenced.line(), w.repo.referenced.column(), w.name, w.repo.value, names.join(", ")));
            }
            match (&w.image, &w.key) {
                (None, None) => problems.push(format!(
                    "workload {:?}: give `image` (repository) or `key` (dotted key of the tag)",
                    w.name
                )),
                (Some(_), Some(_)) => {
                    problems.push(format!("workload {:?}: give `image` or `key`, not both", w.name))
                }
                _ => {}
            }
            if w.match_labels.is_empty()
                && w.name.split_once('/').is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
            {
                problems.push(format!("workload {:?}: give `match` labels, or name it NAMESPACE/NAME so alerts are matched by namespace and workload labels", w.name));
            }
        }
        for r in &c.repos {
            if r.forge == ForgeKind::Github {
                if c.github.is_none() {
                    problems.push(format!("repo {:?} has `forge: github` but there is no `github:` section (app_id, private_key_file)", r.name));
                }
                if crate::forge::RepoId::from_url(&r.url).is_none() {
                    problems.push(format!("repo {:?}: cannot tell owner/name from url {:?} (expected https://github.com/OWNER/NAME.git)", r.name, r.url));
                }
            }
        }
        for r in &c.rules {
            if !c.workloads.iter().any(|w| w.name == r.workload) {
                problems
                    .push(format!("rule {:?}: workload {:?} is not under `workloads`", r.name, r.workload));
            }
            if let Err(e) = c.compile_rule(r) {
                problems.push(e);
            }
        }
        if !c.rules.is_empty() && c.prometheus.is_none() {
            problems.push("`rules` need a `prometheus:` section with the url to query".into());
        }
        let github_budget = c.github.as_ref().and_then(|g| g.retry_budget.as_ref());
        let tz = c.policy.timezone.as_deref();
        for w in c.policy.freeze.iter().chain(c.policy.merge_rules.iter().filter_map(|r| r.when.as_ref())) {
            if let Err(e) = Window::parse(&w.value, tz) {
                problems.push(format!("line {} column {}: {e}", w.referenced.line(), w.referenced.column()));
            }
        }
        if c.policy
            .merge_rules
            .iter()
            .any(|r| r.severity.is_empty() && r.labels.is_empty() && r.when.is_none())
        {
            problems.push("policy.merge_rules: a rule with no severity, labels or when would merge everything; use `action: merge` for that".into());
        }
        if let Some(am) = &c.alertmanager
            && !(am.url.starts_with("http://") || am.url.starts_with("https://"))
        {
            problems.push(format!("alertmanager.url: {:?} is not an http:// or https:// URL", am.url));
        }
        if c.server.concurrency == Some(0) || c.server.max_connections == Some(0) || c.server.queue == Some(0)
        {
            problems.push(
                "server.concurrency, server.max_connections and server.queue must be at least 1".into(),
            );
        }
        if c.server.retry.attempts == Some(0) {
            problems
                .push("server.retry.attempts: 0 would never handle a delivery; use 1 for no retries".into());
        }
        let interval = c.prometheus.as_ref().and_then(|p| p.interval.clone());
        let prometheus_timeout = c.prometheus.as_ref().and_then(|p| p.timeout.clone());
        for d in [
            &c.policy.max_culprit_age,
            &c.policy.causality_grace,
            &c.policy.cooldown,
            &c.policy.cancel_suppress,
            &github_budget.cloned(),
            &interval,
            &c.server.retry.first,
            &c.server.retry.max,
            &prometheus_timeout,
            &c.server.timeouts.header,
            &c.server.timeouts.idle,
            &c.server.timeouts.request,
            &c.cluster.lease_duration,
            &c.cluster.confirm_timeout,
            &c.history.forge_refresh,
        ]
        .into_iter()
        .flatten()
        {
            if parse_duration(&d.value).is_none() {
                problems.push(format!(
                    "line {} column {}: {:?} is not a duration (use e.g. 90s, 30m, 24h, 7d)",
                    d.referenced.line(),
                    d.referenced.column(),
                    d.value
                ));
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        let mut c = c;
        c.typed = Typed { policy: c.build_policy(), retry: Some(c.server.build_retry()) };
        Ok(c)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let mut c = Config::parse(&text).with_context(|| format!("config {}", path.display()))?;
        if let Some(dir) = &c.templates_dir {
            let dir = path.parent().unwrap_or(Path::new(".")).join(dir);
            c.templates = Templates::load(&dir)?;
        }
        Ok(c)
    }

    /// The policy, as `parse` made it.
    pub fn policy(&self) -> &Policy {
        &self.typed.policy
    }

    /// The retry settings of `serve`, as `parse` made them.
    pub fn retry(&self) -> Retry {
        self.typed.retry.unwrap_or_else(|| self.server.build_retry())
    }

    /// The policy (windows were checked by `parse`; one that fails here is left out).
    fn build_policy(&self) -> Policy {
        let d = Policy::default();
        let p = &self.policy;
        let dur = |s: &Option<Spanned<String>>, default| {
            s.as_ref().and_then(|s| parse_duration(&s.value)).unwrap_or(default)
        };
        let tz = p.timezone.as_deref();
        let cap = |c: Option<u32>, default: Option<u32>| match c {
            Some(0) => None,
            Some(n) => Some(n),
            None => default,
        };
        Policy {
            action: p.action,
            merge_rules: p
                .merge_rules
                .iter()
                .map(|r| MergeRule {
                    severity: r.severity.clone(),
                    labels: r.labels.clone(),
                    when: r.when.as_ref().and_then(|w| Window::parse(&w.value, tz).ok()),
                })
                .collect(),
            max_culprit_age: dur(&p.max_culprit_age, d.max_culprit_age),
            causality_grace: dur(&p.causality_grace, d.causality_grace),
            cooldown: dur(&p.cooldown, d.cooldown),
            max_reverts_per_day_per_repo: cap(p.max_reverts_per_day_per_repo, d.max_reverts_per_day_per_repo),
            max_reverts_per_day: cap(p.max_reverts_per_day, d.max_reverts_per_day),
            freeze: p.freeze.iter().filter_map(|w| Window::parse(&w.value, tz).ok()).collect(),
        }
    }

    pub fn opt_out_label(&self) -> &str {
        self.policy.opt_out_label.as_deref().unwrap_or("metricops/no-rollback")
    }

    pub fn cancel_suppress(&self) -> chrono::Duration {
        self.policy
            .cancel_suppress
            .as_ref()
            .and_then(|s| parse_duration(&s.value))
            .unwrap_or(chrono::Duration::hours(24))
    }

    /// The workload an alert's labels are about: the first whose `match` labels all appear in
    /// `labels`, or, for a workload without `match` named `NS/NAME`, `namespace` = NS and one of the
    /// `workload_labels` = NAME.
    pub fn workload_for(&self, labels: &BTreeMap<String, String>) -> Option<&WorkloadConfig> {
        self.workloads.iter().find(|w| {
            if !w.match_labels.is_empty() {
                return w.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
            }
            let Some((ns, name)) = w.name.split_once('/') else {
                return false;
            };
            labels.get("namespace").map(String::as_str) == Some(ns)
                && self.workload_labels.iter().any(|l| labels.get(l).map(String::as_str) == Some(name))
        })
    }

    /// A configured rule, ready to evaluate (PromQL checked, SLO expanded).
    pub fn compile_rule(&self, r: &RuleConfig) -> Result<Rule, String> {
        let expr = match (&r.expr, &r.slo) {
            (Some(e), None) => e.clone(),
            (None, Some(slo)) => {
                let objective = parse_objective(&slo.objective).ok_or_else(|| {
                    format!(
                        "rule {:?}: objective {:?} is not a ratio below 100% (e.g. \"99.9%\")",
                        r.name, slo.objective
                    )
                })?;
                for (k, q) in [("good", &slo.good), ("total", &slo.total)] {
                    if !q.contains("{{window}}") {
                        return Err(format!(
                            "rule {:?}: slo.{k} must contain {{{{window}}}} where the range goes, e.g. rate(x[{{{{window}}}}])",
                            r.name
                        ));
                    }
                }
                slo_expr(objective, &slo.good, &slo.total)
            }
            _ => {
                return Err(format!("rule {:?}: give `expr` (PromQL) or `slo`, one of them", r.name));
            }
        };
        check_promql(&r.name, &expr)?;
        let for_ = match &r.for_ {
            None => chrono::Duration::zero(),
            Some(f) => parse_duration(&f.value).ok_or_else(|| {
                format!(
                    "line {} column {}: rule {:?}: `for` {:?} is not a duration (use e.g. 90s, 30m)",
                    f.referenced.line(),
                    f.referenced.column(),
                    r.name,
                    f.value
                )
            })?,
        };
        Ok(Rule {
            name: r.name.clone(),
            workload: r.workload.clone(),
            expr,
            for_,
            severity: r.severity.clone(),
            origin: "config".into(),
        })
    }

    pub fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos.iter().find(|r| r.name == name)
    }
}

impl Templates {
    /// Reads `pr_title.txt` and `pr_body.md` from `dir` where present and checks that they compile.
    pub fn load(dir: &Path) -> anyhow::Result<Templates> {
        anyhow::ensure!(dir.is_dir(), "templates_dir {} is not a directory", dir.display());
        let mut t = Templates::default();
        for (name, slot) in [("pr_title.txt", &mut t.title), ("pr_body.md", &mut t.body)] {
            let path = dir.join(name);
            if path.exists() {
                *slot = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading template {}", path.display()))?;
                crate::domain::render::check_template(name, slot)
                    .with_context(|| format!("template {}", path.display()))?;
            }
        }
        Ok(t)
    }
}

/// Every problem found, one per line, with line and column where known.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim_start_matches("error: ").to_string()
}

/// `90s`, `30m`, `24h`, `7d`.
/// A duration setting, when given and valid (validation reports the invalid ones).
fn std_duration(v: &Option<Spanned<String>>) -> Option<std::time::Duration> {
    v.as_ref().and_then(|s| parse_duration(&s.value)).and_then(|d| d.to_std().ok())
}

pub use crate::domain::schedule::parse_duration;

/// How a revert PR is merged (GitHub's merge methods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    Merge,
    #[default]
    Squash,
    Rebase,
}

impl MergeMethod {
    pub fn rest(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        }
    }
    pub fn graphql(self) -> &'static str {
        match self {
            MergeMethod::Merge => "MERGE",
            MergeMethod::Squash => "SQUASH",
            MergeMethod::Rebase => "REBASE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = "repos:\n- name: m\n  url: /tmp/x.git\nworkloads:\n- name: api\n  match: {namespace: shop, deployment: api}\n  repo: m\n  paths: [apps/api]\n  image: ghcr.io/x/api\npolicy:\n  action: merge\n  max_culprit_age: 12h\n";

    #[test]
    fn good_config_parses() {
        assert_eq!(problems(GOOD), "ok");
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.policy().max_culprit_age, chrono::Duration::hours(12));
        assert_eq!(c.policy().action, Action::Merge);
    }

    #[test]
    fn workloads_match_by_labels_or_by_namespace_and_name() {
        let c = Config::parse(
            &GOOD
                .replace("  match: {namespace: shop, deployment: api}\n", "")
                .replace("name: api", "name: shop/api"),
        )
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
        };
        assert!(
            c.workload_for(&labels(&[("namespace", "shop"), ("app_kubernetes_io_name", "api")])).is_some()
        );
        assert!(c.workload_for(&labels(&[("namespace", "shop"), ("statefulset", "api")])).is_some());
        assert!(c.workload_for(&labels(&[("namespace", "other"), ("deployment", "api")])).is_none());
        assert!(c.workload_for(&labels(&[("deployment", "api")])).is_none());
        let p = problems(&GOOD.replace("  match: {namespace: shop, deployment: api}\n", ""));
        assert!(p.contains("give `match` labels, or name it NAMESPACE/NAME"), "{p}");
    }

    #[test]
    fn policy_windows_and_caps_are_read_and_checked() {
        let text = format!(
            "{GOOD}  cooldown: 30m\n  timezone: Europe/Berlin\n  freeze: ['* * 24-26 12 *']\n  max_reverts_per_day: 0\n  merge_rules:\n  - {{severity: [critical], when: '* 0-8,18-23 * * MON-FRI'}}\n"
        );
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let p = c.policy();
        assert_eq!(
            (p.cooldown, p.max_reverts_per_day, p.max_reverts_per_day_per_repo),
            (chrono::Duration::minutes(30), None, Some(10))
        );
        assert_eq!(p.freeze[0].tz, chrono_tz::Europe::Berlin);
        assert_eq!(p.merge_rules[0].severity, ["critical"]);
        let bad = problems(&text.replace("MON-FRI", "MON-FUN"));
        assert!(bad.starts_with("line 18 column 34: ") && bad.contains("day of week"), "{bad}");
        assert!(problems(&text.replace("Europe/Berlin", "Moon/Base")).contains("IANA timezone"));
        assert!(problems(&format!("{GOOD}  merge_rules: [{{}}]\n")).contains("would merge everything"));
    }

    #[test]
    fn rules_are_checked_at_load() {
        let with = |rules: &str| {
            problems(&format!("{GOOD}prometheus:\n  url: http://127.0.0.1:9090\nrules:\n{rules}"))
        };
        assert_eq!(with("- {name: errors, workload: api, expr: 'rate(x[5m]) > 0', for: 2m}\n"), "ok");
        assert_eq!(
            with(
                "- name: slo\n  workload: api\n  slo: {objective: 99.9%, good: 'sum(rate(ok[{{window}}]))', total: 'sum(rate(all[{{window}}]))'}\n"
            ),
            "ok"
        );
        let p = with("- {name: errors, workload: api, expr: 'rate(x[5m] > 0'}\n");
        assert!(p.starts_with("rule \"errors\": invalid PromQL"), "{p}");
        assert_eq!(
            with("- {name: e, workload: nope, expr: 'up'}\n"),
            "rule \"e\": workload \"nope\" is not under `workloads`"
        );
        assert!(with("- {name: e, workload: api}\n").contains("give `expr` (PromQL) or `slo`"));
        assert!(
            with("- {name: e, workload: api, expr: up, for: soon}\n")
                .contains("`for` \"soon\" is not a duration")
        );
        assert!(
            with("- name: s\n  workload: api\n  slo: {objective: 120%, good: a, total: b}\n")
                .contains("objective \"120%\"")
        );
        assert!(
            problems(&format!("{GOOD}rules:\n- {{name: e, workload: api, expr: up}}\n"))
                .contains("need a `prometheus:` section")
        );
    }

    #[test]
    fn bad_configs_name_line_and_column() {
        let unknown = GOOD.replace("  paths:", "  pathz:");
        let p = problems(&unknown);
        assert!(p.contains("pathz") && p.contains("line 8"), "{p}");
        let p = problems(&GOOD.replace("  repo: m", "  repo: nope"));
        assert_eq!(
            p,
            "line 7 column 9: workload \"api\" names repo \"nope\", which is not under `repos` (there: m)"
        );
        let p = problems(&GOOD.replace("12h", "twelve hours"));
        assert_eq!(p, "line 12 column 20: \"twelve hours\" is not a duration (use e.g. 90s, 30m, 24h, 7d)");
        let p = problems(&GOOD.replace("action: merge", "action: yolo"));
        assert!(p.contains("yolo") && p.contains("line 11"), "{p}");
        let p = problems(&format!("{GOOD}  freeze: ['* * 32 12 *']\n"));
        assert_eq!(p, "line 13 column 12: \"* * 32 12 *\": day of month: 32 is out of range 1-31");
        let p = problems(&format!("{GOOD}server:\n  retry: {{first: soon, attempts: 0}}\n"));
        assert!(p.contains("server.retry.attempts: 0") && p.contains("\"soon\" is not a duration"), "{p}");
        let p = problems(&format!("{GOOD}server:\n  concurrency: 0\n  timeouts: {{header: slowly}}\n"));
        assert!(p.contains("server.concurrency") && p.contains("\"slowly\" is not a duration"), "{p}");
        // What serve reads at start, check-config reads too.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        let missing = dir.path().join("no-such-token");
        std::fs::write(
            &file,
            format!("{GOOD}server:\n  webhook_auth: {{bearer_token_file: {}}}\n", missing.display()),
        )
        .unwrap();
        let e = format!("{:#}", crate::wiring::check_file(&file).unwrap_err());
        assert!(e.contains("bearer_token_file") && e.contains("no-such-token"), "{e}");
        std::fs::write(
            &file,
            format!("{GOOD}server:\n  tls: {{cert_file: {0}, key_file: {0}}}\n", missing.display()),
        )
        .unwrap();
        let e = format!("{:#}", crate::wiring::check_file(&file).unwrap_err());
        assert!(e.contains("server.tls.cert_file"), "{e}");
        let c = Config::parse(&format!("{GOOD}server:\n  retry: {{first: 2s, max: 1m}}\n")).unwrap();
        let r = c.retry();
        assert_eq!((r.first.as_secs(), r.max.as_secs(), r.attempts), (2, 60, 30));
    }
}
