//! Against the real `fleetgate_store::Store`: labels, ids and exact values survive the trip
//! through the WAL, the memtable and a Parquet flush.

use std::sync::Arc;

use fleetgate_ingest::{IngestOptions, Ingester, RejectReason};
use fleetgate_store::{Matcher, Store, StoreOptions};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        data_dir: dir.path().to_path_buf(),
        ..StoreOptions::default()
    };
    let retention_ms = opts.retention.as_millis() as i64;
    let store = Store::open(opts).await.unwrap();
    let ing = Ingester::new(
        Arc::clone(&store),
        IngestOptions {
            max_sample_age_ms: retention_ms,
            ..IngestOptions::default()
        },
    );
    let now = Store::now_ms();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let values = [1.5, stale, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    let samples: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (now - 60_000 + i as i64 * 1000, *v))
        .collect();
    let b = body(vec![
        series(
            &[("__name__", "up"), ("cluster", "spoof"), ("job", "node")],
            &samples,
        ),
        series(&[("__name__", "bad-name")], &[(now, 1.0)]),
    ]);
    let out = ing.remote_write(&ctx("prod"), b, now).await.unwrap();
    assert_eq!(out.samples_accepted, 5);
    assert_eq!(out.series_created, 1);
    assert_eq!(
        out.rejected_samples_by_reason
            .get(RejectReason::InvalidMetricName),
        1
    );

    // a second write hits the cache and lands on the same series
    let b = body(vec![series(
        &[("__name__", "up"), ("cluster", "spoof"), ("job", "node")],
        &[(now, 2.0)],
    )]);
    let out = ing.remote_write(&ctx("prod"), b, now).await.unwrap();
    assert_eq!((out.samples_accepted, out.series_created), (1, 0));

    let check = |data: Vec<fleetgate_store::SeriesData>| {
        assert_eq!(data.len(), 1);
        assert_eq!(
            data[0].labels,
            labels(&[
                ("__name__", "up"),
                ("cluster", "prod"),
                ("exported_cluster", "spoof"),
                ("job", "node")
            ])
        );
        let mut want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        want.push(2.0f64.to_bits());
        let got: Vec<u64> = data[0].values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
    };
    let m = [Matcher::equal("cluster", "prod")];
    check(
        store
            .scan(&m, now - 3_600_000, now + 3_600_000)
            .await
            .unwrap(),
    );
    store.flush().await.unwrap();
    check(
        store
            .scan(&m, now - 3_600_000, now + 3_600_000)
            .await
            .unwrap(),
    );
    store.close().await.unwrap();
}

/// Series the store removed (retention expired their last sample) leave the series caches: a
/// returning series is created afresh under a new id, and a write whose ids were resolved just
/// before the removal is refused as retryable (503) and succeeds when retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_series_leave_the_cache_and_come_back_as_new() {
    const H: i64 = 3_600_000;
    let t0: i64 = 1_767_225_600_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions {
        data_dir: dir.path().to_path_buf(),
        retention: std::time::Duration::from_secs(2 * 3600),
        ..StoreOptions::default()
    })
    .await
    .unwrap();
    let ing = Ingester::new(Arc::clone(&store), IngestOptions::default());
    let a = [("__name__", "up"), ("pod", "a")];
    let b = [("__name__", "up"), ("pod", "b")];
    let c = ctx("prod");
    ing.remote_write(&c, body(vec![series(&a, &[(t0 + 1, 1.0)])]), t0 + 1)
        .await
        .unwrap();
    ing.remote_write(&c, body(vec![series(&b, &[(t0 + H, 1.0)])]), t0 + H)
        .await
        .unwrap();
    assert_eq!(
        ing.active_series_by_cluster(),
        vec![("prod".to_string(), 2)]
    );
    store.flush().await.unwrap();
    store.maintain(t0 + 4 * H).await.unwrap();
    // `a` resolved (from the cache) but not yet appended when the store removes it
    let now = t0 + 5 * H - 10;
    let pending = ing
        .prepare(&c, &body(vec![series(&a, &[(now, 2.0)])]), now)
        .unwrap();
    let m = store.maintain(t0 + 5 * H).await.unwrap();
    assert_eq!(m.series_removed, 2);
    let e = ing.commit(pending).await.unwrap_err();
    assert_eq!(e.kind(), fleetgate_ingest::ErrorKind::Overloaded, "{e}");
    // the refusal purged the cache: the sender's retry creates the series again
    let out = ing
        .remote_write(&c, body(vec![series(&a, &[(now, 2.0)])]), now)
        .await
        .unwrap();
    assert_eq!((out.samples_accepted, out.series_created), (1, 1));
    // `b` left the cache with the next sweep, without any write of it
    ing.sweep(now);
    assert_eq!(
        ing.active_series_by_cluster(),
        vec![("prod".to_string(), 1)]
    );
    let got = store
        .scan(&[Matcher::equal("pod", "a")], t0, t0 + 6 * H)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].values, vec![2.0]);
    assert!(got[0].id > 2, "a new id, never a reused one: {}", got[0].id);
}
