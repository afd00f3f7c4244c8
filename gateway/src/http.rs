//! The HTTP listener: routes, remote-write receiver, health/readiness and `/metrics`; the OTLP/HTTP
//! receiver is [`otlp`].

pub(crate) mod cost;
pub(crate) mod focus;
pub(crate) mod otlp;
pub(crate) mod sql;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetgate_ingest::{ClusterContext, Ingester};
use fleetgate_store::Store;
use parking_lot::Mutex;

use crate::auth::{Authenticator, PrincipalKind};
use crate::config::Config;
use crate::error::ApiError;
use crate::prom_api;
use crate::query_pool::QueryPool;
use crate::telemetry::{self, Telemetry};

/// The engine parts that exist once the WAL has been replayed.
#[derive(Debug)]
pub(crate) struct Core {
    /// The store.
    pub(crate) store: Arc<Store>,
    /// The ingest pipeline on top of it.
    pub(crate) ingester: Arc<Ingester<Store>>,
    /// The materialized cost tables (`cost_allocation`, `cost_assets`).
    pub(crate) cost: Arc<fleetgate_query::cost::materialize::CostTables>,
}

/// Shared state of all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    /// The validated configuration.
    pub(crate) config: Arc<Config>,
    /// Credentials → principal (a cluster's writer, or a reader with a cluster scope).
    pub(crate) auth: Authenticator,
    /// Where reads run: apart from the workers that acknowledge writes.
    pub(crate) pool: QueryPool,
    /// Open connections (the server loop counts them).
    pub(crate) connections: Arc<crate::listen::ConnStats>,
    /// Bytes write requests in flight hold (bodies and their decompressed size).
    pub(crate) inflight: crate::inflight::InflightBudget,
    /// One context per configured cluster (same order as `config.clusters`).
    pub(crate) clusters: Vec<Arc<ClusterContext>>,
    /// Open-mode contexts created on demand, by cluster name.
    pub(crate) open_clusters: Mutex<std::collections::HashMap<String, Arc<ClusterContext>>>,
    /// Set once the store is open and the WAL replayed; `/-/ready` is 200 from then on.
    pub(crate) core: OnceLock<Core>,
    /// Self-metrics.
    pub(crate) telemetry: Telemetry,
    /// The pull sources' tasks.
    pub(crate) pulls: crate::pull::Pulls,
    /// Set once shutdown began.
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// How the config was loaded (file and flags), for reloads; `None` in unit tests.
    pub(crate) reload_from: Option<crate::config::LoadSource>,
    /// The OTLP receiver (translation options, delta-to-cumulative state), for HTTP and gRPC.
    pub(crate) otlp: fleetgate_ingest::otlp::OtlpReceiver,
    /// Rejection-burst logging: (cluster → (window start, rejected samples in window)).
    pub(crate) reject_log: Mutex<std::collections::HashMap<String, (Instant, u64)>>,
    /// The SQL engine (HTTP and PostgreSQL wire).
    pub(crate) sql: crate::sql::SqlService,
    /// Every budget as the last cost pass evaluated it, fleet-wide (for `/metrics`).
    pub(crate) budgets: Mutex<Vec<fleetgate_query::cost::budget::Status>>,
}

/// Most open-mode cluster contexts kept (each named by a sender).
const MAX_OPEN_CLUSTERS: usize = 10_000;

