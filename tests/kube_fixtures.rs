//! The Kubernetes objects under fixtures/kube checked against the real schemas, by the helper
//! scripts in tests/schemas/:
//!
//! - core kinds (apps/v1, batch/v1, coordination.k8s.io/v1, v1, and the objects the AdmissionReviews
//!   carry) with PyPI's kubernetes-validate, strict, Kubernetes 1.33 (`validate_core.py`; the
//!   AdmissionReview's own shape is checked there, it has no schema in kubernetes-validate);
//! - Argo CD and Flux kinds against their CRD schemas from the npm packages
//!   @kubernetes-models/argo-cd and @kubernetes-models/flux-cd, unknown fields refused
//!   (`validate_crds.mjs`).
//!
//! Never skipped: a missing tool fails the test saying how to install it (tests/run.sh installs
//! both). Each validator must also reject a fixture broken on purpose, so these tests cannot pass
//! by validating nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture directories and which validator checks them. Every file under fixtures/kube
/// (but the README) must be in one of them.
const CORE_DIRS: &[&str] = &["workloads", "coordination", "admission"];
const CRD_DIRS: &[&str] = &["argocd", "flux"];
/// Kinds no npm model package covers: checked against the CRD YAML itself (tests/schemas/crds).
const CRD_YAML_DIRS: &[&str] = &["argocd-image-updater"];

