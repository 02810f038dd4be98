//! The policy guards through the engine, on real repositories: what git and the alerts say decides.

use metricops::domain::alert::{Source, parse_generic};
use metricops::pipeline::{Engine, Report};

use crate::e2e::{Manifests, git};

fn run(m: &Manifests, policy_extra: &str, alert: &str) -> Report {
    let text = m
        .config_text("")
        .replace("  max_culprit_age: 24h\n", &format!("  max_culprit_age: 24h\n{policy_extra}"));
    let config = metricops::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let engine = Engine::new(std::sync::Arc::new(config));
    let now = chrono::Utc::now();
    let alerts = parse_generic(alert, now).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(engine.handle_alerts(Source::Generic, &alerts, std::time::Instant::now(), now))
}

fn decision(r: &Report) -> String {
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    r.outcomes
        .first()
        .map(|o| o.decision.label().to_string())
        .unwrap_or_else(|| format!("no incident: {:?}", r.passed_over))
}

const ALERT: &str = r#"{"name":"CheckoutErrors","severity":"critical","labels":{"namespace":"shop","deployment":"checkout"}}"#;

#[test]
fn a_second_bad_deploy_within_the_cooldown_is_left_to_people() {
    let m = Manifests::new(None);
    m.deploy("1.5.0");
    assert_eq!(decision(&run(&m, "", ALERT)), "merge");
    let revert = m.main();
    assert!(
        git(&m.bare, &["log", "-1", "--format=%B", "main"]).contains("Metricops-Workload: shop/checkout")
    );
    m.deploy("1.6.0");
    let r = run(&m, "", ALERT);
    assert_eq!(decision(&r), "cooldown");
    assert!(r.outcomes[0].delivery.is_none());
    assert_ne!(m.main(), revert, "only the new deploy is on main; nothing reverted it");
    // With the cooldown shortened to nothing, the same alert reverts it; a cap of one a day then stops a third.
    assert_eq!(decision(&run(&m, "  cooldown: 0s\n", ALERT)), "merge");
    assert!(
        git(&m.bare, &["show", "main:apps/checkout/overlays/prod/kustomization.yaml"]).contains("\"1.4.2\""),
        "1.6.0 went back to 1.4.2, what ran before it"
    );
    m.deploy("1.7.0");
    assert_eq!(
        decision(&run(&m, "  cooldown: 0s\n  max_reverts_per_day_per_repo: 2\n", ALERT)),
        "too_many_reverts"
    );
}

#[test]
fn opt_outs_and_a_version_no_longer_running_are_respected() {
    let m = Manifests::new(None);
    m.deploy("1.5.0");
    let bad = m.main();
    let labelled = ALERT
        .replace("\"deployment\":\"checkout\"", "\"deployment\":\"checkout\",\"metricops_rollback\":\"off\"");
    assert_eq!(decision(&run(&m, "", &labelled)), "opted_out");
    let rolled = ALERT.replace(
        "\"deployment\":\"checkout\"",
        "\"deployment\":\"checkout\",\"image\":\"ghcr.io/shop/checkout:1.4.2\"",
    );
    assert_eq!(decision(&run(&m, "", &rolled)), "no_longer_running");
    let still = ALERT.replace(
        "\"deployment\":\"checkout\"",
        "\"deployment\":\"checkout\",\"image\":\"ghcr.io/shop/checkout:1.5.0\"",
    );
    assert_eq!(run(&m, "", &still).outcomes[0].decision.label(), "merge");
    // Annotated on the workload's manifest: off, whatever the alert.
    let m = Manifests::new(None);
    m.write("apps/checkout/base/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\n  annotations:\n    metricops.dev/rollback: \"off\"\nspec: {}\n", "checkout: no automatic rollback");
    m.deploy("1.5.0");
    let r = run(&m, "", ALERT);
    assert_eq!(decision(&r), "opted_out");
    let ignored = format!("{:?}", r.outcomes[0].decision);
    assert!(ignored.contains("apps/checkout/base/deployment.yaml"), "{ignored}");
    assert_ne!(m.main(), bad);
}
