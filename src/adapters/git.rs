//! Git through libgit2: history for the culprit search, revert commits built in memory (bare
//! repositories work, no working tree is touched), branches, fetch and push.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use git2::{ObjectType, Oid, Repository, Signature};

use secrecy::{ExposeSecret, SecretString};

use super::git_history::GitHistory;
use super::git_https;
use crate::domain::culprit::{CommitInfo, CommitSha};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{path} is not a git repository (bare or not): {}", source.message())]
    NotARepository {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("unknown revision {rev:?} in {repo}")]
    UnknownRevision { rev: String, repo: String },
    #[error("reverting {commit} conflicts with later changes in: {}", files.join(", "))]
    Conflict { commit: String, files: Vec<String> },
    #[error("branch {name} already exists (at {target}); pick another with --branch or delete it")]
    BranchExists { name: String, target: String },
    #[error("push of {refspec} to {remote} was refused: {message}")]
    PushRejected { remote: String, refspec: String, message: String },
    #[error("{remote} refused our credentials: {message}")]
    AuthRefused { remote: String, message: String },
    #[error("the remote {remote} {why} (check repos[].url)")]
    RemoteUnavailable { remote: String, why: String },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

impl GitError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            GitError::NotARepository { .. } => "not_a_repository",
            GitError::UnknownRevision { .. } => "unknown_revision",
            GitError::Conflict { .. } => "conflict",
            GitError::BranchExists { .. } => "branch_exists",
            GitError::PushRejected { .. } => "push_rejected",
            GitError::AuthRefused { .. } => "auth_refused",
            GitError::RemoteUnavailable { .. } => "remote_unavailable",
            GitError::Git(_) => "git",
        }
    }
}

pub struct GitRepo {
    pub repo: Repository,
    path: String,
}

/// The last [`GitRepo::files_containing`] answer per (mirror, needle, size limit): the tree and
/// its matching files (path, blob).
type Scans = HashMap<(String, String, usize), (Oid, Vec<(String, Oid)>)>;

fn scans() -> &'static Mutex<Scans> {
    static S: OnceLock<Mutex<Scans>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// A regular file, executable or not (not a symlink, directory or submodule), by git file mode.
fn plain_file(mode: i32) -> bool {
    mode == 0o100644 || mode == 0o100755
}

/// A regular YAML file (not a symlink), by name and git file mode.
fn scanned_file(name: &str, mode: i32) -> bool {
    mode != MODE_LINK as i32 && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Callbacks that answer an HTTP authentication challenge once with the token (as GitHub wants it:
/// user `x-access-token`); a second challenge means the token was refused, and ends the attempt.
fn callbacks<'a>(auth: Option<&'a SecretString>, tries: &'a Cell<u32>) -> git2::RemoteCallbacks<'a> {
    let mut cbs = git2::RemoteCallbacks::new();
    if let Some(token) = auth {
        cbs.credentials(move |_url, _user, _allowed| {
            tries.set(tries.get() + 1);
            if tries.get() > 1 {
                return Err(git2::Error::new(
                    git2::ErrorCode::Auth,
                    git2::ErrorClass::Http,
                    "the token was refused",
                ));
            }
            git2::Cred::userpass_plaintext("x-access-token", token.expose_secret())
        });
    }
    cbs
}

/// An authentication failure names the remote (never the token); anything else stays as it was.
fn auth_error(url: &str, e: git2::Error) -> GitError {
    if e.code() == git2::ErrorCode::Auth
        || e.message().contains("authentication")
        || e.message().contains("401")
    {
        GitError::AuthRefused { remote: url.to_string(), message: e.message().to_string() }
    } else {
        GitError::Git(e)
    }
}

/// Lock files (`*.lock`) older than `age` in one of the bot's own mirrors: a crash mid-fetch leaves
/// them, and libgit2 then refuses every fetch ("failed to lock file"). Only the bot writes its
/// mirrors, and it holds a lock for milliseconds, so an old one is stale. Returns what it removed.
pub fn clear_stale_locks(mirror: &Path, age: std::time::Duration) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, age: std::time::Duration, depth: usize, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                // Objects hold no lock files worth a walk through thousands of directories.
                if depth < 8 && e.file_name() != "objects" {
                    walk(&p, age, depth + 1, out);
                }
            } else if p.extension().is_some_and(|x| x == "lock")
                && meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|e| e >= age)
                && std::fs::remove_file(&p).is_ok()
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(mirror, age, 0, &mut out);
    out
}

/// An error about talking to `url`, with the URL's password (or token) hidden wherever the error
/// quotes it: errors reach logs, PR comments and the console.
fn scrubbed(url: &str) -> impl Fn(GitError) -> GitError + '_ {
    use crate::domain::redact::{redact_url, scrub};
    move |e| match e {
        GitError::Git(g) => GitError::Git(git2::Error::new(g.code(), g.class(), scrub(g.message(), url))),
        GitError::PushRejected { refspec, message, .. } => {
            GitError::PushRejected { remote: redact_url(url), refspec, message: scrub(&message, url) }
        }
        GitError::AuthRefused { message, .. } => {
            GitError::AuthRefused { remote: redact_url(url), message: scrub(&message, url) }
        }
        GitError::RemoteUnavailable { why, .. } => {
            GitError::RemoteUnavailable { remote: redact_url(url), why: scrub(&why, url) }
        }
        other => other,
    }
}

/// The path of a remote that is on this machine, or `None` for a network URL.
fn local_path(url: &str) -> Option<&str> {
    match url.strip_prefix("file://") {
        Some(p) => Some(p),
        None if url.starts_with('/') || url.starts_with("./") || url.starts_with("../") => Some(url),
        None => None,
    }
}

/// A remote that is a path on this machine (`/srv/m.git`, `./m.git`, `file:///srv/m.git`): said
/// plainly when it is missing, unreadable or not a repository (libgit2 reports a missing path as
/// "unsupported URL protocol" and an unreadable one as "could not find repository").
fn check_local_remote(url: &str) -> Result<(), GitError> {
    let Some(path) = local_path(url) else { return Ok(()) };
    let unavailable = |why: String| Err(GitError::RemoteUnavailable { remote: url.to_string(), why });
    let p = Path::new(path);
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return unavailable("does not exist".into()),
        Err(e) => return unavailable(format!("cannot be read: {e}")),
        Ok(m) if !m.is_dir() => return unavailable("is not a directory".into()),
        Ok(_) => {}
    }
    if let Err(e) = std::fs::read_dir(p) {
        return unavailable(format!("cannot be read: {e}"));
    }
    let git_dir = if p.join("HEAD").is_file() { p.to_path_buf() } else { p.join(".git") };
    if !git_dir.join("HEAD").is_file() || !git_dir.join("objects").is_dir() {
        return unavailable("is not a git repository".into());
    }
    Ok(())
}

pub(super) fn oid(sha: &CommitSha) -> Result<Oid, git2::Error> {
    Oid::from_str(&sha.0)
}

pub(super) fn sha(oid: Oid) -> CommitSha {
    CommitSha(oid.to_string())
}

