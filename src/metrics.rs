//! `/metrics`: what the bot did, in Prometheus text (prometheus-client). Counters by source, outcome,
//! decision, revert mode, delivery and error kind, and how long an incident took from the webhook's
//! arrival to its delivery.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn incident_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// 25 µs to about 0.4 s: one admission review handled, TLS and the network left out.
fn admission_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 14))
}

/// 1 s to about 2.3 h: a sync, a rollout, an SLO burning down.
fn rollback_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    alerts: Family<Labels, Counter>,
    incidents: Counter,
    decisions: Family<Labels, Counter>,
    reverts: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    webhooks: Family<Labels, Counter>,
    rule_evaluations: Family<Labels, Counter>,
    incident_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    step_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    admissions: Family<Labels, Counter>,
    rollback_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    rollbacks: Family<Labels, Counter>,
    admission_seconds: Histogram,
    ack_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    journal_entries: Gauge,
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("metricops")),
            alerts: Family::default(),
            incidents: Counter::default(),
            decisions: Family::default(),
            reverts: Family::default(),
            deliveries: Family::default(),
            errors: Family::default(),
            webhooks: Family::default(),
            rule_evaluations: Family::default(),
            incident_seconds: Family::new_with_constructor(incident_histogram as fn() -> Histogram),
            step_seconds: Family::new_with_constructor(incident_histogram as fn() -> Histogram),
            admissions: Family::default(),
            rollback_seconds: Family::new_with_constructor(rollback_histogram as fn() -> Histogram),
            rollbacks: Family::default(),
            admission_seconds: admission_histogram(),
            ack_seconds: Family::new_with_constructor(admission_histogram as fn() -> Histogram),
            journal_entries: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().expect("registry lock");
            r.register(
                "alerts_received",
                "Alerts received, by source and outcome (acted, resolved, unmatched)",
                m.alerts.clone(),
            );
            r.register("incidents", "Incidents handled", m.incidents.clone());
            r.register("decisions", "Decisions, by decision or ignore reason", m.decisions.clone());
            r.register("reverts", "Revert commits built, by mode", m.reverts.clone());
            r.register("deliveries", "Reverts delivered, by outcome (proposed, already_proposed, merged, auto_merge_enabled, merge_refused)", m.deliveries.clone());
            r.register("errors", "Failed incidents and refused requests, by kind", m.errors.clone());
            r.register(
                "webhook_requests",
                "Webhook requests, by endpoint and status code",
                m.webhooks.clone(),
            );
            r.register(
                "rule_evaluations",
                "Evaluator rule evaluations, by rule and result (holds, clear, unknown)",
                m.rule_evaluations.clone(),
            );
            r.register("step_duration_seconds", "Engine steps: fetch, trace, build (revert commit and PR text), deliver (push, PR, merge; build included)", m.step_seconds.clone());
            r.register(
                "admission_reviews",
                "Admission reviews answered (always allowed), by kind and outcome (recorded, unchanged, dry_run, not_a_workload, malformed)",
                m.admissions.clone(),
            );
            r.register(
                "admission_review_seconds",
                "Time to answer one admission review in the handler (body read to answer built; TLS and the network not included)",
                m.admission_seconds.clone(),
            );
            r.register(
                "alert_ack_seconds",
                "Time to answer one alert delivery in the handler, by endpoint and status code (body read to answer; the journal's fsync included, the network not)",
                m.ack_seconds.clone(),
            );
            r.register(
                "journal_entries",
                "Alert deliveries in the journal: acknowledged (or being written) and not yet finished with — waiting, being handled, or waiting to be tried again",
                m.journal_entries.clone(),
            );
            r.register(
                "rollback_step_seconds",
                "After a revert merged: seconds from the merge until each step (synced, healthy, resolved) came",
                m.rollback_seconds.clone(),
            );
            r.register(
                "rollbacks",
                "Rollbacks followed after their revert merged, by outcome (confirmed, timed_out_synced, timed_out_healthy, timed_out_resolved)",
                m.rollbacks.clone(),
            );
            r.register(
                "incident_duration_seconds",
                "From the alert's arrival to the incident's end (delivered, ignored or failed)",
                m.incident_seconds.clone(),
            );
        }
        m
    }
}

impl Metrics {
    pub fn alert(&self, source: &str, outcome: &str) {
        self.alerts.get_or_create(&l(&[("source", source), ("outcome", outcome)])).inc();
    }
    pub fn incident(&self, decision: &str, seconds: f64) {
        self.incidents.inc();
        self.decisions.get_or_create(&l(&[("decision", decision)])).inc();
        self.incident_seconds.get_or_create(&l(&[("decision", decision)])).observe(seconds);
    }
    pub fn step(&self, step: &str, seconds: f64) {
        self.step_seconds.get_or_create(&l(&[("step", step)])).observe(seconds);
    }
    pub fn revert(&self, mode: &str) {
        self.reverts.get_or_create(&l(&[("mode", mode)])).inc();
    }
    pub fn delivery(&self, outcome: &str) {
        self.deliveries.get_or_create(&l(&[("outcome", outcome)])).inc();
    }
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&l(&[("kind", kind)])).inc();
    }
    pub fn webhook(&self, endpoint: &str, status: u16) {
        self.webhooks.get_or_create(&l(&[("endpoint", endpoint), ("code", &status.to_string())])).inc();
    }
    /// An alert delivery answered: its status counted and how long the handler took.
    pub fn alert_ack(&self, endpoint: &str, status: u16, seconds: f64) {
        self.webhook(endpoint, status);
        self.ack_seconds
            .get_or_create(&l(&[("endpoint", endpoint), ("code", &status.to_string())]))
            .observe(seconds);
    }
    pub fn admission(&self, kind: &str, outcome: &str, seconds: f64) {
        self.admissions.get_or_create(&l(&[("kind", kind), ("outcome", outcome)])).inc();
        self.admission_seconds.observe(seconds);
    }
    pub fn rollback_step(&self, step: &str, seconds: f64) {
        self.rollback_seconds.get_or_create(&l(&[("step", step)])).observe(seconds);
    }
    pub fn rollback(&self, outcome: &str) {
        self.rollbacks.get_or_create(&l(&[("outcome", outcome)])).inc();
    }
    /// How many deliveries the journal holds now (set when `/metrics` is read).
    pub fn journal_entries(&self, n: usize) {
        self.journal_entries.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub fn rule(&self, rule: &str, result: &str) {
        self.rule_evaluations.get_or_create(&l(&[("rule", rule), ("result", result)])).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().expect("registry lock");
        let _ = encode(&mut out, &r);
        out
    }
}
