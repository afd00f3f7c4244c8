//! PromQL functions: range-vector functions (`rate`, `*_over_time`, …) and instant-vector functions.

use std::collections::HashMap;

use fleetgate_store::Matcher;
use fleetgate_store::{Label, Labels};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr, VectorSelector};
use rayon::prelude::*;

use super::aggregate::{Acc, fmt_float, quantile};
use super::engine::{Ctx, Grid, Merger, RangeVal, Ser, Val, exec, info_key, par_min_series};
use crate::error::Result;

fn unwrap_paren(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_paren(&p.expr),
        other => other,
    }
}

fn scalar_arg(v: &Val, what: &str) -> Result<Vec<f64>> {
    match v {
        Val::Scalar(s) => Ok(s.clone()),
        other => Err(exec(format!(
            "expected scalar for {what}, got {}",
            other.type_name()
        ))),
    }
}

fn str_arg(v: &Val) -> Result<String> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(exec(format!("expected string, got {}", other.type_name()))),
    }
}

fn vector_arg(v: Val) -> Result<Vec<Ser>> {
    match v {
        Val::Vector(s) => Ok(s),
        other => Err(exec(format!(
            "expected instant vector, got {}",
            other.type_name()
        ))),
    }
}

fn range_arg(v: Val) -> Result<RangeVal> {
    match v {
        Val::Range(r) => Ok(r),
        other => Err(exec(format!(
            "expected range vector, got {}",
            other.type_name()
        ))),
    }
}

/// Maps every value of every series; drops names.
fn map_values(series: Vec<Ser>, f: impl Fn(usize, f64) -> f64) -> Vec<Ser> {
    series
        .into_iter()
        .map(|mut s| {
            s.drop_name = true;
            for (i, v) in s.vals.iter_mut().enumerate() {
                if let Some(x) = v {
                    *x = f(i, *x);
                }
            }
            s
        })
        .collect()
}

/// Labels an `absent*` result gets: the equality matchers of its selector.
fn absent_labels(e: &Expr) -> Labels {
    let vs: Option<&VectorSelector> = match unwrap_paren(e) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let Some(vs) = vs else {
        return Labels::default();
    };
    let ms = &vs.matchers.matchers;
    let mut out: Vec<(String, String)> = Vec::new();
    for m in ms {
        if m.name == "__name__" || !matches!(m.op, MatchOp::Equal) {
            continue;
        }
        if ms.iter().filter(|o| o.name == m.name).count() == 1 {
            out.push((m.name.clone(), m.value.clone()));
        }
    }
    Labels::from_pairs(out)
}

/// Evaluates a function call over the grid.
pub(super) fn eval(ctx: &Ctx<'_>, call: &Call, grid: Grid) -> Result<Val> {
    let name = call.func.name;
    let n = grid.n();
    let arg_exprs: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    // functions that look at the expression itself, not only its value
    match name {
        "timestamp" => {
            if let Some(Expr::VectorSelector(vs)) = arg_exprs.first().map(|e| unwrap_paren(e)) {
                let s = ctx.vector_select(vs, grid, true)?;
                return Ok(Val::Vector(map_values(s, |_, v| v)));
            }
            let s = vector_arg(ctx.eval(arg_exprs[0], grid)?)?;
            return Ok(Val::Vector(map_values(s, |i, _| {
                grid.ts(i) as f64 / 1000.0
            })));
        }
        "time" => {
            return Ok(Val::Scalar(
                (0..n).map(|i| grid.ts(i) as f64 / 1000.0).collect(),
            ));
        }
        "pi" => return Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "info" => return info(ctx, call, grid),
        "start" => return Ok(Val::Scalar(vec![ctx.query_start as f64 / 1000.0; n])),
        "end" => return Ok(Val::Scalar(vec![ctx.query_end as f64 / 1000.0; n])),
        "step" => return Ok(Val::Scalar(vec![ctx.query_step as f64 / 1000.0; n])),
        "range" => {
            let r = (ctx.query_end - ctx.query_start) as f64 / 1000.0;
            return Ok(Val::Scalar(vec![r; n]));
        }
        _ => {}
    }
    let mut args = Vec::with_capacity(arg_exprs.len());
    for a in &arg_exprs {
        args.push(ctx.eval(a, grid)?);
    }
    if let Some(v) = range_function(name, &mut args, grid, ctx)? {
        return Ok(v);
    }
    if name == "absent" || name == "absent_over_time" {
        let empty_at: Vec<bool> = match args.remove(0) {
            Val::Vector(s) => (0..n)
                .map(|i| s.iter().all(|s| s.vals[i].is_none()))
                .collect(),
            Val::Range(r) => (0..n)
                .map(|i| {
                    r.series.iter().all(|s| {
                        let (lo, hi) = r.window(s, i);
                        lo == hi
                    })
                })
                .collect(),
            other => return Err(exec(format!("absent of {}", other.type_name()))),
        };
        let vals: Vec<Option<f64>> = empty_at.iter().map(|e| e.then_some(1.0)).collect();
        let out = if vals.iter().any(Option::is_some) {
            vec![Ser {
                labels: absent_labels(arg_exprs[0]),
                drop_name: false,
                vals,
            }]
        } else {
            Vec::new()
        };
        return Ok(Val::Vector(out));
    }
    if name == "min_of" || name == "max_of" {
        let cols: Vec<Vec<f64>> = args
            .iter()
            .map(|a| scalar_arg(a, name))
            .collect::<Result<_>>()?;
        return Ok(Val::Scalar(
            (0..n)
                .map(|i| {
                    // Go's math.Min/Max: NaN wins
                    let vals = cols.iter().map(|c| c[i]);
                    if cols.iter().any(|c| c[i].is_nan()) {
                        f64::NAN
                    } else if name == "min_of" {
                        vals.fold(f64::INFINITY, f64::min)
                    } else {
                        vals.fold(f64::NEG_INFINITY, f64::max)
                    }
                })
                .collect(),
        ));
    }
    instant_function(ctx, name, args, grid)
}

