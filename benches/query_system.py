#!/usr/bin/env python3
"""Whole-system PromQL latency benchmark: the same recorded remote-write bytes into fleetgate,
Prometheus and VictoriaMetrics (each Debian binary when installed), then the dashboard queries as
range queries against each, timed client-side, with the results cross-checked.

    python3 benches/query_system.py            # short: 3 clusters x 10 nodes x 20 pods, 6 h backfill
    python3 benches/query_system.py --full     # 6 x 15 x 25 = 107,694 series, 24 h backfill (slow)

Per query: one cold run (the first time the server sees it) and --runs warm repeats; p50/p95 of the
warm runs. Systems run one after another (never at the same time) on the same machine.

The cluster label: fleetgate (open dev mode) takes it from the X-Fleetgate-Cluster header the
replayer sends; the recorded payloads carry no `cluster` label. VictoriaMetrics gets it from
`?extra_label=cluster=sim-NN` on the remote-write URL (the recording is split per cluster, same
request bodies). Prometheus 2.42's remote-write receiver cannot add labels, so it has no `cluster`:
the by-cluster query runs on fleetgate and VictoriaMetrics only, a by-namespace twin runs on all.
Standard library only.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from common import cpu_seconds, free_port, rss_bytes, wait_http
from common import replay as common_replay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRAPE_MS = 15_000

# (id, query, needs the cluster label)
QUERIES = [
    ("cpu_by_cluster", "sum by (cluster) (rate(container_cpu_usage_seconds_total[5m]))", True),
    ("cpu_by_namespace", "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))", False),
    ("http_p99", "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
     False),
    ("topk_mem_by_pod", "topk(10, sum by (pod) (container_memory_working_set_bytes))", False),
    ("net_rx_regex", 'sum(rate(container_network_receive_bytes_total{namespace=~"pay.*|search"}[5m]))',
     False),
    ("running_containers", "count(kube_pod_container_status_running == 1)", False),
]








def mem_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0




def run(cmd, **kw):
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def replay(fg, rec_dir, url, concurrency):
    return common_replay(fg, rec_dir, url, concurrency, on_error=log)


def split_by_cluster(rec, out_dir):
    """Per-cluster recordings (hard links to the same request bodies) for per-URL extra labels."""
    with open(os.path.join(rec, "index.tsv")) as f:
        lines = f.read().splitlines()
    header, rows = lines[0], [r for r in lines[1:] if r]
    dirs = {}
    for row in rows:
        seq, cluster = row.split("\t")[:2]
        d = dirs.get(cluster)
        if d is None:
            d = os.path.join(out_dir, cluster)
            os.makedirs(d)
            dirs[cluster] = d
            with open(os.path.join(d, "index.tsv"), "w") as fh:
                fh.write(header + "\n")
        name = f"{int(seq):08}.snappy"
        os.link(os.path.join(rec, name), os.path.join(d, name))
        with open(os.path.join(d, "index.tsv"), "a") as fh:
            fh.write(row + "\n")
    return dirs


def http_post(base, path, params, timeout=600):
    data = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(base + path, data=data,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    return time.perf_counter() - t, body


def probe(base, at_s, timeout=300):
    """Waits until an instant query at the end of the data returns a non-empty count."""
    t0 = time.time()
    deadline = t0 + timeout
    while time.time() < deadline:
        try:
            _, body = http_post(base, "/api/v1/query",
                                {"query": "count(container_memory_working_set_bytes)", "time": f"{at_s:.3f}"})
            res = json.loads(body)["data"]["result"]
            if res and float(res[0]["value"][1]) > 0:
                return time.time() - t0, float(res[0]["value"][1])
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{base}: no data after {timeout} s")


def settle(pid, max_wait=90, idle_frac=0.05, window=3.0):
    """Waits for background work (flush, compaction, merges) to quiet down: server CPU under
    `idle_frac` of one core over `window` seconds, at most `max_wait` seconds."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        c0 = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - c0 < idle_frac * window:
            break
    return time.time() - t0


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def run_queries(base, ranges, runs, has_cluster):
    """Every query over every range: 1 cold run + `runs` warm ones. Returns timings and results."""
    out = {}
    for rname, (start, end, step) in ranges.items():
        for qid, q, needs_cluster in QUERIES:
            if needs_cluster and not has_cluster:
                continue
            params = {"query": q, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
            lat, body = http_post(base, "/api/v1/query_range", params)
            cold = lat
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"status": "error", "error": body[:300].decode(errors="replace")}
            warm = []
            for _ in range(runs):
                lat, _b = http_post(base, "/api/v1/query_range", params)
                warm.append(lat)
            res = doc.get("data", {}).get("result", []) if doc.get("status") == "success" else None
            key = f"{qid}@{rname}"
            out[key] = {
                "query": q, "range": rname, "cold_s": cold, "warm_s": warm,
                "p50_s": pct(warm, 50), "p95_s": pct(warm, 95),
                "status": doc.get("status"), "error": doc.get("error"),
                "series": len(res) if res is not None else None,
                "points": sum(len(s.get("values", [])) for s in res) if res else 0,
                "result": res,
            }
            log(f"  {key:32} cold {cold * 1e3:8.1f} ms  p50 {out[key]['p50_s'] * 1e3:8.1f} ms  "
                f"p95 {out[key]['p95_s'] * 1e3:8.1f} ms  series {out[key]['series']}"
                + (f"  ERROR {doc.get('error')}" if res is None else ""))
    return out


