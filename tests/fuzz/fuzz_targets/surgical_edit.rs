//! The surgical edit: for every reference found in any text, setting another version either is
//! refused with a reason, or gives a text that reads the new version there and differs from the
//! old one only in that reference's lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metricops::domain::extract::extract;
use metricops::domain::image_ref::Version;
use metricops::domain::revert::{apply, only_these_changed, plan_edits};

const FILE: &str = "apps/x/deployment.yaml";

fuzz_target!(|s: &str| {
    let all = extract(FILE, s).occurrences;
    let to = Version { tag: Some("9.9.9-fuzz".into()), digest: None };
    for o in all.iter().take(4) {
        let Ok(edits) = plan_edits(s, &[(o, &to)], &all, |t| extract(FILE, t).occurrences) else {
            continue;
        };
        let after = String::from_utf8(apply(s.as_bytes(), &edits)).expect("the edit keeps UTF-8");
        let now = extract(FILE, &after).occurrences;
        let site = now.iter().find(|n| n.slot == o.slot);
        let site = site.unwrap_or_else(|| panic!("the slot is gone after the edit: {s:?} → {after:?}"));
        assert_eq!(site.version.tag.as_deref(), Some("9.9.9-fuzz"), "{s:?} → {after:?}");
        assert!(only_these_changed(s, &after, &[site]), "more than the reference changed: {s:?} → {after:?}");
    }
});
