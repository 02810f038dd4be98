//! `metricops serve`: one HTTP listener (axum) in front of the engine. Handlers verify, parse,
//! journal (on disk, before the answer) and enqueue an `Event`; the engine's loop takes events from
//! a bounded queue (a full queue answers 503 so the sender retries: nothing is dropped silently)
//! and works on several at once. A delivery with a failed incident is tried again with backoff and
//! jitter; one left by a crash is handled at start, and a tick looks for revert branches whose PR
//! was never opened. Also `/healthz`, `/readyz`, `/metrics`, and the read-only history (`/ui`,
//! `/api/history`).

pub mod admission;
pub mod github;
mod history;
mod listen;
pub mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tokio::sync::mpsc::{Receiver, Sender, error::TrySendError};

use crate::config::{Config, WebhookAuth};
use crate::domain::alert::Source;
use crate::event::{AlertDelivery, Event};
use crate::journal::{Entry, Journal};
use crate::metrics::Metrics;
use crate::pipeline::Engine;
use crate::wiring::Wired;

/// Alert deliveries waiting for the engine, unless the config says otherwise.
const QUEUE: usize = 256;

/// How often the engine looks again for unfinished reverts (and once at start).
const TICK: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a stop waits for the work in flight; what is left stays in the journal.
const GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Alert webhook bodies at most this long (413 beyond).
const ALERT_MAX_BYTES: usize = 2 * 1024 * 1024;
/// AdmissionReview bodies at most this long (413 beyond).
const ADMISSION_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Webhook bodies being received at once, and their bytes (as declared, or the endpoint's limit).
const WEBHOOKS_AT_ONCE: usize = 64;
const WEBHOOK_BYTES_AT_ONCE: usize = 64 * 1024 * 1024;

/// The bound on webhook bodies in memory: a place per request, and a KiB-permit per byte declared.
struct Gate {
    requests: Arc<tokio::sync::Semaphore>,
    kib: Arc<tokio::sync::Semaphore>,
}

impl Gate {
    fn new(requests: usize, bytes: usize) -> Gate {
        Gate {
            requests: Arc::new(tokio::sync::Semaphore::new(requests)),
            kib: Arc::new(tokio::sync::Semaphore::new(bytes / 1024)),
        }
    }

    /// 413 for a declared length over `max` (before reading); 503 when the bound is reached; else
    /// the request's share, held until it is answered.
    fn admit(
        &self,
        req: &axum::extract::Request,
        max: usize,
        metrics: &Metrics,
    ) -> Result<Admitted, (StatusCode, String)> {
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            metrics.error("webhook_too_large");
            return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {max} bytes\n")));
        }
        let kib = declared.unwrap_or(max).div_ceil(1024).max(1) as u32;
        match (self.requests.clone().try_acquire_owned(), self.kib.clone().try_acquire_many_owned(kib)) {
            (Ok(place), Ok(bytes)) => Ok(Admitted { _place: place, _bytes: bytes }),
            _ => {
                metrics.error("webhooks_busy");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: too many webhook bodies in flight, retry later\n".into(),
                ))
            }
        }
    }
}

/// A request's share of the gate.
struct Admitted {
    _place: tokio::sync::OwnedSemaphorePermit,
    _bytes: tokio::sync::OwnedSemaphorePermit,
}

/// What the alert endpoints share.
struct Shared {
    queue: Sender<Event>,
    /// Deliveries acknowledged and not finished with, on disk.
    journal: Arc<Journal>,
    auth: WebhookAuth,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// The cluster, when one was found (else why not), and who leads.
    cluster: Result<Arc<crate::adapters::kube::Cluster>, String>,
    leadership: Arc<crate::adapters::kube::Leadership>,
    /// Refusals for a full queue, said at most once a second (a storm is thousands of them).
    refusals: std::sync::Mutex<Refusals>,
}

/// Deliveries refused since the last line said so, and when that line was.
#[derive(Default)]
struct Refusals {
    said_at: Option<std::time::Instant>,
    unsaid: u64,
}

