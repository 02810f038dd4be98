use super::*;

/// One line per occurrence: `line layout repository version [workload] {key} <policy>`, and the
/// version span must hold exactly the version's text (or `tag@digest` pieces).
fn render(file: &str, text: &str, ex: &Extraction) -> String {
    let mut lines = Vec::new();
    for o in &ex.occurrences {
        if let Some(span) = o.site.version_span() {
            let slice = &text[span];
            let v = &o.version;
            let ok = match &o.site {
                Site::Inline { .. } => slice == v.to_string(),
                Site::Fields { .. } => {
                    v.tag.as_deref().is_none_or(|t| slice.contains(t))
                        && v.digest.as_deref().is_none_or(|d| slice.contains(d))
                }
                Site::TagAtDigest { .. } => slice == v.to_string(),
                Site::ReadOnly(_) => true,
            };
            assert!(ok, "{file}: span {slice:?} does not hold version {v}");
        }
        let mut s = format!(
            "{} {} {} {}",
            o.line,
            o.layout.label(),
            o.repository.as_deref().unwrap_or("-"),
            o.version
        );
        if let Some(w) = &o.workload {
            s.push_str(&format!(" [{w}]"));
        }
        if let Some(k) = &o.key {
            s.push_str(&format!(" {{{k}}}"));
        }
        if let Some(p) = &o.policy {
            s.push_str(&format!(" <{p}>"));
        }
        if let Site::ReadOnly(why) = o.site {
            s.push_str(&format!(" readonly({why})"));
        }
        s.push_str(&format!(" @{}", o.slot));
        lines.push(s);
    }
    lines.join("\n")
}

fn check(file: &str, text: &str, expect: &str) {
    let ex = extract(file, text);
    let got = render(file, text, &ex);
    assert_eq!(got.trim(), expect.trim(), "\n--- {file} got:\n{got}\n");
}

fn check_key(file: &str, text: &str, key: &str, expect: &str) {
    let ex = find_key(file, text, key);
    let got = render(file, text, &ex);
    assert_eq!(got.trim(), expect.trim(), "\n--- {file} key {key} got:\n{got}\n");
}

const D: &str = "sha256:6129bb944cada32b4662eafd13fd9904d34c77286bf2ec4523eaedb711757cb0";

#[test]
fn kubernetes_workloads_of_every_kind() {
    let text = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
spec:
  template:
    spec:
      initContainers:
      - name: migrate
        image: "localhost:5000/shop/migrate:2.0"
      containers:
      - name: app
        image: ghcr.io/shop/checkout:1.2.3   # pinned
      - name: sidecar
        image: 'envoyproxy/envoy@{D}'
      - name: notag
        image: busybox
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly}}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - {{name: job, image: "ghcr.io/shop/report:main@{D}"}}
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
spec:
  containers:
  - name: c
    image: nginx:1.25
"#
    );
    check(
        "deploy.yaml",
        &text,
        &format!(
            r#"
11 workload localhost:5000/shop/migrate 2.0 [Deployment/shop/checkout container migrate] {{spec.template.spec.initContainers[name=migrate].image}} @Deployment/shop/checkout|spec.template.spec.initContainers[name=migrate].image
14 workload ghcr.io/shop/checkout 1.2.3 [Deployment/shop/checkout container app] {{spec.template.spec.containers[name=app].image}} @Deployment/shop/checkout|spec.template.spec.containers[name=app].image
16 workload envoyproxy/envoy {D} [Deployment/shop/checkout container sidecar] {{spec.template.spec.containers[name=sidecar].image}} @Deployment/shop/checkout|spec.template.spec.containers[name=sidecar].image
29 workload ghcr.io/shop/report main@{D} [CronJob/nightly container job] {{spec.jobTemplate.spec.template.spec.containers[name=job].image}} @CronJob//nightly|spec.jobTemplate.spec.template.spec.containers[name=job].image
38 workload nginx 1.25 [Pod/debug container c] {{spec.containers[name=c].image}} @Pod//debug|spec.containers[name=c].image"#
        ),
    );
}

#[test]
fn kustomization_images() {
    check(
        "overlays/prod/kustomization.yaml",
        &format!(
            "resources:\n- ../../base\nimages:\n- name: ghcr.io/shop/checkout\n  newTag: \"1.3.0\"\n- name: nginx\n  newName: registry.local/nginx\n  newTag: 1.25.1\n  digest: {D}\n- name: renamed-only\n  newName: other\n"
        ),
        &format!(
            r#"
5 kustomize ghcr.io/shop/checkout 1.3.0 {{images[name=ghcr.io/shop/checkout].newTag}} @doc0|images[name=ghcr.io/shop/checkout]
8 kustomize registry.local/nginx 1.25.1@{D} {{images[name=nginx].newTag}} @doc0|images[name=nginx]"#
        ),
    );
}

