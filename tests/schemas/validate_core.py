#!/usr/bin/env python3
"""Validates core Kubernetes objects (and AdmissionReview requests) against the Kubernetes schemas.

Used by tests/kube_fixtures.rs. Every YAML document / JSON file given is checked with PyPI's
kubernetes-validate, strict (unknown fields refused), for Kubernetes 1.33. An AdmissionReview has no
schema there: its shape is checked here (apiVersion admission.k8s.io/v1, request.uid, kind,
resource, operation, options, oldObject against the operation, name/namespace/kind against the
embedded object), and the objects it embeds are validated like any other.

    validate_core.py FILE...                      each document must be valid
    validate_core.py --expect-rejected TEXT [--set POINTER=JSON]... [--delete POINTER]... FILE
        FILE's one document, changed as told (RFC 6901 pointers), must be rejected with a
        message containing TEXT: the negative check, so the validator cannot pass by checking nothing

Prints one line per object and a closing "validated N objects in M files"; exits 1 on any failure
(2 when kubernetes-validate is not installed).
"""

import argparse
import copy
import json
import re
import sys

try:
    import yaml
    import kubernetes_validate
except ImportError as e:  # never skip silently: say how to get it
    print(
        f"validate_core.py: {e.name} is missing; install it with `pip install kubernetes-validate` "
        "(tests/run.sh does)",
        file=sys.stderr,
    )
    sys.exit(2)

K8S_VERSION = "1.33"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# What each kind's resource is called, for the kinds the fixtures embed.
RESOURCES = {
    ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets",
    ("apps", "DaemonSet"): "daemonsets",
    ("apps", "ReplicaSet"): "replicasets",
    ("batch", "CronJob"): "cronjobs",
    ("batch", "Job"): "jobs",
    ("", "ConfigMap"): "configmaps",
    ("", "Pod"): "pods",
    ("", "Service"): "services",
    ("coordination.k8s.io", "Lease"): "leases",
}
OPTIONS = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


class Invalid(Exception):
    pass


def validate_object(obj, where):
    """kubernetes-validate, strict; returns 'apiVersion/kind name'."""
    if not isinstance(obj, dict):
        raise Invalid(f"{where}: not an object")
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        raise Invalid(f"{where}: /{path}: {e.message}") from None
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
        raise Invalid(f"{where}: no Kubernetes {K8S_VERSION} schema for {obj.get('apiVersion')} {obj.get('kind')} {e}".rstrip()) from None
    return f"{obj['apiVersion']}/{obj['kind']} {obj.get('metadata', {}).get('name')}"


def check_admission_review(doc, where):
    """The AdmissionReview's own shape (no schema for it in kubernetes-validate); returns the objects it carries."""
    if doc.get("apiVersion") != "admission.k8s.io/v1":
        raise Invalid(f"{where}: apiVersion {doc.get('apiVersion')!r}, want admission.k8s.io/v1")
    extra = set(doc) - {"apiVersion", "kind", "request", "response"}
    if extra:
        raise Invalid(f"{where}: unknown fields {sorted(extra)}")
    req = doc.get("request")
    if not isinstance(req, dict):
        raise Invalid(f"{where}: no request")
    known = {"uid", "kind", "resource", "subResource", "requestKind", "requestResource", "requestSubResource",
             "name", "namespace", "operation", "userInfo", "object", "oldObject", "dryRun", "options"}
    extra = set(req) - known
    if extra:
        raise Invalid(f"{where}: request: unknown fields {sorted(extra)}")
    if not isinstance(req.get("uid"), str) or not UUID.match(req["uid"]):
        raise Invalid(f"{where}: request.uid {req.get('uid')!r} is not a UUID")
    for key, fields in (("kind", ("group", "version", "kind")), ("resource", ("group", "version", "resource"))):
        for k in (key, "request" + key[0].upper() + key[1:]):
            v = req.get(k)
            if k == key and v is None:
                raise Invalid(f"{where}: request.{k} missing")
            if v is not None and (not isinstance(v, dict) or set(v) != set(fields)
                                  or not all(isinstance(v[f], str) for f in fields)):
                raise Invalid(f"{where}: request.{k} must be {{{', '.join(fields)}}} strings, got {v!r}")
    op = req.get("operation")
    if op not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise Invalid(f"{where}: request.operation {op!r} is not CREATE, UPDATE, DELETE or CONNECT")
    user = req.get("userInfo")
    if not isinstance(user, dict) or not isinstance(user.get("username"), str):
        raise Invalid(f"{where}: request.userInfo.username missing")
    if not isinstance(req.get("dryRun", False), bool):
        raise Invalid(f"{where}: request.dryRun must be a boolean")
    obj, old = req.get("object"), req.get("oldObject")
    if op in ("CREATE", "UPDATE") and not obj:
        raise Invalid(f"{where}: {op} without request.object")
    if op == "DELETE" and obj:
        raise Invalid(f"{where}: DELETE carries request.object (it is null for DELETE)")
    if op in ("UPDATE", "DELETE") and not old:
        raise Invalid(f"{where}: {op} without request.oldObject")
    if op in ("CREATE", "CONNECT") and old is not None:
        raise Invalid(f"{where}: {op} carries request.oldObject (it is null for CREATE and CONNECT)")
    opts = req.get("options")
    if op in OPTIONS:
        if not isinstance(opts, dict) or opts.get("apiVersion") != "meta.k8s.io/v1" or opts.get("kind") != OPTIONS[op]:
            raise Invalid(f"{where}: request.options must be meta.k8s.io/v1 {OPTIONS[op]} for {op}, got {opts!r}")
        if req.get("dryRun") and opts.get("dryRun") != ["All"]:
            raise Invalid(f"{where}: request.dryRun is true but options.dryRun is {opts.get('dryRun')!r}")
    carried = [o for o in (obj, old) if o]
    for o in carried:
        if not isinstance(o, dict):
            raise Invalid(f"{where}: request.object / oldObject is not an object")
        group, _, version = o.get("apiVersion", "").rpartition("/")
        gvk = {"group": group, "version": version, "kind": o.get("kind")}
        if req["kind"] != gvk and not req.get("subResource"):
            raise Invalid(f"{where}: request.kind {req['kind']} but the object is {gvk}")
        resource = RESOURCES.get((group, o.get("kind")))
        if resource and req["resource"] != {"group": group, "version": version, "resource": resource}:
            raise Invalid(f"{where}: request.resource {req['resource']} does not name {resource}")
        meta = o.get("metadata", {})
        if req.get("name", "") != meta.get("name", ""):
            raise Invalid(f"{where}: request.name {req.get('name')!r} but the object is named {meta.get('name')!r}")
        if req.get("namespace") != meta.get("namespace"):
            raise Invalid(f"{where}: request.namespace {req.get('namespace')!r} but the object's is {meta.get('namespace')!r}")
    if op == "UPDATE" and old.get("metadata", {}).get("uid") != obj.get("metadata", {}).get("uid"):
        raise Invalid(f"{where}: UPDATE of an object whose uid changed")
    return [("request.object", obj), ("request.oldObject", old)]


