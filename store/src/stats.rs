//! Counters and the fsync latency histogram the store exposes for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the WAL fsync latency buckets.
pub const FSYNC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A lock-free latency histogram with fixed buckets.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation in seconds.
    pub(crate) fn observe(&self, secs: f64) {
        let i = FSYNC_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }

    /// A consistent-enough copy (buckets are read one by one).
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = Vec::with_capacity(FSYNC_BUCKETS.len());
        let mut acc = 0u64;
        for b in &self.buckets[..FSYNC_BUCKETS.len()] {
            acc += b.load(Ordering::Relaxed);
            counts.push(acc);
        }
        let count = acc + self.buckets[FSYNC_BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            bounds: FSYNC_BUCKETS.to_vec(),
            counts,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count,
        }
    }
}

/// A histogram in Prometheus shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds (`le`), ascending, without `+Inf`.
    pub bounds: Vec<f64>,
    /// **Cumulative** counts: `counts[i]` observations were `<= bounds[i]`. Same length as
    /// `bounds`; the `+Inf` bucket is `count`.
    pub counts: Vec<u64>,
    /// Sum of all observations in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// Point-in-time store statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Series in the catalog.
    pub series_total: u64,
    /// Estimated bytes held by active and frozen memtables.
    pub memtable_bytes: u64,
    /// Samples held by active and frozen memtables.
    pub memtable_samples: u64,
    /// WAL bytes on disk plus buffered.
    pub wal_bytes: u64,
    /// Successful flushes since open.
    pub flushes_total: u64,
    /// Partitions compacted since open.
    pub compactions_total: u64,
    /// Hour partitions with at least one Parquet file.
    pub partitions: u64,
    /// Parquet sample files.
    pub files: u64,
    /// Samples accepted by `append` since open.
    pub samples_appended_total: u64,
    /// Parquet files deleted by retention since open.
    pub retention_deleted_total: u64,
    /// Series catalog files (`catalog/*.parquet`) on the object store.
    pub catalog_files: u64,
    /// Catalog compactions (all catalog files merged into one) since open.
    pub catalog_compactions_total: u64,
    /// Bytes (weighted) held by the cache of per-file `series_id → rows` tables.
    pub series_table_cache_bytes: u64,
    /// Bytes (weighted) held by the cache of parsed Parquet footers and page indexes.
    pub parquet_metadata_cache_bytes: u64,
    /// Damaged WAL stretches replay skipped at open (each lost at least one record).
    pub wal_corrupt_records: u64,
    /// Bytes in those stretches.
    pub wal_corrupt_bytes: u64,
    /// WAL segments copied into `wal/damaged/` at open.
    pub wal_damaged_segments: u64,
    /// WAL write or fsync failures since open (each starts a period of refused writes).
    pub wal_write_failures_total: u64,
    /// Recoveries from those failures (a fresh segment written and fsync'd) since open.
    pub wal_recoveries_total: u64,
    /// Series removed because no sample of theirs was left (retention expired them).
    pub series_removed_total: u64,
    /// Highest series id ever assigned (ids are never reused).
    pub series_max_id: u64,
    /// Bytes of the catalog's id table (pages of label slots; the labels themselves not counted).
    pub series_id_table_bytes: u64,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Parquet sample files written.
    pub files: u64,
    /// Rows written (after de-duplication).
    pub rows: u64,
    /// Bytes written, sample files and catalog.
    pub bytes: u64,
    /// Series persisted to the catalog.
    pub series: u64,
    /// WAL segments removed.
    pub wal_segments_removed: u64,
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// The flush, when one was due.
    pub flush: Option<FlushStats>,
    /// Catalog files removed by catalog compaction (inputs merged into one file).
    pub catalog_compacted_files: u64,
    /// Partitions compacted.
    pub compacted_partitions: u64,
    /// Files removed by compaction (inputs).
    pub compacted_files: u64,
    /// Hour partitions removed by retention.
    pub retention_partitions: u64,
    /// Files removed by retention.
    pub retention_files: u64,
    /// Series removed because no sample of theirs is left (see `Store::series_removal_generation`).
    pub series_removed: u64,
}
