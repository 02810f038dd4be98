#!/usr/bin/env python3
"""Generate a synthetic GitOps (Kubernetes manifests) repository for benchmarking
`metricops trace`.

The whole history is produced as one `git fast-import` stream written by this
script to the stdin of a single `git fast-import` process (no per-commit git
invocations), then packed with `git repack -a -d`.

Output:
  DIR/                        a bare repository, branch `main`
  DIR/metricops-bench.json    the benchmark questions (see README.md); git ignores
                              unknown files in a bare repository's directory

Determinism: the same --seed/--commits/--workloads always yields the same commit
ids (fixed author/committer identities and dates: START_EPOCH + i*60s for the
i-th first-parent commit; only `random.Random(seed).random()` is used, whose
sequence is stable across Python 3 versions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import random

FORMAT_VERSION = 1  # bump when the generated history changes for a given seed
START_EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z
REGISTRY = "registry.example.com/team"
MERGE_EVERY = 200  # every 200th first-parent commit is a merge
UNRELATED_RATE = 0.05
CHANGELOG_KEEP = 60  # the changelog keeps its newest entries only (bounded size)
N_CONFIGMAPS = 20

BOT = ("deploy-bot", "deploy-bot@example.com")
HUMANS = [
    ("Alice Martin", "alice@example.com"),
    ("Bob Nguyen", "bob@example.com"),
    ("Chandra Rao", "chandra@example.com"),
    ("Dana Okafor", "dana@example.com"),
    ("Eve Lindqvist", "eve@example.com"),
]

PREFIXES = [
    "payments", "checkout", "catalog", "search", "auth", "billing", "inventory",
    "shipping", "notifications", "profile", "cart", "orders", "pricing", "ledger",
    "gateway", "reports", "media", "recommendations", "fraud", "loyalty", "reviews",
    "accounts", "identity", "analytics", "events", "invoices", "quotes", "tax",
    "warehouse", "returns", "subscriptions", "coupons", "messaging", "geo", "audit",
]
SUFFIXES = [
    "api", "svc", "frontend", "backend", "sync", "scheduler", "indexer", "proxy",
    "exporter", "consumer", "publisher", "cache", "admin", "web",
]


class Rng:
    """Only uses random.random() so the stream is stable across Python versions."""

    def __init__(self, seed: int):
        self._r = random.Random(seed)

    def random(self) -> float:
        return self._r.random()

    def below(self, n: int) -> int:
        return min(int(self._r.random() * n), n - 1)

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def shuffle(self, lst: list) -> None:
        for i in range(len(lst) - 1, 0, -1):
            j = self.below(i + 1)
            lst[i], lst[j] = lst[j], lst[i]


# --------------------------------------------------------------------------- files

def deployment_yaml(svc: str, idx: int) -> str:
    port = 8080 + (idx % 10)
    cpu = 100 + 50 * (idx % 7)
    mem = 128 * (1 + idx % 4)
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {svc}
  labels:
    app.kubernetes.io/name: {svc}
    app.kubernetes.io/part-of: shop
spec:
  replicas: 2
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: {svc}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {svc}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9090"
    spec:
      serviceAccountName: {svc}
      containers:
        - name: {svc}
          image: {REGISTRY}/{svc}:1.0.0
          imagePullPolicy: IfNotPresent
          ports:
            - name: http
              containerPort: {port}
            - name: metrics
              containerPort: 9090
          env:
            - name: LOG_LEVEL
              value: info
          resources:
            requests:
              cpu: {cpu}m
              memory: {mem}Mi
            limits:
              cpu: {cpu * 4}m
              memory: {mem * 2}Mi
          readinessProbe:
            httpGet:
              path: /healthz/ready
              port: http
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /healthz/live
              port: http
            initialDelaySeconds: 10
            periodSeconds: 10
"""


def kustomization_yaml(svc: str, env: str, version: str) -> str:
    replicas = 3 if env == "prod" else 1
    return f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {svc}-{env}
resources:
  - ../../base
labels:
  - pairs:
      env: {env}
replicas:
  - name: {svc}
    count: {replicas}
images:
  - name: {REGISTRY}/{svc}
    newTag: "{version}"
"""


def values_yaml(svc: str, idx: int, version: str, worker_version: str | None) -> str:
    out = f"""# Helm values for {svc} (chart: shop/microservice)