/// Builds the router. Every route but `/-/healthy`, `/-/ready` and `/metrics` authenticates:
/// writes through [`AppState::auth`] in the handler, reads through the
/// [`crate::reader::Reader`] / [`crate::reader::Authenticated`] extractor each read handler takes.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.http.max_body_bytes;
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/push", post(remote_write))
        .route("/v1/metrics", post(otlp::metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::inflight::reserve_body,
        ))
        .route("/-/reload", post(reload))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/query", get(prom_api::query).post(prom_api::query))
        .route(
            "/api/v1/query_range",
            get(prom_api::query_range).post(prom_api::query_range),
        )
        .route(
            "/api/v1/series",
            get(prom_api::series).post(prom_api::series),
        )
        .route(
            "/api/v1/labels",
            get(prom_api::labels).post(prom_api::labels),
        )
        .route("/api/v1/label/{name}/values", get(prom_api::label_values))
        .route("/api/v1/metadata", get(prom_api::metadata))
        .route("/api/v1/status/buildinfo", get(prom_api::buildinfo))
        .route(
            "/api/v1/query_exemplars",
            get(prom_api::query_exemplars).post(prom_api::query_exemplars),
        )
        .route("/api/v1/rules", get(prom_api::rules))
        .route("/api/v1/alerts", get(prom_api::alerts))
        .route(
            "/api/v1/export",
            get(crate::export::export).post(crate::export::export_form),
        )
        .route("/api/v1/sql", post(sql::sql))
        .route("/allocation/compute", get(cost::allocation))
        .route("/allocation", get(cost::allocation))
        .route("/assets", get(cost::assets))
        .route("/api/v1/budgets", get(cost::budgets))
        .route("/api/v1/cost/focus", get(focus::focus))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            track_request,
        ))
        .with_state(state)
}

/// The router of the dedicated OTLP/HTTP listener (`otlp.http_addr`): `POST /v1/metrics` only.
pub(crate) fn otlp_router(state: Arc<AppState>) -> Router {
    let max_body = state.config.http.max_body_bytes;
    Router::new()
        .route("/v1/metrics", post(otlp::metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::inflight::reserve_body,
        ))
        .with_state(state)
}

/// Counts every request and its latency by handler (the route); remote-write counts its own,
/// with the cluster.
async fn track_request(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    if let Some(h) = handler
        && h != "/api/v1/write"
        && h != "/api/v1/push"
        && h != "/v1/metrics"
    {
        st.telemetry
            .request(&h, "", resp.status().as_u16(), started.elapsed());
    }
    resp
}

/// `POST /-/reload`: re-reads the config (file, env, flags) and starts, stops or restarts pull
/// sources to match it; other changes need a restart. Needs a fleet-wide reader (or open mode).
async fn reload(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match st.auth.authenticate_read(&headers) {
        Err(e) => return ApiError::client(StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        Ok(p)
            if !matches!(p.kind, PrincipalKind::Anonymous | PrincipalKind::User(_))
                || !p.scope.is_fleet() =>
        {
            return ApiError::client(
                StatusCode::FORBIDDEN,
                format!(
                    "{:?} may not reload: it needs a user whose scope is every cluster",
                    p.name
                ),
            )
            .into_response();
        }
        Ok(_) => {}
    }
    match crate::pull::reload(&st) {
        Ok(c) => (
            StatusCode::OK,
            format!(
                "reloaded: {} sources started, {} stopped, {} unchanged\n",
                c.started, c.stopped, c.unchanged
            ),
        )
            .into_response(),
        Err(e) => ApiError::client(
            StatusCode::BAD_REQUEST,
            format!("reload failed, nothing changed: {e:#}"),
        )
        .into_response(),
    }
}

async fn healthy() -> &'static str {
    "fleetgate is healthy\n"
}

/// `/-/ready`: 200 once the WAL is replayed and while storage can write; 503 + Retry-After with
/// the reason otherwise (a full disk: writes resume by themselves once space comes back).
async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.core.get() {
        None => ApiError::unavailable("replaying the WAL; not ready yet\n").into_response(),
        Some(core) => match core.store.write_failure() {
            None => (StatusCode::OK, "fleetgate is ready\n").into_response(),
            Some(why) => ApiError::unavailable(format!(
                "not ready: storage cannot write ({why}); writes resume by themselves once it can\n"
            ))
            .into_response(),
        },
    }
}

