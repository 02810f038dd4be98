//! The entry points' wiring: typed settings into adapters. `serve` builds a `Wired` before it
//! listens; `check-config` builds the very same and stops there, so the two refuse exactly the same
//! things. The config itself stays values: nothing in `config.rs` builds a client.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use crate::adapters::alertmanager::Alertmanager;
use crate::adapters::github::GitHubApp;
use crate::adapters::prometheus::Prometheus;
use crate::config::{Config, WebhookAuth};
use crate::pipeline::Engine;

/// Everything `serve` makes of its settings before it takes a request.
pub struct Wired {
    pub app: Option<Arc<GitHubApp>>,
    pub webhook_auth: WebhookAuth,
    /// What `/ui` and `/api/history` accept.
    pub ui_auth: WebhookAuth,
    /// The GitHub webhook's secret (`POST /webhooks/github` is off without one).
    pub github_webhook_secret: Option<SecretString>,
    pub prometheus: Option<(Prometheus, Duration)>,
    pub alertmanager: Option<Alertmanager>,
    /// `server.tls`, its certificate and key read and checked to go together (and re-read when
    /// they change).
    pub tls: Option<Arc<crate::server::tls::Certificate>>,
}

impl Wired {
    /// Reads the secrets' files, checks the TLS files and builds the clients; nothing goes over the
    /// network. Call inside a tokio runtime context (the GitHub client starts a task).
    pub fn new(config: &Config) -> anyhow::Result<Wired> {
        let webhook_auth = config.server.webhook_auth()?;
        let ui_auth = config.server.ui_auth()?;
        let tls = match &config.server.tls {
            Some(t) => Some(crate::server::tls::Certificate::load(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let (app, github_webhook_secret) = match &config.github {
            Some(g) => (Some(Arc::new(GitHubApp::new(&app_settings(g)?)?)), g.webhook_secret()?),
            None => (None, None),
        };
        let prometheus = match &config.prometheus {
            Some(p) => Some((Prometheus::new(&p.url, p.timeout()).context("prometheus.url")?, p.interval())),
            None => None,
        };
        let alertmanager = match &config.alertmanager {
            Some(a) => Some(Alertmanager::new(&a.url).context("alertmanager.url")?),
            None => None,
        };
        Ok(Wired { app, webhook_auth, ui_auth, github_webhook_secret, prometheus, alertmanager, tls })
    }

    /// The engine alone (for `simulate`): only the GitHub App is built, the server's files are not read.
    pub fn engine_only(config: Arc<Config>) -> anyhow::Result<Engine> {
        Ok(match &config.github {
            Some(g) => {
                let app = Arc::new(GitHubApp::new(&app_settings(g)?)?);
                Engine::with_forge(config.clone(), app)
            }
            None => Engine::new(config),
        })
    }

    /// The engine, its `forge: github` repos going through the App.
    pub fn engine(&self, config: Arc<Config>) -> Engine {
        match &self.app {
            Some(app) => Engine::with_forge(config, app.clone()),
            None => Engine::new(config),
        }
    }
}

/// The App's settings: its id, the key read from its file, where its API is.
pub fn app_settings(g: &crate::config::GitHubConfig) -> anyhow::Result<crate::adapters::github::AppSettings> {
    Ok(crate::adapters::github::AppSettings {
        app_id: g.app_id,
        private_key: g.private_key()?,
        api_url: g.api_url.clone(),
        retry_budget: g.retry_budget(),
    })
}

/// `metricops check-config`: what `serve` checks at start, and a one-line summary.
pub fn check_file(path: &std::path::Path) -> anyhow::Result<()> {
    let c = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _guard = rt.enter();
    Wired::new(&c)?;
    println!(
        "{}: ok ({} repos, {} workloads, policy: {:?}{})",
        path.display(),
        c.repos.len(),
        c.workloads.len(),
        c.policy.action,
        if c.github.is_some() { ", GitHub App key readable" } else { "" }
    );
    Ok(())
}
