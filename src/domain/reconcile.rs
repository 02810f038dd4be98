//! The reconciler's decisions, pure: what a workload's state in git and on the forge says to do
//! next. The engine gathers the facts (git, the forge, the alerts), asks here, then acts.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::alert::Alert;
use super::image_ref::{ImageRef, same_repository};
use super::policy::Decision;

/// The trailer naming the workload a revert was for (cooldown reads it back).
pub const WORKLOAD_TRAILER: &str = "Metricops-Workload";
/// The trailer naming what a revert paused (`/metricops resume` undoes it).
pub const PAUSED_TRAILER: &str = "Metricops-Paused";
/// A tag excluded from argocd-image-updater in the revert commit: `TAG KIND OBJECT`.
pub const EXCLUDED_TRAILER: &str = "Metricops-Excluded";
/// The alert label that turns rollback off (label names cannot carry `metricops.dev/rollback`).
pub const OPT_OUT_ALERT_LABEL: &str = "metricops_rollback";
/// The label `/metricops hold` puts on a revert PR: no automatic merge while it is there.
pub const HOLD_LABEL: &str = "metricops:hold";
/// The label `/metricops cancel` leaves on the closed PR: the culprit is not proposed again for a while.
pub const CANCELLED_LABEL: &str = "metricops:cancelled";

/// The value of a `Key: value` trailer in a commit message (the last one, as git reads trailers).
pub fn trailer<'m>(message: &'m str, key: &str) -> Option<&'m str> {
    message
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
        .find(|v| !v.is_empty())
}

/// Where rollback was turned off for this incident, if anywhere: an alert labelled
/// `metricops_rollback="off"`, a manifest in scope annotated `metricops.dev/rollback: "off"`, or the
/// opt-out label on the culprit's pull request.
pub fn opted_out(
    alerts: &[Alert],
    manifest_off: Option<&str>,
    culprit_pr: Option<(u64, &[String])>,
    opt_out_label: &str,
) -> Option<String> {
    if let Some(a) = alerts.iter().find(|a| a.labels.get(OPT_OUT_ALERT_LABEL).is_some_and(|v| v == "off")) {
        return Some(format!("label {OPT_OUT_ALERT_LABEL}=\"off\" on alert {}", a.name));
    }
    if let Some(file) = manifest_off {
        return Some(format!("annotation metricops.dev/rollback: \"off\" in {file}"));
    }
    let (number, labels) = culprit_pr?;
    labels.iter().any(|l| l == opt_out_label).then(|| format!("label {opt_out_label:?} on #{number}"))
}

/// The version running, as an alert's `image` label tells it (for the image the revert is about).
pub fn running_version(alerts: &[Alert], image: Option<&str>) -> Option<String> {
    let image = image?;
    alerts.iter().find_map(|a| {
        let r = ImageRef::parse(a.labels.get("image")?)?;
        same_repository(image, &r.repository).then(|| r.version.to_string())
    })
}

/// The labels every alert of an incident carries, with the same value.
pub fn common_labels(alerts: &[Alert]) -> BTreeMap<String, String> {
    let mut labels = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
    labels.retain(|k, v| alerts.iter().all(|a| a.labels.get(k) == Some(v)));
    labels
}

/// A metricops revert found on the branch's first-parent history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandedRevert {
    pub time: DateTime<Utc>,
    pub workload: Option<String>,
}

/// What the history says for the cooldown and the daily limits: the last revert for `workload`, and
/// how many landed in the 24 hours before `now`.
pub fn revert_counts(
    landed: &[LandedRevert],
    workload: &str,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, u32) {
    let day_ago = now - Duration::hours(24);
    let last = landed.iter().filter(|r| r.workload.as_deref() == Some(workload)).map(|r| r.time).max();
    (last, landed.iter().filter(|r| r.time >= day_ago).count() as u32)
}

/// A culprit's open revert pull request, as the forge shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRevert {
    pub number: u64,
    pub labels: Vec<String>,
}

/// A culprit's closed revert pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedRevert {
    pub number: u64,
    pub labels: Vec<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub merged: bool,
}

/// Why an open revert is not merged by this step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaysOpen {
    /// `/metricops hold` is on it.
    HeldByAPerson,
    /// Policy proposes: a person merges it.
    ForAPersonToMerge,
}