/// `POST /api/v1/write`: Prometheus remote-write 1.0.
async fn remote_write(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let body = match crate::inflight::read_body(
        body,
        crate::inflight::content_length(&headers),
        st.config.http.max_body_bytes,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let resp = e.into_response();
            st.telemetry.request(
                "remote_write",
                "",
                resp.status().as_u16(),
                started.elapsed(),
            );
            return resp;
        }
    };
    let (cluster_name, resp) = match remote_write_inner(&st, &headers, body).await {
        Ok((c, r)) => (c, r),
        Err((c, e)) => (c, e.into_response()),
    };
    st.telemetry.request(
        "remote_write",
        &cluster_name,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

async fn remote_write_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(String, Response), (String, ApiError)> {
    let principal = match st.auth.authenticate_write(headers) {
        Ok(p) => p,
        Err(e) => {
            return Err((
                String::new(),
                ApiError::client(StatusCode::UNAUTHORIZED, e.to_string()),
            ));
        }
    };
    let ctx = match principal.kind {
        PrincipalKind::Cluster(i) => match st.clusters.get(i) {
            Some(c) => Arc::clone(c),
            None => {
                return Err((
                    String::new(),
                    ApiError::internal(&"cluster index out of range"),
                ));
            }
        },
        PrincipalKind::Anonymous => st.open_context(headers),
        PrincipalKind::User(_) => {
            return Err((
                String::new(),
                ApiError::client(
                    StatusCode::FORBIDDEN,
                    format!(
                        "user {:?} may read but not write; remote-write needs a cluster token",
                        principal.name
                    ),
                ),
            ));
        }
    };
    let cluster = ctx.name.to_string();
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && !enc.as_bytes().eq_ignore_ascii_case(b"snappy")
    {
        return Err((
            cluster,
            ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {enc:?} is not supported; use snappy"),
            ),
        ));
    }
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        && ct.contains("io.prometheus.write.v2.Request")
    {
        {
            return Err((
                cluster,
                ApiError::client(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "remote-write 2.0 (io.prometheus.write.v2.Request) is not supported yet; send 1.0 (prometheus.WriteRequest)",
                ),
            ));
        }
    }
    let Some(core) = st.core.get() else {
        return Err((
            cluster,
            ApiError::unavailable("replaying the WAL; not ready yet"),
        ));
    };
    // Reserve the declared decompressed size before decompressing (a length the ingest path
    // refuses anyway, malformed or over max_decompressed_bytes, reserves nothing).
    let declared = snap::raw::decompress_len(&body)
        .ok()
        .filter(|n| *n <= st.config.http.max_decompressed_bytes)
        .unwrap_or(0);
    let _decompressed = st
        .inflight
        .reserve(declared as u64, "decompressed payload")
        .map_err(|e| (cluster.clone(), e))?;
    let now_ms = now_ms();
    let outcome = match core.ingester.remote_write(&ctx, body, now_ms).await {
        Ok(o) => o,
        Err(e) => return Err((cluster, ApiError::from(e))),
    };
    st.telemetry.accepted(&cluster, outcome.samples_accepted);
    st.telemetry
        .series_created(&cluster, outcome.series_created);
    for (reason, n) in outcome.rejected_samples_by_reason.iter() {
        st.telemetry.rejected(&cluster, reason.as_str(), n);
    }
    if !outcome.has_rejections() {
        return Ok((cluster, StatusCode::NO_CONTENT.into_response()));
    }
    st.log_rejections(&cluster, outcome.samples_rejected(), &outcome.examples);
    Ok((
        cluster,
        (StatusCode::BAD_REQUEST, outcome.rejection_message()).into_response(),
    ))
}

