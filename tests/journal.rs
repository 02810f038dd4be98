//! Nothing acknowledged is lost: a delivery answered 200 is acted on after a failure (retried with
//! backoff, nothing re-sent) and after a `kill -9` (the journal, on the next start). `serve` as an
//! operator runs it: SIGTERM stops it with exit 0, and its JSON log is JSON lines only.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::e2e::{Manifests, TOKEN};
use crate::support::http::{free_port, get, request, wait_until};

fn firing() -> String {
    let now = chrono::Utc::now().to_rfc3339();
    format!(
        r#"{{"version":"4","status":"firing","receiver":"metricops","groupKey":"{{}}:{{alertname=\"CheckoutErrors\"}}","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am","alerts":[{{"status":"firing","labels":{{"alertname":"CheckoutErrors","namespace":"shop","deployment":"checkout","severity":"critical"}},"annotations":{{}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom","fingerprint":"f00dfeedf00dfeed"}}]}}"#
    )
}

/// The config with fast retries (1 s, at most 1 s apart).
fn config_text(m: &Manifests) -> String {
    m.config_text("").replace("server:\n", "server:\n  retry: {first: 1s, max: 1s, attempts: 60}\n")
}

fn post(addr: std::net::SocketAddr) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    request(
        addr,
        "POST",
        "/webhooks/alertmanager",
        &[("Content-Type", "application/json"), ("Authorization", &auth)],
        &firing(),
    )
}

/// The remote is away: fetching it fails, so the incident fails.
fn hide(m: &Manifests) -> std::path::PathBuf {
    let away = m.bare.with_extension("away");
    std::fs::rename(&m.bare, &away).unwrap();
    away
}

#[test]
fn a_failed_incident_is_retried_without_the_alert_being_sent_again() {
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let away = hide(&m);
    let config = metricops::config::Config::parse(&config_text(&m)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    let a = server.addr;
    wait_until("ready", Duration::from_secs(30), || get(a, "/readyz").0 == 200);
    let (code, text) = post(a);
    assert_eq!(code, 200, "{text}");
    let retried = "metricops_errors_total{kind=\"retry_scheduled\"}";
    wait_until("a retry to be scheduled", Duration::from_secs(30), || crate::e2e::metric(a, retried) >= 1.0);
    let journal = m.dir.path().join("state/journal");
    let entries = || metricops::journal::Journal::peek(&journal).unwrap().len();
    assert_eq!(entries(), 1, "the failing delivery is kept in the journal");
    assert_eq!(crate::e2e::metric(a, "metricops_journal_entries"), 1.0, "and /metrics says so");
    // The remote comes back; nothing is sent again.
    std::fs::rename(&away, &m.bare).unwrap();
    wait_until("the retried revert to land on main", Duration::from_secs(60), || m.main() != bad);
    let log = crate::e2e::git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(log.contains(&format!("Metricops-Culprit: {bad}")), "{log}");
    wait_until("the journal to be emptied", Duration::from_secs(30), || entries() == 0);
    assert_eq!(crate::e2e::metric(a, "metricops_journal_entries"), 0.0);
}

pub(crate) struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn serve(config: &std::path::Path, port: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_metricops"))
        .args(["serve", "--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("METRICOPS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("metricops serve starts");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("serve to be ready", Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/readyz").0 == 200
    });
    Serve(child)
}

#[test]
fn an_acknowledged_alert_survives_kill_9_and_is_acted_on_after_the_restart() {
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let away = hide(&m);
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(&config, config_text(&m)).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut first = serve(&config, port);
    let (code, text) = post(addr);
    assert_eq!(code, 200, "{text}");
    // Killed at once: no shutdown, nothing flushed by the process.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    std::fs::rename(&away, &m.bare).unwrap();
    assert_eq!(m.main(), bad, "nothing was reverted before the crash");
    // Started again, with nothing re-sent: the journal brings the delivery back.
    let _second = serve(&config, port);
    wait_until("the revert to land on main after the restart", Duration::from_secs(60), || m.main() != bad);
    let log = crate::e2e::git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(log.contains(&format!("Metricops-Culprit: {bad}")), "{log}");
}

#[test]
fn sigterm_stops_serve_with_exit_0_and_json_logs_are_json_lines_only() {
    let m = Manifests::new(None);
    m.deploy("1.5.0");
    let config = m.dir.path().join("metricops.yaml");
    std::fs::write(&config, config_text(&m)).unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = m.dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricops"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
            "--log-format",
            "json",
        ])
        .env_remove("METRICOPS_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("serve to be ready", Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/readyz").0 == 200
    });
    let (code, text) = post(addr);
    assert_eq!(code, 200, "{text}");
    let main_before = m.main();
    wait_until("the revert", Duration::from_secs(60), || m.main() != main_before);
    // SAFETY: a plain kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    let said = |m: &str| lines.iter().any(|l| l["fields"]["message"] == m);
    // By default, without METRICOPS_LOG: what it accepted, what it did, and that it stopped.
    for m in ["listening", "alert delivery accepted", "incident handled", "stopped"] {
        assert!(said(m), "no {m:?} line in:\n{text}");
    }
    assert!(!text.contains('\u{1b}'), "no colour codes in a log that is not a terminal");
}

#[test]
fn alerts_firing_in_alertmanager_while_the_bot_was_down_are_acted_on_at_start() {
    use crate::support::monitoring::{alertmanager, require};
    require("prometheus-alertmanager");
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    // Alertmanager's notifications go nowhere: the bot is down.
    let token = m.dir.path().join("am-token");
    std::fs::write(&token, TOKEN).unwrap();
    let am = alertmanager(&m.dir.path().join("am"), "http://127.0.0.1:9/webhooks/alertmanager", &token);
    let now = chrono::Utc::now().to_rfc3339();
    let alert = format!(
        r#"[{{"labels":{{"alertname":"CheckoutErrors","namespace":"shop","deployment":"checkout","severity":"critical"}},"annotations":{{"summary":"5xx"}},"startsAt":"{now}","generatorURL":"http://prom/graph"}}]"#
    );
    let (code, text) =
        request(am.addr, "POST", "/api/v2/alerts", &[("Content-Type", "application/json")], &alert);
    assert_eq!(code, 200, "{text}");
    wait_until("Alertmanager to hold the alert", Duration::from_secs(30), || {
        get(am.addr, "/api/v2/alerts").1.contains("CheckoutErrors")
    });
    let text = format!("{}alertmanager:\n  url: http://{}\n", config_text(&m), am.addr);
    let config = metricops::config::Config::parse(&text).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    wait_until("the revert of the alert Alertmanager held", Duration::from_secs(60), || m.main() != bad);
    let log = crate::e2e::git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(log.contains(&format!("Metricops-Culprit: {bad}")) && log.contains("CheckoutErrors"), "{log}");
}
