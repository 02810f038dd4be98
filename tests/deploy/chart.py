#!/usr/bin/env python3
"""The Helm chart under deploy/helm/metricops, through Helm's own library, for tests/deploy.rs.

Helm is PyPI's helm-python-sdk (Helm 4's Go SDK behind a C ABI: the real template engine, the
real linter; no helm binary, no cluster). tests/run.sh installs it.

    chart.py lint CHART [--values JSON]...
        `helm lint --strict` once per values set (none: the chart's defaults), for Kubernetes
        KUBE_VERSION: every message of severity warning or worse fails. Prints the messages.
    chart.py render CHART [--values JSON] [--release NAME] [--namespace NS]
        `helm template`: every rendered manifest, as one YAML stream on stdout (NOTES.txt left out).
    chart.py drift CHART_RENDER KUSTOMIZE_RENDER...
        Compares the chart's YAML stream with the kustomize renders, object by object (see
        normalise): exits 1 listing every difference and every object only one side declares.
    chart.py split RENDER CORE_OUT CRDS_OUT
        Splits a YAML stream into the Kubernetes kinds (for kubernetes-validate) and the custom
        resources (cert-manager, prometheus-operator, Argo CD, Flux: for validate_crds.mjs).
    chart.py rules RENDER OUT_DIR
        Writes each PrometheusRule's spec as a Prometheus rules file into OUT_DIR (for
        `promtool check rules`); prints the files written.

Exits 2 when helm-python-sdk or PyYAML is missing.
"""

import argparse
import copy
import json
import os
import re
import sys

try:
    import yaml
    import helm_python as helm
except ImportError as e:  # never skip silently: say how to get it
    print(f"chart.py: {e.name} is missing; install it with `python3 -m pip install helm-python-sdk==0.2.2 pyyaml` "
          "(tests/run.sh does)", file=sys.stderr)
    sys.exit(2)

KUBE_VERSION = "v1.33.0"
# Labels only Helm sets: the kustomize base has no release to name.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
# Annotations only Helm sets: the base rolls pods by the ConfigMap's hash suffix instead.
HELM_ONLY_ANNOTATIONS = re.compile(r"^checksum/")
# Cluster-scoped kinds: kubectl 1.20's kustomize (Debian's) gives them the kustomization's
# namespace, which the API server ignores for them.
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "Namespace"}
# kustomize's configMapGenerator suffix.
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def render(chart_path, values, release, namespace):
    chart = helm.Chart.load(chart_path)
    try:
        out = chart.render(values, name=release, namespace=namespace, is_install=True)
    finally:
        chart.close()
    docs = []
    for path in sorted(out):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(out[path]):
            if d is not None:
                docs.append(d)
    return docs


def lint(chart_path, values_sets):
    failed = False
    for values in values_sets or [None]:
        report = helm.lint(chart_path, values, strict=True, kube_version=KUBE_VERSION, namespace="metricops")
        label = "defaults" if values is None else json.dumps(values, sort_keys=True)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        for m in report.get("messages", []):
            print(f"[{label}] severity {m.get('severity')} {m.get('path')}: {m.get('error')}")
        for e in report.get("errors") or []:
            print(f"[{label}] error: {e}")
        if bad or report.get("errors"):
            failed = True
            print(f"FAILED helm lint --strict with {label}", file=sys.stderr)
        else:
            print(f"ok helm lint --strict with {label} ({report.get('total_charts_linted')} chart, Kubernetes {KUBE_VERSION})")
    return 1 if failed else 0


def normalise(doc):
    """What an object declares, less what only Helm or only kustomize adds."""
    d = copy.deepcopy(doc)
    meta = d.setdefault("metadata", {})
    if d.get("kind") in CLUSTER_SCOPED:
        meta.pop("namespace", None)
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in HELM_ONLY_LABELS}
    meta["labels"] = labels
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if not HELM_ONLY_ANNOTATIONS.match(k)}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    if d.get("kind") == "ConfigMap":
        meta["name"] = HASH_SUFFIX.sub("", meta["name"])
        # the config as metricops reads it, not as it is laid out
        d["data"] = {k: yaml.safe_load(v) if k.endswith(".yaml") else v for k, v in (d.get("data") or {}).items()}
    tmpl = d.get("spec", {}).get("template") if d.get("kind") in ("Deployment", "StatefulSet") else None
    if tmpl:
        tm = tmpl.setdefault("metadata", {})
        tann = {k: v for k, v in (tm.get("annotations") or {}).items() if not HELM_ONLY_ANNOTATIONS.match(k)}
        if tann:
            tm["annotations"] = tann
        else:
            tm.pop("annotations", None)
        for v in tmpl.get("spec", {}).get("volumes", []):
            if "configMap" in v:
                v["configMap"]["name"] = HASH_SUFFIX.sub("", v["configMap"]["name"])
    return d


