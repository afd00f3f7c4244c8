//! The cost tables in SQL: `cost_allocation` and `cost_assets` (the materialized hourly and daily
//! rows, with a `resolution` column), read partition by partition and cut to the reader's
//! cluster scope, and `budgets` (every budget the reader may see, evaluated when it is scanned).

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use fleetgate_store::derived::DerivedTable;
use fleetgate_store::{MatchOp, Matcher};
use futures::StreamExt;

use super::pushdown::{self, ColumnRole};
use super::session::SessionRead;
use crate::cost::budget::{Interval, Status, Target};
use crate::cost::table::{
    ALLOCATION_TABLE, ASSETS_TABLE, TABLE_VERSION, allocation_schema, assets_schema,
};
use crate::scope::Scope;

/// Which materialized table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CostTableKind {
    /// `cost_allocation`.
    Allocation,
    /// `cost_assets`.
    Assets,
}

impl CostTableKind {
    fn name(self) -> &'static str {
        match self {
            CostTableKind::Allocation => ALLOCATION_TABLE,
            CostTableKind::Assets => ASSETS_TABLE,
        }
    }

    fn file_schema(self) -> SchemaRef {
        match self {
            CostTableKind::Allocation => allocation_schema(),
            CostTableKind::Assets => assets_schema(),
        }
    }
}

/// `cost_allocation` or `cost_assets`: `resolution` (`hour` or `day`), then the file's columns.
#[derive(Debug)]
pub(crate) struct CostTable {
    kind: CostTableKind,
    schema: SchemaRef,
}

impl CostTable {
    pub(crate) fn new(kind: CostTableKind) -> Self {
        let mut fields = vec![Arc::new(Field::new("resolution", DataType::Utf8, false))];
        fields.extend(kind.file_schema().fields().iter().cloned());
        Self {
            kind,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    fn role(column: &str) -> ColumnRole {
        match column {
            "window_start" => ColumnRole::Timestamp,
            "resolution" => ColumnRole::Label("resolution".into()),
            _ => ColumnRole::Other,
        }
    }
}

/// `(resolution, window start ms)` of a partition key (`resolution=hour/date=…/hour=…` or
/// `resolution=day/date=…`).
fn parse_key(key: &str) -> Option<(&'static str, i64)> {
    let mut parts = key.split('/');
    let res = parts.next()?.strip_prefix("resolution=")?;
    let d = parts.next()?.strip_prefix("date=")?;
    let day = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)?
        .and_utc()
        .timestamp_millis();
    match (res, parts.next(), parts.next()) {
        ("hour", Some(h), None) => {
            let h: i64 = h.strip_prefix("hour=")?.parse().ok()?;
            (0..24)
                .contains(&h)
                .then_some(("hour", day + h * 3_600_000))
        }
        ("day", None, None) => Some(("day", day)),
        _ => None,
    }
}

/// Whether a partition of `resolution` can hold rows the matchers on `resolution` keep.
fn resolution_kept(matchers: &[Matcher], resolution: &str) -> bool {
    matchers.iter().filter(|m| m.name == "resolution").all(|m| {
        match m.op {
            MatchOp::Equal => m.value == resolution,
            MatchOp::NotEqual => m.value != resolution,
            // regexes are left to DataFusion's filter
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => true,
        }
    })
}

#[async_trait]
impl TableProvider for CostTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if pushdown::pushable(f, &Self::role) {
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
        let request = pushdown::request(filters, &Self::role);
        let view = Arc::clone(read.view());
        let table = view.store().derived(self.kind.name(), TABLE_VERSION);
        let keys: Vec<(String, &'static str)> = table
            .partitions()
            .await
            .map_err(|e| DataFusionError::External(Box::new(crate::Error::from(e))))?
            .into_iter()
            .filter_map(|p| {
                let (res, start) = parse_key(&p.key)?;
                (start >= request.start
                    && start <= request.end
                    && resolution_kept(&request.matchers, res))
                .then_some((p.key, res))
            })
            .collect();
        let stream = PartitionsStream {
            schema: Arc::clone(&self.schema),
            table,
            keys: Arc::new(keys),
            scope: view.scope().clone(),
        };
        let exec = StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            vec![Arc::new(stream)],
            projection,
            Vec::new(),
            false,
            limit,
        )?;
        Ok(Arc::new(exec))
    }
}

