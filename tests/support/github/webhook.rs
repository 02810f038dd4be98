//! Webhook deliveries the App would receive, built from a real delivery
//! (`fixtures/github/bors.issue_comment.created.on-pull-request.json`) patched with state.

use serde_json::{Value, json};

use super::api::{association, label_json, reactions_rollup, user};
use super::{RepoState, fixture};

/// The `issue_comment` payload for comment `id` (on a pull request) with `action`; `from` = the old body
/// for "edited". URLs point at the stand-in, as a GitHub Enterprise Server delivery points at its API.
pub(super) fn issue_comment(
    base: &str,
    r: &RepoState,
    id: u64,
    sender: &str,
    action: &str,
    from: Option<&str>,
) -> Value {
    let (n, c) = r.comment(id).expect("the comment exists");
    let pl = r.pull(n).expect("the pull exists");
    let (o, name) = (&r.owner, &r.name);
    let text = fixture("bors.issue_comment.created.on-pull-request.json")
        .replace("https://api.github.com", base)
        .replace("Kobzol/bors-kindergarten", &format!("{o}/{name}"))
        .replace("bors-kindergarten", name);
    let mut v: Value = serde_json::from_str(&text).expect("the fixture is JSON");
    v["action"] = json!(action);
    if let Some(old) = from {
        v["changes"] = json!({"body": {"from": old}});
    }

    let i = &mut v["issue"];
    let p = &pl.p;
    i["url"] = json!(format!("{base}/repos/{o}/{name}/issues/{n}"));
    i["labels_url"] = json!(format!("{base}/repos/{o}/{name}/issues/{n}/labels{{/name}}"));
    i["comments_url"] = json!(format!("{base}/repos/{o}/{name}/issues/{n}/comments"));
    i["events_url"] = json!(format!("{base}/repos/{o}/{name}/issues/{n}/events"));
    i["timeline_url"] = json!(format!("{base}/repos/{o}/{name}/issues/{n}/timeline"));
    i["html_url"] = json!(format!("https://github.com/{o}/{name}/pull/{n}"));
    i["id"] = json!(pl.id);
    i["node_id"] = json!(p.node_id);
    i["number"] = json!(n);
    i["title"] = json!(p.title);
    i["user"] = user(base, &p.author);
    i["labels"] = Value::Array(p.labels.iter().map(|l| label_json(base, r, l)).collect());
    i["state"] = json!(p.state);
    i["state_reason"] = if p.state == "closed" {
        json!(if p.merged { "completed" } else { "not_planned" })
    } else {
        Value::Null
    };
    i["comments"] = json!(pl.comments.len());
    i["created_at"] = json!(pl.created_at);
    i["updated_at"] = json!(pl.updated_at);
    i["closed_at"] = json!(pl.closed_at);
    i["author_association"] = json!(association(r, &p.author));
    i["body"] = if p.body.is_empty() { Value::Null } else { json!(p.body) };
    i["pull_request"] = json!({
        "url": format!("{base}/repos/{o}/{name}/pulls/{n}"),
        "html_url": format!("https://github.com/{o}/{name}/pull/{n}"),
        "diff_url": format!("https://github.com/{o}/{name}/pull/{n}.diff"),
        "patch_url": format!("https://github.com/{o}/{name}/pull/{n}.patch"),
        "merged_at": pl.merged_at,
    });
    i["reactions"] = reactions_rollup(&format!("{base}/repos/{o}/{name}/issues/{n}/reactions"), &[]);

    let k = &mut v["comment"];
    k["url"] = json!(format!("{base}/repos/{o}/{name}/issues/comments/{id}"));
    k["html_url"] = json!(format!("https://github.com/{o}/{name}/pull/{n}#issuecomment-{id}"));
    k["issue_url"] = json!(format!("{base}/repos/{o}/{name}/issues/{n}"));
    k["id"] = json!(id);
    k["node_id"] = json!(format!("IC_kwDO{id}"));
    k["user"] = user(base, &c.author);
    k["created_at"] = json!(c.created_at);
    k["updated_at"] = json!(c.updated_at);
    k["author_association"] = json!(association(r, &c.author));
    k["body"] = json!(c.body);
    k["reactions"] =
        reactions_rollup(&format!("{base}/repos/{o}/{name}/issues/comments/{id}/reactions"), &c.reactions);

    let repo = &mut v["repository"];
    repo["id"] = json!(r.id);
    repo["node_id"] = json!(format!("R_kgDO{}", r.id));
    repo["name"] = json!(name);
    repo["full_name"] = json!(format!("{o}/{name}"));
    repo["owner"] = user(base, o);
    repo["html_url"] = json!(format!("https://github.com/{o}/{name}"));
    // public, matching what GET .../collaborators/{username}/permission answers for strangers
    repo["private"] = json!(false);
    repo["visibility"] = json!("public");
    repo["default_branch"] = json!("main");
    repo["open_issues_count"] = json!(r.pulls.iter().filter(|x| x.p.state == "open").count());
    repo["open_issues"] = repo["open_issues_count"].clone();

    v["sender"] = user(base, sender);
    match r.installation {
        Some(inst) => {
            v["installation"] =
                json!({"id": inst, "node_id": format!("MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u{inst}")})
        }
        None => {
            v.as_object_mut().unwrap().remove("installation");
        }
    }
    v
}
