//! Git for the rollback history: the metricops reverts on a branch's first-parent history (raw
//! commit objects, only the ones whose message names a culprit are parsed), and the decisions kept
//! as git notes under `refs/notes/metricops` — read, and appended to by a fetch, a new notes commit
//! and a compare-and-swap push (a refused push is fetched and tried again).

use chrono::{DateTime, TimeZone, Utc};
use git2::Oid;
use secrecy::SecretString;

use super::git::{GitError, GitRepo, oid, sha};
use crate::domain::culprit::CommitSha;
use crate::domain::history::{CommitRead, Kept, NOTES_REF, RevertSeen, kept_line, read_kept, read_revert};

/// A raw commit: its parents, author and committer times, message.
struct Raw {
    parents: Vec<Oid>,
    authored: DateTime<Utc>,
    committed: DateTime<Utc>,
    message: String,
}

fn when(line: &[u8]) -> DateTime<Utc> {
    // `author Name <mail> 1700000000 +0100`: the second field from the end.
    let text = String::from_utf8_lossy(line);
    let secs = text.rsplit(' ').nth(1).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// The message is parsed only when `want` says so (a metricops revert names its culprit).
fn read_raw(odb: &git2::Odb<'_>, id: Oid, want_message: impl Fn(&[u8]) -> bool) -> Result<Raw, GitError> {
    let obj = odb.read(id)?;
    let data = obj.data();
    let split = memchr::memmem::find(data, b"\n\n").map(|i| i + 2).unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let mut raw =
        Raw { parents: Vec::new(), authored: Utc::now(), committed: Utc::now(), message: String::new() };
    for line in head.split(|b| *b == b'\n') {
        if let Some(p) = line.strip_prefix(b"parent ") {
            if let Ok(p) = Oid::from_str(&String::from_utf8_lossy(p)) {
                raw.parents.push(p);
            }
        } else if line.starts_with(b"author ") {
            raw.authored = when(line);
        } else if line.starts_with(b"committer ") {
            raw.committed = when(line);
        }
    }
    if want_message(body) {
        raw.message = String::from_utf8_lossy(body).into_owned();
    }
    Ok(raw)
}

fn names_a_culprit(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"Metricops-Culprit:").is_some()
}

impl GitRepo {
    /// The metricops reverts on the first-parent history from `tip`, newest first, down to `stop`
    /// (a tip scanned before: not included) or to commits older than `since`. Also says whether
    /// the walk met `stop`.
    pub fn reverts(
        &self,
        tip: &CommitSha,
        stop: Option<&CommitSha>,
        since: Option<DateTime<Utc>>,
    ) -> Result<(Vec<RevertSeen>, bool), GitError> {
        let odb = self.repo.odb()?;
        let stop = stop.map(oid).transpose()?;
        let mut out = Vec::new();
        let mut cur = Some(oid(tip)?);
        while let Some(id) = cur {
            if Some(id) == stop {
                return Ok((out, true));
            }
            let raw = read_raw(&odb, id, names_a_culprit)?;
            if since.is_some_and(|s| raw.committed < s) {
                break;
            }
            let merged_raw: Vec<Raw> = if raw.parents.len() > 1 && raw.message.is_empty() {
                raw.parents[1..].iter().filter_map(|p| read_raw(&odb, *p, names_a_culprit).ok()).collect()
            } else {
                Vec::new()
            };
            let brought = merged_raw.iter().any(|m| !m.message.is_empty());
            if !raw.message.is_empty() || brought {
                // A merge that brought a revert in: its own subject names the PR.
                let message =
                    if brought { read_raw(&odb, id, |_| true)?.message } else { raw.message.clone() };
                let id_text = id.to_string();
                let c = CommitRead {
                    sha: &id_text,
                    message: &message,
                    committed: raw.committed,
                    authored: raw.authored,
                    merged: merged_raw.iter().map(|m| (m.message.as_str(), m.authored)).collect(),
                };
                out.extend(read_revert(&c));
            }
            cur = raw.parents.first().copied();
        }
        Ok((out, false))
    }

