//! The decision for an incident: ignore (with a reason), propose a revert, or merge it. Pure: every
//! fact (the culprit, the alerts, recent reverts, opt-outs, the clock) comes in as a value.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::culprit::CommitInfo;
use super::revert::reverted_culprit;
use super::schedule::Window;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Open the revert for a person to merge (unless a merge rule says merge).
    #[default]
    Propose,
    /// Land the revert on the target branch at once.
    Merge,
}

/// When a revert is merged without waiting for a person: every condition given must hold.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MergeRule {
    /// The incident's most severe alert has one of these severities.
    pub severity: Vec<String>,
    /// The alerts carry these labels (e.g. `env: prod`).
    pub labels: BTreeMap<String, String>,
    /// Only inside this window (e.g. nights and weekends, when nobody would answer).
    pub when: Option<Window>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub action: Action,
    pub merge_rules: Vec<MergeRule>,
    pub max_culprit_age: Duration,
    /// How long before the culprit reached the branch an alert may have started and still be blamed on it.
    pub causality_grace: Duration,
    /// No automatic revert for a workload reverted less than this long ago.
    pub cooldown: Duration,
    /// Reverts landed in the last 24 hours, in this repo, above which nothing more is reverted.
    pub max_reverts_per_day_per_repo: Option<u32>,
    /// The same, over every configured repo.
    pub max_reverts_per_day: Option<u32>,
    /// Windows in which nothing is reverted (release freezes, game days).
    pub freeze: Vec<Window>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            action: Action::Propose,
            merge_rules: Vec::new(),
            max_culprit_age: Duration::hours(24),
            causality_grace: Duration::minutes(5),
            cooldown: Duration::hours(1),
            max_reverts_per_day_per_repo: Some(10),
            max_reverts_per_day: Some(20),
            freeze: Vec::new(),
        }
    }
}

/// What is known about an incident when deciding.
#[derive(Clone, Debug)]
pub struct Facts {
    pub culprit: CommitInfo,
    /// The culprit's version (tag or digest text) and, when an alert says so, the version running.
    pub culprit_version: String,
    pub running_version: Option<String>,
    pub alert_started: DateTime<Utc>,
    /// When the culprit's version went live, as the admission webhook recorded it (else the commit
    /// time stands for it).
    pub deployed_at: Option<DateTime<Utc>>,
    /// The most severe alert's severity.
    pub severity: Option<String>,
    /// Labels every alert of the incident carries.
    pub labels: BTreeMap<String, String>,
    /// The last metricops revert for this workload, if any.
    pub last_revert: Option<DateTime<Utc>>,
    /// Metricops reverts landed in the last 24 hours: in this repo, and in all.
    pub reverts_today_repo: u32,
    pub reverts_today: u32,
    /// The later commit that set the culprit's references back, when they are back now.
    pub rolled_back_by: Option<String>,
    /// Where an opt-out was found (`metricops.dev/rollback: "off"` on the workload, the alert or
    /// the culprit's pull request).
    pub opted_out: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    CulpritTooOld { age: Duration, limit: Duration },
    AlertStartedBeforeDeploy { alert_started: DateTime<Utc>, deployed: DateTime<Utc> },
    CulpritIsARevert { reverts: String },
    AlreadyRolledBack { by: String },
    OptedOut { by: String },
    NoLongerRunning { culprit: String, running: String },
    Frozen { window: String },
    Cooldown { last: DateTime<Utc>, cooldown: Duration },
    TooManyReverts { count: u32, limit: u32, scope: &'static str },
}

impl IgnoreReason {
    /// One label per reason, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IgnoreReason::CulpritTooOld { .. } => "culprit_too_old",
            IgnoreReason::AlertStartedBeforeDeploy { .. } => "alert_before_deploy",
            IgnoreReason::CulpritIsARevert { .. } => "culprit_is_revert",
            IgnoreReason::AlreadyRolledBack { .. } => "already_rolled_back",
            IgnoreReason::OptedOut { .. } => "opted_out",
            IgnoreReason::NoLongerRunning { .. } => "no_longer_running",
            IgnoreReason::Frozen { .. } => "frozen",
            IgnoreReason::Cooldown { .. } => "cooldown",
            IgnoreReason::TooManyReverts { .. } => "too_many_reverts",
        }
    }
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IgnoreReason::CulpritTooOld { age, limit } => {
                write!(
                    f,
                    "the culprit is {}h old, older than the {}h limit",
                    age.num_hours(),
                    limit.num_hours()
                )
            }
            IgnoreReason::AlertStartedBeforeDeploy { alert_started, deployed } => {
                write!(
                    f,
                    "the alert started at {}, before the culprit reached the branch at {}",
                    alert_started.to_rfc3339(),
                    deployed.to_rfc3339()
                )
            }
            IgnoreReason::CulpritIsARevert { reverts } => {
                write!(
                    f,
                    "the culprit is itself a metricops revert (of {reverts}); a revert is never reverted automatically"
                )
            }
            IgnoreReason::AlreadyRolledBack { by } => {
                write!(f, "the references are back at the version before the culprit already ({by})")
            }
            IgnoreReason::OptedOut { by } => write!(f, "rollback is off for this workload ({by})"),
            IgnoreReason::NoLongerRunning { culprit, running } => {
                write!(
                    f,
                    "the alert says {running} is running, not the culprit's {culprit}: it was rolled forward or back already"
                )
            }
            IgnoreReason::Frozen { window } => write!(f, "inside the freeze window {window:?}"),
            IgnoreReason::Cooldown { last, cooldown } => {
                write!(
                    f,
                    "this workload was reverted at {}, less than the {}m cooldown ago",
                    last.to_rfc3339(),
                    cooldown.num_minutes()
                )
            }
            IgnoreReason::TooManyReverts { count, limit, scope } => {
                write!(f, "{count} reverts in the last 24h {scope}, at the limit of {limit}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Ignore(IgnoreReason),
    Propose,
    Merge,
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Ignore(r) => r.label(),
            Decision::Propose => "propose",
            Decision::Merge => "merge",
        }
    }
}

