//! Shared helpers: a store in a temp dir, series and sample builders.

use std::path::Path;
use std::sync::Arc;

use fleetgate_store::{Labels, SampleRef, SeriesData, SeriesId, Store, StoreOptions};

/// 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600_000;

pub(crate) fn opts(dir: &Path) -> StoreOptions {
    StoreOptions {
        data_dir: dir.to_path_buf(),
        wal_segment_bytes: 1 << 20,
        ..StoreOptions::default()
    }
}

pub(crate) async fn open(dir: &Path) -> Arc<Store> {
    Store::open(opts(dir)).await.unwrap()
}

pub(crate) fn labels(metric: &str, pairs: &[(&str, &str)]) -> Labels {
    let mut v: Vec<(&str, &str)> = vec![("__name__", metric)];
    v.extend_from_slice(pairs);
    Labels::from_pairs(v)
}

pub(crate) fn series(store: &Store, metric: &str, pairs: &[(&str, &str)]) -> SeriesId {
    store.series_id(&labels(metric, pairs)).unwrap().0
}

pub(crate) fn s(series: SeriesId, timestamp_ms: i64, value: f64) -> SampleRef {
    SampleRef {
        series,
        timestamp_ms,
        value,
    }
}

pub(crate) fn points(d: &SeriesData) -> Vec<(i64, f64)> {
    d.timestamps
        .iter()
        .copied()
        .zip(d.values.iter().copied())
        .collect()
}
