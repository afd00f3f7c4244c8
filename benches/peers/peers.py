#!/usr/bin/env python3
"""Side-by-side benchmark: fleetgate, Prometheus and VictoriaMetrics on the same recorded
remote-write bytes, one system at a time, with a correctness cross-check. Run it through
`benches/peers/run`, which installs the Debian peers when they are missing.

Two workload shapes, recorded once by `fleetgate simulate` and replayed byte for byte to every
system with the same concurrency:
- live: each request carries ~2,000 series with one sample each, as a Prometheus queue sends;
  pod churn with staleness markers;
- backfill: the same fleet's history, many samples per series per request.

Per system and shape, from the server process's /proc (so a slow client flatters no one):
ingest samples/s, CPU-seconds per million samples (replay plus the background work it causes,
until the server is idle again), peak and steady RSS per active series. After the backfill:
bytes per sample on disk once each system has flushed (fleetgate: SIGTERM flushes memtables to
Parquet; Prometheus: `POST /api/v1/admin/tsdb/snapshot`, which writes the head as a block, sized
with its blocks; VictoriaMetrics: `/internal/force_flush` + `/internal/force_merge`, then a graceful
stop), restart-to-ready time (start until the first query answers with data), and the dashboard
query set as range queries: cold (first run after the restart) and warm p50/p95.

Cross-check: every query's result on each peer is compared with fleetgate's (series, timestamps,
values within 1e-6 relative). Differences are listed with series and timestamps and marked
`known` when they are documented semantic differences (see KNOWN below), `UNEXPECTED` otherwise.

    benches/peers/run                 # short: 3 clusters x 10 nodes x 20 pods, 2 h backfill
    benches/peers/run --full          # 6 x 15 x 25 (>100k active series), 24 h backfill
    benches/peers/run --json out.json # also write every figure as JSON

Standard library only.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from common import cpu_seconds, dir_bytes, free_port, rss_bytes, wait_http  # noqa: E402
from query_system import (SCRAPE_MS, compare, dpkg_version, http_post, latency_table, log,  # noqa: E402
                          mem_total, probe, replay, run, run_queries, settle, split_by_cluster)

ROOT = os.path.dirname(os.path.dirname(HERE))

SHAPES = {
    "short": {"clusters": 3, "nodes": 10, "pods": 20, "live_s": 300, "hours": 2, "runs": 3},
    "full": {"clusters": 6, "nodes": 15, "pods": 25, "live_s": 600, "hours": 24, "runs": 5},
}

# Documented semantic differences: (peer prefix, substring of the query) -> why results differ.
KNOWN = [
    ("prometheus", "rate(",
     "Prometheus 2.x rate(): for a counter that starts inside the window it clamps the start "
     "extrapolation to the zero point before the 1.1x average-interval threshold; 3.x (and fleetgate) "
     "apply the threshold first"),
    ("victoria-metrics", "rate(",
     "MetricsQL rate(): no extrapolation, uses the last sample before the window, and counts a "
     "counter's first value as an increase from 0"),
]

PROCS = []


def kill_all():
    """Stops every server this run started, whatever happened."""
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def on_signal(signum, _frame):
    kill_all()
    sys.exit(128 + signum)


class RssPeak:
    """Samples a process's RSS every 200 ms in a thread; `.peak` is the largest seen."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.peak


