//! Compaction keeps what a scan returns; retention removes whole old partitions.

use fleetgate_store::{Matcher, StoreOptions};

use crate::common::*;

const H: i64 = 3_600_000;

#[tokio::test]
async fn compaction_result_equals_pre_compaction_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(&store, "g", &[("cluster", "c1")]);
    let b = series(&store, "h", &[]);
    for round in 0..5 {
        // overlapping rewrites: each round rewrites some earlier timestamps
        let batch: Vec<_> = (0..100)
            .flat_map(|i| {
                [
                    s(a, T0 + i * 1000 + round * 500, (round * 1000 + i) as f64),
                    s(b, T0 + i * 7, round as f64),
                ]
            })
            .collect();
        store.append(&batch).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.stats().files, 5);
    let all = [Matcher::new(fleetgate_store::MatchOp::RegexMatch, "__name__", ".+").unwrap()];
    let before = store.scan(&all, T0, T0 + H).await.unwrap();
    // not yet closed: hour end + 10 min flush interval + 10 min grace
    let m = store.maintain(T0 + H + 5 * 60_000).await.unwrap();
    assert_eq!(m.compacted_partitions, 0);
    let m = store.maintain(T0 + H + 21 * 60_000).await.unwrap();
    assert_eq!(m.compacted_partitions, 1);
    assert_eq!(m.compacted_files, 5);
    assert_eq!(store.stats().files, 1);
    assert_eq!(store.stats().compactions_total, 1);
    let after = store.scan(&all, T0, T0 + H).await.unwrap();
    assert_eq!(before, after);
    // a later write to the compacted hour still wins
    store.append(&[s(a, T0, -5.0)]).await.unwrap();
    store.flush().await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, -5.0)]);
    let again = store.scan(&all, T0 + 1, T0 + H).await.unwrap();
    assert_eq!(again, store.scan(&all, T0 + 1, T0 + H).await.unwrap());
    assert_eq!(again[0].timestamps, before[0].timestamps[1..].to_vec());
}

#[tokio::test]
async fn retention_deletes_old_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        retention: std::time::Duration::from_secs(2 * 3600),
        ..opts(dir.path())
    };
    let store = fleetgate_store::Store::open(o).await.unwrap();
    let a = series(&store, "g", &[]);
    let batch: Vec<_> = (0..5).map(|h| s(a, T0 + h * H + 1, h as f64)).collect();
    store.append(&batch).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.stats().partitions, 5);
    // now = start of hour 5; cutoff = hour 3 → hours 0,1 (end ≤ hour 2 < cutoff... end < cutoff) go
    let m = store.maintain(T0 + 5 * H).await.unwrap();
    assert_eq!(m.retention_partitions, 2);
    assert_eq!(store.stats().partitions, 3);
    assert_eq!(store.stats().retention_deleted_total, 2);
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 5 * H)
        .await
        .unwrap();
    assert_eq!(out[0].values, vec![2.0, 3.0, 4.0]);
    assert!(!dir.path().join("samples/date=2026-01-01/hour=00").exists());
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(store.stats().partitions, 3);
}

/// A crash between writing the merged file and deleting the inputs leaves both on disk: reading
/// and re-compacting must give the same answer.
#[tokio::test]
async fn crash_between_compaction_write_and_delete_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(&store, "g", &[]);
    for round in 0..4 {
        let batch: Vec<_> = (0..50)
            .map(|i| s(a, T0 + i * 1000 + round * 300, (round * 100 + i) as f64))
            .collect();
        store.append(&batch).await.unwrap();
        store.flush().await.unwrap();
    }
    let part = dir.path().join("samples/date=2026-01-01/hour=00");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let all = [Matcher::equal("__name__", "g")];
    let before = store.scan(&all, T0, T0 + H).await.unwrap();
    store.maintain(T0 + 2 * H).await.unwrap();
    assert_eq!(store.stats().files, 1);
    drop(store);
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap(); // "un-delete" the inputs
    }
    let store = open(dir.path()).await;
    assert_eq!(store.stats().files, 5);
    assert_eq!(store.scan(&all, T0, T0 + H).await.unwrap(), before);
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(&part)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let leftover = names()
        .into_iter()
        .find(|n| n.ends_with("-c.parquet"))
        .unwrap();
    store.maintain(T0 + 2 * H).await.unwrap();
    assert_eq!(store.stats().files, 1);
    assert_eq!(store.scan(&all, T0, T0 + H).await.unwrap(), before);
    // the re-compaction's output is a new file one generation up, not the leftover rewritten
    // (a read may still hold the leftover; it goes through the graveyard like any input)
    assert_eq!(names(), [leftover.replace("-c.parquet", "-c2.parquet")]);
}

/// Reads in a loop on several threads through compactions and a retention delete: no read fails,
/// and each answers exactly what the data holds (with or without the expired hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_survive_compaction_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = fleetgate_store::Store::open(StoreOptions {
        compaction_min_files: 2,
        retention: std::time::Duration::from_secs(3 * 3600),
        ..opts(dir.path())
    })
    .await
    .unwrap();
    let ids: Vec<u64> = (0..50)
        .map(|i| series(&store, "m", &[("i", &i.to_string())]))
        .collect();
    // 3 hours, 4 files each
    for round in 0..4 {
        let batch: Vec<_> = ids
            .iter()
            .flat_map(|id| (0..3).map(move |h| s(*id, T0 + h * H + round * 60_000, round as f64)))
            .collect();
        store.append(&batch).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.stats().files, 12);
    let all = [Matcher::equal("__name__", "m")];
    let full = store.scan(&all, T0, T0 + 3 * H).await.unwrap();
    let without_first = store.scan(&all, T0 + H, T0 + 3 * H).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop) = (std::sync::Arc::clone(&store), std::sync::Arc::clone(&stop));
            let (full, without_first) = (full.clone(), without_first.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = store
                        .scan(&[Matcher::equal("__name__", "m")], T0, T0 + 3 * H)
                        .await
                        .expect("a read failed during maintenance");
                    assert!(got == full || got == without_first, "a read answered wrong");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // compaction of the three closed hours, then retention of the first
    let m = store.maintain(T0 + 3 * H + 21 * 60_000).await.unwrap();
    assert_eq!(m.compacted_partitions, 3);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let m = store.maintain(T0 + 4 * H + 30 * 60_000).await.unwrap();
    assert_eq!(m.retention_partitions, 1);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    assert!(total > 8, "reads ran during maintenance: {total}");
    store.maintain(T0 + 4 * H + 31 * 60_000).await.unwrap();
    assert_eq!(store.retired_files(), 0, "deleted once the reads finished");
    assert_eq!(
        store.scan(&all, T0, T0 + 3 * H).await.unwrap(),
        without_first
    );
}
