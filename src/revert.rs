//! Tracing and reverting against a real repository: the domain's decisions, carried out with git.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::adapters::git::{GitError, GitRepo};
use crate::domain::culprit::{CommitSha, Culprit, Query, TraceError, find_culprit};
use crate::domain::culprit::{Subject, subject_matches};
use crate::domain::extract::{Occurrence, extract, find_key};
use crate::domain::image_ref::Version;
use crate::domain::revert::{
    AutoReason, EditError, Mode, ModeChoice, branch_name, message, only_version_changed, set_version,
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
    pub message: String,
}

pub fn trace(repo: &GitRepo, rev: &str, query: &Query, scope: &[String]) -> Result<Culprit, RevertError> {
    let tip = repo.resolve(rev)?;
    let history = repo.history(scope);
    Ok(find_culprit(&history, &tip, query)?)
}

fn subject_sites<'a>(
    subject: &Subject,
    file: &str,
    text: &str,
    version: &Version,
    keep: &'a mut Vec<Occurrence>,
) -> Vec<&'a Occurrence> {
    let ex = match subject {
        Subject::Image(_) => extract(file, text),
        Subject::Key(k) => find_key(file, text, k),
    };
    *keep = ex
        .occurrences
        .into_iter()
        .filter(|o| &o.version == version)
        .filter(|o| subject_matches(subject, o))
        .collect();
    keep.iter().collect()
}

/// Auto mode's choice: the whole commit when it changed only this image's version and reverts
/// cleanly onto `onto`, surgical otherwise.
fn choose(
    repo: &GitRepo,
    c: &Culprit,
    subject: &Subject,
    onto: &CommitSha,
) -> Result<(Mode, AutoReason), RevertError> {
    if !c.other_files.is_empty() {
        return Ok((Mode::Surgical, AutoReason::TouchedOtherFiles(c.other_files.clone())));
    }
    let Some(parent) = &c.parent else {
        return Ok((Mode::Surgical, AutoReason::TouchedOtherFiles(vec!["(root commit)".into()])));
    };
    let mut by_file: BTreeMap<&str, Vec<&Option<Version>>> = BTreeMap::new();
    for s in &c.changes {
        by_file.entry(s.file.as_str()).or_default().push(&s.old);
    }
    let mut other_lines = Vec::new();
    for (file, olds) in by_file {
        let before = repo.read_file(parent, file)?;
        let after = repo.read_file(&c.commit.sha, file)?;
        let old = olds[0];
        let same_old = olds.iter().all(|o| *o == old);
        let ok = match (before, after, old, same_old) {
            (Some(before), Some(after), Some(old), true) => {
                let mut keep = Vec::new();
                let sites = subject_sites(subject, file, &after, &c.version, &mut keep);
                only_version_changed(&before, &after, &sites, old)
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
            let previous = c.previous.clone().ok_or_else(|| RevertError::NoPrevious {
                image: image.clone(),
                commit: c.commit.sha.0.clone(),
            })?;
            let mut files: Vec<String> = c.changes.iter().map(|s| s.file.clone()).collect();
            files.sort();
            files.dedup();
            // A file the culprit changed may have moved since: then use where the version is now.
            let mut edits = Vec::new();
            let mut targets: Vec<String> = Vec::new();
            for f in &files {
                match repo.read_file(onto, f)? {
                    Some(_) => targets.push(f.clone()),
                    None => targets.extend(c.current.iter().map(|o| o.file.clone())),
                }
            }
            targets.sort();
            targets.dedup();
            for f in &targets {
                let Some(text) = repo.read_file(onto, f)? else { continue };
                let mut keep = Vec::new();
                let sites = subject_sites(subject, f, &text, &c.version, &mut keep);
                if sites.is_empty() {
                    continue;
                }
                edits.push((f.clone(), set_version(&text, &sites, &previous)?));
            }
            if edits.is_empty() {
                return Err(RevertError::AlreadyReverted {
                    image,
                    version: c.version.to_string(),
                    files: targets.join(", "),
                    onto: onto.short().to_string(),
                });
            }
            let files = edits.iter().map(|(f, _)| f.clone()).collect();
            (repo.tree_with(onto, &edits)?, files)
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
    let msg = message(&c.commit, mode, reason, trailers);
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
        from: c.version.to_string(),
        to: c.previous.as_ref().map(|v| v.to_string()),
        files,
        message: msg,
    })
}
