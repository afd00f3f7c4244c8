//! OpenCost's allocation and assets API over every cluster the principal may read:
//! `GET /allocation/compute` and `/allocation` (`window`, `aggregate`, `step`, `accumulate`,
//! `accumulateBy`, `includeIdle`, `shareIdle`, `idleByNode`, `splitIdle`, `shareNamespaces`,
//! `shareLabels`, `shareCost`, `shareSplit`, `shareTenancyCosts`, `filter`, `resolution`) and
//! `GET /assets` (`window`, `filter`), answered in OpenCost's JSON: `{"code":200,
//! "status":"success","data":[{<name>: allocation, …} per step]}` with its field names, floats
//! rounded to 5 decimals and NaN as null. Bad parameters get 400 naming the parameter.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::Error;
use fleetgate_query::cost::aggregate::{AggregateBy, AllocationQuery, Share, aggregate};
use fleetgate_query::cost::allocation::{Allocation, CostSet};
use fleetgate_query::cost::budget::{Budget, Interval, State as BudgetState, Status, Target};
use fleetgate_query::cost::filter::Filter;
use fleetgate_query::cost::materialize::CostTables;
use fleetgate_query::cost::pricing::{Pricing, sanitize_label};
use fleetgate_query::cost::window::{Period, Window, parse_step, parse_window, rfc3339};
use fleetgate_query::cost::{CostEngine, CostOptions};

use super::AppState;
use crate::prom_api::{Params, query_error};
use crate::reader::Reader;

fn bad(param: &'static str, reason: String) -> Error {
    Error::BadParam { param, reason }
}

/// `true|false` (and `1|0`); absent = `default`.
fn flag(p: &Params, name: &'static str, default: bool) -> Result<bool, Error> {
    match p.get(name).map(str::trim) {
        None | Some("") => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(bad(name, format!("{other:?} is not true or false"))),
    }
}

fn list(p: &Params, name: &str) -> Vec<String> {
    p.get(name)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The cost engine for the configuration in force (prices from `cost.pricing`, each cluster's
/// `pricing`, and the node overrides).
pub(crate) fn cost_engine(st: &AppState) -> CostEngine {
    let c = &st.config.cost;
    let pricing = Pricing::new(
        &c.pricing,
        &c.node_pricing,
        st.config
            .clusters
            .iter()
            .map(|k| (k.name.as_str(), &k.pricing, k.node_pricing.as_slice())),
    );
    CostEngine::new(
        Arc::new(pricing),
        CostOptions {
            resolution_ms: c.resolution.0.as_millis() as i64,
            max_hours: c.max_window_hours,
        },
    )
}

/// The window and how it is cut into sets.
fn window_and_period(p: &Params, now: i64) -> Result<(Window, Period), Error> {
    let w = match p.get("window").filter(|s| !s.trim().is_empty()) {
        Some(s) => parse_window(s, now)?,
        None => return Err(bad("window", "is required".into())),
    };
    let mut period = match p.get("step").filter(|s| !s.trim().is_empty()) {
        Some(s) => Period::Fixed(parse_step("step", s)?),
        None => Period::All,
    };
    if let Some(a) = p.get("accumulateBy").filter(|s| !s.trim().is_empty()) {
        if let Some(x) = Period::parse_accumulate(a).map_err(|e| match e {
            Error::BadParam { reason, .. } => bad("accumulateBy", reason),
            e => e,
        })? {
            period = x;
        }
    } else if let Some(a) = p.get("accumulate").filter(|s| !s.trim().is_empty())
        && let Some(x) = Period::parse_accumulate(a)?
    {
        period = x;
    }
    Ok((w, period))
}

fn share_mode(p: &Params, name: &'static str, default: Share) -> Result<Share, Error> {
    match p
        .get(name)
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") => Ok(default),
        Some("true" | "weighted") => Ok(Share::Weighted),
        Some("even" | "__even__") => Ok(Share::Even),
        Some("false" | "none") => Ok(Share::None),
        Some(other) => Err(bad(
            name,
            format!("{other:?}: expected true, false, weighted or even"),
        )),
    }
}

/// The allocation query the parameters describe.
fn allocation_query(p: &Params) -> Result<AllocationQuery, Error> {
    let aggregate = AggregateBy::parse_list(p.get("aggregate").unwrap_or(""))?;
    let mut share_labels = Vec::new();
    for pair in list(p, "shareLabels") {
        let Some((k, v)) = pair.split_once(':').or_else(|| pair.split_once('=')) else {
            return Err(bad("shareLabels", format!("{pair:?} is not label:value")));
        };
        share_labels.push((sanitize_label(k.trim()), v.trim().to_string()));
    }
    let share_cost_monthly = match p.get("shareCost").map(str::trim).filter(|s| !s.is_empty()) {
        None => 0.0,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => return Err(bad("shareCost", format!("{s:?} is not an amount ≥ 0"))),
        },
    };
    let share_split = match share_mode(p, "shareSplit", Share::Weighted)? {
        Share::None => Share::Weighted,
        s => s,
    };
    let filter = match p.get("filter").filter(|s| !s.trim().is_empty()) {
        Some(f) => Some(Filter::parse(f)?),
        None => None,
    };
    Ok(AllocationQuery {
        aggregate,
        include_idle: flag(p, "includeIdle", false)?,
        share_idle: share_mode(p, "shareIdle", Share::None)?,
        idle_by_node: flag(p, "idleByNode", false)?,
        split_idle: flag(p, "splitIdle", false)?,
        share_namespaces: list(p, "shareNamespaces"),
        share_labels,
        share_cost_monthly,
        share_split,
        share_tenancy: flag(p, "shareTenancyCosts", true)?,
        filter,
    })
}

