//! The real monitoring stack for end-to-end tests: Debian's `prometheus` and
//! `prometheus-alertmanager` on loopback, a tiny app that serves errors when it runs the bad version,
//! and a sync loop that plays Argo CD by running whatever version the manifests repo's main names.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{free_port, get, wait_until};

/// Fails with how to install a missing tool; never skips.
pub fn require(binary: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{binary} is not installed: run `bash tests/run.sh` (it installs it), or `apt-get install -y prometheus prometheus-alertmanager`"
    );
}

/// A process killed on drop, its output kept in a file for failure messages.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(binary: &str, args: &[String], dir: &Path, name: &str, port: u16) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(require(binary))
        .args(args)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let p = Proc { child, addr, log };
    let started = Instant::now();
    while get(addr, "/-/ready").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "{name} did not become ready:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// Prometheus scraping `target` every second, evaluating `rules` (a rule file's YAML) every second,
/// sending to `alertmanager` when given.
pub fn prometheus(dir: &Path, target: SocketAddr, rules: &str, alertmanager: Option<SocketAddr>) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    let alerting = alertmanager
        .map(|a| format!("alerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['{a}']\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\n{alerting}scrape_configs:\n- job_name: checkout\n  static_configs:\n  - targets: ['{target}']\n", dir.join("rules.yml").display()),
    )
    .unwrap();
    let port = free_port();
    let args = [
        format!("--config.file={}", dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_string(),
    ];
    spawn("prometheus", &args, dir, "prometheus", port)
}

/// Alertmanager sending every group at once (`group_wait: 0s`) to `webhook`, with a bearer token.
pub fn alertmanager(dir: &Path, webhook: &str, token_file: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: metricops\n  group_by: [alertname, namespace, deployment]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: metricops\n  webhook_configs:\n  - url: '{webhook}'\n    send_resolved: true\n    http_config:\n      authorization:\n        type: Bearer\n        credentials_file: '{}'\n",
            token_file.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let args = [
        format!("--config.file={}", dir.join("alertmanager.yml").display()),
        format!("--storage.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
        "--log.level=warn".to_string(),
    ];
    spawn("prometheus-alertmanager", &args, dir, "alertmanager", port)
}

/// The app under watch: "serves" a request every 10 ms, answering 500 while it runs `bad`.
pub struct App {
    pub addr: SocketAddr,
    pub version: Arc<Mutex<String>>,
    ok: Arc<AtomicU64>,
    err: Arc<AtomicU64>,
    /// When the first failing request was served.
    pub first_failure: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl App {
    pub fn start(version: &str, bad: &str) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App {
            addr,
            version: Arc::new(Mutex::new(version.to_string())),
            ok: Arc::default(),
            err: Arc::default(),
            first_failure: Arc::default(),
            stop: Arc::default(),
        };
        let (ok, err, stop) = (app.ok.clone(), app.err.clone(), app.stop.clone());
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 2048];
                let _ = c.read(&mut buf);
                let body = format!(
                    "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {}\nhttp_requests_total{{code=\"500\"}} {}\n",
                    ok.load(Ordering::Relaxed),
                    err.load(Ordering::Relaxed)
                );
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let (ok, err, stop, v, first) = (
            app.ok.clone(),
            app.err.clone(),
            app.stop.clone(),
            app.version.clone(),
            app.first_failure.clone(),
        );
        let bad = bad.to_string();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if *v.lock().unwrap() == bad {
                    err.fetch_add(1, Ordering::Relaxed);
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// Plays Argo CD: every 50 ms, reads `file` on `main` of the bare repo, and runs the tag it names.
pub struct SyncLoop {
    /// (when, version) for every change it made.
    pub changes: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
}

impl SyncLoop {
    pub fn start(bare: &Path, file: &str, app: &App) -> SyncLoop {
        let s = SyncLoop { changes: Arc::default(), stop: Arc::default() };
        let (changes, stop, version) = (s.changes.clone(), s.stop.clone(), app.version.clone());
        let (bare, file) = (bare.to_path_buf(), file.to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out =
                    Command::new("git").args(["show", &format!("main:{file}")]).current_dir(&bare).output();
                if let Some(tag) = out.ok().filter(|o| o.status.success()).and_then(|o| {
                    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                        l.trim()
                            .strip_prefix("newTag:")
                            .map(|t| t.split('#').next().unwrap_or("").trim().trim_matches('"').to_string())
                    })
                }) {
                    let mut v = version.lock().unwrap();
                    if *v != tag {
                        *v = tag.clone();
                        changes.lock().unwrap().push((Instant::now(), tag));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        s
    }

    pub fn running(&self, app: &App) -> String {
        app.version.lock().unwrap().clone()
    }
}

impl Drop for SyncLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits (up to `secs`) and says what it waited for.
pub fn wait(what: &str, secs: u64, cond: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(secs), cond)
}
