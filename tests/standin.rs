//! Self-tests of the GitHub stand-in (`support::github`): auth, the REST endpoints, the OpenAPI
//! checking, auto-merge, git smart HTTP, the webhook signature helper, and ChatOps (comment deliveries,
//! reactions, collaborator permissions, closing pulls).

use std::io::{Read, Write};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::github::{APP_ID, GitHub};

const INST: u64 = 77;

/// One HTTP/1.1 request over a fresh connection: (status, headers, JSON body or Null).
fn http(
    gh: &GitHub,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, Value) {
    let addr = gh.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to the stand-in");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: standin-test\r\nAccept: application/vnd.github+json\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", payload.len()));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status, head.to_string(), json)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn jwt(gh: &GitHub) -> String {
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(gh.private_key_pem().as_bytes()).unwrap();
    octocrab::auth::create_jwt(octocrab::models::AppId(APP_ID), &key).unwrap()
}

fn git(dir: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A working clone of `acme/deploy` in the stand-in: main with one file, `feature` one commit ahead.
struct Fixture {
    gh: GitHub,
    work: tempfile::TempDir,
    token: String,
}

impl Fixture {
    fn new() -> Fixture {
        let gh = GitHub::start();
        let bare = gh.add_repo("acme", "deploy", INST);
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        for a in [
            &["init", "-q", "-b", "main"][..],
            &["config", "user.name", "Dana"],
            &["config", "user.email", "dana@example.com"],
        ] {
            git(w, a).unwrap();
        }
        std::fs::write(w.join("app.yaml"), "image: shop:1.0\n").unwrap();
        git(w, &["add", "-A"]).unwrap();
        git(w, &["commit", "-q", "-m", "base"]).unwrap();
        git(w, &["remote", "add", "origin", bare.to_str().unwrap()]).unwrap();
        git(w, &["push", "-q", "origin", "main"]).unwrap();
        git(w, &["checkout", "-q", "-b", "feature"]).unwrap();
        std::fs::write(w.join("app.yaml"), "image: shop:1.1\n").unwrap();
        git(w, &["commit", "-q", "-am", "bump shop to 1.1"]).unwrap();
        git(w, &["push", "-q", "origin", "feature"]).unwrap();
        let token = gh.mint_token(INST);
        Fixture { gh, work, token }
    }

    fn auth(&self) -> String {
        bearer(&self.token)
    }

    fn create_pull(&self, head: &str) -> (u16, Value) {
        let (st, _, v) = http(
            &self.gh,
            "POST",
            "/repos/acme/deploy/pulls",
            Some(&self.auth()),
            Some(&json!({"title": "Bump", "head": head, "base": "main", "body": "why"})),
        );
        (st, v)
    }

    fn tip(&self, branch: &str) -> String {
        self.gh
            .branches("acme", "deploy")
            .into_iter()
            .find(|(b, _)| b == branch)
            .map(|(_, s)| s)
            .unwrap_or_default()
    }
}

#[test]
fn octocrab_app_jwt_then_installation_token_then_create_pull() {
    let f = Fixture::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let key =
            octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(f.gh.private_key_pem().as_bytes()).unwrap();
        let app = octocrab::Octocrab::builder()
            .base_uri(f.gh.url())
            .unwrap()
            .app(octocrab::models::AppId(APP_ID), key)
            .build()
            .unwrap();
        let inst = app
            .apps()
            .get_repository_installation("acme", "deploy")
            .await
            .expect("GET /repos/acme/deploy/installation");
        assert_eq!(inst.id.0, INST);
        let client = app.installation(inst.id).unwrap();
        let pr = client
            .pulls("acme", "deploy")
            .create("Revert bump", "feature", "main")
            .body("because")
            .send()
            .await
            .expect("create pull");
        assert_eq!(pr.number, 1);
        assert_eq!(pr.head.sha, f.tip("feature"));
        let got = client.pulls("acme", "deploy").get(1).await.expect("get pull");
        assert_eq!(got.title.as_deref(), Some("Revert bump"));
        assert_eq!(got.mergeable, Some(true));
    });
    let pulls = f.gh.pulls("acme", "deploy");
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].state.as_str(), pulls[0].head_ref.as_str(), pulls[0].base_ref.as_str()),
        ("open", "feature", "main")
    );
    let reqs = f.gh.requests();
    let auth_of = |m: &str, p: &str| {
        reqs.iter().find(|r| r.method == m && r.path == p).map(|r| (r.status, r.auth.clone()))
    };
    assert_eq!(auth_of("GET", "/repos/acme/deploy/installation"), Some((200, "jwt".into())));
    assert_eq!(
        auth_of("POST", &format!("/app/installations/{INST}/access_tokens")),
        Some((201, "jwt".into()))
    );
    assert_eq!(auth_of("POST", "/repos/acme/deploy/pulls"), Some((201, "token".into())));
    f.gh.assert_faithful();
}