/// Engine options of one cost request: the query limits, `resolution` if given.
pub(crate) fn engine_for(
    st: &AppState,
    p: &Params,
) -> Result<(CostEngine, fleetgate_query::promql::EngineOptions), Error> {
    let mut engine = cost_engine(st);
    if let Some(r) = p.get("resolution").filter(|s| !s.trim().is_empty()) {
        let ms = crate::config::parse_duration(r.trim())
            .map_err(|e| bad("resolution", e.to_string()))?
            .as_millis() as i64;
        if !(10_000..=3_600_000).contains(&ms) {
            return Err(bad("resolution", format!("{r:?}: between 10s and 1h")));
        }
        let mut o = engine.options().clone();
        o.resolution_ms = ms;
        engine = CostEngine::new(Arc::new(engine.pricing().clone()), o);
    }
    let opts = fleetgate_query::promql::EngineOptions {
        timeout: Some(st.config.query.timeout.0),
        max_samples: st.config.query.max_samples,
        ..fleetgate_query::promql::EngineOptions::default()
    };
    Ok((engine, opts))
}

/// The cost tables, once the store is open (503 before).
pub(crate) fn cost_tables(st: &AppState) -> Option<Arc<CostTables>> {
    st.core.get().map(|c| Arc::clone(&c.cost))
}

/// The answer before the store is open.
pub(crate) fn not_ready() -> Response {
    crate::prom_api::api_error(
        crate::prom_api::ErrorType::Unavailable,
        "the store is still opening",
    )
}

/// The materialization job, on the query pool: a pass every `cost.materialize_interval` until
/// shutdown; a failed pass is logged and retried at the next tick.
pub(crate) fn spawn_materializer(
    st: Arc<AppState>,
    tables: Arc<CostTables>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = st.config.cost.materialize_interval.0;
    let handle = st.pool.handle().clone();
    handle.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|v| *v) => break,
            }
            let engine = cost_engine(&st);
            let opts = fleetgate_query::promql::EngineOptions {
                timeout: Some(st.config.query.timeout.0),
                max_samples: st.config.query.max_samples,
                ..fleetgate_query::promql::EngineOptions::default()
            };
            let now = crate::http::now_ms();
            let pass = std::panic::AssertUnwindSafe(tables.run(&engine, &opts, now));
            match futures::FutureExt::catch_unwind(pass).await {
                Ok(Ok(s)) if s.hours + s.days + s.removed > 0 => {
                    tracing::debug!(hours = s.hours, days = s.days, removed = s.removed, pending = s.pending, "cost tables updated");
                    if s.pending > 0 {
                        tick.reset_immediately();
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cost materialization failed; retrying at the next tick"),
                Err(p) => tracing::error!(panic = %fleetgate_store::panic_message(&*p), "cost materialization panicked; retrying at the next tick"),
            }
            // budgets, fleet-wide, for /metrics
            let store = match st.core.get() {
                Some(c) => Arc::clone(&c.store),
                None => continue,
            };
            let fleet = fleetgate_query::scope::Scope::fleet();
            match evaluate_budgets(&st, &tables, &engine, &*store, &fleet, &opts, now).await {
                Ok(b) => *st.budgets.lock() = b,
                Err(e) => tracing::warn!(error = %e, "budget evaluation failed; keeping the last figures"),
            }
        }
    })
}

