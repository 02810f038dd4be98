//! The durable journal of alert deliveries that `serve` acknowledged and has not finished yet, in
//! `state_dir/journal/`: an append-only segment (`segment-N.log`, one JSON line per change: an entry
//! put, or done), synced to disk before the sender gets its 200. Writes are *group-committed*:
//! deliveries arriving while one `fdatasync` runs are appended together and made durable by the
//! next one, so a storm costs one sync per batch, not two per delivery (file and directory, as the
//! one-file-per-delivery journal did: under load a delivery waited 13 ms for them at the median).
//!
//! What a crash leaves there is handled again when the bot starts; a delivery whose incidents keep
//! failing is retried with backoff, and after the last attempt moved to `journal/failed/` for a
//! person, never dropped. A torn last line (the crash came mid-write, before the sync, so it was
//! never acknowledged) is passed over; any other line that cannot be read is kept in `failed/`.
//! The segment is rewritten with the live entries only when it opens and when it grows past a few
//! MiB. Entry files of the journal's earlier form (`*.json`) are taken in when it opens.
//!
//! Handling a delivery twice is safe: the engine is level-triggered (a second alert for the same
//! culprit finds its branch or pull request and makes nothing new).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::alert::{Alert, Source};

/// One acknowledged delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub source: Source,
    pub alerts: Vec<Alert>,
    pub received_at: DateTime<Utc>,
    /// Attempts made so far that left an incident failed.
    #[serde(default)]
    pub attempts: u32,
}

/// An entry's name in the journal (it sorts in the order deliveries arrived).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryId(String);

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError { path: path.to_path_buf(), source }
}

/// One line of a segment.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Put { id: EntryId, entry: Entry },
    Done { id: EntryId },
}

/// Where a change stands.
enum Standing {
    Durable,
    Failed(JournalError),
    /// A write is in flight: wait for its end.
    Wait,
    /// No write is in flight: the caller writes the batch.
    Write,
}

/// A segment grown past this is rewritten with the live entries only.
const SEGMENT_LIMIT: u64 = 4 << 20;

pub struct Journal {
    dir: PathBuf,
    next: AtomicU64,
    limit: u64,
    state: Mutex<State>,
    synced: Condvar,
    /// Bumped at the end of every write, for async waiters.
    written: tokio::sync::watch::Sender<u64>,
    /// Syncs made (each one makes a batch of changes durable).
    syncs: AtomicU64,
    /// What could not be read when it opened, said once by [`Journal::pending`].
    unreadable: Mutex<Vec<String>>,
}

struct State {
    /// Lines appended and not written yet.
    buffer: Vec<u8>,
    /// The number of the last change appended, and of the last one on disk and synced.
    appended: u64,
    durable: u64,
    /// A thread is writing and syncing (the others wait for it, then one of them goes next).
    writing: bool,
    /// The open segment (taken by the writing thread while it writes) and its number and size.
    file: Option<File>,
    segment: u64,
    size: u64,
    /// The live entries as lines, for a rewrite.
    live: BTreeMap<EntryId, Vec<u8>>,
    /// A write failed: changes up to this number not durable get this error.
    failed: Option<(u64, String)>,
    /// A write failed part-way: the next one starts a new segment.
    broken: bool,
}

fn segment_name(n: u64) -> String {
    format!("segment-{n:010}.log")
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("segment-")?.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// What the segments and old-form entry files in `dir` hold: the live entries, lines that cannot
/// be read (segment, line number, text, error), and the old-form files read.
struct Replay {
    live: BTreeMap<EntryId, Entry>,
    bad: Vec<(PathBuf, usize, String, String)>,
    old_files: Vec<PathBuf>,
    bad_files: Vec<(PathBuf, String)>,
}

fn replay(dir: &Path) -> std::io::Result<Replay> {
    let mut r = Replay { live: BTreeMap::new(), bad: vec![], old_files: vec![], bad_files: vec![] };
    let mut olds: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    olds.sort();
    for p in olds {
        match fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
        {
            Ok(e) => {
                let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                r.live.insert(EntryId(name), e);
                r.old_files.push(p);
            }
            Err(e) => r.bad_files.push((p, e)),
        }
    }
    for (_, path) in segments(dir)? {
        let bytes = fs::read(&path)?;
        let complete = bytes.ends_with(b"\n");
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Line>(line) {
                Ok(Line::Put { id, entry }) => drop(r.live.insert(id, entry)),
                Ok(Line::Done { id }) => drop(r.live.remove(&id)),
                // Torn by a crash before its sync: never acknowledged.
                Err(_) if i == last && !complete => {}
                Err(e) => r.bad.push((
                    path.clone(),
                    i + 1,
                    String::from_utf8_lossy(line).into_owned(),
                    e.to_string(),
                )),
            }
        }
    }
    Ok(r)
}