replicaCount: {2 + idx % 3}
image:
  repository: {REGISTRY}/{svc}
  tag: "{version}"
  pullPolicy: IfNotPresent
imagePullSecrets: []
serviceAccount:
  create: true
  name: {svc}
podAnnotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: "9090"
service:
  type: ClusterIP
  port: {8080 + idx % 10}
ingress:
  enabled: false
resources:
  requests:
    cpu: {100 + 50 * (idx % 5)}m
    memory: {128 * (1 + idx % 3)}Mi
  limits:
    cpu: {400 + 200 * (idx % 5)}m
    memory: {256 * (1 + idx % 3)}Mi
autoscaling:
  enabled: true
  minReplicas: 2
  maxReplicas: {6 + idx % 10}
  targetCPUUtilizationPercentage: 75
nodeSelector: {{}}
tolerations: []
"""
    if worker_version is not None:
        out += f"""worker:
  image:
    repository: {REGISTRY}/{svc}-worker
    tag: "{worker_version}"
  replicaCount: 1
  concurrency: 8
"""
    return out


def configmap_yaml(name: str, rev: int, level: str) -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: platform
data:
  LOG_LEVEL: {level}
  FEATURE_FLAGS_REVISION: "{rev}"
  RATE_LIMIT_RPS: "{100 + (rev * 7) % 900}"
"""


def changelog_md(entries: list[str]) -> str:
    return "# Changelog\n\nNewest first; older entries are archived.\n\n" + "".join(
        f"- {e}\n" for e in reversed(entries)
    )


def vstr(v: tuple[int, int, int]) -> str:
    return f"{v[0]}.{v[1]}.{v[2]}"


# --------------------------------------------------------------------------- generator

class Workload:
    __slots__ = ("idx", "name", "kind", "versions", "has_worker")

    def __init__(self, idx, name, kind, has_worker=False):
        self.idx = idx
        self.name = name
        self.kind = kind  # "kustomize" | "helm"
        self.versions: dict[str, tuple[int, int, int]] = {}
        self.has_worker = has_worker

    def path(self, target: str) -> str:
        if self.kind == "kustomize":
            return f"apps/{self.name}/overlays/{target}/kustomization.yaml"
        return f"helm/{self.name}/values.yaml"

    def content(self, target: str) -> str:
        if self.kind == "kustomize":
            return kustomization_yaml(self.name, target, vstr(self.versions[target]))
        return values_yaml(
            self.name,
            self.idx,
            vstr(self.versions["app"]),
            vstr(self.versions["worker"]) if self.has_worker else None,
        )

    def image(self, target: str) -> str:
        if target == "worker":
            return f"{REGISTRY}/{self.name}-worker"
        return f"{REGISTRY}/{self.name}"


