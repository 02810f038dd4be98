//! `GET /ui` and `GET /api/history`: the rollback history, read-only — a server-rendered page (no
//! script, no outside asset) and the same as JSON, paged. Only GET and HEAD are answered (405
//! otherwise); with `server.ui_auth`, a bearer token (or basic auth) is asked for first. With a
//! forge, the revert PRs' states are GitHub's, from a cache listed again at most every
//! `history.forge_refresh` (in the background: a page never waits on GitHub but the first).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::{Config, WebhookAuth};
use crate::domain::history::{Asked, Filter, link_to, page, render_page, timelines};
use crate::history::{ForgeAsked, LiveCache, RevertCache};
use crate::metrics::Metrics;

/// Rows on a page unless `limit` says otherwise, and the most it may say.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

struct Ui {
    config: Arc<Config>,
    auth: WebhookAuth,
    cache: RevertCache,
    live: Arc<LiveCache>,
    metrics: Arc<Metrics>,
}

/// The routes, behind their own credentials check.
pub(super) fn routes(
    config: Arc<Config>,
    auth: WebhookAuth,
    metrics: Arc<Metrics>,
    forge: Option<Arc<dyn crate::forge::Forge>>,
) -> Router {
    if matches!(auth, WebhookAuth::Open) {
        tracing::info!(
            "server.ui_auth is not set: /ui and /api/history are readable by anyone who can reach them"
        );
    }
    let live = Arc::new(LiveCache::new(forge, config.history.forge_refresh()));
    let ui = Arc::new(Ui { config, auth, cache: RevertCache::default(), live, metrics });
    Router::new()
        .route("/ui", get(html))
        .route("/api/history", get(json))
        .route_layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            |State(ui): State<Arc<Ui>>, req: axum::extract::Request, next: axum::middleware::Next| async move {
                if super::authorised(&ui.auth, req.headers()) {
                    return next.run(req).await;
                }
                ui.metrics.error("ui_unauthorised");
                let challenge = match ui.auth {
                    WebhookAuth::Basic { .. } => "Basic realm=\"metricops\"",
                    _ => "Bearer realm=\"metricops\"",
                };
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, challenge)],
                    "missing or wrong credentials: send the token configured in server.ui_auth\n",
                )
                    .into_response()
            },
        ))
        .with_state(ui)
}

/// What the query string asks, or a 400 naming what is wrong.
fn asked(q: &HashMap<String, String>) -> Result<(Asked, Filter, Option<String>), (StatusCode, String)> {
    let bad = |text: String| (StatusCode::BAD_REQUEST, text);
    let workload = q.get("workload").map(|w| w.trim().to_string()).filter(|w| !w.is_empty());
    let since_text = q.get("since").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let since = match &since_text {
        Some(s) => match crate::domain::schedule::parse_duration(s) {
            Some(d) => Some(chrono::Utc::now() - d),
            None => {
                return Err(bad(format!("since={s:?} is not a duration: write it like 30d, 12h or 90m\n")));
            }
        },
        None => None,
    };
    let limit = match q.get("limit").map(|l| l.trim()).filter(|l| !l.is_empty()) {
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
            _ => return Err(bad(format!("limit={l:?}: give a number from 1 to {MAX_PAGE}\n"))),
        },
        None => None,
    };
    let before = q.get("before").filter(|b| !b.is_empty()).cloned();
    Ok((Asked { workload: workload.clone(), since: since_text, limit }, Filter { since, workload }, before))
}

/// The page asked for, read on the blocking pool (git and the log are files), with the revert PRs'
/// states as the forge last listed them, and what the forge was asked.
async fn read(
    ui: &Arc<Ui>,
    filter: Filter,
    before: Option<String>,
    limit: usize,
) -> Result<(crate::domain::history::Page, Vec<ForgeAsked>), Response> {
    let (live, asked) = ui.live.current(&ui.config).await;
    let ui = ui.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut rows = crate::history::gather(&ui.config, &ui.cache)?;
        crate::domain::history::merge_live(&mut rows, &live);
        anyhow::Ok(page(&rows, &filter, before.as_deref(), limit))
    })
    .await;
    match r {
        Ok(Ok(p)) => Ok((p, asked)),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "cannot read the history");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "cannot read the history; the log says why\n")
                .into_response())
        }
        Err(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, "reading the history stopped\n").into_response()),
    }
}

/// The headers of every answer: nothing cached, no script, nothing from elsewhere.
const SAFE: [(header::HeaderName, &str); 3] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
];

async fn html(State(ui): State<Arc<Ui>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (asked, filter, before) = match asked(&q) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let (p, forge) = match read(&ui, filter, before.clone(), asked.limit.unwrap_or(PAGE)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let notices: Vec<String> = forge.iter().map(ForgeAsked::line).collect();
    match render_page(&p, &asked, before.is_some(), &notices, chrono::Utc::now()) {
        Ok(body) => {
            (StatusCode::OK, SAFE, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot render the history page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the history page; the log says why\n")
                .into_response()
        }
    }
}

async fn json(State(ui): State<Arc<Ui>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (asked, filter, before) = match asked(&q) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let (p, forge) = match read(&ui, filter, before, asked.limit.unwrap_or(PAGE)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = serde_json::json!({
        "total": p.total,
        "rows": p.rows,
        "next": p.next,
        "next_url": p.next.as_deref().map(|n| link_to("/api/history", &asked, Some(n))),
        "timelines": timelines(&p.rows),
        "forge": forge,
    });
    (StatusCode::OK, SAFE, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
