#!/usr/bin/env python3
"""Memory and connections under hostile load, against a real `metricops serve`.

Usage: python3 tests/bench/hostile.py [--bin target/release/metricops]

Starts `serve` on loopback with a throwaway config (plain git forge on an empty bare repo, bearer
auth on the alert webhooks, a GitHub App section with the test key so /webhooks/github is on), then:

1. idle RSS after start;
2. 200 unauthenticated 1.9 MB alert bodies at once: the answers (401 expected) and the peak RSS;
   then 200 with credentials (bodies that are not JSON: 400, or 503 beyond the in-flight bound);
3. 16 unsigned 26 MB GitHub deliveries at once: the answers (401) and the peak RSS;
4. 500 connections sending their headers a byte every 2 s: /healthz meanwhile, and how many the
   server has closed after 15 s.

Prints one line per step and a Markdown table at the end. Needs only Python's standard library.
"""

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from serving import free_port, rss_mb, status

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def send(port, head, body_len, chunk=1 << 16):
    """Sends a request with a body of body_len spaces; returns the status (0: no answer)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(head.encode())
        left = body_len
        block = b" " * chunk
        while left > 0:
            n = min(left, chunk)
            try:
                s.sendall(block[:n])
            except OSError:
                break  # the server answered and closed: the rest is not read
            left -= n
        data = s.recv(64)
        s.close()
        return int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else 0
    except (OSError, ValueError, IndexError):
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/metricops"))
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} does not exist: run `cargo build --release` first, or pass --bin")
    tmp = tempfile.mkdtemp(prefix="metricops-hostile-")
    bare = os.path.join(tmp, "m.git")
    subprocess.run(["git", "init", "-q", "--bare", bare], check=True)
    with open(os.path.join(tmp, "token"), "w") as f:
        f.write("bench-token\n")
    with open(os.path.join(tmp, "secret"), "w") as f:
        f.write("bench-secret\n")
    port = free_port()
    config = os.path.join(tmp, "metricops.yaml")
    with open(config, "w") as f:
        f.write(
            f"repos:\n- name: shop\n  url: {bare}\nworkloads:\n- name: shop/checkout\n  repo: shop\n"
            f"  paths: [apps/checkout]\n  image: ghcr.io/shop/checkout\n"
            f"github:\n  app_id: 1\n  private_key_file: {ROOT}/fixtures/github/test-app-key.pkcs1.pem\n"
            f"  webhook_secret_file: {tmp}/secret\n  api_url: http://127.0.0.1:9\n"
            f"server:\n  webhook_auth: {{bearer_token_file: {tmp}/token}}\nstate_dir: {tmp}/state\n"
        )
    proc = subprocess.Popen(
        [args.bin, "serve", "--config", config, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "serve.log"), "w"),
    )
    rows = []
    try:
        for _ in range(100):
            if status(port, "/healthz") == 200:
                break
            time.sleep(0.1)
        else:
            sys.exit("serve did not come up; see " + os.path.join(tmp, "serve.log"))
        time.sleep(1)
        idle = rss_mb(proc.pid)
        print(f"idle RSS: {idle:.1f} MB", flush=True)
        rows.append(("idle", "-", f"{idle:.1f}"))

        def storm(name, n, head, size):
            with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
                codes = list(ex.map(lambda _: send(port, head, size), range(n)))
            peak = rss_mb(proc.pid, "VmHWM")
            counts = {c: codes.count(c) for c in sorted(set(codes))}
            print(f"{name}: answers {counts}, peak RSS so far {peak:.1f} MB", flush=True)
            rows.append((name, ", ".join(f"{k}×{v}" for k, v in counts.items()), f"{peak:.1f}"))

        size = 1_900_000
        storm(
            "200 × 1.9 MB alert bodies, no credentials",
            200,
            "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n",
            size,
        )
        storm(
            "200 × 1.9 MB alert bodies, with credentials (not JSON)",
            200,
            "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench-token\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n",
            size,
        )
        size = 26 * 1024 * 1024
        storm(
            "16 × 26 MB GitHub deliveries, unsigned",
            16,
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: issue_comment\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n",
            size,
        )

        # 500 slow clients: a header byte every 2 s.
        socks = []
        for _ in range(500):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"P")
                socks.append(s)
            except OSError:
                break
        stop = threading.Event()

        def drip():
            while not stop.is_set():
                for s in socks:
                    try:
                        s.sendall(b"O")
                    except OSError:
                        pass
                stop.wait(2)

        t = threading.Thread(target=drip)
        t.start()
        time.sleep(1)
        during = status(port, "/healthz")
        time.sleep(14)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        stop.set()
        t.join()
        after = status(port, "/healthz")
        peak = rss_mb(proc.pid, "VmHWM")
        print(
            f"500 slow-header clients: /healthz {during} while they hold on, {closed}/{len(socks)} closed by the "
            f"server after 15 s, /healthz {after} after; peak RSS {peak:.1f} MB",
            flush=True,
        )
        rows.append((f"{len(socks)} slow-header clients (1 byte / 2 s)", f"/healthz {during}; {closed} closed in 15 s", f"{peak:.1f}"))
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("\n| load | answers | RSS MB (peak) |\n|---|---|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
