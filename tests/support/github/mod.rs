//! A stateful stand-in for GitHub: the REST endpoints the bot uses, the one GraphQL mutation it sends,
//! and git smart HTTP (bridged to the real `git http-backend`). Every REST request is checked against
//! GitHub's OpenAPI description, and so is every answer the stand-in gives; see [`GitHub::violations`].
//! For ChatOps, [`GitHub::comment_as`] and [`GitHub::edit_comment_payload`] make a person comment and give
//! the `issue_comment` webhook delivery the App would receive (built from a real delivery in `fixtures/github`).

#![allow(dead_code)]

pub mod openapi;

mod api;
mod git_http;
mod graphql;
mod webhook;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

pub const APP_ID: u64 = 4242;

/// The login the App's installation tokens act as (authors the PRs and comments made through the API).
const BOT_LOGIN: &str = "metricops-test[bot]";

#[derive(Clone, Debug)]
pub struct Pull {
    pub number: u64,
    pub node_id: String,
    pub title: String,
    pub body: String,
    /// "open" | "closed"
    pub state: String,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub author: String,
    pub labels: Vec<String>,
    pub requested_reviewers: Vec<String>,
    pub requested_teams: Vec<String>,
    /// Bodies of the issue comments (by anyone), oldest first.
    pub comments: Vec<String>,
    /// The merge method ("merge" | "squash" | "rebase") while auto-merge is enabled.
    pub auto_merge: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// path + ?query
    pub path: String,
    pub status: u16,
    /// "jwt" | "token" | "none" | "bad"
    pub auth: String,
    /// How long the stand-in took to answer it (git's CGI included).
    pub took: std::time::Duration,
    /// When the stand-in began answering it (its body read).
    pub at: std::time::Instant,
    /// When its head arrived (the body still to come).
    pub arrived: std::time::Instant,
}

