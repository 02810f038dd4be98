//! A rollback confirmed (pure): after a revert merges, the steps it must pass — synced at (or
//! after) the revert commit, healthy, the alert resolved — each with the time it took from the
//! merge, and the one comment that tells it on the PR (edited in place as steps come).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A step of a rollback, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    Synced,
    Healthy,
    Resolved,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Synced, Step::Healthy, Step::Resolved];

    pub fn label(self) -> &'static str {
        match self {
            Step::Synced => "synced",
            Step::Healthy => "healthy",
            Step::Resolved => "resolved",
        }
    }

    fn said(self) -> &'static str {
        match self {
            Step::Synced => "synced",
            Step::Healthy => "healthy",
            Step::Resolved => "SLO resolved",
        }
    }
}

/// A rollback being followed: kept on the deployer's object (annotation `metricops.dev/confirm`),
/// so that whichever replica leads can go on with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub workload: String,
    pub repo_url: String,
    /// The revert commit as it landed on the branch (the merge commit of its PR).
    pub revert: String,
    /// The revert PR, with a forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<u64>,
    pub merged_at: DateTime<Utc>,
    /// The alert names it waits on to resolve.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Steps passed, with when.
    #[serde(default)]
    pub passed: Vec<(Step, DateTime<Utc>)>,
    /// Set when it ended (all steps, or the deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
}

/// How following a rollback ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Ended {
    Confirmed,
    /// This step did not come before the deadline; what the deployer said last.
    TimedOut {
        step: Step,
        said: String,
    },
}

/// What was seen of a rollback at one moment.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Seen {
    /// The deployer applied the revert commit or a later one.
    pub at_revert: bool,
    pub synced: bool,
    pub healthy: bool,
    pub alert_resolved: bool,
    /// What the deployer says, for the timeout message.
    pub said: String,
}

/// What a look at a rollback changed.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Nothing,
    /// New steps passed: the comment is edited.
    Passed(Vec<Step>),
    Ended(Ended),
}

impl Rollback {
    pub fn next(&self) -> Option<Step> {
        Step::ALL.into_iter().find(|s| !self.passed.iter().any(|(p, _)| p == s))
    }

    /// One look: the steps passed now (in order; a later one only after the one before), or the end.
    pub fn observe(&mut self, seen: &Seen, now: DateTime<Utc>, deadline: Duration) -> Progress {
        if self.ended.is_some() {
            return Progress::Nothing;
        }
        let mut new = Vec::new();
        while let Some(step) = self.next() {
            let ok = match step {
                Step::Synced => seen.at_revert && seen.synced,
                Step::Healthy => seen.at_revert && seen.healthy,
                Step::Resolved => seen.alert_resolved,
            };
            if !ok {
                break;
            }
            self.passed.push((step, now));
            new.push(step);
        }
        if self.next().is_none() {
            self.ended = Some(Ended::Confirmed);
            return Progress::Ended(Ended::Confirmed);
        }
        if now - self.merged_at > deadline {
            let step = self.next().expect("a step is left");
            let said =
                if step == Step::Resolved { "the alert is still firing".into() } else { seen.said.clone() };
            let e = Ended::TimedOut { step, said };
            self.ended = Some(e.clone());
            return Progress::Ended(e);
        }
        if new.is_empty() { Progress::Nothing } else { Progress::Passed(new) }
    }

    /// Whether this is the same rollback as `other` (same revert, same merge), further along: a
    /// step more passed, or ended where `other` is not. Steps only ever come in order, so what
    /// was written last is always the further one, and a kept copy read back before the write
    /// shows up (a watch lags) is never taken for news.
    pub fn is_further_than(&self, other: &Rollback) -> bool {
        self.revert == other.revert
            && self.merged_at == other.merged_at
            && (self.passed.len() > other.passed.len() || (self.ended.is_some() && other.ended.is_none()))
    }

    /// The comment's marker, to find it again.
    pub fn marker(&self) -> String {
        format!("<!-- metricops:confirm {} -->", self.revert)
    }

    /// `merged → synced in 7 s → healthy in 21 s → SLO resolved in 1 m 40 s`, and what is awaited.
    pub fn line(&self, deadline: Duration) -> String {
        let mut s = "merged".to_string();
        for (step, at) in &self.passed {
            s.push_str(&format!(" → {} in {}", step.said(), human(*at - self.merged_at)));
        }
        match &self.ended {
            Some(Ended::Confirmed) => s.push_str(" ✅"),
            Some(Ended::TimedOut { step, said }) => {
                s.push_str(&format!(" → not {} after {} ({said})", step.said(), human(deadline)))
            }
            None => {
                if let Some(step) = self.next() {
                    s.push_str(&format!(" → waiting to be {}…", step.said()));
                }
            }
        }
        s
    }

