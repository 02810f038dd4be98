//! `metricops simulate`: one alert payload through the whole pipeline, every step printed. Dry run
//! unless `--execute`: the revert is built in the local mirror, nothing leaves the machine but the
//! fetch.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::domain::alert::Source;

pub fn run(
    config_path: &Path,
    alert_path: &Path,
    source: Source,
    execute: bool,
    at: Option<&str>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let body =
        std::fs::read_to_string(alert_path).with_context(|| format!("reading {}", alert_path.display()))?;
    let now: DateTime<Utc> = match at {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("--at {t:?} is not an RFC 3339 time"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let alerts = source
        .parse(&body, now)
        .with_context(|| format!("{} as a {} webhook", alert_path.display(), source.label()))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let config = std::sync::Arc::new(config);
    let mut engine = {
        let _guard = rt.enter();
        crate::wiring::Wired::engine_only(config.clone())?
    };
    engine.dry_run = !execute;

    println!("1. Alerts ({}, {} in the payload)", source.label(), alerts.len());
    const SHOWN: usize = 50;
    for a in alerts.iter().take(SHOWN) {
        println!(
            "   {} [{}] {:?} since {}  {}",
            a.name,
            a.severity.as_deref().unwrap_or("-"),
            a.status,
            a.starts_at.to_rfc3339(),
            crate::domain::alert::labels_text(&a.labels)
        );
    }
    if alerts.len() > SHOWN {
        println!("   … and {} more", alerts.len() - SHOWN);
    }
    let report = rt.block_on(engine.handle_alerts(source, &alerts, std::time::Instant::now(), now));
    println!("\n2. Passed over: {}", report.passed_over.len());
    for (a, why) in &report.passed_over {
        println!("   {}: {why}", a.name);
    }
    for o in &report.outcomes {
        println!("\n3. Incident {} → workload {}", o.incident.id, o.workload);
        println!(
            "   target: {} branch {} paths [{}] ({})",
            o.repo_url,
            o.branch,
            o.paths.join(", "),
            o.subject
        );
        println!("\n4. Culprit");
        for line in crate::cli::culprit_text(&o.culprit).lines() {
            println!("   {line}");
        }
        println!("\n5. Decision: {}", o.decision.label());
        if let crate::domain::policy::Decision::Ignore(r) = &o.decision {
            println!("   {r}");
            continue;
        }
        if let Some(r) = &o.revert {
            println!("\n6. Revert ({} mode: {})", r.mode.label(), r.why);
            for line in o.patch.as_deref().unwrap_or("").lines() {
                println!("   {line}");
            }
        }
        if let Some((title, body)) = &o.pr {
            println!("\n7. Pull request\n   title: {title}\n");
            for line in body.lines() {
                println!("   {line}");
            }
        }
        match &o.delivery {
            Some(d) => println!("\n8. Delivered: {} {:?}", d.label(), d.pr().map(|p| &p.url)),
            None if !execute => {
                println!("\n8. Dry run: nothing pushed, no pull request opened (add --execute to deliver)")
            }
            None => println!("\n8. Nothing delivered"),
        }
    }
    if !report.failed.is_empty() {
        for (id, e) in &report.failed {
            eprintln!("incident {id} failed: {e}");
        }
        anyhow::bail!(
            "{} of {} incidents failed",
            report.failed.len(),
            report.failed.len() + report.outcomes.len()
        );
    }
    Ok(())
}
