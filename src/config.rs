//! The config file: repositories, workloads and policy. Types and validation, no I/O but reading the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_saphyr::Spanned;

use secrecy::SecretString;

use crate::adapters::github::{AppSettings, MergeMethod};
use crate::domain::policy::{Action, Policy};
use crate::domain::render::{PR_BODY, PR_TITLE};

#[derive(Debug, Deserialize)]
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
    /// The PR templates in use (loaded by `Config::load`).
    #[serde(skip)]
    pub templates: Templates,
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

#[derive(Debug, Deserialize)]
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
        self.retry_budget.as_ref().and_then(|s| parse_duration(&s.value)).and_then(|d| d.to_std().ok()).unwrap_or(std::time::Duration::from_secs(60))
    }

    /// The App's settings, the key read from its file into a secret.
    pub fn app_settings(&self) -> anyhow::Result<AppSettings> {
        Ok(AppSettings { app_id: self.app_id, private_key: read_secret(&self.private_key_file, "github.private_key_file")?, api_url: self.api_url.clone(), retry_budget: self.retry_budget() })
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    pub name: String,
    /// Alert labels that all must be equal for an alert to be about this workload.
    #[serde(rename = "match")]
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub max_culprit_age: Option<Spanned<String>>,
    #[serde(default)]
    pub causality_grace: Option<Spanned<String>>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError(vec![one_line(&e.to_string())]))?;
        let mut problems = Vec::new();
        for w in &c.workloads {
            if !c.repos.iter().any(|r| r.name == w.repo.value) {
                let names: Vec<&str> = c.repos.iter().map(|r| r.name.as_str()).collect();
                problems.push(format!("line {} column {}: workload {:?} names repo {:?}, which is not under `repos` (there: {})", w.repo.referenced.line(), w.repo.referenced.column(), w.name, w.repo.value, names.join(", ")));
            }
            match (&w.image, &w.key) {
                (None, None) => problems.push(format!("workload {:?}: give `image` (repository) or `key` (dotted key of the tag)", w.name)),
                (Some(_), Some(_)) => problems.push(format!("workload {:?}: give `image` or `key`, not both", w.name)),
                _ => {}
            }
            if w.match_labels.is_empty() {
                problems.push(format!("workload {:?}: `match` needs at least one label, or it would match every alert", w.name));
            }
        }
        for r in &c.repos {
            if r.forge == ForgeKind::Github {
                if c.github.is_none() {
                    problems.push(format!("repo {:?} has `forge: github` but there is no `github:` section (app_id, private_key_file)", r.name));
                }
                if crate::adapters::github::RepoId::from_url(&r.url).is_none() {
                    problems.push(format!("repo {:?}: cannot tell owner/name from url {:?} (expected https://github.com/OWNER/NAME.git)", r.name, r.url));
                }
            }
        }
        let github_budget = c.github.as_ref().and_then(|g| g.retry_budget.as_ref());
        for d in [&c.policy.max_culprit_age, &c.policy.causality_grace, &github_budget.cloned()].into_iter().flatten() {
            if parse_duration(&d.value).is_none() {
                problems.push(format!("line {} column {}: {:?} is not a duration (use e.g. 90s, 30m, 24h, 7d)", d.referenced.line(), d.referenced.column(), d.value));
            }
        }
        if problems.is_empty() { Ok(c) } else { Err(ConfigError(problems)) }
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let mut c = Config::parse(&text).with_context(|| format!("config {}", path.display()))?;
        if let Some(dir) = &c.templates_dir {
            let dir = path.parent().unwrap_or(Path::new(".")).join(dir);
            c.templates = Templates::load(&dir)?;
        }
        Ok(c)
    }

    pub fn policy(&self) -> Policy {
        let d = Policy::default();
        let dur = |s: &Option<Spanned<String>>, default| s.as_ref().and_then(|s| parse_duration(&s.value)).unwrap_or(default);
        Policy { action: self.policy.action, max_culprit_age: dur(&self.policy.max_culprit_age, d.max_culprit_age), causality_grace: dur(&self.policy.causality_grace, d.causality_grace) }
    }

    /// The workload whose `match` labels all appear in `labels`.
    pub fn workload_for(&self, labels: &BTreeMap<String, String>) -> Option<&WorkloadConfig> {
        self.workloads.iter().find(|w| w.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
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
                *slot = std::fs::read_to_string(&path).with_context(|| format!("reading template {}", path.display()))?;
                crate::domain::render::check_template(name, slot).with_context(|| format!("template {}", path.display()))?;
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
pub fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    match unit {
        "s" => Some(chrono::Duration::seconds(n)),
        "m" => Some(chrono::Duration::minutes(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "d" => Some(chrono::Duration::days(n)),
        _ => None,
    }
}

/// `metricops check-config FILE`.
pub fn check_file(path: &Path) -> anyhow::Result<()> {
    let c = Config::load(path)?;
    if let Some(g) = &c.github {
        let key = g.app_settings()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let _guard = rt.enter();
        crate::adapters::github::GitHubApp::new(&key)?;
        g.webhook_secret()?;
    }
    println!("{}: ok ({} repos, {} workloads, policy: {:?}{})", path.display(), c.repos.len(), c.workloads.len(), c.policy.action, if c.github.is_some() { ", GitHub App key readable" } else { "" });
    Ok(())
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
    fn bad_configs_name_line_and_column() {
        let unknown = GOOD.replace("  paths:", "  pathz:");
        let p = problems(&unknown);
        assert!(p.contains("pathz") && p.contains("line 8"), "{p}");
        let p = problems(&GOOD.replace("  repo: m", "  repo: nope"));
        assert_eq!(p, "line 7 column 9: workload \"api\" names repo \"nope\", which is not under `repos` (there: m)");
        let p = problems(&GOOD.replace("12h", "twelve hours"));
        assert_eq!(p, "line 12 column 20: \"twelve hours\" is not a duration (use e.g. 90s, 30m, 24h, 7d)");
        let p = problems(&GOOD.replace("action: merge", "action: yolo"));
        assert!(p.contains("yolo") && p.contains("line 11"), "{p}");
    }
}
