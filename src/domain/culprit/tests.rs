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
            // One commit a minute, from 10:00.
            time: DateTime::parse_from_rfc3339("2026-11-01T10:00:00+01:00").unwrap()
                + chrono::Duration::minutes(self.commits.len() as i64),
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
        "error ambiguous: image ghcr.io/x/api has several current versions in scope: 1.0 in a.yaml (Deployment/api); 1.1 in c.yaml (Deployment/api); name one with --tag/--digest, narrow the scope with --path, or name the object with --workload",
    );
    let q = Query { tag: Some("9.9".into()), ..image("ghcr.io/x/api") };
    check(
        &h,
        &b,
        &q,
        "error version_not_found: image ghcr.io/x/api never became version 9.9 on this history",
    );
}

fn key(k: &str) -> Query {
    Query::new(Subject::Key(k.into()))
}

fn with_tag(q: Query, t: &str) -> Query {
    Query { tag: Some(t.into()), ..q }
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// bjw-s app-template, as Renovate pins digests: `tag: 1.2.3@sha256:…`.
fn app_template(tag: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: home\n  namespace: apps\nspec:\n  values:\n    controllers:\n      main:\n        containers:\n          app:\n            image:\n              repository: ghcr.io/x/home\n              tag: {tag}\n"
    )
}

#[test]
fn a_digest_inside_a_split_tag_field() {
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("hr.yaml", Some(&*app_template(&format!("1.0.0@{D1}"))))]);
    let b =
        h.add("update home to 1.1.0", &[&a], &[("hr.yaml", Some(&*app_template(&format!("1.1.0@{D2}"))))]);
    let c = h.add("unrelated", &[&b], &[("README.md", Some("x"))]);
    let want =
        format!("update home to 1.1.0 | prev 1.0.0@{D1} | hr.yaml:14 1.0.0@{D1}->1.1.0@{D2} | other []");
    check(&h, &c, &image("ghcr.io/x/home"), &want);
    check(&h, &c, &with_tag(image("ghcr.io/x/home"), "1.1.0"), &want);
    // Only the digest moves (argocd-image-updater writes `main@sha256:…` into a helm parameter).
    let src = |d: &str| {
        format!(
            "helm:\n  parameters:\n  - name: image.repository\n    value: ghcr.io/x/web\n  - name: image.tag\n    value: main@{d}\n    forcestring: true\n"
        )
    };
    let mut h = Mem::default();
    let a = h.add("init", &[], &[(".argocd-source-web.yaml", Some(&*src(D1)))]);
    let b = h.add("build: automatic update of web", &[&a], &[(".argocd-source-web.yaml", Some(&*src(D2)))]);
    check(
        &h,
        &b,
        &image("ghcr.io/x/web"),
        &format!(
            "build: automatic update of web | prev main@{D1} | .argocd-source-web.yaml:6 main@{D1}->main@{D2} | other []"
        ),
    );
}

#[test]
fn image_and_image_tag_siblings() {
    let v = |t: &str| format!("server:\n  image: example/server\n  imageTag: {t}\n  port: 80\n");
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("values.yaml", Some(&*v("2.3.0-jdk17")))]);
    let b = h.add("server 2.3.1", &[&a], &[("values.yaml", Some(&*v("2.3.1-jdk17")))]);
    check(
        &h,
        &b,
        &image("example/server"),
        "server 2.3.1 | prev 2.3.0-jdk17 | values.yaml:3 2.3.0-jdk17->2.3.1-jdk17 | other []",
    );
    check(
        &h,
        &b,
        &key("server.imageTag"),
        "server 2.3.1 | prev 2.3.0-jdk17 | values.yaml:3 2.3.0-jdk17->2.3.1-jdk17 | other []",
    );
}

