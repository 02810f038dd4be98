//! `POST /webhooks/github`: signature first (over the raw body, constant time), then replay check,
//! then parse into a `ForgeEvent` and act. Forged or unsigned deliveries get 401, oversized ones 413
//! (the body limit layer), events we do not act on 202 and a log line.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use octocrab::models::webhook_events::payload::{
    InstallationRepositoriesWebhookEventAction, InstallationWebhookEventAction,
    IssueCommentWebhookEventAction, PullRequestWebhookEventAction,
};
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload, verify_signature};
use secrecy::{ExposeSecret, SecretString};

use crate::adapters::github::{GitHubApp, RepoId};
use crate::domain::forge_event::{Action, Comment, ForgeEvent};
use crate::event::Event;

/// What the GitHub webhook endpoint needs.
pub struct Hook {
    pub secret: SecretString,
    pub app: Arc<GitHubApp>,
    /// The engine's queue, for comment commands.
    queue: tokio::sync::mpsc::Sender<Event>,
    seen: Mutex<Recent>,
}

impl Hook {
    pub fn new(secret: SecretString, app: Arc<GitHubApp>, queue: tokio::sync::mpsc::Sender<Event>) -> Hook {
        Hook { secret, app, queue, seen: Mutex::new(Recent::new(4096)) }
    }
}

/// The last N delivery ids, to ignore GitHub's redeliveries of what we handled.
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
    cap: usize,
}

impl Recent {
    fn new(cap: usize) -> Recent {
        Recent { order: VecDeque::new(), set: HashSet::new(), cap }
    }
    /// True when `id` was seen before; remembers it otherwise.
    fn seen(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return true;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        false
    }
}

/// The events parsed and acted on; the App subscribes to these.
const HANDLED: [&str; 5] =
    ["ping", "installation", "installation_repositories", "pull_request", "issue_comment"];

pub async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(signature) = header("x-hub-signature-256") else {
        tracing::warn!("GitHub webhook without X-Hub-Signature-256 refused");
        return (
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256: set the webhook secret in the GitHub App settings\n".into(),
        );
    };
    if let Err(e) = verify_signature(signature, hook.secret.expose_secret().as_bytes(), &body) {
        tracing::warn!(error = %e, "GitHub webhook with a bad signature refused");
        return (
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the body: is the webhook secret the same on both sides?\n"
                .into(),
        );
    }
    let delivery = header("x-github-delivery").unwrap_or("").to_string();
    let Some(event_name) = header("x-github-event") else {
        return (StatusCode::BAD_REQUEST, "missing X-GitHub-Event\n".into());
    };
    let span = tracing::info_span!("github_webhook", delivery = %delivery, event = %event_name);
    let _enter = span.enter();
    if !delivery.is_empty() && hook.seen.lock().expect("seen lock").seen(&delivery) {
        tracing::info!("redelivery of a delivery already handled; ignored");
        return (StatusCode::OK, format!("delivery {delivery} was handled already\n"));
    }
    // Events we never act on are not parsed at all (their payload types are the least stable part of
    // octocrab's webhook models).
    if !HANDLED.contains(&event_name) {
        tracing::info!("not an event metricops acts on; acknowledged");
        return (StatusCode::ACCEPTED, format!("{event_name} is not an event metricops acts on\n"));
    }
    let event = match WebhookEvent::try_from_header_and_body(event_name, &body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "GitHub webhook body does not parse");
            return (StatusCode::BAD_REQUEST, format!("not a valid {event_name} payload: {e}\n"));
        }
    };
    let event = to_forge_event(event_name, event);
    match event.action() {
        Action::Acknowledge(why) => {
            tracing::info!(why = %why, "GitHub event acknowledged");
            let status =
                if matches!(event, ForgeEvent::Ping) { StatusCode::OK } else { StatusCode::ACCEPTED };
            (status, format!("{why}\n"))
        }
        Action::Remember { installation, repos } => {
            for r in repos.iter().filter_map(|r| parse_full_name(r)) {
                if let Err(e) = hook.app.installed(&r, installation) {
                    tracing::warn!(error = %e, repo = %r, "could not record the installation");
                }
            }
            tracing::info!(installation, repos = ?repos, "installation recorded");
            (StatusCode::OK, format!("installation {installation}: {} repos recorded\n", repos.len()))
        }
        Action::Forget { installation, repos } => {
            match &repos {
                Some(list) => list
                    .iter()
                    .filter_map(|r| parse_full_name(r))
                    .for_each(|r| hook.app.forget(Some(&r), installation)),
                None => hook.app.forget(None, installation),
            }
            tracing::info!(installation, repos = ?repos, "installation forgotten");
            (StatusCode::OK, format!("installation {installation}: forgotten\n"))
        }
        Action::Obey(comment) => match hook.queue.try_send(Event::Comment(comment)) {
            Ok(()) => {
                tracing::info!("comment with /metricops commands accepted");
                (StatusCode::OK, "command queued\n".into())
            }
            Err(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "busy: the engine queue is full, redeliver later\n".into())
            }
        },
        Action::DeleteBranch { repo, branch, merged } => {
            let Some(id) = parse_full_name(&repo) else {
                return (StatusCode::BAD_REQUEST, format!("repository {repo:?} is not owner/name\n"));
            };
            let text = format!(
                "revert PR closed ({}); deleting {branch}\n",
                if merged { "merged" } else { "not merged" }
            );
            match hook.queue.try_send(Event::RevertClosed { repo: id, branch, merged }) {
                Ok(()) => (StatusCode::OK, text),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: the engine queue is full, redeliver later\n".into(),
                ),
            }
        }
    }
}

