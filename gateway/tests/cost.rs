//! Cost from the binary: OpenCost's `/allocation/compute` (field for field), `/assets`, the
//! FOCUS export, budgets with their `/metrics` gauges, the materialized tables on disk, the
//! principal's scope over all of them, and 400s that name the parameter.
//!
//! Two clusters, one hour `H` (two to one hours ago) of kube-state-metrics and cAdvisor series
//! sent by remote-write; prices $0.04 per core-hour, $0.005 per GiB-hour:
//! - alpha: node n1 (4 cores, 16 GiB) = 0.16 + 0.08 = 0.24 an hour; pod p1 (requests 1 core,
//!   2 GiB; uses 0.5 core, 1 GiB) = 1 × 0.04 + 2 × 0.005 = 0.05; idle 0.24 − 0.05 = 0.19.
//! - beta: node m1 (2 cores, 8 GiB) = 0.08 + 0.04 = 0.12; pod q1 without requests (uses 0.25
//!   core, 0.5 GiB) = 0.25 × 0.04 + 0.5 × 0.005 = 0.0125; idle 0.1075.

use crate::harness::*;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const HOUR: i64 = 3_600_000;
const FLEET: &str = "Basic ZmxlZXQ6ZmxlZXQtcHc="; // fleet:fleet-pw
const TEAM_A: &str = "Basic dGVhbS1hOnRlYW0tYS1wdw=="; // team-a:team-a-pw

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("fleetgate.yaml");
    std::fs::write(
        &p,
        "cost:
  pricing: {cpu: 0.04, ram: 0.005}
  materialize_interval: 200ms
  settle: 1s
  budgets:
    - {name: web-team, namespace: web, amount: 1000}
clusters:
  - name: alpha
    token: tok-a
    monthly_spend_threshold: 0.0001
  - name: beta
    token: tok-b
users:
  - name: fleet
    password: fleet-pw
    clusters: [\"*\"]
  - name: team-a
    password: team-a-pw
    clusters: [\"al*\"]
",
    )
    .unwrap();
    p
}

type Owned = (Vec<(String, String)>, Vec<(i64, f64)>);

fn series(metric: &str, labels: &[(&str, &str)], pts: Vec<(i64, f64)>) -> Owned {
    let mut l = vec![("__name__".to_string(), metric.to_string())];
    l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (l, pts)
}

/// A cluster's node and pod over `[from, to)`, scraped every 5 minutes.
#[allow(clippy::too_many_arguments)]
fn cluster(
    node: &str,
    cores: f64,
    gib: f64,
    pod: (&str, &str, &str),
    req: Option<(f64, f64)>,
    used: (f64, f64),
    from: i64,
    to: i64,
) -> Vec<Owned> {
    let ts: Vec<i64> = (from..to).step_by(300_000).collect();
    let gauge = |v: f64| ts.iter().map(|t| (*t, v)).collect::<Vec<_>>();
    let (ns, p, c) = pod;
    let mut out = vec![
        series(
            "kube_node_status_capacity",
            &[("node", node), ("resource", "cpu"), ("unit", "core")],
            gauge(cores),
        ),
        series(
            "kube_node_status_capacity",
            &[("node", node), ("resource", "memory"), ("unit", "byte")],
            gauge(gib * GIB),
        ),
        series("kube_node_labels", &[("node", node)], gauge(1.0)),
        series(
            "kube_pod_container_status_running",
            &[("namespace", ns), ("pod", p), ("container", c)],
            gauge(1.0),
        ),
        series(
            "kube_pod_info",
            &[("namespace", ns), ("pod", p), ("node", node)],
            gauge(1.0),
        ),
        series(
            "kube_pod_labels",
            &[("namespace", ns), ("pod", p), ("label_team", "x")],
            gauge(1.0),
        ),
        series(
            "container_cpu_usage_seconds_total",
            &[("namespace", ns), ("pod", p), ("container", c)],
            ts.iter()
                .map(|t| (*t, 100.0 + used.0 * (t - from) as f64 / 1000.0))
                .collect(),
        ),
        series(
            "container_memory_working_set_bytes",
            &[("namespace", ns), ("pod", p), ("container", c)],
            gauge(used.1 * GIB),
        ),
    ];
    if let Some((cpu, mem)) = req {
        out.push(series(
            "kube_pod_container_resource_requests",
            &[
                ("namespace", ns),
                ("pod", p),
                ("container", c),
                ("node", node),
                ("resource", "cpu"),
                ("unit", "core"),
            ],
            gauge(cpu),
        ));
        out.push(series(
            "kube_pod_container_resource_requests",
            &[
                ("namespace", ns),
                ("pod", p),
                ("container", c),
                ("node", node),
                ("resource", "memory"),
                ("unit", "byte"),
            ],
            gauge(mem * GIB),
        ));
    }
    out
}

fn send(gw: &Gateway, token: &str, s: &[Owned]) {
    let borrowed: Vec<TestSeries<'_>> = s
        .iter()
        .map(|(l, p)| {
            (
                l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                p.clone(),
            )
        })
        .collect();
    let (code, text) = gw.write(Some(token), encode(&borrowed));
    assert_eq!(code, 204, "{text}");
}

fn get(gw: &Gateway, auth: Option<&str>, path: &str) -> (u16, String) {
    let h: Vec<(String, String)> = auth
        .map(|a| vec![("Authorization".to_string(), a.to_string())])
        .unwrap_or_default();
    let (code, _, body) = http_exchange(&gw.addr, "GET", path, &h, b"").unwrap();
    (code, body)
}

fn rfc3339(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", ms / 1000),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// A gateway in `dir` holding the two clusters (see the top), and the start of hour `H`.
fn two_clusters(dir: &std::path::Path) -> (Gateway, i64) {
    let cfg = config(dir);
    let gw = Gateway::start(&dir.join("data"), Some(&cfg), &[]);
    let h = (now_ms() / HOUR - 2) * HOUR;
    let (from, to) = (h - HOUR, h + HOUR);
    send(
        &gw,
        "tok-a",
        &cluster(
            "n1",
            4.0,
            16.0,
            ("web", "p1", "app"),
            Some((1.0, 2.0)),
            (0.5, 1.0),
            from,
            to,
        ),
    );
    send(
        &gw,
        "tok-b",
        &cluster(
            "m1",
            2.0,
            8.0,
            ("api", "q1", "server"),
            None,
            (0.25, 0.5),
            from,
            to,
        ),
    );
    (gw, h)
}

/// Waits until the materializer has written hour `h` of `cost_allocation` under `dir`.
fn wait_for_hour(dir: &std::path::Path, h: i64) {
    let part = dir.join("data/cost_allocation");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // the hour before it is written first
    let hour_dir = format!("hour={:02}", (h / HOUR) % 24);
    loop {
        let found = walk(&part).iter().any(|p| {
            p.ends_with("part.parquet")
                && p.parent().is_some_and(|d| {
                    d.ends_with(&hour_dir) && d.to_string_lossy().contains("resolution=hour")
                })
        });
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cost_allocation files under {part:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn allocation_assets_focus_budgets_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, h) = two_clusters(dir.path());
    let window = format!("{},{}", rfc3339(h), rfc3339(h + HOUR));

    // OpenCost's shape, every field of AllocationJSON
    let (code, body) = get(
        &gw,
        Some(FLEET),
        &format!("/allocation/compute?window={window}&aggregate=cluster"),
    );
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["code"], 200);
    assert_eq!(v["status"], "success");
    let set = &v["data"][0];
    assert!(
        close(set["alpha"]["totalCost"].as_f64().unwrap(), 0.05),
        "{body}"
    );
    assert!(
        close(set["beta"]["totalCost"].as_f64().unwrap(), 0.0125),
        "{body}"
    );
    let a = set["alpha"].as_object().unwrap();
    for field in [
        "name",
        "properties",
        "window",
        "start",
        "end",
        "minutes",
        "cpuCores",
        "cpuCoreRequestAverage",
        "cpuCoreLimitAverage",
        "cpuCoreUsageAverage",
        "cpuCoreHours",
        "cpuCost",
        "cpuCostAdjustment",
        "cpuCostIdle",
        "cpuEfficiency",
        "gpuCount",
        "gpuHours",
        "gpuCost",
        "gpuCostAdjustment",
        "gpuCostIdle",
        "gpuEfficiency",
        "networkTransferBytes",
        "networkReceiveBytes",
        "networkCost",
        "networkCrossZoneCost",
        "networkCrossRegionCost",
        "networkInternetCost",
        "networkCostAdjustment",
        "loadBalancerCost",
        "loadBalancerCostAdjustment",
        "pvBytes",
        "pvByteHours",
        "pvCost",
        "pvs",
        "pvCostAdjustment",
        "ramBytes",
        "ramByteRequestAverage",
        "ramByteLimitAverage",
        "ramByteUsageAverage",
        "ramByteHours",
        "ramCost",
        "ramCostAdjustment",
        "ramCostIdle",
        "ramEfficiency",
        "externalCost",
        "sharedCost",
        "totalCost",
        "totalEfficiency",
        "lbAllocations",
        "gpuAllocation",
    ] {
        assert!(a.contains_key(field), "missing {field}: {body}");
    }
    assert_eq!(a["properties"]["cluster"], "alpha");
    assert_eq!(a["window"]["start"], rfc3339(h).as_str());
    assert!(close(a["cpuEfficiency"].as_f64().unwrap(), 0.5));
    assert_eq!(a["minutes"], 60.0);

    // unaggregated: the container's name; with idle
    let (_, body) = get(
        &gw,
        Some(FLEET),
        &format!("/allocation?window={window}&includeIdle=true"),
    );
    let v = json(&body);
    let set = v["data"][0].as_object().unwrap();
    assert!(set.contains_key("alpha/n1/web/p1/app"), "{body}");
    assert!(
        close(
            set["__idle__"]["totalCost"].as_f64().unwrap(),
            0.19 + 0.1075
        ),
        "{body}"
    );
    // shared idle: each cluster carries its nodes' cost
    let (_, body) = get(
        &gw,
        Some(FLEET),
        &format!("/allocation/compute?window={window}&aggregate=cluster&shareIdle=true"),
    );
    let v = json(&body);
    assert!(
        close(v["data"][0]["alpha"]["totalCost"].as_f64().unwrap(), 0.24),
        "{body}"
    );
    assert!(
        close(v["data"][0]["beta"]["totalCost"].as_f64().unwrap(), 0.12),
        "{body}"
    );

    // the principal's scope: team-a sees alpha only, everywhere
    let (_, body) = get(
        &gw,
        Some(TEAM_A),
        &format!("/allocation/compute?window={window}&aggregate=cluster&includeIdle=true"),
    );
    let v = json(&body);
    let set = v["data"][0].as_object().unwrap();
    assert!(
        set.contains_key("alpha") && !set.contains_key("beta"),
        "{body}"
    );
    assert!(
        close(set["__idle__"]["totalCost"].as_f64().unwrap(), 0.19),
        "{body}"
    );
    let (_, body) = get(&gw, Some(TEAM_A), &format!("/assets?window={window}"));
    assert!(
        body.contains("alpha/n1") && !body.contains("beta"),
        "{body}"
    );
    let (code, _) = get(&gw, None, &format!("/allocation/compute?window={window}"));
    assert_eq!(code, 401);

    // assets
    let (code, body) = get(&gw, Some(FLEET), &format!("/assets?window={window}"));
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    let n1 = &v["data"][0]["alpha/n1"];
    assert_eq!(n1["type"], "Node");
    assert!(close(n1["totalCost"].as_f64().unwrap(), 0.24), "{body}");
    assert_eq!(n1["cpuCores"], 4.0);

    // bad parameters: 400 naming the parameter
    for (q, param) in [
        (format!("window={window}&aggregate=bogus"), "aggregate"),
        ("window=soon".to_string(), "window"),
        ("aggregate=cluster".to_string(), "window"),
        (
            format!("window={},{}", rfc3339(h + HOUR), rfc3339(h)),
            "window",
        ),
        (format!("window={window}&filter=namespace"), "filter"),
        (format!("window={window}&accumulate=maybe"), "accumulate"),
        (format!("window={window}&step=fortnight"), "step"),
        (format!("window={window}&shareIdle=sometimes"), "shareIdle"),
        (format!("window={window}&includeIdle=yes"), "includeIdle"),
        (format!("window={window}&shareCost=-5"), "shareCost"),
    ] {
        let (code, body) = get(&gw, Some(FLEET), &format!("/allocation/compute?{q}"));
        assert_eq!(code, 400, "{q}: {body}");
        assert!(
            body.contains(&format!("\\\"{param}\\\"")) || body.contains(&format!("\"{param}\"")),
            "{q}: {body}"
        );
    }

    // FOCUS: one row per container, resource and hour, plus idle; the costs add up to the
    // nodes' cost (0.24 + 0.12)
    let (code, csv) = get(
        &gw,
        Some(FLEET),
        &format!("/api/v1/cost/focus?window={window}&step=1h"),
    );
    assert_eq!(code, 200, "{csv}");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "ResourceId",
        "ResourceName",
        "ServiceName",
        "SubAccountId",
        "Tags",
    ] {
        assert!(header.contains(&col), "{col} missing: {header:?}");
    }
    let billed = header.iter().position(|c| *c == "BilledCost").unwrap();
    let total: f64 = lines
        .map(|l| l.split(',').nth(billed).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(close(total, 0.36), "{total}\n{csv}");
    let (code, pq) = get(
        &gw,
        Some(FLEET),
        &format!("/api/v1/cost/focus?window={window}&format=parquet"),
    );
    assert_eq!(code, 200);
    assert!(pq.starts_with("PAR1") || pq.contains("PAR1"), "not parquet");

    // the materializer writes the closed hours (settle 1 s) to plain Parquet
    wait_for_hour(dir.path(), h);

    // budgets: alpha's tiny monthly threshold is breached (when H is in this month); web-team
    // is far from its 1000
    let (code, body) = get(&gw, Some(FLEET), "/api/v1/budgets");
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    let list = v["data"].as_array().unwrap();
    let by = |n: &str| {
        list.iter()
            .find(|b| b["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {body}"))
    };
    let alpha = by("cluster:alpha");
    let month_start = month_start_ms(now_ms());
    if h >= month_start {
        assert_eq!(alpha["state"], "breached", "{body}");
        assert!(alpha["spend"].as_f64().unwrap() >= 0.24, "{body}");
    } else {
        assert_eq!(alpha["spend"].as_f64().unwrap(), 0.0, "{body}");
    }
    assert_eq!(by("web-team")["state"], "ok", "{body}");
    assert_eq!(by("web-team")["kind"], "namespace");
    // team-a sees alpha's budget and the fleet-wide one, not beta's
    let (_, body) = get(&gw, Some(TEAM_A), "/api/v1/budgets");
    assert!(
        body.contains("cluster:alpha") && !body.contains("beta"),
        "{body}"
    );
    // the same budgets, and the materialized rows, in SQL (scoped as everything else)
    let sql = |auth: &str, q: &str| -> String {
        let h = vec![
            ("Authorization".to_string(), auth.to_string()),
            ("Accept".to_string(), "text/csv".to_string()),
        ];
        let (code, _, body) =
            http_exchange(&gw.addr, "POST", "/api/v1/sql", &h, q.as_bytes()).unwrap();
        assert_eq!(code, 200, "{q}: {body}");
        body
    };
    let rows = sql(FLEET, "SELECT name, kind, state FROM budgets ORDER BY name");
    let alpha_state = alpha["state"].as_str().unwrap();
    assert!(
        rows.contains(&format!("cluster:alpha,cluster,{alpha_state}"))
            && rows.contains("web-team,namespace,ok"),
        "{rows}"
    );
    let rows = sql(TEAM_A, "SELECT name FROM budgets ORDER BY name");
    assert!(
        rows.contains("cluster:alpha") && !rows.contains("beta"),
        "{rows}"
    );
    let rows = sql(
        FLEET,
        &format!(
            "SELECT cluster, round(sum(total_cost), 6) FROM cost_allocation \
             WHERE resolution = 'hour' AND window_start = TIMESTAMP '{}' \
             AND pod IN ('p1', 'q1') GROUP BY cluster ORDER BY cluster",
            rfc3339(h)
        ),
    );
    assert!(
        rows.contains("alpha,0.05\n") && rows.contains("beta,0.0125\n"),
        "{rows}"
    );
    let rows = sql(TEAM_A, "SELECT DISTINCT cluster FROM cost_assets");
    assert!(rows.contains("alpha") && !rows.contains("beta"), "{rows}");

    // gauges on /metrics after a pass
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = gw.metrics();
        if m.contains("fleetgate_budget_spend{budget=\"cluster:alpha\",kind=\"cluster\",cluster=\"alpha\"}")
            && m.contains("fleetgate_budget_state{budget=\"web-team\",kind=\"namespace\",cluster=\"\",state=\"ok\"} 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no budget gauges:\n{m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    gw.stop();
}

fn month_start_ms(now: i64) -> i64 {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", now / 1000),
            "+%Y-%m-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s.trim(), "+%s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse::<i64>()
        .unwrap()
        * 1000
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// DuckDB reading the cost tables' files directly gets the same sums as our SQL.
#[test]
#[ignore = "interop: needs python3 with duckdb; run by .ci/run"]
fn interop_duckdb_reads_the_cost_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, h) = two_clusters(dir.path());
    wait_for_hour(dir.path(), h);
    let ours = |q: &str| -> serde_json::Value {
        let hd = vec![("Authorization".to_string(), FLEET.to_string())];
        let (code, _, body) =
            http_exchange(&gw.addr, "POST", "/api/v1/sql", &hd, q.as_bytes()).unwrap();
        assert_eq!(code, 200, "{q}: {body}");
        json(&body)["rows"].clone()
    };
    let at = rfc3339(h);
    let alloc = ours(&format!(
        "SELECT cluster, namespace, count(*) AS n, sum(total_cost) AS c FROM cost_allocation \
         WHERE resolution = 'hour' AND window_start = TIMESTAMP '{at}' GROUP BY 1, 2 ORDER BY 1, 2"
    ));
    let assets = ours(&format!(
        "SELECT cluster, asset_type, sum(total_cost) AS c FROM cost_assets \
         WHERE resolution = 'hour' AND window_start = TIMESTAMP '{at}' GROUP BY 1, 2 ORDER BY 1, 2"
    ));
    assert!(alloc.as_array().is_some_and(|a| a.len() >= 2), "{alloc}");
    let data = dir.path().join("data").display().to_string();
    let script = format!(
        r#"
import duckdb, json, math
d = {data:?}
ours = json.loads({ours:?})
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
def close(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b
def check(name, got, want):
    assert len(got) == len(want), (name, got, want)
    for g, w in zip(got, want):
        assert all(close(x, y) for x, y in zip(g, w)), (name, g, w)
    print(name, "agrees on", len(got), "rows")
A = f"read_parquet('{{d}}/cost_allocation/**/*.parquet', hive_partitioning = true)"
rows = con.execute(f"SELECT cluster, namespace, count(*), sum(total_cost) FROM {{A}} WHERE resolution = 'hour' AND epoch_ms(window_start) = {h} GROUP BY ALL ORDER BY 1, 2").fetchall()
check("allocation", rows, [[r["cluster"], r["namespace"], r["n"], r["c"]] for r in ours["alloc"]])
S = f"read_parquet('{{d}}/cost_assets/**/*.parquet', hive_partitioning = true)"
rows = con.execute(f"SELECT cluster, asset_type, sum(total_cost) FROM {{S}} WHERE resolution = 'hour' AND epoch_ms(window_start) = {h} GROUP BY ALL ORDER BY 1, 2").fetchall()
check("assets", rows, [[r["cluster"], r["asset_type"], r["c"]] for r in ours["assets"]])
"#,
        ours = serde_json::json!({"alloc": alloc, "assets": assets}).to_string()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "DuckDB disagrees (pip install duckdb):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop();
}
