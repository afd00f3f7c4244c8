//! An `#[ignore]`d report of the memory held per file (series tables, footer metadata) and of
//! scan latency, cold and warm: `cargo test -p fleetgate-store --lib mem_report -- --ignored
//! --nocapture` (`FLEETGATE_MEM_SERIES`, `FLEETGATE_MEM_HOURS`, `FLEETGATE_MEM_SAMPLES_PER_HOUR`,
//! `FLEETGATE_MEM_CACHE_MIB`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::sync::Arc;
use std::time::Instant;

use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::options::{CacheOptions, StoreOptions};
use crate::partition::{FileMeta, HOUR_MS};
use crate::store::{SampleRef, Store};

const T0: i64 = 1_767_225_600_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (fixed bytes of the entries, series-table cache bytes, footer/page-index cache bytes).
fn held(store: &Store) -> (usize, usize, usize) {
    let set = store.files.read();
    let mut fixed = 0;
    for (_, v) in set.partitions() {
        for f in v {
            let f: &FileMeta = f;
            fixed += size_of::<FileMeta>() + f.path.as_ref().len();
        }
    }
    let (tables, md) = store.caches.bytes();
    (fixed, tables as usize, md as usize)
}

async fn timed_scan(store: &Store, m: &[Matcher], end: i64) -> (f64, usize) {
    let t = Instant::now();
    let out = store.scan(m, T0, end).await.unwrap();
    (t.elapsed().as_secs_f64() * 1e3, out.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow report; run by hand"]
async fn mem_report() {
    let n = env("FLEETGATE_MEM_SERIES", 20_000);
    let hours = env("FLEETGATE_MEM_HOURS", 24) as i64;
    let per_hour = env("FLEETGATE_MEM_SAMPLES_PER_HOUR", 60) as i64;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        data_dir: dir.path().to_path_buf(),
        ..StoreOptions::default()
    };
    let t = Instant::now();
    {
        let store = Store::open(opts.clone()).await.unwrap();
        let ids: Vec<u64> = (0..n)
            .map(|i| {
                let l = Labels::from_pairs([
                    ("__name__", format!("metric_{}", i / 100)),
                    ("cluster", "bench".to_string()),
                    ("group", format!("{}", i % (n / 1000).max(1))),
                    ("instance", format!("i{i}")),
                ]);
                store.series_id(&l).unwrap().0
            })
            .collect();
        let step = HOUR_MS / per_hour;
        for h in 0..hours {
            let mut batch = Vec::with_capacity(n * per_hour as usize);
            for k in 0..per_hour {
                for (i, id) in ids.iter().enumerate() {
                    batch.push(SampleRef {
                        series: *id,
                        timestamp_ms: T0 + h * HOUR_MS + k * step + (i % 7) as i64,
                        value: (i as i64 * 3 + k) as f64,
                    });
                }
            }
            for c in batch.chunks(200_000) {
                store.append(c).await.unwrap();
            }
            store.flush().await.unwrap();
        }
        store.close().await.unwrap();
    }
    println!(
        "wrote {n} series x {hours} files x {per_hour} samples in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mib = env("FLEETGATE_MEM_CACHE_MIB", 64) as u64;
    let caches = CacheOptions {
        series_table_cache_bytes: mib << 20,
        parquet_metadata_cache_bytes: mib << 20,
    };
    println!("caches: {mib} MiB each");
    let store: Arc<Store> = Store::open_with_caches(opts, caches).await.unwrap();
    println!("open: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let report = |what: &str, store: &Store| {
        let (fixed, tables, md) = held(store);
        let total = fixed + tables + md;
        println!(
            "{what}: entries {fixed} B, series tables {tables} B, footer/page index {md} B; \
             total {total} B = {:.1} B/series",
            total as f64 / n as f64
        );
    };
    report("after open", &store);
    let end = T0 + hours * HOUR_MS - 1;
    let one = [Matcher::equal("instance", "i4242")];
    let thousand = [Matcher::equal("group", "3")];
    for (name, m) in [("1 series", &one[..]), ("1000 series", &thousand[..])] {
        store.caches.clear();
        let (ms, k) = timed_scan(&store, m, end).await;
        println!("scan {name} cold (caches empty): {ms:.1} ms ({k} series)");
        let (ms, k) = timed_scan(&store, m, end).await;
        println!("scan {name} warm: {ms:.1} ms ({k} series)");
        report("  held", &store);
    }
}
