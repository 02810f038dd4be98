//! Alertmanager, Grafana, generic and Alertmanager-API payloads: any bytes are parsed or refused
//! with an error, never a panic; what parses has a name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metricops::domain::alert::{parse_alertmanager, parse_alertmanager_api, parse_generic, parse_grafana};

fuzz_target!(|s: &str| {
    let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    for r in [parse_alertmanager(s), parse_grafana(s), parse_generic(s, now), parse_alertmanager_api(s)] {
        if let Ok(alerts) = r {
            for a in alerts {
                assert!(!a.name.is_empty(), "{s:?}");
            }
        }
    }
});