def fval(s):
    return float(s)  # handles "NaN", "+Inf", "-Inf"


def close(a, b, rel=1e-6):
    if math.isnan(a) and math.isnan(b):
        return True
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b)) or abs(a - b) <= 1e-12


def compare(ref, other):
    """Series count, and values at common timestamps within 1e-6 relative."""
    if ref is None or other is None:
        return {"ok": False, "note": "a query failed"}
    key = lambda s: tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__"))
    a = {key(s): {t: fval(v) for t, v in s["values"]} for s in ref}
    b = {key(s): {t: fval(v) for t, v in s["values"]} for s in other}
    only_ref = [dict(k) for k in a if k not in b]
    only_other = [dict(k) for k in b if k not in a]
    common_pts = bad = ts_only_ref = ts_only_other = 0
    max_rel = 0.0
    rels = []
    example = None
    examples = []  # the first few mismatching points, in label order
    ts_examples = []  # the first few points only one side has
    for k in sorted(a.keys() & b.keys()):
        sa, sb = a[k], b[k]
        ts_only_ref += len(sa.keys() - sb.keys())
        ts_only_other += len(sb.keys() - sa.keys())
        for side, only in (("fleetgate", sa.keys() - sb.keys()), ("peer", sb.keys() - sa.keys())):
            for t in sorted(only)[:max(0, 5 - len(ts_examples))]:
                ts_examples.append({"labels": dict(k), "t": t, "only_in": side,
                                    "value": (sa if side == "fleetgate" else sb)[t]})
        for t in sorted(sa.keys() & sb.keys()):
            common_pts += 1
            x, y = sa[t], sb[t]
            if not close(x, y):
                bad += 1
                if len(examples) < 5:
                    examples.append({"labels": dict(k), "t": t, "ref": x, "other": y})
                if not (math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y)):
                    r = abs(x - y) / max(abs(x), abs(y))
                    rels.append(r)
                    if r > max_rel:
                        max_rel = r
                        example = {"labels": dict(k), "t": t, "ref": x, "other": y}
                elif example is None:
                    example = {"labels": dict(k), "t": t, "ref": x, "other": y}
    ok = not only_ref and not only_other and bad == 0 and ts_only_ref == 0 and ts_only_other == 0
    return {"ok": ok, "series_ref": len(a), "series_other": len(b), "only_ref": only_ref[:5],
            "only_other": only_other[:5], "n_only_ref": len(only_ref), "n_only_other": len(only_other),
            "common_points": common_pts, "mismatched_points": bad, "max_rel_diff": max_rel,
            "median_rel_diff": pct(rels, 50) if rels else 0.0,
            "points_only_ref": ts_only_ref, "points_only_other": ts_only_other, "example": example,
            "examples": examples, "ts_examples": ts_examples}


