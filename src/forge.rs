//! What the engine asks of a code-review forge, as a trait: the GitHub App (`adapters/github.rs`)
//! is one, the in-memory forge of the engine's unit tests (`forge/memory.rs`) another. The values
//! (`PullRequest`, `RepoId`, ...) are GitHub's shapes; a forge that is not GitHub maps onto them.

#[cfg(test)]
pub mod memory;

use futures::future::BoxFuture;
use secrecy::SecretString;

pub use crate::adapters::github::{GitHubError as ForgeError, Merge, PullRequest};
pub use crate::config::MergeMethod;

/// `owner/name` of a repository, compared as GitHub compares them: without regard to case
/// (`Acme/Manifests` and `acme/manifests` are one repository). Shown as written.
#[derive(Clone, Debug)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
}

impl RepoId {
    /// From a clone URL: the last two path segments, `.git` dropped
    /// (`https://github.com/shop/manifests.git` → `shop/manifests`).
    pub fn from_url(url: &str) -> Option<RepoId> {
        let path = url.trim_end_matches('/').trim_end_matches(".git").replace(':', "/");
        let mut parts = path.rsplit('/');
        let name = parts.next().filter(|s| !s.is_empty())?;
        let owner = parts.next().filter(|s| !s.is_empty())?;
        Some(RepoId { owner: owner.to_string(), name: name.to_string() })
    }

    fn key(&self) -> (String, String) {
        (self.owner.to_ascii_lowercase(), self.name.to_ascii_lowercase())
    }
}

impl PartialEq for RepoId {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for RepoId {}
impl std::hash::Hash for RepoId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
impl PartialOrd for RepoId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RepoId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A forge call: a future borrowing its arguments.
pub type Call<'a, T> = BoxFuture<'a, Result<T, ForgeError>>;

/// How many of a repository's pull requests (newest first) a listing by head prefix looks
/// through: 10 pages of 100.
pub const LISTED_PULLS: usize = 1000;

/// Which pull requests to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrState {
    Open,
    Closed,
    /// Open and closed, in one listing.
    All,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Open => "open",
            PrState::Closed => "closed",
            PrState::All => "all",
        }
    }
}

pub trait Forge: Send + Sync {
    /// A token for git over HTTPS to this repository.
    fn git_token<'a>(&'a self, repo: &'a RepoId) -> Call<'a, SecretString>;
    /// Pull requests whose head is `branch` of this repository.
    fn pulls_for<'a>(
        &'a self,
        repo: &'a RepoId,
        branch: &'a str,
        state: PrState,
    ) -> Call<'a, Vec<PullRequest>>;
    /// Every open pull request (the newest 100), for the scan at start.
    fn open_pulls<'a>(&'a self, repo: &'a RepoId) -> Call<'a, Vec<PullRequest>>;
    /// Every pull request, open and closed, whose head branch starts with `prefix` (the revert
    /// PRs: `metricops/revert-`), newest first; looked for among the repository's newest
    /// [`LISTED_PULLS`].
    fn pulls_with_head_prefix<'a>(&'a self, repo: &'a RepoId, prefix: &'a str) -> Call<'a, Vec<PullRequest>>;
    fn pull<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, PullRequest>;
    /// Opens a pull request, or finds the one that exists for `head` (the flag: whether this call
    /// opened it).
    fn open_or_find_pull<'a>(
        &'a self,
        repo: &'a RepoId,
        title: &'a str,
        body: &'a str,
        head: &'a str,
        base: &'a str,
    ) -> Call<'a, (PullRequest, bool)>;
    /// The pull requests that contain a commit (its merged PR first of all).
    fn pulls_with_commit<'a>(&'a self, repo: &'a RepoId, sha: &'a str) -> Call<'a, Vec<PullRequest>>;
    fn add_labels<'a>(&'a self, repo: &'a RepoId, number: u64, labels: &'a [String]) -> Call<'a, ()>;
    fn remove_label<'a>(&'a self, repo: &'a RepoId, number: u64, label: &'a str) -> Call<'a, ()>;
    fn request_reviewers<'a>(
        &'a self,
        repo: &'a RepoId,
        number: u64,
        users: &'a [String],
        teams: &'a [String],
    ) -> Call<'a, ()>;
    fn comment<'a>(&'a self, repo: &'a RepoId, number: u64, body: &'a str) -> Call<'a, ()>;
    /// The bodies of the comments on a pull request.
    fn comments<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, Vec<String>>;
    fn react<'a>(&'a self, repo: &'a RepoId, comment_id: u64, content: &'a str) -> Call<'a, ()>;
    /// The comments on a pull request: id and body.
    fn comment_ids<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, Vec<(u64, String)>>;
    fn edit_comment<'a>(&'a self, repo: &'a RepoId, comment_id: u64, body: &'a str) -> Call<'a, ()>;
    /// A user's role on the repository (`admin`, `write`, `read`, `none`, ...).
    fn permission<'a>(&'a self, repo: &'a RepoId, login: &'a str) -> Call<'a, String>;
    fn close_pull<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, ()>;
    /// Whether a merge into `branch` waits for required checks (then auto-merge is the way).
    fn requires_checks<'a>(&'a self, repo: &'a RepoId, branch: &'a str) -> Call<'a, bool>;
    /// Merges now, guarded by the head sha.
    fn merge<'a>(
        &'a self,
        repo: &'a RepoId,
        number: u64,
        head_sha: &'a str,
        method: MergeMethod,
        title: &'a str,
        message: &'a str,
    ) -> Call<'a, Merge>;
    fn enable_auto_merge<'a>(
        &'a self,
        repo: &'a RepoId,
        pr: &'a PullRequest,
        method: MergeMethod,
        headline: &'a str,
        body: &'a str,
    ) -> Call<'a, ()>;
    fn delete_branch<'a>(&'a self, repo: &'a RepoId, branch: &'a str) -> Call<'a, ()>;

    /// The comment that carries `marker` edited to `body`, or made when there is none: one comment
    /// that follows a story, rather than a pile of them.
    fn upsert_comment<'a>(
        &'a self,
        repo: &'a RepoId,
        number: u64,
        marker: &'a str,
        body: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            match self.comment_ids(repo, number).await?.into_iter().find(|(_, b)| b.contains(marker)) {
                Some((_, old)) if old == body => Ok(()),
                Some((id, _)) => self.edit_comment(repo, id, body).await,
                None => self.comment(repo, number, body).await,
            }
        })
    }

    /// The open pull request whose head is `branch`, if any.
    fn open_pull_for<'a>(&'a self, repo: &'a RepoId, branch: &'a str) -> Call<'a, Option<PullRequest>> {
        Box::pin(async move { Ok(self.pulls_for(repo, branch, PrState::Open).await?.into_iter().next()) })
    }
}

