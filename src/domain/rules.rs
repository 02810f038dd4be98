//! The built-in evaluator's rules: PromQL checked with a real parser, SLOs turned into
//! multi-window, multi-burn-rate conditions (the SRE workbook's 14.4× over 1h and 5m, 6× over 6h and
//! 30m), and the `for` state machine. Pure: query results and the clock come in as values.

use chrono::{DateTime, Duration, Utc};

/// A rule ready to evaluate.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub workload: String,
    /// The PromQL condition: any sample in the result means it holds.
    pub expr: String,
    pub for_: Duration,
    pub severity: Option<String>,
    /// Where it came from: `config` or the manifest file holding the annotation.
    pub origin: String,
}

/// The rule a workload's manifest carries: `metadata.annotations["metricops.dev/rule"]` (PromQL),
/// with `metricops.dev/rule-for` (a duration text) beside it. Returns `(workload name, expr, for)`.
pub fn annotated_rules(text: &str) -> Vec<(String, String, Option<String>)> {
    let Ok(docs) = crate::domain::yaml::parse_documents(text) else {
        return Vec::new();
    };
    docs.iter()
        .filter_map(|d| {
            let meta = d.get("metadata")?;
            let ann = meta.get("annotations")?;
            let expr = ann.str_at("metricops.dev/rule")?.trim().to_string();
            let name = meta.str_at("name").unwrap_or("").to_string();
            Some((name, expr, ann.str_at("metricops.dev/rule-for").map(str::to_string)))
        })
        .collect()
}

/// Whether a manifest turns rollback off: `metadata.annotations["metricops.dev/rollback"]` or
/// `metadata.labels[...]` is `"off"`.
pub fn rollback_off(text: &str) -> bool {
    let Ok(docs) = crate::domain::yaml::parse_documents(text) else {
        return false;
    };
    docs.iter().any(|d| {
        ["annotations", "labels"].iter().any(|k| {
            d.path(&["metadata", k])
                .and_then(|m| m.str_at("metricops.dev/rollback"))
                .is_some_and(|v| v.eq_ignore_ascii_case("off"))
        })
    })
}

/// Checks PromQL syntax; the error names the rule.
pub fn check_promql(rule: &str, expr: &str) -> Result<(), String> {
    promql_parser::parser::parse(expr)
        .map(|_| ())
        .map_err(|e| format!("rule {rule:?}: invalid PromQL {expr:?}: {e}"))
}

/// `"99.9%"` or `"0.999"` → 0.999.
pub fn parse_objective(s: &str) -> Option<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => t.parse::<f64>().ok()?,
    };
    (v > 0.0 && v < 1.0).then_some(v)
}

/// The multi-window, multi-burn-rate condition for an SLO. `good` and `total` contain `{{window}}`.
pub fn slo_expr(objective: f64, good: &str, total: &str) -> String {
    let budget = 1.0 - objective;
    let ratio =
        |w: &str| format!("(1 - ({}) / ({}))", good.replace("{{window}}", w), total.replace("{{window}}", w));
    let pair = |factor: f64, long: &str, short: &str| {
        let threshold = format_float(factor * budget);
        format!("({} > {threshold} and {} > {threshold})", ratio(long), ratio(short))
    };
    format!("{} or {}", pair(14.4, "1h", "5m"), pair(6.0, "6h", "30m"))
}

fn format_float(x: f64) -> String {
    let s = format!("{x:.10}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What one evaluation said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// The condition holds (the query returned samples).
    Holds,
    /// The query returned nothing.
    Clear,
    /// Prometheus could not be asked, or answered with an error: no data is not a failure.
    Unknown,
}

/// Where a rule stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleState {
    Inactive,
    Pending { since: DateTime<Utc> },
    Firing { since: DateTime<Utc> },
}

/// What to do after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Nothing,
    /// The rule starts firing: send an alert (starting at `since`).
    Fire {
        since: DateTime<Utc>,
    },
    /// The rule stopped holding.
    Resolve,
}

