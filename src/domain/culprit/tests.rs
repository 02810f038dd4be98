use std::collections::BTreeMap;

use super::*;

/// A history kept in memory: each commit is a full snapshot of its files.
#[derive(Default)]
struct Mem {
    commits: Vec<(CommitInfo, BTreeMap<String, usize>)>,
    blobs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("no such commit")]
struct NoCommit;

impl Mem {
    fn blob(&mut self, text: &str) -> usize {
        match self.blobs.iter().position(|b| b == text) {
            Some(i) => i,
            None => {
                self.blobs.push(text.to_string());
                self.blobs.len() - 1
            }
        }
    }

    /// Commits `edits` (path → Some(text) writes, None deletes) on top of `parents[0]`.
    fn add(&mut self, summary: &str, parents: &[&CommitSha], edits: &[(&str, Option<&str>)]) -> CommitSha {
        let mut files = parents
            .first()
            .map(|p| self.commits.iter().find(|(c, _)| &c.sha == *p).expect("parent").1.clone())
            .unwrap_or_default();
        for (path, text) in edits {
            match text {
                Some(t) => {
                    let b = self.blob(t);
                    files.insert(path.to_string(), b);
                }
                None => {
                    files.remove(*path);
                }
            }
        }
        let sha = CommitSha(format!("{:040x}", self.commits.len() + 1));
        let info = CommitInfo {
            sha: sha.clone(),
            parents: parents.iter().map(|p| (*p).clone()).collect(),
            summary: summary.to_string(),
            message: summary.to_string(),
            author: "A".into(),
            author_email: "a@example.com".into(),
            time: DateTime::parse_from_rfc3339("2026-11-01T10:00:00+01:00").unwrap(),
        };
        self.commits.push((info, files));
        sha
    }

    fn snapshot(&self, sha: &CommitSha) -> Result<&BTreeMap<String, usize>, NoCommit> {
        self.commits.iter().find(|(c, _)| &c.sha == sha).map(|(_, f)| f).ok_or(NoCommit)
    }
}

impl History for Mem {
    type Blob = usize;
    type Error = NoCommit;
    fn commit(&self, sha: &CommitSha) -> Result<CommitInfo, NoCommit> {
        self.commits.iter().find(|(c, _)| &c.sha == sha).map(|(c, _)| c.clone()).ok_or(NoCommit)
    }
    fn step(&self, sha: &CommitSha) -> Result<(Option<CommitSha>, i64), NoCommit> {
        let c = self.commit(sha)?;
        Ok((c.parents.first().cloned(), c.time.timestamp()))
    }
    fn files(&self, sha: &CommitSha) -> Result<Vec<TreeFile<usize>>, NoCommit> {
        Ok(self
            .snapshot(sha)?
            .iter()
            .map(|(p, b)| TreeFile { path: p.clone(), blob: *b, symlink: p.ends_with(".link.yaml") })
            .collect())
    }
    fn blob_at(&self, sha: &CommitSha, path: &str) -> Result<Option<usize>, NoCommit> {
        Ok(self.snapshot(sha)?.get(path).copied())
    }
    fn changes(
        &self,
        parent: Option<&CommitSha>,
        sha: &CommitSha,
    ) -> Result<Vec<FileChange<usize>>, NoCommit> {
        let new = self.snapshot(sha)?;
        let empty = BTreeMap::new();
        let old = match parent {
            Some(p) => self.snapshot(p)?,
            None => &empty,
        };
        let mut out = Vec::new();
        for path in new.keys().chain(old.keys()) {
            let (o, n) = (old.get(path).copied(), new.get(path).copied());
            if o != n && !out.iter().any(|c: &FileChange<usize>| &c.path == path) {
                out.push(FileChange { path: path.clone(), old: o, new: n });
            }
        }
        Ok(out)
    }
    fn read(&self, blob: usize) -> Result<Vec<u8>, NoCommit> {
        Ok(self.blobs[blob].clone().into_bytes())
    }
}

fn deploy(tag: &str) -> String {
    format!(
        "kind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n      - name: api\n        image: ghcr.io/x/api:{tag}\n"
    )
}

fn image(i: &str) -> Query {
    Query::new(Subject::Image(i.into()))
}

