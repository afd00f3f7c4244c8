#!/usr/bin/env python3
"""Whole-system read-isolation benchmark: does a heavy PromQL load slow down remote-write
acknowledgements? One fleetgate process, backfilled first, then a steady live-shaped remote-write
load at a fixed request rate, in two phases side by side:

  A) the steady write load alone (--phase-secs),
  B) the same write load plus --query-clients loops of heavy range queries over the backfill
     (`histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m])))` and
     `sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))`, ~721 points).

    python3 benches/read_isolation.py            # short: 3 clusters x 10 nodes x 20 pods, 6 h backfill
    python3 benches/read_isolation.py --full     # 6 x 15 x 25 = 107,694 series, 24 h backfill

Reports per phase: write requests acknowledged, ack latency p50 / p99 / max (client-side, from the
start of the POST to the end of reading its response), non-2xx, queries completed and their p50,
the gateway's CPU seconds (/proc), and p99(B) / p99(A) (the aim: <= 1.5).

The write load is open-loop: request i is due at t0 + i / --rate, whatever happened to the
previous ones; a pool of --senders threads (each with its own keep-alive connection) sends each due
request as soon as one is free. Latency is measured from the actual send, and how late the send
was against its schedule is reported (max lag): a large lag means the sender, not the gateway, set
the pace, and the figures are then not trustworthy. The bodies are recorded by `fleetgate simulate
--dry-run --record-dir` (the live scrapes that follow the backfill, ~2,000 series x 1 sample per
request as a Prometheus queue sends), timestamped in the recent past so every sample is accepted
(within retention, not in the future).

Default: open dev mode (cluster from the X-Fleetgate-Cluster header). Against a gateway with
credentials: --config FILE, --write-token TOKEN (`{cluster}` in it becomes sim-00, sim-01, ...),
--read-auth user:password (HTTP Basic on every read). --gateway-env KEY=VALUE sets config keys,
e.g. --gateway-env FLEETGATE__QUERY__THREADS=1. Standard library only.
"""

import argparse
import base64
import http.client
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from common import TICK, cpu_seconds, free_port, rss_bytes, wait_http
from common import replay as common_replay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRAPE_MS = 15_000
BACKFILL_SAMPLES_PER_SERIES = 120  # `simulate`'s default --backfill-samples-per-series

QUERIES = [
    ("http_p99", "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"),
    ("cpu_by_namespace", "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))"),
]

# counters of /metrics diffed per phase (background work and refusals that explain a figure)
COUNTERS = ["fleetgate_flushes_total", "fleetgate_compactions_total", "fleetgate_catalog_compactions_total",
            "fleetgate_samples_rejected_total", "fleetgate_queries_rejected_total"]
FSYNC = "fleetgate_wal_fsync_duration_seconds"  # its count, sum and buckets up to 50 ms, per phase

T0 = time.time()
PROCS = []


def log(msg):
    print(f"[{time.time() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def pct(xs, p):
    """Nearest-rank percentile (as query_system.py)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def settle(pid, max_wait=90, idle_frac=0.05, window=3.0):
    """Waits until the server's CPU stays under `idle_frac` of a core for `window` seconds (flushes,
    compactions finished), at most `max_wait` seconds (as query_system.py)."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        c0 = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - c0 < idle_frac * window:
            break
    return time.time() - t0


