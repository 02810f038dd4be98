//! The rollback history, the shell around `domain::history`: the decisions log in
//! `state_dir/decisions/` (one file per record, synced to disk before it counts, like the delivery
//! journal), the git notes of `history.notes`, the reverts read from each repository's mirror
//! (cached per branch tip, so a page of a 100k-commit history is read once and then only what is
//! new), what an outcome of the engine is kept as, and the revert PRs' live states asked of the
//! forge (once per `metricops history`; in `serve`, cached and refreshed at most every
//! `history.forge_refresh`).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::adapters::git::GitRepo;
use crate::config::{Config, ForgeKind, RepoConfig};
use crate::domain::alert::summarise;
use crate::domain::culprit::CommitSha;
use crate::domain::history::{
    AlertSeen, CulpritSeen, Kept, KeptDecision, LivePr, LiveState, PrRef, RevertSeen, Row, assemble,
    merge_live, workload_of_pr,
};
use crate::domain::policy::Decision;
use crate::forge::{Forge, PullRequest, RepoId};
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

/// A revert PR as the forge lists it, as the history shows it.
pub fn live_pr(repo_shown: &str, p: &PullRequest) -> LivePr {
    let at = |t: &Option<String>| {
        t.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
    };
    let labels: Vec<&str> = p.labels.iter().map(|l| l.name.as_str()).collect();
    LivePr {
        repo: repo_shown.to_string(),
        number: p.number,
        url: p.html_url.clone(),
        head: p.head.name.clone(),
        title: p.title.clone(),
        workload: workload_of_pr(&p.title, p.body.as_deref()),
        state: LiveState::of(&p.state, p.is_merged(), &labels),
        created_at: at(&p.created_at),
        closed_at: at(&p.closed_at),
        merged_at: at(&p.merged_at),
    }
}

/// The revert PRs (`metricops/revert-…`, open and closed) of a `forge: github` repository: one
/// listing, paged as GitHub pages it.
pub async fn revert_prs(forge: &dyn Forge, repo: &RepoConfig) -> anyhow::Result<Vec<LivePr>> {
    let id = RepoId::from_url(&repo.url)
        .with_context(|| format!("repo {:?}: its url names no owner/name on GitHub", repo.name))?;
    let prs = forge.pulls_with_head_prefix(&id, crate::domain::revert::BRANCH_PREFIX).await?;
    let shown = crate::domain::redact::redact_url(&repo.url);
    Ok(prs.iter().map(|p| live_pr(&shown, p)).collect())
}

/// What the forge said of one repository's revert PRs, last time it was asked.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForgeAsked {
    /// The repository's name in the config.
    pub repo: String,
    /// When the PR states shown were listed (none: the forge has not answered yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_at: Option<DateTime<Utc>>,
    /// How many revert PRs it listed.
    pub prs: usize,
    /// Why the last asking failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ForgeAsked {
    /// One line for a person: where the PR states come from.
    pub fn line(&self) -> String {
        let when = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match (&self.error, self.listed_at) {
            (Some(e), Some(t)) => format!(
                "{}: GitHub did not answer for the revert PRs ({e}); their states are GitHub's as of {}",
                self.repo,
                when(t)
            ),
            (Some(e), None) => format!(
                "{}: GitHub did not answer for the revert PRs ({e}); their states are as last known from git and the kept records",
                self.repo
            ),
            (None, Some(t)) => {
                format!("{}: {} revert PRs' states from GitHub as of {}", self.repo, self.prs, when(t))
            }
            (None, None) => format!("{}: GitHub is being asked for the revert PRs' states", self.repo),
        }
    }
}

/// How long a page waits for the forge's very first answer (later pages never wait).
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `serve`'s revert PR states per `forge: github` repository: asked again at most every `every`,
/// one listing per repository, in the background; a page is answered from what is here.
pub struct LiveCache {
    forge: Option<std::sync::Arc<dyn Forge>>,
    every: std::time::Duration,
    entries: Mutex<HashMap<String, LiveEntry>>,
}

