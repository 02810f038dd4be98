//! Config loading: any text is a config or a list of problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(c) = metricops::config::Config::parse(s) {
        let _ = c.policy();
        let _ = c.retry();
        let _ = c.server.timeouts();
    }
});
