//! The built-in evaluator: every interval, each rule's PromQL is asked of Prometheus; a rule that
//! holds for its `for` duration becomes a firing alert on the engine's queue, like a webhook's.
//! Prometheus unreachable or answering an error is "unknown": never a reason to revert.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::adapters::prometheus::Prometheus;
use crate::config::Config;
use crate::domain::alert::{Alert, Source, Status};
use crate::domain::rules::{Rule, RuleState, Sample, Transition};
use crate::event::{AlertDelivery, Event};
use crate::metrics::Metrics;

/// How often a rule that keeps firing is sent again (the engine is level-triggered: a repeat
/// re-drives what failed and re-confirms what is open).
const REPEAT: Duration = Duration::from_secs(60);

/// The labels that make an alert land on `workload`: its `match` labels, or namespace and the
/// first of the configured `workload_labels` (default `deployment`) from its `NAMESPACE/NAME`.
pub fn workload_labels(config: &Config, workload: &str) -> BTreeMap<String, String> {
    let w = config.workloads.iter().find(|w| w.name == workload);
    match w {
        Some(w) if !w.match_labels.is_empty() => w.match_labels.clone(),
        _ => {
            let (ns, name) = workload.split_once('/').unwrap_or(("", workload));
            let label = config.workload_labels.first().map(String::as_str).unwrap_or("deployment");
            BTreeMap::from([("namespace".to_string(), ns.to_string()), (label.to_string(), name.to_string())])
        }
    }
}

fn alert(config: &Config, rule: &Rule, since: chrono::DateTime<Utc>) -> Alert {
    let mut labels = workload_labels(config, &rule.workload);
    labels.insert("alertname".into(), rule.name.clone());
    if let Some(s) = &rule.severity {
        labels.insert("severity".into(), s.clone());
    }
    let annotations = BTreeMap::from([
        ("summary".to_string(), format!("metricops rule {} holds: {}", rule.name, rule.expr)),
        ("rule_origin".to_string(), rule.origin.clone()),
    ]);
    Alert {
        name: rule.name.clone(),
        status: Status::Firing,
        severity: rule.severity.clone(),
        labels,
        annotations,
        starts_at: since,
        fingerprint: format!("rule:{}:{}", rule.workload, rule.name),
        generator_url: String::new(),
    }
}

/// Runs until the queue's receiver is gone.
pub async fn run(
    config: Arc<Config>,
    rules: Vec<Rule>,
    prom: Prometheus,
    interval: Duration,
    queue: tokio::sync::mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) {
    tracing::info!(rules = rules.len(), every = ?interval, "evaluator started");
    let mut states = vec![RuleState::Inactive; rules.len()];
    let mut last_sent: Vec<Option<std::time::Instant>> = vec![None; rules.len()];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each evaluation is stamped with its scheduled time, as Prometheus does: `for` is then counted
    // in whole intervals, and a rule fires at the evaluation where it has held for `for` (stamped
    // with the time the queries happen to finish, it fired an interval late about half the time).
    let (wall, start) = (Utc::now(), tokio::time::Instant::now());
    loop {
        let scheduled = tick.tick().await;
        let at =
            wall + chrono::Duration::from_std(scheduled.saturating_duration_since(start)).unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let sample = match prom.samples(&rule.expr).await {
                Ok(0) => Sample::Clear,
                Ok(_) => Sample::Holds,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e, "rule could not be evaluated; unknown, not firing");
                    metrics.error(e.metric_label());
                    Sample::Unknown
                }
            };
            metrics.rule(
                &rule.name,
                match sample {
                    Sample::Holds => "holds",
                    Sample::Clear => "clear",
                    Sample::Unknown => "unknown",
                },
            );
            let (next, transition) = states[i].step(sample, rule.for_, at);
            states[i] = next;
            let send = match (transition, next) {
                (Transition::Fire { since }, _) => Some(since),
                (Transition::Nothing, RuleState::Firing { since })
                    if last_sent[i].is_none_or(|t| t.elapsed() >= REPEAT) =>
                {
                    Some(since)
                }
                (Transition::Resolve, _) => {
                    tracing::info!(rule = %rule.name, "rule resolved");
                    last_sent[i] = None;
                    None
                }
                _ => None,
            };
            if let Some(since) = send {
                tracing::info!(rule = %rule.name, workload = %rule.workload, since = %since, "rule fires");
                let job = AlertDelivery::unjournaled(Source::Evaluator, vec![alert(&config, rule, since)]);
                match queue.try_send(Event::Alerts(job)) {
                    Ok(()) => last_sent[i] = Some(std::time::Instant::now()),
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(rule = %rule.name, "engine queue full; the rule is sent again next interval")
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An evaluator alert lands on its workload whatever label names the config matches on.
    #[test]
    fn evaluator_alerts_carry_the_configured_workload_label() {
        let text = |labels: &str| {
            format!(
                "{labels}repos:\n- name: m\n  url: /tmp/x.git\nworkloads:\n- name: shop/api\n  repo: m\n  paths: [apps/api]\n  image: ghcr.io/x/api\n"
            )
        };
        for (labels, key) in [("", "deployment"), ("workload_labels: [app]\n", "app")] {
            let c = Config::parse(&text(labels)).unwrap();
            let l = workload_labels(&c, "shop/api");
            assert_eq!(l.get(key).map(String::as_str), Some("api"), "{l:?}");
            assert_eq!(c.workload_for(&l).map(|w| w.name.as_str()), Some("shop/api"), "{labels}");
        }
    }
}
