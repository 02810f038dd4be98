//! Which commit made an image's current version current: a walk of first-parent history that
//! follows each *slot* (the field a version is written in) back from the revision asked about.
//!
//! At the tip every reference to the subject gets its slot. The walk then goes down the first
//! parents; a commit that left a tracked file alone costs a tree lookup. Where the file changed,
//! the lines of each slot are followed through a line diff, and only a slot whose own lines changed
//! is looked up in the parent's version of the file, by its identity (document and path), whatever
//! repository it named. A file that moved is followed the way git follows it (same content, or
//! at least half its lines), also through a first-parent merge. The culprit is the newest commit
//! where a slot took the version it has; its previous value is the previous version, also when
//! the registry or the repository changed in the same edit. A merge that brought the bump in is
//! the culprit; a version that comes back was made current by the latest change into it; a
//! digest-only change is a change.
//!
//! Asked about a time (`Query::at`), the walk first passes every change made after it (they are
//! returned as `later`), then names the change that made current the version running at that time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::rc::Rc;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;

use super::extract::{
    Extraction, Occurrence, SlotId, Workload, doc_matches, extract, extract_focused, find_key,
    is_manifest_path, text_of,
};
use super::image_ref::{Version, edit_distance, normalise_repository, same_repository};
use super::linediff::{LineMap, similarity};

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
    /// When the commit landed on its branch (the committer time).
    pub time: DateTime<FixedOffset>,
}

/// One file that differs between a commit and its first parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange<B> {
    pub path: String,
    pub old: Option<B>,
    pub new: Option<B>,
}

/// A file in scope at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile<B> {
    pub path: String,
    pub blob: B,
    /// A symbolic link: listed so it can be named, never read as a manifest.
    pub symlink: bool,
}

/// What the culprit search needs to know of a repository's history: git in production, a `Vec`
/// of commits in tests.
pub trait History {
    type Blob: Copy + Eq + Hash + Debug;
    type Error: std::error::Error + Send + Sync + 'static;
    fn commit(&self, sha: &CommitSha) -> Result<CommitInfo, Self::Error>;
    /// The first parent and the committer time (seconds since the epoch): read at every step.
    fn step(&self, sha: &CommitSha) -> Result<(Option<CommitSha>, i64), Self::Error>;
    /// Files in the search's scope at a commit.
    fn files(&self, sha: &CommitSha) -> Result<Vec<TreeFile<Self::Blob>>, Self::Error>;
    /// The regular file at `path` in a commit, anywhere in the tree.
    fn blob_at(&self, sha: &CommitSha, path: &str) -> Result<Option<Self::Blob>, Self::Error>;
    /// Every file that differs from the first parent, in the whole tree (all files for a root commit).
    fn changes(
        &self,
        parent: Option<&CommitSha>,
        sha: &CommitSha,
    ) -> Result<Vec<FileChange<Self::Blob>>, Self::Error>;
    fn read(&self, blob: Self::Blob) -> Result<Vec<u8>, Self::Error>;
    /// A hint: the walk goes down the first parents from `from` and asks for these paths at each
    /// commit (`None`: not known yet; none: the walk is over). An implementation may read ahead;
    /// the answers must not change.
    fn prefetch(&self, from: &CommitSha, paths: Option<&[&str]>) {
        let _ = (from, paths);
    }
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
    /// Only the references of this object: `Kind/namespace/name`, `namespace/name` or `name`.
    pub workload: Option<String>,
    /// The version running at this time rather than the newest one (last known good).
    pub at: Option<DateTime<Utc>>,
    /// What to do when the subject has several current versions in scope and none was named.
    pub several: Several,
}

/// Several current versions of the subject in scope, none named by the question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Several {
    /// Say so (`TraceError::Ambiguous`): which version runs depends on the workload (`trace`).
    #[default]
    AreAmbiguous,
    /// Name the newest change to any of them, and say which others there are (`revert`: undo the
    /// latest bump of this subject in scope).
    NameTheNewestChange,
}

impl Query {
    pub fn new(subject: Subject) -> Query {
        Query { subject, tag: None, digest: None, workload: None, at: None, several: Several::default() }
    }
}

/// One reference the culprit changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteChange {
    /// Where it was at the culprit.
    pub file: String,
    pub line: usize,
    pub slot: SlotId,
    /// `None`: the reference first appeared there.
    pub old: Option<Version>,
    pub new: Version,
    pub workload: Option<Workload>,
    /// The repository it named before, when the culprit changed that too.
    pub old_repository: Option<String>,
    /// The same reference at the revision searched from.
    pub tip: Occurrence,
}

