//! The command line: `demo`, `trace`, `revert`, `serve`, `simulate`, `history`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::adapters::git::GitRepo;
use crate::domain::culprit::{Culprit, Query, Several, Subject, TraceError};
use crate::domain::revert::ModeChoice;
use crate::revert::{RevertError, build_revert, trace};

#[derive(Parser, Debug)]
#[command(
    name = "metricops",
    version,
    about = "GitOps-native rollback bot: finds the commit that put a failing image in place and reverts it in Git."
)]
pub struct Cli {
    /// Log lines on stderr as text or JSON (one object per line, with the incident id of the span).
    #[arg(long, global = true, value_enum, default_value = "text", env = "METRICOPS_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// End to end on this machine: a throwaway manifests repo, a bad deploy, a firing alert, the revert.
    Demo,
    /// Which commit put this image's version in place, and what came before.
    Trace(TraceArgs),
    /// Build the revert of a commit, or of whatever made an image's version current, on a new branch.
    Revert(RevertArgs),
    /// Run the bot: POST /webhooks/{alertmanager,grafana,generic}, /webhooks/github (with a `github:`
    /// section and a webhook secret), GET /healthz, /readyz, /metrics; the rule evaluator when the
    /// config has `prometheus:`. HTTPS with `server.tls`. Stops on Ctrl-C.
    Serve {
        /// The config file (YAML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR:PORT")]
        listen: String,
    },
    /// Run one alert payload through the whole pipeline and print every step; nothing is pushed and
    /// no PR is opened unless --execute.
    Simulate {
        /// The config file (YAML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The webhook body (JSON), as the source would send it.
        #[arg(long, value_name = "FILE")]
        alert: PathBuf,
        /// Which webhook the body is for.
        #[arg(long, value_enum, default_value = "alertmanager")]
        source: crate::domain::alert::Source,
        /// Deliver for real: push the branch, open or merge the PR, as `serve` would.
        #[arg(long)]
        execute: bool,
        /// The time the policy sees, RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Every metricops revert on the branch (from its trailers) and every decision kept (git notes
    /// under refs/notes/metricops, and a state_dir's log), newest first; with --config and a
    /// `forge: github` repo, also the revert PRs' states on GitHub now.
    History(HistoryArgs),
    /// Check a config file: unknown keys and bad values, with line and column.
    CheckConfig {
        /// The config file (YAML).
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct Scope {
    /// The repository (bare or not).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Where to search from.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Only look at files under this path (a file or a directory); repeatable.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which references, and which moment.
#[derive(Args, Debug)]
pub struct Pick {
    /// Only the references of this object: KIND/NAMESPACE/NAME, NAMESPACE/NAME or NAME (a
    /// Deployment, a HelmRelease, an Application...), for files that hold several.
    #[arg(long, value_name = "OBJECT")]
    pub workload: Option<String>,
    /// Last known good: name the change that made current the version running at this time
    /// (RFC 3339, e.g. 2026-11-25T10:00:00Z, or seconds since the epoch), and list what changed
    /// the same references after it.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// RFC 3339, or seconds since the epoch.
fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(secs) = s.parse::<i64>()
        && let Some(t) = chrono::DateTime::from_timestamp(secs, 0)
    {
        return Ok(t);
    }
    Err(format!(
        "{s:?} is not a time: write RFC 3339 (2026-11-25T10:00:00Z, 2026-11-25T11:00:00+01:00) or seconds since the epoch"
    ))
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("subject").required(true).args(["image", "key"]))]
pub struct TraceArgs {
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub pick: Pick,
    /// The image repository, e.g. ghcr.io/shop/checkout.
    #[arg(long, value_name = "REPOSITORY")]
    pub image: Option<String>,
    /// A dotted key holding the tag, e.g. nexus.imageTag (inside Helm values: values files, HelmRelease
    /// values, Argo CD values and parameters), spec.values.image.tag (from the document's root), or
    /// KIND/NAMESPACE/NAME|spec.values.image.tag (one document of several).
    #[arg(long, value_name = "DOTTED.KEY")]
    pub key: Option<String>,
    /// Trace this tag: the most recent time the image became it (also picks one of several current versions).
    #[arg(long)]
    pub tag: Option<String>,
    /// Trace this digest (sha256:…).
    #[arg(long)]
    pub digest: Option<String>,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["commit", "image", "key"]))]
pub struct RevertArgs {
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub pick: Pick,
    /// The commit to revert.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Revert whatever made this image's current version current.
    #[arg(long, value_name = "REPOSITORY")]
    pub image: Option<String>,
    /// Revert whatever made the tag under this dotted key current.
    #[arg(long, value_name = "DOTTED.KEY")]
    pub key: Option<String>,
    /// auto: whole commit when it changed only this image and applies cleanly, else surgical.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: ModeChoice,
    /// The branch to create (default metricops/revert-<12 hex of the culprit>).
    #[arg(long)]
    pub branch: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The manifests repository (bare or not; a clone needs `git fetch origin
    /// refs/notes/metricops:refs/notes/metricops` to have the kept decisions). With --config it
    /// may be left out: then serve's mirror of the config's repo in its state_dir is read, else
    /// the repo's url when that is a local path.
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub repo: Option<PathBuf>,
    /// A metricops config: its repo (`forge: github`: the revert PRs' states now — open, held,
    /// cancelled, merged, closed — asked of GitHub once, as the App; a failure is one warning on
    /// stderr and the rows git holds), its branch, its state_dir's decisions log.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which of the config's repos (its `name`); needed when it has several and --repo does not
    /// say.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub repo_name: Option<String>,
    /// The branch whose first-parent history is read (default: HEAD; with --config, the repo's
    /// branch).
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Only incidents from this long ago on: 30d, 12h, 90m.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only this workload (as configured: shop/checkout).
    #[arg(long, value_name = "WORKLOAD")]
    pub workload: Option<String>,
    /// Also the decisions a `serve` kept in this state_dir (its decisions/ log); with --config,
    /// the config's state_dir when it sets one.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// At most this many incidents (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// An error as the user sees it: a kind, a message, and details for `--json`.
pub struct CliError {
    pub kind: &'static str,
    pub message: String,
    pub details: Value,
}

impl From<RevertError> for CliError {
    fn from(e: RevertError) -> Self {
        let details = match &e {
            RevertError::Trace(TraceError::NotFound { available, .. }) => {
                json!({ "available": available })
            }
            RevertError::Trace(TraceError::NotInObject { objects, .. }) => json!({ "objects": objects }),
            RevertError::Trace(TraceError::Ambiguous { versions, .. }) => json!({
                "versions": versions.iter().map(|(v, files)| json!({"version": v.to_string(), "files": files})).collect::<Vec<_>>()
            }),
            RevertError::Git(crate::adapters::git::GitError::Conflict { files, .. }) => {
                json!({ "files": files })
            }
            _ => json!({}),
        };
        CliError { kind: e.kind(), message: e.to_string(), details }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError { kind: "error", message: format!("{e:#}"), details: json!({}) }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let json_mode = match &cli.command {
        Command::Trace(a) => a.scope.json,
        Command::Revert(a) => a.scope.json,
        Command::History(a) => a.json,
        _ => false,
    };
    let result = match cli.command {
        Command::Demo => crate::demo::run().map_err(CliError::from),
        Command::Trace(a) => run_trace(a),
        Command::Revert(a) => run_revert(a),
        Command::Serve { config, listen } => crate::server::run(&config, &listen).map_err(CliError::from),
        Command::Simulate { config, alert, source, execute, at } => {
            crate::simulate::run(&config, &alert, source, execute, at.as_deref()).map_err(CliError::from)
        }
        Command::History(a) => crate::history::run_cli(&a).map_err(CliError::from),
        Command::CheckConfig { file } => crate::wiring::check_file(&file).map_err(CliError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_mode {
                let mut err = json!({"kind": e.kind, "message": e.message});
                if let (Value::Object(m), Value::Object(d)) = (&mut err, e.details) {
                    m.extend(d);
                }
                println!("{}", json!({ "error": err }));
            } else {
                eprintln!("error: {}", e.message);
            }
            ExitCode::FAILURE
        }
    }
}

fn query(
    image: Option<String>,
    key: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    pick: &Pick,
) -> Result<Query, CliError> {
    let subject = match (image, key) {
        (Some(i), _) => Subject::Image(i),
        (None, Some(k)) => Subject::Key(k),
        (None, None) => {
            return Err(CliError {
                kind: "usage",
                message: "name what to trace with --image or --key".into(),
                details: json!({}),
            });
        }
    };
    Ok(Query { tag, digest, workload: pick.workload.clone(), at: pick.at, ..Query::new(subject) })
}

fn open(scope: &Scope) -> Result<GitRepo, CliError> {
    GitRepo::open(&scope.repo).map_err(|e| RevertError::from(e).into())
}

pub fn culprit_json(c: &Culprit) -> Value {
    let v = |x: &Option<crate::domain::image_ref::Version>| x.as_ref().map(|v| v.to_string());
    // The digest fields are filled when the change involves a digest; a reference left with a bare
    // `@` (`repo:1.2@`) is a version of its own, shown as written in `version` / `previous`.
    let real = |x: Option<&crate::domain::image_ref::Version>| {
        x.and_then(|v| v.digest.as_deref()).is_some_and(|d| !d.is_empty())
    };
    let digests = real(Some(&c.version)) || real(c.previous.as_ref());
    json!({
        "image": c.image,
        "tag": c.version.tag,
        "digest": digests.then(|| c.version.digest.clone()).flatten(),
        "previous_tag": c.previous.as_ref().and_then(|p| p.tag.clone()),
        "previous_digest": digests.then(|| c.previous.as_ref().and_then(|p| p.digest.clone())).flatten(),
        "version": c.version.to_string(),
        "previous": v(&c.previous),
        "commit": c.commit.sha,
        "parent": c.parent,
        "subject": c.commit.summary,
        "author": format!("{} <{}>", c.commit.author, c.commit.author_email),
        "time": c.commit.time.to_rfc3339(),
        "changes": c.changes.iter().map(|s| json!({
            "file": s.file, "line": s.line, "slot": s.slot.to_string(), "old": v(&s.old), "new": s.new.to_string(),
            "old_image": s.old_repository,
            "workload": s.workload.as_ref().map(|w| w.to_string()),
            "now": {"file": s.tip.file, "line": s.tip.line, "version": s.tip.version.to_string()},
        })).collect::<Vec<_>>(),
        "later": c.later.iter().map(|l| json!({
            "commit": l.commit, "subject": l.summary, "time": l.time.to_rfc3339(), "file": l.file,
            "slot": l.slot.to_string(), "old": v(&l.old), "new": l.new.to_string(),
        })).collect::<Vec<_>>(),
        "other_files": c.other_files,
        "notes": c.notes,
    })
}

pub fn culprit_text(c: &Culprit) -> String {
    let mut s = format!(
        "{} {} was made current by commit {}\n  {}\n  by {} <{}> at {}\n",
        c.image.as_deref().unwrap_or("the tag"),
        c.version,
        c.commit.sha,
        c.commit.summary,
        c.commit.author,
        c.commit.author_email,
        c.commit.time.to_rfc3339()
    );
    match &c.previous {
        Some(p) => s.push_str(&format!("  previous version: {p}\n")),
        None => s.push_str("  previous version: none (first appearance)\n"),
    }
    for ch in &c.changes {
        let old = ch.old.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let w = ch.workload.as_ref().map(|w| format!("  ({w})")).unwrap_or_default();
        let was = ch.old_repository.as_ref().map(|r| format!(" (was {r})")).unwrap_or_default();
        s.push_str(&format!("  {}:{}  {}{} -> {}{}\n", ch.file, ch.line, old, was, ch.new, w));
    }
    if !c.other_files.is_empty() {
        s.push_str(&format!("  also touched: {}\n", c.other_files.join(", ")));
    }
    if !c.later.is_empty() {
        s.push_str(&format!("  {} later change(s) of the same references followed it:\n", c.later.len()));
        for l in &c.later {
            let old = l.old.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "    {} {} ({} -> {}) {}\n",
                l.commit.short(),
                l.time.to_rfc3339(),
                old,
                l.new,
                l.summary
            ));
        }
    }
    s
}

fn run_trace(a: TraceArgs) -> Result<(), CliError> {
    let repo = open(&a.scope)?;
    let q = query(a.image, a.key, a.tag, a.digest, &a.pick)?;
    let c = trace(&repo, &a.scope.rev, &q, &a.scope.paths)?;
    for n in &c.notes {
        tracing::warn!("{n}");
    }
    if a.scope.json {
        println!("{}", culprit_json(&c));
    } else {
        print!("{}", culprit_text(&c));
    }
    Ok(())
}

fn run_revert(a: RevertArgs) -> Result<(), CliError> {
    let repo = open(&a.scope)?;
    let onto = repo.resolve(&a.scope.rev).map_err(RevertError::from)?;
    let (culprit, subject) = match (&a.commit, a.image.clone(), a.key.clone()) {
        (Some(sha), image, key) => {
            let commit = repo.resolve(sha).map_err(RevertError::from)?;
            if image.is_none() && key.is_none() {
                return revert_whole_commit(&repo, &commit, &onto, &a);
            }
            // An image with a commit: trace from that commit.
            let q =
                Query { several: Several::NameTheNewestChange, ..query(image, key, None, None, &a.pick)? };
            let c = trace(&repo, &commit.0, &q, &a.scope.paths)?;
            (c, q.subject)
        }
        (None, image, key) => {
            let q =
                Query { several: Several::NameTheNewestChange, ..query(image, key, None, None, &a.pick)? };
            (trace(&repo, &a.scope.rev, &q, &a.scope.paths)?, q.subject)
        }
    };
    let reason = format!(
        "Requested with `metricops revert`: {} goes back from {} to {}.",
        culprit.image.as_deref().unwrap_or("the tag"),
        culprit.version,
        culprit.previous.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "(none)".into())
    );
    let built = build_revert(
        &repo,
        &culprit,
        &subject,
        &onto,
        a.mode,
        a.branch.as_deref(),
        &reason,
        &[],
        chrono::Utc::now(),
    )?;
    print_built(&built, a.scope.json);
    Ok(())
}

