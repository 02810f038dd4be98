//! Invariants of the code map that a test can hold.

#[test]
fn the_domain_does_no_io() {
    let forbidden =
        ["tokio", "git2", "octocrab", "kube", "reqwest", "axum", "std::fs", "std::net", "std::process"];
    let mut bad = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/domain"))];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if forbidden
                        .iter()
                        .any(|f| line.contains(&format!("{f}::")) || line.contains(&format!("use {f}")))
                    {
                        bad.push(format!("{}:{}: {line}", path.display(), i + 1));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "src/domain must stay pure:\n{}", bad.join("\n"));
}
