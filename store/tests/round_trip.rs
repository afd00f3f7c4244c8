//! append → scan through memtable, flush, WAL replay and reopen; last write wins; out of order.

use fleetgate_store::{Error, Matcher};

use crate::common::*;

async fn write_basic(store: &fleetgate_store::Store) -> (u64, u64) {
    let a = series(store, "up", &[("cluster", "c1"), ("job", "api")]);
    let b = series(store, "up", &[("cluster", "c1"), ("job", "web")]);
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.push(s(a, T0 + i * 15_000, i as f64));
        batch.push(s(b, T0 + i * 15_000, 100.0 + i as f64));
    }
    store.append(&batch).await.unwrap();
    (a, b)
}

async fn check_basic(store: &fleetgate_store::Store, a: u64, b: u64) {
    let out = store
        .scan(&[Matcher::equal("__name__", "up")], T0, T0 + 3_600_000)
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].id, a);
    assert_eq!(out[0].labels.get("job"), Some("api"));
    assert_eq!(
        points(&out[0]),
        (0..10)
            .map(|i| (T0 + i * 15_000, i as f64))
            .collect::<Vec<_>>()
    );
    assert_eq!(out[1].id, b);
    assert_eq!(out[1].values[9], 109.0);
    // inclusive sub-range
    let out = store
        .scan(&[Matcher::equal("job", "web")], T0 + 15_000, T0 + 30_000)
        .await
        .unwrap();
    assert_eq!(
        points(&out[0]),
        vec![(T0 + 15_000, 101.0), (T0 + 30_000, 102.0)]
    );
    // nothing in range → omitted
    let out = store
        .scan(&[Matcher::equal("job", "web")], T0 - 10_000, T0 - 1)
        .await
        .unwrap();
    assert!(out.is_empty());
}

#[tokio::test]
async fn memtable_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b) = write_basic(&store).await;
    check_basic(&store, a, b).await;
    let st = store.stats();
    assert_eq!(st.series_total, 2);
    assert_eq!(st.memtable_samples, 20);
    assert_eq!(st.samples_appended_total, 20);
    assert!(store.fsync_histogram().count >= 1);
}

#[tokio::test]
async fn after_flush_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b) = write_basic(&store).await;
    let fs = store.flush().await.unwrap();
    assert_eq!(fs.files, 1);
    assert_eq!(fs.rows, 20);
    assert_eq!(fs.series, 2);
    assert_eq!(store.stats().memtable_samples, 0);
    check_basic(&store, a, b).await;
    store.close().await.unwrap();
    assert!(matches!(
        store.append(&[s(a, T0, 1.0)]).await,
        Err(Error::Closed)
    ));
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(store.stats().files, 1);
    assert_eq!(store.stats().memtable_samples, 0);
    check_basic(&store, a, b).await;
    // ids are stable
    assert_eq!(
        store.lookup(&labels("up", &[("cluster", "c1"), ("job", "api")])),
        Some(a)
    );
    assert_eq!(series(&store, "new", &[]), 3);
}

#[tokio::test]
async fn after_reopen_via_wal_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = open(dir.path()).await;
        let r = write_basic(&store).await;
        drop(store); // no flush, no close: the WAL is all there is
        r
    };
    let store = open(dir.path()).await;
    assert_eq!(store.stats().memtable_samples, 20);
    check_basic(&store, a, b).await;
    // and once more after a flush of the replayed memtable
    store.flush().await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    check_basic(&store, a, b).await;
}

#[tokio::test]
async fn last_write_wins_across_memtable_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(&store, "g", &[]);
    store
        .append(&[s(a, T0, 1.0), s(a, T0 + 1000, 1.0), s(a, T0, 2.0)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.append(&[s(a, T0 + 1000, 3.0)]).await.unwrap();
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 2000)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, 2.0), (T0 + 1000, 3.0)]);
    store.flush().await.unwrap();
    store.append(&[s(a, T0, 4.0)]).await.unwrap();
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 2000)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, 4.0), (T0 + 1000, 3.0)]);
    drop(store);
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 2000)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, 4.0), (T0 + 1000, 3.0)]);
}

