//! Query evaluation: reads what each selector needs (range queries chunk by chunk) and evaluates the tree over the steps.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fleetgate_store::{Labels, MatchOp, SeriesData};
use parking_lot::Mutex;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};
use rayon::prelude::*;

use super::source::SeriesSource;
use super::value::{Annotations, Sample, Series, Value, is_stale_nan};
use super::{aggregate, binary, functions};
use crate::error::{Error, Result};
use crate::selector::selector_matchers;

/// Limits and defaults of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus default 5m).
    pub lookback_ms: i64,
    /// The most samples a query may hold at once in one node (Prometheus default 50,000,000).
    pub max_samples: usize,
    /// The most `(end - start) / step` of a range query (Prometheus: 11,000; one more point).
    pub max_points_per_series: usize,
    /// Step of a subquery written without one (Prometheus: the global evaluation interval, 1m).
    pub default_subquery_step_ms: i64,
    /// Deadline for one query.
    pub timeout: Option<Duration>,
    /// Samples one time chunk of a range query aims to read; range queries are streamed chunk
    /// by chunk, so this bounds their memory. 0 evaluates the whole span in one pass.
    pub range_chunk_samples: usize,
    /// Set (by the caller, from any thread) to stop the query at its next deadline check, e.g.
    /// when its client has gone away; the query then fails with [`Error::Canceled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
            default_subquery_step_ms: 60_000,
            timeout: Some(Duration::from_secs(120)),
            range_chunk_samples: 4_000_000,
            cancel: None,
        }
    }
}

/// The PromQL engine; cheap to share, holds only options.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// The evaluation times of a node: `start, start+step, …, end`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) step: i64,
}

impl Grid {
    pub(super) fn n(&self) -> usize {
        if self.end < self.start {
            return 0;
        }
        ((self.end - self.start) / self.step.max(1)) as usize + 1
    }
    pub(super) fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One series of an instant-vector node: a value (or none) at every step.
#[derive(Debug, Clone)]
pub(super) struct Ser {
    pub(super) labels: Labels,
    /// Delayed name removal: `__name__` is dropped at the end (or by the next aggregation).
    pub(super) drop_name: bool,
    pub(super) vals: Vec<Option<f64>>,
}

/// Raw samples of one series (staleness markers removed), for range-vector windows.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    data: RawData,
}

/// Where a [`Raw`]'s samples live: the selector's read itself when it holds no staleness
/// marker (the common case: no copy), else a filtered copy; subqueries build their own.
#[derive(Debug, Clone)]
enum RawData {
    Shared(Arc<Vec<SeriesData>>, usize),
    Owned {
        labels: Labels,
        ts: Vec<i64>,
        vs: Vec<f64>,
    },
}

impl Raw {
    /// Samples built by the engine (subqueries).
    pub(super) fn owned(labels: Labels, ts: Vec<i64>, vs: Vec<f64>) -> Self {
        Self {
            data: RawData::Owned { labels, ts, vs },
        }
    }

    pub(super) fn labels(&self) -> &Labels {
        match &self.data {
            RawData::Shared(all, i) => &all[*i].labels,
            RawData::Owned { labels, .. } => labels,
        }
    }

    pub(super) fn ts(&self) -> &[i64] {
        match &self.data {
            RawData::Shared(all, i) => &all[*i].timestamps,
            RawData::Owned { ts, .. } => ts,
        }
    }

    pub(super) fn vs(&self) -> &[f64] {
        match &self.data {
            RawData::Shared(all, i) => &all[*i].values,
            RawData::Owned { vs, .. } => vs,
        }
    }
}

/// A range vector: for step `i` the window of each series is `(refs[i] - range_ms, refs[i]]`.
#[derive(Debug, Clone)]
pub(super) struct RangeVal {
    pub(super) series: Vec<Raw>,
    pub(super) range_ms: i64,
    pub(super) refs: Vec<i64>,
}

impl RangeVal {
    /// Index bounds `[lo, hi)` of the window of `raw` at step `i`.
    pub(super) fn window(&self, raw: &Raw, i: usize) -> (usize, usize) {
        let end = self.refs[i];
        let ts = raw.ts();
        let lo = ts.partition_point(|t| *t <= end - self.range_ms);
        let hi = ts.partition_point(|t| *t <= end);
        (lo, hi.max(lo))
    }
}

/// The value of a node at every step.
#[derive(Debug, Clone)]
pub(super) enum Val {
    Scalar(Vec<f64>),
    Vector(Vec<Ser>),
    Str(String),
    Range(RangeVal),
}

impl Val {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Vector(_) => "instant vector",
            Val::Str(_) => "string",
            Val::Range(_) => "range vector",
        }
    }
}

/// State of one query evaluation.
#[derive(Debug)]
pub(super) struct Ctx<'a> {
    pub(super) opts: &'a EngineOptions,
    /// Series read for each selector (by [`key`]); selectors reading the same series over the
    /// same span share one read.
    data: HashMap<usize, Arc<Vec<SeriesData>>>,
    pub(super) query_start: i64,
    pub(super) query_end: i64,
    /// The query's step in ms (0 for instant queries), for `step()`.
    pub(super) query_step: i64,
    deadline: Option<Instant>,
    /// Warnings and infos raised so far.
    annos: Mutex<Annotations>,
    /// Samples read for this evaluation (all selectors).
    loaded: usize,
    /// The longest time span one selector read covers (ms; for windowed reads, their sum).
    fetched_ms: i64,
    /// The widest window one step of a selector reads (range or lookback).
    window_ms: i64,
}

