//! The store-facing seam: [`SeriesSink`], what ingestion needs from storage, implemented for
//! `fleetgate_store::Store` and for the in-memory [`MemorySink`] used by tests and benches.

use std::future::Future;

use fleetgate_store::{Error as StoreError, Labels, SeriesId};
use hashbrown::HashMap;
use parking_lot::Mutex;

pub use fleetgate_store::SampleRef;

mod store;

/// What ingestion needs from storage. Kept narrow so the ingest path can be tested and benched
/// without a WAL.
pub trait SeriesSink: Send + Sync + 'static {
    /// Gets or creates the id of a canonical label set; the bool is true when it was created.
    fn series_id(&self, labels: &Labels) -> Result<(SeriesId, bool), StoreError>;

    /// `Err(StoreError::Overloaded(_))` when the store cannot take more writes right now.
    fn check_budget(&self) -> Result<(), StoreError>;

    /// Appends samples; resolves once they are durable.
    fn append(&self, samples: &[SampleRef]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Changes whenever the store removed series (see `Store::series_removal_generation`); a
    /// sink that never removes any keeps the default.
    fn series_removal_generation(&self) -> u64 {
        0
    }

    /// False for an id the store removed; callers holding ids drop those.
    fn contains_series(&self, _id: SeriesId) -> bool {
        true
    }
}

/// An in-memory [`SeriesSink`] for tests and benches: a label-set → id map (ids from 1, as in the
/// store) and, optionally, every appended sample.
#[derive(Debug, Default)]
pub struct MemorySink {
    inner: Mutex<MemoryInner>,
    discard_samples: bool,
}

#[derive(Debug, Default)]
struct MemoryInner {
    ids: HashMap<Labels, SeriesId>,
    series: Vec<Labels>,
    samples: Vec<SampleRef>,
    appends: u64,
    overloaded: Option<String>,
}

impl MemorySink {
    /// A sink that keeps every appended sample.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that counts appends but drops the samples (for benches).
    pub fn discarding() -> Self {
        Self {
            discard_samples: true,
            ..Self::default()
        }
    }

    /// Makes [`SeriesSink::check_budget`] fail with `Overloaded(msg)`, or succeed again with `None`.
    pub fn set_overloaded(&self, msg: Option<String>) {
        self.inner.lock().overloaded = msg;
    }

    /// The label set of a series id.
    pub fn labels(&self, id: SeriesId) -> Option<Labels> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.inner.lock().series.get(i).cloned()
    }

    /// The id of a label set, if created.
    pub fn id_of(&self, labels: &Labels) -> Option<SeriesId> {
        self.inner.lock().ids.get(labels).copied()
    }

    /// Number of series created.
    pub fn series_count(&self) -> usize {
        self.inner.lock().series.len()
    }

    /// Every sample appended so far, in append order.
    pub fn samples(&self) -> Vec<SampleRef> {
        self.inner.lock().samples.clone()
    }

    /// Number of `append` calls so far.
    pub fn appends(&self) -> u64 {
        self.inner.lock().appends
    }
}

impl SeriesSink for MemorySink {
    fn series_id(&self, labels: &Labels) -> Result<(SeriesId, bool), StoreError> {
        let mut inner = self.inner.lock();
        if let Some(id) = inner.ids.get(labels) {
            return Ok((*id, false));
        }
        // Ids start at 1, as in the store.
        inner.series.push(labels.clone());
        let id = inner.series.len() as SeriesId;
        inner.ids.insert(labels.clone(), id);
        Ok((id, true))
    }

    fn check_budget(&self) -> Result<(), StoreError> {
        match &self.inner.lock().overloaded {
            Some(msg) => Err(StoreError::Overloaded(msg.clone())),
            None => Ok(()),
        }
    }

    fn append(&self, samples: &[SampleRef]) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.inner.lock();
        inner.appends += 1;
        if !self.discard_samples {
            inner.samples.extend_from_slice(samples);
        }
        std::future::ready(Ok(()))
    }
}