#[test]
fn access_token_answer_and_unknown_installation() {
    let f = Fixture::new();
    let (st, _, v) = http(
        &f.gh,
        "POST",
        &format!("/app/installations/{INST}/access_tokens"),
        Some(&bearer(&jwt(&f.gh))),
        None,
    );
    assert_eq!(st, 201, "{v}");
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("ghs_") && token.len() == 40, "{token}");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    // the minted token works on the repo, with either scheme
    assert_eq!(http(&f.gh, "GET", "/repos/acme/deploy/pulls", Some(&format!("token {token}")), None).0, 200);
    let (st, _, _) =
        http(&f.gh, "POST", "/app/installations/999/access_tokens", Some(&bearer(&jwt(&f.gh))), None);
    assert_eq!(st, 404);
    // an installation token is no JWT
    assert_eq!(
        http(&f.gh, "POST", &format!("/app/installations/{INST}/access_tokens"), Some(&f.auth()), None).0,
        401
    );
    f.gh.assert_faithful();
}

#[test]
fn duplicate_pull_and_missing_head_and_no_commits_are_422() {
    let f = Fixture::new();
    assert_eq!(f.create_pull("feature").0, 201);
    let (st, v) = f.create_pull("feature");
    assert_eq!(st, 422);
    assert_eq!(v["errors"][0]["message"], "A pull request already exists for acme:feature.");
    let (st, v) = f.create_pull("acme:nope");
    assert_eq!(st, 422);
    assert_eq!(v["errors"][0]["field"], "head");
    let (st, v) = f.create_pull("main");
    assert_eq!(st, 422);
    assert_eq!(v["errors"][0]["message"], "No commits between main and main");
    assert_eq!(f.gh.pulls("acme", "deploy").len(), 1);
    f.gh.assert_faithful();
}

#[test]
fn merge_checks_sha_then_merges_for_real_then_refuses_a_merged_pull() {
    let f = Fixture::new();
    let (_, pr) = f.create_pull("feature");
    let n = pr["number"].as_u64().unwrap();
    let path = format!("/repos/acme/deploy/pulls/{n}/merge");
    let (st, _, v) = http(
        &f.gh,
        "PUT",
        &path,
        Some(&f.auth()),
        Some(&json!({"sha": "0".repeat(40), "merge_method": "squash"})),
    );
    assert_eq!(st, 409, "{v}");
    let head = f.tip("feature");
    let old_main = f.tip("main");
    let (st, _, v) =
        http(&f.gh, "PUT", &path, Some(&f.auth()), Some(&json!({"sha": head, "merge_method": "squash"})));
    assert_eq!(st, 200, "{v}");
    let sha = v["sha"].as_str().unwrap().to_string();
    assert_eq!(f.tip("main"), sha);
    let bare = f.gh.add_repo("scratch", "x", 1); // any dir to run git in; the merge lives in acme/deploy
    let _ = bare;
    let repo = f.work.path();
    git(repo, &["fetch", "-q", "origin"]).unwrap();
    assert_eq!(
        git(repo, &["rev-parse", "origin/main^"]).unwrap(),
        old_main,
        "a squash has one parent: the old main"
    );
    assert_eq!(git(repo, &["log", "-1", "--format=%s", "origin/main"]).unwrap(), format!("Bump (#{n})"));
    assert_eq!(git(repo, &["show", "origin/main:app.yaml"]).unwrap(), "image: shop:1.1");
    let p = &f.gh.pulls("acme", "deploy")[0];
    assert!(p.merged && p.state == "closed" && p.merge_commit_sha.as_deref() == Some(sha.as_str()), "{p:?}");
    let (st, _, v) = http(&f.gh, "PUT", &path, Some(&f.auth()), Some(&json!({})));
    assert_eq!(st, 405, "{v}");
    assert_eq!(v["message"], "Pull Request is not mergeable");
    // commits/{sha}/pulls finds it by its merge commit
    let (st, _, v) =
        http(&f.gh, "GET", &format!("/repos/acme/deploy/commits/{sha}/pulls"), Some(&f.auth()), None);
    assert_eq!((st, v[0]["number"].as_u64()), (200, Some(n)));
    f.gh.assert_faithful();
}

#[test]
fn merge_commit_has_two_parents() {
    let f = Fixture::new();
    let (_, pr) = f.create_pull("feature");
    let (main, head) = (f.tip("main"), f.tip("feature"));
    let (st, _, v) = http(
        &f.gh,
        "PUT",
        &format!("/repos/acme/deploy/pulls/{}/merge", pr["number"]),
        Some(&f.auth()),
        None,
    );
    assert_eq!(st, 200, "{v}");
    git(f.work.path(), &["fetch", "-q", "origin"]).unwrap();
    assert_eq!(
        git(f.work.path(), &["log", "-1", "--format=%P", "origin/main"]).unwrap(),
        format!("{main} {head}")
    );
    f.gh.assert_faithful();
}

