//! The one error type of the query crate.

/// Query result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a query can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query text is not valid (client error).
    #[error("bad query {query:?}: {reason}")]
    BadQuery {
        /// The text given.
        query: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter other than the query is wrong (client error).
    #[error("invalid parameter {param:?}: {reason}")]
    BadParam {
        /// The parameter name.
        param: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The store failed while reading.
    #[error("store: {0}")]
    Store(#[from] fleetgate_store::Error),
}

impl Error {
    /// True when the client sent something wrong (HTTP 400), false for server faults.
    pub fn is_client_error(&self) -> bool {
        match self {
            Error::BadQuery { .. } | Error::BadParam { .. } => true,
            Error::Store(fleetgate_store::Error::InvalidRegex { .. }) => true,
            Error::Store(_) => false,
        }
    }
}
