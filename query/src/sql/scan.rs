//! The physical scan of a store table: series selected through the session's scoped view, their
//! samples read a bounded number of series at a time, rows built as Arrow batches.
//!
//! Label columns are dictionary-encoded (one dictionary entry per series of a batch, a key per
//! row), so a label costs four bytes a row however long its value; timestamps are
//! `timestamptz` (milliseconds, UTC). The scan is split into interleaved partitions of series
//! chunks so that DataFusion reads with every thread it is given.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::promql::is_stale_nan;
use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, MapBuilder, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use fleetgate_store::{Labels, SeriesData, SeriesId};

use super::pushdown::ScanRequest;
use super::session::SessionRead;
use crate::read::ReadView;
use crate::scope::CLUSTER_LABEL;

/// The time zone of every timestamp column (`timestamptz` over the PostgreSQL wire).
pub(crate) const TZ: &str = "UTC";

/// Samples one read of a scan aims to hold (series per read = this / the samples expected per
/// series in the range), so a scan's memory stays bounded however long the range.
const SAMPLES_PER_READ: i64 = 2_000_000;
/// Expected sample interval when sizing reads (a typical scrape interval).
const ASSUMED_INTERVAL_MS: i64 = 15_000;
/// A range with no bound is sized as this long.
const UNBOUNDED_RANGE_MS: i64 = 31 * 86_400_000;

/// What a column of a store table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// The value of a label (`cluster`, `__name__` as `metric`, a metric table's label columns).
    Label(String),
    /// Every label but `__name__` and `cluster`, as a map.
    LabelsMap,
    /// The sample time.
    Timestamp,
    /// The sample value.
    Value,
    /// The series' first sample time (series table).
    FirstSample,
    /// The series' last sample time (series table).
    LastSample,
}

impl ColumnKind {
    fn needs_samples(&self) -> bool {
        matches!(
            self,
            ColumnKind::Timestamp
                | ColumnKind::Value
                | ColumnKind::FirstSample
                | ColumnKind::LastSample
        )
    }
}

/// One row per sample, or one row per series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKind {
    Sample,
    Series,
}

/// The Arrow type of a column of `kind`.
pub(crate) fn data_type(kind: &ColumnKind) -> DataType {
    match kind {
        ColumnKind::Label(_) => {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        }
        ColumnKind::LabelsMap => labels_map_type(),
        ColumnKind::Timestamp | ColumnKind::FirstSample | ColumnKind::LastSample => {
            DataType::Timestamp(TimeUnit::Millisecond, Some(TZ.into()))
        }
        ColumnKind::Value => DataType::Float64,
    }
}

fn labels_map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The scan of one store table, as planned.
#[derive(Debug)]
pub(crate) struct StoreScanExec {
    /// `samples`, `series`, `metrics.<name>`.
    table: String,
    rows: RowKind,
    /// The projected columns, parallel to `schema`.
    columns: Arc<[ColumnKind]>,
    schema: SchemaRef,
    request: ScanRequest,
    /// The reader's scope, as configured (display only: the view applies it).
    scope: String,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
}

/// What a table's `scan` decided: the scan to run.
#[derive(Debug)]
pub(crate) struct ScanSpec {
    /// `samples`, `series`, `metrics.<name>`.
    pub(crate) table: String,
    pub(crate) rows: RowKind,
    /// The projected columns, parallel to `schema`.
    pub(crate) columns: Vec<ColumnKind>,
    pub(crate) schema: SchemaRef,
    pub(crate) request: ScanRequest,
    /// The reader's scope as configured (display only).
    pub(crate) scope: String,
    pub(crate) limit: Option<usize>,
}

impl StoreScanExec {
    pub(crate) fn new(spec: ScanSpec, partitions: usize) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&spec.schema)),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            table: spec.table,
            rows: spec.rows,
            columns: spec.columns.into(),
            schema: spec.schema,
            request: spec.request,
            scope: spec.scope,
            limit: spec.limit,
            props: Arc::new(props),
        }
    }

    fn partitions(&self) -> usize {
        self.props.partitioning.partition_count()
    }
}