/// Every budget `scope` may see, evaluated at `now` (spend limited to the scope's clusters).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn evaluate_budgets<S: fleetgate_query::promql::SeriesSource + Sync>(
    st: &AppState,
    tables: &CostTables,
    engine: &CostEngine,
    src: &S,
    scope: &fleetgate_query::scope::Scope,
    opts: &fleetgate_query::promql::EngineOptions,
    now: i64,
) -> Result<Vec<Status>, Error> {
    let budgets: Vec<Budget> = st
        .config
        .cost
        .budgets(&st.config.clusters)
        .into_iter()
        .filter(|b| b.cluster().is_none_or(|c| scope.allows(c)))
        .collect();
    let mut by_period: std::collections::BTreeMap<(i64, i64), Vec<Budget>> = Default::default();
    for b in budgets {
        let p = b.period(now);
        by_period.entry((p.start_ms, p.end_ms)).or_default().push(b);
    }
    let mut out = Vec::new();
    for ((start, _), bs) in by_period {
        let w = Window {
            start_ms: start,
            end_ms: now.max(start),
        };
        let sets = tables
            .steps(engine, src, scope, opts, w, Period::All, now)
            .await?;
        let set = sets.into_iter().next().unwrap_or(CostSet {
            window: w,
            ..CostSet::default()
        });
        out.extend(bs.iter().map(|b| b.evaluate(&set, now)));
    }
    out.sort_by(|a, b| a.budget.name.cmp(&b.budget.name));
    Ok(out)
}

/// The SQL `budgets` table of one reader: every budget its scope may see, evaluated through its
/// view when the table is scanned (the same figures as `/api/v1/budgets`).
pub(crate) struct ReaderBudgets {
    st: Arc<AppState>,
    view: Arc<fleetgate_query::read::ReadView>,
}

impl ReaderBudgets {
    pub(crate) fn new(st: &Arc<AppState>, view: &Arc<fleetgate_query::read::ReadView>) -> Self {
        Self {
            st: Arc::clone(st),
            view: Arc::clone(view),
        }
    }
}

impl std::fmt::Debug for ReaderBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderBudgets")
            .field("scope", self.view.scope())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl fleetgate_query::sql::BudgetSource for ReaderBudgets {
    async fn budgets(&self) -> Result<Vec<Status>, Error> {
        let Some(tables) = cost_tables(&self.st) else {
            return Err(Error::Execution("the store is still opening".into()));
        };
        let (engine, opts) = engine_for(&self.st, &Params::parse(None, &[]))?;
        let now = crate::http::now_ms();
        let view = &*self.view;
        evaluate_budgets(&self.st, &tables, &engine, view, view.scope(), &opts, now).await
    }
}

/// GET `/api/v1/budgets`: every budget the principal may see, evaluated now.
pub(crate) async fn budgets(
    State(st): State<Arc<AppState>>,
    reader: Reader,
) -> Result<Response, Response> {
    let now = crate::http::now_ms();
    let (engine, mut opts) =
        engine_for(&st, &Params::parse(None, &[])).map_err(|e| query_error(&e))?;
    let tables = cost_tables(&st).ok_or_else(not_ready)?;
    let view = Arc::clone(&reader.view);
    let st2 = Arc::clone(&st);
    let r = reader
        .run(&st, "cost", move |cancel| async move {
            opts.cancel = Some(cancel);
            let list =
                evaluate_budgets(&st2, &tables, &engine, &*view, view.scope(), &opts, now).await?;
            let data: Vec<serde_json::Value> = list.iter().map(budget_json).collect();
            Ok::<_, Error>(serde_json::json!({"status": "success", "data": data}).to_string())
        })
        .await?;
    match r {
        Ok(body) => Ok(json_response(body)),
        Err(e) => Err(query_error(&e)),
    }
}

fn round5(f: f64) -> f64 {
    if f.is_finite() {
        (f * 100_000.0).round() / 100_000.0
    } else {
        0.0
    }
}

