//! Tracing and reverting against a real repository: the domain's decisions, carried out with git.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::adapters::git::{GitError, GitRepo};
use crate::domain::culprit::{CommitSha, Culprit, Query, Subject, TraceError, find_culprit};
use crate::domain::extract::{Occurrence, extract, find_key, text_of};
use crate::domain::image_ref::Version;
use crate::domain::revert::{
    AutoReason, EditError, Mode, ModeChoice, apply, branch_name, message, only_these_changed, plan_edits,
};

#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Trace(#[from] TraceError<git2::Error>),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(
        "{image} first appeared in {commit}: there is no previous version to go back to; use --mode commit to undo the whole commit"
    )]
    NoPrevious { image: String, commit: String },
    #[error(
        "nothing to revert: {image} is no longer at {version} in {files} at {onto} (already rolled back or forward)"
    )]
    AlreadyReverted { image: String, version: String, files: String, onto: String },
}

impl RevertError {
    pub fn kind(&self) -> &'static str {
        match self {
            RevertError::Git(e) => e.metric_label(),
            RevertError::Trace(e) => e.kind(),
            RevertError::Edit(_) => "not_editable",
            RevertError::NoPrevious { .. } => "no_previous_version",
            RevertError::AlreadyReverted { .. } => "already_reverted",
        }
    }
}

/// A built revert: one new commit on top of `onto`, pointed at by `branch`.
#[derive(Clone, Debug, Serialize)]
pub struct BuiltRevert {
    pub commit: CommitSha,
    pub onto: CommitSha,
    pub branch: String,
    pub mode: Mode,
    /// Why this mode (auto mode's reasoning, or "asked for").
    pub why: String,
    pub culprit: CommitSha,
    pub image: String,
    pub from: String,
    pub to: Option<String>,
    pub files: Vec<String>,
    /// Later commits whose changes of the same references the revert also sets back.
    pub later: Vec<CommitSha>,
    pub message: String,
    /// What the search passed over or chose between, said to the person (warnings).
    pub notes: Vec<String>,
}

pub fn trace(repo: &GitRepo, rev: &str, query: &Query, scope: &[String]) -> Result<Culprit, RevertError> {
    let started = std::time::Instant::now();
    let tip = repo.resolve(rev)?;
    let history = repo.history(scope);
    let found = find_culprit(&history, &tip, query);
    let s = history.stats.borrow();
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        commits = s.commits,
        commit_ms = s.commit_time.as_secs_f64() * 1e3,
        trees = s.trees,
        tree_ms = s.tree_time.as_secs_f64() * 1e3,
        blobs = s.blobs,
        blob_kib = s.blob_bytes / 1024,
        blob_ms = s.blob_time.as_secs_f64() * 1e3,
        read_ahead = s.read_ahead,
        "history walk"
    );
    Ok(found?)
}

/// Every reference in a file as the subject reads it, and every image reference (to see what an
/// anchor is shared with).
fn references(subject: &Subject, file: &str, text: &str) -> Vec<Occurrence> {
    let mut all = extract(file, text).occurrences;
    if let Subject::Key(k) = subject {
        for o in find_key(file, text, k).occurrences {
            if !all.iter().any(|a| a.slot == o.slot) {
                all.push(o);
            }
        }
    }
    all
}

/// A file's text for reading, and its bytes for editing (the same offsets).
fn file_at(repo: &GitRepo, commit: &CommitSha, path: &str) -> Result<Option<(String, Vec<u8>)>, RevertError> {
    Ok(repo.read_bytes(commit, path)?.map(|bytes| (text_of(path, &bytes).0, bytes)))
}

/// Auto mode's choice: the whole commit when it changed only this image's versions, nothing came
/// after it in the same places, and it reverts cleanly onto `onto`; surgical otherwise.
fn choose(
    repo: &GitRepo,
    c: &Culprit,
    subject: &Subject,
    onto: &CommitSha,
) -> Result<(Mode, AutoReason), RevertError> {
    if !c.later.is_empty() {
        let later =
            c.later.iter().map(|l| format!("{} ({} -> {})", l.commit.short(), opt(&l.old), l.new)).collect();
        return Ok((Mode::Surgical, AutoReason::LaterChanges(later)));
    }
    if !c.other_files.is_empty() {
        return Ok((Mode::Surgical, AutoReason::TouchedOtherFiles(c.other_files.clone())));
    }
    let Some(parent) = &c.parent else {
        return Ok((Mode::Surgical, AutoReason::TouchedOtherFiles(vec!["(root commit)".into()])));
    };
    let mut by_file: BTreeMap<&str, Vec<&crate::domain::culprit::SiteChange>> = BTreeMap::new();
    for s in &c.changes {
        by_file.entry(s.file.as_str()).or_default().push(s);
    }
    let mut other_lines = Vec::new();
    for (file, changes) in by_file {
        let before = file_at(repo, parent, file)?;
        let after = file_at(repo, &c.commit.sha, file)?;
        let ok = match (before, after) {
            (Some((before, _)), Some((after, _))) if changes.iter().all(|s| s.old.is_some()) => {
                let all = references(subject, file, &after);
                let sites: Vec<&Occurrence> =
                    changes.iter().filter_map(|s| all.iter().find(|o| o.slot == s.slot)).collect();
                sites.len() == changes.len() && only_these_changed(&before, &after, &sites)
            }
            _ => false,
        };
        if !ok {
            other_lines.push(file.to_string());
        }
    }
    if !other_lines.is_empty() {
        return Ok((Mode::Surgical, AutoReason::TouchedOtherLines(other_lines)));
    }
    match repo.revert_tree(&c.commit.sha, onto) {
        Ok(_) => Ok((Mode::Commit, AutoReason::OnlyTheImageChanged)),
        Err(GitError::Conflict { files, .. }) => Ok((Mode::Surgical, AutoReason::WouldConflict(files))),
        Err(e) => Err(e.into()),
    }
}