fn fixtures(dirs: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for dir in dirs {
        let path = root().join("fixtures/kube").join(dir);
        let entries = std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in entries {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "json") {
                files.push(format!("fixtures/kube/{dir}/{}", p.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no fixtures under {dirs:?}");
    files
}

#[derive(Clone, Copy)]
enum Validator {
    Core,
    Crds,
    CrdYaml,
}

impl Validator {
    fn command(self) -> Command {
        let (program, script, install) = match self {
            Validator::Core => (
                "python3",
                "tests/schemas/validate_core.py",
                "install Python 3, then `python3 -m pip install kubernetes-validate==1.37.0`",
            ),
            Validator::CrdYaml => (
                "python3",
                "tests/schemas/validate_crd_yaml.py",
                "install Python 3, then `python3 -m pip install kubernetes-validate==1.37.0` (it brings jsonschema and PyYAML)",
            ),
            Validator::Crds => (
                "node",
                "tests/schemas/validate_crds.mjs",
                "install Node.js and npm (`apt-get install nodejs npm`), then `npm ci --prefix tests/schemas`",
            ),
        };
        let found = Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "`{program}` not found: {install} (tests/run.sh does)");
        let mut cmd = Command::new(program);
        cmd.arg(script).current_dir(root());
        cmd
    }
}

struct Outcome {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(validator: Validator, args: &[&str]) -> Outcome {
    let out = validator.command().args(args).output().expect("the validator runs");
    let o = Outcome {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Exit code 2: a package is missing; the script's message says which and how to install it.
    assert_ne!(o.code, Some(2), "{}", o.stderr);
    o
}

/// Runs the validator over `files`, which must all pass, and checks that it said so for each.
fn validate_all(validator: Validator, files: &[String]) {
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let o = run(validator, &args);
    assert!(o.ok, "fixtures rejected (exit {:?}):\n{}\n{}", o.code, o.stderr, o.stdout);
    for f in files {
        assert!(
            o.stdout.lines().any(|l| l.starts_with(&format!("ok {f}: "))),
            "{f} not reported valid:\n{}",
            o.stdout
        );
    }
    let closing = o.stdout.lines().find(|l| l.starts_with("validated ")).expect("closing line");
    let count: usize = closing.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a count");
    assert!(count >= files.len(), "{closing}: fewer objects than files");
}

/// A broken variant of a fixture (RFC 6901 pointer = JSON value; `-POINTER` deletes) must be
/// rejected, with a message containing `expect`.
struct Broken {
    file: &'static str,
    changes: &'static [&'static str],
    expect: &'static str,
}

fn all_rejected(validator: Validator, cases: &[Broken]) {
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                s.spawn(move || {
                    let mut args = vec!["--expect-rejected", case.expect];
                    for c in case.changes {
                        match c.strip_prefix('-') {
                            Some(ptr) => args.extend(["--delete", ptr]),
                            None => args.extend(["--set", c]),
                        }
                    }
                    let file = format!("fixtures/kube/{}", case.file);
                    args.push(&file);
                    let o = run(validator, &args);
                    (!o.ok).then(|| format!("{} {:?}: {}{}", case.file, case.changes, o.stderr, o.stdout))
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "broken fixtures not rejected as expected:\n{}", failures.join("\n"));
}

#[test]
fn core_objects_are_valid_kubernetes_1_33_objects() {
    validate_all(Validator::Core, &fixtures(CORE_DIRS));
}

#[test]
fn argocd_and_flux_objects_match_their_crd_schemas() {
    validate_all(Validator::Crds, &fixtures(CRD_DIRS));
}

#[test]
fn image_updaters_match_the_published_crd_and_broken_ones_are_refused() {
    validate_all(Validator::CrdYaml, &fixtures(CRD_YAML_DIRS));
    all_rejected(
        Validator::CrdYaml,
        &[
            Broken {
                file: "argocd-image-updater/imageupdater.shop.yaml",
                changes: &[r#"/spec/applicationRefs/0/images/0/ignoreTags=["1.5.0"]"#],
                expect: "'ignoreTags' was unexpected",
            },
            Broken {
                file: "argocd-image-updater/imageupdater.shop.yaml",
                changes: &["-/spec/applicationRefs/0/images/0/imageName"],
                expect: "'imageName' is a required property",
            },
            Broken {
                file: "argocd-image-updater/imageupdater.shop.yaml",
                changes: &[r#"/spec/applicationRefs/0/images/0/commonUpdateSettings/ignoreTags="1.5.0""#],
                expect: "is not of type 'array'",
            },
        ],
    );
}

#[test]
fn every_kube_fixture_is_checked_by_a_validator() {
    let checked: Vec<&str> = CORE_DIRS.iter().chain(CRD_DIRS).chain(CRD_YAML_DIRS).copied().collect();
    let mut unchecked = Vec::new();
    let mut stack = vec![root().join("fixtures/kube")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let rel = p.strip_prefix(root().join("fixtures/kube")).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if rel != "README.md"
                && !checked.iter().any(|d| Path::new(&rel).parent() == Some(Path::new(d)))
            {
                unchecked.push(rel);
            }
        }
    }
    assert!(unchecked.is_empty(), "fixtures/kube files no validator checks: {unchecked:?}");
    let readme = std::fs::read_to_string(root().join("fixtures/kube/README.md")).unwrap();
    for f in fixtures(&checked) {
        let name = f.strip_prefix("fixtures/kube/").unwrap();
        assert!(readme.contains(&format!("`{name}`")), "fixtures/kube/README.md does not list {name}");
    }
}

#[test]
fn kubernetes_validate_rejects_broken_objects() {
    all_rejected(
        Validator::Core,
        &[
            Broken {
                file: "workloads/deployment.checkout.yaml",
                changes: &[r#"/spec/replicas="two""#],
                expect: "/spec/replicas: 'two' is not of type 'integer'",
            },
            Broken {
                file: "workloads/deployment.checkout.yaml",
                changes: &[
                    r#"/spec/template/spec/containers/1/imagee="otel/opentelemetry-collector:0.111.0""#,
                ],
                expect: "'imagee' was unexpected",
            },
            Broken {
                file: "workloads/cronjob.yaml",
                changes: &["-/spec/jobTemplate"],
                expect: "'jobTemplate' is a required property",
            },
            Broken {
                file: "workloads/cronjob.yaml",
                changes: &[r#"/apiVersion="batch/v1beta1""#],
                expect: "no Kubernetes 1.33 schema for batch/v1beta1 CronJob",
            },
            Broken {
                file: "coordination/lease.yaml",
                changes: &[r#"/spec/leaseDurationSeconds="15s""#],
                expect: "'15s' is not of type 'integer'",
            },
            Broken {
                file: "argocd/application.single-source.yaml",
                changes: &[],
                expect: "no Kubernetes 1.33 schema",
            },
            Broken {
                file: "admission/deployment.update-image.json",
                changes: &[r#"/request/object/spec/replicas="two""#],
                expect: "request.object: /spec/replicas: 'two' is not of type",
            },
            Broken {
                file: "admission/deployment.update-image.json",
                changes: &[
                    r#"/request/oldObject/spec/template/spec/containers/0/ports/0/containerPort="8080""#,
                ],
                expect: "request.oldObject: /spec/template/spec/containers/0/ports/0/containerPort",
            },
            Broken {
                file: "admission/deployment.create.json",
                changes: &["-/request/uid"],
                expect: "request.uid",
            },
            Broken {
                file: "admission/deployment.create.json",
                changes: &[r#"/request/operation="PATCH""#],
                expect: "request.operation 'PATCH'",
            },
            Broken {
                file: "admission/deployment.create.json",
                changes: &[r#"/apiVersion="admission.k8s.io/v1beta1""#],
                expect: "want admission.k8s.io/v1",
            },
            Broken {
                file: "admission/deployment.create.json",
                changes: &[r#"/request/object/metadata/name="cart""#],
                expect: "request.name 'checkout' but the object is named 'cart'",
            },
            Broken {
                file: "admission/deployment.update-replicas.json",
                changes: &["/request/oldObject=null"],
                expect: "UPDATE without request.oldObject",
            },
            Broken {
                file: "admission/configmap.create.json",
                changes: &[r#"/request/kind/kind="Secret""#],
                expect: "request.kind",
            },
            Broken {
                file: "admission/deployment.create-dryrun.json",
                changes: &["-/request/options/dryRun"],
                expect: "options.dryRun",
            },
        ],
    );
}

#[test]
fn crd_schemas_reject_broken_objects() {
    all_rejected(
        Validator::Crds,
        &[
            Broken {
                file: "argocd/application.single-source.yaml",
                changes: &["/spec/bogus=1"],
                expect: "unknown field(s), not in the Application schema: /spec/bogus",
            },
            Broken {
                file: "argocd/application.single-source.yaml",
                changes: &["/spec/syncPolicy/automated/selfheal=true"],
                expect: "/spec/syncPolicy/automated/selfheal",
            },
            Broken {
                file: "argocd/application.single-source.yaml",
                changes: &["/spec/source/repoURL=5"],
                expect: "spec/source/repoURL must be string",
            },
            Broken {
                file: "argocd/application.multi-source.yaml",
                changes: &["-/spec/destination"],
                expect: "must have required property destination",
            },
            Broken {
                file: "argocd/application.multi-source.yaml",
                changes: &["/status/sync/revisions/0=2"],
                expect: "status/sync/revisions/0 must be string",
            },
            Broken {
                file: "argocd/application.degraded.yaml",
                changes: &[r#"/status/operationState/syncResult/resources/0/group=null"#],
                expect: "syncResult/resources/0/group must be string",
            },
            Broken {
                file: "argocd/application.degraded.yaml",
                changes: &[r#"/status/health/status="degraded""#],
                expect: r#"/status/health/status: "degraded" is not one of"#,
            },
            Broken {
                file: "flux/gitrepository.yaml",
                changes: &[r#"/spec/url="git@github.com:acme/manifests.git""#],
                expect: "spec/url must match pattern",
            },
            Broken {
                file: "flux/gitrepository.yaml",
                changes: &[r#"/spec/timeout="1h""#],
                expect: "/spec/timeout: \"1h\" does not match",
            },
            Broken {
                file: "flux/kustomization.yaml",
                changes: &["-/spec/sourceRef"],
                expect: "must have required property sourceRef",
            },
            Broken {
                file: "flux/kustomization.yaml",
                changes: &[r#"/spec/sourceRef/branch="main""#],
                expect: "not in the Kustomization schema: /spec/sourceRef/branch",
            },
            Broken {
                file: "flux/kustomization.yaml",
                changes: &[r#"/status/conditions/0/status="true""#],
                expect: "is not one of True, False, Unknown",
            },
            Broken {
                file: "flux/helmrelease.yaml",
                changes: &[r#"/status/history/0/version="4""#],
                expect: "status/history/0/version must be integer",
            },
            Broken {
                file: "flux/helmrelease.yaml",
                changes: &[r#"/spec/interval="ten minutes""#],
                expect: "/spec/interval: \"ten minutes\" does not match",
            },
            Broken {
                file: "flux/helmrelease.yaml",
                changes: &[r#"/spec/chart/spec/sourceRef/kind="OCIRepository""#],
                expect: "sourceRef/kind must be equal to one of the allowed values",
            },
            Broken {
                file: "workloads/deployment.checkout.yaml",
                changes: &[],
                expect: "no CRD schema here for apps/v1 Deployment",
            },
        ],
    );
}

fn json(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("fixtures/kube").join(file)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn yaml(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("fixtures/kube").join(file)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj["metadata"]["annotations"][key].as_str().unwrap_or_else(|| panic!("no annotation {key}"))
}

/// A Prometheus duration (`5m`, `1h30m`): what `metricops.dev/rule-for` must be.
fn is_prometheus_duration(s: &str) -> bool {
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"].into_iter().find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        any = true;
    }
    any
}

fn images(obj: &Value) -> Vec<&str> {
    obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect()
}

/// The admission fixtures are what their names say (the schemas cannot tell a replica change
/// from an image change).
#[test]
fn admission_fixtures_are_what_their_names_say() {
    for (file, op, dry_run) in [
        ("deployment.create.json", "CREATE", false),
        ("deployment.create-dryrun.json", "CREATE", true),
        ("deployment.create-bad-rule.json", "CREATE", false),
        ("cronjob.create.json", "CREATE", false),
        ("configmap.create.json", "CREATE", false),
        ("deployment.update-image.json", "UPDATE", false),
        ("deployment.update-replicas.json", "UPDATE", false),
        ("statefulset.update.json", "UPDATE", false),
    ] {
        let req = &json(&format!("admission/{file}"))["request"];
        assert_eq!(req["operation"], op, "{file}");
        assert_eq!(req["dryRun"], dry_run, "{file}");
        assert_eq!(req["oldObject"].is_null(), op == "CREATE", "{file}");
    }

    let req = &json("admission/deployment.update-image.json")["request"];
    let (new, old) = (&req["object"], &req["oldObject"]);
    assert_eq!(images(old), ["ghcr.io/acme/checkout:1.14.1", "otel/opentelemetry-collector-contrib:0.111.0"]);
    assert_eq!(images(new), ["ghcr.io/acme/checkout:1.14.2", "otel/opentelemetry-collector-contrib:0.111.0"]);
    assert_eq!(new["spec"]["replicas"], old["spec"]["replicas"]);

    let req = &json("admission/deployment.update-replicas.json")["request"];
    let (mut new, mut old) = (req["object"].clone(), req["oldObject"].clone());
    assert_eq!((new["spec"]["replicas"].as_i64(), old["spec"]["replicas"].as_i64()), (Some(5), Some(3)));
    new["spec"]["replicas"].take();
    old["spec"]["replicas"].take();
    assert_eq!(new, old, "deployment.update-replicas.json changes more than spec.replicas");

    let req = &json("admission/statefulset.update.json")["request"];
    assert_ne!(images(&req["object"]), images(&req["oldObject"]));

    let cronjob = &json("admission/cronjob.create.json")["request"]["object"];
    assert!(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"].is_array());
}

/// The good rule annotations parse as PromQL and Prometheus durations; the bad fixture's do not.
#[test]
fn rule_annotations_are_good_or_bad_as_intended() {
    let good = [
        yaml("workloads/deployment.checkout.yaml"),
        yaml("workloads/deployment.payments.yaml"),
        json("admission/deployment.create.json")["request"]["object"].clone(),
    ];
    for obj in &good {
        let rule = annotation(obj, "metricops.dev/rule");
        assert!(
            promql_parser::parser::parse(rule).is_ok(),
            "{rule}: {:?}",
            promql_parser::parser::parse(rule)
        );
        let rule_for = annotation(obj, "metricops.dev/rule-for");
        assert!(is_prometheus_duration(rule_for), "{rule_for}");
    }
    let checkout = &good[0];
    assert_eq!(
        annotation(checkout, "metricops.dev/rule"),
        r#"sum(rate(http_requests_total{job="checkout",code=~"5.."}[5m])) / sum(rate(http_requests_total{job="checkout"}[5m])) > 0.05"#
    );
    assert_eq!(
        annotation(checkout, "argocd.argoproj.io/tracking-id"),
        "checkout:apps/Deployment:shop/checkout"
    );

    let bad = &json("admission/deployment.create-bad-rule.json")["request"]["object"];
    let rule = annotation(bad, "metricops.dev/rule");
    assert!(promql_parser::parser::parse(rule).is_err(), "{rule} parses, but should be a syntax error");
    assert_eq!(annotation(bad, "metricops.dev/rule-for"), "5 minutes");
    assert!(!is_prometheus_duration("5 minutes") && is_prometheus_duration("1h30m"));
}
