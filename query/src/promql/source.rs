//! Where the engine reads series from: the store, or an in-memory set of series in tests.

use fleetgate_store::{Matcher, SeriesData, Store};

use crate::error::Result;

/// A source of raw samples: the series matching all `matchers`, with their samples in
/// `[start_ms, end_ms]` (inclusive), sorted by labels.
pub trait SeriesSource {
    /// Selects series and their samples.
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> impl Future<Output = Result<Vec<SeriesData>>> + Send;
}

impl SeriesSource for Store {
    async fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>> {
        Ok(self.scan(matchers, start_ms, end_ms).await?)
    }
}

/// An in-memory source, for tests and small embedded uses: every series held in a vector.
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    series: Vec<SeriesData>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples to the series with `labels` (creating it); later writes of a timestamp win.
    pub fn add(&mut self, labels: fleetgate_store::Labels, samples: &[(i64, f64)]) {
        let idx = match self.series.iter().position(|s| s.labels == labels) {
            Some(i) => i,
            None => {
                self.series.push(SeriesData {
                    id: self.series.len() as u64,
                    labels,
                    timestamps: Vec::new(),
                    values: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        let s = &mut self.series[idx];
        let mut pts: Vec<(i64, f64)> = s
            .timestamps
            .iter()
            .copied()
            .zip(s.values.iter().copied())
            .collect();
        pts.extend_from_slice(samples);
        // stable sort keeps insertion order among equal timestamps; keep the last
        pts.sort_by_key(|p| p.0);
        let mut dedup: Vec<(i64, f64)> = Vec::with_capacity(pts.len());
        for p in pts {
            match dedup.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => dedup.push(p),
            }
        }
        (s.timestamps, s.values) = dedup.into_iter().unzip();
    }

    /// Removes every series.
    pub fn clear(&mut self) {
        self.series.clear();
    }
}

impl SeriesSource for MemorySource {
    async fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>> {
        let mut out = Vec::new();
        for s in &self.series {
            if !matchers.iter().all(|m| m.matches(&s.labels)) {
                continue;
            }
            let lo = s.timestamps.partition_point(|t| *t < start_ms);
            let hi = s.timestamps.partition_point(|t| *t <= end_ms);
            if lo >= hi {
                continue;
            }
            out.push(SeriesData {
                id: s.id,
                labels: s.labels.clone(),
                timestamps: s.timestamps[lo..hi].to_vec(),
                values: s.values[lo..hi].to_vec(),
            });
        }
        out.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
        Ok(out)
    }
}
