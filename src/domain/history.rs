//! The rollback history, pure: the metricops reverts on a branch (read from their trailers) and
//! the records kept of what the bot decided and saw (decisions, the rollback's steps, people's
//! commands), assembled into one row per incident, newest first; filtered by time and workload,
//! paged by a cursor; and a timeline per workload. Values in, values out: the git walk, the notes
//! and the `state_dir` log are read by the shell (`src/history.rs`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::confirm::{Step, human};
use super::reconcile::{WORKLOAD_TRAILER, trailer};

/// The git notes ref decisions are kept under, in the manifests repository (when `history.notes`).
pub const NOTES_REF: &str = "refs/notes/metricops";
/// The trailer naming the incident a revert was for (`<workload>@<first alert's start>`).
pub const INCIDENT_TRAILER: &str = "Metricops-Incident";
/// The trailer naming the alerts (kinds, with severity) behind a revert.
pub const ALERT_TRAILER: &str = "Metricops-Alert";
/// The trailer naming the versions: `1.5.0 -> 1.4.2`.
pub const VERSIONS_TRAILER: &str = "Metricops-Versions";
const CULPRIT_TRAILER: &str = "Metricops-Culprit";
const MODE_TRAILER: &str = "Metricops-Mode";

/// A pull request, as a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrRef {
    pub number: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// One kind of alert of an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSeen {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub count: usize,
    pub starts_at: DateTime<Utc>,
}

/// The culprit commit, as the decision saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CulpritSeen {
    pub sha: String,
    pub subject: String,
    pub author: String,
    pub time: DateTime<Utc>,
}

/// One decision the engine made (and carried out), as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptDecision {
    /// When it was decided.
    pub at: DateTime<Utc>,
    pub incident: String,
    pub workload: String,
    /// The repository (shown as it may be shown: no password), and the branch.
    pub repo: String,
    pub branch: String,
    pub alerts: Vec<AlertSeen>,
    pub culprit: CulpritSeen,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The bad version (the culprit's) and the one the revert goes back to.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `ignore`, `propose` or `merge`.
    pub decision: String,
    /// An ignore reason's label (`cooldown`, `culprit_too_old`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_label: Option<String>,
    pub reason: String,
    /// Where the revert went (`proposed`, `merged`, …), when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<PrRef>,
    /// The culprit's own (merged) pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit_pr: Option<PrRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_branch: Option<String>,
    /// The revert commit as built (before a squash or merge on the forge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
}

/// A rollback's steps after its revert landed, as the follower saw them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRollback {
    pub at: DateTime<Utc>,
    pub workload: String,
    /// The revert commit as it landed on the branch.
    pub revert: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<u64>,
    pub merged_at: DateTime<Utc>,
    #[serde(default)]
    pub passed: Vec<(Step, DateTime<Utc>)>,
    /// How it ended: `confirmed`, or which step did not come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

/// A person's command on a revert PR that changed its course.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCommand {
    pub at: DateTime<Utc>,
    pub pr: u64,
    pub by: String,
    /// `approve`, `hold`, `unhold`, `cancel`, …
    pub command: String,
}

/// One record kept: in git notes on the culprit commit and/or in `state_dir/decisions/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kept {
    Decision(Box<KeptDecision>),
    Rollback(KeptRollback),
    Command(KeptCommand),
}

impl Kept {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Kept::Decision(d) => d.at,
            Kept::Rollback(r) => r.at,
            Kept::Command(c) => c.at,
        }
    }
}

/// The records of a notes blob or a log: one JSON object a line; lines that are not records (a
/// person's own note, a newer kind) are passed over.
pub fn read_kept(text: &str) -> Vec<Kept> {
    text.lines().filter_map(|l| serde_json::from_str(l.trim()).ok()).collect()
}

/// One record as a line of a notes blob or a log.
pub fn kept_line(k: &Kept) -> String {
    let mut s = serde_json::to_string(k).expect("a kept record serialises");
    s.push('\n');
    s
}

/// A metricops revert found on the branch's first-parent history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevertSeen {
    /// The commit on the branch (the revert itself, its squash, or the merge that brought it).
    pub sha: String,
    pub subject: String,
    /// When it landed on the branch (committer time of the first-parent commit).
    pub landed_at: DateTime<Utc>,
    /// When the revert was built (author time of the commit that carries the trailers).
    pub built_at: DateTime<Utc>,
    pub culprit: String,
    pub workload: Option<String>,
    pub mode: Option<String>,
    pub incident: Option<String>,
    pub alert: Option<String>,
    pub versions: Option<String>,
    /// The PR it came through, when the subject says (`… (#12)`, `Merge pull request #12 …`).
    pub pr: Option<u64>,
}

/// A first-parent commit as the walk reads it, with the messages of the other parents of a merge.
pub struct CommitRead<'a> {
    pub sha: &'a str,
    pub message: &'a str,
    pub committed: DateTime<Utc>,
    pub authored: DateTime<Utc>,
    /// A merge's other parents: their messages and author times.
    pub merged: Vec<(&'a str, DateTime<Utc>)>,
}

/// The metricops revert a first-parent commit is, or brought in (a merge of the revert branch).
pub fn read_revert(c: &CommitRead<'_>) -> Option<RevertSeen> {
    let (message, built_at) = if trailer(c.message, CULPRIT_TRAILER).is_some() {
        (c.message, c.authored)
    } else {
        c.merged.iter().find(|(m, _)| trailer(m, CULPRIT_TRAILER).is_some()).map(|(m, t)| (*m, *t))?
    };
    let subject = c.message.lines().next().unwrap_or("").to_string();
    let get = |k| trailer(message, k).map(str::to_string);
    Some(RevertSeen {
        sha: c.sha.to_string(),
        pr: pr_in_subject(&subject),
        subject,
        landed_at: c.committed,
        built_at,
        culprit: get(CULPRIT_TRAILER)?,
        workload: get(WORKLOAD_TRAILER),
        mode: get(MODE_TRAILER),
        incident: get(INCIDENT_TRAILER),
        alert: get(ALERT_TRAILER),
        versions: get(VERSIONS_TRAILER),
    })
}

