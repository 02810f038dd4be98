//! `POST /webhooks/admission`: the mutating admission webhook. The API server sends an
//! `AdmissionReview` for each Deployment, StatefulSet, DaemonSet and CronJob CREATE or UPDATE; the
//! answer records the deploy on the object (`domain::admission` decides what) and carries the
//! `metricops.dev/rule` problems as warnings, which kubectl shows.
//!
//! Invariants: the answer is always `allowed: true` (a deploy is never blocked), `response.uid`
//! echoes `request.uid`, and there is no I/O on the request path (the clock is the only thing read).
//! A review that cannot be read gets an answer too — allowed with a warning when it has a uid, else
//! a `400` naming what is wrong — never a 500 and never a hang.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::domain::admission::{self, Operation, WorkloadKind};
use crate::metrics::Metrics;

/// The API versions of AdmissionReview answered; the answer uses the request's.
const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// What a review was, for `/metrics` and the log.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Recorded,
    Unchanged,
    DryRun,
    NotAWorkload,
    Malformed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::Unchanged => "unchanged",
            Outcome::DryRun => "dry_run",
            Outcome::NotAWorkload => "not_a_workload",
            Outcome::Malformed => "malformed",
        }
    }
}

pub async fn receive(State(metrics): State<Arc<Metrics>>, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let (status, answer, kind, outcome) = review(&body, chrono::Utc::now());
    metrics.admission(kind, outcome.as_str(), started.elapsed().as_secs_f64());
    metrics.webhook("admission", status.as_u16());
    match answer {
        Reply::Review(v) => {
            (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        Reply::Refused(text) => {
            tracing::warn!(problem = %text.trim_end(), "admission review refused: not an AdmissionReview");
            (status, text).into_response()
        }
    }
}

/// The status and body `POST /webhooks/admission` answers `body` with, the clock passed in: pure,
/// the fuzz target's entry (tests/fuzz/fuzz_targets/admission.rs).
pub fn answer_body(body: &[u8], now: chrono::DateTime<chrono::Utc>) -> (u16, String) {
    match review(body, now) {
        (status, Reply::Review(v), _, _) => (status.as_u16(), v.to_string()),
        (status, Reply::Refused(text), _, _) => (status.as_u16(), text),
    }
}

enum Reply {
    Review(Value),
    Refused(String),
}

/// The whole answer to one body: status, reply, the object's kind (for the metric) and outcome.
fn review(body: &[u8], now: chrono::DateTime<chrono::Utc>) -> (StatusCode, Reply, &'static str, Outcome) {
    let refused =
        |text: String| (StatusCode::BAD_REQUEST, Reply::Refused(text), "unknown", Outcome::Malformed);
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return refused(format!("not an AdmissionReview: the body is not JSON ({e})\n")),
    };
    let api_version = match review.get("apiVersion").and_then(Value::as_str) {
        Some(v @ (V1 | V1BETA1)) => v,
        Some(other) => {
            return refused(format!(
                "not an AdmissionReview: apiVersion {other:?}; metricops answers {V1} (and {V1BETA1})\n"
            ));
        }
        None => return refused(format!("not an AdmissionReview: no apiVersion (expected {V1})\n")),
    };
    if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return refused("not an AdmissionReview: kind is not \"AdmissionReview\"\n".into());
    }
    let Some(request) = review.get("request").filter(|r| r.is_object()) else {
        return refused("AdmissionReview without a request: nothing to answer\n".into());
    };
    let Some(uid) = request.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
        return refused(
            "AdmissionReview without request.uid: the answer could not be matched to it\n".into(),
        );
    };
    let group = request.pointer("/kind/group").and_then(Value::as_str).unwrap_or("");
    let kind_name = request.pointer("/kind/kind").and_then(Value::as_str).unwrap_or("");
    let kind = WorkloadKind::from_group_kind(group, kind_name);
    let kind_label = kind.map(WorkloadKind::as_str).unwrap_or("other");
    let operation = Operation::parse(request.get("operation").and_then(Value::as_str).unwrap_or(""));
    let dry_run = request.get("dryRun").and_then(Value::as_bool).unwrap_or(false);
    let object = request.get("object").filter(|o| o.is_object());
    let old_object = request.get("oldObject").filter(|o| o.is_object());
    let mut response = json!({"uid": uid, "allowed": true});
    let (outcome, warnings) = match (kind, operation, object) {
        (None, _, _) | (_, Operation::Other, _) => (Outcome::NotAWorkload, vec![]),
        (Some(_), _, None) => (
            Outcome::Malformed,
            vec!["metricops: the review carries no object; nothing recorded".to_string()],
        ),
        (Some(_), _, Some(_)) => {
            let req = admission::Request { kind, operation, dry_run, object, old_object };
            let a = admission::answer_checking(&req, now, &promql_problem_memoised);
            let outcome = if dry_run {
                Outcome::DryRun
            } else if a.patch.is_empty() {
                Outcome::Unchanged
            } else {
                let patch = serde_json::to_vec(&a.patch).expect("a JSON patch serialises");
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
                Outcome::Recorded
            };
            (outcome, a.warnings)
        }
    };
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    (StatusCode::OK, Reply::Review(wrap(api_version, response)), kind_label, outcome)
}