/// One budget's JSON.
pub(crate) fn budget_json(s: &Status) -> serde_json::Value {
    let b = &s.budget;
    let mut v = serde_json::json!({
        "name": b.name,
        "kind": b.kind(),
        "cluster": b.cluster(),
        "interval": match b.interval { Interval::Monthly => "monthly", Interval::Weekly => "weekly" },
        "resetDay": b.reset_day,
        "amount": b.amount,
        "window": {"start": rfc3339(s.period.start_ms), "end": rfc3339(s.period.end_ms)},
        "spend": round5(s.spend),
        "runRateHourly": round5(s.run_rate_hourly),
        "runRateMonthly": round5(s.run_rate_hourly * 730.0),
        "projected": round5(s.projected),
        "state": s.state.as_str(),
    });
    match &b.target {
        Target::Namespace { namespace, .. } => v["namespace"] = namespace.as_str().into(),
        Target::Label { key, value, .. } => v["label"] = serde_json::json!({ key: value }),
        Target::Cluster(_) => {}
    }
    v
}

/// The `fleetgate_budget_*` gauges.
pub(crate) fn budget_metrics(out: &mut String, list: &[Status]) {
    if list.is_empty() {
        return;
    }
    let labels = |s: &Status| {
        format!(
            "budget=\"{}\",kind=\"{}\",cluster=\"{}\"",
            crate::telemetry::esc(&s.budget.name),
            s.budget.kind(),
            crate::telemetry::esc(s.budget.cluster().unwrap_or(""))
        )
    };
    type Family = (&'static str, &'static str, fn(&Status) -> f64);
    let families: [Family; 5] = [
        (
            "fleetgate_budget_amount",
            "The budget's threshold for its period.",
            |s| s.budget.amount,
        ),
        (
            "fleetgate_budget_spend",
            "Spend from the period's start to the last evaluation.",
            |s| s.spend,
        ),
        (
            "fleetgate_budget_projected",
            "Spend projected at the period's end (spend + run rate × hours left).",
            |s| s.projected,
        ),
        (
            "fleetgate_budget_run_rate_hourly",
            "Spend per hour so far in the period.",
            |s| s.run_rate_hourly,
        ),
        (
            "fleetgate_budget_period_end_seconds",
            "When the period ends (Unix seconds).",
            |s| s.period.end_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, get) in families {
        crate::telemetry::family(out, name, "gauge", help);
        for s in list {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s), get(s));
        }
    }
    crate::telemetry::family(
        out,
        "fleetgate_budget_state",
        "gauge",
        "1 for the budget's state (ok, forecast_breach, breached), 0 for the others.",
    );
    for s in list {
        for st in [
            BudgetState::Ok,
            BudgetState::ForecastBreach,
            BudgetState::Breached,
        ] {
            let _ = writeln!(
                out,
                "fleetgate_budget_state{{{},state=\"{}\"}} {}",
                labels(s),
                st.as_str(),
                u8::from(s.state == st)
            );
        }
    }
}

