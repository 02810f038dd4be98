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
    #[serde(deserialize_with = "rfc3339")]
    pub starts_at: DateTime<Utc>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// `startsAt` as RFC 3339, with an error that names the field and the value.
fn rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("startsAt {s:?} is not an RFC 3339 time ({e})")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Firing,
    Resolved,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// What is wrong with the payload, naming the source, the alert and the field where it can.
    #[error("{0}")]
    Malformed(String),
    #[error("unsupported Alertmanager webhook version {0:?} (this speaks version 4)")]
    Version(String),
}

/// Where an alert came from.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Grafana,
    Generic,
    Evaluator,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
            Source::Generic => "generic",
            Source::Evaluator => "evaluator",
        }
    }

    /// Parses a webhook body from this source; `now` stands in for a missing start time (generic).
    pub fn parse(self, body: &str, now: DateTime<Utc>) -> Result<Vec<Alert>, AlertError> {
        match self {
            Source::Alertmanager => parse_alertmanager(body),
            Source::Grafana => parse_grafana(body),
            Source::Generic => parse_generic(body, now),
            Source::Evaluator => {
                Err(AlertError::Malformed("the evaluator makes its alerts itself; it has no webhook".into()))
            }
        }
    }
}

/// Parses an Alertmanager v4 webhook body. `status` is trusted, never `endsAt`.
pub fn parse_alertmanager(body: &str) -> Result<Vec<Alert>, AlertError> {
    let p: AlertmanagerPayload = serde_json::from_str(body)
        .map_err(|e| AlertError::Malformed(format!("not an Alertmanager webhook payload: {e}")))?;
    if let Some(v) = &p.version
        && v != "4"
    {
        return Err(AlertError::Version(v.clone()));
    }
    Ok(p.alerts.into_iter().map(normalise).collect())
}

/// Grafana's unified alerting webhook: Alertmanager's shape with `version: "1"`, plus per-alert
/// `values` (kept as the `value` annotation when the alert has none).
pub fn parse_grafana(body: &str) -> Result<Vec<Alert>, AlertError> {
    #[derive(Deserialize)]
    struct Grafana {
        version: Option<String>,
        alerts: Vec<GrafanaAlert>,
    }
    #[derive(Deserialize)]
    struct GrafanaAlert {
        #[serde(flatten)]
        alert: AmAlert,
        #[serde(default)]
        values: Option<BTreeMap<String, serde_json::Value>>,
    }
    let p: Grafana = serde_json::from_str(body)
        .map_err(|e| AlertError::Malformed(format!("not a Grafana webhook payload: {e}")))?;
    if let Some(v) = &p.version
        && v != "1"
    {
        return Err(AlertError::Malformed(format!(
            "unsupported Grafana webhook version {v:?} (this speaks version 1)"
        )));
    }
    Ok(p.alerts
        .into_iter()
        .map(|g| {
            let mut a = normalise(g.alert);
            if let Some(values) = g.values.filter(|v| !v.is_empty()) {
                let text: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                a.annotations.entry("value".into()).or_insert(text.join(", "));
            }
            a
        })
        .collect())
}

