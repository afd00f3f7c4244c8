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
    /// The query is valid but cannot be evaluated on this data (e.g. many-to-many matching,
    /// duplicate output series); Prometheus reports these as `execution` errors.
    #[error("{0}")]
    Execution(String),
    /// The query ran past its deadline.
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query was canceled (its client went away).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// The query would hold more samples in memory than the configured budget.
    #[error("query processing would load too many samples into memory in {phase} (limit {limit})")]
    TooManySamples {
        /// Where the budget was exceeded.
        phase: &'static str,
        /// The budget.
        limit: usize,
    },
    /// SQL text that does not parse (client error).
    #[error("{0}")]
    SqlParse(String),
    /// SQL that parses but does not plan: unknown table or column, type mismatch (client error).
    #[error("{0}")]
    SqlPlan(String),
    /// A statement that would change something; the SQL interface is read-only (client error).
    #[error("{0}")]
    ReadOnly(String),
    /// A SQL query needed more memory than the pool has left; retry later or ask for less.
    #[error("{0}")]
    ResourcesExhausted(String),
    /// A SQL engine fault (logged; the client sees a generic message).
    #[error("{0}")]
    SqlInternal(String),
    /// A range query asks for more points per series than allowed (Prometheus: 11,000).
    #[error(
        "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
        thousands(*.limit)
    )]
    TooManyPoints {
        /// The limit.
        limit: usize,
    },
}

/// `11000` as `11,000`, as Prometheus writes the limit.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The error classes of the Prometheus HTTP API (`errorType` in its JSON envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorType {
    /// `bad_data`, HTTP 400.
    BadData,
    /// `execution`, HTTP 422.
    Execution,
    /// `timeout`, HTTP 503.
    Timeout,
    /// `unavailable`, HTTP 503 + `Retry-After` (a shared limit is reached for now).
    Unavailable,
    /// `canceled`, HTTP 499 (the client is gone).
    Canceled,
    /// `internal`, HTTP 500.
    Internal,
}

impl ApiErrorType {
    /// The `errorType` string Prometheus uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorType::BadData => "bad_data",
            ApiErrorType::Execution => "execution",
            ApiErrorType::Timeout => "timeout",
            ApiErrorType::Unavailable => "unavailable",
            ApiErrorType::Canceled => "canceled",
            ApiErrorType::Internal => "internal",
        }
    }
}

impl Error {
    /// A copy of an error that reached SQL through DataFusion (store errors become their
    /// message: the original stays with the scan that failed).
    pub(crate) fn clone_for_sql(&self) -> Error {
        match self {
            Error::BadQuery { query, reason } => Error::BadQuery {
                query: query.clone(),
                reason: reason.clone(),
            },
            Error::BadParam { param, reason } => Error::BadParam {
                param,
                reason: reason.clone(),
            },
            Error::Store(e) if self.is_client_error() => Error::SqlPlan(e.to_string()),
            Error::Store(e) => Error::SqlInternal(e.to_string()),
            Error::Execution(m) => Error::Execution(m.clone()),
            Error::Timeout(p) => Error::Timeout(p),
            Error::Canceled(p) => Error::Canceled(p),
            Error::TooManySamples { phase, limit } => Error::TooManySamples {
                phase,
                limit: *limit,
            },
            Error::TooManyPoints { limit } => Error::TooManyPoints { limit: *limit },
            Error::SqlParse(m) => Error::SqlParse(m.clone()),
            Error::SqlPlan(m) => Error::SqlPlan(m.clone()),
            Error::ReadOnly(m) => Error::ReadOnly(m.clone()),
            Error::ResourcesExhausted(m) => Error::ResourcesExhausted(m.clone()),
            Error::SqlInternal(m) => Error::SqlInternal(m.clone()),
        }
    }

    /// True when the client sent something wrong (HTTP 400), false for server faults.
    pub fn is_client_error(&self) -> bool {
        match self {
            Error::BadQuery { .. } | Error::BadParam { .. } => true,
            Error::Store(fleetgate_store::Error::InvalidRegex { .. }) => true,
            Error::Store(_) => false,
            Error::TooManyPoints { .. } => true,
            Error::SqlParse(_) | Error::SqlPlan(_) | Error::ReadOnly(_) => true,
            Error::ResourcesExhausted(_) | Error::SqlInternal(_) => false,
            Error::Execution(_)
            | Error::Timeout(_)
            | Error::Canceled(_)
            | Error::TooManySamples { .. } => false,
        }
    }

    /// The Prometheus API error class this error is reported as.
    pub fn api_error_type(&self) -> ApiErrorType {
        match self {
            Error::BadQuery { .. } | Error::BadParam { .. } | Error::TooManyPoints { .. } => {
                ApiErrorType::BadData
            }
            Error::Store(fleetgate_store::Error::InvalidRegex { .. }) => ApiErrorType::BadData,
            Error::Store(_) | Error::SqlInternal(_) => ApiErrorType::Internal,
            Error::SqlParse(_) | Error::SqlPlan(_) | Error::ReadOnly(_) => ApiErrorType::BadData,
            Error::Execution(_) | Error::TooManySamples { .. } => ApiErrorType::Execution,
            Error::ResourcesExhausted(_) => ApiErrorType::Unavailable,
            Error::Timeout(_) => ApiErrorType::Timeout,
            Error::Canceled(_) => ApiErrorType::Canceled,
        }
    }
}

#[cfg(test)]
#[test]
fn thousands_separators() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(11_000), "11,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
}
