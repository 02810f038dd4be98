//! The REST endpoints: OpenAPI checks, auth gate, routing, and the answers (built from the
//! description's `components/examples`, patched with state).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::openapi::{self, Op, example};
use super::{
    Auth, BOT_LOGIN, PullState, Reply, RepoState, State, error, git, git_env, now, parse_query, pct_decode,
    validation_failed,
};

pub(super) fn serve(s: &mut State, auth: &Auth, method: &str, path: &str, query: &str, body: &[u8]) -> Reply {
    let q = parse_query(query);
    let body_json: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => Some(v),
            Err(e) => {
                s.violations.push(format!("{method} {path}: body is not JSON: {e}"));
                return Reply::json(400, error("Problems parsing JSON"));
            }
        }
    };
    let op = match openapi::find(method, path) {
        Ok(op) => op,
        Err(e) => {
            s.violations.push(e);
            return Reply::json(404, error("Not Found"));
        }
    };
    let body_errs = op.check_body(body_json.as_ref());
    s.violations.extend(op.check_query(&q));
    s.violations.extend(body_errs.iter().cloned());
    let jwt_endpoint = op.template.starts_with("/app")
        || (method == "GET" && op.template == "/repos/{owner}/{repo}/installation");
    let denied = match (auth, jwt_endpoint) {
        (Auth::Jwt, true) | (Auth::Token(_), false) => None,
        (Auth::None, _) => Some("Requires authentication"),
        (Auth::Bad, _) => Some("Bad credentials"),
        (Auth::Jwt, false) | (Auth::Token(_), true) => Some("A JSON web token could not be decoded"),
    };
    let reply = if let Some(m) = denied {
        Reply::json(401, error(m))
    } else if !body_errs.is_empty() {
        Reply::json(422, validation_failed(json!([{"code": "invalid", "message": body_errs.join("; ")}])))
    } else {
        route(s, auth, &op, path, &q, body_json.unwrap_or(Value::Null))
    };
    if let Some(v) = &reply.json {
        s.violations.extend(op.check_response(reply.status, Some(v)));
    }
    reply
}

/// Template parameters, percent-decoded; the last one absorbs the remaining segments.
fn params(template: &str, path: &str) -> HashMap<String, String> {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut out = HashMap::new();
    for (i, ts) in t.iter().enumerate() {
        if let Some(name) = ts.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            let raw = if i + 1 == t.len() { segs[i..].join("/") } else { segs[i].to_string() };
            out.insert(name.to_string(), pct_decode(&raw, false));
        }
    }
    out
}

fn not_found() -> Reply {
    Reply::json(404, error("Not Found"))
}