fn parse_full_name(s: &str) -> Option<RepoId> {
    let (owner, name) = s.split_once('/')?;
    Some(RepoId { owner: owner.to_string(), name: name.to_string() })
}

/// The wire event, in the bot's terms.
pub fn to_forge_event(event_name: &str, e: WebhookEvent) -> ForgeEvent {
    let installation = e.installation.as_ref().map(|i| i.id().0).unwrap_or(0);
    let repo = e.repository.as_ref().and_then(|r| r.full_name.clone()).unwrap_or_default();
    let other = |action: Option<String>| ForgeEvent::Other { event: event_name.to_string(), action };
    match e.specific {
        WebhookEventPayload::Ping(_) => ForgeEvent::Ping,
        WebhookEventPayload::Installation(p) => {
            let repos = p.repositories.unwrap_or_default().into_iter().map(|r| r.full_name).collect();
            match p.action {
                InstallationWebhookEventAction::Created
                | InstallationWebhookEventAction::NewPermissionsAccepted
                | InstallationWebhookEventAction::Unsuspend => ForgeEvent::Installed { installation, repos },
                InstallationWebhookEventAction::Deleted | InstallationWebhookEventAction::Suspend => {
                    ForgeEvent::Uninstalled { installation }
                }
                _ => other(None),
            }
        }
        WebhookEventPayload::InstallationRepositories(p) => match p.action {
            InstallationRepositoriesWebhookEventAction::Added => ForgeEvent::ReposAdded {
                installation,
                repos: p.repositories_added.into_iter().map(|r| r.full_name).collect(),
            },
            InstallationRepositoriesWebhookEventAction::Removed => ForgeEvent::ReposRemoved {
                installation,
                repos: p.repositories_removed.into_iter().map(|r| r.full_name).collect(),
            },
            _ => other(None),
        },
        WebhookEventPayload::PullRequest(p) => match p.action {
            PullRequestWebhookEventAction::Closed => ForgeEvent::PullClosed {
                repo,
                number: p.number,
                head_ref: p.pull_request.head.ref_field.clone(),
                head_repo: p.pull_request.head.repo.as_ref().and_then(|r| r.full_name.clone()),
                merged: p.pull_request.merged_at.is_some() || p.pull_request.merged == Some(true),
            },
            a => other(serde_json::to_value(&a).ok().and_then(|v| v.as_str().map(str::to_string))),
        },
        WebhookEventPayload::IssueComment(p) => match p.action {
            IssueCommentWebhookEventAction::Created => ForgeEvent::Comment(Comment {
                repo,
                number: p.issue.number,
                on_pull: p.issue.pull_request.is_some(),
                id: p.comment.id.0,
                author_is_bot: p.comment.user.r#type == "Bot" || p.comment.user.login.ends_with("[bot]"),
                author: p.comment.user.login.clone(),
                body: p.comment.body.clone().unwrap_or_default(),
                url: p.comment.html_url.to_string(),
            }),
            a => other(serde_json::to_value(&a).ok().and_then(|v| v.as_str().map(str::to_string))),
        },
        _ => other(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, file: &str) -> ForgeEvent {
        let body = std::fs::read(format!("{}/fixtures/github/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        to_forge_event(name, WebhookEvent::try_from_header_and_body(name, &body).unwrap())
    }

    #[test]
    fn real_deliveries_become_forge_events() {
        assert_eq!(
            event("installation", "octokit.installation.created.payload.json"),
            ForgeEvent::Installed { installation: 957387, repos: vec!["Codertocat/Hello-World".into()] }
        );
        assert_eq!(
            event("installation_repositories", "octokit.installation_repositories.added.payload.json"),
            ForgeEvent::ReposAdded { installation: 957387, repos: vec!["Codertocat/Space".into()] }
        );
        assert_eq!(
            event("pull_request", "octokit.pull_request.closed.unmerged.payload.json"),
            ForgeEvent::PullClosed {
                repo: "Codertocat/Hello-World".into(),
                number: 2,
                head_ref: "changes".into(),
                head_repo: Some("Codertocat/Hello-World".into()),
                merged: false
            }
        );
        assert!(matches!(
            event("pull_request", "bors.pull_request.closed.merged.json"),
            ForgeEvent::PullClosed { number: 5, merged: true, .. }
        ));
        assert_eq!(
            event("issue_comment", "bors.issue_comment.created.on-pull-request.json"),
            ForgeEvent::Comment(Comment {
                repo: "Kobzol/bors-kindergarten".into(),
                number: 5,
                on_pull: true,
                id: 1_420_770_715,
                author: "Kobzol".into(),
                author_is_bot: false,
                body: "hello bors".into(),
                url: "https://github.com/Kobzol/bors-kindergarten/pull/5#issuecomment-1420770715".into()
            })
        );
        assert!(
            matches!(event("pull_request", "octokit.pull_request.opened.payload.json"), ForgeEvent::Other { action: Some(a), .. } if a == "opened")
        );
    }

    #[test]
    fn recent_remembers_the_last_n_ids() {
        let mut r = Recent::new(2);
        assert!(!r.seen("a"));
        assert!(r.seen("a"));
        assert!(!r.seen("b"));
        assert!(!r.seen("c"));
        assert!(!r.seen("a"), "a fell out of the window");
    }
}