/// `… (#12)` (a squash merge) or `Merge pull request #12 from …`.
fn pr_in_subject(subject: &str) -> Option<u64> {
    if let Some(rest) = subject.strip_prefix("Merge pull request #") {
        return rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
    }
    let open = subject.trim_end().strip_suffix(')')?.rsplit_once("(#")?.1;
    open.parse().ok()
}

/// When each part of an incident happened, where known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Times {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<DateTime<Utc>>,
}

impl Times {
    /// `alert → revert 2 m → merged 1 m → synced 7 s → healthy 21 s → resolved 1 m 40 s`: each
    /// known step with the time since the one before it.
    pub fn line(&self) -> String {
        let steps = [
            ("alert", self.alert),
            ("decided", self.decided.filter(|_| self.reverted.is_none())),
            ("revert", self.reverted),
            ("merged", self.merged),
            ("synced", self.synced),
            ("healthy", self.healthy),
            ("resolved", self.resolved),
        ];
        let mut out: Vec<String> = Vec::new();
        let mut last: Option<DateTime<Utc>> = None;
        for (name, at) in steps {
            let Some(at) = at else { continue };
            out.push(match last {
                Some(l) => format!("{name} {}", human(at - l)),
                None => name.to_string(),
            });
            last = Some(at);
        }
        out.join(" → ")
    }
}

/// The revert of a row, as it landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevertRef {
    pub sha: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One incident of the history: what fired, what was blamed, what was decided and why, and how it
/// went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Its place in the order (the paging cursor of the row after it).
    pub cursor: String,
    /// Its newest moment: the order is by this, newest first.
    pub time: DateTime<Utc>,
    pub workload: String,
    /// The repository, as it may be shown (empty when not known).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// Web links to the culprit and the revert commits, where the repository has a web address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert_url: Option<String>,
    /// The alerts, as kinds with severity: `CheckoutErrors (critical) ×3`.
    pub alerts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<CulpritSeen>,
    /// The culprit's sha when only a trailer names it.
    pub culprit_sha: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit_pr: Option<PrRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<String>,
    /// `ignore`, `propose`, `merge`, or `reverted` (a revert on the branch with no decision kept).
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_label: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<PrRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertRef>,
    pub times: Times,
    /// Who approved, held or cancelled it, and when: `approved by alice`.
    pub people: Vec<String>,
    /// How following the rollback ended, when it did: `confirmed`, or the step that did not come.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// The PR's state (`open`, `held`, `cancelled`, `merged`, `closed`): the forge's now when it
    /// was asked, else as last known from git and the kept records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr_state: Option<String>,
    /// Where `pr_state` comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr_state_from: Option<StateFrom>,
}

/// Where a row's PR state comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateFrom {
    /// The forge, asked a moment ago.
    Forge,
    /// Git (a landed revert) and the kept records (the last hold, unhold or cancel), as last known.
    Kept,
}

/// A revert PR's state on the forge now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveState {
    Open,
    /// Open, with the hold label (`/metricops hold`): no automatic merge.
    Held,
    /// Closed unmerged with the cancelled label (`/metricops cancel`).
    Cancelled,
    Merged,
    /// Closed unmerged some other way (by hand, or superseded).
    Closed,
}

impl LiveState {
    /// From the forge's `state` (`open`/`closed`), whether it merged, and its labels.
    pub fn of(state: &str, merged: bool, labels: &[&str]) -> LiveState {
        use super::reconcile::{CANCELLED_LABEL, HOLD_LABEL};
        match (merged, state) {
            (true, _) => LiveState::Merged,
            (false, "open") if labels.contains(&HOLD_LABEL) => LiveState::Held,
            (false, "open") => LiveState::Open,
            _ if labels.contains(&CANCELLED_LABEL) => LiveState::Cancelled,
            _ => LiveState::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LiveState::Open => "open",
            LiveState::Held => "held",
            LiveState::Cancelled => "cancelled",
            LiveState::Merged => "merged",
            LiveState::Closed => "closed",
        }
    }
}

/// A revert PR as the forge lists it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePr {
    /// The repository, as rows show it (no password).
    pub repo: String,
    pub number: u64,
    pub url: String,
    /// Its head branch (`metricops/revert-<culprit>`).
    pub head: String,
    pub title: String,
    /// The workload its body or title names, when it does.
    pub workload: Option<String>,
    pub state: LiveState,
    pub created_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub merged_at: Option<DateTime<Utc>>,
}

/// The workload a revert PR is about, from its body's heading (`## metricops: rollback of
/// `shop/checkout``) or else its title (`Revert shop/checkout: …`).
pub fn workload_of_pr(title: &str, body: Option<&str>) -> Option<String> {
    let heading = body.and_then(|b| {
        b.lines().find_map(|l| l.trim().strip_prefix("## metricops: rollback of `")?.split('`').next())
    });
    let titled = || title.strip_prefix("Revert ")?.split_once(": ").map(|(w, _)| w);
    heading.or_else(titled).map(str::trim).filter(|w| !w.is_empty() && !w.contains(' ')).map(str::to_string)
}

/// The rows with the forge's live PR states merged in: a row whose PR the forge listed takes its
/// state now (and its link, and when it merged if git does not know yet); a revert PR that no
/// row names is a row of its own. Newest first again.
pub fn merge_live(rows: &mut Vec<Row>, live: &[LivePr]) {
    // The rows by PR number (a URL names its number too): a listing of 1,000 PRs against as many
    // rows stays a lookup each.
    let mut by_number: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(p) = &r.pr {
            by_number.entry(p.number).or_default().push(i);
        }
    }
    let mut unnamed = Vec::new();
    for l in live {
        let same = |r: &Row| {
            r.pr.as_ref().is_some_and(|p| {
                if !p.url.is_empty() && !l.url.is_empty() {
                    p.url == l.url
                } else {
                    p.number == l.number && (r.repo.is_empty() || r.repo == l.repo)
                }
            })
        };
        let hit = by_number.get(&l.number).and_then(|is| is.iter().copied().find(|i| same(&rows[*i])));
        match hit.map(|i| &mut rows[i]) {
            Some(r) => {
                r.pr_state = Some(l.state.as_str().to_string());
                r.pr_state_from = Some(StateFrom::Forge);
                if let Some(p) = r.pr.as_mut().filter(|p| p.url.is_empty()) {
                    p.url = l.url.clone();
                }
                if r.repo.is_empty() {
                    r.repo = l.repo.clone();
                }
                if l.state == LiveState::Merged && r.times.merged.is_none() {
                    r.times.merged = l.merged_at;
                    if let Some(m) = l.merged_at.filter(|m| *m > r.time) {
                        let key = r.cursor.split_once('~').map(|(_, k)| k.to_string()).unwrap_or_default();
                        r.time = m;
                        r.cursor = cursor(m, &key);
                    }
                }
            }
            None => unnamed.push(live_row(l)),
        }
    }
    rows.extend(unnamed);
    rows.sort_by(|a, b| b.cursor.cmp(&a.cursor));
}