#[test]
fn yaml_inside_block_strings_keeps_outer_lines() {
    let jcasc = |t: &str| {
        format!(
            "controller:\n  JCasC:\n    configScripts:\n      agents: |\n        jenkins:\n          clouds:\n          - kubernetes:\n              templates:\n              - name: maven\n                containers:\n                - name: maven\n                  image: maven:{t}\n"
        )
    };
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("jenkins/values.yaml", Some(&*jcasc("3.9.5")))]);
    let b = h.add("maven 3.9.6", &[&a], &[("jenkins/values.yaml", Some(&*jcasc("3.9.6")))]);
    check(
        &h,
        &b,
        &image("maven"),
        "maven 3.9.6 | prev 3.9.5 | jenkins/values.yaml:12 3.9.5->3.9.6 | other []",
    );
    let patch = |t: &str| {
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../base]\npatches:\n- patch: |-\n    apiVersion: batch/v1\n    kind: CronJob\n    metadata:\n      name: vacuum\n    spec:\n      jobTemplate:\n        spec:\n          template:\n            spec:\n              containers:\n              - name: vacuum\n                image: quay.io/x/vacuum:{t}\n"
        )
    };
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("prod/kustomization.yaml", Some(&*patch("v1.20.0")))]);
    let b = h.add("vacuum v1.21.3", &[&a], &[("prod/kustomization.yaml", Some(&*patch("v1.21.3")))]);
    let c = find_culprit(&h, &b, &image("quay.io/x/vacuum")).unwrap();
    assert_eq!((c.changes[0].line, c.previous.as_ref().map(|v| v.to_string())), (17, Some("v1.20.0".into())));
    assert_eq!(
        c.changes[0].workload.as_ref().map(|w| w.to_string()).as_deref(),
        Some("CronJob/vacuum container vacuum")
    );
    assert_eq!(
        c.changes[0].slot.to_string(),
        "doc0|patches[0].patch(str).spec.jobTemplate.spec.template.spec.containers[name=vacuum].image"
    );
}

#[test]
fn a_registry_change_in_the_same_edit_keeps_the_previous_version() {
    let mut h = Mem::default();
    let a =
        h.add("init", &[], &[("d.yaml", Some(&*deploy("1.0").replace("ghcr.io/x/api", "gcr.io/old/api")))]);
    let b = h.add("move registry and bump", &[&a], &[("d.yaml", Some(&*deploy("1.1")))]);
    let c = find_culprit(&h, &b, &image("ghcr.io/x/api")).unwrap();
    assert_eq!(c.commit.summary, "move registry and bump");
    assert_eq!(c.previous.map(|v| v.to_string()).as_deref(), Some("1.0"));
    assert_eq!(c.changes[0].old_repository.as_deref(), Some("gcr.io/old/api"));
    // A registry move that keeps the tag is no change of version: the bump before it is named.
    let mut h = Mem::default();
    let a =
        h.add("init", &[], &[("d.yaml", Some(&*deploy("1.0").replace("ghcr.io/x/api", "gcr.io/old/api")))]);
    let b =
        h.add("bump", &[&a], &[("d.yaml", Some(&*deploy("1.1").replace("ghcr.io/x/api", "gcr.io/old/api")))]);
    let c = h.add("registry move", &[&b], &[("d.yaml", Some(&*deploy("1.1")))]);
    check(&h, &c, &image("ghcr.io/x/api"), "bump | prev 1.0 | d.yaml:9 1.0->1.1 | other []");
}

#[test]
fn moves_are_followed_through_merges_with_small_edits() {
    let mut h = Mem::default();
    let a = h.add(
        "init",
        &[],
        &[
            ("apps/api/d.yaml", Some(&*deploy("1.0"))),
            ("apps/web/d.yaml", Some(&*deploy("5.0").replace("api", "web"))),
        ],
    );
    let b = h.add("api 1.1", &[&a], &[("apps/api/d.yaml", Some(&*deploy("1.1")))]);
    // A side branch restructures (moves and edits a label), merged on main.
    let side = h.add(
        "restructure",
        &[&b],
        &[
            ("apps/api/d.yaml", None),
            (
                "clusters/prod/apps/api/d.yaml",
                Some(&*deploy("1.1").replace("kind: Deployment", "kind: Deployment\n# moved")),
            ),
        ],
    );
    let m = h.add(
        "Merge pull request #9 from restructure",
        &[&b, &side],
        &[
            ("apps/api/d.yaml", None),
            (
                "clusters/prod/apps/api/d.yaml",
                Some(&*deploy("1.1").replace("kind: Deployment", "kind: Deployment\n# moved")),
            ),
        ],
    );
    let q = image("ghcr.io/x/api");
    check(&h, &m, &q, "api 1.1 | prev 1.0 | apps/api/d.yaml:9 1.0->1.1 | other []");
    // Nothing before a file that really is new: first appearance, at the commit that added it.
    let n = h.add(
        "new app",
        &[&m],
        &[("clusters/prod/apps/new/d.yaml", Some(&*deploy("0.1").replace("api", "new")))],
    );
    check(
        &h,
        &n,
        &image("ghcr.io/x/new"),
        "new app | prev - | clusters/prod/apps/new/d.yaml:9 -->0.1 | other []",
    );
    // An object moved to another file (a multi-document file split up) keeps its history.
    let both = format!("{}---\n{}", deploy("1.1"), deploy("5.0").replace("api", "web"));
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("all.yaml", Some(&*both))]);
    let b = h.add(
        "split",
        &[&a],
        &[("all.yaml", Some(&*deploy("5.0").replace("api", "web"))), ("api.yaml", Some(&*deploy("1.1")))],
    );
    let c = find_culprit(&h, &b, &image("ghcr.io/x/api")).unwrap();
    assert_eq!((c.commit.summary.as_str(), c.previous.is_none()), ("init", true), "{:?}", c.changes);
}

