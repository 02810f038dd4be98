//! `metricops demo`: a throwaway manifests repository, a bad deploy, a firing alert, and the revert,
//! end to end on this machine through the same engine as the bot. No network, no config.

use anyhow::Context;
use chrono::{Duration, Utc};

use crate::adapters::git::GitRepo;
use crate::config::Config;
use crate::domain::revert::branch_name;
use crate::pipeline::{Delivery, Engine};

const DEPLOYMENT: &str = include_str!("../fixtures/demo/apps/checkout/base/deployment.yaml");
const KUSTOMIZATION: &str = include_str!("../fixtures/demo/apps/checkout/overlays/prod/kustomization.yaml");
const CART_VALUES: &str = include_str!("../fixtures/demo/apps/cart/values.yaml");
const CONFIG: &str = include_str!("../fixtures/demo/metricops.yaml");
const ALERT: &str = include_str!("../fixtures/alertmanager/demo-firing.json");

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

fn heading(n: u32, s: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m{n}. {s}\x1b[0m");
    } else {
        println!("\n{n}. {s}");
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}

pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("metricops-demo-").tempdir().context("creating a temp dir")?;
    let remote_path = dir.path().join("shop-manifests.git");
    let remote = GitRepo::init_bare(&remote_path)?;
    let now = Utc::now();
    let dev = ("Dana Developer", "dana@shop.example");
    let ci = ("shop-ci", "ci@shop.example");
    println!("metricops demo: everything below happens on this machine, in {}", dir.path().display());

    heading(1, "A manifests repository (a bare repo standing in for the Git remote)");
    remote.commit_files(
        "main",
        &files(&[
            ("apps/checkout/base/deployment.yaml", DEPLOYMENT),
            ("apps/checkout/overlays/prod/kustomization.yaml", KUSTOMIZATION),
            ("apps/cart/values.yaml", CART_VALUES),
        ]),
        "Add shop manifests",
        dev,
        now - Duration::hours(3),
    )?;
    remote.commit_files(
        "main",
        &files(&[("apps/cart/values.yaml", &CART_VALUES.replace("2.3.0", "2.3.1"))]),
        "deploy cart 2.3.1 to prod",
        ci,
        now - Duration::minutes(90),
    )?;
    let bad = remote.commit_files(
        "main",
        &files(&[(
            "apps/checkout/overlays/prod/kustomization.yaml",
            &KUSTOMIZATION.replace("1.4.2", "1.5.0"),
        )]),
        "deploy checkout 1.5.0 to prod",
        ci,
        now - Duration::minutes(25),
    )?;
    remote.commit_files(
        "main",
        &files(&[(
            "apps/cart/values.yaml",
            &CART_VALUES.replace("2.3.0", "2.3.1").replace("maxReplicas: 6", "maxReplicas: 8"),
        )]),
        "cart: allow 8 replicas",
        dev,
        now - Duration::minutes(12),
    )?;
    let log = remote_log(&remote)?;
    print!("{}", indent(&log));
    println!("   The bad deploy is {} (checkout 1.4.2 → 1.5.0); a later commit touched cart.", bad.short());

    heading(2, "Alertmanager fires (webhook v4)");
    let starts = (now - Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = ALERT.replace("{{STARTS_AT}}", &starts);
    let alerts = crate::domain::alert::parse_alertmanager(&body)?;
    for a in &alerts {
        println!(
            "   {} [{}] since {}  {}",
            a.name,
            a.severity.as_deref().unwrap_or("-"),
            a.starts_at.to_rfc3339(),
            crate::domain::alert::labels_text(&a.labels)
        );
    }

    let config_text = CONFIG.replace("{{REMOTE}}", &remote_path.display().to_string());
    let mut config =
        Config::parse(&config_text).map_err(|e| anyhow::anyhow!("the demo config is broken: {e}"))?;
    config.state_dir = Some(dir.path().join("state"));
    let config = std::sync::Arc::new(config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engine = Engine::new(config.clone());
    let report = rt.block_on(engine.handle_alertmanager(&body, now))?;
    if let Some((id, err)) = report.failed.first() {
        anyhow::bail!("incident {id} failed: {err}");
    }
    let o = report.outcomes.first().context("the alert made no incident")?;

    heading(3, "Incident and target");
    println!("   incident {} → workload {}", o.incident.id, o.workload);
    println!("   target: {} branch {} paths {} ({})", o.repo_url, o.branch, o.paths.join(", "), o.subject);

    heading(4, "Culprit");
    print!("{}", indent(&crate::cli::culprit_text(&o.culprit)));

    heading(5, "Decision");
    println!("   {}", o.decision.label());

    let built = o.revert.as_ref().context("no revert was built")?;
    heading(6, &format!("Revert ({} mode: {})", built.mode.label(), built.why));
    print!("{}", indent(o.patch.as_deref().unwrap_or("")));

    let (title, pr_body) = o.pr.as_ref().context("no PR text")?;
    heading(7, "The pull request, as GitHub shows it (with `forge: github`, the App opens it)");
    print!(
        "{}",
        indent(&github_view(title, pr_body, &o.branch, &branch_name(&o.culprit.commit.sha.0), &config))
    );

    heading(8, "On the remote");
    for (name, sha) in remote.remote_heads(&remote_path.display().to_string(), None)? {
        println!("   {name:<40} {}", sha.short());
    }
    match &o.delivery {
        Some(Delivery::Proposed { branch, .. }) => {
            println!("   Pushed {branch}: a person reviews and merges it; Argo CD or Flux then rolls back.")
        }
        Some(d) => println!("   {d:?}"),
        None => {}
    }

    heading(9, "The same alert again");
    let again = rt.block_on(engine.handle_alertmanager(&body, now))?;
    match again.outcomes.first().and_then(|o| o.delivery.clone()) {
        Some(Delivery::AlreadyProposed { branch, .. }) => {
            println!("   {branch} exists already: nothing new is opened (one revert per culprit).")
        }
        other => println!("   {other:?}"),
    }
    println!("\nDone. The temp dir is removed on exit.");
    Ok(())
}

/// The PR page's header and body, as the App would open it: title, state line, labels, reviewers,
/// then the Markdown body exactly as sent.
fn github_view(title: &str, body: &str, base: &str, head: &str, config: &Config) -> String {
    let labels = config
        .github
        .as_ref()
        .map(|g| g.labels.clone())
        .unwrap_or_else(|| vec!["metricops".into(), "rollback".into()]);
    let rule = "─".repeat(72);
    let mut out = format!(
        "┌{rule}\n│ {title} #1\n│ [Open] metricops[bot] wants to merge 1 commit into {base} from {head}\n│ Labels: {}   Reviewers: the culprit PR's author (on GitHub)\n├{rule}\n",
        labels.join(", ")
    );
    for line in body.lines() {
        out.push_str(&format!("│ {line}\n"));
    }
    out.push_str(&format!("└{rule}\n"));
    out
}

fn remote_log(repo: &GitRepo) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut cur = Some(repo.resolve("main")?);
    while let Some(c) = cur {
        let info = repo.commit_info(&c)?;
        out.push_str(&format!("{}  {:<32} {}\n", c.short(), info.summary, info.author));
        cur = info.parents.first().cloned();
    }
    Ok(out)
}