/// The next step for one culprit's revert on a forge with pull requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Its revert PR is open: say on it that the alert still fires (once per new set of alerts),
    /// dress it if it never was, then merge it — or leave it open, and why.
    Reconfirm { pr: u64, dress: bool, merge: Result<(), StaysOpen> },
    /// A person cancelled this culprit's revert within the suppression window: nothing again.
    StaySuppressed { pr: u64 },
    /// This culprit's revert was merged already (another replica's, a moment ago): nothing again.
    AlreadyMerged { pr: u64 },
    /// No revert yet: build it, push its branch, open the PR, and merge it when policy says so.
    OpenRevert { merge: bool },
}

/// What to do about a culprit's revert, from the decision and its PRs on the forge. `dressed_with`
/// are the labels a dressed PR carries (dressing adds them first); `suppress` how long a cancel holds.
pub fn next_step(
    decision: &Decision,
    open: Option<&OpenRevert>,
    closed: &[ClosedRevert],
    dressed_with: &[String],
    now: DateTime<Utc>,
    suppress: Duration,
) -> NextStep {
    if let Some(pr) = open {
        let dress = !dressed_with.iter().all(|want| pr.labels.contains(want));
        let merge = if pr.labels.iter().any(|l| l == HOLD_LABEL) {
            Err(StaysOpen::HeldByAPerson)
        } else if *decision == Decision::Merge {
            Ok(())
        } else {
            Err(StaysOpen::ForAPersonToMerge)
        };
        return NextStep::Reconfirm { pr: pr.number, dress, merge };
    }
    if let Some(p) = closed.iter().find(|p| p.merged) {
        return NextStep::AlreadyMerged { pr: p.number };
    }
    let cancelled = closed.iter().find(|p| {
        p.labels.iter().any(|l| l == CANCELLED_LABEL) && p.closed_at.is_some_and(|c| now - c < suppress)
    });
    match cancelled {
        Some(p) => NextStep::StaySuppressed { pr: p.number },
        None => NextStep::OpenRevert { merge: *decision == Decision::Merge },
    }
}

/// A revert branch found on the remote at start, with what the forge has for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundBranch {
    pub branch: String,
    /// The PRs whose head it is, open or closed.
    pub has_pr: bool,
    /// When its commit was made.
    pub committed: DateTime<Utc>,
}

/// What the scan at start does with a revert branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// Pushed, and its PR never opened (a crash or a failure in between): open it now.
    OpenItsPr,
    /// Proposed as a branch (plain git) or in its PR: nothing is missing.
    Complete,
    /// Too old to act on by itself: logged for a person.
    Stale,
}