/// The generic webhook: `{"alerts": [ALERT, ...]}` or one ALERT, where ALERT is
/// `{"name", "status"?, "severity"?, "labels"?, "annotations"?, "startsAt"?, "fingerprint"?, "url"?}`.
/// `status` is `firing` (default; also `triggered`, `re-triggered`, `alerting`) or `resolved` (also
/// `recovered`, `ok`); `startsAt` is RFC 3339 or epoch milliseconds (Datadog's `$DATE`), `now` when absent.
pub fn parse_generic(body: &str, now: DateTime<Utc>) -> Result<Vec<Alert>, AlertError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Generic {
        name: String,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        severity: Option<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
        #[serde(default)]
        starts_at: Option<serde_json::Value>,
        #[serde(default)]
        fingerprint: Option<String>,
        #[serde(default)]
        url: Option<String>,
    }
    let shape = "{\"alerts\": [{\"name\": …, \"labels\": {…}}]} or one such alert";
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| AlertError::Malformed(format!("not a generic alert payload ({shape}): {e}")))?;
    // Each alert on its own, so an error names which one and what in it is wrong.
    let one = |v: serde_json::Value, which: String| {
        let g = serde_json::from_value::<Generic>(v)
            .map_err(|e| AlertError::Malformed(format!("generic alert payload, {which}: {e}")))?;
        if g.name.trim().is_empty() {
            return Err(AlertError::Malformed(format!(
                "generic alert payload, {which}: `name` is empty; give the alert a name (it is the alertname)"
            )));
        }
        Ok(g)
    };
    let list = match value {
        serde_json::Value::Object(mut m) if m.contains_key("alerts") => match m.remove("alerts") {
            Some(serde_json::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| one(v, format!("alert #{}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(AlertError::Malformed(format!(
                    "generic alert payload: `alerts` is not a list ({shape})"
                )));
            }
        },
        v @ serde_json::Value::Object(_) => vec![one(v, "the alert".into())?],
        _ => {
            return Err(AlertError::Malformed(format!(
                "not a generic alert payload ({shape}): not a JSON object"
            )));
        }
    };
    list.into_iter()
        .map(|g| {
            let status = match g.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("firing" | "triggered" | "re-triggered" | "alerting" | "alert") => Status::Firing,
                Some("resolved" | "recovered" | "ok") => Status::Resolved,
                Some(other) => return Err(AlertError::Malformed(format!("alert {:?}: status {other:?} is neither firing (firing, triggered, alerting) nor resolved (resolved, recovered, ok)", g.name))),
            };
            let starts_at = match &g.starts_at {
                None | Some(serde_json::Value::Null) => now,
                Some(serde_json::Value::Number(n)) => n.as_i64().and_then(DateTime::<Utc>::from_timestamp_millis).ok_or_else(|| AlertError::Malformed(format!("alert {:?}: startsAt {n} is not epoch milliseconds", g.name)))?,
                Some(serde_json::Value::String(s)) => match s.parse::<i64>() {
                    Ok(ms) => DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| AlertError::Malformed(format!("alert {:?}: startsAt {s} is out of range", g.name)))?,
                    Err(_) => DateTime::parse_from_rfc3339(s).map_err(|e| AlertError::Malformed(format!("alert {:?}: startsAt {s:?} is not RFC 3339 nor epoch milliseconds: {e}", g.name)))?.with_timezone(&Utc),
                },
                Some(other) => return Err(AlertError::Malformed(format!("alert {:?}: startsAt {other} is not a time", g.name))),
            };
            let mut labels = g.labels;
            labels.entry("alertname".into()).or_insert(g.name.clone());
            if let Some(s) = &g.severity {
                labels.entry("severity".into()).or_insert(s.clone());
            }
            let am = AmAlert {
                status: if status == Status::Resolved { "resolved".into() } else { "firing".into() },
                labels,
                annotations: g.annotations,
                starts_at,
                generator_url: g.url.unwrap_or_default(),
                fingerprint: g.fingerprint,
            };
            Ok(normalise(am))
        })
        .collect()
}

/// One alert of Alertmanager's API (`GET /api/v2/alerts`, a `gettableAlert`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: Option<String>,
    status: ApiStatus,
}

#[derive(Debug, Deserialize)]
struct ApiStatus {
    /// `active`, `suppressed` (silenced or inhibited) or `unprocessed`.
    state: String,
}

/// The alerts Alertmanager holds as firing and not suppressed (a silenced or inhibited alert is
/// no reason to roll back), from its API's `GET /api/v2/alerts`.
pub fn parse_alertmanager_api(body: &str) -> Result<Vec<Alert>, AlertError> {
    let alerts: Vec<ApiAlert> = serde_json::from_str(body).map_err(|e| {
        AlertError::Malformed(format!("not an answer of Alertmanager's GET /api/v2/alerts: {e}"))
    })?;
    Ok(alerts
        .into_iter()
        .filter(|a| a.status.state == "active")
        .map(|a| {
            normalise(AmAlert {
                status: "firing".into(),
                labels: a.labels,
                annotations: a.annotations,
                starts_at: a.starts_at,
                generator_url: a.generator_url,
                fingerprint: a.fingerprint,
            })
        })
        .collect())
}