/// The row of a revert PR that no record or revert on the branch names.
fn live_row(l: &LivePr) -> Row {
    let culprit = l.head.strip_prefix(super::revert::BRANCH_PREFIX).unwrap_or("").to_string();
    let times = Times { reverted: l.created_at, merged: l.merged_at, ..Times::default() };
    let time = [l.created_at, l.closed_at, l.merged_at].into_iter().flatten().max().unwrap_or_default();
    let key = if l.url.is_empty() { format!("{}#{}", l.repo, l.number) } else { l.url.clone() };
    Row {
        cursor: cursor(time, &key),
        time,
        workload: l.workload.clone().unwrap_or_else(|| "(not named)".into()),
        repo: l.repo.clone(),
        incident: None,
        culprit_url: None,
        revert_url: None,
        alerts: Vec::new(),
        culprit: None,
        culprit_sha: culprit,
        culprit_pr: None,
        versions: None,
        decision: "proposed".into(),
        reason_label: None,
        reason: format!(
            "a metricops revert PR on the forge (\"{}\"); no decision was kept for it (made before decisions were kept, or by a replica whose log is elsewhere)",
            l.title
        ),
        delivery: None,
        pr: Some(PrRef { number: l.number, url: l.url.clone() }),
        revert: None,
        times,
        people: Vec::new(),
        rollback: None,
        pr_state: Some(l.state.as_str().to_string()),
        pr_state_from: Some(StateFrom::Forge),
    }
}

fn said(command: &str) -> &str {
    match command {
        "approve" => "approved",
        "hold" => "held",
        "unhold" => "unheld",
        "cancel" => "cancelled",
        "retry" => "retried",
        "resume" => "resumed",
        other => other,
    }
}