/// A later change of a slot the culprit changed (made after the time asked about, or after the
/// version asked about).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaterChange {
    pub commit: CommitSha,
    pub summary: String,
    pub time: DateTime<FixedOffset>,
    pub file: String,
    pub slot: SlotId,
    pub old: Option<Version>,
    pub new: Version,
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
    /// Changes of the same references after the culprit, newest first: they follow the first bad one.
    pub later: Vec<LaterChange>,
    pub other_files: Vec<String>,
    /// Files passed over or read by the fallback, other readings, with the reason.
    pub notes: Vec<String>,
}

impl Culprit {
    /// The references the culprit changed, as they stand at the revision searched from.
    pub fn current(&self) -> impl Iterator<Item = &Occurrence> {
        self.changes.iter().map(|c| &c.tip)
    }

    /// The later change that set the references back to what they were before the culprit, when
    /// every one of them is back there now (a revert that landed, a rollback by hand).
    pub fn set_back_by(&self) -> Option<&LaterChange> {
        let back =
            !self.changes.is_empty() && self.changes.iter().all(|c| c.old.as_ref() == Some(&c.tip.version));
        if !back {
            return None;
        }
        self.later
            .iter()
            .find(|l| self.changes.iter().any(|c| c.slot == l.slot && c.old.as_ref() == Some(&l.new)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError<E: std::error::Error + 'static> {
    #[error("{subject} not found in scope{}", list_hint(.available))]
    NotFound { subject: String, available: Vec<String> },
    #[error("{subject} has several current versions in scope: {}; name one with --tag/--digest, narrow the scope with --path, or name the object with --workload", describe_versions(.versions))]
    Ambiguous { subject: String, versions: Vec<(Version, Vec<String>)> },
    #[error(
        "{subject} is in scope, but not in {workload}: it is in {}; name one of these with --workload, or leave it out",
        .objects.join(", ")
    )]
    NotInObject { subject: String, workload: String, objects: Vec<String> },
    #[error("{subject} never became version {version} on this history")]
    VersionNeverSet { subject: String, version: String },
    #[error("{subject} was not in scope at {at}: every reference to it was added later")]
    NotRunningAt { subject: String, at: String },
    #[error("reading history: {0}")]
    History(#[source] E),
}

impl<E: std::error::Error + 'static> TraceError<E> {
    pub fn kind(&self) -> &'static str {
        match self {
            TraceError::NotFound { .. } => "image_not_found",
            TraceError::NotInObject { .. } => "workload_not_found",
            TraceError::Ambiguous { .. } => "ambiguous",
            TraceError::VersionNeverSet { .. } => "version_not_found",
            TraceError::NotRunningAt { .. } => "not_running_at",
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

/// The version being traced.
#[derive(Clone, Debug)]
enum Target {
    /// Exactly this one (the one current in scope).
    Exact(Version),
    /// Any version matching a tag/digest filter (when the one asked for is not current any more).
    Filter { tag: Option<String>, digest: Option<String> },
    /// Whatever each reference holds (asked about a time).
    Any,
}

impl Target {
    fn matches(&self, v: &Version) -> bool {
        match self {
            Target::Exact(x) => x == v,
            Target::Filter { tag, digest } => {
                tag.as_ref().is_none_or(|t| v.tag.as_ref() == Some(t))
                    && digest.as_ref().is_none_or(|d| v.digest.as_ref() == Some(d))
            }
            Target::Any => true,
        }
    }
}

/// Whether a reference is to the subject (for an image: the repository or a kustomize alias).
pub fn subject_matches(subject: &Subject, o: &Occurrence) -> bool {
    match subject {
        Subject::Key(k) => o.answers_to_key(k),
        Subject::Image(image) => {
            o.repository.as_deref().is_some_and(|r| same_repository(r, image))
                || o.aliases.iter().any(|a| same_repository(a, image))
        }
    }
}

/// Whether a reference belongs to the object a person named (`Kind/ns/name`, `ns/name`, `name`).
pub fn workload_matches(asked: &str, o: &Occurrence) -> bool {
    doc_matches(&o.slot.doc, asked)
        || o.workload.as_ref().is_some_and(|w| {
            doc_matches(&format!("{}/{}/{}", w.kind, w.namespace.as_deref().unwrap_or(""), w.name), asked)
        })
}

/// Where a reference is, for a person: the file, and the object when the file names one.
fn object_place(o: &Occurrence) -> String {
    match &o.slot.doc {
        d if d.starts_with("doc") || d == "lines" => format!("{} (no named object)", o.file),
        d => format!("{} in {}", d.replace("//", "/"), o.file),
    }
}

/// The text every file that mentions the subject must contain at the tip (a cheap filter).
fn needle(subject: &Subject) -> String {
    match subject {
        Subject::Image(i) => normalise_repository(i).rsplit('/').next().unwrap_or_default().to_string(),
        Subject::Key(k) => {
            let k = k.rsplit('|').next().unwrap_or(k);
            let last = k.rsplit('.').next().unwrap_or(k);
            let last = last.split('[').next().unwrap_or(last);
            if last.is_empty() {
                k.split('[').nth(1).unwrap_or("").split(['=', ']']).nth(1).unwrap_or("").to_string()
            } else {
                last.to_string()
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || memchr::memmem::find(hay, needle).is_some()
}

/// Every file a commit changed, shared.
type Changes<B> = Rc<Vec<FileChange<B>>>;

/// A file at a path in the parent, and a reference in it.
type Found<B, T> = Option<(String, B, T)>;

/// Reads blobs and their references, each blob once per search.
struct Reader<'h, H: History> {
    history: &'h H,
    subject: Subject,
    /// Text every document that refers to the subject contains.
    needle: String,
    texts: HashMap<H::Blob, Rc<str>>,
    /// Per blob, whether it is a write-back file, and the object names the reading focused on.
    extractions: HashMap<(H::Blob, bool, String), Rc<Extraction>>,
    changes: HashMap<CommitSha, Rc<Vec<FileChange<H::Blob>>>>,
    notes: Vec<String>,
}

impl<'h, H: History> Reader<'h, H> {
    fn text(&mut self, path: &str, blob: H::Blob) -> Result<Rc<str>, H::Error> {
        if let Some(t) = self.texts.get(&blob) {
            return Ok(t.clone());
        }
        let bytes = self.history.read(blob)?;
        let (text, note) = text_of(path, &bytes);
        if let Some(n) = note
            && !self.notes.contains(&n)
        {
            self.notes.push(n);
        }
        let text: Rc<str> = text.into();
        self.texts.insert(blob, text.clone());
        Ok(text)
    }

    /// Every reference in a blob (in key mode: those the key names), stamped with `path`.
    fn extraction(&mut self, path: &str, blob: H::Blob) -> Result<Rc<Extraction>, H::Error> {
        self.extraction_for(path, blob, &[])
    }

    /// The references in a blob's documents that mention the subject or one of `objects` (names
    /// of objects followed there): a long stream of documents is read only where it matters.
    fn extraction_for(
        &mut self,
        path: &str,
        blob: H::Blob,
        objects: &[&str],
    ) -> Result<Rc<Extraction>, H::Error> {
        let writeback = path.rsplit('/').next().is_some_and(|n| n.starts_with(".argocd-source"));
        let key = (blob, writeback, objects.join("\n"));
        if let Some(e) = self.extractions.get(&key) {
            if e.occurrences.first().is_none_or(|o| o.file == path) {
                return Ok(e.clone());
            }
            let mut e = (**e).clone();
            e.occurrences.iter_mut().for_each(|o| o.file = path.to_string());
            return Ok(Rc::new(e));
        }
        let text = self.text(path, blob)?;
        let ex = match &self.subject {
            Subject::Image(_) => {
                let focus: Vec<&str> =
                    std::iter::once(self.needle.as_str()).chain(objects.iter().copied()).collect();
                extract_focused(path, &text, &focus)
            }
            Subject::Key(k) => find_key(path, &text, k),
        };
        for n in &ex.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
        let ex = Rc::new(ex);
        self.extractions.insert(key, ex.clone());
        Ok(ex)
    }

    fn changes(&mut self, parent: &CommitSha, sha: &CommitSha) -> Result<Changes<H::Blob>, H::Error> {
        if let Some(c) = self.changes.get(sha) {
            return Ok(c.clone());
        }
        let c = Rc::new(self.history.changes(Some(parent), sha)?);
        self.changes.insert(sha.clone(), c.clone());
        Ok(c)
    }
}

/// A file the walk follows, as it is at the commit being looked at.
struct Track<B> {
    path: String,
    blob: B,
    text: Rc<str>,
}

/// One reference the walk follows.
struct Followed {
    tip: Occurrence,
    /// Its identity in the version of the file being looked at (a document may be renamed).
    id: SlotId,
    track: usize,
    value: Version,
    repository: Option<String>,
    region: (usize, usize),
    line: usize,
    alive: bool,
    /// Changes passed over on the way (after the time or version asked about), newest first.
    later: Vec<(CommitSha, String, Option<Version>, Version)>,
}

/// A slot's value changing at the commit being looked at.
struct Transition {
    slot: usize,
    old: Option<Version>,
    old_repository: Option<String>,
    file: String,
    line: usize,
}

/// Finds the commit, on the first-parent history of `tip`, that made the subject's version current.
pub fn find_culprit<H: History>(
    history: &H,
    tip: &CommitSha,
    query: &Query,
) -> Result<Culprit, TraceError<H::Error>> {
    let mut reader = Reader {
        history,
        needle: needle(&query.subject),
        subject: query.subject.clone(),
        texts: HashMap::new(),
        extractions: HashMap::new(),
        changes: HashMap::new(),
        notes: Vec::new(),
    };
    let subject = query.subject.to_string();
    let needle = needle(&query.subject);
    history.prefetch(tip, None);
    let files = history.files(tip).map_err(TraceError::History)?;
    // The references to the subject at the tip, per file.
    let mut found: Vec<(&TreeFile<H::Blob>, Vec<Occurrence>)> = Vec::new();
    // References to the subject outside the object asked about (`--workload`), to name them.
    let mut other_objects: Vec<String> = Vec::new();
    for f in &files {
        if !is_manifest_path(&f.path) {
            continue;
        }
        if f.symlink {
            reader.notes.push(format!(
                "{}: a symbolic link, not read (name the file it points to with --path)",
                f.path
            ));
            continue;
        }
        let bytes = history.read(f.blob).map_err(TraceError::History)?;
        if !contains(&bytes, needle.as_bytes()) {
            continue;
        }
        let ex = reader.extraction(&f.path, f.blob).map_err(TraceError::History)?;
        let (mine, elsewhere): (Vec<Occurrence>, Vec<Occurrence>) = ex
            .occurrences
            .iter()
            .filter(|o| subject_matches(&query.subject, o))
            .cloned()
            .partition(|o| query.workload.as_deref().is_none_or(|w| workload_matches(w, o)));
        for o in elsewhere {
            let place = object_place(&o);
            if !other_objects.contains(&place) {
                other_objects.push(place);
            }
        }
        if !mine.is_empty() {
            found.push((f, mine));
        }
    }
    if let (true, Some(w)) = (found.is_empty() && !other_objects.is_empty(), &query.workload) {
        return Err(TraceError::NotInObject { subject, workload: w.clone(), objects: other_objects });
    }
    if found.is_empty() {
        return Err(TraceError::NotFound {
            subject,
            available: nearest(&mut reader, &files, &query.subject)?,
        });
    }
    let wanted = Target::Filter { tag: query.tag.clone(), digest: query.digest.clone() };
    let any_filter = query.tag.is_some() || query.digest.is_some();
    let mut versions: BTreeMap<Version, Vec<String>> = BTreeMap::new();
    for o in found.iter().flat_map(|(_, os)| os).filter(|o| wanted.matches(&o.version)) {
        // Where, and in which object when the file names one (for --workload).
        let place = match &o.slot.doc {
            d if d.starts_with("doc") || d == "lines" => o.file.clone(),
            d => format!("{} ({})", o.file, d.replace("//", "/")),
        };
        let places = versions.entry(o.version.clone()).or_default();
        if !places.contains(&place) {
            places.push(place);
        }
    }
    let target = if query.at.is_some() && !any_filter {
        Target::Any
    } else if versions.is_empty() {
        wanted
    } else if versions.len() == 1 {
        Target::Exact(versions.into_keys().next().unwrap_or_default())
    } else if query.several == Several::NameTheNewestChange && !any_filter {
        reader.notes.push(format!(
            "{subject} has several current versions in scope ({}): the newest change to any of them is named; \
             name one with --tag/--digest, --path or --workload to pick another",
            describe_versions(&versions.into_iter().collect::<Vec<_>>())
        ));
        Target::Any
    } else {
        return Err(TraceError::Ambiguous { subject, versions: versions.into_iter().collect() });
    };

    // One track per file, one followed slot per reference (with a current version: only those).
    let mut tracks: Vec<Track<H::Blob>> = Vec::new();
    let mut slots: Vec<Followed> = Vec::new();
    for (f, occurrences) in found {
        let mine: Vec<Occurrence> = match &target {
            Target::Exact(v) => occurrences.into_iter().filter(|o| &o.version == v).collect(),
            _ => occurrences,
        };
        if mine.is_empty() {
            continue;
        }
        let text = reader.text(&f.path, f.blob).map_err(TraceError::History)?;
        tracks.push(Track { path: f.path.clone(), blob: f.blob, text });
        for o in mine {
            slots.push(Followed {
                id: o.slot.clone(),
                track: tracks.len() - 1,
                value: o.version.clone(),
                repository: o.repository.clone(),
                region: o.region,
                line: o.line,
                alive: true,
                later: Vec::new(),
                tip: o,
            });
        }
    }

    let at = query.at.map(|t| t.timestamp());
    let mut cur = tip.clone();
    let mut followed: Vec<String> = Vec::new();
    loop {
        let paths: Vec<String> = tracks
            .iter()
            .enumerate()
            .filter(|(ti, _)| slots.iter().any(|s| s.alive && s.track == *ti))
            .map(|(_, t)| t.path.clone())
            .collect();
        if paths != followed {
            history.prefetch(&cur, Some(&paths.iter().map(String::as_str).collect::<Vec<_>>()));
            followed = paths;
        }
        let (parent, time) = history.step(&cur).map_err(TraceError::History)?;
        let passing = at.is_some_and(|at| time > at);
        let transitions = step(&mut reader, &mut tracks, &mut slots, &cur, parent.as_ref(), &needle)?;
        let transitions = drop_copies(transitions, &mut slots, &cur, &mut reader.notes);
        let mut culprits = Vec::new();
        for t in transitions {
            let s = &mut slots[t.slot];
            if !passing && target.matches(&s.value) {
                culprits.push(t);
                continue;
            }
            // A change after the time or version asked about: passed over, and remembered.
            s.later.push((cur.clone(), t.file.clone(), t.old.clone(), s.value.clone()));
            match t.old {
                Some(old) => {
                    s.value = old;
                    s.repository = t.old_repository.or(s.repository.take());
                }
                None => s.alive = false,
            }
        }
        if !culprits.is_empty() {
            // The walk is over: nothing more to read ahead.
            history.prefetch(&cur, Some(&[]));
            return describe(&mut reader, &cur, parent, culprits, &slots, &target, &query.subject);
        }
        let ended = match parent {
            Some(p) if slots.iter().any(|s| s.alive) => {
                cur = p;
                false
            }
            _ => true,
        };
        if ended {
            return Err(match (&query.at, &target) {
                (Some(at), Target::Any) => TraceError::NotRunningAt { subject, at: at.to_rfc3339() },
                _ => TraceError::VersionNeverSet { subject, version: version_asked(query, &target) },
            });
        }
    }
}

/// A reference that first appears holding a version another followed reference already had
/// (a second Deployment added with the running image) did not make that version current: it is
/// dropped, and the walk goes on for the others.
fn drop_copies(
    transitions: Vec<Transition>,
    slots: &mut [Followed],
    cur: &CommitSha,
    notes: &mut Vec<String>,
) -> Vec<Transition> {
    if transitions.iter().any(|t| t.old.is_some()) {
        return transitions;
    }
    let moving: Vec<usize> = transitions.iter().map(|t| t.slot).collect();
    let mut kept = Vec::new();
    for t in transitions {
        let v = slots[t.slot].value.clone();
        let elsewhere =
            slots.iter().enumerate().find(|(i, o)| o.alive && !moving.contains(i) && o.value == v);
        match elsewhere {
            Some((_, o)) => {
                notes.push(format!(
                    "{} ({}) first appeared in {} with {v}, which {} already had: not what made it current",
                    slots[t.slot].tip.slot,
                    t.file,
                    cur.short(),
                    o.tip.slot
                ));
                slots[t.slot].alive = false;
            }
            None => kept.push(t),
        }
    }
    kept
}

fn version_asked(query: &Query, target: &Target) -> String {
    match target {
        Target::Exact(v) => v.to_string(),
        _ => Version { tag: query.tag.clone(), digest: query.digest.clone() }.to_string(),
    }
}

/// One commit: every followed slot whose value differs from the first parent's (or that first
/// appears here). Tracks and slots move to the parent's state.
#[allow(clippy::needless_range_loop)] // tracks grow inside the loop: new ones are already in the parent's state
fn step<H: History>(
    reader: &mut Reader<'_, H>,
    tracks: &mut Vec<Track<H::Blob>>,
    slots: &mut [Followed],
    cur: &CommitSha,
    parent: Option<&CommitSha>,
    needle: &str,
) -> Result<Vec<Transition>, TraceError<H::Error>> {
    let history = reader.history;
    let mut out = Vec::new();
    let mut moves: Vec<(usize, String, H::Blob, Occurrence)> = Vec::new();
    for ti in 0..tracks.len() {
        let live: Vec<usize> =
            (0..slots.len()).filter(|i| slots[*i].alive && slots[*i].track == ti).collect();
        if live.is_empty() {
            continue;
        }
        let Some(parent) = parent else {
            // The root commit: everything still followed first appears here.
            for i in live {
                out.push(appeared(i, &slots[i], &tracks[ti]));
            }
            continue;
        };
        let path = tracks[ti].path.clone();
        let old_blob = history.blob_at(parent, &path).map_err(TraceError::History)?;
        if old_blob == Some(tracks[ti].blob) {
            continue;
        }
        let source = match old_blob {
            Some(b) => Some((path.clone(), b, ())),
            None => moved_from(reader, parent, cur, &tracks[ti], needle)?,
        };
        let Some((old_path, old_blob, ())) = source else {
            // Added here, from nothing git would call the same file: look for each slot's document
            // elsewhere in the parent before concluding it first appears here.
            for i in live {
                let mut t = appeared(i, &slots[i], &tracks[ti]);
                if let Some((p, b, o)) = same_object_elsewhere(reader, parent, cur, &slots[i])? {
                    (t.old, t.old_repository) = (Some(o.version.clone()), o.repository.clone());
                    let unchanged = t.old.as_ref() == Some(&slots[i].value);
                    moves.push((i, p.clone(), b, o.clone()));
                    if unchanged {
                        continue;
                    }
                }
                out.push(t);
            }
            continue;
        };
        if old_blob == tracks[ti].blob {
            tracks[ti].path = old_path;
            continue;
        }
        let old_text = reader.text(&old_path, old_blob).map_err(TraceError::History)?;
        let map = LineMap::between(&old_text, &tracks[ti].text);
        let mut old_ex: Option<Rc<Extraction>> = None;
        // Where the followed objects are, to read there (an unnamed document: everywhere).
        let names: Vec<String> = live.iter().map(|i| object_name(&slots[*i].id.doc).to_string()).collect();
        for i in live {
            let s = &mut slots[i];
            if let Some(shift) = map.unchanged(s.region.0, s.region.1) {
                s.region = (shift_line(s.region.0, shift), shift_line(s.region.1, shift));
                s.line = shift_line(s.line, shift);
                continue;
            }
            let ex = match &old_ex {
                Some(e) => e.clone(),
                None => {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let e =
                        reader.extraction_for(&old_path, old_blob, &names).map_err(TraceError::History)?;
                    old_ex = Some(e.clone());
                    e
                }
            };
            match same_slot(&ex, s, map.line_in_hunk(s.line)) {
                Some(o) => {
                    if o.version != s.value {
                        out.push(Transition {
                            slot: i,
                            old: Some(o.version.clone()),
                            old_repository: o.repository.clone(),
                            file: tracks[ti].path.clone(),
                            line: s.line,
                        });
                    }
                    s.region = o.region;
                    s.line = o.line;
                    s.id = o.slot.clone();
                }
                None => out.push(appeared(i, s, &tracks[ti])),
            }
        }
        tracks[ti] = Track { path: old_path, blob: old_blob, text: old_text };
    }
    // Slots whose object moved from another file continue there.
    for (i, path, blob, o) in moves {
        let ti = match tracks.iter().position(|t| t.path == path && t.blob == blob) {
            Some(ti) => ti,
            None => {
                let text = reader.text(&path, blob).map_err(TraceError::History)?;
                tracks.push(Track { path, blob, text });
                tracks.len() - 1
            }
        };
        let s = &mut slots[i];
        (s.track, s.region, s.line, s.id) = (ti, o.region, o.line, o.slot.clone());
    }
    Ok(out)
}

fn appeared<B>(i: usize, s: &Followed, t: &Track<B>) -> Transition {
    Transition { slot: i, old: None, old_repository: None, file: t.path.clone(), line: s.line }
}

fn shift_line(line: usize, shift: isize) -> usize {
    (line as isize + shift).max(1) as usize
}

/// The same slot in another version of its file: by identity; else, when the document was
/// restructured, the one reference to the same repository (with the same value, or the only one).
fn same_slot<'e>(ex: &'e Extraction, s: &Followed, old_line: Option<usize>) -> Option<&'e Occurrence> {
    let all = &ex.occurrences;
    if let Some(o) = all.iter().find(|o| o.slot == s.id) {
        return Some(o);
    }
    // The object was renamed around it (a namespace added or dropped): same kind, name and path.
    let same_object = |o: &&Occurrence| same_object(&o.slot.doc, &s.id.doc);
    if let Some(o) = all.iter().filter(same_object).find(|o| o.slot.path == s.id.path) {
        return Some(o);
    }
    // The line the version was on, when the change replaced it line for line.
    let same_repo = |o: &&Occurrence| match (o.repository.as_deref(), s.repository.as_deref()) {
        (Some(a), Some(b)) => same_repository(a, b),
        _ => false,
    };
    if let Some(l) = old_line
        && let Some(o) = all.iter().find(|o| o.line == l && (o.slot.path == s.id.path || same_repo(o)))
    {
        return Some(o);
    }
    // The document was restructured: the one reference to the same repository in the same object.
    let candidates: Vec<&Occurrence> = all.iter().filter(same_object).filter(same_repo).collect();
    let same_value: Vec<&&Occurrence> = candidates.iter().filter(|o| o.version == s.value).collect();
    match (same_value.len(), candidates.len()) {
        (1, _) => Some(same_value[0]),
        (0, 1) => Some(candidates[0]),
        _ => None,
    }
}

/// The name in a document identity (`Kind/ns/name`), or nothing for an unnamed one (`doc3`).
fn object_name(doc: &str) -> &str {
    if doc.starts_with("doc") || doc == "lines" { "" } else { doc.rsplit('/').next().unwrap_or("") }
}

/// Whether two document identities name the same object: equal, or the same kind and name with the
/// namespace written in one and not (or differently) in the other.
fn same_object(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    matches!((&pa[..], &pb[..]), ([ka, _, na], [kb, _, nb]) if ka == kb && na == nb)
}

/// Where git would say the file at `track` came from, when the parent has nothing at its path:
/// a file deleted in the same commit with the same content, or the most similar one (≥ 50%).
fn moved_from<H: History>(
    reader: &mut Reader<'_, H>,
    parent: &CommitSha,
    cur: &CommitSha,
    track: &Track<H::Blob>,
    needle: &str,
) -> Result<Found<H::Blob, ()>, TraceError<H::Error>> {
    let changes = reader.changes(parent, cur).map_err(TraceError::History)?;
    let deleted: Vec<(&str, H::Blob)> =
        changes.iter().filter(|c| c.new.is_none()).filter_map(|c| Some((c.path.as_str(), c.old?))).collect();
    if let Some((p, b)) = deleted.iter().find(|(_, b)| *b == track.blob) {
        return Ok(Some((p.to_string(), *b, ())));
    }
    let name = track.path.rsplit('/').next().unwrap_or("");
    let mut candidates: Vec<(&str, H::Blob)> =
        deleted.into_iter().filter(|(p, _)| is_manifest_path(p)).collect();
    // Same file name first, then the rest; a restructuring of thousands of files is bounded.
    candidates.sort_by_key(|(p, _)| p.rsplit('/').next() != Some(name));
    let mut best: Option<(f64, String, H::Blob)> = None;
    for (p, b) in candidates.into_iter().take(400) {
        let text = reader.text(p, b).map_err(TraceError::History)?;
        if !needle.is_empty() && !text.contains(needle) && p.rsplit('/').next() != Some(name) {
            continue;
        }
        let score = similarity(&text, &track.text);
        if score >= 0.5 && best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, p.to_string(), b));
        }
    }
    Ok(best.map(|(_, p, b)| (p, b, ())))
}

