//! The one place where errors become HTTP statuses; 5xx bodies hide internals, which are logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_ingest::ErrorKind;

/// Seconds a sender is asked to wait when the gateway is over budget or not ready.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

/// An HTTP error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// The status code.
    pub(crate) status: StatusCode,
    /// The body shown to the client (for 5xx: a generic text).
    pub(crate) message: String,
    /// Whether to send `Retry-After`.
    pub(crate) retry_after: bool,
}

impl ApiError {
    /// A 4xx with a message for the client.
    pub(crate) fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: status == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// 503 + Retry-After: try again later (not ready, over budget). The sender retries.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            retry_after: true,
        }
    }

    /// A 500 whose cause is logged, not shown.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error; the request can be retried".into(),
            retry_after: false,
        }
    }
}

impl From<fleetgate_ingest::Error> for ApiError {
    fn from(e: fleetgate_ingest::Error) -> Self {
        match e.kind() {
            ErrorKind::BadRequest => Self::client(StatusCode::BAD_REQUEST, e.to_string()),
            ErrorKind::PayloadTooLarge => {
                Self::client(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            ErrorKind::Overloaded => {
                log_overload(&e);
                Self::unavailable(format!("{e}; retry later"))
            }
            ErrorKind::Internal => Self::internal(&e),
        }
    }
}

/// One log line per 10 s of refused writes (a burst), with the count, instead of one per request.
fn log_overload(e: &fleetgate_ingest::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_LOG_SECS: AtomicU64 = AtomicU64::new(0);
    let n = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_LOG_SECS.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_LOG_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        REFUSED.store(0, Ordering::Relaxed);
        tracing::warn!(error = %e, refused_requests = n, "refusing writes (503 + Retry-After)");
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.message).into_response();
        if self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_maps_to_spec_statuses() {
        let over = ApiError::from(fleetgate_ingest::Error::Overloaded("memtable full".into()));
        let resp = over.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let big = ApiError::from(fleetgate_ingest::Error::TooLarge {
            limit: 1,
            actual: 2,
        });
        assert_eq!(big.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bad = ApiError::from(fleetgate_ingest::Error::Protobuf {
            offset: 3,
            reason: "truncated".into(),
        });
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.message.contains("truncated"));
        let internal = ApiError::from(fleetgate_ingest::Error::Store(fleetgate_store::Error::Io {
            op: "write",
            path: "/secret/wal".into(),
            source: std::io::Error::other("disk on fire"),
        }));
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message.contains("secret"), "5xx hides internals");
    }
}
