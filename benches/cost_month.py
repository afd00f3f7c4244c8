#!/usr/bin/env python3
"""The month-long fleet cost report: `/allocation/compute?window=lastmonth&aggregate=namespace`
over 50 clusters with about 20,000 containers, and how it grows at 5x the containers.

1. A release gateway gets a `fleetgate simulate` backfill (50 clusters x 10 nodes x 20 pods by
   default, one scrape a minute) from yesterday 00:00 UTC to now. Its cost materializer computes
   every closed hour from the samples and rolls yesterday up into a day: the time from the end of
   the backfill until yesterday's day rows exist is the ETL figure (hours computed per second).
2. The gateway is stopped. Yesterday's materialized day rows (`cost_allocation` and `cost_assets`,
   container grain) are copied by DuckDB into every day of last month, their window and
   start/end times shifted to that day (a month of the same simulated day: the same row count and
   shape a month of that fleet has; backfilling 30 days of samples of this fleet would take this
   machine hours). A second data directory gets the same month at --scale times the clusters
   (each copy renamed), for the growth figure.
3. Each gateway is started again and the report is asked --runs times: OpenCost's
   `/allocation/compute` by namespace (accumulated), by cluster and namespace, and a SQL
   `GROUP BY namespace` over `cost_allocation`. It checks that the month's total is the
   day's total times the days of the month, and prints median seconds per query.

    python3 benches/cost_month.py [--clusters 50] [--nodes 10] [--pods-per-node 20] [--scale 5]
"""

import argparse
import calendar
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, rss_bytes, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOUR = 3_600_000
DAY = 24 * HOUR


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start(fg, data, port, threads):
    env = dict(os.environ, FLEETGATE_LOG="warn", FLEETGATE__QUERY__THREADS=str(threads),
               FLEETGATE__QUERY__TIMEOUT="1h", FLEETGATE__SQL__TIMEOUT="1h",
               FLEETGATE__SQL__MEMORY_LIMIT=str(4 << 30),
               FLEETGATE__COST__MATERIALIZE_INTERVAL="5s")
    p = subprocess.Popen([fg, "serve", "--data-dir", data, "--http-addr", f"127.0.0.1:{port}",
                          "--pg-addr", "off"], env=env)
    wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=600)
    return p


def stop(p):
    p.terminate()
    p.wait(timeout=900)


def get(base, path):
    t = time.time()
    with urllib.request.urlopen(base + path, timeout=3600) as r:
        body = json.loads(r.read())
    return time.time() - t, body