/// Points produced by the parallel workers of one node, against the sample budget: workers stop
/// producing once it is passed, and [`BudgetMeter::check`] then refuses the node.
///
/// Points are what the budget counts (as Prometheus does); a node's series also hold a slot per
/// step whether or not it has a point there (16 bytes each), so the slots are capped too, at
/// [`SLOTS_PER_SAMPLE`] times the budget: that bounds the memory of sparse series on fine grids
/// (a 1 ms subquery over a day) that hold few points but many slots.
///
/// The meter also carries the query's deadline and cancel flag, so that workers deep inside one
/// node stop when the query is over, not only between nodes.
#[derive(Debug)]
pub(super) struct BudgetMeter {
    held: std::sync::atomic::AtomicUsize,
    slots: std::sync::atomic::AtomicUsize,
    limit: usize,
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

/// Step slots a node may hold per sample of the budget.
pub(super) const SLOTS_PER_SAMPLE: usize = 4;

impl BudgetMeter {
    fn new(limit: usize, deadline: Option<Instant>, cancel: Option<Arc<AtomicBool>>) -> Self {
        Self {
            held: std::sync::atomic::AtomicUsize::new(0),
            slots: std::sync::atomic::AtomicUsize::new(0),
            limit,
            deadline,
            cancel,
        }
    }

    fn over_budget(&self) -> bool {
        self.held.load(Ordering::Relaxed) > self.limit
            || self.slots.load(Ordering::Relaxed) > self.limit.saturating_mul(SLOTS_PER_SAMPLE)
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() > d)
            || self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Counts `points` more points held in `slots` step slots.
    pub(super) fn add(&self, points: usize, slots: usize) {
        self.held.fetch_add(points, Ordering::Relaxed);
        self.slots.fetch_add(slots, Ordering::Relaxed);
    }

    /// True once the budget is passed or the query is over (workers should stop).
    pub(super) fn exceeded(&self) -> bool {
        self.over_budget() || self.out_of_time()
    }

    /// The budget, timeout or cancellation error when workers stopped for one.
    pub(super) fn check(&self) -> Result<()> {
        if self.over_budget() {
            return Err(Error::TooManySamples {
                phase: "expression evaluation",
                limit: self.limit,
            });
        }
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error::Canceled("query evaluation"));
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(Error::Timeout("query evaluation"));
        }
        Ok(())
    }
}

pub(super) fn exec(msg: impl Into<String>) -> Error {
    Error::Execution(msg.into())
}

fn key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// The key of the info series fetched for an `info()` call.
pub(super) fn info_key(call: &parser::Call) -> usize {
    call as *const parser::Call as usize
}

/// One read planned before evaluation: the series matching any of `groups` in `[start, end]`,
/// or, when `windows` is not empty, only in those (disjoint, ascending) sub-ranges.
#[derive(Debug)]
struct Fetch {
    key: usize,
    groups: Vec<Vec<fleetgate_store::Matcher>>,
    start: i64,
    end: i64,
    windows: Vec<(i64, i64)>,
    /// The window one step reads (range or lookback); 0 for `@`-pinned and `info` reads.
    back: i64,
}

/// What a [`Fetch`] selects, comparable: its matcher groups as `(name, op, value)`, each group
/// sorted (matcher order does not change what a group selects).
type FetchSig = Vec<Vec<(String, MatchOp, String)>>;

fn fetch_sig(groups: &[Vec<fleetgate_store::Matcher>]) -> FetchSig {
    let op = |o: MatchOp| match o {
        MatchOp::Equal => 0,
        MatchOp::NotEqual => 1,
        MatchOp::RegexMatch => 2,
        MatchOp::RegexNoMatch => 3,
    };
    groups
        .iter()
        .map(|g| {
            let mut v: Vec<(String, MatchOp, String)> = g
                .iter()
                .map(|m| (m.name.clone(), m.op, m.value.clone()))
                .collect();
            v.sort_by(|a, b| (&a.0, op(a.1), &a.2).cmp(&(&b.0, op(b.1), &b.2)));
            v
        })
        .collect()
}

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Fewest series one thread takes in series-parallel loops that evaluate `steps` steps per
/// series: about 32k evaluations per task, so small queries stay on one thread.
pub(super) fn par_min_series(steps: usize) -> usize {
    (32_768 / steps.max(1)).max(16)
}

/// The store's partition span: a range query's first chunk, and the shortest chunk of sub-hour
/// steps (later chunks are sized from the sample density seen).
const HOUR_MS: i64 = 3_600_000;

/// The last step of the chunk starting at step `first` that spans about `chunk_ms`. Chunks of an
/// hour or more end just before an hour boundary, the boundary of the store's partitions, so
/// that each chunk reads whole partition files (the previous chunk's reads are carried over).
fn chunk_last_step(grid: Grid, first: usize, chunk_ms: i64) -> usize {
    let n = grid.n();
    let start = grid.ts(first);
    let limit = if chunk_ms >= HOUR_MS {
        let boundary = start.saturating_add(chunk_ms).div_euclid(HOUR_MS) * HOUR_MS;
        boundary.saturating_sub(1).max(start)
    } else {
        start.saturating_add(chunk_ms.max(1) - 1)
    };
    let steps = (limit.saturating_sub(start) / grid.step.max(1)) as usize;
    first.saturating_add(steps).min(n - 1)
}

