//! The rollback history as people see it. A manifests repository on the GitHub stand-in holds an
//! old metricops revert (no decision kept for it); `serve` (with `history.notes`) then merges the
//! revert of a bad checkout deploy and passes over a cart alert whose workload opted out. Then:
//! `metricops history` on the repository (plain git: the trailers and the notes), `/api/history`,
//! and `/ui` in Debian's headless Chromium (playwright-core, `tests/ui/`) — the rows, the reasons,
//! the links, nothing writable, a phone's width — with screenshots kept in `target/`. With the
//! forge asked: revert PRs open, held, cancelled and merged on GitHub, as `metricops history
//! --config` and `/api/history` say, and what they say when GitHub answers 502.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::e2e::git;
use crate::github::World;
use crate::support::http::{request, wait_until};
use crate::support::metricops;

const UI_TOKEN: &str = "ui-token-for-tests";

/// The seeded world: the repository (the stand-in's bare repo), serve's address, the shas.
struct Seeded {
    world: World,
    server: Option<metricops::server::Running>,
    addr: std::net::SocketAddr,
    old_revert: String,
    /// serve's config, as written.
    config_text: String,
}

impl Drop for Seeded {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.world.rt.block_on(s.stop());
        }
    }
}

fn api(addr: std::net::SocketAddr, query: &str) -> Value {
    let (s, body) = request(
        addr,
        "GET",
        &format!("/api/history{query}"),
        &[("Authorization", &format!("Bearer {UI_TOKEN}"))],
        "",
    );
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn rows(v: &Value) -> Vec<Value> {
    v["rows"].as_array().cloned().unwrap_or_default()
}

fn row<'a>(rows: &'a [Value], workload: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["workload"] == workload)
        .unwrap_or_else(|| panic!("no row for {workload}: {rows:#?}"))
}

fn generic(deployment: &str, extra_label: &str, fingerprint: &str) -> String {
    let starts = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    format!(
        r#"{{"name":"{n}Errors","severity":"critical","labels":{{"namespace":"shop","deployment":"{deployment}"{extra_label}}},"annotations":{{"summary":"5xx above 1%"}},"startsAt":"{starts}","fingerprint":"{fingerprint}"}}"#,
        n = if deployment == "cart" { "Cart" } else { "Checkout" }
    )
}

