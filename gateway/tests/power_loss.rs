//! Power loss, not just kill -9: the data directory lives on `crashfs.py`, a FUSE filesystem that
//! keeps only what fsync made durable (file contents by file fsync, names by directory fsync).
//! The cut is walked op by op through flushes (sample files), compactions, catalog writes, WAL
//! rotations and WAL segment removal; after each cut the durable state is restored, the gateway
//! restarted, and every acknowledged sample must be there exactly once.
//!
//! Needs root, /dev/fuse and Python's `fusepy` (`.ci/run` installs them and sets
//! `FLEETGATE_REQUIRE_FUSE`); without them the test says so and passes, unless that variable is
//! set. `FLEETGATE_POWER_CUTS` sets the number of cuts (default 60).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

const SERIES: usize = 10;

/// The crash filesystem, mounted for the test's life.
struct CrashFs {
    child: Child,
    mountpoint: PathBuf,
    port: u16,
}

impl CrashFs {
    fn mount(mountpoint: &Path) -> Option<CrashFs> {
        let why = Self::missing();
        if let Some(why) = why {
            if std::env::var_os("FLEETGATE_REQUIRE_FUSE").is_some() {
                panic!("FLEETGATE_REQUIRE_FUSE is set but crashfs cannot run: {why}");
            }
            eprintln!(
                "SKIPPED power-loss test: {why} (set FLEETGATE_REQUIRE_FUSE=1 to require it)"
            );
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crashfs.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(mountpoint)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start crashfs.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("crashfs port");
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("crashfs said {line:?}"));
        let fs = CrashFs {
            child,
            mountpoint: mountpoint.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let want = mountpoint.to_string_lossy().to_string();
        while !std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        {
            assert!(Instant::now() < deadline, "crashfs did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(fs)
    }

    fn missing() -> Option<String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            return Some("not root".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Some("no /dev/fuse".into());
        }
        let fusepy = Command::new("python3")
            .args(["-c", "import fuse"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !fusepy {
            return Some("Python's fusepy (and libfuse2) not installed".into());
        }
        None
    }

    /// Sends one control command; returns the reply (several lines for `recent`).
    fn control(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("crashfs control");
        writeln!(s, "{cmd}").unwrap();
        let mut r = BufReader::new(s);
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let done = cmd != "recent" || line.trim() == "end";
            out.push_str(&line);
            if done {
                break;
            }
        }
        out.trim().to_string()
    }
}

impl Drop for CrashFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests per generation of new series (so flushes keep writing catalog files).
const PER_GEN: i64 = 20;

/// Request `k`: sample `k` of each steady series, and of the series of generation `k / PER_GEN`.
fn request(k: i64, t0: i64) -> Vec<u8> {
    let names: Vec<String> = (0..SERIES).map(|i| format!("s{i}")).collect();
    let generation = (k / PER_GEN).to_string();
    let mut series: Vec<TestSeries<'_>> = names
        .iter()
        .map(|n| {
            (
                vec![("__name__", "power_metric"), ("series", n.as_str())],
                vec![(t0 + k * 10, k as f64)],
            )
        })
        .collect();
    series.push((
        vec![("__name__", "power_new"), ("gen", generation.as_str())],
        vec![(t0 + k * 10, k as f64)],
    ));
    encode(&series)
}

/// Writes until `stop` or until writes fail; returns the acknowledged `k`s and the next `k`.
fn writer(addr: String, mut k: i64, t0: i64, stop: Arc<AtomicBool>) -> (Vec<i64>, i64) {
    let h = vec![
        ("Content-Encoding".to_string(), "snappy".to_string()),
        ("Authorization".to_string(), "Bearer tok-a".to_string()),
    ];
    let mut ok = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match http_request(&addr, "POST", "/api/v1/write", &h, &request(k, t0)) {
            Ok((204, _)) => ok.push(k),
            // the cut made fsync fail (503), or the process is gone: not acknowledged
            Ok((503, _)) => std::thread::sleep(Duration::from_millis(20)),
            Ok((0, _)) | Err(_) => break,
            Ok((code, body)) => panic!("unexpected {code}: {body}"),
        }
        k += 1;
    }
    (ok, k)
}

/// Every acknowledged `k` once in every series, with its value.
fn check(gw: &Gateway, acked: &BTreeSet<i64>, t0: i64, what: &str) {
    let out = gw.export("power_metric");
    if acked.is_empty() {
        return;
    }
    assert_eq!(out.len(), SERIES, "{what}: every series");
    for s in &out {
        assert!(
            s.timestamps.windows(2).all(|p| p[0] < p[1]),
            "{what}: duplicated or unordered samples in {:?}",
            s.labels
        );
        let mut stored = BTreeMap::new();
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            assert_eq!(
                ((t - t0) / 10) as f64,
                *v,
                "{what}: value matches its write"
            );
            stored.insert((t - t0) / 10, *v);
        }
        let missing: Vec<_> = acked.iter().filter(|k| !stored.contains_key(k)).collect();
        assert!(
            missing.is_empty(),
            "{what}: {:?} acknowledged but lost after the power cut: {missing:?}",
            s.labels
        );
    }
    // the series created along the way (catalog files) and their samples
    let gens: BTreeMap<i64, BTreeSet<i64>> = gw
        .export("power_new")
        .into_iter()
        .map(|s| {
            let g: i64 = s.labels["gen"].parse().unwrap();
            (g, s.timestamps.iter().map(|t| (t - t0) / 10).collect())
        })
        .collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|k| !gens.get(&(*k / PER_GEN)).is_some_and(|ks| ks.contains(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: new series' samples acknowledged but lost: {missing:?}"
    );
}

/// Where a cut lands: `(label, crashfs pattern)`, walked with K = 1, 2, … in turn.
const TARGETS: [(&str, &str); 5] = [
    ("sample file (flush)", ".parquet#"),
    ("catalog file", "/data/catalog/"),
    ("WAL rotation", "create /data/wal/"),
    ("WAL segment removal", "unlink /data/wal/"),
    ("compaction", "-c"),
];

#[test]
fn every_acknowledged_sample_survives_power_cuts_through_flush_compaction_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let Some(fs) = CrashFs::mount(&mnt) else {
        return;
    };
    let cuts: usize = std::env::var("FLEETGATE_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let cfg = two_cluster_config(
        dir.path(),
        "storage:\n  flush_interval: 1s\n  maintenance_interval: 200ms\n  compaction_min_files: 2\n  memtable_flush_bytes: 32768\n",
    );
    let data = mnt.join("data");
    // three hours back: a closed hour, so compaction runs on it
    let t0 = (now_ms() - 3 * 3_600_000) / 3_600_000 * 3_600_000;
    let mut acked = BTreeSet::new();
    let mut next_k = 0i64;
    let mut landed: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..cuts {
        let (label, pattern) = TARGETS[round % TARGETS.len()];
        let k_ops = 1 + round / TARGETS.len();
        let gw = Gateway::start(&data, Some(&cfg), &[]);
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(&gw, &acked, t0, &format!("after cut {round}"))
        }));
        if let Err(panic) = checked {
            // FLEETGATE_KEEP_FAILED_DIR=DIR keeps the data directory that failed, for debugging
            if let Some(keep) = std::env::var_os("FLEETGATE_KEEP_FAILED_DIR") {
                let _ = Command::new("cp").arg("-a").arg(&data).arg(&keep).status();
                eprintln!(
                    "kept the failed data directory in {}",
                    keep.to_string_lossy()
                );
            }
            std::panic::resume_unwind(panic);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let w = {
            let (addr, stop) = (gw.addr.clone(), Arc::clone(&stop));
            let k = next_k;
            std::thread::spawn(move || writer(addr, k, t0, stop))
        };
        assert_eq!(fs.control(&format!("arm-after {pattern} {k_ops}")), "ok");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut hit = true;
        while !fs.control("status").starts_with("frozen") {
            if Instant::now() > deadline {
                fs.control("cut");
                hit = false;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let recent = fs.control("recent");
        gw.kill9();
        stop.store(true, Ordering::Relaxed);
        let (ok, k) = w.join().unwrap();
        acked.extend(ok);
        next_k = k + 1;
        if hit {
            *landed.entry(label).or_default() += 1;
        }
        let last: Vec<&str> = recent.lines().rev().skip(1).take(3).collect();
        eprintln!("cut {round}: {label} +{k_ops} ops (hit: {hit}); last ops {last:?}");
        let restored = fs.control("restore");
        assert!(restored.starts_with("restored"), "{restored}");
    }
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    check(&gw, &acked, t0, "after the last cut");
    gw.stop();
    eprintln!(
        "power loss: {cuts} cuts in {:.1} s, {} acknowledged requests all present once; cuts by target: {landed:?}",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
    assert!(
        acked.len() > cuts,
        "enough acknowledged writes: {}",
        acked.len()
    );
    for (label, _) in TARGETS {
        assert!(
            landed.get(label).copied().unwrap_or(0) > 0 || cuts < TARGETS.len(),
            "no cut landed in: {label}"
        );
    }
}
