//! Prometheus remote-write 1.0 ingestion: the [`Ingester`] turns a snappy-compressed
//! `WriteRequest` body into one `append` of `(series id, timestamp, value)` samples.
//!
//! Per request: check the store's budget, decompress (capped), stream the series
//! ([`decode`]), check each sample's timestamp, resolve the series id through the cluster's series
//! cache (on a miss: parse, [`validate`], canonicalise with the cluster's labels, ask the store,
//! enforce `max_active_series`), then append all valid samples at once. Rejected samples are
//! counted in the [`WriteOutcome`]; the valid ones are stored regardless.

pub mod decode;
pub mod proto;
pub mod synth;
pub mod validate;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use fleetgate_store::{Error as StoreError, SeriesId};
use hashbrown::HashMap;
use parking_lot::RwLock;

use self::decode::{RawSeries, WriteRequestDecoder};
use self::validate::{SampleWindow, check_sender_labels, check_stored_labels, render_series};
use crate::cluster::ClusterContext;
use crate::error::Result;
use crate::outcome::{RejectReason, WriteOutcome};
use crate::series_cache::SeriesCache;
use crate::sink::{SampleRef, SeriesSink};

/// Ingestion settings that are not per cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// Largest accepted decompressed body, in bytes; larger bodies fail with
    /// [`crate::Error::TooLarge`] before any allocation. Default 32 MiB (as Prometheus's
    /// client_golang receiver).
    pub max_decompressed_bytes: usize,
    /// Oldest accepted sample, as an age in milliseconds: the store's retention. `0` accepts any
    /// age. Default 0.
    pub max_sample_age_ms: i64,
    /// How long a series stays active after its last sample, in milliseconds; entries idle longer
    /// are dropped by [`Ingester::sweep`]. Default one hour.
    pub active_series_window_ms: i64,
}

impl IngestOptions {
    /// Default for [`IngestOptions::max_decompressed_bytes`].
    pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 32 << 20;
    /// Default for [`IngestOptions::active_series_window_ms`].
    pub const DEFAULT_ACTIVE_SERIES_WINDOW_MS: i64 = 3_600_000;
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: Self::DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_sample_age_ms: 0,
            active_series_window_ms: Self::DEFAULT_ACTIVE_SERIES_WINDOW_MS,
        }
    }
}

/// A decoded and validated request whose samples are not yet appended; see [`Ingester::prepare`].
#[derive(Debug, Clone, Default)]
pub struct PreparedWrite {
    /// The samples to append, series ids resolved.
    pub samples: Vec<SampleRef>,
    /// Counts so far (`samples_accepted` = `samples.len()`).
    pub outcome: WriteOutcome,
}

/// The remote-write entry point; one per process, shared by all clusters. Holds each cluster's
/// series cache.
pub struct Ingester<S> {
    store: Arc<S>,
    options: IngestOptions,
    seed: u64,
    clusters: RwLock<HashMap<Arc<str>, Arc<SeriesCache>>>,
}

impl<S> fmt::Debug for Ingester<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingester")
            .field("options", &self.options)
            .field("clusters", &self.clusters.read().len())
            .finish_non_exhaustive()
    }
}

