//! The culprit search's view of a repository (the domain's `History`), built for long
//! first-parent walks on a cold process.
//!
//! - Commits, trees and blobs are read straight from the pack files (`pack.rs`: no libgit2 object
//!   allocation, no lock shared between threads, deltas applied with a cache of recent bases); a
//!   commit only up to its `committer` line. Loose objects are read through libgit2.
//! - A path is looked up by following its chain of trees from the root, reading a tree only when
//!   the entry above it changed: a commit that left a directory alone costs one root tree.
//! - Two threads read ahead, one following the first parents from the tip, the other looking up
//!   the paths the search follows at each of those commits, while this thread reads and compares
//!   the files that changed: the three share the machine's cores. The search names its paths with
//!   [`History::prefetch`]; anything it asks for that was not read ahead is read here. When the
//!   search is over (or this view is dropped), both threads stop.
//! - What changed between two commits is found by comparing their trees raw, opening only the
//!   subtrees whose ids differ.
//! - In a long-running process ([`remember_across_walks`]: `serve`), the commits of a walk's first
//!   5,000 and which entries differ between two large trees seen one after the other on a path
//!   (compared the second time the pair is seen) are kept for the next walks (both are named by
//!   their ids, so never stale): a storm of incidents on one repository walks the same recent
//!   history again and again, and reads it about twice.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use git2::{ObjectType, Odb, Oid, Repository, TreeWalkMode, TreeWalkResult};

use super::git::{MODE_COMMIT, MODE_LINK, MODE_TREE, info, oid, sha, side_by_side};
use super::pack::{Object, Packs};
use crate::domain::culprit::{CommitInfo, CommitSha, FileChange, History, TreeFile};

/// Objects read by a history walk, and the time spent reading them.
#[derive(Clone, Debug, Default)]
pub struct WalkStats {
    pub commits: u32,
    pub trees: u32,
    pub blobs: u32,
    pub blob_bytes: u64,
    pub commit_time: Duration,
    pub tree_time: Duration,
    pub blob_time: Duration,
    /// Steps answered by the read-ahead thread.
    pub read_ahead: u32,
}

/// A commit's root tree, first parent and committer time (seconds since the epoch).
#[derive(Clone, Copy, Debug)]
struct RawCommit {
    tree: Oid,
    parent: Option<Oid>,
    time: i64,
}

/// A tree entry's id and mode.
type Entry = (Oid, u32);

/// The names whose entries differ between two trees.
type Names = Arc<[Box<[u8]>]>;

/// What walks keep for the next ones, once [`remember_across_walks`] is called.
#[derive(Default)]
struct Remembered {
    commits: HashMap<Oid, RawCommit>,
    /// (tree, the next tree seen at the same place of a path) → the names whose entries differ.
    tree_diffs: HashMap<(Oid, Oid), Names>,
    /// Pairs of large trees seen once: compared the second time (a walk that is never repeated
    /// pays nothing for the comparison).
    seen: std::collections::HashSet<(Oid, Oid)>,
}

/// Commits from the tip that a walk remembers (and, per path, tree lookups): a storm's incidents
/// are recent deploys, a walk far down the history is rare and would only fill the memory.
const REMEMBER_DEPTH: usize = 5_000;

/// Entries kept at most of each kind (about 2 MB of commits, a few MB of tree differences with a
/// name or two each); past that, that kind starts afresh.
const REMEMBERED: usize = 50_000;

/// A tree this large (bytes of the object: ~64 entries) is worth comparing and remembering; a
/// smaller one is read again faster than the comparison.
const LARGE_TREE: usize = 2048;

static REMEMBER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn remembered() -> std::sync::MutexGuard<'static, Remembered> {
    static R: std::sync::OnceLock<Mutex<Remembered>> = std::sync::OnceLock::new();
    R.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// From now on, history walks in this process keep what they read for the next ones (see the