fn json_response(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// GET `/allocation/compute`, `/allocation`.
pub(crate) async fn allocation(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let now = crate::http::now_ms();
    let parsed = window_and_period(&p, now)
        .and_then(|(w, period)| Ok((w, period, allocation_query(&p)?, engine_for(&st, &p)?)));
    let (w, period, aq, (engine, mut opts)) = parsed.map_err(|e| query_error(&e))?;
    let view = Arc::clone(&reader.view);
    let tables = cost_tables(&st).ok_or_else(not_ready)?;
    let r = reader
        .run(&st, "cost", move |cancel| async move {
            opts.cancel = Some(cancel);
            let sets = tables
                .steps(&engine, &*view, view.scope(), &opts, w, period, now)
                .await?;
            let mut out = String::from(r#"{"code":200,"status":"success","data":["#);
            for (i, set) in sets.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_set(&mut out, &aggregate(set, &aq));
            }
            out.push_str("]}");
            Ok::<_, Error>(out)
        })
        .await?;
    match r {
        Ok(body) => Ok(json_response(body)),
        Err(e) => Err(query_error(&e)),
    }
}

/// GET `/assets`: nodes, disks, load balancers and cluster management over the window.
pub(crate) async fn assets(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let now = crate::http::now_ms();
    let parsed = window_and_period(&p, now).and_then(|(w, period)| {
        let filter = match p.get("filter").filter(|s| !s.trim().is_empty()) {
            Some(f) => Some(Filter::parse(f)?),
            None => None,
        };
        Ok((w, period, filter, engine_for(&st, &p)?))
    });
    let (w, period, filter, (engine, mut opts)) = parsed.map_err(|e| query_error(&e))?;
    let view = Arc::clone(&reader.view);
    let tables = cost_tables(&st).ok_or_else(not_ready)?;
    let r = reader
        .run(&st, "cost", move |cancel| async move {
            opts.cancel = Some(cancel);
            let sets = tables
                .steps(&engine, &*view, view.scope(), &opts, w, period, now)
                .await?;
            let mut out = String::from(r#"{"code":200,"status":"success","data":["#);
            for (i, set) in sets.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_assets(&mut out, set, filter.as_ref());
            }
            out.push_str("]}");
            Ok::<_, Error>(out)
        })
        .await?;
    match r {
        Ok(body) => Ok(json_response(body)),
        Err(e) => Err(query_error(&e)),
    }
}

/// OpenCost's float: 5 decimals, NaN and infinities as null.
fn num(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    let r = (f * 100_000.0).round() / 100_000.0;
    let r = if r == 0.0 { 0.0 } else { r };
    match serde_json::Number::from_f64(r) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

fn string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

fn map(out: &mut String, m: &std::collections::BTreeMap<String, String>) {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, k);
        out.push(':');
        string(out, v);
    }
    out.push('}');
}

/// `{"k":…}` fields, in order; each value written by the closure.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }
    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, k);
        self.out.push(':');
        self.out
    }
    fn num(&mut self, k: &str, v: f64) {
        let o = self.key(k);
        num(o, v);
    }
    fn str(&mut self, k: &str, v: &str) {
        let o = self.key(k);
        string(o, v);
    }
    fn opt_str(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.str(k, v);
        }
    }
    fn raw(&mut self, k: &str, v: &str) {
        self.key(k).push_str(v);
    }
    fn end(self) {
        self.out.push('}');
    }
}

fn window_json(w: &Window) -> String {
    format!(
        r#"{{"start":"{}","end":"{}"}}"#,
        rfc3339(w.start_ms),
        rfc3339(w.end_ms)
    )
}

fn encode_set(out: &mut String, allocs: &[Allocation]) {
    out.push('{');
    for (i, a) in allocs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, &a.name);
        out.push(':');
        encode_allocation(out, a);
    }
    out.push('}');
}

