//! The resources the stand-in serves, and the discovery documents a 1.33 apiserver gives for them.

use serde_json::{Value, json};

#[derive(Debug)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Has the `/status` subresource: writes to the main resource keep the old status, writes to
    /// `/status` change nothing but status. Argo CD's Application CRD has `subresources: {}` (no
    /// status subresource: its controller writes status through the main resource); the Flux CRDs,
    /// the apps/batch kinds and Namespace have one; Lease and ConfigMap have no status at all.
    pub status: bool,
    /// A custom resource (served from a CRD): no strategic merge patch (415, as the apiserver),
    /// list items carry apiVersion/kind, every list is atomic for merges and field ownership.
    pub crd: bool,
    /// `metadata.generation` is kept (1 on create, +1 when the spec changes; for a CRD without a
    /// status subresource, when anything but metadata changes).
    pub generation: bool,
    /// PUT of a missing object creates it (Lease's strategy allows it; the others 404).
    pub create_on_update: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `configmaps` in the core group, as Status messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

macro_rules! rt {
    ($g:expr, $v:expr, $p:expr, $s:expr, $k:expr, $sn:expr, ns = $ns:expr, status = $st:expr, crd = $crd:expr, generation = $gen:expr, create_on_update = $cou:expr) => {
        ResourceType {
            group: $g,
            version: $v,
            plural: $p,
            singular: $s,
            kind: $k,
            short_names: $sn,
            namespaced: $ns,
            status: $st,
            crd: $crd,
            generation: $gen,
            create_on_update: $cou,
        }
    };
}

pub static RESOURCES: &[ResourceType] = &[
    rt!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        &["ns"],
        ns = false,
        status = true,
        crd = false,
        generation = false,
        create_on_update = false
    ),
    rt!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        &["cm"],
        ns = true,
        status = false,
        crd = false,
        generation = false,
        create_on_update = false
    ),
    rt!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        &["deploy"],
        ns = true,
        status = true,
        crd = false,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        &["sts"],
        ns = true,
        status = true,
        crd = false,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        &["ds"],
        ns = true,
        status = true,
        crd = false,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        &["cj"],
        ns = true,
        status = true,
        crd = false,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        &[],
        ns = true,
        status = false,
        crd = false,
        generation = false,
        create_on_update = true
    ),
    // argocd-image-updater v1 (api/v1alpha1/imageupdater_types.go: `+kubebuilder:subresource:status`).
    rt!(
        "argocd-image-updater.argoproj.io",
        "v1alpha1",
        "imageupdaters",
        "imageupdater",
        "ImageUpdater",
        &[],
        ns = true,
        status = true,
        crd = true,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "argoproj.io",
        "v1alpha1",
        "applications",
        "application",
        "Application",
        &["app", "apps"],
        ns = true,
        status = false,
        crd = true,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "kustomizations",
        "kustomization",
        "Kustomization",
        &["ks"],
        ns = true,
        status = true,
        crd = true,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "helm.toolkit.fluxcd.io",
        "v2",
        "helmreleases",
        "helmrelease",
        "HelmRelease",
        &["hr"],
        ns = true,
        status = true,
        crd = true,
        generation = true,
        create_on_update = false
    ),
    rt!(
        "source.toolkit.fluxcd.io",
        "v1",
        "gitrepositories",
        "gitrepository",
        "GitRepository",
        &["gitrepo"],
        ns = true,
        status = true,
        crd = true,
        generation = true,
        create_on_update = false
    ),
];

pub fn by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.api_version() == api_version && r.kind == kind)
}

pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn serves_group(group: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group)
}

/// Is `group/version` served at all (the uninstalled CRD groups excluded by the caller)?
pub fn serves(group: &str, version: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group && r.version == version)
}

/// Merge keys of the built-in kinds' lists (their `patchMergeKey`, which strategic merge patch and
/// server-side apply both use; `listType=map` in the OpenAPI). Any other list is atomic.
pub fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            "name"
        }
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// `/api`
pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

/// `/apis`
pub fn api_group_list(uninstalled: &[String]) -> Value {
    let mut groups: Vec<Value> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty() && !uninstalled.iter().any(|g| g == r.group)) {
        if seen.contains(&r.group) {
            continue;
        }
        seen.push(r.group);
        groups.push(api_group(r.group));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`
pub fn api_group(group: &str) -> Value {
    let version = RESOURCES.iter().find(|r| r.group == group).map(|r| r.version).unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/api/v1`, `/apis/{group}/{version}`
pub fn api_resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.crd {
            entry["storageVersionHash"] = json!(format!("{:x}", fnv(r.plural) & 0xffff_ffff_ffff));
        }
        resources.push(entry);
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// `/version`, as a 1.33 server answers it.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.4",
        "gitCommit": "74cdb426ed3a3ad3b3d7e3a4e0a2f6d7c5f3e0b1",
        "gitTreeState": "clean",
        "buildDate": "2025-08-12T18:04:31Z",
        "goVersion": "go1.24.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