/// `--commit` alone: the tree `git revert` would make.
fn revert_whole_commit(
    repo: &GitRepo,
    commit: &crate::domain::culprit::CommitSha,
    onto: &crate::domain::culprit::CommitSha,
    a: &RevertArgs,
) -> Result<(), CliError> {
    if a.mode == ModeChoice::Surgical {
        return Err(CliError {
            kind: "usage",
            message: "--mode surgical needs to know which image to set back: add --image or --key".into(),
            details: json!({}),
        });
    }
    let info = repo.commit_info(commit).map_err(RevertError::from)?;
    let tree = repo.revert_tree(commit, onto).map_err(RevertError::from)?;
    let msg = crate::domain::revert::message(
        &info,
        crate::domain::revert::Mode::Commit,
        "Requested with `metricops revert`.",
        &[],
    );
    let new = repo.write_commit(tree, onto, &msg, chrono::Utc::now()).map_err(RevertError::from)?;
    let branch = a.branch.clone().unwrap_or_else(|| crate::domain::revert::branch_name(&commit.0));
    repo.create_branch(&branch, &new).map_err(RevertError::from)?;
    let built = crate::revert::BuiltRevert {
        commit: new,
        onto: onto.clone(),
        branch,
        mode: crate::domain::revert::Mode::Commit,
        why: "asked for: whole-commit revert".into(),
        culprit: commit.clone(),
        image: String::new(),
        from: String::new(),
        to: None,
        files: Vec::new(),
        later: Vec::new(),
        message: msg,
        notes: Vec::new(),
    };
    print_built(&built, a.scope.json);
    Ok(())
}

fn print_built(b: &crate::revert::BuiltRevert, json_out: bool) {
    for n in &b.notes {
        tracing::warn!("{n}");
    }
    if json_out {
        println!("{}", serde_json::to_string(b).expect("serialisable"));
    } else {
        println!(
            "created {} on branch {} ({} revert of {})",
            b.commit,
            b.branch,
            b.mode.label(),
            b.culprit.short()
        );
        println!("  why: {}", b.why);
        if !b.image.is_empty() {
            println!("  {}: {} -> {}", b.image, b.from, b.to.as_deref().unwrap_or("(none)"));
        }
        if !b.files.is_empty() {
            println!("  files: {}", b.files.join(", "));
        }
    }
}
