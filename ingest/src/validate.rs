//! Validation of series labels and sample timestamps against a cluster's [`Limits`].
//!
//! Name checks are hand-written byte loops rather than regexes: they run on every label of every
//! new series. Rules (PRW 1.0 spec): metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
//! `[a-zA-Z_][a-zA-Z0-9_]*`, names are unique; an empty value means the label is absent and is
//! dropped (Prometheus semantics), so it is not a rejection.

use std::fmt;

use fleetgate_store::Labels;

use crate::limits::{Limits, over};
use crate::outcome::RejectReason;

/// True when `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b':')
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
        }
        None => false,
    }
}

/// True when `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

/// Why a series was rejected, with what is needed to explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid<'a> {
    pub(crate) reason: RejectReason,
    /// The offending label name (or metric name), if any.
    pub(crate) label: &'a str,
    /// Actual and allowed size, for count and length limits.
    pub(crate) sizes: Option<(usize, usize)>,
}

impl<'a> Invalid<'a> {
    fn new(reason: RejectReason, label: &'a str) -> Self {
        Self {
            reason,
            label,
            sizes: None,
        }
    }
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.as_str())?;
        match (self.label.is_empty(), self.sizes) {
            (true, None) => Ok(()),
            (true, Some((actual, limit))) => write!(f, " ({actual} > {limit})"),
            (false, None) => write!(f, " ({:?})", truncate(self.label, 64)),
            (false, Some((actual, limit))) => {
                write!(f, " ({:?}: {actual} > {limit})", truncate(self.label, 64))
            }
        }
    }
}

/// Checks the sender's labels and puts them in canonical order: drops empty values, sorts by
/// name, then checks names, duplicates and the presence of a valid `__name__`.
pub(crate) fn check_sender_labels<'a>(
    pairs: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), Invalid<'a>> {
    pairs.retain(|(_, v)| !v.is_empty());
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut metric = None;
    let mut prev: Option<&str> = None;
    for (name, value) in pairs.iter() {
        if prev == Some(*name) {
            return Err(Invalid::new(RejectReason::DuplicateLabel, name));
        }
        prev = Some(name);
        if *name == "__name__" {
            if !is_valid_metric_name(value.as_bytes()) {
                return Err(Invalid::new(RejectReason::InvalidMetricName, value));
            }
            metric = Some(*value);
        } else if !is_valid_label_name(name.as_bytes()) {
            return Err(Invalid::new(RejectReason::InvalidLabelName, name));
        }
    }
    match metric {
        Some(_) => Ok(()),
        None => Err(Invalid::new(RejectReason::MissingMetricName, "")),
    }
}

/// Checks the count and lengths of the label set that would be stored.
pub(crate) fn check_stored_labels<'l>(
    labels: &'l Labels,
    limits: &Limits,
) -> Result<(), Invalid<'l>> {
    if over(limits.max_label_names_per_series, labels.len()) {
        return Err(Invalid {
            reason: RejectReason::TooManyLabels,
            label: "",
            sizes: Some((labels.len(), limits.max_label_names_per_series)),
        });
    }
    for l in labels.iter() {
        if over(limits.max_label_name_length, l.name.len()) {
            return Err(Invalid {
                reason: RejectReason::LabelNameTooLong,
                label: &l.name,
                sizes: Some((l.name.len(), limits.max_label_name_length)),
            });
        }
        if over(limits.max_label_value_length, l.value.len()) {
            return Err(Invalid {
                reason: RejectReason::LabelValueTooLong,
                label: &l.name,
                sizes: Some((l.value.len(), limits.max_label_value_length)),
            });
        }
    }
    Ok(())
}

/// The accepted timestamp range of a request: `[now − max age, now + grace]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SampleWindow {
    pub(crate) min_ms: i64,
    pub(crate) max_ms: i64,
}