#[test]
fn image_updater_kustomization_write_back_reference() {
    // argoproj-labs/argocd-image-updater update_test.go: newName without newTag is no version.
    check(
        "kustomization.yaml",
        include_str!("../../../fixtures/layouts/image-updater.kustomization.yaml"),
        "8 kustomize baz 123 {images[name=bar].newTag} @doc0|images[name=bar]",
    );
}

#[test]
fn helm_values_in_every_shape() {
    let text = r#"image:
  registry: docker.io
  repository: bitnami/redis
  tag: 7.2.4   # {"$imagepolicy": "flux-system:redis:tag"}
frontend:
  image:
    repository: ghcr.io/shop/frontend
    tag: "2.1"
worker:
  image: "ghcr.io/shop/worker:0.9.1"
nexus:
  imageTag: 3.16.2
templated:
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"#;
    check(
        "values.yaml",
        text,
        r#"
4 helm-values docker.io/bitnami/redis 7.2.4 {image.tag} <flux-system:redis> @doc0|image.tag
8 helm-values ghcr.io/shop/frontend 2.1 {frontend.image.tag} @doc0|frontend.image.tag
10 helm-values ghcr.io/shop/worker 0.9.1 {worker.image} @doc0|worker.image
12 helm-values - 3.16.2 {nexus.imageTag} @doc0|nexus.imageTag"#,
    );
    check_key(
        "values.yaml",
        text,
        "nexus.imageTag",
        "12 helm-values - 3.16.2 {nexus.imageTag} @doc0|nexus.imageTag",
    );
    check_key(
        "values.yaml",
        text,
        "frontend.image.tag",
        "8 helm-values ghcr.io/shop/frontend 2.1 {frontend.image.tag} @doc0|frontend.image.tag",
    );
    check_key("values.yaml", text, "nope.tag", "");
}

#[test]
fn flux_helmrelease_values_and_setter_markers() {
    check(
        "release.yaml",
        include_str!("../../../fixtures/layouts/flux-setter.helmrelease.yaml"),
        &format!(
            "10 helm-release ghcr.io/my-org/my-app 4.0.6@{D} [HelmRelease/default/my-app] {{image.tag}} <flux-system:my-policy> @HelmRelease/default/my-app|spec.values.image.tag"
        ),
    );
    check(
        "cronjob.yaml",
        include_str!("../../../fixtures/layouts/flux-setter.cronjob.yaml"),
        r#"
14 workload image v1.0.0 [CronJob/bar/foo container c] {spec.jobTemplate.spec.template.spec.containers[name=c].image} <automation-ns:policy> @CronJob/bar/foo|spec.jobTemplate.spec.template.spec.containers[name=c].image
16 workload image v1.0.0 [CronJob/bar/foo container d] {spec.jobTemplate.spec.template.spec.containers[name=d].image} <automation-ns:unchanged> @CronJob/bar/foo|spec.jobTemplate.spec.template.spec.containers[name=d].image"#,
    );
    let release = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: nexus\nspec:\n  values:\n    nexus:\n      imageTag: 3.16.2\n";
    check_key(
        "release.yaml",
        release,
        "nexus.imageTag",
        "8 helm-release - 3.16.2 [HelmRelease/nexus] {nexus.imageTag} @HelmRelease//nexus|spec.values.nexus.imageTag",
    );
    check_key(
        "release.yaml",
        release,
        "spec.values.nexus.imageTag",
        "8 helm-release - 3.16.2 [HelmRelease/nexus] {nexus.imageTag} @HelmRelease//nexus|spec.values.nexus.imageTag",
    );
    // A tag marked for automation with no repository beside it.
    check("marked.yaml", "app:\n  version: 1.4.0 # {\"$imagepolicy\": \"ns:app:tag\"}\n", "");
    check(
        "marked.yaml",
        "app:\n  appTag: 1.4.0 # {\"$imagepolicy\": \"ns:app:tag\"}\n",
        "2 flux-setter - 1.4.0 {app.appTag} <ns:app> @doc0|app.appTag",
    );
}