fn line(l: &Line) -> Vec<u8> {
    let mut v = serde_json::to_vec(l).expect("a journal line serialises");
    v.push(b'\n');
    v
}

/// Writes `bytes` as a new file, durably: a temporary file, synced, renamed, the directory synced.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, JournalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(at(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(at(&tmp))?;
    fs::rename(&tmp, &path).map_err(at(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))?;
    Ok(path)
}

impl Journal {
    /// The journal in `dir` (created if missing), rewritten as one segment of its live entries.
    /// Temporary files a crash left are removed.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        Self::open_with_limit(dir, SEGMENT_LIMIT)
    }

    fn open_with_limit(dir: &Path, limit: u64) -> Result<Journal, JournalError> {
        fs::create_dir_all(dir.join("failed")).map_err(at(dir))?;
        for e in fs::read_dir(dir).map_err(at(dir))?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        let old = segments(dir).map_err(at(dir))?;
        let next_segment = old.last().map(|(n, _)| n + 1).unwrap_or(0);
        let j = Journal {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(0),
            limit,
            state: Mutex::new(State {
                buffer: Vec::new(),
                appended: 0,
                durable: 0,
                writing: false,
                file: None,
                segment: next_segment,
                size: 0,
                live: BTreeMap::new(),
                failed: None,
                broken: false,
            }),
            synced: Condvar::new(),
            written: tokio::sync::watch::Sender::new(0),
            syncs: AtomicU64::new(0),
            unreadable: Mutex::new(Vec::new()),
        };
        let r = replay(dir).map_err(at(dir))?;
        {
            let mut st = j.state.lock().expect("journal lock");
            for (id, entry) in r.live {
                let l = line(&Line::Put { id: id.clone(), entry });
                st.live.insert(id, l);
            }
            j.rewrite(&mut st)?;
        }
        // The live entries are in the new segment: what they came from goes.
        for (_, p) in old {
            let _ = fs::remove_file(p);
        }
        for p in r.old_files {
            let _ = fs::remove_file(p);
        }
        let mut unreadable = Vec::new();
        for (n, (seg, no, text, e)) in r.bad.into_iter().enumerate() {
            let name = format!("unreadable-{}-{n}.txt", Utc::now().timestamp_nanos_opt().unwrap_or_default());
            let what = format!("{}, line {no}: {e}\n{text}\n", seg.display());
            let kept = write_file(&dir.join("failed"), &name, what.as_bytes())
                .map(|p| format!("kept in {}", p.display()))
                .unwrap_or_else(|e| format!("cannot be kept: {e}"));
            unreadable.push(format!("{}, line {no}: {e}; {kept}", seg.display()));
        }
        for (p, e) in r.bad_files {
            let to = dir.join("failed").join(p.file_name().unwrap_or_default());
            let _ = fs::rename(&p, &to);
            unreadable.push(format!("{}: {e}; moved to failed/", p.display()));
        }
        *j.unreadable.lock().expect("journal lock") = unreadable;
        Ok(j)
    }

    /// A new segment with the live entries only, durable, in place of the open one (which is
    /// removed). Called with the state locked and no write in flight.
    fn rewrite(&self, st: &mut State) -> Result<(), JournalError> {
        let n = st.segment;
        let mut bytes = Vec::new();
        for l in st.live.values() {
            bytes.extend_from_slice(l);
        }
        let path = write_file(&self.dir, &segment_name(n), &bytes)?;
        let f = OpenOptions::new().append(true).open(&path).map_err(at(&path))?;
        if n > 0 {
            let _ = fs::remove_file(self.dir.join(segment_name(n - 1)));
        }
        st.file = Some(f);
        st.size = bytes.len() as u64;
        st.segment = n + 1;
        // Everything appended so far is in the live set or done: the buffer is no longer needed.
        st.buffer.clear();
        st.durable = st.appended;
        Ok(())
    }

    /// Appends a change (in memory: no I/O); its number, to wait for.
    fn append(&self, l: &Line) -> u64 {
        let bytes = line(l);
        let mut st = self.state.lock().expect("journal lock");
        match l {
            Line::Put { id, .. } => drop(st.live.insert(id.clone(), bytes.clone())),
            Line::Done { id } => drop(st.live.remove(id)),
        }
        st.buffer.extend_from_slice(&bytes);
        st.appended += 1;
        st.appended
    }

    /// Where change `mine` stands; `Write` means the caller is now the writer.
    fn standing(&self, st: &mut State, mine: u64) -> Standing {
        if st.durable >= mine {
            return Standing::Durable;
        }
        if let Some((upto, e)) = &st.failed
            && *upto >= mine
        {
            return Standing::Failed(JournalError {
                path: self.dir.clone(),
                source: std::io::Error::other(e.clone()),
            });
        }
        if st.writing {
            return Standing::Wait;
        }
        st.writing = true;
        Standing::Write
    }

    /// Writes and syncs every change appended so far (the caller is the writer), then wakes the
    /// waiting. The lock is let go while the disk works.
    fn write_batch<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if st.broken {
            // The last write failed part-way: the segment's end may be torn, so nothing is
            // appended to it; a new one is written from the live entries (the changes waiting
            // are among them, or gone if they were dones).
            let r = self.rewrite(&mut st);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(()) => st.broken = false,
                Err(e) => st.failed = Some((st.appended, e.to_string())),
            }
        } else {
            let batch = std::mem::take(&mut st.buffer);
            let upto = st.appended;
            let mut file = st.file.take().expect("the segment is open");
            drop(st);
            let r = file.write_all(&batch).and_then(|()| file.sync_data());
            self.syncs.fetch_add(1, Ordering::Relaxed);
            st = self.state.lock().expect("journal lock");
            st.file = Some(file);
            match r {
                Ok(()) => {
                    st.durable = upto;
                    st.size += batch.len() as u64;
                    if st.size > self.limit
                        && let Err(e) = self.rewrite(&mut st)
                    {
                        tracing::warn!(error = %e, "cannot rewrite the journal segment; it goes on growing");
                    }
                }
                // The batch's senders are told (they retry); the next write starts a new segment.
                Err(e) => {
                    st.failed = Some((upto, format!("{}: {e}", segment_name(st.segment.saturating_sub(1)))));
                    st.broken = true;
                }
            }
        }
        st.writing = false;
        self.synced.notify_all();
        self.written.send_modify(|n| *n += 1);
        st
    }

    /// Appends a change and waits until it is on disk and synced (with whatever else came
    /// meanwhile: the first caller to find no write in flight writes them all).
    fn commit(&self, l: &Line) -> Result<(), JournalError> {
        let mine = self.append(l);
        let mut st = self.state.lock().expect("journal lock");
        loop {
            match self.standing(&mut st, mine) {
                Standing::Durable => return Ok(()),
                Standing::Failed(e) => return Err(e),
                Standing::Wait => st = self.synced.wait(st).expect("journal lock"),
                Standing::Write => st = self.write_batch(st),
            }
        }
    }

    /// Writes an entry durably.
    pub fn record(&self, entry: &Entry) -> Result<EntryId, JournalError> {
        let id = self.new_id();
        self.commit(&Line::Put { id: id.clone(), entry: entry.clone() })?;
        Ok(id)
    }

    /// Writes an entry durably, from async code: the change is appended on the caller's thread
    /// (no I/O), and only the writer of a batch takes a blocking thread, not every waiter.
    pub async fn record_async(self: &std::sync::Arc<Self>, entry: &Entry) -> Result<EntryId, JournalError> {
        let id = self.new_id();
        // Watching from before the change is appended: no write's end can be missed.
        let mut written = self.written.subscribe();
        let mine = self.append(&Line::Put { id: id.clone(), entry: entry.clone() });
        loop {
            let standing = self.standing(&mut self.state.lock().expect("journal lock"), mine);
            match standing {
                Standing::Durable => return Ok(id),
                Standing::Failed(e) => return Err(e),
                Standing::Wait => {
                    let _ = written.changed().await;
                }
                Standing::Write => {
                    // On a multi-threaded runtime the write starts at once on this thread (its
                    // other tasks move to another): handing it to a blocking-pool thread meant
                    // waiting for that thread to be scheduled, milliseconds on a busy node.
                    let multi = tokio::runtime::Handle::current().runtime_flavor()
                        == tokio::runtime::RuntimeFlavor::MultiThread;
                    let me = self.clone();
                    let write = move || drop(me.write_batch(me.state.lock().expect("journal lock")));
                    let r = if multi {
                        tokio::task::block_in_place(write);
                        Ok(())
                    } else {
                        tokio::task::spawn_blocking(write).await
                    };
                    if let Err(e) = r {
                        // The writer stopped (the runtime shuts down): let another try.
                        let mut st = self.state.lock().expect("journal lock");
                        st.writing = false;
                        drop(st);
                        self.written.send_modify(|n| *n += 1);
                        return Err(JournalError {
                            path: self.dir.clone(),
                            source: std::io::Error::other(e.to_string()),
                        });
                    }
                }
            }
        }
    }

    fn new_id(&self) -> EntryId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        EntryId(format!("{nanos:020}-{}-{n:06}.json", std::process::id()))
    }

    /// Rewrites an entry (its attempt count), durably.
    pub fn update(&self, id: &EntryId, entry: &Entry) -> Result<(), JournalError> {
        self.commit(&Line::Put { id: id.clone(), entry: entry.clone() })
    }

    /// How many deliveries the journal holds (not yet finished with).
    pub fn len(&self) -> usize {
        self.state.lock().expect("journal lock").live.len()
    }

    /// Whether the journal holds no delivery.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The delivery is finished with.
    pub fn done(&self, id: &EntryId) -> Result<(), JournalError> {
        if !self.state.lock().expect("journal lock").live.contains_key(id) {
            return Ok(());
        }
        self.commit(&Line::Done { id: id.clone() })
    }

    /// The delivery failed for the last time: kept in `failed/` (one file, the entry as JSON) for
    /// a person to look at.
    pub fn give_up(&self, id: &EntryId) -> Result<PathBuf, JournalError> {
        let entry = {
            let st = self.state.lock().expect("journal lock");
            st.live.get(id).and_then(|l| match serde_json::from_slice::<Line>(l) {
                Ok(Line::Put { entry, .. }) => Some(entry),
                _ => None,
            })
        };
        let to = self.dir.join("failed").join(&id.0);
        let Some(entry) = entry else {
            return Err(at(&to)(std::io::Error::new(std::io::ErrorKind::NotFound, "no such entry")));
        };
        let text = serde_json::to_vec_pretty(&entry).expect("an entry serialises");
        let to = write_file(&self.dir.join("failed"), &id.0, &text)?;
        self.commit(&Line::Done { id: id.clone() })?;
        Ok(to)
    }

    /// Every entry still there, oldest first, and what could not be read when it opened.
    pub fn pending(&self) -> (Vec<(EntryId, Entry)>, Vec<String>) {
        let st = self.state.lock().expect("journal lock");
        let ok = st
            .live
            .iter()
            .filter_map(|(id, l)| match serde_json::from_slice::<Line>(l) {
                Ok(Line::Put { entry, .. }) => Some((id.clone(), entry)),
                _ => None,
            })
            .collect();
        drop(st);
        (ok, std::mem::take(&mut *self.unreadable.lock().expect("journal lock")))
    }

    /// What a journal directory holds, read without changing anything (a running `serve` may be
    /// writing it): the live entries, oldest first.
    pub fn peek(dir: &Path) -> Result<Vec<(EntryId, Entry)>, JournalError> {
        Ok(replay(dir).map_err(at(dir))?.live.into_iter().collect())
    }

    /// Syncs made so far (each makes a batch of changes durable).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// How long to wait before attempt `attempts + 1`: doubling from `first`, at most `max`, with up
