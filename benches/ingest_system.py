#!/usr/bin/env python3
"""Whole-system ingest benchmark: the same recorded remote-write bytes into fleetgate (and, when the
Debian binary is installed, VictoriaMetrics) in the same run, measured from each server's /proc.

Reports per system: samples/s, server CPU-seconds per million samples (fsync'd acks for fleetgate),
bytes per sample on disk after a forced flush, resident memory per active series, and, for
fleetgate, restart (WAL replay) time. Standard library only.

    python3 benches/ingest_system.py --shape live      # ~2,000 series x 1 sample per request
    python3 benches/ingest_system.py --shape backfill  # many samples per series per request
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import cpu_seconds, dir_bytes, free_port, replay, rss_bytes, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))












def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["live", "backfill"], default="live")
    ap.add_argument("--clusters", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=25)
    ap.add_argument("--live-seconds", type=int, default=600, help="simulated seconds of live traffic (fast mode)")
    ap.add_argument("--backfill-hours", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-peers", action="store_true", help="skip VictoriaMetrics even if installed")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--binary", help="this fleetgate binary instead of building target/release/fleetgate "
                    "(before/after comparisons: alternate two binaries in one session)")
    a = ap.parse_args()

    if a.binary:
        fg = os.path.abspath(a.binary)
    else:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        fg = os.path.join(target, "release", "fleetgate")
        run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT)
    work = tempfile.mkdtemp(prefix="fg-bench-")
    rec = os.path.join(work, "payloads")
    sim = [fg, "simulate", "--dry-run", "--record-dir", rec, "--seed", "7",
           "--clusters", str(a.clusters), "--nodes", str(a.nodes), "--pods-per-node", str(a.pods_per_node),
           "--start-ms", str(int(time.time() * 1000) - (a.backfill_hours * 3600 + a.live_seconds + 60) * 1000)]
    if a.shape == "live":
        sim += ["--fast", "--duration", f"{a.live_seconds}s"]
    else:
        sim += ["--backfill-hours", str(a.backfill_hours), "--duration", "0s"]
    out = subprocess.run(sim, check=True, capture_output=True, text=True)
    gen = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            gen = json.loads(line)
    samples = gen.get("samples", 0)
    series = gen.get("active_series", 0)
    print(f"workload: {a.shape}, {samples} samples, {series} active series, "
          f"{len(os.listdir(rec)) - 1} requests, {dir_bytes(rec)} payload bytes", file=sys.stderr)
    results = {"shape": a.shape, "samples": samples, "active_series": series, "systems": {}}

    # fleetgate
    data = os.path.join(work, "fg-data")
    port = free_port()
    env = dict(os.environ, FLEETGATE_LOG="warn")
    p = subprocess.Popen([fg, "serve", "--data-dir", data, "--http-addr", f"127.0.0.1:{port}"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        cpu0 = cpu_seconds(p.pid)
        wall, summ = replay(fg, rec, f"http://127.0.0.1:{port}/api/v1/write", a.concurrency)
        cpu = cpu_seconds(p.pid) - cpu0
        rss = rss_bytes(p.pid)
        # restart time: kill -9 with the WAL full, time until ready
        p.send_signal(signal.SIGKILL)
        p.wait()
        t = time.time()
        p = subprocess.Popen([fg, "serve", "--data-dir", data, "--http-addr", f"127.0.0.1:{port}"], env=env)
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        restart = time.time() - t
        # let maintenance flush and compact the closed hour partitions (it runs every 10 s), as a
        # long-running gateway would, then SIGTERM flushes whatever is left
        time.sleep(25)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=600)
        disk = dir_bytes(os.path.join(data, "samples"))
        total = dir_bytes(data)
        results["systems"]["fleetgate"] = {
            "samples_per_sec": samples / wall, "cpu_sec_per_million": cpu / samples * 1e6,
            "bytes_per_sample": disk / samples, "disk_bytes_per_sample": total / samples,
            "rss_bytes_per_series": rss / max(series, 1), "restart_sec": restart,
            "errors": summ.get("errors", -1),
        }
    finally:
        if p.poll() is None:
            p.kill()

    vm = shutil.which("victoria-metrics")
    if vm and not a.no_peers:
        vdata = os.path.join(work, "vm-data")
        vport = free_port()
        v = subprocess.Popen([vm, f"-storageDataPath={vdata}", f"-httpListenAddr=127.0.0.1:{vport}",
                              "-retentionPeriod=100y", "-search.disableCache"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{vport}/health")
            cpu0 = cpu_seconds(v.pid)
            wall, summ = replay(fg, rec, f"http://127.0.0.1:{vport}/api/v1/write", a.concurrency)
            time.sleep(2)
            cpu = cpu_seconds(v.pid) - cpu0
            rss = rss_bytes(v.pid)
            urllib.request.urlopen(f"http://127.0.0.1:{vport}/internal/force_flush", timeout=60).read()
            v.terminate()  # a graceful stop writes every in-memory part
            v.wait(timeout=120)
            disk = dir_bytes(os.path.join(vdata, "data"))
            total = dir_bytes(vdata)
            results["systems"]["victoria-metrics"] = {
                "samples_per_sec": samples / wall, "cpu_sec_per_million": cpu / samples * 1e6,
                "bytes_per_sample": disk / samples, "disk_bytes_per_sample": total / samples,
                "rss_bytes_per_series": rss / max(series, 1),
                "errors": summ.get("errors", -1),
            }
        finally:
            if v.poll() is None:
                v.terminate()
                v.wait(timeout=60)

    cols = ["samples_per_sec", "cpu_sec_per_million", "bytes_per_sample", "disk_bytes_per_sample",
            "rss_bytes_per_series", "restart_sec"]
    print(f"\n{a.shape}: {samples} samples, {series} active series, concurrency {a.concurrency}")
    print("| system | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in results["systems"].items():
        print(f"| {name} | " + " | ".join(f"{r.get(c, float('nan')):.3f}" for c in cols) + " |")
    if "victoria-metrics" in results["systems"]:
        f, v = results["systems"]["fleetgate"], results["systems"]["victoria-metrics"]
        print("| fleetgate / victoria-metrics | " + " | ".join(
            f"{(f[c] / v[c]) if c in v and v[c] else float('nan'):.2f}" for c in cols) + " |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
