//! The admission webhook as the Kubernetes API server uses it: real AdmissionReview JSON
//! (fixtures/kube/admission, checked against the Kubernetes schemas by kube_fixtures.rs) posted
//! over real TLS with a throwaway certificate; the returned JSON Patch applied to the object, as the
//! API server does, and the result read back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::e2e::Manifests;
use crate::support::http::wait_until;
use crate::support::throwaway_cert;

fn fixture(name: &str) -> Value {
    let p = format!("{}/fixtures/kube/admission/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A server with `server.tls` on the files in `dir`.
fn start(m: &Manifests, dir: &Path, rt: &tokio::runtime::Runtime) -> metricops::server::Running {
    let tls = format!(
        "  tls:\n    cert_file: {}\n    key_file: {}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let text = m.config_text("").replace("server:\n", &format!("server:\n{tls}"));
    let config = metricops::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap()
}

/// A certificate in a fresh manifests world, the server on it, and a client trusting it.
fn started(rt: &tokio::runtime::Runtime) -> (Manifests, metricops::server::Running, reqwest::Client) {
    let m = Manifests::new(None);
    throwaway_cert(m.dir.path());
    let server = start(&m, m.dir.path(), rt);
    let client = client(&std::fs::read(m.dir.path().join("cert.pem")).unwrap(), &server);
    (m, server, client)
}

/// A client that trusts only the certificate in `cert_pem`.
fn client(cert_pem: &[u8], server: &metricops::server::Running) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem).unwrap())
        .resolve("localhost", server.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, port: u16, body: Vec<u8>) -> reqwest::Result<(u16, String)> {
    let r = client
        .post(format!("https://localhost:{port}/webhooks/admission"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The object after the API server applied the answer's patch (the object itself without one).
fn patched(review: &Value, answer: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    if let Some(p) = answer["response"]["patch"].as_str() {
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).expect("the patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).expect("the patch is an RFC 6902 patch");
        json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("the patch does not apply: {e}"));
    }
    object
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

#[test]
fn reviews_over_tls_are_answered_allowed_and_the_patch_records_the_deploy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_m, server, client) = started(&rt);
    let port = server.addr.port();
    let ask = |name: &str| {
        let review = fixture(name);
        let (status, body) = rt.block_on(post(&client, port, serde_json::to_vec(&review).unwrap())).unwrap();
        assert_eq!(status, 200, "{name}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        // The shape of the reference answers (../shared/reference/kubernetes-admission/*response*).
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(answer["kind"], "AdmissionReview", "{name}");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"], "{name}: the uid is echoed");
        assert_eq!(answer["response"]["allowed"], true, "{name}: a deploy is never blocked");
        for key in answer["response"].as_object().unwrap().keys() {
            assert!(
                ["uid", "allowed", "patchType", "patch", "warnings"].contains(&key.as_str()),
                "{name}: {key}"
            );
        }
        let object = patched(&review, &answer);
        (review, answer, object)
    };

    // CREATE: the time, the images and the GitOps origin on the object.
    let (review, answer, object) = ask("deployment.create.json");
    let at = annotation(&object, "metricops.dev/deployed-at").expect("deployed-at recorded");
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("deployed-at is RFC 3339");
    assert!((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds().abs() < 300);
    let images: Value = serde_json::from_str(annotation(&object, "metricops.dev/images").unwrap()).unwrap();
    let containers =
        review["request"]["object"]["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    for c in containers {
        assert_eq!(images[c["name"].as_str().unwrap()], c["image"], "{images}");
    }
    assert!(annotation(&object, "metricops.dev/origin").is_some(), "{object}");
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    // Everything else is as it was.
    let mut before = review["request"]["object"].clone();
    let mut after = object.clone();
    before["metadata"]["annotations"].take();
    after["metadata"]["annotations"].take();
    assert_eq!(before, after);
    for (k, v) in review["request"]["object"]["metadata"]["annotations"].as_object().into_iter().flatten() {
        assert_eq!(&object["metadata"]["annotations"][k], v, "annotation {k} kept");
    }

    // UPDATE of an image: the images before kept too.
    let (_, _, object) = ask("deployment.update-image.json");
    let before: Value =
        serde_json::from_str(annotation(&object, "metricops.dev/previous-images").unwrap()).unwrap();
    let now: Value = serde_json::from_str(annotation(&object, "metricops.dev/images").unwrap()).unwrap();
    assert_eq!(before["checkout"], "ghcr.io/acme/checkout:1.14.1");
    assert_eq!(now["checkout"], "ghcr.io/acme/checkout:1.14.2");

    // A StatefulSet and a CronJob are workloads too.
    let (_, _, object) = ask("statefulset.update.json");
    assert!(annotation(&object, "metricops.dev/previous-images").is_some(), "{object}");
    let (_, _, object) = ask("cronjob.create.json");
    assert!(annotation(&object, "metricops.dev/images").unwrap().contains(':'), "{object}");

    // UPDATE of replicas only: nothing new recorded; the record the object had stays.
    let (review, answer, object) = ask("deployment.update-replicas.json");
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    assert_eq!(
        annotation(&object, "metricops.dev/deployed-at"),
        annotation(&review["request"]["oldObject"], "metricops.dev/deployed-at"),
    );

    // A dry run records nothing; a ConfigMap passes untouched.
    for name in ["deployment.create-dryrun.json", "configmap.create.json"] {
        let (review, answer, object) = ask(name);
        assert!(answer["response"].get("patch").is_none(), "{name}: {answer}");
        assert_eq!(object, review["request"]["object"], "{name}");
    }

    // A bad rule: allowed, recorded, and the problems as warnings kubectl shows.
    let (_, answer, object) = ask("deployment.create-bad-rule.json");
    assert!(annotation(&object, "metricops.dev/deployed-at").is_some());
    let warnings = answer["response"]["warnings"].as_array().expect("warnings").clone();
    let text = serde_json::to_string(&warnings).unwrap();
    assert!(text.contains("metricops.dev/rule is not valid PromQL"), "{text}");
    assert!(text.contains("metricops.dev/rule-for \\\"5 minutes\\\" is not a duration"), "{text}");

    // /metrics counts them by kind and outcome.
    let metrics = server.metrics.render();
    assert!(
        metrics.contains(r#"metricops_admission_reviews_total{kind="Deployment",outcome="recorded"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"metricops_admission_reviews_total{kind="other",outcome="not_a_workload"} 1"#),
        "{metrics}"
    );
    rt.block_on(server.stop());
}

#[test]
fn malformed_reviews_get_an_answer_never_a_500() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_m, server, client) = started(&rt);
    let port = server.addr.port();
    let mut truncated = serde_json::to_vec(&fixture("deployment.create.json")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let mut no_object = fixture("deployment.create.json");
    no_object["request"]["object"] = Value::Null;
    let mut deep = String::new();
    for _ in 0..10_000 {
        deep.push('[');
    }
    for (body, status, says) in [
        (truncated, 400, "not JSON"),
        (b"".to_vec(), 400, "not JSON"),
        (deep.into_bytes(), 400, "not JSON"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#.to_vec(),
            400,
            "request.uid",
        ),
        (serde_json::to_vec(&no_object).unwrap(), 200, "no object"),
        (vec![0xff, 0xfe, 0x00], 400, "not JSON"),
    ] {
        let (got, text) = rt.block_on(post(&client, port, body)).unwrap();
        assert_eq!(got, status, "{text}");
        assert!(text.contains(says), "{text}");
        if status == 200 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["response"]["allowed"], true);
        }
    }
    // Over the limit: 413 before the body is read.
    let huge = vec![b' '; 9 * 1024 * 1024];
    let (got, _) = rt.block_on(post(&client, port, huge)).unwrap();
    assert_eq!(got, 413);
    // And the server still answers.
    let (got, _) = rt
        .block_on(post(&client, port, serde_json::to_vec(&fixture("deployment.create.json")).unwrap()))
        .unwrap();
    assert_eq!(got, 200);
    rt.block_on(server.stop());
}

#[test]
fn a_rotated_certificate_is_used_without_a_restart() {
    let m = Manifests::new(None);
    let dir = m.dir.path();
    throwaway_cert(dir);
    let first = std::fs::read(dir.join("cert.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start(&m, dir, &rt);
    let port = server.addr.port();
    let body = serde_json::to_vec(&fixture("deployment.create.json")).unwrap();
    let old = client(&first, &server);
    assert_eq!(rt.block_on(post(&old, port, body.clone())).unwrap().0, 200);

    // Half a rotation (a new certificate, the old key) keeps the old pair in use.
    let next = tempfile::tempdir().unwrap();
    throwaway_cert(next.path());
    std::fs::copy(next.path().join("cert.pem"), dir.join("cert.pem")).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        rt.block_on(post(&old, port, body.clone())).unwrap().0,
        200,
        "a bad pair replaced the good one"
    );

    // The whole rotation: new connections get the new certificate.
    std::fs::copy(next.path().join("key.pem"), dir.join("key.pem")).unwrap();
    let new = client(&std::fs::read(dir.join("cert.pem")).unwrap(), &server);
    wait_until("the new certificate is served", Duration::from_secs(60), || {
        rt.block_on(post(&new, port, body.clone())).is_ok_and(|(s, _)| s == 200)
    });
    let fresh_old = client(&first, &server);
    assert!(
        rt.block_on(post(&fresh_old, port, body.clone())).is_err(),
        "the old certificate is still served"
    );
    rt.block_on(server.stop());
}
