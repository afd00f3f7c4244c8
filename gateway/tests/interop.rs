//! Interop with real peers (run by `.ci/run` with `--ignored`): Debian's Prometheus remote-writing to
//! fleetgate, fleetgate pulling Prometheus's `/federate` and `prometheus-node-exporter`'s
//! `/metrics`, and DuckDB reading fleetgate's Parquet files without fleetgate. A missing peer fails.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
#[ignore = "interop: needs Debian's prometheus; run by .ci/run"]
fn interop_prometheus_remote_write_lands_in_fleetgate() {
    let prom = which("prometheus")
        .expect("the `prometheus` binary is required (apt-get install prometheus)");
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_config(dir.path(), "", "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let port = free_port();
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: claimed-by-sender\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: http://{}/api/v1/write\n    authorization:\n      credentials: tok-a\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n",
            gw.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(prom)
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prom").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut found = false;
    while Instant::now() < deadline {
        let up = gw.export(r#"up{job="prometheus"}"#);
        let internal = gw.export(r#"{__name__=~"prometheus_.+"}"#);
        if up.iter().any(|s| s.timestamps.len() >= 3) && internal.len() > 20 {
            for s in up.iter().chain(internal.iter()) {
                assert_eq!(
                    s.labels["cluster"], "alpha",
                    "cluster from the token: {:?}",
                    s.labels
                );
                assert_eq!(s.labels["exported_cluster"], "claimed-by-sender");
            }
            assert!(up[0].values.iter().all(|v| *v == 1.0));
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    let m = gw.metrics();
    assert!(
        found,
        "Prometheus samples did not arrive; gateway metrics:\n{m}"
    );
    assert!(
        !m.contains("fleetgate_samples_rejected_total{cluster=\"alpha\""),
        "nothing rejected:\n{m}"
    );
    gw.stop();
}

#[test]
#[ignore = "interop: needs python3 with duckdb; run by .ci/run"]
fn interop_duckdb_reads_samples_and_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let data = dir.path().join("data");
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let t0 = now_ms() - 3 * 3_600_000;
    let pods: Vec<String> = (0..20).map(|i| format!("pod-{i}")).collect();
    let series: Vec<TestSeries<'_>> = pods
        .iter()
        .map(|p| {
            (
                vec![
                    ("__name__", "container_memory_working_set_bytes"),
                    ("namespace", "payments"),
                    ("pod", p.as_str()),
                ],
                (0..720)
                    .map(|i| (t0 + i * 15_000, 1e6 + i as f64))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(gw.write(Some("tok-a"), encode(&series)).0, 204);
    gw.stop(); // flushes to Parquet
    let script = format!(
        r#"
import duckdb
d = {data:?}
con = duckdb.connect()
n = con.execute(f"SELECT count(*) FROM read_parquet('{{d}}/samples/**/*.parquet', hive_partitioning=true)").fetchone()[0]
assert n == 20 * 720, n
rows = con.execute(f'''
  SELECT c.labels['namespace'] AS ns, c.cluster, count(*) AS n, min(s.value), max(s.value)
  FROM read_parquet('{{d}}/samples/**/*.parquet', hive_partitioning=true) s
  JOIN read_parquet('{{d}}/catalog/*.parquet') c USING (series_id)
  WHERE s.metric = 'container_memory_working_set_bytes'
  GROUP BY ALL''').fetchall()
print(rows)
ns = rows[0][0]
ns = ns[0] if isinstance(ns, list) else ns
assert len(rows) == 1 and ns == 'payments' and rows[0][1] == 'alpha' and rows[0][2] == 14400, rows
assert rows[0][3] == 1e6 and rows[0][4] == 1e6 + 719, rows
parts = con.execute(f"SELECT DISTINCT date, hour FROM read_parquet('{{d}}/samples/**/*.parquet', hive_partitioning=true)").fetchall()
assert len(parts) >= 3, parts
print("duckdb ok", n, len(parts))
"#,
        data = data.display().to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "duckdb check failed (pip install duckdb):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed when dropped.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_http(url_addr: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok((200, _)) = http_get(url_addr, path) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url_addr}{path} did not answer 200");
}

#[test]
#[ignore = "interop: needs Debian's prometheus and prometheus-node-exporter; run by .ci/run"]
fn interop_pull_federate_and_node_exporter() {
    let prom = which("prometheus")
        .expect("the `prometheus` binary is required (apt-get install prometheus)");
    let ne = which("prometheus-node-exporter").expect(
        "the `prometheus-node-exporter` binary is required (apt-get install prometheus-node-exporter)",
    );
    let dir = tempfile::tempdir().unwrap();
    let ne_port = free_port();
    let _ne = Peer(
        Command::new(ne)
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node-exporter"),
    );
    let ne_addr = format!("127.0.0.1:{ne_port}");
    wait_http(&ne_addr, "/metrics");
    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 2s\n  external_labels:\n    cluster: theirs\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{ne_addr}']\n"
        ),
    )
    .unwrap();
    let _prom = Peer(
        Command::new(prom)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    wait_http(&prom_addr, "/-/ready");
    let sources = format!(
        "sources:\n  - cluster: alpha\n    url: http://{prom_addr}/federate\n    interval: 1s\n    timeout: 1s\n    match: ['{{job=\"node\"}}']\n  - cluster: beta\n    url: http://{ne_addr}/metrics\n    interval: 2s\n    timeout: 2s\n"
    );
    let cfg = cluster_config(dir.path(), "", &sources);
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);

    // /federate: wait for two Prometheus scrapes to have been federated
    let deadline = Instant::now() + Duration::from_secs(60);
    let federated = loop {
        let s = gw.export(r#"{cluster="alpha",job="node"}"#);
        if s.len() > 100 && s.iter().any(|x| x.timestamps.len() >= 2) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "federated series did not arrive: {}",
            s.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // the most recent Prometheus scrape that fleetgate holds, for the series it holds it for
    let mut by_ts: std::collections::BTreeMap<i64, usize> = Default::default();
    for s in &federated {
        for t in &s.timestamps {
            *by_ts.entry(*t).or_default() += 1;
        }
    }
    let (&t, _) = by_ts.iter().max_by_key(|(t, n)| (**n, **t)).unwrap();
    let (code, body) = http_get(
        &prom_addr,
        &format!(
            "/api/v1/query?query={}&time={}",
            urlencode(r#"{job="node"}"#),
            t as f64 / 1000.0
        ),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let prom_series = v["data"]["result"].as_array().unwrap().clone();
    let key = |labels: &std::collections::BTreeMap<String, String>| {
        labels
            .iter()
            // what fleetgate adds: the cluster, its configured labels (alpha: region), the
            // federated Prometheus's external `cluster` label moved aside
            .filter(|(k, _)| !["cluster", "exported_cluster", "region"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ours: std::collections::HashMap<String, f64> = federated
        .iter()
        .filter_map(|s| {
            let i = s.timestamps.iter().position(|x| *x == t)?;
            assert_eq!(s.labels["cluster"], "alpha", "{:?}", s.labels);
            assert_eq!(s.labels["exported_cluster"], "theirs", "{:?}", s.labels);
            Some((key(&s.labels), s.values[i]))
        })
        .collect();
    let mut compared = 0;
    for p in &prom_series {
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(p["metric"].clone()).unwrap();
        let pv: f64 = p["value"][1].as_str().unwrap().parse().unwrap();
        let k = key(&labels);
        let Some(ov) = ours.get(&k) else {
            panic!("{k}: in Prometheus at {t}, not pulled by fleetgate")
        };
        assert!(
            (pv == *ov) || (pv.is_nan() && ov.is_nan()) || ((pv - ov) / pv).abs() < 1e-12,
            "{k}: prometheus {pv}, fleetgate {ov}"
        );
        compared += 1;
    }
    assert_eq!(compared, ours.len(), "the same series on both sides at {t}");
    assert!(compared > 100, "{compared} series compared");

    // /metrics: node-exporter scraped directly into cluster beta
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = gw.export(r#"up{cluster="beta"}"#);
        let load = gw.export(r#"node_load1{cluster="beta"}"#);
        if up.iter().any(|s| s.values.contains(&1.0)) && !load.is_empty() {
            assert_eq!(load[0].labels["job"], "pull");
            assert_eq!(load[0].labels["instance"], ne_addr);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-exporter samples did not arrive"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let scraped = gw.export(r#"scrape_samples_scraped{cluster="beta"}"#);
    let n = *scraped[0].values.last().unwrap();
    assert!(n > 200.0, "node-exporter exposes hundreds of samples: {n}");
    let m = gw.metrics();
    assert!(
        !m.contains("fleetgate_samples_rejected_total{"),
        "nothing rejected:\n{m}"
    );
    gw.stop();
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.is_file())
}