/// One row per incident, newest first: each kept decision (the latest record of an incident wins,
/// earlier ones fill what it lacks), the revert that landed for its culprit, the rollback's steps
/// and people's commands on its PR; a revert on the branch that no kept decision claims is a row
/// of its own (made before decisions were kept, or by another replica whose log is elsewhere).
pub fn assemble(reverts: &[RevertSeen], kept: &[Kept]) -> Vec<Row> {
    let mut decisions: BTreeMap<&str, KeptDecision> = BTreeMap::new();
    let mut ordered: Vec<&KeptDecision> =
        kept.iter().filter_map(|k| if let Kept::Decision(d) = k { Some(&**d) } else { None }).collect();
    ordered.sort_by_key(|d| d.at);
    for d in ordered {
        match decisions.get_mut(d.incident.as_str()) {
            Some(prev) => {
                let mut next = d.clone();
                next.pr = next.pr.or(prev.pr.take());
                next.revert_commit = next.revert_commit.or(prev.revert_commit.take());
                next.revert_branch = next.revert_branch.or(prev.revert_branch.take());
                next.culprit_pr = next.culprit_pr.or(prev.culprit_pr.take());
                *prev = next;
            }
            None => {
                decisions.insert(&d.incident, d.clone());
            }
        }
    }
    // The latest rollback record per landed revert; commands per PR, in order.
    let mut rollbacks: HashMap<&str, &KeptRollback> = HashMap::new();
    let mut commands: HashMap<u64, Vec<&KeptCommand>> = HashMap::new();
    for k in kept {
        match k {
            Kept::Rollback(r) => {
                let e = rollbacks.entry(r.revert.as_str()).or_insert(r);
                if r.at >= e.at {
                    *e = r;
                }
            }
            Kept::Command(c) => commands.entry(c.pr).or_default().push(c),
            Kept::Decision(_) => {}
        }
    }
    for v in commands.values_mut() {
        v.sort_by_key(|c| c.at);
    }
    // A culprit's revert goes to the first decision that made one (it is made once per culprit).
    let mut claimed: HashMap<&str, &str> = HashMap::new();
    let mut by_time: Vec<&KeptDecision> = decisions.values().collect();
    by_time.sort_by_key(|d| d.at);
    for d in &by_time {
        if d.decision != "ignore" && !claimed.contains_key(d.culprit.sha.as_str()) {
            claimed.insert(&d.culprit.sha, &d.incident);
        }
    }
    let mut rows = Vec::new();
    let mut used = vec![false; reverts.len()];
    for d in decisions.values() {
        let mine = claimed.get(d.culprit.sha.as_str()) == Some(&d.incident.as_str());
        let revert = reverts.iter().enumerate().find(|(i, r)| {
            !used[*i]
                && mine
                && (r.culprit == d.culprit.sha
                    || d.pr.as_ref().is_some_and(|p| r.pr == Some(p.number))
                    || d.revert_commit.as_deref() == Some(r.sha.as_str()))
        });
        let revert = revert.map(|(i, r)| {
            used[i] = true;
            r
        });
        let alert = d.alerts.iter().map(|a| a.starts_at).min();
        // The revert was built when this decision made it (a squash on the forge keeps no such time).
        let made = d.delivery.as_deref().is_some_and(|x| x != "already_proposed" && x != "suppressed");
        let times = Times {
            deployed: Some(d.culprit.time),
            alert,
            decided: Some(d.at),
            reverted: if made { Some(d.at) } else { revert.map(|r| r.built_at) },
            merged: revert.map(|r| r.landed_at),
            ..Times::default()
        };
        let mut times = times;
        let pr_number = d.pr.as_ref().map(|p| p.number).or(revert.and_then(|r| r.pr));
        let rollback = revert.and_then(|r| rollbacks.get(r.sha.as_str())).copied().or_else(|| {
            rollbacks
                .values()
                .find(|r| r.pr.is_some() && r.pr == pr_number && r.workload == d.workload)
                .copied()
        });
        let ended = rollback.and_then(|r| apply_rollback(&mut times, r));
        let people = pr_number
            .and_then(|n| commands.get(&n))
            .map(|cs| cs.iter().map(|c| format!("{} by {}", said(&c.command), c.by)).collect())
            .unwrap_or_default();
        let pr_state = pr_state(revert.is_some(), pr_number.and_then(|n| commands.get(&n)), d.pr.is_some());
        let time = [Some(d.at), times.merged, times.resolved].into_iter().flatten().max().unwrap_or(d.at);
        rows.push(Row {
            cursor: cursor(time, &d.incident),
            time,
            workload: d.workload.clone(),
            repo: d.repo.clone(),
            incident: Some(d.incident.clone()),
            culprit_url: None,
            revert_url: None,
            alerts: d
                .alerts
                .iter()
                .map(|a| {
                    let sev = a.severity.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
                    let n = if a.count > 1 { format!(" ×{}", a.count) } else { String::new() };
                    format!("{}{sev}{n}", a.name)
                })
                .collect(),
            culprit_sha: d.culprit.sha.clone(),
            culprit: Some(d.culprit.clone()),
            culprit_pr: d.culprit_pr.clone(),
            versions: Some(match &d.to {
                Some(to) => format!("{} -> {to}", d.from),
                None => d.from.clone(),
            }),
            decision: d.decision.clone(),
            reason_label: d.reason_label.clone(),
            reason: d.reason.clone(),
            delivery: d.delivery.clone(),
            pr: d.pr.clone().or(revert.and_then(|r| r.pr).map(|number| PrRef { number, url: String::new() })),
            revert: revert.map(|r| RevertRef {
                sha: r.sha.clone(),
                subject: r.subject.clone(),
                mode: r.mode.clone(),
            }),
            times,
            people,
            rollback: ended,
            pr_state_from: pr_state.is_some().then_some(StateFrom::Kept),
            pr_state,
        });
    }
    for (i, r) in reverts.iter().enumerate() {
        if used[i] {
            continue;
        }
        let alert = r.incident.as_deref().and_then(incident_start);
        let mut times =
            Times { alert, reverted: Some(r.built_at), merged: Some(r.landed_at), ..Times::default() };
        let rollback = rollbacks.get(r.sha.as_str()).copied();
        let ended = rollback.and_then(|k| apply_rollback(&mut times, k));
        let key = r.incident.clone().unwrap_or_else(|| r.sha.clone());
        let time = [Some(r.landed_at), times.resolved].into_iter().flatten().max().unwrap_or(r.landed_at);
        rows.push(Row {
            cursor: cursor(time, &key),
            time,
            workload: r.workload.clone().unwrap_or_else(|| "(not named)".into()),
            repo: String::new(),
            incident: r.incident.clone(),
            culprit_url: None,
            revert_url: None,
            alerts: r.alert.iter().cloned().collect(),
            culprit: None,
            culprit_sha: r.culprit.clone(),
            culprit_pr: None,
            versions: r.versions.clone(),
            decision: "reverted".into(),
            reason_label: None,
            reason: "a metricops revert on the branch; no decision was kept for it (made before decisions were kept, or by a replica whose log is elsewhere)".into(),
            delivery: Some("merged".into()),
            pr: r.pr.map(|number| PrRef { number, url: String::new() }),
            revert: Some(RevertRef { sha: r.sha.clone(), subject: r.subject.clone(), mode: r.mode.clone() }),
            people: r.pr.and_then(|n| commands.get(&n)).map(|cs| cs.iter().map(|c| format!("{} by {}", said(&c.command), c.by)).collect()).unwrap_or_default(),
            times,
            rollback: ended,
            pr_state: r.pr.map(|_| "merged".to_string()),
            pr_state_from: r.pr.map(|_| StateFrom::Kept),
        });
    }
    rows.sort_by(|a, b| b.cursor.cmp(&a.cursor));
    rows
}

/// A revert PR's state as last known: merged once its revert is on the branch; else what the last
/// `hold` / `unhold` / `cancel` on it left; else open.
fn pr_state(landed: bool, commands: Option<&Vec<&KeptCommand>>, has_pr: bool) -> Option<String> {
    if landed {
        return Some("merged".into());
    }
    let last = commands
        .and_then(|cs| cs.iter().rev().find(|c| matches!(c.command.as_str(), "hold" | "unhold" | "cancel")));
    match last.map(|c| c.command.as_str()) {
        Some("cancel") => Some("cancelled".into()),
        Some("hold") => Some("held".into()),
        _ => has_pr.then(|| "open".into()),
    }
}

/// The steps a rollback passed, into the times; how it ended.
fn apply_rollback(times: &mut Times, r: &KeptRollback) -> Option<String> {
    times.merged = times.merged.or(Some(r.merged_at));
    for (step, at) in &r.passed {
        let slot = match step {
            Step::Synced => &mut times.synced,
            Step::Healthy => &mut times.healthy,
            Step::Resolved => &mut times.resolved,
        };
        *slot = Some(*at);
    }
    r.ended.clone()
}

/// An incident id's start: `shop/checkout@20261125T100000Z`.
fn incident_start(id: &str) -> Option<DateTime<Utc>> {
    let (_, at) = id.rsplit_once('@')?;
    chrono::NaiveDateTime::parse_from_str(at, "%Y%m%dT%H%M%SZ").ok().map(|t| t.and_utc())
}

/// A row's place: newer rows sort after older ones as text (fixed-width milliseconds, then the key).
fn cursor(time: DateTime<Utc>, key: &str) -> String {
    format!("{:015}~{key}", time.timestamp_millis().max(0))
}

