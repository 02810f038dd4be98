//! `metricops demo`, the top smoke test.

use crate::support::metricops;

#[test]
fn demo_runs_end_to_end_and_shows_each_step() {
    let r = metricops(&["demo"]);
    assert_eq!(r.code, 0, "demo failed:\n{}\n{}", r.stdout, r.stderr);
    for want in [
        "deploy checkout 1.5.0 to prod",
        "previous version: 1.4.2",
        "propose",
        "-  newTag: \"1.5.0\" # promoted by CI",
        "+  newTag: \"1.4.2\" # promoted by CI",
        "Revert shop/checkout: checkout 1.5.0 → 1.4.2 #1",
        "metricops/revert-",
        "nothing new is opened",
    ] {
        assert!(r.stdout.contains(want), "demo output lacks {want:?}:\n{}", r.stdout);
    }
}
