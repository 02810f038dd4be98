//! The rollback history, the shell around `domain::history`: the decisions log in
//! `state_dir/decisions/` (one file per record, synced to disk before it counts, like the delivery
//! journal), the git notes of `history.notes`, the reverts read from each repository's mirror
//! (cached per branch tip, so a page of a 100k-commit history is read once and then only what is
//! new), and what an outcome of the engine is kept as.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::adapters::git::GitRepo;
use crate::config::Config;
use crate::domain::alert::summarise;
use crate::domain::culprit::CommitSha;
use crate::domain::history::{AlertSeen, CulpritSeen, Kept, KeptDecision, PrRef, RevertSeen, Row, assemble};
use crate::domain::policy::Decision;
use crate::pipeline::Outcome;

/// The decisions log: `state_dir/decisions/<time>-<pid>-<n>.json`, one record a file.
pub struct DecisionLog {
    dir: PathBuf,
}

/// Records written by this process (in file names, after the time).
static NEXT: AtomicU64 = AtomicU64::new(0);

impl DecisionLog {
    pub fn new(state_dir: &Path) -> DecisionLog {
        DecisionLog { dir: state_dir.join("decisions") }
    }

    /// Writes a record durably: a temporary file, synced, renamed into place, the directory synced.
    pub fn record(&self, k: &Kept) -> std::io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!("{nanos:020}-{}-{n:06}.json", std::process::id());
        let (path, tmp) = (self.dir.join(&name), self.dir.join(format!("{name}.tmp")));
        let mut f = File::create(&tmp)?;
        f.write_all(crate::domain::history::kept_line(k).as_bytes()).and_then(|()| f.sync_all())?;
        fs::rename(&tmp, &path)?;
        File::open(&self.dir).and_then(|d| d.sync_all())?;
        Ok(path)
    }

    /// Every record there (none when the directory is missing); unreadable files are passed over.
    pub fn read(&self) -> Vec<Kept> {
        let Ok(dir) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().ends_with(".json")
                && let Ok(text) = fs::read_to_string(e.path())
            {
                out.extend(crate::domain::history::read_kept(&text));
            }
        }
        out
    }
}

/// What an outcome of the engine is kept as.
pub fn kept_decision(o: &Outcome, now: DateTime<Utc>) -> KeptDecision {
    let (groups, _) = summarise(&o.incident.alerts, 20);
    let reason = match &o.decision {
        Decision::Ignore(r) => r.to_string(),
        Decision::Merge => "policy says merge: the revert lands on the branch at once".into(),
        Decision::Propose => "policy says propose: a person merges it".into(),
    };
    let pr = o.delivery.as_ref().and_then(|d| d.pr()).map(|p| PrRef { number: p.number, url: p.url.clone() });
    KeptDecision {
        at: now,
        incident: o.incident.id.clone(),
        workload: o.workload.clone(),
        repo: o.repo_url.clone(),
        branch: o.branch.clone(),
        alerts: groups
            .iter()
            .map(|g| AlertSeen {
                name: g.first.name.clone(),
                severity: g.first.severity.clone(),
                count: g.count,
                starts_at: g.earliest,
            })
            .collect(),
        culprit: CulpritSeen {
            sha: o.culprit.commit.sha.0.clone(),
            subject: o.culprit.commit.summary.clone(),
            author: format!("{} <{}>", o.culprit.commit.author, o.culprit.commit.author_email),
            time: o.culprit.commit.time.with_timezone(&Utc),
        },
        image: o.culprit.image.clone(),
        from: o.culprit.version.to_string(),
        to: o.culprit.previous.as_ref().map(|v| v.to_string()),
        decision: match &o.decision {
            Decision::Ignore(_) => "ignore",
            Decision::Propose => "propose",
            Decision::Merge => "merge",
        }
        .to_string(),
        reason_label: match &o.decision {
            Decision::Ignore(r) => Some(r.label().to_string()),
            _ => None,
        },
        reason,
        delivery: o.delivery.as_ref().map(|d| d.label().to_string()),
        pr,
        culprit_pr: o.original_pr.as_ref().map(|p| PrRef { number: p.number, url: p.html_url.clone() }),
        revert_branch: o.revert.as_ref().map(|r| r.branch.clone()),
        revert_commit: o.revert.as_ref().map(|r| r.commit.0.clone()),
    }
}

/// Records read from several places (the log and the notes hold the same ones), each once.
pub fn dedup(kept: Vec<Kept>) -> Vec<Kept> {
    let mut seen = HashSet::new();
    kept.into_iter().filter(|k| seen.insert(crate::domain::history::kept_line(k))).collect()
}

