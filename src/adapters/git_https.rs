//! Git's smart HTTP protocol over HTTPS and plain HTTP, through reqwest (rustls with ring, the one
//! TLS stack of the binary). libgit2 is built without OpenSSL: its OpenSSL set-up (loading every
//! system CA certificate) cost every command 30–50 ms before it read a single object, and it was a
//! second TLS stack. Plain `http://` goes the same way: libgit2's own HTTP client asked every
//! fetch and push twice (once without credentials, to be told 401) and wrote a request's head and
//! body in separate small writes, which Nagle's algorithm and the server's delayed ACK held up
//! ~40 ms on every push.
//!
//! The token for a remote is handed over for the length of one fetch or push
//! ([`with_credentials`]); it goes out as HTTP Basic auth with the first request, the way GitHub
//! wants it, and is never part of a URL. One client (and its connection pool) serves every request.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Mutex, OnceLock};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use git2::{Error, ErrorClass, ErrorCode};
use secrecy::{ExposeSecret, SecretString};

/// Tokens for remotes being fetched from or pushed to right now, by URL.
fn credentials() -> &'static Mutex<HashMap<String, SecretString>> {
    static C: OnceLock<Mutex<HashMap<String, SecretString>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Extra certificates to trust (a private CA), on top of the system's.
fn extra_roots() -> &'static Mutex<Vec<reqwest::Certificate>> {
    static R: OnceLock<Mutex<Vec<reqwest::Certificate>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Trusts this PEM certificate for HTTPS remotes too (a private CA; the tests' throwaway one).
pub fn trust(pem: &[u8]) -> Result<(), String> {
    let cert = reqwest::Certificate::from_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    extra_roots().lock().unwrap_or_else(|e| e.into_inner()).push(cert);
    // The next request builds a client that trusts it. The old one is let go on a thread of its
    // own: a blocking client must not be dropped on an async runtime's thread.
    if let Some(old) = shared_client().lock().unwrap_or_else(|e| e.into_inner()).take() {
        std::thread::spawn(move || drop(old));
    }
    Ok(())
}

/// Runs `f` with `token` answering HTTPS authentication for `url`, and forgets it afterwards.
pub fn with_credentials<T>(url: &str, token: Option<&SecretString>, f: impl FnOnce() -> T) -> T {
    struct Forget<'a>(&'a str);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            credentials().lock().unwrap_or_else(|e| e.into_inner()).remove(self.0);
        }
    }
    let Some(token) = token else { return f() };
    credentials().lock().unwrap_or_else(|e| e.into_inner()).insert(url.to_string(), token.clone());
    let _forget = Forget(url);
    f()
}

/// Registers the transport for `https://` and `http://` URLs, once per process.
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        super::install_crypto_provider();
        for scheme in ["https", "http"] {
            // SAFETY: called once, before any remote is used (every GitRepo constructor calls it).
            let registered =
                unsafe { git2::transport::register(scheme, |remote| Transport::smart(remote, true, Smart)) };
            if let Err(e) = registered {
                tracing::error!(error = %e, scheme, "could not register the HTTP transport for git");
            }
        }
    });
}

struct Smart;

impl SmartSubtransport for Smart {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, Error> {
        let (method, suffix, content_type) = match action {
            Service::UploadPackLs => (reqwest::Method::GET, "/info/refs?service=git-upload-pack", None),
            Service::UploadPack => {
                (reqwest::Method::POST, "/git-upload-pack", Some("application/x-git-upload-pack-request"))
            }
            Service::ReceivePackLs => (reqwest::Method::GET, "/info/refs?service=git-receive-pack", None),
            Service::ReceivePack => {
                (reqwest::Method::POST, "/git-receive-pack", Some("application/x-git-receive-pack-request"))
            }
        };
        let token = credentials().lock().unwrap_or_else(|e| e.into_inner()).get(url).cloned();
        Ok(Box::new(Stream {
            remote: url.to_string(),
            url: format!("{}{suffix}", url.trim_end_matches('/')),
            method,
            content_type,
            token,
            body: Vec::new(),
            response: None,
        }))
    }

    fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// One request: what libgit2 writes is the body, what it reads is the answer.
struct Stream {
    remote: String,
    url: String,
    method: reqwest::Method,
    content_type: Option<&'static str>,
    token: Option<SecretString>,
    body: Vec<u8>,
    response: Option<reqwest::blocking::Response>,
}

/// The client every request shares (built at first use, and again after [`trust`]).
fn shared_client() -> &'static Mutex<Option<reqwest::blocking::Client>> {
    static C: OnceLock<Mutex<Option<reqwest::blocking::Client>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

fn client() -> Result<reqwest::blocking::Client, Error> {
    let mut shared = shared_client().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = shared.as_ref() {
        return Ok(c.clone());
    }
    let c = new_client()?;
    *shared = Some(c.clone());
    Ok(c)
}

fn new_client() -> Result<reqwest::blocking::Client, Error> {
    let mut b = reqwest::blocking::Client::builder()
        .user_agent(concat!("git/2.0 (metricops/", env!("CARGO_PKG_VERSION"), ")"))
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(600));
    for cert in extra_roots().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        b = b.add_root_certificate(cert.clone());
    }
    b.build().map_err(|e| Error::new(ErrorCode::GenericError, ErrorClass::Net, format!("HTTP client: {e}")))
}

impl Stream {
    fn send(&mut self) -> io::Result<()> {
        let client = client().map_err(io::Error::other)?;
        // The blocking client must not run on an async runtime's thread: give it one of its own.
        let (remote, url, method, content_type) =
            (self.remote.clone(), self.url.clone(), self.method.clone(), self.content_type);
        let token = self.token.clone();
        let body = std::mem::take(&mut self.body);
        let answer = std::thread::scope(|s| {
            s.spawn(move || {
                let mut req = client.request(method, &url);
                if let Some(ct) = content_type {
                    req = req.header("Content-Type", ct).header("Accept", ct.replace("-request", "-result"));
                }
                if let Some(t) = &token {
                    req = req.basic_auth("x-access-token", Some(t.expose_secret()));
                }
                req.body(body).send()
            })
            .join()
        })
        .map_err(|_| io::Error::other("the HTTPS request thread panicked"))?;
        let response = answer.map_err(|e| {
            // reqwest's error names the URL; ours never carries credentials.
            io::Error::other(format!("{remote}: {}", without_url(&e)))
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                Error::new(
                    ErrorCode::Auth,
                    ErrorClass::Http,
                    format!("{remote}: authentication failed ({status})"),
                ),
            ));
        }
        if !status.is_success() {
            return Err(io::Error::other(format!("{remote}: unexpected HTTP status {status}")));
        }
        self.response = Some(response);
        Ok(())
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s.replace(" ()", "").trim().to_string()
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.send()?;
        }
        match &mut self.response {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.body.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
