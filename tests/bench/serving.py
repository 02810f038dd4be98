"""What the benchmarks that start `metricops serve` share: a free port, a GET's status, the RSS,
percentiles read from a histogram of `/metrics`."""

import re
import socket
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(port, path, timeout=10):
    """The status of `GET path` on loopback; 0 when nothing answered."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = s.recv(64)
        s.close()
        return int(data.split(b" ")[1])
    except (OSError, ValueError, IndexError):
        return 0


def rss_mb(pid, field="VmRSS"):
    """A process's VmRSS (or VmHWM, its peak) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def histogram_percentiles(port, name, labels, quantiles=(0.5, 0.99)):
    """The bucket bounds (in ms) holding the given quantiles of histogram `name` (those of its
    series carrying every `labels` pair) in `/metrics`, and its count; None when it has none."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets = {}
    for line in text.splitlines():
        if not line.startswith(name + "_bucket{"):
            continue
        body, value = line.rsplit(" ", 1)
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', body))
        if all(pairs.get(k) == v for k, v in labels.items()):
            le = float("inf") if pairs["le"] == "+Inf" else float(pairs["le"])
            buckets[le] = buckets.get(le, 0) + float(value)
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count == 0:
        return None
    out = []
    for q in quantiles:
        out.append(next(b for b in bounds if buckets[b] >= q * count) * 1000)
    return out, int(count)