#[test]
fn auto_merge_waits_for_required_checks() {
    let f = Fixture::new();
    f.gh.protect("acme", "deploy", "main", &["ci/test"]);
    f.gh.allow_auto_merge("acme", "deploy");
    let (_, pr) = f.create_pull("feature");
    let n = pr["number"].as_u64().unwrap();
    let node = pr["node_id"].as_str().unwrap().to_string();
    let (st, _, v) =
        http(&f.gh, "PUT", &format!("/repos/acme/deploy/pulls/{n}/merge"), Some(&f.auth()), None);
    assert_eq!((st, v["message"].as_str()), (405, Some("Required status check \"ci/test\" is expected.")));
    let (_, _, b) = http(&f.gh, "GET", "/repos/acme/deploy/branches/main", Some(&f.auth()), None);
    assert_eq!(b["protected"], true);
    assert_eq!(b["protection"]["required_status_checks"]["contexts"], json!(["ci/test"]));
    let q = "mutation($id: ID!, $oid: GitObjectID) { enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: SQUASH, expectedHeadOid: $oid}) { pullRequest { number autoMergeRequest { enabledAt } } } }";
    let (st, _, v) = http(
        &f.gh,
        "POST",
        "/graphql",
        Some(&f.auth()),
        Some(&json!({"query": q, "variables": {"id": node, "oid": "1".repeat(40)}})),
    );
    assert_eq!(st, 200);
    assert!(v["errors"][0]["message"].as_str().unwrap().starts_with("Head branch was modified"), "{v}");
    let (_, _, v) = http(
        &f.gh,
        "POST",
        "/graphql",
        Some(&f.auth()),
        Some(&json!({"query": q, "variables": {"id": node, "oid": f.tip("feature")}})),
    );
    assert_eq!(v["data"]["enablePullRequestAutoMerge"]["pullRequest"]["number"].as_u64(), Some(n), "{v}");
    assert_eq!(f.gh.pulls("acme", "deploy")[0].auto_merge.as_deref(), Some("squash"));
    let (_, _, v) = http(&f.gh, "GET", &format!("/repos/acme/deploy/pulls/{n}"), Some(&f.auth()), None);
    assert_eq!(
        (v["auto_merge"]["merge_method"].as_str(), v["mergeable_state"].as_str()),
        (Some("squash"), Some("blocked"))
    );
    f.gh.complete_checks("acme", "deploy", n);
    let p = &f.gh.pulls("acme", "deploy")[0];
    assert!(p.merged, "{p:?}");
    assert_eq!(f.tip("main"), p.merge_commit_sha.clone().unwrap());
    f.gh.assert_faithful();
}

#[test]
fn auto_merge_on_an_unprotected_branch_is_clean_status() {
    let f = Fixture::new();
    let (_, pr) = f.create_pull("feature");
    let q = format!(
        "mutation {{ enablePullRequestAutoMerge(input: {{pullRequestId: \"{}\", mergeMethod: MERGE}}) {{ clientMutationId }} }}",
        pr["node_id"].as_str().unwrap()
    );
    let (_, _, v) = http(&f.gh, "POST", "/graphql", Some(&f.auth()), Some(&json!({"query": q})));
    assert_eq!(
        v["errors"][0]["message"], "Pull request Auto merge is not allowed for this repository",
        "{v}"
    );
    f.gh.allow_auto_merge("acme", "deploy");
    let (_, _, v) = http(&f.gh, "POST", "/graphql", Some(&f.auth()), Some(&json!({"query": q})));
    assert_eq!(v["errors"][0]["message"], "Pull request is in clean status", "{v}");
    f.gh.assert_faithful();
}

