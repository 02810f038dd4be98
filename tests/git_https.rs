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

/// The engine asks a push's first request (the remote's refs) while it looks up PRs: the push then
/// starts from that answer instead of asking again, and an answer gone stale (the branch moved
/// since) makes the remote refuse the push, never overwrite what landed.
#[test]
fn a_push_starts_from_refs_asked_ahead_and_a_stale_answer_is_refused_not_forced() {
    let Fetched { gh, bare, work, url, token, mirror, tip, _dir } = Fetched::new();
    let count = |what: &str| {
        gh.requests()
            .iter()
            .filter(|r| r.path.ends_with(what) && r.status == 200 && r.auth == "token")
            .count()
    };
    let advertisements = || count("info/refs?service=git-receive-pack");

    let ahead = git_https::advertise_push(&url, Some(&token)).expect("asked ahead");
    assert_eq!(advertisements(), 1);
    let tree =
        mirror.tree_with(&tip, &[("d.yaml".into(), deployment("api", "ghcr.io/acme/api:1.1"))]).unwrap();
    let ours = mirror.write_commit(tree, &tip, "bump", chrono::Utc::now()).unwrap();
    git_https::with_advertisement(Some(ahead), || {
        mirror.push(&url, &ours, "metricops/revert-x", Some(&token))
    })
    .expect("the push lands");
    assert_eq!(advertisements(), 1, "the push did not ask for the refs again");
    assert_eq!(count("/git-receive-pack"), 1);
    assert_eq!(git_in(&bare, &["rev-parse", "metricops/revert-x"]), ours.0);

    // Asked ahead, then a person pushes main: our push to main names main's old value and is refused.
    let stale = git_https::advertise_push(&url, Some(&token)).unwrap();
    work.write("other.yaml", "kind: ConfigMap\n");
    let theirs = work.commit("a person's commit");
    work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    let err = git_https::with_advertisement(Some(stale), || mirror.push(&url, &ours, "main", Some(&token)))
        .unwrap_err();
    assert!(matches!(err, GitError::PushRejected { .. }), "{err:?}");
    assert_eq!(git_in(&bare, &["rev-parse", "main"]), theirs, "the person's commit stays");
    // Used once: the next push asks the remote itself, and is refused for what main holds now.
    let before = advertisements();
    let err = mirror.push(&url, &ours, "main", Some(&token)).unwrap_err();
    assert!(matches!(err, GitError::PushRejected { .. }), "{err:?}");
    assert_eq!(advertisements(), before + 1);
    assert_eq!(git_in(&bare, &["rev-parse", "main"]), theirs);
}

/// A push is told only the refs it can use (its own and those the mirror has): with branches at
/// the remote whose commits the mirror never fetched, the revert still lands whole, and a push to
/// one of those branches is still refused, never forced.
#[test]
fn a_push_among_branches_the_mirror_never_fetched_lands_whole_and_refuses_to_overwrite_them() {
    let Fetched { gh: _gh, bare, work, url, token, mirror, tip, _dir } = Fetched::new();
    // Branches pushed by others after the fetch: commits the mirror does not have.
    let mut theirs = Vec::new();
    for i in 0..30 {
        work.write("d.yaml", &deployment("api", &format!("ghcr.io/acme/api:2.{i}")));
        theirs.push(work.commit(&format!("someone's {i}")));
        work.git(&["push", "-q", bare.to_str().unwrap(), &format!("HEAD:refs/heads/feature-{i}")]);
    }
    let tree =
        mirror.tree_with(&tip, &[("d.yaml".into(), deployment("api", "ghcr.io/acme/api:0.9"))]).unwrap();
    let ours = mirror.write_commit(tree, &tip, "revert", chrono::Utc::now()).unwrap();
    mirror.push(&url, &ours, "metricops/revert-y", Some(&token)).expect("the push lands");
    assert_eq!(git_in(&bare, &["rev-parse", "metricops/revert-y"]), ours.0);
    git_in(&bare, &["fsck", "--no-progress", "--connectivity-only"]);
    assert_eq!(
        git_in(&bare, &["show", "metricops/revert-y:d.yaml"]),
        deployment("api", "ghcr.io/acme/api:0.9").trim_end()
    );
    let err = mirror.push(&url, &ours, "feature-7", Some(&token)).unwrap_err();
    assert!(matches!(err, GitError::PushRejected { .. }), "{err:?}");
    assert_eq!(git_in(&bare, &["rev-parse", "feature-7"]), theirs[7], "their branch stays");
}

/// A repository on the stand-in (plain HTTP) with one commit on main, and a mirror that fetched it.
struct Fetched {
    gh: GitHub,
    bare: std::path::PathBuf,
    work: Repo,
    url: String,
    token: SecretString,
    mirror: GitRepo,
    tip: CommitSha,
    _dir: tempfile::TempDir,
}

impl Fetched {
    fn new() -> Fetched {
        let gh = GitHub::start();
        let bare = gh.add_repo("acme", "deploy", 7);
        let work = Repo::new();
        work.write("d.yaml", &deployment("api", "ghcr.io/acme/api:1.0"));
        work.commit("init");
        work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
        let url = gh.git_url("acme", "deploy");
        let token = SecretString::from(gh.mint_token(7));
        let dir = tempfile::tempdir().unwrap();
        let mirror = GitRepo::init_bare(dir.path()).unwrap();
        let tip = mirror.fetch(&url, "main", Some(&token)).unwrap();
        Fetched { gh, bare, work, url, token, mirror, tip, _dir: dir }
    }
}