class System:
    """How to start, feed, flush and stop one system."""

    def __init__(self, name, fg, work, variant_flags=()):
        self.name, self.fg, self.work = name, fg, work
        self.variant_flags = list(variant_flags)
        self.p = None
        self.port = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def data_dir(self, shape):
        return os.path.join(self.work, f"{self.name}-{shape}")

    def start(self, shape):
        self.port = free_port()
        d = self.data_dir(shape)
        os.makedirs(d, exist_ok=True)
        log_f = open(os.path.join(self.work, f"{self.name}-{shape}.log"), "a")
        if self.name == "fleetgate":
            cmd = [self.fg, "serve", "--data-dir", d, "--http-addr", f"127.0.0.1:{self.port}"]
            ready = "/-/ready"
            env = dict(os.environ, FLEETGATE_LOG="warn")
        elif self.name == "prometheus":
            cfg = os.path.join(d, "prometheus.yml")
            with open(cfg, "w") as fh:
                fh.write("global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n"
                         "    out_of_order_time_window: 30d\n")
            cmd = [shutil.which("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
                   "--web.enable-admin-api", "--storage.tsdb.retention.time=100y"]
            ready = "/-/ready"
            env = None
        else:
            cmd = [shutil.which("victoria-metrics"), f"-storageDataPath={d}",
                   f"-httpListenAddr=127.0.0.1:{self.port}", "-retentionPeriod=100y"] + self.variant_flags
            ready = "/health"
            env = None
        t = time.time()
        self.p = subprocess.Popen(cmd, stdout=log_f, stderr=log_f, env=env)
        PROCS.append(self.p)
        wait_http(self.base + ready, timeout=900)
        return time.time() - t

    def write(self, rec, per_cluster, concurrency):
        """Replays the recording; VictoriaMetrics gets `cluster` from ?extra_label per cluster."""
        if self.name.startswith("victoria-metrics"):
            wall, errors = 0.0, 0
            for cluster, d in sorted(per_cluster.items()):
                w, s = replay(self.fg, d, self.base + f"/api/v1/write?extra_label=cluster={cluster}",
                              concurrency)
                wall += w
                errors += s.get("errors", 0) if s.get("errors", 0) >= 0 else 1
            return wall, errors
        wall, s = replay(self.fg, rec, self.base + "/api/v1/write", concurrency)
        return wall, s.get("errors", -1)

    def flush_and_stop(self, shape):
        """Forces the system's flush, stops it gracefully; returns (flushed bytes, whole dir bytes)."""
        d = self.data_dir(shape)
        if self.name == "fleetgate":
            self.stop()  # SIGTERM: memtables to Parquet, fsync
            return dir_bytes(os.path.join(d, "samples")), dir_bytes(d)
        if self.name == "prometheus":
            flushed = None
            try:
                _, body = http_post(self.base, "/api/v1/admin/tsdb/snapshot", {}, timeout=900)
                snap = json.loads(body)["data"]["name"]
                flushed = dir_bytes(os.path.join(d, "data", "snapshots", snap))
                shutil.rmtree(os.path.join(d, "data", "snapshots"), ignore_errors=True)
            except Exception as e:  # reported, not fatal: the whole-dir figure stays
                log(f"prometheus snapshot failed: {e}")
            self.stop()
            return flushed, dir_bytes(d)
        for path in ("/internal/force_flush", "/internal/force_merge"):
            urllib.request.urlopen(self.base + path, timeout=900).read()
        settle(self.p.pid, max_wait=300)
        self.stop()
        return dir_bytes(os.path.join(d, "data")), dir_bytes(d)

    def stop(self):
        if self.p is not None and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=900)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p = None


def ingest(system, shape, rec, per_cluster, samples, series, concurrency):
    """Fresh instance (or the running one): replay, then wait until idle; /proc figures."""
    pid = system.p.pid
    cpu0 = cpu_seconds(pid)
    peak = RssPeak(pid)
    wall, errors = system.write(rec, per_cluster, concurrency)
    settle_s = settle(pid, max_wait=300)
    peak_rss = peak.stop()
    cpu = cpu_seconds(pid) - cpu0
    steady = rss_bytes(pid)
    r = {"samples_per_s": samples / wall, "replay_s": wall, "errors": errors, "settle_s": settle_s,
         "cpu_s": cpu, "cpu_s_per_million": cpu / samples * 1e6,
         "peak_rss_bytes_per_series": peak_rss / max(series, 1),
         "steady_rss_bytes_per_series": steady / max(series, 1)}
    log(f"{system.name} {shape}: {r['samples_per_s'] / 1e6:.2f} M samples/s, "
        f"{r['cpu_s_per_million']:.3f} CPU-s/M, RSS/series peak {r['peak_rss_bytes_per_series']:.0f} B, "
        f"steady {r['steady_rss_bytes_per_series']:.0f} B, errors {errors}")
    return r