impl<S: SeriesSink> Ingester<S> {
    /// An ingester writing to `store`.
    pub fn new(store: Arc<S>, options: IngestOptions) -> Self {
        Self {
            store,
            options,
            seed: RandomState::new().hash_one(0x5eed_u64),
            clusters: RwLock::new(HashMap::new()),
        }
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The options in effect.
    pub fn options(&self) -> &IngestOptions {
        &self.options
    }

    /// Ingests one remote-write 1.0 body (snappy block format) for `cluster` at gateway time
    /// `now_ms`. Resolves after the accepted samples are durable. An `Ok` outcome with rejections
    /// means a 400 for the sender (after the valid samples were stored); an `Err` means nothing was
    /// stored (see [`crate::Error::kind`]).
    pub async fn remote_write(
        &self,
        cluster: &ClusterContext,
        body: Bytes,
        now_ms: i64,
    ) -> Result<WriteOutcome> {
        self.store.check_budget()?;
        let prepared = self.prepare(cluster, &body, now_ms)?;
        self.commit(prepared).await
    }

    /// Everything of [`Ingester::remote_write`] except the budget check and the append: decode,
    /// validate, resolve series ids (creating series in the store as needed). When the body turns
    /// out malformed part-way, series created before that point stay in the store without
    /// samples, which is harmless; no sample of the request is appended.
    pub fn prepare(
        &self,
        cluster: &ClusterContext,
        body: &[u8],
        now_ms: i64,
    ) -> Result<PreparedWrite> {
        let buf = decode::decompress(body, self.options.max_decompressed_bytes)?;
        let cache = self.cache_for(cluster);
        self.purge_removed(&cache);
        let window = SampleWindow::new(now_ms, &cluster.limits, self.options.max_sample_age_ms);
        let mut out = WriteOutcome::default();
        // A live-shaped series with one sample is ~200 encoded bytes.
        let mut samples: Vec<SampleRef> = Vec::with_capacity(buf.len() / 128 + 16);
        let mut decoder = WriteRequestDecoder::new(&buf);
        let mut series = RawSeries::default();
        let mut scratch: Vec<(&str, &str)> = Vec::new();

        while decoder.next_series(&mut series)? {
            out.exemplars_ignored += series.exemplars();
            out.reject(
                RejectReason::NativeHistogramUnsupported,
                series.histograms(),
                || {
                    format!(
                        "{}: {}",
                        series.describe(),
                        RejectReason::NativeHistogramUnsupported
                    )
                },
            );

            let first = samples.len();
            let mut out_of_window: Option<(RejectReason, i64)> = None;
            let (mut too_new, mut too_old) = (0u64, 0u64);
            for s in series.samples() {
                match window.check(s.timestamp_ms) {
                    None => samples.push(SampleRef {
                        series: 0,
                        timestamp_ms: s.timestamp_ms,
                        value: s.value,
                    }),
                    Some(reason) => {
                        if reason == RejectReason::SampleTooOld {
                            too_old += 1;
                        } else {
                            too_new += 1;
                        }
                        out_of_window.get_or_insert((reason, s.timestamp_ms));
                    }
                }
            }
            if let Some((reason, ts)) = out_of_window {
                // one example per series: its first out-of-window sample
                let counts = &mut out.rejected_samples_by_reason;
                counts.add(RejectReason::SampleTooFarInFuture, too_new);
                counts.add(RejectReason::SampleTooOld, too_old);
                out.example(|| format!("{}: {}", series.describe(), window.explain(reason, ts)));
            }
            let in_window = samples.len() - first;
            if in_window == 0 {
                continue;
            }

            let key = series.label_key(self.seed);
            let id = match cache.get(key, now_ms) {
                Some(id) => id,
                None => {
                    match self.resolve_miss(
                        cluster,
                        &cache,
                        &series,
                        key,
                        now_ms,
                        in_window as u64,
                        &mut scratch,
                        &mut out,
                    )? {
                        Some(id) => id,
                        None => {
                            samples.truncate(first);
                            continue;
                        }
                    }
                }
            };
            for s in &mut samples[first..] {
                s.series = id;
            }
        }
        out.metadata_ignored = decoder.metadata_count();
        out.samples_accepted = samples.len() as u64;
        Ok(PreparedWrite {
            samples,
            outcome: out,
        })
    }

    /// Appends a prepared write's samples (once, and not at all when there are none) and returns
    /// its outcome once they are durable.
    pub async fn commit(&self, prepared: PreparedWrite) -> Result<WriteOutcome> {
        if !prepared.samples.is_empty() {
            match self.store.append(&prepared.samples).await {
                Ok(()) => {}
                Err(e @ StoreError::SeriesRemoved(_)) => {
                    // Resolved just before the store removed it: forget every removed id now,
                    // so that the sender's retry (this is a 503) creates the series afresh.
                    let caches: Vec<Arc<SeriesCache>> =
                        self.clusters.read().values().cloned().collect();
                    for c in caches {
                        c.purge(|id| self.store.contains_series(id));
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(prepared.outcome)
    }

    /// Drops the ids the store removed from `cache`, once per removal pass of the store (one
    /// atomic load per request otherwise).
    fn purge_removed(&self, cache: &SeriesCache) {
        let g = self.store.series_removal_generation();
        let seen = cache.removal_generation.load(Ordering::Acquire);
        if g != seen
            && cache
                .removal_generation
                .compare_exchange(seen, g, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            cache.purge(|id| self.store.contains_series(id));
        }
    }

    /// The cache-miss path of one series: parse and check its labels, canonicalise them, enforce
    /// the active-series limit and get the id from the store. `None` when rejected (counted in
    /// `out` for `n` samples).
    #[allow(clippy::too_many_arguments)]
    fn resolve_miss<'b>(
        &self,
        cluster: &ClusterContext,
        cache: &SeriesCache,
        series: &RawSeries<'b>,
        key: u128,
        now_ms: i64,
        n: u64,
        scratch: &mut Vec<(&'b str, &'b str)>,
        out: &mut WriteOutcome,
    ) -> Result<Option<SeriesId>> {
        scratch.clear();
        for label in series.labels() {
            scratch.push(label?);
        }
        if let Err(invalid) = check_sender_labels(scratch) {
            out.reject(invalid.reason, n, || {
                format!("{}: {invalid}", render_series(scratch.iter().copied()))
            });
            return Ok(None);
        }
        let labels = cluster.canonical_labels(scratch);
        if let Err(invalid) = check_stored_labels(&labels, &cluster.limits) {
            out.reject(invalid.reason, n, || format!("{labels}: {invalid}"));
            return Ok(None);
        }
        let limit = cluster.limits.max_active_series;
        if !cache.try_reserve(limit) {
            // Another request may have made this very series active meanwhile.
            if let Some(id) = cache.get(key, now_ms) {
                return Ok(Some(id));
            }
            out.reject(RejectReason::MaxActiveSeries, n, || {
                format!(
                    "{labels}: {} (limit of {limit} active series reached)",
                    RejectReason::MaxActiveSeries
                )
            });
            return Ok(None);
        }
        let (id, created) = match self.store.series_id(&labels) {
            Ok(v) => v,
            Err(e) => {
                cache.release();
                return Err(e.into());
            }
        };
        if created {
            out.series_created += 1;
        }
        cache.insert_reserved(key, id, now_ms);
        Ok(Some(id))
    }

    /// The series cache of `cluster`, replaced when the cluster's labelling config changed.
    fn cache_for(&self, cluster: &ClusterContext) -> Arc<SeriesCache> {
        let fingerprint = cluster.fingerprint();
        if let Some(c) = self.clusters.read().get(&*cluster.name)
            && c.fingerprint == fingerprint
        {
            return Arc::clone(c);
        }
        let mut clusters = self.clusters.write();
        match clusters.get(&*cluster.name) {
            Some(c) if c.fingerprint == fingerprint => Arc::clone(c),
            _ => {
                let c = Arc::new(SeriesCache::new(fingerprint));
                c.removal_generation
                    .store(self.store.series_removal_generation(), Ordering::Release);
                clusters.insert(Arc::clone(&cluster.name), Arc::clone(&c));
                c
            }
        }
    }

    /// Drops series idle for longer than the active window from every cluster's cache, so they no
    /// longer count as active; returns how many. The gateway calls this periodically (every minute
    /// is plenty).
    pub fn sweep(&self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.options.active_series_window_ms);
        let caches: Vec<Arc<SeriesCache>> = self.clusters.read().values().cloned().collect();
        caches
            .iter()
            .map(|c| {
                self.purge_removed(c);
                c.sweep(cutoff)
            })
            .sum()
    }

    /// Active series of every cluster that wrote, by cluster name.
    pub fn active_series_by_cluster(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .clusters
            .read()
            .iter()
            .map(|(k, c)| (k.to_string(), c.active()))
            .collect();
        v.sort();
        v
    }

    /// Active series of a cluster (0 for a cluster that never wrote).
    pub fn active_series(&self, cluster: &str) -> usize {
        self.clusters.read().get(cluster).map_or(0, |c| c.active())
    }
}
