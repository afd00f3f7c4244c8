//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, `count_values`, …) with `by`/`without`.

use std::collections::HashMap;

use fleetgate_store::{Label, Labels};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{Ctx, Grid, Merger, Ser, Val, exec};
use crate::error::Result;

/// The grouping labels of a series under `by(...)`/`without(...)`.
fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        None => Labels::default(),
        Some(LabelModifier::Include(by)) => Labels::from_sorted(
            labels
                .iter()
                .filter(|l| by.labels.iter().any(|n| *n == *l.name))
                .cloned()
                .collect(),
        ),
        Some(LabelModifier::Exclude(without)) => Labels::from_sorted(
            labels
                .iter()
                .filter(|l| &*l.name != "__name__" && !without.labels.iter().any(|n| *n == *l.name))
                .cloned()
                .collect(),
        ),
    }
}

/// Prometheus's `quantile` over unsorted values (NaN sorts first).
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    values[lower as usize] * (1.0 - w) + values[upper as usize] * w
}

/// Prometheus's average: infinities of one sign win, mixed signs or NaN give NaN, and a sum that
/// overflows falls back to an incremental mean.
pub(super) fn avg(vals: &[f64]) -> f64 {
    let (mut pos, mut neg) = (false, false);
    for v in vals {
        if v.is_nan() {
            return f64::NAN;
        }
        pos |= *v == f64::INFINITY;
        neg |= *v == f64::NEG_INFINITY;
    }
    match (pos, neg) {
        (true, true) => return f64::NAN,
        (true, false) => return f64::INFINITY,
        (false, true) => return f64::NEG_INFINITY,
        _ => {}
    }
    let mut acc = Acc::default();
    for v in vals {
        acc.add(*v);
    }
    let s = acc.sum();
    if s.is_finite() {
        return s / vals.len() as f64;
    }
    let (mut mean, mut c) = (0.0f64, 0.0f64);
    for (k, v) in vals.iter().enumerate() {
        let n = (k + 1) as f64;
        let inc = v / n - (mean + c) / n;
        let t = mean + inc;
        if mean.abs() >= inc.abs() {
            c += (mean - t) + inc;
        } else {
            c += (inc - t) + mean;
        }
        mean = t;
    }
    mean + c
}

/// Kahan-compensated sum, falling back to an incremental mean on overflow for `avg`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Acc {
    sum: f64,
    c: f64,
    count: f64,
    mean: f64,
    m2: f64,
}

impl Acc {
    pub(super) fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if t.is_infinite() {
            self.c = 0.0;
        } else if self.sum.abs() >= v.abs() {
            self.c += (self.sum - t) + v;
        } else {
            self.c += (v - t) + self.sum;
        }
        self.sum = t;
        self.count += 1.0;
        let delta = v - self.mean;
        self.mean += delta / self.count;
        self.m2 += delta * (v - self.mean);
    }
    pub(super) fn sum(&self) -> f64 {
        if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        }
    }
    pub(super) fn stdvar(&self) -> f64 {
        if self.count == 0.0 {
            return f64::NAN;
        }
        self.m2 / self.count
    }
}

pub(super) fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Where a series falls in `[0, 1)` for `limit_ratio`: Prometheus's label hash (xxHash64 of
/// `name\xffvalue\xff…`) over `u64::MAX`.
fn ratio_offset(labels: &Labels) -> f64 {
    let mut b: Vec<u8> = Vec::with_capacity(256);
    for l in labels.iter() {
        b.extend_from_slice(l.name.as_bytes());
        b.push(0xff);
        b.extend_from_slice(l.value.as_bytes());
        b.push(0xff);
    }
    xxh64(&b) as f64 / u64::MAX as f64
}

