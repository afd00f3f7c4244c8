//! [`Store`]: the write path (series ids, WAL group commit, memtable), the read path (index +
//! memtables + Parquet), and flush; compaction and retention live in their own modules.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hashbrown::HashMap;
use parking_lot::RwLock;

use crate::catalog::{self, Catalog, CatalogFile};
use crate::error::{Error, Result};
use crate::labels::{Labels, SeriesId};
use crate::matcher::Matcher;
use crate::memtable::{Memtable, Samples, sort_dedup_last};
use crate::objects::Objects;
use crate::options::{CacheOptions, StoreOptions};
use crate::partition::cache::FileCaches;
use crate::partition::read::{SeriesChunk, load_meta, read_series, series_table};
use crate::partition::write::{FileInfo, FileMetaPublic, SamplesEncoding, write_samples_streaming};
use crate::partition::{self, FileMeta, PartitionSet, hour_of};
use crate::stats::{FlushStats, Histogram, HistogramSnapshot, MaintenanceStats, StoreStats};
use crate::wal::{self, Wal, record};

/// One sample to append.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef {
    /// Series id from [`Store::series_id`].
    pub series: SeriesId,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value.
    pub value: f64,
}

/// One series and its samples in a time range, ascending, one value per timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// Series id.
    pub id: SeriesId,
    /// Its labels.
    pub labels: Labels,
    /// Timestamps (ms), ascending, unique.
    pub timestamps: Vec<i64>,
    /// Values, parallel to `timestamps`.
    pub values: Vec<f64>,
}

/// A memtable being flushed, with the WAL segment that starts after it.
#[derive(Debug, Clone)]
struct Frozen {
    mem: Arc<Memtable>,
}

/// State only maintenance (flush, compaction, retention) touches; held across awaits.
#[derive(Debug, Default)]
pub(crate) struct MaintState {
    /// Highest series id whose labels are in a catalog file.
    pub(crate) persisted_max_id: SeriesId,
    /// A series pass is due (after retention deleted files, and once after open).
    pub(crate) gc_due: bool,
    /// Ids up to this are candidates of the next series pass (see `series_gc`).
    pub(crate) gc_floor: SeriesId,
    /// Series were removed: the catalog files are to be rewritten without them.
    pub(crate) catalog_rewrite: bool,
    /// When `maintain` last flushed (its `now_ms`).
    last_flush_ms: Option<i64>,
    /// The catalog files on the object store (flush adds one, catalog compaction merges them).
    pub(crate) catalog_files: Vec<CatalogFile>,
}

#[derive(Debug, Default)]
struct Counters {
    flushes: AtomicU64,
    compactions: AtomicU64,
    samples_appended: AtomicU64,
    retention_deleted: AtomicU64,
    /// Gauge: catalog files on the object store.
    catalog_files: AtomicU64,
    catalog_compactions: AtomicU64,
    series_removed: AtomicU64,
    /// Series passes that removed anything.
    series_removals: AtomicU64,
}

/// The storage engine. Share it as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    pub(crate) opts: StoreOptions,
    pub(crate) objects: Objects,
    wal: Wal,
    /// The append gate: appends and series creation hold it shared while they log and insert;
    /// flush holds it exclusive to rotate the WAL and freeze the memtable atomically.
    gate: RwLock<()>,
    pub(crate) catalog: Arc<RwLock<Catalog>>,
    /// [`MaintState::persisted_max_id`], readable by the WAL's re-log after a write failure.
    persisted_max_id: Arc<AtomicU64>,
    /// What WAL replay found damaged at open.
    replayed: wal::ReplayStats,
    pub(crate) active: RwLock<Memtable>,
    frozen: RwLock<Vec<Frozen>>,
    frozen_bytes: AtomicU64,
    pub(crate) files: RwLock<PartitionSet>,
    /// Series tables and footers of the files, bounded.
    pub(crate) caches: FileCaches,
    /// Files compaction and retention removed, deleted once no read holds them.
    pub(crate) graveyard: crate::graveyard::Graveyard,
    pub(crate) maint: tokio::sync::Mutex<MaintState>,
    pub(crate) next_file_seq: Arc<AtomicU64>,
    closed: AtomicBool,
    hist: Arc<Histogram>,
    counters: Counters,
    /// Signalled when an append takes the active memtable past `memtable_flush_bytes`, so that
    /// maintenance flushes now rather than at its next tick.
    flush_wanted: tokio::sync::Notify,
    /// Hour (start, ms) → when samples for it last arrived (wall ms, this process); derived data
    /// of an hour written before that is stale. Replayed samples count as arriving at open.
    hour_writes: parking_lot::Mutex<BTreeMap<i64, i64>>,
}