/// Process-wide libgit2 settings, applied once before the first repository is opened:
/// - no SHA-1 re-verification of every object read (git itself does not do it on reads either; it
///   cost more than half of a long history walk);
/// - no object cache: a walk reads each object once, and the cache's bookkeeping cost a fifth of it;
/// - small pack mapping windows, so a long walk's peak memory stays small.
fn tune_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    git_https::register();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        git2::opts::enable_caching(false);
        // SAFETY: called once, before any repository is opened by this process.
        unsafe {
            // 2 MB windows, 8 MB mapped at most: measured on a 20k-commit walk, peak RSS 50 -> 46 MB
            // and no slower (1 MB windows cost a fifth more time in mmap/munmap).
            let _ = git2::opts::set_mwindow_size(2 * 1024 * 1024);
            let _ = git2::opts::set_mwindow_mapped_limit(8 * 1024 * 1024);
        }
    });
}

impl GitRepo {
    pub fn open(path: &Path) -> Result<GitRepo, GitError> {
        tune_libgit2();
        let repo = Repository::open(path)
            .map_err(|source| GitError::NotARepository { path: path.display().to_string(), source })?;
        Ok(GitRepo { repo, path: path.display().to_string() })
    }

    pub fn init_bare(path: &Path) -> Result<GitRepo, GitError> {
        tune_libgit2();
        let repo = Repository::init_bare(path)?;
        Ok(GitRepo { repo, path: path.display().to_string() })
    }

    /// From now on, objects this handle writes stay in memory (libgit2's mempack, ahead of the
    /// repository's own object store) and are gone when the handle is: a revert built to be pushed
    /// travels in its push and needs no place in the mirror. Left on disk, every revert's commit
    /// and trees stayed loose in the mirror for good, and each later push, which must tell the
    /// remote's branches it has from new ones, read the trees of every revert branch the remote
    /// still advertises (23 ms per push with 200 of them open). Refs made on this handle must not
    /// outlive it: they would name objects that are gone.
    pub fn write_in_memory(&self) -> Result<(), GitError> {
        self.repo.odb()?.add_new_mempack_backend(1000)?;
        Ok(())
    }

    /// Removes the mirror's own branches (`refs/heads/metricops/…`, left by earlier versions, or
    /// by a crash between building a revert in memory and forgetting its branch) and push refs
    /// (`refs/metricops/push/…`). Returns how many.
    pub fn drop_own_refs(&self) -> Result<usize, GitError> {
        let mut names = Vec::new();
        for glob in ["refs/heads/metricops/*", "refs/metricops/*"] {
            for r in self.repo.references_glob(glob)? {
                if let Ok(name) = r?.name() {
                    names.push(name.to_string());
                }
            }
        }
        for name in &names {
            if let Ok(mut r) = self.repo.find_reference(name) {
                r.delete()?;
            }
        }
        Ok(names.len())
    }

    pub fn resolve(&self, rev: &str) -> Result<CommitSha, GitError> {
        let unknown = || GitError::UnknownRevision { rev: rev.to_string(), repo: self.path.clone() };
        let obj = self.repo.revparse_single(rev).map_err(|_| unknown())?;
        let commit = obj.peel_to_commit().map_err(|_| unknown())?;
        Ok(sha(commit.id()))
    }