def host_busy_seconds():
    """CPU seconds the whole machine spent busy (all cores, /proc/stat), to see other load."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is counted in user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / TICK


def stop(p, timeout=300):
    if p is not None and p.poll() is None:
        log(f"stopping pid {p.pid}")
        p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def on_signal(signum, _frame):
    # unwinds main() through its `finally`, which stops the threads and every started process
    raise SystemExit(128 + signum)


class Gateway:
    """Connection details and credentials for one gateway."""

    def __init__(self, port, read_auth, write_token):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.read_headers = {}
        if read_auth:
            self.read_headers["Authorization"] = "Basic " + base64.b64encode(read_auth.encode()).decode()
        self.write_token = write_token

    def write_headers(self, cluster):
        h = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
             "X-Prometheus-Remote-Write-Version": "0.1.0", "X-Fleetgate-Cluster": cluster,
             "User-Agent": "fleetgate-read-isolation-bench"}
        if self.write_token:
            h["Authorization"] = "Bearer " + self.write_token.replace("{cluster}", cluster)
        return h

    def conn(self, timeout):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


def request(gw, conn, method, path, body, headers):
    """One request on a keep-alive connection (reopened once if the server had closed it).
    Returns (connection, status or None, body, error text or None)."""
    for attempt in (0, 1):
        try:
            if conn is None:
                conn = gw.conn(timeout=600)
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
            return conn, r.status, data, r.getheader("Retry-After")
        except (http.client.HTTPException, OSError) as e:
            if conn is not None:
                conn.close()
            conn = None
            if attempt == 1:
                return None, None, str(e).encode(), None
    raise AssertionError("unreachable")


def query(gw, conn, q, start, end, step):
    params = urllib.parse.urlencode({"query": q, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
    headers = dict(gw.read_headers, **{"Content-Type": "application/x-www-form-urlencoded"})
    t = time.perf_counter()
    conn, status, body, retry_after = request(gw, conn, "POST", "/api/v1/query_range", params.encode(), headers)
    lat = time.perf_counter() - t
    ok, note = False, None
    if status == 200:
        try:
            doc = json.loads(body)
            ok = doc.get("status") == "success"
            if ok:
                note = f"{len(doc['data']['result'])} series"
            else:
                note = doc.get("error")
        except ValueError:
            note = "unparsable body"
    else:
        note = f"HTTP {status}: {body[:200].decode(errors='replace')}"
    return conn, lat, ok, status, note, retry_after


def metrics(gw):
    """Sums of the COUNTERS families on /metrics (best effort: {} if it cannot be read)."""
    conn, status, body, _ = request(gw, None, "GET", "/metrics", None, gw.read_headers)
    if conn is not None:
        conn.close()
    out = {}
    if status != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == FSYNC + "_bucket" and 'le="0.05"' in line:
            name = FSYNC + "_le_50ms"
        elif name not in COUNTERS and name not in (FSYNC + "_count", FSYNC + "_sum"):
            continue
        try:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            pass
    return out


def probe(gw, at_s, timeout=300):
    """Waits until an instant query at the end of the backfill returns a non-empty count."""
    t0 = time.time()
    params = urllib.parse.urlencode({"query": "count(container_memory_working_set_bytes)", "time": f"{at_s:.3f}"})
    headers = dict(gw.read_headers, **{"Content-Type": "application/x-www-form-urlencoded"})
    last = None
    while time.time() - t0 < timeout:
        conn, status, body, _ = request(gw, None, "POST", "/api/v1/query", params.encode(), headers)
        if conn is not None:
            conn.close()
        last = (status, body[:200])
        if status == 200:
            res = json.loads(body)["data"]["result"]
            if res and float(res[0]["value"][1]) > 0:
                return time.time() - t0, float(res[0]["value"][1])
        elif status in (401, 403):
            raise SystemExit(f"probe query refused: HTTP {status} {body[:200]!r} (check --read-auth)")
        time.sleep(0.5)
    raise SystemExit(f"no data after {timeout} s; last answer {last}")


def py_replay(gw, rows, concurrency, max_retries=10):
    """Sends recorded bodies (path, cluster) with `concurrency` threads, retrying 5xx/429 as the
    simulator does. Used for the backfill when --write-token is a fixed token, which `simulate
    --token-prefix` cannot send. Returns (wall seconds, {"errors": n})."""
    it = iter(rows)
    lock = threading.Lock()
    errors = [0]

    def worker():
        conn = None
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                break
            path, cluster = item
            with open(path, "rb") as f:
                body = f.read()
            for attempt in range(max_retries + 1):
                conn, status, text, retry_after = request(gw, conn, "POST", "/api/v1/write", body,
                                                          gw.write_headers(cluster))
                if status is not None and 200 <= status < 300:
                    break
                final = status is not None and status != 429 and status < 500  # the sender drops it
                if final or attempt == max_retries:
                    log(f"backfill request {os.path.basename(path)}: HTTP {status} {text[:200]!r}")
                    with lock:
                        errors[0] += 1
                    break
                time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else 0.5)
        if conn is not None:
            conn.close()

    t = time.time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.time() - t, {"errors": errors[0]}


class LiveSender:
    """Open-loop remote-write load: request i is due at t0 + i / rate; `senders` threads with
    keep-alive connections send each due request as soon as one of them is free."""

    def __init__(self, gw, bodies, rate, senders):
        self.gw, self.bodies, self.rate = gw, bodies, rate
        self.q = queue.Queue()
        self.stop = threading.Event()
        self.results = []  # (i, due, start, end, status, error) in completion order
        self.lock = threading.Lock()
        self.exhausted = False
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(senders)]
        self.clock = threading.Thread(target=self._schedule, daemon=True)

    def start(self, t0, until):
        self.t0, self.until = t0, until
        for w in self.workers:
            w.start()
        self.clock.start()

    def _schedule(self):
        i = 0
        while not self.stop.is_set():
            due = self.t0 + i / self.rate
            if due >= self.until:
                break
            if i >= len(self.bodies):
                self.exhausted = True
                break
            d = due - time.perf_counter()
            if d > 0:
                time.sleep(d)
            self.q.put((i, due))
            i += 1
        for _ in self.workers:
            self.q.put(None)

    def _work(self):
        conn = None
        while True:
            item = self.q.get()
            if item is None or self.stop.is_set():
                break
            i, due = item
            cluster, body = self.bodies[i]
            headers = self.gw.write_headers(cluster)
            start = time.perf_counter()
            conn, status, text, _ = request(self.gw, conn, "POST", "/api/v1/write", body, headers)
            end = time.perf_counter()
            err = None if status is not None and 200 <= status < 300 else text[:200].decode(errors="replace")
            with self.lock:
                self.results.append((i, due, start, end, status, err))
        if conn is not None:
            conn.close()

    def join(self, timeout):
        self.clock.join(timeout)
        deadline = time.perf_counter() + timeout
        for w in self.workers:
            w.join(max(0.0, deadline - time.perf_counter()))

    def halt(self):
        self.stop.set()


class QueryClient:
    """Loops the heavy range queries back to back until stopped; client k starts at query k."""

    def __init__(self, gw, k, ranges):
        self.gw, self.k, self.ranges = gw, k, ranges
        self.stop = threading.Event()
        self.results = []  # (qid, start, end, ok, status, note)
        self.t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        conn, n = None, self.k
        while not self.stop.is_set():
            qid, q = QUERIES[n % len(QUERIES)]
            start_s, end_s, step = self.ranges
            t = time.perf_counter()
            conn, lat, ok, status, note, retry_after = query(self.gw, conn, q, start_s, end_s, step)
            self.results.append((qid, t, t + lat, ok, status, note))
            if status == 503:  # the query pool is full: back off as told
                self.stop.wait(float(retry_after) if retry_after and retry_after.isdigit() else 1.0)
            n += 1
        if conn is not None:
            conn.close()


def record(fg, rec_all, a, shape, start_ms, live_ticks):
    sim = [fg, "simulate", "--dry-run", "--fast", "--record-dir", rec_all, "--seed", str(a.seed),
           "--clusters", str(shape[0]), "--nodes", str(shape[1]), "--pods-per-node", str(shape[2]),
           "--services", str(a.services), "--start-ms", str(start_ms),
           "--backfill-hours", str(shape[3]), "--duration", f"{live_ticks * SCRAPE_MS // 1000}s"]
    log("+ " + " ".join(sim))
    out = subprocess.run(sim, check=True, capture_output=True, text=True)
    gen = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            gen = json.loads(line)
    return gen


def read_index(rec):
    with open(os.path.join(rec, "index.tsv")) as f:
        lines = f.read().splitlines()
    rows = []
    for r in lines[1:]:
        if r:
            seq, cluster, series, samples, nbytes, epoch = r.split("\t")[:6]
            rows.append({"seq": int(seq), "cluster": cluster, "series": int(series), "samples": int(samples),
                         "bytes": int(nbytes), "epoch": int(epoch), "line": r,
                         "path": os.path.join(rec, f"{int(seq):08}.snappy")})
    return lines[0], rows


def summarize_phase(name, sender_results, lo, hi, queries, cpu, counters, self_cpu, host_cpu):
    """Figures of the write requests *due* in [lo, hi) and the queries *finished* in it."""
    reqs = [r for r in sender_results if lo <= r[1] < hi]
    ok = [r[3] - r[2] for r in reqs if r[5] is None]
    bad = [r for r in reqs if r[5] is not None]
    lags = [r[2] - r[1] for r in reqs]
    qs = [q for q in queries if lo <= q[2] < hi]
    qok = [q[2] - q[1] for q in qs if q[3]]
    per_q = {}
    for qid, _ in QUERIES:
        lat = [q[2] - q[1] for q in qs if q[0] == qid and q[3]]
        per_q[qid] = {"completed": len(lat), "errors": sum(1 for q in qs if q[0] == qid and not q[3]),
                      "p50_ms": pct(lat, 50) * 1e3, "p95_ms": pct(lat, 95) * 1e3,
                      "max_ms": max(lat) * 1e3 if lat else float("nan")}
    errors = {}
    for r in bad:
        key = f"HTTP {r[4]}" if r[4] is not None else "connection"
        errors[key] = errors.get(key, 0) + 1
    return {
        "phase": name, "secs": hi - lo, "requests_due": len(reqs), "acked": len(ok), "non_2xx": len(bad),
        "non_2xx_by_status": errors, "error_examples": [r[5] for r in bad[:3]],
        "ack_p50_ms": pct(ok, 50) * 1e3, "ack_p90_ms": pct(ok, 90) * 1e3, "ack_p99_ms": pct(ok, 99) * 1e3,
        "ack_max_ms": max(ok) * 1e3 if ok else float("nan"),
        "ack_mean_ms": sum(ok) / len(ok) * 1e3 if ok else float("nan"),
        "send_lag_max_ms": max(lags) * 1e3 if lags else float("nan"),
        "sends_late_over_10ms": sum(1 for x in lags if x > 0.010),
        "queries_completed": len(qok), "query_errors": len(qs) - len(qok),
        "query_p50_ms": pct(qok, 50) * 1e3, "queries": per_q,
        "gateway_cpu_s": cpu, "gateway_cores": cpu / (hi - lo), "bench_cpu_s": self_cpu,
        "host_busy_cores": host_cpu / (hi - lo),
        "other_processes_cores": max(0.0, host_cpu - cpu - self_cpu) / (hi - lo),
        "counters": counters,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true",
                    help="target shape: 6 clusters x 15 nodes x 25 pods (>100k series), 24 h backfill")
    ap.add_argument("--clusters", type=int)
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--pods-per-node", type=int)
    ap.add_argument("--services", type=int, default=4)
    ap.add_argument("--backfill-hours", type=int)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--phase-secs", type=float, default=60.0, help="length of phase A and of phase B")
    ap.add_argument("--warmup-secs", type=float, default=5.0, help="write load before phase A, not counted")
    ap.add_argument("--rate", type=float, default=20.0, help="remote-write requests per second")
    ap.add_argument("--senders", type=int, default=16, help="sender threads (requests in flight at most)")
    ap.add_argument("--query-clients", type=int, default=4, help="concurrent heavy query loops in phase B")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight during the backfill")
    ap.add_argument("--no-restart", action="store_true",
                    help="do not restart the gateway after the backfill (by default SIGTERM flushes the "
                         "backfill to Parquet and both phases run on the restarted process)")
    ap.add_argument("--config", help="gateway config file (fleetgate serve --config)")
    ap.add_argument("--read-auth", metavar="USER:PASSWORD", help="HTTP Basic credentials for every read")
    ap.add_argument("--write-token", metavar="TOKEN",
                    help="bearer token for every write; `{cluster}` in it becomes the cluster name")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the gateway, e.g. FLEETGATE__QUERY__THREADS=1 (repeatable)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    a = ap.parse_args()
    shape = [6, 15, 25, 24] if a.full else [3, 10, 20, 6]
    for i, v in enumerate((a.clusters, a.nodes, a.pods_per_node, a.backfill_hours)):
        if v:
            shape[i] = v
    gw_env = {}
    for kv in a.gateway_env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error(f"--gateway-env wants KEY=VALUE, got {kv!r}")
        gw_env[k] = v
    if a.rate <= 0 or a.phase_secs <= 0 or a.senders < 1 or a.query_clients < 0:
        ap.error("--rate, --phase-secs and --senders must be positive, --query-clients >= 0")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cmdline = "python3 " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])
    log(f"command: {cmdline}")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fg = os.path.join(target, "release", "fleetgate")
    run(["cargo", "build", "--release", "-p", "fleetgate", "--quiet"], cwd=ROOT)

    work = tempfile.mkdtemp(prefix="fg-isobench-")
    p = None
    sender, clients = None, []
    try:
        # how many live requests one scrape of this fleet makes (a one-scrape dry run)
        probe_dir = os.path.join(work, "probe")
        run([fg, "simulate", "--dry-run", "--fast", "--record-dir", probe_dir, "--seed", str(a.seed),
             "--clusters", str(shape[0]), "--nodes", str(shape[1]), "--pods-per-node", str(shape[2]),
             "--services", str(a.services), "--duration", f"{SCRAPE_MS // 1000}s"], capture_output=True)
        per_scrape = len(read_index(probe_dir)[1])
        shutil.rmtree(probe_dir)
        needed = math.ceil(a.rate * (a.warmup_secs + 2 * a.phase_secs)) + 1
        live_ticks = math.ceil(needed / per_scrape * 1.1) + 2
        # Timestamps: the live scrapes span live_ticks x 15 s of simulated time (much faster than
        # real time at --rate), so they are placed to end 2 minutes before now; the backfill lies
        # before them. Everything is within retention and nothing is in the future.
        now_ms = int(time.time() * 1000)
        start_ms = (now_ms - live_ticks * SCRAPE_MS - 120_000) // 1000 * 1000
        rec_all = os.path.join(work, "payloads")
        t = time.time()
        gen = record(fg, rec_all, a, shape, start_ms, live_ticks)
        header, rows = read_index(rec_all)
        backfill_ticks = round(shape[3] * 3_600_000 / SCRAPE_MS)
        n_backfill_epochs = math.ceil(backfill_ticks / BACKFILL_SAMPLES_PER_SERIES)
        back_rows = [r for r in rows if r["epoch"] < n_backfill_epochs]
        live_rows = [r for r in rows if r["epoch"] >= n_backfill_epochs]
        assert all(r["samples"] == r["series"] for r in live_rows), "live requests carry 1 sample per series"
        rec_back = os.path.join(work, "backfill")
        os.makedirs(rec_back)
        with open(os.path.join(rec_back, "index.tsv"), "w") as fh:
            fh.write(header + "\n")
            for r in back_rows:
                os.link(r["path"], os.path.join(rec_back, os.path.basename(r["path"])))
                fh.write(r["line"] + "\n")
        live_rows = live_rows[:needed]
        bodies = []
        for r in live_rows:
            with open(r["path"], "rb") as f:
                bodies.append((r["cluster"], f.read()))
        back_samples = sum(r["samples"] for r in back_rows)
        live_samples = sum(r["samples"] for r in live_rows)
        live_bytes = sum(len(b) for _, b in bodies)
        log(f"workload: {shape[0]} clusters x {shape[1]} nodes x {shape[2]} pods, {a.services} services, "
            f"{gen.get('active_series', 0)} active series; backfill {shape[3]} h: {back_samples} samples in "
            f"{len(back_rows)} requests; live: {per_scrape} requests per scrape, {len(bodies)} requests "
            f"({live_samples} samples, mean body {live_bytes / max(1, len(bodies)) / 1024:.1f} KiB) "
            f"(recorded in {time.time() - t:.1f} s)")

        end_s = start_ms / 1000  # the queries cover the backfill, which ends where the live scrapes start
        span = shape[3] * 3600
        step = max(SCRAPE_MS // 1000, round(span / 720 / 15) * 15)
        ranges = (end_s - span, end_s, step)
        points = int(span // step) + 1

        port = free_port()
        gw = Gateway(port, a.read_auth, a.write_token)
        data = os.path.join(work, "fg-data")
        cmd = [fg, "serve", "--data-dir", data, "--http-addr", f"127.0.0.1:{port}"]
        if a.config:
            cmd += ["--config", os.path.abspath(a.config)]
        env = dict(os.environ, FLEETGATE_LOG=os.environ.get("FLEETGATE_LOG", "warn"), **gw_env)
        gw_log_path = os.path.join(work, "gateway.log")
        gw_log = open(gw_log_path, "a")

        def start_gateway():
            log("+ " + " ".join(f"{k}={v}" for k, v in gw_env.items()) + (" " if gw_env else "") + " ".join(cmd))
            proc = subprocess.Popen(cmd, env=env, stdout=gw_log, stderr=gw_log)
            PROCS.append(proc)
            try:
                wait_http(gw.base + "/-/ready", timeout=180)
            except SystemExit:
                stop(proc)
                raise
            return proc

        p = start_gateway()
        log("backfill: replaying")
        tok = a.write_token
        if tok is None or (tok.endswith("{cluster}") and tok.count("{cluster}") == 1):
            # the simulator's replayer: X-Fleetgate-Cluster header, `Bearer <prefix><cluster>`
            extra = [] if tok is None else ["--token-prefix", tok[: -len("{cluster}")]]
            t = time.time()
            out = subprocess.run([fg, "simulate", "--replay-dir", rec_back, "--url", gw.base + "/api/v1/write",
                                  "--concurrency", str(a.concurrency)] + extra, capture_output=True, text=True)
            wall = time.time() - t
            summ = {"errors": 0 if out.returncode == 0 else -1}
            for line in out.stdout.splitlines():
                if line.startswith("{"):
                    summ = json.loads(line)
            if out.returncode != 0:
                log(f"backfill replay exited {out.returncode}: {out.stderr.strip()[-500:]}")
        else:
            wall, summ = py_replay(gw, [(r["path"], r["cluster"]) for r in back_rows], a.concurrency)
        if summ.get("errors"):
            raise SystemExit(f"backfill: {summ.get('errors')} requests failed")
        log(f"backfill: {wall:.1f} s ({back_samples / wall / 1e6:.2f} M samples/s), errors {summ.get('errors')}")
        if not a.no_restart:
            stop(p)
            p = start_gateway()
        probe_s, probe_n = probe(gw, end_s)
        settle_s = settle(p.pid)
        log(f"probe answered after {probe_s:.1f} s ({probe_n:.0f} series), settled {settle_s:.1f} s, "
            f"RSS {rss_bytes(p.pid) / 2**20:.0f} MiB")

        # each query alone (no write load): 1 cold run, 2 warm
        alone = {}
        for qid, q in QUERIES:
            runs = []
            for _ in range(3):
                conn, lat, ok, status, note, _ = query(gw, None, q, *ranges)
                if conn is not None:
                    conn.close()
                if not ok:
                    raise SystemExit(f"query {qid} failed: {note}")
                runs.append(lat)
            alone[qid] = {"cold_ms": runs[0] * 1e3, "warm_ms": [x * 1e3 for x in runs[1:]], "result": note}
            log(f"  {qid} alone: cold {runs[0] * 1e3:.0f} ms, warm {runs[1] * 1e3:.0f} / {runs[2] * 1e3:.0f} ms ({note})")
        settle(p.pid, max_wait=30)

        # the phases: warmup, A (writes alone), B (writes + query loops), on one clock
        t0 = time.perf_counter() + 0.2
        ta, tb, tend = t0 + a.warmup_secs, t0 + a.warmup_secs + a.phase_secs, t0 + a.warmup_secs + 2 * a.phase_secs
        sender = LiveSender(gw, bodies, a.rate, a.senders)
        sender.start(t0, tend)
        log(f"live load: {a.rate:g} requests/s, {a.senders} sender threads; warmup {a.warmup_secs:g} s, "
            f"phase A {a.phase_secs:g} s, phase B {a.phase_secs:g} s with {a.query_clients} query clients")

        def at(t):
            d = t - time.perf_counter()
            if d > 0:
                time.sleep(d)
            return cpu_seconds(p.pid), sum(os.times()[:2]), metrics(gw), host_busy_seconds()

        snap_a = at(ta)
        snap_b = at(tb)
        clients = [QueryClient(gw, k, ranges) for k in range(a.query_clients)]
        for c in clients:
            c.t.start()
        snap_end = at(tend)
        for c in clients:
            c.stop.set()
        sender.join(timeout=120)
        for c in clients:
            c.t.join(timeout=600)
        if sender.exhausted:
            log("warning: the recording ran out before the end of phase B")
        qres = [r for c in clients for r in c.results]
        def diff(x, y):
            return {k: y[2].get(k, 0.0) - x[2].get(k, 0.0) for k in set(x[2]) | set(y[2])}

        phases = [
            summarize_phase("A: writes alone", sender.results, ta, tb, [], snap_b[0] - snap_a[0],
                            diff(snap_a, snap_b), snap_b[1] - snap_a[1], snap_b[3] - snap_a[3]),
            summarize_phase(f"B: writes + {a.query_clients} query loops", sender.results, tb, tend, qres,
                            snap_end[0] - snap_b[0], diff(snap_b, snap_end), snap_end[1] - snap_b[1],
                            snap_end[3] - snap_b[3]),
        ]
        # every write request and query, for plots: seconds from phase A's start
        raw_writes = [[round(r[1] - ta, 4), round((r[2] - r[1]) * 1e3, 2), round((r[3] - r[2]) * 1e3, 2), r[4]]
                      for r in sorted(sender.results)]
        raw_queries = [[q[0], round(q[1] - ta, 3), round((q[2] - q[1]) * 1e3, 1), q[3]] for q in qres]
        late_queries = sum(1 for q in qres if q[2] >= tend)
        for q in qres:
            if not q[3]:
                log(f"query error: {q[0]}: {q[5]}")
                break
        results = {
            "command": cmdline, "machine": {"nproc": os.cpu_count()},
            "workload": {"clusters": shape[0], "nodes": shape[1], "pods_per_node": shape[2],
                         "services": a.services, "backfill_hours": shape[3], "seed": a.seed,
                         "active_series": gen.get("active_series"), "backfill_samples": back_samples,
                         "backfill_requests": len(back_rows), "live_requests_per_scrape": per_scrape,
                         "live_requests": len(bodies), "live_mean_body_bytes": live_bytes / max(1, len(bodies)),
                         "start_ms": start_ms},
            "load": {"rate": a.rate, "senders": a.senders, "query_clients": a.query_clients,
                     "phase_secs": a.phase_secs, "warmup_secs": a.warmup_secs,
                     "gateway_env": gw_env, "config": a.config, "read_auth": bool(a.read_auth),
                     "write_token": bool(a.write_token), "restarted_after_backfill": not a.no_restart},
            "range": {"start": ranges[0], "end": ranges[1], "step": step, "points": points},
            "backfill_s": wall, "settle_s": settle_s, "queries_alone": alone, "phases": phases,
            "queries_finished_after_b": late_queries,
            "p99_ratio_b_over_a": phases[1]["ack_p99_ms"] / phases[0]["ack_p99_ms"],
            "raw": {"writes [due s, send lag ms, ack ms, status]": raw_writes,
                    "queries [id, start s, ms, ok]": raw_queries},
        }
    except BaseException:
        if p is not None and p.poll() is not None:
            try:
                with open(os.path.join(work, "gateway.log")) as f:
                    log("gateway log (tail):\n" + f.read()[-3000:])
            except OSError:
                pass
        raise
    finally:
        if sender is not None:
            sender.halt()
        for c in clients:
            c.stop.set()
        for proc in PROCS:
            stop(proc, timeout=120)
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(results)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)


def report(r):
    w, ld, rg = r["workload"], r["load"], r["range"]
    print(f"\ncommand: {r['command']}")
    print(f"machine: nproc {r['machine']['nproc']}")
    print(f"workload: {w['clusters']} clusters x {w['nodes']} nodes x {w['pods_per_node']} pods, "
          f"{w['services']} services, seed {w['seed']}: {w['active_series']:,} active series; backfill "
          f"{w['backfill_hours']} h, {w['backfill_samples']:,} samples in {w['backfill_requests']} requests "
          f"({r['backfill_s']:.1f} s); live {w['live_requests_per_scrape']} requests per scrape, "
          f"mean body {w['live_mean_body_bytes'] / 1024:.1f} KiB")
    print(f"load: {ld['rate']:g} remote-write requests/s (open loop, {ld['senders']} senders), phases of "
          f"{ld['phase_secs']:g} s after {ld['warmup_secs']:g} s warmup; phase B adds {ld['query_clients']} "
          f"query loops; gateway env {ld['gateway_env'] or '-'}, config {ld['config'] or '- (open dev mode)'}"
          f"{', restarted after the backfill' if ld['restarted_after_backfill'] else ''}")
    print(f"queries: range {rg['end'] - rg['start']:.0f} s at step {rg['step']} s ({rg['points']} points), "
          "alone (no write load): " + ", ".join(
              f"{q} cold {v['cold_ms']:.0f} ms / warm {min(v['warm_ms']):.0f} ms" for q, v in r["queries_alone"].items()))
    print("\n| phase | requests acked | ack p50 ms | ack p99 ms | max ms | non-2xx | queries completed | "
          "query p50 ms | gateway CPU-s (cores) | max send lag ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ph in r["phases"]:
        qp50 = f"{ph['query_p50_ms']:.0f}" if ph["queries_completed"] else "–"
        print(f"| {ph['phase']} | {ph['acked']:,} | {ph['ack_p50_ms']:.1f} | {ph['ack_p99_ms']:.1f} | "
              f"{ph['ack_max_ms']:.1f} | {ph['non_2xx']} | {ph['queries_completed']} | {qp50} | "
              f"{ph['gateway_cpu_s']:.1f} ({ph['gateway_cores']:.2f}) | {ph['send_lag_max_ms']:.1f} |")
    ratio = r["p99_ratio_b_over_a"]
    print(f"\np99(B) / p99(A) = {ratio:.2f} (aim <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
    for ph in r["phases"]:
        if ph["other_processes_cores"] > 0.25 or ph["send_lag_max_ms"] > 20:
            print(f"warning: host not quiet in {ph['phase']}: other processes used "
                  f"{ph['other_processes_cores']:.2f} cores, sends started up to {ph['send_lag_max_ms']:.0f} ms "
                  "late; compare phases only from a quiet run")
    b = r["phases"][1]
    print("phase B per query: " + "; ".join(
        f"{q} {v['completed']} done, p50 {v['p50_ms']:.0f} ms, p95 {v['p95_ms']:.0f} ms, errors {v['errors']}"
        for q, v in b["queries"].items()) + f" ({r['queries_finished_after_b']} finished after B, not counted)")
    for ph in r["phases"]:
        c = ", ".join(f"{k.replace('fleetgate_', '')} +{v:.0f}" for k, v in sorted(ph["counters"].items())
                      if v and not k.startswith(FSYNC))
        n = ph["counters"].get(FSYNC + "_count", 0)
        fs = (f"WAL fsyncs {n:.0f}, mean {ph['counters'].get(FSYNC + '_sum', 0) / n * 1e3:.2f} ms, "
              f"over 50 ms {n - ph['counters'].get(FSYNC + '_le_50ms', 0):.0f}; " if n else "")
        extra = []
        if ph["non_2xx"]:
            extra.append(f"non-2xx {ph['non_2xx_by_status']}, e.g. {ph['error_examples'][:1]}")
        if ph["sends_late_over_10ms"]:
            extra.append(f"{ph['sends_late_over_10ms']} sends started > 10 ms after their schedule")
        print(f"- {ph['phase']}: ack p90 {ph['ack_p90_ms']:.1f} ms, mean {ph['ack_mean_ms']:.1f} ms; "
              f"bench client CPU {ph['bench_cpu_s']:.1f} s; other processes on the host "
              f"{ph['other_processes_cores']:.2f} cores; {fs}/metrics: {c or 'no flush/compaction/rejection'}"
              + ("; " + "; ".join(extra) if extra else ""))


if __name__ == "__main__":
    main()
