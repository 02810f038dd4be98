//! `POST /graphql`: only the `enablePullRequestAutoMerge` mutation, arguments given inline or as variables.

use serde_json::{Value, json};

use super::{Auth, Reply, State, error, now};

fn gql_error(kind: &str, message: &str) -> Reply {
    Reply::json(
        200,
        json!({"data": null, "errors": [{"type": kind, "path": ["enablePullRequestAutoMerge"], "message": message}]}),
    )
}

/// The value of argument `field`: inline (`field: "x"`, `field: ENUM`, `field: $var`), else from the
/// variables (top level or inside an input object variable).
fn arg(query: &str, vars: &Value, field: &str) -> Option<Value> {
    let b = query.as_bytes();
    let mut from = 0;
    while let Some(i) = query[from..].find(field).map(|i| i + from) {
        from = i + field.len();
        let before = if i == 0 { b' ' } else { b[i - 1] };
        if before.is_ascii_alphanumeric() || before == b'$' || before == b'_' {
            continue;
        }
        let rest = query[from..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(var) = rest.strip_prefix('$') {
            let name: String = var.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            return vars.get(&name).cloned();
        }
        if let Some(s) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut esc = false;
            for c in s.chars() {
                match (esc, c) {
                    (true, c) => {
                        out.push(c);
                        esc = false;
                    }
                    (false, '\\') => esc = true,
                    (false, '"') => return Some(json!(out)),
                    (false, c) => out.push(c),
                }
            }
            return None;
        }
        let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        return (!word.is_empty()).then(|| json!(word));
    }
    if let Some(v) = vars.get(field) {
        return Some(v.clone());
    }
    vars.as_object()?.values().find_map(|v| v.get(field).cloned())
}

pub(super) fn serve(s: &mut State, auth: &Auth, method: &str, body: &[u8]) -> Reply {
    if method != "POST" {
        s.violations.push(format!("GitHub has no {method} /graphql (POST only)"));
        return Reply::json(404, error("Not Found"));
    }
    let inst = match auth {
        Auth::Token(i) => *i,
        Auth::Jwt => return Reply::json(401, error("A JSON web token could not be decoded")),
        Auth::Bad => return Reply::json(401, error("Bad credentials")),
        Auth::None => {
            return Reply::json(401, error("This endpoint requires you to be authenticated."));
        }
    };
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            s.violations.push(format!("POST /graphql: body is not JSON: {e}"));
            return Reply::json(400, error("Problems parsing JSON"));
        }
    };
    let Some(query) = v["query"].as_str() else {
        s.violations.push("POST /graphql: no `query` string".into());
        return Reply::json(
            200,
            json!({"errors": [{"message": "A query attribute must be specified and must be a string."}]}),
        );
    };
    let vars = &v["variables"];
    if !query.contains("enablePullRequestAutoMerge") || !query.trim_start().starts_with("mutation") {
        s.violations.push(format!(
            "stand-in does not implement GraphQL {}",
            query.chars().take(120).collect::<String>()
        ));
        return Reply::json(
            200,
            json!({"data": null, "errors": [{"message": "stand-in does not implement this GraphQL operation"}]}),
        );
    }
    let text = |f: &str| arg(query, vars, f).and_then(|x| x.as_str().map(str::to_string));
    let Some(pr_id) = text("pullRequestId") else {
        s.violations.push("GraphQL enablePullRequestAutoMerge without pullRequestId".into());
        return Reply::json(
            200,
            json!({"errors": [{"message": "Argument 'pullRequestId' on InputObject 'EnablePullRequestAutoMergeInput' is required. Expected type ID!"}]}),
        );
    };
    let method = text("mergeMethod").unwrap_or_else(|| "MERGE".into());
    if !["MERGE", "SQUASH", "REBASE"].contains(&method.as_str()) {
        s.violations.push(format!(
            "GraphQL enablePullRequestAutoMerge: mergeMethod {method} is not MERGE|SQUASH|REBASE"
        ));
        return Reply::json(
            200,
            json!({"errors": [{"message": format!("Argument 'mergeMethod' on InputObject 'EnablePullRequestAutoMergeInput' has an invalid value ({method}). Expected type 'PullRequestMergeMethod'.")}]}),
        );
    }
    let expected = text("expectedHeadOid");
    let (headline, body_text) = (text("commitHeadline"), text("commitBody"));
    let found = s
        .repos
        .values_mut()
        .find(|r| r.installation == Some(inst) && r.pulls.iter().any(|p| p.p.node_id == pr_id));
    let Some(r) = found else {
        return gql_error(
            "NOT_FOUND",
            &format!("Could not resolve to a node with the global id of '{pr_id}'"),
        );
    };
    r.refresh();
    if !r.allow_auto_merge {
        // GitHub's answer when the repository setting "Allow auto-merge" is off (its default).
        return gql_error("UNPROCESSABLE", "Pull request Auto merge is not allowed for this repository");
    }
    let pending = {
        let p = r.pulls.iter().find(|p| p.p.node_id == pr_id).unwrap();
        r.pending_check(p)
    };
    let p = r.pulls.iter_mut().find(|p| p.p.node_id == pr_id).unwrap();
    if p.p.merged {
        return gql_error("UNPROCESSABLE", "Pull request is already merged");
    }
    if p.p.state != "open" {
        return gql_error("UNPROCESSABLE", "Pull request is closed");
    }
    if expected.as_ref().is_some_and(|e| *e != p.p.head_sha) {
        return gql_error("UNPROCESSABLE", "Head branch was modified. Review and try the merge again.");
    }
    if pending.is_none() {
        return gql_error("UNPROCESSABLE", "Pull request is in clean status");
    }
    p.p.auto_merge = Some(method.to_ascii_lowercase());
    p.auto_merge_text = (headline, body_text);
    p.updated_at = now();
    Reply::json(
        200,
        json!({"data": {"enablePullRequestAutoMerge": {"pullRequest": {"number": p.p.number, "autoMergeRequest": {"enabledAt": now()}}}}}),
    )
}