fn seed() -> Seeded {
    let world = World::new();
    // More history, pushed as a person would: an old metricops revert of another workload (40 days
    // ago, before decisions were kept) and the cart workload's deploys.
    let work = world.dir.path().join("work");
    git(world.dir.path(), &["clone", "-q", world.bare.to_str().unwrap(), work.to_str().unwrap()]);
    git(&work, &["config", "user.name", "Shop CI"]);
    git(&work, &["config", "user.email", "ci@shop.example"]);
    let old = (chrono::Utc::now() - chrono::Duration::days(40)).timestamp();
    let fired = chrono::DateTime::from_timestamp(old - 240, 0).unwrap().format("%Y%m%dT%H%M%SZ");
    let old_revert_msg = format!(
        "Revert \"deploy search 3.1.0 to prod\"\n\nThis reverts commit 1111111111111111111111111111111111111111.\n\nMetricops-Culprit: 1111111111111111111111111111111111111111\nMetricops-Mode: surgical\nMetricops-Workload: shop/search\nMetricops-Incident: shop/search@{fired}\nMetricops-Alert: SearchLatency (warning)\nMetricops-Versions: 3.1.0 -> 3.0.9\n"
    );
    let out = Command::new("git")
        .args(["commit", "-q", "--allow-empty", "-m", &old_revert_msg])
        .current_dir(&work)
        .env("GIT_AUTHOR_DATE", format!("@{old} +0000"))
        .env("GIT_COMMITTER_DATE", format!("@{old} +0000"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old_revert = git(&work, &["rev-parse", "HEAD"]);
    for tag in ["1.9.0", "2.0.0"] {
        std::fs::create_dir_all(work.join("apps/cart")).unwrap();
        std::fs::write(
            work.join("apps/cart/deployment.yaml"),
            crate::support::deployment("cart", &format!("ghcr.io/shop/cart:{tag}")),
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("deploy cart {tag} to prod")]);
    }
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    std::fs::write(world.dir.path().join("ui-token"), format!("{UI_TOKEN}\n")).unwrap();
    let text = world.config_text("merge", "").replace(
        "policy:\n  action: merge\n  max_culprit_age: 24h\n",
        "- name: shop/cart\n  match: {namespace: shop, deployment: cart}\n  repo: shop\n  paths: [apps/cart]\n  image: ghcr.io/shop/cart\npolicy:\n  action: merge\n  max_culprit_age: 3650d\n",
    ) + &format!(
        "history:\n  notes: true\n  forge_refresh: 1s\nserver:\n  ui_auth:\n    bearer_token_file: {}\nstate_dir: {}\n",
        world.dir.path().join("ui-token").display(),
        world.dir.path().join("state").display()
    );
    let config = metricops::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = world.rt.block_on(metricops::server::start(Arc::new(config), "127.0.0.1:0")).unwrap();
    let addr = server.addr;
    wait_until("ready", Duration::from_secs(30), || crate::support::http::get(addr, "/readyz").0 == 200);
    let json = ("Content-Type", "application/json");
    let (s, t) = request(addr, "POST", "/webhooks/generic", &[json], &generic("checkout", "", "f-checkout"));
    assert_eq!(s, 200, "{t}");
    wait_until("the checkout decision kept", Duration::from_secs(60), || {
        rows(&api(addr, "")).iter().any(|r| r["decision"] == "merge")
    });
    let (s, t) = request(
        addr,
        "POST",
        "/webhooks/generic",
        &[json],
        &generic("cart", r#","metricops_rollback":"off""#, "f-cart"),
    );
    assert_eq!(s, 200, "{t}");
    // The cart incident fetches main again: the merged revert is in the mirror from then on.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = api(addr, "");
        let r = rows(&last);
        if r.iter().any(|r| r["decision"] == "ignore")
            && r.iter().any(|r| r["decision"] == "merge" && r["revert"]["sha"].is_string())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the cart decision kept and the landed revert read; the history says:\n{last:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Seeded { world, server: Some(server), addr, old_revert, config_text: text }
}

/// The revert was made at the decision, and merged after it.
fn cells_times_ok(row: &Value) -> bool {
    let t = |k: &str| row["times"][k].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    matches!((t("alert"), t("decided"), t("reverted"), t("merged")), (Some(a), Some(d), Some(r), Some(m)) if a < d && d == r && r <= m + chrono::Duration::seconds(1))
}

/// `node tests/ui/check_ui.mjs`: fails saying how to install what is missing.
fn browse(base: &str, out: &Path) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed: apt-get install -y chromium (tests/run.sh does)"
    );
    assert!(
        root.join("tests/ui/node_modules/playwright-core").exists(),
        "playwright-core is needed: npm ci --prefix tests/ui (tests/run.sh does)"
    );
    let run = Command::new("node")
        .arg(root.join("tests/ui/check_ui.mjs"))
        .args([base, UI_TOKEN, out.to_str().unwrap()])
        .output()
        .expect("node runs (apt-get install -y nodejs npm)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_history_page_shows_incidents_reasons_and_links_in_headless_chromium() {
    let s = seed();
    let a = s.addr;
    let base = format!("http://{a}");
    let culprit = s.world.culprit.clone();

    // The JSON: three incidents, newest first, each with its decision and reason.
    let v = api(a, "");
    let all = rows(&v);
    assert_eq!(v["total"], 3, "{v:#}");
    let checkout = row(&all, "shop/checkout");
    assert_eq!(checkout["culprit_sha"], culprit.as_str());
    assert_eq!(checkout["versions"], "1.5.0 -> 1.4.2");
    assert_eq!(checkout["delivery"], "merged");
    assert_eq!(checkout["culprit_pr"]["number"], s.world.original_pr);
    let pr = checkout["pr"]["url"].as_str().unwrap().to_string();
    assert!(pr.ends_with(&format!("/pull/{}", checkout["pr"]["number"])), "{pr}");
    let revert = checkout["revert"]["sha"].as_str().unwrap().to_string();
    assert_eq!(git(&s.world.bare, &["rev-parse", "main"]), revert, "the landed revert is main's tip");
    let cart = row(&all, "shop/cart");
    assert_eq!(
        (cart["decision"].as_str(), cart["reason_label"].as_str()),
        (Some("ignore"), Some("opted_out"))
    );
    assert!(cart["reason"].as_str().unwrap().contains("metricops_rollback=\"off\""), "{cart:#}");
    let search = row(&all, "shop/search");
    assert_eq!(
        (search["decision"].as_str(), search["revert"]["sha"].as_str()),
        (Some("reverted"), Some(s.old_revert.as_str()))
    );
    assert_eq!(search["alerts"][0], "SearchLatency (warning)");
    assert_eq!(
        search["times"]["alert"].as_str().map(|t| t.len() > 10),
        Some(true),
        "from the incident trailer"
    );
    assert!(cells_times_ok(checkout), "{checkout:#}");
    assert_eq!(all.last().unwrap()["workload"], "shop/search", "oldest last");
    let only_cart = api(a, "?workload=shop%2Fcart");
    assert_eq!(rows(&only_cart).len(), 1);
    let recent = api(a, "?since=30d");
    assert_eq!(recent["total"], 2, "the 40-day-old revert is left out: {recent:#}");
    let p1 = api(a, "?limit=2");
    assert_eq!(rows(&p1).len(), 2);
    let p2 = api(
        a,
        &format!("?limit=2&before={}", p1["next"].as_str().unwrap().replace('/', "%2F").replace('@', "%40")),
    );
    assert_eq!(
        rows(&p2).iter().map(|r| r["workload"].clone()).collect::<Vec<_>>(),
        [Value::from("shop/search")]
    );
    assert!(
        !v.to_string().contains(UI_TOKEN) && !v.to_string().contains("x-access-token"),
        "no secret in the JSON"
    );

    // Nothing writable; credentials asked for; bad input named.
    let auth = format!("Bearer {UI_TOKEN}");
    for path in ["/ui", "/api/history"] {
        assert_eq!(request(a, "GET", path, &[], "").0, 401, "{path} without the token");
        assert_eq!(request(a, "GET", path, &[("Authorization", "Bearer wrong")], "").0, 401);
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let (code, _) = request(a, method, path, &[("Authorization", &auth)], "{}");
            assert_eq!(code, 405, "{method} {path}");
        }
        let (code, body) = request(a, "HEAD", path, &[("Authorization", &auth)], "");
        assert_eq!((code, body.as_str()), (200, ""), "HEAD {path}");
    }
    let (code, body) = request(a, "GET", "/api/history?since=forever", &[("Authorization", &auth)], "");
    assert_eq!(code, 400);
    assert!(body.contains("since=\"forever\" is not a duration"), "{body}");

    // What a person sees, in a real browser.
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/history-ui");
    std::fs::create_dir_all(&out).unwrap();
    let seen = browse(&base, &out);
    assert_eq!(seen["status"], 200, "{seen:#}");
    assert_eq!(seen["title"], "metricops — rollback history");
    let shown = seen["rows"].as_array().unwrap();
    assert_eq!(shown.len(), 3, "{seen:#}");
    let cells = |i: usize, label: &str| shown[i]["cells"][label].as_str().unwrap_or("").to_string();
    let at = |w: &str| {
        (0..3).find(|i| cells(*i, "Workload") == w).unwrap_or_else(|| panic!("no {w} row: {seen:#}"))
    };
    let (c, k, o) = (at("shop/checkout"), at("shop/cart"), at("shop/search"));
    assert!(cells(c, "Decision").starts_with("merge"), "{}", cells(c, "Decision"));
    assert!(cells(c, "Decision").contains("policy says merge"), "{}", cells(c, "Decision"));
    assert!(cells(c, "Alert").contains("CheckoutErrors (critical)"), "{}", cells(c, "Alert"));
    assert!(cells(c, "Culprit").contains("deploy checkout 1.5.0 to prod"), "{}", cells(c, "Culprit"));
    assert_eq!(cells(c, "Versions"), "1.5.0 -> 1.4.2");
    assert!(cells(c, "Times").starts_with("alert → revert"), "{}", cells(c, "Times"));
    assert!(cells(k, "Decision").contains("opted_out"), "{}", cells(k, "Decision"));
    assert!(
        cells(k, "Decision").contains("label metricops_rollback=\"off\" on alert CartErrors"),
        "{}",
        cells(k, "Decision")
    );
    assert!(cells(o, "Decision").contains("no decision was kept"), "{}", cells(o, "Decision"));
    let links: Vec<(String, String)> = shown[c]["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap().to_string(), l["href"].as_str().unwrap().to_string()))
        .collect();
    let web = pr.rsplit_once("/pull/").unwrap().0.to_string();
    for want in [
        ("commit".to_string(), format!("{web}/commit/{culprit}")),
        ("pr".to_string(), format!("{web}/pull/{}", s.world.original_pr)),
        ("pr".to_string(), pr.clone()),
        ("commit".to_string(), format!("{web}/commit/{revert}")),
    ] {
        assert!(links.contains(&want), "{want:?} not among {links:?}");
    }
    let timelines = seen["timelines"].as_array().unwrap();
    let checkout_tl =
        timelines.iter().find_map(|t| t.as_str().filter(|t| t.starts_with("shop/checkout"))).unwrap();
    for kind in ["deploy", "alert", "decision", "revert", "merged"] {
        assert!(checkout_tl.contains(kind), "{kind} not in the timeline:\n{checkout_tl}");
    }
    assert_eq!(seen["scripts"], 0, "no JavaScript");
    assert!(seen["forms"].as_array().unwrap().iter().all(|m| m == "get"), "only GET forms: {seen:#}");
    assert!(seen["buttons"].as_array().unwrap().iter().all(|m| m == "get"), "{seen:#}");
    assert_eq!(seen["elsewhere"], Value::Array(vec![]), "no outside asset is fetched");
    assert_eq!(seen["filtered"]["rows"], serde_json::json!(["shop/cart"]), "{seen:#}");
    let (first, second) = (&seen["paging"]["first"], &seen["paging"]["second"]);
    assert_eq!((first.as_array().unwrap().len(), second.as_array().unwrap().len()), (1, 1));
    assert_ne!(first, second, "the older page shows the next incident");
    assert_eq!(seen["paging"]["newest"], true);
    assert_eq!(seen["phone"]["rows"], 3);
    assert!(seen["phone"]["overflow"].as_i64().unwrap() <= 0, "no sideways scrolling on a phone: {seen:#}");
    assert_eq!(seen["without_js_rows"], 3);
    for shot in ["history-ui.png", "history-ui-phone.png"] {
        assert!(
            std::fs::metadata(out.join(shot)).unwrap().len() > 10_000,
            "{shot} kept in target/history-ui/"
        );
    }
}

#[test]
fn metricops_history_reads_the_trailers_and_the_notes_with_plain_git() {
    let s = seed();
    let repo = s.world.bare.to_str().unwrap().to_string();
    // The notes are in the repository itself: any replica, and this command, read them.
    // (The log is written first, then the note pushed: the note may come a moment later.)
    wait_until("a note on each culprit", Duration::from_secs(30), || {
        git(&s.world.bare, &["notes", "--ref", "refs/notes/metricops", "list"]).lines().count() == 2
    });
    let r = metricops(&["history", "--repo", &repo, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let all = rows(&v);
    assert_eq!(all.len(), 3, "{v:#}");
    assert_eq!(all[0]["workload"], "shop/cart");
    assert_eq!(
        row(&all, "shop/checkout")["revert"]["sha"].as_str(),
        Some(git(&s.world.bare, &["rev-parse", "main"]).as_str())
    );
    assert_eq!(row(&all, "shop/search")["decision"], "reverted");
    let r = metricops(&["history", "--repo", &repo, "--since", "30d", "--workload", "shop/checkout"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("shop/checkout  merge (merged)  CheckoutErrors (critical)"), "{}", r.stdout);
    assert!(r.stdout.contains("versions  1.5.0 -> 1.4.2"), "{}", r.stdout);
    assert!(r.stdout.contains("times     alert → revert"), "{}", r.stdout);
    assert!(!r.stdout.contains("shop/cart") && !r.stdout.contains("shop/search"), "{}", r.stdout);
    let r = metricops(&["history", "--repo", &repo, "--since", "a while"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--since \"a while\" is not a duration"), "{}", r.stderr);
}

/// A call to the stand-in's REST API as the App's installation.
fn rest(gh: &crate::support::github::GitHub, method: &str, path: &str, body: &Value) -> Value {
    let addr: std::net::SocketAddr = gh.url().trim_start_matches("http://").parse().unwrap();
    let token = format!("Bearer {}", gh.mint_token(crate::github::INSTALLATION));
    let (s, text) = request(
        addr,
        method,
        path,
        &[
            ("Authorization", &token),
            ("Content-Type", "application/json"),
            ("Accept", "application/vnd.github+json"),
        ],
        &body.to_string(),
    );
    assert!((200..300).contains(&s), "{method} {path}: {s} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The row of PR `n`.
fn pr_row(rows: &[Value], n: u64) -> Value {
    rows.iter()
        .find(|r| r["pr"]["number"] == n)
        .cloned()
        .unwrap_or_else(|| panic!("no row for PR #{n}: {rows:#?}"))
}

fn states(rows: &[Value], prs: &[u64]) -> Vec<(String, String)> {
    prs.iter()
        .map(|n| {
            let r = pr_row(rows, *n);
            (
                r["pr_state"].as_str().unwrap_or("").to_string(),
                r["pr_state_from"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn with_a_forge_the_history_shows_revert_prs_open_held_cancelled_and_merged_on_github_now() {
    let s = seed();
    let gh = &s.world.gh;
    let merged = rows(&api(s.addr, ""))
        .iter()
        .find(|r| r["decision"] == "merge")
        .and_then(|r| r["pr"]["number"].as_u64())
        .unwrap();
    // Three more revert PRs, opened on GitHub as another replica would (no decision of this
    // replica names them); then one held and one cancelled as `/metricops hold` and `cancel` leave
    // them: the hold label; the cancelled label, closed.
    let work = s.world.dir.path().join("work");
    let mut prs = Vec::new();
    for (c, w) in [('a', "shop/payments"), ('b', "shop/basket"), ('d', "shop/ledger")] {
        let branch = format!("metricops/revert-{}", c.to_string().repeat(12));
        git(&work, &["checkout", "-q", "-B", &branch, "main"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", &format!("Revert {w}")]);
        git(&work, &["push", "-q", "origin", &branch]);
        let body =
            format!("## metricops: rollback of `{w}`\n\n**Decision:** propose — policy says propose\n");
        let pr = rest(
            gh,
            "POST",
            "/repos/shop/manifests/pulls",
            &serde_json::json!({"title": format!("Revert {w}: 2.0.0 → 1.9.0"), "head": branch, "base": "main", "body": body}),
        );
        prs.push(pr["number"].as_u64().unwrap());
    }
    let (open, held, cancelled) = (prs[0], prs[1], prs[2]);
    rest(
        gh,
        "POST",
        &format!("/repos/shop/manifests/issues/{held}/labels"),
        &serde_json::json!({"labels": ["metricops:hold"]}),
    );
    rest(
        gh,
        "POST",
        &format!("/repos/shop/manifests/issues/{cancelled}/labels"),
        &serde_json::json!({"labels": ["metricops:cancelled"]}),
    );
    rest(
        gh,
        "PATCH",
        &format!("/repos/shop/manifests/pulls/{cancelled}"),
        &serde_json::json!({"state": "closed"}),
    );
    let want: Vec<(String, String)> = ["open", "held", "cancelled", "merged"]
        .iter()
        .map(|st| (st.to_string(), "forge".to_string()))
        .collect();
    let all = [open, held, cancelled, merged];

    // serve lists them again within `history.forge_refresh` (1s here), once per refresh.
    let before = gh.requests().len();
    let mut last = Value::Null;
    wait_until("the PRs' states from GitHub in /api/history", Duration::from_secs(60), || {
        last = api(s.addr, "");
        rows(&last).iter().filter(|r| r["pr"]["number"].is_u64()).count() == 4
            && states(&rows(&last), &all) == want
    });
    let v = last;
    assert_eq!(v["forge"][0]["repo"], "shop", "{v:#}");
    assert!(v["forge"][0]["listed_at"].is_string() && v["forge"][0]["error"].is_null(), "{v:#}");
    assert_eq!(pr_row(&rows(&v), held)["workload"], "shop/basket", "named by the PR's body");
    assert_eq!(pr_row(&rows(&v), held)["decision"], "proposed");
    assert_eq!(pr_row(&rows(&v), cancelled)["culprit_sha"], "dddddddddddd", "from the branch");
    assert_eq!(pr_row(&rows(&v), merged)["workload"], "shop/checkout", "the kept decision's row");
    let listed = gh.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/repos/shop/manifests/pulls?state=all"))
        .count();
    assert!(listed >= 1, "serve listed the revert PRs, state=all");
    let (code, html) = request(s.addr, "GET", "/ui", &[("Authorization", &format!("Bearer {UI_TOKEN}"))], "");
    assert_eq!(code, 200);
    assert!(html.contains("4 revert PRs&#x27; states from GitHub as of"), "{html}");

    // `metricops history --config`: serve's mirror and log, and GitHub asked once.
    let config = s.world.dir.path().join("metricops.yaml");
    std::fs::write(&config, &s.config_text).unwrap();
    let config = config.to_str().unwrap();
    let r = metricops(&["history", "--config", config, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.trim(), "", "nothing to warn about");
    let v = r.json();
    assert_eq!(states(&rows(&v), &all), want, "{v:#}");
    assert_eq!(v["forge"][0]["prs"], 4, "{v:#}");
    assert!(rows(&v).iter().any(|r| r["decision"] == "ignore"), "the kept decisions too: {v:#}");
    assert!(rows(&v).iter().any(|r| r["decision"] == "reverted"), "the trailers too: {v:#}");
    let bare = s.world.bare.to_str().unwrap();
    let r = metricops(&["history", "--config", config, "--repo", bare, "--workload", "shop/basket"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("(held on GitHub now)"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("#{held} ")), "{}", r.stdout);

    // GitHub answers 502: the command still shows what git holds, and says so in one line.
    gh.fail_next("GET", "/repos/shop/manifests/pulls", 502, &[], 10_000);
    let r = metricops(&["history", "--config", config, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warned: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(warned.len(), 1, "one line: {}", r.stderr);
    assert!(warned[0].starts_with("warning: shop: GitHub did not answer for the revert PRs"), "{}", r.stderr);
    assert!(warned[0].contains("502"), "{}", r.stderr);
    let v = r.json();
    let git_rows = rows(&v);
    assert_eq!(git_rows.len(), 3, "the rows git and the records hold, no more: {v:#}");
    assert_eq!(
        states(&git_rows, &[merged]),
        [("merged".to_string(), "kept".to_string())],
        "as last known: {v:#}"
    );
    assert!(v["forge"][0]["error"].as_str().unwrap().contains("502"), "{v:#}");
    // serve keeps GitHub's last answer, and says it could not ask again.
    wait_until("serve's warning", Duration::from_secs(60), || {
        api(s.addr, "")["forge"][0]["error"].is_string()
    });
    let v = api(s.addr, "");
    assert_eq!(states(&rows(&v), &all), want, "GitHub's last answer stays: {v:#}");
    let (code, html) = request(s.addr, "GET", "/ui", &[("Authorization", &format!("Bearer {UI_TOKEN}"))], "");
    assert_eq!(code, 200);
    assert!(html.contains("GitHub did not answer for the revert PRs"), "{html}");
    s.world.gh.assert_faithful();
}

#[test]
fn metricops_history_follows_githubs_pages_to_every_revert_pr() {
    let world = World::new();
    // 130 revert PRs among 40 others: two pages of 100 on GitHub.
    for i in 0..130u64 {
        world.gh.add_merged_pull(
            "shop",
            "manifests",
            "metricops[bot]",
            &format!("Revert shop/checkout: {i}"),
            &format!("metricops/revert-{i:012}"),
            &format!("{i:040x}"),
        );
    }
    for i in 0..40u64 {
        world.gh.add_merged_pull(
            "shop",
            "manifests",
            "renovate[bot]",
            "Bump",
            &format!("renovate/x{i}"),
            "ab12",
        );
    }
    let config = world.dir.path().join("metricops.yaml");
    std::fs::write(&config, world.config_text("propose", "")).unwrap();
    let before = world.gh.requests().len();
    let r = metricops(&[
        "history",
        "--config",
        config.to_str().unwrap(),
        "--repo",
        world.bare.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["forge"][0]["prs"], 130, "{}", v["forge"]);
    let merged =
        rows(&v).iter().filter(|r| r["pr_state"] == "merged" && r["pr_state_from"] == "forge").count();
    assert_eq!(merged, 130);
    let listings: Vec<String> = world.gh.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/repos/shop/manifests/pulls?"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(listings.len(), 2, "one listing, two pages: {listings:?}");
    assert!(
        listings[1].contains("page=2") && listings.iter().all(|l| l.contains("state=all")),
        "{listings:?}"
    );
    world.gh.assert_faithful();
}
