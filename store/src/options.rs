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
    pub memtable_flush_bytes: usize,
    /// Above this many memtable bytes (active + being flushed), `append` and `check_budget`
    /// return `Error::Overloaded`. Default 1 GiB.
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