impl Refusals {
    /// One more refused at `now`: how many to say now (this one included), or none yet.
    fn refused(&mut self, now: std::time::Instant) -> Option<u64> {
        self.unsaid += 1;
        let due = self.said_at.is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1));
        if !due {
            return None;
        }
        self.said_at = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    stop_engine: tokio::sync::watch::Sender<bool>,
    engine: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, then lets the engine finish what it is
    /// doing (within a grace period; what is left stays in the journal).
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let _ = self.stop_engine.send(true);
        if let Some(e) = self.engine.take() {
            let _ = e.await;
        }
    }
}

/// Binds `listen`, starts the engine's loop (and the evaluator, when there are rules) and serves
/// until stopped. Call inside the runtime.
pub async fn start(config: Arc<Config>, listen: &str) -> anyhow::Result<Running> {
    let wired = Wired::new(&config)?;
    // A server traces the same histories incident after incident: walks keep what they read.
    crate::adapters::git_history::remember_across_walks();
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = tokio::sync::mpsc::channel(config.server.queue.unwrap_or(QUEUE).max(1));
    let journal_dir = config.state_dir().join("journal");
    let journal = Arc::new(Journal::open(&journal_dir).context("opening the delivery journal")?);
    let cluster = match crate::adapters::kube::Cluster::connect(&config.cluster).await {
        Ok(c) => {
            let c = Arc::new(c);
            c.watch();
            c.lead(config.cluster.lease_duration());
            tracing::info!(identity = %c.leadership.identity, lease = config.cluster.lease(), "cluster found: watching Argo CD and Flux objects and workloads; leader work waits for the Lease");
            Ok(c)
        }
        Err(why) => {
            tracing::info!(
                "cluster side off: {why}. The admission webhook still answers; zero-config targets, deploy records and rollback confirmation need a cluster; this replica leads alone"
            );
            Err(why)
        }
    };
    let leadership = match &cluster {
        Ok(c) => c.leadership.clone(),
        Err(_) => crate::adapters::kube::Leadership::alone(),
    };
    let shared = Arc::new(Shared {
        queue: tx.clone(),
        journal,
        auth: wired.webhook_auth.clone(),
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        cluster: cluster.clone(),
        leadership: leadership.clone(),
        refusals: Default::default(),
    });
    if matches!(shared.auth, WebhookAuth::Open) {
        tracing::warn!("server.webhook_auth is not set: the alert webhooks accept anyone who can reach them");
    }
    let mut engine = wired.engine(config.clone());
    engine.metrics = metrics.clone();
    if let Ok(c) = &cluster {
        engine.cluster = Some(c.index.clone());
        engine.cluster_writes = Some(c.clone() as Arc<dyn crate::pipeline::confirm::ClusterWrites>);
    }
    let (stop_engine, stopping) = tokio::sync::watch::channel(false);
    let engine_task =
        tokio::spawn(work(engine, wired.prometheus, wired.alertmanager, rx, tx, shared.clone(), stopping));
    // Webhooks: credentials (or the signature's presence) and the declared length are checked
    // before a byte of the body is read, and the bodies being read at once are bounded in number
    // and in bytes (503 beyond: the sender retries).
    let gate = Arc::new(Gate::new(WEBHOOKS_AT_ONCE, WEBHOOK_BYTES_AT_ONCE));
    let alerts = Router::new()
        .route("/webhooks/alertmanager", post(|s, b| receive_alerts(Source::Alertmanager, s, b)))
        .route("/webhooks/grafana", post(|s, b| receive_alerts(Source::Grafana, s, b)))
        .route("/webhooks/generic", post(|s, b| receive_alerts(Source::Generic, s, b)))
        .route_layer(axum::middleware::from_fn_with_state(
            (shared.clone(), gate.clone()),
            |State((s, gate)): State<(Arc<Shared>, Arc<Gate>)>, req: axum::extract::Request, next: axum::middleware::Next| async move {
                let endpoint = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
                let refuse = |code: StatusCode, text: String| {
                    s.metrics.webhook(&endpoint, code.as_u16());
                    (code, text).into_response()
                };
                if !authorised(&s.auth, req.headers()) {
                    tracing::warn!(source = %endpoint, "alert webhook without valid credentials refused");
                    s.metrics.error("webhook_unauthorised");
                    return refuse(StatusCode::UNAUTHORIZED, "missing or wrong credentials: set the bearer token or basic auth configured in server.webhook_auth\n".into());
                }
                match gate.admit(&req, ALERT_MAX_BYTES, &s.metrics) {
                    Ok(_share) => next.run(req).await,
                    Err((code, text)) => refuse(code, text),
                }
            },
        ))
        .layer(DefaultBodyLimit::max(ALERT_MAX_BYTES))
        .with_state(shared.clone());
    // Admission reviews: no credentials (the API server presents none by default; TLS is the
    // trust), bounded like the webhooks; an object is at most ~1.5 MiB, a review holds two.
    let admission = {
        let (metrics, gate) = (metrics.clone(), gate.clone());
        Router::new()
            .route("/webhooks/admission", post(admission::receive))
            .with_state(metrics.clone())
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let (metrics, gate) = (metrics.clone(), gate.clone());
                    async move {
                        match gate.admit(&req, ADMISSION_MAX_BYTES, &metrics) {
                            Ok(_share) => next.run(req).await,
                            Err(refused) => refused.into_response(),
                        }
                    }
                },
            ))
            .layer(DefaultBodyLimit::max(ADMISSION_MAX_BYTES))
    };
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(shared.clone())
        .merge(alerts)
        .merge(admission)
        .merge(history::routes(
            config.clone(),
            wired.ui_auth.clone(),
            metrics.clone(),
            wired.app.clone().map(|a| a as Arc<dyn crate::forge::Forge>),
        ));
    if let (Some(g), Some(app)) = (&config.github, &wired.app) {
        match &wired.github_webhook_secret {
            Some(secret) => {
                let hook = Arc::new(github::Hook::new(secret.clone(), app.clone(), shared.queue.clone()));
                let max = g.webhook_max_bytes;
                let metrics = metrics.clone();
                let gate = gate.clone();
                router = router.route(
                    "/webhooks/github",
                    post(github::receive)
                        .with_state(hook)
                        .layer(DefaultBodyLimit::max(max))
                        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                            let (metrics, gate) = (metrics.clone(), gate.clone());
                            async move {
                                if !req.headers().contains_key("x-hub-signature-256") {
                                    tracing::warn!("GitHub webhook without X-Hub-Signature-256 refused");
                                    metrics.error("webhook_unauthorised");
                                    return (StatusCode::UNAUTHORIZED, "missing X-Hub-Signature-256: set the webhook secret in the GitHub App settings\n").into_response();
                                }
                                match gate.admit(&req, max, &metrics) {
                                    Ok(_share) => next.run(req).await,
                                    Err(refused) => refused.into_response(),
                                }
                            }
                        })),
                );
            }
            None => tracing::warn!("github.webhook_secret_file is not set: POST /webhooks/github is off"),
        }
    }
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = config.server.timeouts();
    let limits = listen::Limits {
        max_connections: config
            .server
            .max_connections
            .unwrap_or(listen::Limits::default().max_connections)
            .max(1),
        header_timeout: t.header,
        idle_timeout: t.idle,
        request_timeout: t.request,
    };
    let acceptor = wired.tls.as_ref().map(|c| {
        tokio::spawn(c.clone().watch(tls::LOOK_EVERY));
        c.acceptor()
    });
    if acceptor.is_none() {
        tracing::info!(
            "server.tls is not set: POST /webhooks/admission is served over plain HTTP, which the Kubernetes API server does not call (set server.tls, or terminate TLS in front)"
        );
    }
    let task = tokio::spawn(listen::serve(listener, router, acceptor, limits, metrics.clone(), stop_rx));
    tracing::info!(%addr, tls = config.server.tls.is_some(), "listening");
    Ok(Running {
        addr,
        metrics,
        shutdown: Some(stop_tx),
        task: Some(task),
        stop_engine,
        engine: Some(engine_task),
    })
}