impl SampleWindow {
    /// `max_age_ms == 0` means no lower bound.
    pub(crate) fn new(now_ms: i64, limits: &Limits, max_age_ms: i64) -> Self {
        let grace_ms = i64::try_from(limits.creation_grace_period_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        Self {
            min_ms: if max_age_ms <= 0 {
                i64::MIN
            } else {
                now_ms.saturating_sub(max_age_ms)
            },
            max_ms: now_ms.saturating_add(grace_ms),
        }
    }

    #[inline]
    pub(crate) fn check(&self, timestamp_ms: i64) -> Option<RejectReason> {
        if timestamp_ms > self.max_ms {
            Some(RejectReason::SampleTooFarInFuture)
        } else if timestamp_ms < self.min_ms {
            Some(RejectReason::SampleTooOld)
        } else {
            None
        }
    }

    /// The detail of a time rejection, for messages.
    pub(crate) fn explain(&self, reason: RejectReason, timestamp_ms: i64) -> String {
        match reason {
            RejectReason::SampleTooFarInFuture => {
                format!(
                    "{reason} (timestamp {timestamp_ms} > newest accepted {})",
                    self.max_ms
                )
            }
            _ => format!(
                "{reason} (timestamp {timestamp_ms} < oldest accepted {})",
                self.min_ms
            ),
        }
    }
}

/// `metric{a="b", c="d"}` in Prometheus notation, long values shortened.
pub(crate) fn render_series<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut metric = "";
    let mut rest = String::new();
    for (name, value) in labels {
        if name == "__name__" {
            metric = value;
            continue;
        }
        if !rest.is_empty() {
            rest.push_str(", ");
        }
        rest.push_str(truncate(name, 64));
        rest.push('=');
        rest.push_str(&format!("{:?}", truncate(value, 100)));
    }
    format!("{}{{{rest}}}", truncate(metric, 200))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["up", "a:b_c9", "_x", ":x", "A"] {
            assert!(is_valid_metric_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "9x", "a-b", "a.b", "é"] {
            assert!(!is_valid_metric_name(bad.as_bytes()), "{bad}");
        }
        for ok in ["job", "_x", "__name__", "a9_B"] {
            assert!(is_valid_label_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "9x", "a:b", "a-b", "ü"] {
            assert!(!is_valid_label_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn sender_labels() {
        let mut p = vec![("job", "x"), ("__name__", "up"), ("empty", "")];
        assert!(check_sender_labels(&mut p).is_ok());
        assert_eq!(p, vec![("__name__", "up"), ("job", "x")]);

        let reason = |mut p: Vec<(&'static str, &'static str)>| {
            check_sender_labels(&mut p).err().map(|e| e.reason)
        };
        assert_eq!(
            reason(vec![("job", "x")]),
            Some(RejectReason::MissingMetricName)
        );
        assert_eq!(
            reason(vec![("__name__", "")]),
            Some(RejectReason::MissingMetricName)
        );
        assert_eq!(
            reason(vec![("__name__", "a-b")]),
            Some(RejectReason::InvalidMetricName)
        );
        assert_eq!(
            reason(vec![("__name__", "up"), ("a.b", "1")]),
            Some(RejectReason::InvalidLabelName)
        );
        assert_eq!(
            reason(vec![("__name__", "up"), ("a", "1"), ("a", "2")]),
            Some(RejectReason::DuplicateLabel)
        );
        assert_eq!(
            reason(vec![("__name__", "up"), ("a", "1"), ("a", "")]),
            None
        );
    }

    #[test]
    fn stored_labels() {
        let limits = Limits {
            max_label_names_per_series: 3,
            max_label_name_length: 8,
            max_label_value_length: 4,
            ..Limits::default()
        };
        let check = |pairs: &[(&str, &str)]| {
            let l = Labels::from_pairs(pairs.iter().copied());
            check_stored_labels(&l, &limits)
                .err()
                .map(|e| (e.reason, e.to_string()))
        };
        assert_eq!(check(&[("__name__", "up"), ("a", "1"), ("b", "2")]), None);
        assert_eq!(
            check(&[("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "3")]),
            Some((
                RejectReason::TooManyLabels,
                "too_many_labels (4 > 3)".into()
            ))
        );
        assert_eq!(
            check(&[("__name__", "up"), ("abcdefghi", "1")]).map(|e| e.0),
            Some(RejectReason::LabelNameTooLong)
        );
        assert_eq!(
            check(&[("__name__", "up"), ("a", "12345")]),
            Some((
                RejectReason::LabelValueTooLong,
                "label_value_too_long (\"a\": 5 > 4)".into()
            ))
        );
    }

    #[test]
    fn window() {
        let limits = Limits::default();
        let w = SampleWindow::new(1_000_000_000, &limits, 3_600_000);
        assert_eq!(w.check(1_000_000_000), None);
        assert_eq!(w.check(1_000_000_000 + 600_000), None);
        assert_eq!(
            w.check(1_000_000_000 + 600_001),
            Some(RejectReason::SampleTooFarInFuture)
        );
        assert_eq!(w.check(1_000_000_000 - 3_600_000), None);
        assert_eq!(
            w.check(1_000_000_000 - 3_600_001),
            Some(RejectReason::SampleTooOld)
        );
        let unbounded = SampleWindow::new(0, &limits, 0);
        assert_eq!(unbounded.check(i64::MIN), None);
    }

    #[test]
    fn render() {
        assert_eq!(
            render_series([("__name__", "up"), ("job", "a\"b"), ("x", "y")].into_iter()),
            r#"up{job="a\"b", x="y"}"#
        );
        assert_eq!(truncate("héllo", 2), "h");
    }
}
