//! An in-memory forge for the engine's unit tests: pull requests, labels, comments and reviews kept
//! in a map, git kept in a real bare repository (pushes land there; a merge writes the squashed
//! commit on the base branch, as GitHub does). It refuses what GitHub refuses where the engine's
//! paths depend on it: a PR for a branch that does not exist (422), a second open PR for one head
//! (422 "already exists"), a merge whose head moved (409), auto-merge when the repository does not
//! allow it. Failures are injected per call (`fail_next`), as a 502.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use http::Method;
use secrecy::SecretString;

use super::{Call, Forge, ForgeError, Merge, MergeMethod, PrState, PullRequest, RepoId};
use crate::adapters::github::{GitRef, Label, User};

#[derive(Default)]
pub struct State {
    pub pulls: Vec<PullRequest>,
    /// PR number → comment bodies.
    pub comments: HashMap<u64, Vec<String>>,
    /// PR number → requested reviewers (users and `team:` names).
    pub reviewers: HashMap<u64, Vec<String>>,
    /// Logins that are collaborators (a review request for anyone else is refused, 422).
    pub collaborators: Vec<String>,
    /// The culprit commit's merged PR, per commit sha.
    pub commit_pulls: HashMap<String, PullRequest>,
    pub requires_checks: bool,
    pub auto_merge_allowed: bool,
    /// PR numbers with auto-merge enabled.
    pub auto_merge: Vec<u64>,
    /// Call name → how many of the next calls answer 502.
    pub failing: HashMap<&'static str, u32>,
    /// Every call, by name, in order.
    pub calls: Vec<&'static str>,
}

pub struct MemoryForge {
    pub state: Mutex<State>,
    git_dir: PathBuf,
}

fn status(method: Method, path: &str, status: u16, message: &str) -> ForgeError {
    ForgeError::Status { method, path: path.into(), status, message: message.into() }
}

impl MemoryForge {
    /// A forge whose git lives in the bare repository at `git_dir`.
    pub fn new(git_dir: impl Into<PathBuf>) -> MemoryForge {
        MemoryForge { state: Mutex::new(State::default()), git_dir: git_dir.into() }
    }

    /// The next `times` calls to `call` answer 502.
    pub fn fail_next(&self, call: &'static str, times: u32) {
        self.state.lock().unwrap().failing.insert(call, times);
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn repo(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.git_dir).expect("the memory forge's bare repository")
    }

    fn branch_sha(&self, branch: &str) -> Option<String> {
        let r = self.repo();
        let reference = r.find_reference(&format!("refs/heads/{branch}")).ok()?;
        reference.target().map(|o| o.to_string())
    }

    /// Counts the call, and answers 502 when it is set to fail.
    fn enter(&self, call: &'static str) -> Result<std::sync::MutexGuard<'_, State>, ForgeError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call);
        if let Some(n) = s.failing.get_mut(call)
            && *n > 0
        {
            *n -= 1;
            return Err(status(Method::GET, call, 502, "Bad Gateway"));
        }
        Ok(s)
    }

    fn by_number(s: &mut State, number: u64) -> Result<&mut PullRequest, ForgeError> {
        s.pulls
            .iter_mut()
            .find(|p| p.number == number)
            .ok_or_else(|| status(Method::GET, "pull", 404, "Not Found"))
    }
}

