//! Filters a SQL query puts on a store table, turned into what the store's scan selects with:
//! label matchers (cluster, metric, label columns) and a time range.
//!
//! Every filter is pushed as *inexact*: DataFusion still applies it to the rows the scan returns,
//! so a pushed filter only has to select a superset of the rows it keeps. That keeps the
//! translation simple where SQL and PromQL differ (SQL's `~` is unanchored, PromQL's `=~` is
//! anchored; `label != 'x'` drops rows where the label is NULL, the `!=` matcher keeps them; time
//! bounds are widened to whole milliseconds).

use std::fmt;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use fleetgate_store::{MatchOp, Matcher};

/// The store column a SQL column stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnRole {
    /// A label (`cluster`, a metric table's label columns, `metric` as `__name__`).
    Label(String),
    /// The sample timestamp.
    Timestamp,
    /// Anything else (value, labels map, first/last sample): not pushed.
    Other,
}

/// What a scan reads: series matching every matcher, samples in `[start, end]` (ms, inclusive).
#[derive(Debug, Clone)]
pub(crate) struct ScanRequest {
    /// Joined with the reader's scope at read time.
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl Default for ScanRequest {
    fn default() -> Self {
        Self {
            matchers: Vec::new(),
            start: i64::MIN,
            end: i64::MAX,
        }
    }
}

impl fmt::Display for ScanRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("matchers={")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::RegexMatch => "=~",
                MatchOp::RegexNoMatch => "!~",
            };
            write!(f, "{}{op}{:?}", m.name, m.value)?;
        }
        f.write_str("}")?;
        let bound = |t: i64| -> String {
            if t == i64::MIN || t == i64::MAX {
                "∞".into()
            } else {
                t.to_string()
            }
        };
        write!(f, ", time_ms=[{}, {}]", bound(self.start), bound(self.end))
    }
}

/// Whether `filter` can be pushed at all (it narrows the scan) given the columns' roles.
pub(crate) fn pushable(filter: &Expr, role: &dyn Fn(&str) -> ColumnRole) -> bool {
    let mut req = ScanRequest::default();
    push_one(filter, role, &mut req).is_some()
}

/// The scan request of a conjunction of `filters` (those that cannot be pushed are skipped).
pub(crate) fn request(filters: &[Expr], role: &dyn Fn(&str) -> ColumnRole) -> ScanRequest {
    let mut req = ScanRequest::default();
    for f in filters {
        // a filter that does not translate narrows nothing; DataFusion applies it anyway
        let _ = push_one(f, role, &mut req);
    }
    req
}

/// Adds what `e` narrows to `req`; `None` (and `req` unchanged) when it does not translate.
fn push_one(e: &Expr, role: &dyn Fn(&str) -> ColumnRole, req: &mut ScanRequest) -> Option<()> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::And => {
            // both sides are conjuncts; push what translates of each
            let l = push_one(left, role, req);
            let r = push_one(right, role, req);
            l.or(r)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, op, lit) = match (column(left), column(right)) {
                (Some(c), None) => (c, *op, literal(right)?),
                (None, Some(c)) => (c, op.swap()?, literal(left)?),
                _ => return None,
            };
            match role(col) {
                ColumnRole::Label(name) => {
                    let v = string(&lit)?;
                    let m = match op {
                        Operator::Eq => Matcher::equal(name, v),
                        Operator::NotEq => Matcher::new(MatchOp::NotEqual, name, v).ok()?,
                        Operator::RegexMatch => unanchored(name, &v, false)?,
                        Operator::RegexIMatch => unanchored(name, &v, true)?,
                        _ => return None,
                    };
                    req.matchers.push(m);
                    Some(())
                }
                ColumnRole::Timestamp => {
                    let ms = timestamp_ms(&lit)?;
                    match op {
                        Operator::Gt | Operator::GtEq => req.start = req.start.max(ms.0),
                        Operator::Lt | Operator::LtEq => req.end = req.end.min(ms.1),
                        Operator::Eq => {
                            req.start = req.start.max(ms.0);
                            req.end = req.end.min(ms.1);
                        }
                        _ => return None,
                    }
                    Some(())
                }
                ColumnRole::Other => None,
            }
        }
        Expr::Between(b) if !b.negated => {
            let col = column(&b.expr)?;
            if role(col) != ColumnRole::Timestamp {
                return None;
            }
            let lo = timestamp_ms(&literal(&b.low)?)?;
            let hi = timestamp_ms(&literal(&b.high)?)?;
            req.start = req.start.max(lo.0);
            req.end = req.end.min(hi.1);
            Some(())
        }
        Expr::InList(l) if !l.negated && !l.list.is_empty() => {
            let ColumnRole::Label(name) = role(column(&l.expr)?) else {
                return None;
            };
            let mut alts = Vec::with_capacity(l.list.len());
            for item in &l.list {
                alts.push(regex::escape(&string(&literal(item)?)?));
            }
            req.matchers
                .push(Matcher::new(MatchOp::RegexMatch, name, alts.join("|")).ok()?);
            Some(())
        }
        Expr::IsNull(inner) => {
            // PromQL: a missing label and an empty one are the same
            let ColumnRole::Label(name) = role(column(inner)?) else {
                return None;
            };
            req.matchers.push(Matcher::equal(name, ""));
            Some(())
        }
        Expr::IsNotNull(inner) => {
            let ColumnRole::Label(name) = role(column(inner)?) else {
                return None;
            };
            req.matchers
                .push(Matcher::new(MatchOp::NotEqual, name, "").ok()?);
            Some(())
        }
        _ => None,
    }
}