/// Hours a batch may span before its hours are found sample by sample rather than as a range.
const HOUR_RANGE_MAX: i64 = 72;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Io {
        op: "blocking task",
        path: String::new(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Store {
    /// Opens (or creates) a store: loads the catalog and the list of Parquet files, replays the
    /// WAL (truncating a torn tail) and starts the WAL commit thread. Read caches get
    /// [`CacheOptions::default`].
    pub async fn open(opts: StoreOptions) -> Result<Arc<Store>> {
        Self::open_with_caches(opts, CacheOptions::default()).await
    }

    /// [`Store::open`] with the given read-cache budgets.
    pub async fn open_with_caches(opts: StoreOptions, cache: CacheOptions) -> Result<Arc<Store>> {
        let t0 = Instant::now();
        let objects = Objects::new(&opts.data_dir, opts.object_store.clone())?;
        let caches = FileCaches::new(
            cache.series_table_cache_bytes,
            cache.parquet_metadata_cache_bytes,
        );

        // 1. Catalog files, in id order.
        let mut catalog = Catalog::default();
        // Ranges may overlap after a crash mid catalog compaction; `load_into` de-duplicates.
        let mut cat_files: Vec<CatalogFile> = objects
            .list(catalog::CATALOG_DIR)
            .await?
            .into_iter()
            .filter_map(|m| {
                let (first, last) = catalog::parse_catalog_name(m.location.filename()?)?;
                Some(CatalogFile {
                    first,
                    last,
                    path: m.location,
                })
            })
            .collect();
        cat_files.sort_by_key(|f| (f.first, f.last));
        let mut persisted_max_id = 0;
        for f in &cat_files {
            let bytes = objects.get(&f.path).await?;
            catalog::load_into(&mut catalog, f, catalog::decode(f.path.as_ref(), bytes)?)?;
            persisted_max_id = persisted_max_id.max(f.last);
        }
        // A range's ids stay taken even when the file no longer lists them (removed series).
        catalog.reserve(persisted_max_id);

        // 2. Sample files.
        let mut metas = Vec::new();
        for m in objects.list(partition::SAMPLES_DIR).await? {
            if let Some((hour, seq, compacted)) = partition::parse_file_path(m.location.as_ref()) {
                metas.push((m.location, m.size, hour, seq, compacted));
            }
        }
        let max_seq = metas.iter().map(|m| m.3).max().unwrap_or(0);
        let loaded: Vec<FileMeta> =
            futures::stream::iter(metas.into_iter().map(|(p, size, h, s, c)| {
                let (objects, caches) = (&objects, &caches);
                async move { load_meta(objects, caches, p, size, h, s, c).await }
            }))
            .buffer_unordered(4)
            .try_collect()
            .await?;
        let mut files = PartitionSet::default();
        for f in loaded {
            files.add(Arc::new(f));
        }

        // 3. WAL replay.
        let wal_dir = opts.data_dir.join("wal");
        let mut active = Memtable::new(1);
        let mut dropped = 0u64;
        let mut replayed_hours = std::collections::BTreeSet::new();
        let replay = wal::replay(&wal_dir, &mut |rec| match rec {
            record::Record::Series { id, labels } => {
                if !catalog.insert(id, &labels) && catalog.labels_of(id) != Some(&labels) {
                    tracing::error!(id, %labels, "WAL series record conflicts with the catalog");
                }
            }
            record::Record::Samples(samples) => {
                for (s, t, v) in samples {
                    if catalog.labels_of(s).is_some() {
                        replayed_hours.insert(hour_of(t));
                        active.push(s, t, v);
                    } else {
                        dropped += 1;
                    }
                }
            }
        })?;
        if dropped > 0 {
            tracing::error!(dropped, "WAL samples of unknown series were dropped");
        }
        if replay.corrupt_records > 0 {
            tracing::error!(
                corrupt_records = replay.corrupt_records,
                corrupt_bytes = replay.corrupt_bytes,
                damaged_segments = replay.damaged_segments,
                "WAL replay skipped damaged records; every intact record was kept"
            );
        }
        let hist = Arc::new(Histogram::default());
        let catalog = Arc::new(RwLock::new(catalog));
        let persisted = Arc::new(AtomicU64::new(persisted_max_id));
        let relog: wal::Relog = {
            let (catalog, persisted) = (Arc::clone(&catalog), Arc::clone(&persisted));
            Box::new(move |buf: &mut Vec<u8>| {
                let cat = catalog.read();
                let after = persisted.load(Ordering::Acquire);
                for (id, labels) in cat.range(after, cat.max_id()) {
                    record::encode_series(buf, id, &labels);
                }
            })
        };
        let wal = Wal::start(
            &wal_dir,
            replay.max_seq + 1,
            opts.wal_segment_bytes,
            replay.bytes,
            Arc::clone(&hist),
            relog,
        )?;
        tracing::info!(
            segments = replay.segments,
            records = replay.records,
            samples = active.samples(),
            series = catalog.read().len(),
            catalog_files = cat_files.len(),
            files = files.file_count(),
            ms = t0.elapsed().as_millis() as u64,
            "store opened, WAL replayed"
        );
        let counters = Counters::default();
        counters
            .catalog_files
            .store(cat_files.len() as u64, Ordering::Relaxed);
        Ok(Arc::new(Store {
            opts,
            objects,
            wal,
            gate: RwLock::new(()),
            catalog,
            persisted_max_id: persisted,
            replayed: replay,
            active: RwLock::new(active),
            frozen: RwLock::new(Vec::new()),
            frozen_bytes: AtomicU64::new(0),
            files: RwLock::new(files),
            caches,
            graveyard: Default::default(),
            maint: tokio::sync::Mutex::new(MaintState {
                persisted_max_id,
                gc_due: true,
                gc_floor: persisted_max_id,
                catalog_rewrite: false,
                last_flush_ms: None,
                catalog_files: cat_files,
            }),
            next_file_seq: Arc::new(AtomicU64::new(max_seq + 1)),
            closed: AtomicBool::new(false),
            hist,
            counters,
            flush_wanted: tokio::sync::Notify::new(),
            hour_writes: parking_lot::Mutex::new(
                replayed_hours.into_iter().map(|h| (h, now_ms())).collect(),
            ),
        }))
    }

    /// The id of a known series.
    pub fn lookup(&self, labels: &Labels) -> Option<SeriesId> {
        self.catalog.read().lookup(labels)
    }

    /// The id of a series, creating it when new (`true` = created). Creation interns the strings,
    /// updates the index and logs a new-series WAL record before the id becomes visible.
    pub fn series_id(&self, labels: &Labels) -> Result<(SeriesId, bool)> {
        let h = catalog::hash_labels(labels);
        if let Some(id) = self.catalog.read().lookup_hashed(h, labels) {
            return Ok((id, false));
        }
        if labels.len() > usize::from(u16::MAX)
            || labels
                .iter()
                .any(|l| l.name.len() > usize::from(u16::MAX) || l.value.len() > u32::MAX as usize)
        {
            return Err(Error::InvalidSeries(format!(
                "label set too large: {labels}"
            )));
        }
        let _gate = self.gate.read();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut cat = self.catalog.write();
        if let Some(id) = cat.lookup_hashed(h, labels) {
            return Ok((id, false));
        }
        let id = cat.max_id() + 1;
        self.wal
            .append(|buf| record::encode_series(buf, id, labels))?;
        cat.insert(id, labels);
        Ok((id, true))
    }

    fn memtable_bytes(&self) -> u64 {
        self.active.read().bytes() as u64 + self.frozen_bytes.load(Ordering::Relaxed)
    }

    /// `Err(Overloaded)` when the memtables or the WAL are over budget.
    pub fn check_budget(&self) -> Result<()> {
        let mem = self.memtable_bytes();
        if mem > self.opts.memtable_max_bytes as u64 {
            return Err(Error::Overloaded(format!(
                "memtable {mem} bytes > {} bytes",
                self.opts.memtable_max_bytes
            )));
        }
        let wal = self.wal.bytes();
        if wal > self.opts.wal_max_bytes {
            return Err(Error::Overloaded(format!(
                "WAL {wal} bytes > {} bytes",
                self.opts.wal_max_bytes
            )));
        }
        Ok(())
    }

    /// Logs the samples and adds them to the memtable; resolves once an `fdatasync` covers them.
    pub async fn append(&self, samples: &[SampleRef]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if samples.is_empty() {
            return Ok(());
        }
        self.check_budget()?;
        let lsn = {
            let _gate = self.gate.read();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            {
                let cat = self.catalog.read();
                let mut prev = 0;
                for s in samples {
                    if s.series != prev {
                        if !cat.contains(s.series) {
                            return Err(self.unknown_series(&cat, s.series));
                        }
                        prev = s.series;
                    }
                }
            }
            let lsn = self.wal.append(|buf| {
                record::encode_samples(
                    buf,
                    samples.iter().map(|s| (s.series, s.timestamp_ms, s.value)),
                )
            })?;
            let mut m = self.active.write();
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for s in samples {
                m.push(s.series, s.timestamp_ms, s.value);
                lo = lo.min(s.timestamp_ms);
                hi = hi.max(s.timestamp_ms);
            }
            if m.bytes() >= self.opts.memtable_flush_bytes {
                self.flush_wanted.notify_one();
            }
            drop(m);
            self.note_hours(samples, lo, hi);
            lsn
        };
        self.counters
            .samples_appended
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        self.wal.wait_durable(lsn).await
    }

    /// Records that samples for the hours of `[lo, hi]` arrived now.
    fn note_hours(&self, samples: &[SampleRef], lo: i64, hi: i64) {
        let now = now_ms();
        let (a, b) = (hour_of(lo), hour_of(hi));
        let mut w = self.hour_writes.lock();
        if b.saturating_sub(a) <= HOUR_RANGE_MAX * 3_600_000 {
            let mut h = a;
            while h <= b {
                w.insert(h, now);
                h += 3_600_000;
            }
        } else {
            let mut prev = i64::MIN;
            for s in samples {
                let h = hour_of(s.timestamp_ms);
                if h != prev {
                    w.insert(h, now);
                    prev = h;
                }
            }
        }
    }

    /// When samples for the hour starting at `hour_ms` last arrived (wall ms), if they did
    /// since the store opened (replayed ones count as arriving at open).
    pub fn hour_last_write(&self, hour_ms: i64) -> Option<i64> {
        self.hour_writes.lock().get(&hour_ms).copied()
    }

    /// Every hour (start, ms) that holds samples: those with Parquet files and those written
    /// since the store opened (the memtable's), ascending.
    pub fn data_hours(&self) -> Vec<i64> {
        let mut hours: std::collections::BTreeSet<i64> =
            self.files.read().partitions().map(|(h, _)| h).collect();
        hours.extend(self.hour_writes.lock().keys().copied());
        hours.into_iter().collect()
    }

    /// Forgets write times of hours before `before_ms` (their derived data is final).
    pub fn forget_hour_writes(&self, before_ms: i64) {
        let mut w = self.hour_writes.lock();
        *w = w.split_off(&before_ms);
    }

    /// A derived table (`name`, format `version`) in the store's object store.
    pub fn derived(&self, name: &str, version: u32) -> crate::derived::DerivedTable {
        crate::derived::DerivedTable::new(self.objects.clone(), name, version)
    }

    /// The error for an append naming `id`, which the catalog does not hold: removed (retry
    /// after resolving again) or never assigned (a caller bug).
    #[cold]
    fn unknown_series(&self, cat: &Catalog, id: SeriesId) -> Error {
        if id != 0 && id <= cat.max_id() {
            Error::SeriesRemoved(id)
        } else {
            Error::InvalidSeries(format!("unknown series id {id}"))
        }
    }

    /// True when series `id` exists (was not removed).
    pub fn contains_series(&self, id: SeriesId) -> bool {
        self.catalog.read().contains(id)
    }

    /// Counts the series passes that removed series (see `series_gc`): a holder of series ids
    /// (ingest's series caches) drops the ids [`Store::contains_series`] no longer knows when
    /// this changes.
    pub fn series_removal_generation(&self) -> u64 {
        self.counters.series_removals.load(Ordering::Acquire)
    }

    /// Removes the series of `dead` (ascending) that no memtable holds, with appends and series
    /// creation held off by the gate; returns how many went.
    pub(crate) fn remove_series(&self, dead: &mut Vec<SeriesId>) -> u64 {
        let _gate = self.gate.write();
        {
            let active = self.active.read();
            let frozen = self.frozen.read();
            dead.retain(|id| {
                !active.series.contains_key(id)
                    && !frozen.iter().any(|f| f.mem.series.contains_key(id))
            });
        }
        let n = self.catalog.write().remove(dead);
        if n > 0 {
            self.counters.series_removed.fetch_add(n, Ordering::Relaxed);
            self.counters
                .series_removals
                .fetch_add(1, Ordering::Release);
        }
        n
    }

    /// Resolves when an append has taken the memtable past `memtable_flush_bytes` (a stored
    /// permit makes a signal given before the wait count). The maintenance loop waits on this
    /// beside its timer and then calls [`Store::maintain`].
    pub async fn flush_wanted(&self) {
        self.flush_wanted.notified().await;
    }

    /// Labels of series `id`.
    pub fn labels_of(&self, id: SeriesId) -> Option<Labels> {
        self.catalog.read().labels_of(id).cloned()
    }

    /// Series matching every matcher, sorted by labels.
    pub fn select_series(&self, matchers: &[Matcher]) -> Vec<(SeriesId, Labels)> {
        let cat = self.catalog.read();
        // Already in label order (and cached: see `select_cache`).
        let ids = cat.select_sorted(matchers);
        ids.iter()
            .filter_map(|&id| Some((id, cat.labels_of(id)?.clone())))
            .collect()
    }

    /// Samples of the matching series in `[start_ms, end_ms]` from memtables and Parquet;
    /// duplicates resolved last-write-wins; series without samples omitted; sorted by labels.
    pub async fn scan(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>> {
        if end_ms < start_ms || !self.may_hold_samples(start_ms, end_ms) {
            return Ok(Vec::new());
        }
        let sel = self.select_series(matchers);
        self.scan_selected(sel, start_ms, end_ms).await
    }

    /// Samples in `[start_ms, end_ms]` of series already selected with [`Store::select_series`]
    /// (or a batch of them, for a caller that streams a large selection); series without samples
    /// omitted; in the order given.
    pub async fn scan_selected(
        &self,
        sel: Vec<(SeriesId, Labels)>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>> {
        if sel.is_empty() || end_ms < start_ms || !self.may_hold_samples(start_ms, end_ms) {
            return Ok(Vec::new());
        }
        let samples = self.scan_once(&sel, start_ms, end_ms).await?;
        Ok(sel
            .into_iter()
            .zip(samples)
            .filter_map(|((id, labels), s)| {
                let (timestamps, values) = s?;
                Some(SeriesData {
                    id,
                    labels,
                    timestamps,
                    values,
                })
            })
            .collect())
    }

    /// Series matching every matcher that hold samples in `[start_ms, end_ms]`, sorted by labels,
    /// answered without decoding a sample: from the memtables, and from the per-file
    /// `series_id → rows` tables of the files whose time range overlaps (a file counts as a
    /// whole, as a block does in Prometheus's series API).
    pub async fn series_in_range(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<(SeriesId, Labels)>> {
        if end_ms < start_ms {
            return Ok(Vec::new());
        }
        let sel = self.select_series(matchers);
        if sel.is_empty() {
            return Ok(sel);
        }
        let found = self.series_present(&sel, start_ms, end_ms).await?;
        Ok(sel
            .into_iter()
            .zip(found)
            .filter_map(|(s, present)| present.then_some(s))
            .collect())
    }

    /// For each series of `sel`, whether a memtable or an overlapping file holds it.
    async fn series_present(
        &self,
        sel: &[(SeriesId, Labels)],
        start: i64,
        end: i64,
    ) -> Result<Vec<bool>> {
        let mut ids: Vec<SeriesId> = sel.iter().map(|s| s.0).collect();
        ids.sort_unstable();
        let mut found = vec![false; ids.len()];
        let mut missing = ids.len();
        let mark = |found: &mut [bool], i: usize, missing: &mut usize| {
            if !found[i] {
                found[i] = true;
                *missing -= 1;
            }
        };
        // same snapshot order as a scan: active, frozen, then files
        {
            let m = self.active.read();
            for (i, id) in ids.iter().enumerate() {
                if m.has_samples(*id, start, end) {
                    mark(&mut found, i, &mut missing);
                }
            }
        }
        let frozen: Vec<Frozen> = self.frozen.read().clone();
        for fr in &frozen {
            for (i, id) in ids.iter().enumerate() {
                if !found[i] && fr.mem.has_samples(*id, start, end) {
                    mark(&mut found, i, &mut missing);
                }
            }
        }
        for f in self.files_to_read(&ids, start, end) {
            if missing == 0 {
                break;
            }
            let table = series_table(&self.objects, &self.caches, &f).await?;
            for (i, id) in ids.iter().enumerate() {
                if !found[i] && table.contains(*id) {
                    mark(&mut found, i, &mut missing);
                }
            }
        }
        Ok(sel
            .iter()
            .map(|(id, _)| ids.binary_search(id).is_ok_and(|p| found[p]))
            .collect())
    }

    /// False when no memtable and no sample file holds a sample in `[start, end]` (a query
    /// window before the data or in a gap): the scan need not select series at all.
    fn may_hold_samples(&self, start: i64, end: i64) -> bool {
        let mem = |m: &Memtable| !m.is_empty() && m.min_ts <= end && m.max_ts >= start;
        mem(&self.active.read())
            || self.frozen.read().iter().any(|f| mem(&f.mem))
            || !self.files.read().overlapping(start, end).is_empty()
    }

    /// The samples of each series of `sel` in `[start, end]` (`None` when it has none), in the
    /// order of `sel`.
    async fn scan_once(
        &self,
        sel: &[(SeriesId, Labels)],
        start: i64,
        end: i64,
    ) -> Result<Vec<Option<(Vec<i64>, Vec<f64>)>>> {
        let mut ids: Vec<SeriesId> = sel.iter().map(|s| s.0).collect();
        ids.sort_unstable();
        let pos = |id: SeriesId| ids.binary_search(&id).ok();
        // Snapshot order matters: active, then frozen, then files. A flush registers its files
        // before dropping its frozen memtable, so nothing can fall between the snapshots.
        let mut active_part: Vec<Samples> = vec![Samples::default(); ids.len()];
        let active_gen = {
            let m = self.active.read();
            for (i, id) in ids.iter().enumerate() {
                m.collect(*id, start, end, &mut active_part[i]);
            }
            m.generation
        };
        let frozen: Vec<Frozen> = self.frozen.read().clone();
        let files = self.files_to_read(&ids, start, end);

        // Owned captures: a closure over borrowed items trips rustc's higher-ranked `Send`
        // check and would make `scan` unusable from spawned tasks.
        let wanted = Arc::new(ids.clone());
        // Each file is read and decoded as its own task, so a scan of many files uses every
        // runtime thread.
        let chunks: Vec<Vec<SeriesChunk>> = futures::stream::iter(files.into_iter().map(|f| {
            let (objects, caches) = (self.objects.clone(), self.caches.clone());
            let wanted = Arc::clone(&wanted);
            let path = f.path.clone();
            let task =
                tokio::spawn(
                    async move { read_series(&objects, &caches, &f, Some(&wanted)).await },
                );
            async move {
                task.await.map_err(|e| Error::Io {
                    op: "scan task",
                    path: path.into(),
                    source: std::io::Error::other(e.to_string()),
                })?
            }
        }))
        .buffered(4)
        .try_collect()
        .await?;

        let mut acc: Vec<Samples> = vec![Samples::default(); ids.len()];
        for file_chunks in chunks {
            for (id, mut ts, mut vs) in file_chunks {
                let Some(p) = pos(id) else { continue };
                if !ts.is_sorted() {
                    // files are written sorted by (series, time); keep a damaged one readable
                    for (t, v) in ts.iter().zip(&vs) {
                        if *t >= start && *t <= end {
                            acc[p].ts.push(*t);
                            acc[p].vs.push(*v);
                        }
                    }
                    continue;
                }
                // a file holds a series' rows sorted by time: cut to the range, then take the
                // vectors as they are when nothing was gathered before (the common case)
                let lo = ts.partition_point(|t| *t < start);
                let hi = ts.partition_point(|t| *t <= end).max(lo);
                if lo == hi {
                    continue;
                }
                ts.truncate(hi);
                vs.truncate(hi);
                if lo > 0 {
                    ts.drain(..lo);
                    vs.drain(..lo);
                }
                acc[p].append(Samples { ts, vs });
            }
        }
        for fr in &frozen {
            for (i, id) in ids.iter().enumerate() {
                fr.mem.collect(*id, start, end, &mut acc[i]);
            }
        }
        if !frozen.iter().any(|f| f.mem.generation == active_gen) {
            for (a, part) in acc.iter_mut().zip(active_part) {
                if !part.ts.is_empty() {
                    a.append(part);
                }
            }
        }
        let mut out = Vec::with_capacity(sel.len());
        for (id, _) in sel {
            let s = pos(*id).map(|p| std::mem::take(&mut acc[p]));
            out.push(s.filter(|s| !s.ts.is_empty()).map(Samples::into_sorted));
        }
        Ok(out)
    }

    /// The sample files a scan of the sorted `ids` over `[start, end]` reads, each once, in rank
    /// order: only those whose `[min_ts, max_ts]` overlaps the range (found through the hour
    /// partitions it spans) and whose `[min_id, max_id]` holds one of the ids. Within a file, the
    /// series table then selects just the rows of the wanted series.
    pub(crate) fn files_to_read(
        &self,
        ids: &[SeriesId],
        start: i64,
        end: i64,
    ) -> Vec<Arc<FileMeta>> {
        let mut files = self.files.read().overlapping(start, end);
        files.retain(|f| f.may_hold(ids));
        files
    }

    /// Every label name, sorted.
    pub fn label_names(&self) -> Vec<String> {
        self.catalog.read().index.label_names()
    }

    /// Every value of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.catalog.read().label_values(name).to_vec()
    }

    /// Flushes the whole memtable to Parquet now, persists new series to the catalog and removes
    /// the WAL segments both cover.
    pub async fn flush(&self) -> Result<FlushStats> {
        let mut ms = self.maint.lock().await;
        self.flush_locked(&mut ms).await
    }

    pub(crate) async fn flush_locked(&self, ms: &mut MaintState) -> Result<FlushStats> {
        let t0 = Instant::now();
        // (a) rotate the WAL, (b) freeze the memtable, (c) note the max series id — atomically
        // with respect to appends and series creation.
        let (rot_seq, max_id) = {
            let _gate = self.gate.write();
            let (_, seq) = self.wal.rotate();
            let mut act = self.active.write();
            let next = Memtable::new(act.generation + 1);
            let old = std::mem::replace(&mut *act, next);
            drop(act);
            if !old.is_empty() {
                self.frozen_bytes
                    .fetch_add(old.bytes() as u64, Ordering::Relaxed);
                self.frozen.write().push(Frozen { mem: Arc::new(old) });
            }
            (seq, self.catalog.read().max_id())
        };
        let mut stats = FlushStats::default();
        loop {
            let next = self.frozen.read().first().cloned();
            let Some(fr) = next else { break };
            self.write_memtable(&fr.mem, &mut stats).await?;
            self.frozen
                .write()
                .retain(|f| !Arc::ptr_eq(&f.mem, &fr.mem));
            self.frozen_bytes
                .fetch_sub(fr.mem.bytes() as u64, Ordering::Relaxed);
        }
        if max_id > ms.persisted_max_id {
            let series = self.catalog.read().range(ms.persisted_max_id, max_id);
            if let (Some(first), Some(last)) =
                (series.first().map(|s| s.0), series.last().map(|s| s.0))
            {
                let bytes = catalog::encode(&series)?;
                stats.bytes += bytes.len() as u64;
                stats.series = series.len() as u64;
                let file = CatalogFile::new(first, last);
                // Listed first: a put that fails half-way may still have left the file.
                ms.catalog_files.retain(|f| f.path != file.path);
                ms.catalog_files.push(file.clone());
                self.note_catalog_files(ms);
                self.objects
                    .put_durable(&file.path, Bytes::from(bytes))
                    .await?;
            }
            ms.persisted_max_id = max_id;
            self.persisted_max_id.store(max_id, Ordering::Release);
        }
        self.wal.wait_rotated(rot_seq).await?;
        stats.wal_segments_removed = self.wal.remove_segments_before(rot_seq)? as u64;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            files = stats.files,
            rows = stats.rows,
            bytes = stats.bytes,
            series = stats.series,
            wal_segments_removed = stats.wal_segments_removed,
            ms = t0.elapsed().as_millis() as u64,
            "flush"
        );
        Ok(stats)
    }

    /// Writes one frozen memtable as one file per hour partition and registers the files (those
    /// written before an error too).
    async fn write_memtable(&self, mem: &Arc<Memtable>, stats: &mut FlushStats) -> Result<()> {
        let names: HashMap<SeriesId, (Arc<str>, Option<Arc<str>>)> = {
            let cat = self.catalog.read();
            mem.series
                .keys()
                .map(|id| (*id, series_names(cat.labels_of(*id))))
                .collect()
        };
        let mem = Arc::clone(mem);
        let seqs = Arc::clone(&self.next_file_seq);
        let objects = self.objects.clone();
        let rt = tokio::runtime::Handle::current();
        let (written, failed) =
            tokio::task::spawn_blocking(move || write_frozen(&mem, &names, &seqs, &objects, &rt))
                .await
                .map_err(join_err)?;
        for FileMetaPublic(meta, table) in written {
            stats.files += 1;
            stats.rows += meta.rows;
            stats.bytes += meta.size;
            self.caches.put_table(meta.key, table);
            self.files.write().add(Arc::new(meta));
        }
        failed.map_or(Ok(()), Err)
    }

    /// Flushes when due (interval or size), compacts closed partitions, applies retention,
    /// removes series no sample is left of (see `series_gc`), and merges the catalog files when
    /// there are too many, a crash left overlapping ones or series were removed.
    /// Called every ~10 s by the gateway with the current time.
    pub async fn maintain(&self, now_ms: i64) -> Result<MaintenanceStats> {
        let mut ms = self.maint.lock().await;
        let mut out = MaintenanceStats::default();
        let last = *ms.last_flush_ms.get_or_insert(now_ms);
        let interval = self.opts.flush_interval.as_millis() as i64;
        let (active_bytes, active_empty) = {
            let a = self.active.read();
            (a.bytes(), a.is_empty())
        };
        let unpersisted = self.catalog.read().max_id() > ms.persisted_max_id;
        let due = active_bytes >= self.opts.memtable_flush_bytes
            || (now_ms - last >= interval && (!active_empty || unpersisted))
            || !self.frozen.read().is_empty()
            || self.wal.bytes() > self.opts.wal_max_bytes / 2;
        if due {
            out.flush = Some(self.flush_locked(&mut ms).await?);
            ms.last_flush_ms = Some(now_ms);
        }
        let (parts, files) = crate::compaction::run(self, now_ms).await?;
        out.compacted_partitions = parts;
        out.compacted_files = files;
        self.counters
            .compactions
            .fetch_add(parts, Ordering::Relaxed);
        let (parts, files) = crate::retention::run(self, now_ms).await?;
        out.retention_partitions = parts;
        out.retention_files = files;
        self.counters
            .retention_deleted
            .fetch_add(files, Ordering::Relaxed);
        if files > 0 {
            ms.gc_due = true;
        }
        if let Some(pass) = crate::series_gc::run(self, &mut ms).await? {
            out.series_removed = pass.removed;
        }
        let force = ms.catalog_rewrite;
        let cat = crate::catalog_compaction::run(self, &mut ms.catalog_files, force).await;
        self.note_catalog_files(&ms);
        if let Some(c) = cat? {
            ms.catalog_rewrite = false;
            out.catalog_compacted_files = c.removed;
            self.counters
                .catalog_compactions
                .fetch_add(1, Ordering::Relaxed);
        }
        self.delete_retired().await?;
        Ok(out)
    }

    /// Deletes the retired files no read holds any more; a file whose deletion fails stays
    /// retired and is tried again at the next maintenance.
    pub(crate) async fn delete_retired(&self) -> Result<usize> {
        let free = self.graveyard.take_unheld();
        let mut deleted = 0;
        let mut first_err = None;
        for f in free {
            self.caches.forget(f.key);
            match self.objects.delete(&f.path).await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    self.graveyard.retire(f);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// Files removed from the store but still held by reads (deleted when they finish).
    pub fn retired_files(&self) -> usize {
        self.graveyard.len()
    }

    /// Stops accepting writes, flushes everything, fsyncs and stops the WAL commit thread.
    pub async fn close(&self) -> Result<()> {
        {
            let _gate = self.gate.write();
            self.closed.store(true, Ordering::Release);
        }
        let flushed = self.flush().await;
        self.wal.close().await?;
        if let Err(e) = self.delete_retired().await {
            tracing::warn!(error = %e, "retired files left on disk; deleted again after restart");
        }
        flushed.map(|_| ())
    }

    /// Current statistics.
    pub fn stats(&self) -> StoreStats {
        let (mem_bytes, mem_samples) = {
            let a = self.active.read();
            let f = self.frozen.read();
            (
                a.bytes() as u64 + f.iter().map(|x| x.mem.bytes() as u64).sum::<u64>(),
                a.samples() as u64 + f.iter().map(|x| x.mem.samples() as u64).sum::<u64>(),
            )
        };
        let (partitions, files) = {
            let f = self.files.read();
            (f.partition_count() as u64, f.file_count() as u64)
        };
        let (series_table_cache_bytes, parquet_metadata_cache_bytes) = self.caches.bytes();
        let health = self.wal.health();
        let (series_total, series_max_id, id_table) = {
            let c = self.catalog.read();
            (c.len(), c.max_id(), c.id_table_bytes() as u64)
        };
        StoreStats {
            series_total,
            series_removed_total: self.counters.series_removed.load(Ordering::Relaxed),
            series_max_id,
            series_id_table_bytes: id_table,
            memtable_bytes: mem_bytes,
            memtable_samples: mem_samples,
            wal_bytes: self.wal.bytes(),
            flushes_total: self.counters.flushes.load(Ordering::Relaxed),
            compactions_total: self.counters.compactions.load(Ordering::Relaxed),
            partitions,
            files,
            samples_appended_total: self.counters.samples_appended.load(Ordering::Relaxed),
            retention_deleted_total: self.counters.retention_deleted.load(Ordering::Relaxed),
            catalog_files: self.counters.catalog_files.load(Ordering::Relaxed),
            catalog_compactions_total: self.counters.catalog_compactions.load(Ordering::Relaxed),
            series_table_cache_bytes,
            parquet_metadata_cache_bytes,
            wal_corrupt_records: self.replayed.corrupt_records,
            wal_corrupt_bytes: self.replayed.corrupt_bytes,
            wal_damaged_segments: self.replayed.damaged_segments,
            wal_write_failures_total: health.failures,
            wal_recoveries_total: health.recoveries,
        }
    }

    /// Why the store cannot accept writes now (the WAL hit a full disk or an I/O error and has
    /// not yet started a fresh segment), or `None` when it can.
    pub fn write_failure(&self) -> Option<String> {
        self.wal.health().failed.map(|m| m.to_string())
    }

    /// Publishes the number of catalog files for [`Store::stats`].
    fn note_catalog_files(&self, ms: &MaintState) {
        self.counters
            .catalog_files
            .store(ms.catalog_files.len() as u64, Ordering::Relaxed);
    }

    /// WAL `fdatasync` latency.
    pub fn fsync_histogram(&self) -> HistogramSnapshot {
        self.hist.snapshot()
    }

    /// Wall-clock milliseconds, for callers without their own clock.
    pub fn now_ms() -> i64 {
        now_ms()
    }
}

/// One series of a frozen memtable, by time without duplicates: its vectors when they already
/// are (the usual case, no copy), else a sorted copy.
struct SortedSeries<'a> {
    id: SeriesId,
    metric: Arc<str>,
    cluster: Option<Arc<str>>,
    ts: Cow<'a, [i64]>,
    values: Cow<'a, [f64]>,
}

/// Writes a frozen memtable as one file per hour partition, hour by hour, each streamed to the
/// object store (see [`write_samples_streaming`]): besides the memtable, only sorted copies of
/// out-of-order series and one file's encode buffers are held. Returns the files written and the
/// error that stopped it, if any. Runs on a blocking thread.
fn write_frozen(
    mem: &Memtable,
    names: &HashMap<SeriesId, (Arc<str>, Option<Arc<str>>)>,
    seqs: &AtomicU64,
    objects: &Objects,
    rt: &tokio::runtime::Handle,
) -> (Vec<FileMetaPublic>, Option<Error>) {
    let mut series: Vec<SortedSeries<'_>> = mem
        .series
        .iter()
        .filter(|(_, b)| !b.ts.is_empty())
        .map(|(id, buf)| {
            let (metric, cluster) = names.get(id).cloned().unwrap_or_else(|| series_names(None));
            let (ts, values) = if buf.ts.windows(2).all(|w| w[0] < w[1]) {
                (Cow::Borrowed(&buf.ts[..]), Cow::Borrowed(&buf.values[..]))
            } else {
                let mut s: Vec<(i64, f64)> = buf
                    .ts
                    .iter()
                    .copied()
                    .zip(buf.values.iter().copied())
                    .collect();
                sort_dedup_last(&mut s);
                let (t, v): (Vec<i64>, Vec<f64>) = s.into_iter().unzip();
                (Cow::Owned(t), Cow::Owned(v))
            };
            SortedSeries {
                id: *id,
                metric,
                cluster,
                ts,
                values,
            }
        })
        .collect();
    series.sort_by(|a, b| a.metric.cmp(&b.metric).then(a.id.cmp(&b.id)));
    // Hour partitions covered, with their (min, max) timestamps (the files' metadata).
    let mut hours: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for s in &series {
        let mut i = 0;
        while i < s.ts.len() {
            let h = hour_of(s.ts[i]);
            let j = i + s.ts[i..].partition_point(|t| hour_of(*t) == h);
            let e = hours.entry(h).or_insert((i64::MAX, i64::MIN));
            e.0 = e.0.min(s.ts[i]);
            e.1 = e.1.max(s.ts[j - 1]);
            i = j;
        }
    }
    let mut out = Vec::with_capacity(hours.len());
    for (hour, range) in hours {
        let seq = seqs.fetch_add(1, Ordering::Relaxed);
        let file = FileInfo {
            path: partition::file_path(hour, seq, 0),
            hour,
            seq,
            compacted: 0,
        };
        let rows = series.iter().map(|s| {
            let lo = s.ts.partition_point(|t| hour_of(*t) < hour);
            let hi = s.ts.partition_point(|t| hour_of(*t) <= hour);
            let (id, metric, cluster) = (s.id, &*s.metric, s.cluster.as_deref());
            (id, metric, cluster, &s.ts[lo..hi], &s.values[lo..hi])
        });
        match write_samples_streaming(objects, rt, file, SamplesEncoding::default(), range, rows) {
            Ok(m) => out.push(m),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// `(metric, cluster)` of a series for the sample files' leading columns.
pub(crate) fn series_names(labels: Option<&Labels>) -> (Arc<str>, Option<Arc<str>>) {
    let Some(l) = labels else {
        return (Arc::from(""), None);
    };
    let metric = l
        .iter()
        .find(|x| &*x.name == "__name__")
        .map(|x| Arc::clone(&x.value));
    let cluster = l
        .iter()
        .find(|x| &*x.name == "cluster")
        .map(|x| Arc::clone(&x.value));
    (metric.unwrap_or_else(|| Arc::from("")), cluster)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

    use super::*;
    use crate::partition::HOUR_MS;
    use crate::partition::write::{BATCH_ROWS, SeriesRows, encode_samples};

    const T0: i64 = 1_767_225_600_000;

    /// A read's snapshot of files stays readable through the compaction that replaces them and
    /// the retention that expires them; the files are deleted once the read lets go.
    #[tokio::test]
    async fn retired_files_live_until_their_last_reader() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            data_dir: dir.path().to_path_buf(),
            compaction_min_files: 2,
            retention: std::time::Duration::from_secs(2 * 3600),
            ..StoreOptions::default()
        };
        let store = Store::open(opts).await.unwrap();
        let id = store
            .series_id(&Labels::from_pairs([("__name__", "m")]))
            .unwrap()
            .0;
        for k in 0..3 {
            let batch = [SampleRef {
                series: id,
                timestamp_ms: T0 + k * 1000,
                value: k as f64,
            }];
            store.append(&batch).await.unwrap();
            store.flush().await.unwrap();
        }
        let snapshot = store.files_to_read(&[id], T0, T0 + HOUR_MS);
        assert_eq!(snapshot.len(), 3);
        let on_disk = |f: &FileMeta| dir.path().join(f.path.as_ref()).exists();
        // compaction replaces the three files while the read holds them
        let m = store.maintain(T0 + HOUR_MS + 21 * 60_000).await.unwrap();
        assert_eq!(m.compacted_files, 3);
        assert_eq!(store.retired_files(), 3);
        for f in &snapshot {
            assert!(on_disk(f), "{} deleted under a read", f.path);
            let rows = read_series(&store.objects, &store.caches, f, Some(&[id]))
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
        }
        drop(snapshot);
        store.maintain(T0 + HOUR_MS + 22 * 60_000).await.unwrap();
        assert_eq!(store.retired_files(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("samples"))
                .unwrap()
                .count(),
            1
        );
        // retention expires the hour while a read holds its compacted file
        let snapshot = store.files_to_read(&[id], T0, T0 + HOUR_MS);
        let m = store.maintain(T0 + 4 * HOUR_MS).await.unwrap();
        assert_eq!(m.retention_files, 1);
        assert!(on_disk(&snapshot[0]));
        assert!(
            store
                .scan(&[Matcher::equal("__name__", "m")], T0, T0 + HOUR_MS)
                .await
                .unwrap()
                .is_empty()
        );
        drop(snapshot);
        store.maintain(T0 + 4 * HOUR_MS + 1).await.unwrap();
        assert_eq!(store.retired_files(), 0);
    }

    /// Scans read only the files overlapping their time range whose series-id range holds a
    /// wanted series, each file once; and answer the same as when every file is read.
    #[tokio::test]
    async fn scan_prunes_files_by_time_and_series() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            data_dir: dir.path().to_path_buf(),
            ..StoreOptions::default()
        };
        let store = Store::open(opts).await.unwrap();
        let l = |m: &str, i: usize| {
            Labels::from_pairs([("__name__", m.to_string()), ("i", i.to_string())])
        };
        let mut append = Vec::new();
        // Flush 1: metric a (ids 1..=10), hours 0-2. Flush 2: metric b (ids 11..=20), hours
        // 1-3, and a again in hour 2 (second file there, ids 1..=20).
        let a: Vec<SeriesId> = (0..10)
            .map(|i| store.series_id(&l("a", i)).unwrap().0)
            .collect();
        for h in 0..3 {
            for (k, id) in a.iter().enumerate() {
                append.push(SampleRef {
                    series: *id,
                    timestamp_ms: T0 + h * HOUR_MS + 60_000 + k as i64,
                    value: h as f64,
                });
            }
        }
        store.append(&append).await.unwrap();
        store.flush().await.unwrap();
        append.clear();
        let b: Vec<SeriesId> = (0..10)
            .map(|i| store.series_id(&l("b", i)).unwrap().0)
            .collect();
        for h in 1..4 {
            for (k, id) in b.iter().enumerate() {
                append.push(SampleRef {
                    series: *id,
                    timestamp_ms: T0 + h * HOUR_MS + 120_000 + k as i64,
                    value: h as f64,
                });
            }
        }
        append.push(SampleRef {
            series: a[3],
            timestamp_ms: T0 + 2 * HOUR_MS + 60_003,
            value: 42.0,
        });
        store.append(&append).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.stats().files, 6);

        let read = |ids: &[SeriesId], s: i64, e: i64| -> Vec<(i64, u64)> {
            let files = store.files_to_read(ids, s, e);
            let mut paths: Vec<&object_store::path::Path> = files.iter().map(|f| &f.path).collect();
            paths.sort();
            paths.dedup();
            assert_eq!(paths.len(), files.len(), "a file listed twice");
            assert!(files.windows(2).all(|w| w[0].rank() <= w[1].rank()));
            files
                .iter()
                .map(|f| ((f.hour - T0) / HOUR_MS, f.seq))
                .collect()
        };
        let seq1 = store.files_to_read(&a, T0, T0 + 60_000)[0].seq;
        let seq2 = seq1 + 3;
        // whole range, series a: the three files of flush 1 and flush 2's hour-2 file only
        assert_eq!(
            read(&a, T0, T0 + 4 * HOUR_MS),
            vec![(0, seq1), (1, seq1 + 1), (2, seq1 + 2), (2, seq2 + 1)]
        );
        // series b: flush 2's files only (flush 1's id range is below b's ids)
        assert_eq!(
            read(&b, T0, T0 + 4 * HOUR_MS),
            vec![(1, seq2), (2, seq2 + 1), (3, seq2 + 2)]
        );
        // one hour: only its files; a range ending before an hour's first sample skips it
        assert_eq!(
            read(&b, T0 + HOUR_MS, T0 + 2 * HOUR_MS - 1),
            vec![(1, seq2)]
        );
        assert_eq!(
            read(&a, T0 + HOUR_MS, T0 + 2 * HOUR_MS + 1),
            vec![(1, seq1 + 1)]
        );
        assert_eq!(read(&a, T0 + 4 * HOUR_MS, T0 + 5 * HOUR_MS), vec![]);

        // the pruned scan answers like a full read, with the later write winning
        let ma = [Matcher::equal("__name__", "a")];
        let got = store.scan(&ma, T0, T0 + 4 * HOUR_MS).await.unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[3].values, vec![0.0, 1.0, 42.0]);
        assert!(got.iter().all(|s| s.timestamps.len() == 3));
        store.close().await.unwrap();
    }

    /// The files of a streamed flush of a memtable larger than one Arrow batch (with a series
    /// larger than a batch, out-of-order and duplicate samples, three hours) are byte for byte what
    /// the former in-memory encoding produced, and scans read the same before and after.
    #[tokio::test]
    async fn streamed_flush_matches_in_memory_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            data_dir: dir.path().to_path_buf(),
            ..StoreOptions::default()
        };
        let store = Store::open(opts.clone()).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..300 {
            let l = Labels::from_pairs([
                ("__name__", format!("m{}", i % 3)),
                ("instance", format!("i{i}")),
            ]);
            let l = if i % 2 == 0 {
                l
            } else {
                Labels::from_pairs(
                    l.iter()
                        .map(|x| (x.name.to_string(), x.value.to_string()))
                        .chain([("cluster".to_string(), format!("c{}", i % 4))]),
                )
            };
            ids.push(store.series_id(&l).unwrap().0);
        }
        let mut samples = Vec::new();
        // One series larger than a batch, within one hour.
        for k in 0..(BATCH_ROWS as i64 + 5000) {
            samples.push((ids[0], T0 + k * 50, k as f64));
        }
        // 299 series over two hours, 400 samples each; every 5th series out of order with
        // duplicates (the later write must win).
        for (n, id) in ids.iter().enumerate().skip(1) {
            for k in 0..400i64 {
                let t = T0 + k * 18_000 + n as i64;
                samples.push((*id, t, (k * 7) as f64));
                if n % 5 == 0 && k % 3 == 0 {
                    samples.push((*id, t - 36_000, -(k as f64)));
                }
            }
        }
        let refs: Vec<SampleRef> = samples
            .iter()
            .map(|&(series, timestamp_ms, value)| SampleRef {
                series,
                timestamp_ms,
                value,
            })
            .collect();
        for c in refs.chunks(10_000) {
            store.append(c).await.unwrap();
        }

        // The former flush: per hour, every series' sorted rows, encoded in memory at once.
        let first_seq = store.next_file_seq.load(Ordering::Relaxed);
        let expected: BTreeMap<i64, Vec<u8>> = {
            let mem = store.active.read();
            assert!(mem.samples() > BATCH_ROWS * 2);
            let cat = store.catalog.read();
            let mut by_hour: BTreeMap<i64, Vec<SeriesRows>> = BTreeMap::new();
            for (id, buf) in &mem.series {
                let mut s: Vec<(i64, f64)> = buf
                    .ts
                    .iter()
                    .copied()
                    .zip(buf.values.iter().copied())
                    .collect();
                sort_dedup_last(&mut s);
                let (metric, cluster) = series_names(cat.labels_of(*id));
                let mut i = 0;
                while i < s.len() {
                    let h = hour_of(s[i].0);
                    let j = i + s[i..].partition_point(|x| hour_of(x.0) == h);
                    by_hour.entry(h).or_default().push(SeriesRows {
                        id: *id,
                        metric: Arc::clone(&metric),
                        cluster: cluster.clone(),
                        ts: s[i..j].iter().map(|x| x.0).collect(),
                        values: s[i..j].iter().map(|x| x.1).collect(),
                    });
                    i = j;
                }
            }
            by_hour
                .into_iter()
                .enumerate()
                .map(|(k, (hour, rows))| {
                    let seq = first_seq + k as u64;
                    let path = partition::file_path(hour, seq, 0);
                    let enc = SamplesEncoding::default();
                    (
                        hour,
                        encode_samples(rows, enc, hour, seq, 0, path).unwrap().0,
                    )
                })
                .collect()
        };
        assert_eq!(expected.len(), 3); // the out-of-order samples reach into the hour before T0

        let all = [Matcher::new(crate::MatchOp::RegexMatch, "__name__", "m.*").unwrap()];
        let end = T0 + 3 * HOUR_MS;
        let before = store.scan(&all, T0 - HOUR_MS, end).await.unwrap();
        assert_eq!(before.len(), 300);
        let stats = store.flush().await.unwrap();
        assert_eq!(stats.files, 3);

        let files: Vec<Arc<FileMeta>> = store
            .files
            .read()
            .partitions()
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
        assert_eq!(files.len(), 3);
        for f in &files {
            let got = store.objects.get(&f.path).await.unwrap();
            assert_eq!(got.len() as u64, f.size);
            assert!(got[..] == expected[&f.hour][..], "file {} differs", f.path);
        }
        assert_eq!(store.scan(&all, T0 - HOUR_MS, end).await.unwrap(), before);
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(opts).await.unwrap();
        assert_eq!(store.scan(&all, T0 - HOUR_MS, end).await.unwrap(), before);
        store.close().await.unwrap();
    }
}