/// `metricops serve`: runs until SIGTERM (what Kubernetes sends) or Ctrl-C, then stops accepting,
/// lets open requests and the work in flight finish (within a grace period), and exits 0.
/// Deliveries acknowledged and not finished yet stay in the journal and are handled at the next
/// start.
pub fn run(config_path: &std::path::Path, listen: &str) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(config_path)?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let running = start(config, listen).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let signal = tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; "SIGINT" }
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(
            signal,
            grace_s = GRACE.as_secs(),
            "stopping: no new requests; work in flight finishes, or stays in the journal"
        );
        running.stop().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    // Git steps still running on the blocking pool are not waited for: the journal has them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// `ready` (or `starting`), then who leads and how the cluster side stands, a line each.
async fn readyz(State(s): State<Arc<Shared>>) -> (StatusCode, String) {
    let mut text = String::new();
    text.push_str(&s.leadership.said());
    text.push('\n');
    match &s.cluster {
        Ok(c) => text.push_str(&c.said()),
        Err(why) => text.push_str(&format!("cluster: off ({why})\n")),
    }
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready\n{text}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("starting\n{text}"))
    }
}

async fn metrics_text(
    State(s): State<Arc<Shared>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], {
        s.metrics.journal_entries(s.journal.len());
        s.metrics.render()
    })
}

