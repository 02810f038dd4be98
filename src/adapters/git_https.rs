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

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Mutex, OnceLock};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use git2::{Error, ErrorClass, ErrorCode};
use secrecy::{ExposeSecret, SecretString};

thread_local! {
    /// Tokens for remotes this thread is fetching from or pushing to right now, by URL. Per thread:
    /// libgit2 opens the transport on the thread that fetches or pushes, and two incidents (or two
    /// replicas in one process) working on the same remote at once must neither see nor forget each
    /// other's token — a process-wide map let the first to finish remove the other's, and its next
    /// request went without one (401).
    static CREDENTIALS: RefCell<HashMap<String, SecretString>> = RefCell::new(HashMap::new());
    /// Ref advertisements asked ahead of this thread's next push, by URL (see [`with_advertisement`]).
    static ADVERTISED: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    /// The push this thread is making, by URL: the ref it updates and the repository it pushes from.
    static PUSHING: RefCell<HashMap<String, (String, std::path::PathBuf)>> = RefCell::new(HashMap::new());
}

/// Runs `f` (a push of `dest` from the repository at `git_dir` to `url`) with the remote's ref
/// advertisement cut down to the refs that matter to it: `dest` and the refs at commits the
/// repository's own refs point to. libgit2 looks up every advertised ref in the repository (to leave out of the
/// pack what the remote has) and, for each one missing, re-reads the object directory before it
/// gives up; with a thousand revert branches open at the remote — none of them in the mirror —
/// that was most of the push's own time. Refs it does not have it could not use anyway, so the
/// push sends the same pack and the same update.
pub fn with_push_context<T>(url: &str, dest: &str, git_dir: &std::path::Path, f: impl FnOnce() -> T) -> T {
    scoped(&PUSHING, url, (dest.to_string(), git_dir.to_path_buf()), f)
}

/// Runs `f` with `value` in this thread's `map` under `url`, and puts back what was there before
/// afterwards (also when `f` panics).
fn scoped<V: 'static, T>(
    map: &'static std::thread::LocalKey<RefCell<HashMap<String, V>>>,
    url: &str,
    value: V,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: 'static> {
        map: &'static std::thread::LocalKey<RefCell<HashMap<String, V>>>,
        url: String,
        previous: Option<V>,
    }
    impl<V: 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.map.with_borrow_mut(|m| match self.previous.take() {
                Some(previous) => m.insert(self.url.clone(), previous),
                None => m.remove(&self.url),
            });
        }
    }
    let previous = map.with_borrow_mut(|m| m.insert(url.to_string(), value));
    let _restore = Restore { map, url: url.to_string(), previous };
    f()
}

/// The advertisement with only the ref lines `keep(oid, name)` accepts (every other pkt-line
/// kept); the capabilities, which ride on the first ref line, move to the first one kept.
/// `None` when it is not a well-formed pkt-line stream (then it is used as it came).
fn filter_advertisement(body: &[u8], keep: impl Fn(&str, &str) -> bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    let mut caps: Option<Vec<u8>> = None;
    let mut seen_ref = false;
    let mut pending_caps = false;
    let push_line = |out: &mut Vec<u8>, payload: &[u8]| {
        out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
        out.extend_from_slice(payload);
    };
    while !rest.is_empty() {
        let len = usize::from_str_radix(std::str::from_utf8(rest.get(..4)?).ok()?, 16).ok()?;
        if len == 0 {
            if pending_caps {
                // No ref kept: the form git uses for an empty repository.
                let mut line = format!("{} capabilities^{{}}\0", "0".repeat(40)).into_bytes();
                line.extend_from_slice(caps.as_deref().unwrap_or_default());
                line.push(b'\n');
                push_line(&mut out, &line);
                pending_caps = false;
            }
            out.extend_from_slice(b"0000");
            rest = &rest[4..];
            continue;
        }
        let payload = rest.get(4..len)?;
        rest = &rest[len..];
        let text = payload.strip_suffix(b"\n").unwrap_or(payload);
        let (refpart, line_caps) = match text.iter().position(|b| *b == 0) {
            Some(nul) => (&text[..nul], Some(&text[nul + 1..])),
            None => (text, None),
        };
        let is_ref = !payload.starts_with(b"#")
            && refpart
                .iter()
                .position(|b| *b == b' ')
                .is_some_and(|sp| sp >= 40 && refpart[..sp].iter().all(u8::is_ascii_hexdigit));
        if !is_ref {
            push_line(&mut out, payload);
            continue;
        }
        if !seen_ref {
            seen_ref = true;
            caps = line_caps.map(<[u8]>::to_vec);
            pending_caps = caps.is_some();
        }
        let line = std::str::from_utf8(refpart).ok()?;
        let (oid, name) = line.split_once(' ')?;
        if !keep(oid, name) {
            continue;
        }
        let mut kept = refpart.to_vec();
        if pending_caps {
            kept.push(0);
            kept.extend_from_slice(caps.as_deref().unwrap_or_default());
            pending_caps = false;
        }
        kept.push(b'\n');
        push_line(&mut out, &kept);
    }
    Some(out)
}

