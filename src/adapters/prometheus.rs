//! Prometheus's HTTP API (reqwest): one instant query, answered as "holds" (samples), "clear" (no
//! samples) or an error, which the evaluator treats as unknown.

use std::time::Duration;

use crate::domain::redact::redact_url;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("Prometheus at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prometheus answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("Prometheus's answer does not parse: {0}")]
    Decode(String),
}

impl PromError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            PromError::Unreachable { .. } => "prometheus_unreachable",
            PromError::Api { .. } => "prometheus_api",
            PromError::Decode(_) => "prometheus_decode",
        }
    }
}

#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    url: String,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    /// A client for the Prometheus at `url`; a query that takes longer than `timeout` fails.
    pub fn new(url: &str, timeout: Duration) -> Result<Prometheus, PromError> {
        crate::adapters::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|source| {
            PromError::Unreachable { url: redact_url(url), source: source.without_url() }
        })?;
        Ok(Prometheus { client, url: url.trim_end_matches('/').to_string() })
    }

    /// The number of samples `expr` returns now (a scalar counts as one when non-zero).
    pub async fn samples(&self, expr: &str) -> Result<usize, PromError> {
        let url = format!("{}/api/v1/query", self.url);
        let body = format!("query={}", form_encode(expr));
        let r = self
            .client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|source| PromError::Unreachable {
                url: redact_url(&url),
                source: source.without_url(),
            })?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|source| PromError::Unreachable {
            url: redact_url(&url),
            source: source.without_url(),
        })?;
        let a: Answer = serde_json::from_str(&text)
            .map_err(|e| PromError::Decode(format!("{e}: {}", text.chars().take(200).collect::<String>())))?;
        if a.status != "success" {
            return Err(PromError::Api {
                status,
                message: format!("{}: {}", a.error_type.unwrap_or_default(), a.error.unwrap_or_default()),
            });
        }
        let data = a.data.ok_or_else(|| PromError::Decode("no data".into()))?;
        match data.result_type.as_str() {
            "vector" | "matrix" => Ok(data.result.as_array().map(Vec::len).unwrap_or(0)),
            "scalar" => {
                Ok(usize::from(data.result.get(1).and_then(|v| v.as_str()).is_some_and(|v| v != "0")))
            }
            other => Err(PromError::Decode(format!("result type {other} is not a condition"))),
        }
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
