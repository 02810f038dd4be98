//! The durable journal of alert deliveries that `serve` acknowledged and has not finished yet, in
//! `state_dir/journal/`: one file per delivery, written (and synced to disk) before the sender gets
//! its 200, removed once every incident of it was handled. What a crash leaves there is handled again
//! when the bot starts; a delivery whose incidents keep failing is retried with backoff, and after the
//! last attempt moved to `journal/failed/` for a person, never dropped.
//!
//! Handling a delivery twice is safe: the engine is level-triggered (a second alert for the same
//! culprit finds its branch or pull request and makes nothing new).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// An entry's file name in the journal (it sorts in the order deliveries arrived).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

pub struct Journal {
    dir: PathBuf,
    next: AtomicU64,
}

impl Journal {
    /// The journal in `dir` (created if missing). Temporary files a crash left are removed.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        fs::create_dir_all(dir.join("failed")).map_err(at(dir))?;
        for e in fs::read_dir(dir).map_err(at(dir))?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Journal { dir: dir.to_path_buf(), next: AtomicU64::new(0) })
    }

    /// Writes an entry durably: a temporary file, synced, renamed into place, the directory synced.
    pub fn record(&self, entry: &Entry) -> Result<EntryId, JournalError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let id = EntryId(format!("{nanos:020}-{}-{n:06}.json", std::process::id()));
        self.write(&id, entry)?;
        Ok(id)
    }

    /// Rewrites an entry (its attempt count), durably.
    pub fn update(&self, id: &EntryId, entry: &Entry) -> Result<(), JournalError> {
        self.write(id, entry)
    }

    fn write(&self, id: &EntryId, entry: &Entry) -> Result<(), JournalError> {
        let path = self.dir.join(&id.0);
        let tmp = self.dir.join(format!("{}.tmp", id.0));
        let text =
            serde_json::to_vec(entry).map_err(|e| JournalError { path: path.clone(), source: e.into() })?;
        let mut f = File::create(&tmp).map_err(at(&tmp))?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(at(&tmp))?;
        fs::rename(&tmp, &path).map_err(at(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(at(&self.dir))
    }

    /// The delivery is finished with.
    pub fn done(&self, id: &EntryId) -> Result<(), JournalError> {
        let path = self.dir.join(&id.0);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(at(&path)(e)),
            _ => Ok(()),
        }
    }

    /// The delivery failed for the last time: kept in `failed/` for a person to look at.
    pub fn give_up(&self, id: &EntryId) -> Result<PathBuf, JournalError> {
        let to = self.dir.join("failed").join(&id.0);
        fs::rename(self.dir.join(&id.0), &to).map_err(at(&to))?;
        Ok(to)
    }

    /// Every entry still there, oldest first. One that cannot be read is moved to `failed/` and
    /// named in the error list.
    pub fn pending(&self) -> (Vec<(EntryId, Entry)>, Vec<String>) {
        let mut names: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(d) => d
                .flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect(),
            Err(e) => return (Vec::new(), vec![format!("journal {}: {e}", self.dir.display())]),
        };
        names.sort();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for n in names {
            let path = self.dir.join(&n);
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
            {
                Ok(e) => ok.push((EntryId(n), e)),
                Err(e) => {
                    let _ = fs::rename(&path, self.dir.join("failed").join(&n));
                    bad.push(format!("{}: {e}; moved to failed/", path.display()));
                }
            }
        }
        (ok, bad)
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

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let (first, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let b = |n| backoff(first, max, n, 0.0).as_secs();
        assert_eq!([b(0), b(1), b(2), b(3), b(6), b(7), b(40)], [5, 10, 20, 40, 300, 300, 300]);
        assert_eq!(backoff(first, max, 1, 1.0), Duration::from_secs(8));
    }
}