/// [`filter_advertisement`] for a push: `dest`, and the refs that point where one of `git_dir`'s
/// own refs points (the commits it fetched). A remote ref at another commit the mirror happens to
/// hold (an ancestor of a branch it fetched) would hide nothing more from the pack; looking each
/// advertised ref up in the object store cost a file lookup apiece, a thousand per push.
fn for_push(body: Vec<u8>, dest: &str, git_dir: &std::path::Path) -> Vec<u8> {
    let Ok(repo) = git2::Repository::open_bare(git_dir) else { return body };
    let Ok(refs) = repo.references() else { return body };
    let ours: std::collections::HashSet<git2::Oid> = refs.filter_map(|r| r.ok()?.target()).collect();
    let keep = |oid: &str, name: &str| {
        name == dest
            || name.strip_suffix("^{}") == Some(dest)
            || git2::Oid::from_str(oid).is_ok_and(|o| ours.contains(&o))
    };
    filter_advertisement(&body, keep).unwrap_or(body)
}

/// A remote's answer to `GET …/info/refs?service=git-receive-pack`, asked ahead of a push
/// ([`advertise_push`]) so that the push need not wait for it.
pub struct Advertisement {
    url: String,
    body: Vec<u8>,
}

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Advertisement({} bytes)", self.body.len())
    }
}

/// Asks an `http(s)://` remote now for the refs a push to it starts from (the push's first round
/// trip, which does not depend on what will be pushed: the engine asks it while it looks up PRs).
/// `None` for other remotes or when the asking fails — the push then asks itself, as it would have.
///
/// Safe however old it is when used: a push names the value it expects each ref to hold, and the
/// remote refuses the update when the ref holds anything else (a compare-and-swap on the server).
pub fn advertise_push(url: &str, token: Option<&SecretString>) -> Option<Advertisement> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let (method, suffix, content_type) = request_for(Service::ReceivePackLs);
    let mut stream = Stream::new(url, suffix, method, content_type, token.cloned());
    let mut body = Vec::new();
    match stream.read_to_end(&mut body) {
        Ok(_) => Some(Advertisement { url: url.to_string(), body }),
        Err(e) => {
            tracing::debug!(error = %e, "the push's ref advertisement was not asked ahead; the push asks it");
            None
        }
    }
}