fn opt(v: &Option<Version>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
}

/// The surgical edit: each reference the culprit changed goes back to what it was before the
/// culprit, found at `onto` by its slot. A reference that `onto` has somewhere else than the traced
/// tip had it (moved, removed, or set to yet another version) is left alone.
fn surgical_edits(
    repo: &GitRepo,
    c: &Culprit,
    subject: &Subject,
    image: &str,
    onto: &CommitSha,
) -> Result<Vec<(String, Vec<u8>)>, RevertError> {
    let mut by_file: BTreeMap<&str, Vec<(&crate::domain::culprit::SiteChange, &Version)>> = BTreeMap::new();
    let mut no_previous = true;
    for s in &c.changes {
        if let Some(old) = &s.old {
            no_previous = false;
            by_file.entry(s.tip.file.as_str()).or_default().push((s, old));
        }
    }
    if no_previous {
        return Err(RevertError::NoPrevious { image: image.to_string(), commit: c.commit.sha.0.clone() });
    }
    let mut edits = Vec::new();
    for (file, changes) in by_file {
        let Some((text, bytes)) = file_at(repo, onto, file)? else {
            continue;
        };
        let all = references(subject, file, &text);
        let mut sites = Vec::new();
        for (s, old) in changes {
            let Some(o) = all.iter().find(|o| o.slot == s.slot) else {
                continue;
            };
            if o.version == s.tip.version && &o.version != old {
                sites.push((o, old));
            }
        }
        if sites.is_empty() {
            continue;
        }
        let plan = plan_edits(&text, &sites, &all, |t| references(subject, file, t))?;
        edits.push((file.to_string(), apply(&bytes, &plan)));
    }
    Ok(edits)
}

/// Builds the revert of `c` on top of `onto` and points `branch` (default
/// `metricops/revert-<12 hex>`) at it. No working tree is touched.
#[allow(clippy::too_many_arguments)]
pub fn build_revert(
    repo: &GitRepo,
    c: &Culprit,
    subject: &Subject,
    onto: &CommitSha,
    choice: ModeChoice,
    branch: Option<&str>,
    reason: &str,
    trailers: &[(&str, String)],
    now: DateTime<Utc>,
) -> Result<BuiltRevert, RevertError> {
    let image = c.image.clone().unwrap_or_else(|| match subject {
        Subject::Image(i) | Subject::Key(i) => i.clone(),
    });
    let (mode, why) = match choice {
        ModeChoice::Commit => (Mode::Commit, "asked for: whole-commit revert".to_string()),
        ModeChoice::Surgical => {
            (Mode::Surgical, "asked for: only this image's version goes back".to_string())
        }
        ModeChoice::Auto => {
            let (m, r) = choose(repo, c, subject, onto)?;
            (m, r.to_string())
        }
    };
    let (tree, files) = match mode {
        Mode::Commit => {
            let tree = repo.revert_tree(&c.commit.sha, onto)?;
            let mut files: Vec<String> =
                c.changes.iter().map(|s| s.file.clone()).chain(c.other_files.iter().cloned()).collect();
            files.sort();
            files.dedup();
            (tree, files)
        }
        Mode::Surgical => {
            let edits = surgical_edits(repo, c, subject, &image, onto)?;
            let files: Vec<String> = edits.iter().map(|(f, _)| f.clone()).collect();
            if edits.is_empty() {
                let files = c.changes.iter().map(|s| s.tip.file.clone()).collect::<Vec<_>>().join(", ");
                return Err(RevertError::AlreadyReverted {
                    image,
                    version: c.version.to_string(),
                    files,
                    onto: onto.short().to_string(),
                });
            }
            (repo.tree_with_bytes(onto, &edits)?, files)
        }
    };
    if tree == repo.tree_of(onto)? {
        return Err(RevertError::AlreadyReverted {
            image,
            version: c.version.to_string(),
            files: files.join(", "),
            onto: onto.short().to_string(),
        });
    }
    let mut reason = reason.trim_end().to_string();
    if mode == Mode::Surgical && !c.later.is_empty() {
        reason.push_str(&format!(
            "\n\nLater changes of the same references are set back too, to the version before {}:\n",
            c.commit.sha.short()
        ));
        for l in &c.later {
            reason.push_str(&format!(
                "- {} {} ({} -> {})\n",
                l.commit.short(),
                l.summary,
                opt(&l.old),
                l.new
            ));
        }
    }
    let msg = message(&c.commit, mode, &reason, trailers);
    let commit = repo.write_commit(tree, onto, &msg, now)?;
    let branch = branch.map(str::to_string).unwrap_or_else(|| branch_name(&c.commit.sha.0));
    repo.create_branch(&branch, &commit)?;
    Ok(BuiltRevert {
        commit,
        onto: onto.clone(),
        branch,
        mode,
        why,
        culprit: c.commit.sha.clone(),
        image,
        from: c.changes.first().map(|s| s.tip.version.to_string()).unwrap_or_else(|| c.version.to_string()),
        to: c.previous.as_ref().map(|v| v.to_string()),
        files,
        later: c.later.iter().map(|l| l.commit.clone()).collect(),
        message: msg,
        notes: c.notes.clone(),
    })
}