/// module's doc). For a long-running process; a one-off `trace` would only pay for it.
pub fn remember_across_walks() {
    REMEMBER.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn remembering() -> bool {
    REMEMBER.load(std::sync::atomic::Ordering::Relaxed)
}

/// The names whose entries differ between two raw tree objects (present on one side only, or
/// with another id or mode). Both are in git's order (a directory's name as if it ended in '/').
fn differing_names(a: &[u8], b: &[u8]) -> Vec<Box<[u8]>> {
    let (xs, ys) = (tree_entries(a), tree_entries(b));
    side_by_side(&xs, &ys, |(name, e)| (name, e.1 == MODE_TREE))
        .filter(|(x, y)| x.map(|e| e.1) != y.map(|e| e.1))
        .map(|(x, y)| Box::from(x.or(y).map(|e| e.0).unwrap_or_default()))
        .collect()
}

/// Reads a commit's header fields: from the head of the packed object when it is there, else
/// through libgit2.
fn read_commit(
    odb: &Odb<'_>,
    packs: &mut Packs,
    c: Oid,
    stats: &mut WalkStats,
    remember: bool,
) -> Result<RawCommit, git2::Error> {
    if remembering()
        && let Some(raw) = remembered().commits.get(&c)
    {
        return Ok(*raw);
    }
    let started = Instant::now();
    let raw = match packs.commit_head(c) {
        Some(head) => parse_commit(head)?,
        None => parse_commit(odb.read(c)?.data())?,
    };
    stats.commits += 1;
    stats.commit_time += started.elapsed();
    if remember {
        let mut r = remembered();
        if r.commits.len() >= REMEMBERED {
            r.commits.clear();
        }
        r.commits.insert(c, raw);
    }
    Ok(raw)
}

fn parse_commit(data: &[u8]) -> Result<RawCommit, git2::Error> {
    let mut tree = None;
    let mut parent = None;
    let mut time = 0;
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(hex) = line.strip_prefix(b"tree ") {
            tree = Some(Oid::from_str(std::str::from_utf8(hex).unwrap_or(""))?);
        } else if let Some(hex) = line.strip_prefix(b"parent ") {
            if parent.is_none() {
                parent = Some(Oid::from_str(std::str::from_utf8(hex).unwrap_or(""))?);
            }
        } else if let Some(rest) = line.strip_prefix(b"committer ") {
            // `Name <email> 1700000000 +0100`
            let after = rest.iter().rposition(|b| *b == b'>').map(|i| &rest[i + 1..]).unwrap_or(rest);
            let secs = std::str::from_utf8(after).unwrap_or("").split_whitespace().next().unwrap_or("0");
            time = secs.parse().unwrap_or(0);
        }
    }
    let tree = tree.ok_or_else(|| git2::Error::from_str("commit without a tree"))?;
    Ok(RawCommit { tree, parent, time })
}

/// Finds `name` in a raw tree object (`<mode> <name>\0<20-byte id>`...) without parsing it all:
/// its id and mode (octal, as written).
pub(super) fn tree_entry(data: &[u8], name: &[u8]) -> Option<Entry> {
    let mut i = 0;
    while i < data.len() {
        let space = i + memchr::memchr(b' ', &data[i..])?;
        let nul = space + 1 + memchr::memchr(0, &data[space + 1..])?;
        let id_end = nul + 1 + 20;
        if id_end > data.len() {
            return None;
        }
        if &data[space + 1..nul] == name {
            let mode = data[i..space].iter().fold(0u32, |m, d| m * 8 + u32::from(d.wrapping_sub(b'0')));
            return Oid::from_bytes(&data[nul + 1..id_end]).ok().map(|o| (o, mode));
        }
        i = id_end;
    }
    None
}

/// One level of a [`PathChain`]: the tree looked at last there, the entry for the component in
/// it, and the tree's bytes when it was read and is large (kept only while remembering).
type Level = (Oid, Option<Entry>, Option<Rc<[u8]>>);

/// One path's chain of trees, as last looked up: a tree whose id did not change is not read again.
struct PathChain {
    components: Vec<Vec<u8>>,
    /// Per level, from the root down.
    chain: Vec<Level>,
    /// Lookups made (one per commit of a walk): past [`REMEMBER_DEPTH`] nothing more is kept.
    looked: usize,
}

impl PathChain {
    fn new(path: &str) -> PathChain {
        let components = path.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect();
        PathChain { components, chain: Vec::new(), looked: 0 }
    }