/// to a fifth taken off at random so that many failed deliveries do not all come back at once.
pub fn backoff(
    first: std::time::Duration,
    max: std::time::Duration,
    attempts: u32,
    jitter: f64,
) -> std::time::Duration {
    let base = first.saturating_mul(1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX)).min(max);
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> Entry {
        let body = include_str!("../fixtures/alertmanager/metalmatze-alertmanager-bot.firing.json");
        Entry {
            source: Source::Alertmanager,
            alerts: Source::Alertmanager.parse(body, Utc::now()).unwrap(),
            received_at: DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z").unwrap().into(),
            attempts: 0,
        }
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_go_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let a = j.record(&entry()).unwrap();
        let b = j.record(&Entry { attempts: 2, ..entry() }).unwrap();
        std::fs::write(dir.path().join("half-written.json.tmp"), "{").unwrap();
        std::fs::write(dir.path().join("garbage.json"), "not json").unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(!dir.path().join("half-written.json.tmp").exists(), "a crash's temporary file is removed");
        let (ok, bad) = j.pending();
        assert_eq!(ok.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), [a.clone(), b.clone()]);
        assert_eq!(ok[0].1, entry());
        assert_eq!(ok[1].1.attempts, 2);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("garbage.json"), "{bad:?}");
        assert!(dir.path().join("failed/garbage.json").exists());
        j.done(&a).unwrap();
        j.done(&a).unwrap();
        let kept = j.give_up(&b).unwrap();
        assert!(kept.exists());
        assert!(j.pending().0.is_empty());
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn a_torn_last_line_is_passed_over_and_a_bad_line_is_kept_in_failed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let a = j.record(&entry()).unwrap();
        let b = j.record(&Entry { attempts: 1, ..entry() }).unwrap();
        drop(j);
        let seg = segment_files(dir.path()).pop().unwrap();
        let text = std::fs::read_to_string(&seg).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        // A line in the middle spoiled, and a crash mid-way through the last write.
        let spoiled = format!("{first}\n{{\"op\":\"put\",\"id\":oops}}\n{rest}{{\"op\":\"pu");
        std::fs::write(&seg, spoiled).unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let (ok, bad) = j.pending();
        assert_eq!(
            ok.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            [a, b],
            "the lines around it still count"
        );
        assert_eq!(bad.len(), 1, "only the spoiled line, not the torn one: {bad:?}");
        assert!(bad[0].contains("line 2") && bad[0].contains("kept in"), "{bad:?}");
        let kept: Vec<_> = std::fs::read_dir(dir.path().join("failed")).unwrap().flatten().collect();
        assert_eq!(kept.len(), 1);
        assert!(std::fs::read_to_string(kept[0].path()).unwrap().contains("\"id\":oops"));
        assert!(j.pending().1.is_empty(), "said once");
        assert_eq!(segment_files(dir.path()).len(), 1, "rewritten as one segment");
    }

    #[test]
    fn changes_that_come_while_a_sync_runs_are_made_durable_by_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
        // A write in flight: every change that comes meanwhile waits for it.
        j.state.lock().unwrap().writing = true;
        let before = j.syncs();
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let j = j.clone();
                std::thread::spawn(move || j.record(&entry()).unwrap())
            })
            .collect();
        while j.state.lock().unwrap().appended < 32 {
            std::thread::yield_now();
        }
        // The write in flight ends; one of the waiting threads writes the 32 changes at once.
        j.state.lock().unwrap().writing = false;
        j.synced.notify_all();
        let ids: Vec<EntryId> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(j.syncs() - before, 1, "one sync for the batch");
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 32);
        assert_eq!(Journal::peek(dir.path()).unwrap().len(), 32, "all on disk");
    }

    #[test]
    fn an_async_delivery_on_a_single_threaded_runtime_is_written_on_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let id = rt.block_on(j.record_async(&entry())).unwrap();
        assert!(Journal::peek(dir.path()).unwrap().iter().any(|(k, _)| *k == id), "on disk");
    }

    #[test]
    fn async_deliveries_during_a_write_share_the_next_one_and_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        j.state.lock().unwrap().writing = true;
        let before = j.syncs();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let j = j.clone();
                rt.spawn(async move { j.record_async(&entry()).await.unwrap() })
            })
            .collect();
        while j.state.lock().unwrap().appended < 100 {
            std::thread::yield_now();
        }
        // A sync caller comes too, then the write in flight ends.
        let sync_caller = {
            let j = j.clone();
            std::thread::spawn(move || j.record(&entry()).unwrap())
        };
        while j.state.lock().unwrap().appended < 101 {
            std::thread::yield_now();
        }
        let mut st = j.state.lock().unwrap();
        st.writing = false;
        drop(st);
        j.synced.notify_all();
        j.written.send_modify(|n| *n += 1);
        let mut ids: Vec<EntryId> = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).collect();
        ids.push(sync_caller.join().unwrap());
        assert_eq!(j.syncs() - before, 1, "one sync for the 101 changes");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 101);
        drop(j);
        assert_eq!(
            Journal::open(dir.path()).unwrap().pending().0.len(),
            101,
            "all of them there after a reopen"
        );
    }

    #[test]
    fn a_failed_write_is_said_to_its_senders_and_the_next_one_starts_a_whole_segment() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let a = j.record(&entry()).unwrap();
        // The disk refuses the next write (a read-only handle in place of the segment's).
        let seg = segment_files(dir.path()).pop().unwrap();
        j.state.lock().unwrap().file = Some(File::open(&seg).unwrap());
        let e = j.record(&Entry { attempts: 7, ..entry() }).unwrap_err();
        assert!(e.to_string().contains("segment-"), "the error names the segment: {e}");
        // The next change is made durable in a new segment holding every live entry.
        let c = j.record(&Entry { attempts: 9, ..entry() }).unwrap();
        j.done(&a).unwrap();
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert_ne!(files[0], seg, "a new segment");
        let left = Journal::peek(dir.path()).unwrap();
        let attempts: Vec<u32> = left.iter().map(|(_, e)| e.attempts).collect();
        // The refused delivery was answered 503 (its sender sends it again); kept, it is handled
        // once more at worst, which the engine makes safe.
        assert_eq!(attempts, [7, 9], "{left:?}");
        assert_eq!(left[1].0, c);
        drop(j);
        let (ok, bad) = Journal::open(dir.path()).unwrap().pending();
        assert_eq!(ok.len(), 2);
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn a_grown_segment_is_rewritten_with_the_live_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open_with_limit(dir.path(), 8 << 10).unwrap();
        let ids: Vec<EntryId> = (0..60).map(|_| j.record(&entry()).unwrap()).collect();
        for id in &ids[..55] {
            j.done(id).unwrap();
        }
        j.update(&ids[59], &Entry { attempts: 3, ..entry() }).unwrap();
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(std::fs::metadata(&files[0]).unwrap().len() < 16 << 10, "rewritten, not grown");
        let left = Journal::peek(dir.path()).unwrap();
        assert_eq!(left.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[55..]);
        assert_eq!(left[4].1.attempts, 3);
        drop(j);
        let (ok, _) = Journal::open(dir.path()).unwrap().pending();
        assert_eq!(ok.len(), 5);
    }

    #[test]
    fn entry_files_of_the_earlier_form_are_taken_in() {
        let dir = tempfile::tempdir().unwrap();
        let name = "00000001764842400000000000-4242-000000.json";
        std::fs::write(dir.path().join(name), serde_json::to_vec(&entry()).unwrap()).unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let (ok, bad) = j.pending();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok, [(EntryId(name.into()), entry())]);
        assert!(!dir.path().join(name).exists(), "now in the segment");
        j.done(&ok[0].0).unwrap();
        drop(j);
        assert!(Journal::open(dir.path()).unwrap().pending().0.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let (first, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let b = |n| backoff(first, max, n, 0.0).as_secs();
        assert_eq!([b(0), b(1), b(2), b(3), b(6), b(7), b(40)], [5, 10, 20, 40, 300, 300, 300]);
        assert_eq!(backoff(first, max, 1, 1.0), Duration::from_secs(8));
    }
}