/// Whether a revert branch is unfinished work. `forge_has_prs`: the forge opens PRs (GitHub);
/// on a plain git remote the branch itself is the proposal.
pub fn unfinished(b: &FoundBranch, forge_has_prs: bool, now: DateTime<Utc>, max_age: Duration) -> Unfinished {
    if !forge_has_prs || b.has_pr {
        Unfinished::Complete
    } else if now - b.committed > max_age {
        Unfinished::Stale
    } else {
        Unfinished::OpenItsPr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            name: "HighErrorRate".into(),
            status: crate::domain::alert::Status::Firing,
            severity: None,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: Default::default(),
            starts_at: t("2026-01-01T00:00:00Z"),
            fingerprint: "f".into(),
            generator_url: String::new(),
        }
    }

    #[test]
    fn trailers_are_read_as_git_does() {
        let m =
            "Revert x\n\nbody\n\nMetricops-Culprit: abc\nMetricops-Workload: api\nMetricops-Workload:web \n";
        assert_eq!(trailer(m, WORKLOAD_TRAILER), Some("web"), "the last one wins");
        assert_eq!(trailer(m, "Metricops-Culprit"), Some("abc"));
        assert_eq!(trailer(m, "Metricops-Paused"), None);
        assert_eq!(
            trailer("Metricops-WorkloadX: no\n", WORKLOAD_TRAILER),
            None,
            "a longer key is another key"
        );
    }

    #[test]
    fn an_opt_out_is_found_on_the_alert_first_then_the_manifests_then_the_pr() {
        let on = [alert(&[(OPT_OUT_ALERT_LABEL, "off")])];
        let plain = [alert(&[])];
        let labels = vec!["no-rollback".to_string()];
        assert!(opted_out(&on, Some("a.yaml"), None, "no-rollback").unwrap().contains("alert HighErrorRate"));
        assert!(opted_out(&plain, Some("a.yaml"), None, "no-rollback").unwrap().contains("a.yaml"));
        assert!(opted_out(&plain, None, Some((7, &labels)), "no-rollback").unwrap().contains("#7"));
        assert_eq!(opted_out(&plain, None, Some((7, &[])), "no-rollback"), None);
        assert_eq!(opted_out(&[alert(&[(OPT_OUT_ALERT_LABEL, "on")])], None, None, "x"), None);
    }

    #[test]
    fn the_running_version_is_the_alert_image_label_of_the_same_repository() {
        let a = [alert(&[("image", "ghcr.io/acme/api:1.2.3")])];
        assert_eq!(running_version(&a, Some("ghcr.io/acme/api")), Some("1.2.3".into()));
        assert_eq!(running_version(&a, Some("ghcr.io/acme/web")), None);
        assert_eq!(running_version(&a, None), None);
    }

    #[test]
    fn counts_read_the_workload_trailer_and_the_last_day() {
        let now = t("2026-01-02T12:00:00Z");
        let landed = [
            LandedRevert { time: t("2026-01-02T10:00:00Z"), workload: Some("api".into()) },
            LandedRevert { time: t("2026-01-01T10:00:00Z"), workload: Some("api".into()) },
            LandedRevert { time: t("2026-01-02T11:00:00Z"), workload: None },
        ];
        assert_eq!(revert_counts(&landed, "api", now), (Some(t("2026-01-02T10:00:00Z")), 2));
        assert_eq!(revert_counts(&landed, "web", now), (None, 2));
    }

    #[test]
    fn an_open_revert_is_reconfirmed_merged_only_by_policy_and_never_while_held() {
        let now = t("2026-01-02T12:00:00Z");
        let dressed = vec!["metricops".to_string()];
        let open = OpenRevert { number: 4, labels: vec!["metricops".into()] };
        assert_eq!(
            next_step(&Decision::Merge, Some(&open), &[], &dressed, now, Duration::hours(24)),
            NextStep::Reconfirm { pr: 4, dress: false, merge: Ok(()) }
        );
        assert_eq!(
            next_step(&Decision::Propose, Some(&open), &[], &dressed, now, Duration::hours(24)),
            NextStep::Reconfirm { pr: 4, dress: false, merge: Err(StaysOpen::ForAPersonToMerge) }
        );
        let held = OpenRevert { number: 4, labels: vec![HOLD_LABEL.into()] };
        assert_eq!(
            next_step(&Decision::Merge, Some(&held), &[], &dressed, now, Duration::hours(24)),
            NextStep::Reconfirm { pr: 4, dress: true, merge: Err(StaysOpen::HeldByAPerson) }
        );
    }

    #[test]
    fn a_cancel_suppresses_within_its_window_only() {
        let now = t("2026-01-02T12:00:00Z");
        let cancelled = |at: &str| ClosedRevert {
            number: 9,
            labels: vec![CANCELLED_LABEL.into()],
            closed_at: Some(t(at)),
            merged: false,
        };
        let day = Duration::hours(24);
        assert_eq!(
            next_step(&Decision::Propose, None, &[cancelled("2026-01-02T00:00:00Z")], &[], now, day),
            NextStep::StaySuppressed { pr: 9 }
        );
        assert_eq!(
            next_step(&Decision::Merge, None, &[cancelled("2025-12-30T00:00:00Z")], &[], now, day),
            NextStep::OpenRevert { merge: true }
        );
        let closed_unlabelled =
            ClosedRevert { number: 9, labels: vec![], closed_at: Some(now), merged: false };
        assert_eq!(
            next_step(&Decision::Propose, None, &[closed_unlabelled], &[], now, day),
            NextStep::OpenRevert { merge: false }
        );
        // Merged already (by another replica a moment ago): never opened again.
        let merged = ClosedRevert { number: 7, labels: vec![], closed_at: Some(now), merged: true };
        assert_eq!(
            next_step(&Decision::Merge, None, &[merged], &[], now, day),
            NextStep::AlreadyMerged { pr: 7 }
        );
    }

    #[test]
    fn a_pushed_branch_without_a_pr_is_unfinished_on_a_forge_with_prs() {
        let now = t("2026-01-02T12:00:00Z");
        let b = |has_pr, at: &str| FoundBranch {
            branch: "metricops/revert-abc".into(),
            has_pr,
            committed: t(at),
        };
        let week = Duration::days(7);
        assert_eq!(unfinished(&b(false, "2026-01-02T11:00:00Z"), true, now, week), Unfinished::OpenItsPr);
        assert_eq!(unfinished(&b(true, "2026-01-02T11:00:00Z"), true, now, week), Unfinished::Complete);
        assert_eq!(unfinished(&b(false, "2026-01-02T11:00:00Z"), false, now, week), Unfinished::Complete);
        assert_eq!(unfinished(&b(false, "2025-12-01T11:00:00Z"), true, now, week), Unfinished::Stale);
    }
}