/// One allocation, field for field as OpenCost's `AllocationJSON`.
fn encode_allocation(out: &mut String, a: &Allocation) {
    let mut o = Obj::new(out);
    o.str("name", &a.name);
    {
        let p = &a.properties;
        let buf = o.key("properties");
        let mut po = Obj::new(buf);
        po.opt_str("cluster", &p.cluster);
        po.opt_str("node", &p.node);
        po.opt_str("container", &p.container);
        po.opt_str("controller", &p.controller);
        po.opt_str("controllerKind", &p.controller_kind);
        po.opt_str("namespace", &p.namespace);
        po.opt_str("pod", &p.pod);
        if !p.services.is_empty() {
            let s = serde_json::Value::from(p.services.clone()).to_string();
            po.raw("services", &s);
        }
        po.opt_str("providerID", &p.provider_id);
        for (k, m) in [
            ("labels", &p.labels),
            ("annotations", &p.annotations),
            ("namespaceLabels", &p.namespace_labels),
            ("namespaceAnnotations", &p.namespace_annotations),
        ] {
            if !m.is_empty() {
                map(po.key(k), m);
            }
        }
        po.end();
    }
    o.raw("window", &window_json(&a.window));
    o.str("start", &rfc3339(a.start_ms));
    o.str("end", &rfc3339(a.end_ms));
    o.num("minutes", a.minutes);
    o.num("cpuCores", a.cpu_cores());
    o.num("cpuCoreRequestAverage", a.cpu_request_average());
    o.num("cpuCoreLimitAverage", a.cpu_limit_average());
    o.num("cpuCoreUsageAverage", a.cpu_usage_average());
    o.num("cpuCoreHours", a.cpu_core_hours);
    o.num("cpuCost", a.cpu_cost);
    o.num("cpuCostAdjustment", 0.0);
    o.num("cpuCostIdle", a.cpu_cost_idle);
    o.num("cpuEfficiency", a.cpu_efficiency());
    o.num("gpuCount", a.gpu_count());
    o.num("gpuHours", a.gpu_hours);
    o.num("gpuCost", a.gpu_cost);
    o.num("gpuCostAdjustment", 0.0);
    o.num("gpuCostIdle", a.gpu_cost_idle);
    o.num("gpuEfficiency", a.gpu_efficiency());
    o.num("networkTransferBytes", a.network_transfer_bytes);
    o.num("networkReceiveBytes", a.network_receive_bytes);
    o.num("networkCost", a.network_cost());
    o.num("networkCrossZoneCost", a.network_cross_zone_cost);
    o.num("networkCrossRegionCost", a.network_cross_region_cost);
    o.num("networkInternetCost", a.network_internet_cost);
    o.num("networkCostAdjustment", 0.0);
    o.num("loadBalancerCost", a.lb_cost);
    o.num("loadBalancerCostAdjustment", 0.0);
    o.num("pvBytes", a.pv_bytes());
    o.num("pvByteHours", a.pv_byte_hours);
    o.num("pvCost", a.pv_cost);
    {
        let buf = o.key("pvs");
        if a.pvs.is_empty() {
            buf.push_str("null");
        } else {
            let mut po = Obj::new(buf);
            for (k, v) in &a.pvs {
                let b = po.key(k);
                let mut x = Obj::new(b);
                x.num("byteHours", v.byte_hours);
                x.num("cost", v.cost);
                x.str("providerID", &v.provider_id);
                x.num("adjustment", 0.0);
                x.end();
            }
            po.end();
        }
    }
    o.num("pvCostAdjustment", 0.0);
    o.num("ramBytes", a.ram_bytes());
    o.num("ramByteRequestAverage", a.ram_request_average());
    o.num("ramByteLimitAverage", a.ram_limit_average());
    o.num("ramByteUsageAverage", a.ram_usage_average());
    o.num("ramByteHours", a.ram_byte_hours);
    o.num("ramCost", a.ram_cost);
    o.num("ramCostAdjustment", 0.0);
    o.num("ramCostIdle", a.ram_cost_idle);
    o.num("ramEfficiency", a.ram_efficiency());
    o.num("externalCost", a.external_cost);
    o.num("sharedCost", a.shared_cost);
    o.num("totalCost", a.total_cost());
    o.num("totalEfficiency", a.total_efficiency());
    if a.cpu_usage_max.is_some() || a.ram_usage_max.is_some() {
        let buf = o.key("rawAllocationOnly");
        let mut r = Obj::new(buf);
        r.num("cpuCoreUsageMax", a.cpu_usage_max.unwrap_or(0.0));
        r.num("ramByteUsageMax", a.ram_usage_max.unwrap_or(0.0));
        r.end();
    }
    o.raw("lbAllocations", "null");
    o.raw("gpuAllocation", "null");
    o.end();
}

