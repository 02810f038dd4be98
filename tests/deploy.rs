//! deploy/ checked by the real tools, none of which needs a cluster:
//!
//! - the Helm chart with Helm's own `lint --strict` and its template engine (PyPI's
//!   helm-python-sdk: Helm 4's Go SDK; `tests/deploy/chart.py`), once per values set;
//! - every object the chart renders and `kubectl kustomize` renders from the base, the monitoring
//!   objects and the example overlay, validated against the Kubernetes schemas (PyPI's
//!   kubernetes-validate, strict) and, for cert-manager, prometheus-operator, Argo CD and Flux
//!   kinds, against their CRD schemas (`tests/schemas/validate_crds.mjs`);
//! - the chart and the kustomize base compared object by object, so they cannot drift apart;
//! - the RBAC against what `src/adapters/kube.rs` watches and patches;
//! - the examples with `metricops check-config`, `amtool check-config`, `promtool check rules`;
//! - the Dockerfile's shape (no Docker daemon runs here: the image is not built).
//!
//! Never skipped: a missing tool fails the test saying how to install it (tests/run.sh does).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const CHART: &str = "deploy/helm/metricops";

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str], install: &str) -> Out {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("`{program}` cannot run ({e}): {install} (tests/run.sh does)"));
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const HELM: &str = "install Python 3, then `python3 -m pip install helm-python-sdk==0.2.2 pyyaml`";
const KUBECTL: &str = "install kubectl: `apt-get install kubernetes-client`";
const CORE: &str = "`python3 -m pip install kubernetes-validate==1.37.0`";
const CRDS: &str = "install Node.js and npm, then `npm ci --prefix tests/schemas`";

fn chart(args: &[&str]) -> Out {
    let mut all = vec!["tests/deploy/chart.py"];
    all.extend_from_slice(args);
    let out = run("python3", &all, HELM);
    assert!(!out.stderr.contains("is missing; install it"), "{}", out.stderr);
    out
}

