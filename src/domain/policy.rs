//! The decision for an incident: ignore (with a reason), propose a revert, or merge it.

use chrono::{DateTime, Duration, Utc};

use super::culprit::CommitInfo;
use super::revert::reverted_culprit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Open the revert for a person to merge.
    #[default]
    Propose,
    /// Land the revert on the target branch at once.
    Merge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub action: Action,
    pub max_culprit_age: Duration,
    /// How long before the culprit reached the branch an alert may have started and still be blamed on it.
    pub causality_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { action: Action::Propose, max_culprit_age: Duration::hours(24), causality_grace: Duration::minutes(5) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    CulpritTooOld { age: Duration, limit: Duration },
    AlertStartedBeforeDeploy { alert_started: DateTime<Utc>, deployed: DateTime<Utc> },
    CulpritIsARevert { reverts: String },
}

impl IgnoreReason {
    /// One label per reason, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IgnoreReason::CulpritTooOld { .. } => "culprit_too_old",
            IgnoreReason::AlertStartedBeforeDeploy { .. } => "alert_before_deploy",
            IgnoreReason::CulpritIsARevert { .. } => "culprit_is_revert",
        }
    }
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IgnoreReason::CulpritTooOld { age, limit } => {
                write!(f, "the culprit is {}h old, older than the {}h limit", age.num_hours(), limit.num_hours())
            }
            IgnoreReason::AlertStartedBeforeDeploy { alert_started, deployed } => {
                write!(f, "the alert started at {}, before the culprit reached the branch at {}", alert_started.to_rfc3339(), deployed.to_rfc3339())
            }
            IgnoreReason::CulpritIsARevert { reverts } => {
                write!(f, "the culprit is itself a metricops revert (of {reverts}); a revert is never reverted automatically")
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

/// Decides what to do about a culprit. `deployed` is when it reached the branch (its commit time
/// here); `now` is passed in.
pub fn decide(policy: &Policy, culprit: &CommitInfo, alert_started: DateTime<Utc>, now: DateTime<Utc>) -> Decision {
    let deployed = culprit.time.with_timezone(&Utc);
    if let Some(reverts) = reverted_culprit(&culprit.message) {
        return Decision::Ignore(IgnoreReason::CulpritIsARevert { reverts });
    }
    let age = now - deployed;
    if age > policy.max_culprit_age {
        return Decision::Ignore(IgnoreReason::CulpritTooOld { age, limit: policy.max_culprit_age });
    }
    if alert_started + policy.causality_grace < deployed {
        return Decision::Ignore(IgnoreReason::AlertStartedBeforeDeploy { alert_started, deployed });
    }
    match policy.action {
        Action::Propose => Decision::Propose,
        Action::Merge => Decision::Merge,
    }
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

    #[test]
    fn table() {
        let p = Policy::default();
        let merge = Policy { action: Action::Merge, ..Policy::default() };
        let deploy = commit("2026-11-25T10:00:00+01:00", "deploy api 1.3");
        let cases = [
            (&p, &deploy, "2026-11-25T09:10:00Z", "2026-11-25T09:30:00Z", "propose"),
            (&merge, &deploy, "2026-11-25T09:10:00Z", "2026-11-25T09:30:00Z", "merge"),
            (&p, &deploy, "2026-11-26T09:10:00Z", "2026-11-26T09:30:00Z", "culprit_too_old"),
            (&p, &deploy, "2026-11-25T08:40:00Z", "2026-11-25T09:30:00Z", "alert_before_deploy"),
            // Within the grace window (the commit time is not the sync time): still blamed.
            (&p, &deploy, "2026-11-25T08:57:00Z", "2026-11-25T09:30:00Z", "propose"),
        ];
        for (policy, c, started, now, want) in cases {
            assert_eq!(decide(policy, c, t(started), t(now)).label(), want, "alert at {started}, now {now}");
        }
        let revert = commit("2026-11-25T10:00:00+01:00", "Revert \"x\"\n\nMetricops-Culprit: abc\n");
        assert_eq!(decide(&p, &revert, t("2026-11-25T09:10:00Z"), t("2026-11-25T09:30:00Z")).label(), "culprit_is_revert");
    }
}
