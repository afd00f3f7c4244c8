//! Storage engine of fleetgate: the entry point is [`Store`].
//!
//! Write path: [`Store::series_id`] resolves (or creates, logging a new-series WAL record) the id of a
//! canonical label set, then [`Store::append`] logs compact `(series id, timestamp, value)` records in
//! the WAL, adds them to the memtable and resolves once a group-commit `fdatasync` covers them.
//! Memtables are flushed to Hive-partitioned Parquet files through `object_store`; the series catalog
//! is persisted beside them; WAL segments are truncated after a flush.
//!
//! Read path: [`Store::scan`] takes label matchers and a time range and returns the matching series
//! with their samples; the inverted label index finds the series, and per-file row ranges plus Parquet
//! row-group/page statistics keep the cost proportional to the series returned.
//!
//! On disk (`data_dir`): `wal/{seq:020}.wal`, `samples/date=YYYY-MM-DD/hour=HH/part-{seq:020}[-c].parquet`
//! (`metric, cluster, series_id, timestamp, value`) and `catalog/series-{first:020}-{last:020}.parquet`
//! (`series_id, metric, cluster, labels`), all plain Parquet readable without fleetgate.
#![warn(missing_docs)]

mod catalog;
mod catalog_compaction;
mod compaction;
pub mod derived;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod graveyard;
mod index;
pub mod labels;
pub mod matcher;
mod memtable;
mod objects;
mod options;
pub mod partition;
mod retention;
mod select_cache;
mod series_gc;
mod stats;
mod store;
mod wal;

#[cfg(test)]
mod flush_mem_report;
#[cfg(test)]
mod mem_report;

pub use error::{Error, Result, panic_message};
pub use labels::{Label, Labels, SeriesId};
pub use matcher::{MatchOp, Matcher};
pub use options::{CacheOptions, StoreOptions};
pub use stats::{FSYNC_BUCKETS, FlushStats, HistogramSnapshot, MaintenanceStats, StoreStats};
pub use store::{SampleRef, SeriesData, Store};
