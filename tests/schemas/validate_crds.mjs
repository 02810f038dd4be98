#!/usr/bin/env node
// Validates Argo CD, Flux, cert-manager and prometheus-operator objects against their CRD
// schemas, for tests/kube_fixtures.rs and tests/deploy.rs.
//
// The schemas are the npm packages @kubernetes-models/argo-cd, @kubernetes-models/flux-cd,
// @kubernetes-models/cert-manager and @kubernetes-models/prometheus-operator (generated from the projects' Go API types, kubebuilder markers included: required fields,
// types, enums, patterns). Each document is checked three ways:
//   1. the model class's own .validate() (types, required, enums, patterns, formats);
//   2. strict fields: like the API server's strict field validation (kubectl's default), a field
//      the schema does not declare is refused. The generated validators do not refuse unknown
//      fields themselves, so the validator is run once more over a proxy of the document that
//      records which fields it looks up: an object whose schema lists properties must have no
//      field the validator never asked for. Objects the schema leaves free-form (Helm values,
//      which the CRD marks x-kubernetes-preserve-unknown-fields) are never looked into, and maps
//      (labels, annotations) are enumerated: neither is checked for unknown fields, as in the API
//      server;
//   3. what the CRD YAML says and the generated schema lacks: the metav1.Condition markers on
//      status.conditions (status True/False/Unknown, the reason and type patterns, lengths); the
//      patterns on Flux's duration fields (interval, timeout, retryInterval: the generator drops
//      the markers on fields of type metav1.Duration; table below, taken from the CRDs of
//      source-controller v1.9, kustomize-controller v1.9 and helm-controller v1.6); and
//      for Argo CD, the status codes its code sets (sync Synced/OutOfSync/Unknown, health
//      Healthy/Progressing/Degraded/Suspended/Missing/Unknown, operation phase
//      Running/Terminating/Failed/Error/Succeeded), which the CRD leaves as free strings.
//
//   node validate_crds.mjs FILE...                    each document must be valid
//   node validate_crds.mjs --expect-rejected TEXT [--set POINTER=JSON]... [--delete POINTER]... FILE
//       FILE's one document, changed as told (RFC 6901 pointers), must be rejected with a message
//       containing TEXT (the negative check)
//
// Prints one line per object and a closing "validated N objects in M files"; exits 1 on any
// failure, 2 when the npm packages are not installed (npm ci in tests/schemas; tests/run.sh does).

import { readFileSync } from "node:fs";