fn store_matcher(m: &promql_parser::label::Matcher) -> Result<Matcher> {
    let op = match m.op {
        MatchOp::Equal => fleetgate_store::MatchOp::Equal,
        MatchOp::NotEqual => fleetgate_store::MatchOp::NotEqual,
        MatchOp::Re(_) => fleetgate_store::MatchOp::RegexMatch,
        MatchOp::NotRe(_) => fleetgate_store::MatchOp::RegexNoMatch,
    };
    Ok(Matcher::new(op, m.name.clone(), m.value.clone())?)
}

/// The matchers selecting the info series of `info(v, sel)`: `sel`'s `__name__` matchers (default
/// `target_info`), restricted to `*_info` metrics.
pub(super) fn info_name_matchers(sel: Option<&VectorSelector>) -> Result<Vec<Matcher>> {
    let mut out = Vec::new();
    if let Some(vs) = sel {
        if let Some(name) = &vs.name {
            out.push(Matcher::equal("__name__", name.clone()));
        }
        for m in vs.matchers.matchers.iter().filter(|m| m.name == "__name__") {
            out.push(store_matcher(m)?);
        }
    }
    if out.is_empty() {
        out.push(Matcher::equal("__name__", "target_info"));
    }
    // only negative name matchers: any `*_info` metric they do not exclude
    if out.iter().all(|m| {
        matches!(
            m.op,
            fleetgate_store::MatchOp::NotEqual | fleetgate_store::MatchOp::RegexNoMatch
        )
    }) {
        out.push(Matcher::new(
            fleetgate_store::MatchOp::RegexMatch,
            "__name__",
            ".+_info",
        )?);
    }
    Ok(out)
}

/// The time the base expression of `info()` reads its samples at, for evaluation time `t`:
/// the `@` and `offset` of its (first) selector, through subqueries, functions and aggregations.
pub(super) fn info_ref_time(ctx: &Ctx<'_>, e: &Expr, t: i64) -> i64 {
    use super::engine::offset_ms;
    match unwrap_paren(e) {
        Expr::VectorSelector(vs) => ctx.at_ms(&vs.at).unwrap_or(t) - offset_ms(&vs.offset),
        Expr::MatrixSelector(ms) => ctx.at_ms(&ms.vs.at).unwrap_or(t) - offset_ms(&ms.vs.offset),
        Expr::Subquery(sq) => {
            let t = ctx.at_ms(&sq.at).unwrap_or(t) - offset_ms(&sq.offset);
            info_ref_time(ctx, &sq.expr, t)
        }
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .find(|a| has_selector(a))
            .map_or(t, |a| info_ref_time(ctx, a, t)),
        Expr::Aggregate(a) => info_ref_time(ctx, &a.expr, t),
        Expr::Unary(u) => info_ref_time(ctx, &u.expr, t),
        Expr::Binary(b) if has_selector(&b.lhs) => info_ref_time(ctx, &b.lhs, t),
        Expr::Binary(b) => info_ref_time(ctx, &b.rhs, t),
        _ => t,
    }
}

