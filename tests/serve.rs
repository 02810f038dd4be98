//! `metricops serve` as a sender sees it: credentials, every alert source, bad bodies, a full queue,
//! the health and metrics endpoints; and `metricops simulate`.

use std::sync::Arc;

use crate::e2e::{Manifests, TOKEN, git, metric};
use crate::support::http::{get, request, wait_until};
use crate::support::{metricops, throwaway_cert};

const BEARER: &str = "Bearer alertmanager-token-for-tests";

fn generic(deployment: &str) -> String {
    format!(
        r#"{{"name":"CheckoutErrors","severity":"critical","labels":{{"namespace":"shop","deployment":"{deployment}"}},"annotations":{{"summary":"5xx above 1%"}}}}"#
    )
}

/// `metricops simulate --config CONFIG --alert ALERT` with `extra` arguments.
fn simulate(config: &std::path::Path, alert: &std::path::Path, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["simulate", "--config", config.to_str().unwrap(), "--alert", alert.to_str().unwrap()];
    args.extend_from_slice(extra);
    metricops(&args)
}

#[test]
fn alert_webhooks_check_credentials_parse_every_source_and_revert() {
    assert_eq!(format!("Bearer {TOKEN}"), BEARER);
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(m.config("")), "127.0.0.1:0")).unwrap();
    let a = server.addr;
    let json = ("Content-Type", "application/json");

    assert_eq!(get(a, "/healthz").0, 200);
    wait_until("ready", std::time::Duration::from_secs(30), || get(a, "/readyz").0 == 200);

    // Credentials first.
    let (s, t) = request(a, "POST", "/webhooks/generic", &[json], &generic("checkout"));
    assert_eq!(s, 401, "{t}");
    assert!(t.contains("server.webhook_auth"), "{t}");
    assert_eq!(
        request(
            a,
            "POST",
            "/webhooks/generic",
            &[json, ("Authorization", "Bearer wrong")],
            &generic("checkout")
        )
        .0,
        401
    );
    assert_eq!(
        request(
            a,
            "POST",
            "/webhooks/generic",
            &[json, ("Authorization", "Basic YTpi")],
            &generic("checkout")
        )
        .0,
        401
    );

    // Bodies that are not what the endpoint speaks: 400, saying why.
    let (s, t) = request(
        a,
        "POST",
        "/webhooks/alertmanager",
        &[json, ("Authorization", BEARER)],
        r#"{"version":"3","status":"firing","alerts":[]}"#,
    );
    assert_eq!(
        (s, t.trim()),
        (400, "unsupported Alertmanager webhook version \"3\" (this speaks version 4)")
    );
    let (s, t) = request(
        a,
        "POST",
        "/webhooks/generic",
        &[json, ("Authorization", BEARER)],
        r#"{"name":"x","status":"sideways"}"#,
    );
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("\"sideways\""), "{t}");

    // Grafana's own example maps to no workload: 200 (so it is not retried forever), counted.
    let grafana = std::fs::read_to_string(format!(
        "{}/fixtures/grafana/webhook-notifier.example.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let (s, t) = request(a, "POST", "/webhooks/grafana", &[json, ("Authorization", BEARER)], &grafana);
    assert_eq!((s, t.trim()), (200, "queued 2 alerts"));
    wait_until("the unmatched Grafana alerts to be counted", std::time::Duration::from_secs(30), || {
        metric(a, "metricops_alerts_received_total{source=\"grafana\",outcome=\"unmatched\"}") == 2.0
    });
    assert_eq!(m.main(), bad);

    // A generic alert for the workload: the revert lands on main (merge policy).
    let (s, _) =
        request(a, "POST", "/webhooks/generic", &[json, ("Authorization", BEARER)], &generic("checkout"));
    assert_eq!(s, 200);
    wait_until("the revert on main", std::time::Duration::from_secs(60), || m.main() != bad);
    let msg = git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(msg.contains(&format!("Metricops-Culprit: {bad}")), "{msg}");
    // The push is not the incident's last step: its records and counts follow.
    wait_until("the incident counted", std::time::Duration::from_secs(30), || {
        metric(a, "metricops_incident_duration_seconds_count{decision=\"merge\"}") == 1.0
    });

    let (s, text) = get(a, "/metrics");
    assert_eq!(s, 200);
    for want in [
        "metricops_alerts_received_total{source=\"generic\",outcome=\"acted\"} 1",
        "metricops_decisions_total{decision=\"merge\"} 1",
        "metricops_reverts_total{mode=\"commit\"} 1",
        "metricops_deliveries_total{outcome=\"merged\"} 1",
        "metricops_webhook_requests_total{endpoint=\"generic\",code=\"401\"} 3",
        "metricops_webhook_requests_total{endpoint=\"alertmanager\",code=\"400\"} 1",
        "metricops_incident_duration_seconds_count{decision=\"merge\"} 1",
    ] {
        assert!(text.contains(want), "/metrics lacks {want:?}:\n{text}");
    }
    rt.block_on(server.stop());
}

#[test]
fn a_full_queue_answers_503_so_the_sender_retries() {
    // A git remote that accepts connections and never answers keeps the engine busy on job one.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming().flatten() {
            let _ = seen_tx.send(());
            held.push(c);
        }
    });
    let m = Manifests::new(None);
    let text = m
        .config_text("server:\n  queue: 1\n")
        .replace(&format!("url: {}", m.bare.display()), &format!("url: http://127.0.0.1:{port}/shop.git"));
    // The generated text already has a `server:` section: fold the queue into it.
    // One incident at a time: the first delivery holds the only slot, the second waits in the queue.
    let text = text
        .replace("server:\n  queue: 1\n", "")
        .replace("server:\n", "server:\n  queue: 1\n  concurrency: 1\n");
    let config = metricops::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    let post = || {
        request(
            server.addr,
            "POST",
            "/webhooks/generic",
            &[("Content-Type", "application/json"), ("Authorization", BEARER)],
            &generic("checkout"),
        )
        .0
    };
    assert_eq!(post(), 200);
    seen_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the engine to start fetching");
    assert_eq!(post(), 200, "one delivery fits in the queue");
    assert_eq!(post(), 503, "the next is refused, not dropped");
    assert!(metric(server.addr, "metricops_errors_total{kind=\"queue_full\"}") >= 1.0);
    // The fetch that never gets an answer is not waited for (serve does the same at its stop).
    rt.shutdown_background();
}

