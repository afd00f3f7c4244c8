//! [`SeriesSink`] for the real store: a direct delegation.

use std::future::Future;

use fleetgate_store::{Error as StoreError, Labels, SeriesId, Store};

use super::{SampleRef, SeriesSink};

impl SeriesSink for Store {
    fn series_id(&self, labels: &Labels) -> Result<(SeriesId, bool), StoreError> {
        Store::series_id(self, labels)
    }

    fn check_budget(&self) -> Result<(), StoreError> {
        Store::check_budget(self)
    }

    fn append(&self, samples: &[SampleRef]) -> impl Future<Output = Result<(), StoreError>> + Send {
        Store::append(self, samples)
    }

    fn series_removal_generation(&self) -> u64 {
        Store::series_removal_generation(self)
    }

    fn contains_series(&self, id: SeriesId) -> bool {
        Store::contains_series(self, id)
    }
}
