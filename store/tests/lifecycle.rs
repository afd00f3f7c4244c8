//! Series lifecycle: series whose last sample expired under retention leave the catalog, the
//! index and the label answers; memory and answers stay bounded under churn; ids never come back.

use std::time::Duration;

use fleetgate_store::{Error, Matcher, Store, StoreOptions};

use crate::common::{T0, labels, opts, s, series};

const H: i64 = 3_600_000;

fn with_retention(dir: &std::path::Path, hours: u64) -> StoreOptions {
    StoreOptions {
        retention: Duration::from_secs(hours * 3600),
        ..opts(dir)
    }
}

/// A simulated day: 20 node series live all day, 200 pod series are replaced every hour (a
/// churn of 100% per hour). With 3 h retention, the catalog, the index's label values and the
/// id table stay at a few generations; after a restart the removed series stay gone and ids
/// keep growing.
#[tokio::test]
async fn a_day_of_churn_keeps_the_catalog_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(with_retention(dir.path(), 3)).await.unwrap();
    let nodes: Vec<_> = (0..20)
        .map(|n| series(&store, "node_cpu", &[("node", &format!("n{n}"))]))
        .collect();
    let mut peak_series = 0;
    let mut peak_pods = 0;
    let mut peak_table = 0;
    for h in 0..24i64 {
        let pods: Vec<_> = (0..200)
            .map(|i| series(&store, "container_cpu", &[("pod", &format!("g{h}-{i}"))]))
            .collect();
        let mut batch = Vec::new();
        for m in 0..4 {
            let t = T0 + h * H + m * 15 * 60_000;
            batch.extend(nodes.iter().map(|&id| s(id, t, m as f64)));
            batch.extend(pods.iter().map(|&id| s(id, t, 1.0)));
        }
        store.append(&batch).await.unwrap();
        store.flush().await.unwrap();
        store.maintain(T0 + (h + 1) * H).await.unwrap();
        let st = store.stats();
        peak_series = peak_series.max(st.series_total);
        peak_table = peak_table.max(st.series_id_table_bytes);
        peak_pods = peak_pods.max(store.label_values("pod").len());
    }
    let st = store.stats();
    // 4,820 series were created; retention keeps ~4 hours of pods, removal lags one pass
    assert_eq!(st.series_max_id, 20 + 24 * 200);
    assert!(peak_series <= 20 + 7 * 200, "catalog grew to {peak_series}");
    assert!(peak_pods <= 7 * 200, "pod label values grew to {peak_pods}");
    assert!(st.series_removed_total >= 17 * 200, "{st:?}");
    assert_eq!(st.series_total + st.series_removed_total, 20 + 24 * 200);
    // the id table holds pages of live ids only: far below one slot per id ever assigned
    assert!(peak_table < 12 * 1024 * 24 * 8, "id table {peak_table} B");
    // expired pods are gone from every answer; live ones and the nodes remain
    assert!(
        store
            .select_series(&[Matcher::equal("pod", "g0-0")])
            .is_empty()
    );
    assert!(!store.label_values("pod").contains(&"g0-0".to_string()));
    assert_eq!(
        store.select_series(&[Matcher::equal("pod", "g23-7")]).len(),
        1
    );
    assert_eq!(
        store
            .select_series(&[Matcher::equal("__name__", "node_cpu")])
            .len(),
        20
    );
    let live = st.series_total;
    let max_id = st.series_max_id;
    store.close().await.unwrap();
    drop(store);

    // Restart: the rewritten catalog holds only the live series; ids keep growing.
    let store = Store::open(with_retention(dir.path(), 3)).await.unwrap();
    assert_eq!(store.stats().series_total, live);
    assert_eq!(store.stats().series_max_id, max_id);
    assert!(store.label_values("pod").len() as u64 <= live);
    let back = series(&store, "container_cpu", &[("pod", "g0-0")]);
    assert_eq!(back, max_id + 1, "a returning series gets a new id");
    store.append(&[s(back, T0 + 24 * H, 7.0)]).await.unwrap();
    let got = store
        .scan(&[Matcher::equal("pod", "g0-0")], T0, T0 + 25 * H)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].values, vec![7.0]);
}

/// An id resolved before its series was removed is refused with the retryable
/// `SeriesRemoved`, not stored under a dead id; resolving again gives a new id. A series whose
/// samples are in a file or the memtable is never removed.
#[tokio::test]
async fn an_id_resolved_before_removal_is_refused_and_resolved_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(with_retention(dir.path(), 2)).await.unwrap();
    let a = series(&store, "m", &[("s", "a")]);
    let b = series(&store, "m", &[("s", "b")]);
    store.append(&[s(a, T0 + 1, 1.0)]).await.unwrap();
    store.append(&[s(b, T0 + H + 1, 1.0)]).await.unwrap();
    store.flush().await.unwrap();
    // hour 0 expires; the first pass after open only arms the next one
    let m = store.maintain(T0 + 4 * H).await.unwrap();
    assert_eq!(m.retention_partitions, 1);
    assert_eq!(m.series_removed, 0);
    // b gets a fresh sample (memtable only); hour 1 expires: a goes, b stays
    store.append(&[s(b, T0 + 5 * H - 1, 2.0)]).await.unwrap();
    let m = store.maintain(T0 + 5 * H).await.unwrap();
    assert_eq!(m.retention_partitions, 1);
    assert_eq!(m.series_removed, 1);
    assert!(!store.contains_series(a) && store.contains_series(b));
    assert!(store.series_removal_generation() > 0);
    assert_eq!(store.lookup(&labels("m", &[("s", "a")])), None);
    let r = store
        .append(&[s(b, T0 + 5 * H, 3.0), s(a, T0 + 5 * H, 3.0)])
        .await;
    assert!(
        matches!(r, Err(Error::SeriesRemoved(id)) if id == a),
        "{r:?}"
    );
    // nothing of the refused append was stored
    let got = store
        .scan(&[Matcher::equal("s", "b")], T0, T0 + 6 * H)
        .await
        .unwrap();
    assert_eq!(got[0].values, vec![2.0]);
    let again = series(&store, "m", &[("s", "a")]);
    assert!(again > b, "{again}");
    store.append(&[s(again, T0 + 5 * H, 3.0)]).await.unwrap();
    // an id never assigned is still a caller error
    let r = store.append(&[s(10_000, T0 + 5 * H, 1.0)]).await;
    assert!(matches!(r, Err(Error::InvalidSeries(_))), "{r:?}");
}
