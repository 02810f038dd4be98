#!/usr/bin/env python3
"""Alert storm: 10,000 alert deliveries over 100 workloads into a real `metricops serve`, with wrk.

Usage: python3 tests/bench/storm.py [--bin target/release/metricops] [--requests 10000] [--workloads 100]
       [--concurrency 4] [--tmp /dev/shm] [--pin]

Builds a bare manifests repository with WORKLOADS workloads, each deployed at 1.0.0 two hours ago
and bumped to 1.1.0 (its culprit) an hour ago; starts `serve` (plain git forge, policy propose, no
caps, bearer auth) on loopback; fires REQUESTS generic-webhook deliveries round-robin over the
workloads with wrk (2 threads, 50 connections; Debian's `wrk`, installed with apt-get when
missing); then waits until every workload's revert branch is on the remote. Prints the ack p50/p99,
the statuses (503 = queue full: senders retry), the number of revert branches (exactly one per
culprit expected), the time until all exist, and the peak RSS.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from serving import free_port, histogram_percentiles, rss_mb, status

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def git(*args, cwd=None, env=None):
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/metricops"))
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--workloads", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4, help="server.concurrency")
    ap.add_argument("--tmp", default=None,
                    help="where the repositories and state_dir go (e.g. /dev/shm: the journal on tmpfs)")
    ap.add_argument("--pin", action="store_true",
                    help="the server on CPU 1 and wrk on CPU 0 (taskset), to keep them off each other")
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} does not exist: run `cargo build --release` first, or pass --bin")
    if not shutil.which("wrk"):
        print("installing wrk (apt-get install -y wrk)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp(prefix="metricops-storm-", dir=a.tmp)
    server_cpu, client_cpu = (["taskset", "-c", "1"], ["taskset", "-c", "0"]) if a.pin else ([], [])
    work, bare = os.path.join(tmp, "work"), os.path.join(tmp, "m.git")
    git("init", "-q", "-b", "main", work)
    now = int(time.time())
    deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: w{i}\n  namespace: storm\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: ghcr.io/storm/w{i}:{v}\n"

    def commit(msg, when):
        env = dict(os.environ, GIT_AUTHOR_DATE=f"{when} +0000", GIT_COMMITTER_DATE=f"{when} +0000",
                   GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@storm.test",
                   GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@storm.test")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", msg, cwd=work, env=env)

    for i in range(a.workloads):
        os.makedirs(os.path.join(work, f"apps/w{i}"))
        with open(os.path.join(work, f"apps/w{i}/deployment.yaml"), "w") as f:
            f.write(deploy.format(i=i, v="1.0.0"))
    commit("deploy everything at 1.0.0", now - 7200)
    for i in range(a.workloads):
        with open(os.path.join(work, f"apps/w{i}/deployment.yaml"), "w") as f:
            f.write(deploy.format(i=i, v="1.1.0"))
        commit(f"deploy w{i} 1.1.0", now - 3600 + i)
    git("clone", "-q", "--bare", work, bare)
    with open(os.path.join(tmp, "token"), "w") as f:
        f.write("storm-token\n")
    workloads = "".join(
        f"- name: storm/w{i}\n  repo: m\n  paths: [apps/w{i}]\n  image: ghcr.io/storm/w{i}\n" for i in range(a.workloads))
    config = os.path.join(tmp, "metricops.yaml")
    with open(config, "w") as f:
        f.write(f"repos:\n- name: m\n  url: {bare}\nworkloads:\n{workloads}"
                "policy:\n  action: propose\n  max_culprit_age: 24h\n  cooldown: 0s\n"
                "  max_reverts_per_day_per_repo: 0\n  max_reverts_per_day: 0\n"
                f"server:\n  concurrency: {a.concurrency}\n  webhook_auth: {{bearer_token_file: {tmp}/token}}\n"
                f"state_dir: {tmp}/state\n")
    port = free_port()
    ok = False
    log = open(os.path.join(tmp, "serve.log"), "w")
    proc = subprocess.Popen([*server_cpu, a.bin, "serve", "--config", config, "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(200):
            if status(port, "/readyz") == 200:
                break
            time.sleep(0.1)
        else:
            sys.exit("serve did not become ready; see " + log.name)
        idle = rss_mb(proc.pid, "VmRSS")
        env = dict(os.environ, WORKLOADS=str(a.workloads), REQUESTS=str(a.requests), TOKEN="storm-token")
        started = time.time()
        # wrk's threads stop after their share; wrk itself then waits out -d (its main thread sleeps
        # the whole duration), so the time until the reverts exist is measured here, meanwhile.
        wrk = subprocess.Popen([*client_cpu, "wrk", "-t2", "-c50", "-d30s", "--latency", "-s", os.path.join(HERE, "storm.lua"),
                                f"http://127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 900
        branches = []
        while time.time() < deadline:
            heads = git("ls-remote", "--heads", bare)
            branches = [l for l in heads.splitlines() if "refs/heads/metricops/revert-" in l]
            if len(branches) >= a.workloads:
                break
            time.sleep(0.2)
        all_in = time.time() - started
        out = wrk.communicate()[0]
        result = next((l for l in out.splitlines() if l.startswith("RESULT")), None)
        if not result:
            sys.exit("wrk printed no result:\n" + out)
        print(result, flush=True)
        # The same answers as the server's handler timed them (bucket bounds: at most this long).
        for code in ("200", "503"):
            h = histogram_percentiles(port, "metricops_alert_ack_seconds", {"endpoint": "generic", "code": code})
            if h:
                (p50, p99), n = h
                print(f"handler {code}: {n} answers, p50 <= {p50:.3f} ms, p99 <= {p99:.3f} ms", flush=True)
        time.sleep(2)
        heads = git("ls-remote", "--heads", bare)
        branches = [l for l in heads.splitlines() if "refs/heads/metricops/revert-" in l]
        peak = rss_mb(proc.pid, "VmHWM")
        print(f"revert branches: {len(branches)} (expected {a.workloads}); all there {all_in:.1f} s after the "
              f"storm began; RSS idle {idle:.1f} MB, peak {peak:.1f} MB", flush=True)
        if len(branches) != a.workloads:
            sys.exit(f"not one revert per culprit; the server's log: {log.name}")
        ok = True
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
