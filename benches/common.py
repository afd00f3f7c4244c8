"""Helpers shared by the whole-system benches: /proc readings of a server process, free loopback
ports, waiting for readiness, and replaying a recorded workload with `fleetgate simulate`."""

import json
import os
import socket
import subprocess
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")

# Every gateway a bench starts takes a free port for OTLP/gRPC rather than the default 4317, so
# that benches and tests can run side by side.
os.environ.setdefault("FLEETGATE_OTLP_GRPC_ADDR", "127.0.0.1:0")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def wait_http(url, timeout=180):
    """Polls `url` until it answers 200; exits the bench on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"timeout waiting for {url}")


def replay(fg, rec_dir, url, concurrency, on_error=None):
    """Sends a recorded directory with `fleetgate simulate --replay-dir`; returns (wall seconds,
    the simulator's JSON summary). A failed replay reports `errors: -1` unless it said otherwise."""
    t = time.time()
    out = subprocess.run(
        [fg, "simulate", "--replay-dir", rec_dir, "--url", url, "--concurrency", str(concurrency)],
        capture_output=True, text=True)
    wall = time.time() - t
    summary = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    if out.returncode != 0:
        if on_error:
            on_error(f"replay to {url} exited {out.returncode}: {out.stderr.strip()[-500:]}")
        summary.setdefault("errors", -1)
    return wall, summary