/// Asset properties as the filter sees them (`cluster`, `node` = the asset's name, `providerID`,
/// `label[…]`).
fn asset_props(
    cluster: &str,
    name: &str,
    provider: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> fleetgate_query::cost::allocation::Properties {
    fleetgate_query::cost::allocation::Properties {
        cluster: cluster.into(),
        node: name.into(),
        provider_id: provider.into(),
        labels: labels.clone(),
        ..Default::default()
    }
}

fn encode_assets(out: &mut String, set: &CostSet, filter: Option<&Filter>) {
    let pass =
        |p: &fleetgate_query::cost::allocation::Properties| filter.is_none_or(|f| f.matches(p));
    let empty = std::collections::BTreeMap::new();
    let mut first = true;
    let mut entry = |out: &mut String, key: String| {
        if !first {
            out.push(',');
        }
        first = false;
        string(out, &key);
        out.push(':');
    };
    out.push('{');
    let hours = |m: f64| m / 60.0;
    for n in &set.nodes {
        if !pass(&asset_props(&n.cluster, &n.node, &n.provider_id, &n.labels)) {
            continue;
        }
        entry(out, format!("{}/{}", n.cluster, n.node));
        let mut o = Obj::new(out);
        o.str("type", "Node");
        {
            let b = o.key("properties");
            let mut p = Obj::new(b);
            p.str("category", "Compute");
            p.str("provider", "");
            p.str("providerID", &n.provider_id);
            p.str("cluster", &n.cluster);
            p.str("name", &n.node);
            p.end();
        }
        map(o.key("labels"), &n.labels);
        o.raw("window", &window_json(&n.window));
        o.str("start", &rfc3339(n.start_ms));
        o.str("end", &rfc3339(n.end_ms));
        o.num("minutes", n.minutes);
        o.str("nodeType", &n.instance_type);
        o.str(
            "pool",
            n.labels
                .get("eks_amazonaws_com_nodegroup")
                .or_else(|| n.labels.get("cloud_google_com_gke_nodepool"))
                .or_else(|| n.labels.get("karpenter_sh_nodepool"))
                .map_or("", String::as_str),
        );
        o.num("cpuCores", n.cpu_cores);
        o.num("ramBytes", n.ram_bytes);
        o.num("cpuCoreHours", n.cpu_cores * hours(n.minutes));
        o.num("ramByteHours", n.ram_bytes * hours(n.minutes));
        o.num("GPUHours", n.gpu_count * hours(n.minutes));
        o.raw(
            "cpuBreakdown",
            r#"{"idle":0,"other":0,"system":0,"user":0}"#,
        );
        o.raw(
            "ramBreakdown",
            r#"{"idle":0,"other":0,"system":0,"user":0}"#,
        );
        o.raw("preemptible", if n.preemptible { "1" } else { "0" });
        o.num("discount", n.discount);
        o.num("cpuCost", n.cpu_cost);
        o.num("gpuCost", n.gpu_cost);
        o.num("gpuCount", n.gpu_count);
        o.num("ramCost", n.ram_cost);
        o.num("adjustment", 0.0);
        o.raw("overhead", "null");
        o.num("totalCost", n.total_cost());
        o.end();
    }
    for d in &set.disks {
        if !pass(&asset_props(&d.cluster, &d.name, &d.provider_id, &empty)) {
            continue;
        }
        entry(out, format!("{}/{}", d.cluster, d.name));
        let mut o = Obj::new(out);
        o.str("type", "Disk");
        {
            let b = o.key("properties");
            let mut p = Obj::new(b);
            p.str("category", "Storage");
            p.str("providerID", &d.provider_id);
            p.str("cluster", &d.cluster);
            p.str("name", &d.name);
            p.end();
        }
        o.raw("window", &window_json(&d.window));
        o.num("minutes", d.minutes);
        o.num("byteHours", d.byte_hours);
        o.num("bytes", d.bytes);
        o.str("storageClass", &d.storage_class);
        o.str("volumeName", &d.name);
        o.str("claimName", &d.claim);
        o.str("claimNamespace", &d.claim_namespace);
        o.num("adjustment", 0.0);
        o.num("totalCost", d.cost);
        o.end();
    }
    for l in &set.load_balancers {
        if !pass(&asset_props(
            &l.cluster,
            &format!("{}/{}", l.namespace, l.service),
            "",
            &empty,
        )) {
            continue;
        }
        entry(out, format!("{}/{}/{}", l.cluster, l.namespace, l.service));
        let mut o = Obj::new(out);
        o.str("type", "LoadBalancer");
        {
            let b = o.key("properties");
            let mut p = Obj::new(b);
            p.str("category", "Network");
            p.str("cluster", &l.cluster);
            p.str("name", &format!("{}/{}", l.namespace, l.service));
            p.end();
        }
        o.raw("window", &window_json(&l.window));
        o.num("minutes", l.minutes);
        o.str("ip", &l.ip);
        o.num("adjustment", 0.0);
        o.num("totalCost", l.cost);
        o.end();
    }
    for m in &set.management {
        if !pass(&asset_props(&m.cluster, "", "", &empty)) {
            continue;
        }
        entry(out, format!("{}/__cluster_management__", m.cluster));
        let mut o = Obj::new(out);
        o.str("type", "ClusterManagement");
        {
            let b = o.key("properties");
            let mut p = Obj::new(b);
            p.str("category", "Management");
            p.str("cluster", &m.cluster);
            p.end();
        }
        o.raw("window", &window_json(&m.window));
        o.num("minutes", m.minutes);
        o.num("adjustment", 0.0);
        o.num("totalCost", m.cost);
        o.end();
    }
    out.push('}');
}