    pub fn history(&self, scope: &[String]) -> GitHistory<'_> {
        let scope = scope
            .iter()
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty() && p != ".")
            .collect();
        GitHistory::new(&self.repo, scope)
    }

    pub fn commit_info(&self, c: &CommitSha) -> Result<CommitInfo, GitError> {
        Ok(info(&self.repo.find_commit(oid(c)?)?))
    }

    /// A file's text at a commit, if it exists there (bytes that are not UTF-8 replaced).
    pub fn read_file(&self, commit: &CommitSha, path: &str) -> Result<Option<String>, GitError> {
        Ok(self.read_bytes(commit, path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// A regular file's bytes at a commit, if it exists there.
    pub fn read_bytes(&self, commit: &CommitSha, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let tree = self.repo.find_commit(oid(commit)?)?.tree()?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == MODE_LINK as i32 {
            return Ok(None);
        }
        let blob = self.repo.find_blob(entry.id())?;
        Ok(Some(blob.content().to_vec()))
    }

    /// The YAML files (`.yaml`, `.yml`) at a commit whose text contains `needle`, up to `max` bytes
    /// each (bigger ones, symlinks and submodules are passed over), with their text, by path.
    ///
    /// The answer for the last commit's first parent asked about in this mirror is kept (paths and
    /// blob ids, per needle): the next tree is scanned from its difference to that one, so a
    /// revert's scan reads the files it and the branch's new commits changed, not every YAML file
    /// of the repository again.
    pub fn files_containing(
        &self,
        commit: &CommitSha,
        needle: &str,
        max: usize,
    ) -> Result<Vec<(String, String)>, GitError> {
        let commit = self.repo.find_commit(oid(commit)?)?;
        let tree = commit.tree()?;
        // The answer kept is the first parent's: a revert is built in memory and gone once pushed,
        // its parent (the branch tip) stays in the mirror, and is the next revert's parent too.
        let parent = commit.parent(0).ok().map(|p| p.tree()).transpose()?;
        let kept = parent.as_ref().unwrap_or(&tree);
        let key = (self.path.clone(), needle.to_string(), max);
        let last = scans().lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let kept_hits =
            match last.and_then(|(old, hits)| self.rescan(old, kept, hits, needle, max).transpose()) {
                Some(hits) => hits?,
                None => self.scan(kept, needle, max)?,
            };
        scans().lock().unwrap_or_else(|e| e.into_inner()).insert(key, (kept.id(), kept_hits.clone()));
        let hits = match self.rescan(kept.id(), &tree, kept_hits, needle, max)? {
            Some(hits) => hits,
            None => self.scan(&tree, needle, max)?,
        };
        hits.into_iter()
            .map(|(path, id)| {
                let blob = self.repo.find_blob(id)?;
                Ok((path, String::from_utf8_lossy(blob.content()).into_owned()))
            })
            .collect()
    }

    /// Every candidate file of `tree` that holds `needle`: (path, blob), by path.
    fn scan(&self, tree: &git2::Tree, needle: &str, max: usize) -> Result<Vec<(String, Oid)>, GitError> {
        let mut out = Vec::new();
        let mut failed = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or("");
            if entry.kind() != Some(ObjectType::Blob) || !scanned_file(name, entry.filemode()) {
                return git2::TreeWalkResult::Ok;
            }
            match self.holds(entry.id(), needle, max) {
                Ok(true) => out.push((format!("{dir}{name}"), entry.id())),
                Ok(false) => {}
                Err(e) => {
                    failed = Some(e);
                    return git2::TreeWalkResult::Abort;
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        out.sort();
        Ok(out)
    }

    /// [`Self::scan`] of `tree` from the answer for `old`: only the files that differ are read.
    /// `None` when `old` is no longer in the mirror (then the whole tree is scanned).
    fn rescan(
        &self,
        old: Oid,
        tree: &git2::Tree,
        mut hits: Vec<(String, Oid)>,
        needle: &str,
        max: usize,
    ) -> Result<Option<Vec<(String, Oid)>>, GitError> {
        if old == tree.id() {
            return Ok(Some(hits));
        }
        let Ok(old) = self.repo.find_tree(old) else { return Ok(None) };
        for change in changed_files(&self.repo, Some(&old), Some(tree))? {
            hits.retain(|(p, _)| *p != change.path);
            let Some((id, mode)) = change.new else { continue };
            let name = change.path.rsplit('/').next().unwrap_or(&change.path);
            if plain_file(mode) && scanned_file(name, mode) && self.holds(id, needle, max)? {
                hits.push((change.path, id));
            }
        }
        hits.sort();
        Ok(Some(hits))
    }

    /// Whether the blob is at most `max` bytes and contains `needle`.
    fn holds(&self, id: Oid, needle: &str, max: usize) -> Result<bool, git2::Error> {
        let (size, _) = self.repo.odb()?.read_header(id)?;
        if size > max {
            return Ok(false);
        }
        let blob = self.repo.find_blob(id)?;
        Ok(memchr::memmem::find(blob.content(), needle.as_bytes()).is_some())
    }

    /// The tree `git revert` would make of `culprit` on top of `onto` (merges against parent 1).
    pub fn revert_tree(&self, culprit: &CommitSha, onto: &CommitSha) -> Result<Oid, GitError> {
        let bad = self.repo.find_commit(oid(culprit)?)?;
        let ours = self.repo.find_commit(oid(onto)?)?;
        let mainline = if bad.parent_count() > 1 { 1 } else { 0 };
        if let Some(tree) = self.revert_in_place(&bad, &ours)? {
            return Ok(tree);
        }
        let mut index = self.repo.revert_commit(&bad, &ours, mainline, None)?;
        if index.has_conflicts() {
            let mut files: Vec<String> = index
                .conflicts()?
                .filter_map(Result::ok)
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                .collect();
            files.sort();
            files.dedup();
            return Err(GitError::Conflict { commit: culprit.0.clone(), files });
        }
        Ok(index.write_tree_to(&self.repo)?)
    }

    /// The revert's tree without a whole-tree merge, where that gives exactly what the merge
    /// would: the culprit only modified files (none added, removed or renamed) and `onto` still
    /// holds each of them as the culprit left it. Then the three-way merge (base: the culprit,
    /// ours: `onto`, theirs: its parent) takes the parent's version of each of those files and
    /// `onto`'s everywhere else — renames cannot pair anything, as neither side adds or removes
    /// those files and the parent's side changes nothing else — so `onto`'s tree with those entries
    /// put back is that tree, built by rewriting only the trees above them. A merge of the whole
    /// tree read every directory of the repository (most of a revert's time in a large one).
    /// `None` otherwise: the merge decides.
    fn revert_in_place(&self, bad: &git2::Commit, ours: &git2::Commit) -> Result<Option<Oid>, GitError> {
        let Ok(parent) = bad.parent(0) else { return Ok(None) };
        let (before, after, here) = (parent.tree()?, bad.tree()?, ours.tree()?);
        let mut b = git2::build::TreeUpdateBuilder::new();
        let mut changed = 0;
        for change in changed_files(&self.repo, Some(&before), Some(&after))? {
            let (Some((old_id, old_mode)), Some((new_id, new_mode))) = (change.old, change.new) else {
                return Ok(None);
            };
            if !plain_file(old_mode) || !plain_file(new_mode) {
                return Ok(None);
            }
            let Ok(now) = here.get_path(Path::new(&change.path)) else { return Ok(None) };
            if now.id() != new_id || now.filemode() != new_mode {
                return Ok(None);
            }
            let mode =
                if old_mode == 0o100755 { git2::FileMode::BlobExecutable } else { git2::FileMode::Blob };
            b.upsert(change.path.as_str(), old_id, mode);
            changed += 1;
        }
        if changed == 0 {
            return Ok(None);
        }
        Ok(Some(b.create_updated(&self.repo, &here)?))
    }

    /// `onto`'s tree with these files replaced.
    pub fn tree_with(&self, onto: &CommitSha, files: &[(String, String)]) -> Result<Oid, GitError> {
        let files: Vec<(String, Vec<u8>)> =
            files.iter().map(|(p, t)| (p.clone(), t.clone().into_bytes())).collect();
        self.tree_with_bytes(onto, &files)
    }

    /// `onto`'s tree with these files replaced, byte for byte.
    pub fn tree_with_bytes(&self, onto: &CommitSha, files: &[(String, Vec<u8>)]) -> Result<Oid, GitError> {
        let base = self.repo.find_commit(oid(onto)?)?.tree()?;
        let mut b = git2::build::TreeUpdateBuilder::new();
        for (path, bytes) in files {
            let mode = base.get_path(Path::new(path)).map(|e| e.filemode()).unwrap_or(0o100644);
            let blob = self.repo.blob(bytes)?;
            b.upsert(
                path.as_str(),
                blob,
                if mode == 0o100755 { git2::FileMode::BlobExecutable } else { git2::FileMode::Blob },
            );
        }
        Ok(b.create_updated(&self.repo, &base)?)
    }

    pub fn tree_of(&self, c: &CommitSha) -> Result<Oid, GitError> {
        Ok(self.repo.find_commit(oid(c)?)?.tree_id())
    }

    /// Writes a commit object (no ref moves). The committer is the repository's configured user,
    /// or `metricops <metricops@localhost>`; the time is the one passed in.
    pub fn write_commit(
        &self,
        tree: Oid,
        parent: &CommitSha,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<CommitSha, GitError> {
        let parent = self.repo.find_commit(oid(parent)?)?;
        let tree = self.repo.find_tree(tree)?;
        let time = git2::Time::new(now.timestamp(), 0);
        let (name, email) = match self.repo.signature() {
            Ok(s) => (
                s.name().unwrap_or("metricops").to_string(),
                s.email().unwrap_or("metricops@localhost").to_string(),
            ),
            Err(_) => ("metricops".to_string(), "metricops@localhost".to_string()),
        };
        let sig = Signature::new(&name, &email, &time)?;
        Ok(sha(self.repo.commit(None, &sig, &sig, message, &tree, &[&parent])?))
    }

    /// Creates `refs/heads/<name>` at `target`; an existing branch is an error unless it already
    /// points there.
    pub fn create_branch(&self, name: &str, target: &CommitSha) -> Result<(), GitError> {
        let refname = format!("refs/heads/{name}");
        if let Ok(existing) = self.repo.find_reference(&refname) {
            let at = existing.target().map(|o| o.to_string()).unwrap_or_default();
            if at == target.0 {
                return Ok(());
            }
            return Err(GitError::BranchExists { name: name.to_string(), target: at });
        }
        self.repo.reference(&refname, oid(target)?, false, &format!("metricops: revert branch {name}"))?;
        Ok(())
    }

    pub fn delete_branch(&self, name: &str) -> Result<(), GitError> {
        if let Ok(mut r) = self.repo.find_reference(&format!("refs/heads/{name}")) {
            r.delete()?;
        }
        Ok(())
    }

    /// Commits these files on top of `parent` (or as a root commit) and moves `refs/heads/<branch>`.
    pub fn commit_files(
        &self,
        branch: &str,
        files: &[(String, String)],
        message: &str,
        author: (&str, &str),
        when: DateTime<Utc>,
    ) -> Result<CommitSha, GitError> {
        let refname = format!("refs/heads/{branch}");
        let parent = self.repo.find_reference(&refname).ok().and_then(|r| r.target());
        let base = match parent {
            Some(p) => self.repo.find_commit(p)?.tree()?,
            None => self.repo.find_tree(self.repo.treebuilder(None)?.write()?)?,
        };
        let mut b = git2::build::TreeUpdateBuilder::new();
        for (path, text) in files {
            let blob = self.repo.blob(text.as_bytes())?;
            b.upsert(path.as_str(), blob, git2::FileMode::Blob);
        }
        let tree = self.repo.find_tree(b.create_updated(&self.repo, &base)?)?;
        let sig = Signature::new(author.0, author.1, &git2::Time::new(when.timestamp(), 0))?;
        let parents: Vec<git2::Commit<'_>> =
            parent.map(|p| self.repo.find_commit(p)).transpose()?.into_iter().collect();
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        Ok(sha(self.repo.commit(Some(&refname), &sig, &sig, message, &tree, &refs)?))
    }

    /// The branches at a remote (`git ls-remote --heads`).
    pub fn remote_heads(
        &self,
        url: &str,
        auth: Option<&SecretString>,
    ) -> Result<Vec<(String, CommitSha)>, GitError> {
        self.remote_heads_raw(url, auth).map_err(scrubbed(url))
    }

    fn remote_heads_raw(
        &self,
        url: &str,
        auth: Option<&SecretString>,
    ) -> Result<Vec<(String, CommitSha)>, GitError> {
        check_local_remote(url)?;
        let mut remote = self.repo.remote_anonymous(url)?;
        let tries = Cell::new(0);
        git_https::with_credentials(url, auth, || {
            remote
                .connect_auth(git2::Direction::Fetch, Some(callbacks(auth, &tries)), None)
                .map_err(|e| auth_error(url, e))?;
            let heads = remote
                .list()?
                .iter()
                .filter_map(|h| h.name().strip_prefix("refs/heads/").map(|n| (n.to_string(), sha(h.oid()))))
                .collect();
            Ok(heads)
        })
    }

    pub fn branch_target(&self, name: &str) -> Option<CommitSha> {
        self.repo.find_reference(&format!("refs/heads/{name}")).ok().and_then(|r| r.target()).map(sha)
    }

    /// `git diff parent..commit` as a patch.
    pub fn patch(&self, from: &CommitSha, to: &CommitSha) -> Result<String, GitError> {
        let a = self.repo.find_commit(oid(from)?)?.tree()?;
        let b = self.repo.find_commit(oid(to)?)?.tree()?;
        // libgit2's diff told exactly which files to look at (literal paths: it then opens only
        // the directories above them), not left to walk every tree of both sides.
        let mut opts = git2::DiffOptions::new();
        opts.disable_pathspec_match(true);
        let changed = changed_files(&self.repo, Some(&a), Some(&b))?;
        if changed.is_empty() {
            return Ok(String::new());
        }
        for c in &changed {
            opts.pathspec(&c.path);
        }
        let diff = self.repo.diff_tree_to_tree(Some(&a), Some(&b), Some(&mut opts))?;
        let mut out = String::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            let origin = line.origin();
            if matches!(origin, '+' | '-' | ' ') {
                out.push(origin);
            }
            out.push_str(&String::from_utf8_lossy(line.content()));
            true
        })?;
        Ok(out)
    }

    /// Fetches `branch` from `url` into `refs/remotes/origin/<branch>` and returns its tip.
    pub fn fetch(&self, url: &str, branch: &str, auth: Option<&SecretString>) -> Result<CommitSha, GitError> {
        self.fetch_raw(url, branch, auth).map_err(scrubbed(url))
    }

    fn fetch_raw(&self, url: &str, branch: &str, auth: Option<&SecretString>) -> Result<CommitSha, GitError> {
        check_local_remote(url)?;
        self.fetch_refspec(url, &format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"), auth)?;
        self.resolve(&format!("refs/remotes/origin/{branch}"))
    }

    /// One fetch of one refspec, with the credentials and their retry count.
    fn fetch_refspec(&self, url: &str, refspec: &str, auth: Option<&SecretString>) -> Result<(), GitError> {
        let mut remote = self.repo.remote_anonymous(url)?;
        let tries = Cell::new(0);
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(callbacks(auth, &tries));
        git_https::with_credentials(url, auth, || remote.fetch(&[refspec], Some(&mut opts), None))
            .map_err(|e| auth_error(url, e))
    }

    /// Pushes `commit` to `refs/heads/<branch>` at `url`; non-fast-forward and remote refusals
    /// come back as `PushRejected`.
    pub fn push(
        &self,
        url: &str,
        commit: &CommitSha,
        branch: &str,
        auth: Option<&SecretString>,
    ) -> Result<(), GitError> {
        self.push_ref(url, commit, &format!("refs/heads/{branch}"), auth, false).map_err(scrubbed(url))
    }

    /// Pushes `commit` to any ref at `url` (`refs/notes/metricops`) as a compare-and-swap: only when
    /// it fast-forwards what the ref holds there; otherwise `PushRejected`.
    pub fn push_to_ref(
        &self,
        url: &str,
        commit: &CommitSha,
        refname: &str,
        auth: Option<&SecretString>,
    ) -> Result<(), GitError> {
        self.push_ref(url, commit, refname, auth, false).map_err(scrubbed(url))
    }

    /// Fetches `refname` from `url` into the same ref here, forced (the remote's value wins);
    /// `None` when the remote has no such ref.
    pub fn fetch_ref(
        &self,
        url: &str,
        refname: &str,
        auth: Option<&SecretString>,
    ) -> Result<Option<CommitSha>, GitError> {
        self.fetch_ref_raw(url, refname, auth).map_err(scrubbed(url))
    }

    fn fetch_ref_raw(
        &self,
        url: &str,
        refname: &str,
        auth: Option<&SecretString>,
    ) -> Result<Option<CommitSha>, GitError> {
        check_local_remote(url)?;
        let at_remote = self.remote_ref(url, refname, auth)?;
        let Some(at) = at_remote else {
            return Ok(None);
        };
        self.fetch_refspec(url, &format!("+{refname}:{refname}"), auth)?;
        Ok(Some(at))
    }

    /// What `refname` holds at `url`, if anything (`git ls-remote URL REF`).
    fn remote_ref(
        &self,
        url: &str,
        refname: &str,
        auth: Option<&SecretString>,
    ) -> Result<Option<CommitSha>, GitError> {
        let mut remote = self.repo.remote_anonymous(url)?;
        let tries = Cell::new(0);
        git_https::with_credentials(url, auth, || {
            remote
                .connect_auth(git2::Direction::Fetch, Some(callbacks(auth, &tries)), None)
                .map_err(|e| auth_error(url, e))?;
            Ok(remote.list()?.iter().find(|h| h.name() == refname).map(|h| sha(h.oid())))
        })
    }

    /// Pushes even when the remote branch is not an ancestor (a revert branch rebuilt on a new tip).
    pub fn force_push(
        &self,
        url: &str,
        commit: &CommitSha,
        branch: &str,
        auth: Option<&SecretString>,
    ) -> Result<(), GitError> {
        self.push_ref(url, commit, &format!("refs/heads/{branch}"), auth, true).map_err(scrubbed(url))
    }

    /// Pushes `commit` to `dest` (a full ref name) at `url`.
    fn push_ref(
        &self,
        url: &str,
        commit: &CommitSha,
        dest: &str,
        auth: Option<&SecretString>,
        force: bool,
    ) -> Result<(), GitError> {
        check_local_remote(url)?;
        if !force && let Some(path) = local_path(url) {
            return self.push_local(url, path, commit, dest, auth);
        }
        let tmp = format!("refs/metricops/push/{}", dest.trim_start_matches("refs/").replace('/', "-"));
        self.repo.reference(&tmp, oid(commit)?, true, "metricops: push")?;
        let refspec = format!("{}{tmp}:{dest}", if force { "+" } else { "" });
        let mut remote = self.repo.remote_anonymous(url)?;
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let tries = Cell::new(0);
        let mut cbs = callbacks(auth, &tries);
        cbs.push_update_reference(|_, status| {
            if let Some(s) = status {
                *rejected.borrow_mut() = Some(s.to_string());
            }
            Ok(())
        });
        let mut opts = git2::PushOptions::new();
        opts.remote_callbacks(cbs);
        let result = git_https::with_credentials(url, auth, || {
            git_https::with_push_context(url, dest, self.repo.path(), || {
                remote.push(&[&refspec], Some(&mut opts))
            })
        });
        drop(opts);
        let _ = self.repo.find_reference(&tmp).and_then(|mut r| r.delete());
        let reject = |message: String| GitError::PushRejected {
            remote: url.to_string(),
            refspec: format!("{}:{dest}", commit.short()),
            message,
        };
        if let Err(e) = result {
            if e.code() == git2::ErrorCode::Auth || e.message().contains("authentication failed") {
                return Err(auth_error(url, e));
            }
            return Err(reject(e.message().to_string()));
        }
        if let Some(m) = rejected.into_inner() {
            return Err(reject(m));
        }
        Ok(())
    }
}

impl GitRepo {
    /// A push to a repository on this machine, as `git receive-pack` does it: libgit2's local
    /// transport writes the branch with force whatever it holds, so a commit someone pushed since
    /// the fetch would be lost. The objects travel to a ref of our own at the remote; the branch is
    /// then moved only when `commit` fast-forwards it, by a compare-and-swap on the value it held
    /// (a push landing in between makes it fail, and nothing is overwritten).
    fn push_local(
        &self,
        url: &str,
        path: &str,
        commit: &CommitSha,
        dest: &str,
        auth: Option<&SecretString>,
    ) -> Result<(), GitError> {
        let branch = dest.strip_prefix("refs/heads/").unwrap_or(dest);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let incoming = format!(
            "refs/heads/metricops/incoming/{}-{}-{nanos}",
            branch.trim_start_matches("refs/").replace('/', "-"),
            std::process::id()
        );
        // Our own ref at the remote: forced, it is nobody else's.
        self.push_ref(url, commit, &incoming, auth, true)?;
        let remote = Repository::open(path)
            .map_err(|source| GitError::NotARepository { path: path.to_string(), source })?;
        let refname = dest.to_string();
        let new = oid(commit)?;
        let reject = |message: String| GitError::PushRejected {
            remote: url.to_string(),
            refspec: format!("{}:{refname}", commit.short()),
            message,
        };
        let moved = match remote.refname_to_id(&refname) {
            Ok(old) if old == new => Ok(()),
            Ok(old) if remote.graph_descendant_of(new, old).unwrap_or(false) => remote
                .reference_matching(&refname, new, true, old, "metricops: push")
                .map(|_| ())
                .map_err(|e| reject(format!("{branch} moved while pushing: {}", e.message()))),
            Ok(old) => Err(reject(format!(
                "{branch} is at {} now, which {} does not build on (someone pushed since the fetch): not a fast-forward",
                &old.to_string()[..12],
                commit.short()
            ))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => remote
                .reference(&refname, new, false, "metricops: push")
                .map(|_| ())
                .map_err(|e| reject(format!("{branch} appeared while pushing: {}", e.message()))),
            Err(e) => Err(GitError::Git(e)),
        };
        let _ = remote.find_reference(&incoming).and_then(|mut r| r.delete());
        moved
    }
}

pub(super) const MODE_TREE: u32 = 0o40000;
pub(super) const MODE_LINK: u32 = 0o120000;
pub(super) const MODE_COMMIT: u32 = 0o160000;

/// The entries of two trees side by side, in git's order (past the common part of two names, a
/// directory's goes on with '/'): each name once, with the entry on each side that has it. A file
/// and a directory of the same name are two names. `key` gives an entry's name and whether it is
/// a directory.
pub(super) fn side_by_side<'a, T>(
    olds: &'a [T],
    news: &'a [T],
    key: impl Fn(&T) -> (&[u8], bool),
) -> impl Iterator<Item = (Option<&'a T>, Option<&'a T>)> {
    let order = move |a: &T, b: &T| {
        let ((x, xt), (y, yt)) = (key(a), key(b));
        let n = x.len().min(y.len());
        let next = |name: &[u8], tree: bool| name.get(n).copied().or(tree.then_some(b'/'));
        x[..n].cmp(&y[..n]).then_with(|| next(x, xt).cmp(&next(y, yt)))
    };
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let pair = match (olds.get(i), news.get(j)) {
            (None, None) => return None,
            (Some(a), Some(b)) => match order(a, b) {
                std::cmp::Ordering::Less => (Some(a), None),
                std::cmp::Ordering::Greater => (None, Some(b)),
                std::cmp::Ordering::Equal => (Some(a), Some(b)),
            },
            pair => pair,
        };
        i += usize::from(pair.0.is_some());
        j += usize::from(pair.1.is_some());
        Some(pair)
    })
}

/// A file (blob, executable, symbolic link or submodule) that differs between two trees: its id
/// and mode on each side, `None` where it is not there.
#[derive(Debug, PartialEq, Eq)]
struct Changed {
    path: String,
    old: Option<(Oid, i32)>,
    new: Option<(Oid, i32)>,
}

/// Every file that differs between two trees (either may be absent), by path in byte order (the
/// order of libgit2's and git's diffs). A subtree whose id is the same on both sides is never
/// opened: libgit2's tree diff reads every tree of both sides, which in a repository of a
/// thousand directories was most of a revert's time. A file that became a directory (or the
/// reverse) is its removal plus the files added (or the reverse). No rename detection.
fn changed_files(
    repo: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
) -> Result<Vec<Changed>, git2::Error> {
    fn walk<'t>(
        repo: &Repository,
        old: Option<&'t git2::Tree<'_>>,
        new: Option<&'t git2::Tree<'_>>,
        prefix: &str,
        out: &mut Vec<Changed>,
    ) -> Result<(), git2::Error> {
        if old.map(|t| t.id()) == new.map(|t| t.id()) {
            return Ok(());
        }
        // Both trees are sorted the way git sorts them (a directory's name as if it ended in
        // '/'): walked side by side, no entry copied.
        let entries = |t: Option<&'t git2::Tree<'_>>| -> Vec<git2::TreeEntry<'t>> {
            t.map(|t| t.iter().collect()).unwrap_or_default()
        };
        let (olds, news) = (entries(old), entries(new));
        let is_tree = |e: &git2::TreeEntry<'_>| e.filemode() == MODE_TREE as i32;
        let side = |e: Option<&git2::TreeEntry<'_>>| e.map(|e| (e.id(), e.filemode()));
        for (o, n) in side_by_side(&olds, &news, |e| (e.name_bytes(), is_tree(e))) {
            if side(o) == side(n) {
                continue;
            }
            let name = o.or(n).map(|e| e.name_bytes()).unwrap_or_default();
            let path = format!("{prefix}{}", String::from_utf8_lossy(name));
            let subtree = |e: Option<&git2::TreeEntry<'_>>| {
                e.filter(|e| is_tree(e)).map(|e| repo.find_tree(e.id())).transpose()
            };
            // Same name, same kind (git's order pairs a file only with a file): a file changed,
            // or a directory to walk (on the side or sides that have it).
            if o.is_some_and(is_tree) || n.is_some_and(is_tree) {
                walk(repo, subtree(o)?.as_ref(), subtree(n)?.as_ref(), &format!("{path}/"), out)?;
            } else {
                out.push(Changed { path, old: side(o), new: side(n) });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(repo, old, new, "", &mut out)?;
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

pub(super) fn info(c: &git2::Commit<'_>) -> CommitInfo {
    let author = c.author();
    // When the commit landed (committer time): a squashed or rebased change can be authored days earlier.
    let t = c.committer().when();
    let offset = FixedOffset::east_opt(t.offset_minutes() * 60)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    let time =
        offset.timestamp_opt(t.seconds(), 0).single().unwrap_or_else(|| offset.timestamp_opt(0, 0).unwrap());
    let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
    CommitInfo {
        sha: sha(c.id()),
        parents: c.parent_ids().map(sha).collect(),
        summary: message.lines().next().unwrap_or("").to_string(),
        message,
        author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
        author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
        time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_remote_that_is_missing_or_not_a_repository_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = GitRepo::init_bare(&dir.path().join("mirror.git")).unwrap();
        let missing = dir.path().join("nowhere.git");
        let e = mirror.fetch(missing.to_str().unwrap(), "main", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the remote {} does not exist (check repos[].url)", missing.display())
        );
        assert_eq!(e.metric_label(), "remote_unavailable");
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let url = format!("file://{}", plain.display());
        let e = mirror.remote_heads(&url, None).unwrap_err();
        assert_eq!(e.to_string(), format!("the remote {url} is not a git repository (check repos[].url)"));
        // A real repository passes the check and is fetched from.
        let real = dir.path().join("real.git");
        GitRepo::init_bare(&real).unwrap();
        assert!(check_local_remote(real.to_str().unwrap()).is_ok());
        assert!(check_local_remote("https://example.com/x.git").is_ok(), "not a path: left to git");
    }

    /// A work tree for these tests, committed with the git CLI.
    struct Work(tempfile::TempDir);

    impl Work {
        fn new() -> Work {
            let dir = tempfile::tempdir().unwrap();
            crate::adapters::test_git(dir.path(), &["init", "-q", "-b", "main", "work"]);
            Work(dir)
        }

        fn path(&self) -> std::path::PathBuf {
            self.0.path().join("work")
        }

        fn write(&self, path: &str, text: &str) {
            let p = self.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        /// Everything in the work tree, committed (an empty commit if nothing changed).
        fn commit(&self, message: &str) -> CommitSha {
            let git = |args: &[&str]| crate::adapters::test_git(&self.path(), args);
            git(&["add", "-A"]);
            git(&["commit", "-q", "--allow-empty", "-m", message]);
            CommitSha(git(&["rev-parse", "HEAD"]))
        }
    }

    #[test]
    fn the_files_holding_a_needle_are_the_same_scanned_whole_or_from_the_last_tree() {
        let w = Work::new();
        let (work, write, commit) = (w.path(), |p: &str, t: &str| w.write(p, t), |m: &str| w.commit(m));
        write("a.yaml", "kind: X # NEEDLE\n");
        write("b.yml", "kind: Y\n");
        write("big.yaml", &format!("# NEEDLE\n{}", "x".repeat(200)));
        write("d/e.yaml", "NEEDLE\n");
        write("notes.txt", "NEEDLE\n");
        std::os::unix::fs::symlink("a.yaml", work.join("link.yaml")).unwrap();
        let first = commit("one");
        std::fs::remove_file(work.join("d/e.yaml")).unwrap();
        std::fs::remove_file(work.join("link.yaml")).unwrap();
        write("link.yaml", "now a file with the NEEDLE\n");
        write("a.yaml", "kind: X\n");
        write("b.yml", "kind: Y # NEEDLE\n");
        write("f/g.yaml", "NEEDLE\n");
        let second = commit("two");
        let repo = GitRepo::open(&work.join(".git")).unwrap();
        let names = |c: &CommitSha| -> Vec<String> {
            repo.files_containing(c, "NEEDLE", 100).unwrap().into_iter().map(|(p, _)| p).collect()
        };
        let whole = |c: &CommitSha| -> Vec<String> {
            let tree = repo.repo.find_commit(oid(c).unwrap()).unwrap().tree().unwrap();
            repo.scan(&tree, "NEEDLE", 100).unwrap().into_iter().map(|(p, _)| p).collect()
        };
        assert_eq!(names(&first), ["a.yaml", "d/e.yaml"], "no symlink, no .txt, nothing over the limit");
        assert_eq!(names(&second), ["b.yml", "f/g.yaml", "link.yaml"], "from the first tree's answer");
        assert_eq!(names(&second), whole(&second));
        assert_eq!(names(&first), whole(&first), "and back");
        let texts = repo.files_containing(&second, "NEEDLE", 100).unwrap();
        assert_eq!(texts[0], ("b.yml".to_string(), "kind: Y # NEEDLE\n".to_string()), "with the file's text");
    }

    /// libgit2's whole-tree diff, by path: each side's (id, mode), a split type change merged.
    fn libgit2_changes(repo: &GitRepo, a: &git2::Tree, b: &git2::Tree) -> Vec<Changed> {
        let diff = repo.repo.diff_tree_to_tree(Some(a), Some(b), None).unwrap();
        let mut by_path: std::collections::BTreeMap<String, Changed> = Default::default();
        for d in diff.deltas() {
            let side = |f: git2::DiffFile| f.exists().then(|| (f.id(), i32::from(f.mode())));
            let path = d.new_file().path().or(d.old_file().path()).unwrap().to_str().unwrap().to_string();
            let e = by_path.entry(path.clone()).or_insert(Changed { path, old: None, new: None });
            e.old = e.old.or(side(d.old_file()));
            e.new = e.new.or(side(d.new_file()));
        }
        by_path.into_values().collect()
    }

    #[test]
    fn the_files_two_trees_differ_in_are_libgit2s_diff_without_reading_unchanged_trees() {
        let w = Work::new();
        let (work, write, commit) = (w.path(), |p: &str, t: &str| w.write(p, t), |m: &str| w.commit(m));
        let git = |args: &[&str]| crate::adapters::test_git(&w.path(), args);
        for i in 0..30 {
            write(&format!("apps/w{i}/deploy.yaml"), &format!("image: w{i}:1.0\n"));
        }
        write("a", "a file that becomes a directory\n");
        write("b/c.yaml", "a directory that becomes a file\n");
        write("to-link.yaml", "becomes a symbolic link\n");
        write("run.sh", "#!/bin/sh\n");
        write("gone/x.yaml", "removed\n");
        write("a.b", "sorts between a and a/\n");
        let first = commit("one");
        write("apps/w4/deploy.yaml", "image: w4:1.1\n");
        write("apps/w17/extra.yaml", "added\n");
        std::fs::remove_file(work.join("a")).unwrap();
        write("a/inside.yaml", "now a directory\n");
        std::fs::remove_dir_all(work.join("b")).unwrap();
        write("b", "now a file\n");
        std::fs::remove_file(work.join("to-link.yaml")).unwrap();
        std::os::unix::fs::symlink("run.sh", work.join("to-link.yaml")).unwrap();
        std::fs::remove_dir_all(work.join("gone")).unwrap();
        git(&["add", "-A"]);
        git(&["update-index", "--chmod=+x", "run.sh"]);
        let sub = "1234567890123456789012345678901234567890";
        git(&["update-index", "--add", "--cacheinfo", &format!("160000,{sub},vendor/sub")]);
        git(&["commit", "-q", "-m", "two"]);
        let second = CommitSha(git(&["rev-parse", "HEAD"]));
        let repo = GitRepo::open(&work.join(".git")).unwrap();
        let tree = |c: &CommitSha| repo.repo.find_commit(oid(c).unwrap()).unwrap().tree().unwrap();
        let (a, b) = (tree(&first), tree(&second));
        let ours = changed_files(&repo.repo, Some(&a), Some(&b)).unwrap();
        let paths: Vec<&str> = ours.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a",
                "a/inside.yaml",
                "apps/w17/extra.yaml",
                "apps/w4/deploy.yaml",
                "b",
                "b/c.yaml",
                "gone/x.yaml",
                "run.sh",
                "to-link.yaml",
                "vendor/sub"
            ]
        );
        let mut theirs = libgit2_changes(&repo, &a, &b);
        theirs.sort_by(|x, y| x.path.as_bytes().cmp(y.path.as_bytes()));
        assert_eq!(ours, theirs);
        assert_eq!(changed_files(&repo.repo, Some(&b), Some(&b)).unwrap(), []);
        let reversed = changed_files(&repo.repo, Some(&b), Some(&a)).unwrap();
        assert!(
            reversed.iter().zip(&ours).all(|(r, o)| r.path == o.path && r.old == o.new && r.new == o.old)
        );
        // The patch a PR shows is libgit2's whole-tree patch, byte for byte.
        let mut whole = String::new();
        repo.repo
            .diff_tree_to_tree(Some(&a), Some(&b), None)
            .unwrap()
            .print(git2::DiffFormat::Patch, |_, _, line| {
                if matches!(line.origin(), '+' | '-' | ' ') {
                    whole.push(line.origin());
                }
                whole.push_str(&String::from_utf8_lossy(line.content()));
                true
            })
            .unwrap();
        assert!(whole.contains("+image: w4:1.1"), "{whole}");
        assert_eq!(repo.patch(&first, &second).unwrap(), whole);
        assert_eq!(repo.patch(&second, &second).unwrap(), "");
    }

    #[test]
    fn the_files_holding_a_needle_in_a_revert_built_in_memory_are_scanned_from_its_parent() {
        let w = Work::new();
        for i in 0..10 {
            w.write(&format!("apps/w{i}/updater.yaml"), &format!("NEEDLE w{i}\n"));
        }
        let tip = w.commit("tip");
        let repo = GitRepo::open(&w.path().join(".git")).unwrap();
        let whole = |r: &GitRepo, c: &CommitSha| -> Vec<String> {
            let tree = r.repo.find_commit(oid(c).unwrap()).unwrap().tree().unwrap();
            r.scan(&tree, "NEEDLE", 100).unwrap().into_iter().map(|(p, _)| p).collect()
        };
        for (i, text) in [(3, "no longer\n"), (7, "still the NEEDLE, edited\n")] {
            // Each revert in its own handle's memory, gone after: the next one finds its parent's
            // answer kept.
            let mem = GitRepo::open(&w.path().join(".git")).unwrap();
            mem.write_in_memory().unwrap();
            let tree = mem.tree_with(&tip, &[(format!("apps/w{i}/updater.yaml"), text.to_string())]).unwrap();
            let revert = mem.write_commit(tree, &tip, "revert", Utc::now()).unwrap();
            let found: Vec<String> =
                mem.files_containing(&revert, "NEEDLE", 100).unwrap().into_iter().map(|(p, _)| p).collect();
            assert_eq!(found, whole(&mem, &revert));
            assert_eq!(found.len(), if i == 3 { 9 } else { 10 });
            let kept = scans().lock().unwrap().get(&(repo.path.clone(), "NEEDLE".into(), 100)).map(|k| k.0);
            assert_eq!(kept, Some(repo.tree_of(&tip).unwrap()), "the parent's answer is the one kept");
        }
    }

    #[test]
    fn a_revert_without_the_whole_tree_merge_is_the_tree_the_merge_makes() {
        let w = Work::new();
        let (work, write, commit) = (w.path(), |p: &str, t: &str| w.write(p, t), |m: &str| w.commit(m));
        let git = crate::adapters::test_git;
        for i in 0..20 {
            write(&format!("apps/w{i}/deploy.yaml"), &format!("image: w{i}:1.0\n"));
        }
        write("apps/w3/run.sh", "#!/bin/sh\n");
        git(&work, &["add", "-A"]);
        git(&work, &["update-index", "--chmod=+x", "apps/w3/run.sh"]);
        commit("all at 1.0");
        write("apps/w1/deploy.yaml", "image: w1:1.1\n");
        write("apps/w2/deploy.yaml", "image: w2:1.1\n");
        let two_files = commit("w1 and w2 to 1.1");
        write("apps/w5/deploy.yaml", "image: w5:1.1\n");
        let one_file = commit("w5 to 1.1");
        write("apps/w3/run.sh", "#!/bin/sh\necho hi\n");
        let executable = commit("w3's script");
        write("apps/w9/new.yaml", "added\n");
        let adds = commit("adds a file");
        // Later: other files changed, one renamed, one of the culprits' files changed again.
        write("apps/w7/deploy.yaml", "image: w7:2.0\n");
        git(&work, &["mv", "apps/w8/deploy.yaml", "apps/w8/moved.yaml"]);
        write("apps/w5/deploy.yaml", "image: w5:1.2\n");
        let tip = commit("later work");
        let repo = GitRepo::open(&work.join(".git")).unwrap();
        let merged = |culprit: &CommitSha| -> Result<Oid, String> {
            let bad = repo.repo.find_commit(oid(culprit).unwrap()).unwrap();
            let ours = repo.repo.find_commit(oid(&tip).unwrap()).unwrap();
            let mut index = repo.repo.revert_commit(&bad, &ours, 0, None).unwrap();
            if index.has_conflicts() {
                return Err("conflict".into());
            }
            Ok(index.write_tree_to(&repo.repo).unwrap())
        };
        let in_place = |culprit: &CommitSha| {
            let bad = repo.repo.find_commit(oid(culprit).unwrap()).unwrap();
            let ours = repo.repo.find_commit(oid(&tip).unwrap()).unwrap();
            repo.revert_in_place(&bad, &ours).unwrap()
        };
        for culprit in [&two_files, &executable] {
            let fast =
                in_place(culprit).expect("the culprit only modified files the tip still has as it left them");
            assert_eq!(Ok(fast), merged(culprit), "{culprit:?}");
            assert_eq!(repo.revert_tree(culprit, &tip).unwrap(), fast);
        }
        // Changed again since (w5), or a file added: the merge decides, as before.
        assert_eq!(in_place(&one_file), None);
        assert!(matches!(repo.revert_tree(&one_file, &tip), Err(GitError::Conflict { .. })));
        assert_eq!(in_place(&adds), None);
        assert_eq!(repo.revert_tree(&adds, &tip).ok(), merged(&adds).ok());
    }

    #[test]
    fn stale_locks_in_a_mirror_are_removed_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("m.git");
        GitRepo::init_bare(&mirror).unwrap();
        std::fs::create_dir_all(mirror.join("refs/remotes/origin")).unwrap();
        let old = mirror.join("refs/remotes/origin/main.lock");
        let fresh = mirror.join("packed-refs.lock");
        for f in [&old, &fresh] {
            std::fs::write(f, "").unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&old).unwrap().set_modified(hour_ago).unwrap();
        let removed = clear_stale_locks(&mirror, std::time::Duration::from_secs(60));
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0], old);
        assert!(!old.exists() && fresh.exists());
    }
}