#[derive(Default)]
struct LiveEntry {
    /// When the forge was last asked (an answer or a failure).
    asked: Option<std::time::Instant>,
    refreshing: bool,
    prs: std::sync::Arc<Vec<LivePr>>,
    listed_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl LiveCache {
    pub fn new(forge: Option<std::sync::Arc<dyn Forge>>, every: std::time::Duration) -> LiveCache {
        LiveCache { forge, every, entries: Mutex::new(HashMap::new()) }
    }

    /// The revert PRs of every `forge: github` repository as last listed, and what each asking
    /// came to. A repository not asked within `every` is asked again in the background; only the
    /// very first asking is waited for, at most [`FIRST_WAIT`]. A failure keeps the last answer.
    pub async fn current(self: &std::sync::Arc<Self>, config: &Config) -> (Vec<LivePr>, Vec<ForgeAsked>) {
        let Some(forge) = &self.forge else { return Default::default() };
        let repos: Vec<&RepoConfig> = config.repos.iter().filter(|r| r.forge == ForgeKind::Github).collect();
        let mut first = Vec::new();
        for repo in &repos {
            let (ask, never) = {
                let mut m = self.entries.lock().expect("live cache lock");
                let e = m.entry(repo.name.clone()).or_default();
                let stale = e.asked.is_none_or(|t| t.elapsed() >= self.every);
                let ask = stale && !e.refreshing;
                e.refreshing |= ask;
                (ask, e.asked.is_none())
            };
            if !ask {
                continue;
            }
            let (me, forge, repo) = (self.clone(), forge.clone(), (*repo).clone());
            let task = tokio::spawn(async move {
                let r = revert_prs(&*forge, &repo).await;
                let mut m = me.entries.lock().expect("live cache lock");
                let e = m.entry(repo.name.clone()).or_default();
                e.asked = Some(std::time::Instant::now());
                e.refreshing = false;
                match r {
                    Ok(prs) => {
                        e.prs = std::sync::Arc::new(prs);
                        e.listed_at = Some(Utc::now());
                        e.error = None;
                    }
                    Err(err) => {
                        tracing::warn!(repo = %repo.name, error = %format!("{err:#}"), "cannot list the revert PRs for the history");
                        e.error = Some(format!("{err:#}"));
                    }
                }
            });
            if never {
                first.push(task);
            }
        }
        for t in first {
            let _ = tokio::time::timeout(FIRST_WAIT, t).await;
        }
        let m = self.entries.lock().expect("live cache lock");
        let mut live = Vec::new();
        let mut asked = Vec::new();
        for repo in repos {
            let Some(e) = m.get(&repo.name) else { continue };
            live.extend(e.prs.iter().cloned());
            asked.push(ForgeAsked {
                repo: repo.name.clone(),
                listed_at: e.listed_at,
                prs: e.prs.len(),
                error: e.error.clone(),
            });
        }
        (live, asked)
    }
}

/// Where `metricops history` reads: the repository, its branch, the config's repo (with a config).
struct Source {
    repo: GitRepo,
    /// serve's mirror: its branches are read as last fetched (`refs/remotes/origin/…`).
    mirror: bool,
    branch: String,
    configured: Option<RepoConfig>,
    state_dir: Option<PathBuf>,
    github: Option<crate::config::GitHubConfig>,
}

/// `--repo`, `--config` and `--repo-name` made into one place to read.
fn source(a: &crate::cli::HistoryArgs) -> anyhow::Result<Source> {
    let Some(file) = &a.config else {
        let Some(dir) = &a.repo else {
            anyhow::bail!(
                "give --repo DIR (the manifests repository), or --config FILE to read the repository a config names"
            );
        };
        return Ok(Source {
            repo: GitRepo::open(dir)?,
            mirror: false,
            branch: a.branch.clone().unwrap_or_else(|| "HEAD".into()),
            configured: None,
            state_dir: a.state_dir.clone(),
            github: None,
        });
    };
    let config = Config::load(file)?;
    let names = || config.repos.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
    let picked = match (&a.repo_name, &a.repo) {
        (Some(n), _) => config.repos.iter().find(|r| &r.name == n).with_context(|| {
            format!("--repo-name {n:?}: the config has no such repo (it has: {})", names())
        })?,
        (None, _) if config.repos.len() == 1 => &config.repos[0],
        (None, Some(dir)) => {
            let origin = GitRepo::open(dir).ok().and_then(|g| {
                g.repo.find_remote("origin").ok().and_then(|r| r.url().ok().map(str::to_string))
            });
            let here = [Some(dir.to_string_lossy().to_string()), origin];
            config
                .repos
                .iter()
                .find(|r| here.iter().flatten().any(|u| crate::domain::cluster::same_repo(&r.url, u)))
                .with_context(|| {
                    format!(
                        "{}: which of the config's repos is it? Say it with --repo-name (one of: {})",
                        dir.display(),
                        names()
                    )
                })?
        }
        (None, None) => anyhow::bail!(
            "the config has {} repos: say which with --repo-name (one of: {})",
            config.repos.len(),
            names()
        ),
    };
    let state = config.state_dir();
    let mirror = state.join("mirrors").join(format!("{}.git", picked.name));
    let (dir, in_mirror) = match &a.repo {
        Some(d) => (d.clone(), false),
        None if mirror.join("HEAD").exists() => (mirror, true),
        None if Path::new(&picked.url).exists() => (PathBuf::from(&picked.url), false),
        None => anyhow::bail!(
            "repo {:?} is at {}, and there is no mirror of it in {}: give --repo DIR (a clone; `git fetch origin refs/notes/metricops:refs/notes/metricops` brings the kept decisions)",
            picked.name,
            crate::domain::redact::redact_url(&picked.url),
            state.join("mirrors").display()
        ),
    };
    Ok(Source {
        repo: GitRepo::open(&dir)?,
        mirror: in_mirror,
        branch: a.branch.clone().unwrap_or_else(|| picked.branch.clone()),
        state_dir: a.state_dir.clone().or_else(|| config.state_dir.clone()),
        github: config.github.clone(),
        configured: Some(picked.clone()),
    })
}

/// The config's repository's revert PRs, asked once (no retries: this is a look, run it again), or
/// why not.
fn ask_once(src: &Source) -> Option<(Vec<LivePr>, ForgeAsked)> {
    let repo = src.configured.as_ref().filter(|r| r.forge == ForgeKind::Github)?;
    let listed = (|| {
        let g = src.github.as_ref().context("no `github:` section")?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let _guard = rt.enter();
        let mut settings = crate::wiring::app_settings(g)?;
        settings.retry_budget = std::time::Duration::ZERO;
        let app = crate::adapters::github::GitHubApp::new(&settings)?;
        rt.block_on(revert_prs(&app, repo))
    })();
    Some(match listed {
        Ok(prs) => {
            let asked = ForgeAsked {
                repo: repo.name.clone(),
                listed_at: Some(Utc::now()),
                prs: prs.len(),
                error: None,
            };
            (prs, asked)
        }
        Err(e) => (
            Vec::new(),
            ForgeAsked { repo: repo.name.clone(), listed_at: None, prs: 0, error: Some(format!("{e:#}")) },
        ),
    })
}

/// `metricops history`: the branch's reverts and the kept decisions, newest first; with a config
/// whose repo is `forge: github`, its revert PRs' states now.
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
    let src = source(a)?;
    let (repo, rev) = (&src.repo, src.branch.clone());
    let remote = format!("refs/remotes/origin/{rev}");
    let tip = match src.mirror {
        true => repo.resolve(&remote).or_else(|_| repo.resolve(&rev))?,
        false => repo.resolve(&rev).or_else(|_| repo.resolve(&remote))?,
    };
    let (reverts, _) = repo.reverts(&tip, None, since)?;
    let mut kept = repo.kept_notes()?;
    if let Some(dir) = &src.state_dir {
        kept.extend(DecisionLog::new(dir).read());
    }
    let mut rows = assemble(&reverts, &dedup(kept));
    let url = match &src.configured {
        Some(r) => Some(r.url.clone()),
        None => repo.repo.find_remote("origin").ok().and_then(|r| r.url().ok().map(str::to_string)),
    };
    let found_in: HashMap<String, String> = match &url {
        Some(u) => reverts.iter().map(|r| (r.sha.clone(), u.clone())).collect(),
        None => HashMap::new(),
    };
    link(&mut rows, &found_in);
    let asked = ask_once(&src).map(|(live, asked)| {
        if asked.error.is_some() {
            eprintln!("warning: {}", asked.line());
        }
        merge_live(&mut rows, &live);
        asked
    });
    let filter = Filter { since, workload: a.workload.clone() };
    let p = page(&rows, &filter, None, a.limit.unwrap_or(usize::MAX));
    if a.json {
        let mut v = serde_json::to_value(&p)?;
        if let (Some(m), Some(asked)) = (v.as_object_mut(), &asked) {
            m.insert("forge".into(), serde_json::json!([asked]));
        }
        println!("{v}");
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
        let from = match r.pr_state_from {
            Some(crate::domain::history::StateFrom::Forge) => " on GitHub now",
            _ => " as last known",
        };
        let state = r.pr_state.as_deref().map(|st| format!(" ({st}{from})")).unwrap_or_default();
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
    fn serve_asks_the_forge_once_per_refresh_and_keeps_its_last_answer_when_it_fails() {
        use crate::forge::memory::{MemoryForge, new_pull};
        let dir = tempfile::tempdir().unwrap();
        let forge = std::sync::Arc::new(MemoryForge::new(dir.path()));
        forge.with(|s| {
            let mut held =
                new_pull(4, "Revert shop/checkout: 1.5.0 → 1.4.2", "", "metricops/revert-abc", "s", "main");
            held.labels.push(crate::adapters::github::Label { name: "metricops:hold".into() });
            s.pulls.push(held);
            s.pulls.push(new_pull(5, "Bump", "", "renovate/x", "s", "main"));
        });
        let config = Config::parse("repos:\n- name: shop\n  url: https://github.com/acme/manifests.git\n  forge: github\ngithub:\n  app_id: 1\n  private_key_file: /nonexistent/app.pem\nworkloads: []\n").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listings = || forge.with(|s| s.calls.iter().filter(|c| **c == "pulls_with_head_prefix").count());
        let hourly =
            std::sync::Arc::new(LiveCache::new(Some(forge.clone()), std::time::Duration::from_secs(3600)));
        for _ in 0..5 {
            let (live, asked) = rt.block_on(hourly.current(&config));
            assert_eq!(live.iter().map(|l| (l.number, l.state)).collect::<Vec<_>>(), [(4, LiveState::Held)]);
            assert_eq!(live[0].repo, "https://github.com/acme/manifests.git");
            assert_eq!((asked[0].prs, asked[0].error.as_deref()), (1, None));
        }
        assert_eq!(listings(), 1, "five pages, one listing");
        // Always stale: each page asks again in the background; a failure keeps the last answer.
        let always = std::sync::Arc::new(LiveCache::new(Some(forge.clone()), std::time::Duration::ZERO));
        assert_eq!(rt.block_on(always.current(&config)).0.len(), 1);
        forge.fail_next("pulls_with_head_prefix", 1000);
        let (live, asked) = loop {
            let (live, asked) = rt.block_on(always.current(&config));
            if asked[0].error.is_some() {
                break (live, asked);
            }
            rt.block_on(tokio::task::yield_now());
        };
        assert_eq!(live.len(), 1, "the last answer stays");
        assert!(asked[0].line().contains("GitHub did not answer for the revert PRs"), "{}", asked[0].line());
        assert!(asked[0].line().contains("502"), "{}", asked[0].line());
        // No forge configured: nothing asked.
        let none = std::sync::Arc::new(LiveCache::new(None, std::time::Duration::ZERO));
        assert!(rt.block_on(none.current(&config)).1.is_empty());
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