    /// Every record kept in the notes under `refs/notes/metricops` (none when there is no such ref).
    pub fn kept_notes(&self) -> Result<Vec<Kept>, GitError> {
        let notes = match self.repo.notes(Some(NOTES_REF)) {
            Ok(n) => n,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for n in notes {
            let (blob, _on) = n?;
            let blob = self.repo.find_blob(blob)?;
            out.extend(read_kept(&String::from_utf8_lossy(blob.content())));
        }
        Ok(out)
    }

    /// Appends `kept` to the note on `on` and pushes `refs/notes/metricops` to `url` as a
    /// compare-and-swap on what was fetched; a refused push (another replica wrote meanwhile) is
    /// fetched and tried again, up to three times.
    pub fn add_note(
        &self,
        url: &str,
        auth: Option<&SecretString>,
        on: &CommitSha,
        kept: &Kept,
        now: DateTime<Utc>,
    ) -> Result<(), GitError> {
        let target = oid(on)?;
        let mut last = None;
        for _ in 0..3 {
            if self.fetch_ref(url, NOTES_REF, auth)?.is_none() {
                // The remote has none: start afresh, not on a notes commit that never got there.
                let _ = self.repo.find_reference(NOTES_REF).and_then(|mut r| r.delete());
            }
            let before = match self.repo.find_note(Some(NOTES_REF), target) {
                Ok(n) => n.message().unwrap_or("").to_string(),
                Err(_) => String::new(),
            };
            let mut text = before;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&kept_line(kept));
            let sig = git2::Signature::new(
                "metricops",
                "metricops@localhost",
                &git2::Time::new(now.timestamp(), 0),
            )?;
            self.repo.note(&sig, &sig, Some(NOTES_REF), target, &text, true)?;
            let head = sha(self.repo.refname_to_id(NOTES_REF)?);
            match self.push_to_ref(url, &head, NOTES_REF, auth) {
                Ok(()) => return Ok(()),
                Err(e @ GitError::PushRejected { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three refused pushes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_git as git;
    use crate::domain::history::{KeptCommand, NOTES_REF};

    #[test]
    fn notes_are_appended_and_pushed_by_compare_and_swap_and_reverts_found_on_the_branch() {
        let dir = tempfile::tempdir().unwrap();
        let (remote, work) = crate::adapters::test_remote(dir.path(), "deploy 1.5.0", false);
        let culprit = git(&work, &["rev-parse", "HEAD"]);
        git(
            &work,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!(
                    "Revert \"deploy 1.5.0\"\n\nMetricops-Culprit: {culprit}\nMetricops-Workload: shop/api\n"
                ),
            ],
        );
        let revert = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let mirror = GitRepo::init_bare(&dir.path().join("mirror.git")).unwrap();
        let url = remote.to_str().unwrap();
        let tip = mirror.fetch(url, "main", None).unwrap();
        let (found, met) = mirror.reverts(&tip, None, None).unwrap();
        assert!(!met);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].sha.as_str(), found[0].culprit.as_str()), (revert.as_str(), culprit.as_str()));
        assert_eq!(found[0].workload.as_deref(), Some("shop/api"));
        let (none, met) = mirror.reverts(&tip, Some(&tip), None).unwrap();
        assert!(none.is_empty() && met, "a scanned tip stops the walk");

        let k = |by: &str| {
            Kept::Command(KeptCommand { at: Utc::now(), pr: 1, by: by.into(), command: "hold".into() })
        };
        let on = CommitSha(culprit.clone());
        mirror.add_note(url, None, &on, &k("alice"), Utc::now()).unwrap();
        // Another replica (its own mirror) writes on the same commit: it builds on the first note.
        let other = GitRepo::init_bare(&dir.path().join("other.git")).unwrap();
        other.fetch(url, "main", None).unwrap();
        other.add_note(url, None, &on, &k("bob"), Utc::now()).unwrap();
        // The first mirror's notes are behind now: its next write fetches and builds on them.
        mirror.add_note(url, None, &on, &k("carol"), Utc::now()).unwrap();
        let shown = git(&remote, &["notes", "--ref", NOTES_REF, "show", &culprit]);
        let who: Vec<String> = read_kept(&shown)
            .into_iter()
            .map(|k| match k {
                Kept::Command(c) => c.by,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(who, ["alice", "bob", "carol"], "no write lost:\n{shown}");
        let remote_repo = GitRepo::open(&remote).unwrap();
        assert_eq!(remote_repo.kept_notes().unwrap().len(), 3);
        assert!(GitRepo::open(&work).unwrap().kept_notes().unwrap().is_empty(), "no notes ref: none");
    }
}
