//! Alerts, normalised from Alertmanager's webhook (v4), and grouped into incidents per workload.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Alertmanager webhook payload, version 4. Newer and optional fields (`fingerprint`,
/// `truncatedAlerts`, …) may be absent; unknown ones are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    pub version: Option<String>,
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<AmAlert>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    #[serde(default)]
    pub truncated_alerts: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmAlert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub name: String,
    pub status: Status,
    pub severity: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub fingerprint: String,
    pub generator_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("not an Alertmanager webhook payload: {0}")]
    Malformed(String),
    #[error("unsupported Alertmanager webhook version {0:?} (this speaks version 4)")]
    Version(String),
}

/// Parses an Alertmanager v4 webhook body. `status` is trusted, never `endsAt`.
pub fn parse_alertmanager(body: &str) -> Result<Vec<Alert>, AlertError> {
    let p: AlertmanagerPayload = serde_json::from_str(body).map_err(|e| AlertError::Malformed(e.to_string()))?;
    if let Some(v) = &p.version {
        if v != "4" {
            return Err(AlertError::Version(v.clone()));
        }
    }
    Ok(p.alerts.into_iter().map(normalise).collect())
}

fn normalise(a: AmAlert) -> Alert {
    let fingerprint = a.fingerprint.clone().unwrap_or_else(|| {
        // Alertmanager's fingerprint is a hash of the label set; derive a stable stand-in.
        let joined: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("labels:{}", joined.join(","))
    });
    Alert {
        name: a.labels.get("alertname").cloned().unwrap_or_else(|| "unnamed".into()),
        status: if a.status == "resolved" { Status::Resolved } else { Status::Firing },
        severity: a.labels.get("severity").cloned(),
        labels: a.labels,
        annotations: a.annotations,
        starts_at: a.starts_at,
        fingerprint,
        generator_url: a.generator_url,
    }
}

/// The alerts of one workload, deduplicated by fingerprint.
#[derive(Clone, Debug)]
pub struct Incident {
    /// Stable for the workload and its first alert: `<workload>@<earliest start>`.
    pub id: String,
    pub workload: String,
    pub alerts: Vec<Alert>,
}

impl Incident {
    pub fn started_at(&self) -> DateTime<Utc> {
        self.alerts.iter().map(|a| a.starts_at).min().expect("an incident has alerts")
    }
}

/// Groups firing alerts by the workload `matcher` names for them; an alert it cannot place is
/// returned apart, with the reason.
pub fn group<'a>(alerts: &'a [Alert], matcher: impl Fn(&Alert) -> Option<String>) -> (Vec<Incident>, Vec<(&'a Alert, String)>) {
    let mut by: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for a in alerts {
        if a.status == Status::Resolved {
            unplaced.push((a, "resolved".to_string()));
            continue;
        }
        match matcher(a) {
            Some(w) => {
                let list = by.entry(w).or_default();
                if !list.iter().any(|x| x.fingerprint == a.fingerprint) {
                    list.push(a.clone());
                }
            }
            None => unplaced.push((a, format!("no configured workload matches the labels {}", labels_text(&a.labels)))),
        }
    }
    let incidents = by
        .into_iter()
        .map(|(workload, alerts)| {
            let start = alerts.iter().map(|a| a.starts_at).min().expect("non-empty");
            Incident { id: format!("{workload}@{}", start.format("%Y%m%dT%H%M%SZ")), workload, alerts }
        })
        .collect();
    (incidents, unplaced)
}

pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_payloads_parse_and_trust_status() {
        let firing = parse_alertmanager(include_str!("../../fixtures/alertmanager/metalmatze-alertmanager-bot.firing.json")).unwrap();
        assert!(firing.iter().all(|a| a.status == Status::Firing), "non-zero endsAt must not resolve a firing alert");
        let resolved = parse_alertmanager(include_str!("../../fixtures/alertmanager/liamkelly15-pythonwebhook.resolved-with-fingerprint.json")).unwrap();
        assert_eq!(resolved[0].status, Status::Resolved);
        assert_eq!(resolved[0].fingerprint, "fbab788ec4c1018b");
        assert_eq!(resolved[0].labels["deployment"], "eric-log-transformer");
    }

    #[test]
    fn a_storm_is_one_incident_per_workload() {
        let mut alerts = parse_alertmanager(&include_str!("../../fixtures/alertmanager/demo-firing.json").replace("{{STARTS_AT}}", "2026-11-25T10:00:00Z")).unwrap();
        let one = alerts[0].clone();
        alerts.extend(std::iter::repeat_n(one, 1000));
        let (incidents, unplaced) = group(&alerts, |a| a.labels.get("deployment").cloned());
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].alerts.len(), 1);
        assert!(unplaced.is_empty());
        let (none, unplaced) = group(&alerts[..1], |_| None);
        assert!(none.is_empty());
        assert!(unplaced[0].1.starts_with("no configured workload matches the labels {"), "{}", unplaced[0].1);
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert!(matches!(parse_alertmanager("{}"), Err(AlertError::Malformed(_))));
        let v3 = r#"{"version":"3","status":"firing","alerts":[]}"#;
        assert_eq!(parse_alertmanager(v3).unwrap_err().to_string(), "unsupported Alertmanager webhook version \"3\" (this speaks version 4)");
    }
}
