//! The config file: repositories, workloads and policy. Types and validation, no I/O but reading the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::domain::policy::{Action, Policy};

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub name: String,
    /// A git URL or a local path; pushes go here (plain git forge).
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
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
        for d in [&c.policy.max_culprit_age, &c.policy.causality_grace].into_iter().flatten() {
            if parse_duration(&d.value).is_none() {
                problems.push(format!("line {} column {}: {:?} is not a duration (use e.g. 90s, 30m, 24h, 7d)", d.referenced.line(), d.referenced.column(), d.value));
            }
        }
        if problems.is_empty() { Ok(c) } else { Err(ConfigError(problems)) }
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
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
    println!("{}: ok ({} repos, {} workloads, policy: {:?})", path.display(), c.repos.len(), c.workloads.len(), c.policy.action);
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
