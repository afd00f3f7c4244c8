//! The one protocol-agnostic ingest path: a decoded batch of series and samples for one cluster →
//! time window → series cache → (on a miss) label validation, cluster labels, limits, series id →
//! one append.
//!
//! Decoders (remote-write, OTLP, the text exposition of a pull) open a [`Batch`] with
//! [`Ingester::batch`], [`Batch::push`] each series with its samples, and hand the finished
//! [`PreparedWrite`] to [`Ingester::commit`]. A series is anything that implements
//! [`SeriesLabels`]: the decoder decides how its labels are hashed for the cache and produced on a
//! miss, so remote-write keeps hashing the wire bytes and never parses labels on a hit. Rejected
//! samples are counted in the batch's [`WriteOutcome`]; the valid ones are stored regardless.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fleetgate_store::{Error as StoreError, SeriesId};
use hashbrown::HashMap;
use parking_lot::RwLock;

use crate::cluster::ClusterContext;
use crate::error::Result;
use crate::outcome::{RejectReason, WriteOutcome};
use crate::series_cache::SeriesCache;
use crate::sink::{SampleRef, SeriesSink};
use crate::validate::{SampleWindow, check_sender_labels, check_stored_labels, render_series};

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

/// One float sample as decoded; `value` keeps its exact bits (a staleness marker stays one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value.
    pub value: f64,
}

/// A series as a decoder sees it: the sender's labels (including `__name__`), before validation
/// and before the cluster's labels are applied.
pub trait SeriesLabels {
    /// A seeded 128-bit hash identifying the label set within one cluster's series cache. It must
    /// be equal for equal label sets as this decoder produces them; it need not agree with other
    /// decoders' keys for the same labels (the cache then holds the series once per key).
    fn key(&self, seed: u64) -> u128;

    /// Appends the labels as `(name, value)` pairs in any order; called only on a cache miss.
    /// Fails when the labels cannot be read (malformed input): the whole request fails.
    fn labels<'s>(&'s self, out: &mut Vec<(&'s str, &'s str)>) -> Result<()>;

    /// `metric{a="b", …}` as sent, for rejection messages.
    fn describe(&self) -> String {
        let mut pairs = Vec::new();
        // a series that cannot be read is described by what could be read
        let _ = self.labels(&mut pairs);
        render_series(pairs.into_iter())
    }
}

/// A decoded and validated request whose samples are not yet appended; see [`Ingester::commit`].
#[derive(Debug, Clone, Default)]
pub struct PreparedWrite {
    /// The samples to append, series ids resolved.
    pub samples: Vec<SampleRef>,
    /// Counts so far (`samples_accepted` = `samples.len()`).
    pub outcome: WriteOutcome,
}

impl PreparedWrite {
    /// Adds another prepared write (of any cluster) to this one, to be appended together.
    pub fn merge(&mut self, other: PreparedWrite) {
        self.samples.extend(other.samples);
        self.outcome.merge(other.outcome);
    }
}

/// The ingest entry point; one per process, shared by all clusters and protocols. Holds each
/// cluster's series cache.
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

    /// The seed of this process's series-cache keys (decoders that build keys themselves mix it
    /// in, as [`SeriesLabels::key`] receives it).
    pub(crate) fn series_seed(&self) -> u64 {
        self.seed
    }

    /// Fails with [`crate::Error::Overloaded`] when the store is over its budget; decoders call
    /// this before decoding a request.
    pub fn check_budget(&self) -> Result<()> {
        Ok(self.store.check_budget()?)
    }

    /// Opens a batch for `cluster` at gateway time `now_ms`, sized for about `capacity` samples.
    pub fn batch<'i>(
        &'i self,
        cluster: &'i ClusterContext,
        now_ms: i64,
        capacity: usize,
    ) -> Batch<'i, S> {
        let cache = self.cache_for(cluster);
        self.purge_removed(&cache);
        Batch {
            ingester: self,
            cluster,
            cache,
            window: SampleWindow::new(now_ms, &cluster.limits, self.options.max_sample_age_ms),
            now_ms,
            samples: Vec::with_capacity(capacity),
            outcome: WriteOutcome::default(),
        }
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

