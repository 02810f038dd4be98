//! `POST /webhooks/admission` bodies: any bytes get a 200 or a 400, never a panic; a 200 is an
//! AdmissionReview that allows, echoes the uid, and whose JSON patch applies to the object it came
//! with and records the deploy time.
#![no_main]
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap();
    let (status, text) = metricops::server::admission::answer_body(body, now);
    assert!(status == 200 || status == 400, "status {status}: {text}");
    if status == 400 {
        assert!(!text.is_empty(), "a 400 names the problem");
        return;
    }
    let answer: Value = serde_json::from_str(&text).expect("a 200 is JSON");
    let request: Value = serde_json::from_slice(body).expect("a 200 answers a JSON review");
    let response = &answer["response"];
    assert_eq!(response["allowed"], Value::Bool(true), "never a denial: {text}");
    assert_eq!(response["uid"], request["request"]["uid"], "the uid echoed");
    if let Some(p) = response.get("patch").and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("the patch is a JSON patch");
        let mut object = request["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("the patch applies: {e}: {text}"));
        assert!(
            object.pointer("/metadata/annotations/metricops.dev~1deployed-at").is_some_and(Value::is_string),
            "the deploy time recorded: {object}"
        );
    }
});