#[test]
fn labels_reviewers_comments_and_ref_deletion() {
    let f = Fixture::new();
    f.gh.add_collaborator("acme", "deploy", "dana");
    let (_, pr) = f.create_pull("feature");
    let n = pr["number"].as_u64().unwrap();
    let a = Some(f.auth());
    let (st, _, v) = http(
        &f.gh,
        "POST",
        &format!("/repos/acme/deploy/issues/{n}/labels"),
        a.as_deref(),
        Some(&json!({"labels": ["rollback"]})),
    );
    assert_eq!((st, v[0]["name"].as_str()), (200, Some("rollback")), "{v}");
    let rr = format!("/repos/acme/deploy/pulls/{n}/requested_reviewers");
    let (st, _, v) = http(&f.gh, "POST", &rr, a.as_deref(), Some(&json!({"reviewers": ["mallory"]})));
    assert_eq!(st, 422, "{v}");
    assert!(v["message"].as_str().unwrap().starts_with("Reviews may only be requested from collaborators."));
    let (st, _, v) = http(
        &f.gh,
        "POST",
        &rr,
        a.as_deref(),
        Some(&json!({"reviewers": ["dana"], "team_reviewers": ["sre"]})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, _, _) = http(
        &f.gh,
        "POST",
        &format!("/repos/acme/deploy/issues/{n}/comments"),
        a.as_deref(),
        Some(&json!({"body": "hello"})),
    );
    assert_eq!(st, 201);
    let (_, _, v) =
        http(&f.gh, "GET", &format!("/repos/acme/deploy/issues/{n}/comments"), a.as_deref(), None);
    assert_eq!(v[0]["body"], "hello");
    let p = &f.gh.pulls("acme", "deploy")[0];
    assert_eq!(
        (p.labels.clone(), p.requested_reviewers.clone(), p.requested_teams.clone(), p.comments.clone()),
        (
            vec!["rollback".to_string()],
            vec!["dana".to_string()],
            vec!["sre".to_string()],
            vec!["hello".to_string()]
        )
    );
    // a branch with slashes, deleted with the slash %2F-encoded
    let w = f.work.path();
    git(w, &["push", "-q", "origin", "feature:refs/heads/metricops/revert-0123456789ab"]).unwrap();
    let (st, _, _) = http(
        &f.gh,
        "DELETE",
        "/repos/acme/deploy/git/refs/heads/metricops%2Frevert-0123456789ab",
        a.as_deref(),
        None,
    );
    assert_eq!(st, 204);
    assert!(f.tip("metricops/revert-0123456789ab").is_empty());
    let (st, _, v) = http(
        &f.gh,
        "DELETE",
        "/repos/acme/deploy/git/refs/heads/metricops/revert-0123456789ab",
        a.as_deref(),
        None,
    );
    assert_eq!((st, v["message"].as_str()), (422, Some("Reference does not exist")));
    f.gh.assert_faithful();
}

#[test]
fn bad_token_and_jwt_on_repo_endpoint_and_other_installation_are_refused() {
    let f = Fixture::new();
    f.gh.add_repo("other", "repo", 99);
    let (st, _, v) = http(
        &f.gh,
        "GET",
        "/repos/acme/deploy/pulls",
        Some("Bearer ghs_000000000000000000000000000000000000"),
        None,
    );
    assert_eq!((st, v["message"].as_str()), (401, Some("Bad credentials")));
    let (st, _, _) = http(&f.gh, "GET", "/repos/acme/deploy/pulls", Some(&bearer(&jwt(&f.gh))), None);
    assert_eq!(st, 401);
    let (st, _, _) = http(&f.gh, "GET", "/repos/other/repo/pulls", Some(&f.auth()), None);
    assert_eq!(st, 404, "a token of another installation does not see the repo");
    let (st, _, _) = http(&f.gh, "GET", "/repos/acme/deploy/pulls", None, None);
    assert_eq!(st, 401);
    f.gh.uninstall("acme", "deploy");
    assert_eq!(
        http(&f.gh, "GET", "/repos/acme/deploy/installation", Some(&bearer(&jwt(&f.gh))), None).0,
        404
    );
    assert_eq!(http(&f.gh, "GET", "/repos/acme/deploy/pulls", Some(&f.auth()), None).0, 404);
    let auths: Vec<String> = f.gh.requests().iter().map(|r| r.auth.clone()).collect();
    assert_eq!(auths[..4], ["bad", "jwt", "token", "none"]);
    f.gh.assert_faithful();
}

#[test]
fn a_body_missing_a_required_field_is_a_violation() {
    let f = Fixture::new();
    let (_, pr) = f.create_pull("feature");
    let (st, _, _) = http(
        &f.gh,
        "POST",
        &format!("/repos/acme/deploy/issues/{}/comments", pr["number"]),
        Some(&f.auth()),
        Some(&json!({"text": "hi"})),
    );
    assert_eq!(st, 422);
    let v = f.gh.violations();
    assert!(v.iter().any(|x| x.contains("required field `body` missing")), "{v:?}");
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.gh.assert_faithful())).is_err());
}

#[test]
fn wrong_types_unknown_query_and_unknown_endpoints_are_violations() {
    let f = Fixture::new();
    let a = Some(f.auth());
    http(
        &f.gh,
        "POST",
        "/repos/acme/deploy/pulls",
        a.as_deref(),
        Some(&json!({"title": 5, "head": "feature", "base": "main"})),
    );
    http(&f.gh, "GET", "/repos/acme/deploy/pulls?state=merged&colour=red", a.as_deref(), None);
    let (st, _, _) = http(&f.gh, "GET", "/repos/acme/deploy/releases", a.as_deref(), None);
    assert_eq!(st, 404);
    let (st, _, _) = http(&f.gh, "POST", "/repos/acme/deploy/frobnicate", a.as_deref(), Some(&json!({})));
    assert_eq!(st, 404);
    let v = f.gh.violations().join("\n");
    for want in [
        "body.title: expected string",
        "query.state",
        "`colour` is not declared",
        "stand-in does not implement GET /repos/{owner}/{repo}/releases",
        "GitHub has no POST /repos/acme/deploy/frobnicate",
    ] {
        assert!(v.contains(want), "missing {want:?} in:\n{v}");
    }
    assert!(f.gh.pulls("acme", "deploy").is_empty(), "an invalid body creates nothing");
}