fn has_selector(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) | Expr::Subquery(_) => true,
        Expr::Paren(p) => has_selector(&p.expr),
        Expr::Call(c) => c.args.args.iter().any(|a| has_selector(a)),
        Expr::Aggregate(a) => has_selector(&a.expr),
        Expr::Unary(u) => has_selector(&u.expr),
        Expr::Binary(b) => has_selector(&b.lhs) || has_selector(&b.rhs),
        _ => false,
    }
}

/// The identifying labels an info series is joined on.
const INFO_IDENTIFYING: [&str; 2] = ["instance", "job"];

/// `info(v, {…})`: adds the data labels of the matching info series (by `instance` and `job`).
fn info(ctx: &Ctx<'_>, call: &Call, grid: Grid) -> Result<Val> {
    let n = grid.n();
    let base = vector_arg(ctx.eval(&call.args.args[0], grid)?)?;
    let sel = call.args.args.get(1).and_then(|a| match a.as_ref() {
        Expr::VectorSelector(vs) => Some(vs),
        _ => None,
    });
    let name_ms = info_name_matchers(sel)?;
    let data_ms: Vec<Matcher> = match sel {
        Some(vs) => vs
            .matchers
            .matchers
            .iter()
            .filter(|m| m.name != "__name__")
            .map(store_matcher)
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let infos_raw: Vec<&fleetgate_store::SeriesData> = ctx
        .selected_by_key(info_key(call))
        .iter()
        .filter(|s| data_ms.iter().all(|m| m.matches(&s.labels)))
        .collect();
    let refs: Vec<i64> = (0..n)
        .map(|i| info_ref_time(ctx, &call.args.args[0], grid.ts(i)))
        .collect();
    let vals = ctx.select_at(infos_raw.iter().copied(), &refs, false)?;
    let times = ctx.select_at(infos_raw.iter().copied(), &refs, true)?;
    let must_match = data_ms.iter().any(|m| !m.matches_empty());
    let mut merger = Merger::new(n);
    for b in &base {
        let is_info = name_ms.iter().all(|m| m.matches(&b.labels));
        for i in 0..n {
            let Some(v) = b.vals[i] else { continue };
            if is_info {
                merger.push(b.labels.clone(), b.drop_name, i, v);
                continue;
            }
            // the newest matching info series per info metric name
            let mut chosen: HashMap<&str, (f64, usize)> = HashMap::new();
            for (j, inf) in vals.iter().enumerate() {
                if inf.vals[i].is_none()
                    || !INFO_IDENTIFYING
                        .iter()
                        .all(|l| inf.labels.get(l) == b.labels.get(l))
                {
                    continue;
                }
                let t = times[j].vals[i].unwrap_or(f64::NEG_INFINITY);
                let e = chosen.entry(inf.labels.metric_name()).or_insert((t, j));
                if t > e.0 {
                    *e = (t, j);
                }
            }
            if chosen.is_empty() {
                if !must_match {
                    merger.push(b.labels.clone(), b.drop_name, i, v);
                }
                continue;
            }
            let mut pairs: Vec<Label> = b.labels.as_slice().to_vec();
            for (_, j) in chosen.values() {
                for l in vals[*j].labels.iter() {
                    let name = &*l.name;
                    if name == "__name__"
                        || INFO_IDENTIFYING.contains(&name)
                        || b.labels.get(name).is_some()
                        || (!data_ms.is_empty() && !data_ms.iter().any(|m| m.name == name))
                    {
                        continue;
                    }
                    if let Some(p) = pairs.iter().find(|p| *p.name == *name) {
                        if p.value != l.value {
                            return Err(exec(format!(
                                "conflicting label {name:?}: info metrics give {:?} and {:?}",
                                p.value, l.value
                            )));
                        }
                        continue;
                    }
                    pairs.push(l.clone());
                }
            }
            let labels = Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)));
            merger.push(labels, b.drop_name, i, v);
        }
    }
    Ok(Val::Vector(merger.out))
}

