//! `metricops serve`: one HTTP listener (axum) in front of the engine. Handlers verify, parse and
//! enqueue; the engine works on a bounded queue on its own thread, and a full queue answers 503 so
//! the sender retries (nothing is dropped silently).

pub mod github;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::adapters::github::GitHubApp;
use crate::config::Config;
use crate::pipeline::Engine;

/// Alertmanager bodies waiting for the engine.
const QUEUE: usize = 256;

struct Alerts {
    queue: SyncSender<String>,
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Binds `listen`, starts the engine thread and serves until stopped. Call inside the runtime.
pub async fn start(config: Arc<Config>, listen: &str) -> anyhow::Result<Running> {
    let handle = tokio::runtime::Handle::current();
    let app = match &config.github {
        Some(g) => Some(Arc::new(GitHubApp::new(&g.app_settings()?)?)),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    {
        let (config, app, handle) = (config.clone(), app.clone(), handle.clone());
        std::thread::Builder::new().name("metricops-engine".into()).spawn(move || work(config, app, handle, rx)).context("starting the engine thread")?;
    }
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/webhooks/alertmanager", post(alertmanager).with_state(Arc::new(Alerts { queue: tx })));
    if let (Some(g), Some(app)) = (&config.github, &app) {
        match g.webhook_secret()? {
            Some(secret) => {
                let hook = Arc::new(github::Hook::new(secret, app.clone()));
                router = router.route("/webhooks/github", post(github::receive).with_state(hook).layer(DefaultBodyLimit::max(g.webhook_max_bytes)));
            }
            None => tracing::warn!("github.webhook_secret_file is not set: POST /webhooks/github is off"),
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        if let Err(e) = r.await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    tracing::info!(%addr, "listening");
    Ok(Running { addr, shutdown: Some(stop_tx), task: Some(task) })
}

/// `metricops serve`: runs until Ctrl-C.
pub fn run(config_path: &std::path::Path, listen: &str) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(config_path)?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let running = start(config, listen).await?;
        eprintln!("metricops: listening on http://{}", running.addr);
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        eprintln!("metricops: stopping");
        running.stop().await;
        Ok(())
    })
}

async fn alertmanager(State(alerts): State<Arc<Alerts>>, body: Bytes) -> (StatusCode, String) {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return (StatusCode::BAD_REQUEST, "the body is not UTF-8 JSON\n".into());
    };
    if let Err(e) = crate::domain::alert::parse_alertmanager(&text) {
        tracing::warn!(error = %e, "Alertmanager webhook refused");
        return (StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    match alerts.queue.try_send(text) {
        Ok(()) => (StatusCode::OK, "queued\n".into()),
        Err(TrySendError::Full(_)) => {
            tracing::warn!("engine queue full; Alertmanager will retry");
            (StatusCode::SERVICE_UNAVAILABLE, "busy: the engine queue is full, retry later\n".into())
        }
        Err(TrySendError::Disconnected(_)) => (StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped\n".into()),
    }
}

/// The engine thread: one delivery at a time, GitHub calls blocking on the runtime.
fn work(config: Arc<Config>, app: Option<Arc<GitHubApp>>, handle: tokio::runtime::Handle, rx: Receiver<String>) {
    let engine = match app {
        Some(app) => Engine::with_github(&config, app, handle),
        None => Engine::new(&config),
    };
    for body in rx {
        match engine.handle_alertmanager(&body, chrono::Utc::now()) {
            Ok(report) => {
                for o in &report.outcomes {
                    tracing::info!(incident = %o.incident.id, workload = %o.workload, decision = o.decision.label(), delivery = o.delivery.as_ref().map(|d| d.label()).unwrap_or("none"), "incident handled");
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "Alertmanager delivery failed"),
        }
    }
}