#[test]
fn fault_injection_answers_the_next_matching_requests() {
    let f = Fixture::new();
    f.gh.fail_next("GET", "/repos/acme/deploy/pulls", 403, &[("retry-after", "1")], 2);
    let a = Some(f.auth());
    let (st, head, _) = http(&f.gh, "GET", "/repos/acme/deploy/pulls", a.as_deref(), None);
    assert_eq!(st, 403);
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert_eq!(http(&f.gh, "GET", "/repos/acme/deploy/pulls", a.as_deref(), None).0, 403);
    assert_eq!(http(&f.gh, "GET", "/repos/acme/deploy/pulls", a.as_deref(), None).0, 200);
    f.gh.assert_faithful();
}

#[test]
fn git_push_over_http_needs_an_installation_token() {
    let f = Fixture::new();
    let w = f.work.path();
    std::fs::write(w.join("app.yaml"), "image: shop:1.2\n").unwrap();
    git(w, &["commit", "-q", "-am", "bump shop to 1.2"]).unwrap();
    let url = f.gh.git_url("acme", "deploy");
    let err = git(w, &["push", "-q", &url, "HEAD:refs/heads/pushed"]).unwrap_err();
    assert!(err.contains("401") || err.to_lowercase().contains("authentication"), "{err}");
    let err = git(
        w,
        &[
            "-c",
            "http.extraHeader=Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hzX2JhZA==",
            "push",
            "-q",
            &url,
            "HEAD:refs/heads/pushed",
        ],
    )
    .unwrap_err();
    assert!(!err.is_empty());
    assert!(f.tip("pushed").is_empty());
    let with_token = url.replace("http://", &format!("http://x-access-token:{}@", f.token));
    git(w, &["push", "-q", &with_token, "HEAD:refs/heads/pushed"]).expect("push with a token");
    assert_eq!(f.tip("pushed"), git(w, &["rev-parse", "HEAD"]).unwrap());
    // fetch too, into a fresh clone
    let c = tempfile::tempdir().unwrap();
    git(c.path(), &["clone", "-q", &with_token, "."]).expect("clone with a token");
    assert_eq!(git(c.path(), &["rev-parse", "origin/pushed"]).unwrap(), f.tip("pushed"));
    let recs = f.gh.requests();
    assert!(
        recs.iter().any(|r| r.path.ends_with("git-receive-pack") && r.status == 200 && r.auth == "token"),
        "{recs:?}"
    );
    f.gh.assert_faithful();
}

#[test]
fn webhook_signature_matches_githubs_test_vector() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/github/signature-test-vector.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let sig = GitHub::sign_webhook(v["secret"].as_str().unwrap(), v["payload"].as_str().unwrap().as_bytes());
    assert_eq!(sig, v["X-Hub-Signature-256"].as_str().unwrap());
    assert_ne!(GitHub::sign_webhook("other", b"Hello, World!"), sig);
}

/// The challenge a client without preemptive credentials meets: 401 first, then its credentials
/// (the git CLI, through a credential helper; metricops sends its token with the first request).
#[test]
fn a_push_after_the_401_challenge_lands() {
    let f = Fixture::new();
    let helper = format!("!f() {{ echo username=x-access-token; echo password={}; }}; f", f.token);
    let url = f.gh.git_url("acme", "deploy");
    git(
        f.work.path(),
        &[
            "-c",
            &format!("credential.helper={helper}"),
            "push",
            "-q",
            &url,
            "refs/heads/feature:refs/heads/metricops/revert-abc",
        ],
    )
    .expect("git push after the challenge");
    assert_eq!(f.tip("metricops/revert-abc"), f.tip("feature"));
    let statuses: Vec<(u16, String)> =
        f.gh.requests()
            .iter()
            .filter(|r| r.path.contains(".git/"))
            .map(|r| (r.status, r.auth.clone()))
            .collect();
    assert_eq!(statuses.first(), Some(&(401, "none".to_string())), "{statuses:?}");
    assert!(statuses.iter().skip(1).all(|(s, a)| *s == 200 && a == "token"), "{statuses:?}");
    f.gh.assert_faithful();
}

#[test]
fn rebase_merge_replays_the_head_commit() {
    let f = Fixture::new();
    let w = f.work.path();
    // main moves on (another file), so the rebase really replays
    git(w, &["checkout", "-q", "main"]).unwrap();
    std::fs::write(w.join("other.txt"), "x\n").unwrap();
    git(w, &["add", "-A"]).unwrap();
    git(w, &["commit", "-q", "-m", "other"]).unwrap();
    git(w, &["push", "-q", "origin", "main"]).unwrap();
    let main = f.tip("main");
    let (_, pr) = f.create_pull("feature");
    let (st, _, v) = http(
        &f.gh,
        "PUT",
        &format!("/repos/acme/deploy/pulls/{}/merge", pr["number"]),
        Some(&f.auth()),
        Some(&json!({"merge_method": "rebase"})),
    );
    assert_eq!(st, 200, "{v}");
    git(w, &["fetch", "-q", "origin"]).unwrap();
    assert_eq!(
        git(w, &["log", "-1", "--format=%P|%s|%an", "origin/main"]).unwrap(),
        format!("{main}|bump shop to 1.1|Dana")
    );
    assert_eq!(git(w, &["show", "origin/main:app.yaml"]).unwrap(), "image: shop:1.1");
    f.gh.assert_faithful();
}