/// A web link to a commit, from the repository's URL: `https://host/owner/name/commit/<sha>`
/// (GitHub, GitLab, Gitea and the like); none for a path or an ssh URL. Credentials never appear.
pub fn commit_link(repo_url: &str, sha: &str) -> Option<String> {
    let (scheme, rest) = repo_url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    Some(format!("{scheme}://{rest}/commit/{sha}"))
}

/// The reverts scanned per (mirror, branch), with the tip they were scanned at.
#[derive(Default)]
pub struct RevertCache {
    scanned: Mutex<HashMap<(PathBuf, String), Scanned<RevertSeen>>>,
    /// The notes read per mirror, with the notes commit they were read at.
    notes: Mutex<HashMap<PathBuf, Scanned<Kept>>>,
}

/// What was read, and at which commit.
type Scanned<T> = (CommitSha, std::sync::Arc<Vec<T>>);

impl RevertCache {
    /// The records in the notes of the repository at `path`, read again only when its notes ref moved.
    pub fn notes(&self, path: &Path) -> anyhow::Result<std::sync::Arc<Vec<Kept>>> {
        let repo = GitRepo::open(path)?;
        let Ok(at) = repo.resolve(crate::domain::history::NOTES_REF) else { return Ok(Default::default()) };
        if let Some((was, list)) = self.notes.lock().expect("notes cache lock").get(path)
            && *was == at
        {
            return Ok(list.clone());
        }
        let list = std::sync::Arc::new(repo.kept_notes()?);
        self.notes.lock().expect("notes cache lock").insert(path.to_path_buf(), (at, list.clone()));
        Ok(list)
    }

    /// The reverts on `branch` (a ref name) of the repository at `path`: the cached list when the
    /// tip has not moved, else only the new commits walked (all of them after a force push).
    pub fn reverts(&self, path: &Path, branch: &str) -> anyhow::Result<std::sync::Arc<Vec<RevertSeen>>> {
        let repo = GitRepo::open(path)?;
        let Ok(tip) = repo.resolve(branch) else { return Ok(Default::default()) };
        let key = (path.to_path_buf(), branch.to_string());
        let before = self.scanned.lock().expect("revert cache lock").get(&key).cloned();
        if let Some((at, list)) = &before
            && *at == tip
        {
            return Ok(list.clone());
        }
        let (new, met) = repo.reverts(&tip, before.as_ref().map(|(at, _)| at), None)?;
        let list = match (&before, met) {
            (Some((_, old)), true) => new.into_iter().chain(old.iter().cloned()).collect(),
            _ => new,
        };
        let list = std::sync::Arc::new(list);
        self.scanned.lock().expect("revert cache lock").insert(key, (tip, list.clone()));
        Ok(list)
    }
}

/// The history `serve` shows: every configured repository's mirror (its branches as last fetched,
/// its notes), and this replica's decisions log.
pub fn gather(config: &Config, cache: &RevertCache) -> anyhow::Result<Vec<Row>> {
    let state = config.state_dir();
    let mut reverts = Vec::new();
    let mut kept = DecisionLog::new(&state).read();
    let mut links: HashMap<String, String> = HashMap::new();
    for repo in &config.repos {
        let path = state.join("mirrors").join(format!("{}.git", repo.name));
        if !path.join("HEAD").exists() {
            continue;
        }
        let mut branches: Vec<String> = config
            .workloads
            .iter()
            .filter(|w| w.repo.value == repo.name)
            .map(|w| w.branch(repo))
            .chain([repo.branch.clone()])
            .collect();
        branches.sort();
        branches.dedup();
        for b in branches {
            let found = cache.reverts(&path, &format!("refs/remotes/origin/{b}"))?;
            for r in found.iter() {
                links.insert(r.sha.clone(), repo.url.clone());
            }
            reverts.extend(found.iter().cloned());
        }
        kept.extend(cache.notes(&path)?.iter().cloned());
    }
    let mut rows = assemble(&reverts, &dedup(kept));
    link(&mut rows, &links);
    Ok(rows)
}

/// Each row's repository (for a revert with no decision kept: the one it was found in) and the web
/// links to its commits.
pub fn link(rows: &mut [Row], found_in: &HashMap<String, String>) {
    for r in rows {
        if r.repo.is_empty()
            && let Some(url) = r.revert.as_ref().and_then(|v| found_in.get(&v.sha))
        {
            r.repo = crate::domain::redact::redact_url(url);
        }
        // On a forge, commits are shown where its PRs are (`…/owner/name/pull/N` → `…/commit/SHA`).
        let web = [r.pr.as_ref(), r.culprit_pr.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|p| p.url.rsplit_once("/pull/").map(|(b, _)| b.to_string()));
        let to = |sha: &str| match &web {
            Some(b) => Some(format!("{b}/commit/{sha}")),
            None => commit_link(&r.repo, sha),
        };
        r.culprit_url = to(&r.culprit_sha);
        r.revert_url = r.revert.as_ref().and_then(|v| to(&v.sha));
    }
}