fn route(s: &mut State, auth: &Auth, op: &Op, path: &str, q: &[(String, String)], body: Value) -> Reply {
    let p = params(&op.template, path);
    let (m, t) = (op.method.as_str(), op.template.as_str());
    if (m, t) == ("POST", "/app/installations/{installation_id}/access_tokens") {
        let Some(id) = p["installation_id"].parse::<u64>().ok().filter(|id| s.installations.contains(id))
        else {
            return not_found();
        };
        let token = s.mint(id);
        let mut v = example("installation-token");
        let o = v.as_object_mut().unwrap();
        o.retain(|k, _| ["token", "expires_at", "permissions", "repository_selection"].contains(&k.as_str()));
        o.insert("token".into(), json!(token));
        o.insert(
            "expires_at".into(),
            json!((chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
        o.insert(
            "permissions".into(),
            json!({"contents": "write", "pull_requests": "write", "issues": "write", "metadata": "read"}),
        );
        o.insert("repository_selection".into(), json!("selected"));
        return Reply::json(201, v);
    }
    let (Some(owner), Some(name)) = (p.get("owner"), p.get("repo")) else {
        s.violations.push(format!("stand-in does not implement {m} {t}"));
        return not_found();
    };
    let base = s.base_url.clone();
    let State { repos, next_id, violations, .. } = s;
    let Some(r) = repos.get_mut(&(owner.clone(), name.clone())) else {
        return not_found();
    };
    match auth {
        Auth::Token(inst) if r.installation != Some(*inst) => return not_found(),
        Auth::Jwt if r.installation.is_none() => return not_found(),
        _ => {}
    }
    r.refresh();
    let branches = r.branches();
    let mut new_id = || {
        *next_id += 1;
        *next_id
    };
    let num = |k: &str| p.get(k).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    match (m, t) {
        ("GET", "/repos/{owner}/{repo}/installation") => {
            let inst = r.installation.unwrap();
            let mut v = localize(example("installation"), &base, r, None);
            v["id"] = json!(inst);
            v["app_id"] = json!(super::APP_ID);
            v["account"] = user(&base, &r.owner);
            v["target_type"] = json!("User");
            v["repository_selection"] = json!("selected");
            v["access_tokens_url"] = json!(format!("{base}/app/installations/{inst}/access_tokens"));
            Reply::json(200, v)
        }
        ("GET", "/repos/{owner}/{repo}/pulls") => {
            let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone());
            let state = get("state").unwrap_or_else(|| "open".into());
            let head = get("head");
            let base_f = get("base");
            let per_page = get("per_page").and_then(|x| x.parse::<usize>().ok()).unwrap_or(30).clamp(1, 100);
            let page = get("page").and_then(|x| x.parse::<usize>().ok()).unwrap_or(1).max(1);
            let mut list: Vec<&PullState> = r
                .pulls
                .iter()
                .filter(|pl| state == "all" || pl.p.state == state)
                .filter(|pl| match &head {
                    None => true,
                    Some(h) => match h.split_once(':') {
                        Some((o, b)) => o == r.owner && b == pl.p.head_ref,
                        None => h == &r.owner,
                    },
                })
                .filter(|pl| base_f.as_ref().is_none_or(|b| b == &pl.p.base_ref))
                .collect();
            list.sort_by_key(|pl| std::cmp::Reverse(pl.p.number));
            let v: Vec<Value> = list
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|pl| pull_json(&base, r, pl, &branches, false))
                .collect();
            let last = list.len().div_ceil(per_page).max(1);
            let reply = Reply::json(200, Value::Array(v));
            if last <= 1 {
                return reply;
            }
            // Pagination as GitHub does it: a Link header with the other pages.
            let others: Vec<(String, String)> = q.iter().filter(|(k, _)| k != "page").cloned().collect();
            let link_to = |n: usize, rel: &str| {
                let mut qs: Vec<String> = others.iter().map(|(k, v)| format!("{k}={v}")).collect();
                qs.push(format!("page={n}"));
                format!("<{base}/repos/{}/{}/pulls?{}>; rel=\"{rel}\"", r.owner, r.name, qs.join("&"))
            };
            let mut links = vec![];
            if page < last {
                links.push(link_to(page + 1, "next"));
                links.push(link_to(last, "last"));
            }
            if page > 1 {
                links.push(link_to(1, "first"));
                links.push(link_to(page - 1, "prev"));
            }
            reply.header("link", &links.join(", "))
        }
        ("POST", "/repos/{owner}/{repo}/pulls") => create_pull(&base, r, &branches, &body, new_id()),
        ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}") => match r.pull(num("pull_number")) {
            Some(pl) => Reply::json(200, pull_json(&base, r, pl, &branches, true)),
            None => not_found(),
        },
        ("GET", "/repos/{owner}/{repo}/commits/{commit_sha}/pulls") => {
            let sha = &p["commit_sha"];
            let hit = |x: &str| x == sha || (sha.len() >= 7 && x.starts_with(sha.as_str()));
            let v: Vec<Value> = r
                .pulls
                .iter()
                .filter(|pl| pl.p.merge_commit_sha.as_deref().is_some_and(hit) || hit(&pl.p.head_sha))
                .map(|pl| pull_json(&base, r, pl, &branches, false))
                .collect();
            Reply::json(200, Value::Array(v))
        }
        ("DELETE", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}") => {
            // GitHub: 200 with the labels left; 404 "Label does not exist" when it is not on the issue.
            let n = num("issue_number");
            let name = p.get("name").cloned().unwrap_or_default();
            let Some(pl) = r.pull_mut(n) else {
                return not_found();
            };
            let Some(i) = pl.p.labels.iter().position(|l| *l == name) else {
                return Reply::json(
                    404,
                    json!({"message": "Label does not exist", "documentation_url": "https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue"}),
                );
            };
            pl.p.labels.remove(i);
            pl.updated_at = now();
            let pl = r.pull(n).unwrap();
            Reply::json(200, Value::Array(pl.p.labels.iter().map(|l| label_json(&base, r, l)).collect()))
        }
        ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/labels") => {
            let n = num("issue_number");
            if r.pull(n).is_none() {
                return not_found();
            }
            let items = match &body {
                Value::Array(a) => a.clone(),
                Value::Object(o) => o.get("labels").and_then(Value::as_array).cloned().unwrap_or_default(),
                Value::String(x) => vec![json!(x)],
                _ => vec![],
            };
            for it in items {
                let Some(l) = it.as_str().or_else(|| it["name"].as_str()).map(str::to_string) else {
                    continue;
                };
                if !r.labels.contains_key(&l) {
                    let id = new_id();
                    r.labels.insert(l.clone(), id);
                }
                let pl = r.pull_mut(n).unwrap();
                if !pl.p.labels.contains(&l) {
                    pl.p.labels.push(l);
                    pl.updated_at = now();
                }
            }
            let pl = r.pull(n).unwrap();
            Reply::json(200, Value::Array(pl.p.labels.iter().map(|l| label_json(&base, r, l)).collect()))
        }
        ("POST", "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers") => {
            let n = num("pull_number");
            let Some(pl) = r.pull(n) else {
                return not_found();
            };
            let strs = |k: &str| -> Vec<String> {
                body[k]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default()
            };
            let (users, teams) = (strs("reviewers"), strs("team_reviewers"));
            if users.iter().any(|u| u.eq_ignore_ascii_case(&pl.p.author)) {
                return Reply::json(422, error("Review cannot be requested from pull request author."));
            }
            if users.iter().any(|u| !r.is_collaborator(u)) {
                return Reply::json(
                    422,
                    error(&format!(
                        "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the {}/{} repository.",
                        r.owner, r.name
                    )),
                );
            }
            let pl = r.pull_mut(n).unwrap();
            for u in users {
                if !pl.p.requested_reviewers.contains(&u) {
                    pl.p.requested_reviewers.push(u);
                }
            }
            for t in teams {
                if !pl.p.requested_teams.contains(&t) {
                    pl.p.requested_teams.push(t);
                }
            }
            pl.updated_at = now();
            Reply::json(201, pull_json(&base, r, r.pull(n).unwrap(), &branches, false))
        }
        ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments") => {
            let n = num("issue_number");
            let id = new_id();
            let Some(pl) = r.pull_mut(n) else {
                return not_found();
            };
            let text = body["body"].as_str().unwrap_or_default().to_string();
            let t = now();
            pl.comments.push(super::Comment {
                id,
                body: text,
                author: BOT_LOGIN.into(),
                created_at: t.clone(),
                updated_at: t.clone(),
                reactions: vec![],
            });
            pl.updated_at = t;
            let c = r.pull(n).unwrap().comments.last().unwrap();
            Reply::json(201, comment_json(&base, r, n, c))
                .header("location", &format!("{base}/repos/{}/{}/issues/comments/{id}", r.owner, r.name))
        }
        ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments") => {
            let n = num("issue_number");
            let Some(pl) = r.pull(n) else {
                return not_found();
            };
            Reply::json(200, Value::Array(pl.comments.iter().map(|c| comment_json(&base, r, n, c)).collect()))
        }
        ("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}") => match r.comment(num("comment_id")) {
            Some((n, c)) => Reply::json(200, comment_json(&base, r, n, c)),
            None => not_found(),
        },
        ("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}") => {
            // The body (`body` required, a string) was checked against the description before routing.
            let text = body["body"].as_str().unwrap_or_default().to_string();
            let t = now();
            let Some((n, c)) = r.comment_mut(num("comment_id")) else {
                return not_found();
            };
            c.body = text;
            c.updated_at = t.clone();
            if let Some(pl) = r.pull_mut(n) {
                pl.updated_at = t;
            }
            let (n, c) = r.comment(num("comment_id")).unwrap();
            Reply::json(200, comment_json(&base, r, n, c))
        }
        ("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions") => {
            // The body's `content` was checked against the description's enum before routing (422 otherwise).
            let content = body["content"].as_str().unwrap_or_default().to_string();
            let rid = new_id();
            let Some((_, c)) = r.comment_mut(num("comment_id")) else {
                return not_found();
            };
            // An installation token reacts as the App's bot user.
            if let Some(x) = c.reactions.iter().find(|x| x.login == BOT_LOGIN && x.content == content) {
                return Reply::json(200, reaction_json(&base, x));
            }
            c.reactions.push(super::Reaction {
                id: rid,
                login: BOT_LOGIN.into(),
                content,
                created_at: now(),
            });
            Reply::json(201, reaction_json(&base, c.reactions.last().unwrap()))
        }
        ("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission") => {
            let login = &p["username"];
            let role = r.role(login).to_string();
            let legacy = match role.as_str() {
                "maintain" => "write",
                "triage" => "read",
                x => x,
            };
            let rank = super::ROLES.iter().position(|x| *x == role).unwrap_or(0);
            let at_least = |x: &str| rank >= super::ROLES.iter().position(|y| *y == x).unwrap();
            let mut v = example("repository-collaborator-permission-response-if-user-has-admin-permissions");
            v["permission"] = json!(legacy);
            v["role_name"] = json!(role);
            let mut u = user(&base, login);
            u["permissions"] = json!({"pull": at_least("read"), "triage": at_least("triage"), "push": at_least("write"),
                                      "maintain": at_least("maintain"), "admin": at_least("admin")});
            u["role_name"] = json!(role);
            v["user"] = u;
            Reply::json(200, v)
        }
        ("PATCH", "/repos/{owner}/{repo}/pulls/{pull_number}") => {
            update_pull(&base, r, &branches, num("pull_number"), &body)
        }
        ("GET", "/repos/{owner}/{repo}/branches/{branch}") => {
            let b = &p["branch"];
            match branches.get(b) {
                Some(sha) => Reply::json(200, branch_json(&base, r, b, sha)),
                None => Reply::json(404, error("Branch not found")),
            }
        }
        ("PUT", "/repos/{owner}/{repo}/pulls/{pull_number}/merge") => {
            let method = body["merge_method"].as_str().unwrap_or("merge").to_string();
            let s = |k: &str| body[k].as_str().map(str::to_string);
            match merge(
                r,
                num("pull_number"),
                &method,
                s("sha").as_deref(),
                s("commit_title"),
                s("commit_message"),
            ) {
                Ok(sha) => Reply::json(
                    200,
                    json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
                ),
                Err((status, msg)) => Reply::json(status, error(&msg)),
            }
        }
        ("DELETE", "/repos/{owner}/{repo}/git/refs/{ref}") => {
            let rf = &p["ref"];
            let full = format!("refs/{rf}");
            if !(rf.starts_with("heads/") || rf.starts_with("tags/"))
                || git(&r.path, &["rev-parse", "--verify", "-q", &full]).is_err()
            {
                return Reply::json(422, error("Reference does not exist"));
            }
            if let Err(e) = git(&r.path, &["update-ref", "-d", &full]) {
                violations.push(format!("stand-in could not delete {full}: {e}"));
                return Reply::json(500, error("Server Error"));
            }
            if let Some(b) = rf.strip_prefix("heads/") {
                // GitHub closes open pull requests whose head branch is deleted.
                for pl in r.pulls.iter_mut().filter(|pl| pl.p.state == "open" && pl.p.head_ref == b) {
                    pl.p.state = "closed".into();
                    pl.p.auto_merge = None;
                    pl.closed_at = Some(now());
                    pl.updated_at = now();
                }
            }
            Reply::empty(204)
        }
        _ => {
            violations.push(format!("stand-in does not implement {m} {t} ({path})"));
            not_found()
        }
    }
}

