//! End to end, for real: Debian's Prometheus and Alertmanager on loopback, a tiny app that fails on
//! the bad version, a sync loop playing Argo CD, and `metricops serve` in between. The story: a bad
//! deploy lands on main, the app fails, the rule fires, the revert lands on main, the app runs the
//! previous version again, the alert resolves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use metricops::config::Config;

use crate::support::http::{get, request, sample};

use crate::support::monitoring::{App, SyncLoop, alertmanager, prometheus, require, wait};

const KUSTOMIZATION: &str = "apps/checkout/overlays/prod/kustomization.yaml";
pub(crate) const TOKEN: &str = "alertmanager-token-for-tests";

/// The manifests repository: a bare repo (the remote) and a clone to commit in, with real dates.
pub(crate) struct Manifests {
    pub dir: tempfile::TempDir,
    pub bare: PathBuf,
    work: PathBuf,
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kustomization(tag: &str) -> String {
    format!(
        "resources:\n- ../../base\nimages:\n- name: ghcr.io/shop/checkout\n  newTag: \"{tag}\" # promoted by CI\n"
    )
}

impl Manifests {
    pub fn new(rule_annotation: Option<&str>) -> Manifests {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("manifests.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(dir.path(), &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(&work, &["config", "user.name", "Shop CI"]);
        git(&work, &["config", "user.email", "ci@shop.example"]);
        let annotations = rule_annotation
            .map(|r| {
                format!("  annotations:\n    metricops.dev/rule: '{r}'\n    metricops.dev/rule-for: 2s\n")
            })
            .unwrap_or_default();
        let deployment = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\n  namespace: shop\n{annotations}spec:\n  template:\n    spec:\n      containers:\n      - name: checkout\n        image: ghcr.io/shop/checkout\n"
        );
        std::fs::create_dir_all(work.join("apps/checkout/base")).unwrap();
        std::fs::create_dir_all(work.join("apps/checkout/overlays/prod")).unwrap();
        std::fs::write(work.join("apps/checkout/base/deployment.yaml"), deployment).unwrap();
        std::fs::write(work.join(KUSTOMIZATION), kustomization("1.4.2")).unwrap();
        let m = Manifests { dir, bare, work };
        m.commit("Add checkout 1.4.2");
        m
    }