/// The samples of one request for one cluster, series ids resolved as they are pushed; see the
/// module documentation.
pub struct Batch<'i, S> {
    ingester: &'i Ingester<S>,
    cluster: &'i ClusterContext,
    cache: Arc<SeriesCache>,
    window: SampleWindow,
    now_ms: i64,
    samples: Vec<SampleRef>,
    outcome: WriteOutcome,
}

impl<S> fmt::Debug for Batch<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("cluster", &self.cluster.name)
            .field("samples", &self.samples.len())
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl<S: SeriesSink> Batch<'_, S> {
    /// Adds `samples` of `series`: samples outside the cluster's time window are rejected (one
    /// example per series); the rest get the series' id, resolved through the cache or, on a miss,
    /// by validating and labelling the series and asking the store (which may reject all of them).
    /// An `Err` is a failure of the whole request (unreadable labels, a store failure).
    #[inline]
    pub fn push<L: SeriesLabels + ?Sized>(&mut self, series: &L, samples: &[Sample]) -> Result<()> {
        let first = self.samples.len();
        let mut out_of_window: Option<(RejectReason, i64)> = None;
        let (mut too_new, mut too_old) = (0u64, 0u64);
        for s in samples {
            match self.window.check(s.timestamp_ms) {
                None => self.samples.push(SampleRef {
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
            let counts = &mut self.outcome.rejected_samples_by_reason;
            counts.add(RejectReason::SampleTooFarInFuture, too_new);
            counts.add(RejectReason::SampleTooOld, too_old);
            let window = self.window;
            self.outcome
                .example(|| format!("{}: {}", series.describe(), window.explain(reason, ts)));
        }
        let in_window = self.samples.len() - first;
        if in_window == 0 {
            return Ok(());
        }
        let key = series.key(self.ingester.seed);
        let id = match self.cache.get(key, self.now_ms) {
            Some(id) => id,
            None => match self.resolve_miss(series, key, in_window as u64)? {
                Some(id) => id,
                None => {
                    self.samples.truncate(first);
                    return Ok(());
                }
            },
        };
        for s in &mut self.samples[first..] {
            s.series = id;
        }
        Ok(())
    }

    /// Counts `n` samples of `series` as rejected for `reason` (a decoder's own rejection, such as
    /// an unsupported sample type), with `detail` in the example message.
    pub fn reject(&mut self, reason: RejectReason, n: u64, example: impl FnOnce() -> String) {
        self.outcome.reject(reason, n, example);
    }

    /// The counts so far, for decoder-specific figures (exemplars, metadata).
    pub fn outcome_mut(&mut self) -> &mut WriteOutcome {
        &mut self.outcome
    }

    /// Samples accepted so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample was accepted so far.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The batch as a write to commit.
    pub fn finish(self) -> PreparedWrite {
        let mut outcome = self.outcome;
        outcome.samples_accepted = self.samples.len() as u64;
        PreparedWrite {
            samples: self.samples,
            outcome,
        }
    }

    /// The cache-miss path of one series: read and check its labels, canonicalise them, enforce
    /// the active-series limit and get the id from the store. `None` when rejected (counted for
    /// `n` samples).
    #[inline(never)]
    fn resolve_miss<L: SeriesLabels + ?Sized>(
        &mut self,
        series: &L,
        key: u128,
        n: u64,
    ) -> Result<Option<SeriesId>> {
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(16);
        series.labels(&mut pairs)?;
        let out = &mut self.outcome;
        if let Err(invalid) = check_sender_labels(&mut pairs) {
            out.reject(invalid.reason, n, || {
                format!("{}: {invalid}", render_series(pairs.iter().copied()))
            });
            return Ok(None);
        }
        let labels = self.cluster.canonical_labels(&pairs);
        if let Err(invalid) = check_stored_labels(&labels, &self.cluster.limits) {
            out.reject(invalid.reason, n, || format!("{labels}: {invalid}"));
            return Ok(None);
        }
        let cache = &self.cache;
        let limit = self.cluster.limits.max_active_series;
        if !cache.try_reserve(limit) {
            // Another request may have made this very series active meanwhile.
            if let Some(id) = cache.get(key, self.now_ms) {
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
        let (id, created) = match self.ingester.store.series_id(&labels) {
            Ok(v) => v,
            Err(e) => {
                cache.release();
                return Err(e.into());
            }
        };
        if created {
            out.series_created += 1;
        }
        cache.insert_reserved(key, id, self.now_ms);
        Ok(Some(id))
    }
}