/// Which rows to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only rows whose newest moment is at or after this.
    pub since: Option<DateTime<Utc>>,
    pub workload: Option<String>,
}

/// One page of rows, and the cursor of the next (older) page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page {
    pub rows: Vec<Row>,
    /// Rows matching the filter, on every page.
    pub total: usize,
    /// Give as `before` for the next page; none on the last.
    pub next: Option<String>,
}

/// The rows the filter keeps, older than `before` (a cursor from a previous page), at most `limit`.
pub fn page(rows: &[Row], filter: &Filter, before: Option<&str>, limit: usize) -> Page {
    let keep = |r: &&Row| {
        filter.since.is_none_or(|s| r.time >= s) && filter.workload.as_deref().is_none_or(|w| r.workload == w)
    };
    let matching: Vec<&Row> = rows.iter().filter(keep).collect();
    let total = matching.len();
    let after: Vec<&Row> =
        matching.into_iter().filter(|r| before.is_none_or(|b| r.cursor.as_str() < b)).collect();
    let limit = limit.max(1);
    let next = (after.len() > limit).then(|| after[limit - 1].cursor.clone());
    Page { rows: after.into_iter().take(limit).cloned().collect(), total, next }
}

/// One moment of a workload's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `deploy`, `alert`, `decision`, `revert`, `merged`, `synced`, `healthy`, `resolved`.
    pub kind: &'static str,
    pub text: String,
}

/// A workload's moments on a page, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub workload: String,
    pub events: Vec<Event>,
}

/// The timelines of the rows' workloads (deploys, alerts, decisions, reverts, syncs), in the order
/// the workloads first appear on the page.
pub fn timelines(rows: &[Row]) -> Vec<Timeline> {
    let mut out: Vec<Timeline> = Vec::new();
    for r in rows {
        let at = match out.iter().position(|t| t.workload == r.workload) {
            Some(i) => i,
            None => {
                out.push(Timeline { workload: r.workload.clone(), events: Vec::new() });
                out.len() - 1
            }
        };
        let ev = &mut out[at].events;
        let t = &r.times;
        let bad = r.versions.as_deref().map(|v| v.split(" -> ").next().unwrap_or(v)).unwrap_or("");
        let short = &r.culprit_sha[..r.culprit_sha.len().min(12)];
        let mut push = |at: Option<DateTime<Utc>>, kind: &'static str, text: String| {
            if let Some(at) = at
                && !ev.iter().any(|e| e.at == at && e.kind == kind && e.text == text)
            {
                ev.push(Event { at, kind, text });
            }
        };
        let subject = r.culprit.as_ref().map(|c| format!(": {}", c.subject)).unwrap_or_default();
        push(t.deployed, "deploy", format!("{bad} deployed by {short}{subject}"));
        push(t.alert, "alert", r.alerts.join(", "));
        let reason = match &r.reason_label {
            Some(l) => format!("ignore ({l}): {}", r.reason),
            None => r.decision.clone(),
        };
        push(t.decided, "decision", reason);
        let what = r.versions.as_deref().map(|v| format!("revert {v}")).unwrap_or_else(|| "revert".into());
        push(t.reverted, "revert", what);
        let landed = r.revert.as_ref().map(|v| v.sha[..v.sha.len().min(12)].to_string()).unwrap_or_default();
        push(t.merged, "merged", format!("landed {landed}"));
        push(t.synced, "synced", "the deployer applied the revert".into());
        push(t.healthy, "healthy", "the workload is healthy".into());
        push(t.resolved, "resolved", "the alert resolved".into());
    }
    for t in &mut out {
        // Newest first; at the same moment, the later step of the flow first.
        t.events.reverse();
        t.events.sort_by_key(|e| std::cmp::Reverse(e.at));
    }
    out
}

/// The page's template (`templates/history.html`, minijinja; HTML is escaped).
pub const PAGE_TEMPLATE: &str = include_str!("../../templates/history.html");

/// How a page of `/ui` was asked for, to show it and to build its links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    pub workload: Option<String>,
    /// As written (`30d`).
    pub since: Option<String>,
    pub limit: Option<usize>,
}

/// A query string part, percent-encoded.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?workload=…&since=…&before=…`, with what was asked.
pub fn link_to(path: &str, asked: &Asked, before: Option<&str>) -> String {
    let mut q = Vec::new();
    if let Some(w) = &asked.workload {
        q.push(format!("workload={}", enc(w)));
    }
    if let Some(s) = &asked.since {
        q.push(format!("since={}", enc(s)));
    }
    if let Some(l) = asked.limit {
        q.push(format!("limit={l}"));
    }
    if let Some(b) = before {
        q.push(format!("before={}", enc(b)));
    }
    if q.is_empty() { path.to_string() } else { format!("{path}?{}", q.join("&")) }
}

