//! GitHub, as a GitHub App (octocrab): installation lookup and tokens, pull requests, labels, review
//! requests, comments, merges and auto-merge, branch deletion. Every REST call goes through `call`,
//! which retries 5xx answers and rate limits (honouring `Retry-After` / `X-RateLimit-Reset`) within a
//! bounded time, then gives up with an error the next alert re-drives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

pub use crate::forge::RepoId;

/// What went wrong asking for an installation token, in one short line: GitHub's status and
/// message, with an HTML error page (what a proxy in front of GitHub answers) reduced to its text.
fn token_error_text(e: &octocrab::Error) -> String {
    let (status, raw) = match e {
        octocrab::Error::GitHub { source, .. } => (Some(source.status_code), source.message.clone()),
        other => (None, other.to_string()),
    };
    let mut text = String::new();
    let mut in_tag = false;
    for c in raw.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text: String = text.chars().take(200).collect();
    match status {
        Some(s) => format!("{s}: {text}"),
        None => text,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("the GitHub App private key is not a PEM RSA key (PKCS#1 or PKCS#8): {0}")]
    Key(String),
    #[error(
        "the GitHub App is not installed on {0}: install it on that repository (GitHub answered 404 to GET /repos/{0}/installation)"
    )]
    NotInstalled(RepoId),
    #[error("{method} {path}: GitHub answered {status}: {message}")]
    Status { method: Method, path: String, status: u16, message: String },
    #[error("{method} {path}: gave up after {attempts} attempts in {waited:?}; last: {last}")]
    GaveUp { method: Method, path: String, attempts: u32, waited: Duration, last: String },
    #[error("{method} {path}: {source}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: Box<octocrab::Error>,
    },
    #[error("{what}: unexpected answer from GitHub: {message}")]
    Decode { what: String, message: String },
}

impl GitHubError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            GitHubError::Key(_) => "app_key",
            GitHubError::NotInstalled(_) => "not_installed",
            GitHubError::Status { .. } => "status",
            GitHubError::GaveUp { .. } => "gave_up",
            GitHubError::Transport { .. } => "transport",
            GitHubError::Decode { .. } => "decode",
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How to reach GitHub as the App.
pub struct AppSettings {
    pub app_id: u64,
    pub private_key: SecretString,
    /// `https://api.github.com`, a GitHub Enterprise `https://HOST/api/v3`, or a stand-in.
    pub api_url: String,
    /// How long one call may spend retrying 5xx answers and rate limits before it gives up.
    pub retry_budget: Duration,
}

/// The parts of a pull request the bot reads.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub node_id: String,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub merged_at: Option<String>,
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
    pub head: GitRef,
    pub base: GitRef,
    pub user: Option<User>,
    #[serde(default)]
    pub labels: Vec<Label>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Label {
    pub name: String,
}

