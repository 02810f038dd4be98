//! Benchmark (ignored in the suite): alert webhook → pull request created on the GitHub stand-in,
//! one incident at a time, over N workloads each with its own culprit.
//!
//! `cargo test --release --test tests bench_pr -- --ignored --nocapture` (N from `BENCH_INCIDENTS`,
//! default 1000). Prints p50 / p90 / p99 / max and appends them to `target/bench-pr.txt`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::github::GitHub;
use crate::support::http::request;
use crate::support::{Repo, deployment};

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_pr_alert_webhook_to_pull_request() {
    let n: usize = std::env::var("BENCH_INCIDENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // The engine's own log, with microsecond times, to see where an incident waits:
    // BENCH_LOG=metricops=debug (a tracing filter); it goes to target/bench-pr.log.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        let file = std::fs::File::create(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-pr.log"),
        )
        .expect("target/bench-pr.log can be written");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    }
    let gh = GitHub::start();
    let bare = gh.add_repo("shop", "manifests", 4242);
    let work = Repo::new();
    for i in 0..n {
        work.write(
            &format!("apps/w{i}/deployment.yaml"),
            &deployment(&format!("w{i}"), &format!("ghcr.io/shop/w{i}:1.0.0")),
        );
    }
    work.commit("everything at 1.0.0");
    for i in 0..n {
        work.write(
            &format!("apps/w{i}/deployment.yaml"),
            &deployment(&format!("w{i}"), &format!("ghcr.io/shop/w{i}:1.1.0")),
        );
        work.commit(&format!("deploy w{i} 1.1.0"));
    }
    work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.pem"), gh.private_key_pem()).unwrap();
    let workloads: String = (0..n)
        .map(|i| {
            format!("- name: shop/w{i}\n  repo: shop\n  paths: [apps/w{i}]\n  image: ghcr.io/shop/w{i}\n")
        })
        .collect();
    let text = format!(
        "repos:\n- name: shop\n  url: {url}\n  forge: github\nworkloads:\n{workloads}policy:\n  action: propose\n  max_culprit_age: 3650d\n  cooldown: 0s\n  max_reverts_per_day_per_repo: 0\n  max_reverts_per_day: 0\ngithub:\n  app_id: {app}\n  private_key_file: {key}\n  api_url: {api}\nstate_dir: {state}\n",
        url = gh.git_url("shop", "manifests"),
        app = crate::support::github::APP_ID,
        key = dir.path().join("app.pem").display(),
        api = gh.url(),
        state = dir.path().join("state").display(),
    );
    let config = metricops::config::Config::parse(&text).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    let mut took = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!(
            r#"{{"name":"BenchErrors","severity":"critical","fingerprint":"b{i}","startsAt":"2026-11-18T00:00:00Z","labels":{{"namespace":"shop","deployment":"w{i}"}}}}"#
        );
        let started = Instant::now();
        let (code, t) =
            request(server.addr, "POST", "/webhooks/generic", &[("Content-Type", "application/json")], &body);
        assert_eq!(code, 200, "{t}");
        loop {
            if gh.pull_count("shop", "manifests") > i {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "incident {i}: no PR after 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(started.elapsed());
        spans.push((started, Instant::now()));
    }
    assert_eq!(gh.pulls("shop", "manifests").len(), n, "one PR per culprit");
    let by_time = took.clone();
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p).ceil() as usize).saturating_sub(1).min(took.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let line = format!(
        "alert webhook → PR on the stand-in, {n} incidents: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(*took.last().unwrap())
    );
    // Where the time went: the engine's own step histograms.
    let metrics = crate::support::http::get(server.addr, "/metrics").1;
    let mut steps = String::new();
    for step in ["fetch", "trace", "build", "deliver"] {
        let series = |k: &str| format!("metricops_step_duration_seconds_{k}{{step=\"{step}\"}}");
        let sum = crate::support::http::sample(&metrics, &series("sum")).unwrap_or(0.0);
        let count = crate::support::http::sample(&metrics, &series("count")).unwrap_or(0.0);
        if count > 0.0 {
            steps.push_str(&format!(" {step} {:.1} ms;", sum / count * 1e3));
        }
    }
    let requests = gh.requests();
    let standin: Duration = requests.iter().map(|r| r.took).sum();
    let git: Duration = requests.iter().filter(|r| r.path.contains(".git/")).map(|r| r.took).sum();
    let line = format!(
        "{line} (mean per incident:{steps} deliver includes build; the stand-in answering: {:.1} ms, of which git {:.1} ms, over {:.1} requests)",
        ms(standin) / n as f64,
        ms(git) / n as f64,
        requests.len() as f64 / n as f64
    );
    // Which requests, per incident: method and path with numbers and names of this run made generic.
    let mut kinds: std::collections::BTreeMap<String, (usize, Duration)> = Default::default();
    for r in &requests {
        let shape: String = r
            .path
            .split_inclusive(['/', '?', '&', '='])
            .map(|seg| match seg.strip_suffix(['/', '?', '&', '=']) {
                Some(v) if v.chars().any(|c| c.is_ascii_digit()) => format!("N{}", &seg[v.len()..]),
                None if seg.chars().any(|c| c.is_ascii_digit()) => "N".to_string(),
                _ => seg.to_string(),
            })
            .collect();
        let k = kinds.entry(format!("{} {shape}", r.method)).or_default();
        k.0 += 1;
        k.1 += r.took;
    }
    let mut line = line;
    for (k, (count, took)) in &kinds {
        line.push_str(&format!(
            "\n  {:.2} × {k}: {:.1} ms each",
            *count as f64 / n as f64,
            ms(*took) / *count as f64
        ));
    }
    // One incident at the median, as a timeline: what the stand-in was asked, and when.
    let median = pct(0.5);
    if let Some(i) = by_time.iter().position(|d| *d == median) {
        let (from, to) = spans[i];
        line.push_str(&format!("\n  timeline of incident {i} ({:.1} ms), from the alert's POST (head arrived, body read → answered):", ms(median)));
        for r in requests.iter().filter(|r| r.at + r.took >= from && r.at <= to) {
            line.push_str(&format!(
                "\n    {:>6.1} {:>6.1} → {:>6.1} ms  {} {} {}",
                ms(r.arrived.saturating_duration_since(from)),
                ms(r.at.saturating_duration_since(from)),
                ms((r.at + r.took).saturating_duration_since(from)),
                r.status,
                r.method,
                r.path
            ));
        }
    }
    println!("{line}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-pr.txt");
    let _ = std::fs::write(out, format!("{line}\n"));
    rt.block_on(server.stop());
}