fn create_pull(
    base: &str,
    r: &mut RepoState,
    branches: &BTreeMap<String, String>,
    body: &Value,
    id: u64,
) -> Reply {
    let head_raw = body["head"].as_str().unwrap_or_default();
    let head = match head_raw.split_once(':') {
        Some((o, b)) if o == r.owner => b.to_string(),
        Some(_) => String::new(),
        None => head_raw.to_string(),
    };
    let base_ref = body["base"].as_str().unwrap_or_default().to_string();
    let invalid = |field: &str| {
        Reply::json(
            422,
            validation_failed(json!([{"resource": "PullRequest", "field": field, "code": "invalid"}])),
        )
    };
    let custom = |msg: String| {
        Reply::json(
            422,
            validation_failed(json!([{"resource": "PullRequest", "code": "custom", "message": msg}])),
        )
    };
    let Some(head_sha) = branches.get(&head) else {
        return invalid("head");
    };
    let Some(base_sha) = branches.get(&base_ref) else {
        return invalid("base");
    };
    if r.pulls.iter().any(|pl| pl.p.state == "open" && pl.p.head_ref == head && pl.p.base_ref == base_ref) {
        return custom(format!("A pull request already exists for {}:{head}.", r.owner));
    }
    let ahead =
        git(&r.path, &["rev-list", "--count", &format!("{base_sha}..{head_sha}")]).unwrap_or_default();
    if ahead == "0" {
        return custom(format!("No commits between {base_ref} and {head}"));
    }
    let number = r.next_number;
    r.next_number += 1;
    let t = now();
    r.pulls.push(PullState {
        p: super::Pull {
            number,
            node_id: format!("PR_kwDO{:06}{:05}", r.id, number),
            title: body["title"].as_str().unwrap_or_default().to_string(),
            body: body["body"].as_str().unwrap_or_default().to_string(),
            state: "open".into(),
            merged: false,
            merge_commit_sha: None,
            head_ref: head,
            head_sha: head_sha.clone(),
            base_ref,
            author: BOT_LOGIN.into(),
            labels: vec![],
            requested_reviewers: vec![],
            requested_teams: vec![],
            comments: vec![],
            auto_merge: None,
        },
        id,
        created_at: t.clone(),
        updated_at: t,
        closed_at: None,
        merged_at: None,
        checks_passed: false,
        comments: vec![],
        auto_merge_text: (None, None),
    });
    let v = pull_json(base, r, r.pulls.last().unwrap(), branches, true);
    Reply::json(201, v).header("location", &format!("{base}/repos/{}/{}/pulls/{number}", r.owner, r.name))
}

