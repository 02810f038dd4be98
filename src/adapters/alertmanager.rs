//! Alertmanager's HTTP API (reqwest): the alerts firing now, asked when `serve` starts, so that an
//! alert whose webhook was never answered (the bot was down) is acted on without waiting hours for
//! Alertmanager's `repeat_interval`.

use std::time::Duration;

use crate::domain::redact::redact_url;

use crate::domain::alert::{Alert, AlertError, parse_alertmanager_api};

#[derive(Debug, thiserror::Error)]
pub enum AmError {
    #[error("Alertmanager at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Alertmanager at {url} answered {status}: {body}")]
    Api { url: String, status: u16, body: String },
    #[error("Alertmanager's answer does not parse: {0}")]
    Decode(#[source] AlertError),
}

#[derive(Clone)]
pub struct Alertmanager {
    client: reqwest::Client,
    url: String,
}

impl Alertmanager {
    pub fn new(url: &str) -> Result<Alertmanager, AmError> {
        crate::adapters::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| AmError::Unreachable { url: redact_url(url), source: source.without_url() })?;
        Ok(Alertmanager { client, url: url.trim_end_matches('/').to_string() })
    }

    /// Every alert active now: firing, neither silenced nor inhibited.
    pub async fn firing(&self) -> Result<Vec<Alert>, AmError> {
        let url = format!("{}/api/v2/alerts?active=true&silenced=false&inhibited=false", self.url);
        let r =
            self.client.get(&url).send().await.map_err(|source| AmError::Unreachable {
                url: redact_url(&url),
                source: source.without_url(),
            })?;
        let status = r.status().as_u16();
        let text = r
            .text()
            .await
            .map_err(|source| AmError::Unreachable { url: redact_url(&url), source: source.without_url() })?;
        if status != 200 {
            return Err(AmError::Api {
                url: redact_url(&url),
                status,
                body: text.chars().take(200).collect(),
            });
        }
        parse_alertmanager_api(&text).map_err(AmError::Decode)
    }
}
