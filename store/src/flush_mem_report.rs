//! An `#[ignore]`d report of the memory a backfill-shaped memtable really holds (accounted bytes vs.
//! the capacities of its vectors) and of the extra resident memory a flush of it needs (VmHWM
//! after the flush minus VmRSS before it; Linux only): `cargo test -p fleetgate-store --release
//! --lib flush_mem_report -- --ignored --nocapture` (`FLEETGATE_FLUSH_SERIES`,
//! `FLEETGATE_FLUSH_SAMPLES`, `FLEETGATE_FLUSH_HOURS`, `FLEETGATE_FLUSH_NOISY=1` for
//! incompressible values). Run it alone: the numbers are per process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::time::Instant;

use crate::labels::{Labels, SeriesId};
use crate::memtable::{Memtable, SeriesBuf};
use crate::options::StoreOptions;
use crate::partition::HOUR_MS;
use crate::store::{SampleRef, Store};

const T0: i64 = 1_767_225_600_000;
const MIB: f64 = (1 << 20) as f64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/self/status` field in bytes (0 when unavailable).
fn proc_status(field: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// (sample bytes by length, bytes by vector capacity, hash-map slot bytes).
fn real_bytes(m: &Memtable) -> (usize, usize, usize) {
    let (mut len, mut cap) = (0, 0);
    for b in m.series.values() {
        len += (b.ts.len() + b.values.len()) * 8;
        cap += (b.ts.capacity() + b.values.capacity()) * 8;
    }
    let map = m.series.capacity() * (size_of::<(SeriesId, SeriesBuf)>() + 1);
    (len, cap, map)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow report; run by hand"]
async fn flush_mem_report() {
    let n = env("FLEETGATE_FLUSH_SERIES", 48_000);
    let total = env("FLEETGATE_FLUSH_SAMPLES", 20_000_000);
    let hours = env("FLEETGATE_FLUSH_HOURS", 4) as i64;
    let noisy = env("FLEETGATE_FLUSH_NOISY", 0) != 0;
    let per_series = (total / n).max(1) as i64;
    let step = hours * HOUR_MS / per_series;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        data_dir: dir.path().to_path_buf(),
        memtable_flush_bytes: usize::MAX,
        memtable_max_bytes: usize::MAX,
        wal_max_bytes: u64::MAX,
        ..StoreOptions::default()
    };
    let store = Store::open(opts).await.unwrap();
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            let l = Labels::from_pairs([
                ("__name__", format!("metric_{}", i / 100)),
                ("cluster", "bench".to_string()),
                ("instance", format!("i{i}")),
            ]);
            store.series_id(&l).unwrap().0
        })
        .collect();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(200_000);
    for k in 0..per_series {
        for (i, id) in ids.iter().enumerate() {
            batch.push(SampleRef {
                series: *id,
                timestamp_ms: T0 + k * step + (i % 7) as i64,
                // Noisy values make realistic file sizes (multipart uploads); else they compress
                // to almost nothing.
                value: if noisy {
                    ((i as u64 * 2_654_435_761 + k as u64 * 40_503) % 1_000_003) as f64 * 0.37
                } else {
                    (i as i64 * 3 + k) as f64
                },
            });
            if batch.len() == batch.capacity() {
                store.append(&batch).await.unwrap();
                batch.clear();
            }
        }
    }
    store.append(&batch).await.unwrap();
    let samples = per_series as usize * n;
    println!(
        "appended {samples} samples, {n} series, {hours} h in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let accounted = store.stats().memtable_bytes as f64;
    let (len, cap, map) = real_bytes(&store.active.read());
    println!(
        "memtable: accounted {:.1} MiB; samples by length {:.1} MiB, by capacity {:.1} MiB \
         (x{:.2}), map {:.1} MiB; real/accounted x{:.2}; {:.0} B/series",
        accounted / MIB,
        len as f64 / MIB,
        cap as f64 / MIB,
        cap as f64 / len as f64,
        map as f64 / MIB,
        (cap + map) as f64 / accounted,
        (cap + map) as f64 / n as f64,
    );
    let rss_before = proc_status("VmRSS");
    reset_peak();
    let t = Instant::now();
    let stats = store.flush().await.unwrap();
    let peak = proc_status("VmHWM");
    println!(
        "flush: {} files, {} rows, {:.1} MiB written in {:.1} s",
        stats.files,
        stats.rows,
        stats.bytes as f64 / MIB,
        t.elapsed().as_secs_f64()
    );
    println!(
        "RSS before flush {:.1} MiB, peak during flush {:.1} MiB: flush needs +{:.1} MiB \
         ({:.0} B/series, {:.2} B/sample)",
        rss_before as f64 / MIB,
        peak as f64 / MIB,
        peak.saturating_sub(rss_before) as f64 / MIB,
        peak.saturating_sub(rss_before) as f64 / n as f64,
        peak.saturating_sub(rss_before) as f64 / samples as f64,
    );
    store.close().await.unwrap();
}
