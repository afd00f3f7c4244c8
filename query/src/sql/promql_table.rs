//! `promql(query [, start, end, step])`: a PromQL query as a table, evaluated by the same engine
//! and through the same scoped view as `/api/v1/query_range` (or `/api/v1/query` with one or two
//! arguments), one column per label of the result, then `timestamp` and `value`.
//!
//! A table's columns must be known when the query is planned, so the PromQL query is evaluated
//! then, on the query pool's thread (`block_in_place`), under the engine's own limits.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringBuilder, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use fleetgate_store::Labels;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::scan::TZ;
use super::session::SessionRead;
use crate::promql::{Engine, Value};

/// Rows a `promql()` result may have.
const MAX_ROWS: usize = 10_000_000;

/// The `promql` table function.
#[derive(Debug)]
pub(crate) struct PromqlFunction;

fn arg_err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(format!("promql(): {}", msg.into()))
}

fn literal(e: &Expr, what: &str) -> DfResult<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Ok(v.clone()),
        _ => Err(arg_err(format!(
            "{what} must be a constant (a literal, or an expression of literals and now())"
        ))),
    }
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

/// A time argument: a timestamp, Unix seconds, or an RFC 3339 / Unix-seconds string.
fn time_ms(e: &Expr, what: &'static str) -> DfResult<i64> {
    let v = literal(e, what)?;
    let ms = match &v {
        ScalarValue::TimestampSecond(Some(s), _) => s.saturating_mul(1000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => *ms,
        ScalarValue::TimestampMicrosecond(Some(us), _) => us.div_euclid(1000),
        ScalarValue::TimestampNanosecond(Some(ns), _) => ns.div_euclid(1_000_000),
        ScalarValue::Int64(Some(s)) => s.saturating_mul(1000),
        ScalarValue::Int32(Some(s)) => i64::from(*s) * 1000,
        ScalarValue::Float64(Some(s)) if s.is_finite() && s.abs() < 9.2e15 => {
            (s * 1000.0).round() as i64
        }
        other => match text(other) {
            Some(s) => crate::time::parse_time_ms(what, s).map_err(|e| arg_err(e.to_string()))?,
            None => {
                return Err(arg_err(format!(
                    "{what} must be a timestamp, got {other:?}"
                )));
            }
        },
    };
    Ok(ms)
}

/// The step argument: an interval, seconds, or a PromQL duration string (`'5m'`).
fn step_ms(e: &Expr) -> DfResult<i64> {
    let v = literal(e, "step")?;
    let ms = match &v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            if i.months != 0 {
                return Err(arg_err("step must not be given in months"));
            }
            i64::from(i.days) * 86_400_000 + i.nanoseconds.div_euclid(1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds)
        }
        ScalarValue::Int64(Some(s)) => s.saturating_mul(1000),
        ScalarValue::Int32(Some(s)) => i64::from(*s) * 1000,
        ScalarValue::Float64(Some(s)) if s.is_finite() && s.abs() < 9.2e12 => {
            (s * 1000.0).round() as i64
        }
        other => match text(other) {
            Some(s) => promql_parser::util::parse_duration(s)
                .map_err(|e| arg_err(format!("step {s:?}: {e}")))?
                .as_millis() as i64,
            None => return Err(arg_err(format!("step must be an interval, got {other:?}"))),
        },
    };
    if ms <= 0 {
        return Err(arg_err("step must be positive"));
    }
    Ok(ms)
}

impl TableFunctionImpl for PromqlFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let read = args
            .session()
            .config()
            .get_extension::<SessionRead>()
            .ok_or_else(|| DataFusionError::Plan("this session has no reader".into()))?;
        let query = match exprs.first().map(|e| literal(e, "query")) {
            Some(Ok(v)) => text(&v)
                .map(str::to_string)
                .ok_or_else(|| arg_err("the first argument must be the PromQL query text"))?,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(arg_err(
                    "usage: promql(query [, time]) or promql(query, start, end, step)",
                ));
            }
        };
        let now = chrono_now_ms();
        let range = match exprs.len() {
            1 => None,
            2 => Some((time_ms(&exprs[1], "time")?, None)),
            4 => {
                let start = time_ms(&exprs[1], "start")?;
                let end = time_ms(&exprs[2], "end")?;
                Some((start, Some((end, step_ms(&exprs[3])?))))
            }
            n => {
                return Err(arg_err(format!(
                    "takes 1, 2 or 4 arguments (query [, time]) or (query, start, end, step), got {n}"
                )));
            }
        };
        let handle = Handle::try_current()
            .map_err(|_| DataFusionError::Internal("promql() outside a runtime".into()))?;
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(DataFusionError::Internal(
                "promql() needs a multi-thread runtime".into(),
            ));
        }
        let engine = Engine::new(read.promql().clone());
        let view = Arc::clone(read.view());
        let value = tokio::task::block_in_place(|| {
            handle.block_on(async {
                match range {
                    None => engine.instant(&*view, &query, now).await,
                    Some((t, None)) => engine.instant(&*view, &query, t).await,
                    Some((start, Some((end, step)))) => {
                        engine.range(&*view, &query, start, end, step).await
                    }
                }
            })
        })
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = to_batch(value)?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Arc::new(table))
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The rows of a PromQL value: `(labels, timestamp, value)`.
fn rows(value: Value) -> Vec<(Labels, Vec<(i64, f64)>)> {
    match value {
        Value::Scalar { t_ms, value } => vec![(Labels::default(), vec![(t_ms, value)])],
        Value::Vector(v) => v
            .into_iter()
            .map(|s| (s.labels, vec![(s.t_ms, s.value)]))
            .collect(),
        Value::Matrix(m) => m.into_iter().map(|s| (s.labels, s.points)).collect(),
        // a string result has no numeric value; no rows
        Value::String { .. } => Vec::new(),
    }
}

fn to_batch(value: Value) -> DfResult<RecordBatch> {
    let rows = rows(value);
    let n: usize = rows.iter().map(|(_, p)| p.len()).sum();
    if n > MAX_ROWS {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "promql() result has {n} rows; at most {MAX_ROWS} are allowed (narrow the query or raise the step)"
        )));
    }
    let names: BTreeSet<&str> = rows
        .iter()
        .flat_map(|(l, _)| l.iter().map(|l| &*l.name))
        .collect();
    let mut fields: Vec<Field> = Vec::with_capacity(names.len() + 2);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(names.len() + 2);
    for name in &names {
        let col = if *name == "timestamp" || *name == "value" {
            format!("label_{name}")
        } else {
            name.to_string()
        };
        let mut b = StringBuilder::new();
        for (labels, points) in &rows {
            let v = labels.get(name);
            for _ in points {
                b.append_option(v);
            }
        }
        fields.push(Field::new(col, DataType::Utf8, true));
        arrays.push(Arc::new(b.finish()));
    }
    let ts: Vec<i64> = rows
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .collect();
    let vs: Vec<f64> = rows
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .collect();
    fields.push(Field::new(
        "timestamp",
        DataType::Timestamp(TimeUnit::Millisecond, Some(TZ.into())),
        false,
    ));
    arrays.push(Arc::new(
        TimestampMillisecondArray::from(ts).with_timezone(TZ),
    ));
    fields.push(Field::new("value", DataType::Float64, false));
    arrays.push(Arc::new(Float64Array::from(vs)));
    let opts = RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &opts,
    )?)
}