impl Forge for crate::adapters::github::GitHubApp {
    fn git_token<'a>(&'a self, repo: &'a RepoId) -> Call<'a, SecretString> {
        Box::pin(Self::git_token(self, repo))
    }
    fn pulls_for<'a>(
        &'a self,
        repo: &'a RepoId,
        branch: &'a str,
        state: PrState,
    ) -> Call<'a, Vec<PullRequest>> {
        Box::pin(Self::pulls_for(self, repo, branch, state.as_str()))
    }
    fn open_pulls<'a>(&'a self, repo: &'a RepoId) -> Call<'a, Vec<PullRequest>> {
        Box::pin(Self::open_pulls(self, repo))
    }
    fn pulls_with_head_prefix<'a>(&'a self, repo: &'a RepoId, prefix: &'a str) -> Call<'a, Vec<PullRequest>> {
        Box::pin(Self::pulls_with_head_prefix(self, repo, prefix, LISTED_PULLS / 100))
    }
    fn pull<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, PullRequest> {
        Box::pin(Self::pull(self, repo, number))
    }
    fn open_or_find_pull<'a>(
        &'a self,
        repo: &'a RepoId,
        title: &'a str,
        body: &'a str,
        head: &'a str,
        base: &'a str,
    ) -> Call<'a, (PullRequest, bool)> {
        Box::pin(Self::open_or_find_pull(self, repo, title, body, head, base))
    }
    fn pulls_with_commit<'a>(&'a self, repo: &'a RepoId, sha: &'a str) -> Call<'a, Vec<PullRequest>> {
        Box::pin(Self::pulls_with_commit(self, repo, sha))
    }
    fn add_labels<'a>(&'a self, repo: &'a RepoId, number: u64, labels: &'a [String]) -> Call<'a, ()> {
        Box::pin(Self::add_labels(self, repo, number, labels))
    }
    fn remove_label<'a>(&'a self, repo: &'a RepoId, number: u64, label: &'a str) -> Call<'a, ()> {
        Box::pin(Self::remove_label(self, repo, number, label))
    }
    fn request_reviewers<'a>(
        &'a self,
        repo: &'a RepoId,
        number: u64,
        users: &'a [String],
        teams: &'a [String],
    ) -> Call<'a, ()> {
        Box::pin(Self::request_reviewers(self, repo, number, users, teams))
    }
    fn comment<'a>(&'a self, repo: &'a RepoId, number: u64, body: &'a str) -> Call<'a, ()> {
        Box::pin(Self::comment(self, repo, number, body))
    }
    fn comments<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, Vec<String>> {
        Box::pin(Self::comments(self, repo, number))
    }
    fn react<'a>(&'a self, repo: &'a RepoId, comment_id: u64, content: &'a str) -> Call<'a, ()> {
        Box::pin(Self::react(self, repo, comment_id, content))
    }
    fn permission<'a>(&'a self, repo: &'a RepoId, login: &'a str) -> Call<'a, String> {
        Box::pin(Self::permission(self, repo, login))
    }
    fn comment_ids<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, Vec<(u64, String)>> {
        Box::pin(Self::comment_ids(self, repo, number))
    }
    fn edit_comment<'a>(&'a self, repo: &'a RepoId, comment_id: u64, body: &'a str) -> Call<'a, ()> {
        Box::pin(Self::edit_comment(self, repo, comment_id, body))
    }
    fn close_pull<'a>(&'a self, repo: &'a RepoId, number: u64) -> Call<'a, ()> {
        Box::pin(Self::close_pull(self, repo, number))
    }
    fn requires_checks<'a>(&'a self, repo: &'a RepoId, branch: &'a str) -> Call<'a, bool> {
        Box::pin(Self::requires_checks(self, repo, branch))
    }
    fn merge<'a>(
        &'a self,
        repo: &'a RepoId,
        number: u64,
        head_sha: &'a str,
        method: MergeMethod,
        title: &'a str,
        message: &'a str,
    ) -> Call<'a, Merge> {
        Box::pin(Self::merge(self, repo, number, head_sha, method, title, message))
    }
    fn enable_auto_merge<'a>(
        &'a self,
        repo: &'a RepoId,
        pr: &'a PullRequest,
        method: MergeMethod,
        headline: &'a str,
        body: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(Self::enable_auto_merge(self, repo, pr, method, headline, body))
    }
    fn delete_branch<'a>(&'a self, repo: &'a RepoId, branch: &'a str) -> Call<'a, ()> {
        Box::pin(Self::delete_branch(self, repo, branch))
    }
}