def record(fg, rec, a, shape, start_ms, live):
    sim = [fg, "simulate", "--dry-run", "--record-dir", rec, "--seed", str(a.seed),
           "--clusters", str(shape["clusters"]), "--nodes", str(shape["nodes"]),
           "--pods-per-node", str(shape["pods"]), "--services", "4", "--start-ms", str(start_ms)]
    if live:
        sim += ["--fast", "--duration", f"{shape['live_s']}s"]
    else:
        sim += ["--backfill-hours", str(shape["hours"]), "--duration", "0s"]
    log("+ " + " ".join(sim))
    out = subprocess.run(sim, check=True, capture_output=True, text=True)
    gen = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            gen = json.loads(line)
    return gen.get("samples", 0), gen.get("active_series", 0), len(os.listdir(rec)) - 1


def topk_tie(c):
    """A topk/bottomk result that differs only in which of several equal series it kept at some
    steps: no value differs, and at each such step both sides' extra points hold the same value."""
    if c.get("mismatched_points") or c.get("n_only_ref") or c.get("n_only_other"):
        return False
    if c.get("points_only_ref") != c.get("points_only_other"):
        return False
    by_t = {}
    for ex in c.get("ts_examples", []):
        by_t.setdefault(ex["t"], set()).add(ex["value"])
    return bool(by_t) and all(len(v) == 1 for v in by_t.values())