/// `PATCH .../pulls/{n}`: title, body, base and state (close / reopen).
fn update_pull(
    base: &str,
    r: &mut RepoState,
    branches: &BTreeMap<String, String>,
    n: u64,
    body: &Value,
) -> Reply {
    let Some(pl) = r.pull(n) else {
        return not_found();
    };
    // The exact wording GitHub uses for these refusals is not documented; the shape (422 Validation Failed,
    // a "custom" error on the PullRequest resource) is.
    let refuse = |field: &str, message: String| {
        Reply::json(
            422,
            validation_failed(
                json!([{"resource": "PullRequest", "field": field, "code": "custom", "message": message}]),
            ),
        )
    };
    let state = body["state"].as_str();
    if state.is_some() && pl.p.merged {
        return refuse("state", "state cannot be changed. The pull request has already been merged.".into());
    }
    if state == Some("open") && pl.p.state == "closed" {
        if !branches.contains_key(&pl.p.head_ref) {
            return refuse(
                "state",
                format!("state cannot be changed. The {} branch has been deleted.", pl.p.head_ref),
            );
        }
        if r.pulls
            .iter()
            .any(|x| x.p.state == "open" && x.p.head_ref == pl.p.head_ref && x.p.base_ref == pl.p.base_ref)
        {
            return refuse(
                "state",
                format!(
                    "state cannot be changed. There is already an open pull request from {} to {}.",
                    pl.p.head_ref, pl.p.base_ref
                ),
            );
        }
    }
    if let Some(b) = body["base"].as_str()
        && !branches.contains_key(b)
    {
        return Reply::json(
            422,
            validation_failed(json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}])),
        );
    }
    let t = now();
    let pl = r.pull_mut(n).unwrap();
    if let Some(x) = body["title"].as_str() {
        pl.p.title = x.to_string();
    }
    if let Some(x) = body["body"].as_str() {
        pl.p.body = x.to_string();
    }
    if let Some(x) = body["base"].as_str() {
        pl.p.base_ref = x.to_string();
    }
    match state {
        Some("closed") if pl.p.state == "open" => {
            pl.p.state = "closed".into();
            // GitHub turns auto-merge off when a pull request is closed.
            pl.p.auto_merge = None;
            pl.closed_at = Some(t.clone());
        }
        Some("open") if pl.p.state == "closed" => {
            pl.p.state = "open".into();
            pl.closed_at = None;
        }
        _ => {}
    }
    pl.updated_at = t;
    r.refresh();
    Reply::json(200, pull_json(base, r, r.pull(n).unwrap(), branches, true))
}