#[test]
fn argocd_application_sources() {
    let text = r#"apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop
  namespace: argocd
spec:
  sources:
  - repoURL: https://example.com/charts
    helm:
      parameters:
      - name: image.repository
        value: ghcr.io/shop/api
      - name: image.tag
        value: "5.0.1"
      - name: service.type
        value: ClusterIP
      valuesObject:
        image:
          repository: ghcr.io/shop/web
          tag: v9
  - repoURL: https://example.com/manifests
    kustomize:
      images:
      - ghcr.io/shop/cart:1.1
      - cart-alias=ghcr.io/shop/cart2:2.2
"#;
    check(
        "app.yaml",
        text,
        r#"
14 argocd-application ghcr.io/shop/api 5.0.1 {image.tag} @Application/argocd/shop|spec.sources[0].helm.parameters[name=image.tag]
20 argocd-application ghcr.io/shop/web v9 [Application/argocd/shop] {image.tag} @Application/argocd/shop|spec.sources[0].helm.valuesObject.image.tag
24 argocd-application ghcr.io/shop/cart 1.1 @Application/argocd/shop|spec.sources[1].kustomize.images[ghcr.io/shop/cart]
25 argocd-application ghcr.io/shop/cart2 2.2 @Application/argocd/shop|spec.sources[1].kustomize.images[cart-alias]"#,
    );
    check_key(
        "app.yaml",
        text,
        "image.tag",
        "14 argocd-application ghcr.io/shop/api 5.0.1 {image.tag} @Application/argocd/shop|spec.sources[0].helm.parameters[name=image.tag]\n20 argocd-application ghcr.io/shop/web v9 [Application/argocd/shop] {image.tag} @Application/argocd/shop|spec.sources[0].helm.valuesObject.image.tag",
    );
}

#[test]
fn argocd_image_updater_write_back_files() {
    check(
        ".argocd-source-testapp.yaml",
        include_str!("../../../fixtures/layouts/.argocd-source-testapp.yaml"),
        "3 argocd-image-updater quay.io/argoprojlabs/argocd-e2e-container 0.3 @doc0|kustomize.images[quay.io/argoprojlabs/argocd-e2e-container]",
    );
    check_key(
        ".argocd-source.yaml",
        include_str!("../../../fixtures/layouts/.argocd-source.yaml"),
        "image.tag",
        "4 argocd-image-updater - 0.2 {image.tag} @doc0|helm.parameters[name=image.tag]",
    );
}

#[test]
fn operator_custom_resources() {
    let text = r#"apiVersion: ceph.rook.io/v1
kind: CephCluster
metadata:
  name: rook-ceph
  namespace: rook-ceph
spec:
  cephVersion:
    image: quay.io/ceph/ceph:v18.2.2
---
apiVersion: databases.spotahome.com/v1
kind: RedisFailover
metadata:
  name: cache
spec:
  redis:
    image: redis
    version: "7"
  sentinel:
    repository: redis
    tag: 7.2-alpine
"#;
    check(
        "operators.yaml",
        text,
        r#"
8 custom-resource quay.io/ceph/ceph v18.2.2 [CephCluster/rook-ceph/rook-ceph] {spec.cephVersion.image} @CephCluster/rook-ceph/rook-ceph|spec.cephVersion.image
20 custom-resource redis 7.2-alpine [RedisFailover/cache] {spec.sentinel.tag} @RedisFailover//cache|spec.sentinel.tag"#,
    );
}

#[test]
fn broken_yaml_falls_back_to_image_lines() {
    let text = "spec:\n  containers:\n  - name: a\n    image: \"ghcr.io/a/b:{{ .Values.tag }}\"\n  - image: ghcr.io/a/c:1.0 # ok\n  {{- if .Values.x }}\n  : bad\n";
    let ex = extract("chart/templates/deploy.yaml", text);
    assert_eq!(render("t", text, &ex), "5 fallback ghcr.io/a/c 1.0 @lines|image-line[ghcr.io/a/c#1]");
    assert_eq!(ex.notes.len(), 1);
    assert!(ex.notes[0].contains("not valid YAML"), "{:?}", ex.notes);
}

#[test]
fn crlf_and_non_ascii_keep_exact_spans() {
    let text = "# é commentaire\r\nkind: Deployment\r\nmetadata:\r\n  name: ü\r\nspec:\r\n  template:\r\n    spec:\r\n      containers:\r\n      - name: a\r\n        image: r/é:1.0\r\n      - name: b\r\n        image: r/b:2.0\r\n";
    // `r/é` is not a valid repository; the second one is found with exact spans.
    check(
        "x.yaml",
        text,
        "12 workload r/b 2.0 [Deployment/ü container b] {spec.template.spec.containers[name=b].image} @Deployment//ü|spec.template.spec.containers[name=b].image",
    );
}