#[test]
fn a_tag_carried_in_new_name() {
    let k = |t: &str| {
        format!(
            "images:\n- name: api\n  newName: registry.example.com/x/api:{t}\n- name: admin\n  newName: registry.example.com/x/admin:a1b2c3d\n"
        )
    };
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("env/prod/kustomization.yaml", Some(&*k("662e17c")))]);
    let b = h.add("release api", &[&a], &[("env/prod/kustomization.yaml", Some(&*k("7f00a1b")))]);
    check(
        &h,
        &b,
        &with_tag(image("registry.example.com/x/api"), "7f00a1b"),
        "release api | prev 662e17c | env/prod/kustomization.yaml:3 662e17c->7f00a1b | other []",
    );
    check(
        &h,
        &b,
        &image("api"),
        "release api | prev 662e17c | env/prod/kustomization.yaml:3 662e17c->7f00a1b | other []",
    );
}

fn releases(op: &str, api: &str) -> String {
    let hr = |name: &str, tag: &str| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: radix\nspec:\n  values:\n    image:\n      tag: {tag}\n"
        )
    };
    format!("{}---\n{}", hr("operator", op), hr("api", api))
}

#[test]
fn a_key_is_scoped_to_its_document() {
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("flux-patch.yaml", Some(&*releases("master-a", "master-x")))]);
    let b = h.add("operator b", &[&a], &[("flux-patch.yaml", Some(&*releases("master-b", "master-x")))]);
    let c = h.add("api y", &[&b], &[("flux-patch.yaml", Some(&*releases("master-b", "master-y")))]);
    let q = key("spec.values.image.tag");
    // The version names one document; the previous value is that document's, not its sibling's.
    check(
        &h,
        &c,
        &with_tag(q.clone(), "master-b"),
        "operator b | prev master-a | flux-patch.yaml:9 master-a->master-b | other []",
    );
    // An object that holds no reference to the key: the ones that do are named.
    check(
        &h,
        &c,
        &Query { workload: Some("HelmRelease/radix/web".into()), ..q.clone() },
        "error workload_not_found: key spec.values.image.tag is in scope, but not in HelmRelease/radix/web: it is in HelmRelease/radix/operator in flux-patch.yaml, HelmRelease/radix/api in flux-patch.yaml; name one of these with --workload, or leave it out",
    );
    check(
        &h,
        &c,
        &Query { workload: Some("HelmRelease/radix/api".into()), ..q.clone() },
        "api y | prev master-x | flux-patch.yaml:19 master-x->master-y | other []",
    );
    check(
        &h,
        &c,
        &key("HelmRelease/radix/api|spec.values.image.tag"),
        "api y | prev master-x | flux-patch.yaml:19 master-x->master-y | other []",
    );
    // Without either, the question names two references with two versions: ambiguous, not a guess.
    let err = find_culprit(&h, &c, &q).unwrap_err();
    assert_eq!(err.kind(), "ambiguous");
    // Asked to undo the latest bump (what `revert` asks), the newest change among them is named,
    // and the note says there were others.
    let newest = Query { several: Several::NameTheNewestChange, ..q.clone() };
    check(&h, &c, &newest, "api y | prev master-x | flux-patch.yaml:19 master-x->master-y | other []");
    let notes = find_culprit(&h, &c, &newest).unwrap().notes;
    assert!(
        notes.iter().any(|n| n.contains("several current versions") && n.contains("master-b")),
        "{notes:?}"
    );
    // A named version still wins over the newest change.
    check(
        &h,
        &c,
        &with_tag(newest, "master-b"),
        "operator b | prev master-a | flux-patch.yaml:9 master-a->master-b | other []",
    );
    // Deleting the other document is not a change of this one.
    let hr_only = releases("master-b", "master-y").split("---\n").next().unwrap().to_string();
    let d = h.add("drop api", &[&c], &[("flux-patch.yaml", Some(&*hr_only))]);
    check(
        &h,
        &d,
        &with_tag(q, "master-b"),
        "operator b | prev master-a | flux-patch.yaml:9 master-a->master-b | other []",
    );
}