class Generator:
    def __init__(self, commits: int, workloads: int, seed: int, out):
        self.n = commits
        self.rng = Rng(seed)
        self.out = out  # binary writer
        self.buf: list[bytes] = []
        self.buflen = 0
        self.next_mark = 1
        self.pr = 1000
        self.run_id = 500000
        self.changelog: list[str] = []
        self.cm_rev = [0] * N_CONFIGMAPS

        names = self._names(workloads)
        self.workloads: list[Workload] = []
        n_kust = (workloads + 1) // 2
        helm_seen = 0
        for i, name in enumerate(names):
            if i < n_kust:
                w = Workload(i, name, "kustomize")
                base = self._initial_version()
                w.versions["prod"] = base
                w.versions["staging"] = self._bump(base) if self.rng.random() < 0.3 else base
            else:
                w = Workload(i, name, "helm", has_worker=(helm_seen % 5 == 4))
                helm_seen += 1
                w.versions["app"] = self._initial_version()
                if w.has_worker:
                    w.versions["worker"] = self._initial_version()
            self.workloads.append(w)

        kust = [w for w in self.workloads if w.kind == "kustomize"]
        self.old = kust[self.rng.below(len(kust))]
        while True:
            self.recent = kust[self.rng.below(len(kust))]
            if self.recent is not self.old:
                break
        self.pool = [w for w in self.workloads if w is not self.old and w is not self.recent]
        # Skewed deploy frequency: a few hot services, a long tail of quiet ones.
        weights = [1.0 / (1 + r) ** 0.7 for r in range(len(self.pool))]
        self.rng.shuffle(self.pool)
        total = sum(weights)
        acc = 0.0
        self.cum = []
        for wt in weights:
            acc += wt / total
            self.cum.append(acc)

        # Designated (non-random) commits for the two benchmark workloads.
        self.designated: dict[int, tuple[Workload, str, tuple[int, int, int]]] = {}
        old_v = (3, 1 + self.rng.below(20), self.rng.below(40))
        i_old = self._free_index(max(2, self.n // 100))
        self.designated[self._free_index(i_old - 1, back=True)] = (self.old, "staging", old_v)
        self.designated[i_old] = (self.old, "prod", old_v)
        self.i_old = i_old
        self.old_version = old_v

        v = self.recent.versions["prod"]
        for k in range(1, 10):
            v = self._bump(v)
            i = self._free_index(k * self.n // 10)
            self.designated[i] = (self.recent, "prod", v)
        v = self._bump(v, minor=True)
        i_recent = self._free_index(self.n - 1 - (3 + self.rng.below(12)), back=True)
        assert self.n - i_recent <= 20, "recent commit must be within the last 20"
        self.designated[i_recent] = (self.recent, "prod", v)
        self.i_recent = i_recent
        self.recent_version = v

        self.marks: dict[str, int] = {}

    # -- helpers
    def _names(self, n: int) -> list[str]:
        combos = [f"{p}-{s}" for p in PREFIXES for s in SUFFIXES]
        self.rng.shuffle(combos)
        names = []
        k = 1
        while len(names) < n:
            for c in combos:
                names.append(c if k == 1 else f"{c}-{k}")
                if len(names) == n:
                    break
            k += 1
        return names

    def _free_index(self, i: int, back: bool = False) -> int:
        step = -1 if back else 1
        while i <= 0 or i >= self.n or i % MERGE_EVERY == 0 or i in getattr(self, "designated", {}):
            i += step
            if i <= 0:
                back, step, i = False, 1, 1
        return i

    def _initial_version(self):
        return (1, self.rng.below(10), self.rng.below(20))

    def _bump(self, v, minor=False):
        r = self.rng.random()
        if not minor and r < 0.895:
            return (v[0], v[1], v[2] + 1)
        if minor or r < 0.995:
            return (v[0], v[1] + 1, 0)
        return (v[0] + 1, 0, 0)

    def _pick_workload(self) -> Workload:
        r = self.rng.random()
        lo, hi = 0, len(self.cum) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cum[mid] < r:
                lo = mid + 1
            else:
                hi = mid
        return self.pool[lo]

    def _emit(self, s: str) -> None:
        b = s.encode()
        self.buf.append(b)
        self.buflen += len(b)
        if self.buflen > 1 << 20:
            self.flush()

    def flush(self) -> None:
        self.out.write(b"".join(self.buf))
        self.buf.clear()
        self.buflen = 0

    def _commit(self, ref, when, who, msg, changes, from_mark=None, merge_mark=None) -> int:
        mark = self.next_mark
        self.next_mark += 1
        name, email = who
        msgb = msg.encode()
        parts = [
            f"commit {ref}\nmark :{mark}\n",
            f"author {name} <{email}> {when} +0000\n",
            f"committer {name} <{email}> {when} +0000\n",
            f"data {len(msgb)}\n{msg}\n",
        ]
        if from_mark is not None:
            parts.append(f"from :{from_mark}\n")
        if merge_mark is not None:
            parts.append(f"merge :{merge_mark}\n")
        for path, content in changes:
            parts.append(f"M 100644 inline {path}\ndata {len(content.encode())}\n{content}\n")
        parts.append("\n")
        self._emit("".join(parts))
        return mark

    # -- change makers: each returns (changes, subject, author)
    def _deploy(self, w: Workload, target: str | None = None, version=None):
        if target is None:
            if w.kind == "kustomize":
                target = "staging" if self.rng.random() < 0.55 else "prod"
            else:
                target = "worker" if (w.has_worker and self.rng.random() < 0.3) else "app"
        if version is None:
            cur = w.versions[target]
            if target == "prod" and w.versions["staging"] > cur:
                version = w.versions["staging"]  # promote what staging runs
            else:
                version = self._bump(cur)
        w.versions[target] = version
        env = target if w.kind == "kustomize" else "prod"
        comp = f"{w.name}-worker" if target == "worker" else w.name
        self.run_id += 1 + self.rng.below(5)
        subject = f"deploy {comp} {vstr(version)} to {env}"
        msg = f"{subject}\n\nImage: {w.image(target)}:{vstr(version)}\nPipeline-Run: {self.run_id}\n"
        author = BOT if self.rng.random() < 0.9 else self.rng.pick(HUMANS)
        return [(w.path("prod" if w.kind == "helm" else target), w.content(target))], msg, author

    def _unrelated(self, i: int):
        author = self.rng.pick(HUMANS)
        if self.rng.random() < 0.5:
            self.changelog.append(f"{i}: {self.rng.pick(PREFIXES)}: routine maintenance #{i}")
            del self.changelog[:-CHANGELOG_KEEP]
            return [("docs/CHANGELOG.md", changelog_md(self.changelog))], "docs: update changelog\n", author
        c = self.rng.below(N_CONFIGMAPS)
        self.cm_rev[c] += 1
        name = f"{PREFIXES[c]}-settings"
        level = self.rng.pick(["info", "info", "debug", "warn"])
        return (
            [(f"platform/configmaps/{name}.yaml", configmap_yaml(name, self.cm_rev[c], level))],
            f"platform: tune {name} (rev {self.cm_rev[c]})\n",
            author,
        )

    def _initial_tree(self):
        ch = []
        for w in self.workloads:
            if w.kind == "kustomize":
                ch.append((f"apps/{w.name}/base/deployment.yaml", deployment_yaml(w.name, w.idx)))
                ch.append((f"apps/{w.name}/base/kustomization.yaml",
                           "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\n"))
                for env in ("staging", "prod"):
                    ch.append((w.path(env), w.content(env)))
            else:
                ch.append((w.path("prod"), w.content("app")))
        for c in range(N_CONFIGMAPS):
            name = f"{PREFIXES[c]}-settings"
            ch.append((f"platform/configmaps/{name}.yaml", configmap_yaml(name, 0, "info")))
        self.changelog.append("0: initial import")
        ch.append(("docs/CHANGELOG.md", changelog_md(self.changelog)))
        ch.append(("README.md", "# shop manifests\n\nGitOps source of truth for the shop clusters.\n"
                                "`apps/` are kustomize apps, `helm/` are Helm values.\n"))
        return ch

    # -- main loop
    def run(self, progress=True) -> None:
        self._emit("feature done\n")
        main_mark = None
        t0 = time.time()
        for i in range(self.n):
            when = START_EPOCH + i * 60
            if i == 0:
                main_mark = self._commit("refs/heads/main", when, HUMANS[0],
                                         "Initial import of shop manifests\n", self._initial_tree())
            elif i % MERGE_EVERY == 0:
                # 2-commit side branch forked from the current main tip, then merged.
                side_changes: dict[str, str] = {}
                side = None
                w = self._pick_workload()
                subjects = []
                for k in range(2):
                    if k == 1 and self.rng.random() < 0.5:
                        w = self._pick_workload()
                    ch, msg, author = self._deploy(w)
                    side = self._commit("refs/heads/_side", when - 40 + 20 * k, author, msg, ch,
                                        from_mark=main_mark if k == 0 else None)
                    subjects.append(msg.splitlines()[0])
                    side_changes.update(ch)
                self.pr += 1 + self.rng.below(3)
                msg = (f"Merge pull request #{self.pr} from team/release-train-{i // MERGE_EVERY}\n\n"
                       + "".join(f"* {s}\n" for s in subjects))
                main_mark = self._commit("refs/heads/main", when, HUMANS[self.rng.below(len(HUMANS))],
                                         msg, sorted(side_changes.items()), merge_mark=side)
            else:
                if i in self.designated:
                    w, target, version = self.designated[i]
                    ch, msg, author = self._deploy(w, target, version)
                    author = BOT
                elif self.rng.random() < UNRELATED_RATE:
                    ch, msg, author = self._unrelated(i)
                else:
                    ch, msg, author = self._deploy(self._pick_workload())
                main_mark = self._commit("refs/heads/main", when, author, msg, ch)
            if i == self.i_old:
                self.marks["old"] = main_mark
            if i == self.i_recent:
                self.marks["recent"] = main_mark
            if progress and i and i % 10000 == 0:
                print(f"  {i}/{self.n} first-parent commits streamed ({time.time() - t0:.1f}s)",
                      file=sys.stderr, flush=True)
        self.marks["head"] = main_mark
        self._emit("done\n")
        self.flush()


# --------------------------------------------------------------------------- driver

def git(*args, cwd=None, capture=False):
    r = subprocess.run(["git", *args], cwd=cwd, check=True, text=True,
                       stdout=subprocess.PIPE if capture else None)
    return r.stdout.strip() if capture else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="bare repository to create")
    ap.add_argument("--commits", type=int, default=100000, help="first-parent commits (default 100000)")
    ap.add_argument("--workloads", type=int, default=1000, help="workloads (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists and is non-empty")
    ap.add_argument("--repack-depth", type=int, default=50)
    ap.add_argument("--repack-window", type=int, default=50)
    args = ap.parse_args()
    if args.commits < 100:
        ap.error("--commits must be >= 100")
    if args.workloads < 4:
        ap.error("--workloads must be >= 4")

    out = os.path.abspath(args.out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        if not args.force:
            print(f"gen_repo: {out} exists and is not empty (use --force to replace it)", file=sys.stderr)
            return 2
        if out in ("/", os.path.expanduser("~")) or not os.path.isdir(out):
            print(f"gen_repo: refusing to remove {out}", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)

    t_start = time.time()
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", out], check=True, env=env)
    marks_file = os.path.join(out, "fast-import.marks")
    print(f"gen_repo: {args.commits} first-parent commits, {args.workloads} workloads, seed {args.seed} -> {out}",
          file=sys.stderr, flush=True)
    fi = subprocess.Popen(
        ["git", "-C", out, "fast-import", "--quiet", f"--export-marks={marks_file}"],
        stdin=subprocess.PIPE,
    )
    gen = Generator(args.commits, args.workloads, args.seed, fi.stdin)
    try:
        gen.run()
        fi.stdin.close()
    except BrokenPipeError:
        pass
    if fi.wait() != 0:
        print("gen_repo: git fast-import failed", file=sys.stderr)
        return 1
    t_import = time.time()

    shas = {}
    with open(marks_file) as f:
        for line in f:
            m, sha = line.split()
            shas[int(m[1:])] = sha
    os.remove(marks_file)
    git("-C", out, "update-ref", "-d", "refs/heads/_side")
    head = git("-C", out, "rev-parse", "refs/heads/main", capture=True)
    assert head == shas[gen.marks["head"]], (head, shas[gen.marks["head"]])

    print(f"gen_repo: fast-import done in {t_import - t_start:.1f}s; repacking "
          f"(depth {args.repack_depth}, window {args.repack_window})", file=sys.stderr, flush=True)
    git("-C", out, "repack", "-a", "-d", "-f", "-q",
        f"--depth={args.repack_depth}", f"--window={args.repack_window}")
    t_end = time.time()

    def question(w: Workload, version, i, mark):
        return {
            "workload": w.name,
            "image": w.image("prod"),
            "path": w.path("prod"),
            "version": vstr(version),
            "expected_commit": shas[gen.marks[mark]],
            "first_parent_index": i,
            "commits_after": args.commits - 1 - i,
        }

    info = {
        "format": FORMAT_VERSION,
        "params": {"commits": args.commits, "workloads": args.workloads, "seed": args.seed},
        "head": head,
        "generation_seconds": round(t_end - t_start, 2),
        "questions": {
            "old": question(gen.old, gen.old_version, gen.i_old, "old"),
            "recent": question(gen.recent, gen.recent_version, gen.i_recent, "recent"),
        },
    }
    with open(os.path.join(out, "metricops-bench.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")

    size = 0
    for root, _dirs, files in os.walk(out):
        for fn in files:
            size += os.path.getsize(os.path.join(root, fn))
    print(f"gen_repo: done in {t_end - t_start:.1f}s (fast-import {t_import - t_start:.1f}s, "
          f"repack {t_end - t_import:.1f}s); repo size {size / 1e6:.1f} MB; HEAD {head}", file=sys.stderr)
    print(f"gen_repo: questions in {os.path.join(out, 'metricops-bench.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