def known_reason(peer, query, c):
    if ("topk(" in query or "bottomk(" in query) and topk_tie(c):
        return ("ties at the k-th place: which of several equal series topk keeps is unspecified "
                "(implementation order)")
    for prefix, needle, why in KNOWN:
        if peer.startswith(prefix) and needle in query:
            return why
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full mode (default: short)")
    ap.add_argument("--runs", type=int, help="warm repeats per query (short 3, full 5)")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight, same for every system")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    mode = "full" if a.full else "short"
    shape = SHAPES[mode]
    runs = a.runs or shape["runs"]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(kill_all)

    for peer in ("prometheus", "victoria-metrics"):
        if not shutil.which(peer):
            raise SystemExit(f"{peer} is not installed (benches/peers/run installs it with apt-get)")
    cmdline = "benches/peers/run " + " ".join(sys.argv[1:])
    machine = {"nproc": os.cpu_count(), "mem_total_bytes": mem_total(),
               "prometheus": dpkg_version("prometheus"), "victoria_metrics": dpkg_version("victoria-metrics"),
               "date": time.strftime("%Y-%m-%d", time.gmtime())}
    log(f"command: {cmdline.strip()}  (mode {mode})")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fg = os.path.join(target, "release", "fleetgate")
    run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT)
    t_start = time.time()
    work = tempfile.mkdtemp(prefix="fg-peers-")
    results = {"command": cmdline.strip(), "mode": mode, "machine": machine, "runs": runs,
               "concurrency": a.concurrency, "workloads": {}, "systems": {}}
    try:
        # Backfill ends on the last whole hour at least a minute ago with scrapes half a tick off
        # the hour grid, so no 5m window boundary falls on a sample (2.x and 3.x windows agree);
        # live traffic follows it, ending about now.
        hour_ms = 3_600_000
        t_ms = (int(time.time() * 1000) - shape["live_s"] * 1000 - 120_000) // hour_ms * hour_ms
        recs = {}
        for name, live in (("live", True), ("backfill", False)):
            rec = os.path.join(work, f"payloads-{name}")
            start_ms = t_ms + SCRAPE_MS // 2 if not live else t_ms + 60_000
            t = time.time()
            samples, series, nreq = record(fg, rec, a, shape, start_ms, live)
            per_cluster = split_by_cluster(rec, os.path.join(work, f"payloads-{name}-by-cluster"))
            recs[name] = (rec, per_cluster, samples, series)
            results["workloads"][name] = {"samples": samples, "active_series": series, "requests": nreq,
                                          "payload_bytes": dir_bytes(rec), "start_ms": start_ms,
                                          "clusters": shape["clusters"], "nodes": shape["nodes"],
                                          "pods_per_node": shape["pods"], "seed": a.seed}
            log(f"workload {name}: {samples:,} samples, {series:,} active series, {nreq} requests "
                f"(recorded in {time.time() - t:.1f} s)")

        end_s = t_ms / 1000
        span = shape["hours"] * 3600
        step = max(SCRAPE_MS // 1000, round(span / 720 / 15) * 15)
        ranges = {f"{shape['hours']}h": (end_s - span, end_s, step), "7d": (end_s - 7 * 86400, end_s, 3600)}
        results["ranges"] = {k: {"start": v[0], "end": v[1], "step": v[2]} for k, v in ranges.items()}

        for name in ("fleetgate", "prometheus", "victoria-metrics"):
            s = System(name, fg, work)
            has_cluster = name != "prometheus"
            out = {"has_cluster": has_cluster}
            # live: a fresh instance
            s.start("live")
            rec, per_cluster, samples, series = recs["live"]
            out["live"] = ingest(s, "live", rec, per_cluster, samples, series, a.concurrency)
            s.stop()
            # backfill: a fresh instance, flushed, restarted, queried
            s.start("backfill")
            rec, per_cluster, samples, series = recs["backfill"]
            bf = ingest(s, "backfill", rec, per_cluster, samples, series, a.concurrency)
            flushed, whole = s.flush_and_stop("backfill")
            bf["bytes_per_sample"] = flushed / samples if flushed else None
            bf["dir_bytes_per_sample"] = whole / samples
            t = time.time()
            s.start("backfill")
            probe(s.base, end_s, timeout=900)
            bf["restart_to_ready_s"] = time.time() - t
            log(f"{name}: bytes/sample {bf['bytes_per_sample'] or float('nan'):.3f} "
                f"(whole dir {bf['dir_bytes_per_sample']:.3f}), restart-to-ready {bf['restart_to_ready_s']:.1f} s")
            out["backfill"] = bf
            cpu0 = cpu_seconds(s.p.pid)
            out["queries"] = run_queries(s.base, ranges, runs, has_cluster)
            out["query_cpu_s"] = cpu_seconds(s.p.pid) - cpu0
            s.stop()
            results["systems"][name] = out
            if name == "victoria-metrics":
                # the same data, restarted with the rollup result cache off: warm runs that measure
                # the engine rather than a cache hit
                nc = System(name, fg, work, ["-search.disableCache"])
                nc.start("backfill")
                probe(nc.base, end_s, timeout=900)
                results["systems"]["victoria-metrics-nocache"] = {
                    "has_cluster": True, "queries": run_queries(nc.base, ranges, runs, True)}
                nc.stop()

        # cross-check against fleetgate
        ref = results["systems"]["fleetgate"]["queries"]
        checks = []
        for name, sysr in results["systems"].items():
            if name == "fleetgate":
                continue
            for key, r in sysr["queries"].items():
                c = compare(ref[key]["result"], r["result"])
                c["system"], c["query_key"], c["query"] = name, key, r["query"]
                if not c.get("ok"):
                    c["known"] = known_reason(name, r["query"], c)
                checks.append(c)
        results["cross_check"] = checks
        for sysr in results["systems"].values():
            for r in sysr["queries"].values():
                r.pop("result", None)
    finally:
        kill_all()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.time() - t_start
    report(results)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    unexpected = [c for c in results["cross_check"] if not c.get("ok") and not c.get("known")]
    sys.exit(1 if unexpected else 0)


def ratio(f, p):
    if f is None or p is None or not p:
        return "–"
    return f"{f / p:.2f}"


def report(results):
    m, sysr = results["machine"], results["systems"]
    print(f"\n# fleetgate vs Prometheus vs VictoriaMetrics ({results['mode']} mode, {m['date']})")
    print(f"command: {results['command']}")
    print(f"machine: {m['nproc']} cores, {m['mem_total_bytes'] / 2**30:.1f} GiB; prometheus {m['prometheus']}, "
          f"victoria-metrics {m['victoria_metrics']}; concurrency {results['concurrency']}; "
          f"whole run {results['wall_s'] / 60:.1f} min")
    for name, w in results["workloads"].items():
        print(f"workload {name}: {w['clusters']} clusters x {w['nodes']} nodes x {w['pods_per_node']} pods, "
              f"{w['samples']:,} samples, {w['active_series']:,} active series, {w['requests']} requests")
    names = ["fleetgate", "prometheus", "victoria-metrics"]
    print("\n| figure | fleetgate | prometheus | victoria-metrics | fleetgate / prometheus | fleetgate / victoria-metrics |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("live", "samples_per_s", "ingest samples/s", "{:,.0f}"),
        ("live", "cpu_s_per_million", "ingest CPU-s per million samples", "{:.3f}"),
        ("live", "peak_rss_bytes_per_series", "peak RSS per active series (B)", "{:,.0f}"),
        ("live", "steady_rss_bytes_per_series", "steady RSS per active series (B)", "{:,.0f}"),
        ("backfill", "samples_per_s", "ingest samples/s", "{:,.0f}"),
        ("backfill", "cpu_s_per_million", "ingest CPU-s per million samples", "{:.3f}"),
        ("backfill", "peak_rss_bytes_per_series", "peak RSS per active series (B)", "{:,.0f}"),
        ("backfill", "steady_rss_bytes_per_series", "steady RSS per active series (B)", "{:,.0f}"),
        ("backfill", "bytes_per_sample", "bytes per sample, flushed", "{:.3f}"),
        ("backfill", "dir_bytes_per_sample", "bytes per sample, whole data dir", "{:.3f}"),
        ("backfill", "restart_to_ready_s", "restart to first answer (s)", "{:.2f}"),
    ]
    for shape, key, label, fmt in rows:
        vals = [sysr.get(n, {}).get(shape, {}).get(key) for n in names]
        cells = [fmt.format(v) if v is not None else "–" for v in vals]
        print(f"| {shape}: {label} | " + " | ".join(cells) + f" | {ratio(vals[0], vals[1])} | {ratio(vals[0], vals[2])} |")

    systems = [n for n in ("fleetgate", "prometheus", "victoria-metrics", "victoria-metrics-nocache") if n in sysr]
    print(f"\nquery latency in ms: cold (first run after restart) / warm p50 / warm p95 of {results['runs']} runs; "
          "ratios are fleetgate p50 / peer p50")
    latency_table(sysr, systems)

    checks = results["cross_check"]
    same = sum(1 for c in checks if c.get("ok"))
    known = [c for c in checks if not c.get("ok") and c.get("known")]
    bad = [c for c in checks if not c.get("ok") and not c.get("known")]
    print(f"\ncross-check against fleetgate: {same} of {len(checks)} (system, query, range) results identical "
          f"within 1e-6, {len(known)} differ for a known reason, {len(bad)} UNEXPECTED")
    for c in bad + known:
        tag = "UNEXPECTED" if not c.get("known") else "known"
        head = f"- [{tag}] {c['system']} {c['query_key']}: "
        if "series_ref" not in c:
            print(head + c.get("note", "?"))
            continue
        print(head + f"series {c['series_ref']} vs {c['series_other']} (only fleetgate {c['n_only_ref']}, "
              f"only peer {c['n_only_other']}), {c['mismatched_points']}/{c['common_points']} points differ "
              f"(median rel {c['median_rel_diff']:.3g}, max {c['max_rel_diff']:.3g}), timestamps only in "
              f"fleetgate {c['points_only_ref']}, only in peer {c['points_only_other']}")
        for ex in c.get("examples", [])[:3]:
            print(f"    {ex['labels']} t={ex['t']}: fleetgate {ex['ref']!r} vs {ex['other']!r}")
        for ex in c.get("ts_examples", [])[:4]:
            print(f"    {ex['labels']} t={ex['t']}: only in {ex['only_in']} (value {ex['value']!r})")
        for lbl in c.get("only_ref", [])[:2]:
            print(f"    only in fleetgate: {lbl}")
        for lbl in c.get("only_other", [])[:2]:
            print(f"    only in {c['system']}: {lbl}")
        if c.get("known"):
            print(f"    why: {c['known']}")


if __name__ == "__main__":
    main()
