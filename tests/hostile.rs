//! `metricops serve` against clients that do not play fair: slow headers, slow bodies, idle
//! keep-alive connections, more connections than allowed, unauthenticated big bodies. Each ends
//! with the server answering others, and the offender cut off or refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::e2e::{Manifests, metric};
use crate::support::http::{get, wait_until};

/// A server with small limits, so offenders are cut off quickly: 4 connections, headers within
/// 3 s, idle 2 s, a whole request 2 s.
fn server(m: &Manifests, extra: &str) -> (tokio::runtime::Runtime, metricops::server::Running) {
    let text = m.config_text("").replace(
        "server:\n",
        &format!("server:\n  max_connections: 4\n  timeouts: {{header: 3s, idle: 2s, request: 2s}}\n{extra}"),
    );
    let config = metricops::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    if !extra.contains("tls:") {
        // (Over TLS the listener is bound when `start` returns; plain `get` cannot ask it.)
        wait_until("ready", Duration::from_secs(30), || get(server.addr, "/readyz").0 == 200);
    }
    (rt, server)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Whether the server closed the connection (reads what is left until the end).
fn closed_by_server(s: &mut TcpStream) -> (bool, String) {
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    (
        r.is_ok() || r.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

#[test]
fn slow_headers_are_cut_off_and_connections_beyond_the_limit_get_503() {
    let m = Manifests::new(None);
    let (rt, server) = server(&m, "");
    let a = server.addr;
    // Four clients start a request and never finish its headers. One answered at once was
    // refused a place (the readiness check's connection was still being closed): it tries again.
    let mut slow: Vec<TcpStream> = Vec::new();
    while slow.len() < 4 {
        let mut s = connect(a);
        s.write_all(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let answered = s.peek(&mut [0u8; 1]).map_or_else(
            |e| !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            |_| true,
        );
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        if !answered {
            slow.push(s);
        }
    }
    // A fifth is refused, with an answer, while they hold the four places.
    let (status, body) = get(a, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    assert!(
        metric(a, "metricops_errors_total{kind=\"connections_full\"}") >= 1.0 || get(a, "/healthz").0 == 503
    );
    // The header timeout closes all four; then everyone else is served again.
    for s in &mut slow {
        let (closed, _) = closed_by_server(s);
        assert!(closed, "a client that never finishes its headers is cut off");
    }
    wait_until("healthz served again", Duration::from_secs(30), || get(a, "/healthz").0 == 200);
    assert!(metric(a, "metricops_errors_total{kind=\"connections_full\"}") >= 1.0, "the refusal is counted");
    rt.block_on(server.stop());
}

#[test]
fn a_slow_body_gets_408_and_an_idle_keep_alive_connection_is_closed() {
    let m = Manifests::new(None);
    let (rt, server) = server(&m, "");
    let a = server.addr;
    // Headers in full, then the body a byte at a time, slower than the request timeout allows.
    let mut s = connect(a);
    s.write_all(
        format!(
            "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            crate::e2e::TOKEN
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    for _ in 0..100 {
        if s.write_all(b" ").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.set_nonblocking(true);
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf)
            && n > 0
        {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            break;
        }
        let _ = s.set_nonblocking(false);
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "a body that never arrives in time: {answer:?}");

    // A keep-alive connection that asked once and then says nothing is closed after the idle time.
    let mut k = connect(a);
    k.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 256];
    let n = k.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let (closed, _) = closed_by_server(&mut k);
    assert!(closed, "an idle keep-alive connection is closed by the server");
    assert_eq!(get(a, "/healthz").0, 200);
    rt.block_on(server.stop());
}

/// Sends a generic-webhook POST's head with `headers`, and `start` of its body, then reads the first
/// bytes of the answer (what the server says before it has the body).
fn first_answer(addr: SocketAddr, headers: &str, start: &str) -> String {
    let mut s = connect(addr);
    let head = format!(
        "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n{start}"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn big_bodies_without_credentials_are_refused_before_they_are_read() {
    let m = Manifests::new(None);
    let (rt, server) = server(&m, "");
    let a = server.addr;
    // 1.9 MB declared, no credentials: answered 401 at once, the body never read.
    let head = first_answer(a, "Content-Length: 1900000\r\n", "{");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // With credentials and over the limit: 413 from the declared length, before reading (the
    // body is never sent).
    let auth = format!("Authorization: Bearer {}\r\nContent-Length: 3145728\r\n", crate::e2e::TOKEN);
    let head = first_answer(a, &auth, "");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(metric(a, "metricops_errors_total{kind=\"webhook_too_large\"}") >= 1.0);
    rt.block_on(server.stop());
}

#[test]
fn over_tls_a_connection_beyond_the_limit_is_closed_not_answered_in_plain_text() {
    let m = Manifests::new(None);
    crate::support::throwaway_cert(m.dir.path());
    let d = m.dir.path().display();
    let (rt, server) = server(&m, &format!("  tls: {{cert_file: {d}/cert.pem, key_file: {d}/key.pem}}\n"));
    let a = server.addr;
    // Four clients connect and never start their TLS handshake: they hold the four places.
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(a)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // A fifth is closed without a byte: plain text would read as a broken handshake to a TLS client.
    let mut fifth = connect(a);
    let (closed, said) = closed_by_server(&mut fifth);
    assert!(closed, "the fifth connection is closed");
    assert_eq!(said, "", "nothing written in plain text over a TLS port");
    // The handshake timeout frees the places; a TLS client is served again.
    for s in &mut held {
        assert!(closed_by_server(s).0, "a client that never shakes hands is cut off");
    }
    let pem = std::fs::read(m.dir.path().join("cert.pem")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", a)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", a.port());
    wait_until("healthz served over TLS again", Duration::from_secs(30), || {
        client.get(&url).send().is_ok_and(|r| r.status() == 200)
    });
    rt.block_on(server.stop());
}