impl DisplayAs for StoreScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                let cols: Vec<&str> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                write!(
                    f,
                    "StoreScanExec: table={}, {}, scope={}, projection=[{}]",
                    self.table,
                    self.request,
                    self.scope,
                    cols.join(", ")
                )?;
                if let Some(l) = self.limit {
                    write!(f, ", limit={l}")?;
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "table={}", self.table)?;
                writeln!(f, "{}", self.request)?;
                write!(f, "scope={}", self.scope)
            }
        }
    }
}

impl ExecutionPlan for StoreScanExec {
    fn name(&self) -> &str {
        "StoreScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        // no reader in the session: fail closed, never read unscoped
        let read = ctx
            .session_config()
            .get_extension::<SessionRead>()
            .ok_or_else(|| DataFusionError::Plan("this session has no reader".into()))?;
        let view = Arc::clone(read.view());
        let all = view.select_series(&self.request.matchers);
        // sized by the time the data actually covers, not by an unbounded (or far wider) range
        let mut sizing = self.request.clone();
        if let Some((first, last)) = view.data_span() {
            sizing.start = sizing.start.max(first);
            sizing.end = sizing.end.min(last);
        }
        let per_read = series_per_read(self.rows, &self.columns, &sizing);
        let parts = self.partitions();
        // chunk k of the selection goes to partition k % parts
        let mine: Vec<(SeriesId, Labels)> = all
            .chunks(per_read)
            .enumerate()
            .filter(|(k, _)| k % parts == partition)
            .flat_map(|(_, c)| c.iter().cloned())
            .collect();
        let reservation =
            MemoryConsumer::new(format!("StoreScanExec[{partition}]")).register(ctx.memory_pool());
        let state = ScanState {
            view,
            selection: mine,
            pos: 0,
            per_read,
            request: self.request.clone(),
            rows: self.rows,
            columns: Arc::clone(&self.columns),
            schema: Arc::clone(&self.schema),
            batch_rows: ctx.session_config().batch_size().max(1),
            pending: VecDeque::new(),
            left: self.limit.unwrap_or(usize::MAX),
            reservation,
        };
        let stream = futures::stream::try_unfold(state, |st| st.next());
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// How many series one read takes: about [`SAMPLES_PER_READ`] samples at the assumed interval.
fn series_per_read(rows: RowKind, columns: &[ColumnKind], req: &ScanRequest) -> usize {
    if !columns.iter().any(ColumnKind::needs_samples) {
        return 4096;
    }
    let span = if req.start == i64::MIN || req.end == i64::MAX {
        UNBOUNDED_RANGE_MS
    } else {
        req.end
            .saturating_sub(req.start)
            .clamp(1, UNBOUNDED_RANGE_MS)
    };
    let per_series = (span / ASSUMED_INTERVAL_MS).max(1);
    let n = (SAMPLES_PER_READ / per_series).clamp(16, 4096);
    let _ = rows;
    usize::try_from(n).unwrap_or(16)
}

struct ScanState {
    view: Arc<ReadView>,
    selection: Vec<(SeriesId, Labels)>,
    pos: usize,
    per_read: usize,
    request: ScanRequest,
    rows: RowKind,
    columns: Arc<[ColumnKind]>,
    schema: SchemaRef,
    batch_rows: usize,
    pending: VecDeque<RecordBatch>,
    /// Rows still wanted (the pushed-down LIMIT).
    left: usize,
    reservation: MemoryReservation,
}

impl ScanState {
    async fn next(mut self) -> DfResult<Option<(RecordBatch, Self)>> {
        loop {
            if self.left == 0 {
                self.reservation.free();
                return Ok(None);
            }
            if let Some(mut b) = self.pending.pop_front() {
                if b.num_rows() > self.left {
                    b = b.slice(0, self.left);
                }
                self.left -= b.num_rows();
                let held: usize = self
                    .pending
                    .iter()
                    .map(RecordBatch::get_array_memory_size)
                    .sum();
                self.reservation.try_resize(held)?;
                return Ok(Some((b, self)));
            }
            if self.pos >= self.selection.len() {
                self.reservation.free();
                return Ok(None);
            }
            let end = (self.pos + self.per_read).min(self.selection.len());
            let chunk: Vec<(SeriesId, Labels)> = self.selection[self.pos..end].to_vec();
            self.pos = end;
            let batches = self.read_chunk(chunk).await?;
            let held: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            self.reservation.try_resize(held)?;
            self.pending.extend(batches);
        }
    }

    async fn read_chunk(&self, chunk: Vec<(SeriesId, Labels)>) -> DfResult<Vec<RecordBatch>> {
        let needs = self.columns.iter().any(ColumnKind::needs_samples);
        match self.rows {
            RowKind::Series if !needs => {
                let data: Vec<SeriesData> = chunk
                    .into_iter()
                    .map(|(id, labels)| SeriesData {
                        id,
                        labels,
                        timestamps: Vec::new(),
                        values: Vec::new(),
                    })
                    .collect();
                series_rows(&data, &self.columns, &self.schema, self.batch_rows)
            }
            RowKind::Series => {
                let ids: Vec<(SeriesId, Labels)> = chunk.clone();
                let read = self
                    .view
                    .read_selected(chunk, self.request.start, self.request.end)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                // keep series without samples in range, with null first/last
                let mut by_id: std::collections::HashMap<SeriesId, SeriesData> =
                    read.into_iter().map(|s| (s.id, s)).collect();
                let data: Vec<SeriesData> = ids
                    .into_iter()
                    .map(|(id, labels)| {
                        by_id.remove(&id).unwrap_or(SeriesData {
                            id,
                            labels,
                            timestamps: Vec::new(),
                            values: Vec::new(),
                        })
                    })
                    .collect();
                series_rows(&data, &self.columns, &self.schema, self.batch_rows)
            }
            RowKind::Sample => {
                let data = self
                    .view
                    .read_selected(chunk, self.request.start, self.request.end)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                sample_rows(&data, &self.columns, &self.schema, self.batch_rows)
            }
        }
    }
}

/// A run of rows of one series: `data[series]` samples `lo..hi`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    series: usize,
    lo: usize,
    hi: usize,
}

/// One row per sample, in batches of at most `batch_rows`.
fn sample_rows(
    data: &[SeriesData],
    columns: &[ColumnKind],
    schema: &SchemaRef,
    batch_rows: usize,
) -> DfResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut segs: Vec<Segment> = Vec::new();
    let mut rows = 0usize;
    for (i, s) in data.iter().enumerate() {
        let n = s.timestamps.len().min(s.values.len());
        let mut lo = 0;
        while lo < n {
            // staleness markers are not rows (as in the Prometheus API): runs stop at them
            if is_stale_nan(s.values[lo]) {
                lo += 1;
                continue;
            }
            let limit = (batch_rows - rows).min(n - lo);
            let take = s.values[lo..lo + limit]
                .iter()
                .position(|v| is_stale_nan(*v))
                .unwrap_or(limit);
            segs.push(Segment {
                series: i,
                lo,
                hi: lo + take,
            });
            rows += take;
            lo += take;
            if rows == batch_rows {
                out.push(build(data, &segs, rows, columns, schema)?);
                segs.clear();
                rows = 0;
            }
        }
    }
    if rows > 0 {
        out.push(build(data, &segs, rows, columns, schema)?);
    }
    Ok(out)
}