/// Merges pull `n` for real in the bare repository. Err((status, message)) as GitHub answers.
pub(super) fn merge(
    r: &mut RepoState,
    n: u64,
    method: &str,
    sha: Option<&str>,
    title: Option<String>,
    message: Option<String>,
) -> Result<String, (u16, String)> {
    r.refresh();
    let Some(pl) = r.pull(n) else {
        return Err((404, "Not Found".into()));
    };
    if pl.p.state != "open" {
        return Err((405, "Pull Request is not mergeable".into()));
    }
    if sha.is_some_and(|s| s != pl.p.head_sha) {
        return Err((409, "Head branch was modified. Review and try the merge again.".into()));
    }
    if let Some(c) = r.pending_check(pl) {
        return Err((405, format!("Required status check \"{c}\" is expected.")));
    }
    let branches = r.branches();
    let Some(base_tip) = branches.get(&pl.p.base_ref).cloned() else {
        return Err((422, "Base branch was deleted".into()));
    };
    let head_tip = pl.p.head_sha.clone();
    let not_mergeable = |_| (405, "Pull Request is not mergeable".to_string());
    let tree = git(&r.path, &["merge-tree", "--write-tree", &base_tip, &head_tip]).map_err(not_mergeable)?;
    let tree = tree.lines().next().unwrap_or_default().to_string();
    let bot_email = format!("{BOT_LOGIN}@users.noreply.github.com");
    let with_body = |t: String, b: Option<String>| match b.filter(|b| !b.is_empty()) {
        Some(b) => format!("{t}\n\n{b}"),
        None => t,
    };
    let author_of = |c: &str| -> Vec<String> {
        git(&r.path, &["log", "-1", "--format=%an%n%ae%n%ad", "--date=raw", c])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let new = match method {
        "merge" => {
            let msg = with_body(
                title
                    .unwrap_or_else(|| format!("Merge pull request #{n} from {}/{}", r.owner, pl.p.head_ref)),
                message.or(Some(pl.p.title.clone())),
            );
            let env = [("GIT_AUTHOR_NAME", BOT_LOGIN), ("GIT_AUTHOR_EMAIL", bot_email.as_str())];
            git_env(&r.path, &["commit-tree", &tree, "-p", &base_tip, "-p", &head_tip, "-m", &msg], &env)
        }
        "squash" => {
            let msg = with_body(title.unwrap_or_else(|| format!("{} (#{n})", pl.p.title)), message);
            let a = author_of(&head_tip);
            let env = [("GIT_AUTHOR_NAME", a[0].as_str()), ("GIT_AUTHOR_EMAIL", a[1].as_str())];
            git_env(&r.path, &["commit-tree", &tree, "-p", &base_tip, "-m", &msg], &env)
        }
        "rebase" => {
            let list = git(
                &r.path,
                &["rev-list", "--reverse", "--topo-order", "--no-merges", &format!("{base_tip}..{head_tip}")],
            )
            .map_err(not_mergeable)?;
            let mut cur = base_tip.clone();
            for c in list.lines() {
                let t = git(&r.path, &["merge-tree", "--write-tree", &format!("--merge-base={c}^"), &cur, c])
                    .map_err(not_mergeable)?;
                let t = t.lines().next().unwrap_or_default().to_string();
                let msg = git(&r.path, &["log", "-1", "--format=%B", c]).map_err(not_mergeable)?;
                let a = author_of(c);
                let env = [
                    ("GIT_AUTHOR_NAME", a[0].as_str()),
                    ("GIT_AUTHOR_EMAIL", a[1].as_str()),
                    ("GIT_AUTHOR_DATE", a[2].as_str()),
                ];
                cur = git_env(&r.path, &["commit-tree", &t, "-p", &cur, "-m", &msg], &env)
                    .map_err(not_mergeable)?;
            }
            Ok(cur)
        }
        other => return Err((422, format!("Invalid merge_method {other}"))),
    }
    .map_err(|e| (500, format!("stand-in merge failed: {e}")))?;
    git(&r.path, &["update-ref", &format!("refs/heads/{}", pl.p.base_ref), &new, &base_tip])
        .map_err(|e| (409, format!("Base branch was modified: {e}")))?;
    let t = now();
    let pl = r.pull_mut(n).unwrap();
    pl.p.state = "closed".into();
    pl.p.merged = true;
    pl.p.merge_commit_sha = Some(new.clone());
    pl.p.auto_merge = None;
    pl.merged_at = Some(t.clone());
    pl.closed_at = Some(t.clone());
    pl.updated_at = t;
    Ok(new)
}

fn localize(v: Value, base: &str, r: &RepoState, n: Option<u64>) -> Value {
    let mut t = v
        .to_string()
        .replace("https://api.github.com", base)
        .replace("octocat/Hello-World", &format!("{}/{}", r.owner, r.name))
        .replace("Hello-World", &r.name);
    if let Some(n) = n {
        t = t.replace("/1347", &format!("/{n}"));
    }
    serde_json::from_str(&t).expect("localized example is JSON")
}

fn small_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
        % 100_000_000
        + 1
}