/// SQL's `~` finds the pattern anywhere; the store's regex matchers are anchored.
fn unanchored(name: String, re: &str, case_insensitive: bool) -> Option<Matcher> {
    // the regex must compile on its own, or `.*(?:…).*` could change its meaning
    regex::Regex::new(re).ok()?;
    let flags = if case_insensitive { "(?i)" } else { "" };
    Matcher::new(MatchOp::RegexMatch, name, format!("{flags}.*(?:{re}).*")).ok()
}

/// The column a side of a comparison names (through casts DataFusion adds for coercion).
fn column(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column(&c.expr),
        Expr::TryCast(c) => column(&c.expr),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => {
            let v = literal(&c.expr)?;
            v.cast_to(c.field.data_type()).ok()
        }
        _ => None,
    }
}

fn string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => string(inner),
        _ => None,
    }
}

/// A timestamp literal as the whole milliseconds `(floor, ceil)` around it.
fn timestamp_ms(v: &ScalarValue) -> Option<(i64, i64)> {
    let (n, per_ms) = match v {
        ScalarValue::TimestampSecond(Some(s), _) => {
            return Some((s.checked_mul(1000)?, s.checked_mul(1000)?));
        }
        ScalarValue::TimestampMillisecond(Some(ms), _) => return Some((*ms, *ms)),
        ScalarValue::TimestampMicrosecond(Some(us), _) => (*us, 1_000),
        ScalarValue::TimestampNanosecond(Some(ns), _) => (*ns, 1_000_000),
        ScalarValue::Dictionary(_, inner) => return timestamp_ms(inner),
        _ => return None,
    };
    let floor = n.div_euclid(per_ms);
    let ceil = if n.rem_euclid(per_ms) == 0 {
        floor
    } else {
        floor + 1
    };
    Some((floor, ceil))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn roles(c: &str) -> ColumnRole {
        match c {
            "cluster" | "namespace" => ColumnRole::Label(c.into()),
            "metric" => ColumnRole::Label("__name__".into()),
            "timestamp" => ColumnRole::Timestamp,
            _ => ColumnRole::Other,
        }
    }

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ms * 1_000_000 + 1),
            None,
        ))
    }

    #[test]
    fn labels_time_and_the_rest() {
        let filters = vec![
            col("cluster").eq(lit("a")),
            lit("b").eq(col("namespace")).and(col("value").gt(lit(1.0))),
            col("metric").in_list(vec![lit("up"), lit("x.y")], false),
            col("timestamp").gt_eq(ts(1000)),
            ts(5000).gt(col("timestamp")),
            col("value").lt(lit(3.0)),
        ];
        let r = request(&filters, &roles);
        let shown: Vec<String> = r
            .matchers
            .iter()
            .map(|m| format!("{}:{:?}:{}", m.name, m.op, m.value))
            .collect();
        assert_eq!(
            shown,
            [
                "cluster:Equal:a",
                "namespace:Equal:b",
                "__name__:RegexMatch:up|x\\.y"
            ]
        );
        assert_eq!((r.start, r.end), (1000, 5001));
        assert!(!pushable(&col("value").lt(lit(3.0)), &roles));
        assert!(pushable(&col("namespace").is_null(), &roles));
        // OR is not a conjunction: nothing pushed
        let or = col("cluster").eq(lit("a")).or(col("cluster").eq(lit("b")));
        assert!(!pushable(&or, &roles));
    }

    #[test]
    fn sql_regex_is_unanchored_and_bad_regex_is_not_pushed() {
        let e = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(col("namespace")),
            Operator::RegexMatch,
            Box::new(lit("kube")),
        ));
        let r = request(&[e], &roles);
        assert!(r.matchers[0].matches_value("my-kube-system"));
        let bad = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(col("namespace")),
            Operator::RegexMatch,
            Box::new(lit("(")),
        ));
        assert!(!pushable(&bad, &roles));
    }
}
