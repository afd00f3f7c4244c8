//! Operational endpoints: health, readiness, self-metrics, open dev mode, graceful shutdown.

use crate::harness::*;

#[test]
fn health_ready_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
    assert_eq!(http_get(&gw.addr, "/-/ready").unwrap().0, 200);
    let t = now_ms();
    assert_eq!(
        gw.write(
            Some("tok-b"),
            encode(&[(
                vec![("__name__", "m"), ("a", "1")],
                vec![(t, 1.0), (t + 1, 2.0)]
            )])
        )
        .0,
        204
    );
    let m = gw.metrics();
    for needle in [
        "fleetgate_samples_accepted_total{cluster=\"beta\"} 2",
        "fleetgate_http_request_duration_seconds_bucket{handler=\"remote_write\"",
        "fleetgate_wal_fsync_duration_seconds_count",
        "fleetgate_memtable_bytes",
        "fleetgate_flushes_total",
        "fleetgate_active_series{cluster=\"beta\"} 1",
        "process_resident_memory_bytes",
        "fleetgate_catalog_files",
        "fleetgate_series_table_cache_bytes",
    ] {
        assert!(m.contains(needle), "/metrics lacks {needle}:\n{m}");
    }
    gw.stop();
}

#[test]
fn open_dev_mode_takes_cluster_from_header_or_sender_label() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&dir.path().join("data"), None, &[]);
    assert!(gw.addr.starts_with("127.0.0.1:"));
    let t = now_ms();
    let body = encode(&[(vec![("__name__", "dev_m"), ("x", "1")], vec![(t, 1.0)])]);
    assert_eq!(
        gw.write_with(None, body, &[("X-Fleetgate-Cluster", "lab")])
            .0,
        204
    );
    let body = encode(&[(
        vec![("__name__", "dev_m"), ("cluster", "from-label"), ("x", "2")],
        vec![(t, 1.0)],
    )]);
    assert_eq!(gw.write(None, body).0, 204);
    let body = encode(&[(vec![("__name__", "dev_m"), ("x", "3")], vec![(t, 1.0)])]);
    assert_eq!(gw.write(None, body).0, 204);
    let s = gw.export("dev_m");
    let clusters: Vec<(&str, &str)> = s
        .iter()
        .map(|s| (s.labels["x"].as_str(), s.labels["cluster"].as_str()))
        .collect();
    assert!(clusters.contains(&("1", "lab")), "{clusters:?}");
    assert!(clusters.contains(&("2", "from-label")), "{clusters:?}");
    assert!(clusters.contains(&("3", "default")), "{clusters:?}");
    assert!(s.iter().all(|s| !s.labels.contains_key("exported_cluster")));
    let logs = gw.stderr_lines.lock().unwrap().join("\n");
    assert!(logs.contains("OPEN DEV MODE"), "open mode is announced");
    gw.stop();
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "storage:\n  retention: 3x\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.retention"), "{err}");
}
