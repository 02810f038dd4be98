#!/usr/bin/env python3
"""Validates objects against a CRD's own openAPIV3Schema (tests/schemas/crds/*.yaml), strictly,
for tests/kube_fixtures.rs: kinds no npm model package covers (argocd-image-updater's ImageUpdater).

The schema is the CRD YAML as its project publishes it. Checked with jsonschema (Draft 7, which the
structural schemas of apiextensions.k8s.io/v1 fit), made strict like the API server's strict field
validation: an object whose schema lists `properties` and neither `additionalProperties` nor
`x-kubernetes-preserve-unknown-fields` refuses any other field. Not checked: CEL rules
(`x-kubernetes-validations`), which need the API server's CEL environment.

  validate_crd_yaml.py FILE...                    each document must be valid
  validate_crd_yaml.py --expect-rejected TEXT [--set POINTER=JSON]... [--delete POINTER]... FILE
      FILE's one document, changed as told (RFC 6901 pointers), must be rejected with a message
      containing TEXT (the negative check)

Prints one line per object and a closing "validated N objects in M files"; exits 1 on any
failure, 2 when a package is missing.
"""
import glob
import json
import os
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:  # kubernetes-validate brings both
    print(f"validate_crd_yaml.py: {e}; install them with `python3 -m pip install kubernetes-validate==1.37.0`",
          file=sys.stderr)
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))


def strict(schema):
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-validations")}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def schemas():
    found = {}
    for path in sorted(glob.glob(os.path.join(HERE, "crds", "*.yaml"))):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd:
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for v in crd["spec"]["versions"]:
                    schema = strict(v["schema"]["openAPIV3Schema"])
                    # apiVersion, kind and metadata are the API server's; metadata is ObjectMeta.
                    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                    found[(f"{group}/{v['name']}", kind)] = schema
    return found


def unescape(token):
    return token.replace("~1", "/").replace("~0", "~")


def change(doc, pointer, value=None, delete=False):
    parts = [unescape(p) for p in pointer.lstrip("/").split("/")]
    node = doc
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    last = parts[-1]
    if isinstance(node, list):
        i = len(node) if last == "-" else int(last)
        if delete:
            del node[i]
        elif i == len(node):
            node.append(value)
        else:
            node[i] = value
    elif delete:
        del node[last]
    else:
        node[last] = value


def problems(doc, known):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in known:
        return [f"no CRD schema for {key[0]} {key[1]} under tests/schemas/crds"]
    validator = jsonschema.Draft7Validator(known[key])
    return sorted(
        f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)
    )


def main(argv):
    expect, sets, deletes, files = None, [], [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--expect-rejected":
            expect = argv[i + 1]
            i += 2
        elif a == "--set":
            ptr, _, val = argv[i + 1].partition("=")
            sets.append((ptr, json.loads(val)))
            i += 2
        elif a == "--delete":
            deletes.append(argv[i + 1])
            i += 2
        else:
            files.append(a)
            i += 1
    known = schemas()
    failed, count = False, 0
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            count += 1
            for ptr, val in sets:
                change(doc, ptr, val)
            for ptr in deletes:
                change(doc, ptr, delete=True)
            found = problems(doc, known)
            name = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            if expect is not None:
                if any(expect in p for p in found):
                    print(f"ok {path}: {name} rejected as expected: {'; '.join(found)}")
                else:
                    failed = True
                    print(f"FAIL {path}: {name} not rejected with {expect!r}: {found or 'accepted'}")
            elif found:
                failed = True
                print(f"FAIL {path}: {name}: {'; '.join(found)}")
            else:
                print(f"ok {path}: {name}")
    print(f"validated {count} objects in {len(files)} files")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