#[tokio::test]
async fn out_of_order_and_many_hours() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(&store, "g", &[]);
    // 3 hours, written backwards
    let mut batch: Vec<_> = (0..360)
        .rev()
        .map(|i| s(a, T0 + i * 30_000, i as f64))
        .collect();
    batch.swap(10, 200);
    store.append(&batch).await.unwrap();
    let fs = store.flush().await.unwrap();
    assert_eq!(fs.files, 3);
    // a late sample in the first hour after the flush
    store.append(&[s(a, T0 + 15_000, -1.0)]).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.stats().partitions, 3);
    assert_eq!(store.stats().files, 4);
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 3 * 3_600_000)
        .await
        .unwrap();
    let p = points(&out[0]);
    assert_eq!(p.len(), 361);
    assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(p[1], (T0 + 15_000, -1.0));
    assert_eq!(p[360], (T0 + 359 * 30_000, 359.0));
}

#[tokio::test]
async fn budget_and_unknown_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.memtable_max_bytes = 1000;
    let store = fleetgate_store::Store::open(o).await.unwrap();
    let a = series(&store, "g", &[]);
    assert!(matches!(
        store.append(&[s(99, T0, 1.0)]).await,
        Err(Error::InvalidSeries(_))
    ));
    let batch: Vec<_> = (0..100).map(|i| s(a, T0 + i, 1.0)).collect();
    store.append(&batch).await.unwrap();
    assert!(matches!(store.check_budget(), Err(Error::Overloaded(_))));
    assert!(matches!(
        store.append(&batch).await,
        Err(Error::Overloaded(_))
    ));
    store.flush().await.unwrap();
    store.check_budget().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let ids: Vec<u64> = (0..50)
        .map(|i| series(&store, "c", &[("i", &i.to_string())]))
        .collect();
    let tasks: Vec<_> = (0..64)
        .map(|k| {
            let store = std::sync::Arc::clone(&store);
            let ids = ids.clone();
            tokio::spawn(async move {
                let batch: Vec<_> = ids.iter().map(|&id| s(id, T0 + k, k as f64)).collect();
                store.append(&batch).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let h = store.fsync_histogram();
    assert!(h.count >= 1 && h.count <= 64, "fsyncs: {}", h.count);
    assert_eq!(h.counts.len(), h.bounds.len());
    drop(store);
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "c")], T0, T0 + 100)
        .await
        .unwrap();
    assert_eq!(out.len(), 50);
    assert!(out.iter().all(|d| d.timestamps.len() == 64));
}

/// The gateway spawns these futures on a multi-threaded runtime: they must be `Send`, and the
/// store `Send + Sync`.
#[allow(dead_code)]
fn futures_are_send(store: std::sync::Arc<fleetgate_store::Store>) {
    fn send<T: Send>(_: T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<fleetgate_store::Store>();
    send(async move {
        let _ = store.append(&[]).await;
        let _ = store.scan(&[], 0, 1).await;
        let _ = store.flush().await;
        let _ = store.maintain(0).await;
        let _ = store.close().await;
        let _ = fleetgate_store::Store::open(fleetgate_store::StoreOptions::default()).await;
    });
}

/// `series_in_range` answers from memtables and per-file series tables: the same answer before
/// and after a flush, none for a range without samples, the selection's order kept.
#[tokio::test]
async fn series_in_range_without_decoding_samples() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let early = series(&store, "up", &[("cluster", "c1"), ("job", "early")]);
    let late = series(&store, "up", &[("cluster", "c1"), ("job", "late")]);
    let batch = vec![s(early, T0, 1.0), s(late, T0 + 2 * 3_600_000, 2.0)];
    store.append(&batch).await.unwrap();
    let up = [Matcher::equal("__name__", "up")];
    for round in ["memtable", "parquet"] {
        let ids = |v: Vec<(u64, fleetgate_store::Labels)>| -> Vec<u64> {
            v.into_iter().map(|(id, _)| id).collect()
        };
        let all = store
            .series_in_range(&up, T0 - 1, T0 + 3 * 3_600_000)
            .await
            .unwrap();
        assert_eq!(ids(all), vec![early, late], "{round}");
        let first = store.series_in_range(&up, T0 - 1, T0 + 1).await.unwrap();
        assert_eq!(ids(first), vec![early], "{round}");
        let second = store
            .series_in_range(&up, T0 + 2 * 3_600_000, T0 + 2 * 3_600_000)
            .await
            .unwrap();
        assert_eq!(ids(second), vec![late], "{round}");
        let gap = store
            .series_in_range(&up, T0 + 10 * 3_600_000, T0 + 11 * 3_600_000)
            .await
            .unwrap();
        assert!(gap.is_empty(), "{round}");
        assert!(
            store
                .series_in_range(&up, T0 + 1, T0)
                .await
                .unwrap()
                .is_empty()
        );
        store.flush().await.unwrap();
        assert_eq!(store.stats().memtable_samples, 0);
    }
}