impl RuleState {
    /// One evaluation. `Unknown` never moves a rule towards firing, and never resolves one that fires.
    pub fn step(self, sample: Sample, for_: Duration, now: DateTime<Utc>) -> (RuleState, Transition) {
        match (self, sample) {
            (s, Sample::Unknown) => (
                match s {
                    RuleState::Pending { .. } => RuleState::Inactive,
                    other => other,
                },
                Transition::Nothing,
            ),
            (RuleState::Inactive, Sample::Holds) if for_ <= Duration::zero() => {
                (RuleState::Firing { since: now }, Transition::Fire { since: now })
            }
            (RuleState::Inactive, Sample::Holds) => (RuleState::Pending { since: now }, Transition::Nothing),
            (RuleState::Pending { since }, Sample::Holds) if now - since >= for_ => {
                (RuleState::Firing { since }, Transition::Fire { since })
            }
            (s @ (RuleState::Pending { .. } | RuleState::Firing { .. }), Sample::Holds) => {
                (s, Transition::Nothing)
            }
            (RuleState::Firing { .. }, Sample::Clear) => (RuleState::Inactive, Transition::Resolve),
            (_, Sample::Clear) => (RuleState::Inactive, Transition::Nothing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn promql_is_checked_with_the_rule_name() {
        assert_eq!(check_promql("ok", r#"rate(http_requests_total{code=~"5.."}[5m]) > 0"#), Ok(()));
        let e = check_promql("broken", "rate(http_requests_total[5m] > 0").unwrap_err();
        assert!(e.starts_with("rule \"broken\": invalid PromQL"), "{e}");
    }

    #[test]
    fn slos_become_two_burn_rate_pairs() {
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(close(parse_objective("99.9%"), 0.999) && close(parse_objective("0.99"), 0.99));
        assert_eq!(parse_objective("100%"), None);
        assert_eq!(parse_objective("ninety"), None);
        let e = slo_expr(0.999, "sum(rate(ok[{{window}}]))", "sum(rate(all[{{window}}]))");
        assert_eq!(
            e,
            "((1 - (sum(rate(ok[1h]))) / (sum(rate(all[1h])))) > 0.0144 and (1 - (sum(rate(ok[5m]))) / (sum(rate(all[5m])))) > 0.0144) or \
             ((1 - (sum(rate(ok[6h]))) / (sum(rate(all[6h])))) > 0.006 and (1 - (sum(rate(ok[30m]))) / (sum(rate(all[30m])))) > 0.006)"
        );
        assert_eq!(check_promql("slo", &e), Ok(()));
    }

    #[test]
    fn rules_are_read_from_workload_annotations() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\n  annotations:\n    metricops.dev/rule: rate(http_requests_total{code=~\"5..\"}[5m]) > 0\n    metricops.dev/rule-for: 2m\nspec: {}\n---\nkind: Service\nmetadata: {name: checkout}\n";
        assert_eq!(
            annotated_rules(text),
            [(
                "checkout".to_string(),
                "rate(http_requests_total{code=~\"5..\"}[5m]) > 0".to_string(),
                Some("2m".to_string())
            )]
        );
        assert!(annotated_rules("not: [valid").is_empty());
        assert!(rollback_off("metadata:\n  name: x\n  annotations:\n    metricops.dev/rollback: \"off\"\n"));
        assert!(rollback_off("metadata:\n  labels: {metricops.dev/rollback: \"OFF\"}\n"));
        assert!(!rollback_off("metadata:\n  annotations:\n    metricops.dev/rollback: \"on\"\n"));
    }

    #[test]
    fn for_holds_before_firing_and_unknown_never_fires() {
        let t = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let two = Duration::seconds(2);
        let mut s = RuleState::Inactive;
        let mut log = Vec::new();
        for (at, sample) in [
            (0, Sample::Holds),
            (1, Sample::Holds),
            (2, Sample::Holds),
            (3, Sample::Holds),
            (4, Sample::Unknown),
            (5, Sample::Clear),
            (6, Sample::Holds),
            (7, Sample::Unknown),
            (8, Sample::Holds),
            (9, Sample::Holds),
            (10, Sample::Holds),
        ] {
            let (next, tr) = s.step(sample, two, t(at));
            log.push((at, tr));
            s = next;
        }
        let fired: Vec<_> = log.iter().filter(|(_, tr)| *tr != Transition::Nothing).collect();
        assert_eq!(
            fired,
            [
                &(2, Transition::Fire { since: t(0) }),
                &(5, Transition::Resolve),
                &(10, Transition::Fire { since: t(8) })
            ]
        );
        // `for: 0` fires on the first holding sample.
        assert_eq!(
            RuleState::Inactive.step(Sample::Holds, Duration::zero(), t(0)).1,
            Transition::Fire { since: t(0) }
        );
    }
}