def stop(p, timeout=300):
    if p is not None and p.poll() is None:
        log(f"stopping pid {p.pid}")
        p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def dpkg_version(pkg):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true",
                    help="target shape: 6 clusters x 15 nodes x 25 pods (>100k series), 24 h backfill")
    ap.add_argument("--clusters", type=int)
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--pods-per-node", type=int)
    ap.add_argument("--services", type=int, default=4)
    ap.add_argument("--backfill-hours", type=int)
    ap.add_argument("--runs", type=int, default=10, help="warm repeats per query after the cold run")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-peers", action="store_true", help="fleetgate only")
    ap.add_argument("--no-long-range", action="store_true", help="skip the 7-day range at 1 h step")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    a = ap.parse_args()
    shape = (6, 15, 25, 24) if a.full else (3, 10, 20, 6)
    clusters = a.clusters or shape[0]
    nodes = a.nodes or shape[1]
    pods = a.pods_per_node or shape[2]
    hours = a.backfill_hours or shape[3]

    cmdline = "python3 " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])
    machine = {"nproc": os.cpu_count(), "mem_total_bytes": mem_total(),
               "prometheus": dpkg_version("prometheus"), "victoria_metrics": dpkg_version("victoria-metrics")}
    log(f"command: {cmdline}")
    log(f"machine: nproc {machine['nproc']}, MemTotal {machine['mem_total_bytes'] / 2**30:.1f} GiB, "
        f"prometheus {machine['prometheus']}, victoria-metrics {machine['victoria_metrics']}")

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fg = os.path.join(target, "release", "fleetgate")
    run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT)
    work = tempfile.mkdtemp(prefix="fg-qbench-")
    procs = []
    try:
        rec = os.path.join(work, "payloads")
        # Every range ends on T, the last whole hour at least a minute ago, so start, end and step
        # are multiples of the step (VictoriaMetrics aligns them when its cache is on). Scrapes lie
        # half a tick off the hour grid (T - 7.5 s, T - 22.5 s, ...), so no 5m window boundary ever
        # falls on a sample and left-open and left-closed windows agree.
        hour_ms = 3_600_000
        t_ms = (int(time.time() * 1000) - 60_000) // hour_ms * hour_ms
        start_ms = t_ms + SCRAPE_MS // 2
        sim = [fg, "simulate", "--dry-run", "--record-dir", rec, "--seed", str(a.seed),
               "--clusters", str(clusters), "--nodes", str(nodes), "--pods-per-node", str(pods),
               "--services", str(a.services), "--start-ms", str(start_ms),
               "--backfill-hours", str(hours), "--duration", "0s"]
        log("+ " + " ".join(sim))
        t = time.time()
        out = subprocess.run(sim, check=True, capture_output=True, text=True)
        gen = {}
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                gen = json.loads(line)
        samples, series = gen.get("samples", 0), gen.get("active_series", 0)
        nreq = len(os.listdir(rec)) - 1
        log(f"workload: {clusters} clusters x {nodes} nodes x {pods} pods, {a.services} services, "
            f"{hours} h backfill: {samples} samples, {series} active series, {nreq} requests "
            f"(recorded in {time.time() - t:.1f} s)")

        end_s = t_ms / 1000
        span = hours * 3600
        step = max(SCRAPE_MS // 1000, round(span / 720 / 15) * 15)
        assert 3600 % step == 0 or step % 3600 == 0, "step must divide the hour grid"
        ranges = {f"{hours}h": (end_s - span, end_s, step)}
        if not a.no_long_range:
            ranges["7d"] = (end_s - 7 * 86400, end_s, 3600)
        results = {"command": cmdline, "machine": machine,
                   "workload": {"clusters": clusters, "nodes": nodes, "pods_per_node": pods,
                                "services": a.services, "backfill_hours": hours, "seed": a.seed,
                                "samples": samples, "active_series": series, "requests": nreq,
                                "start_ms": start_ms},
                   "ranges": {k: {"start": v[0], "end": v[1], "step": v[2]} for k, v in ranges.items()},
                   "runs": a.runs, "systems": {}}

        def finish_system(name, p, base, wall, summ, has_cluster):
            probe_s, probe_n = probe(base, end_s)
            settle_s = settle(p.pid)
            log(f"{name}: ingest {wall:.1f} s ({samples / wall / 1e6:.2f} M samples/s), "
                f"errors {summ.get('errors')}, probe after {probe_s:.1f} s ({probe_n:.0f} series), "
                f"settled {settle_s:.1f} s, RSS {rss_bytes(p.pid) / 2**20:.0f} MiB")
            cpu0 = cpu_seconds(p.pid)
            q = run_queries(base, ranges, a.runs, has_cluster)
            results["systems"][name] = {
                "ingest_s": wall, "ingest_errors": summ.get("errors"), "probe_s": probe_s,
                "settle_s": settle_s, "query_cpu_s": cpu_seconds(p.pid) - cpu0,
                "rss_bytes_after": rss_bytes(p.pid), "has_cluster": has_cluster, "queries": q}

        # fleetgate, open dev mode: cluster from the X-Fleetgate-Cluster header
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, FLEETGATE_LOG="warn")
        p = subprocess.Popen([fg, "serve", "--data-dir", os.path.join(work, "fg-data"),
                              "--http-addr", f"127.0.0.1:{port}"], env=env)
        procs.append(p)
        wait_http(base + "/-/ready")
        log("fleetgate: replaying")
        wall, summ = replay(fg, rec, base + "/api/v1/write", a.concurrency)
        finish_system("fleetgate", p, base, wall, summ, True)
        # label-set collisions once `cluster` is dropped would make the peers' data differ
        _, body = http_post(base, "/api/v1/query", {
            # (`without` drops __name__, so keep it in an ordinary label first)
            "query": 'count(count without (cluster) (label_replace({__name__=~".+"}, "name_", "$1", '
                     '"__name__", "(.+)"))) / count({__name__=~".+"})',
            "time": f"{end_s:.3f}"})
        try:
            results["unique_without_cluster"] = float(json.loads(body)["data"]["result"][0]["value"][1])
        except Exception:
            results["unique_without_cluster"] = None
        stop(p)

        prom = shutil.which("prometheus")
        if prom and not a.no_peers:
            pdir = os.path.join(work, "prom")
            os.makedirs(pdir)
            cfg = os.path.join(pdir, "prometheus.yml")
            with open(cfg, "w") as fh:
                fh.write("global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n"
                         "    out_of_order_time_window: 30d\n")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            p = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={pdir}/data",
                                  f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
                                  "--storage.tsdb.retention.time=100y"],
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(pdir, "log"), "w"))
            procs.append(p)
            wait_http(base + "/-/ready")
            log("prometheus: replaying")
            wall, summ = replay(fg, rec, base + "/api/v1/write", a.concurrency)
            finish_system("prometheus", p, base, wall, summ, False)
            stop(p)

        vm = shutil.which("victoria-metrics")
        if vm and not a.no_peers:
            vdata = os.path.join(work, "vm-data")
            per_cluster = split_by_cluster(rec, os.path.join(work, "payloads-by-cluster"))
            for variant, flags in (("victoria-metrics", []), ("victoria-metrics-nocache", ["-search.disableCache"])):
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                p = subprocess.Popen([vm, f"-storageDataPath={vdata}", f"-httpListenAddr=127.0.0.1:{port}",
                                      "-retentionPeriod=100y"] + flags,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_http(base + "/health")
                if variant == "victoria-metrics":
                    log("victoria-metrics: replaying, one cluster at a time with ?extra_label=cluster=<name>")
                    wall, errors = 0.0, 0
                    for cluster, d in sorted(per_cluster.items()):
                        w, s = replay(fg, d, base + f"/api/v1/write?extra_label=cluster={cluster}", a.concurrency)
                        wall += w
                        errors += s.get("errors", 0) if s.get("errors", 0) >= 0 else 1
                    urllib.request.urlopen(base + "/internal/force_flush", timeout=120).read()
                    summ = {"errors": errors}
                else:
                    # same data directory, restarted with the rollup result cache off
                    wall, summ = results["systems"]["victoria-metrics"]["ingest_s"], {
                        "errors": results["systems"]["victoria-metrics"]["ingest_errors"]}
                finish_system(variant, p, base, wall, summ, True)
                stop(p)

        # agreement with fleetgate
        ref = results["systems"]["fleetgate"]["queries"]
        agreement = {}
        for name, sysr in results["systems"].items():
            if name == "fleetgate":
                continue
            for key, r in sysr["queries"].items():
                agreement[f"{name}:{key}"] = compare(ref[key]["result"], r["result"])
        results["agreement"] = agreement
        for sysr in results["systems"].values():
            for r in sysr["queries"].values():
                r.pop("result", None)
    finally:
        for p in procs:
            stop(p, timeout=120)
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(results)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)