def check_document(doc, where):
    """Returns the descriptions of the objects validated."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        raise Invalid(f"{where}: not a Kubernetes object (no apiVersion/kind)")
    if doc["kind"] == "AdmissionReview":
        done = []
        for label, o in check_admission_review(doc, where):
            if o:
                done.append(f"AdmissionReview {doc['request']['operation']} {label}: " + validate_object(o, f"{where}: {label}"))
        return done
    return [validate_object(doc, where)]


def load(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return [json.loads(text)]
    return [d for d in yaml.safe_load_all(text) if d is not None]


def pointer(doc, ptr):
    """(parent, key) for an RFC 6901 pointer; missing objects on the way are made."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in ptr.split("/")[1:]]
    if not parts:
        raise SystemExit(f"validate_core.py: bad pointer {ptr!r}")
    node = doc
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    last = parts[-1]
    return node, int(last) if isinstance(node, list) else last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect-rejected", metavar="TEXT")
    ap.add_argument("--set", action="append", default=[], metavar="POINTER=JSON")
    ap.add_argument("--delete", action="append", default=[], metavar="POINTER")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    if args.expect_rejected is not None:
        if len(args.files) != 1:
            ap.error("--expect-rejected takes one file")
        docs = load(args.files[0])
        if len(docs) != 1:
            ap.error("--expect-rejected takes a file of one document")
        doc = copy.deepcopy(docs[0])
        for s in args.set:
            ptr, _, value = s.partition("=")
            parent, key = pointer(doc, ptr)
            parent[key] = json.loads(value)
        for ptr in args.delete:
            parent, key = pointer(doc, ptr)
            del parent[key]
        try:
            check_document(doc, args.files[0])
        except Invalid as e:
            if args.expect_rejected not in str(e):
                print(f"rejected, but not for the expected reason ({args.expect_rejected!r}): {e}", file=sys.stderr)
                sys.exit(1)
            print(f"rejected as expected: {e}")
            return
        print(f"{args.files[0]} with {args.set + args.delete} was ACCEPTED, but should have been rejected", file=sys.stderr)
        sys.exit(1)

    failures, count = [], 0
    for path in args.files:
        try:
            docs = load(path)
        except (yaml.YAMLError, json.JSONDecodeError, OSError) as e:
            failures.append(f"{path}: cannot read: {e}")
            continue
        if not docs:
            failures.append(f"{path}: no documents")
        for i, doc in enumerate(docs):
            where = path if len(docs) == 1 else f"{path} (document {i + 1})"
            try:
                for d in check_document(doc, where):
                    count += 1
                    print(f"ok {where}: {d}")
            except Invalid as e:
                failures.append(str(e))
    for f in failures:
        print(f"INVALID {f}", file=sys.stderr)
    print(f"validated {count} objects in {len(args.files)} files (kubernetes-validate "
          f"{kubernetes_validate.__version__}, Kubernetes {K8S_VERSION}, strict)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
