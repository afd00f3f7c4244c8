//! The one error type of the ingest crate, and its classification for the gateway's HTTP mapping.
//!
//! Per-sample problems (bad labels, samples out of the time window, limits) are not errors: they are
//! counted in a [`crate::WriteOutcome`] while the valid samples of the same request are stored. An
//! [`Error`] means the request as a whole was not stored.

use fleetgate_store::Error as StoreError;

/// Ingest result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that makes a whole write request fail, named for what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not valid snappy block-format data.
    #[error("invalid snappy block: {0}")]
    Snappy(#[from] snap::Error),
    /// The body would decompress to more than the configured maximum.
    #[error("decompressed body of {actual} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
        /// The size the body declares, in bytes.
        actual: usize,
    },
    /// The decompressed body is not a well-formed protobuf `WriteRequest`.
    #[error("malformed protobuf at byte {offset}: {reason}")]
    Protobuf {
        /// Byte offset in the decompressed body where decoding failed.
        offset: usize,
        /// What was wrong, naming the message field.
        reason: String,
    },
    /// The body is not a well-formed OTLP `ExportMetricsServiceRequest` (protobuf or JSON), or
    /// not valid gzip.
    #[error("malformed OTLP request: {0}")]
    Otlp(String),
    /// A scraped body is not valid Prometheus text or OpenMetrics.
    #[error("malformed exposition text: {0}")]
    Exposition(String),
    /// The store is over its budget; the sender should retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The store failed for another reason.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// A cluster context built from configuration is not usable.
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(String),
}

/// Who is at fault for an [`Error`], and whether retrying can help. The gateway maps each kind to
/// an HTTP status in one place (400, 413, 429/503, 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request can never succeed as sent (400): senders must not retry.
    BadRequest,
    /// The request body is over a size limit (413): senders must not retry.
    PayloadTooLarge,
    /// The server is temporarily over capacity (429/503): senders retry with backoff.
    Overloaded,
    /// A server-side failure (500): senders retry; details are logged, not returned.
    Internal,
}

impl Error {
    /// Classifies the error for the HTTP response.
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The store refuses a label set it cannot encode (only reachable with limits off).
            Self::Snappy(_)
            | Self::Protobuf { .. }
            | Self::Otlp(_)
            | Self::Exposition(_)
            | Self::Store(StoreError::InvalidSeries(_)) => ErrorKind::BadRequest,
            Self::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            Self::Overloaded(_)
            | Self::Store(
                StoreError::Overloaded(_)
                | StoreError::Closed
                | StoreError::Unavailable(_)
                | StoreError::SeriesRemoved(_),
            ) => ErrorKind::Overloaded,
            Self::Store(_) | Self::InvalidConfig(_) => ErrorKind::Internal,
        }
    }

    /// A protobuf error at `offset`; kept out of line because it is only built on the cold path.
    #[cold]
    #[inline(never)]
    pub(crate) fn protobuf(offset: usize, reason: impl Into<String>) -> Self {
        Self::Protobuf {
            offset,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for Error {
    /// The store's `Overloaded` becomes [`Error::Overloaded`]; everything else is wrapped.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded(msg) => Self::Overloaded(msg),
            other => Self::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            Error::from(StoreError::Overloaded("wal".into())).kind(),
            ErrorKind::Overloaded
        );
        assert!(matches!(
            Error::from(StoreError::Overloaded("wal".into())),
            Error::Overloaded(_)
        ));
        assert_eq!(
            Error::from(StoreError::Closed).kind(),
            ErrorKind::Overloaded
        );
        assert_eq!(
            Error::TooLarge {
                limit: 1,
                actual: 2
            }
            .kind(),
            ErrorKind::PayloadTooLarge
        );
        assert_eq!(Error::protobuf(3, "x").kind(), ErrorKind::BadRequest);
        let io = StoreError::Io {
            op: "open",
            path: "/x".into(),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(Error::from(io).kind(), ErrorKind::Internal);
    }
}