pub(super) fn user(base: &str, login: &str) -> Value {
    let t = example("pull-request")["user"]
        .to_string()
        .replace("https://api.github.com", base)
        .replace("octocat", login);
    let mut v: Value = serde_json::from_str(&t).unwrap();
    let id = small_hash(login);
    v["id"] = json!(id);
    v["node_id"] = json!(format!("U_kgDO{id}"));
    v["type"] = json!(if login.ends_with("[bot]") { "Bot" } else { "User" });
    v
}

fn team(base: &str, slug: &str) -> Value {
    let mut v = example("pull-request")["requested_teams"][0].clone();
    let id = small_hash(slug);
    v["id"] = json!(id);
    v["slug"] = json!(slug);
    v["name"] = json!(slug);
    v["url"] = json!(format!("{base}/teams/{id}"));
    v["html_url"] = json!(format!("https://github.com/orgs/org/teams/{slug}"));
    v["parent"] = Value::Null;
    v
}

pub(super) fn label_json(base: &str, r: &RepoState, name: &str) -> Value {
    let id = r.labels.get(name).copied().unwrap_or(0);
    json!({"id": id, "node_id": format!("LA_kwDO{id}"), "url": format!("{base}/repos/{}/{}/labels/{}", r.owner, r.name, name),
           "name": name, "description": "", "color": "ededed", "default": false})
}

pub(super) fn association(r: &RepoState, login: &str) -> &'static str {
    if login == r.owner {
        "OWNER"
    } else if r.collaborators.contains(login) {
        "COLLABORATOR"
    } else {
        "NONE"
    }
}

