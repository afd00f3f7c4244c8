//! The HTTP server loop (HTTP/1.1, or HTTP/2 for gRPC): at most `http.max_connections` open at once (beyond it new connections
//! wait in the kernel's backlog), a header-read timeout that also closes idle keep-alive
//! connections, and a shutdown that drains for at most `http.shutdown_timeout` before it drops the
//! connections left (which cancels their reads).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::body_timeout::BodyDeadline;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Concurrent streams (requests) of one HTTP/2 connection.
const MAX_H2_STREAMS: u32 = 64;

/// Limits of the server loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeOptions {
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// From "ready for a request" (a new or an idle keep-alive connection) to its complete header.
    pub(crate) header_read_timeout: Duration,
    /// Serve HTTP/2 only (gRPC) instead of HTTP/1.1; `header_read_timeout` is then the keep-alive
    /// ping interval and timeout.
    pub(crate) http2: bool,
    /// From a request's complete header to its complete body.
    pub(crate) body_read_timeout: Duration,
    /// How long a shutdown waits for requests in flight.
    pub(crate) shutdown_timeout: Duration,
}

/// Connection counters, shown at `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    /// Connections open now.
    pub(crate) open: AtomicI64,
    /// Connections accepted since start.
    pub(crate) accepted: AtomicU64,
    /// Times the loop waited because `max_connections` were open.
    pub(crate) at_limit: AtomicU64,
}

struct OpenGuard(Arc<ConnStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then drains.
pub(crate) async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    opts: ServeOptions,
    stats: Arc<ConnStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let mut conns: JoinSet<()> = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.at_limit.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = shutdown.wait_for(|v| *v) => break,
                }
            }
        };
        let (io, _peer) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.wait_for(|v| *v) => break,
        };
        stats.open.fetch_add(1, Ordering::Relaxed);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(Arc::clone(&stats));
        let service =
            TowerToHyperService::new(BodyDeadline::new(app.clone(), opts.body_read_timeout));
        let mut close = close_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let io = TokioIo::new(io);
            // Drives one connection; on shutdown, asks it to finish its requests and waits.
            macro_rules! drive {
                ($conn:expr) => {{
                    let conn = $conn;
                    tokio::pin!(conn);
                    let closing = tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            false
                        }
                        _ = close.wait_for(|v| *v) => true,
                    };
                    if closing {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }};
            }
            if opts.http2 {
                let mut builder =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(opts.header_read_timeout))
                    .keep_alive_timeout(opts.header_read_timeout)
                    .max_concurrent_streams(MAX_H2_STREAMS);
                drive!(builder.serve_connection(io, service));
            } else {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(opts.header_read_timeout)
                    .keep_alive(true);
                drive!(builder.serve_connection(io, service));
            }
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    let open = conns.len();
    if open > 0 {
        tracing::info!(connections = open, "draining connections");
    }
    let drained = tokio::time::timeout(opts.shutdown_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            timeout_secs = opts.shutdown_timeout.as_secs(),
            "shutdown timeout: dropping the connections still open (their reads are cancelled)"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}
