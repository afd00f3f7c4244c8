#!/usr/bin/env python3
"""Series churn over a simulated day: the gateway and `fleetgate simulate` run under libfaketime
at N× speed (one simulated day in 24/N hours of real time), pods replaced `--churn` times an hour,
storage retention short, so that retention expires generation after generation of pod series.
Every simulated half hour it reads the gateway's resident memory (/proc, real), the catalog's
series count, the series removed, the highest id ever assigned, the id table's bytes, and the
number of values `/api/v1/label/pod/values` answers. Bounded means: the catalog and the label
answer level off at a few retention windows of pods while the ids ever assigned keep growing.
Standard library only; needs the `faketime` command (Debian package `faketime`, installed here
with apt-get when missing).

    python3 benches/churn.py                      # 24 h at 48x (30 min), churn 2/h, retention 2h
    python3 benches/churn.py --hours 12 --speed 96 --json out.json
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

from common import free_port, rss_bytes, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ["fleetgate_series", "fleetgate_series_removed_total", "fleetgate_series_max_id",
           "fleetgate_series_id_table_bytes", "fleetgate_samples_appended_total"]


def child_of(pid, timeout=30):
    """The process `faketime` started (it runs its command as a child, not by exec)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"no child of faketime {pid}")


def metrics(base):
    out = {}
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            if name in METRICS:
                out[name] = float(value)
    return out


def label_values(base, name):
    with urllib.request.urlopen(f"{base}/api/v1/label/{name}/values", timeout=30) as r:
        return len(json.load(r)["data"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=24, help="simulated hours")
    ap.add_argument("--speed", type=int, default=48, help="faketime speed-up")
    ap.add_argument("--retention", default="2h")
    ap.add_argument("--churn", type=float, default=2.0, help="pods replaced per pod per hour")
    ap.add_argument("--clusters", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--pods-per-node", type=int, default=20)
    ap.add_argument("--every", type=float, default=0.5, help="simulated hours between readings")
    ap.add_argument("--json", help="also write the readings here")
    a = ap.parse_args()

    if not shutil.which("faketime"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "faketime"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fg = os.path.join(target, "release", "fleetgate")
    subprocess.run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="fg-churn-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fake = ["faketime", "-f", f"+0 x{a.speed}"]
    env = dict(os.environ, FLEETGATE_LOG="warn", FLEETGATE__STORAGE__RETENTION=a.retention)
    gw = subprocess.Popen(fake + [fg, "serve", "--data-dir", os.path.join(work, "data"),
                                  "--http-addr", f"127.0.0.1:{port}"], env=env)
    sim = None
    gw_pid = None
    rows = []
    try:
        wait_http(f"{base}/-/ready")
        gw_pid = child_of(gw.pid)
        # to a file: a pipe read only at the end fills up and stalls the simulator
        sim_log = open(os.path.join(work, "simulate.log"), "w+")
        sim = subprocess.Popen(
            fake + [fg, "simulate", "--url", f"{base}/api/v1/write", "--clusters", str(a.clusters),
                    "--nodes", str(a.nodes), "--pods-per-node", str(a.pods_per_node),
                    "--churn", str(a.churn), "--duration", f"{int(a.hours * 3600)}s",
                    "--timeout", "600s", "--concurrency", "4"],
            stdout=sim_log, stderr=subprocess.STDOUT)
        t0 = time.time()
        step = a.every * 3600 / a.speed
        print(f"{'sim h':>6} {'RSS MiB':>8} {'series':>8} {'removed':>8} {'max id':>8} "
              f"{'id table KiB':>12} {'pod values':>10} {'samples':>11}")
        k = 1
        while sim.poll() is None:
            time.sleep(max(0.0, t0 + k * step - time.time()))
            if sim.poll() is not None:
                break
            m = metrics(base)
            row = {
                "sim_hours": round((time.time() - t0) * a.speed / 3600, 2),
                "rss_bytes": rss_bytes(gw_pid),
                "series": int(m.get("fleetgate_series", 0)),
                "removed": int(m.get("fleetgate_series_removed_total", 0)),
                "max_id": int(m.get("fleetgate_series_max_id", 0)),
                "id_table_bytes": int(m.get("fleetgate_series_id_table_bytes", 0)),
                "pod_values": label_values(base, "pod"),
                "samples": int(m.get("fleetgate_samples_appended_total", 0)),
            }
            rows.append(row)
            print(f"{row['sim_hours']:>6.1f} {row['rss_bytes'] / 2**20:>8.1f} {row['series']:>8} "
                  f"{row['removed']:>8} {row['max_id']:>8} {row['id_table_bytes'] / 1024:>12.1f} "
                  f"{row['pod_values']:>10} {row['samples']:>11}", flush=True)
            k += 1
        sim_log.seek(0)
        out = sim_log.read()
        if sim.returncode != 0:
            raise SystemExit(f"simulate exited {sim.returncode}: {out[-2000:]}")
        print(out.strip().splitlines()[-1] if out.strip() else "", file=sys.stderr)
    finally:
        # faketime does not forward signals: stop the processes it started
        for p in (sim, gw):
            if p and p.poll() is None:
                try:
                    os.kill(child_of(p.pid, timeout=1), signal.SIGTERM)
                except (SystemExit, OSError):
                    p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)
    if rows:
        last, peak = rows[-1], max(r["series"] for r in rows)
        print(f"\ncreated {last['max_id']} series ids, catalog peak {peak}, final {last['series']}, "
              f"removed {last['removed']}; pod label values peak {max(r['pod_values'] for r in rows)}; "
              f"RSS peak {max(r['rss_bytes'] for r in rows) / 2**20:.1f} MiB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "readings": rows}, f, indent=1)


if __name__ == "__main__":
    main()