    fn commit(&self, msg: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", msg]);
        git(&self.work, &["push", "-q", self.bare.to_str().unwrap(), "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Writes one file and commits it to main.
    /// Takes what others (the bot) pushed to main.
    fn pull(&self) {
        git(&self.work, &["pull", "-q", "--ff-only", self.bare.to_str().unwrap(), "main"]);
    }

    pub fn write(&self, path: &str, text: &str, msg: &str) -> String {
        self.pull();
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self.commit(msg)
    }

    pub fn deploy(&self, tag: &str) -> String {
        self.pull();
        std::fs::write(self.work.join(KUSTOMIZATION), kustomization(tag)).unwrap();
        self.commit(&format!("deploy checkout {tag} to prod"))
    }

    pub fn main(&self) -> String {
        git(&self.bare, &["rev-parse", "main"])
    }

    pub fn config(&self, extra: &str) -> Config {
        Config::parse(&self.config_text(extra)).unwrap_or_else(|e| panic!("{e}\n{}", self.config_text(extra)))
    }

    /// The config's text: plain git forge on the bare repo, merge policy, bearer-token webhooks.
    pub fn config_text(&self, extra: &str) -> String {
        std::fs::write(self.dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let text = format!(
            "repos:\n- name: shop\n  url: {bare}\nworkloads:\n- name: shop/checkout\n  repo: shop\n  paths: [apps/checkout]\n  image: ghcr.io/shop/checkout\npolicy:\n  action: merge\n  max_culprit_age: 24h\nserver:\n  webhook_auth:\n    bearer_token_file: {token}\nstate_dir: {state}\n{extra}",
            bare = self.bare.display(),
            token = self.dir.path().join("token").display(),
            state = self.dir.path().join("state").display(),
        );
        text
    }
}

pub(crate) fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    sample(&get(addr, "/metrics").1, series).unwrap_or(0.0)
}

/// Prometheus has scraped the app at least twice (so a rate can be taken).
fn wait_for_scrapes(prom: std::net::SocketAddr) {
    wait("Prometheus to scrape the app", 60, || {
        let (_, body) = request(
            prom,
            "POST",
            "/api/v1/query",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "query=count_over_time(up%5B1m%5D)",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.pointer("/data/result/0/value/1")
            .and_then(|x| x.as_str())
            .and_then(|x| x.parse::<f64>().ok())
            .is_some_and(|n| n >= 2.0)
    });
}

const RULES: &str = "groups:\n- name: shop\n  rules:\n  - alert: CheckoutErrors\n    expr: rate(http_requests_total{code=\"500\"}[5s]) > 0\n    for: 2s\n    labels: {severity: critical, namespace: shop, deployment: checkout}\n    annotations: {summary: checkout serves errors}\n";

#[test]
fn a_bad_deploy_is_reverted_on_main_through_prometheus_and_alertmanager() {
    require("prometheus");
    require("prometheus-alertmanager");
    let m = Manifests::new(None);
    let app = App::start("0.0.0", "1.5.0");
    let sync = SyncLoop::start(&m.bare, KUSTOMIZATION, &app);
    wait("the sync loop to run 1.4.2", 30, || sync.running(&app) == "1.4.2");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(m.config("")), "127.0.0.1:0")).unwrap();
    let am = alertmanager(
        &m.dir.path().join("am"),
        &format!("http://{}/webhooks/alertmanager", server.addr),
        &m.dir.path().join("token"),
    );
    let prom = prometheus(&m.dir.path().join("prom"), app.addr, RULES, Some(am.addr));
    wait_for_scrapes(prom.addr);

    let good = m.main();
    let bad = m.deploy("1.5.0");
    let deployed = Instant::now();
    wait("the app to run the bad version", 30, || sync.running(&app) == "1.5.0");
    wait("the revert to land on main", 180, || m.main() != bad);
    let reverted = Instant::now();

    // The revert is one commit on top of the bad deploy, naming it, putting 1.4.2 back.
    let tip = m.main();
    assert_eq!(
        git(&m.bare, &["rev-parse", &format!("{tip}^")]),
        bad,
        "the revert sits right on the bad deploy\n{}",
        git(&m.bare, &["log", "--oneline", "main"])
    );
    let msg = git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(
        msg.starts_with("Revert \"deploy checkout 1.5.0 to prod\"")
            && msg.contains(&format!("Metricops-Culprit: {bad}")),
        "{msg}"
    );
    assert_eq!(git(&m.bare, &["show", &format!("main:{KUSTOMIZATION}")]) + "\n", kustomization("1.4.2"));
    assert_eq!(git(&m.bare, &["diff", &good, "main"]), "", "main is back to the good tree");
    assert_eq!(
        git(&m.bare, &["for-each-ref", "--format=%(refname)", "refs/heads"]),
        "refs/heads/main",
        "merge policy pushes to main, no branch left"
    );

    wait("the app to run 1.4.2 again", 30, || sync.running(&app) == "1.4.2");
    let rolled_back = Instant::now();
    let resolved_series = "metricops_alerts_received_total{source=\"alertmanager\",outcome=\"resolved\"}";
    wait("the alert to resolve (Alertmanager's resolved notification)", 120, || {
        metric(server.addr, resolved_series) >= 1.0
    });
    let resolved = Instant::now();
    assert_eq!(
        metric(server.addr, "metricops_deliveries_total{outcome=\"merged\"}"),
        1.0,
        "{}",
        get(server.addr, "/metrics").1
    );
    assert_eq!(
        m.main(),
        tip,
        "nothing after the revert: later notifications re-confirm, they never revert the revert"
    );

    // Figures for tests/bench/README.md (printed, never asserted).
    let first_failure = app.first_failure.lock().unwrap().expect("the app failed");
    let bot = metric(server.addr, "metricops_incident_duration_seconds_sum{decision=\"merge\"}");
    let steps: Vec<String> = ["fetch", "trace", "build", "deliver"]
        .iter()
        .map(|s| {
            format!(
                "{s} {:.0} ms",
                1000.0 * metric(server.addr, &format!("metricops_step_duration_seconds_sum{{step=\"{s}\"}}"))
                    / metric(server.addr, &format!("metricops_step_duration_seconds_count{{step=\"{s}\"}}"))
                        .max(1.0)
            )
        })
        .collect();
    let line = format!(
        "e2e alertmanager: deploy→first failure {:.2}s; first failure→revert on main {:.2}s (metricops webhook→revert pushed {:.0} ms [mean per incident: {}]; the rest is scrape, rule `for`, Alertmanager); revert→app on 1.4.2 {:.2}s; →alert resolved {:.2}s",
        (first_failure - deployed).as_secs_f64(),
        (reverted - first_failure).as_secs_f64(),
        bot * 1000.0,
        steps.join(", "),
        (rolled_back - reverted).as_secs_f64(),
        (resolved - reverted).as_secs_f64(),
    );
    record(&line);
    rt.block_on(server.stop());
}

#[test]
fn the_built_in_evaluator_reverts_from_an_annotation_rule_without_alertmanager() {
    require("prometheus");
    let m = Manifests::new(Some("rate(http_requests_total{code=\"500\"}[5s]) > 0"));
    let app = App::start("0.0.0", "1.5.0");
    let sync = SyncLoop::start(&m.bare, KUSTOMIZATION, &app);
    wait("the sync loop to run 1.4.2", 30, || sync.running(&app) == "1.4.2");
    let prom = prometheus(&m.dir.path().join("prom"), app.addr, "groups: []\n", None);
    wait_for_scrapes(prom.addr);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = m.config(&format!("prometheus:\n  url: http://{}\n  interval: 1s\n", prom.addr));
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    let holds = "metricops_rule_evaluations_total{rule=\"shop/checkout:checkout\",result=\"clear\"}";
    wait("the annotation rule to be evaluated", 60, || metric(server.addr, holds) >= 2.0);

    let bad = m.deploy("1.5.0");
    let deployed = Instant::now();
    wait("the revert to land on main", 180, || m.main() != bad);
    let reverted = Instant::now();
    let msg = git(&m.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(msg.contains(&format!("Metricops-Culprit: {bad}")), "{msg}");
    wait("the app to run 1.4.2 again", 30, || sync.running(&app) == "1.4.2");
    let text = get(server.addr, "/metrics").1;
    assert_eq!(
        sample(&text, "metricops_alerts_received_total{source=\"evaluator\",outcome=\"acted\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "metricops_rule_evaluations_total{rule=\"shop/checkout:checkout\",result=\"holds\"}")
            .unwrap_or(0.0)
            >= 3.0,
        "for: 2s needs three holding evaluations at 1s\n{text}"
    );
    record(&format!(
        "e2e evaluator: bad deploy→revert on main {:.2}s (1 s scrape, 1 s evaluation, for: 2s)",
        (reverted - deployed).as_secs_f64()
    ));
    rt.block_on(server.stop());
}

#[test]
fn an_unreachable_prometheus_is_unknown_and_never_reverts() {
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let port = crate::support::http::free_port();
    let rules =
        "rules:\n- {name: always, workload: shop/checkout, expr: 'vector(1) > 0', severity: critical}\n";
    let config = m.config(&format!("prometheus:\n  url: http://127.0.0.1:{port}\n  interval: 1s\n{rules}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    wait("three unknown evaluations", 60, || {
        metric(server.addr, "metricops_rule_evaluations_total{rule=\"always\",result=\"unknown\"}") >= 3.0
    });
    assert_eq!(m.main(), bad, "no data is not a reason to revert");
    assert_eq!(
        metric(server.addr, "metricops_alerts_received_total{source=\"evaluator\",outcome=\"acted\"}"),
        0.0
    );
    assert!(metric(server.addr, "metricops_errors_total{kind=\"prometheus_unreachable\"}") >= 3.0);
    rt.block_on(server.stop());
}

#[test]
fn a_prometheus_that_never_answers_is_unknown_and_serve_stays_responsive() {
    // Accepts connections, reads, never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming().flatten() {
            held.push(c);
        }
    });
    let m = Manifests::new(None);
    let bad = m.deploy("1.5.0");
    let rules =
        "rules:\n- {name: always, workload: shop/checkout, expr: 'vector(1) > 0', severity: critical}\n";
    let config = m.config(&format!(
        "prometheus:\n  url: http://127.0.0.1:{port}\n  interval: 1s\n  timeout: 1s\n{rules}"
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    wait("two evaluations that time out", 60, || {
        assert_eq!(get(server.addr, "/healthz").0, 200, "serve answers while Prometheus hangs");
        metric(server.addr, "metricops_rule_evaluations_total{rule=\"always\",result=\"unknown\"}") >= 2.0
    });
    assert!(metric(server.addr, "metricops_errors_total{kind=\"prometheus_unreachable\"}") >= 2.0);
    assert_eq!(m.main(), bad, "no answer is not a reason to revert");
    rt.block_on(server.stop());
}

/// Appends a figure line to target/e2e-timings.txt (read by tests/bench/e2e.sh) and prints it.
fn record(line: &str) {
    println!("{line}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-timings.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}