fn must(out: Out, what: &str) -> String {
    assert!(out.ok, "{what} failed:\n{}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// `helm template` of the chart with these values (release and namespace `metricops`).
fn render(values: &Value) -> String {
    must(chart(&["render", CHART, "--values", &values.to_string()]), &format!("helm template with {values}"))
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn kustomize(dir: &str) -> String {
    let out = run("kubectl", &["kustomize", dir], KUBECTL);
    assert!(out.ok, "kubectl kustomize {dir} failed:\n{}", out.stderr);
    out.stdout
}

/// Validates every object of a YAML stream: Kubernetes kinds with kubernetes-validate (strict),
/// custom resources against their CRD schemas. Returns how many objects were validated.
fn validate(yaml: &str, what: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (all, core, crds) =
        (dir.path().join("all.yaml"), dir.path().join("core.yaml"), dir.path().join("crds.yaml"));
    std::fs::write(&all, yaml).unwrap();
    must(chart(&["split", s(&all), s(&core), s(&crds)]), "chart.py split");
    let mut n = 0;
    if !std::fs::read_to_string(&core).unwrap().trim().is_empty() {
        let core_out = run("python3", &["tests/schemas/validate_core.py", s(&core)], CORE);
        assert!(core_out.ok, "{what}: kubernetes-validate refused:\n{}{}", core_out.stdout, core_out.stderr);
        n += core_out.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    }
    if !std::fs::read_to_string(&crds).unwrap().trim().is_empty() {
        let crd_out = run("node", &["tests/schemas/validate_crds.mjs", s(&crds)], CRDS);
        assert!(crd_out.ok, "{what}: CRD schemas refused:\n{}{}", crd_out.stdout, crd_out.stderr);
        n += crd_out.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    }
    assert_eq!(n, docs(yaml).len(), "{what}: not every object was validated");
    n
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "want one {kind}, found {}", found.len());
    found[0]
}

/// The values sets the chart is linted and rendered with: each way of getting TLS, the webhook
/// off, a persistent state_dir, everything optional on.
fn values_sets() -> Vec<Value> {
    vec![
        json!({}),
        json!({"admissionWebhook": {"tls": {"source": "certManager"}}, "serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}}),
        json!({"admissionWebhook": {"tls": {"source": "certManager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}}}),
        json!({"admissionWebhook": {"tls": {"source": "secret", "secretName": "my-tls", "caBundle": "Y2E="}}, "secret": {"name": "metricops"}}),
        json!({"admissionWebhook": {"enabled": false}, "networkPolicy": {"enabled": false}, "serviceMonitor": {"enabled": true}}),
        json!({"replicaCount": 1, "persistence": {"enabled": true}, "rbac": {"argocd": false, "imageUpdater": false}}),
    ]
}

#[test]
fn the_chart_passes_helm_lint_strict_with_every_values_set() {
    let mut args = vec!["lint".to_string(), CHART.to_string()];
    for v in values_sets() {
        args.push("--values".into());
        args.push(v.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = must(chart(&args), "helm lint --strict");
    assert_eq!(out.matches("ok helm lint --strict").count(), values_sets().len(), "{out}");

    // values.schema.json is enforced: an unknown key, zero replicas, a bad failurePolicy.
    for bad in [
        json!({"replicas": 2}),
        json!({"replicaCount": 0}),
        json!({"admissionWebhook": {"failurePolicy": "Deny"}}),
    ] {
        let out = chart(&["lint", CHART, "--values", &bad.to_string()]);
        assert!(!out.ok, "lint passed values the schema must refuse: {bad}\n{}", out.stdout);
    }
}

#[test]
fn every_object_the_chart_renders_is_valid_with_every_values_set() {
    for v in values_sets() {
        let yaml = render(&v);
        let n = validate(&yaml, &format!("the chart with {v}"));
        assert!(n >= 10, "only {n} objects rendered with {v}");
    }
}

#[test]
fn the_chart_renders_what_a_platform_team_checks() {
    let d = docs(&render(&json!({})));
    let deploy = one(&d, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2, "two replicas by default");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    for k in ["requests", "limits"] {
        assert!(c["resources"][k]["memory"].is_string() && c["resources"][k]["cpu"].is_string(), "{k}: {c}");
    }
    let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"), "{env:?}");
    // writable state_dir and /tmp under a read-only root
    let mounts: Vec<&str> =
        c["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert!(mounts.contains(&"/var/lib/metricops") && mounts.contains(&"/tmp"), "{mounts:?}");
    let config = one(&d, "ConfigMap");
    let cfg: Value = serde_saphyr::from_str(config["data"]["metricops.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["state_dir"], "/var/lib/metricops");
    assert_eq!(cfg["server"]["tls"]["cert_file"], "/etc/metricops/tls/tls.crt");
    assert_eq!(cfg["cluster"]["lease"], "metricops");

    let hook = &one(&d, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "NoneOnDryRun");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 5, "{hook}");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/webhooks/admission");
    let left_out = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(left_out["operator"], "NotIn");
    assert!(left_out["values"].as_array().unwrap().contains(&json!("metricops")), "{left_out}");
    assert!(hook["objectSelector"].is_object());
    // TLS: with no cert-manager (an offline render has none) the chart makes its own CA
    assert!(hook["clientConfig"]["caBundle"].is_string(), "a caBundle is set: {hook}");
    let secrets = find(&d, "Secret");
    assert_eq!(secrets.len(), 1, "only the generated TLS Secret is rendered");
    assert_eq!(secrets[0]["type"], "kubernetes.io/tls");

    // Secrets are referenced, never embedded
    let with_secret = docs(&render(&json!({"secret": {"name": "metricops"}})));
    let pod = &one(&with_secret, "Deployment")["spec"]["template"]["spec"];
    let vols = pod["volumes"].as_array().unwrap();
    assert!(vols.iter().any(|v| v["secret"]["secretName"] == "metricops"), "{vols:?}");

    // one journal per replica
    let out = chart(&["render", CHART, "--values", &json!({"persistence": {"enabled": true}}).to_string()]);
    assert!(!out.ok && out.stderr.contains("replicaCount: 1"), "{}", out.stderr);

    // the webhook off: no TLS, plain HTTP on 8080, no webhook objects
    let plain = docs(&render(&json!({"admissionWebhook": {"enabled": false}})));
    assert!(find(&plain, "MutatingWebhookConfiguration").is_empty() && find(&plain, "Secret").is_empty());
    let c = &one(&plain, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
}

/// What `src/adapters/kube.rs` watches: (group, plural) from its WATCHED table.
fn watched_by_the_code() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(root().join("src/adapters/kube.rs")).unwrap();
    let table = src.split("const WATCHED").nth(1).expect("WATCHED in src/adapters/kube.rs");
    let table = &table[..table.find("];").unwrap()];
    let mut out = Vec::new();
    for line in table.lines().filter(|l| l.trim_start().starts_with("(\"")) {
        let fields: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        out.push((fields[0].to_string(), fields[3].to_string()));
    }
    assert!(out.len() >= 8, "WATCHED not read: {out:?}");
    out
}

fn verbs(role: &Value, group: &str, resource: &str) -> Vec<String> {
    let mut v = Vec::new();
    for r in role["rules"].as_array().unwrap() {
        let has = |k: &str, x: &str| r[k].as_array().unwrap().iter().any(|g| g == x);
        if has("apiGroups", group) && has("resources", resource) {
            v.extend(r["verbs"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()));
        }
    }
    v
}

#[test]
fn the_rbac_grants_what_the_code_uses_and_nothing_more() {
    for (what, yaml) in
        [("chart", render(&json!({}))), ("kustomize base", kustomize("deploy/kustomize/base"))]
    {
        let d = docs(&yaml);
        let cluster_role = one(&d, "ClusterRole");
        for (group, plural) in watched_by_the_code() {
            let v = verbs(cluster_role, &group, &plural);
            assert!(
                v.contains(&"list".into()) && v.contains(&"watch".into()),
                "{what}: {plural}.{group}: {v:?}"
            );
            // patched: the deployers' annotations, and argocd-image-updater's ImageUpdaters (paused)
            let deployer =
                ["applications", "kustomizations", "helmreleases", "gitrepositories", "imageupdaters"]
                    .contains(&plural.as_str());
            assert_eq!(v.contains(&"patch".into()), deployer, "{what}: patch on {plural}.{group}: {v:?}");
        }
        // argocd-image-updater's ImageUpdaters: read, and patched to keep the bad tag away
        let iu = verbs(cluster_role, "argocd-image-updater.argoproj.io", "imageupdaters");
        assert_eq!(iu, ["get", "list", "watch", "patch"], "{what}");
        for r in cluster_role["rules"].as_array().unwrap() {
            for k in ["apiGroups", "resources", "verbs"] {
                assert!(!r[k].as_array().unwrap().contains(&json!("*")), "{what}: a wildcard in {r}");
            }
            for v in r["verbs"].as_array().unwrap() {
                let v = v.as_str().unwrap();
                assert!(["get", "list", "watch", "patch"].contains(&v), "{what}: verb {v} in {r}");
            }
            assert!(
                !r["apiGroups"].as_array().unwrap().contains(&json!("")),
                "{what}: no core objects (Secrets!) cluster-wide: {r}"
            );
        }
        // the Lease, in its own namespace: create any, read and change only the one named
        let role = one(&d, "Role");
        assert_eq!(role["metadata"]["namespace"], "metricops");
        let named = role["rules"].as_array().unwrap().iter().find(|r| r["resourceNames"].is_array()).unwrap();
        assert_eq!(named["resourceNames"], json!(["metricops"]), "{what}");
        assert_eq!(verbs(role, "coordination.k8s.io", "leases"), ["create", "get", "patch"], "{what}");
        let lease =
            serde_saphyr::from_str::<Value>(one(&d, "ConfigMap")["data"]["metricops.yaml"].as_str().unwrap())
                .unwrap()["cluster"]["lease"]
                .clone();
        assert_eq!(named["resourceNames"][0], lease, "{what}: the Role names the Lease the config uses");
    }
}

#[test]
fn the_kustomize_base_monitoring_and_example_overlay_render_valid_objects() {
    for dir in ["deploy/kustomize/base", "deploy/kustomize/monitoring", "deploy/kustomize/overlays/example"] {
        let yaml = kustomize(dir);
        validate(&yaml, dir);
    }
    // the overlay puts its own config in and mounts the Secret, still in the namespace
    let d = docs(&kustomize("deploy/kustomize/overlays/example"));
    let cfg = one(&d, "ConfigMap");
    assert!(cfg["data"]["metricops.yaml"].as_str().unwrap().contains("shop-manifests"), "{cfg}");
    let pod = &one(&d, "Deployment")["spec"]["template"]["spec"];
    assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["secret"]["secretName"] == "metricops"));
    let config_volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(
        config_volume["configMap"]["name"], cfg["metadata"]["name"],
        "the Deployment follows the hashed name"
    );
    assert!(d.iter().all(|o| o["kind"] == "Namespace" || o["metadata"]["name"].is_string()));
    assert_eq!(find(&d, "Namespace").len(), 1);
}

#[test]
fn the_chart_and_the_kustomize_base_declare_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let chart_file = dir.path().join("chart.yaml");
    let values = json!({"admissionWebhook": {"tls": {"source": "certManager"}}, "serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}});
    std::fs::write(&chart_file, render(&values)).unwrap();
    let (base, monitoring) = (dir.path().join("base.yaml"), dir.path().join("monitoring.yaml"));
    let base_yaml = kustomize("deploy/kustomize/base");
    std::fs::write(&base, &base_yaml).unwrap();
    std::fs::write(&monitoring, kustomize("deploy/kustomize/monitoring")).unwrap();
    let out = must(chart(&["drift", s(&chart_file), s(&base), s(&monitoring)]), "the drift check");
    assert!(out.contains("0 differences"), "{out}");
    assert!(out.lines().filter(|l| l.starts_with("same ")).count() >= 15, "{out}");

    // the check sees a drift: one verb less, a webhook timeout, an object more
    for (from, to, want) in [
        ("  - get\n  - patch\n", "  - get\n", "rules/1/verbs"),
        ("timeoutSeconds: 3", "timeoutSeconds: 10", "timeoutSeconds"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"),
    ] {
        let changed = base_yaml.replacen(from, to, 1);
        assert!(changed != base_yaml, "{from:?} is not in the base's render");
        std::fs::write(&base, changed).unwrap();
        let out = chart(&["drift", s(&chart_file), s(&base), s(&monitoring)]);
        assert!(
            !out.ok && out.stderr.contains(want),
            "the drift {from} → {to} was not seen:\n{}",
            out.stderr
        );
    }
    std::fs::write(
        &base,
        base_yaml.clone()
            + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: extra\n  namespace: metricops\n",
    )
    .unwrap();
    let out = chart(&["drift", s(&chart_file), s(&base), s(&monitoring)]);
    assert!(!out.ok && out.stderr.contains("only the kustomize base declares it"), "{}", out.stderr);
}

#[test]
fn the_prometheus_rules_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("render.yaml");
    std::fs::write(&rendered, render(&json!({"prometheusRule": {"enabled": true}}))).unwrap();
    let files = must(chart(&["rules", s(&rendered), s(dir.path())]), "chart.py rules");
    let mut args = vec!["check", "rules"];
    args.extend(files.lines());
    args.push("deploy/examples/slo-rules.yml");
    let out = run("promtool", &args, "apt-get install prometheus");
    assert!(out.ok, "promtool check rules:\n{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("SUCCESS: 3 rules found") && out.stdout.contains("SUCCESS: 6 rules found"),
        "{}",
        out.stdout
    );
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: rate(x[5m]) >\n").unwrap();
    assert!(!run("promtool", &["check", "rules", s(&bad)], "apt-get install prometheus").ok);
}

#[test]
fn the_alertmanager_example_passes_amtool() {
    let out = run(
        "amtool",
        &["check-config", "deploy/examples/alertmanager.yml"],
        "apt-get install prometheus-alertmanager",
    );
    assert!(out.ok && out.stdout.contains("SUCCESS"), "amtool check-config:\n{}{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(root().join("deploy/examples/alertmanager.yml")).unwrap();
    assert!(
        text.contains("/webhooks/alertmanager")
            && text.contains("type: Bearer")
            && text.contains("credentials_file")
    );
}

/// The example configs, with their secret and TLS files in a temp dir, pass `check-config`
/// (which reads every file and signs with the App key).
#[test]
fn the_example_configs_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::support::throwaway_cert(dir.path());
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::copy(&key, secrets.join("app.pem")).unwrap();
    std::fs::write(secrets.join("webhook-secret"), "s3cret\n").unwrap();
    std::fs::write(secrets.join("alertmanager-token"), "t0ken\n").unwrap();
    for example in ["deploy/examples/metricops.yaml", "deploy/kustomize/overlays/example/metricops.yaml"] {
        let text = std::fs::read_to_string(root().join(example))
            .unwrap()
            .replace("/etc/metricops/secrets", s(&secrets))
            .replace("/etc/metricops/tls/tls.crt", s(&cert))
            .replace("/etc/metricops/tls/tls.key", s(&key))
            .replace("/var/lib/metricops", s(&dir.path().join("state")));
        let file = dir.path().join("metricops.yaml");
        std::fs::write(&file, text).unwrap();
        let r = crate::support::metricops(&["check-config", s(&file)]);
        assert_eq!(r.code, 0, "{example}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("GitHub App key readable"), "{example}: {}", r.stdout);
    }
    // the workload carries a rule the evaluator can read, and is a valid Deployment
    validate(
        &std::fs::read_to_string(root().join("deploy/examples/workload.yaml")).unwrap(),
        "workload.yaml",
    );
    let w = &docs(&std::fs::read_to_string(root().join("deploy/examples/workload.yaml")).unwrap())[0];
    assert!(w["metadata"]["annotations"]["metricops.dev/rule"].is_string());
    // Argo CD and Flux against their CRD schemas
    for f in ["deploy/examples/argocd.yaml", "deploy/examples/flux.yaml"] {
        validate(&std::fs::read_to_string(root().join(f)).unwrap(), f);
    }
}

#[test]
fn the_github_app_manifest_asks_for_what_the_app_needs() {
    let m: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("deploy/github-app.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        m["default_permissions"],
        json!({"contents": "write", "pull_requests": "write", "issues": "write", "metadata": "read"})
    );
    let events: Vec<&str> =
        m["default_events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(events, ["issue_comment", "pull_request"]);
    assert!(m["hook_attributes"]["url"].as_str().unwrap().ends_with("/webhooks/github"));
    assert_eq!(m["public"], false);
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_the_binary_alone_as_non_root() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a final stage: {stages:?}");
    assert!(lines[stages[0]].ends_with(" AS build"), "{}", lines[stages[0]]);
    let (build, last) = (&lines[stages[0]..stages[1]], &lines[stages[1]..]);
    assert!(lines[stages[1]].contains("distroless"), "a small final image: {}", lines[stages[1]]);

    // the build stage copies what `cargo build` needs: every include_str! of src/ among it
    let copied: Vec<&str> =
        build.iter().filter(|l| l.starts_with("COPY ")).flat_map(|l| l.split_whitespace().skip(1)).collect();
    for need in ["Cargo.toml", "Cargo.lock", "src", "templates"] {
        assert!(copied.contains(&need), "the build stage does not copy {need}: {copied:?}");
    }
    for inc in include_str_paths(&root().join("src")) {
        let rel = inc.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let top = rel.split('/').next().unwrap().to_string();
        assert!(copied.contains(&top.as_str()), "src uses {rel}, but the build stage does not copy {top}/");
    }
    assert!(build.iter().any(|l| l.contains("cargo build --release --locked")), "{build:?}");

    // the final stage: the binary only, a numeric non-root user, the entry point
    let copies: Vec<&&str> =
        last.iter().filter(|l| l.starts_with("COPY ") || l.starts_with("ADD ")).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].starts_with("COPY --from=build /metricops "), "{}", copies[0]);
    let user = last.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER in the final stage");
    let uid: u32 =
        user[5..].split(':').next().unwrap().parse().expect("a numeric user (runAsNonRoot checks it)");
    assert!(uid != 0, "{user}");
    let chart_uid = docs(&render(&json!({})))
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap()["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .clone();
    assert_eq!(chart_uid, json!(uid), "the chart runs as the image's user");
    assert!(last.iter().any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/metricops\"]")));
    assert!(!last.iter().any(|l| l.starts_with("RUN ")), "nothing runs in the final stage (no shell there)");

    // BuildKit reads the ignore file named after the Dockerfile, beside it.
    let ignore = std::fs::read_to_string(root().join("deploy/Dockerfile.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "the build context leaves target/ out");
}

/// Every file `include_str!`/`include_bytes!` names in src/, resolved.
fn include_str_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(include_str_paths(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for part in text.split("include_str!(").chain(text.split("include_bytes!(")).skip(1) {
                if let Some(lit) = part.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) {
                    let resolved = p.parent().unwrap().join(lit);
                    let canon = resolved.canonicalize().unwrap_or(resolved);
                    out.push(canon);
                }
            }
        }
    }
    out
}

#[test]
fn values_yaml_is_documented_key_by_key_and_in_the_schema() {
    let text = std::fs::read_to_string(root().join(CHART).join("values.yaml")).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        // every top-level key has a comment right above it, or opens a section whose keys do
        if let Some(k) = line.strip_suffix(':').or_else(|| line.split_once(": ").map(|(k, _)| k)) {
            if k.starts_with(' ') || k.starts_with('#') || k.starts_with('-') || k.is_empty() {
                continue;
            }
            let commented = i > 0 && lines[i - 1].trim_start().starts_with('#');
            let section_commented = lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("# --"))
                || lines.get(i + 1).is_some_and(|n| {
                    n.starts_with("  ") && lines.get(i + 2).is_some_and(|m| m.trim_start().starts_with('#'))
                });
            assert!(commented || section_commented, "values.yaml: `{k}` has no comment saying what it is");
            assert!(schema["properties"][k].is_object(), "values.schema.json has no `{k}`");
        }
    }
}

/// The pod as the chart runs it, without a cluster: the Deployment's own args and the
/// ConfigMap's metricops.yaml (its paths moved into a temp dir, a throwaway certificate where
/// the Secret would be), the real binary; the probes' paths over the probes' scheme answer, and
/// the admission webhook answers the API server's request at the webhook's path.
#[test]
fn metricops_starts_as_the_chart_runs_it_and_answers_its_probes_and_the_webhook() {
    let d = docs(&render(&json!({})));
    let deploy = one(&d, "Deployment");
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> =
        c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let config_text = one(&d, "ConfigMap")["data"]["metricops.yaml"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let (cert, key) = crate::support::throwaway_cert(&tls);
    std::fs::rename(&cert, tls.join("tls.crt")).unwrap();
    std::fs::rename(&key, tls.join("tls.key")).unwrap();
    let state = dir.path().join("state");
    let relocated =
        config_text.replace("/etc/metricops/tls", s(&tls)).replace("/var/lib/metricops", s(&state));
    assert_ne!(relocated, config_text, "the config names the mounted paths");
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(config_dir.join("metricops.yaml"), relocated).unwrap();

    let port = crate::support::http::free_port();
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "/etc/metricops/config/metricops.yaml" => s(&config_dir.join("metricops.yaml")).to_string(),
            a if a.starts_with("0.0.0.0:") => format!("127.0.0.1:{port}"),
            a => a.to_string(),
        })
        .collect();
    assert_eq!(args[0], "serve");
    let child = Command::new(env!("CARGO_BIN_EXE_metricops"))
        .args(&args)
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("POD_NAME", "metricops-0")
        .env("POD_NAMESPACE", "metricops")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("metricops serve starts");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(child);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metricops::adapters::install_crypto_provider();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(tls.join("tls.crt")).unwrap()).unwrap(),
        )
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let scheme = c["readinessProbe"]["httpGet"]["scheme"].as_str().unwrap().to_ascii_lowercase();
    let get = |path: &str| {
        rt.block_on(async {
            client.get(format!("{scheme}://localhost:{port}{path}")).send().await.map(|r| r.status().as_u16())
        })
        .unwrap_or(0)
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap().to_string();
        crate::support::http::wait_until(
            &format!("{probe} {path} to answer 200"),
            std::time::Duration::from_secs(60),
            || get(&path) == 200,
        );
    }
    let hook = &one(&d, "MutatingWebhookConfiguration")["webhooks"][0];
    let path = hook["clientConfig"]["service"]["path"].as_str().unwrap();
    let review =
        std::fs::read_to_string(root().join("fixtures/kube/admission/deployment.create.json")).unwrap();
    let (status, body) = rt.block_on(async {
        let r = client
            .post(format!("https://localhost:{port}{path}"))
            .header("content-type", "application/json")
            .body(review)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string(), "the deploy is recorded: {answer}");
}