/// Folds the matrices of consecutive range-query chunks into one, series by label set.
#[derive(Debug, Default)]
struct MatrixMerge {
    index: HashMap<Labels, usize>,
    series: Vec<Series>,
}

impl MatrixMerge {
    fn push(&mut self, chunk: Vec<Series>) {
        for s in chunk {
            match self.index.get(&s.labels) {
                Some(&i) => self.series[i].points.extend(s.points),
                None => {
                    self.index.insert(s.labels.clone(), self.series.len());
                    self.series.push(s);
                }
            }
        }
    }

    fn finish(mut self) -> Value {
        self.series
            .sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
        Value::Matrix(self.series)
    }
}

/// Inner evaluation grid of a subquery whose outer evaluation references span `[lo, hi]`.
fn subquery_grid(lo: i64, hi: i64, range_ms: i64, step_ms: i64) -> Grid {
    let first = lo - range_ms;
    // Go integer division truncates toward zero; keep that to align exactly like Prometheus.
    let mut start = step_ms * (first / step_ms);
    if start < first {
        start += step_ms;
    }
    Grid {
        start,
        end: hi,
        step: step_ms,
    }
}

impl Engine {
    /// An engine with these options.
    pub fn new(opts: EngineOptions) -> Self {
        Self { opts }
    }

    /// The options in use.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at one instant.
    pub async fn instant<S: SeriesSource>(&self, src: &S, query: &str, t_ms: i64) -> Result<Value> {
        let expr = parse(query)?;
        self.instant_expr(src, &expr, t_ms).await
    }

    /// Evaluates a parsed expression at one instant.
    pub async fn instant_expr<S: SeriesSource>(
        &self,
        src: &S,
        expr: &Expr,
        t_ms: i64,
    ) -> Result<Value> {
        Ok(self.instant_expr_annotated(src, expr, t_ms).await?.0)
    }

    /// Like [`Engine::instant`], also returning the warnings and infos Prometheus would attach.
    pub async fn instant_annotated<S: SeriesSource>(
        &self,
        src: &S,
        query: &str,
        t_ms: i64,
    ) -> Result<(Value, Annotations)> {
        let expr = parse(query)?;
        self.instant_expr_annotated(src, &expr, t_ms).await
    }

    /// Like [`Engine::instant_expr`], also returning the warnings and infos.
    pub async fn instant_expr_annotated<S: SeriesSource>(
        &self,
        src: &S,
        expr: &Expr,
        t_ms: i64,
    ) -> Result<(Value, Annotations)> {
        let grid = Grid {
            start: t_ms,
            end: t_ms,
            step: 1,
        };
        let deadline = self.opts.timeout.map(|d| Instant::now() + d);
        let query = Grid { step: 0, ..grid };
        let ctx = self
            .prepare(src, expr, grid, query, deadline, &mut Vec::new())
            .await?;
        let val = ctx.eval(expr, grid)?;
        let v = ctx.finish_instant(val, t_ms)?;
        Ok((v, ctx.annos.into_inner()))
    }