fn simple_math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn time_part(name: &str, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = fleetgate_store::partition::civil_from_days(days);
    let month_days = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_month" => f64::from(d),
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let before: u32 = month_days[..(m as usize - 1)].iter().sum();
            f64::from(before + d)
        }
        "days_in_month" => f64::from(month_days[m as usize - 1]),
        "month" => f64::from(m),
        "year" => y as f64,
        _ => f64::NAN,
    }
}

fn instant_function(ctx: &Ctx<'_>, name: &str, mut args: Vec<Val>, grid: Grid) -> Result<Val> {
    let n = grid.n();
    if let Some(f) = simple_math(name) {
        return Ok(Val::Vector(map_values(
            vector_arg(args.remove(0))?,
            |_, v| f(v),
        )));
    }
    match name {
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            if args.is_empty() {
                return Ok(Val::Vector(vec![Ser {
                    labels: Labels::default(),
                    drop_name: false,
                    vals: (0..n)
                        .map(|i| Some(time_part(name, grid.ts(i) as f64 / 1000.0)))
                        .collect(),
                }]));
            }
            let s = vector_arg(args.remove(0))?;
            Ok(Val::Vector(map_values(s, |_, v| time_part(name, v))))
        }
        "round" => {
            let to = match args.get(1) {
                Some(v) => scalar_arg(v, "round")?,
                None => vec![1.0; n],
            };
            Ok(Val::Vector(map_values(
                vector_arg(args.remove(0))?,
                |i, v| {
                    let inv = 1.0 / to[i];
                    (v * inv + 0.5).floor() / inv
                },
            )))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let a = scalar_arg(&args[1], name)?;
            let b = match args.get(2) {
                Some(v) => Some(scalar_arg(v, name)?),
                None => None,
            };
            let s = vector_arg(args.remove(0))?;
            // Go's math.Max/Min: a NaN on either side gives NaN
            let go_max = |x: f64, y: f64| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            };
            let go_min = |x: f64, y: f64| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            };
            let mut out = map_values(s, |i, v| match name {
                "clamp_min" => go_max(v, a[i]),
                "clamp_max" => go_min(v, a[i]),
                _ => {
                    let hi = b.as_ref().map_or(f64::NAN, |b| b[i]);
                    go_max(a[i], go_min(hi, v))
                }
            });
            if let (true, Some(b)) = (name == "clamp", &b) {
                {
                    for s in &mut out {
                        for (i, v) in s.vals.iter_mut().enumerate() {
                            if a[i] > b[i] {
                                *v = None;
                            }
                        }
                    }
                }
            }
            Ok(Val::Vector(
                out.into_iter()
                    .filter(|s| s.vals.iter().any(Option::is_some))
                    .collect(),
            ))
        }
        "vector" => {
            let s = scalar_arg(&args[0], "vector")?;
            Ok(Val::Vector(vec![Ser {
                labels: Labels::default(),
                drop_name: false,
                vals: s.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let s = vector_arg(args.remove(0))?;
            Ok(Val::Scalar(
                (0..n)
                    .map(|i| {
                        let mut it = s.iter().filter_map(|s| s.vals[i]);
                        match (it.next(), it.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "sort" | "sort_desc" => {
            sort_in_range_warning(ctx);
            let mut s = vector_arg(args.remove(0))?;
            if n == 1 {
                let desc = name == "sort_desc";
                s.sort_by(|a, b| {
                    let (x, y) = (a.vals[0].unwrap_or(f64::NAN), b.vals[0].unwrap_or(f64::NAN));
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
            }
            Ok(Val::Vector(s))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            sort_in_range_warning(ctx);
            let names: Vec<String> = args[1..].iter().map(str_arg).collect::<Result<_>>()?;
            let mut s = vector_arg(args.remove(0))?;
            s.sort_by(|a, b| {
                for l in &names {
                    let o =
                        natural_cmp(a.labels.get(l).unwrap_or(""), b.labels.get(l).unwrap_or(""));
                    if o != std::cmp::Ordering::Equal {
                        return if name == "sort_by_label" {
                            o
                        } else {
                            o.reverse()
                        };
                    }
                }
                let o = a.labels.as_slice().cmp(b.labels.as_slice());
                if name == "sort_by_label" {
                    o
                } else {
                    o.reverse()
                }
            });
            Ok(Val::Vector(s))
        }
        "label_replace" => {
            let dst = str_arg(&args[1])?;
            let repl = str_arg(&args[2])?;
            let src = str_arg(&args[3])?;
            let re_text = str_arg(&args[4])?;
            let re = regex::Regex::new(&format!("^(?s:{re_text})$")).map_err(|e| {
                exec(format!(
                    "invalid regular expression in label_replace(): {re_text}: {e}"
                ))
            })?;
            if !valid_label_name(&dst) {
                return Err(exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let s = vector_arg(args.remove(0))?;
            let out = s
                .into_iter()
                .map(|mut s| {
                    let v = s.labels.get(&src).unwrap_or("").to_string();
                    if let Some(caps) = re.captures(&v) {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        s.labels = set_label(&s.labels, &dst, &res);
                        if dst == "__name__" {
                            s.drop_name = false;
                        }
                    }
                    s
                })
                .collect();
            Ok(Val::Vector(out))
        }
        "label_join" => {
            let dst = str_arg(&args[1])?;
            let sep = str_arg(&args[2])?;
            let srcs: Vec<String> = args[3..].iter().map(str_arg).collect::<Result<_>>()?;
            if !valid_label_name(&dst) {
                return Err(exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let s = vector_arg(args.remove(0))?;
            Ok(Val::Vector(
                s.into_iter()
                    .map(|mut s| {
                        let joined: Vec<&str> =
                            srcs.iter().map(|l| s.labels.get(l).unwrap_or("")).collect();
                        s.labels = set_label(&s.labels, &dst, &joined.join(&sep));
                        if dst == "__name__" {
                            s.drop_name = false;
                        }
                        s
                    })
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let q = scalar_arg(&args[0], "histogram_quantile")?;
            let s = vector_arg(args.remove(1))?;
            Ok(Val::Vector(histogram_quantile(ctx, &q, &s, n)))
        }
        "histogram_quantiles" => {
            let label = str_arg(&args[1])?;
            let qs: Vec<Vec<f64>> = args[2..]
                .iter()
                .map(|a| scalar_arg(a, name))
                .collect::<Result<_>>()?;
            let s = vector_arg(args.remove(0))?;
            let mut out = Vec::new();
            for q in &qs {
                for mut r in histogram_quantile(ctx, q, &s, n) {
                    if r.labels.get(&label).is_some() {
                        return Err(exec(format!(
                            "label {label:?} already present in histogram_quantiles() input"
                        )));
                    }
                    // one label value per quantile; a quantile that varies over steps uses its first
                    r.labels = set_label(&r.labels, &label, &quantile_label(q[0]));
                    out.push(r);
                }
            }
            Ok(Val::Vector(out))
        }
        other => Err(exec(format!("function {other}() is not supported yet"))),
    }
}

/// Compares strings with runs of digits compared as numbers (`4m5 < 4m600 < 4m1000`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (x, y) = (
                std::str::from_utf8(&a[si..i])
                    .unwrap_or("")
                    .trim_start_matches('0'),
                std::str::from_utf8(&b[sj..j])
                    .unwrap_or("")
                    .trim_start_matches('0'),
            );
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// A quantile as a label value: shortest form with at least one decimal (`0.0`, `0.25`, `1.0`).
fn quantile_label(q: f64) -> String {
    if q.is_nan() {
        return "NaN".into();
    }
    if q.is_infinite() {
        return if q > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{q}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn set_label(labels: &Labels, name: &str, value: &str) -> Labels {
    let mut pairs: Vec<Label> = labels
        .iter()
        .filter(|l| &*l.name != name)
        .cloned()
        .collect();
    pairs.push(Label::new(name, value));
    Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)))
}

/// Prometheus's warning for a quantile outside `[0, 1]`.
pub(super) fn check_quantile(ctx: &Ctx<'_>, q: f64) {
    if q.is_nan() || !(0.0..=1.0).contains(&q) {
        ctx.warn(format!(
            "quantile value should be between 0 and 1, got {}",
            fmt_float(q)
        ));
    }
}

/// Prometheus warns when `sort*` is used in a range query (its order is lost).
fn sort_in_range_warning(ctx: &Ctx<'_>) {
    if ctx.query_start != ctx.query_end {
        ctx.warn(
            "sort is ineffective for range queries since results are always ordered by labels",
        );
    }
}

fn histogram_quantile(ctx: &Ctx<'_>, q: &[f64], series: &[Ser], n: usize) -> Vec<Ser> {
    for &qi in q {
        check_quantile(ctx, qi);
    }
    let mut groups: HashMap<Labels, Vec<(f64, usize)>> = HashMap::new();
    let mut order: Vec<Labels> = Vec::new();
    for (j, s) in series.iter().enumerate() {
        let le = s.labels.get("le").unwrap_or("");
        let ub = match le.trim() {
            "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
            other => other.parse::<f64>().ok(),
        };
        let Some(ub) = ub else {
            if s.vals.iter().any(Option::is_some) {
                ctx.warn(format!(
                    "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}",
                    le,
                    s.labels.metric_name()
                ));
            }
            continue;
        };
        let g = Labels::from_sorted(
            s.labels
                .iter()
                .filter(|l| &*l.name != "le")
                .cloned()
                .collect(),
        );
        groups
            .entry(g.clone())
            .or_insert_with(|| {
                order.push(g);
                Vec::new()
            })
            .push((ub, j));
    }
    let mut out = Vec::new();
    for g in order {
        let Some(members) = groups.get(&g) else {
            continue;
        };
        let mut vals = vec![None; n];
        for (i, slot) in vals.iter_mut().enumerate() {
            let mut buckets: Vec<(f64, f64)> = members
                .iter()
                .filter_map(|(ub, j)| series[*j].vals[i].map(|c| (*ub, c)))
                .collect();
            if buckets.is_empty() {
                continue;
            }
            let (v, forced) = bucket_quantile(q[i], &mut buckets);
            if forced {
                ctx.info(format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                    series[members[0].1].labels.metric_name()
                ));
            }
            *slot = Some(v);
        }
        if vals.iter().any(Option::is_some) {
            out.push(Ser {
                labels: g,
                drop_name: true,
                vals,
            });
        }
    }
    out
}

/// Prometheus's `bucketQuantile` over classic `(upper bound, cumulative count)` buckets.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    let mut forced = false;
    if q.is_nan() {
        return (f64::NAN, forced);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, forced);
    }
    if q > 1.0 {
        return (f64::INFINITY, forced);
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (f64::NAN, forced);
    }
    // coalesce equal bounds
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(*b),
        }
    }
    // ensure monotonic counts
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            // like Prometheus, tiny float differences are fixed silently
            if (max - b.1) > 1e-12 * (max.abs() + b.1.abs()) {
                forced = true;
            }
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return (f64::NAN, forced);
    }
    let total = merged[merged.len() - 1].1;
    if total == 0.0 || total.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * total;
    let b = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return (merged[merged.len() - 2].0, forced);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return (merged[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Prometheus's `extrapolatedRate` (rate/increase/delta).
/// `no_resets`: the caller knows `vs` never decreases (skips the reset scan).
fn extrapolated_rate(
    ts: &[i64],
    vs: &[f64],
    (range_start, range_end): (i64, i64),
    range_ms: i64,
    counter: bool,
    is_rate: bool,
    no_resets: bool,
) -> Option<f64> {
    if vs.len() < 2 {
        return None;
    }
    let last = vs.len() - 1;
    let mut result = vs[last] - vs[0];
    if counter && !no_resets {
        let mut prev = 0.0;
        for v in vs {
            if *v < prev {
                result += prev;
            }
            prev = *v;
        }
    }
    let mut to_start = (ts[0] - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - ts[last]) as f64 / 1000.0;
    let sampled = (ts[last] - ts[0]) as f64 / 1000.0;
    let avg = sampled / last as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter && result > 0.0 && vs[0] >= 0.0 {
        let to_zero = sampled * (vs[0] / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Least squares fit of `vs` over `ts` (seconds relative to `intercept_ms`); Prometheus's rules.
fn linear_regression(ts: &[i64], vs: &[f64], intercept_ms: i64) -> (f64, f64) {
    let init = vs[0];
    if vs.iter().all(|v| *v == init) {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (mut sx, mut sy, mut sxy, mut sx2) = (
        Acc::default(),
        Acc::default(),
        Acc::default(),
        Acc::default(),
    );
    for (t, v) in ts.iter().zip(vs) {
        let x = (*t - intercept_ms) as f64 / 1000.0;
        sx.add(x);
        sy.add(*v);
        sxy.add(x * v);
        sx2.add(x * x);
    }
    let n = vs.len() as f64;
    let (sx, sy, sxy, sx2) = (sx.sum(), sy.sum(), sxy.sum(), sx2.sum());
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Functions over range vectors; `None` when `name` is not one.
fn range_function(
    name: &str,
    args: &mut Vec<Val>,
    grid: Grid,
    ctx: &Ctx<'_>,
) -> Result<Option<Val>> {
    let range_pos = match name {
        "quantile_over_time" => 1,
        "rate"
        | "irate"
        | "increase"
        | "delta"
        | "idelta"
        | "avg_over_time"
        | "min_over_time"
        | "max_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "changes"
        | "resets"
        | "deriv"
        | "predict_linear"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time"
        | "double_exponential_smoothing" => 0,
        _ => return Ok(None),
    };
    let param: Option<Vec<f64>> = match name {
        "quantile_over_time" => Some(scalar_arg(&args[0], name)?),
        "predict_linear" => Some(scalar_arg(&args[1], name)?),
        _ => None,
    };
    let factors: Option<(Vec<f64>, Vec<f64>)> = if name == "double_exponential_smoothing" {
        let sf = scalar_arg(&args[1], name)?;
        let tf = scalar_arg(&args[2], name)?;
        for (s, t) in sf.iter().zip(&tf) {
            if !(*s > 0.0 && *s < 1.0) {
                return Err(exec(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {s}"
                )));
            }
            if !(*t > 0.0 && *t < 1.0) {
                return Err(exec(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {t}"
                )));
            }
        }
        Some((sf, tf))
    } else {
        None
    };
    let r = range_arg(args.swap_remove(range_pos))?;
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let n = grid.n();
    // Series-parallel: each series' windows are independent. Annotations are raised afterwards,
    // in series order, so that their order does not depend on thread timing.
    let held = ctx.meter();
    let per_series: Vec<(Option<Ser>, usize, Vec<f64>)> = r
        .series
        .par_iter()
        .with_min_len(par_min_series(n))
        .map(|raw| {
            if held.exceeded() {
                return (None, 0, Vec::new());
            }
            let (sts, svs) = (raw.ts(), raw.vs());
            let mut vals = Vec::with_capacity(n);
            let mut any = false;
            let mut peak = 0usize;
            // one pass over the series for the reset check, only where it is used
            let no_resets =
                matches!(name, "rate" | "increase") && svs.windows(2).all(|p| p[1] >= p[0]);
            // window bounds slide forward with the (non-decreasing) reference times
            let mut win = (0usize, 0usize);
            let mut last_end = i64::MIN;
            // quantile parameters used at a step with a value and outside [0, 1]
            let mut bad_q: Vec<f64> = Vec::new();
            for i in 0..n {
                // a long series stops at its next 1,024 windows once the query is over
                // budget, past its deadline or cancelled
                if i % 1024 == 1023 && held.exceeded() {
                    return (None, 0, Vec::new());
                }
                let end = r.refs[i];
                let (lo, hi) = if end >= last_end {
                    let (mut lo, mut hi) = win;
                    while hi < sts.len() && sts[hi] <= end {
                        hi += 1;
                    }
                    while lo < hi && sts[lo] <= end - r.range_ms {
                        lo += 1;
                    }
                    (lo, hi)
                } else {
                    r.window(raw, i)
                };
                win = (lo, hi);
                last_end = end;
                peak = peak.max(hi - lo);
                let (ts, vs) = (&sts[lo..hi], &svs[lo..hi]);
                let p = param.as_ref().map_or(f64::NAN, |p| p[i]);
                let v = if vs.is_empty() {
                    None
                } else if let Some((sf, tf)) = &factors {
                    smoothing(vs, sf[i], tf[i])
                } else {
                    let w = Window {
                        ts,
                        vs,
                        end: r.refs[i],
                        step_t: grid.ts(i),
                        range_ms: r.range_ms,
                        no_resets,
                    };
                    range_value(name, &w, p)
                };
                if v.is_some()
                    && name == "quantile_over_time"
                    && (p.is_nan() || !(0.0..=1.0).contains(&p))
                    && !bad_q.iter().any(|q| q.to_bits() == p.to_bits())
                {
                    bad_q.push(p);
                }
                any |= v.is_some();
                vals.push(v);
            }
            let ser = any.then(|| Ser {
                labels: raw.labels().clone(),
                drop_name: !keep_name,
                vals,
            });
            held.add(
                ser.as_ref().map_or(0, |s| s.vals.iter().flatten().count()),
                n,
            );
            (ser, peak, bad_q)
        })
        .collect();
    held.check()?;
    let mut out = Vec::with_capacity(per_series.len());
    let mut peak = 0usize;
    for (ser, p, bad_q) in per_series {
        peak = peak.max(p);
        bad_q.into_iter().for_each(|q| check_quantile(ctx, q));
        let Some(ser) = ser else { continue };
        if matches!(name, "rate" | "increase") {
            let metric = ser.labels.metric_name();
            if !metric.is_empty()
                && !["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|sfx| metric.ends_with(sfx))
            {
                ctx.info(format!(
                    "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}"
                ));
            }
        }
        out.push(ser);
    }
    ctx.budget(peak.saturating_mul(r.series.len()))?;
    Ok(Some(Val::Vector(out)))
}

/// Prometheus's `double_exponential_smoothing` (formerly `holt_winters`).
fn smoothing(vs: &[f64], sf: f64, tf: f64) -> Option<f64> {
    if vs.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, vs[0]);
    let mut b = vs[1] - vs[0];
    for (i, v) in vs.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// One window of a range function.
#[derive(Debug)]
struct Window<'a> {
    ts: &'a [i64],
    vs: &'a [f64],
    /// Window end (the selector's reference time).
    end: i64,
    /// The evaluation step's time (for `predict_linear`).
    step_t: i64,
    range_ms: i64,
    /// The whole series never decreases, so no window holds a counter reset.
    no_resets: bool,
}

fn range_value(name: &str, w: &Window<'_>, p: f64) -> Option<f64> {
    let (ts, vs, end, range_ms) = (w.ts, w.vs, w.end, w.range_ms);
    let acc = || {
        let mut a = Acc::default();
        for v in vs {
            a.add(*v);
        }
        a
    };
    Some(match name {
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            let window = (end - range_ms, end);
            let no_resets = !counter || w.no_resets;
            return extrapolated_rate(ts, vs, window, range_ms, counter, name == "rate", no_resets);
        }
        "irate" | "idelta" => {
            if vs.len() < 2 {
                return None;
            }
            let (a, b) = (vs[vs.len() - 2], vs[vs.len() - 1]);
            let dt = (ts[ts.len() - 1] - ts[ts.len() - 2]) as f64 / 1000.0;
            if name == "idelta" {
                b - a
            } else {
                let d = if b < a { b } else { b - a };
                if dt == 0.0 {
                    return None;
                }
                d / dt
            }
        }
        "avg_over_time" => super::aggregate::avg(vs),
        "ts_of_last_over_time" => ts[ts.len() - 1] as f64 / 1000.0,
        "ts_of_first_over_time" => ts[0] as f64 / 1000.0,
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let mut best = 0;
            for (k, v) in vs.iter().enumerate() {
                let b = vs[best];
                let better = if name == "ts_of_min_over_time" {
                    *v <= b
                } else {
                    *v >= b
                };
                if better || b.is_nan() {
                    best = k;
                }
            }
            ts[best] as f64 / 1000.0
        }
        "sum_over_time" => acc().sum(),
        "count_over_time" => vs.len() as f64,
        "present_over_time" => 1.0,
        "last_over_time" => vs[vs.len() - 1],
        "first_over_time" => vs[0],
        "min_over_time" => vs
            .iter()
            .copied()
            .fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        "max_over_time" => vs
            .iter()
            .copied()
            .fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        "stdvar_over_time" => acc().stdvar(),
        "stddev_over_time" => acc().stdvar().sqrt(),
        "quantile_over_time" => quantile(p, &mut vs.to_vec()),
        "mad_over_time" if vs.iter().any(|v| v.is_nan()) => f64::NAN,
        "mad_over_time" => {
            let mut v = vs.to_vec();
            let med = quantile(0.5, &mut v);
            let mut dev: Vec<f64> = vs.iter().map(|x| (x - med).abs()).collect();
            quantile(0.5, &mut dev)
        }
        "changes" => vs
            .windows(2)
            .filter(|w| w[0] != w[1] && !(w[0].is_nan() && w[1].is_nan()))
            .count() as f64,
        "resets" => vs.windows(2).filter(|w| w[1] < w[0]).count() as f64,
        "deriv" => {
            if vs.len() < 2 {
                return None;
            }
            linear_regression(ts, vs, ts[0]).0
        }
        "predict_linear" => {
            if vs.len() < 2 {
                return None;
            }
            let (slope, intercept) = linear_regression(ts, vs, w.step_t);
            intercept + slope * p
        }
        _ => return None,
    })
}