#[test]
fn text_that_is_not_utf8_is_read_where_it_can_be_and_named() {
    // A Latin-1 byte in a comment: the offsets stay the file's, the note names the line.
    let (text, note) = crate::domain::extract::text_of("d.yaml", b"a: 1\n# caf\xe9\nimage: x/y:1.0\n");
    assert_eq!(text, "a: 1\n# caf?\nimage: x/y:1.0\n");
    assert_eq!(
        note.as_deref(),
        Some("d.yaml:2: bytes that are not UTF-8, read as '?' (the file is kept as it is)")
    );
}

#[test]
fn symlinks_are_named_not_read() {
    let mut h = Mem::default();
    let a =
        h.add("init", &[], &[("d.yaml", Some(&*deploy("1.0"))), ("alias.link.yaml", Some(&*deploy("9.9")))]);
    let c = find_culprit(&h, &a, &image("ghcr.io/x/api")).unwrap();
    assert_eq!(c.version.to_string(), "1.0");
    assert!(
        c.notes.iter().any(|n| n.contains("alias.link.yaml: a symbolic link, not read")),
        "{:?}",
        c.notes
    );
}

#[test]
fn last_known_good_names_the_first_bad_change_and_the_later_ones() {
    let mut h = Mem::default();
    let a = h.add("1.0", &[], &[("d.yaml", Some(&*deploy("1.0")))]); // 10:00
    let b = h.add("1.1 (bad)", &[&a], &[("d.yaml", Some(&*deploy("1.1")))]); // 10:01
    let c = h.add("docs", &[&b], &[("README.md", Some("x"))]); // 10:02
    let d = h.add("1.2", &[&c], &[("d.yaml", Some(&*deploy("1.2")))]); // 10:03
    let e = h.add("1.3", &[&d], &[("d.yaml", Some(&*deploy("1.3")))]); // 10:04
    let at = |hhmm: &str| {
        Some(
            DateTime::parse_from_rfc3339(&format!("2026-11-01T{hhmm}:30+01:00")).unwrap().with_timezone(&Utc),
        )
    };
    let q = Query { at: at("10:02"), ..image("ghcr.io/x/api") };
    let culprit = find_culprit(&h, &e, &q).unwrap();
    assert_eq!(
        (
            culprit.commit.summary.as_str(),
            culprit.version.to_string(),
            culprit.previous.map(|v| v.to_string())
        ),
        ("1.1 (bad)", "1.1".into(), Some("1.0".into()))
    );
    let later: Vec<(String, String)> = culprit
        .later
        .iter()
        .map(|l| (l.summary.clone(), format!("{}->{}", l.old.as_ref().unwrap(), l.new)))
        .collect();
    assert_eq!(later, [("1.3".to_string(), "1.2->1.3".to_string()), ("1.2".into(), "1.1->1.2".into())]);
    assert_eq!(culprit.changes[0].tip.version.to_string(), "1.3", "the reference as it stands now");
    // At a time after the last change: the newest change, nothing later.
    let culprit = find_culprit(&h, &e, &Query { at: at("10:05"), ..image("ghcr.io/x/api") }).unwrap();
    assert_eq!((culprit.commit.summary.as_str(), culprit.later.len()), ("1.3", 0));
    // Before the image existed at all.
    let err = find_culprit(&h, &e, &Query { at: at("09:00"), ..image("ghcr.io/x/api") }).unwrap_err();
    assert_eq!(err.kind(), "not_running_at");
}