/// `(culprit summary, previous, changes as "file:line old->new")`
fn check(h: &Mem, tip: &CommitSha, q: &Query, expect: &str) {
    let got = match find_culprit(h, tip, q) {
        Ok(c) => {
            let changes: Vec<String> = c
                .changes
                .iter()
                .map(|s| {
                    format!(
                        "{}:{} {}->{}",
                        s.file,
                        s.line,
                        s.old.as_ref().map(|v| v.to_string()).unwrap_or("-".into()),
                        s.new
                    )
                })
                .collect();
            format!(
                "{} | prev {} | {} | other {:?}",
                c.commit.summary,
                c.previous.map(|v| v.to_string()).unwrap_or("-".into()),
                changes.join(", "),
                c.other_files
            )
        }
        Err(e) => format!("error {}: {e}", e.kind()),
    };
    assert_eq!(got, expect);
}

#[test]
fn the_bump_is_the_culprit_not_later_unrelated_commits() {
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("d.yaml", Some(&*deploy("1.0"))), ("README.md", Some("hi"))]);
    let b =
        h.add("bump api to 1.1", &[&a], &[("d.yaml", Some(&*deploy("1.1"))), ("CHANGELOG.md", Some("1.1"))]);
    let c = h.add("docs", &[&b], &[("README.md", Some("hello"))]);
    check(
        &h,
        &c,
        &image("ghcr.io/x/api"),
        "bump api to 1.1 | prev 1.0 | d.yaml:9 1.0->1.1 | other [\"CHANGELOG.md\"]",
    );
    check(&h, &a, &image("ghcr.io/x/api"), "init | prev - | d.yaml:9 -->1.0 | other [\"README.md\"]");
}

#[test]
fn a_version_that_comes_back_was_made_current_by_the_latest_change() {
    let mut h = Mem::default();
    let a = h.add("init 1.2", &[], &[("d.yaml", Some(&*deploy("1.2")))]);
    let b = h.add("to 1.3", &[&a], &[("d.yaml", Some(&*deploy("1.3")))]);
    let c = h.add("back to 1.2", &[&b], &[("d.yaml", Some(&*deploy("1.2")))]);
    check(&h, &c, &image("ghcr.io/x/api"), "back to 1.2 | prev 1.3 | d.yaml:9 1.3->1.2 | other []");
    // Asking for a version that is no longer current finds the latest time it became current.
    let q = Query { tag: Some("1.3".into()), ..image("ghcr.io/x/api") };
    check(&h, &c, &q, "to 1.3 | prev 1.2 | d.yaml:9 1.2->1.3 | other []");
}

#[test]
fn renames_are_not_blamed() {
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("old/d.yaml", Some(&*deploy("1.0")))]);
    let b = h.add("bump", &[&a], &[("old/d.yaml", Some(&*deploy("1.1")))]);
    let c = h.add("move", &[&b], &[("old/d.yaml", None), ("new/d.yaml", Some(&*deploy("1.1")))]);
    check(&h, &c, &image("ghcr.io/x/api"), "bump | prev 1.0 | old/d.yaml:9 1.0->1.1 | other []");
}

#[test]
fn errors_name_what_is_there() {
    let mut h = Mem::default();
    let a = h.add(
        "init",
        &[],
        &[("a.yaml", Some(&*deploy("1.0"))), ("b.yaml", Some(&*deploy("2.0").replace("api:", "api2:")))],
    );
    check(
        &h,
        &a,
        &image("ghcr.io/x/ap"),
        "error image_not_found: image ghcr.io/x/ap not found in scope; images there, nearest first: ghcr.io/x/api, ghcr.io/x/api2",
    );
    let b = h.add("second copy", &[&a], &[("c.yaml", Some(&*deploy("1.1")))]);
    check(
        &h,
        &b,
        &image("ghcr.io/x/api"),
        "error ambiguous: image ghcr.io/x/api has several current versions in scope: 1.0 in a.yaml; 1.1 in c.yaml; name one with --tag/--digest, narrow the scope with --path, or name the object with --workload",
    );
    let q = Query { tag: Some("9.9".into()), ..image("ghcr.io/x/api") };
    check(
        &h,
        &b,
        &q,
        "error version_not_found: image ghcr.io/x/api never became version 9.9 on this history",
    );
}