#[test]
fn layout_paths() {
    assert!(is_manifest_path("a/b/values.yaml"));
    assert!(is_manifest_path("x.yml"));
    assert!(is_manifest_path("apps/.argocd-source-shop.yaml"));
    assert!(!is_manifest_path("README.md"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A stream of `n` Deployments (plus a comment-only document and an unnamed one), long enough
    /// for a focused read to skip documents.
    fn stream(names: &[String], pad: usize) -> String {
        let mut out = String::from("# generated\n---\n# nothing here\n---\nimage: ghcr.io/x/unnamed:1.0\n");
        for (i, n) in names.iter().enumerate() {
            out.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {n}\n  namespace: ns\n  annotations:\n    pad: \"{}\"\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: ghcr.io/x/{n}:1.{i}\n",
                "x".repeat(pad)
            ));
        }
        out
    }

    #[test]
    fn a_focused_read_finds_what_the_whole_read_finds_in_the_documents_it_keeps() {
        let names: Vec<String> = (0..40).map(|i| format!("svc{i}")).collect();
        let text = stream(&names, 2000);
        assert!(text.len() > 64 * 1024);
        let whole = extract("gotk.yaml", &text);
        let focused = extract_focused("gotk.yaml", &text, &["svc17", "svc5"]);
        let wanted: Vec<&Occurrence> = whole
            .occurrences
            .iter()
            .filter(|o| o.slot.doc.ends_with("/svc17") || o.slot.doc.ends_with("/svc5"))
            .collect();
        assert_eq!(focused.occurrences.iter().collect::<Vec<_>>(), wanted);
        assert_eq!(focused.occurrences.len(), 2);
        // An unnamed document keeps its number (the comment-only one is not counted).
        let unnamed = extract_focused("gotk.yaml", &text, &["unnamed"]);
        let want: Vec<&Occurrence> =
            whole.occurrences.iter().filter(|o| o.slot.doc.starts_with("doc")).collect();
        assert_eq!(unnamed.occurrences.iter().collect::<Vec<_>>(), want);
        // Small files, `...` markers and an empty focus are read whole.
        let small = stream(&names[..2], 10);
        assert_eq!(
            extract_focused("f.yaml", &small, &["svc1"]).occurrences,
            extract("f.yaml", &small).occurrences
        );
        let ended = text.replace("# nothing here\n", "# nothing here\n...\n");
        assert_eq!(
            extract_focused("f.yaml", &ended, &["svc1"]).occurrences,
            extract("f.yaml", &ended).occurrences
        );
        assert_eq!(extract_focused("gotk.yaml", &text, &["svc1", ""]).occurrences, whole.occurrences);
        assert_eq!(whole.occurrences.len(), 41, "every Deployment and the unnamed document");
    }

    proptest! {
        #[test]
        fn a_focused_read_agrees_with_the_whole_read(
            picks in proptest::collection::vec(0usize..30, 1..4),
            crlf in any::<bool>(),
        ) {
            let names: Vec<String> = (0..30).map(|i| format!("app{i}x")).collect();
            let mut text = stream(&names, 3000);
            if crlf {
                text = text.replace('\n', "\r\n");
            }
            let focus: Vec<String> = picks.iter().map(|i| names[*i].clone()).collect();
            let focus: Vec<&str> = focus.iter().map(String::as_str).collect();
            let whole = extract("f.yaml", &text);
            let focused = extract_focused("f.yaml", &text, &focus);
            for o in &focused.occurrences {
                prop_assert!(whole.occurrences.contains(o), "{o:?}");
            }
            for o in whole.occurrences.iter().filter(|o| focus.iter().any(|f| o.slot.doc.ends_with(&format!("/{f}")))) {
                prop_assert!(focused.occurrences.contains(o), "{o:?}");
            }
        }

        #[test]
        fn extraction_never_panics_on_arbitrary_text(s in "\\PC{0,400}") {
            let _ = extract("f.yaml", &s);
            let _ = find_key("f.yaml", &s, "a.b");
        }

        #[test]
        fn extraction_never_panics_on_yamlish_text(s in "([ -]{0,4}(image|tag|repository|kind|name|images|newTag|spec|values)?:? ?[\"']?[a-z0-9:@./{}\\[\\]#-]{0,12}[\"']?\r?\n){0,12}") {
            let ex = extract("f.yaml", &s);
            for o in ex.occurrences {
                if let Some(span) = o.site.version_span() {
                    prop_assert!(s.get(span).is_some());
                }
            }
        }
    }
}