/// One row per series, in batches of at most `batch_rows`.
fn series_rows(
    data: &[SeriesData],
    columns: &[ColumnKind],
    schema: &SchemaRef,
    batch_rows: usize,
) -> DfResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for start in (0..data.len()).step_by(batch_rows) {
        let end = (start + batch_rows).min(data.len());
        let segs: Vec<Segment> = (start..end)
            .map(|i| Segment {
                series: i,
                lo: 0,
                hi: 1,
            })
            .collect();
        out.push(build_series(data, &segs, columns, schema)?);
    }
    Ok(out)
}

fn label_value<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels.get(name).filter(|v| !v.is_empty())
}

/// A dictionary column: one entry per segment, a key per row (null where the label is missing).
fn label_column(data: &[SeriesData], segs: &[Segment], name: &str, per_row: bool) -> ArrayRef {
    let values: StringArray = segs
        .iter()
        .map(|s| label_value(&data[s.series].labels, name))
        .collect();
    let mut keys: Vec<Option<i32>> = Vec::new();
    for (j, s) in segs.iter().enumerate() {
        let k = label_value(&data[s.series].labels, name).map(|_| j as i32);
        let n = if per_row { s.hi - s.lo } else { 1 };
        keys.extend(std::iter::repeat_n(k, n));
    }
    let keys = Int32Array::from(keys);
    match DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)) {
        Ok(a) => Arc::new(a),
        // keys are in range by construction
        Err(_) => Arc::new(DictionaryArray::<Int32Type>::from_iter(std::iter::empty::<
            Option<&str>,
        >())),
    }
}

