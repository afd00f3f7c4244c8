//! Binary operators: arithmetic, comparison (with `bool`), set operators and vector matching.

use std::collections::{HashMap, HashSet};

use fleetgate_store::{Label, Labels};
use promql_parser::label::Labels as NameList;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::{Ctx, Grid, Merger, Ser, Val, exec};
use crate::error::Result;

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn is_set(op: &str) -> bool {
    matches!(op, "and" | "or" | "unless")
}

/// Applies `op` to two floats: the value and, for comparisons, whether the pair is kept.
pub(super) fn apply(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// Evaluates a binary expression over the grid.
pub(super) fn eval(ctx: &Ctx<'_>, b: &BinaryExpr, grid: Grid) -> Result<Val> {
    let op = b.op.to_string();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ctx.eval(&b.lhs, grid)?;
    let rhs = ctx.eval(&b.rhs, grid)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(l, r)| {
                    let (v, keep) = apply(&op, *l, *r);
                    if is_comparison(&op) {
                        f64::from(u8::from(keep))
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Val::Vector(l), Val::Scalar(r)) => {
            Ok(Val::Vector(vector_scalar(&op, l, &r, false, return_bool)))
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            Ok(Val::Vector(vector_scalar(&op, r, &l, true, return_bool)))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let n = grid.n();
            if is_set(&op) {
                Ok(Val::Vector(set_op(&op, b, l, r, n)))
            } else {
                Ok(Val::Vector(vector_vector(&op, b, l, r, n, return_bool)?))
            }
        }
        (l, r) => Err(exec(format!(
            "binary expression must contain only scalar and instant vector types, got {} {op} {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: &str,
    vec: Vec<Ser>,
    scalar: &[f64],
    scalar_left: bool,
    return_bool: bool,
) -> Vec<Ser> {
    let cmp = is_comparison(op);
    let mut out = Vec::with_capacity(vec.len());
    for mut s in vec {
        let mut any = false;
        for (i, slot) in s.vals.iter_mut().enumerate() {
            let Some(x) = *slot else { continue };
            let k = scalar[i];
            let (l, r) = if scalar_left { (k, x) } else { (x, k) };
            let (mut v, keep) = apply(op, l, r);
            if cmp && scalar_left {
                v = x;
            }
            *slot = if return_bool {
                Some(f64::from(u8::from(keep)))
            } else if keep {
                Some(v)
            } else {
                None
            };
            any |= slot.is_some();
        }
        if !cmp || return_bool {
            s.drop_name = true;
        }
        if any {
            out.push(s);
        }
    }
    out
}

/// The matching labels of a series: `on(...)` keeps the listed labels, `ignoring(...)` (or no
/// modifier) keeps all but the listed ones and `__name__`.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    let keep: Vec<Label> = match matching {
        Some(LabelModifier::Include(on)) => labels
            .iter()
            .filter(|l| on.labels.iter().any(|n| *n == *l.name))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(ign)) => labels
            .iter()
            .filter(|l| &*l.name != "__name__" && !ign.labels.iter().any(|n| *n == *l.name))
            .cloned()
            .collect(),
        None => labels
            .iter()
            .filter(|l| &*l.name != "__name__")
            .cloned()
            .collect(),
    };
    Labels::from_sorted(keep)
}

fn set_op(op: &str, b: &BinaryExpr, l: Vec<Ser>, r: Vec<Ser>, n: usize) -> Vec<Ser> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    let mut sig_ids: HashMap<Labels, usize> = HashMap::new();
    let mut sig_id = |labels: &Labels| {
        let next = sig_ids.len();
        *sig_ids.entry(signature(labels, matching)).or_insert(next)
    };
    let lsig: Vec<usize> = l.iter().map(|s| sig_id(&s.labels)).collect();
    let rsig: Vec<usize> = r.iter().map(|s| sig_id(&s.labels)).collect();
    let nsig = sig_ids.len();
    let mut out_l: Vec<Ser> = l.clone();
    let mut out_r: Vec<Ser> = if op == "or" {
        r.iter()
            .map(|s| Ser {
                labels: s.labels.clone(),
                drop_name: s.drop_name,
                vals: vec![None; n],
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut present = vec![false; nsig];
    for i in 0..n {
        present.iter_mut().for_each(|p| *p = false);
        // `or` looks at the left side's signatures, `and`/`unless` at the right side's
        let (side, sig) = if op == "or" { (&l, &lsig) } else { (&r, &rsig) };
        for (s, g) in side.iter().zip(sig) {
            if s.vals[i].is_some() {
                present[*g] = true;
            }
        }
        match op {
            "and" | "unless" => {
                let keep_if_present = op == "and";
                for (s, g) in out_l.iter_mut().zip(&lsig) {
                    if present[*g] != keep_if_present {
                        s.vals[i] = None;
                    }
                }
            }
            _ => {
                for ((dst, src), g) in out_r.iter_mut().zip(&r).zip(&rsig) {
                    if !present[*g] {
                        dst.vals[i] = src.vals[i];
                    }
                }
            }
        }
    }
    out_l
        .into_iter()
        .chain(out_r)
        .filter(|s| s.vals.iter().any(Option::is_some))
        .collect()
}

fn vector_vector(
    op: &str,
    b: &BinaryExpr,
    l: Vec<Ser>,
    r: Vec<Ser>,
    n: usize,
    return_bool: bool,
) -> Result<Vec<Ser>> {
    let modifier = b.modifier.as_ref();
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    if card == VectorMatchCardinality::ManyToMany {
        return Err(exec("many-to-many only allowed for set operators"));
    }
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    // the "many" side is `lhs` after this swap; values are swapped back for the operation
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    // signatures as small integers, computed once; the per-step work only indexes
    let mut sig_ids: HashMap<Labels, usize> = HashMap::new();
    let mut sigs: Vec<Labels> = Vec::new();
    let mut sig_id = |l: &Labels| {
        let g = signature(l, matching);
        *sig_ids.entry(g.clone()).or_insert_with(|| {
            sigs.push(g);
            sigs.len() - 1
        })
    };
    let msig: Vec<usize> = many.iter().map(|s| sig_id(&s.labels)).collect();
    let osig: Vec<usize> = one.iter().map(|s| sig_id(&s.labels)).collect();
    let include: Option<&NameList> = card.labels();
    let cmp = is_comparison(op);
    let drop = !cmp || return_bool;
    // fill modifiers: the first value fills a missing "many"-side (after the group_right swap)
    // series, the second a missing "one"-side series
    let (fill_many, fill_one) = modifier
        .map(|m| (m.fill_values.lhs, m.fill_values.rhs))
        .unwrap_or((None, None));
    let empty = Labels::default();
    let mut merger = Merger::new(n);
    // output slot of a (many, one) pair; `usize::MAX` stands for "no partner" (fill)
    let mut pair_slot: HashMap<(usize, usize), usize> = HashMap::new();
    let mut one_by_sig: Vec<Option<usize>> = vec![None; sigs.len()];
    let mut matched: Vec<bool> = vec![false; sigs.len()];
    let mut one_matched: Vec<bool> = vec![false; one.len()];
    let mut inserted: HashSet<usize> = HashSet::new();
    for i in 0..n {
        one_by_sig.iter_mut().for_each(|x| *x = None);
        matched.iter_mut().for_each(|x| *x = false);
        one_matched.iter_mut().for_each(|x| *x = false);
        inserted.clear();
        for (j, s) in one.iter().enumerate() {
            if s.vals[i].is_none() {
                continue;
            }
            if let Some(prev) = one_by_sig[osig[j]].replace(j) {
                let side = if one_to_many { "left" } else { "right" };
                return Err(exec(format!(
                    "found duplicate series for the match group {:?} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    sigs[osig[j]],
                    label_set(&one[prev].labels),
                    label_set(&s.labels)
                )));
            }
        }
        for (k, s) in many.iter().enumerate() {
            let Some(mv) = s.vals[i] else { continue };
            let Some(j) = one_by_sig[msig[k]] else {
                if let Some(f) = fill_one {
                    let (lv, rv) = if one_to_many { (f, mv) } else { (mv, f) };
                    let (v, keep) = apply(op, lv, rv);
                    if return_bool || keep {
                        let v = if return_bool {
                            f64::from(u8::from(keep))
                        } else {
                            v
                        };
                        let slot = *pair_slot.entry((k, usize::MAX)).or_insert_with(|| {
                            let labels = result_metric(&s.labels, &empty, matching, include);
                            merger.slot(labels, drop || s.drop_name)
                        });
                        merger.set(slot, i, v);
                    }
                }
                continue;
            };
            one_matched[j] = true;
            let Some(ov) = one[j].vals[i] else { continue };
            if include.is_none() {
                if matched[msig[k]] {
                    return Err(exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                matched[msig[k]] = true;
            }
            let (lv, rv) = if one_to_many { (ov, mv) } else { (mv, ov) };
            let (v, keep) = apply(op, lv, rv);
            let v = if return_bool {
                f64::from(u8::from(keep))
            } else if keep {
                v
            } else {
                continue;
            };
            let slot = *pair_slot.entry((k, j)).or_insert_with(|| {
                let labels = result_metric(&s.labels, &one[j].labels, matching, include);
                merger.slot(labels, drop || s.drop_name)
            });
            if include.is_some() && !inserted.insert(slot) {
                return Err(exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
            merger.set(slot, i, v);
        }
        if let Some(f) = fill_many {
            for (j, s) in one.iter().enumerate() {
                let Some(ov) = s.vals[i] else { continue };
                if one_matched[j] {
                    continue;
                }
                let (lv, rv) = if one_to_many { (ov, f) } else { (f, ov) };
                let (v, keep) = apply(op, lv, rv);
                if return_bool || keep {
                    let v = if return_bool {
                        f64::from(u8::from(keep))
                    } else {
                        v
                    };
                    let slot = *pair_slot
                        .entry((usize::MAX, j))
                        .or_insert_with(|| merger.slot(sigs[osig[j]].clone(), true));
                    merger.set(slot, i, v);
                }
            }
        }
    }
    Ok(merger.out)
}

fn result_metric(
    many: &Labels,
    one: &Labels,
    matching: Option<&LabelModifier>,
    include: Option<&NameList>,
) -> Labels {
    let mut pairs: Vec<Label> = many.as_slice().to_vec();
    if include.is_none() {
        match matching {
            Some(LabelModifier::Include(on)) => {
                pairs.retain(|l| on.labels.iter().any(|n| *n == *l.name));
            }
            Some(LabelModifier::Exclude(ign)) => {
                pairs.retain(|l| !ign.labels.iter().any(|n| *n == *l.name));
            }
            None => {}
        }
    }
    if let Some(inc) = include {
        for name in &inc.labels {
            pairs.retain(|l| *l.name != **name);
            if let Some(v) = one.get(name) {
                pairs.push(Label::new(name.as_str(), v));
            }
        }
    }
    Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)))
}

/// A label set as Prometheus prints it in errors (`labels.Labels.String()`): every label,
/// `__name__` included, as `{a="b", c="d"}`.
fn label_set(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|p| format!("{}={:?}", p.name, &*p.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}