fn comment_json(base: &str, r: &RepoState, n: u64, c: &super::Comment) -> Value {
    let mut v = localize(example("issue-comment"), base, r, Some(n));
    v["id"] = json!(c.id);
    v["node_id"] = json!(format!("IC_kwDO{}", c.id));
    v["body"] = json!(c.body);
    v["user"] = user(base, &c.author);
    v["created_at"] = json!(c.created_at);
    v["updated_at"] = json!(c.updated_at);
    v["reactions"] = reactions_rollup(
        &format!("{base}/repos/{}/{}/issues/comments/{}/reactions", r.owner, r.name, c.id),
        &c.reactions,
    );
    v["url"] = json!(format!("{base}/repos/{}/{}/issues/comments/{}", r.owner, r.name, c.id));
    v["html_url"] =
        json!(format!("https://github.com/{}/{}/pull/{n}#issuecomment-{}", r.owner, r.name, c.id));
    v["issue_url"] = json!(format!("{base}/repos/{}/{}/issues/{n}", r.owner, r.name));
    v["author_association"] = json!(association(r, &c.author));
    v["performed_via_github_app"] = Value::Null;
    v
}

/// The `reactions` summary GitHub puts on issues and comments.
pub(super) fn reactions_rollup(url: &str, rs: &[super::Reaction]) -> Value {
    let mut v = json!({"url": url, "total_count": rs.len()});
    for k in ["+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket"] {
        v[k] = json!(rs.iter().filter(|x| x.content == k).count());
    }
    v
}

fn reaction_json(base: &str, x: &super::Reaction) -> Value {
    let mut v = example("reaction");
    v["id"] = json!(x.id);
    v["node_id"] = json!(format!("REA_lATO{}", x.id));
    v["user"] = user(base, &x.login);
    v["content"] = json!(x.content);
    v["created_at"] = json!(x.created_at);
    v
}

fn repo_json(base: &str, r: &RepoState) -> Value {
    let mut v = localize(example("pull-request")["head"]["repo"].clone(), base, r, None);
    v["id"] = json!(r.id);
    v["node_id"] = json!(format!("R_kgDO{}", r.id));
    v["name"] = json!(r.name);
    v["full_name"] = json!(format!("{}/{}", r.owner, r.name));
    v["owner"] = user(base, &r.owner);
    v["default_branch"] = json!("main");
    v
}

fn pull_json(
    base: &str,
    r: &RepoState,
    pl: &PullState,
    branches: &BTreeMap<String, String>,
    full: bool,
) -> Value {
    let p = &pl.p;
    let n = p.number;
    let mut v = localize(example("pull-request"), base, r, Some(n));
    v["id"] = json!(pl.id);
    v["node_id"] = json!(p.node_id);
    v["number"] = json!(n);
    v["state"] = json!(p.state);
    v["locked"] = json!(false);
    v["active_lock_reason"] = Value::Null;
    v["title"] = json!(p.title);
    v["body"] = if p.body.is_empty() { Value::Null } else { json!(p.body) };
    v["user"] = user(base, &p.author);
    v["labels"] = Value::Array(p.labels.iter().map(|l| label_json(base, r, l)).collect());
    v["milestone"] = Value::Null;
    v["assignee"] = Value::Null;
    v["assignees"] = json!([]);
    v["requested_reviewers"] = Value::Array(p.requested_reviewers.iter().map(|u| user(base, u)).collect());
    v["requested_teams"] = Value::Array(p.requested_teams.iter().map(|t| team(base, t)).collect());
    v["created_at"] = json!(pl.created_at);
    v["updated_at"] = json!(pl.updated_at);
    v["closed_at"] = json!(pl.closed_at);
    v["merged_at"] = json!(pl.merged_at);
    v["merge_commit_sha"] = json!(p.merge_commit_sha);
    v["statuses_url"] = json!(format!("{base}/repos/{}/{}/statuses/{}", r.owner, r.name, p.head_sha));
    let side = |v: &mut Value, rf: &str, sha: &str| {
        v["label"] = json!(format!("{}:{rf}", r.owner));
        v["ref"] = json!(rf);
        v["sha"] = json!(sha);
        v["user"] = user(base, &r.owner);
        v["repo"] = repo_json(base, r);
    };
    side(&mut v["head"], &p.head_ref, &p.head_sha);
    let base_sha = branches.get(&p.base_ref).cloned().unwrap_or_default();
    side(&mut v["base"], &p.base_ref, &base_sha);
    v["auto_merge"] = match &p.auto_merge {
        Some(m) => json!({"enabled_by": user(base, BOT_LOGIN), "merge_method": m,
                          "commit_title": pl.auto_merge_text.0.clone().unwrap_or_default(),
                          "commit_message": pl.auto_merge_text.1.clone().unwrap_or_default()}),
        None => Value::Null,
    };
    v["author_association"] = json!(association(r, &p.author));
    v["draft"] = json!(false);
    v["merged"] = json!(p.merged);
    v["merged_by"] = if p.merged { user(base, BOT_LOGIN) } else { Value::Null };
    v["comments"] = json!(pl.comments.len());
    v["review_comments"] = json!(0);
    v["maintainer_can_modify"] = json!(false);
    let (mut commits, mut adds, mut dels, mut files) = (1u64, 0u64, 0u64, 0u64);
    let (mut mergeable, mut state) = (Value::Null, "unknown");
    if full && p.state == "open" && !base_sha.is_empty() {
        let range = format!("{base_sha}...{}", p.head_sha);
        commits = git(&r.path, &["rev-list", "--count", &format!("{base_sha}..{}", p.head_sha)])
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(1);
        for l in git(&r.path, &["diff", "--numstat", &range]).unwrap_or_default().lines() {
            let mut it = l.split('\t');
            adds += it.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            dels += it.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            files += 1;
        }
        let clean = git(&r.path, &["merge-tree", "--write-tree", &base_sha, &p.head_sha]).is_ok();
        mergeable = json!(clean);
        state = if !clean {
            "dirty"
        } else if r.pending_check(pl).is_some() {
            "blocked"
        } else {
            "clean"
        };
    }
    v["mergeable"] = mergeable.clone();
    v["rebaseable"] = mergeable;
    v["mergeable_state"] = json!(state);
    v["commits"] = json!(commits);
    v["additions"] = json!(adds);
    v["deletions"] = json!(dels);
    v["changed_files"] = json!(files);
    v
}

