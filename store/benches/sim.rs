//! Simulated scrape data shared by the benches: counters, gauges and constant series scraped
//! every 15 s with ±3 ms jitter.

use std::sync::Arc;

use fleetgate_store::partition::write::SeriesRows;

/// Deterministic xorshift generator.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// Next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    pub(crate) fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Kinds of series in the mix.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Integer counter (requests): += 0..20 per scrape.
    IntCounter,
    /// Float counter (cpu seconds): += U(0, 0.05).
    FloatCounter,
    /// Integer gauge (memory bytes): random walk in 4 KiB steps.
    IntGauge,
    /// Float gauge in [0, 1).
    FloatGauge,
    /// Constant (info metrics, limits).
    Constant,
}

/// The kind of series `i`: 30% int counters, 15% float counters, 20% int gauges,
/// 10% float gauges, 25% constants.
pub(crate) fn kind(i: usize) -> Kind {
    match i % 20 {
        0..=5 => Kind::IntCounter,
        6..=8 => Kind::FloatCounter,
        9..=12 => Kind::IntGauge,
        13..=14 => Kind::FloatGauge,
        _ => Kind::Constant,
    }
}

/// `n_series` series × `n_samples` samples starting at `t0`, grouped by hour partition:
/// returns one `Vec<SeriesRows>` per hour. 100 series per metric name, 5 clusters.
pub(crate) fn generate(n_series: usize, n_samples: usize, t0: i64) -> Vec<(i64, Vec<SeriesRows>)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let clusters: Vec<Arc<str>> = (0..5).map(|c| Arc::from(format!("cluster-{c}"))).collect();
    let mut hours: std::collections::BTreeMap<i64, Vec<SeriesRows>> = Default::default();
    for i in 0..n_series {
        let metric: Arc<str> = Arc::from(format!("metric_{:03}_{:?}", i / 100, kind(i)));
        let cluster = Arc::clone(&clusters[i % 5]);
        let phase = (rng.next() % 15_000) as i64;
        let mut v = match kind(i) {
            Kind::IntGauge => ((rng.next() % 1_000_000) * 4096) as f64,
            Kind::Constant => [1.0, 0.0, 8.0, 2.5e8][(rng.next() % 4) as usize],
            _ => 0.0,
        };
        for k in 0..n_samples {
            let jitter = (rng.next() % 7) as i64 - 3;
            let ts = t0 + phase + k as i64 * 15_000 + jitter;
            v = match kind(i) {
                Kind::IntCounter => v + (rng.next() % 20) as f64,
                Kind::FloatCounter => v + rng.f() * 0.05,
                Kind::IntGauge => (v + ((rng.next() % 5) as f64 - 2.0) * 4096.0).max(0.0),
                Kind::FloatGauge => rng.f(),
                Kind::Constant => v,
            };
            let hour = ts.div_euclid(3_600_000) * 3_600_000;
            let rows = hours.entry(hour).or_default();
            match rows.last_mut() {
                Some(r) if r.id == i as u64 + 1 => {
                    r.ts.push(ts);
                    r.values.push(v);
                }
                _ => rows.push(SeriesRows {
                    id: i as u64 + 1,
                    metric: Arc::clone(&metric),
                    cluster: Some(Arc::clone(&cluster)),
                    ts: vec![ts],
                    values: vec![v],
                }),
            }
        }
    }
    hours.into_iter().collect()
}