#[cfg(test)]
mod push_tests {
    use super::*;

    use crate::adapters::test_git as git;

    #[test]
    fn a_revert_built_in_memory_is_pushed_whole_and_leaves_nothing_in_the_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let (remote, _) = crate::adapters::test_remote(dir.path(), "one", true);
        let path = dir.path().join("mirror.git");
        let tip = GitRepo::init_bare(&path).unwrap().fetch(remote.to_str().unwrap(), "main", None).unwrap();
        let objects = || git(&path, &["count-objects", "-v"]);
        let before = objects();
        let ours = {
            let mirror = GitRepo::open(&path).unwrap();
            mirror.write_in_memory().unwrap();
            let tree = mirror.tree_with(&tip, &[("b".to_string(), "new file\n".to_string())]).unwrap();
            let ours = mirror.write_commit(tree, &tip, "revert", Utc::now()).unwrap();
            mirror.push(remote.to_str().unwrap(), &ours, "metricops/revert-x", None).unwrap();
            ours
        };
        // The remote has the commit, its tree and the new blob; the mirror none of them.
        assert_eq!(git(&remote, &["show", &format!("{}:b", ours.0)]), "new file");
        git(&remote, &["fsck", "--no-progress"]);
        assert_eq!(objects(), before, "nothing written to the mirror");
        assert!(GitRepo::open(&path).unwrap().repo.find_commit(oid(&ours).unwrap()).is_err());
    }

    #[test]
    fn the_mirrors_own_refs_are_dropped_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = GitRepo::init_bare(&dir.path().join("m.git")).unwrap();
        let tree = mirror.repo.treebuilder(None).unwrap().write().unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let t = mirror.repo.find_tree(tree).unwrap();
        let id = mirror.repo.commit(None, &sig, &sig, "root", &t, &[]).unwrap();
        for r in [
            "refs/remotes/origin/main",
            "refs/heads/metricops/revert-a",
            "refs/metricops/push/heads-x",
            "refs/heads/keep",
        ] {
            mirror.repo.reference(r, id, true, "test").unwrap();
        }
        assert_eq!(mirror.drop_own_refs().unwrap(), 2);
        let left: Vec<String> =
            mirror.repo.references().unwrap().map(|r| r.unwrap().name().unwrap().to_string()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.contains(&"refs/remotes/origin/main".to_string())
                && left.contains(&"refs/heads/keep".to_string())
        );
    }

    /// A person's commit that lands on the remote between the bot's fetch and its push is never
    /// overwritten: the push is refused, and the next one (fetched again) builds on it.
    #[test]
    fn a_push_to_a_local_remote_never_overwrites_a_commit_pushed_since_the_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let (remote, work) = crate::adapters::test_remote(dir.path(), "one", true);
        let mirror = GitRepo::init_bare(&dir.path().join("mirror.git")).unwrap();
        for url in [remote.to_str().unwrap().to_string(), format!("file://{}", remote.display())] {
            let fetched = mirror.fetch(&url, "main", None).unwrap();
            // The bot builds on what it fetched...
            let tree = mirror.repo.find_commit(oid(&fetched).unwrap()).unwrap().tree().unwrap().id();
            let ours = mirror.write_commit(tree, &fetched, "revert", Utc::now()).unwrap();
            // ...while a person pushes.
            std::fs::write(work.join("a"), &url).unwrap();
            git(&work, &["commit", "-qam", "a person's fix"]);
            git(&work, &["push", "-q", "origin", "HEAD:main"]);
            let theirs = git(&remote, &["rev-parse", "main"]);
            let e = mirror.push(&url, &ours, "main", None).unwrap_err();
            assert_eq!(e.metric_label(), "push_rejected", "{e}");
            assert!(e.to_string().contains("not a fast-forward"), "{e}");
            assert_eq!(git(&remote, &["rev-parse", "main"]), theirs, "their commit is still there");
            assert!(
                git(&remote, &["branch", "--list", "metricops/*"]).is_empty(),
                "no branch of ours left behind"
            );
            // Fetched again and built on their commit, the push goes through.
            let fetched = mirror.fetch(&url, "main", None).unwrap();
            let ours = mirror.write_commit(tree, &fetched, "revert", Utc::now()).unwrap();
            mirror.push(&url, &ours, "main", None).unwrap();
            assert_eq!(git(&remote, &["rev-parse", "main"]), ours.0);
            git(&work, &["pull", "-q", "origin", "main"]);
        }
        // A new branch is created; one that exists is never moved by a push that does not build on it.
        let tip = mirror.fetch(remote.to_str().unwrap(), "main", None).unwrap();
        mirror.push(remote.to_str().unwrap(), &tip, "metricops-revert-x", None).unwrap();
        assert_eq!(git(&remote, &["rev-parse", "metricops-revert-x"]), tip.0);
    }
}