fn labels_map(data: &[SeriesData], segs: &[Segment], per_row: bool) -> DfResult<ArrayRef> {
    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for s in segs {
        let labels = &data[s.series].labels;
        let n = if per_row { s.hi - s.lo } else { 1 };
        for _ in 0..n {
            for l in labels.iter() {
                if &*l.name == "__name__" || &*l.name == CLUSTER_LABEL {
                    continue;
                }
                b.keys().append_value(&l.name);
                b.values().append_value(&l.value);
            }
            b.append(true)?;
        }
    }
    Ok(Arc::new(b.finish()))
}

fn timestamps(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone(TZ))
}

fn build(
    data: &[SeriesData],
    segs: &[Segment],
    rows: usize,
    columns: &[ColumnKind],
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for c in columns {
        let a: ArrayRef = match c {
            ColumnKind::Label(name) => label_column(data, segs, name, true),
            ColumnKind::LabelsMap => labels_map(data, segs, true)?,
            ColumnKind::Timestamp => {
                let mut v = Vec::with_capacity(rows);
                for s in segs {
                    v.extend_from_slice(&data[s.series].timestamps[s.lo..s.hi]);
                }
                Arc::new(TimestampMillisecondArray::from(v).with_timezone(TZ))
            }
            ColumnKind::Value => {
                let mut v = Vec::with_capacity(rows);
                for s in segs {
                    v.extend_from_slice(&data[s.series].values[s.lo..s.hi]);
                }
                Arc::new(Float64Array::from(v))
            }
            ColumnKind::FirstSample | ColumnKind::LastSample => {
                return Err(DataFusionError::Internal(
                    "series columns in a sample scan".into(),
                ));
            }
        };
        arrays.push(a);
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &opts,
    )?)
}

fn build_series(
    data: &[SeriesData],
    segs: &[Segment],
    columns: &[ColumnKind],
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for c in columns {
        let a: ArrayRef = match c {
            ColumnKind::Label(name) => label_column(data, segs, name, false),
            ColumnKind::LabelsMap => labels_map(data, segs, false)?,
            ColumnKind::FirstSample => timestamps(
                segs.iter()
                    .map(|s| data[s.series].timestamps.first().copied())
                    .collect(),
            ),
            ColumnKind::LastSample => timestamps(
                segs.iter()
                    .map(|s| data[s.series].timestamps.last().copied())
                    .collect(),
            ),
            ColumnKind::Timestamp | ColumnKind::Value => {
                return Err(DataFusionError::Internal(
                    "sample columns in a series scan".into(),
                ));
            }
        };
        arrays.push(a);
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(segs.len()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &opts,
    )?)
}