    /// The regular file at this path below `root`.
    fn blob(
        &mut self,
        odb: &Odb<'_>,
        packs: &mut Packs,
        root: Oid,
        stats: &mut WalkStats,
    ) -> Result<Option<Oid>, git2::Error> {
        let mut tree = root;
        self.looked += 1;
        let keep = remembering() && self.looked <= REMEMBER_DEPTH;
        for i in 0..self.components.len() {
            let entry = match self.chain.get(i) {
                Some((t, e, _)) if *t == tree => *e,
                level => {
                    // A walk before this one saw this tree follow the last one here: when the
                    // component's entry is not among those that differ, it is the same entry.
                    let known = level.filter(|_| remembering()).and_then(|(prev, e, _)| {
                        let diffs = remembered().tree_diffs.get(&(*prev, tree)).cloned()?;
                        (!diffs.iter().any(|n| **n == *self.components[i])).then_some(*e)
                    });
                    let (e, data) = match known {
                        Some(e) => (e, None),
                        None => {
                            let started = Instant::now();
                            let (kind, data) = read_object(odb, packs, tree)?;
                            let e =
                                if kind == OBJ_TREE { tree_entry(&data, &self.components[i]) } else { None };
                            stats.trees += 1;
                            stats.tree_time += started.elapsed();
                            let large = keep && kind == OBJ_TREE && data.len() >= LARGE_TREE;
                            if let (true, Some((prev, _, Some(prev_data)))) = (large, level) {
                                // Compared the second time the pair is seen: a walk that is not
                                // repeated pays a set insert, not a comparison.
                                let again = {
                                    let mut r = remembered();
                                    if r.seen.len() >= REMEMBERED {
                                        r.seen.clear();
                                    }
                                    !r.seen.insert((*prev, tree))
                                };
                                if again {
                                    let names: Names = differing_names(prev_data, &data).into();
                                    let mut r = remembered();
                                    if r.tree_diffs.len() >= REMEMBERED {
                                        r.tree_diffs.clear();
                                    }
                                    r.tree_diffs.insert((*prev, tree), names);
                                }
                            }
                            (e, large.then_some(data))
                        }
                    };
                    // Each level remembers its own last tree: the levels below stay as they are.
                    match self.chain.get_mut(i) {
                        Some(level) => *level = (tree, e, data),
                        None => self.chain.push((tree, e, data)),
                    }
                    e
                }
            };
            match entry {
                Some((id, mode)) if i + 1 < self.components.len() => {
                    if mode != MODE_TREE {
                        return Ok(None);
                    }
                    tree = id;
                }
                Some((id, mode)) => return Ok((mode & 0o170000 == 0o100000).then_some(id)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// What the read-ahead thread found for one commit.
struct Ahead {
    commit: Oid,
    raw: RawCommit,
    /// The paths asked for at the time, and the file at each.
    blobs: Vec<(Arc<str>, Option<Oid>)>,
    stats: WalkStats,
}

/// The paths the search follows, shared with the read-ahead: `None` until it says.
type Wanted = Arc<(Mutex<Option<Arc<Vec<Arc<str>>>>>, Condvar)>;

/// The read-ahead's end of things.
struct ReadAhead {
    rx: Receiver<Result<Vec<Ahead>, String>>,
    /// Received from the thread, not yet looked at.
    incoming: VecDeque<Ahead>,
    /// Received and not yet passed: the commit being looked at, then its first parents.
    buffer: VecDeque<Ahead>,
    paths: Wanted,
}

impl Drop for ReadAhead {
    /// A read-ahead still waiting to be told the paths is told none, so both threads end (they
    /// stop at their next hand-over once this end is gone) instead of waiting for ever.
    fn drop(&mut self) {
        let (lock, cv) = &*self.paths;
        if let Ok(mut p) = lock.lock() {
            p.get_or_insert_with(Default::default);
            cv.notify_all();
        }
    }
}

/// Commits handed from one stage to the next at a time (fewer wake-ups), and how many such
/// batches may wait: the read-ahead runs at most a few thousand commits ahead.
const BATCH: usize = 64;
const AHEAD: usize = 32;

type CommitBatch = Result<Vec<(Oid, RawCommit, WalkStats)>, String>;

/// First stage: the first-parent chain from `start`, commit by commit.
fn read_commits(dir: &Path, start: Oid, tx: &SyncSender<CommitBatch>) -> Result<(), git2::Error> {
    let repo = Repository::open(dir)?;
    let odb = repo.odb()?;
    let mut packs = Packs::open(dir);
    let mut cur = Some(start);
    let mut batch = Vec::with_capacity(BATCH);
    // The first commits go one by one: the search waits for them.
    let mut size = 1;
    let (remember, mut depth) = (remembering(), 0);
    while let Some(c) = cur {
        let mut stats = WalkStats::default();
        let raw = read_commit(&odb, &mut packs, c, &mut stats, remember && depth < REMEMBER_DEPTH)?;
        depth += 1;
        batch.push((c, raw, stats));
        cur = raw.parent;
        if batch.len() >= size || cur.is_none() {
            if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                return Ok(());
            }
            size = (size * 2).min(BATCH);
        }
    }
    Ok(())
}

/// Second stage: the followed paths at each commit, once the search has named them.
fn read_paths(
    dir: &Path,
    rx: &Receiver<CommitBatch>,
    wanted: &Wanted,
    tx: &SyncSender<Result<Vec<Ahead>, String>>,
) -> Result<(), String> {
    let repo = Repository::open(dir).map_err(|e| e.message().to_string())?;
    let odb = repo.odb().map_err(|e| e.message().to_string())?;
    let mut packs = Packs::open(dir);
    let mut chains: HashMap<Arc<str>, PathChain> = HashMap::new();
    let (lock, named) = &**wanted;
    for batch in rx {
        let mut out = Vec::with_capacity(BATCH);
        for (commit, raw, mut stats) in batch? {
            let paths = {
                let mut p = lock.lock().map_err(|_| "read-ahead lock".to_string())?;
                while p.is_none() {
                    p = named.wait(p).map_err(|_| "read-ahead lock".to_string())?;
                }
                p.clone().unwrap_or_default()
            };
            let mut blobs = Vec::with_capacity(paths.len());
            for path in paths.iter() {
                let chain = chains.entry(path.clone()).or_insert_with(|| PathChain::new(path));
                let found = chain
                    .blob(&odb, &mut packs, raw.tree, &mut stats)
                    .map_err(|e| e.message().to_string())?;
                blobs.push((path.clone(), found));
            }
            out.push(Ahead { commit, raw, blobs, stats });
        }
        if tx.send(Ok(out)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// First-parent history of a repository; `files` lists a scope of paths (files or directories).
pub struct GitHistory<'r> {
    repo: &'r Repository,
    dir: PathBuf,
    scope: Vec<String>,
    ahead: RefCell<Option<ReadAhead>>,
    /// Lookups made on this thread: the commit read last, and each path's chain.
    last: RefCell<Option<(Oid, RawCommit)>>,
    chains: RefCell<HashMap<String, PathChain>>,
    packs: RefCell<Packs>,
    /// What the walk cost, for the debug log.
    pub stats: RefCell<WalkStats>,
}

impl<'r> GitHistory<'r> {
    pub(super) fn new(repo: &'r Repository, scope: Vec<String>) -> GitHistory<'r> {
        GitHistory {
            repo,
            dir: repo.path().to_path_buf(),
            scope,
            ahead: RefCell::new(None),
            last: RefCell::new(None),
            chains: RefCell::default(),
            packs: RefCell::new(Packs::open(repo.path())),
            stats: RefCell::default(),
        }
    }

    /// The commit read ahead for `c`, when the thread has it (waiting for it when it is next in
    /// line). Commits above `c` are done with: the walk only goes down.
    fn ahead_for(&self, c: Oid) -> Option<std::cell::RefMut<'_, Ahead>> {
        let mut guard = self.ahead.borrow_mut();
        let ra = guard.as_mut()?;
        if let Some(i) = ra.buffer.iter().position(|a| a.commit == c) {
            ra.buffer.drain(..i);
        } else if ra.buffer.back().is_none_or(|a| a.raw.parent == Some(c)) {
            if ra.incoming.is_empty() {
                match ra.rx.recv() {
                    Ok(Ok(batch)) => ra.incoming.extend(batch),
                    _ => {
                        *guard = None;
                        return None;
                    }
                }
            }
            match ra.incoming.pop_front() {
                Some(a) if a.commit == c => {
                    self.stats.borrow_mut().add(&a.stats);
                    let keep = ra.buffer.len().saturating_sub(1);
                    ra.buffer.drain(..keep);
                    ra.buffer.push_back(a);
                }
                // A failure or an unexpected commit: read here from now on.
                _ => {
                    *guard = None;
                    return None;
                }
            }
        } else {
            return None;
        }
        std::cell::RefMut::filter_map(guard, |g| {
            g.as_mut().and_then(|ra| ra.buffer.iter_mut().find(|a| a.commit == c))
        })
        .ok()
    }

    fn raw_commit(&self, c: Oid) -> Result<RawCommit, git2::Error> {
        if let Some(a) = self.ahead_for(c) {
            self.stats.borrow_mut().read_ahead += 1;
            return Ok(a.raw);
        }
        if let Some((id, raw)) = *self.last.borrow()
            && id == c
        {
            return Ok(raw);
        }
        let raw = read_commit(
            &self.repo.odb()?,
            &mut self.packs.borrow_mut(),
            c,
            &mut self.stats.borrow_mut(),
            false,
        )?;
        *self.last.borrow_mut() = Some((c, raw));
        Ok(raw)
    }

    /// Every file that differs between two commits' trees, read raw: a subtree whose id did not
    /// change is never opened (libgit2's tree diff walks every tree of both sides).
    fn diff(&self, parent: Option<Oid>, commit: Oid) -> Result<Vec<FileChange<Oid>>, git2::Error> {
        let odb = self.repo.odb()?;
        let new_root = self.raw_commit(commit)?.tree;
        let old_root = match parent {
            Some(p) => Some(self.raw_commit(p)?.tree),
            None => None,
        };
        let mut out = Vec::new();
        diff_trees(&odb, &mut self.packs.borrow_mut(), old_root, Some(new_root), "", &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

const OBJ_TREE: u8 = 2;

/// An object's type (1 commit, 2 tree, 3 blob, 4 tag) and bytes: from the packs, else through
/// libgit2 (a loose object).
fn read_object(odb: &Odb<'_>, packs: &mut Packs, id: Oid) -> Result<Object, git2::Error> {
    if let Some(o) = packs.read(id) {
        return Ok(o);
    }
    let obj = odb.read(id)?;
    let kind = match obj.kind() {
        ObjectType::Commit => 1,
        ObjectType::Tree => OBJ_TREE,
        ObjectType::Blob => 3,
        _ => 4,
    };
    Ok((kind, obj.data().into()))
}

/// The entries of a raw tree object: name, id and mode.
fn tree_entries(data: &[u8]) -> Vec<(&[u8], Entry)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let Some(space) = memchr::memchr(b' ', &data[i..]).map(|k| i + k) else { break };
        let Some(nul) = memchr::memchr(0, &data[space + 1..]).map(|k| space + 1 + k) else { break };
        let id_end = nul + 1 + 20;
        let Some(id) = data.get(nul + 1..id_end).and_then(|b| Oid::from_bytes(b).ok()) else { break };
        let mode = data[i..space].iter().fold(0u32, |m, d| m * 8 + u32::from(d.wrapping_sub(b'0')));
        out.push((&data[space + 1..nul], (id, mode)));
        i = id_end;
    }
    out
}

/// The files below two trees (either may be absent) that differ, with `prefix` before their
/// paths. Submodules are left out; a symbolic link is listed without ids (it is never read).
fn diff_trees(
    odb: &Odb<'_>,
    packs: &mut Packs,
    old: Option<Oid>,
    new: Option<Oid>,
    prefix: &str,
    out: &mut Vec<FileChange<Oid>>,
) -> Result<(), git2::Error> {
    if old == new {
        return Ok(());
    }
    let mut read = |t: Option<Oid>| -> Result<Option<Rc<[u8]>>, git2::Error> {
        t.map(|t| read_object(odb, packs, t).map(|(_, data)| data)).transpose()
    };
    let (old_obj, new_obj) = (read(old)?, read(new)?);
    let mut names: std::collections::BTreeMap<&[u8], (Option<Entry>, Option<Entry>)> = Default::default();
    for (name, e) in old_obj.as_deref().map(tree_entries).unwrap_or_default() {
        names.entry(name).or_default().0 = Some(e);
    }
    for (name, e) in new_obj.as_deref().map(tree_entries).unwrap_or_default() {
        names.entry(name).or_default().1 = Some(e);
    }
    let file = |e: Option<Entry>| e.filter(|(_, m)| *m != MODE_TREE && *m != MODE_COMMIT);
    let tree = |e: Option<Entry>| e.filter(|(_, m)| *m == MODE_TREE).map(|(id, _)| id);
    for (name, (o, n)) in names {
        if o == n {
            continue;
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        let (old_tree, new_tree) = (tree(o), tree(n));
        if old_tree.is_some() || new_tree.is_some() {
            diff_trees(odb, packs, old_tree, new_tree, &format!("{path}/"), out)?;
        }
        let (of, nf) = (file(o), file(n));
        if of.is_some() || nf.is_some() {
            let id = |e: Option<Entry>| e.filter(|(_, m)| *m != MODE_LINK).map(|(id, _)| id);
            out.push(FileChange { path, old: id(of), new: id(nf) });
        }
    }
    Ok(())
}

impl WalkStats {
    fn add(&mut self, o: &WalkStats) {
        self.commits += o.commits;
        self.trees += o.trees;
        self.commit_time += o.commit_time;
        self.tree_time += o.tree_time;
    }
}

impl History for GitHistory<'_> {
    type Blob = Oid;
    type Error = git2::Error;

    fn commit(&self, c: &CommitSha) -> Result<CommitInfo, git2::Error> {
        Ok(info(&self.repo.find_commit(oid(c)?)?))
    }

    fn prefetch(&self, from: &CommitSha, paths: Option<&[&str]>) {
        let named = paths.map(|ps| Arc::new(ps.iter().map(|p| Arc::from(*p)).collect::<Vec<Arc<str>>>()));
        let mut guard = self.ahead.borrow_mut();
        if paths.is_some_and(|p| p.is_empty()) {
            // The walk is over: the threads stop at their next hand-over.
            *guard = None;
            return;
        }
        if let Some(ra) = guard.as_ref() {
            let (lock, cv) = &*ra.paths;
            if let (Ok(mut p), Some(named)) = (lock.lock(), named) {
                *p = Some(named);
                cv.notify_all();
            }
            return;
        }
        let Ok(start) = oid(from) else { return };
        let wanted: Wanted = Arc::new((Mutex::new(named), Condvar::new()));
        let (commits_tx, commits_rx) = sync_channel(AHEAD);
        let (tx, rx) = sync_channel(AHEAD);
        let dir = self.dir.clone();
        let first = std::thread::Builder::new().name("metricops-commits".into()).spawn(move || {
            if let Err(e) = read_commits(&dir, start, &commits_tx) {
                let _ = commits_tx.send(Err(e.message().to_string()));
            }
        });
        let (dir, paths) = (self.dir.clone(), wanted.clone());
        let second = std::thread::Builder::new().name("metricops-paths".into()).spawn(move || {
            if let Err(e) = read_paths(&dir, &commits_rx, &paths, &tx) {
                let _ = tx.send(Err(e));
            }
        });
        if first.is_ok() && second.is_ok() {
            *guard =
                Some(ReadAhead { rx, incoming: VecDeque::new(), buffer: VecDeque::new(), paths: wanted });
        }
    }

    fn step(&self, c: &CommitSha) -> Result<(Option<CommitSha>, i64), git2::Error> {
        let raw = self.raw_commit(oid(c)?)?;
        Ok((raw.parent.map(sha), raw.time))
    }

    fn files(&self, c: &CommitSha) -> Result<Vec<TreeFile<Oid>>, git2::Error> {
        let tree = self.repo.find_commit(oid(c)?)?.tree()?;
        let out = RefCell::new(Vec::new());
        let push = |path: String, id: Oid, mode: i32| {
            if mode == MODE_LINK as i32 {
                out.borrow_mut().push(TreeFile { path, blob: id, symlink: true });
            } else if mode != MODE_COMMIT as i32 {
                out.borrow_mut().push(TreeFile { path, blob: id, symlink: false });
            }
        };
        let walk = |prefix: &str, t: &git2::Tree<'_>| {
            t.walk(TreeWalkMode::PreOrder, |dir, entry| {
                if entry.kind() == Some(ObjectType::Blob) {
                    push(
                        format!("{prefix}{dir}{}", entry.name().unwrap_or("")),
                        entry.id(),
                        entry.filemode(),
                    );
                }
                TreeWalkResult::Ok
            })
        };
        if self.scope.is_empty() {
            walk("", &tree)?;
        } else {
            for p in &self.scope {
                let Ok(entry) = tree.get_path(Path::new(p)) else { continue };
                match entry.kind() {
                    Some(ObjectType::Blob) => push(p.clone(), entry.id(), entry.filemode()),
                    Some(ObjectType::Tree) => {
                        let sub = self.repo.find_tree(entry.id())?;
                        walk(&format!("{p}/"), &sub)?
                    }
                    _ => {}
                }
            }
        }
        let mut out = out.into_inner();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    fn blob_at(&self, c: &CommitSha, path: &str) -> Result<Option<Oid>, git2::Error> {
        let c = oid(c)?;
        if let Some(a) = self.ahead_for(c)
            && let Some((_, found)) = a.blobs.iter().find(|(p, _)| &**p == path)
        {
            return Ok(*found);
        }
        let raw = self.raw_commit(c)?;
        let odb = self.repo.odb()?;
        let mut chains = self.chains.borrow_mut();
        let chain = chains.entry(path.to_string()).or_insert_with(|| PathChain::new(path));
        chain.blob(&odb, &mut self.packs.borrow_mut(), raw.tree, &mut self.stats.borrow_mut())
    }

    fn changes(
        &self,
        parent: Option<&CommitSha>,
        c: &CommitSha,
    ) -> Result<Vec<FileChange<Oid>>, git2::Error> {
        let parent = parent.map(oid).transpose()?;
        self.diff(parent, oid(c)?)
    }

    fn read(&self, blob: Oid) -> Result<Vec<u8>, git2::Error> {
        let started = Instant::now();
        let bytes = read_object(&self.repo.odb()?, &mut self.packs.borrow_mut(), blob)?.1.to_vec();
        let mut stats = self.stats.borrow_mut();
        stats.blobs += 1;
        stats.blob_bytes += bytes.len() as u64;
        stats.blob_time += started.elapsed();
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::git::GitRepo;

    /// Walks that keep what they read (as `serve`'s do) name the same culprits, and from the third
    /// walk over the same history on they read far fewer trees: which entries of a large directory
    /// differ between two of its versions is remembered, by their ids.
    #[test]
    fn walks_that_remember_name_the_same_culprits_reading_fewer_trees() {
        use crate::domain::culprit::{Query, Subject, find_culprit};
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| crate::adapters::test_git(dir.path(), args);
        let deployment = |i: usize, v: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: w{i}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: ghcr.io/shop/w{i}:{v}\n"
            )
        };
        let write = |i: usize, v: &str| {
            let p = dir.path().join(format!("apps/w{i}/deployment.yaml"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, deployment(i, v)).unwrap();
        };
        git(&["init", "-q", "-b", "main"]);
        let n = 120;
        for i in 0..n {
            write(i, "1.0.0");
        }
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "all at 1.0.0"]);
        let mut deployed = Vec::new();
        for i in 0..n {
            write(i, "1.1.0");
            git(&["commit", "-q", "-am", &format!("deploy w{i} 1.1.0")]);
            deployed.push(git(&["rev-parse", "HEAD"]));
        }
        let repo = GitRepo::open(dir.path()).unwrap();
        let tip = CommitSha(git(&["rev-parse", "HEAD"]));
        let walk = |i: usize| {
            let scope = [format!("apps/w{i}")];
            let history = repo.history(&scope);
            let query = Query::new(Subject::Image(format!("ghcr.io/shop/w{i}")));
            let found = find_culprit(&history, &tip, &query).unwrap();
            (found.commit.sha.0.clone(), history.stats.borrow().trees as usize)
        };
        remember_across_walks();
        let (first, first_trees) = walk(3);
        assert_eq!(first, deployed[3]);
        // The first walk reads two trees a commit (the root, then `apps/` with its 120 entries);
        // the second does too, and compares each pair of `apps/` trees it sees again; the next
        // ones read the small root of each commit (121 at most) and the few trees at the
        // culprit: `apps/`'s changes are known.
        assert!(first_trees >= 2 * (n - 4), "{first_trees}");
        assert_eq!(walk(3), (first.clone(), first_trees), "the second walk reads what the first did");
        for i in [3, 5, 60, 119, 0] {
            let (culprit, trees) = walk(i);
            assert_eq!(culprit, deployed[i], "w{i}");
            assert!(trees <= n + 10, "w{i}: {trees} trees read, the first walk {first_trees}");
        }
        // A pair of trees never seen one after the other is read as before: a new tip.
        write(7, "1.2.0");
        git(&["commit", "-q", "-am", "deploy w7 1.2.0"]);
        let newer = CommitSha(git(&["rev-parse", "HEAD"]));
        let history = repo.history(&["apps/w7".to_string()]);
        let found =
            find_culprit(&history, &newer, &Query::new(Subject::Image("ghcr.io/shop/w7".into()))).unwrap();
        assert_eq!(found.commit.sha, newer);
        assert_eq!(differing_names(b"", b""), Vec::<Box<[u8]>>::new());
    }

    /// `changes` says what `git diff-tree -r` says: adds, deletes, edits in nested directories, a
    /// file that became a directory, a mode change, a symbolic link (listed without ids).
    #[test]
    fn changes_agree_with_git_diff_tree() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| crate::adapters::test_git(dir.path(), args);
        let write = |p: &str, text: &str| {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        git(&["init", "-q", "-b", "main"]);
        write("a/b/c.yaml", "1");
        write("a/b/d.yaml", "1");
        write("a/x.yaml", "1");
        write("keep/k.yaml", "1");
        write("thing", "a file");
        std::os::unix::fs::symlink("a/x.yaml", dir.path().join("link")).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "one"]);
        write("a/b/c.yaml", "2");
        std::fs::remove_file(dir.path().join("a/b/d.yaml")).unwrap();
        write("a/b/e/new.yaml", "new");
        std::fs::remove_file(dir.path().join("thing")).unwrap();
        write("thing/inside.yaml", "now a directory");
        std::fs::remove_file(dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("keep/k.yaml", dir.path().join("link")).unwrap();
        git(&["add", "-A"]);
        git(&["update-index", "--chmod=+x", "a/x.yaml"]);
        git(&["commit", "-q", "-m", "two"]);
        let repo = GitRepo::open(dir.path()).unwrap();
        let history = repo.history(&[]);
        let (one, two) = (git(&["rev-parse", "HEAD^"]), git(&["rev-parse", "HEAD"]));
        let (one, two) = (CommitSha(one), CommitSha(two));
        let ours: Vec<String> = history
            .changes(Some(&one), &two)
            .unwrap()
            .into_iter()
            .map(|c| {
                format!("{} {:?} {:?}", c.path, c.old.map(|o| o.to_string()), c.new.map(|o| o.to_string()))
            })
            .collect();
        let zero = "0".repeat(40);
        let theirs: Vec<String> = git(&["diff-tree", "-r", "--no-renames", "--no-abbrev", &one.0, &two.0])
            .lines()
            .map(|l| {
                let (meta, path) = l.split_once('\t').unwrap();
                let f: Vec<&str> = meta.split(' ').collect();
                let id = |mode: &str, id: &str| (id != zero && mode != "120000").then(|| id.to_string());
                format!("{path} {:?} {:?}", id(f[0].trim_start_matches(':'), f[2]), id(f[1], f[3]))
            })
            .collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours.len(), 7, "{ours:#?}");
        // A root commit: every file is new.
        let root = history.changes(None, &one).unwrap();
        assert_eq!(
            root.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
            ["a/b/c.yaml", "a/b/d.yaml", "a/x.yaml", "keep/k.yaml", "link", "thing"]
        );
    }
}
