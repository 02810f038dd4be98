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
    // Killed however the benchmark ends (an orphan would hold the terminal's pipes open).
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _guard = Kill(child.id());
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
    // The server's own time per review, from its histogram (an upper bucket bound).
    let metrics = rt
        .block_on(async { probe.get(format!("https://localhost:{port}/metrics")).send().await?.text().await })
        .unwrap();
    let handler = histogram_quantiles(&metrics, "metricops_admission_review_seconds", &[0.5, 0.99]);
    // A real load tool as well: hey (Debian's package), 8 workers at rate/8 each, keep-alive.
    let hey =
        hey_run(&url.replace("localhost", "127.0.0.1"), &bodies[0].0, rate, seconds.min(15), dir.path());
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
    let line = format!(
        "{line}\nthe handler alone (metricops_admission_review_seconds, bucket upper bounds): p50 ≤ {:.3} ms, p99 ≤ {:.3} ms\n{hey}",
        handler[0] * 1e3,
        handler[1] * 1e3
    );
    println!("{line}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-admission.txt");
    let _ = std::fs::write(out, format!("{line}\n"));
}

/// Quantiles of a Prometheus histogram in a text exposition, as the upper bound of the first bucket
/// holding that share of the observations.
fn histogram_quantiles(text: &str, name: &str, qs: &[f64]) -> Vec<f64> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    assert!(total > 0.0, "no {name} in /metrics:\n{text}");
    qs.iter().map(|q| buckets.iter().find(|b| b.1 >= total * q).map(|b| b.0).unwrap_or(f64::NAN)).collect()
}

/// Runs `hey` (installing Debian's package when missing) at `rate` requests/s against `url` and
/// summarises its per-request times.
fn hey_run(url: &str, body: &[u8], rate: u64, seconds: u64, dir: &std::path::Path) -> String {
    if Command::new("hey").arg("-h").output().is_err() {
        eprintln!("bench_admission: installing hey with apt-get");
        let ok =
            Command::new("apt-get").args(["install", "-y", "-qq", "hey"]).status().is_ok_and(|s| s.success());
        assert!(ok, "hey is needed: apt-get install hey");
    }
    let file = dir.join("review.json");
    std::fs::write(&file, body).unwrap();
    let workers = 8;
    let out = Command::new("hey")
        .args(["-z", &format!("{seconds}s"), "-c", &workers.to_string(), "-q", &(rate / workers).to_string()])
        // `-host`: hey would send "127.0.0.1:PORT" as the TLS server name, which rustls refuses.
        .args(["-host", "localhost", "-m", "POST", "-T", "application/json", "-D"])
        .arg(&file)
        .args(["-o", "csv", url])
        .output()
        .expect("hey runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times: Vec<f64> = Vec::new();
    let mut bad = 0;
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() < 7 {
            continue;
        }
        if f[6] != "200" {
            bad += 1;
        }
        if let Ok(t) = f[0].parse::<f64>() {
            times.push(t * 1e3);
        }
    }
    assert!(
        !times.is_empty(),
        "hey gave no answers: {}{}",
        String::from_utf8_lossy(&out.stderr),
        text.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    times.sort_by(f64::total_cmp);
    let p = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1).min(times.len() - 1)];
    format!(
        "hey, {workers} workers at {} req/s each for {seconds} s: {} answers ({bad} not 200), p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        rate / workers,
        times.len(),
        p(0.5),
        p(0.99),
        p(0.999),
        times.last().unwrap()
    )
}

/// The handler alone, in this process: `server::admission::answer_body` over the two reviews, one
/// call at a time. `cargo test --release --test tests bench_admission_handler -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_admission_handler() {
    let fixture = |name: &str| {
        std::fs::read(format!("{}/fixtures/kube/admission/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let bodies = [fixture("deployment.create.json"), fixture("deployment.update-image.json")];
    let now = chrono::Utc::now();
    let mut took = Vec::new();
    for i in 0..20_000 {
        let t = std::time::Instant::now();
        let (status, _) = metricops::server::admission::answer_body(&bodies[i % 2], now);
        took.push(t.elapsed());
        assert_eq!(status, 200);
    }
    took.sort();
    let us = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "answer_body, 20,000 calls: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        us(0.5),
        us(0.99),
        us(0.999),
        us(1.0)
    );
}
