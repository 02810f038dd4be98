//! Known secret values driven through every path — an alert to a GitHub PR, ChatOps, a remote
//! with a password in its URL failing, forged webhooks, `/metrics`, `check-config` — and looked
//! for everywhere they could leak: the log (at debug level), errors, metrics, commit messages,
//! branches, PR titles, bodies and comments.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::github::{SECRET, World, alert, post_webhook};
use crate::support::github::GitHub;
use crate::support::http::{free_port, get, request, wait_until};

const BEARER: &str = "alert-bearer-0f9e8d7c6b5a";
const URL_PASSWORD: &str = "urlpass-5a6b7c8d9e0f";

#[test]
fn no_secret_reaches_a_log_an_error_a_metric_a_commit_or_a_pr() {
    let w = World::new();
    let dir = w.dir.path();
    std::fs::write(dir.join("bearer"), format!("{BEARER}\n")).unwrap();
    // A second repo whose URL carries a password, unreachable: its incidents fail and are logged.
    let leaky = format!(
        "- name: leaky\n  url: https://deploy:{URL_PASSWORD}@127.0.0.1:1/shop/other.git\n  forge: git\nworkloads:\n- name: shop/leaky\n  repo: leaky\n  paths: [apps]\n  image: ghcr.io/shop/leaky\n- name: shop/checkout"
    );
    let text = w
        .config_text("propose", "")
        .replace("max_culprit_age: 24h", "max_culprit_age: 3650d")
        .replacen("workloads:\n- name: shop/checkout", &leaky, 1);
    let config = dir.join("metricops.yaml");
    std::fs::write(
        &config,
        format!(
            "{text}state_dir: {}\nserver:\n  webhook_auth: {{bearer_token_file: {}}}\n  retry: {{first: 1s, max: 1s, attempts: 2}}\n",
            dir.join("state").display(),
            dir.join("bearer").display()
        ),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut serve = crate::journal::Serve(
        Command::new(env!("CARGO_BIN_EXE_metricops"))
            .args(["serve", "--config", config.to_str().unwrap(), "--listen", &addr.to_string()])
            .env("METRICOPS_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("serve ready", Duration::from_secs(30), || get(addr, "/readyz").0 == 200);
    let auth = format!("Bearer {BEARER}");
    let json = ("Content-Type", "application/json");

    // An alert → a GitHub PR (token-authenticated git push, API calls).
    let (code, t) =
        request(addr, "POST", "/webhooks/alertmanager", &[json, ("Authorization", &auth)], &alert("fp-1"));
    assert_eq!(code, 200, "{t}");
    wait_until("the revert PR", Duration::from_secs(60), || {
        w.gh.pulls("shop", "manifests").iter().any(|p| p.head_ref == w.branch() && !p.labels.is_empty())
    });
    // An alert for the repo with a password in its URL: fails, retried once, given up.
    let leaky_alert = alert("fp-2").replace("\"deployment\": \"checkout\"", "\"deployment\": \"leaky\"");
    assert!(leaky_alert.contains("leaky"), "the fixture names the deployment: {leaky_alert}");
    let (code, t) =
        request(addr, "POST", "/webhooks/alertmanager", &[json, ("Authorization", &auth)], &leaky_alert);
    assert_eq!(code, 200, "{t}");
    // Forgeries: a wrong bearer, a wrong signature.
    assert_eq!(
        request(addr, "POST", "/webhooks/generic", &[json, ("Authorization", "Bearer nope")], "{}").0,
        401
    );
    let pr = w.gh.pulls("shop", "manifests").into_iter().find(|p| p.head_ref == w.branch()).unwrap().number;
    let (_, payload) = w.gh.comment_as("shop", "manifests", pr, "dana", "/metricops status");
    assert_eq!(post_webhook(addr, "issue_comment", "d-forged", &payload, Some("sha256=00")).0, 401);
    // ChatOps, signed: a reply comes.
    let (_, payload) = w.gh.comment_as("shop", "manifests", pr, "dana", "/metricops status");
    let sig = GitHub::sign_webhook(SECRET, payload.as_bytes());
    assert_eq!(post_webhook(addr, "issue_comment", "d-1", &payload, Some(&sig)).0, 200);
    wait_until("the status reply", Duration::from_secs(30), || {
        w.gh.comments_on("shop", "manifests", pr).iter().any(|(_, _, b)| b.contains("is open"))
    });
    wait_until("the leaky delivery given up", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("after the last attempt")
    });
    let metrics = get(addr, "/metrics").1;
    let _ = serve.0.kill();
    let _ = serve.0.wait();
    let check = Command::new(env!("CARGO_BIN_EXE_metricops"))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();

    // Where a secret could show.
    let mut places: Vec<(String, String)> = vec![
        ("serve's log".into(), std::fs::read_to_string(&log).unwrap()),
        ("/metrics".into(), metrics),
        (
            "check-config".into(),
            format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr)),
        ),
        ("git history".into(), crate::e2e::git(&w.bare, &["log", "--all", "--format=%H %s%n%b"])),
        ("branches".into(), crate::e2e::git(&w.bare, &["branch", "-a"])),
    ];
    for p in w.gh.pulls("shop", "manifests") {
        places.push((
            format!("PR #{}", p.number),
            format!("{}\n{}\n{}", p.title, p.body, p.comments.join("\n")),
        ));
    }
    let key = w.gh.private_key_pem();
    let key_line = key.lines().nth(2).unwrap().to_string();
    let mut secrets = vec![
        ("the webhook secret".to_string(), SECRET.to_string()),
        ("the alert bearer token".into(), BEARER.into()),
        ("the URL's password".into(), URL_PASSWORD.into()),
        ("a line of the App's private key".into(), key_line),
    ];
    let tokens = w.gh.issued_tokens();
    assert!(!tokens.is_empty(), "installation tokens were issued");
    secrets.extend(tokens.into_iter().map(|t| ("an installation token".to_string(), t)));
    let log_text = &places[0].1;
    assert!(log_text.contains("***@127.0.0.1:1"), "the leaky URL is shown, redacted:\n{log_text}");
    for (where_, text) in &places {
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} appears in {where_}");
        }
    }
}