pub fn new_pull(number: u64, title: &str, body: &str, head: &str, sha: &str, base: &str) -> PullRequest {
    PullRequest {
        number,
        node_id: format!("PR_{number}"),
        html_url: format!("https://forge.test/acme/manifests/pull/{number}"),
        state: "open".into(),
        title: title.into(),
        body: Some(body.into()),
        merged: Some(false),
        created_at: Some(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        merged_at: None,
        closed_at: None,
        merge_commit_sha: None,
        head: GitRef { name: head.into(), sha: sha.into() },
        base: GitRef { name: base.into(), sha: String::new() },
        user: Some(User { login: "metricops[bot]".into(), kind: "Bot".into() }),
        labels: Vec::new(),
    }
}

impl Forge for MemoryForge {
    fn git_token<'a>(&'a self, _repo: &'a RepoId) -> Call<'a, SecretString> {
        Box::pin(async move {
            drop(self.enter("git_token")?);
            Ok(SecretString::from("memory-token"))
        })
    }

    fn pulls_for<'a>(
        &'a self,
        _repo: &'a RepoId,
        branch: &'a str,
        state: PrState,
    ) -> Call<'a, Vec<PullRequest>> {
        Box::pin(async move {
            let s = self.enter("pulls_for")?;
            Ok(s.pulls
                .iter()
                .filter(|p| p.head.name == branch && (state == PrState::All || p.state == state.as_str()))
                .cloned()
                .collect())
        })
    }

    fn open_pulls<'a>(&'a self, _repo: &'a RepoId) -> Call<'a, Vec<PullRequest>> {
        Box::pin(async move {
            let s = self.enter("open_pulls")?;
            Ok(s.pulls.iter().filter(|p| p.state == "open").cloned().collect())
        })
    }

    fn pulls_with_head_prefix<'a>(
        &'a self,
        _repo: &'a RepoId,
        prefix: &'a str,
    ) -> Call<'a, Vec<PullRequest>> {
        Box::pin(async move {
            let s = self.enter("pulls_with_head_prefix")?;
            let mut v: Vec<PullRequest> =
                s.pulls.iter().filter(|p| p.head.name.starts_with(prefix)).cloned().collect();
            v.sort_by_key(|p| std::cmp::Reverse(p.number));
            Ok(v)
        })
    }

    fn pull<'a>(&'a self, _repo: &'a RepoId, number: u64) -> Call<'a, PullRequest> {
        Box::pin(async move {
            let mut s = self.enter("pull")?;
            Ok(Self::by_number(&mut s, number)?.clone())
        })
    }

    fn open_or_find_pull<'a>(
        &'a self,
        _repo: &'a RepoId,
        title: &'a str,
        body: &'a str,
        head: &'a str,
        base: &'a str,
    ) -> Call<'a, (PullRequest, bool)> {
        Box::pin(async move {
            let sha = self.branch_sha(head);
            let mut s = self.enter("open_or_find_pull")?;
            if let Some(p) = s.pulls.iter().find(|p| p.head.name == head && p.state == "open") {
                return Ok((p.clone(), false));
            }
            let sha =
                sha.ok_or_else(|| status(Method::POST, "pulls", 422, "Validation Failed: head invalid"))?;
            let pr = new_pull(s.pulls.len() as u64 + 1, title, body, head, &sha, base);
            s.pulls.push(pr.clone());
            Ok((pr, true))
        })
    }

    fn pulls_with_commit<'a>(&'a self, _repo: &'a RepoId, sha: &'a str) -> Call<'a, Vec<PullRequest>> {
        Box::pin(async move {
            let s = self.enter("pulls_with_commit")?;
            Ok(s.commit_pulls.get(sha).cloned().into_iter().collect())
        })
    }

    fn add_labels<'a>(&'a self, _repo: &'a RepoId, number: u64, labels: &'a [String]) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("add_labels")?;
            let pr = Self::by_number(&mut s, number)?;
            for l in labels {
                if !pr.labels.iter().any(|x| x.name == *l) {
                    pr.labels.push(Label { name: l.clone() });
                }
            }
            Ok(())
        })
    }

    fn remove_label<'a>(&'a self, _repo: &'a RepoId, number: u64, label: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("remove_label")?;
            Self::by_number(&mut s, number)?.labels.retain(|l| l.name != label);
            Ok(())
        })
    }

    fn request_reviewers<'a>(
        &'a self,
        _repo: &'a RepoId,
        number: u64,
        users: &'a [String],
        teams: &'a [String],
    ) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("request_reviewers")?;
            if let Some(u) = users.iter().find(|u| !s.collaborators.contains(u)) {
                return Err(status(
                    Method::POST,
                    "requested_reviewers",
                    422,
                    &format!("Reviews may only be requested from collaborators: {u}"),
                ));
            }
            let list = s.reviewers.entry(number).or_default();
            list.extend(users.iter().cloned());
            list.extend(teams.iter().map(|t| format!("team:{t}")));
            Ok(())
        })
    }

    fn comment<'a>(&'a self, _repo: &'a RepoId, number: u64, body: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("comment")?;
            s.comments.entry(number).or_default().push(body.to_string());
            Ok(())
        })
    }

    fn comments<'a>(&'a self, _repo: &'a RepoId, number: u64) -> Call<'a, Vec<String>> {
        Box::pin(async move {
            let s = self.enter("comments")?;
            Ok(s.comments.get(&number).cloned().unwrap_or_default())
        })
    }

    /// Ids are `number * 1000 + position`.
    fn comment_ids<'a>(&'a self, _repo: &'a RepoId, number: u64) -> Call<'a, Vec<(u64, String)>> {
        Box::pin(async move {
            let s = self.enter("comments")?;
            let all = s.comments.get(&number).cloned().unwrap_or_default();
            Ok(all.into_iter().enumerate().map(|(i, b)| (number * 1000 + i as u64, b)).collect())
        })
    }

    fn edit_comment<'a>(&'a self, _repo: &'a RepoId, comment_id: u64, body: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("edit_comment")?;
            let (number, i) = (comment_id / 1000, (comment_id % 1000) as usize);
            match s.comments.get_mut(&number).and_then(|c| c.get_mut(i)) {
                Some(c) => {
                    *c = body.to_string();
                    Ok(())
                }
                None => Err(ForgeError::Status {
                    method: Method::PATCH,
                    path: format!("/issues/comments/{comment_id}"),
                    status: 404,
                    message: "Not Found".into(),
                }),
            }
        })
    }

    fn react<'a>(&'a self, _repo: &'a RepoId, _comment_id: u64, _content: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            drop(self.enter("react")?);
            Ok(())
        })
    }

    fn permission<'a>(&'a self, _repo: &'a RepoId, login: &'a str) -> Call<'a, String> {
        Box::pin(async move {
            let s = self.enter("permission")?;
            Ok(if s.collaborators.iter().any(|c| c == login) { "write" } else { "none" }.to_string())
        })
    }

    fn close_pull<'a>(&'a self, _repo: &'a RepoId, number: u64) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("close_pull")?;
            let pr = Self::by_number(&mut s, number)?;
            pr.state = "closed".into();
            pr.closed_at = Some(chrono::Utc::now().to_rfc3339());
            Ok(())
        })
    }

    fn requires_checks<'a>(&'a self, _repo: &'a RepoId, _branch: &'a str) -> Call<'a, bool> {
        Box::pin(async move { Ok(self.enter("requires_checks")?.requires_checks) })
    }

    fn merge<'a>(
        &'a self,
        _repo: &'a RepoId,
        number: u64,
        head_sha: &'a str,
        _method: MergeMethod,
        title: &'a str,
        message: &'a str,
    ) -> Call<'a, Merge> {
        Box::pin(async move {
            let mut s = self.enter("merge")?;
            let pr = Self::by_number(&mut s, number)?;
            if pr.state != "open" {
                return Ok(Merge::NotMergeable("Pull Request is not mergeable".into()));
            }
            if self.branch_sha(&pr.head.name).as_deref() != Some(head_sha) {
                return Ok(Merge::HeadMoved);
            }
            // A squash: the head's tree, one new commit on the base's tip.
            let r = self.repo();
            let head = r.find_commit(git2::Oid::from_str(head_sha).expect("sha")).expect("head commit");
            let base_ref = format!("refs/heads/{}", pr.base.name);
            let base = r.find_reference(&base_ref).and_then(|b| b.peel_to_commit()).expect("base branch");
            let sig = git2::Signature::now("Forge", "forge@test").expect("signature");
            let oid = r
                .commit(
                    Some(&base_ref),
                    &sig,
                    &sig,
                    &format!("{title}\n\n{message}\n"),
                    &head.tree().expect("tree"),
                    &[&base],
                )
                .expect("merge commit");
            pr.state = "closed".into();
            pr.merged = Some(true);
            pr.merged_at = Some(chrono::Utc::now().to_rfc3339());
            pr.merge_commit_sha = Some(oid.to_string());
            Ok(Merge::Merged { sha: oid.to_string() })
        })
    }

    fn enable_auto_merge<'a>(
        &'a self,
        _repo: &'a RepoId,
        pr: &'a PullRequest,
        _method: MergeMethod,
        _headline: &'a str,
        _body: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            let mut s = self.enter("enable_auto_merge")?;
            if !s.auto_merge_allowed {
                return Err(status(
                    Method::POST,
                    "/graphql",
                    200,
                    "Auto merge is not allowed for this repository",
                ));
            }
            s.auto_merge.push(pr.number);
            Ok(())
        })
    }

    fn delete_branch<'a>(&'a self, _repo: &'a RepoId, branch: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            drop(self.enter("delete_branch")?);
            let r = self.repo();
            if let Ok(mut b) = r.find_reference(&format!("refs/heads/{branch}")) {
                b.delete().expect("deleting the branch");
            }
            Ok(())
        })
    }
}