    /// The PR comment.
    pub fn comment(&self, deployer: &str, deadline: Duration) -> String {
        let head = match &self.ended {
            Some(Ended::Confirmed) => "**Rollback confirmed.**",
            Some(Ended::TimedOut { .. }) => "**Rollback not confirmed.**",
            None => "**Rollback in progress.**",
        };
        let mut out = format!(
            "{}\n{head} {}\n\n`{}` by {deployer}; merged at {}.",
            self.marker(),
            self.line(deadline),
            short(&self.revert),
            self.merged_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        if let Some(Ended::TimedOut { step, .. }) = &self.ended {
            let what = match step {
                Step::Synced => "the deployer never applied the revert: check its sync status and events",
                Step::Healthy => "the rolled-back version is not healthy: check the workload's pods",
                Step::Resolved => {
                    "the alert still fires with the old version back: the cause may be elsewhere"
                }
            };
            out.push_str(&format!("\n\nA person should look: {what}."));
        }
        out
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `7 s`, `1 m 40 s`, `2 h 5 m`.
pub fn human(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} m", s / 60),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {} m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T03:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn rollback() -> Rollback {
        Rollback {
            workload: "shop/checkout".into(),
            repo_url: "https://github.com/acme/manifests.git".into(),
            revert: "8f2c1e9a4b7d3f6e0a1c2b3d4e5f60718293a4b5".into(),
            pr: Some(7),
            merged_at: t0(),
            alerts: vec!["CheckoutErrors".into()],
            passed: vec![],
            ended: None,
        }
    }

    #[test]
    fn a_copy_read_back_before_the_last_write_is_not_further() {
        let deadline = Duration::minutes(15);
        let stale = rollback();
        let mut written = stale.clone();
        let all =
            Seen { at_revert: true, synced: true, healthy: true, alert_resolved: true, ..Default::default() };
        written.observe(&all, t0() + Duration::seconds(9), deadline);
        assert!(written.is_further_than(&stale), "ended beats waiting");
        assert!(!stale.is_further_than(&written), "the stale copy is not news");
        assert!(!written.is_further_than(&written.clone()), "the same copy is not further");
        let mut other = stale.clone();
        other.revert = "0000000000000000000000000000000000000001".into();
        assert!(!written.is_further_than(&other), "another revert is another rollback");
        let mut synced = stale.clone();
        synced.observe(&Seen { at_revert: true, synced: true, ..Default::default() }, t0(), deadline);
        assert!(synced.is_further_than(&stale) && written.is_further_than(&synced));
    }

    #[test]
    fn steps_come_in_order_with_their_times_from_the_merge() {
        let mut r = rollback();
        let deadline = Duration::minutes(15);
        let before = Seen {
            at_revert: false,
            synced: true,
            healthy: true,
            alert_resolved: false,
            said: String::new(),
        };
        assert_eq!(
            r.observe(&before, t0() + Duration::seconds(3), deadline),
            Progress::Nothing,
            "synced at an older revision is not the rollback"
        );
        let synced = Seen { at_revert: true, synced: true, ..Default::default() };
        assert_eq!(
            r.observe(&synced, t0() + Duration::seconds(7), deadline),
            Progress::Passed(vec![Step::Synced])
        );
        let healthy = Seen { healthy: true, ..synced.clone() };
        assert_eq!(
            r.observe(&healthy, t0() + Duration::seconds(21), deadline),
            Progress::Passed(vec![Step::Healthy])
        );
        assert_eq!(
            r.line(deadline),
            "merged → synced in 7 s → healthy in 21 s → waiting to be SLO resolved…"
        );
        let resolved = Seen { alert_resolved: true, ..healthy };
        assert_eq!(
            r.observe(&resolved, t0() + Duration::seconds(100), deadline),
            Progress::Ended(Ended::Confirmed)
        );
        assert_eq!(
            r.line(deadline),
            "merged → synced in 7 s → healthy in 21 s → SLO resolved in 1 m 40 s ✅"
        );
        assert!(r.comment("Argo CD Application argocd/checkout", deadline).starts_with(&r.marker()));
        assert_eq!(r.observe(&Seen::default(), t0() + Duration::hours(1), deadline), Progress::Nothing);
    }

    #[test]
    fn a_resolved_alert_before_the_sync_waits_for_the_sync() {
        let mut r = rollback();
        let seen = Seen { alert_resolved: true, ..Default::default() };
        assert_eq!(r.observe(&seen, t0() + Duration::seconds(5), Duration::minutes(15)), Progress::Nothing);
        let all =
            Seen { at_revert: true, synced: true, healthy: true, alert_resolved: true, said: String::new() };
        assert_eq!(
            r.observe(&all, t0() + Duration::seconds(9), Duration::minutes(15)),
            Progress::Ended(Ended::Confirmed)
        );
        assert_eq!(r.passed.len(), 3);
    }

    #[test]
    fn a_timeout_names_the_step_that_did_not_come() {
        let mut r = rollback();
        let d = Duration::minutes(10);
        let synced = Seen {
            at_revert: true,
            synced: true,
            said: "sync Synced, operation Succeeded, health Degraded".into(),
            ..Default::default()
        };
        r.observe(&synced, t0() + Duration::seconds(8), d);
        let p = r.observe(&synced, t0() + Duration::minutes(11), d);
        assert!(matches!(p, Progress::Ended(Ended::TimedOut { step: Step::Healthy, .. })), "{p:?}");
        assert_eq!(
            r.line(d),
            "merged → synced in 8 s → not healthy after 10 m (sync Synced, operation Succeeded, health Degraded)"
        );
        assert!(r.comment("x", d).contains("not confirmed"));
    }

    #[test]
    fn it_round_trips_as_json_for_the_annotation() {
        let mut r = rollback();
        r.passed.push((Step::Synced, t0()));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rollback>(&text).unwrap(), r);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::seconds(7)), "7 s");
        assert_eq!(human(Duration::seconds(100)), "1 m 40 s");
        assert_eq!(human(Duration::minutes(15)), "15 m");
        assert_eq!(human(Duration::minutes(125)), "2 h 5 m");
    }
}