/// Whether the request carries the configured credentials (compared in constant time).
fn authorised(auth: &WebhookAuth, headers: &HeaderMap) -> bool {
    let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    match auth {
        WebhookAuth::Open => true,
        WebhookAuth::Bearer(token) => given
            .strip_prefix("Bearer ")
            .is_some_and(|g| same(g.trim().as_bytes(), token.expose_secret().as_bytes())),
        WebhookAuth::Basic { username, password } => {
            use base64::Engine as _;
            let expected = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose_secret()));
            given.strip_prefix("Basic ").is_some_and(|g| same(g.trim().as_bytes(), expected.as_bytes()))
        }
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An alert webhook: check credentials, parse, enqueue, answer. The engine does the rest.
async fn receive_alerts(source: Source, State(s): State<Arc<Shared>>, body: Bytes) -> (StatusCode, String) {
    let endpoint = source.label();
    // Credentials were checked by the route layer, before the body was read.
    let received = std::time::Instant::now();
    let answer = |code: StatusCode, text: String| {
        s.metrics.alert_ack(endpoint, code.as_u16(), received.elapsed().as_secs_f64());
        (code, text)
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return answer(StatusCode::BAD_REQUEST, "the body is not UTF-8 JSON\n".into());
    };
    let alerts = match source.parse(text, chrono::Utc::now()) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(source = endpoint, error = %e, "alert webhook refused");
            s.metrics.error("webhook_malformed");
            return answer(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    let n = alerts.len();
    // A place in the queue first: a full queue answers 503 at once, with nothing written.
    let place = match s.queue.try_reserve() {
        Ok(p) => p,
        Err(TrySendError::Full(())) => {
            // Not acknowledged: the sender sends it again.
            let say = s.refusals.lock().expect("refusals lock").refused(std::time::Instant::now());
            if let Some(n) = say {
                tracing::warn!(
                    source = endpoint,
                    refused = n,
                    "engine queue full: {n} deliveries answered 503 since the last such line; the senders retry (all counted in metricops_errors_total{{kind=\"queue_full\"}})"
                );
            }
            s.metrics.error("queue_full");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: the engine queue is full, retry later\n".into(),
            );
        }
        Err(TrySendError::Closed(())) => {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped\n".into());
        }
    };
    // On disk before the answer: an acknowledged delivery is acted on even if the process dies now.
    // The deliveries that come during one fsync share the next (on the blocking pool, not on a
    // thread that serves requests).
    let entry = Entry { source, alerts, received_at: chrono::Utc::now(), attempts: 0 };
    let id = match s.journal.record_async(&entry).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(source = endpoint, error = %e, "cannot journal the delivery; the sender will retry");
            s.metrics.error("journal");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot keep the delivery safe (state_dir not writable), retry later\n".into(),
            );
        }
    };
    place.send(Event::Alerts(AlertDelivery {
        source,
        alerts: entry.alerts,
        received,
        entry: Some(id.clone()),
        attempts: 0,
    }));
    tracing::info!(source = endpoint, alerts = n, entry = %id, "alert delivery accepted");
    answer(StatusCode::OK, format!("queued {n} alerts\n"))
}

