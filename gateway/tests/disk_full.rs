//! A full disk from the binary: with the data directory on a small tmpfs, writes get 503 +
//! Retry-After once the WAL cannot be written, `/-/ready` says why, and after space is freed
//! writes resume by themselves, with every acknowledged sample kept (also across a restart).
//!
//! Needs root (to mount the tmpfs). Without it the test says so and passes, unless
//! `FLEETGATE_REQUIRE_TMPFS` is set (`.ci/run` sets it), when it fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mounted = root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs(dir.to_path_buf()));
        }
        let why = if root {
            "mount -t tmpfs failed"
        } else {
            "not root"
        };
        if std::env::var_os("FLEETGATE_REQUIRE_TMPFS").is_some() {
            panic!("FLEETGATE_REQUIRE_TMPFS is set but no tmpfs can be mounted: {why}");
        }
        eprintln!("SKIPPED disk-full test: {why} (set FLEETGATE_REQUIRE_TMPFS=1 to require it)");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const SERIES: usize = 20;

/// One request: every series gets sample `k` (timestamp `t0 + k`, value `k`).
fn request(k: i64, t0: i64) -> Vec<u8> {
    let names: Vec<String> = (0..SERIES).map(|i| format!("s{i}")).collect();
    let series: Vec<TestSeries<'_>> = names
        .iter()
        .map(|n| {
            (
                vec![("__name__", "disk_full_metric"), ("series", n.as_str())],
                vec![(t0 + k, k as f64)],
            )
        })
        .collect();
    encode(&series)
}

/// Sends request `k`; returns its status and whether it carried `Retry-After`.
fn send(gw: &Gateway, k: i64, t0: i64) -> (u16, bool) {
    let h = vec![
        ("Content-Encoding".to_string(), "snappy".to_string()),
        (
            "Content-Type".to_string(),
            "application/x-protobuf".to_string(),
        ),
        ("Authorization".to_string(), "Bearer tok-a".to_string()),
    ];
    let (code, head, _) =
        http_exchange(&gw.addr, "POST", "/api/v1/write", &h, &request(k, t0)).unwrap();
    (code, head.to_ascii_lowercase().contains("retry-after:"))
}

/// Fills the filesystem of `dir` with one file until the kernel says it is full.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    p
}

/// The value of an unlabelled metric in the exposition text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Every acknowledged `k` is stored once, in every series, with its value.
fn check_acked(gw: &Gateway, acked: &[i64], t0: i64) {
    let out = gw.export("{__name__=\"disk_full_metric\"}");
    assert_eq!(out.len(), SERIES, "series");
    for s in &out {
        let got: BTreeMap<i64, f64> = s
            .timestamps
            .iter()
            .copied()
            .zip(s.values.iter().copied())
            .collect();
        assert_eq!(got.len(), s.timestamps.len(), "no duplicate timestamps");
        for k in acked {
            assert_eq!(
                got.get(&(t0 + k)),
                Some(&(*k as f64)),
                "acknowledged sample {k} of {:?} missing",
                s.labels
            );
        }
    }
}

#[test]
fn full_disk_refuses_writes_then_heals_without_losing_acknowledged_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(_fs) = Tmpfs::mount(&data, "24m") else {
        return;
    };
    let cfg = two_cluster_config(
        dir.path(),
        "storage:\n  maintenance_interval: 1s\n  flush_interval: 2s\n  wal_segment_bytes: 1048576\n",
    );
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let t0 = now_ms() - 60_000;
    let mut acked = Vec::new();
    let mut k = 0i64;
    for _ in 0..50 {
        assert_eq!(
            send(&gw, k, t0),
            (204, false),
            "write {k} before the disk fills"
        );
        acked.push(k);
        k += 1;
    }

    // Fill the disk: the next writes must be refused with 503 + Retry-After.
    let filler = fill(&data);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    while refused < 5 {
        assert!(
            Instant::now() < deadline,
            "writes never refused on a full disk"
        );
        match send(&gw, k, t0) {
            (204, _) => acked.push(k),
            (503, true) => refused += 1,
            other => panic!("write {k} on a full disk answered {other:?}, not 503 + Retry-After"),
        }
        k += 1;
    }
    let (code, body) = http_get(&gw.addr, "/-/ready").unwrap();
    assert_eq!(code, 503, "/-/ready while the WAL cannot write: {body}");
    assert!(body.contains("storage cannot write"), "{body}");
    assert!(body.contains("No space left"), "the reason: {body}");
    assert!(!body.contains(&*data.to_string_lossy()), "no paths: {body}");
    // Stay full long enough for flushes (every 2 s) to meet the full disk too; every write is
    // refused meanwhile.
    let full = Instant::now();
    while full.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            send(&gw, k, t0),
            (503, true),
            "write {k} while the disk is full"
        );
        k += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = gw.metrics();
    assert!(m.contains("fleetgate_storage_writable 0"), "{m}");
    assert!(m.contains("fleetgate_wal_write_failures_total 1"), "{m}");
    let failures = metric(&m, "fleetgate_maintenance_failures_total");
    assert!(failures >= 1.0, "a flush met the full disk: {m}");

    // Free the space: writes resume by themselves within seconds.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        assert!(
            freed.elapsed() < Duration::from_secs(20),
            "writes did not resume after space came back"
        );
        let (code, _) = send(&gw, k, t0);
        if code == 204 {
            acked.push(k);
            k += 1;
            break;
        }
        assert_eq!(code, 503, "while recovering");
        k += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "writes resumed {} ms after space came back",
        freed.elapsed().as_millis()
    );
    assert_eq!(http_get(&gw.addr, "/-/ready").unwrap().0, 200);
    for _ in 0..50 {
        assert_eq!(send(&gw, k, t0), (204, false), "write {k} after recovery");
        acked.push(k);
        k += 1;
    }
    let m = gw.metrics();
    assert!(m.contains("fleetgate_storage_writable 1"), "{m}");
    assert!(m.contains("fleetgate_wal_recoveries_total 1"), "{m}");
    check_acked(&gw, &acked, t0);

    // Flushes retried and succeeded; across a clean restart and a kill -9 nothing is lost.
    let lines = std::sync::Arc::clone(&gw.stderr_lines);
    gw.stop();
    let panicked: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("panicked"))
        .cloned()
        .collect();
    assert!(panicked.is_empty(), "panics: {panicked:?}");
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    check_acked(&gw, &acked, t0);
    for _ in 0..10 {
        assert_eq!(send(&gw, k, t0).0, 204);
        acked.push(k);
        k += 1;
    }
    gw.kill9();
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    check_acked(&gw, &acked, t0);
    assert!(
        gw.metrics()
            .contains("fleetgate_wal_corrupt_records_total 0"),
        "a healed WAL replays without damage"
    );
    gw.stop();
}