/// Decides what to do about a culprit. The guards run in a fixed order, the first that applies
/// is the reason; then the action and the merge rules say propose or merge.
pub fn decide(policy: &Policy, facts: &Facts, now: DateTime<Utc>) -> Decision {
    match guard(policy, facts, now) {
        Some(reason) => Decision::Ignore(reason),
        None if policy.action == Action::Merge
            || policy.merge_rules.iter().any(|r| rule_holds(r, facts, now)) =>
        {
            Decision::Merge
        }
        None => Decision::Propose,
    }
}

fn guard(policy: &Policy, facts: &Facts, now: DateTime<Utc>) -> Option<IgnoreReason> {
    let deployed = facts.deployed_at.unwrap_or_else(|| facts.culprit.time.with_timezone(&Utc));
    if let Some(reverts) = reverted_culprit(&facts.culprit.message) {
        return Some(IgnoreReason::CulpritIsARevert { reverts });
    }
    if let Some(by) = &facts.rolled_back_by {
        return Some(IgnoreReason::AlreadyRolledBack { by: by.clone() });
    }
    if let Some(by) = &facts.opted_out {
        return Some(IgnoreReason::OptedOut { by: by.clone() });
    }
    if let Some(running) = facts.running_version.as_ref().filter(|r| **r != facts.culprit_version) {
        return Some(IgnoreReason::NoLongerRunning {
            culprit: facts.culprit_version.clone(),
            running: running.clone(),
        });
    }
    let age = now - deployed;
    if age > policy.max_culprit_age {
        return Some(IgnoreReason::CulpritTooOld { age, limit: policy.max_culprit_age });
    }
    if facts.alert_started + policy.causality_grace < deployed {
        return Some(IgnoreReason::AlertStartedBeforeDeploy { alert_started: facts.alert_started, deployed });
    }
    if let Some(w) = policy.freeze.iter().find(|w| w.includes(now)) {
        return Some(IgnoreReason::Frozen { window: w.text.clone() });
    }
    if let Some(last) = facts.last_revert.filter(|l| now - *l < policy.cooldown) {
        return Some(IgnoreReason::Cooldown { last, cooldown: policy.cooldown });
    }
    if let Some(limit) = policy.max_reverts_per_day_per_repo.filter(|l| facts.reverts_today_repo >= *l) {
        return Some(IgnoreReason::TooManyReverts {
            count: facts.reverts_today_repo,
            limit,
            scope: "in this repo",
        });
    }
    if let Some(limit) = policy.max_reverts_per_day.filter(|l| facts.reverts_today >= *l) {
        return Some(IgnoreReason::TooManyReverts {
            count: facts.reverts_today,
            limit,
            scope: "over all repos",
        });
    }
    None
}

