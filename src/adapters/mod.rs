//! Thin adapters, each named after the system it talks to.

pub mod alertmanager;
pub mod git;
pub mod git_history;
pub mod git_https;
pub mod git_notes;
pub mod github;
pub mod kube;
pub mod pack;
pub mod prometheus;

/// rustls's process-wide crypto provider (ring), installed once: reqwest is built without one, and
/// mixing providers panics at start-up.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The git CLI in `dir`, for the adapters' tests: a fixed identity and fixed dates, success
/// asserted, stdout trimmed.
#[cfg(test)]
pub(crate) fn test_git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=A", "-c", "user.email=a@x"])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "@1790000000 +0000")
        .env("GIT_COMMITTER_DATE", "@1790000000 +0000")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Tests: a bare `remote.git` (branch `main`) and its clone `work` in `dir`, with one commit
/// (file `a`, message `message`); pushed to the remote unless `push` is false.
#[cfg(test)]
pub(crate) fn test_remote(
    dir: &std::path::Path,
    message: &str,
    push: bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (remote, work) = (dir.join("remote.git"), dir.join("work"));
    test_git(dir, &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    test_git(dir, &["clone", "-q", remote.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(work.join("a"), "1").unwrap();
    test_git(&work, &["add", "-A"]);
    test_git(&work, &["commit", "-q", "-m", message]);
    if push {
        test_git(&work, &["push", "-q", "origin", "HEAD:main"]);
    }
    (remote, work)
}
