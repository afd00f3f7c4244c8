//! `fleetgate serve`: wiring of config, store, ingester and listener; background jobs; graceful shutdown.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester};
use fleetgate_store::{CacheOptions, Store, StoreOptions};
use futures::FutureExt as _;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::http::{self, AppState, Core};
use crate::listen::{self, ServeOptions};
use crate::query_pool::QueryPool;

/// Runs the gateway until SIGTERM/SIGINT, then flushes and fsyncs everything.
pub(crate) async fn run(
    cfg: Config,
    from: Option<crate::config::LoadSource>,
) -> anyhow::Result<()> {
    let addr = cfg.listen_addr()?;
    let open = cfg.open_mode();
    let mut clusters = Vec::new();
    for (i, c) in cfg.clusters.iter().enumerate() {
        let extra: Vec<(String, String)> = c
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ctx = ClusterContext::new(c.name.as_str(), extra, cfg.cluster_limits(i)?)
            .map_err(|e| anyhow::anyhow!("config key `clusters[{i}]`: {e}"))?;
        clusters.push(Arc::new(ctx));
    }
    let auth = Authenticator::from_config(&cfg)?;
    // TLS is loaded before anything listens: an unusable certificate stops the start.
    let tls = match (&cfg.http.tls_cert_file, &cfg.http.tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    if open {
        tracing::warn!(
            %addr,
            header = %cfg.dev.cluster_header,
            "OPEN DEV MODE: no cluster tokens configured; any client can write and names its own cluster \
             (header, else its `cluster` label). Configure `clusters[].token` for production."
        );
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "OPEN DEV MODE on a non-loopback address: anyone who can reach it can write");
        }
    }
    if auth.open_reads() {
        tracing::warn!(
            %addr,
            "OPEN DEV MODE: reads need no credentials; anyone who can reach the gateway reads every \
             cluster. Configure `users:` or cluster tokens to require them."
        );
    }
    // Reads run on their own threads: the query runtime, and rayon's pool for series-parallel
    // evaluation, both `query.threads` wide, so the workers that acknowledge writes stay free.
    let threads = cfg.query.threads;
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fleetgate-eval-{i}"))
        .stack_size(fleetgate_query::parse::EVAL_STACK_BYTES)
        .build_global()
    {
        tracing::debug!(error = %e, "rayon pool already set up");
    }
    let pool = QueryPool::new(threads, cfg.query.max_concurrency, cfg.query.max_queued)
        .context("starting the query pool")?;
    let cfg = Arc::new(cfg);
    let state = Arc::new(AppState {
        config: Arc::clone(&cfg),
        auth,
        pool,
        connections: Default::default(),
        inflight: crate::inflight::InflightBudget::new(cfg.http.max_inflight_bytes),
        clusters,
        open_clusters: Default::default(),
        core: OnceLock::new(),
        telemetry: Default::default(),
        otlp: fleetgate_ingest::otlp::OtlpReceiver::new(cfg.otlp.options()),
        pulls: Default::default(),
        shutting_down: Default::default(),
        reload_from: from,
        reject_log: Default::default(),
        sql: crate::sql::SqlService::new(&cfg)?,
        budgets: Default::default(),
    });
    // Pull sources start now and scrape once the store is open.
    let changes = state.pulls.reconcile(&state, &cfg)?;
    if changes.started > 0 {
        tracing::info!(sources = changes.started, "pull sources started");
    }
    #[cfg(unix)]
    let sighup = {
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::error!("cannot listen for SIGHUP; use POST /-/reload");
                return;
            };
            while hup.recv().await.is_some() {
                if let Err(e) = crate::pull::reload(&st) {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload failed, nothing changed");
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let grpc_listener = match cfg.otlp_grpc_addr()? {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding otlp.grpc_addr {a}"))?,
        ),
        None => None,
    };
    let otlp_http_listener = match cfg.otlp_http_addr()? {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding otlp.http_addr {a}"))?,
        ),
        None => None,
    };
    let pg_listener = match cfg.pg_addr()? {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding sql.pg_addr {a}"))?,
        ),
        None => None,
    };
    let addr_of = |l: &Option<tokio::net::TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_string(), |a| a.to_string())
    };
    tracing::info!(
        addr = %local,
        otlp_grpc_addr = %addr_of(&grpc_listener),
        otlp_http_addr = %addr_of(&otlp_http_listener),
        pg_addr = %addr_of(&pg_listener),
        data_dir = %cfg.data_dir.display(),
        clusters = cfg.clusters.len(),
        users = cfg.users.len(),
        open_mode = open,
        tls = tls.is_some(),
        query_threads = threads,
        version = env!("CARGO_PKG_VERSION"),
        "fleetgate listening"
    );

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let app = http::router(Arc::clone(&state));
    let serve_opts = ServeOptions {
        max_connections: cfg.http.max_connections,
        header_read_timeout: cfg.http.header_read_timeout.0,
        body_read_timeout: cfg.http.body_read_timeout.0,
        shutdown_timeout: cfg.http.shutdown_timeout.0,
        http2: false,
    };
    let conn_stats = Arc::clone(&state.connections);
    let server_rx = shutdown_rx.clone();
    // Every listener speaks TLS when it is configured (gRPC's with ALPN h2).
    let spawn = |l: tokio::net::TcpListener,
                 app: axum::Router,
                 opts: ServeOptions|
     -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let stats = Arc::clone(&conn_stats);
        let rx = shutdown_rx.clone();
        Ok(match &tls {
            Some(tls) => {
                let cfg = if opts.http2 {
                    let mut c = rustls::ServerConfig::clone(tls);
                    c.alpn_protocols = vec![b"h2".to_vec()];
                    Arc::new(c)
                } else {
                    Arc::clone(tls)
                };
                let l = crate::tls::TlsListener::new(l, cfg)?;
                tokio::spawn(listen::serve(l, app, opts, stats, rx))
            }
            None => tokio::spawn(listen::serve(l, app, opts, stats, rx)),
        })
    };
    let _ = server_rx;
    let server = spawn(listener, app, serve_opts)?;
    let mut side_servers = Vec::new();
    if let Some(l) = grpc_listener {
        let opts = ServeOptions {
            http2: true,
            ..serve_opts
        };
        side_servers.push(spawn(l, crate::grpc::router(Arc::clone(&state)), opts)?);
    }
    if let Some(l) = otlp_http_listener {
        side_servers.push(spawn(l, http::otlp_router(Arc::clone(&state)), serve_opts)?);
    }
    if let Some(l) = pg_listener {
        side_servers.push(tokio::spawn(crate::pgwire::serve(
            l,
            Arc::clone(&state),
            tls.clone(),
            shutdown_rx.clone(),
        )));
    }
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        let _ = shutdown_tx.send(true);
    });

    // Open the store (WAL replay) while /-/healthy already answers; /-/ready turns 200 after this.
    let opened = Instant::now();
    let opts = store_options(&cfg);
    let caches = CacheOptions {
        series_table_cache_bytes: cfg.storage.series_table_cache_bytes,
        parquet_metadata_cache_bytes: cfg.storage.parquet_metadata_cache_bytes,
    };
    let store = Store::open_with_caches(opts, caches)
        .await
        .context("opening the store")?;
    let ingest_opts = IngestOptions {
        max_decompressed_bytes: cfg.http.max_decompressed_bytes,
        max_sample_age_ms: cfg.storage.retention.0.as_millis() as i64,
        ..IngestOptions::default()
    };
    let ingester = Arc::new(Ingester::new(Arc::clone(&store), ingest_opts));
    let stats = store.stats();
    tracing::info!(
        series = stats.series_total,
        memtable_samples = stats.memtable_samples,
        ms = opened.elapsed().as_millis() as u64,
        "store open, WAL replayed; ready"
    );
    let cost_tables = Arc::new(
        fleetgate_query::cost::materialize::CostTables::open(
            Arc::clone(&store),
            cfg.cost.materialize_options(),
        )
        .await
        .context("opening the cost tables")?,
    );
    let _ = state.core.set(Core {
        store: Arc::clone(&store),
        ingester: Arc::clone(&ingester),
        cost: Arc::clone(&cost_tables),
    });
    let cost_job =
        http::cost::spawn_materializer(Arc::clone(&state), cost_tables, shutdown_rx.clone());

    // Background maintenance: flush, compaction, retention, active-series sweep.
    let mut maint_rx = shutdown_rx.clone();
    let maint_store = Arc::clone(&store);
    let maint_ingester = Arc::clone(&ingester);
    let every = cfg.storage.maintenance_interval.0;
    let maint_state = Arc::clone(&state);
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a failure, retry sooner than the interval (a flush waiting for disk space).
        let mut failing = false;
        loop {
            let retry = async {
                if failing {
                    tokio::time::sleep(every.min(MAINTENANCE_RETRY)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = maint_store.flush_wanted() => {}
                _ = retry => {}
                _ = maint_rx.wait_for(|v| *v) => break,
            }
            let now = http::now_ms();
            // A panic inside a library (object_store, parquet) ends this round, not the task.
            let round = std::panic::AssertUnwindSafe(maint_store.maintain(now)).catch_unwind();
            let failed = match round.await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!(
                    "panic: {}",
                    fleetgate_store::panic_message(&*panic)
                )),
            };
            match (&failed, failing) {
                (Some(e), false) => {
                    tracing::error!(error = %e, "maintenance failed; retrying until it succeeds");
                }
                (Some(e), true) => tracing::debug!(error = %e, "maintenance still failing"),
                (None, true) => tracing::warn!("maintenance succeeded again"),
                (None, false) => {}
            }
            failing = failed.is_some();
            if failing {
                maint_state
                    .telemetry
                    .maintenance_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            maint_ingester.sweep(now);
            maint_state
                .otlp
                .sweep(now.saturating_sub(maint_ingester.options().active_series_window_ms));
        }
    });

    let served = server.await;
    for s in side_servers {
        let _ = s.await;
    }
    signals.abort();
    #[cfg(unix)]
    sighup.abort();
    state
        .shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    state.pulls.stop_all();
    let _ = maintenance.await;
    cost_job.abort();
    tracing::info!("shutting down: flushing memtables and syncing the WAL");
    let closing = Instant::now();
    store.close().await.context("closing the store")?;
    tracing::info!(
        ms = closing.elapsed().as_millis() as u64,
        "shutdown complete"
    );
    match served {
        Ok(()) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("server task failed: {e}")),
    }
}

/// How soon a failed maintenance round (e.g. a flush that met a full disk) is tried again.
const MAINTENANCE_RETRY: Duration = Duration::from_secs(2);

fn store_options(cfg: &Config) -> StoreOptions {
    let s = &cfg.storage;
    StoreOptions {
        data_dir: cfg.data_dir.clone(),
        object_store: None,
        flush_interval: s.flush_interval.0,
        memtable_flush_bytes: s.memtable_flush_bytes,
        memtable_max_bytes: s.memtable_max_bytes,
        wal_max_bytes: s.wal_max_bytes,
        wal_segment_bytes: s.wal_segment_bytes,
        retention: s.retention.0,
        compaction_min_files: s.compaction_min_files,
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
