//! The series cache: hits give the ids the miss path resolved; sweeping frees active slots.

use std::sync::Arc;

use fleetgate_ingest::remote_write::synth::{Prng, live_request};
use fleetgate_ingest::{IngestOptions, Ingester, MemorySink};

use crate::util::*;

#[tokio::test]
async fn hit_path_returns_the_miss_path_ids() {
    let ing = ingester();
    let c = ctx("prod");
    let req = |ts| {
        live_request(0, 500, 1, ts, &mut Prng::new(1))
            .encode_snappy()
            .unwrap()
            .into()
    };
    let first = ing
        .remote_write(&c, req(NOW_MS - 30_000), NOW_MS)
        .await
        .unwrap();
    assert_eq!(first.series_created, 500);
    let second = ing
        .remote_write(&c, req(NOW_MS - 15_000), NOW_MS)
        .await
        .unwrap();
    assert_eq!(second.series_created, 0);
    assert_eq!(second.samples_accepted, 500);
    let samples = ing.store().samples();
    let (a, b) = samples.split_at(500);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.series, y.series);
    }
    // and they are the ids a fresh ingester (all misses) resolves against the same store
    let fresh = Ingester::new(Arc::clone(ing.store()), IngestOptions::default());
    let p = fresh.prepare(&c, &req(NOW_MS), NOW_MS).unwrap();
    assert_eq!(p.outcome.series_created, 0);
    assert!(p.samples.iter().zip(a).all(|(x, y)| x.series == y.series));
    assert_eq!(ing.active_series("prod"), 500);
}

#[tokio::test]
async fn sweep_drops_idle_series() {
    let sink = Arc::new(MemorySink::new());
    let ing = Ingester::new(sink, IngestOptions::default());
    let c = ctx("prod");
    let one = |name: &str| body(vec![series(&[("__name__", name)], &[(NOW_MS, 1.0)])]);
    ing.remote_write(&c, one("a"), NOW_MS).await.unwrap();
    ing.remote_write(&c, one("b"), NOW_MS + 1_800_000)
        .await
        .unwrap();
    assert_eq!(ing.active_series("prod"), 2);
    assert_eq!(ing.sweep(NOW_MS + 3_600_000), 0);
    assert_eq!(ing.sweep(NOW_MS + 3_600_001), 1);
    assert_eq!(ing.active_series("prod"), 1);
}

/// Concurrent writers of overlapping series never exceed the limit or count a series twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_respect_the_active_series_limit() {
    use fleetgate_ingest::{Limits, RejectReason};

    let ing = Arc::new(Ingester::new(
        Arc::new(MemorySink::new()),
        IngestOptions::default(),
    ));
    let c = ctx_with(
        "prod",
        &[],
        Limits {
            max_active_series: 200,
            ..Limits::default()
        },
    );
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let (ing, c) = (Arc::clone(&ing), c.clone());
            tokio::spawn(async move {
                let mut rng = Prng::new(t);
                let mut accepted = 0;
                for _ in 0..20 {
                    let first = rng.below(250) as usize;
                    let body = live_request(first, 50, 1, NOW_MS, &mut rng)
                        .encode_snappy()
                        .unwrap();
                    let out = ing.remote_write(&c, body.into(), NOW_MS).await.unwrap();
                    let rejected = out
                        .rejected_samples_by_reason
                        .get(RejectReason::MaxActiveSeries);
                    assert_eq!(out.samples_accepted + rejected, 50);
                    accepted += out.samples_accepted;
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(ing.active_series("prod"), 200);
    assert_eq!(ing.store().series_count(), 200);
    assert_eq!(ing.store().samples().len() as u64, accepted);
}