impl AppState {
    /// The context of an open-mode request: cluster from the header, else from the payload's own
    /// `cluster` label, else the default cluster.
    pub(crate) fn open_context(&self, headers: &HeaderMap) -> Arc<ClusterContext> {
        let from_header = headers
            .get(self.config.dev.cluster_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        match from_header {
            Some(n) => self.open_named(n, false),
            None => self.open_named(&self.config.dev.default_cluster.clone(), true),
        }
    }

    /// The open-mode context of cluster `name`; with `from_payload`, a series' own `cluster`
    /// label names its cluster instead.
    pub(crate) fn open_named(&self, name: &str, from_payload: bool) -> Arc<ClusterContext> {
        let key = format!("{}\u{0}{from_payload}", name);
        let make = || {
            Arc::new(ClusterContext {
                name: name.into(),
                extra_labels: Vec::new(),
                limits: self.config.limits.clone(),
                cluster_from_payload: from_payload,
            })
        };
        let mut m = self.open_clusters.lock();
        if m.len() >= MAX_OPEN_CLUSTERS && !m.contains_key(&key) {
            // senders name their own clusters here: keep the map bounded
            return make();
        }
        Arc::clone(m.entry(key).or_insert_with(make))
    }

    /// One log line per cluster per 10 s of rejections (a "rejection burst").
    pub(crate) fn log_rejections(&self, cluster: &str, n: u64, examples: &[String]) {
        let mut m = self.reject_log.lock();
        let now = Instant::now();
        let e = m.entry(cluster.to_string()).or_insert((now, 0));
        e.1 += n;
        if e.1 == n || now.duration_since(e.0).as_secs() >= 10 {
            tracing::warn!(
                cluster,
                rejected_samples = e.1,
                window_secs = now.duration_since(e.0).as_secs(),
                example = examples.first().map(String::as_str).unwrap_or(""),
                "rejected samples"
            );
            *e = (now, 0);
        }
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    telemetry::family(
        &mut out,
        "fleetgate_build_info",
        "gauge",
        "Build information.",
    );
    out.push_str(&format!(
        "fleetgate_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    let (cpu, rss) = telemetry::process_stats();
    telemetry::single(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent in seconds.",
        cpu,
    );
    telemetry::single(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        rss,
    );
    telemetry::single(
        &mut out,
        "fleetgate_ready",
        "gauge",
        "1 once the WAL has been replayed.",
        if st.core.get().is_some() { 1.0 } else { 0.0 },
    );
    st.telemetry.render(&mut out);
    telemetry::family(
        &mut out,
        "fleetgate_auth_failures_total",
        "counter",
        "Requests refused for their credentials, by reason.",
    );
    for (reason, n) in st.auth.failure_counts() {
        out.push_str(&format!(
            "fleetgate_auth_failures_total{{reason=\"{reason}\"}} {n}\n"
        ));
    }
    let ps = st.pool.stats();
    let pool_metrics: [(&str, &str, &str, f64); 5] = [
        (
            "fleetgate_sql_queries_running",
            "gauge",
            "SQL queries running (HTTP and PostgreSQL; at most sql.max_concurrency).",
            st.sql.running() as f64,
        ),
        (
            "fleetgate_sql_memory_reserved_bytes",
            "gauge",
            "Bytes the running SQL queries hold in the SQL memory pool (sql.memory_limit).",
            st.sql.memory_reserved() as f64,
        ),
        (
            "fleetgate_queries_in_flight",
            "gauge",
            "Reads running on the query pool.",
            ps.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "fleetgate_queries_queued",
            "gauge",
            "Reads waiting for a query slot.",
            ps.queued.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "fleetgate_queries_rejected_total",
            "counter",
            "Reads refused with 503: queue full, or waited too long for a slot.",
            ps.rejected.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
    ];
    let cs = &st.connections;
    let conn_metrics: [(&str, &str, &str, f64); 5] = [
        (
            "fleetgate_inflight_request_bytes",
            "gauge",
            "Bytes reserved by write requests in flight (bodies and decompressed payloads).",
            st.inflight.in_use() as f64,
        ),
        (
            "fleetgate_inflight_refused_total",
            "counter",
            "Write requests refused with 503 because http.max_inflight_bytes was reached.",
            st.inflight.refused() as f64,
        ),
        (
            "fleetgate_http_connections",
            "gauge",
            "HTTP connections open (at most http.max_connections).",
            cs.open.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "fleetgate_http_connections_accepted_total",
            "counter",
            "HTTP connections accepted.",
            cs.accepted.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "fleetgate_http_connection_limit_waits_total",
            "counter",
            "Times accepting waited because http.max_connections were open.",
            cs.at_limit.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, v) in pool_metrics.into_iter().chain(conn_metrics) {
        telemetry::single(&mut out, name, kind, help, v);
    }
    if let Some(core) = st.core.get() {
        let s = core.store.stats();
        telemetry::single(
            &mut out,
            "fleetgate_series",
            "gauge",
            "Series in the catalog.",
            s.series_total as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_memtable_bytes",
            "gauge",
            "Bytes held in memtables.",
            s.memtable_bytes as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_memtable_samples",
            "gauge",
            "Samples held in memtables.",
            s.memtable_samples as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_wal_bytes",
            "gauge",
            "Bytes of WAL segments on disk.",
            s.wal_bytes as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_flushes_total",
            "counter",
            "Memtable flushes to Parquet.",
            s.flushes_total as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_compactions_total",
            "counter",
            "Partition compactions.",
            s.compactions_total as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_partitions",
            "gauge",
            "Hour partitions on storage.",
            s.partitions as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_parquet_files",
            "gauge",
            "Parquet sample files on storage.",
            s.files as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_samples_appended_total",
            "counter",
            "Samples appended to the WAL and memtable.",
            s.samples_appended_total as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_retention_deleted_partitions_total",
            "counter",
            "Partitions deleted by retention.",
            s.retention_deleted_total as f64,
        );
        let gauges: [(&str, &str, &str, f64); 7] = [
            (
                "fleetgate_series_removed_total",
                "counter",
                "Series removed from the catalog and index because retention expired their last sample.",
                s.series_removed_total as f64,
            ),
            (
                "fleetgate_series_max_id",
                "gauge",
                "Highest series id ever assigned (ids are never reused).",
                s.series_max_id as f64,
            ),
            (
                "fleetgate_series_id_table_bytes",
                "gauge",
                "Bytes of the catalog's id table (pages of label slots; freed as series are removed).",
                s.series_id_table_bytes as f64,
            ),
            (
                "fleetgate_catalog_files",
                "gauge",
                "Series catalog Parquet files.",
                s.catalog_files as f64,
            ),
            (
                "fleetgate_catalog_compactions_total",
                "counter",
                "Series catalog compactions.",
                s.catalog_compactions_total as f64,
            ),
            (
                "fleetgate_series_table_cache_bytes",
                "gauge",
                "Bytes of per-file series tables cached.",
                s.series_table_cache_bytes as f64,
            ),
            (
                "fleetgate_parquet_metadata_cache_bytes",
                "gauge",
                "Bytes of Parquet footers and page indexes cached.",
                s.parquet_metadata_cache_bytes as f64,
            ),
        ];
        for (name, kind, help, v) in gauges {
            telemetry::single(&mut out, name, kind, help, v);
        }
        let storage: [(&str, &str, &str, f64); 6] = [
            (
                "fleetgate_storage_writable",
                "gauge",
                "1 while the WAL can be written; 0 after a write or fsync failure until a fresh segment is durable.",
                if core.store.write_failure().is_none() {
                    1.0
                } else {
                    0.0
                },
            ),
            (
                "fleetgate_wal_write_failures_total",
                "counter",
                "WAL write or fsync failures (each starts a period of refused writes).",
                s.wal_write_failures_total as f64,
            ),
            (
                "fleetgate_wal_recoveries_total",
                "counter",
                "Recoveries from WAL write failures (a fresh segment written and fsync'd).",
                s.wal_recoveries_total as f64,
            ),
            (
                "fleetgate_wal_corrupt_records_total",
                "counter",
                "Damaged WAL stretches skipped by replay at start (each lost at least one record).",
                s.wal_corrupt_records as f64,
            ),
            (
                "fleetgate_wal_corrupt_bytes_total",
                "counter",
                "Bytes in the damaged WAL stretches skipped by replay at start.",
                s.wal_corrupt_bytes as f64,
            ),
            (
                "fleetgate_wal_damaged_segments",
                "gauge",
                "WAL segments copied into wal/damaged/ at start for inspection.",
                s.wal_damaged_segments as f64,
            ),
        ];
        for (name, kind, help, v) in storage {
            telemetry::single(&mut out, name, kind, help, v);
        }
        telemetry::single(
            &mut out,
            "fleetgate_maintenance_failures_total",
            "counter",
            "Maintenance rounds (flush, compaction, retention) that failed and will be retried.",
            st.telemetry
                .maintenance_failures
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        telemetry::single(
            &mut out,
            "fleetgate_retired_files",
            "gauge",
            "Sample files compaction or retention removed, kept until the reads holding them finish.",
            core.store.retired_files() as f64,
        );
        let h = core.store.fsync_histogram();
        telemetry::render_snapshot(
            &mut out,
            "fleetgate_wal_fsync_duration_seconds",
            "WAL fdatasync latency (one per group commit).",
            &h.bounds,
            &h.counts,
            h.sum,
            h.count,
        );
        telemetry::family(
            &mut out,
            "fleetgate_active_series",
            "gauge",
            "Series seen in the last hour, by cluster.",
        );
        for (cluster, n) in core.ingester.active_series_by_cluster() {
            out.push_str(&format!(
                "fleetgate_active_series{{cluster=\"{}\"}} {n}\n",
                telemetry::esc(&cluster)
            ));
        }
    }
    cost::budget_metrics(&mut out, &st.budgets.lock());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Wall-clock now in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::{ClusterConfig, UserConfig};

    fn state() -> Arc<AppState> {
        let cfg = Config {
            clusters: vec![ClusterConfig {
                name: "alpha".into(),
                token: Some("tok-a".into()),
                ..Default::default()
            }],
            users: vec![UserConfig {
                name: "grafana".into(),
                password: Some("pw".into()),
                clusters: vec!["*".into()],
                ..Default::default()
            }],
            ..Config::default()
        };
        Arc::new(AppState {
            auth: Authenticator::from_config(&cfg).unwrap(),
            sql: crate::sql::SqlService::new(&cfg).unwrap(),
            budgets: Default::default(),
            pool: QueryPool::new(1, 1, 1).unwrap(),
            connections: Default::default(),
            inflight: crate::inflight::InflightBudget::new(cfg.http.max_inflight_bytes),
            config: Arc::new(cfg),
            clusters: Vec::new(),
            open_clusters: Default::default(),
            core: OnceLock::new(),
            telemetry: Default::default(),
            otlp: fleetgate_ingest::otlp::OtlpReceiver::new(Default::default()),
            pulls: Default::default(),
            shutting_down: Default::default(),
            reload_from: None,
            reject_log: Default::default(),
        })
    }

    async fn call(app: &Router, uri: &str, auth: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).to_string(),
        )
    }

    #[tokio::test]
    async fn reads_without_credentials_get_the_401_challenge() {
        let app = router(state());
        for uri in [
            "/api/v1/query?query=up",
            "/api/v1/query_range?query=up&start=1&end=2&step=1",
            "/api/v1/series?match[]=up",
            "/api/v1/labels",
            "/api/v1/label/job/values",
            "/api/v1/export?match[]=up",
            "/api/v1/metadata",
            "/api/v1/query_exemplars",
            "/api/v1/rules",
            "/api/v1/alerts",
            "/api/v1/status/buildinfo",
        ] {
            for auth in [None, Some("Bearer wrong"), Some("Basic Z3JhZmFuYTp4")] {
                let (status, headers, body) = call(&app, uri, auth).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {auth:?}");
                assert_eq!(
                    headers.get(header::WWW_AUTHENTICATE).unwrap(),
                    "Basic realm=\"fleetgate\"",
                    "{uri}"
                );
                assert_eq!(
                    headers.get(header::CONTENT_TYPE).unwrap(),
                    "application/json"
                );
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["status"], "error", "{body}");
                assert_eq!(v["errorType"], "unauthorized", "{body}");
                assert!(v["error"].as_str().unwrap().contains("auth") || auth.is_some());
            }
        }
        // the right credentials pass authentication (the store is not open in this test: 503)
        let (status, _, _) = call(&app, "/api/v1/labels", Some("Basic Z3JhZmFuYTpwdw==")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, body) = call(&app, "/api/v1/status/buildinfo", Some("Bearer tok-a")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // health and self-metrics stay open
        for uri in ["/-/healthy", "/metrics"] {
            assert_eq!(call(&app, uri, None).await.0, StatusCode::OK, "{uri}");
        }
        let (_, _, m) = call(&app, "/metrics", None).await;
        assert!(
            m.contains("fleetgate_auth_failures_total{reason=\"missing\"} 11"),
            "{m}"
        );
        assert!(m.contains("fleetgate_queries_in_flight 0"), "{m}");
        assert!(
            m.contains("fleetgate_http_request_duration_seconds_count{handler=\"/api/v1/labels\"}"),
            "{m}"
        );
    }
}
