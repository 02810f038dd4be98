"""What the benchmarks that start `metricops serve` share: a free port, a GET's status, the RSS."""

import socket


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