    /// Evaluates `query` at `start, start+step, …, end` (ms) into a matrix.
    pub async fn range<S: SeriesSource>(
        &self,
        src: &S,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value> {
        let expr = parse(query)?;
        self.range_expr(src, &expr, start_ms, end_ms, step_ms).await
    }

    /// Evaluates a parsed expression as a range query.
    pub async fn range_expr<S: SeriesSource>(
        &self,
        src: &S,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value> {
        Ok(self
            .range_expr_annotated(src, expr, start_ms, end_ms, step_ms)
            .await?
            .0)
    }

    /// Like [`Engine::range`], also returning the warnings and infos Prometheus would attach.
    pub async fn range_annotated<S: SeriesSource>(
        &self,
        src: &S,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<(Value, Annotations)> {
        let expr = parse(query)?;
        self.range_expr_annotated(src, &expr, start_ms, end_ms, step_ms)
            .await
    }

    /// Like [`Engine::range_expr`], also returning the warnings and infos.
    pub async fn range_expr_annotated<S: SeriesSource>(
        &self,
        src: &S,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<(Value, Annotations)> {
        if step_ms <= 0 {
            return Err(Error::BadParam {
                param: "step",
                reason: "zero or negative query resolution step widths are not accepted".into(),
            });
        }
        if end_ms < start_ms {
            return Err(Error::BadParam {
                param: "end",
                reason: "end timestamp must not be before start time".into(),
            });
        }
        let grid = Grid {
            start: start_ms,
            end: end_ms,
            step: step_ms,
        };
        // Prometheus's rule: (end - start) / step may be at most the limit
        if (end_ms - start_ms) / step_ms > self.opts.max_points_per_series as i64 {
            return Err(Error::TooManyPoints {
                limit: self.opts.max_points_per_series,
            });
        }
        // Streamed in time chunks: each chunk reads only the samples its steps need, is
        // evaluated, and is folded into the result before the next is read. Every step of a
        // range query depends only on data near it (subquery grids are aligned to absolute
        // time, `@ start()`/`end()` refer to the whole query), so chunks give the same answer
        // as one pass while bounding memory and the sample limit per chunk, like Prometheus's
        // per-step peak.
        // The next chunk's reads (file decoding runs as tasks on the other runtime threads)
        // overlap with this chunk's evaluation.
        let deadline = self.opts.timeout.map(|d| Instant::now() + d);
        let mut out = MatrixMerge::default();
        let mut annos = Annotations::default();
        let one_pass = self.opts.range_chunk_samples == 0;
        let mut carry: Vec<Read> = Vec::new();
        let n = grid.n();
        let chunk_of = |first: usize, chunk_ms: i64| {
            let last = chunk_last_step(grid, first, chunk_ms);
            (
                last,
                Grid {
                    start: grid.ts(first),
                    end: grid.ts(last),
                    step: step_ms,
                },
            )
        };
        let (mut last, mut chunk) = chunk_of(0, if one_pass { i64::MAX } else { HOUR_MS });
        let mut ctx = self
            .prepare(src, expr, chunk, grid, deadline, &mut carry)
            .await?;
        loop {
            // Size the next chunk from this one's sample density. A chunk of k steps reads
            // (k - 1) steps plus the widest window (range + lookback + offsets) of every selector:
            // when the step is longer than the window, only the windows are read, one step per
            // chunk. Chunks of short steps span at least an hour, the store's partition, so no
            // file is decoded for a fraction of it.
            let chunk_ms = if one_pass {
                i64::MAX
            } else {
                let steps_read = (chunk.end - chunk.start) / step_ms.max(1) + 1;
                // ms read for the first step, and for each further one: only the windows when
                // steps are further apart than every window
                let (base, per_step) = if step_ms > ctx.window_ms {
                    (0, ctx.window_ms.max(1))
                } else {
                    (
                        (ctx.fetched_ms - (steps_read - 1) * step_ms).max(1),
                        step_ms,
                    )
                };
                let steps = if ctx.loaded == 0 {
                    steps_read.saturating_mul(4)
                } else {
                    let per_ms = ctx.loaded as f64 / ctx.fetched_ms.max(1) as f64;
                    let span = self.opts.range_chunk_samples as f64 / per_ms;
                    ((span - base as f64) / per_step as f64).clamp(1.0, 1e15) as i64
                };
                let ms = steps.saturating_mul(step_ms);
                if step_ms < HOUR_MS {
                    ms.max(HOUR_MS)
                } else {
                    ms
                }
            };
            let evaluate = |ctx: &Ctx<'_>, chunk: Grid| -> Result<Vec<Series>> {
                let val = ctx.eval(expr, chunk)?;
                ctx.finish_range(val, chunk)
            };
            let next = (last + 1 < n).then(|| chunk_of(last + 1, chunk_ms));
            let (series, next_ctx) = match next {
                None => (evaluate(&ctx, chunk)?, None),
                Some((next_last, next_chunk)) => {
                    let (next_ctx, series) = futures::join!(
                        self.prepare(src, expr, next_chunk, grid, deadline, &mut carry),
                        async { evaluate(&ctx, chunk) }
                    );
                    (series?, Some((next_last, next_chunk, next_ctx?)))
                }
            };
            out.push(series);
            let chunk_annos = std::mem::take(&mut *ctx.annos.lock());
            chunk_annos.warnings.into_iter().for_each(|w| annos.warn(w));
            chunk_annos.infos.into_iter().for_each(|i| annos.info(i));
            let Some((next_last, next_chunk, next_ctx)) = next_ctx else {
                break;
            };
            (last, chunk, ctx) = (next_last, next_chunk, next_ctx);
        }
        Ok((out.finish(), annos))
    }

    /// Reads every selector's series once, for the whole span evaluating `expr` over `grid`
    /// needs from it. `query` is the whole query (its start and end for `@ start()`/`end()`, its
    /// step, 0 for an instant query, for `step()`). `carry` holds the reads of the previous
    /// chunk of a range query: what they already hold is not read again, and on return it holds
    /// this chunk's reads.
    async fn prepare<'a, S: SeriesSource>(
        &'a self,
        src: &S,
        expr: &Expr,
        grid: Grid,
        query: Grid,
        deadline: Option<Instant>,
        carry: &mut Vec<Read>,
    ) -> Result<Ctx<'a>> {
        let mut ctx = Ctx {
            opts: &self.opts,
            data: HashMap::new(),
            query_start: query.start,
            query_end: query.end,
            query_step: query.step,
            deadline,
            annos: Mutex::new(Annotations::default()),
            loaded: 0,
            fetched_ms: 0,
            window_ms: 0,
        };
        let mut wanted: Vec<Fetch> = Vec::new();
        ctx.plan(expr, grid, &mut wanted)?;
        let prev = std::mem::take(carry);
        // Reads already made, by what they read: a selector repeated in the query (e.g.
        // `sum(rate(x[5m])) / count(rate(x[5m]))`) does not read the same files again.
        let done = carry;
        for Fetch {
            key,
            groups,
            start,
            end,
            windows,
            back,
        } in wanted
        {
            ctx.window_ms = ctx.window_ms.max(back);
            let sig = fetch_sig(&groups);
            let windowed = !windows.is_empty();
            if let Some(r) = done.iter().find(|r| {
                r.sig == sig && r.start == start && r.end == end && r.windowed == windowed
            }) {
                ctx.data.insert(key, Arc::clone(&r.series));
                continue;
            }
            // The previous chunk's read of the same series, if it covers this one's start: only
            // the part after it is read now (an `@`-pinned selector is not read again at all).
            let before = prev
                .iter()
                .filter(|r| !r.windowed && !windowed && r.sig == sig)
                .filter(|r| r.start <= start && start <= r.end.saturating_add(1))
                .filter(|r| r.end <= end || (r.start, r.end) == (start, end))
                .max_by_key(|r| r.end);
            let series = match before {
                _ if windowed => {
                    // every window at once: their files decode side by side
                    let reads = futures::future::try_join_all(
                        windows
                            .iter()
                            .map(|(a, b)| read_groups(src, &groups, *a, *b)),
                    )
                    .await?;
                    Arc::new(concat_reads(reads))
                }
                Some(r) if (r.start, r.end) == (start, end) => Arc::clone(&r.series),
                Some(r) => {
                    let fresh = read_groups(src, &groups, r.end + 1, end).await?;
                    Arc::new(splice(&r.series, start, fresh))
                }
                None => Arc::new(read_groups(src, &groups, start, end).await?),
            };
            let read_ms = if windowed {
                windows.iter().map(|(a, b)| b - a).sum()
            } else {
                end.saturating_sub(start)
            };
            let samples: usize = series.iter().map(|s| s.timestamps.len()).sum();
            ctx.loaded += samples;
            ctx.fetched_ms = ctx.fetched_ms.max(read_ms);
            if ctx.loaded > self.opts.max_samples {
                return Err(Error::TooManySamples {
                    phase: "series selection",
                    limit: self.opts.max_samples,
                });
            }
            ctx.data.insert(key, Arc::clone(&series));
            done.push(Read {
                sig,
                start,
                end,
                windowed,
                series,
            });
            ctx.check_deadline()?;
        }
        Ok(ctx)
    }
}

/// One selector read: the series matching `sig` with their samples in `[start, end]` (only in
/// the step windows within it when `windowed`).
#[derive(Debug)]
struct Read {
    sig: FetchSig,
    start: i64,
    end: i64,
    windowed: bool,
    series: Arc<Vec<SeriesData>>,
}

/// Reads of consecutive, disjoint time ranges joined series by series, sorted by labels.
fn concat_reads(reads: Vec<Vec<SeriesData>>) -> Vec<SeriesData> {
    let mut by_id: HashMap<u64, SeriesData> = HashMap::new();
    for read in reads {
        for s in read {
            match by_id.get_mut(&s.id) {
                Some(e) => {
                    e.timestamps.extend_from_slice(&s.timestamps);
                    e.values.extend_from_slice(&s.values);
                }
                None => {
                    by_id.insert(s.id, s);
                }
            }
        }
    }
    let mut series: Vec<SeriesData> = by_id.into_values().collect();
    series.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
    series
}

/// The series matching any of `groups` with their samples in `[start, end]`, sorted by labels.
async fn read_groups<S: SeriesSource>(
    src: &S,
    groups: &[Vec<fleetgate_store::Matcher>],
    start: i64,
    end: i64,
) -> Result<Vec<SeriesData>> {
    if end < start {
        return Ok(Vec::new());
    }
    if let [group] = groups {
        // one group (no `or` in braces): the source's answer is already sorted by labels
        let mut series = src.select(group, start, end).await?;
        if !series.is_sorted_by(|a, b| a.labels.as_slice() <= b.labels.as_slice()) {
            series.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
        }
        return Ok(series);
    }
    let mut by_id: HashMap<u64, SeriesData> = HashMap::new();
    {
        for group in groups {
            for s in src.select(group, start, end).await? {
                by_id.entry(s.id).or_insert(s);
            }
        }
    }
    let mut series: Vec<SeriesData> = by_id.into_values().collect();
    series.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
    Ok(series)
}

/// The samples at or after `from` of an earlier read followed by the `fresh` samples read after
/// it, series by series; both inputs and the output are sorted by labels.
fn splice(earlier: &[SeriesData], from: i64, fresh: Vec<SeriesData>) -> Vec<SeriesData> {
    let tail = |s: &SeriesData| {
        let lo = s.timestamps.partition_point(|t| *t < from);
        (lo < s.timestamps.len()).then(|| SeriesData {
            id: s.id,
            labels: s.labels.clone(),
            timestamps: s.timestamps[lo..].to_vec(),
            values: s.values[lo..].to_vec(),
        })
    };
    let mut out = Vec::with_capacity(earlier.len().max(fresh.len()));
    let mut old = earlier.iter().peekable();
    let mut new = fresh.into_iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.labels.as_slice().cmp(b.labels.as_slice()),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(t) = old.next().and_then(tail) {
                    out.push(t);
                }
            }
            std::cmp::Ordering::Greater => out.extend(new.next()),
            std::cmp::Ordering::Equal => {
                let (Some(a), Some(mut b)) = (old.next(), new.next()) else {
                    break;
                };
                match tail(a) {
                    Some(mut t) => {
                        t.timestamps.append(&mut b.timestamps);
                        t.values.append(&mut b.values);
                        out.push(t);
                    }
                    None => out.push(b),
                }
            }
        }
    }
    out
}

