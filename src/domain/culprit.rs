//! Which commit made an image's current version current: a walk of first-parent history.
//!
//! The walk keeps, per commit, how many references in scope carry the version being traced and
//! reads only the files a commit changed. The culprit is the newest commit where that count
//! went up: a bump, a merge that brought the bump in, or a revert back to the version. A file
//! that moves keeps its count, so renames are never blamed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::extract::{Occurrence, Workload, extract, find_key, is_manifest_path};
use super::image_ref::{Version, edit_distance, normalise_repository, same_repository};

/// A commit id, 40 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CommitSha(pub String);

impl CommitSha {
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl std::fmt::Display for CommitSha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: CommitSha,
    pub parents: Vec<CommitSha>,
    pub summary: String,
    pub message: String,
    pub author: String,
    pub author_email: String,
    pub time: DateTime<FixedOffset>,
}

/// One file that differs between a commit and its first parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange<B> {
    pub path: String,
    pub old: Option<B>,
    pub new: Option<B>,
}

/// What the culprit search needs to know of a repository's history: git2 in production, a
/// `Vec` of commits in tests. Files and changes are limited to the search's scope.
pub trait History {
    type Blob: Copy + Eq + Hash + Debug;
    type Error: std::error::Error + Send + Sync + 'static;
    fn commit(&self, sha: &CommitSha) -> Result<CommitInfo, Self::Error>;
    fn first_parent(&self, sha: &CommitSha) -> Result<Option<CommitSha>, Self::Error>;
    /// Files in scope at a commit.
    fn files(&self, sha: &CommitSha) -> Result<Vec<(String, Self::Blob)>, Self::Error>;
    /// Files in scope that differ from the first parent (all files for a root commit).
    fn changes(
        &self,
        parent: Option<&CommitSha>,
        sha: &CommitSha,
    ) -> Result<Vec<FileChange<Self::Blob>>, Self::Error>;
    /// Every path the commit touched, in scope or not.
    fn touched(&self, parent: Option<&CommitSha>, sha: &CommitSha) -> Result<Vec<String>, Self::Error>;
    fn read(&self, blob: Self::Blob) -> Result<Vec<u8>, Self::Error>;
}

/// What is being traced: an image repository, or a dotted key that holds a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Image(String),
    Key(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Image(i) => write!(f, "image {i}"),
            Subject::Key(k) => write!(f, "key {k}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub subject: Subject,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// One reference the culprit changed to the traced version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteChange {
    pub file: String,
    pub line: usize,
    pub old: Option<Version>,
    pub new: Version,
    pub workload: Option<Workload>,
}

#[derive(Clone, Debug)]
pub struct Culprit {
    pub commit: CommitInfo,
    pub parent: Option<CommitSha>,
    /// The repository, where the references name one.
    pub image: Option<String>,
    pub version: Version,
    pub previous: Option<Version>,
    pub changes: Vec<SiteChange>,
    pub other_files: Vec<String>,
    /// The traced references as they stand at the revision searched from.
    pub current: Vec<Occurrence>,
    /// Files passed over or read by the fallback, with the reason.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError<E: std::error::Error + 'static> {
    #[error("{subject} not found in scope{}", list_hint(.available))]
    NotFound { subject: String, available: Vec<String> },
    #[error("{subject} has several current versions in scope: {}; name one with --tag/--digest or narrow the scope with --path", describe_versions(.versions))]
    Ambiguous { subject: String, versions: Vec<(Version, Vec<String>)> },
    #[error("{subject} never became version {version} on this history")]
    VersionNeverSet { subject: String, version: String },
    #[error("reading history: {0}")]
    History(#[source] E),
}

impl<E: std::error::Error + 'static> TraceError<E> {
    pub fn kind(&self) -> &'static str {
        match self {
            TraceError::NotFound { .. } => "image_not_found",
            TraceError::Ambiguous { .. } => "ambiguous",
            TraceError::VersionNeverSet { .. } => "version_not_found",
            TraceError::History(_) => "history",
        }
    }
}

