#!/usr/bin/env python3
"""Group-by aggregations through fleetgate's SQL beside DuckDB over the same Parquet files, in the
same run on the same machine.

`fleetgate simulate` backfills a fleet into a release gateway until the store holds at least
--min-samples samples; the gateway is stopped (its memtables flush to Parquet) and started again,
then each query runs --runs times through `POST /api/v1/sql` and through DuckDB (PyPI `duckdb`)
reading `data/samples/**/*.parquet` (joined with `data/catalog/*.parquet` for label columns).
Both get the same cores (`query.threads` = DuckDB's `threads` = the machine's cores); the answers
are compared; the table gives median seconds and the ratio fleetgate / DuckDB.

    python3 benches/sql_duckdb.py [--hours 8] [--min-samples 50000000] [--runs 3]
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, fleetgate SQL, DuckDB SQL over S = samples, C = catalog)
QUERIES = [
    ("count and avg by cluster, metric",
     "SELECT cluster, metric, count(*) AS n, avg(value) AS a FROM samples GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT cluster, metric, count(*), avg(value) FROM {S} WHERE NOT isnan(value) GROUP BY 1, 2 ORDER BY 1, 2"),
    ("min/max/sum by metric",
     "SELECT metric, min(value) AS lo, max(value) AS hi, sum(value) AS s FROM samples GROUP BY 1 ORDER BY 1",
     "SELECT metric, min(value), max(value), sum(value) FROM {S} WHERE NOT isnan(value) GROUP BY 1 ORDER BY 1"),
    ("samples per cluster and hour",
     "SELECT cluster, floor(extract(epoch FROM timestamp) / 3600) AS h, count(*) AS n FROM samples GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT cluster, floor(extract(epoch FROM timestamp) / 3600) AS h, count(*) FROM {S} WHERE NOT isnan(value) GROUP BY 1, 2 ORDER BY 1, 2"),
    ("avg memory by cluster, namespace (label)",
     "SELECT cluster, namespace, avg(value) AS a FROM metrics.container_memory_working_set_bytes GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT s.cluster, c.labels['namespace'], avg(s.value) FROM {S} s JOIN {C} c USING (series_id) "
     "WHERE s.metric = 'container_memory_working_set_bytes' AND NOT isnan(s.value) GROUP BY 1, 2 ORDER BY 1, 2"),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sql(base, text):
    req = urllib.request.Request(base + "/api/v1/sql", data=text.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())["rows"]


def start(fg, data, port, threads):
    env = dict(os.environ, FLEETGATE_LOG="warn", FLEETGATE__QUERY__THREADS=str(threads),
               FLEETGATE__SQL__MEMORY_LIMIT=str(4 << 30), FLEETGATE__SQL__TIMEOUT="1h",
               FLEETGATE__QUERY__TIMEOUT="1h")
    p = subprocess.Popen([fg, "serve", "--data-dir", data, "--http-addr", f"127.0.0.1:{port}",
                          "--pg-addr", "off"], env=env)
    wait_http(f"http://127.0.0.1:{port}/-/ready")
    return p


def stop(p):
    p.terminate()
    p.wait(timeout=600)


def same(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if isinstance(u, float) or isinstance(v, float) or u is None or v is None:
                # NaN (stale markers in an aggregate) is JSON null on our side
                a = float("nan") if u is None else float(u)
                b = float("nan") if v is None else float(v)
                if math.isnan(a) or math.isnan(b):
                    if not (math.isnan(a) and math.isnan(b)):
                        return False
                elif abs(a - b) > 1e-6 * max(1.0, abs(a)):
                    return False
            elif isinstance(u, list):
                if u[0] != v and u != v:
                    return False
            elif u != v and str(u) != str(v):
                return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=8, help="hours of backfill")
    ap.add_argument("--clusters", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=20)
    ap.add_argument("--min-samples", type=int, default=50_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    import duckdb  # noqa: PLC0415 (PyPI duckdb; the bench needs it)

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fg = os.path.join(target, "release", "fleetgate")
    subprocess.run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT, check=True)
    threads = os.cpu_count() or 2
    work = tempfile.mkdtemp(prefix="fg-sqlbench-")
    data = os.path.join(work, "data")
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        p = start(fg, data, port, threads)
        start_ms = (int(time.time() * 1000) // 3_600_000) * 3_600_000
        sim = [fg, "simulate", "--url", base + "/api/v1/write", "--clusters", str(a.clusters),
               "--nodes", str(a.nodes), "--pods-per-node", str(a.pods_per_node),
               "--start-ms", str(start_ms), "--backfill-hours", str(a.hours), "--duration", "0s"]
        log("+ " + " ".join(sim))
        t = time.time()
        subprocess.run(sim, check=True, capture_output=True)
        log(f"backfill: {time.time() - t:.0f} s")
        stop(p)  # flushes to Parquet
        p = start(fg, data, port, threads)
        n = sql(base, "SELECT count(*) AS n FROM samples")[0]["n"]
        log(f"samples: {n:,}")
        if n < a.min_samples:
            raise SystemExit(f"only {n:,} samples; raise --hours")
        S = f"read_parquet('{data}/samples/**/*.parquet', hive_partitioning=true)"
        C = f"read_parquet('{data}/catalog/*.parquet')"
        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        rows = []
        for name, ours, theirs in QUERIES:
            theirs = theirs.format(S=S, C=C)
            fg_t, dk_t = [], []
            for _ in range(a.runs):
                t = time.time()
                got = sql(base, ours)
                fg_t.append(time.time() - t)
                t = time.time()
                want = con.execute(theirs).fetchall()
                dk_t.append(time.time() - t)
            got_rows = [list(r.values()) for r in got]
            agrees = same(got_rows, [list(r) for r in want])
            fg_m, dk_m = statistics.median(fg_t), statistics.median(dk_t)
            rows.append({"query": name, "fleetgate_s": fg_m, "duckdb_s": dk_m,
                         "ratio": fg_m / dk_m if dk_m else None, "answers_agree": agrees,
                         "rows": len(got_rows)})
            log(f"{name}: fleetgate {fg_m:.2f} s, DuckDB {dk_m:.2f} s, ratio {fg_m / dk_m:.2f}, "
                f"{len(got_rows)} rows, agree {agrees}")
        stop(p)
        print(f"\n{n:,} samples, {threads} threads each, median of {a.runs}\n")
        print("| query | fleetgate s | DuckDB s | fleetgate / DuckDB | answers agree |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['query']} | {r['fleetgate_s']:.2f} | {r['duckdb_s']:.2f} | "
                  f"{r['ratio']:.2f} | {'yes' if r['answers_agree'] else 'NO'} |")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"samples": n, "threads": threads, "runs": a.runs, "queries": rows}, fh, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