fn normalise(a: AmAlert) -> Alert {
    let fingerprint = a.fingerprint.clone().unwrap_or_else(|| {
        // Alertmanager's fingerprint is a hash of the label set; derive a stable stand-in.
        let joined: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("labels:{}", joined.join(","))
    });
    Alert {
        name: a
            .labels
            .get("alertname")
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .unwrap_or("unnamed")
            .to_string(),
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
/// Alerts of one name and severity, counted: how a delivery of thousands of alerts is told in a
/// commit message or a PR body of bounded size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertGroup<'a> {
    /// The first alert of the group (its annotations stand for the group's).
    pub first: &'a Alert,
    pub count: usize,
    pub earliest: DateTime<Utc>,
}

/// At most `max` groups, in the order their first alert came; and how many groups were left out.
pub fn summarise(alerts: &[Alert], max: usize) -> (Vec<AlertGroup<'_>>, usize) {
    let mut groups: Vec<AlertGroup<'_>> = Vec::new();
    for a in alerts {
        match groups.iter_mut().find(|g| g.first.name == a.name && g.first.severity == a.severity) {
            Some(g) => {
                g.count += 1;
                g.earliest = g.earliest.min(a.starts_at);
            }
            None => groups.push(AlertGroup { first: a, count: 1, earliest: a.starts_at }),
        }
    }
    let left_out = groups.len().saturating_sub(max);
    groups.truncate(max);
    (groups, left_out)
}

pub fn group(
    alerts: &[Alert],
    matcher: impl Fn(&Alert) -> Option<String>,
) -> (Vec<Incident>, Vec<(&Alert, String)>) {
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
            None => unplaced
                .push((a, format!("no configured workload matches the labels {}", labels_text(&a.labels)))),
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
    fn an_alert_always_has_a_name() {
        // Found by the alert_payloads fuzz target: `{"name":""}` was an alert with no name.
        let now = Utc::now();
        let e = parse_generic(r#"{"name":""}"#, now).unwrap_err().to_string();
        assert!(e.contains("`name` is empty"), "{e}");
        assert!(
            parse_generic(r#"{"alerts":[{"name":"A"},{"name":"  "}]}"#, now)
                .unwrap_err()
                .to_string()
                .contains("alert #2")
        );
        let am = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":""},"annotations":{},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"f"}]}"#;
        assert_eq!(parse_alertmanager(am).unwrap()[0].name, "unnamed");
    }

    #[test]
    fn real_payloads_parse_and_trust_status() {
        let firing = parse_alertmanager(include_str!(
            "../../fixtures/alertmanager/metalmatze-alertmanager-bot.firing.json"
        ))
        .unwrap();
        assert!(
            firing.iter().all(|a| a.status == Status::Firing),
            "non-zero endsAt must not resolve a firing alert"
        );
        let resolved = parse_alertmanager(include_str!(
            "../../fixtures/alertmanager/liamkelly15-pythonwebhook.resolved-with-fingerprint.json"
        ))
        .unwrap();
        assert_eq!(resolved[0].status, Status::Resolved);
        assert_eq!(resolved[0].fingerprint, "fbab788ec4c1018b");
        assert_eq!(resolved[0].labels["deployment"], "eric-log-transformer");
    }

    #[test]
    fn a_storm_is_one_incident_per_workload() {
        let mut alerts = parse_alertmanager(
            &include_str!("../../fixtures/alertmanager/demo-firing.json")
                .replace("{{STARTS_AT}}", "2026-11-25T10:00:00Z"),
        )
        .unwrap();
        let one = alerts[0].clone();
        alerts.extend(std::iter::repeat_n(one, 1000));
        let (incidents, unplaced) = group(&alerts, |a| a.labels.get("deployment").cloned());
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].alerts.len(), 1);
        assert!(unplaced.is_empty());
        let (none, unplaced) = group(&alerts[..1], |_| None);
        assert!(none.is_empty());
        assert!(
            unplaced[0].1.starts_with("no configured workload matches the labels {"),
            "{}",
            unplaced[0].1
        );
    }

    #[test]
    fn grafana_and_generic_payloads_normalise_to_the_same_alerts() {
        let g = parse_grafana(include_str!("../../fixtures/grafana/webhook-notifier.example.json")).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].name.as_str(), g[0].fingerprint.as_str(), g[0].status),
            ("High memory usage", "c6eadffa33fcdf37", Status::Firing)
        );
        assert_eq!(g[0].annotations["value"], "B=44.23943737541908, C=1");
        assert_eq!(g[0].starts_at.to_rfc3339(), "2021-10-12T07:51:03.157076+00:00");
        let now = Utc::now();
        let one = parse_generic(r#"{"name":"CheckoutErrors","severity":"critical","labels":{"namespace":"shop","deployment":"checkout"},"startsAt":1406662672000}"#, now).unwrap();
        assert_eq!(
            (one[0].name.as_str(), one[0].severity.as_deref(), one[0].status),
            ("CheckoutErrors", Some("critical"), Status::Firing)
        );
        assert_eq!(one[0].starts_at.timestamp_millis(), 1406662672000);
        let many = parse_generic(r#"{"alerts":[{"name":"A","status":"Recovered","labels":{"app":"x"}},{"name":"B","startsAt":"2026-11-25T10:00:00Z"}]}"#, now).unwrap();
        assert_eq!(
            (many[0].status, many[1].starts_at.to_rfc3339().as_str(), many[0].starts_at),
            (Status::Resolved, "2026-11-25T10:00:00+00:00", now)
        );
        assert_eq!(
            many[0].fingerprint, "labels:alertname=A,app=x",
            "a fingerprint is derived from the labels when absent"
        );
        for (bad, says) in [
            (r#"{"name":"A","status":"exploding"}"#, "status \"exploding\""),
            (r#"{"name":"A","startsAt":"yesterday"}"#, "not RFC 3339"),
            (r#"{"nam":"A"}"#, "the alert: unknown field `nam`, expected one of `name`"),
            (r#"{"alerts":[{"name":"A"},{"labels":{}}]}"#, "alert #2: missing field `name`"),
            (r#"{"alerts":{"name":"A"}}"#, "`alerts` is not a list"),
            (r#"[1]"#, "not a JSON object"),
            (r#"{"#, "not a generic alert payload"),
        ] {
            let e = parse_generic(bad, now).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Each source names itself, and a bad time names its field.
        let e = parse_grafana(r#"{"alerts":"x"}"#).unwrap_err().to_string();
        assert!(e.starts_with("not a Grafana webhook payload"), "{e}");
        let e = parse_alertmanager(
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"12:00"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(r#"startsAt "12:00" is not an RFC 3339 time"#), "{e}");
        assert!(
            parse_grafana(r#"{"version":"4","alerts":[]}"#).unwrap_err().to_string().contains("version 1")
        );
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert!(matches!(parse_alertmanager("{}"), Err(AlertError::Malformed(_))));
        let v3 = r#"{"version":"3","status":"firing","alerts":[]}"#;
        assert_eq!(
            parse_alertmanager(v3).unwrap_err().to_string(),
            "unsupported Alertmanager webhook version \"3\" (this speaks version 4)"
        );
    }

    #[test]
    fn a_storm_of_alerts_is_summarised_by_name_and_severity() {
        let at = |m: u32| DateTime::parse_from_rfc3339(&format!("2026-12-04T10:{m:02}:00Z")).unwrap().into();
        let alert = |name: &str, sev: &str, m: u32| Alert {
            name: name.into(),
            status: Status::Firing,
            severity: Some(sev.into()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: at(m),
            fingerprint: format!("{name}{m}"),
            generator_url: String::new(),
        };
        let mut storm: Vec<Alert> =
            (0..3000).map(|i| alert("Errors", "critical", 30 - (i % 30) as u32)).collect();
        storm.push(alert("Latency", "warning", 5));
        storm.extend((0..20).map(|i| alert(&format!("Other{i}"), "info", 1)));
        let (groups, left_out) = summarise(&storm, 3);
        let seen: Vec<(&str, usize)> = groups.iter().map(|g| (g.first.name.as_str(), g.count)).collect();
        assert_eq!(seen, [("Errors", 3000), ("Latency", 1), ("Other0", 1)]);
        assert_eq!(groups[0].earliest, at(1));
        assert_eq!(left_out, 19);
    }

    #[test]
    fn alertmanagers_api_gives_the_active_alerts_only() {
        // The shape of Alertmanager's `GET /api/v2/alerts` (its OpenAPI `gettableAlerts`).
        let body = r#"[
          {"annotations":{"summary":"5xx"},"endsAt":"2026-12-04T10:05:00.000Z","fingerprint":"a1","receivers":[{"name":"metricops"}],
           "startsAt":"2026-12-04T10:00:00.000Z","status":{"inhibitedBy":[],"silencedBy":[],"state":"active"},"updatedAt":"2026-12-04T10:00:01.000Z",
           "generatorURL":"http://prom/graph","labels":{"alertname":"CheckoutErrors","namespace":"shop","deployment":"checkout","severity":"critical"}},
          {"annotations":{},"endsAt":"2026-12-04T10:05:00.000Z","fingerprint":"b2","receivers":[{"name":"metricops"}],
           "startsAt":"2026-12-04T10:00:00.000Z","status":{"inhibitedBy":[],"silencedBy":["s1"],"state":"suppressed"},"updatedAt":"2026-12-04T10:00:01.000Z",
           "labels":{"alertname":"Silenced"}}
        ]"#;
        let alerts = parse_alertmanager_api(body).unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(
            (a.name.as_str(), a.status, a.fingerprint.as_str()),
            ("CheckoutErrors", Status::Firing, "a1")
        );
        assert_eq!(a.severity.as_deref(), Some("critical"));
        assert!(parse_alertmanager_api("{}").is_err());
    }
}