/// `metricops history`: the branch's reverts and the kept decisions, newest first.
pub fn run_cli(a: &crate::cli::HistoryArgs) -> anyhow::Result<()> {
    use crate::domain::history::{Filter, page};
    let since = match &a.since {
        Some(s) => {
            let d = crate::domain::schedule::parse_duration(s)
                .with_context(|| format!("--since {s:?} is not a duration: write it like 30d, 12h or 90m"))?;
            Some(Utc::now() - d)
        }
        None => None,
    };
    let repo = GitRepo::open(&a.repo)?;
    let rev = a.branch.clone().unwrap_or_else(|| "HEAD".into());
    let tip = repo.resolve(&rev).or_else(|_| repo.resolve(&format!("refs/remotes/origin/{rev}")))?;
    let (reverts, _) = repo.reverts(&tip, None, since)?;
    let mut kept = repo.kept_notes()?;
    if let Some(dir) = &a.state_dir {
        kept.extend(DecisionLog::new(dir).read());
    }
    let mut rows = assemble(&reverts, &dedup(kept));
    let url = repo.repo.find_remote("origin").ok().and_then(|r| r.url().ok().map(str::to_string));
    let found_in: HashMap<String, String> = match &url {
        Some(u) => reverts.iter().map(|r| (r.sha.clone(), u.clone())).collect(),
        None => HashMap::new(),
    };
    link(&mut rows, &found_in);
    let filter = Filter { since, workload: a.workload.clone() };
    let p = page(&rows, &filter, None, a.limit.unwrap_or(usize::MAX));
    if a.json {
        println!("{}", serde_json::to_string(&p)?);
        return Ok(());
    }
    if p.rows.is_empty() {
        println!("no metricops reverts or kept decisions on {rev} (with these filters)");
    }
    for r in &p.rows {
        print!("{}", row_text(r));
    }
    Ok(())
}

/// One row as text, for a terminal.
pub fn row_text(r: &Row) -> String {
    let mut s = format!(
        "{}  {}  {}{}  {}\n",
        r.time.format("%Y-%m-%d %H:%M:%SZ"),
        r.workload,
        r.decision,
        r.delivery.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(),
        if r.alerts.is_empty() { "(alert not known)".to_string() } else { r.alerts.join(", ") }
    );
    let short = |x: &str| x[..x.len().min(12)].to_string();
    let culprit = match &r.culprit {
        Some(c) => format!("{} {} ({})", short(&c.sha), c.subject, c.author),
        None => short(&r.culprit_sha),
    };
    let cpr = r.culprit_pr.as_ref().map(|p| format!(", PR #{}", p.number)).unwrap_or_default();
    s.push_str(&format!("  culprit   {culprit}{cpr}\n"));
    if let Some(v) = &r.versions {
        s.push_str(&format!("  versions  {v}\n"));
    }
    let label = r.reason_label.as_deref().map(|l| format!("[{l}] ")).unwrap_or_default();
    s.push_str(&format!("  reason    {label}{}\n", r.reason));
    if let Some(v) = &r.revert {
        s.push_str(&format!("  revert    {} {}\n", short(&v.sha), v.subject));
    }
    if let Some(p) = &r.pr {
        let url = if p.url.is_empty() { String::new() } else { format!(" {}", p.url) };
        let state = r.pr_state.as_deref().map(|st| format!(" ({st})")).unwrap_or_default();
        s.push_str(&format!("  pr        #{}{url}{state}\n", p.number));
    }
    s.push_str(&format!("  times     {}\n", r.times.line()));
    if !r.people.is_empty() {
        s.push_str(&format!("  people    {}\n", r.people.join(", ")));
    }
    if let Some(e) = &r.rollback {
        s.push_str(&format!("  rollback  {e}\n"));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_links_come_from_web_urls_without_credentials() {
        assert_eq!(
            commit_link("https://x-access-token:s3cret@github.com/shop/manifests.git", "abc").as_deref(),
            Some("https://github.com/shop/manifests/commit/abc")
        );
        assert_eq!(commit_link("/srv/git/manifests.git", "abc"), None);
        assert_eq!(commit_link("ssh://git@host/x.git", "abc"), None);
    }

    #[test]
    fn the_log_keeps_records_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let k = Kept::Command(crate::domain::history::KeptCommand {
            at: Utc::now(),
            pr: 3,
            by: "alice".into(),
            command: "approve".into(),
        });
        DecisionLog::new(dir.path()).record(&k).unwrap();
        assert_eq!(DecisionLog::new(dir.path()).read(), vec![k.clone()]);
        assert_eq!(dedup(vec![k.clone(), k.clone()]), vec![k]);
    }
}
