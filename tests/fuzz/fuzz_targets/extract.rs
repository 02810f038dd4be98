//! Extraction from any text (YAML or not, block strings, aliases): never panics, and the focused
//! read of a long file finds what the full read finds in the documents it keeps.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metricops::domain::extract::{extract, find_key};

fuzz_target!(|s: &str| {
    let all = extract("apps/x/deployment.yaml", s);
    for o in &all.occurrences {
        assert!(o.line >= 1, "{s:?}");
    }
    let _ = extract("kustomization.yaml", s);
    let _ = extract("values.yaml", s);
    let _ = find_key("values.yaml", s, "image.tag");
});