/// xxHash64 with seed 0 (what Prometheus's `labels.Hash` uses).
fn xxh64(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    let round = |acc: u64, lane: u64| -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    };
    let merge = |acc: u64, v: u64| -> u64 { (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4) };
    let u64_at = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
    let len = data.len();
    let mut i = 0;
    let mut h = if len >= 32 {
        let (mut v1, mut v2, mut v3, mut v4) =
            (P1.wrapping_add(P2), P2, 0u64, 0u64.wrapping_sub(P1));
        while i + 32 <= len {
            v1 = round(v1, u64_at(i));
            v2 = round(v2, u64_at(i + 8));
            v3 = round(v3, u64_at(i + 16));
            v4 = round(v4, u64_at(i + 24));
            i += 32;
        }
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        merge(h, v4)
    } else {
        P5
    };
    h = h.wrapping_add(len as u64);
    while i + 8 <= len {
        h ^= round(0, u64_at(i));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        i += 8;
    }
    if i + 4 <= len {
        let w = u32::from_le_bytes(data[i..i + 4].try_into().unwrap_or([0; 4])) as u64;
        h ^= w.wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        i += 4;
    }
    while i < len {
        h ^= (data[i] as u64).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
        i += 1;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
#[test]
fn xxh64_known_values() {
    assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
    assert_eq!(xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
    assert_eq!(xxh64(b"abc"), 0x44BC_2CF5_AD77_0999);
    assert_eq!(
        xxh64(b"Nobody inspects the spammish repetition"),
        0xFBCE_A83C_8A37_8BF1
    );
}

/// Evaluates an aggregation over the grid.
pub(super) fn eval(ctx: &Ctx<'_>, a: &AggregateExpr, grid: Grid) -> Result<Val> {
    let op = a.op.to_string();
    let n = grid.n();
    let param = match &a.param {
        Some(p) => Some(ctx.eval(p, grid)?),
        None => None,
    };
    let series = match ctx.eval(&a.expr, grid)? {
        Val::Vector(v) => v,
        other => {
            return Err(exec(format!(
                "expected instant vector in aggregation, got {}",
                other.type_name()
            )));
        }
    };
    let modifier = a.modifier.as_ref();
    // Delayed name removal: grouping sees the name still present (so `by (__name__)` keeps it);
    // the output inherits the drop flag of its members.
    let inputs: Vec<Labels> = series.iter().map(|s| s.labels.clone()).collect();
    let scalar_param = |i: usize| -> f64 {
        match &param {
            Some(Val::Scalar(v)) => v[i],
            _ => f64::NAN,
        }
    };
    if op == "quantile" {
        for i in 0..n {
            super::functions::check_quantile(ctx, scalar_param(i));
        }
    }
    match op.as_str() {
        "limit_ratio" => {
            let mut out: Vec<Ser> = series
                .iter()
                .map(|s| Ser {
                    labels: s.labels.clone(),
                    drop_name: s.drop_name,
                    vals: vec![None; n],
                })
                .collect();
            let offsets: Vec<f64> = inputs.iter().map(ratio_offset).collect();
            for i in 0..n {
                let mut r = scalar_param(i);
                if r.is_nan() {
                    return Err(exec("Ratio value is NaN".to_string()));
                }
                if !(-1.0..=1.0).contains(&r) {
                    let capped = r.clamp(-1.0, 1.0);
                    ctx.warn(format!(
                        "ratio value should be between -1 and 1, got {}, capping to {}",
                        fmt_float(r),
                        fmt_float(capped)
                    ));
                    r = capped;
                }
                for (j, s) in series.iter().enumerate() {
                    let off = offsets[j];
                    let keep = if r >= 0.0 { off < r } else { off >= 1.0 + r };
                    if keep {
                        out[j].vals[i] = s.vals[i];
                    }
                }
            }
            out.retain(|s| s.vals.iter().any(Option::is_some));
            Ok(Val::Vector(out))
        }
        #[allow(clippy::needless_range_loop)] // `i` indexes every series' steps, not one slice
        "topk" | "bottomk" | "limitk" => {
            let mut keep: Vec<Vec<Option<f64>>> = vec![vec![None; n]; series.len()];
            let mut order: Vec<usize> = Vec::new();
            let mut in_order: Vec<bool> = vec![false; series.len()];
            // group ids once; per step only integer indexing
            let mut ids: HashMap<Labels, usize> = HashMap::new();
            let group_of: Vec<usize> = inputs
                .iter()
                .map(|l| {
                    let next = ids.len();
                    *ids.entry(group_labels(l, modifier)).or_insert(next)
                })
                .collect();
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
            let mut gorder: Vec<usize> = Vec::new();
            for i in 0..n {
                let k = scalar_param(i);
                if k.is_nan() {
                    return Err(exec("Parameter value is NaN".to_string()));
                }
                if k < 1.0 {
                    continue;
                }
                let k = if k > 9.0e18 { usize::MAX } else { k as usize };
                for m in members.iter_mut() {
                    m.clear();
                }
                gorder.clear();
                for (j, s) in series.iter().enumerate() {
                    if s.vals[i].is_some() {
                        let g = group_of[j];
                        if members[g].is_empty() {
                            gorder.push(g);
                        }
                        members[g].push(j);
                    }
                }
                for &g in &gorder {
                    let mut group = std::mem::take(&mut members[g]);
                    let val = |j: usize| series[j].vals[i].unwrap_or(f64::NAN);
                    if op != "limitk" {
                        let desc = op == "topk";
                        group.sort_by(|x, y| {
                            let (a, b) = (val(*x), val(*y));
                            // NaN always loses
                            match (a.is_nan(), b.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ if desc => b.total_cmp(&a),
                                _ => a.total_cmp(&b),
                            }
                        });
                    }
                    for j in group.into_iter().take(k) {
                        keep[j][i] = series[j].vals[i];
                        if !in_order[j] {
                            in_order[j] = true;
                            order.push(j);
                        }
                    }
                }
            }
            Ok(Val::Vector(
                order
                    .into_iter()
                    .map(|j| Ser {
                        labels: series[j].labels.clone(),
                        drop_name: series[j].drop_name,
                        vals: std::mem::take(&mut keep[j]),
                    })
                    .collect(),
            ))
        }
        "count_values" => {
            let Some(Val::Str(label)) = &param else {
                return Err(exec("count_values needs a string parameter"));
            };
            let mut merger = Merger::new(n);
            for i in 0..n {
                let mut counts: HashMap<Labels, f64> = HashMap::new();
                let mut order = Vec::new();
                for (j, s) in series.iter().enumerate() {
                    let Some(v) = s.vals[i] else { continue };
                    let mut g: Vec<Label> = group_labels(&inputs[j], modifier)
                        .into_vec()
                        .into_iter()
                        .filter(|l| *l.name != **label)
                        .collect();
                    g.push(Label::new(label.as_str(), fmt_float(v)));
                    let g = Labels::from_pairs(g.into_iter().map(|l| (l.name, l.value)));
                    let c = counts.entry(g.clone()).or_insert_with(|| {
                        order.push(g);
                        0.0
                    });
                    *c += 1.0;
                }
                for g in order {
                    let c = counts.get(&g).copied().unwrap_or(0.0);
                    merger.push(g, false, i, c);
                }
            }
            Ok(Val::Vector(merger.out))
        }
        _ => {
            // group ids once; per step only integer indexing
            let mut ids: HashMap<Labels, usize> = HashMap::new();
            let mut groups: Vec<Labels> = Vec::new();
            let group_of: Vec<usize> = inputs
                .iter()
                .map(|l| {
                    let g = group_labels(l, modifier);
                    *ids.entry(g.clone()).or_insert_with(|| {
                        groups.push(g);
                        groups.len() - 1
                    })
                })
                .collect();
            let has_name: Vec<bool> = groups.iter().map(|g| g.get("__name__").is_some()).collect();
            if let Some(out) = streaming(&op, &series, &group_of, &groups, &has_name, n) {
                return Ok(Val::Vector(out));
            }
            let mut merger = Merger::new(n);
            let mut slots: HashMap<(usize, bool), usize> = HashMap::new();
            let mut bufs: Vec<Vec<f64>> = vec![Vec::new(); groups.len()];
            let mut drops: Vec<bool> = vec![false; groups.len()];
            let mut order: Vec<usize> = Vec::new();
            for i in 0..n {
                order.clear();
                for (j, s) in series.iter().enumerate() {
                    if let Some(v) = s.vals[i] {
                        let g = group_of[j];
                        if bufs[g].is_empty() {
                            order.push(g);
                            drops[g] = false;
                        }
                        bufs[g].push(v);
                        drops[g] |= s.drop_name;
                    }
                }
                for &g in &order {
                    let v = aggregate_values(&op, &mut bufs[g], scalar_param(i))?;
                    bufs[g].clear();
                    let drop = drops[g] && has_name[g];
                    let slot = *slots
                        .entry((g, drop))
                        .or_insert_with(|| merger.slot(groups[g].clone(), drop));
                    merger.set(slot, i, v);
                }
            }
            Ok(Val::Vector(merger.out))
        }
    }
}

/// Most (group, step) cells the streaming aggregation allocates (17 bytes each).
const STREAMING_MAX_CELLS: usize = 8 << 20;

/// `sum`, `count`, `group`, `min` and `max` in one pass over each series' steps (series-major,
/// cache-friendly), with the same arithmetic as [`aggregate_values`]: each cell adds its members
/// in series order, Kahan-compensated for `sum`. Output series are ordered by their group's first
/// member. `None` for other operators or when the cells would take too much memory.
fn streaming(
    op: &str,
    series: &[Ser],
    group_of: &[usize],
    groups: &[Labels],
    has_name: &[bool],
    n: usize,
) -> Option<Vec<Ser>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Sum,
        Count,
        Group,
        Min,
        Max,
    }
    let kind = match op {
        "sum" => Kind::Sum,
        "count" => Kind::Count,
        "group" => Kind::Group,
        "min" => Kind::Min,
        "max" => Kind::Max,
        _ => return None,
    };
    let cells = groups.len().checked_mul(n)?;
    if cells > STREAMING_MAX_CELLS {
        return None;
    }
    const PRESENT: u8 = 1;
    const DROP: u8 = 2;
    // (value or running sum, Kahan compensation) and flags per (group, step)
    let mut acc: Vec<(f64, f64)> = vec![(0.0, 0.0); cells];
    let mut flags: Vec<u8> = vec![0; cells];
    let mut first: Vec<usize> = vec![usize::MAX; groups.len()];
    for (j, s) in series.iter().enumerate() {
        let g = group_of[j];
        first[g] = first[g].min(j);
        let base = g * n;
        let (acc, flags) = (&mut acc[base..base + n], &mut flags[base..base + n]);
        for ((v, a), f) in s.vals.iter().zip(acc.iter_mut()).zip(flags.iter_mut()) {
            let Some(v) = *v else { continue };
            let seen = *f & PRESENT != 0;
            match kind {
                Kind::Sum => {
                    let (sum, c) = a;
                    let t = *sum + v;
                    if t.is_infinite() {
                        *c = 0.0;
                    } else if sum.abs() >= v.abs() {
                        *c += (*sum - t) + v;
                    } else {
                        *c += (v - t) + *sum;
                    }
                    *sum = t;
                }
                Kind::Count => a.0 += 1.0,
                Kind::Group => a.0 = 1.0,
                Kind::Min => {
                    if !seen || a.0.is_nan() || v < a.0 {
                        a.0 = v;
                    }
                }
                Kind::Max => {
                    if !seen || a.0.is_nan() || v > a.0 {
                        a.0 = v;
                    }
                }
            }
            *f |= PRESENT | if s.drop_name { DROP } else { 0 };
        }
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|g| first[*g]);
    let mut out = Vec::new();
    for g in order {
        let base = g * n;
        // a group's name is dropped at the steps where a member asked for it (delayed removal)
        for drop in [false, true] {
            let mut any = false;
            let vals: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let f = flags[base + i];
                    let d = f & DROP != 0 && has_name[g];
                    (f & PRESENT != 0 && d == drop).then(|| {
                        any = true;
                        let (v, c) = acc[base + i];
                        if kind == Kind::Sum && !v.is_infinite() {
                            v + c
                        } else {
                            v
                        }
                    })
                })
                .collect();
            if any {
                out.push(Ser {
                    labels: groups[g].clone(),
                    drop_name: drop,
                    vals,
                });
            }
        }
    }
    Some(out)
}

fn aggregate_values(op: &str, vals: &mut [f64], param: f64) -> Result<f64> {
    let mut acc = Acc::default();
    for v in vals.iter() {
        acc.add(*v);
    }
    Ok(match op {
        "sum" => acc.sum(),
        "avg" => avg(vals),
        "count" => vals.len() as f64,
        "group" => 1.0,
        "min" => vals
            .iter()
            .copied()
            .fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        "max" => vals
            .iter()
            .copied()
            .fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        "stddev" => acc.stdvar().sqrt(),
        "stdvar" => acc.stdvar(),
        "quantile" => quantile(param, vals),
        other => return Err(exec(format!("unsupported aggregation {other:?}"))),
    })
}