/// Runs `f` (a push) with `advertised` answering its first request, once; forgotten afterwards,
/// used or not.
pub fn with_advertisement<T>(advertised: Option<Advertisement>, f: impl FnOnce() -> T) -> T {
    match advertised {
        Some(Advertisement { url, body }) => scoped(&ADVERTISED, &url, body, f),
        None => f(),
    }
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

/// Runs `f` with `token` answering HTTP authentication for `url` on this thread, and puts back
/// what was there before afterwards (also when `f` panics).
pub fn with_credentials<T>(url: &str, token: Option<&SecretString>, f: impl FnOnce() -> T) -> T {
    match token {
        Some(token) => scoped(&CREDENTIALS, url, token.clone(), f),
        None => f(),
    }
}

/// The token [`with_credentials`] gave this thread for `url`, if any.
fn current_token(url: &str) -> Option<SecretString> {
    CREDENTIALS.with_borrow(|c| c.get(url).cloned())
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

/// The method, URL suffix and body type of each request of git's smart HTTP protocol.
fn request_for(action: Service) -> (reqwest::Method, &'static str, Option<&'static str>) {
    match action {
        Service::UploadPackLs => (reqwest::Method::GET, "/info/refs?service=git-upload-pack", None),
        Service::UploadPack => {
            (reqwest::Method::POST, "/git-upload-pack", Some("application/x-git-upload-pack-request"))
        }
        Service::ReceivePackLs => (reqwest::Method::GET, "/info/refs?service=git-receive-pack", None),
        Service::ReceivePack => {
            (reqwest::Method::POST, "/git-receive-pack", Some("application/x-git-receive-pack-request"))
        }
    }
}

impl SmartSubtransport for Smart {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, Error> {
        let (method, suffix, content_type) = request_for(action);
        let mut stream = Stream::new(url, suffix, method, content_type, current_token(url));
        if matches!(action, Service::ReceivePackLs) {
            stream.ready = ADVERTISED.with_borrow_mut(|a| a.remove(url)).map(io::Cursor::new);
            stream.pushing = PUSHING.with_borrow(|p| p.get(url).cloned());
        }
        Ok(Box::new(stream))
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
    /// The answer, known already (an advertisement asked ahead).
    ready: Option<io::Cursor<Vec<u8>>>,
    /// For a push's advertisement: the ref it updates and the repository it pushes from.
    pushing: Option<(String, std::path::PathBuf)>,
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
    fn new(
        remote: &str,
        suffix: &str,
        method: reqwest::Method,
        content_type: Option<&'static str>,
        token: Option<SecretString>,
    ) -> Stream {
        Stream {
            remote: remote.to_string(),
            url: format!("{}{suffix}", remote.trim_end_matches('/')),
            method,
            content_type,
            token,
            body: Vec::new(),
            response: None,
            ready: None,
            pushing: None,
        }
    }

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
        if let Some((dest, git_dir)) = self.pushing.take() {
            let body = match self.ready.take() {
                Some(ready) => ready.into_inner(),
                None => {
                    self.send()?;
                    let mut body = Vec::new();
                    if let Some(r) = &mut self.response {
                        r.read_to_end(&mut body)?;
                    }
                    self.response = None;
                    body
                }
            };
            self.ready = Some(io::Cursor::new(for_push(body, &dest, &git_dir)));
        }
        if let Some(ready) = &mut self.ready {
            return ready.read(buf);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    const URL: &str = "https://github.example/shop/manifests.git";

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn two_threads_on_one_remote_keep_their_own_token_when_the_other_finishes() {
        let barrier = Arc::new(Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier);
        let first = std::thread::spawn(move || {
            with_credentials(URL, Some(&secret("token-a")), || {
                b1.wait(); // both hold a token
            });
            b1.wait(); // the first has finished
        });
        let second = std::thread::spawn(move || {
            with_credentials(URL, Some(&secret("token-b")), || {
                b2.wait();
                b2.wait();
                current_token(URL).map(|t| t.expose_secret().to_string())
            })
        });
        first.join().unwrap();
        assert_eq!(second.join().unwrap().as_deref(), Some("token-b"));
    }

    #[test]
    fn a_token_is_gone_after_its_fetch_and_a_nested_one_gives_the_outer_back() {
        with_credentials(URL, Some(&secret("outer")), || {
            with_credentials(URL, Some(&secret("inner")), || {
                assert_eq!(current_token(URL).unwrap().expose_secret(), "inner");
            });
            assert_eq!(current_token(URL).unwrap().expose_secret(), "outer");
        });
        assert!(current_token(URL).is_none());
        let _ =
            std::panic::catch_unwind(|| with_credentials(URL, Some(&secret("x")), || panic!("fetch failed")));
        assert!(current_token(URL).is_none(), "a panic leaves no token behind");
    }

    fn pkt(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            if l.is_empty() {
                out.extend_from_slice(b"0000");
            } else {
                out.extend_from_slice(format!("{:04x}{l}", l.len() + 4).as_bytes());
            }
        }
        out
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    fn advertised() -> Vec<u8> {
        pkt(&[
            "# service=git-receive-pack\n",
            "",
            &format!("{A} refs/heads/a-branch-we-lack\0report-status delete-refs ofs-delta\n"),
            &format!("{B} refs/heads/main\n"),
            &format!("{C} refs/heads/metricops/revert-c\n"),
            "",
        ])
    }

    #[test]
    fn a_push_advertisement_keeps_the_refs_asked_for_and_the_capabilities() {
        let kept = filter_advertisement(&advertised(), |oid, _| oid != A).unwrap();
        let want = pkt(&[
            "# service=git-receive-pack\n",
            "",
            &format!("{B} refs/heads/main\0report-status delete-refs ofs-delta\n"),
            &format!("{C} refs/heads/metricops/revert-c\n"),
            "",
        ]);
        assert_eq!(String::from_utf8(kept).unwrap(), String::from_utf8(want).unwrap());
        let all = filter_advertisement(&advertised(), |_, _| true).unwrap();
        assert_eq!(all, advertised(), "keeping everything changes nothing");
    }

    #[test]
    fn a_push_advertisement_with_no_ref_kept_reads_as_an_empty_repository() {
        let none = filter_advertisement(&advertised(), |_, _| false).unwrap();
        let want = pkt(&[
            "# service=git-receive-pack\n",
            "",
            &format!("{} capabilities^{{}}\0report-status delete-refs ofs-delta\n", "0".repeat(40)),
            "",
        ]);
        assert_eq!(String::from_utf8(none).unwrap(), String::from_utf8(want).unwrap());
        assert!(filter_advertisement(b"00zzjunk", |_, _| true).is_none(), "not pkt-lines: left alone");
        assert!(filter_advertisement(b"0100short", |_, _| true).is_none(), "cut short: left alone");
    }
}
