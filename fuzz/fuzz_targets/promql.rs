//! Fuzz target: query text → parse with the gateway's limits → evaluate, instant and range, over
//! a small fixed data set with a small sample budget and a timeout, so no input may hang.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use fleetgate_query::promql::{Engine, EngineOptions, MemorySource};
use fleetgate_store::Labels;
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    data: MemorySource,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut data = MemorySource::new();
        for (i, job) in ["api", "db", "web"].into_iter().enumerate() {
            for inst in 0..3 {
                let inst = inst.to_string();
                let counter: Vec<(i64, f64)> = (0..60)
                    .map(|k| (k * 15_000, (k * (i as i64 + 1)) as f64))
                    .collect();
                data.add(
                    Labels::from_pairs([
                        ("__name__", "http_requests_total"),
                        ("job", job),
                        ("instance", inst.as_str()),
                        ("cluster", "a"),
                    ]),
                    &counter,
                );
                let gauge: Vec<(i64, f64)> = (0..60)
                    .map(|k| (k * 15_000, ((k * 7) % 11) as f64 - 3.5))
                    .collect();
                data.add(
                    Labels::from_pairs([
                        ("__name__", "temp"),
                        ("job", job),
                        ("instance", inst.as_str()),
                    ]),
                    &gauge,
                );
                for le in ["0.1", "1", "+Inf"] {
                    let b: Vec<(i64, f64)> = (0..60).map(|k| (k * 15_000, k as f64)).collect();
                    data.add(
                        Labels::from_pairs([("__name__", "lat_bucket"), ("job", job), ("le", le)]),
                        &b,
                    );
                }
            }
        }
        let engine = Engine::new(EngineOptions {
            max_samples: 50_000,
            timeout: Some(Duration::from_secs(2)),
            ..EngineOptions::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        World { rt, engine, data }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let Ok(query) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let w = world();
    // time and step from the first two bytes, within the loaded 15 minutes
    let t = i64::from(data[0]) * 4_000;
    let step = 1_000 + i64::from(data[1]) * 500;
    w.rt.block_on(async {
        let _ = w.engine.instant(&w.data, query, t).await;
        let _ = w.engine.range(&w.data, query, 0, t, step).await;
    });
});
