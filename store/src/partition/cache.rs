//! Bounded, byte-weighted caches of what a sample file costs to read but is too big to keep for
//! every file: its `series_id → rows` table and its parsed footer with the page index. Keyed by
//! [`FileMeta::key`](super::FileMeta); LRU, so the files being queried stay in.

use std::fmt;
use std::sync::Arc;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use parquet::file::metadata::ParquetMetaData;

use super::SeriesTable;

/// Fixed cost charged per entry on top of its heap bytes (key, `Arc`, cache node).
const ENTRY_OVERHEAD: usize = 128;

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes.saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX)
}

/// The per-file caches. Cloning is cheap and shares them.
#[derive(Clone)]
pub(crate) struct FileCaches {
    tables: Cache<u64, Arc<SeriesTable>>,
    metadata: Cache<u64, Arc<ParquetMetaData>>,
}

impl fmt::Debug for FileCaches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCaches")
            .field("tables", &self.tables.entry_count())
            .field("tables_bytes", &self.tables.weighted_size())
            .field("metadata", &self.metadata.entry_count())
            .field("metadata_bytes", &self.metadata.weighted_size())
            .finish()
    }
}

impl FileCaches {
    /// Caches holding at most `table_bytes` of series tables and `metadata_bytes` of footers.
    pub(crate) fn new(table_bytes: u64, metadata_bytes: u64) -> Self {
        Self {
            tables: Cache::builder()
                .max_capacity(table_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|_, t: &Arc<SeriesTable>| weight(t.heap_bytes()))
                .build(),
            metadata: Cache::builder()
                .max_capacity(metadata_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|_, m: &Arc<ParquetMetaData>| weight(m.memory_size()))
                .build(),
        }
    }

    /// The series table of file `key`, if cached.
    pub(crate) fn table(&self, key: u64) -> Option<Arc<SeriesTable>> {
        self.tables.get(&key)
    }

    /// Caches the series table of file `key`.
    pub(crate) fn put_table(&self, key: u64, t: Arc<SeriesTable>) {
        self.tables.insert(key, t);
    }

    /// The parsed footer of file `key`, if cached.
    pub(crate) fn metadata(&self, key: u64) -> Option<Arc<ParquetMetaData>> {
        self.metadata.get(&key)
    }

    /// Caches the parsed footer of file `key`.
    pub(crate) fn put_metadata(&self, key: u64, m: Arc<ParquetMetaData>) {
        self.metadata.insert(key, m);
    }

    /// Drops what is cached for file `key` (the file was removed).
    pub(crate) fn forget(&self, key: u64) {
        self.tables.invalidate(&key);
        self.metadata.invalidate(&key);
    }

    /// Applies pending evictions, then returns the weighted bytes of `(tables, metadata)`.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        self.tables.run_pending_tasks();
        self.metadata.run_pending_tasks();
        (self.tables.weighted_size(), self.metadata.weighted_size())
    }

    /// Empties both caches.
    #[cfg(test)]
    pub(crate) fn clear(&self) {
        self.tables.invalidate_all();
        self.metadata.invalidate_all();
        self.tables.run_pending_tasks();
        self.metadata.run_pending_tasks();
    }
}
