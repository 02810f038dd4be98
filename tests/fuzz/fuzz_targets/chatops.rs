//! `/metricops` comments: any text gives commands or replies, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = metricops::domain::chatops::parse(s);
});
