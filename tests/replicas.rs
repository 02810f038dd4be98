//! Two replicas of `metricops serve` on two hosts — network namespaces made by the test, joined by
//! a bridge to the GitHub stand-in — receiving the same alert at the same moment: one revert PR,
//! merged once, one revert commit on main, and no delivery left failing on either.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::github::{CHECKOUT, World, alert};
use crate::support::github::GitHub;
use crate::support::http::{get, request, wait_until};
use crate::support::kustomization;

/// `ip …`, failing with how to get it when it cannot run.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("`ip` (iproute2) is needed for network namespaces: apt-get install -y iproute2 ({e})")
    });
    assert!(
        out.status.success(),
        "ip {args:?}: {} (network namespaces need root, or CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two hosts: namespaces on a bridge, `10.214.K.2` and `.3`, the bridge itself `10.214.K.1`.
struct Hosts {
    bridge: String,
    names: Vec<String>,
    subnet: String,
}

impl Hosts {
    fn new() -> Hosts {
        let tag = std::process::id() % 10_000;
        let subnet = format!("10.214.{}", 1 + std::process::id() % 250);
        let h = Hosts {
            bridge: format!("mob{tag}"),
            names: vec![format!("mo{tag}a"), format!("mo{tag}b")],
            subnet,
        };
        ip(&["link", "add", &h.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}.1/24", h.subnet), "dev", &h.bridge]);
        ip(&["link", "set", &h.bridge, "up"]);
        for (i, ns) in h.names.iter().enumerate() {
            let (veth, peer) = (format!("{ns}v"), format!("{ns}p"));
            ip(&["netns", "add", ns]);
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", ns]);
            ip(&["link", "set", &veth, "master", &h.bridge]);
            ip(&["link", "set", &veth, "up"]);
            ip(&[
                "netns",
                "exec",
                ns,
                "ip",
                "addr",
                "add",
                &format!("{}.{}/24", h.subnet, i + 2),
                "dev",
                &peer,
            ]);
            ip(&["netns", "exec", ns, "ip", "link", "set", &peer, "up"]);
            ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        }
        h
    }

    fn addr(&self, i: usize) -> std::net::SocketAddr {
        format!("{}.{}:8080", self.subnet, i + 2).parse().unwrap()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

#[test]
fn two_replicas_on_two_hosts_receiving_the_same_alert_make_one_revert() {
    let hosts = Hosts::new();
    let w = World::on(GitHub::start_on(&format!("{}.1", hosts.subnet)));
    let mut replicas = Vec::new();
    for (i, ns) in hosts.names.iter().enumerate() {
        let state = w.dir.path().join(format!("state-{i}"));
        let text = w.config_text("merge", "").replace("max_culprit_age: 24h", "max_culprit_age: 3650d");
        let config = w.dir.path().join(format!("replica-{i}.yaml"));
        std::fs::write(&config, format!("{text}state_dir: {}\n", state.display())).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_metricops"), "serve", "--config"])
            .arg(&config)
            .args(["--listen", &hosts.addr(i).to_string()])
            .env("METRICOPS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(w.dir.path().join(format!("replica-{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        replicas.push((crate::journal::Serve(child), state));
    }
    for i in 0..2 {
        wait_until(&format!("replica {i} ready"), Duration::from_secs(30), || {
            get(hosts.addr(i), "/readyz").0 == 200
        });
    }
    // The same delivery to both at once (Alertmanager in HA sends to each).
    let body = alert("fp-1");
    std::thread::scope(|s| {
        for i in 0..2 {
            let body = &body;
            let addr = hosts.addr(i);
            s.spawn(move || {
                let (code, t) = request(
                    addr,
                    "POST",
                    "/webhooks/alertmanager",
                    &[("Content-Type", "application/json")],
                    body,
                );
                assert_eq!(code, 200, "replica {i}: {t}");
            });
        }
    });
    wait_until("the revert merged", Duration::from_secs(60), || {
        w.main_file() == kustomization(CHECKOUT, "1.4.2")
    });
    // Both replicas finish with the delivery (nothing left pending or failed in either journal).
    let given_up = |state: &std::path::Path| {
        std::fs::read_dir(state.join("journal/failed")).map(|d| d.flatten().count()).unwrap_or(0)
    };
    for (i, (_, state)) in replicas.iter().enumerate() {
        wait_until(&format!("replica {i} done with the delivery"), Duration::from_secs(60), || {
            metricops::journal::Journal::peek(&state.join("journal")).map(|p| p.len()).unwrap_or(0) == 0
        });
        assert_eq!(given_up(state), 0, "replica {i} gave a delivery up");
    }
    for i in 0..2 {
        let log = std::fs::read_to_string(w.dir.path().join(format!("replica-{i}.log"))).unwrap();
        assert!(log.contains("incident handled"), "replica {i} acted on the alert too:\n{log}");
    }
    let prs: Vec<_> =
        w.gh.pulls("shop", "manifests").into_iter().filter(|p| p.head_ref == w.branch()).collect();
    if prs.len() != 1 {
        for i in 0..2 {
            let log = std::fs::read_to_string(w.dir.path().join(format!("replica-{i}.log"))).unwrap();
            eprintln!("--- replica {i}:\n{log}");
        }
        let reqs: Vec<String> =
            w.gh.requests().iter().map(|r| format!("{} {} {}", r.method, r.path, r.status)).collect();
        eprintln!("--- stand-in:\n{}", reqs.join("\n"));
    }
    // One merged PR for the culprit. In the narrowest race (one replica opens its PR between the
    // other's merge and its branch deletion) a second one is opened and closed at once, saying why.
    let merged: Vec<_> = prs.iter().filter(|p| p.merged).collect();
    assert_eq!(merged.len(), 1, "one merged PR for the culprit: {prs:#?}");
    assert!(merged[0].labels.iter().any(|l| l == "metricops"), "{:?}", merged[0]);
    for p in prs.iter().filter(|p| !p.merged) {
        assert_eq!(p.state, "closed", "a duplicate is closed: {p:?}");
        assert!(p.comments.iter().any(|c| c.contains("Another replica merged")), "and says why: {p:?}");
    }
    assert!(prs.len() <= 2, "{prs:#?}");
    let reverts = crate::e2e::git(&w.bare, &["log", "--format=%H", "--grep=Metricops-Culprit", "main"]);
    assert_eq!(reverts.lines().count(), 1, "one revert on main:\n{reverts}");
    w.gh.assert_faithful();
}