#[test]
fn two_references_changed_at_different_times_name_the_newest_and_say_so() {
    let mut h = Mem::default();
    let a = h.add(
        "init",
        &[],
        &[
            ("a.yaml", Some(&*deploy("1.0"))),
            ("b.yaml", Some(&*deploy("1.0").replace("name: api", "name: api2"))),
        ],
    );
    let b = h.add("a to 1.1", &[&a], &[("a.yaml", Some(&*deploy("1.1")))]);
    let c = h.add("b to 1.1", &[&b], &[("b.yaml", Some(&*deploy("1.1").replace("name: api", "name: api2")))]);
    let culprit = find_culprit(&h, &c, &image("ghcr.io/x/api")).unwrap();
    assert_eq!(culprit.commit.summary, "b to 1.1");
    assert!(
        culprit
            .notes
            .iter()
            .any(|n| n.contains("also in a.yaml") && n.contains("only the newest change is named")),
        "{:?}",
        culprit.notes
    );
}

#[test]
fn lines_moved_by_edits_elsewhere_in_the_file_are_followed() {
    // Big generated files change all the time; only the version's own lines matter.
    let file = |tag: &str, pad: usize| format!("{}{}", "# generated\n".repeat(pad), deploy(tag));
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("gen.yaml", Some(&*file("1.0", 1)))]);
    let b = h.add("bump", &[&a], &[("gen.yaml", Some(&*file("1.1", 1)))]);
    let c = h.add("regenerate", &[&b], &[("gen.yaml", Some(&*file("1.1", 40)))]);
    let d = h.add("regenerate again", &[&c], &[("gen.yaml", Some(&*file("1.1", 3)))]);
    check(&h, &d, &image("ghcr.io/x/api"), "bump | prev 1.0 | gen.yaml:10 1.0->1.1 | other []");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever history of bumps and unrelated edits, the culprit is the last commit that
        /// changed the version, with the version before it.
        #[test]
        fn the_culprit_is_the_last_change_of_the_version(
            steps in proptest::collection::vec((0u8..4, 0usize..5), 1..25),
        ) {
            let mut h = Mem::default();
            let mut version = 0usize;
            let mut pad = 0usize;
            let text = |v: usize, pad: usize| format!("{}{}", "# x\n".repeat(pad), deploy(&format!("1.{v}")));
            let mut tip = h.add("init", &[], &[("d.yaml", Some(&*text(0, 0)))]);
            let mut last = ("init".to_string(), None::<usize>, 0usize);
            for (i, (what, n)) in steps.into_iter().enumerate() {
                let summary = format!("c{i}");
                match what {
                    0 | 1 => {
                        let v = n;
                        if v != version {
                            last = (summary.clone(), Some(version), v);
                            version = v;
                        }
                    }
                    2 => pad = n,
                    _ => {}
                }
                let readme = format!("{i}");
                tip = h.add(&summary, &[&tip], &[("d.yaml", Some(&*text(version, pad))), ("README.md", Some(&*readme))]);
            }
            let c = find_culprit(&h, &tip, &image("ghcr.io/x/api")).unwrap();
            prop_assert_eq!(&c.commit.summary, &last.0);
            prop_assert_eq!(c.version.to_string(), format!("1.{}", last.2));
            prop_assert_eq!(c.previous.map(|v| v.to_string()), last.1.map(|v| format!("1.{v}")));
        }
    }
}

#[test]
fn a_workload_added_with_a_version_already_running_is_not_the_culprit() {
    let second = |tag: &str| deploy(tag).replace("name: api", "name: api-for-watcher");
    let mut h = Mem::default();
    let a = h.add("init", &[], &[("d.yaml", Some(&*deploy("1.0")))]);
    let b = h.add("api 1.1", &[&a], &[("d.yaml", Some(&*deploy("1.1")))]);
    let c = h.add(
        "split the api in two",
        &[&b],
        &[("d.yaml", Some(&*format!("{}---\n{}", deploy("1.1"), second("1.1"))))],
    );
    let culprit = find_culprit(&h, &c, &image("ghcr.io/x/api")).unwrap();
    assert_eq!(
        (culprit.commit.summary.as_str(), culprit.previous.map(|v| v.to_string())),
        ("api 1.1", Some("1.0".into()))
    );
    assert!(
        culprit.notes.iter().any(|n| n.contains("api-for-watcher") && n.contains("not what made it current")),
        "{:?}",
        culprit.notes
    );
    // Asked about the new workload alone, its first appearance is the answer.
    let q = Query { workload: Some("api-for-watcher".into()), ..image("ghcr.io/x/api") };
    check(&h, &c, &q, "split the api in two | prev - | d.yaml:19 -->1.1 | other []");
}
