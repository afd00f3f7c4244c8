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
