//! The read side's one way in: every read handler takes a [`Reader`] (or [`Authenticated`]), so
//! no handler runs without a principal, and the only store handle it gets is the principal's
//! scoped [`ReadView`]. Also the 401 answer and running a read on the query pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::read::ReadView;
use serde_json::json;

use crate::auth::{AuthError, Principal};
use crate::http::AppState;
use crate::prom_api::{ErrorType, api_error};
use crate::query_pool::{CancelFlag, PoolError, Running};

/// Past `query.timeout` plus this, the pool aborts a read the engine has not stopped itself.
const HARD_LIMIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// 401 with `WWW-Authenticate: Basic realm="fleetgate"` and a Prometheus-shaped error body.
pub(crate) fn unauthorized(e: AuthError) -> Response {
    let body = json!({"status": "error", "errorType": "unauthorized", "error": e.to_string()});
    let mut resp = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"fleetgate\""),
    );
    resp
}

/// A request with a principal (401 otherwise), for endpoints that read no series.
#[derive(Debug)]
pub(crate) struct Authenticated;

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        st.auth
            .authenticate_read(&parts.headers)
            .map(|_| Authenticated)
            .map_err(unauthorized)
    }
}

/// A request with a principal and its scoped view of the store (401 / 503 otherwise).
#[derive(Debug)]
pub(crate) struct Reader {
    /// Who asks.
    pub(crate) principal: Principal,
    /// The store as the principal may see it.
    pub(crate) view: Arc<ReadView>,
}

impl FromRequestParts<Arc<AppState>> for Reader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let principal = st
            .auth
            .authenticate_read(&parts.headers)
            .map_err(unauthorized)?;
        let Some(core) = st.core.get() else {
            return Err(api_error(
                ErrorType::Unavailable,
                "replaying the WAL; not ready yet",
            ));
        };
        let view = ReadView::new(Arc::clone(&core.store), (*principal.scope).clone());
        Ok(Reader {
            principal,
            view: Arc::new(view),
        })
    }
}

/// The Prometheus-shaped answer when the pool does not run a read.
pub(crate) fn pool_error(e: PoolError) -> Response {
    match e {
        PoolError::Busy => {
            let mut r = api_error(ErrorType::Unavailable, &e.to_string());
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::error::RETRY_AFTER_SECS),
            );
            r
        }
        PoolError::QueueTimeout | PoolError::Timeout => {
            api_error(ErrorType::Timeout, &e.to_string())
        }
        PoolError::Failed => api_error(ErrorType::Internal, &e.to_string()),
    }
}

impl Reader {
    /// Runs a read of `kind` on the query pool, then records its duration and samples read.
    pub(crate) async fn run<F, Fut, T>(
        &self,
        st: &AppState,
        kind: &'static str,
        make: F,
    ) -> Result<T, Response>
    where
        F: FnOnce(CancelFlag) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        // the engine's deadline stops a query first; this bounds any read, at its next await
        let limit = st.config.query.timeout.0 + HARD_LIMIT_GRACE;
        let r = st
            .pool
            .run(st.config.query.timeout.0, limit, make)
            .await
            .map_err(pool_error);
        let (elapsed, samples) = (started.elapsed(), self.view.samples_read());
        st.telemetry.query(kind, elapsed, samples);
        tracing::debug!(
            principal = %self.principal.name,
            kind,
            ms = elapsed.as_millis() as u64,
            samples,
            ok = r.is_ok(),
            "read"
        );
        r
    }

    /// Starts a streaming read on the query pool (the export: bounded by its client, which can
    /// stop it by going away, not by the query timeout).
    pub(crate) async fn spawn<F, Fut, T>(
        &self,
        st: &AppState,
        make: F,
    ) -> Result<Running<T>, Response>
    where
        F: FnOnce(CancelFlag) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        st.pool
            .spawn(st.config.query.timeout.0, None, make)
            .await
            .map_err(pool_error)
    }
}
