//! Append throughput (samples/s) with real `fdatasync` group commit, for batches of 2,000
//! samples (one scrape of 2,000 series), with 1 and 8 concurrent appenders; then bytes/sample of
//! the flushed Parquet.
//!
//! Run: `cargo bench -p fleetgate-store --bench wal_append`. The store lives in
//! `FLEETGATE_BENCH_DIR` (default: the system temp dir) — put it on the disk you care about.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/bench code: panics are failures

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetgate_store::{Labels, SampleRef, SeriesId, Store, StoreOptions};

const SERIES: usize = 2000;
const T0: i64 = 1_767_225_600_000;

fn batch(ids: &[SeriesId], scrape: i64) -> Vec<SampleRef> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| SampleRef {
            series: id,
            timestamp_ms: T0 + scrape * 15_000 + (i as i64 % 7) - 3,
            value: if i % 4 == 3 {
                1.0
            } else {
                (scrape * (i as i64 % 13 + 1)) as f64
            },
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let base = std::env::var_os("FLEETGATE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<Store> = rt
        .block_on(Store::open(StoreOptions {
            data_dir: dir.path().to_path_buf(),
            ..StoreOptions::default()
        }))
        .unwrap();
    let ids: Arc<Vec<SeriesId>> = Arc::new(
        (0..SERIES)
            .map(|i| {
                let l = Labels::from_pairs([
                    ("__name__", format!("metric_{}", i / 100)),
                    ("cluster", "bench".to_string()),
                    ("instance", format!("10.0.{}.{}:9100", i / 250, i % 250)),
                    ("job", "node".to_string()),
                ]);
                store.series_id(&l).unwrap().0
            })
            .collect(),
    );
    let scrape = Arc::new(AtomicI64::new(0));
    // Like the gateway: maintenance every second, with "now" = the newest scrape's time.
    let maint = {
        let (store, scrape) = (Arc::clone(&store), Arc::clone(&scrape));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let now = T0 + scrape.load(Ordering::Relaxed) * 15_000;
                store.maintain(now).await.unwrap();
            }
        })
    };

    let mut g = c.benchmark_group("wal_append");
    g.sample_size(20);
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("1_appender_2000_samples", |b| {
        b.iter(|| {
            let k = scrape.fetch_add(1, Ordering::Relaxed);
            rt.block_on(store.append(&batch(&ids, k))).unwrap();
        })
    });
    g.throughput(Throughput::Elements(8 * SERIES as u64));
    g.bench_function("8_appenders_2000_samples_each", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let (store, ids, scrape) =
                            (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&scrape));
                        tokio::spawn(async move {
                            let k = scrape.fetch_add(1, Ordering::Relaxed);
                            store.append(&batch(&ids, k)).await.unwrap();
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();

    maint.abort();
    let h = store.fsync_histogram();
    rt.block_on(store.close()).unwrap();
    let stats = store.stats();
    let bytes = dir_bytes(&dir.path().join("samples"));
    let mean_ms = if h.count > 0 {
        h.sum / h.count as f64 * 1e3
    } else {
        0.0
    };
    println!(
        "\nappended {} samples in {} scrapes; {} fdatasyncs (mean {mean_ms:.3} ms); {} flushes; \
         {} sample files, {bytes} bytes -> {:.3} B/sample",
        stats.samples_appended_total,
        scrape.load(Ordering::Relaxed),
        h.count,
        stats.flushes_total,
        stats.files,
        bytes as f64 / stats.samples_appended_total.max(1) as f64
    );
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

criterion_group!(benches, bench);
criterion_main!(benches);