#[test]
fn simulate_prints_every_step_and_changes_nothing_unless_executed() {
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(&config, m.config_text("")).unwrap();
    let alert = m.dir.path().join("alert.json");
    std::fs::write(&alert, generic("checkout")).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--source", "generic"];
        args.extend_from_slice(extra);
        simulate(&config, &alert, &args)
    };
    let r = run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for want in [
        "1. Alerts (generic, 1 in the payload)",
        "3. Incident shop/checkout@",
        "deploy checkout 1.5.0 to prod",
        "5. Decision: merge",
        "-  newTag: \"1.5.0\"",
        "+  newTag: \"1.4.2\"",
        "title: Revert shop/checkout: checkout 1.5.0 → 1.4.2",
        "8. Dry run: nothing pushed",
    ] {
        assert!(r.stdout.contains(want), "simulate output lacks {want:?}:\n{}", r.stdout);
    }
    assert_eq!(m.main(), bad, "a dry run pushes nothing");

    let r = run(&["--execute"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("8. Delivered: merged"), "{}", r.stdout);
    assert_ne!(m.main(), bad);

    std::fs::write(&alert, "{\"alerts\": 7}").unwrap();
    let r = run(&[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("as a generic webhook") && r.stderr.contains("`alerts` is not a list"),
        "{}",
        r.stderr
    );
}

#[test]
fn serve_speaks_https_when_configured() {
    let m = Manifests::new(None);
    let dir = m.dir.path();
    throwaway_cert(dir);
    let tls = format!(
        "  tls:\n    cert_file: {}\n    key_file: {}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let text = m.config_text("").replace("server:\n", &format!("server:\n{tls}"));
    let config = metricops::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    let port = server.addr.port();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.join("cert.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async {
        let r =
            client.get(format!("https://localhost:{port}/healthz")).send().await.expect("an HTTPS answer");
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    assert_ne!(get(server.addr, "/healthz").0, 200);
    rt.block_on(server.stop());
}

#[test]
fn the_readme_config_reference_is_a_valid_config() {
    let readme = std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let section = readme.split("## Config reference").nth(1).expect("a Config reference section");
    let yaml = section.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
    let c = metricops::config::Config::parse(yaml)
        .unwrap_or_else(|e| panic!("the README's config does not parse:\n{e}"));
    assert_eq!(
        (c.workloads.len(), c.rules.len(), c.policy().merge_rules.len(), c.workloads[0].pause.len()),
        (1, 2, 1, 2)
    );
}

#[test]
fn a_storm_of_alerts_makes_a_bounded_commit_message_and_pr_body() {
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(&config, m.config_text("")).unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let one = |name: &str, i: usize| {
        format!(
            r#"{{"status":"firing","labels":{{"alertname":"{name}","namespace":"shop","deployment":"checkout","severity":"critical","pod":"checkout-{i}"}},"annotations":{{"summary":"5xx on pod {i}"}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph?g0.expr={i}","fingerprint":"{i:016x}"}}"#
        )
    };
    let mut alerts: Vec<String> = (0..3000).map(|i| one("CheckoutErrors", i)).collect();
    alerts.extend((0..25).map(|k| one(&format!("Other{k}"), 10_000 + k)));
    let body = format!(
        r#"{{"version":"4","status":"firing","receiver":"metricops","groupKey":"g","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am","alerts":[{}]}}"#,
        alerts.join(",")
    );
    let alert = m.dir.path().join("storm.json");
    std::fs::write(&alert, body).unwrap();
    let r = simulate(&config, &alert, &["--execute"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("| CheckoutErrors (×3000) | critical |"),
        "{}",
        &r.stdout[..r.stdout.len().min(4000)]
    );
    assert!(r.stdout.contains("… and 6 more kinds of alert"), "{}", &r.stdout[..r.stdout.len().min(4000)]);
    assert!(r.stdout.contains("   … and 2975 more\n"), "simulate lists 50 alerts, not 3025");
    let pr = r.stdout.split("7. Pull request").nth(1).and_then(|t| t.split("\n8. ").next()).unwrap();
    assert!(pr.chars().count() < 10_000, "a PR body of {} characters", pr.chars().count());
    assert!(pr.contains("<!-- metricops: culprit="), "the marker is kept");
    assert_ne!(m.main(), bad, "the storm is reverted");
    let msg = crate::e2e::git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(msg.len() < 4096, "a {}-byte commit message:\n{}", msg.len(), &msg[..msg.len().min(2000)]);
    assert!(msg.contains("CheckoutErrors ×3000 (critical)"), "{msg}");
}

#[test]
fn a_lock_file_a_crash_left_in_the_mirror_does_not_block_the_next_incident() {
    let m = Manifests::new(None);
    m.deploy("1.5.0");
    let config = m.dir.path().join("metricops.yaml");
    // No cooldown: the second bad deploy, minutes after the first revert, is reverted too.
    std::fs::write(
        &config,
        m.config_text("").replace("  max_culprit_age: 24h\n", "  max_culprit_age: 24h\n  cooldown: 0s\n"),
    )
    .unwrap();
    let alert = m.dir.path().join("alert.json");
    std::fs::write(&alert, generic("checkout")).unwrap();
    let run = || simulate(&config, &alert, &["--source", "generic", "--execute"]);
    let r = run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // A crash mid-fetch, an hour ago.
    let lock = m.dir.path().join("state/mirrors/shop.git/refs/remotes/origin/main.lock");
    std::fs::write(&lock, "").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&lock).unwrap().set_modified(hour_ago).unwrap();
    let bad = m.deploy("1.6.0");
    let r = run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("removed a lock file a crash left in the mirror"), "{}", r.stderr);
    assert_ne!(m.main(), bad, "the second bad deploy is reverted too");
}

#[test]
fn a_password_in_a_repo_url_reaches_no_log_line_error_or_output() {
    let m = Manifests::new(None);
    m.deploy("1.5.0");
    // An HTTPS remote with a password in it, unreachable: every error names it.
    let port = crate::support::http::free_port();
    let secret = "Pa55w0rd-in-the-url";
    let text = m.config_text("").replace(
        &format!("url: {}", m.bare.display()),
        &format!("url: https://deploy:{secret}@127.0.0.1:{port}/shop/manifests.git"),
    );
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(&config, &text).unwrap();
    let alert = m.dir.path().join("alert.json");
    std::fs::write(&alert, generic("checkout")).unwrap();
    for format in ["text", "json"] {
        let r = simulate(&config, &alert, &["--source", "generic", "--log-format", format]);
        assert_ne!(r.code, 0, "the remote is unreachable");
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("deploy:***@127.0.0.1"), "the remote is named, redacted:\n{all}");
        assert!(!all.contains(secret), "the password leaked ({format}):\n{all}");
    }
}
