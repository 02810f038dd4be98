//! Git over HTTPS through metricops' own transport (libgit2 has no OpenSSL): fetch, push with an
//! installation token as GitHub takes it, and a refused token, against the GitHub stand-in served
//! over TLS with the real `git http-backend` behind it.

use metricops::adapters::git::{GitError, GitRepo};
use metricops::adapters::git_https;
use metricops::domain::culprit::CommitSha;
use secrecy::SecretString;

use crate::support::github::GitHub;
use crate::support::*;

#[test]
fn fetch_and_push_over_https_with_a_token() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = throwaway_cert(certs.path());
    git_https::trust(&std::fs::read(&cert).unwrap()).unwrap();
    let gh = GitHub::start_tls(&cert, &key);
    let bare = gh.add_repo("acme", "deploy", 7);
    // The repository on the server side, filled with the git CLI.
    let work = Repo::new();
    work.write("d.yaml", &deployment("api", "ghcr.io/acme/api:1.0"));
    let first = work.commit("init");
    work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    let url = gh.git_url("acme", "deploy");
    assert!(url.starts_with("https://localhost:"), "{url}");

    let token = SecretString::from(gh.mint_token(7));
    let mirror_dir = tempfile::tempdir().unwrap();
    let mirror = GitRepo::init_bare(mirror_dir.path()).unwrap();
    let tip = mirror.fetch(&url, "main", Some(&token)).expect("fetch over HTTPS");
    assert_eq!(tip, CommitSha(first.clone()));
    let heads = mirror.remote_heads(&url, Some(&token)).expect("ls-remote over HTTPS");
    assert_eq!(heads, vec![("main".to_string(), CommitSha(first.clone()))]);

    // A new commit, pushed as a branch.
    let tree =
        mirror.tree_with(&tip, &[("d.yaml".into(), deployment("api", "ghcr.io/acme/api:1.1"))]).unwrap();
    let commit = mirror.write_commit(tree, &tip, "bump", chrono::Utc::now()).unwrap();
    mirror.push(&url, &commit, "metricops/revert-x", Some(&token)).expect("push over HTTPS");
    let on_server = git_in(&bare, &["rev-parse", "refs/heads/metricops/revert-x"]);
    assert_eq!(on_server, commit.0);

    // A refused token is an authentication error naming the remote, never the token.
    let bad = SecretString::from("ghs_not_a_real_token".to_string());
    let err = mirror.fetch(&url, "main", Some(&bad)).unwrap_err();
    assert!(matches!(err, GitError::AuthRefused { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("localhost") && !shown.contains("ghs_not_a_real_token"), "{shown}");
    let err = mirror.push(&url, &commit, "other", Some(&bad)).unwrap_err();
    assert!(matches!(err, GitError::AuthRefused { .. }), "{err:?}");
}

fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").args(args).current_dir(dir).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