/// The engine's loop: starts the evaluator (config and annotation rules), takes what a previous
/// run left (the journal, Alertmanager's firing alerts, unfinished reverts), then events from the
/// queue, up to `server.concurrency` at once, until told to stop.
async fn work(
    engine: Engine,
    prometheus: Option<(crate::adapters::prometheus::Prometheus, std::time::Duration)>,
    alertmanager: Option<crate::adapters::alertmanager::Alertmanager>,
    mut rx: Receiver<Event>,
    tx: Sender<Event>,
    shared: Arc<Shared>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let config = engine.config.clone();
    let mut background = tokio::task::JoinSet::new();
    if let Some((prom, interval)) = prometheus {
        let mut rules: Vec<_> = config.rules.iter().filter_map(|r| config.compile_rule(r).ok()).collect();
        rules.extend(engine.annotation_rules().await);
        for r in &rules {
            tracing::info!(rule = %r.name, workload = %r.workload, origin = %r.origin, expr = %r.expr, "rule loaded");
        }
        let (config, tx, metrics) = (config.clone(), tx.clone(), shared.metrics.clone());
        background.spawn(while_leading(shared.leadership.clone(), "the evaluator", move || {
            crate::evaluator::run(
                config.clone(),
                rules.clone(),
                prom.clone(),
                interval,
                tx.clone(),
                metrics.clone(),
            )
        }));
    }
    if let Ok(cluster) = &shared.cluster {
        let (engine, cluster) = (engine.clone(), cluster.clone());
        let alertmanager = alertmanager.clone();
        background.spawn(while_leading(shared.leadership.clone(), "the rollback followers", move || {
            follow(engine.clone(), cluster.clone(), alertmanager.clone())
        }));
    }
    // Deliveries a previous run acknowledged and did not finish: handled first.
    let mut first: VecDeque<Event> = VecDeque::new();
    let (pending, unreadable) = shared.journal.pending();
    for problem in unreadable {
        shared.metrics.error("journal");
        tracing::error!(problem = %problem, "journal entry cannot be read");
    }
    if !pending.is_empty() {
        tracing::info!(deliveries = pending.len(), "resuming deliveries acknowledged before a restart");
    }
    first.extend(pending.into_iter().map(|(id, e)| {
        Event::Alerts(AlertDelivery {
            source: e.source,
            alerts: e.alerts,
            received: std::time::Instant::now(),
            entry: Some(id),
            attempts: e.attempts,
        })
    }));
    // The alerts firing now, where Alertmanager's API is configured: one whose webhook found the bot
    // down is acted on now, not at Alertmanager's next repeat (hours later by default).
    if let (Some(client), Some(am)) = (alertmanager, &config.alertmanager) {
        match client.firing().await {
            Ok(alerts) => {
                tracing::info!(alerts = alerts.len(), url = %crate::domain::redact::redact_url(&am.url), "alerts firing in Alertmanager at start");
                if !alerts.is_empty() {
                    first.push_back(Event::Alerts(AlertDelivery::unjournaled(Source::Alertmanager, alerts)));
                }
            }
            Err(e) => {
                shared.metrics.error("alertmanager_unreachable");
                tracing::warn!(error = %e, "cannot ask Alertmanager for the alerts firing now; its next notification brings them");
            }
        }
    }
    // Reverts a failure or a crash left half done: looked for now, and again every tick.
    first.push_back(Event::Tick);
    {
        let tx = tx.clone();
        background.spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
            loop {
                every.tick().await;
                if tx.send(Event::Tick).await.is_err() {
                    return;
                }
            }
        });
    }
    shared.ready.store(true, Ordering::Relaxed);
    let n = config.server.concurrency.unwrap_or(4).max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(n));
    let mut running = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
            _ = stopping.changed() => break,
        };
        let event = match first.pop_front() {
            Some(e) => e,
            None => tokio::select! {
                e = rx.recv() => match e { Some(e) => e, None => break },
                _ = stopping.changed() => break,
            },
        };
        while running.try_join_next().is_some() {}
        let (engine, shared, tx) = (engine.clone(), shared.clone(), tx.clone());
        running.spawn(async move {
            let _slot = slot;
            handle(&engine, &shared, &tx, event).await;
        });
    }
    background.abort_all();
    if !running.is_empty() {
        tracing::info!(in_flight = running.len(), "waiting for the work in flight");
        if tokio::time::timeout(GRACE, async { while running.join_next().await.is_some() {} }).await.is_err()
        {
            tracing::warn!(
                in_flight = running.len(),
                "grace period over; what did not finish stays in the journal for the next start"
            );
            running.abort_all();
        }
    }
}