fn branch_json(base: &str, r: &RepoState, branch: &str, sha: &str) -> Value {
    let mut v = localize(example("branch-with-protection"), base, r, None);
    let (o, name) = (&r.owner, &r.name);
    v["name"] = json!(branch);
    let c = &mut v["commit"];
    let info = git(
        &r.path,
        &["log", "-1", "--format=%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%T%x00%P%x00%B", sha],
    )
    .unwrap_or_default();
    let f: Vec<&str> = info.splitn(9, '\0').collect();
    let at = |i: usize| f.get(i).copied().unwrap_or_default();
    c["sha"] = json!(sha);
    c["node_id"] = json!(format!("C_kwDO{}", &sha[..12.min(sha.len())]));
    c["url"] = json!(format!("{base}/repos/{o}/{name}/commits/{sha}"));
    c["html_url"] = json!(format!("https://github.com/{o}/{name}/commit/{sha}"));
    c["comments_url"] = json!(format!("{base}/repos/{o}/{name}/commits/{sha}/comments"));
    c["commit"]["author"] = json!({"name": at(0), "email": at(1), "date": at(2)});
    c["commit"]["committer"] = json!({"name": at(3), "email": at(4), "date": at(5)});
    c["commit"]["message"] = json!(at(8).trim_end());
    c["commit"]["tree"] =
        json!({"sha": at(6), "url": format!("{base}/repos/{o}/{name}/git/trees/{}", at(6))});
    c["commit"]["url"] = json!(format!("{base}/repos/{o}/{name}/git/commits/{sha}"));
    c["author"] = Value::Null;
    c["committer"] = Value::Null;
    c["parents"] = Value::Array(
        at(7).split_whitespace().map(|p| json!({"sha": p, "url": format!("{base}/repos/{o}/{name}/commits/{p}"), "html_url": format!("https://github.com/{o}/{name}/commit/{p}")})).collect(),
    );
    v["_links"] = json!({"html": format!("https://github.com/{o}/{name}/tree/{branch}"), "self": format!("{base}/repos/{o}/{name}/branches/{branch}")});
    let checks = r.protection.get(branch);
    v["protected"] = json!(checks.is_some());
    let purl = format!("{base}/repos/{o}/{name}/branches/{branch}/protection");
    v["protection"] = match checks {
        Some(cs) => json!({"enabled": true, "required_status_checks": {
            "url": format!("{purl}/required_status_checks"), "enforcement_level": "non_admins", "contexts": cs,
            "checks": cs.iter().map(|c| json!({"context": c, "app_id": null})).collect::<Vec<_>>(),
            "contexts_url": format!("{purl}/required_status_checks/contexts"), "strict": false}}),
        None => {
            json!({"enabled": false, "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []}})
        }
    };
    v["protection_url"] = json!(purl);
    if let Some(o) = v.as_object_mut() {
        o.remove("pattern");
        o.remove("required_approving_review_count");
    }
    v
}