impl PullRequest {
    pub fn author(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.login.as_str())
    }
    pub fn is_merged(&self) -> bool {
        self.merged.unwrap_or(false) || self.merged_at.is_some()
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct GitRef {
    #[serde(rename = "ref")]
    pub name: String,
    pub sha: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct User {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// What a merge request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Merge {
    Merged {
        sha: String,
    },
    /// 409: the head moved since we looked; the next alert re-drives.
    HeadMoved,
    /// 405: GitHub will not merge it now (closed, conflict, required checks pending), with its words.
    NotMergeable(String),
}

pub use crate::config::MergeMethod;

/// The App, with one cached installation client per repository.
pub struct GitHubApp {
    app: Octocrab,
    installations: Mutex<HashMap<RepoId, (u64, Arc<Octocrab>)>>,
    retry_budget: Duration,
    /// GraphQL is not under the REST base on GitHub Enterprise Server (`/api/graphql`, not
    /// `/api/v3/graphql`), and octocrab always puts its base in front: these calls go by reqwest.
    graphql: reqwest::Client,
    graphql_url: String,
}

/// Where GraphQL is, from the REST API's URL: `https://api.github.com` → `…/graphql`;
/// GitHub Enterprise Server's `https://HOST/api/v3` → `https://HOST/api/graphql`.
pub fn graphql_url(api_url: &str) -> String {
    let base = api_url.trim_end_matches('/');
    match base.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{base}/graphql"),
    }
}

impl GitHubApp {
    /// Needs a tokio runtime context (octocrab spawns its connection buffer).
    pub fn new(s: &AppSettings) -> Result<GitHubApp, GitHubError> {
        use octocrab::jsonwebtoken as jwt;
        let key = jwt::EncodingKey::from_rsa_pem(s.private_key.expose_secret().as_bytes())
            .map_err(|e| GitHubError::Key(e.to_string()))?;
        // The key is only used when signing: sign once now, so a wrong file fails at start-up.
        jwt::encode(
            &jwt::Header::new(jwt::Algorithm::RS256),
            &json!({ "iss": s.app_id.to_string(), "iat": 0, "exp": 1 }),
            &key,
        )
        .map_err(|e| GitHubError::Key(e.to_string()))?;
        let app = Octocrab::builder()
            .base_uri(s.api_url.as_str())
            .map_err(|e| GitHubError::Decode {
                what: format!("api_url {:?}", s.api_url),
                message: e.to_string(),
            })?
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .app(AppId(s.app_id), key)
            .build()
            .map_err(|e| GitHubError::Decode {
                what: "building the GitHub client".into(),
                message: e.to_string(),
            })?;
        crate::adapters::install_crypto_provider();
        let graphql = reqwest::Client::builder()
            .user_agent(concat!("metricops/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| GitHubError::Decode {
                what: "building the GraphQL client".into(),
                message: e.to_string(),
            })?;
        Ok(GitHubApp {
            app,
            installations: Mutex::new(HashMap::new()),
            retry_budget: s.retry_budget,
            graphql,
            graphql_url: graphql_url(&s.api_url),
        })
    }

    /// The installation client for a repository, found with `GET /repos/{o}/{r}/installation` once and
    /// cached (installation events keep the cache current).
    async fn installation(&self, repo: &RepoId) -> Result<Arc<Octocrab>, GitHubError> {
        if let Some((_, c)) = self.installations.lock().expect("installations lock").get(repo) {
            return Ok(c.clone());
        }
        let path = format!("/repos/{}/{}/installation", repo.owner, repo.name);
        let v = match self.call(&self.app, Method::GET, &path, None).await {
            Err(e) if e.status() == Some(404) => {
                return Err(GitHubError::NotInstalled(repo.clone()));
            }
            r => r?,
        };
        let id = v.get("id").and_then(Value::as_u64).ok_or_else(|| GitHubError::Decode {
            what: path.clone(),
            message: "no installation id".into(),
        })?;
        self.installed(repo, id)
    }

    /// Records that the App is installed on `repo` as installation `id` (from an installation event).
    pub fn installed(&self, repo: &RepoId, id: u64) -> Result<Arc<Octocrab>, GitHubError> {
        let client = Arc::new(self.app.installation(InstallationId(id)).map_err(|e| {
            GitHubError::Decode { what: "installation client".into(), message: e.to_string() }
        })?);
        self.installations.lock().expect("installations lock").insert(repo.clone(), (id, client.clone()));
        Ok(client)
    }

    /// Forgets `repo` (removed from the installation), or every repo of installation `id` (uninstalled).
    pub fn forget(&self, repo: Option<&RepoId>, installation: u64) {
        let mut map = self.installations.lock().expect("installations lock");
        match repo {
            Some(r) => {
                map.remove(r);
            }
            None => map.retain(|_, (id, _)| *id != installation),
        }
    }

    /// The repositories this process knows the App to be installed on.
    pub fn known_installations(&self) -> Vec<(RepoId, u64)> {
        let mut v: Vec<_> = self
            .installations
            .lock()
            .expect("installations lock")
            .iter()
            .map(|(r, (id, _))| (r.clone(), *id))
            .collect();
        v.sort();
        v
    }

    /// An installation token for git over HTTPS: cached by octocrab, and refreshed when it has less
    /// than five minutes left, so a fetch or push never starts with a token about to expire.
    /// A 5xx, a 429 or no answer at all is tried again within `retry_budget`, as every REST call is.
    pub async fn git_token(&self, repo: &RepoId) -> Result<SecretString, GitHubError> {
        let client = self.installation(repo).await?;
        let path = "/app/installations/{id}/access_tokens";
        let started = Instant::now();
        let (mut attempts, mut backoff) = (0u32, Duration::from_millis(250));
        loop {
            attempts += 1;
            let e = match client.installation_token_with_buffer(chrono::Duration::minutes(5)).await {
                Ok(token) => return Ok(token),
                Err(e) => e,
            };
            let status = match &e {
                octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
                _ => None,
            };
            let retryable = status.is_none_or(|s| s >= 500 || s == 429);
            let last = token_error_text(&e);
            if !retryable {
                return Err(GitHubError::Status {
                    method: Method::POST,
                    path: path.into(),
                    status: status.unwrap_or_default(),
                    message: last,
                });
            }
            if started.elapsed() + backoff > self.retry_budget {
                return Err(GitHubError::GaveUp {
                    method: Method::POST,
                    path: path.into(),
                    attempts,
                    waited: started.elapsed(),
                    last,
                });
            }
            tracing::warn!(path, attempt = attempts, error = %last, "installation token refused for now; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    pub async fn open_pull_for(
        &self,
        repo: &RepoId,
        branch: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        Ok(self.pulls_for(repo, branch, "open").await?.into_iter().next())
    }

    /// Pull requests whose head is `branch` of this repo, in `state` (open, closed, all).
    pub async fn pulls_for(
        &self,
        repo: &RepoId,
        branch: &str,
        state: &str,
    ) -> Result<Vec<PullRequest>, GitHubError> {
        let path = format!(
            "/repos/{}/{}/pulls?state={state}&head={}:{}&per_page=30",
            repo.owner,
            repo.name,
            repo.owner,
            encode(branch)
        );
        let prs: Vec<PullRequest> = decode(&path, self.repo_call(repo, Method::GET, &path, None).await?)?;
        Ok(prs.into_iter().filter(|p| p.head.name == branch).collect())
    }

    /// The open pull requests of the repository, newest first (the first 100).
    pub async fn open_pulls(&self, repo: &RepoId) -> Result<Vec<PullRequest>, GitHubError> {
        let path = format!("/repos/{}/{}/pulls?state=open&per_page=100", repo.owner, repo.name);
        decode(&path, self.repo_call(repo, Method::GET, &path, None).await?)
    }

    /// Every pull request (open and closed) whose head branch starts with `prefix`, newest first:
    /// `GET …/pulls?state=all&sort=created&direction=desc&per_page=100`, following the `Link`
    /// header's `rel="next"` pages, through the newest `max_pages` × 100 of the repository.
    /// (GitHub's listing filters `head` by one exact branch only, so the prefix is matched here.)
    pub async fn pulls_with_head_prefix(
        &self,
        repo: &RepoId,
        prefix: &str,
        max_pages: usize,
    ) -> Result<Vec<PullRequest>, GitHubError> {
        let client = self.installation(repo).await?;
        let mut out = Vec::new();
        let mut page = 1;
        for _ in 0..max_pages.max(1) {
            let path = format!(
                "/repos/{}/{}/pulls?state=all&sort=created&direction=desc&per_page=100&page={page}",
                repo.owner, repo.name
            );
            let (v, headers) = self.call_with_headers(&client, Method::GET, &path, None).await?;
            let prs: Vec<PullRequest> = decode(&path, v)?;
            out.extend(prs.into_iter().filter(|p| p.head.name.starts_with(prefix)));
            let link = headers.get("link").and_then(|l| l.to_str().ok()).unwrap_or("");
            match next_page(link) {
                Some(n) if n > page => page = n,
                _ => break,
            }
        }
        Ok(out)
    }

    /// A reaction on an issue comment (`eyes`: seen, working on it).
    pub async fn react(&self, repo: &RepoId, comment_id: u64, content: &str) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/issues/comments/{comment_id}/reactions", repo.owner, repo.name);
        self.repo_call(repo, Method::POST, &path, Some(&json!({ "content": content }))).await.map(|_| ())
    }

    /// A user's role on the repository (`role_name`, else the legacy `permission`).
    pub async fn permission(&self, repo: &RepoId, login: &str) -> Result<String, GitHubError> {
        let path = format!("/repos/{}/{}/collaborators/{}/permission", repo.owner, repo.name, encode(login));
        let v = match self.repo_call(repo, Method::GET, &path, None).await {
            Err(GitHubError::Status { status: 404, .. }) => return Ok("none".into()),
            r => r?,
        };
        Ok(v.get("role_name")
            .or_else(|| v.get("permission"))
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string())
    }

    pub async fn close_pull(&self, repo: &RepoId, number: u64) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/pulls/{number}", repo.owner, repo.name);
        self.repo_call(repo, Method::PATCH, &path, Some(&json!({ "state": "closed" }))).await.map(|_| ())
    }

    /// Removes a label; one that is not there is fine.
    pub async fn remove_label(&self, repo: &RepoId, number: u64, label: &str) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/labels/{}",
            repo.owner,
            repo.name,
            encode(label).replace('/', "%2F")
        );
        match self.repo_call(repo, Method::DELETE, &path, None).await {
            Ok(_) | Err(GitHubError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn pull(&self, repo: &RepoId, number: u64) -> Result<PullRequest, GitHubError> {
        let path = format!("/repos/{}/{}/pulls/{number}", repo.owner, repo.name);
        decode(&path, self.repo_call(repo, Method::GET, &path, None).await?)
    }

    /// Opens a pull request, or, when GitHub answers 422 "already exists" (a racing replica made
    /// it), finds that one. The flag says whether this call opened it.
    pub async fn open_or_find_pull(
        &self,
        repo: &RepoId,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<(PullRequest, bool), GitHubError> {
        let path = format!("/repos/{}/{}/pulls", repo.owner, repo.name);
        let req = json!({ "title": title, "body": body, "head": head, "base": base, "maintainer_can_modify": false });
        match self.repo_call(repo, Method::POST, &path, Some(&req)).await {
            Ok(v) => Ok((decode(&path, v)?, true)),
            Err(GitHubError::Status { status: 422, message, .. }) if message.contains("already exists") => {
                let pr = self.open_pull_for(repo, head).await?;
                pr.map(|p| (p, false)).ok_or_else(|| GitHubError::Decode {
                    what: path,
                    message: format!("GitHub says a pull request for {head} exists, but none is open"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The pull requests that brought `sha` in (the culprit's original PR).
    pub async fn pulls_with_commit(&self, repo: &RepoId, sha: &str) -> Result<Vec<PullRequest>, GitHubError> {
        let path = format!("/repos/{}/{}/commits/{sha}/pulls", repo.owner, repo.name);
        decode(&path, self.repo_call(repo, Method::GET, &path, None).await?)
    }

    pub async fn add_labels(&self, repo: &RepoId, number: u64, labels: &[String]) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/issues/{number}/labels", repo.owner, repo.name);
        self.repo_call(repo, Method::POST, &path, Some(&json!({ "labels": labels }))).await.map(|_| ())
    }

    pub async fn request_reviewers(
        &self,
        repo: &RepoId,
        number: u64,
        users: &[String],
        teams: &[String],
    ) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/pulls/{number}/requested_reviewers", repo.owner, repo.name);
        self.repo_call(
            repo,
            Method::POST,
            &path,
            Some(&json!({ "reviewers": users, "team_reviewers": teams })),
        )
        .await
        .map(|_| ())
    }

    pub async fn comment(&self, repo: &RepoId, number: u64, body: &str) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/issues/{number}/comments", repo.owner, repo.name);
        self.repo_call(repo, Method::POST, &path, Some(&json!({ "body": body }))).await.map(|_| ())
    }

    /// The bodies of the comments on an issue or PR (first 100).
    pub async fn comments(&self, repo: &RepoId, number: u64) -> Result<Vec<String>, GitHubError> {
        let path = format!("/repos/{}/{}/issues/{number}/comments?per_page=100", repo.owner, repo.name);
        let v = self.repo_call(repo, Method::GET, &path, None).await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter().filter_map(|c| c.get("body").and_then(Value::as_str).map(str::to_string)).collect()
            })
            .unwrap_or_default())
    }

    /// The comments on an issue or PR (first 100): id and body.
    pub async fn comment_ids(&self, repo: &RepoId, number: u64) -> Result<Vec<(u64, String)>, GitHubError> {
        let path = format!("/repos/{}/{}/issues/{number}/comments?per_page=100", repo.owner, repo.name);
        let v = self.repo_call(repo, Method::GET, &path, None).await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| Some((c.get("id")?.as_u64()?, c.get("body")?.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Edits a comment in place.
    pub async fn edit_comment(&self, repo: &RepoId, comment_id: u64, body: &str) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/issues/comments/{comment_id}", repo.owner, repo.name);
        self.repo_call(repo, Method::PATCH, &path, Some(&json!({ "body": body }))).await.map(|_| ())
    }

    /// Whether branch protection on `branch` requires status checks (then merging waits for them:
    /// auto-merge is the way).
    pub async fn requires_checks(&self, repo: &RepoId, branch: &str) -> Result<bool, GitHubError> {
        let path = format!("/repos/{}/{}/branches/{}", repo.owner, repo.name, encode(branch));
        let v = self.repo_call(repo, Method::GET, &path, None).await?;
        let checks = v.pointer("/protection/required_status_checks");
        let on = checks
            .and_then(|c| c.get("enforcement_level"))
            .and_then(Value::as_str)
            .is_some_and(|l| l != "off");
        let any = checks.is_some_and(|c| {
            c.get("contexts").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
                || c.get("checks").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
        });
        Ok(v.get("protected").and_then(Value::as_bool).unwrap_or(false) && on && any)
    }

    /// `PUT …/pulls/{n}/merge` guarded by the head sha.
    pub async fn merge(
        &self,
        repo: &RepoId,
        number: u64,
        head_sha: &str,
        method: MergeMethod,
        title: &str,
        message: &str,
    ) -> Result<Merge, GitHubError> {
        let path = format!("/repos/{}/{}/pulls/{number}/merge", repo.owner, repo.name);
        let req = json!({ "merge_method": method.rest(), "sha": head_sha, "commit_title": title, "commit_message": message });
        match self.repo_call(repo, Method::PUT, &path, Some(&req)).await {
            Ok(v) => Ok(Merge::Merged {
                sha: v.get("sha").and_then(Value::as_str).unwrap_or_default().to_string(),
            }),
            Err(GitHubError::Status { status: 409, .. }) => Ok(Merge::HeadMoved),
            Err(GitHubError::Status { status: 405, message, .. }) => Ok(Merge::NotMergeable(message)),
            Err(e) => Err(e),
        }
    }

    /// GraphQL `enablePullRequestAutoMerge` with `expectedHeadOid`: GitHub merges once checks pass.
    pub async fn enable_auto_merge(
        &self,
        repo: &RepoId,
        pr: &PullRequest,
        method: MergeMethod,
        headline: &str,
        body: &str,
    ) -> Result<(), GitHubError> {
        const MUTATION: &str = "mutation($id: ID!, $method: PullRequestMergeMethod!, $head: GitObjectID!, $headline: String, $body: String) { enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method, expectedHeadOid: $head, commitHeadline: $headline, commitBody: $body}) { pullRequest { number autoMergeRequest { enabledAt } } } }";
        let req = json!({ "query": MUTATION, "variables": { "id": pr.node_id, "method": method.graphql(), "head": pr.head.sha, "headline": headline, "body": body } });
        let v = self.graphql_call(repo, &req).await?;
        match v.get("errors").and_then(Value::as_array) {
            Some(errors) if !errors.is_empty() => {
                let message = errors
                    .iter()
                    .filter_map(|e| e.get("message").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(GitHubError::Status {
                    method: Method::POST,
                    path: "/graphql enablePullRequestAutoMerge".into(),
                    status: 200,
                    message,
                })
            }
            _ => Ok(()),
        }
    }

    /// Deletes a branch; a branch that is gone already is fine.
    pub async fn delete_branch(&self, repo: &RepoId, branch: &str) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/git/refs/heads/{branch}", repo.owner, repo.name);
        match self.repo_call(repo, Method::DELETE, &path, None).await {
            Ok(_) => Ok(()),
            Err(GitHubError::Status { status: 422 | 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One GraphQL call with the installation's token, at `graphql_url`; 5xx, rate limits and no
    /// answer retried within the budget, as REST calls are.
    async fn graphql_call(&self, repo: &RepoId, body: &Value) -> Result<Value, GitHubError> {
        let path = self.graphql_url.clone();
        let token = self.git_token(repo).await?;
        let started = Instant::now();
        let (mut attempts, mut backoff) = (0u32, Duration::from_millis(250));
        loop {
            attempts += 1;
            let sent = self
                .graphql
                .post(&self.graphql_url)
                .bearer_auth(token.expose_secret())
                .header("accept", "application/vnd.github+json")
                .json(body)
                .send()
                .await;
            let (status, headers, text) = match sent {
                Ok(r) => {
                    let (status, headers) = (r.status(), r.headers().clone());
                    (status, headers, r.text().await.unwrap_or_default())
                }
                Err(e) => {
                    let last = e.without_url().to_string();
                    if started.elapsed() + backoff > self.retry_budget {
                        return Err(GitHubError::GaveUp {
                            method: Method::POST,
                            path,
                            attempts,
                            waited: started.elapsed(),
                            last,
                        });
                    }
                    tracing::warn!(path, attempt = attempts, error = %last, "GitHub GraphQL unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            if status.is_success() {
                return Ok(value);
            }
            let message = error_message(&value);
            let Some(wait) = retry_wait(status, &headers, backoff) else {
                return Err(GitHubError::Status {
                    method: Method::POST,
                    path,
                    status: status.as_u16(),
                    message,
                });
            };
            if started.elapsed() + wait > self.retry_budget {
                return Err(GitHubError::GaveUp {
                    method: Method::POST,
                    path,
                    attempts,
                    waited: started.elapsed(),
                    last: format!("{status}: {message}"),
                });
            }
            tracing::warn!(
                path,
                status = status.as_u16(),
                wait_ms = wait.as_millis() as u64,
                attempt = attempts,
                "GitHub asked us to wait; retrying"
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn repo_call(
        &self,
        repo: &RepoId,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GitHubError> {
        let client = self.installation(repo).await?;
        self.call(&client, method, path, body).await
    }

    /// One REST call: JSON in, JSON out; 5xx and rate limits retried within the budget.
    async fn call(
        &self,
        client: &Octocrab,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GitHubError> {
        self.call_with_headers(client, method, path, body).await.map(|(v, _)| v)
    }

    /// [`GitHubApp::call`], with the answer's headers (a listing's `Link`).
    async fn call_with_headers(
        &self,
        client: &Octocrab,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, http::HeaderMap), GitHubError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(250);
        loop {
            attempts += 1;
            let transport = |source| GitHubError::Transport {
                method: method.clone(),
                path: path.to_string(),
                source: Box::new(source),
            };
            let response = match method {
                Method::GET => client._get(path).await,
                Method::POST => client._post(path, body).await,
                Method::PUT => client._put(path, body).await,
                Method::DELETE => client._delete(path, body).await,
                _ => client._patch(path, body).await,
            };
            let (status, headers, text) = match response {
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    (status, headers, client.body_to_string(r).await.map_err(transport)?)
                }
                Err(e) => {
                    let wait = backoff;
                    if started.elapsed() + wait > self.retry_budget {
                        return Err(transport(e));
                    }
                    tracing::warn!(%method, path, attempt = attempts, error = %e, "GitHub unreachable; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let value: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
            };
            if status.is_success() {
                return Ok((value, headers));
            }
            let message = error_message(&value);
            let wait = match retry_wait(status, &headers, backoff) {
                Some(w) => w,
                None => {
                    return Err(GitHubError::Status {
                        method,
                        path: path.to_string(),
                        status: status.as_u16(),
                        message,
                    });
                }
            };
            if started.elapsed() + wait > self.retry_budget {
                return Err(GitHubError::GaveUp {
                    method,
                    path: path.to_string(),
                    attempts,
                    waited: started.elapsed(),
                    last: format!("{status}: {message}"),
                });
            }
            tracing::warn!(%method, path, status = status.as_u16(), wait_ms = wait.as_millis() as u64, attempt = attempts, "GitHub asked us to wait; retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// How long to wait before retrying, or `None` when the answer is final.
fn retry_wait(status: StatusCode, headers: &http::HeaderMap, backoff: Duration) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(secs) = header("retry-after").and_then(|s| s.parse::<u64>().ok())
        && (status == StatusCode::FORBIDDEN
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error())
    {
        return Some(Duration::from_secs(secs));
    }
    if (status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS)
        && header("x-ratelimit-remaining") == Some("0")
    {
        let reset = header("x-ratelimit-reset").and_then(|s| s.parse::<i64>().ok())?;
        let now = chrono::Utc::now().timestamp();
        return Some(Duration::from_secs((reset - now).max(1) as u64));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Some(backoff);
    }
    None
}

/// The `page` of a `Link` header's `rel="next"` URL (`<…/pulls?state=all&page=3>; rel="next", …`).
fn next_page(link: &str) -> Option<usize> {
    let next = link.split(',').find(|part| part.contains("rel=\"next\""))?;
    let url = next.split(['<', '>']).nth(1)?;
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix("page=")).and_then(|n| n.parse().ok())
}

/// GitHub's error text: `message` plus the `errors[].message` details.
fn error_message(v: &Value) -> String {
    let mut m = v.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
    if let Some(errors) = v.get("errors").and_then(Value::as_array) {
        let details: Vec<String> = errors
            .iter()
            .map(|e| match e.get("message").and_then(Value::as_str) {
                Some(s) => s.to_string(),
                None => format!(
                    "{} {} {}",
                    e.get("resource").and_then(Value::as_str).unwrap_or(""),
                    e.get("field").and_then(Value::as_str).unwrap_or(""),
                    e.get("code").and_then(Value::as_str).unwrap_or("")
                )
                .trim()
                .to_string(),
            })
            .collect();
        if !details.is_empty() {
            m.push_str(": ");
            m.push_str(&details.join("; "));
        }
    }
    m
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, GitHubError> {
    serde_json::from_value(v)
        .map_err(|e| GitHubError::Decode { what: what.to_string(), message: e.to_string() })
}

/// Percent-encodes what a query value or path segment cannot carry as is (branch names are `a/b-c`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_githubs_link_header() {
        let link = "<https://api.github.com/repositories/1/pulls?state=all&per_page=100&page=2>; rel=\"next\", <https://api.github.com/repositories/1/pulls?state=all&per_page=100&page=5>; rel=\"last\"";
        assert_eq!(next_page(link), Some(2));
        let last = "<https://api.github.com/repositories/1/pulls?page=1>; rel=\"first\", <https://api.github.com/repositories/1/pulls?page=4>; rel=\"prev\"";
        assert_eq!(next_page(last), None);
        assert_eq!(next_page(""), None);
    }

    #[test]
    fn repo_ids_come_from_clone_urls() {
        for (url, want) in [
            ("https://github.com/shop/manifests.git", "shop/manifests"),
            ("https://github.com/shop/manifests", "shop/manifests"),
            ("git@github.com:shop/manifests.git", "shop/manifests"),
            ("http://127.0.0.1:9000/shop/manifests.git", "shop/manifests"),
        ] {
            assert_eq!(RepoId::from_url(url).map(|r| r.to_string()).as_deref(), Some(want), "{url}");
        }
        assert_eq!(RepoId::from_url("manifests"), None);
    }

    #[test]
    fn rate_limits_and_server_errors_wait_other_errors_do_not() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            m
        };
        let b = Duration::from_millis(250);
        assert_eq!(
            retry_wait(StatusCode::FORBIDDEN, &h(&[("retry-after", "3")]), b),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_wait(StatusCode::BAD_GATEWAY, &h(&[]), b), Some(b));
        assert_eq!(retry_wait(StatusCode::TOO_MANY_REQUESTS, &h(&[]), b), Some(b));
        let reset = (chrono::Utc::now().timestamp() + 5).to_string();
        let w = retry_wait(
            StatusCode::FORBIDDEN,
            &h(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]),
            b,
        )
        .unwrap();
        assert!(w >= Duration::from_secs(4) && w <= Duration::from_secs(5), "{w:?}");
        // A plain 403 is a refusal, not a rate limit; 404 and 422 are final too.
        assert_eq!(retry_wait(StatusCode::FORBIDDEN, &h(&[]), b), None);
        assert_eq!(retry_wait(StatusCode::UNPROCESSABLE_ENTITY, &h(&[]), b), None);
    }

    #[test]
    fn graphql_is_where_github_and_github_enterprise_serve_it() {
        assert_eq!(graphql_url("https://api.github.com"), "https://api.github.com/graphql");
        assert_eq!(graphql_url("https://ghe.corp/api/v3"), "https://ghe.corp/api/graphql");
        assert_eq!(graphql_url("https://ghe.corp/api/v3/"), "https://ghe.corp/api/graphql");
        assert_eq!(graphql_url("http://127.0.0.1:9/"), "http://127.0.0.1:9/graphql");
    }

    #[test]
    fn github_error_text_carries_the_details() {
        let v = json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for o:b."}]});
        assert_eq!(error_message(&v), "Validation Failed: A pull request already exists for o:b.");
        let v = json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]});
        assert_eq!(error_message(&v), "Validation Failed: PullRequest head invalid");
    }
}