/// Runs `work` while this replica leads: started when it takes the Lease, stopped (aborted) when
/// it loses it, started again at its next turn.
async fn while_leading<F, Fut>(
    leadership: Arc<crate::adapters::kube::Leadership>,
    what: &'static str,
    work: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut turns = leadership.turns();
    loop {
        if turns.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("{what} start: this replica leads");
        let task = tokio::spawn(work());
        let lost = turns.wait_for(|l| !*l).await;
        task.abort();
        if lost.is_err() {
            return;
        }
        tracing::info!("{what} stopped: this replica no longer leads");
    }
}

/// The rollback followers' loop (on the leader): a look when the cluster index changes, and at
/// least every few seconds for the deadlines.
async fn follow(
    engine: Engine,
    cluster: Arc<crate::adapters::kube::Cluster>,
    alertmanager: Option<crate::adapters::alertmanager::Alertmanager>,
) {
    use crate::pipeline::confirm::Firing;
    loop {
        let changed = cluster.changed.notified();
        let any = !cluster.index.read().expect("cluster index lock").confirming.is_empty();
        if any {
            let firing = match &alertmanager {
                Some(am) => match am.firing().await {
                    Ok(alerts) => Firing::Alertmanager(alerts),
                    Err(e) => {
                        tracing::debug!(error = %e, "Alertmanager cannot be asked; the notifications received stand for it");
                        Firing::Notifications
                    }
                },
                None => Firing::Notifications,
            };
            engine.follow_rollbacks(&firing, chrono::Utc::now()).await;
        }
        let _ = tokio::time::timeout(FOLLOW_EVERY, changed).await;
    }
}

/// How often the rollback followers look at least.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One event, handled.
async fn handle(engine: &Engine, shared: &Arc<Shared>, tx: &Sender<Event>, event: Event) {
    match event {
        Event::Alerts(d) => {
            let report = engine.handle_alerts(d.source, &d.alerts, d.received, chrono::Utc::now()).await;
            for o in &report.outcomes {
                tracing::info!(incident = %o.incident.id, workload = %o.workload, decision = o.decision.label(), delivery = o.delivery.as_ref().map(|d| d.label()).unwrap_or("none"), took_ms = d.received.elapsed().as_millis() as u64, "incident handled");
            }
            let d = AlertDelivery { attempts: d.attempts + 1, ..d };
            // The journal's file operations on the blocking pool.
            let (shared, tx, retry, ok) =
                (shared.clone(), tx.clone(), engine.config.retry(), report.failed.is_empty());
            let _ = tokio::task::spawn_blocking(move || settle(&shared, &tx, retry, ok, d)).await;
        }
        Event::Comment(c) => {
            if let Err(e) = engine.handle_comment(&c).await {
                shared.metrics.error("chatops");
                tracing::error!(repo = %c.repo, pr = c.number, comment = c.id, error = %format!("{e:#}"), "comment command failed");
            }
        }
        Event::RevertClosed { repo, branch, merged } => engine.revert_closed(&repo, &branch, merged).await,
        Event::Tick => engine.finish_unfinished(chrono::Utc::now()).await,
    }
}