fn rule_holds(rule: &MergeRule, facts: &Facts, now: DateTime<Utc>) -> bool {
    (rule.severity.is_empty()
        || facts.severity.as_ref().is_some_and(|s| rule.severity.iter().any(|r| r.eq_ignore_ascii_case(s))))
        && rule.labels.iter().all(|(k, v)| facts.labels.get(k) == Some(v))
        && rule.when.as_ref().is_none_or(|w| w.includes(now))
}

/// The most severe of some severities (critical > high > error > warning > info > anything else).
pub fn most_severe<'a>(severities: impl Iterator<Item = &'a str>) -> Option<String> {
    let rank = |s: &str| match s.to_ascii_lowercase().as_str() {
        "critical" | "page" | "p1" => 5,
        "high" | "p2" => 4,
        "error" | "major" | "p3" => 3,
        "warning" | "warn" | "minor" | "p4" => 2,
        "info" | "p5" => 1,
        _ => 0,
    };
    severities.max_by_key(|s| rank(s)).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::culprit::CommitSha;

    fn commit(at: &str, message: &str) -> CommitInfo {
        CommitInfo {
            sha: CommitSha("c".repeat(40)),
            parents: vec![],
            summary: message.lines().next().unwrap_or("").into(),
            message: message.into(),
            author: "a".into(),
            author_email: "a@x".into(),
            time: DateTime::parse_from_rfc3339(at).unwrap(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn facts(c: &CommitInfo, started: &str) -> Facts {
        Facts {
            culprit: c.clone(),
            culprit_version: "1.3".into(),
            running_version: None,
            alert_started: t(started),
            deployed_at: None,
            severity: Some("critical".into()),
            labels: BTreeMap::from([("env".to_string(), "prod".to_string())]),
            last_revert: None,
            reverts_today_repo: 0,
            reverts_today: 0,
            opted_out: None,
            rolled_back_by: None,
        }
    }

    /// One row: a change to the policy, a change to the facts, the time, the decision.
    type Row = (&'static str, fn(&mut Policy), fn(&mut Facts), &'static str, &'static str);

    #[test]
    fn table() {
        // The deploy is Wednesday 2026-11-25 09:00Z; the alert starts 09:10Z.
        let deploy = commit("2026-11-25T10:00:00+01:00", "deploy api 1.3");
        let revert = commit("2026-11-25T10:00:00+01:00", "Revert \"x\"\n\nMetricops-Culprit: abc\n");
        let nights = || Some(Window::parse("* 0-8,18-23 * * MON-FRI", None).unwrap());
        let rows: Vec<Row> = vec![
            ("default proposes", |_| {}, |_| {}, "2026-11-25T09:30:00Z", "propose"),
            ("action merge merges", |p| p.action = Action::Merge, |_| {}, "2026-11-25T09:30:00Z", "merge"),
            ("old culprit", |_| {}, |_| {}, "2026-11-26T09:30:00Z", "culprit_too_old"),
            (
                "set back already",
                |_| {},
                |f| f.rolled_back_by = Some("4b76aa7 \"Revert …\"".into()),
                "2026-11-25T09:30:00Z",
                "already_rolled_back",
            ),
            (
                "alert before deploy",
                |_| {},
                |f| f.alert_started = t("2026-11-25T08:40:00Z"),
                "2026-11-25T09:30:00Z",
                "alert_before_deploy",
            ),
            (
                // Committed 09:00, but the webhook saw it go live at 09:50: the alert came first.
                "the deploy record's time, not the commit's",
                |_| {},
                |f| f.deployed_at = Some(t("2026-11-25T09:50:00Z")),
                "2026-11-25T10:00:00Z",
                "alert_before_deploy",
            ),
            (
                // Committed long ago, live only since 09:05: not too old.
                "a late deploy of an old commit is not too old",
                |_| {},
                |f| {
                    f.deployed_at = Some(t("2026-11-26T09:05:00Z"));
                    f.alert_started = t("2026-11-26T09:10:00Z");
                },
                "2026-11-26T09:30:00Z",
                "propose",
            ),
            (
                "within the grace window",
                |_| {},
                |f| f.alert_started = t("2026-11-25T08:57:00Z"),
                "2026-11-25T09:30:00Z",
                "propose",
            ),
            (
                "opted out",
                |p| p.action = Action::Merge,
                |f| f.opted_out = Some("alert label".into()),
                "2026-11-25T09:30:00Z",
                "opted_out",
            ),
            (
                "rolled forward already",
                |_| {},
                |f| f.running_version = Some("1.4".into()),
                "2026-11-25T09:30:00Z",
                "no_longer_running",
            ),
            (
                "still running the culprit",
                |_| {},
                |f| f.running_version = Some("1.3".into()),
                "2026-11-25T09:30:00Z",
                "propose",
            ),
            (
                "frozen",
                |p| p.freeze = vec![Window::parse("* 9-10 * * WED", None).unwrap()],
                |_| {},
                "2026-11-25T09:30:00Z",
                "frozen",
            ),
            (
                "freeze on another day",
                |p| p.freeze = vec![Window::parse("* 9-10 * * THU", None).unwrap()],
                |_| {},
                "2026-11-25T09:30:00Z",
                "propose",
            ),
            (
                "cooldown",
                |_| {},
                |f| f.last_revert = Some(t("2026-11-25T09:00:00Z")),
                "2026-11-25T09:30:00Z",
                "cooldown",
            ),
            (
                "cooldown over",
                |_| {},
                |f| f.last_revert = Some(t("2026-11-25T08:00:00Z")),
                "2026-11-25T09:30:00Z",
                "propose",
            ),
            ("repo cap", |_| {}, |f| f.reverts_today_repo = 10, "2026-11-25T09:30:00Z", "too_many_reverts"),
            ("global cap", |_| {}, |f| f.reverts_today = 20, "2026-11-25T09:30:00Z", "too_many_reverts"),
            (
                "caps off",
                |p| (p.max_reverts_per_day, p.max_reverts_per_day_per_repo) = (None, None),
                |f| f.reverts_today = 99,
                "2026-11-25T09:30:00Z",
                "propose",
            ),
            (
                "merge rule by severity",
                |p| {
                    p.merge_rules =
                        vec![MergeRule { severity: vec!["critical".into()], ..Default::default() }]
                },
                |_| {},
                "2026-11-25T09:30:00Z",
                "merge",
            ),
            (
                "merge rule, other severity",
                |p| {
                    p.merge_rules =
                        vec![MergeRule { severity: vec!["critical".into()], ..Default::default() }]
                },
                |f| f.severity = Some("warning".into()),
                "2026-11-25T09:30:00Z",
                "propose",
            ),
            (
                "merge rule by label",
                |p| {
                    p.merge_rules = vec![MergeRule {
                        labels: BTreeMap::from([("env".into(), "prod".into())]),
                        ..Default::default()
                    }]
                },
                |_| {},
                "2026-11-25T09:30:00Z",
                "merge",
            ),
            (
                "merge rule, label differs",
                |p| {
                    p.merge_rules = vec![MergeRule {
                        labels: BTreeMap::from([("env".into(), "staging".into())]),
                        ..Default::default()
                    }]
                },
                |_| {},
                "2026-11-25T09:30:00Z",
                "propose",
            ),
        ];
        for (name, pol, fac, now, want) in rows {
            let mut p = Policy::default();
            pol(&mut p);
            let mut f = facts(&deploy, "2026-11-25T09:10:00Z");
            fac(&mut f);
            assert_eq!(decide(&p, &f, t(now)).label(), want, "{name}");
        }
        // Merge windows: nights on weekdays only (deploys one minute before now, alerts at now).
        let p = Policy {
            merge_rules: vec![MergeRule { when: nights(), ..Default::default() }],
            ..Policy::default()
        };
        for (now, want) in [
            ("2026-11-25T09:30:00Z", "propose"),
            ("2026-11-25T19:30:00Z", "merge"),
            ("2026-11-28T19:30:00Z", "propose"),
            ("2026-11-30T07:30:00Z", "merge"),
        ] {
            let late = commit(&(t(now) - Duration::minutes(1)).to_rfc3339(), "deploy api 1.3");
            let f = Facts { alert_started: t(now), ..facts(&late, now) };
            assert_eq!(decide(&p, &f, t(now)).label(), want, "merge window at {now}");
        }
        let f = facts(&revert, "2026-11-25T09:10:00Z");
        assert_eq!(
            decide(&Policy { action: Action::Merge, ..Policy::default() }, &f, t("2026-11-25T09:30:00Z"))
                .label(),
            "culprit_is_revert"
        );
    }

    #[test]
    fn severities_rank() {
        assert_eq!(most_severe(["warning", "critical", "info"].into_iter()).as_deref(), Some("critical"));
        assert_eq!(most_severe(["custom", "warning"].into_iter()).as_deref(), Some("warning"));
        assert_eq!(most_severe(std::iter::empty()), None);
    }
}
