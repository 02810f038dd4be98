//! Git smart HTTP, bridged to the real `git http-backend` (CGI). HTTP Basic auth with an installation
//! token as the password, like github.com.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::{Auth, Reply, State, error, lock};

/// The password of a `Basic` credential (base64 of `user:password`).
pub(super) fn basic_password(b64: &str) -> Option<String> {
    let raw = base64_decode(b64)?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

fn basic_user(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic ")))
        .and_then(|b| base64_decode(b.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|t| t.split_once(':').map(|(u, _)| u.to_string()))
        .unwrap_or_default()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![];
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn unauthorized(msg: &str) -> Reply {
    Reply::json(401, error(msg)).header("www-authenticate", "Basic realm=\"GitHub\"")
}

pub(super) fn serve(
    state: &Mutex<State>,
    auth: &Auth,
    method: &str,
    path: &str,
    query: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Reply {
    let (root, repo_ok) = {
        let s = lock(state);
        let (prefix, _) = path.split_once(".git/").unwrap_or((path, ""));
        let mut it = prefix.trim_start_matches('/').splitn(2, '/');
        let (o, r) = (it.next().unwrap_or_default().to_string(), it.next().unwrap_or_default().to_string());
        let repo = s.repos.get(&(o, r));
        match (repo, auth) {
            (None, _) => (s.root.clone(), Err(Reply::json(404, error("Repository not found.")))),
            (Some(_), Auth::None) => (s.root.clone(), Err(unauthorized("Authentication required"))),
            (Some(repo), Auth::Token(i)) if repo.installation == Some(*i) => (s.root.clone(), Ok(())),
            (Some(_), Auth::Token(_)) => {
                (s.root.clone(), Err(Reply::json(404, error("Repository not found."))))
            }
            (Some(_), _) => (
                s.root.clone(),
                Err(unauthorized(
                    "Invalid username or token. Password authentication is not supported for Git operations.",
                )),
            ),
        }
    };
    if let Err(r) = repo_ok {
        return r;
    }
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut cmd = Command::new(http_backend());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("REQUEST_METHOD", method)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", h("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", basic_user(headers))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // To see where git's time goes: GIT_TRACE2_PERF=/some/file in the test's environment.
    if let Some(v) = std::env::var_os("GIT_TRACE2_PERF") {
        cmd.env("GIT_TRACE2_PERF", v);
    }
    for (hdr, var) in [
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("accept", "HTTP_ACCEPT"),
    ] {
        let v = h(hdr);
        if !v.is_empty() {
            cmd.env(var, v);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Reply::json(500, error(&format!("git http-backend: {e}"))),
    };
    let mut stdin = child.stdin.take().unwrap();
    let input = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut out = vec![];
    let _ = stdout.read_to_end(&mut out);
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let _ = writer.join();
    let _ = child.wait();
    if method == "POST" && path.ends_with("/git-receive-pack") {
        pack_refs(state, &root, path);
    }
    parse_cgi(&out)
        .unwrap_or_else(|| Reply::json(500, error(&format!("git http-backend gave no CGI answer: {err}"))))
}

/// A push leaves its refs loose; GitHub keeps refs packed, and with a thousand loose branches every
/// ref read (`git http-backend`'s advertisement, the API's branch list) took ~30 ms instead of ~5.
/// Every 16th push to a repository (a few loose refs cost nothing; packing a thousand took a
/// program start and ~5 ms, on every push). Under the state lock, which every in-process ref
/// read holds (libgit2 could otherwise miss a ref that moves into packed-refs mid-read); git's
/// own readers and writers take git's locks.
fn pack_refs(state: &Mutex<State>, root: &std::path::Path, path: &str) {
    const EVERY: usize = 16;
    static PUSHES: Mutex<BTreeMap<std::path::PathBuf, usize>> = Mutex::new(BTreeMap::new());
    let Some((repo, _)) = path.split_once(".git/") else { return };
    let dir = root.join(format!("{}.git", repo.trim_start_matches('/')));
    {
        let mut pushes = PUSHES.lock().unwrap_or_else(|e| e.into_inner());
        let n = pushes.entry(dir.clone()).or_default();
        *n += 1;
        if !n.is_multiple_of(EVERY) {
            return;
        }
    }
    let _held = lock(state);
    match Command::new("git").args(["pack-refs", "--all"]).current_dir(&dir).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "stand-in: git pack-refs in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("stand-in: git pack-refs in {}: {e}", dir.display()),
    }
}

/// git's own `git-http-backend` program, run directly: through the `git` wrapper every request
/// paid for one more program start (~3 ms, three times per push).
fn http_backend() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("git").arg("--exec-path").output().expect("git runs (apt-get install git)");
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let direct = std::path::Path::new(&dir).join("git-http-backend");
        assert!(direct.exists(), "git-http-backend is not in git's exec path {dir}");
        direct
    })
    .clone()
}

fn parse_cgi(out: &[u8]) -> Option<Reply> {
    let (head_end, sep) = [(b"\r\n\r\n".as_slice(), 4), (b"\n\n".as_slice(), 2)]
        .iter()
        .filter_map(|(pat, n)| out.windows(pat.len()).position(|w| w == *pat).map(|p| (p, *n)))
        .min()?;
    let head = String::from_utf8_lossy(&out[..head_end]);
    let mut reply = Reply::empty(200);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            reply.status = v.split_whitespace().next()?.parse().ok()?;
        } else {
            reply.headers.push((k.trim().to_string(), v.to_string()));
        }
    }
    reply.body = out[head_end + sep..].to_vec();
    Some(reply)
}