/// Parses a query, mapping parser errors to a client error.
pub(super) fn parse(query: &str) -> Result<Expr> {
    crate::parse::parse_expr(query)
}

impl Ctx<'_> {
    /// Raises a warning (full Prometheus text after `PromQL warning: `).
    pub(super) fn warn(&self, msg: impl AsRef<str>) {
        self.annos
            .lock()
            .warn(format!("PromQL warning: {}", msg.as_ref()));
    }

    /// Raises an info (full Prometheus text after `PromQL info: `).
    pub(super) fn info(&self, msg: impl AsRef<str>) {
        self.annos
            .lock()
            .info(format!("PromQL info: {}", msg.as_ref()));
    }

    fn check_deadline(&self) -> Result<()> {
        if self
            .opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error::Canceled("query evaluation"));
        }
        match self.deadline {
            Some(d) if Instant::now() > d => Err(Error::Timeout("query evaluation")),
            _ => Ok(()),
        }
    }

    pub(super) fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Collects the reads of every selector evaluated at the steps of `grid`.
    fn plan(&self, expr: &Expr, grid: Grid, out: &mut Vec<Fetch>) -> Result<()> {
        let (start, end) = (grid.start, grid.end);
        let span = |vs: &VectorSelector, back: i64, out: &mut Vec<Fetch>| -> Result<()> {
            let (s, e) = match self.at_ms(&vs.at) {
                Some(a) => (a, a),
                None => (start, end),
            };
            let off = offset_ms(&vs.offset);
            // steps further apart than the window: read only the windows
            let windows = if vs.at.is_none() && grid.n() > 1 && grid.step > back {
                (0..grid.n())
                    .map(|i| (grid.ts(i) - off - back, grid.ts(i) - off))
                    .collect()
            } else {
                Vec::new()
            };
            out.push(Fetch {
                key: key(vs),
                groups: selector_matchers(vs)?,
                start: s - off - back,
                end: e - off,
                windows,
                back: if vs.at.is_none() { back } else { 0 },
            });
            Ok(())
        };
        match expr {
            Expr::VectorSelector(vs) => span(vs, self.opts.lookback_ms, out)?,
            Expr::MatrixSelector(ms) => span(&ms.vs, ms.range.as_millis() as i64, out)?,
            Expr::Subquery(sq) => {
                let (s, e) = match self.at_ms(&sq.at) {
                    Some(a) => (a, a),
                    None => (start, end),
                };
                let off = offset_ms(&sq.offset);
                let step = self.subquery_step(sq);
                let g = subquery_grid(s - off, e - off, sq.range.as_millis() as i64, step);
                self.plan(&sq.expr, g, out)?;
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, grid, out)?;
                }
                self.plan(&a.expr, grid, out)?;
            }
            Expr::Unary(u) => self.plan(&u.expr, grid, out)?,
            Expr::Binary(b) => {
                self.plan(&b.lhs, grid, out)?;
                self.plan(&b.rhs, grid, out)?;
            }
            Expr::Paren(p) => self.plan(&p.expr, grid, out)?,
            Expr::Call(c) if c.func.name == "info" => {
                if let Some(base) = c.args.args.first() {
                    self.plan(base, grid, out)?;
                }
                let sel = c.args.args.get(1).and_then(|a| match a.as_ref() {
                    Expr::VectorSelector(vs) => Some(vs),
                    _ => None,
                });
                // info series are read at the base expression's (shifted) reference times
                let (a, b) = match c.args.args.first() {
                    Some(base) => (
                        functions::info_ref_time(self, base, start),
                        functions::info_ref_time(self, base, end),
                    ),
                    None => (start, end),
                };
                out.push(Fetch {
                    key: info_key(c),
                    groups: vec![functions::info_name_matchers(sel)?],
                    start: a.min(b) - self.opts.lookback_ms,
                    end: a.max(b),
                    windows: Vec::new(),
                    back: 0,
                });
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, grid, out)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }

    fn subquery_step(&self, sq: &parser::SubqueryExpr) -> i64 {
        match sq.step {
            Some(d) if !d.is_zero() => d.as_millis() as i64,
            _ => self.opts.default_subquery_step_ms,
        }
    }

    /// A meter of the points a node has produced so far, shared by its parallel workers.
    pub(super) fn meter(&self) -> BudgetMeter {
        BudgetMeter::new(
            self.opts.max_samples,
            self.deadline,
            self.opts.cancel.clone(),
        )
    }

    /// Checks the sample budget for a node holding `n` samples.
    pub(super) fn budget(&self, n: usize) -> Result<()> {
        if n > self.opts.max_samples {
            return Err(Error::TooManySamples {
                phase: "expression evaluation",
                limit: self.opts.max_samples,
            });
        }
        Ok(())
    }

    /// Evaluates `expr` at every time of `grid`.
    pub(super) fn eval(&self, expr: &Expr, grid: Grid) -> Result<Val> {
        self.check_deadline()?;
        let n = grid.n();
        let v = match expr {
            Expr::NumberLiteral(l) => Val::Scalar(vec![l.val; n]),
            Expr::StringLiteral(s) => Val::Str(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, grid)?,
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Val::Scalar(v) => Val::Scalar(v.into_iter().map(|x| -x).collect()),
                Val::Vector(vs) => Val::Vector(
                    vs.into_iter()
                        .map(|mut s| {
                            s.drop_name = true;
                            for v in s.vals.iter_mut().flatten() {
                                *v = -*v;
                            }
                            s
                        })
                        .collect(),
                ),
                other => {
                    return Err(exec(format!(
                        "unary expression only allowed on expressions of type scalar or instant vector, got {:?}",
                        other.type_name()
                    )));
                }
            },
            Expr::VectorSelector(vs) => Val::Vector(self.vector_select(vs, grid, false)?),
            Expr::MatrixSelector(ms) => {
                let refs = self.refs(&ms.vs.at, &ms.vs.offset, grid);
                Val::Range(RangeVal {
                    series: self.raw(&ms.vs),
                    range_ms: ms.range.as_millis() as i64,
                    refs,
                })
            }
            Expr::Subquery(sq) => Val::Range(self.subquery(sq, grid)?),
            Expr::Binary(b) => binary::eval(self, b, grid)?,
            Expr::Aggregate(a) => aggregate::eval(self, a, grid)?,
            Expr::Call(c) => functions::eval(self, c, grid)?,
            Expr::Extension(_) => return Err(exec("extension expressions are not supported")),
        };
        if let Val::Vector(vs) = &v {
            self.budget(vs.iter().map(|s| s.vals.iter().flatten().count()).sum())?;
        }
        Ok(v)
    }

    /// The window end (selector reference time) at each step of `grid`.
    pub(super) fn refs(
        &self,
        at: &Option<AtModifier>,
        off: &Option<Offset>,
        grid: Grid,
    ) -> Vec<i64> {
        let off = offset_ms(off);
        let at = self.at_ms(at);
        (0..grid.n())
            .map(|i| at.unwrap_or(grid.ts(i)) - off)
            .collect()
    }

    fn selected(&self, vs: &VectorSelector) -> &[SeriesData] {
        self.selected_by_key(key(vs))
    }

    pub(super) fn selected_by_key(&self, k: usize) -> &[SeriesData] {
        self.data.get(&k).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Raw samples of a selector without staleness markers.
    fn raw(&self, vs: &VectorSelector) -> Vec<Raw> {
        let Some(all) = self.data.get(&key(vs)) else {
            return Vec::new();
        };
        all.par_iter()
            .enumerate()
            .with_min_len(par_min_series(64))
            .map(|(i, s)| {
                if !s.values.iter().any(|v| is_stale_nan(*v)) {
                    return Raw {
                        data: RawData::Shared(Arc::clone(all), i),
                    };
                }
                let (ts, vs): (Vec<i64>, Vec<f64>) = s
                    .timestamps
                    .iter()
                    .zip(&s.values)
                    .filter(|(_, v)| !is_stale_nan(**v))
                    .map(|(t, v)| (*t, *v))
                    .unzip();
                Raw::owned(s.labels.clone(), ts, vs)
            })
            .collect()
    }

    /// An instant selector at every step: the newest sample in `(t - lookback, t]` unless it is a
    /// staleness marker. With `want_ts`, the value is the sample's timestamp in seconds.
    pub(super) fn vector_select(
        &self,
        vs: &VectorSelector,
        grid: Grid,
        want_ts: bool,
    ) -> Result<Vec<Ser>> {
        let refs = self.refs(&vs.at, &vs.offset, grid);
        self.select_at(self.selected(vs), &refs, want_ts)
    }

    /// The newest non-stale sample of each series in `(r - lookback, r]` for every `r` in `refs`.
    /// Refused with the sample budget as soon as the points produced pass it, before the rest
    /// of the series are even allocated (a 1 ms subquery grid over many series would otherwise
    /// allocate a point slot per series and step first).
    pub(super) fn select_at<'s>(
        &self,
        series: impl IntoIterator<Item = &'s SeriesData>,
        refs: &[i64],
        want_ts: bool,
    ) -> Result<Vec<Ser>> {
        let series: Vec<&SeriesData> = series.into_iter().collect();
        let held = self.meter();
        let out = series
            .par_iter()
            .with_min_len(par_min_series(refs.len()))
            .filter_map(|s| {
                if held.exceeded() {
                    return None;
                }
                // the slots are allocated whether or not the series has a point
                held.add(0, refs.len());
                let ser = self.select_one(s, refs, want_ts)?;
                held.add(ser.vals.iter().flatten().count(), 0);
                Some(ser)
            })
            .collect();
        held.check()?;
        Ok(out)
    }

    /// [`Ctx::select_at`] for one series; `None` when it has no value at any step.
    fn select_one(&self, s: &SeriesData, refs: &[i64], want_ts: bool) -> Option<Ser> {
        let lookback = self.opts.lookback_ms;
        let mut vals = Vec::with_capacity(refs.len());
        let mut any = false;
        for &r in refs {
            let idx = s.timestamps.partition_point(|t| *t <= r);
            let v = if idx == 0 {
                None
            } else {
                let (t, v) = (s.timestamps[idx - 1], s.values[idx - 1]);
                if t > r - lookback && !is_stale_nan(v) {
                    Some(if want_ts { t as f64 / 1000.0 } else { v })
                } else {
                    None
                }
            };
            any |= v.is_some();
            vals.push(v);
        }
        any.then(|| Ser {
            labels: s.labels.clone(),
            drop_name: false,
            vals,
        })
    }

    /// A subquery: the inner expression on its own aligned grid, as raw series.
    fn subquery(&self, sq: &parser::SubqueryExpr, grid: Grid) -> Result<RangeVal> {
        let refs = self.refs(&sq.at, &sq.offset, grid);
        let range_ms = sq.range.as_millis() as i64;
        let (Some(lo), Some(hi)) = (refs.iter().min(), refs.iter().max()) else {
            return Ok(RangeVal {
                series: Vec::new(),
                range_ms,
                refs,
            });
        };
        let inner = subquery_grid(*lo, *hi, range_ms, self.subquery_step(sq));
        // every inner step of every series may hold a point: refuse grids past the budget early
        self.budget(inner.n())?;
        let series = match self.eval(&sq.expr, inner)? {
            Val::Vector(vs) => vs
                .into_iter()
                .map(|s| {
                    let mut ts = Vec::new();
                    let mut vals = Vec::new();
                    for (i, v) in s.vals.iter().enumerate() {
                        if let Some(v) = v {
                            ts.push(inner.ts(i));
                            vals.push(*v);
                        }
                    }
                    let mut labels = s.labels;
                    if s.drop_name {
                        labels = drop_name(&labels);
                    }
                    Raw::owned(labels, ts, vals)
                })
                .collect(),
            Val::Scalar(v) => vec![Raw::owned(
                Labels::default(),
                (0..inner.n()).map(|i| inner.ts(i)).collect(),
                v,
            )],
            other => {
                return Err(exec(format!(
                    "subquery is only allowed on instant vector, got {} instead",
                    other.type_name()
                )));
            }
        };
        Ok(RangeVal {
            series,
            range_ms,
            refs,
        })
    }

    fn finish_instant(&self, val: Val, t_ms: i64) -> Result<Value> {
        Ok(match val {
            Val::Scalar(v) => Value::Scalar {
                t_ms,
                value: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::Str(s) => Value::String { t_ms, value: s },
            Val::Vector(vs) => {
                let mut out = Vec::new();
                for s in vs {
                    if let Some(Some(v)) = s.vals.first() {
                        let labels = if s.drop_name {
                            drop_name(&s.labels)
                        } else {
                            s.labels
                        };
                        out.push(Sample {
                            labels,
                            t_ms,
                            value: *v,
                        });
                    }
                }
                let mut seen: Vec<&Labels> = out.iter().map(|s| &s.labels).collect();
                seen.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
                if seen.windows(2).any(|w| w[0] == w[1]) {
                    return Err(exec("vector cannot contain metrics with the same labelset"));
                }
                Value::Vector(out)
            }
            Val::Range(r) => {
                let mut out = Vec::new();
                for s in &r.series {
                    let (lo, hi) = r.window(s, 0);
                    if lo < hi {
                        let (ts, vs) = (s.ts(), s.vs());
                        out.push(Series {
                            labels: s.labels().clone(),
                            points: (lo..hi).map(|j| (ts[j], vs[j])).collect(),
                        });
                    }
                }
                out.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
                Value::Matrix(out)
            }
        })
    }

    /// The series of a range query's result over `grid`, unsorted.
    fn finish_range(&self, val: Val, grid: Grid) -> Result<Vec<Series>> {
        let to_points = |vals: &[Option<f64>]| -> Vec<(i64, f64)> {
            vals.iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (grid.ts(i), v)))
                .collect()
        };
        let out = match val {
            Val::Scalar(v) => vec![Series {
                labels: Labels::default(),
                points: v
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (grid.ts(i), *v))
                    .collect(),
            }],
            Val::Vector(vs) => {
                let mut merged: HashMap<Labels, usize> = HashMap::new();
                let mut out: Vec<Series> = Vec::new();
                for s in vs {
                    let labels = if s.drop_name {
                        drop_name(&s.labels)
                    } else {
                        s.labels
                    };
                    let points = to_points(&s.vals);
                    if points.is_empty() {
                        continue;
                    }
                    match merged.get(&labels) {
                        Some(&i) => {
                            // Same labels after dropping names: fine unless both have a point at a step.
                            let existing = &mut out[i].points;
                            for p in points {
                                if existing.iter().any(|e| e.0 == p.0) {
                                    return Err(exec(
                                        "vector cannot contain metrics with the same labelset",
                                    ));
                                }
                                existing.push(p);
                            }
                            existing.sort_by_key(|p| p.0);
                        }
                        None => {
                            merged.insert(labels.clone(), out.len());
                            out.push(Series { labels, points });
                        }
                    }
                }
                out
            }
            other => {
                return Err(exec(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    other.type_name()
                )));
            }
        };
        Ok(out)
    }
}