/// The PromQL check of `metricops.dev/rule`, remembered per expression (a cluster sends the same few
/// rules with every rollout; a parse costs far more than the rest of a review). Bounded: cleared
/// when it holds 4,096 expressions.
fn promql_problem_memoised(expr: &str) -> Option<String> {
    type Memo = std::sync::Mutex<std::collections::HashMap<String, Option<String>>>;
    static MEMO: std::sync::LazyLock<Memo> = std::sync::LazyLock::new(Default::default);
    if let Some(known) = MEMO.lock().expect("promql memo lock").get(expr) {
        return known.clone();
    }
    let problem = admission::promql_problem(expr);
    let mut memo = MEMO.lock().expect("promql memo lock");
    if memo.len() >= 4096 {
        memo.clear();
    }
    memo.insert(expr.to_string(), problem.clone());
    problem
}

fn wrap(api_version: &str, response: Value) -> Value {
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-12-06T10:00:00Z".parse().unwrap()
    }

    fn review_of(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": V1, "kind": "AdmissionReview", "request": request})).unwrap()
    }

    fn deployment(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn answered(body: &[u8]) -> (Value, Outcome) {
        let (status, reply, _, outcome) = review(body, now());
        assert_eq!(status, StatusCode::OK);
        let Reply::Review(v) = reply else { panic!("refused") };
        (v, outcome)
    }

    #[test]
    fn a_create_is_recorded_by_a_base64_json_patch_and_the_uid_echoed() {
        let (v, outcome) = answered(&review_of(json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "operation": "CREATE", "object": deployment("shop/web:1.2.0")})));
        assert_eq!(outcome, Outcome::Recorded);
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(patch[0]["path"], "/metadata/annotations");
        assert!(patch.to_string().contains("/metadata/annotations/metricops.dev~1deployed-at"), "{patch}");
    }

    #[test]
    fn unknown_kinds_and_deletes_pass_untouched() {
        for (kind, op) in [("ConfigMap", "CREATE"), ("Deployment", "DELETE")] {
            let group = if kind == "ConfigMap" { "" } else { "apps" };
            let (v, outcome) = answered(&review_of(
                json!({"uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
                "operation": op, "object": deployment("a:1")}),
            ));
            assert_eq!(outcome, Outcome::NotAWorkload);
            assert_eq!(v["response"], json!({"uid": "u", "allowed": true}));
        }
    }

    #[test]
    fn v1beta1_is_answered_in_v1beta1() {
        let body = serde_json::to_vec(&json!({"apiVersion": V1BETA1, "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "operation": "CREATE", "object": deployment("a:1")}}))
        .unwrap();
        assert_eq!(answered(&body).0["apiVersion"], V1BETA1);
    }

    #[test]
    fn a_review_with_a_uid_but_no_object_is_allowed_with_a_warning() {
        let (v, outcome) = answered(&review_of(
            json!({"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "operation": "CREATE"}),
        ));
        assert_eq!(outcome, Outcome::Malformed);
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"]["warnings"][0].as_str().unwrap().contains("no object"));
    }

    #[test]
    fn what_is_not_a_review_gets_a_400_naming_the_problem() {
        for (body, says) in [
            (&b"{not json"[..], "not JSON"),
            (br#"{"apiVersion":"v1","kind":"Pod"}"#, "apiVersion \"v1\""),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "without a request"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#, "request.uid"),
            (br#"[1,2]"#, "no apiVersion"),
        ] {
            let (status, reply, _, _) = review(body, now());
            assert_eq!(status, StatusCode::BAD_REQUEST);
            let Reply::Refused(text) = reply else { panic!("answered {}", String::from_utf8_lossy(body)) };
            assert!(text.contains(says), "{text}");
        }
    }
}