pub struct GitHub {
    url: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

struct Fault {
    method: String,
    prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
    left: usize,
    /// The request is carried out, and then answered with the fault (GitHub created the PR, the
    /// proxy in front of it answered 502).
    after: bool,
    /// The request waits, unanswered, until `release` (the caller is killed meanwhile), then gets
    /// the fault without anything done.
    hold: bool,
}

struct Comment {
    id: u64,
    body: String,
    author: String,
    created_at: String,
    updated_at: String,
    reactions: Vec<Reaction>,
}

struct Reaction {
    id: u64,
    login: String,
    /// "+1" | "-1" | "laugh" | "confused" | "heart" | "hooray" | "rocket" | "eyes"
    content: String,
    created_at: String,
}

/// Repository roles, weakest first, as `set_permission` takes them.
pub const ROLES: [&str; 6] = ["none", "read", "triage", "write", "maintain", "admin"];

struct PullState {
    p: Pull,
    id: u64,
    created_at: String,
    updated_at: String,
    closed_at: Option<String>,
    merged_at: Option<String>,
    checks_passed: bool,
    comments: Vec<Comment>,
    /// commit headline/body given when auto-merge was enabled
    auto_merge_text: (Option<String>, Option<String>),
}

struct RepoState {
    id: u64,
    owner: String,
    name: String,
    path: PathBuf,
    installation: Option<u64>,
    collaborators: BTreeSet<String>,
    /// lower-cased login -> role (one of [`ROLES`]); see [`RepoState::role`].
    roles: BTreeMap<String, String>,
    pulls: Vec<PullState>,
    next_number: u64,
    protection: BTreeMap<String, Vec<String>>,
    labels: BTreeMap<String, u64>,
    /// The repository setting "Allow auto-merge": off unless turned on, as on GitHub.
    allow_auto_merge: bool,
}

struct State {
    /// Requests held by `hold_next`, and whether they were let go.
    held: usize,
    released: bool,
    base_url: String,
    /// GitHub Enterprise Server's layout: REST under `/api/v3`, GraphQL at `/api/graphql` (and
    /// nothing at `/api/v3/graphql`), git at the root.
    enterprise: bool,
    root: PathBuf,
    repos: BTreeMap<(String, String), RepoState>,
    installations: BTreeSet<u64>,
    /// token -> (installation id, expiry as unix seconds)
    tokens: HashMap<String, (u64, i64)>,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    faults: Vec<Fault>,
    next_id: u64,
    rng: u64,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| {
                // xorshift64*
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                A[(x >> 33) as usize % A.len()] as char
            })
            .collect()
    }

    fn mint(&mut self, installation: u64) -> String {
        let token = format!("ghs_{}", self.alnum(36));
        self.tokens.insert(token.clone(), (installation, chrono::Utc::now().timestamp() + 3600));
        token
    }

    fn repo(&self, owner: &str, name: &str) -> &RepoState {
        self.repos
            .get(&(owner.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no repo {owner}/{name} (add_repo first)"))
    }

    fn repo_mut(&mut self, owner: &str, name: &str) -> &mut RepoState {
        self.repos
            .get_mut(&(owner.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no repo {owner}/{name} (add_repo first)"))
    }
}

impl RepoState {
    /// Branch name -> tip, read from the bare repo.
    fn branches(&self) -> BTreeMap<String, String> {
        // In process (a `git for-each-ref` per request was most of an API call's time with a
        // thousand branches). Refs are only moved into packed-refs under the state lock, which
        // every caller holds, so libgit2 never sees a branch mid-move.
        let Ok(repo) = git2::Repository::open_bare(&self.path) else { return BTreeMap::new() };
        let Ok(refs) = repo.references_glob("refs/heads/*") else { return BTreeMap::new() };
        refs.filter_map(Result::ok)
            .filter_map(|r| {
                Some((r.name().ok()?.strip_prefix("refs/heads/")?.to_string(), r.target()?.to_string()))
            })
            .collect()
    }

    /// Open PRs follow their head branch.
    fn refresh(&mut self) {
        let b = self.branches();
        for p in self.pulls.iter_mut().filter(|p| p.p.state == "open") {
            if let Some(sha) = b.get(&p.p.head_ref) {
                p.p.head_sha = sha.clone();
            }
        }
    }

    fn pull(&self, n: u64) -> Option<&PullState> {
        self.pulls.iter().find(|p| p.p.number == n)
    }

    fn pull_mut(&mut self, n: u64) -> Option<&mut PullState> {
        self.pulls.iter_mut().find(|p| p.p.number == n)
    }

    fn is_collaborator(&self, login: &str) -> bool {
        login == self.owner || self.collaborators.contains(login)
    }

    /// The user's role: the owner is "admin"; set by `set_permission` (or "write" by `add_collaborator`);
    /// anyone else "read", which is what GitHub answers for a non-collaborator on a public repository.
    fn role(&self, login: &str) -> &str {
        if login.eq_ignore_ascii_case(&self.owner) {
            return "admin";
        }
        self.roles.get(&login.to_ascii_lowercase()).map(String::as_str).unwrap_or("read")
    }

    /// (pull number, comment) for an issue-comment id.
    fn comment(&self, id: u64) -> Option<(u64, &Comment)> {
        self.pulls.iter().find_map(|p| p.comments.iter().find(|c| c.id == id).map(|c| (p.p.number, c)))
    }

    fn comment_mut(&mut self, id: u64) -> Option<(u64, &mut Comment)> {
        self.pulls.iter_mut().find_map(|p| {
            let n = p.p.number;
            p.comments.iter_mut().find(|c| c.id == id).map(|c| (n, c))
        })
    }

    fn pending_check(&self, p: &PullState) -> Option<String> {
        let checks = self.protection.get(&p.p.base_ref)?;
        if p.checks_passed { None } else { checks.first().cloned() }
    }
}

/// Runs git in `dir`; Ok(stdout trimmed) or Err(stderr).
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_COMMITTER_NAME", "GitHub")
        .env("GIT_COMMITTER_EMAIL", "noreply@github.com")
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn fixture(name: &str) -> String {
    let p = format!("{}/fixtures/github/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// An error body in GitHub's shape.
fn error(message: &str) -> Value {
    json!({"message": message, "documentation_url": "https://docs.github.com/rest"})
}

fn validation_failed(errors: Value) -> Value {
    json!({"message": "Validation Failed", "errors": errors, "documentation_url": "https://docs.github.com/rest"})
}

impl GitHub {
    pub fn start() -> GitHub {
        GitHub::serve(None)
    }

    /// The stand-in listening on `ip` (a bridge's address, say, for clients in network namespaces).
    pub fn start_on(ip: &str) -> GitHub {
        GitHub::serve_at(None, ip)
    }

    /// The stand-in laid out as GitHub Enterprise Server: `url()` is `http://HOST:PORT/api/v3`, the
    /// REST API's base; GraphQL answers at `/api/graphql` only; git at `git_url` as before.
    pub fn start_enterprise() -> GitHub {
        let mut gh = GitHub::serve(None);
        lock(&gh.state).enterprise = true;
        let api = format!("{}/api/v3", gh.url);
        lock(&gh.state).base_url = api.clone();
        gh.url = api;
        gh
    }

    /// The stand-in over HTTPS at `https://localhost:PORT`, with this certificate and key (PEM files),
    /// as github.com serves git and the API.
    pub fn start_tls(cert: &Path, key: &Path) -> GitHub {
        GitHub::serve(Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn serve(tls: Option<(PathBuf, PathBuf)>) -> GitHub {
        GitHub::serve_at(tls, "127.0.0.1")
    }

    fn serve_at(tls: Option<(PathBuf, PathBuf)>, ip: &str) -> GitHub {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match &tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://{ip}:{port}"),
        };
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        let state = Arc::new(Mutex::new(State {
            held: 0,
            released: false,
            base_url: url.clone(),
            enterprise: false,
            root: dir.path().to_path_buf(),
            repos: BTreeMap::new(),
            installations: BTreeSet::new(),
            tokens: HashMap::new(),
            requests: vec![],
            violations: vec![],
            faults: vec![],
            next_id: 1000,
            rng: seed ^ (&dir as *const _ as u64),
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("github-standin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let app = axum::Router::new().fallback(entry).with_state(st);
                    match tls {
                        None => {
                            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                            tokio::select! {
                                r = axum::serve(l, app) => r.expect("serve"),
                                _ = rx => {}
                            }
                        }
                        Some((cert, key)) => {
                            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                                .await
                                .expect("TLS certificate and key");
                            let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)
                                .expect("TLS listener")
                                .serve(app.into_make_service());
                            tokio::select! {
                                r = server => r.expect("serve"),
                                _ = rx => {}
                            }
                        }
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        GitHub { url, state, shutdown: Some(tx), thread: Some(thread), dir }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn private_key_pem(&self) -> String {
        fixture("test-app-key.pkcs1.pem")
    }

    pub fn add_repo(&self, owner: &str, name: &str, installation_id: u64) -> PathBuf {
        let path = self.dir.path().join(owner).join(format!("{name}.git"));
        std::fs::create_dir_all(&path).unwrap();
        // GitHub runs its maintenance out of band: a push never waits for `git gc --auto` (here it
        // did, every few hundred pushes, for up to a second).
        for args in [
            &["init", "-q", "--bare", "-b", "main"][..],
            &["config", "http.receivepack", "true"],
            &["config", "receive.autogc", "false"],
            &["config", "maintenance.auto", "false"],
        ] {
            git(&path, args).unwrap_or_else(|e| panic!("git {args:?}: {e}"));
        }
        let mut s = lock(&self.state);
        let id = s.id();
        s.installations.insert(installation_id);
        s.repos.insert(
            (owner.to_string(), name.to_string()),
            RepoState {
                id,
                owner: owner.to_string(),
                name: name.to_string(),
                path: path.clone(),
                installation: Some(installation_id),
                collaborators: BTreeSet::new(),
                roles: BTreeMap::new(),
                pulls: vec![],
                next_number: 1,
                protection: BTreeMap::new(),
                allow_auto_merge: false,
                labels: BTreeMap::new(),
            },
        );
        path
    }

    pub fn git_url(&self, owner: &str, name: &str) -> String {
        format!("{}/{owner}/{name}.git", self.url.trim_end_matches("/api/v3"))
    }

    pub fn uninstall(&self, owner: &str, name: &str) {
        lock(&self.state).repo_mut(owner, name).installation = None;
    }

    /// Makes `login` a collaborator with the "write" role.
    pub fn add_collaborator(&self, owner: &str, name: &str, login: &str) {
        self.set_permission(owner, name, login, "write");
    }

    /// Gives `login` a repository role: one of "admin", "maintain", "write", "triage", "read", "none".
    /// Any role but "none" makes them a collaborator (author association COLLABORATOR); "none" removes them.
    /// `GET .../collaborators/{login}/permission` answers the legacy `permission` (maintain -> write,
    /// triage -> read) and the real `role_name`. Users never given a role answer "read" (public repository).
    pub fn set_permission(&self, owner: &str, name: &str, login: &str, perm: &str) {
        assert!(ROLES.contains(&perm), "unknown permission {perm:?} (one of {ROLES:?})");
        let mut s = lock(&self.state);
        let r = s.repo_mut(owner, name);
        r.roles.insert(login.to_ascii_lowercase(), perm.to_string());
        if perm == "none" {
            r.collaborators.remove(login);
        } else {
            r.collaborators.insert(login.to_string());
        }
    }

    /// `login` (a person, or a bot if it ends in `[bot]`) comments on pull `number`, as through the web UI.
    /// Returns the comment id and the `issue_comment` webhook payload (action "created") the App receives
    /// (X-GitHub-Event: issue_comment). Without an installation on the repo the payload has no `installation`.
    pub fn comment_as(&self, owner: &str, name: &str, number: u64, login: &str, body: &str) -> (u64, String) {
        let mut s = lock(&self.state);
        let id = s.id();
        let base = s.base_url.clone();
        let r = s.repo_mut(owner, name);
        r.refresh();
        let t = now();
        let pl = r.pull_mut(number).unwrap_or_else(|| panic!("no pull #{number} in {owner}/{name}"));
        pl.comments.push(Comment {
            id,
            body: body.to_string(),
            author: login.to_string(),
            created_at: t.clone(),
            updated_at: t.clone(),
            reactions: vec![],
        });
        pl.updated_at = t;
        let payload = webhook::issue_comment(&base, r, id, login, "created", None);
        (id, payload.to_string())
    }

    /// The comment's author edits it to `new_body` (the stored body changes). Returns the `issue_comment`
    /// webhook payload with action "edited" and `changes.body.from` = the old body.
    pub fn edit_comment_payload(&self, owner: &str, name: &str, comment_id: u64, new_body: &str) -> String {
        let mut s = lock(&self.state);
        let base = s.base_url.clone();
        let r = s.repo_mut(owner, name);
        r.refresh();
        let (n, c) =
            r.comment_mut(comment_id).unwrap_or_else(|| panic!("no comment {comment_id} in {owner}/{name}"));
        let old = std::mem::replace(&mut c.body, new_body.to_string());
        c.updated_at = now();
        let login = c.author.clone();
        r.pull_mut(n).unwrap().updated_at = now();
        webhook::issue_comment(&base, r, comment_id, &login, "edited", Some(&old)).to_string()
    }

    /// Reactions on an issue comment, oldest first: (user login, content).
    pub fn reactions(&self, owner: &str, name: &str, comment_id: u64) -> Vec<(String, String)> {
        let s = lock(&self.state);
        let (_, c) = s
            .repo(owner, name)
            .comment(comment_id)
            .unwrap_or_else(|| panic!("no comment {comment_id} in {owner}/{name}"));
        c.reactions.iter().map(|x| (x.login.clone(), x.content.clone())).collect()
    }

    /// Comments on pull `number`, oldest first: (id, author login, body).
    pub fn comments_on(&self, owner: &str, name: &str, number: u64) -> Vec<(u64, String, String)> {
        let s = lock(&self.state);
        let pl =
            s.repo(owner, name).pull(number).unwrap_or_else(|| panic!("no pull #{number} in {owner}/{name}"));
        pl.comments.iter().map(|c| (c.id, c.author.clone(), c.body.clone())).collect()
    }

    pub fn add_merged_pull(
        &self,
        owner: &str,
        name: &str,
        author: &str,
        title: &str,
        head_ref: &str,
        merge_commit_sha: &str,
    ) -> u64 {
        let mut s = lock(&self.state);
        let id = s.id();
        let suffix = s.alnum(10);
        let r = s.repo_mut(owner, name);
        let number = r.next_number;
        r.next_number += 1;
        let t = now();
        r.pulls.push(PullState {
            p: Pull {
                number,
                node_id: format!("PR_kwDO{suffix}"),
                title: title.to_string(),
                body: String::new(),
                state: "closed".into(),
                merged: true,
                merge_commit_sha: Some(merge_commit_sha.to_string()),
                head_ref: head_ref.to_string(),
                head_sha: merge_commit_sha.to_string(),
                base_ref: "main".into(),
                author: author.to_string(),
                labels: vec![],
                requested_reviewers: vec![],
                requested_teams: vec![],
                comments: vec![],
                auto_merge: None,
            },
            id,
            created_at: t.clone(),
            updated_at: t.clone(),
            closed_at: Some(t.clone()),
            merged_at: Some(t),
            checks_passed: true,
            comments: vec![],
            auto_merge_text: (None, None),
        });
        number
    }

    /// Turns on the repository setting "Allow auto-merge" (GitHub's default is off).
    pub fn allow_auto_merge(&self, owner: &str, name: &str) {
        lock(&self.state).repo_mut(owner, name).allow_auto_merge = true;
    }

    pub fn protect(&self, owner: &str, name: &str, branch: &str, required_checks: &[&str]) {
        lock(&self.state)
            .repo_mut(owner, name)
            .protection
            .insert(branch.to_string(), required_checks.iter().map(|c| c.to_string()).collect());
    }

    pub fn complete_checks(&self, owner: &str, name: &str, number: u64) {
        let mut s = lock(&self.state);
        let r = s.repo_mut(owner, name);
        r.refresh();
        let p = r.pull_mut(number).unwrap_or_else(|| panic!("no pull #{number} in {owner}/{name}"));
        p.checks_passed = true;
        if let (Some(method), "open") = (p.p.auto_merge.clone(), p.p.state.as_str()) {
            let (title, message) = p.auto_merge_text.clone();
            if let Err((status, msg)) = api::merge(r, number, &method, None, title, message) {
                drop(s);
                lock(&self.state).violations.push(format!(
                    "auto-merge of {owner}/{name}#{number} failed after checks passed: {status} {msg}"
                ));
            }
        }
    }

    pub fn pulls(&self, owner: &str, name: &str) -> Vec<Pull> {
        let mut s = lock(&self.state);
        let r = s.repo_mut(owner, name);
        r.refresh();
        r.pulls
            .iter()
            .map(|p| {
                let mut snap = p.p.clone();
                snap.comments = p.comments.iter().map(|c| c.body.clone()).collect();
                snap
            })
            .collect()
    }

    pub fn branches(&self, owner: &str, name: &str) -> Vec<(String, String)> {
        lock(&self.state).repo(owner, name).branches().into_iter().collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    pub fn assert_faithful(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "the GitHub stand-in saw {} violation(s):\n  {}", v.len(), v.join("\n  "));
    }

    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: usize,
    ) {
        lock(&self.state).faults.push(Fault {
            method: method.to_ascii_uppercase(),
            prefix: path_prefix.to_string(),
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            left: times,
            after: false,
            hold: false,
        });
    }

    /// Like [`GitHub::fail_next`], but the request is carried out first: the caller sees an error for
    /// something that happened.
    pub fn fail_next_after_doing(&self, method: &str, path_prefix: &str, status: u16, times: usize) {
        lock(&self.state).faults.push(Fault {
            method: method.to_ascii_uppercase(),
            prefix: path_prefix.to_string(),
            status,
            headers: Vec::new(),
            left: times,
            after: true,
            hold: false,
        });
    }

    /// The next request of `method` under `path_prefix` is held unanswered until `release`, then
    /// answered 502 with nothing done: a process that sent it can be killed at that very stage.
    pub fn hold_next(&self, method: &str, path_prefix: &str) {
        lock(&self.state).faults.push(Fault {
            method: method.to_ascii_uppercase(),
            prefix: path_prefix.to_string(),
            status: 502,
            headers: Vec::new(),
            left: 1,
            after: false,
            hold: true,
        });
    }

    /// How many pull requests the repository has (cheap: no git read).
    pub fn pull_count(&self, owner: &str, name: &str) -> usize {
        lock(&self.state).repo(owner, name).pulls.len()
    }

    /// Every installation token the stand-in has issued (for tests that look for leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).tokens.keys().cloned().collect()
    }

    /// How many requests are being held.
    pub fn held(&self) -> usize {
        lock(&self.state).held
    }

    /// Lets every held request go (answered 502).
    pub fn release(&self) {
        lock(&self.state).released = true;
    }

    pub fn mint_token(&self, installation_id: u64) -> String {
        lock(&self.state).mint(installation_id)
    }

    pub fn sign_webhook(secret: &str, body: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

impl Drop for GitHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the stand-in answers.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    json: Option<Value>,
}

impl Reply {
    fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json; charset=utf-8".into())],
            body: serde_json::to_vec(&v).unwrap(),
            json: Some(v),
        }
    }

    fn empty(status: u16) -> Reply {
        Reply { status, headers: vec![], body: vec![], json: None }
    }

    fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

/// How a request authenticated.
#[derive(Clone, Debug, PartialEq)]
enum Auth {
    None,
    Jwt,
    Token(u64),
    Bad,
}

impl Auth {
    fn label(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Jwt => "jwt",
            Auth::Token(_) => "token",
            Auth::Bad => "bad",
        }
    }
}

fn verify_jwt(token: &str) -> bool {
    use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: Value,
        iat: i64,
        exp: i64,
    }
    let Ok(key) = DecodingKey::from_rsa_pem(fixture("test-app-key.pub.pem").as_bytes()) else {
        return false;
    };
    let mut v = Validation::new(Algorithm::RS256);
    // `iss` is checked below: octocrab sends it as a number, which jsonwebtoken does not see as present.
    v.set_required_spec_claims(&["exp", "iat"]);
    let data = match decode::<Claims>(token, &key, &v) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("github stand-in: JWT rejected: {e:?}");
            return false;
        }
    };
    let c = data.claims;
    let iss_ok = c.iss.as_u64() == Some(APP_ID) || c.iss.as_str() == Some(&APP_ID.to_string());
    iss_ok && c.exp > chrono::Utc::now().timestamp() && c.exp - c.iat <= 600
}

/// Classifies a bearer credential (JWT or installation token).
fn classify_secret(s: &State, secret: &str) -> Auth {
    if secret.split('.').count() == 3 {
        return if verify_jwt(secret) { Auth::Jwt } else { Auth::Bad };
    }
    match s.tokens.get(secret) {
        Some((inst, exp)) if *exp > chrono::Utc::now().timestamp() => Auth::Token(*inst),
        _ => Auth::Bad,
    }
}

fn classify(s: &State, headers: &axum::http::HeaderMap) -> Auth {
    let Some(h) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Auth::None;
    };
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => classify_secret(s, rest.trim()),
        "basic" => match git_http::basic_password(rest.trim()) {
            Some(p) => classify_secret(s, &p),
            None => Auth::Bad,
        },
        _ => Auth::Bad,
    }
}

async fn entry(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<State>>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let arrived = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let reply = tokio::task::spawn_blocking(move || {
        handle(&state, arrived, &parts.method, &parts.uri, &parts.headers, &bytes)
    })
    .await
    .unwrap_or_else(|e| Reply::json(500, error(&format!("stand-in panicked: {e}"))));
    let mut b = axum::response::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(axum::body::Body::from(reply.body)).unwrap()
}

fn handle(
    state: &Mutex<State>,
    arrived: std::time::Instant,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Reply {
    let started = std::time::Instant::now();
    let mut path = uri.path().to_string();
    let is_git = path.contains(".git/");
    if lock(state).enterprise && !is_git {
        // GitHub Enterprise Server: REST under /api/v3, GraphQL at /api/graphql, nothing else.
        let inner = match path.as_str() {
            "/api/graphql" => Some("/graphql".to_string()),
            "/api/v3/graphql" => None,
            p => p.strip_prefix("/api/v3").filter(|r| r.starts_with('/')).map(str::to_string),
        };
        match inner {
            Some(p) => path = p,
            None => {
                let reply = Reply::json(404, error("Not Found"));
                lock(state).requests.push(Recorded {
                    method: method.as_str().to_string(),
                    path: uri.path().to_string(),
                    status: 404,
                    auth: "none".into(),
                    took: started.elapsed(),
                    at: started,
                    arrived,
                });
                return reply;
            }
        }
    }
    // Recorded as the client sent it.
    let full = match uri.query() {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    };
    let method = method.as_str().to_string();
    let auth = classify(&lock(state), headers);
    let fault = {
        let mut s = lock(state);
        let f = s
            .faults
            .iter_mut()
            .find(|f| f.left > 0 && (f.method == method || f.method == "*") && path.starts_with(&f.prefix));
        f.map(|f| {
            f.left -= 1;
            (f.status, f.headers.clone(), f.after, f.hold)
        })
    };
    if fault.as_ref().is_some_and(|f| f.3) {
        lock(state).held += 1;
        while !lock(state).released {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let fault = fault.map(|(status, hs, after, _)| (status, hs, after));
    let done_first = fault.as_ref().is_some_and(|(_, _, after)| *after);
    if done_first {
        // Carried out, the answer thrown away.
        let _ = if path == "/graphql" {
            graphql::serve(&mut lock(state), &auth, &method, body)
        } else {
            api::serve(&mut lock(state), &auth, &method, &path, uri.query().unwrap_or(""), body)
        };
    }
    let reply = if let Some((status, hs, _)) = fault {
        let msg = match status {
            403 | 429 if hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("retry-after")) => {
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
                    .to_string()
            }
            403 | 429 => "API rate limit exceeded for installation.".to_string(),
            _ => axum::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error")
                .to_string(),
        };
        let mut r = Reply::json(status, error(&msg));
        for (k, v) in hs {
            r = r.header(&k, &v);
        }
        r
    } else if is_git {
        git_http::serve(state, &auth, &method, &path, uri.query().unwrap_or(""), headers, body)
    } else if path == "/graphql" {
        graphql::serve(&mut lock(state), &auth, &method, body)
    } else {
        api::serve(&mut lock(state), &auth, &method, &path, uri.query().unwrap_or(""), body)
    };
    lock(state).requests.push(Recorded {
        method,
        path: full,
        status: reply.status,
        auth: auth.label().to_string(),
        took: started.elapsed(),
        at: started,
        arrived,
    });
    reply
}

/// Percent-decodes (and turns `+` into a space when `plus` is set).
fn pct_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k, true), pct_decode(v, true))
        })
        .collect()
}