/// `labels` without `__name__` and the metadata labels that go with it (`__type__`, `__unit__`).
pub(super) fn drop_name(labels: &Labels) -> Labels {
    let is_meta = |n: &str| matches!(n, "__name__" | "__type__" | "__unit__");
    if !labels.iter().any(|l| is_meta(&l.name)) {
        return labels.clone();
    }
    Labels::from_sorted(
        labels
            .iter()
            .filter(|l| !is_meta(&l.name))
            .cloned()
            .collect(),
    )
}

/// Collects per-step results into series keyed by labels, in first-seen order.
#[derive(Debug)]
pub(super) struct Merger {
    n: usize,
    index: HashMap<(Labels, bool), usize>,
    pub(super) out: Vec<Ser>,
}

impl Merger {
    pub(super) fn new(n: usize) -> Self {
        Self {
            n,
            index: HashMap::new(),
            out: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, labels: Labels, drop_name: bool, step: usize, v: f64) {
        let i = self.slot(labels, drop_name);
        self.set(i, step, v);
    }

    /// The output series for `labels` (created on first use); callers cache it to avoid hashing
    /// labels at every step.
    pub(super) fn slot(&mut self, labels: Labels, drop_name: bool) -> usize {
        let k = (labels, drop_name);
        match self.index.get(&k) {
            Some(i) => *i,
            None => {
                self.out.push(Ser {
                    labels: k.0.clone(),
                    drop_name,
                    vals: vec![None; self.n],
                });
                self.index.insert(k, self.out.len() - 1);
                self.out.len() - 1
            }
        }
    }

    /// Sets the value of output series `slot` at `step`.
    pub(super) fn set(&mut self, slot: usize, step: usize, v: f64) {
        self.out[slot].vals[step] = Some(v);
    }
}

#[cfg(test)]
mod tests;