/// The partitions one scan reads, in key order, one at a time.
struct PartitionsStream {
    schema: SchemaRef,
    table: DerivedTable,
    keys: Arc<Vec<(String, &'static str)>>,
    scope: Scope,
}

impl fmt::Debug for PartitionsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionsStream")
            .field("table", &self.table.name())
            .field("partitions", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl PartitionStream for PartitionsStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let table = self.table.clone();
        let schema = Arc::clone(&self.schema);
        let scope = self.scope.clone();
        let keys = Arc::clone(&self.keys);
        let s = futures::stream::iter(0..keys.len())
            .then(move |i| {
                let table = table.clone();
                let keys = Arc::clone(&keys);
                async move {
                    let (key, res) = &keys[i];
                    let batches = table
                        .get_present(key)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(crate::Error::from(e))))?;
                    Ok::<_, DataFusionError>((batches.unwrap_or_default(), *res))
                }
            })
            .flat_map({
                let schema = Arc::clone(&schema);
                move |r| {
                    let out: Vec<DfResult<RecordBatch>> = match r {
                        Ok((batches, res)) => batches
                            .iter()
                            .map(|b| shape(&schema, b, res, &scope))
                            .collect(),
                        Err(e) => vec![Err(e)],
                    };
                    futures::stream::iter(out)
                }
            });
        Box::pin(RecordBatchStreamAdapter::new(schema, s))
    }
}

/// A file's batch in the table's schema: the `resolution` column first, every column cast to
/// the declared type (a Parquet round trip may name a map's fields or a time zone otherwise),
/// rows outside the scope dropped.
fn shape(schema: &SchemaRef, b: &RecordBatch, res: &str, scope: &Scope) -> DfResult<RecordBatch> {
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![res; b.num_rows()]))];
    for f in schema.fields().iter().skip(1) {
        let col = b.column_by_name(f.name()).ok_or_else(|| {
            DataFusionError::Execution(format!(
                "cost table file has no column {:?} (format version {TABLE_VERSION} expected)",
                f.name()
            ))
        })?;
        cols.push(if col.data_type() == f.data_type() {
            Arc::clone(col)
        } else {
            cast(col, f.data_type())?
        });
    }
    let batch = RecordBatch::try_new(Arc::clone(schema), cols)?;
    if scope.is_fleet() {
        return Ok(batch);
    }
    let cluster = batch
        .column_by_name("cluster")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| DataFusionError::Execution("cost table has no cluster column".into()))?;
    let keep: BooleanArray = cluster
        .iter()
        .map(|c| Some(c.is_some_and(|c| scope.allows(c))))
        .collect();
    Ok(filter_record_batch(&batch, &keep)?)
}

/// Where the `budgets` table's rows come from: every budget the session's reader may see,
/// evaluated now (the gateway evaluates them through the reader's scoped view).
#[async_trait]
pub trait BudgetSource: Send + Sync + fmt::Debug {
    /// The budgets' states now.
    async fn budgets(&self) -> crate::Result<Vec<Status>>;
}

/// `budgets`: one row per budget.
#[derive(Debug)]
pub(crate) struct BudgetsTable {
    source: Option<Arc<dyn BudgetSource>>,
    schema: SchemaRef,
}

