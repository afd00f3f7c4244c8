//! The `metrics` schema: one table per metric the reader can see, looked up in the series catalog
//! when a query names it, so a new metric or label is a table or column without a restart.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::Result as DfResult;
use fleetgate_store::Matcher;

use super::tables::StoreTable;
use crate::read::ReadView;

/// Most metric names listed by `information_schema.tables` / `\dt metrics.*` (a table past it is
/// still found when named).
const MAX_LISTED: usize = 100_000;

/// `metrics.<name>` for every metric of the reader's scope.
#[derive(Debug)]
pub(crate) struct MetricsSchema {
    view: Arc<ReadView>,
}

impl MetricsSchema {
    pub(crate) fn new(view: Arc<ReadView>) -> Self {
        Self { view }
    }
}

#[async_trait]
impl SchemaProvider for MetricsSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.view.metric_names();
        names.truncate(MAX_LISTED);
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let series = self.view.select_series(&[Matcher::equal("__name__", name)]);
        if series.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(StoreTable::metric(name, &series))))
    }

    fn table_exist(&self, name: &str) -> bool {
        !self
            .view
            .select_series(&[Matcher::equal("__name__", name)])
            .is_empty()
    }
}