#[test]
fn a_jwt_for_another_app_or_too_long_lived_is_refused() {
    let f = Fixture::new();
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(f.gh.private_key_pem().as_bytes()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value| {
        octocrab::jsonwebtoken::encode(
            &octocrab::jsonwebtoken::Header::new(octocrab::jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let path = format!("/app/installations/{INST}/access_tokens");
    let ok = sign(json!({"iss": APP_ID.to_string(), "iat": now - 30, "exp": now + 500}));
    assert_eq!(http(&f.gh, "POST", &path, Some(&bearer(&ok)), None).0, 201, "iss as a string is fine");
    for bad in [
        json!({"iss": 1, "iat": now - 30, "exp": now + 500}),
        json!({"iss": APP_ID, "iat": now - 30, "exp": now + 3600}),
        json!({"iss": APP_ID, "iat": now - 900, "exp": now - 300}),
    ] {
        assert_eq!(http(&f.gh, "POST", &path, Some(&bearer(&sign(bad.clone()))), None).0, 401, "{bad}");
    }
    f.gh.assert_faithful();
}

#[test]
fn listing_pulls_filters_by_state_and_head_and_paginates() {
    let f = Fixture::new();
    let w = f.work.path();
    for b in ["b1", "b2", "b3"] {
        git(w, &["push", "-q", "origin", &format!("feature:refs/heads/{b}")]).unwrap();
        assert_eq!(f.create_pull(b).0, 201);
    }
    let a = Some(f.auth());
    let (st, head, v) =
        http(&f.gh, "GET", "/repos/acme/deploy/pulls?state=open&per_page=2", a.as_deref(), None);
    assert_eq!((st, v.as_array().unwrap().len()), (200, 2));
    assert!(head.contains("page=2>; rel=\"next\""), "{head}");
    let (_, _, v) =
        http(&f.gh, "GET", "/repos/acme/deploy/pulls?state=open&per_page=2&page=2", a.as_deref(), None);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (_, _, v) =
        http(&f.gh, "GET", "/repos/acme/deploy/pulls?state=all&head=acme%3Ab2", a.as_deref(), None);
    assert_eq!((v.as_array().unwrap().len(), v[0]["head"]["ref"].as_str()), (1, Some("b2")));
    let (_, _, v) = http(&f.gh, "GET", "/repos/acme/deploy/pulls?state=closed", a.as_deref(), None);
    assert_eq!(v, json!([]));
    f.gh.assert_faithful();
}

/// An open pull from `feature` with `dana` commenting `/metricops approve` on it: (fixture, pull, comment id, payload).
fn chatops() -> (Fixture, u64, u64, String) {
    let f = Fixture::new();
    f.gh.add_collaborator("acme", "deploy", "dana");
    let (st, pr) = f.create_pull("feature");
    assert_eq!(st, 201, "{pr}");
    let n = pr["number"].as_u64().unwrap();
    let (id, payload) = f.gh.comment_as("acme", "deploy", n, "dana", "/metricops approve");
    (f, n, id, payload)
}

#[test]
fn comment_as_gives_an_issue_comment_delivery_octocrab_parses() {
    use octocrab::models::webhook_events::{
        EventInstallation, WebhookEvent, WebhookEventPayload, WebhookEventType,
    };
    let (f, n, id, payload) = chatops();
    assert!(
        !payload.contains("Kobzol") && !payload.contains("bors-kindergarten"),
        "fixture identity left in the payload: {payload}"
    );
    let ev = WebhookEvent::try_from_header_and_body("issue_comment", payload.as_bytes())
        .expect("octocrab parses the delivery");
    assert_eq!(ev.kind, WebhookEventType::IssueComment);
    assert_eq!(ev.sender.as_ref().map(|s| s.login.as_str()), Some("dana"));
    assert_eq!(ev.repository.as_ref().and_then(|r| r.full_name.clone()).as_deref(), Some("acme/deploy"));
    match &ev.installation {
        Some(EventInstallation::Minimal(i)) => assert_eq!(i.id.0, INST),
        other => panic!("installation: {other:?}"),
    }
    let WebhookEventPayload::IssueComment(p) = &ev.specific else { panic!("{:?}", ev.specific) };
    assert_eq!(p.action, octocrab::models::webhook_events::payload::IssueCommentWebhookEventAction::Created);
    assert_eq!(
        (p.comment.id.0, p.comment.body.as_deref(), p.comment.user.login.as_str()),
        (id, Some("/metricops approve"), "dana")
    );
    assert_eq!(
        (p.issue.number, p.issue.user.login.as_str(), p.issue.title.as_str()),
        (n, "metricops-test[bot]", "Bump")
    );
    assert!(p.issue.pull_request.is_some(), "a comment on a pull request");
    let raw: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (raw["comment"]["user"]["type"].as_str(), raw["issue"]["user"]["type"].as_str()),
        (Some("User"), Some("Bot"))
    );
    assert_eq!(raw["comment"]["author_association"], "COLLABORATOR");
    assert_eq!(
        raw["comment"]["html_url"],
        format!("https://github.com/acme/deploy/pull/{n}#issuecomment-{id}")
    );
    assert_eq!(raw["issue"]["state"], "open");
    // a bot commenting is a Bot
    let (_, bot) = f.gh.comment_as("acme", "deploy", n, "renovate[bot]", "ping");
    let bot: Value = serde_json::from_str(&bot).unwrap();
    assert_eq!(
        (bot["comment"]["user"]["type"].as_str(), bot["sender"]["login"].as_str()),
        (Some("Bot"), Some("renovate[bot]"))
    );
    // the comment is visible through the API and in snapshots
    let (_, _, list) =
        http(&f.gh, "GET", &format!("/repos/acme/deploy/issues/{n}/comments"), Some(&f.auth()), None);
    assert_eq!(
        (list[0]["id"].as_u64(), list[0]["user"]["login"].as_str(), list[0]["body"].as_str()),
        (Some(id), Some("dana"), Some("/metricops approve")),
        "{list}"
    );
    let (st, _, one) =
        http(&f.gh, "GET", &format!("/repos/acme/deploy/issues/comments/{id}"), Some(&f.auth()), None);
    assert_eq!((st, one["body"].as_str()), (200, Some("/metricops approve")));
    assert_eq!(http(&f.gh, "GET", "/repos/acme/deploy/issues/comments/1", Some(&f.auth()), None).0, 404);
    assert_eq!(
        f.gh.pulls("acme", "deploy")[0].comments,
        vec!["/metricops approve".to_string(), "ping".to_string()]
    );
    assert_eq!(
        f.gh.comments_on("acme", "deploy", n)[0],
        (id, "dana".to_string(), "/metricops approve".to_string())
    );
    f.gh.assert_faithful();
}

#[test]
fn editing_a_comment_changes_it_and_gives_an_edited_delivery() {
    use octocrab::models::webhook_events::{
        WebhookEvent, WebhookEventPayload, payload::IssueCommentWebhookEventAction,
    };
    let (f, n, id, _) = chatops();
    let payload = f.gh.edit_comment_payload("acme", "deploy", id, "/metricops reject");
    let ev = WebhookEvent::try_from_header_and_body("issue_comment", payload.as_bytes())
        .expect("octocrab parses the delivery");
    let WebhookEventPayload::IssueComment(p) = &ev.specific else { panic!("{:?}", ev.specific) };
    assert_eq!(p.action, IssueCommentWebhookEventAction::Edited);
    assert_eq!(p.changes.as_ref().map(|c| c.body.from.as_str()), Some("/metricops approve"));
    assert_eq!((p.comment.body.as_deref(), p.issue.number), (Some("/metricops reject"), n));
    assert_eq!(
        f.gh.comments_on("acme", "deploy", n),
        vec![(id, "dana".to_string(), "/metricops reject".to_string())]
    );
    let (_, _, one) =
        http(&f.gh, "GET", &format!("/repos/acme/deploy/issues/comments/{id}"), Some(&f.auth()), None);
    assert_eq!(one["body"], "/metricops reject");
    f.gh.assert_faithful();
}

#[test]
fn reactions_on_a_comment_through_the_api() {
    let (f, _, id, _) = chatops();
    let path = format!("/repos/acme/deploy/issues/comments/{id}/reactions");
    let a = Some(f.auth());
    let (st, _, v) = http(&f.gh, "POST", &path, a.as_deref(), Some(&json!({"content": "eyes"})));
    assert_eq!(
        (st, v["content"].as_str(), v["user"]["login"].as_str()),
        (201, Some("eyes"), Some("metricops-test[bot]")),
        "{v}"
    );
    let (st, _, again) = http(&f.gh, "POST", &path, a.as_deref(), Some(&json!({"content": "eyes"})));
    assert_eq!((st, &again["id"]), (200, &v["id"]), "the same reaction again is 200 with the existing one");
    // octocrab, with the installation token
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(async {
        let c = octocrab::Octocrab::builder()
            .base_uri(f.gh.url())
            .unwrap()
            .personal_token(f.token.clone())
            .build()
            .unwrap();
        c.issues("acme", "deploy")
            .create_comment_reaction(id, octocrab::models::reactions::ReactionContent::PlusOne)
            .await
    });
    assert_eq!(r.expect("octocrab reacts").content, octocrab::models::reactions::ReactionContent::PlusOne);
    assert_eq!(
        f.gh.reactions("acme", "deploy", id),
        vec![
            ("metricops-test[bot]".to_string(), "eyes".to_string()),
            ("metricops-test[bot]".to_string(), "+1".to_string())
        ]
    );
    let (_, _, c) =
        http(&f.gh, "GET", &format!("/repos/acme/deploy/issues/comments/{id}"), a.as_deref(), None);
    assert_eq!(
        (
            c["reactions"]["total_count"].as_u64(),
            c["reactions"]["eyes"].as_u64(),
            c["reactions"]["+1"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{c}"
    );
    assert_eq!(
        http(
            &f.gh,
            "POST",
            "/repos/acme/deploy/issues/comments/1/reactions",
            a.as_deref(),
            Some(&json!({"content": "eyes"}))
        )
        .0,
        404
    );
    f.gh.assert_faithful();
    let (st, _, _) = http(&f.gh, "POST", &path, a.as_deref(), Some(&json!({"content": "thumbsup"})));
    assert_eq!(st, 422);
    let v = f.gh.violations().join("\n");
    assert!(v.contains("body.content: \"thumbsup\" is not one of"), "{v}");
    assert_eq!(f.gh.reactions("acme", "deploy", id).len(), 2);
}

#[test]
fn collaborator_permission_answers_legacy_permission_and_role() {
    let f = Fixture::new();
    f.gh.add_collaborator("acme", "deploy", "wanda");
    f.gh.set_permission("acme", "deploy", "mona", "maintain");
    f.gh.set_permission("acme", "deploy", "rita", "read");
    f.gh.set_permission("acme", "deploy", "tess", "triage");
    f.gh.set_permission("acme", "deploy", "nora", "none");
    let ask = |login: &str| {
        let (st, _, v) = http(
            &f.gh,
            "GET",
            &format!("/repos/acme/deploy/collaborators/{login}/permission"),
            Some(&f.auth()),
            None,
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["user"]["login"], login);
        (
            v["permission"].as_str().unwrap().to_string(),
            v["role_name"].as_str().unwrap().to_string(),
            v["user"]["permissions"]["push"].as_bool().unwrap(),
        )
    };
    let s = |a: &str, b: &str, push: bool| (a.to_string(), b.to_string(), push);
    assert_eq!(ask("acme"), s("admin", "admin", true), "the owner");
    assert_eq!(ask("wanda"), s("write", "write", true), "add_collaborator means write");
    assert_eq!(
        ask("Mona"),
        s("write", "maintain", true),
        "logins are case-insensitive; maintain is legacy write"
    );
    assert_eq!(ask("tess"), s("read", "triage", false));
    assert_eq!(ask("rita"), s("read", "read", false));
    assert_eq!(ask("nora"), s("none", "none", false));
    assert_eq!(ask("stranger"), s("read", "read", false), "never set: read, as on a public repository");
    f.gh.set_permission("acme", "deploy", "wanda", "admin");
    assert_eq!(ask("wanda"), s("admin", "admin", true));
    f.gh.assert_faithful();
}

#[test]
fn closing_a_pull_by_patch_then_merging_is_refused() {
    let f = Fixture::new();
    let (_, pr) = f.create_pull("feature");
    let n = pr["number"].as_u64().unwrap();
    let a = Some(f.auth());
    let path = format!("/repos/acme/deploy/pulls/{n}");
    let (st, _, v) = http(
        &f.gh,
        "PATCH",
        &path,
        a.as_deref(),
        Some(&json!({"state": "closed", "title": "Bump (abandoned)"})),
    );
    assert_eq!(
        (st, v["state"].as_str(), v["title"].as_str(), v["merged"].as_bool()),
        (200, Some("closed"), Some("Bump (abandoned)"), Some(false)),
        "{v}"
    );
    assert!(v["closed_at"].is_string());
    let (st, _, v) = http(&f.gh, "PUT", &format!("{path}/merge"), a.as_deref(), None);
    assert_eq!((st, v["message"].as_str()), (405, Some("Pull Request is not mergeable")));
    let p = &f.gh.pulls("acme", "deploy")[0];
    assert_eq!((p.state.as_str(), p.merged, p.title.as_str()), ("closed", false, "Bump (abandoned)"));
    // reopen, merge, then closing (or reopening) the merged pull is refused
    let (st, _, v) = http(&f.gh, "PATCH", &path, a.as_deref(), Some(&json!({"state": "open"})));
    assert_eq!((st, v["state"].as_str(), &v["closed_at"]), (200, Some("open"), &Value::Null), "{v}");
    assert_eq!(http(&f.gh, "PUT", &format!("{path}/merge"), a.as_deref(), None).0, 200);
    for state in ["closed", "open"] {
        let (st, _, v) = http(&f.gh, "PATCH", &path, a.as_deref(), Some(&json!({"state": state})));
        assert_eq!((st, v["message"].as_str()), (422, Some("Validation Failed")), "{state}: {v}");
    }
    let (st, _, v) = http(&f.gh, "PATCH", &path, a.as_deref(), Some(&json!({"body": "merged already"})));
    assert_eq!(
        (st, v["body"].as_str(), v["merged"].as_bool()),
        (200, Some("merged already"), Some(true)),
        "{v}"
    );
    assert_eq!(
        http(&f.gh, "PATCH", "/repos/acme/deploy/pulls/99", a.as_deref(), Some(&json!({"state": "closed"})))
            .0,
        404
    );
    f.gh.assert_faithful();
}
