//! Fuzz target: SQL text → the session's parse (PostgreSQL dialect and client rewrites), the
//! read-only guard and planning (catalog lookups, pushdown, `promql()` evaluated at plan time),
//! over a small store, so no statement may panic or hang before it runs.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleetgate_query::promql::EngineOptions;
use fleetgate_query::read::ReadView;
use fleetgate_query::scope::Scope;
use fleetgate_query::sql::{SqlEngine, SqlOptions, SqlSession};
use fleetgate_store::{Labels, SampleRef, Store, StoreOptions};
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    session: SqlSession,
    _dir: std::path::PathBuf,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // promql() evaluates on the caller's thread with block_in_place: a multi-thread runtime
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let dir = std::env::temp_dir().join(format!("fleetgate-fuzz-sql-{}", std::process::id()));
        let session = rt.block_on(async {
            let store = Store::open(StoreOptions {
                data_dir: dir.clone(),
                ..StoreOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("store: {e}"));
            for (metric, job) in [("up", "api"), ("up", "db"), ("mem_bytes", "api")] {
                let labels = Labels::from_pairs([
                    ("__name__", metric),
                    ("cluster", "a"),
                    ("job", job),
                ]);
                let (id, _) = store
                    .series_id(&labels)
                    .unwrap_or_else(|e| panic!("series: {e}"));
                let samples: Vec<SampleRef> = (0..20)
                    .map(|k| SampleRef {
                        series: id,
                        timestamp_ms: 1_767_225_600_000 + k * 15_000,
                        value: k as f64,
                    })
                    .collect();
                store
                    .append(&samples)
                    .await
                    .unwrap_or_else(|e| panic!("append: {e}"));
            }
            let engine = SqlEngine::new(SqlOptions {
                memory_limit: 64 << 20,
                target_partitions: 1,
                ..SqlOptions::default()
            })
            .unwrap_or_else(|e| panic!("engine: {e}"));
            let view = Arc::new(ReadView::new(store, Scope::fleet()));
            let promql = EngineOptions {
                max_samples: 50_000,
                timeout: Some(Duration::from_secs(2)),
                ..EngineOptions::default()
            };
            engine
                .session(view, promql)
                .unwrap_or_else(|e| panic!("session: {e}"))
        });
        World {
            rt,
            session,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let w = world();
    w.rt.block_on(async {
        let Ok(statements) = w.session.parse(sql) else {
            return;
        };
        for stmt in statements.into_iter().take(4) {
            let _ = w.session.prepare(stmt).await;
        }
    });
});