def sql(base, text):
    t = time.time()
    req = urllib.request.Request(base + "/api/v1/sql", data=text.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        rows = json.loads(r.read())["rows"]
    return time.time() - t, rows


def iso(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def date_of(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d")


def last_month_days(now_ms):
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc).date()
    first = today.replace(day=1)
    prev = (first - dt.timedelta(days=1)).replace(day=1)
    n = calendar.monthrange(prev.year, prev.month)[1]
    start = int(dt.datetime(prev.year, prev.month, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    return [start + i * DAY for i in range(n)]


TIME_COLS = {"cost_allocation": ["window_start", "window_end", "start", "end"],
             "cost_assets": ["window_start", "window_end", "start", "end"]}


def replicate(con, src_data, dst_data, day0, days, scale):
    """Writes day0's day rows of both tables into each of `days` under dst_data, `scale` copies of
    the fleet (copy k > 0 has its clusters named <cluster>-x<k>)."""
    for table, cols in TIME_COLS.items():
        src = f"{src_data}/{table}/resolution=day/date={date_of(day0)}/part.parquet"
        names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{src}')").fetchall()]
        for d in days:
            delta = d - day0
            parts = []
            for k in range(scale):
                sel = []
                for n in names:
                    q = f'"{n}"'
                    if n in cols:
                        sel.append(f"epoch_ms(epoch_ms({q}) + {delta})::TIMESTAMP_MS AS {q}")
                    elif k > 0 and n == "cluster":
                        sel.append(f"cluster || '-x{k}' AS cluster")
                    elif k > 0 and n == "name" and table == "cost_allocation":
                        sel.append(f"cluster || '-x{k}' || substr(name, length(cluster) + 1) AS name")
                    else:
                        sel.append(q)
                parts.append(f"SELECT {', '.join(sel)} FROM read_parquet('{src}')")
            out_dir = f"{dst_data}/{table}/resolution=day/date={date_of(d)}"
            os.makedirs(out_dir, exist_ok=True)
            con.execute(
                f"COPY ({' UNION ALL '.join(parts)}) TO '{out_dir}/part.parquet' "
                f"(FORMAT parquet, COMPRESSION zstd, KV_METADATA {{'fleetgate.format': '{table}/v1'}})")


def report(fg, data, threads, runs, days, label):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t = time.time()
    p = start(fg, data, port, threads)
    log(f"[{label}] ready in {time.time() - t:.1f} s")
    window = urllib.parse.quote(f"{iso(days[0])},{iso(days[-1] + DAY)}")
    queries = [
        ("lastmonth by namespace, accumulated",
         f"/allocation/compute?window={window}&aggregate=namespace&accumulate=true"),
        ("lastmonth by cluster, namespace, accumulated",
         f"/allocation/compute?window={window}&aggregate=cluster,namespace&accumulate=true"),
        ("lastmonth by namespace, daily steps",
         f"/allocation/compute?window={window}&aggregate=namespace&step=1d"),
    ]
    out = []
    try:
        for name, path in queries:
            ts = []
            body = None
            for _ in range(runs):
                s, body = get(base, path)
                ts.append(s)
            total = sum(v.get("totalCost", 0.0) for step in body["data"] for v in step.values())
            out.append({"query": name, "median_s": statistics.median(ts), "min_s": min(ts),
                        "total_cost": total, "groups": sum(len(s) for s in body["data"])})
            log(f"[{label}] {name}: median {statistics.median(ts):.3f} s, groups {out[-1]['groups']}, "
                f"total {total:.2f}")
        q = ("SELECT namespace, sum(total_cost) AS cost FROM cost_allocation "
             f"WHERE resolution = 'day' AND window_start >= TIMESTAMP '{iso(days[0])}' "
             f"AND window_start < TIMESTAMP '{iso(days[-1] + DAY)}' GROUP BY 1 ORDER BY 2 DESC")
        ts = []
        rows = []
        for _ in range(runs):
            s, rows = sql(base, q)
            ts.append(s)
        out.append({"query": "SQL: cost_allocation by namespace", "median_s": statistics.median(ts),
                    "min_s": min(ts), "total_cost": sum(r["cost"] for r in rows), "groups": len(rows)})
        log(f"[{label}] SQL by namespace: median {statistics.median(ts):.3f} s")
        rss = rss_bytes(p.pid)
    finally:
        stop(p)
    return out, rss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clusters", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=20)
    ap.add_argument("--scale", type=int, default=5, help="copies of the fleet for the growth figure")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", help="work directory to reuse (phase 1 is skipped if it is done)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    import duckdb  # noqa: PLC0415 (PyPI duckdb; the bench needs it)

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fg = os.path.join(target, "release", "fleetgate")
    subprocess.run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT, check=True)
    threads = os.cpu_count() or 2
    work = a.keep or tempfile.mkdtemp(prefix="fg-costbench-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    state_file = os.path.join(work, "phase1.json")
    result = {}
    try:
        if os.path.exists(state_file):
            with open(state_file) as fh:
                result = json.load(fh)
            log(f"reusing phase 1 from {work}")
        else:
            now = int(time.time() * 1000)
            start_ms = now // 60_000 * 60_000
            day0 = now // DAY * DAY - DAY
            hours = (start_ms - day0) / HOUR
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            p = start(fg, data, port, threads)
            sim = [fg, "simulate", "--url", base + "/api/v1/write", "--clusters", str(a.clusters),
                   "--nodes", str(a.nodes), "--pods-per-node", str(a.pods_per_node),
                   "--scrape-interval", "60s", "--start-ms", str(start_ms),
                   "--backfill-hours", f"{hours:.4f}", "--duration", "0s"]
            log("+ " + " ".join(sim))
            t = time.time()
            subprocess.run(sim, check=True, capture_output=True)
            backfill_s = time.time() - t
            log(f"backfill of {hours:.1f} h: {backfill_s:.0f} s")
            _, body = get(base, "/api/v1/query?query=" + urllib.parse.quote(
                "count(last_over_time(kube_pod_container_status_running[2m]))")
                + f"&time={start_ms / 1000 - 60}")
            live = int(float(body["data"]["result"][0]["value"][1])) if body["data"]["result"] else 0
            day_file = f"{data}/cost_allocation/resolution=day/date={date_of(day0)}/part.parquet"
            t = time.time()
            while not os.path.exists(day_file):
                if time.time() - t > 6 * 3600:
                    raise SystemExit("yesterday was not materialized within 6 h")
                time.sleep(2)
            etl_s = time.time() - t
            hours_done = len([d for d in os.listdir(f"{data}/cost_allocation/resolution=hour")
                              for _ in os.listdir(f"{data}/cost_allocation/resolution=hour/{d}")])
            log(f"materialized {hours_done} hours and yesterday's day in {etl_s:.0f} s")
            _, rows = sql(base, "SELECT count(*) AS n, count(DISTINCT cluster) AS c, sum(total_cost) AS cost "
                                f"FROM cost_allocation WHERE resolution = 'day' AND window_start = TIMESTAMP '{iso(day0)}'")
            stop(p)
            result = {"day0": day0, "now": now, "backfill_hours": hours, "backfill_s": backfill_s,
                      "containers_live": live, "day_rows": rows[0]["n"], "clusters": rows[0]["c"],
                      "day_cost": rows[0]["cost"], "etl_s": etl_s, "hours_materialized": hours_done}
            with open(state_file, "w") as fh:
                json.dump(result, fh)
        log(json.dumps(result))
        days = last_month_days(result["now"])
        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        runs = {}
        for scale in (1, a.scale):
            d = os.path.join(work, f"month-x{scale}")
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(data, d)
            t = time.time()
            replicate(con, data, d, result["day0"], days, scale)
            log(f"x{scale}: wrote {len(days)} days in {time.time() - t:.0f} s")
            out, rss = report(fg, d, threads, a.runs, days, f"x{scale}")
            want = result["day_cost"] * len(days) * scale
            for r in out:
                r["total_matches"] = abs(r["total_cost"] - want) <= 1e-6 * max(1.0, want) + 1e-3 * want
            runs[scale] = {"containers": result["day_rows"] * scale, "rss": rss, "queries": out}
            shutil.rmtree(d, ignore_errors=True)
        print(f"\n{result['clusters']} clusters, {result['containers_live']:,} containers running "
              f"({result['day_rows']:,} container rows in a day, churn included); "
              f"{len(days)} days; median of {a.runs}; {threads} threads\n")
        print(f"ETL: {result['hours_materialized']} hours computed from the samples and rolled up "
              f"in {result['etl_s']:.0f} s ({result['etl_s'] / max(1, result['hours_materialized']):.1f} s per hour)\n")
        print(f"| query | {result['day_rows']:,} rows/day (s) | {runs[a.scale]['containers']:,} rows/day (s) | growth | totals match |")
        print("|---|---|---|---|---|")
        for q1, q5 in zip(runs[1]["queries"], runs[a.scale]["queries"]):
            print(f"| {q1['query']} | {q1['median_s']:.3f} | {q5['median_s']:.3f} | "
                  f"{q5['median_s'] / q1['median_s']:.2f} | "
                  f"{'yes' if q1['total_matches'] and q5['total_matches'] else 'NO'} |")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"phase1": result, "runs": runs}, fh, indent=1)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
