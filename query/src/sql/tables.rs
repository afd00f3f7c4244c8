//! The store's tables: `samples` (one row per sample), `series` (one row per series) and one
//! table per metric (`metrics.<name>`, its label names as columns), all scanned by
//! [`StoreScanExec`] with filters on time, cluster, metric and labels pushed down.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use fleetgate_store::{Labels, Matcher};

use super::pushdown::{self, ColumnRole};
use super::scan::{ColumnKind, RowKind, ScanSpec, StoreScanExec, data_type};
use super::session::SessionRead;
use crate::scope::CLUSTER_LABEL;

/// Column names a label cannot take in a metric table (it is renamed `label_<name>`).
const RESERVED: [&str; 2] = ["timestamp", "value"];

/// A table over the store.
#[derive(Debug)]
pub(crate) struct StoreTable {
    /// `samples`, `series` or `metrics.<name>` (for EXPLAIN).
    name: String,
    rows: RowKind,
    schema: SchemaRef,
    kinds: Vec<ColumnKind>,
    /// Matchers every scan of the table has (`__name__` of a metric table).
    base: Vec<Matcher>,
}

impl StoreTable {
    /// `samples`: cluster, metric, labels, timestamp, value.
    pub(crate) fn samples() -> Self {
        Self::new(
            "samples".into(),
            RowKind::Sample,
            vec![
                ("cluster".into(), ColumnKind::Label(CLUSTER_LABEL.into())),
                ("metric".into(), ColumnKind::Label("__name__".into())),
                ("labels".into(), ColumnKind::LabelsMap),
                ("timestamp".into(), ColumnKind::Timestamp),
                ("value".into(), ColumnKind::Value),
            ],
            Vec::new(),
        )
    }

    /// `series`: cluster, metric, labels, first_sample, last_sample.
    pub(crate) fn series() -> Self {
        Self::new(
            "series".into(),
            RowKind::Series,
            vec![
                ("cluster".into(), ColumnKind::Label(CLUSTER_LABEL.into())),
                ("metric".into(), ColumnKind::Label("__name__".into())),
                ("labels".into(), ColumnKind::LabelsMap),
                ("first_sample".into(), ColumnKind::FirstSample),
                ("last_sample".into(), ColumnKind::LastSample),
            ],
            Vec::new(),
        )
    }

    /// `metrics.<metric>`: cluster, then every other label name of the metric's series (sorted),
    /// timestamp, value.
    pub(crate) fn metric(metric: &str, series: &[(fleetgate_store::SeriesId, Labels)]) -> Self {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for (_, labels) in series {
            for l in labels.iter() {
                if &*l.name != "__name__" && &*l.name != CLUSTER_LABEL {
                    names.insert(&l.name);
                }
            }
        }
        let mut cols = vec![(
            "cluster".to_string(),
            ColumnKind::Label(CLUSTER_LABEL.into()),
        )];
        for n in names {
            cols.push((column_name(n), ColumnKind::Label(n.to_string())));
        }
        cols.push(("timestamp".into(), ColumnKind::Timestamp));
        cols.push(("value".into(), ColumnKind::Value));
        Self::new(
            format!("metrics.{metric}"),
            RowKind::Sample,
            cols,
            vec![Matcher::equal("__name__", metric)],
        )
    }

    fn new(
        name: String,
        rows: RowKind,
        cols: Vec<(String, ColumnKind)>,
        base: Vec<Matcher>,
    ) -> Self {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, k)| {
                let nullable = matches!(
                    k,
                    ColumnKind::Label(_) | ColumnKind::FirstSample | ColumnKind::LastSample
                );
                Field::new(n, data_type(k), nullable)
            })
            .collect();
        Self {
            name,
            rows,
            schema: Arc::new(Schema::new(fields)),
            kinds: cols.into_iter().map(|(_, k)| k).collect(),
            base,
        }
    }

    fn role(&self, column: &str) -> ColumnRole {
        let Ok(i) = self.schema.index_of(column) else {
            return ColumnRole::Other;
        };
        match &self.kinds[i] {
            ColumnKind::Label(l) => ColumnRole::Label(l.clone()),
            ColumnKind::Timestamp => ColumnRole::Timestamp,
            _ => ColumnRole::Other,
        }
    }
}

/// A label's column name in a metric table: the label name, unless it is one of the sample
/// columns' names.
fn column_name(label: &str) -> String {
    if RESERVED.contains(&label) {
        format!("label_{label}")
    } else {
        label.to_string()
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        // what psql's `\dt` and BI tools list as tables
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let role = |c: &str| self.role(c);
        Ok(filters
            .iter()
            .map(|f| {
                if pushdown::pushable(f, &role) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let read = state
            .config()
            .get_extension::<SessionRead>()
            .ok_or_else(|| DataFusionError::Plan("this session has no reader".into()))?;
        let role = |c: &str| self.role(c);
        let mut request = pushdown::request(filters, &role);
        request.matchers.splice(0..0, self.base.iter().cloned());
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.kinds.len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&indices)?);
        let kinds = indices.iter().map(|&i| self.kinds[i].clone()).collect();
        let scope = read.view().scope().patterns().join(",");
        let partitions = state.config().target_partitions();
        let spec = ScanSpec {
            table: self.name.clone(),
            rows: self.rows,
            columns: kinds,
            schema,
            request,
            scope,
            limit,
        };
        Ok(Arc::new(StoreScanExec::new(spec, partitions)))
    }
}
