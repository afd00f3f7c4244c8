//! The one place where query errors become PostgreSQL errors (SQLSTATE codes); internal faults
//! are logged and shown as a generic message.

use fleetgate_query::Error;
use pgwire::error::{ErrorInfo, PgWireError};

/// An error with this severity, SQLSTATE and message.
pub(crate) fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message,
    )))
}

/// The PostgreSQL error of a query error.
pub(crate) fn from_query(e: &Error) -> PgWireError {
    let code = match e {
        Error::SqlParse(_) => "42601", // syntax_error
        Error::SqlPlan(m) if m.contains("not found") => "42P01", // undefined_table / column
        Error::SqlPlan(_) | Error::BadQuery { .. } | Error::BadParam { .. } => "42000",
        Error::ReadOnly(_) => "25006", // read_only_sql_transaction
        Error::ResourcesExhausted(_) => "53200", // out_of_memory
        Error::TooManySamples { .. } | Error::TooManyPoints { .. } => "54000", // program_limit_exceeded
        Error::Timeout(_) | Error::Canceled(_) => "57014",                     // query_canceled
        Error::Execution(_) => "22000",                                        // data_exception
        _ => {
            tracing::error!(error = %e, "SQL internal error");
            return user_error(
                "ERROR",
                "XX000",
                "internal error; the query can be retried".into(),
            );
        }
    };
    user_error("ERROR", code, e.to_string())
}

/// The error of a query stopped by a cancel request.
pub(crate) fn canceled() -> PgWireError {
    user_error(
        "ERROR",
        "57014",
        "canceling statement due to user request".into(),
    )
}

/// The error of a query stopped by its timeout.
pub(crate) fn timed_out(limit: std::time::Duration) -> PgWireError {
    user_error(
        "ERROR",
        "57014",
        format!(
            "canceling statement due to statement timeout ({} ms)",
            limit.as_millis()
        ),
    )
}
