//! [`StoreOptions`]: where the store keeps its data and its budgets.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

/// Store configuration. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Root directory: the WAL lives in `data_dir/wal`; with no `object_store`, Parquet files and
    /// the catalog live under `data_dir` too (`samples/…`, `catalog/…`). Default `./data`.
    pub data_dir: PathBuf,
    /// Where Parquet objects go; `None` means a `LocalFileSystem` rooted at `data_dir`.
    pub object_store: Option<Arc<dyn ObjectStore>>,
    /// The memtable is flushed at least this often. Default 10 min.
    pub flush_interval: Duration,
    /// A flush starts when the active memtable exceeds this many bytes. Default 256 MiB.
    ///
    /// Memtable bytes are what the allocator holds (vector capacities, hash-map slots), ~1.1×
    /// the 16 B per sample. A flush streams the frozen memtable to Parquet, so it needs only tens
    /// of MiB beyond it (one Arrow batch, one row group, one 8 MiB upload part; plus sorted copies
    /// of series that arrived out of order), but the active memtable keeps filling meanwhile: the
    /// peak is about twice this under sustained load, bounded by `memtable_max_bytes`. Lower
    /// means less memory and shorter flushes, but more, smaller files per hour partition (each
    /// flush writes one file per hour it covers) until compaction merges them, and more flushes.
    pub memtable_flush_bytes: usize,
    /// Above this many memtable bytes (active + being flushed), `append` and `check_budget`
    /// return `Error::Overloaded`: the memtables' memory stays below this plus a flush's
    /// encode buffers. Default 1 GiB.
    pub memtable_max_bytes: usize,
    /// Above this many WAL bytes, `append` and `check_budget` return `Error::Overloaded`.
    /// Default 4 GiB.
    pub wal_max_bytes: u64,
    /// A WAL segment is closed and a new one started past this size. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Hour partitions that ended longer ago than this are deleted. Default 15 days.
    pub retention: Duration,
    /// A closed hour partition with at least this many files is merged into one. Default 4.
    pub compaction_min_files: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            object_store: None,
            flush_interval: Duration::from_secs(600),
            memtable_flush_bytes: 256 << 20,
            memtable_max_bytes: 1 << 30,
            wal_max_bytes: 4 << 30,
            wal_segment_bytes: 64 << 20,
            retention: Duration::from_secs(15 * 24 * 3600),
            compaction_min_files: 4,
        }
    }
}

/// Budgets of the per-file read caches, given to [`Store::open_with_caches`]; `Default` gives
/// the documented defaults, which [`Store::open`] uses.
///
/// (Not fields of [`StoreOptions`]: callers build that struct with every field spelled out, so
/// a new field there would break them.)
///
/// [`Store::open`]: crate::Store::open
/// [`Store::open_with_caches`]: crate::Store::open_with_caches
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Bytes of per-file `series_id → rows` tables kept in memory (about 16 B per series per
    /// file, plus ~128 B per file); least recently used tables are dropped beyond it and rebuilt
    /// from the file's `series_id` column when next needed. Default 64 MiB.
    pub series_table_cache_bytes: u64,
    /// Bytes of parsed Parquet footers with their page indexes kept in memory; least recently
    /// used ones are dropped beyond it and re-read when next needed. Default 64 MiB.
    pub parquet_metadata_cache_bytes: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            series_table_cache_bytes: 64 << 20,
            parquet_metadata_cache_bytes: 64 << 20,
        }
    }
}
