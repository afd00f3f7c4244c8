//! OTLP names to Prometheus names, as Prometheus 3.x translates them with its default strategy
//! `UnderscoreEscapingWithSuffixes`: metric names with unit and type suffixes, label names
//! sanitized (with Prometheus's defaults `label_name_underscore_sanitization: true` and
//! `label_name_preserve_multiple_underscores: true`), and attribute values as strings.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What kind of Prometheus metric an OTLP metric becomes; it decides the type suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A gauge (unit `1` adds `_ratio`).
    Gauge,
    /// A monotonic sum: a counter (`_total`).
    Counter,
    /// A non-monotonic sum: stored as a gauge, no type suffix.
    UpDownCounter,
    /// An explicit-bucket or exponential histogram (series suffixes `_bucket`, `_sum`, `_count`).
    Histogram,
    /// A summary (series suffixes `_sum`, `_count`).
    Summary,
}

/// OTel (UCUM) main units and their Prometheus suffixes; any other unit is used as written.
const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

/// The "per" units (after `/`), singular.
const PER_UNITS: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

fn lookup<'u>(table: &[(&str, &'u str)], unit: &'u str) -> &'u str {
    table
        .iter()
        .find(|(k, _)| *k == unit)
        .map_or(unit, |(_, v)| *v)
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// A unit part made name-safe: characters outside `[a-zA-Z0-9:]` become `_`, runs of `_`
/// collapse, and a leading `_` is dropped (a trailing one is kept).
fn clean_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = if is_metric_char(c) { c } else { '_' };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    out
}

/// The main and the `per_` unit suffixes of `unit` (either may be empty). A part that is blank or
/// holds an annotation (`{…}`) gives no suffix.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(lookup(UNITS, main))
    };
    let per = match parts.next().map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            let p = lookup(PER_UNITS, p);
            if p.is_empty() {
                String::new()
            } else {
                clean_unit(&format!("per_{p}"))
            }
        }
        _ => String::new(),
    };
    (main, per)
}

/// The Prometheus metric name of an OTLP metric `name` with `unit`, before any series suffix
/// (`_bucket`, `_sum`, `_count`). `None` when nothing of the name survives escaping.
pub fn metric_name(name: &str, unit: &str, kind: MetricKind) -> Option<String> {
    let mut tokens: Vec<&str> = name
        .split(|c| !is_metric_char(c))
        .filter(|t| !t.is_empty())
        .collect();
    let (mut main, mut per) = unit_suffixes(unit);
    if tokens.iter().any(|t| *t == main) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        if per.ends_with('_') {
            per.pop();
        }
        if tokens.iter().any(|t| *t == per) {
            per.clear();
        }
    }
    if !per.is_empty() && main.ends_with('_') {
        main.pop();
    }
    if !main.is_empty() {
        tokens.push(&main);
    }
    if !per.is_empty() {
        tokens.push(&per);
    }
    if kind == MetricKind::Counter {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if unit == "1" && kind == MetricKind::Gauge {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let mut out = tokens.join("_");
    if out.is_empty() {
        return None;
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

/// The Prometheus label name of an attribute key: characters outside `[a-zA-Z0-9_]` become `_`
/// (runs kept), a leading digit gets `key_`, a single leading `_` gets `key`. `None` for an empty
/// key or one that escapes to underscores only.
pub fn label_name(key: &str) -> Option<Cow<'_, str>> {
    if key.is_empty() {
        return None;
    }
    let valid = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let mut name: Cow<'_, str> = if valid {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(
            key.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        )
    };
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name = Cow::Owned(format!("key_{name}"));
    } else if name.starts_with('_') && !name.starts_with("__") {
        name = Cow::Owned(format!("key{name}"));
    }
    if *name != *key && name.bytes().all(|b| b == b'_') {
        return None;
    }
    Some(name)
}

/// A float as OTLP's `AsString` writes it (the JSON number form): shortest round-trip digits,
/// exponent form below 1e-6 and from 1e21 in magnitude; `NaN`, `Infinity`, `-Infinity`.
pub fn float_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{v}")
    }
}

/// A bucket bound or quantile as Prometheus writes it in `le` / `quantile`: plain decimal digits
/// (shortest round-trip), `+Inf`, `-Inf`, `NaN`.
pub fn bound_string(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        let mut s = String::new();
        let _ = write!(s, "{v}");
        s
    }
}

#[cfg(test)]
mod tests;
