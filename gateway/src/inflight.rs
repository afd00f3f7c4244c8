//! The global budget of in-flight request bytes (`http.max_inflight_bytes`, like Mimir's
//! `max_inflight_push_requests_bytes`): a write reserves its body's size before the body is read
//! and its declared decompressed size before it is decompressed; beyond the budget it gets 503 +
//! `Retry-After` at once, so the sum of what requests hold stays bounded however many arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::http::AppState;

/// Bytes per permit: a request reserves whole KiB.
const UNIT: u64 = 1024;

/// The budget.
#[derive(Debug)]
pub(crate) struct InflightBudget {
    units: Arc<Semaphore>,
    limit: u64,
    refused: AtomicU64,
}

/// Bytes reserved until dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl InflightBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        let units = (limit / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            units: Arc::new(Semaphore::new(units)),
            limit,
            refused: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes` now, or refuses with 503 + Retry-After (never waits).
    pub(crate) fn reserve(&self, bytes: u64, what: &str) -> Result<Reservation, ApiError> {
        let n = bytes.div_ceil(UNIT);
        if n == 0 {
            return Ok(Reservation { _permit: None });
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match Arc::clone(&self.units).try_acquire_many_owned(n) {
            Ok(p) => Ok(Reservation { _permit: Some(p) }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::unavailable(format!(
                    "in-flight request bytes over http.max_inflight_bytes ({} bytes) for the {what} ({bytes} bytes); retry later",
                    self.limit
                )))
            }
        }
    }

    /// Bytes reserved now.
    pub(crate) fn in_use(&self) -> u64 {
        let total = (self.limit / UNIT).max(1);
        total.saturating_sub(self.units.available_permits() as u64) * UNIT
    }

    /// Requests refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Route layer of the write endpoints: reserves the body's `Content-Length` (or
/// `http.max_body_bytes` when the length is not declared) before the body is read.
pub(crate) async fn reserve_body(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = content_length(req.headers());
    let max = st.config.http.max_body_bytes as u64;
    // a body over the limit is refused with 413 by the body limit itself; reserve at most that
    let bytes = declared.unwrap_or(max).min(max);
    let _held = match st.inflight.reserve(bytes, "request body") {
        Ok(r) => r,
        Err(e) => {
            // Read the refused body to its end without keeping it (a closed socket with unread
            // data resets the connection, and the sender would see a reset, not the 503).
            drain(req.into_body(), st.config.http.max_body_bytes).await;
            return e.into_response();
        }
    };
    next.run(req).await
}

/// Reads and drops a body: at most `max` bytes, for at most [`DRAIN_TIMEOUT`].
async fn drain(body: Body, max: usize) {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > max {
                break;
            }
        }
    })
    .await;
}

/// Longest a refused body is read for.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body into one buffer sized from its declared length (no growth, no second
/// copy, so a body holds about its size, as reserved), refusing more than `max` bytes with 413.
pub(crate) async fn read_body(
    body: Body,
    declared: Option<u64>,
    max: usize,
) -> Result<Bytes, ApiError> {
    use futures::StreamExt as _;
    let too_large = || {
        ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over http.max_body_bytes ({max} bytes)"),
        )
    };
    let cap = match declared {
        Some(n) if n > max as u64 => return Err(too_large()),
        Some(n) => n as usize,
        None => 64 << 10,
    };
    let mut buf = bytes::BytesMut::with_capacity(cap);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let e = e.into_inner();
            let status = if crate::body_timeout::is_body_timeout(&*e) {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::client(status, format!("reading the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The declared `Content-Length` of a request.
pub(crate) fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_until_dropped_and_refuses_beyond() {
        let b = InflightBudget::new(10 * UNIT);
        let a = b.reserve(6 * UNIT, "body").unwrap();
        assert_eq!(b.in_use(), 6 * UNIT);
        let e = b.reserve(5 * UNIT, "body").unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.retry_after);
        assert!(e.message.contains("http.max_inflight_bytes"));
        let c = b.reserve(4 * UNIT, "body").unwrap();
        drop(a);
        assert_eq!(b.in_use(), 4 * UNIT);
        drop(c);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.refused(), 1);
        assert!(b.reserve(0, "empty").is_ok());
    }
}
