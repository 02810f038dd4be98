//! Test support: throwaway git repositories built with the real git CLI.

pub mod github;
pub mod http;
pub mod kube;
pub mod monitoring;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub struct Repo {
    pub dir: tempfile::TempDir,
    tick: std::cell::Cell<i64>,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = Repo { dir, tick: std::cell::Cell::new(0) };
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.name", "Dana Developer"]);
        r.git(&["config", "user.email", "dana@example.com"]);
        r.git(&["config", "core.autocrlf", "false"]);
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let t = 1_790_000_000 + self.tick.get() * 60;
        self.tick.set(self.tick.get() + 1);
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_DATE", format!("@{t} +0000"))
            .env("GIT_COMMITTER_DATE", format!("@{t} +0000"))
            .output()
            .expect("git runs (install git if this fails)");
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn write(&self, path: &str, text: &str) -> &Self {
        let p = self.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path().join(path)).unwrap()
    }

    /// Stages everything and commits; returns the new commit's sha.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// A file's content at a revision.
    pub fn show(&self, rev: &str, path: &str) -> String {
        let out = Command::new("git")
            .args(["show", &format!("{rev}:{path}")])
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git show {rev}:{path}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        self.git(&["log", "--graph", "--oneline", "--all"])
    }

    /// A bare clone, to check bare repositories work the same.
    pub fn bare_clone(&self) -> PathBuf {
        let dest = self.path().join("bare.git");
        let out = Command::new("git")
            .args(["clone", "-q", "--bare", "."])
            .arg(&dest)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        dest
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON object ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

pub fn metricops(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_metricops")).args(args).output().expect("metricops runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `metricops trace --json` on a repo; panics with the git log when it fails.
pub fn trace(repo: &Repo, args: &[&str]) -> Value {
    let dir = repo.path().to_str().unwrap();
    let mut all = vec!["trace", "--repo", dir, "--json"];
    all.extend_from_slice(args);
    let r = metricops(&all);
    assert_eq!(r.code, 0, "trace {args:?} failed: {}{}\n{}", r.stdout, r.stderr, repo.log());
    r.json()
}

pub fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  template:\n    spec:\n      containers:\n      - name: {name}\n        image: {image}\n"
    )
}

pub fn kustomization(image: &str, tag: &str) -> String {
    format!("resources:\n- ../../base\nimages:\n- name: {image}\n  newTag: \"{tag}\" # set by CI\n")
}

/// A self-signed certificate for `localhost` (`cert.pem`, `key.pem` in `dir`), made with the openssl CLI.
pub fn throwaway_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (apt-get install -y openssl)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}