/// A named object's slot in another file of the parent that the commit changed or deleted (a
/// multi-document file split in two, an object moved between files).
fn same_object_elsewhere<H: History>(
    reader: &mut Reader<'_, H>,
    parent: &CommitSha,
    cur: &CommitSha,
    s: &Followed,
) -> Result<Found<H::Blob, Occurrence>, TraceError<H::Error>> {
    if s.id.doc.starts_with("doc") || s.id.doc == "lines" {
        return Ok(None);
    }
    let changes = reader.changes(parent, cur).map_err(TraceError::History)?;
    let doc_name = s.id.doc.rsplit('/').next().unwrap_or("").to_string();
    for c in changes.iter().filter(|c| is_manifest_path(&c.path)) {
        let Some(old) = c.old else { continue };
        let text = reader.text(&c.path, old).map_err(TraceError::History)?;
        if !text.contains(doc_name.as_str()) {
            continue;
        }
        let ex = reader.extraction_for(&c.path, old, &[doc_name.as_str()]).map_err(TraceError::History)?;
        if let Some(o) = ex.occurrences.iter().find(|o| o.slot == s.id) {
            return Ok(Some((c.path.clone(), old, o.clone())));
        }
    }
    Ok(None)
}

fn describe<H: History>(
    reader: &mut Reader<'_, H>,
    sha: &CommitSha,
    parent: Option<CommitSha>,
    culprits: Vec<Transition>,
    slots: &[Followed],
    target: &Target,
    subject: &Subject,
) -> Result<Culprit, TraceError<H::Error>> {
    let h = reader.history;
    let commit = h.commit(sha).map_err(TraceError::History)?;
    let mut changes = Vec::new();
    let mut later = Vec::new();
    for t in &culprits {
        let s = &slots[t.slot];
        changes.push(SiteChange {
            file: t.file.clone(),
            line: t.line,
            slot: s.tip.slot.clone(),
            old: t.old.clone(),
            new: s.value.clone(),
            workload: s.tip.workload.clone(),
            old_repository: t
                .old_repository
                .clone()
                .filter(|r| s.repository.as_deref().is_some_and(|now| !same_repository(now, r))),
            tip: s.tip.clone(),
        });
        for (c, file, old, new) in &s.later {
            let info = h.commit(c).map_err(TraceError::History)?;
            later.push(LaterChange {
                commit: c.clone(),
                summary: info.summary,
                time: info.time,
                file: file.clone(),
                slot: s.tip.slot.clone(),
                old: old.clone(),
                new: new.clone(),
            });
        }
    }
    later.sort_by_key(|l| std::cmp::Reverse(l.time));
    let version = changes[0].new.clone();
    let previous = changes.iter().find_map(|c| c.old.clone());
    let changed_files: Vec<&str> = changes.iter().map(|c| c.file.as_str()).collect();
    let mut other_files: Vec<String> = h
        .changes(parent.as_ref(), sha)
        .map_err(TraceError::History)?
        .into_iter()
        .map(|c| c.path)
        .filter(|p| !changed_files.contains(&p.as_str()))
        .collect();
    other_files.sort();
    other_files.dedup();
    let mut notes = std::mem::take(&mut reader.notes);
    let culprit_slots: Vec<usize> = culprits.iter().map(|t| t.slot).collect();
    for (i, s) in slots.iter().enumerate() {
        if s.alive && !culprit_slots.contains(&i) && target.matches(&s.value) {
            notes.push(format!(
                "{} {} is also in {} ({}), made so before {}: only the newest change is named",
                s.tip.repository.as_deref().unwrap_or("the tag"),
                s.value,
                s.tip.file,
                s.tip.slot,
                sha.short()
            ));
        }
    }
    let image = match subject {
        Subject::Image(i) => Some(changes[0].tip.repository.clone().unwrap_or_else(|| i.clone())),
        Subject::Key(_) => None,
    };
    Ok(Culprit { commit, parent, image, version, previous, changes, later, other_files, notes })
}

/// Every image repository in scope, nearest to the one asked for first.
fn nearest<H: History>(
    reader: &mut Reader<'_, H>,
    files: &[TreeFile<H::Blob>],
    subject: &Subject,
) -> Result<Vec<String>, TraceError<H::Error>> {
    let mut all: Vec<String> = Vec::new();
    for f in files.iter().filter(|f| is_manifest_path(&f.path) && !f.symlink) {
        let text = reader.text(&f.path, f.blob).map_err(TraceError::History)?;
        for o in extract(&f.path, &text).occurrences {
            let name = match subject {
                Subject::Image(_) => o.repository.clone(),
                Subject::Key(_) => Some(o.slot.path.clone()),
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
