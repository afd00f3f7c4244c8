//! The one error type of the store crate.

/// The text of a caught panic's payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store can fail with, named for what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A label matcher's regular expression did not compile.
    #[error("invalid regex in matcher for label {label:?}: {source}")]
    InvalidRegex {
        /// The label the matcher applies to.
        label: String,
        /// The regex error.
        source: regex::Error,
    },
    /// A series or sample the store cannot accept (unknown series id, oversized label).
    #[error("invalid series: {0}")]
    InvalidSeries(String),
    /// An append named a series that was removed (no samples left within retention) after the
    /// caller resolved its id; resolve the labels again (a new id) and retry.
    #[error("series {0} was removed while this write was in flight; retry")]
    SeriesRemoved(crate::labels::SeriesId),
    /// The WAL or memtables are over their budget; the caller should retry later.
    #[error("store over budget: {0}")]
    Overloaded(String),
    /// The store cannot write now (the WAL hit a full disk or an I/O error); it recovers by
    /// itself once a fresh WAL segment can be written, and the caller should retry later.
    #[error("storage cannot write now, retry later: {0}")]
    Unavailable(String),
    /// The store is shutting down and accepts no more writes.
    #[error("store is closed")]
    Closed,
    /// Reading or writing a local file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An on-disk file is not in a format this version understands, or is corrupt.
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow array building failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
