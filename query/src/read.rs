//! A reader's view of the store: every selection joined with the reader's cluster scope.
//!
//! [`ReadView`] is the only read handle the API layers get. PromQL reads through its
//! [`SeriesSource`] implementation, the metadata answers (`series`, `labels`, label values) and the
//! raw-sample export through its methods; each of them joins the [`Scope`]'s `cluster` matcher to
//! the matchers it selects with, so a series outside the scope is never selected at all, whatever
//! the query (`{__name__=~".+"}`, `{cluster="other"}`, subqueries, `absent()`, …).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetgate_store::{Labels, Matcher, SeriesData, SeriesId, Store};

use crate::error::{Error, Result};
use crate::promql::SeriesSource;
use crate::scope::Scope;
use crate::selector::parse_selector;

/// The store as one reader may see it.
#[derive(Debug)]
pub struct ReadView {
    store: Arc<Store>,
    scope: Scope,
    samples_read: AtomicU64,
}

impl ReadView {
    /// A view of `store` confined to `scope`.
    pub fn new(store: Arc<Store>, scope: Scope) -> Self {
        Self {
            store,
            scope,
            samples_read: AtomicU64::new(0),
        }
    }

    /// The scope of this view.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The span the store holds samples in, `[first hour, last hour + 1h)`, if any (whole
    /// hours; the scope is not applied, this only sizes reads).
    pub fn data_span(&self) -> Option<(i64, i64)> {
        let hours = self.store.data_hours();
        Some((*hours.first()?, *hours.last()? + 3_600_000))
    }

    /// Samples read through this view so far (PromQL selections and export batches).
    pub fn samples_read(&self) -> u64 {
        self.samples_read.load(Ordering::Relaxed)
    }

    /// The store, for the metadata answers of this crate; scoped selection is this module's job.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Series matching every matcher and the scope, sorted by labels (no samples read).
    pub(crate) fn select_series(&self, matchers: &[Matcher]) -> Vec<(SeriesId, Labels)> {
        self.store.select_series(&self.scope.join(matchers))
    }

    /// Metric names (`__name__` values) of the series in scope, sorted.
    pub(crate) fn metric_names(&self) -> Vec<String> {
        if self.scope.is_fleet() {
            return self.store.label_values("__name__");
        }
        let mut names: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let found = self.select_series(&[]);
        for (_, l) in &found {
            let n = l.metric_name();
            if !n.is_empty() && seen.insert(n) {
                names.push(n.to_string());
            }
        }
        names.sort_unstable();
        names
    }

    /// The samples in `[start, end]` of series selected with [`ReadView::select_series`] (so
    /// within the scope), in the order given; series without samples omitted.
    pub(crate) async fn read_selected(
        &self,
        sel: Vec<(SeriesId, Labels)>,
        start: i64,
        end: i64,
    ) -> Result<Vec<SeriesData>> {
        let out = self.store.scan_selected(sel, start, end).await?;
        self.count(&out);
        Ok(out)
    }

    /// Like [`ReadView::select_series`], only series with samples in `[start, end]` (answered from
    /// the memtables and per-file series tables, without decoding samples).
    pub(crate) async fn series_in_range(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<(SeriesId, Labels)>> {
        Ok(self
            .store
            .series_in_range(&self.scope.join(matchers), start, end)
            .await?)
    }

    /// The series selected by any of `selectors` (union, each once), sorted by labels, to be read
    /// batch by batch with [`ReadView::read_batch`] (the export streams this way).
    pub fn select_for_export(&self, selectors: &[String]) -> Result<Selection> {
        if selectors.is_empty() {
            return Err(Error::BadParam {
                param: "match[]",
                reason: "at least one series selector is required".into(),
            });
        }
        let mut by_id: BTreeMap<SeriesId, Labels> = BTreeMap::new();
        for s in selectors {
            for group in parse_selector(s)? {
                for (id, labels) in self.select_series(&group) {
                    by_id.entry(id).or_insert(labels);
                }
            }
        }
        let mut series: Vec<(SeriesId, Labels)> = by_id.into_iter().collect();
        series.sort_by(|a, b| a.1.as_slice().cmp(b.1.as_slice()));
        Ok(Selection {
            series: series.into(),
        })
    }

    /// The samples in `[start, end]` of one batch of a selection (series without samples omitted).
    pub async fn read_batch(&self, batch: Batch, start: i64, end: i64) -> Result<Vec<SeriesData>> {
        let out = self.store.scan_selected(batch.0, start, end).await?;
        self.count(&out);
        Ok(out)
    }

    fn count(&self, read: &[SeriesData]) {
        let n: usize = read.iter().map(|s| s.timestamps.len()).sum();
        self.samples_read.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl SeriesSource for ReadView {
    async fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>> {
        let out = self
            .store
            .scan(&self.scope.join(matchers), start_ms, end_ms)
            .await?;
        self.count(&out);
        Ok(out)
    }
}

/// Series selected within a scope, sorted by labels; only a [`ReadView`] makes one.
#[derive(Debug, Default)]
pub struct Selection {
    series: VecDeque<(SeriesId, Labels)>,
}

impl Selection {
    /// Number of series selected.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when nothing was selected.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Takes the next `n` series (fewer at the end; empty when done).
    pub fn next_batch(&mut self, n: usize) -> Batch {
        let n = n.min(self.series.len());
        Batch(self.series.drain(..n).collect())
    }
}

/// Some series of a [`Selection`], to read with [`ReadView::read_batch`]; only a selection
/// makes one, so a batch never holds a series outside the scope it was selected in.
#[derive(Debug, Default)]
pub struct Batch(Vec<(SeriesId, Labels)>);

impl Batch {
    /// Number of series in the batch.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