/// After a delivery was handled: finished with when nothing failed; otherwise tried again after a
/// backoff with jitter (the journal keeps the attempt count), and after the last attempt kept in
/// `journal/failed/` with an error line.
fn settle(shared: &Shared, tx: &Sender<Event>, retry: crate::config::Retry, ok: bool, d: AlertDelivery) {
    let AlertDelivery { source, alerts, entry, attempts, .. } = d;
    if ok {
        if let Some(id) = &entry
            && let Err(e) = shared.journal.done(id)
        {
            shared.metrics.error("journal");
            tracing::error!(entry = %id, error = %e, "cannot remove a finished journal entry; it is handled again at the next start");
        }
        return;
    }
    if attempts >= retry.attempts {
        shared.metrics.error("retries_exhausted");
        match entry.as_ref().map(|id| shared.journal.give_up(id)) {
            Some(Ok(kept)) => {
                tracing::error!(source = source.label(), attempts, kept = %kept.display(), "delivery still failing after the last attempt; kept for a person")
            }
            _ => tracing::error!(
                source = source.label(),
                attempts,
                "delivery still failing after the last attempt"
            ),
        }
        return;
    }
    if let Some(id) = &entry {
        let e = Entry { source, alerts: alerts.clone(), received_at: chrono::Utc::now(), attempts };
        if let Err(err) = shared.journal.update(id, &e) {
            tracing::warn!(entry = %id, error = %err, "cannot count the attempt in the journal");
        }
    }
    let jitter = f64::from(chrono::Utc::now().timestamp_subsec_nanos() % 1000) / 1000.0;
    let wait = crate::journal::backoff(retry.first, retry.max, attempts - 1, jitter);
    shared.metrics.error("retry_scheduled");
    tracing::warn!(
        source = source.label(),
        attempt = attempts,
        retry_in_ms = wait.as_millis() as u64,
        "delivery had a failed incident; trying again"
    );
    let tx = tx.clone();
    let again = AlertDelivery { source, alerts, received: std::time::Instant::now(), entry, attempts };
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        // Waits for room in the queue rather than being lost.
        let _ = tx.send(Event::Alerts(again)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_a_storm_are_said_once_a_second_with_their_count() {
        let mut r = Refusals::default();
        let t0 = std::time::Instant::now();
        assert_eq!(r.refused(t0), Some(1), "the first is said at once");
        let ms = std::time::Duration::from_millis;
        let quiet: Vec<_> = (1..=998).map(|i| r.refused(t0 + ms(i))).collect();
        assert!(quiet.iter().all(Option::is_none));
        assert_eq!(r.refused(t0 + ms(1000)), Some(999), "a second later, with the count since");
        assert_eq!(r.refused(t0 + ms(5000)), Some(1));
    }

    #[test]
    fn bearer_and_basic_credentials_are_checked() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        let bearer = WebhookAuth::Bearer("s3cret".to_string().into());
        assert!(authorised(&bearer, &h("Bearer s3cret")));
        assert!(!authorised(&bearer, &h("Bearer s3cre")));
        assert!(!authorised(&bearer, &HeaderMap::new()));
        let basic = WebhookAuth::Basic { username: "am".into(), password: "pw".to_string().into() };
        assert!(authorised(&basic, &h("Basic YW06cHc=")), "am:pw");
        assert!(!authorised(&basic, &h("Basic YW06cHg=")));
        assert!(!authorised(&basic, &h("Bearer pw")));
        assert!(authorised(&WebhookAuth::Open, &HeaderMap::new()));
    }
}
