#!/usr/bin/env python3
"""Benchmark the rollback history on the 100k-commit repository (tests/bench/gen_repo.py):
`metricops history` (full walk, --since, --limit) and serve's GET /api/history and /ui (the first
request, which walks the branch, and the ones after it, which read only what is new).

The base repository is copied (`git clone --bare`) and given REVERTS metricops revert commits at its
tip, each with a kept decision as a git note on its culprit, and as many ignore decisions as notes
on older bumps (one `git fast-import` stream). Usage: bash tests/bench/history.sh (builds first).

Environment: METRICOPS_BIN (default target/release/metricops), REVERTS (500), RUNS (5),
REQUESTS (20).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("METRICOPS_BIN", os.path.join(ROOT, "target/release/metricops"))
BASE = os.path.join(ROOT, "target/bench/manifests.git")
REPO = os.path.join(ROOT, "target/bench/history.git")
REVERTS = int(os.environ.get("REVERTS", "500"))
RUNS = int(os.environ.get("RUNS", "5"))
REQUESTS = int(os.environ.get("REQUESTS", "20"))


def git(*args: str, cwd: str = REPO, input: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, input=input, check=True, capture_output=True).stdout.decode().strip()


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def seed() -> None:
    shutil.rmtree(REPO, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--bare", BASE, REPO], check=True)
    culprits = git("rev-list", "--first-parent", "-n", str(2 * REVERTS), "main").split()
    tip = culprits[0]
    now = int(time.time())
    out = []
    notes = []
    for i in range(REVERTS):
        culprit = culprits[2 * i + 1]
        ts = now - (REVERTS - i) * 60
        w = f"team/svc{i % 50:03d}"
        inc = f"{w}@{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(ts - 300))}"
        msg = (
            f'Revert "deploy svc{i % 50:03d} 1.{i}.0 to prod"\n\nThis reverts commit {culprit}.\n\n'
            f"Metricops-Culprit: {culprit}\nMetricops-Mode: surgical\nMetricops-Workload: {w}\n"
            f"Metricops-Incident: {inc}\nMetricops-Alert: Errors (critical)\nMetricops-Versions: 1.{i}.0 -> 1.{i - 1}.0\n"
        ).encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"mark :{i + 1}\ncommitter metricops <metricops@localhost> {ts} +0000\n".encode())
        out.append(f"data {len(msg)}\n".encode() + msg + b"\n")
        if i == 0:
            out.append(f"from {tip}\n".encode())
        decision = {
            "kind": "decision", "at": iso(ts - 5), "incident": inc, "workload": w,
            "repo": "https://git.example/team/manifests.git", "branch": "main",
            "alerts": [{"name": "Errors", "severity": "critical", "count": 3, "starts_at": iso(ts - 300)}],
            "culprit": {"sha": culprit, "subject": f"deploy svc{i % 50:03d} 1.{i}.0 to prod", "author": "deploy-bot <deploy-bot@example.com>", "time": iso(ts - 900)},
            "from": f"1.{i}.0", "to": f"1.{i - 1}.0", "decision": "merge",
            "reason": "policy says merge: the revert lands on the branch at once", "delivery": "merged",
        }
        ignore = dict(decision, incident=inc + "-again", decision="ignore", reason_label="cooldown",
                      reason="a revert of this workload landed less than 1h ago", delivery=None,
                      at=iso(ts + 30))
        ignore.pop("delivery")
        notes.append((culprit, json.dumps(decision) + "\n" + json.dumps(ignore) + "\n"))
    out.append(b"commit refs/notes/metricops\n")
    out.append(f"committer metricops <metricops@localhost> {now} +0000\ndata 0\n".encode())
    for on, text in notes:
        b = text.encode()
        out.append(f"N inline {on}\ndata {len(b)}\n".encode() + b + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=REPO, input=b"".join(out), check=True)


def timed(args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t, r.stdout.decode()


def runs(args: list[str]) -> tuple[float, float, str]:
    timed(args)  # warm the page cache
    ts = []
    out = ""
    for _ in range(RUNS):
        t, out = timed(args)
        ts.append(t)
    return statistics.median(ts), max(ts), out


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t, body


def main() -> None:
    if not os.path.exists(os.path.join(BASE, "metricops-bench.json")):
        sys.exit(f"{BASE} is missing: run python3 tests/bench/gen_repo.py --out {BASE} (or bash tests/bench/run.sh) first")
    seed()
    commits = int(git("rev-list", "--first-parent", "--count", "main"))
    lines = [f"repository: {commits} first-parent commits, {REVERTS} metricops reverts at the tip, {2 * REVERTS} decisions in notes", ""]
    lines.append("| command | median | max | rows |")
    lines.append("|---|---|---|---|")
    for label, extra in [("history --json (whole history)", ["--json"]),
                         ("history --since 30d --json", ["--since", "30d", "--json"]),
                         ("history --limit 50 (text)", ["--limit", "50"])]:
        med, mx, out = runs([BIN, "history", "--repo", REPO, *extra])
        n = json.loads(out)["total"] if "--json" in extra else out.count("\n  times ")
        if "--json" in extra and n != 2 * REVERTS:
            sys.exit(f"history found {n} rows, expected {2 * REVERTS}")
        lines.append(f"| `metricops {label}` | {med * 1000:.0f} ms | {mx * 1000:.0f} ms | {n} |")
    # serve, reading a mirror of it as its own.
    state = tempfile.mkdtemp(prefix="metricops-history-bench-")
    try:
        mirror = os.path.join(state, "mirrors", "shop.git")
        subprocess.run(["git", "clone", "-q", "--bare", REPO, mirror], check=True)
        git("update-ref", "refs/remotes/origin/main", "refs/heads/main", cwd=mirror)
        git("fetch", "-q", REPO, "+refs/notes/*:refs/notes/*", cwd=mirror)
        cfg = os.path.join(state, "metricops.yaml")
        with open(cfg, "w") as f:
            f.write(f"repos:\n- name: shop\n  url: {REPO}\nworkloads:\n- name: team/svc000\n  repo: shop\n  paths: [apps]\n  image: registry.example.com/team/svc000\nstate_dir: {state}\ncluster: {{enabled: false}}\n")
        port = free_port()
        serve = subprocess.Popen([BIN, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            first, body = get(base + "/api/history?limit=50")
            page = json.loads(body)
            if page["total"] != 2 * REVERTS or len(page["rows"]) != 50:
                sys.exit(f"/api/history: total {page['total']}, {len(page['rows'])} rows")
            warm = [get(base + "/api/history?limit=50")[0] for _ in range(REQUESTS)]
            nxt = [get(base + page["next_url"])[0] for _ in range(REQUESTS)]
            ui = [get(base + "/ui?limit=50")[0] for _ in range(REQUESTS)]
            rss = 0
            with open(f"/proc/{serve.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        rss = int(line.split()[1]) // 1024
            lines += ["", "| serve | first request (walks the branch) | median after | max after |", "|---|---|---|---|"]
            lines.append(f"| `GET /api/history?limit=50` | {first * 1000:.0f} ms | {statistics.median(warm) * 1000:.1f} ms | {max(warm) * 1000:.1f} ms |")
            lines.append(f"| `GET /api/history` next page | – | {statistics.median(nxt) * 1000:.1f} ms | {max(nxt) * 1000:.1f} ms |")
            lines.append(f"| `GET /ui?limit=50` | – | {statistics.median(ui) * 1000:.1f} ms | {max(ui) * 1000:.1f} ms |")
            lines += ["", f"serve's peak RSS after these requests: {rss} MB"]
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(ROOT, "target/bench/history-summary.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