let argo, fluxSource, fluxKustomize, fluxHelm, certManager, monitoring, yaml;
try {
  argo = await import("@kubernetes-models/argo-cd/argoproj.io/v1alpha1");
  fluxSource = await import("@kubernetes-models/flux-cd/source.toolkit.fluxcd.io/v1");
  fluxKustomize = await import("@kubernetes-models/flux-cd/kustomize.toolkit.fluxcd.io/v1");
  fluxHelm = await import("@kubernetes-models/flux-cd/helm.toolkit.fluxcd.io/v2");
  certManager = await import("@kubernetes-models/cert-manager/cert-manager.io/v1");
  monitoring = await import("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
  yaml = (await import("js-yaml")).default;
} catch (e) {
  console.error(
    `validate_crds.mjs: ${e.message}\n` +
      "install the schema packages with `npm ci --prefix tests/schemas` (tests/run.sh does)",
  );
  process.exit(2);
}

const MODELS = new Map(
  [
    argo.Application,
    argo.AppProject,
    argo.ApplicationSet,
    fluxSource.GitRepository,
    fluxSource.HelmRepository,
    fluxSource.OCIRepository,
    fluxSource.Bucket,
    fluxKustomize.Kustomization,
    fluxHelm.HelmRelease,
    certManager.Certificate,
    certManager.Issuer,
    certManager.ClusterIssuer,
    monitoring.ServiceMonitor,
    monitoring.PrometheusRule,
  ].map((m) => [`${m.apiVersion} ${m.kind}`, m]),
);

class Invalid extends Error {}

// --- 2. strict fields ---------------------------------------------------------------------------

function tracked(root) {
  const info = new Map(); // target object -> { read: Set, enumerated }
  const proxies = new WeakMap();
  const wrap = (value) => {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    const rec = { read: new Set(), enumerated: false };
    info.set(value, rec);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        if (typeof key === "string") rec.read.add(key);
        return wrap(Reflect.get(target, key, receiver));
      },
      has(target, key) {
        if (typeof key === "string") rec.read.add(key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        rec.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  return { proxy: wrap(root), info };
}

function unknownFields(Model, doc) {
  const { proxy, info } = tracked(doc);
  Model.prototype.validate.call(proxy); // passed already: throws nothing, records what it read
  const unknown = [];
  const walk = (node, path) => {
    if (node === null || typeof node !== "object") return;
    if (Array.isArray(node)) {
      node.forEach((v, i) => walk(v, `${path}/${i}`));
      return;
    }
    const rec = info.get(node);
    if (!rec) return; // never reached: inside a free-form value
    const looked = rec.enumerated || rec.read.size > 0;
    if (!looked) return; // a free-form object (x-kubernetes-preserve-unknown-fields)
    for (const [k, v] of Object.entries(node)) {
      const p = `${path}/${k.replaceAll("~", "~0").replaceAll("/", "~1")}`;
      if (!rec.enumerated && !rec.read.has(k)) unknown.push(p);
      else walk(v, p);
    }
  };
  walk(doc, "");
  return unknown;
}

// --- 3. what the CRD YAML adds ------------------------------------------------------------------

// metav1.Condition's kubebuilder markers, as every Flux CRD carries them for status.conditions.
const CONDITION_TYPE =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/;
const CONDITION_REASON = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;

function checkConditions(doc) {
  const problems = [];
  (doc.status?.conditions ?? []).forEach((c, i) => {
    const at = `/status/conditions/${i}`;
    if (!["True", "False", "Unknown"].includes(c.status))
      problems.push(`${at}/status: ${JSON.stringify(c.status)} is not one of True, False, Unknown`);
    if (typeof c.type !== "string" || c.type.length > 316 || !CONDITION_TYPE.test(c.type))
      problems.push(`${at}/type: ${JSON.stringify(c.type)} does not match the condition type pattern`);
    if (typeof c.reason !== "string" || c.reason.length < 1 || c.reason.length > 1024 || !CONDITION_REASON.test(c.reason))
      problems.push(`${at}/reason: ${JSON.stringify(c.reason)} does not match ${CONDITION_REASON}`);
    if (typeof c.message === "string" && c.message.length > 32768) problems.push(`${at}/message: longer than 32768`);
    if (c.observedGeneration !== undefined && c.observedGeneration < 0) problems.push(`${at}/observedGeneration: negative`);
  });
  return problems;
}

// Flux's duration fields and their patterns, from the CRD YAML (config/crd/bases/*.yaml).
const DURATION = /^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/;
const SOURCE_TIMEOUT = /^([0-9]+(\.[0-9]+)?(ms|s|m))+$/; // source-controller's timeouts: no hours
const SOURCE_DURATIONS = [
  ["/spec/interval", DURATION],
  ["/spec/timeout", SOURCE_TIMEOUT],
];
const DURATIONS = {
  "source.toolkit.fluxcd.io/v1 GitRepository": SOURCE_DURATIONS,
  "source.toolkit.fluxcd.io/v1 HelmRepository": SOURCE_DURATIONS,
  "source.toolkit.fluxcd.io/v1 OCIRepository": SOURCE_DURATIONS,
  "source.toolkit.fluxcd.io/v1 Bucket": SOURCE_DURATIONS,
  "kustomize.toolkit.fluxcd.io/v1 Kustomization": ["/spec/interval", "/spec/retryInterval", "/spec/timeout"].map((p) => [p, DURATION]),
  "helm.toolkit.fluxcd.io/v2 HelmRelease": [
    "/spec/interval",
    "/spec/timeout",
    "/spec/chart/spec/interval",
    "/spec/install/timeout",
    "/spec/install/strategy/retryInterval",
    "/spec/upgrade/timeout",
    "/spec/upgrade/strategy/retryInterval",
    "/spec/test/timeout",
    "/spec/rollback/timeout",
    "/spec/uninstall/timeout",
  ].map((p) => [p, DURATION]),
};

function checkDurations(doc) {
  const problems = [];
  for (const [path, pattern] of DURATIONS[`${doc.apiVersion} ${doc.kind}`] ?? []) {
    const value = path
      .split("/")
      .slice(1)
      .reduce((node, key) => (node === null || typeof node !== "object" ? undefined : node[key]), doc);
    if (value !== undefined && (typeof value !== "string" || !pattern.test(value)))
      problems.push(`${path}: ${JSON.stringify(value)} does not match ${pattern}`);
  }
  return problems;
}

const SYNC = ["Synced", "OutOfSync", "Unknown"];
const HEALTH = ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"];
const PHASE = ["Running", "Terminating", "Failed", "Error", "Succeeded"];

function checkArgoCodes(doc) {
  const problems = [];
  const s = doc.status ?? {};
  const want = (path, value, allowed) => {
    if (value !== undefined && !allowed.includes(value))
      problems.push(`${path}: ${JSON.stringify(value)} is not one of ${allowed.join(", ")}`);
  };
  want("/status/sync/status", s.sync?.status, SYNC);
  want("/status/health/status", s.health?.status, HEALTH);
  want("/status/operationState/phase", s.operationState?.phase, PHASE);
  (s.resources ?? []).forEach((r, i) => {
    want(`/status/resources/${i}/status`, r.status, SYNC);
    want(`/status/resources/${i}/health/status`, r.health?.status, HEALTH);
  });
  return problems;
}

// --- the document -------------------------------------------------------------------------------

function checkDocument(doc, where) {
  if (doc === null || typeof doc !== "object" || !doc.apiVersion || !doc.kind)
    throw new Invalid(`${where}: not a Kubernetes object (no apiVersion/kind)`);
  const Model = MODELS.get(`${doc.apiVersion} ${doc.kind}`);
  if (!Model) throw new Invalid(`${where}: no CRD schema here for ${doc.apiVersion} ${doc.kind}`);
  try {
    new Model(doc).validate();
  } catch (e) {
    throw new Invalid(`${where}: ${e.message}`);
  }
  const unknown = unknownFields(Model, doc);
  if (unknown.length) throw new Invalid(`${where}: unknown field(s), not in the ${doc.kind} schema: ${unknown.join(", ")}`);
  const problems = [...checkConditions(doc), ...checkDurations(doc)];
  if (doc.apiVersion.startsWith("argoproj.io/")) problems.push(...checkArgoCodes(doc));
  if (problems.length) throw new Invalid(`${where}: ${problems.join("; ")}`);
  return `${doc.apiVersion}/${doc.kind} ${doc.metadata?.name}`;
}

function load(path) {
  const text = readFileSync(path, "utf8");
  if (path.endsWith(".json")) return [JSON.parse(text)];
  return yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
}

function pointer(doc, ptr) {
  const parts = ptr
    .split("/")
    .slice(1)
    .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
  if (parts.length === 0) throw new Error(`bad pointer ${ptr}`);
  let node = doc;
  for (const p of parts.slice(0, -1)) {
    if (Array.isArray(node)) node = node[Number(p)];
    else node = node[p] ??= {};
  }
  const last = parts.at(-1);
  return [node, Array.isArray(node) ? Number(last) : last];
}

function main(argv) {
  let expect = null;
  const sets = [];
  const deletes = [];
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--expect-rejected") expect = argv[++i];
    else if (a === "--set") sets.push(argv[++i]);
    else if (a === "--delete") deletes.push(argv[++i]);
    else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else files.push(a);
  }
  if (files.length === 0) {
    console.error("usage: validate_crds.mjs [--expect-rejected TEXT [--set P=JSON]... [--delete P]...] FILE...");
    return 2;
  }

  if (expect !== null) {
    const docs = load(files[0]);
    if (files.length !== 1 || docs.length !== 1) throw new Error("--expect-rejected takes one file of one document");
    const doc = structuredClone(docs[0]);
    for (const s of sets) {
      const eq = s.indexOf("=");
      const [parent, key] = pointer(doc, s.slice(0, eq));
      parent[key] = JSON.parse(s.slice(eq + 1));
    }
    for (const d of deletes) {
      const [parent, key] = pointer(doc, d);
      if (Array.isArray(parent)) parent.splice(key, 1);
      else delete parent[key];
    }
    try {
      checkDocument(doc, files[0]);
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      if (!e.message.includes(expect)) {
        console.error(`rejected, but not for the expected reason (${JSON.stringify(expect)}): ${e.message}`);
        return 1;
      }
      console.log(`rejected as expected: ${e.message}`);
      return 0;
    }
    console.error(`${files[0]} with ${JSON.stringify([...sets, ...deletes])} was ACCEPTED, but should have been rejected`);
    return 1;
  }

  const failures = [];
  let count = 0;
  for (const path of files) {
    let docs;
    try {
      docs = load(path);
    } catch (e) {
      failures.push(`${path}: cannot read: ${e.message}`);
      continue;
    }
    if (docs.length === 0) failures.push(`${path}: no documents`);
    docs.forEach((doc, i) => {
      const where = docs.length === 1 ? path : `${path} (document ${i + 1})`;
      try {
        console.log(`ok ${where}: ${checkDocument(doc, where)}`);
        count++;
      } catch (e) {
        if (!(e instanceof Invalid)) throw e;
        failures.push(e.message);
      }
    });
  }
  for (const f of failures) console.error(`INVALID ${f}`);
  const versions = ["argo-cd", "flux-cd", "cert-manager", "prometheus-operator"].map(
    (p) => `@kubernetes-models/${p} ${JSON.parse(readFileSync(new URL(`./node_modules/@kubernetes-models/${p}/package.json`, import.meta.url))).version}`,
  );
  console.log(`validated ${count} objects in ${files.length} files (${versions.join(", ")}, strict fields)`);
  return failures.length ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
