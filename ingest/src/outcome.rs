//! What a write did: accepted counts, rejected samples by [`RejectReason`], and example messages.

use std::fmt;

/// Maximum number of example messages kept in a [`WriteOutcome`].
pub const MAX_EXAMPLES: usize = 10;

/// Why samples were not stored. Each rejected sample is counted under exactly one reason: a
/// problem with the series' labels or limits applies to all of its samples whose timestamps are in
/// range; samples outside the time window are counted under the time reason.
///
/// Empty label values are not a reason: as in Prometheus, a label with an empty value is the same
/// as an absent label, and it is dropped before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// The series has no `__name__` label (or only an empty one).
    MissingMetricName,
    /// `__name__` does not match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    InvalidMetricName,
    /// A label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    InvalidLabelName,
    /// Two labels of the series have the same name.
    DuplicateLabel,
    /// More labels than `max_label_names_per_series`.
    TooManyLabels,
    /// A label name longer than `max_label_name_length`.
    LabelNameTooLong,
    /// A label value longer than `max_label_value_length`.
    LabelValueTooLong,
    /// Timestamp beyond now + `creation_grace_period_secs`.
    SampleTooFarInFuture,
    /// Timestamp older than now − max sample age (the retention).
    SampleTooOld,
    /// A new series while the cluster already has `max_active_series` active series.
    MaxActiveSeries,
    /// A native histogram sample: not supported yet.
    NativeHistogramUnsupported,
    /// An OTLP exponential histogram while `otlp.exponential_histograms` is `reject`.
    ExponentialHistogramUnsupported,
    /// An OTLP sum or histogram whose aggregation temporality is neither delta nor cumulative.
    InvalidTemporality,
    /// An OTLP delta point at or before the last point of its stream.
    OutOfOrderDelta,
}

impl RejectReason {
    /// Every reason, in [`RejectReason::index`] order.
    pub const ALL: [Self; 14] = [
        Self::MissingMetricName,
        Self::InvalidMetricName,
        Self::InvalidLabelName,
        Self::DuplicateLabel,
        Self::TooManyLabels,
        Self::LabelNameTooLong,
        Self::LabelValueTooLong,
        Self::SampleTooFarInFuture,
        Self::SampleTooOld,
        Self::MaxActiveSeries,
        Self::NativeHistogramUnsupported,
        Self::ExponentialHistogramUnsupported,
        Self::InvalidTemporality,
        Self::OutOfOrderDelta,
    ];

    /// The value of the `reason` label on the gateway's rejected-samples counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingMetricName => "missing_metric_name",
            Self::InvalidMetricName => "invalid_metric_name",
            Self::InvalidLabelName => "invalid_label_name",
            Self::DuplicateLabel => "duplicate_label",
            Self::TooManyLabels => "too_many_labels",
            Self::LabelNameTooLong => "label_name_too_long",
            Self::LabelValueTooLong => "label_value_too_long",
            Self::SampleTooFarInFuture => "sample_too_far_in_future",
            Self::SampleTooOld => "sample_too_old",
            Self::MaxActiveSeries => "max_active_series",
            Self::NativeHistogramUnsupported => "native_histogram_unsupported",
            Self::ExponentialHistogramUnsupported => "exponential_histogram_unsupported",
            Self::InvalidTemporality => "invalid_temporality",
            Self::OutOfOrderDelta => "out_of_order_delta",
        }
    }

    /// Position in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rejected sample counts keyed by [`RejectReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectCounts([u64; RejectReason::ALL.len()]);

impl RejectCounts {
    /// Samples rejected for `reason`.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0[reason.index()]
    }

    /// Adds `n` rejected samples under `reason`.
    pub fn add(&mut self, reason: RejectReason, n: u64) {
        self.0[reason.index()] += n;
    }

    /// All rejected samples.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// True when nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The reasons with a non-zero count, in [`RejectReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// The result of a write that was stored (possibly partially).
///
/// When [`WriteOutcome::has_rejections`] is true, the gateway answers 400 with
/// [`WriteOutcome::rejection_message`], after the accepted samples were made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Samples stored.
    pub samples_accepted: u64,
    /// Series the store created during this write.
    pub series_created: u64,
    /// Samples not stored, by reason.
    pub rejected_samples_by_reason: RejectCounts,
    /// Up to [`MAX_EXAMPLES`] messages `metric{labels}: reason (detail)`, one per rejection event.
    pub examples: Vec<String>,
    /// Exemplars in the request; they are not stored.
    pub exemplars_ignored: u64,
    /// Metadata entries in the request; they are not stored.
    pub metadata_ignored: u64,
}

impl WriteOutcome {
    /// All rejected samples.
    pub fn samples_rejected(&self) -> u64 {
        self.rejected_samples_by_reason.total()
    }

    /// True when at least one sample was rejected (the response must then be a 400).
    pub fn has_rejections(&self) -> bool {
        !self.rejected_samples_by_reason.is_empty()
    }

    /// A response body for a 400: the counts by reason and the example messages, one a line.
    pub fn rejection_message(&self) -> String {
        let mut s = format!(
            "{} samples accepted, {} rejected:",
            self.samples_accepted,
            self.samples_rejected()
        );
        for (reason, n) in self.rejected_samples_by_reason.iter() {
            s.push_str(&format!(" {reason}={n}"));
        }
        for e in &self.examples {
            s.push('\n');
            s.push_str(e);
        }
        s
    }

    /// Counts `n` samples rejected for `reason`, keeping an example message built by `example`
    /// (called only while fewer than [`MAX_EXAMPLES`] are kept).
    pub(crate) fn reject(
        &mut self,
        reason: RejectReason,
        n: u64,
        example: impl FnOnce() -> String,
    ) {
        if n == 0 {
            return;
        }
        self.rejected_samples_by_reason.add(reason, n);
        self.example(example);
    }

    /// Adds the counts and examples of `other` (another part of the same request) to these.
    pub fn merge(&mut self, other: WriteOutcome) {
        self.samples_accepted += other.samples_accepted;
        self.series_created += other.series_created;
        for (reason, n) in other.rejected_samples_by_reason.iter() {
            self.rejected_samples_by_reason.add(reason, n);
        }
        for e in other.examples {
            self.example(|| e);
        }
        self.exemplars_ignored += other.exemplars_ignored;
        self.metadata_ignored += other.metadata_ignored;
    }

    /// Keeps an example message built by `example` while fewer than [`MAX_EXAMPLES`] are kept.
    pub(crate) fn example(&mut self, example: impl FnOnce() -> String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(example());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_names_are_unique() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }

    #[test]
    fn examples_are_capped() {
        let mut o = WriteOutcome::default();
        for i in 0..15 {
            o.reject(RejectReason::SampleTooOld, 2, || format!("x{i}"));
        }
        o.reject(RejectReason::MaxActiveSeries, 0, || unreachable!());
        assert_eq!(o.examples.len(), MAX_EXAMPLES);
        assert_eq!(o.samples_rejected(), 30);
        assert_eq!(
            o.rejected_samples_by_reason.iter().collect::<Vec<_>>(),
            vec![(RejectReason::SampleTooOld, 30)]
        );
        assert!(
            o.rejection_message()
                .starts_with("0 samples accepted, 30 rejected: sample_too_old=30\nx0")
        );
    }
}