def latency_table(sysr, systems):
    """Markdown table: per query and range, cold / warm p50 / warm p95 in ms for each system, then
    fleetgate p50 / peer p50."""
    print("| query | range | " + " | ".join(systems) + " | " +
          " | ".join(f"fleetgate / {n} p50" for n in systems[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(systems) - 1))
    for key, f in sysr["fleetgate"]["queries"].items():
        qid, rname = key.split("@")
        cells, ratios = [], []
        for name in systems:
            r = sysr[name]["queries"].get(key)
            if r is None:
                cells.append("–")
            elif r["status"] != "success":
                cells.append("error")
            else:
                cells.append(f"{r['cold_s'] * 1e3:.0f} / {r['p50_s'] * 1e3:.0f} / {r['p95_s'] * 1e3:.0f}")
            if name != "fleetgate":
                ok = r is not None and r["status"] == "success" and f["status"] == "success"
                ratios.append(f"{f['p50_s'] / r['p50_s']:.2f}" if ok else "–")
        print(f"| {qid} | {rname} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


def report(results):
    w, m = results["workload"], results["machine"]
    print(f"\ncommand: {results['command']}")
    print(f"machine: nproc {m['nproc']}, MemTotal {m['mem_total_bytes'] // 1024} kB "
          f"({m['mem_total_bytes'] / 2**30:.1f} GiB), prometheus {m['prometheus']}, "
          f"victoria-metrics {m['victoria_metrics']}")
    print(f"workload: {w['clusters']} clusters x {w['nodes']} nodes x {w['pods_per_node']} pods, "
          f"{w['services']} services, {w['backfill_hours']} h backfill, seed {w['seed']}: "
          f"{w['samples']:,} samples, {w['active_series']:,} active series, {w['requests']} requests")
    for rname, r in results["ranges"].items():
        print(f"range {rname}: {r['end'] - r['start']:.0f} s at step {r['step']} s "
              f"({int((r['end'] - r['start']) // r['step']) + 1} points)")
    if results.get("unique_without_cluster") is not None:
        print(f"label sets still unique without `cluster` (fleetgate): "
              f"{results['unique_without_cluster']:.4f}")
    systems = list(results["systems"])
    print("\nper system: ingest (replay wall), settle, query CPU-s over the whole query set")
    for name in systems:
        s = results["systems"][name]
        print(f"- {name}: ingest {s['ingest_s']:.1f} s, errors {s['ingest_errors']}, "
              f"settle {s['settle_s']:.1f} s, query CPU {s['query_cpu_s']:.1f} s, "
              f"RSS after {s['rss_bytes_after'] / 2**20:.0f} MiB")
    print(f"\nlatency in ms, cold (first run) / warm p50 / warm p95 of {results['runs']} runs")
    latency_table(results["systems"], systems)
    print("\nagreement with fleetgate (series count; values within 1e-6 relative at common timestamps)")
    bad = 0
    for k, c in results.get("agreement", {}).items():
        if c.get("ok"):
            continue
        bad += 1
        if "series_ref" not in c:
            print(f"- {k}: {c.get('note')}")
            continue
        ex = c["example"]
        print(f"- {k}: series {c['series_ref']} vs {c['series_other']} "
              f"(only fleetgate {c['n_only_ref']}, only peer {c['n_only_other']}), "
              f"{c['mismatched_points']}/{c['common_points']} points differ (median rel {c['median_rel_diff']:.3g}, max {c['max_rel_diff']:.3g}), "
              f"timestamps only in fleetgate {c['points_only_ref']}, only in peer {c['points_only_other']}"
              + (f"; e.g. {ex['labels']} t={ex['t']}: {ex['ref']!r} vs {ex['other']!r}" if ex else ""))
    n = len(results.get("agreement", {}))
    print(f"{n - bad} of {n} (system, query, range) results agree" if n else "no peers to compare")


if __name__ == "__main__":
    main()