/// The page of `/ui`: the incidents' table and the workloads' timelines, as HTML.
pub fn render_page(
    p: &Page,
    asked: &Asked,
    paged: bool,
    notices: &[String],
    now: DateTime<Utc>,
) -> Result<String, minijinja::Error> {
    let short = |x: &str| x[..x.len().min(12)].to_string();
    let when = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let rows: Vec<serde_json::Value> = p
        .rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("a row serialises");
            let extra = serde_json::json!({
                "anchor": format!("i-{}", r.cursor.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
                "time_text": when(r.time),
                "culprit_short": short(&r.culprit_sha),
                "revert_short": r.revert.as_ref().map(|x| short(&x.sha)),
                "times_line": r.times.line(),
            });
            if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                m.extend(e);
                if let Some(c) = m.get_mut("culprit").and_then(|c| c.as_object_mut()) {
                    let author = c.get("author").and_then(|a| a.as_str()).unwrap_or("").to_string();
                    let name = author.split(" <").next().unwrap_or(&author).to_string();
                    c.insert("author_name".into(), name.into());
                }
            }
            v
        })
        .collect();
    let timelines: Vec<serde_json::Value> = timelines(&p.rows)
        .iter()
        .map(|t| {
            serde_json::json!({
                "workload": t.workload,
                "events": t.events.iter().map(|e| serde_json::json!({"at_text": when(e.at), "kind": e.kind, "text": e.text})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ctx = serde_json::json!({
        "base": "/ui",
        "total": p.total,
        "generated": when(now),
        "filter": {"workload": asked.workload, "since": asked.since},
        "rows": rows,
        "timelines": timelines,
        "next_url": p.next.as_deref().map(|n| link_to("/ui", asked, Some(n))),
        "newest_url": paged.then(|| link_to("/ui", asked, None)),
        "api_url": link_to("/api/history", asked, None),
        "notices": notices,
    });
    let mut env = minijinja::Environment::new();
    env.add_template("history.html", PAGE_TEMPLATE)?;
    env.get_template("history.html")?.render(minijinja::value::Serde(&ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_alerts_say_and_links_pages_and_commits() {
        let mut kept = vec![decision("shop/checkout@a", "2026-01-01T10:02:00Z", "c1", "ignore", None)];
        if let Kept::Decision(d) = &mut kept[0] {
            d.alerts[0].name = "<script>alert(1)</script>".into();
        }
        kept.push(decision("shop/checkout@b", "2026-01-01T11:02:00Z", "c2", "merge", Some("merged")));
        let mut rows = assemble(&[], &kept);
        rows[0].culprit_url = Some("https://git.example/shop/commit/c2".into());
        let asked = Asked { workload: Some("shop/checkout".into()), since: None, limit: Some(1) };
        let p = page(&rows, &Filter { since: None, workload: asked.workload.clone() }, None, 1);
        let html = render_page(&p, &asked, false, &[], t("2026-01-02T00:00:00Z")).unwrap();
        let html = html.replace("&#x2f;", "/").replace("&amp;", "&");
        assert!(html.contains("href=\"https://gh.example/shop/pull/12\""), "{html}");
        assert!(html.contains("href=\"https://git.example/shop/commit/c2\""), "{html}");
        assert!(html.contains("/ui?workload=shop%2Fcheckout&limit=1&before="), "{html}");
        let p2 = page(&rows, &Filter::default(), p.next.as_deref(), 1);
        let html = render_page(&p2, &asked, true, &[], t("2026-01-02T00:00:00Z")).unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "alert text is escaped");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("in cooldown"));
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn decision(incident: &str, at: &str, culprit: &str, decision: &str, delivery: Option<&str>) -> Kept {
        Kept::Decision(Box::new(KeptDecision {
            at: t(at),
            incident: incident.into(),
            workload: incident.split('@').next().unwrap().into(),
            repo: "https://git.example/shop.git".into(),
            branch: "main".into(),
            alerts: vec![AlertSeen {
                name: "CheckoutErrors".into(),
                severity: Some("critical".into()),
                count: 2,
                starts_at: t("2026-01-01T10:00:00Z"),
            }],
            culprit: CulpritSeen {
                sha: culprit.into(),
                subject: "deploy checkout 1.5.0".into(),
                author: "Dana <dana@example.com>".into(),
                time: t("2026-01-01T09:55:00Z"),
            },
            image: Some("ghcr.io/shop/checkout".into()),
            from: "1.5.0".into(),
            to: Some("1.4.2".into()),
            decision: decision.into(),
            reason_label: (decision == "ignore").then(|| "cooldown".to_string()),
            reason: if decision == "ignore" { "in cooldown".into() } else { "policy says merge".into() },
            delivery: delivery.map(str::to_string),
            pr: delivery.map(|_| PrRef { number: 12, url: "https://gh.example/shop/pull/12".into() }),
            culprit_pr: None,
            revert_branch: None,
            revert_commit: None,
        }))
    }

    fn revert(sha: &str, culprit: &str, landed: &str, subject: &str) -> RevertSeen {
        RevertSeen {
            sha: sha.into(),
            subject: subject.into(),
            landed_at: t(landed),
            built_at: t(landed) - chrono::Duration::minutes(1),
            culprit: culprit.into(),
            workload: Some("shop/checkout".into()),
            mode: Some("commit".into()),
            incident: None,
            alert: None,
            versions: Some("1.5.0 -> 1.4.2".into()),
            pr: pr_in_subject(subject),
        }
    }

    #[test]
    fn reverts_are_read_from_trailers_also_through_a_merge_and_prs_from_subjects() {
        let msg = "Revert \"deploy\" (#12)\n\nThis reverts commit c1.\n\nMetricops-Culprit: c1\nMetricops-Mode: commit\nMetricops-Workload: shop/checkout\nMetricops-Incident: shop/checkout@20260101T100000Z\nMetricops-Versions: 1.5.0 -> 1.4.2\n";
        let c = CommitRead {
            sha: "r1",
            message: msg,
            committed: t("2026-01-01T10:05:00Z"),
            authored: t("2026-01-01T10:01:00Z"),
            merged: vec![],
        };
        let r = read_revert(&c).unwrap();
        assert_eq!((r.culprit.as_str(), r.pr, r.built_at), ("c1", Some(12), t("2026-01-01T10:01:00Z")));
        assert_eq!(r.workload.as_deref(), Some("shop/checkout"));
        assert_eq!(r.versions.as_deref(), Some("1.5.0 -> 1.4.2"));
        let merge = CommitRead {
            sha: "m1",
            message: "Merge pull request #7 from shop/metricops/revert-c1\n",
            committed: t("2026-01-01T10:09:00Z"),
            authored: t("2026-01-01T10:09:00Z"),
            merged: vec![(msg, t("2026-01-01T10:02:00Z"))],
        };
        let r = read_revert(&merge).unwrap();
        assert_eq!((r.sha.as_str(), r.pr, r.built_at), ("m1", Some(7), t("2026-01-01T10:02:00Z")));
        let plain = CommitRead { message: "deploy x\n", merged: vec![], ..c };
        assert_eq!(read_revert(&plain), None);
        assert_eq!(pr_in_subject("fix (#x)"), None);
    }

    #[test]
    fn kept_records_round_trip_as_lines_and_foreign_lines_are_passed_over() {
        let d = decision("shop/checkout@1", "2026-01-01T10:00:00Z", "c1", "merge", Some("merged"));
        let text = format!("a person's own note\n{}{{\"kind\":\"future\"}}\n", kept_line(&d));
        assert_eq!(read_kept(&text), vec![d]);
    }

    #[test]
    fn a_decision_gets_its_culprits_revert_rollback_and_people_and_an_unclaimed_revert_is_its_own_row() {
        let kept = vec![
            decision("shop/checkout@a", "2026-01-01T10:02:00Z", "c1", "propose", Some("proposed")),
            // The same incident again (a retried delivery): one row, the latest record.
            decision("shop/checkout@a", "2026-01-01T10:03:00Z", "c1", "propose", Some("already_proposed")),
            decision("shop/checkout@b", "2026-01-01T11:00:00Z", "c1", "ignore", None),
            Kept::Command(KeptCommand {
                at: t("2026-01-01T10:04:00Z"),
                pr: 12,
                by: "alice".into(),
                command: "approve".into(),
            }),
            Kept::Rollback(KeptRollback {
                at: t("2026-01-01T10:10:00Z"),
                workload: "shop/checkout".into(),
                revert: "r1".into(),
                pr: Some(12),
                merged_at: t("2026-01-01T10:05:00Z"),
                passed: vec![
                    (Step::Synced, t("2026-01-01T10:05:07Z")),
                    (Step::Healthy, t("2026-01-01T10:05:28Z")),
                ],
                ended: None,
            }),
        ];
        let reverts = vec![
            revert("r1", "c1", "2026-01-01T10:05:00Z", "Revert \"deploy checkout 1.5.0\" (#12)"),
            revert("r0", "c0", "2025-12-31T08:00:00Z", "Revert \"deploy checkout 1.3.0\""),
        ];
        let rows = assemble(&reverts, &kept);
        let summary: Vec<(&str, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.decision.as_str(), r.incident.as_deref(), r.revert.as_ref().map(|v| v.sha.as_str())))
            .collect();
        assert_eq!(
            summary,
            [
                ("ignore", Some("shop/checkout@b"), None),
                ("propose", Some("shop/checkout@a"), Some("r1")),
                ("reverted", None, Some("r0")),
            ]
        );
        let a = &rows[1];
        assert_eq!(a.delivery.as_deref(), Some("already_proposed"), "the latest record wins");
        assert_eq!(a.pr.as_ref().map(|p| p.number), Some(12));
        assert_eq!(a.people, ["approved by alice"]);
        assert_eq!(a.times.synced, Some(t("2026-01-01T10:05:07Z")));
        assert_eq!(a.times.line(), "alert → revert 4 m → merged 1 m → synced 7 s → healthy 21 s");
        assert_eq!(rows[0].reason_label.as_deref(), Some("cooldown"));
        assert_eq!(rows[0].times.line(), "alert → decided 1 h");
        assert!(rows[2].reason.contains("no decision was kept"), "{}", rows[2].reason);
        assert_eq!(a.pr_state.as_deref(), Some("merged"));
        assert_eq!(rows[0].pr_state, None, "an ignore has no PR");
        // A proposed revert a person held, then one cancelled: their PRs' states as last known.
        let held = [
            decision("shop/checkout@h", "2026-01-03T10:00:00Z", "c9", "propose", Some("proposed")),
            Kept::Command(KeptCommand {
                at: t("2026-01-03T10:01:00Z"),
                pr: 12,
                by: "bob".into(),
                command: "hold".into(),
            }),
        ];
        let rows = assemble(&[], &held);
        assert_eq!(
            (rows[0].pr_state.as_deref(), rows[0].people.as_slice()),
            (Some("held"), &["held by bob".to_string()][..])
        );
        let mut cancelled = held.to_vec();
        cancelled.push(Kept::Command(KeptCommand {
            at: t("2026-01-03T10:02:00Z"),
            pr: 12,
            by: "dana".into(),
            command: "cancel".into(),
        }));
        assert_eq!(assemble(&[], &cancelled)[0].pr_state.as_deref(), Some("cancelled"));
        let open = [decision("shop/checkout@o", "2026-01-03T10:00:00Z", "c8", "propose", Some("proposed"))];
        assert_eq!(assemble(&[], &open)[0].pr_state.as_deref(), Some("open"));
    }

    fn live(number: u64, state: LiveState, head: &str) -> LivePr {
        LivePr {
            repo: "https://git.example/shop.git".into(),
            number,
            url: format!("https://gh.example/shop/pull/{number}"),
            head: head.into(),
            title: "Revert shop/cart: cart 2.0.0 → 1.9.0".into(),
            workload: Some("shop/cart".into()),
            state,
            created_at: Some(t("2026-01-04T10:00:00Z")),
            closed_at: None,
            merged_at: None,
        }
    }

    #[test]
    fn a_prs_live_state_reads_its_state_its_merge_and_the_hold_and_cancel_labels() {
        use super::super::reconcile::{CANCELLED_LABEL, HOLD_LABEL};
        assert_eq!(LiveState::of("open", false, &[]), LiveState::Open);
        assert_eq!(LiveState::of("open", false, &["bug", HOLD_LABEL]), LiveState::Held);
        assert_eq!(LiveState::of("closed", false, &[CANCELLED_LABEL]), LiveState::Cancelled);
        assert_eq!(LiveState::of("closed", true, &[HOLD_LABEL]), LiveState::Merged);
        assert_eq!(LiveState::of("closed", false, &[HOLD_LABEL]), LiveState::Closed);
        assert_eq!(
            workload_of_pr("x", Some("## metricops: rollback of `shop/checkout`\n\n**Why:** …")).as_deref(),
            Some("shop/checkout")
        );
        assert_eq!(
            workload_of_pr("Revert shop/cart: cart 2.0.0 → 1.9.0", None).as_deref(),
            Some("shop/cart")
        );
        assert_eq!(workload_of_pr("Bump things", Some("hello")), None);
    }

    #[test]
    fn the_forges_states_override_what_was_last_known_and_unnamed_prs_get_rows() {
        // Kept: PR 12 held by bob (the forge says it was unheld by hand since: open now), and a
        // revert PR 7 on the branch that the trailers name but whose URL git does not know.
        let kept = vec![
            decision("shop/checkout@h", "2026-01-03T10:00:00Z", "c9", "propose", Some("proposed")),
            Kept::Command(KeptCommand {
                at: t("2026-01-03T10:01:00Z"),
                pr: 12,
                by: "bob".into(),
                command: "hold".into(),
            }),
        ];
        let mut landed = revert("r7", "c7", "2026-01-02T10:00:00Z", "Revert \"deploy\" (#7)");
        landed.workload = Some("shop/search".into());
        let mut rows = assemble(&[landed], &kept);
        rows.iter_mut().for_each(|r| r.repo = "https://git.example/shop.git".into());
        assert_eq!(
            (rows[0].pr_state.as_deref(), rows[0].pr_state_from),
            (Some("held"), Some(StateFrom::Kept))
        );
        let mut merged = live(7, LiveState::Merged, "metricops/revert-c7c7c7c7c7c7");
        merged.merged_at = Some(t("2026-01-02T09:59:00Z"));
        let mut cancelled = live(30, LiveState::Cancelled, "metricops/revert-aaaaaaaaaaaa");
        cancelled.closed_at = Some(t("2026-01-05T08:00:00Z"));
        let forge = [
            live(12, LiveState::Open, "metricops/revert-c9"),
            merged,
            cancelled,
            live(31, LiveState::Held, "metricops/revert-bbbbbbbbbbbb"),
        ];
        merge_live(&mut rows, &forge);
        let seen: Vec<String> = rows
            .iter()
            .map(|r| {
                let from = r.pr_state_from.map(|f| format!("{f:?}")).unwrap_or_default();
                let n = r.pr.as_ref().map(|p| p.number).unwrap_or_default();
                format!("#{n} {} {} {from}", r.decision, r.pr_state.as_deref().unwrap_or("-"))
            })
            .collect();
        assert_eq!(
            seen,
            [
                "#30 proposed cancelled Forge",
                "#31 proposed held Forge",
                "#12 propose open Forge",
                "#7 reverted merged Forge",
            ],
            "newest first; the forge's word wins"
        );
        assert_eq!(rows[0].workload, "shop/cart", "named by the PR");
        assert_eq!(rows[0].culprit_sha, "aaaaaaaaaaaa", "from the branch");
        assert_eq!(rows[0].time, t("2026-01-05T08:00:00Z"), "its newest moment: the close");
        assert_eq!(rows[2].people, ["held by bob"], "who held it stays said");
        assert_eq!(rows[3].pr.as_ref().unwrap().url, "https://gh.example/shop/pull/7", "the link filled in");
        assert_eq!(rows[3].times.merged, Some(t("2026-01-02T10:00:00Z")), "git's landing is kept");
        // A PR of another repository with the same number is not this one's.
        let mut other = live(12, LiveState::Closed, "metricops/revert-c9");
        other.url = "https://gh.example/other/pull/12".into();
        merge_live(&mut rows, &[other]);
        assert_eq!(rows.iter().filter(|r| r.pr_state.as_deref() == Some("closed")).count(), 1);
        assert_eq!(rows.iter().find(|r| r.decision == "propose").unwrap().pr_state.as_deref(), Some("open"));
        // A merged PR git does not have yet (the mirror not fetched since) takes the forge's time.
        let mut rows = assemble(&[], &kept);
        let mut m = live(12, LiveState::Merged, "metricops/revert-c9");
        m.merged_at = Some(t("2026-01-06T00:00:00Z"));
        merge_live(&mut rows, &[m]);
        assert_eq!(
            (rows[0].times.merged, rows[0].time),
            (Some(t("2026-01-06T00:00:00Z")), t("2026-01-06T00:00:00Z"))
        );
    }

    #[test]
    fn pages_follow_the_cursor_and_filters_keep_their_rows() {
        let kept: Vec<Kept> = (0..5)
            .map(|i| {
                let w = if i % 2 == 0 { "shop/checkout" } else { "shop/cart" };
                decision(
                    &format!("{w}@{i}"),
                    &format!("2026-01-0{}T10:00:00Z", i + 1),
                    &format!("c{i}"),
                    "ignore",
                    None,
                )
            })
            .collect();
        let rows = assemble(&[], &kept);
        let p1 = page(&rows, &Filter::default(), None, 2);
        assert_eq!(p1.total, 5);
        assert_eq!(
            p1.rows.iter().map(|r| r.incident.clone().unwrap()).collect::<Vec<_>>(),
            ["shop/checkout@4", "shop/cart@3"]
        );
        let p2 = page(&rows, &Filter::default(), p1.next.as_deref(), 2);
        let p3 = page(&rows, &Filter::default(), p2.next.as_deref(), 2);
        assert_eq!(p3.rows.len(), 1);
        assert_eq!(p3.next, None);
        let mut seen: Vec<String> =
            [p1, p2, p3].iter().flat_map(|p| p.rows.iter().map(|r| r.cursor.clone())).collect();
        seen.dedup();
        assert_eq!(seen.len(), 5, "every row once");
        let only = Filter { since: Some(t("2026-01-03T00:00:00Z")), workload: Some("shop/checkout".into()) };
        let p = page(&rows, &only, None, 10);
        assert_eq!(
            p.rows.iter().map(|r| r.incident.clone().unwrap()).collect::<Vec<_>>(),
            ["shop/checkout@4", "shop/checkout@2"]
        );
        assert_eq!(p.total, 2);
    }

    #[test]
    fn a_timeline_per_workload_tells_deploys_alerts_decisions_and_reverts_newest_first() {
        let kept = vec![decision("shop/checkout@a", "2026-01-01T10:02:00Z", "c1", "merge", Some("merged"))];
        let reverts = vec![revert("r1", "c1", "2026-01-01T10:05:00Z", "Revert x")];
        let tl = timelines(&assemble(&reverts, &kept));
        assert_eq!(tl.len(), 1);
        let kinds: Vec<&str> = tl[0].events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["merged", "revert", "decision", "alert", "deploy"]);
        assert_eq!(tl[0].events[4].text, "1.5.0 deployed by c1: deploy checkout 1.5.0");
    }
}