impl BudgetsTable {
    pub(crate) fn new(source: Option<Arc<dyn BudgetSource>>) -> Self {
        let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let f = |n: &str| Field::new(n, DataType::Float64, false);
        let schema = Arc::new(Schema::new(vec![
            s("name", false),
            s("kind", false),
            s("cluster", true),
            s("namespace", true),
            s("label_key", true),
            s("label_value", true),
            s("interval", false),
            Field::new("reset_day", DataType::Int32, false),
            f("amount"),
            Field::new("period_start", ts(), false),
            Field::new("period_end", ts(), false),
            f("spend"),
            f("run_rate_hourly"),
            f("run_rate_monthly"),
            f("projected"),
            s("state", false),
        ]));
        Self { source, schema }
    }
}

fn budget_batch(schema: &SchemaRef, list: &[Status]) -> DfResult<RecordBatch> {
    let strs = |f: &dyn Fn(&Status) -> Option<String>| -> ArrayRef {
        Arc::new(list.iter().map(f).collect::<StringArray>())
    };
    let nums = |f: &dyn Fn(&Status) -> f64| -> ArrayRef {
        Arc::new(list.iter().map(f).collect::<Float64Array>())
    };
    let times = |f: &dyn Fn(&Status) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from(list.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let cols: Vec<ArrayRef> = vec![
        strs(&|s| Some(s.budget.name.clone())),
        strs(&|s| Some(s.budget.kind().to_string())),
        strs(&|s| s.budget.cluster().map(str::to_string)),
        strs(&|s| match &s.budget.target {
            Target::Namespace { namespace, .. } => Some(namespace.clone()),
            _ => None,
        }),
        strs(&|s| match &s.budget.target {
            Target::Label { key, .. } => Some(key.clone()),
            _ => None,
        }),
        strs(&|s| match &s.budget.target {
            Target::Label { value, .. } => Some(value.clone()),
            _ => None,
        }),
        strs(&|s| {
            Some(
                match s.budget.interval {
                    Interval::Monthly => "monthly",
                    Interval::Weekly => "weekly",
                }
                .to_string(),
            )
        }),
        Arc::new(
            list.iter()
                .map(|s| i32::try_from(s.budget.reset_day).unwrap_or(i32::MAX))
                .collect::<Int32Array>(),
        ),
        nums(&|s| s.budget.amount),
        times(&|s| s.period.start_ms),
        times(&|s| s.period.end_ms),
        nums(&|s| s.spend),
        nums(&|s| s.run_rate_hourly),
        nums(&|s| s.run_rate_hourly * 730.0),
        nums(&|s| s.projected),
        strs(&|s| Some(s.state.as_str().to_string())),
    ];
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}

#[async_trait]
impl TableProvider for BudgetsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let stream = BudgetsStream {
            schema: Arc::clone(&self.schema),
            source: self.source.clone(),
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            vec![Arc::new(stream)],
            projection,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

#[derive(Debug)]
struct BudgetsStream {
    schema: SchemaRef,
    source: Option<Arc<dyn BudgetSource>>,
}

impl PartitionStream for BudgetsStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let source = self.source.clone();
        let s = futures::stream::once({
            let schema = Arc::clone(&schema);
            async move {
                let list = match source {
                    Some(src) => src
                        .budgets()
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                    None => Vec::new(),
                };
                budget_batch(&schema, &list)
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_resolution() {
        assert_eq!(
            parse_key("resolution=hour/date=2026-11-01/hour=07"),
            Some(("hour", 1_793_491_200_000 + 7 * 3_600_000))
        );
        assert_eq!(
            parse_key("resolution=day/date=2026-11-01"),
            Some(("day", 1_793_491_200_000))
        );
        assert_eq!(parse_key("resolution=day/date=2026-11-01/hour=01"), None);
        assert_eq!(parse_key("junk"), None);
        let m = [Matcher::equal("resolution", "day")];
        assert!(resolution_kept(&m, "day"));
        assert!(!resolution_kept(&m, "hour"));
        assert!(resolution_kept(&[], "hour"));
    }
}
