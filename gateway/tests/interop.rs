//! Interop with real peers (run by `.ci/run` with `--ignored`): Debian's Prometheus remote-writing to
//! fleetgate, and DuckDB reading fleetgate's Parquet files without fleetgate. A missing peer fails.

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

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.is_file())
}