def key(doc):
    m = doc.get("metadata", {})
    ns = "-" if doc.get("kind") in CLUSTER_SCOPED else m.get("namespace", "-")
    return f"{doc.get('apiVersion')}/{doc.get('kind')} {ns}/{HASH_SUFFIX.sub('', m.get('name', '?')) if doc.get('kind') == 'ConfigMap' else m.get('name')}"


def differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}/{k}"
            if k not in a:
                out.append(f"{p}: only in the kustomize base: {json.dumps(b[k])}")
            elif k not in b:
                out.append(f"{p}: only in the chart: {json.dumps(a[k])}")
            else:
                out.extend(differences(a[k], b[k], p))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(differences(x, y, f"{path}/{i}"))
        return out
    return [] if a == b else [f"{path}: chart {json.dumps(a)} != kustomize base {json.dumps(b)}"]


def drift(chart_file, base_files):
    def load(paths):
        out = {}
        for p in paths:
            with open(p, encoding="utf-8") as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
            for d in docs:
                k = key(d)
                if k in out:
                    raise SystemExit(f"{p}: {k} declared twice")
                out[k] = normalise(d)
        return out

    chart, base = load([chart_file]), load(base_files)
    problems = []
    for k in sorted(set(chart) | set(base)):
        if k not in base:
            problems.append(f"{k}: only the chart declares it")
        elif k not in chart:
            problems.append(f"{k}: only the kustomize base declares it")
        else:
            problems.extend(f"{k}: {d}" for d in differences(chart[k], base[k]))
    for p in problems:
        print(f"DRIFT {p}", file=sys.stderr)
    print(f"compared {len(set(chart) & set(base))} objects declared by both; {len(problems)} differences")
    for k in sorted(set(chart) & set(base)):
        print(f"same {k}")
    return 1 if problems else 0


def rules(render_file, out_dir):
    with open(render_file, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    n = 0
    for d in docs:
        if d.get("kind") == "PrometheusRule":
            path = os.path.join(out_dir, f"{d['metadata']['name']}.rules.yaml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump({"groups": d["spec"]["groups"]}, f, sort_keys=False)
            print(path)
            n += 1
    if n == 0:
        print(f"{render_file}: no PrometheusRule", file=sys.stderr)
        return 1
    return 0


CRD_GROUPS = ("cert-manager.io", "monitoring.coreos.com", "argoproj.io", "source.toolkit.fluxcd.io",
              "kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io")


def split(render_file, core_out, crds_out):
    with open(render_file, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    crds = [d for d in docs if d.get("apiVersion", "").split("/")[0] in CRD_GROUPS]
    core = [d for d in docs if d.get("apiVersion", "").split("/")[0] not in CRD_GROUPS]
    for path, part in ((core_out, core), (crds_out, crds)):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(part, f, sort_keys=False)
    print(f"{len(core)} Kubernetes objects, {len(crds)} custom resources")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lint")
    p.add_argument("chart")
    p.add_argument("--values", action="append", default=[], type=json.loads)
    p = sub.add_parser("render")
    p.add_argument("chart")
    p.add_argument("--values", type=json.loads, default=None)
    p.add_argument("--release", default="metricops")
    p.add_argument("--namespace", default="metricops")
    p = sub.add_parser("drift")
    p.add_argument("chart_render")
    p.add_argument("kustomize_render", nargs="+")
    p = sub.add_parser("split")
    p.add_argument("render")
    p.add_argument("core_out")
    p.add_argument("crds_out")
    p = sub.add_parser("rules")
    p.add_argument("render")
    p.add_argument("out_dir")
    a = ap.parse_args()
    try:
        if a.cmd == "lint":
            return lint(a.chart, a.values)
        if a.cmd == "render":
            docs = render(a.chart, a.values, a.release, a.namespace)
            yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
            return 0
        if a.cmd == "drift":
            return drift(a.chart_render, a.kustomize_render)
        if a.cmd == "split":
            return split(a.render, a.core_out, a.crds_out)
        return rules(a.render, a.out_dir)
    except helm.HelmError as e:
        print(f"helm: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