fn list_hint(available: &[String]) -> String {
    if available.is_empty() {
        "; no image references at all there".to_string()
    } else {
        format!(
            "; images there, nearest first: {}",
            available.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

fn describe_versions(versions: &[(Version, Vec<String>)]) -> String {
    versions.iter().map(|(v, files)| format!("{v} in {}", files.join(", "))).collect::<Vec<_>>().join("; ")
}

/// The version being traced: exactly one, or any version matching a tag/digest filter
/// (when the asked-for version is not current any more).
#[derive(Clone, Debug)]
enum Target {
    Exact(Version),
    Filter { tag: Option<String>, digest: Option<String> },
}

impl Target {
    fn matches(&self, v: &Version) -> bool {
        match self {
            Target::Exact(x) => x == v,
            Target::Filter { tag, digest } => {
                tag.as_ref().is_none_or(|t| v.tag.as_ref() == Some(t))
                    && digest.as_ref().is_none_or(|d| v.digest.as_ref() == Some(d))
            }
        }
    }
}

struct Reader<'h, H: History> {
    history: &'h H,
    query: &'h Query,
    needle: String,
    memo: HashMap<(H::Blob, bool), Vec<Occurrence>>,
    notes: Vec<String>,
}

impl<'h, H: History> Reader<'h, H> {
    /// References to the subject in one blob (memoised: a blob is read once per search).
    fn occurrences(&mut self, path: &str, blob: H::Blob) -> Result<Vec<Occurrence>, H::Error> {
        let writeback = path.rsplit('/').next().is_some_and(|n| n.starts_with(".argocd-source"));
        if let Some(found) = self.memo.get(&(blob, writeback)) {
            return Ok(restamp(found, path));
        }
        let bytes = self.history.read(blob)?;
        let found = if !contains(&bytes, self.needle.as_bytes()) {
            Vec::new()
        } else {
            match std::str::from_utf8(&bytes) {
                Err(_) => {
                    self.notes.push(format!("{path}: not UTF-8 text, skipped"));
                    Vec::new()
                }
                Ok(text) => {
                    let ex = match &self.query.subject {
                        Subject::Image(_) => extract(path, text),
                        Subject::Key(k) => find_key(path, text, k),
                    };
                    self.notes.extend(ex.notes);
                    ex.occurrences.into_iter().filter(|o| subject_matches(&self.query.subject, o)).collect()
                }
            }
        };
        self.memo.insert((blob, writeback), found.clone());
        Ok(found)
    }

    fn count(&mut self, path: &str, blob: Option<H::Blob>, target: &Target) -> Result<usize, H::Error> {
        match blob {
            Some(b) if is_manifest_path(path) => {
                Ok(self.occurrences(path, b)?.iter().filter(|o| target.matches(&o.version)).count())
            }
            _ => Ok(0),
        }
    }
}

fn restamp(found: &[Occurrence], path: &str) -> Vec<Occurrence> {
    found
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if o.file != path {
                o.file = path.to_string();
            }
            o
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether a reference is to the subject (for an image: the repository or a kustomize alias).
pub fn subject_matches(subject: &Subject, o: &Occurrence) -> bool {
    match subject {
        Subject::Key(_) => true,
        Subject::Image(image) => {
            o.repository.as_deref().is_some_and(|r| same_repository(r, image))
                || o.aliases.iter().any(|a| same_repository(a, image))
        }
    }
}

/// The text every file that mentions the subject must contain (a cheap filter before parsing).
fn needle(subject: &Subject) -> String {
    match subject {
        Subject::Image(i) => normalise_repository(i).rsplit('/').next().unwrap_or_default().to_string(),
        Subject::Key(k) => {
            let last = k.rsplit('.').next().unwrap_or(k);
            last.split('[').next().unwrap_or(last).to_string()
        }
    }
}

/// Finds the commit, on the first-parent history of `tip`, that made the subject's version current.
pub fn find_culprit<H: History>(
    history: &H,
    tip: &CommitSha,
    query: &Query,
) -> Result<Culprit, TraceError<H::Error>> {
    let mut reader =
        Reader { history, query, needle: needle(&query.subject), memo: HashMap::new(), notes: Vec::new() };
    let files = history.files(tip).map_err(TraceError::History)?;
    let mut current = Vec::new();
    for (path, blob) in &files {
        if is_manifest_path(path) {
            current.extend(reader.occurrences(path, *blob).map_err(TraceError::History)?);
        }
    }
    let subject = query.subject.to_string();
    let wanted = Target::Filter { tag: query.tag.clone(), digest: query.digest.clone() };
    let mut versions: BTreeMap<Version, Vec<String>> = BTreeMap::new();
    for o in current.iter().filter(|o| wanted.matches(&o.version)) {
        let files = versions.entry(o.version.clone()).or_default();
        if !files.contains(&o.file) {
            files.push(o.file.clone());
        }
    }
    let target = match versions.len() {
        1 => Target::Exact(versions.into_keys().next().expect("one version")),
        // Without a filter every current reference matches, so none at all means not found.
        0 if query.tag.is_none() && query.digest.is_none() => {
            return Err(TraceError::NotFound {
                subject,
                available: nearest_images(history, &files, &query.subject)?,
            });
        }
        0 => wanted,
        _ => return Err(TraceError::Ambiguous { subject, versions: versions.into_iter().collect() }),
    };
    current.retain(|o| target.matches(&o.version));

    let mut count = 0;
    for (path, blob) in &files {
        count += reader.count(path, Some(*blob), &target).map_err(TraceError::History)?;
    }
    let mut cur = tip.clone();
    loop {
        let parent = history.first_parent(&cur).map_err(TraceError::History)?;
        let changes = history.changes(parent.as_ref(), &cur).map_err(TraceError::History)?;
        let mut parent_count = count;
        for c in &changes {
            parent_count -= reader.count(&c.path, c.new, &target).map_err(TraceError::History)?;
            parent_count += reader.count(&c.path, c.old, &target).map_err(TraceError::History)?;
        }
        if count > parent_count {
            return describe(&mut reader, &cur, parent, &changes, &target, current);
        }
        match parent {
            Some(p) => {
                cur = p;
                count = parent_count;
            }
            None => {
                let version = match &target {
                    Target::Exact(v) => v.to_string(),
                    Target::Filter { tag, digest } => {
                        Version { tag: tag.clone(), digest: digest.clone() }.to_string()
                    }
                };
                return Err(TraceError::VersionNeverSet { subject, version });
            }
        }
    }
}

fn describe<H: History>(
    reader: &mut Reader<'_, H>,
    sha: &CommitSha,
    parent: Option<CommitSha>,
    changes: &[FileChange<H::Blob>],
    target: &Target,
    current: Vec<Occurrence>,
) -> Result<Culprit, TraceError<H::Error>> {
    let h = reader.history;
    let commit = h.commit(sha).map_err(TraceError::History)?;
    let mut olds: Vec<Occurrence> = Vec::new();
    let mut news: Vec<Occurrence> = Vec::new();
    for c in changes.iter().filter(|c| is_manifest_path(&c.path)) {
        if let Some(b) = c.old {
            olds.extend(reader.occurrences(&c.path, b).map_err(TraceError::History)?);
        }
        if let Some(b) = c.new {
            news.extend(reader.occurrences(&c.path, b).map_err(TraceError::History)?);
        }
    }
    let old_versions: Vec<&Version> = dedup(olds.iter().map(|o| &o.version).filter(|v| !target.matches(v)));
    let mut site_changes = Vec::new();
    for n in news.iter().filter(|o| target.matches(&o.version)) {
        let same_slot = |o: &&Occurrence| o.slot() == n.slot();
        let old = olds
            .iter()
            .filter(|o| o.file == n.file)
            .find(same_slot)
            .or_else(|| olds.iter().find(same_slot))
            .map(|o| o.version.clone())
            .or_else(|| (old_versions.len() == 1).then(|| old_versions[0].clone()));
        if old.as_ref() == Some(&n.version) {
            continue;
        }
        site_changes.push(SiteChange {
            file: n.file.clone(),
            line: n.line,
            old,
            new: n.version.clone(),
            workload: n.workload.clone(),
        });
    }
    let previous = site_changes.iter().find_map(|c| c.old.clone());
    let changed_files: Vec<&str> = site_changes.iter().map(|c| c.file.as_str()).collect();
    let mut other_files: Vec<String> = h
        .touched(parent.as_ref(), sha)
        .map_err(TraceError::History)?
        .into_iter()
        .filter(|p| !changed_files.contains(&p.as_str()))
        .collect();
    other_files.sort();
    other_files.dedup();
    let version = match target {
        Target::Exact(v) => v.clone(),
        Target::Filter { .. } => site_changes.first().map(|c| c.new.clone()).unwrap_or_default(),
    };
    let image = match &reader.query.subject {
        Subject::Image(i) => {
            Some(news.iter().find_map(|o| o.repository.clone()).unwrap_or_else(|| i.clone()))
        }
        Subject::Key(_) => None,
    };
    Ok(Culprit {
        commit,
        parent,
        image,
        version,
        previous,
        changes: site_changes,
        other_files,
        current,
        notes: std::mem::take(&mut reader.notes),
    })
}

fn dedup<'a>(it: impl Iterator<Item = &'a Version>) -> Vec<&'a Version> {
    let mut out: Vec<&Version> = Vec::new();
    for v in it {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Every image repository in scope, nearest to the one asked for first.
fn nearest_images<H: History>(
    history: &H,
    files: &[(String, H::Blob)],
    subject: &Subject,
) -> Result<Vec<String>, TraceError<H::Error>> {
    let mut all: Vec<String> = Vec::new();
    for (path, blob) in files.iter().filter(|(p, _)| is_manifest_path(p)) {
        let bytes = history.read(*blob).map_err(TraceError::History)?;
        let Ok(text) = std::str::from_utf8(&bytes) else { continue };
        for o in extract(path, text).occurrences {
            let name = match subject {
                Subject::Image(_) => o.repository.clone(),
                Subject::Key(_) => o.key.clone(),
            };
            if let Some(n) = name
                && !all.contains(&n)
            {
                all.push(n);
            }
        }
    }
    let asked = match subject {
        Subject::Image(i) | Subject::Key(i) => i.as_str(),
    };
    all.sort_by_key(|n| (edit_distance(asked, n), n.clone()));
    Ok(all)
}

#[cfg(test)]
mod tests;
