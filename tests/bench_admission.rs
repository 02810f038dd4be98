//! Benchmark (ignored in the suite): the admission webhook over TLS at a fixed rate, and the RSS
//! it costs.
//!
//! `cargo test --release --test tests bench_admission -- --ignored --nocapture`
//! (`BENCH_RATE` requests/s, default 1000; `BENCH_SECONDS`, default 30; `BENCH_CONNECTIONS`,
//! default 8). `metricops serve` runs as its own process with `server.tls` on a throwaway
//! certificate; an open-loop client sends the AdmissionReview of fixtures/kube/admission
//! (a Deployment CREATE and an image UPDATE, in turn) on a fixed schedule over keep-alive HTTPS
//! connections, each latency measured from when the request was due (so a stall counts against
//! every request it delayed). Every answer is checked (200, allowed, the uid echoed). Prints p50 /
//! p99 / p99.9 / max, the RSS idle and at the end, and writes them to `target/bench-admission.txt`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::http::{free_port, wait_until};
use crate::support::throwaway_cert;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_admission_over_tls() {
    metricops::adapters::install_crypto_provider();
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (rate, seconds, connections) =
        (env("BENCH_RATE", 1000), env("BENCH_SECONDS", 30), env("BENCH_CONNECTIONS", 8));
    let dir = tempfile::tempdir().unwrap();
    throwaway_cert(dir.path());
    let bare = dir.path().join("m.git");
    assert!(Command::new("git").args(["init", "-q", "--bare"]).arg(&bare).status().unwrap().success());
    let config = dir.path().join("metricops.yaml");
    std::fs::write(
        &config,
        format!(
            "repos:\n- name: m\n  url: {}\nworkloads: []\nserver:\n  tls:\n    cert_file: {d}/cert.pem\n    key_file: {d}/key.pem\ncluster:\n  enabled: false\nstate_dir: {d}/state\n",
            bare.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricops"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("metricops serve starts");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pem = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let client = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .resolve("localhost", addr)
            .pool_max_idle_per_host(1)
            .http1_only()
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{port}/webhooks/admission");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("BENCH_CLIENT_THREADS", 2) as usize)
        .enable_all()
        .build()
        .unwrap();
    let probe = client();
    wait_until("serve answers over TLS", Duration::from_secs(30), || {
        rt.block_on(probe.get(format!("https://localhost:{port}/healthz")).send()).is_ok()
    });
    let idle = rss_kib(child.id());
    let fixture = |name: &str| -> (Vec<u8>, String) {
        let p = format!("{}/fixtures/kube/admission/{name}", env!("CARGO_MANIFEST_DIR"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        (serde_json::to_vec(&v).unwrap(), v["request"]["uid"].as_str().unwrap().to_string())
    };
    let bodies =
        std::sync::Arc::new([fixture("deployment.create.json"), fixture("deployment.update-image.json")]);
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let clients: Vec<reqwest::Client> = (0..connections).map(|_| client()).collect();
    let both = rt.block_on(async {
        // Warm the connections (TLS handshakes are not what is measured).
        for c in &clients {
            c.post(&url).body(bodies[0].0.clone()).send().await.unwrap();
        }
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..total {
            let due = start + interval * i as u32;
            tokio::time::sleep_until(due).await;
            let (c, url, bodies) = (clients[i % clients.len()].clone(), url.clone(), bodies.clone());
            tasks.spawn(async move {
                let (body, uid) = &bodies[i % 2];
                let sent = tokio::time::Instant::now();
                let r =
                    c.post(&url).header("content-type", "application/json").body(body.clone()).send().await;
                let r = r.expect("an answer");
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                let (took, exchange) = (due.elapsed(), sent.elapsed());
                assert_eq!(v["response"]["allowed"], true);
                assert_eq!(v["response"]["uid"].as_str(), Some(uid.as_str()));
                (took, exchange)
            });
        }
        let mut lat = Vec::with_capacity(total);
        while let Some(t) = tasks.join_next().await {
            lat.push(t.unwrap());
        }
        lat
    });
    let mut lat: Vec<Duration> = both.iter().map(|b| b.0).collect();
    let mut ex: Vec<Duration> = both.iter().map(|b| b.1).collect();
    ex.sort();
    let end = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let line = format!(
        "admission over TLS, {rate} req/s for {seconds} s over {connections} connections ({} answers checked): from when due p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; the exchange alone (send to parsed answer) p50 {:.3} ms, p99 {:.3} ms; RSS idle {:.1} MB, after {:.1} MB",
        lat.len(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(pct(0.999)),
        ms(*lat.last().unwrap()),
        ms(ex[ex.len() / 2]),
        ms(ex[(ex.len() * 99 / 100).min(ex.len() - 1)]),
        idle as f64 / 1024.0,
        end as f64 / 1024.0,
    );
    println!("{line}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-admission.txt");
    let _ = std::fs::write(out, format!("{line}\n"));
}
