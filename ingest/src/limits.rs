//! Per-cluster ingestion limits, read from configuration with documented defaults.

use serde::{Deserialize, Serialize};

/// What one cluster may write. Every field has a default, so a config section may name only the
/// limits it changes (`#[serde(default)]`); unknown keys are rejected so that typos are noticed.
/// For every count and length, `0` means "no limit".
///
/// The oldest accepted sample age is not here: it is the store's retention, passed to
/// [`crate::Ingester::new`] through [`crate::IngestOptions::max_sample_age_ms`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Series active at once: series written within the last hour (see
    /// [`crate::IngestOptions::active_series_window_ms`]). A series beyond the limit is rejected
    /// with `max_active_series`; series already active keep being accepted. Default 1,000,000.
    pub max_active_series: usize,
    /// Labels per stored series, counting `__name__`, `cluster` and the cluster's extra labels.
    /// Default 40.
    pub max_label_names_per_series: usize,
    /// Bytes in a label name, checked on the stored (renamed) names. Default 1024.
    pub max_label_name_length: usize,
    /// Bytes in a label value. Default 2048.
    pub max_label_value_length: usize,
    /// How far ahead of the gateway's clock a sample's timestamp may be, in seconds, before it is
    /// rejected as `sample_too_far_in_future`. Default 600 (10 minutes).
    pub creation_grace_period_secs: u64,
}

impl Limits {
    /// Default for [`Limits::max_active_series`].
    pub const DEFAULT_MAX_ACTIVE_SERIES: usize = 1_000_000;
    /// Default for [`Limits::max_label_names_per_series`].
    pub const DEFAULT_MAX_LABEL_NAMES_PER_SERIES: usize = 40;
    /// Default for [`Limits::max_label_name_length`].
    pub const DEFAULT_MAX_LABEL_NAME_LENGTH: usize = 1024;
    /// Default for [`Limits::max_label_value_length`].
    pub const DEFAULT_MAX_LABEL_VALUE_LENGTH: usize = 2048;
    /// Default for [`Limits::creation_grace_period_secs`].
    pub const DEFAULT_CREATION_GRACE_PERIOD_SECS: u64 = 600;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_active_series: Self::DEFAULT_MAX_ACTIVE_SERIES,
            max_label_names_per_series: Self::DEFAULT_MAX_LABEL_NAMES_PER_SERIES,
            max_label_name_length: Self::DEFAULT_MAX_LABEL_NAME_LENGTH,
            max_label_value_length: Self::DEFAULT_MAX_LABEL_VALUE_LENGTH,
            creation_grace_period_secs: Self::DEFAULT_CREATION_GRACE_PERIOD_SECS,
        }
    }
}

/// `0` means unlimited.
pub(crate) fn over(limit: usize, actual: usize) -> bool {
    limit != 0 && actual > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_keeps_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_active_series": 5}"#).unwrap();
        assert_eq!(l.max_active_series, 5);
        assert_eq!(l.max_label_names_per_series, 40);
        assert_eq!(l.creation_grace_period_secs, 600);
        assert_eq!(
            serde_json::from_str::<Limits>("{}").unwrap(),
            Limits::default()
        );
        assert!(serde_json::from_str::<Limits>(r#"{"max_series": 5}"#).is_err());
    }

    #[test]
    fn zero_is_unlimited() {
        assert!(!over(0, usize::MAX));
        assert!(!over(3, 3));
        assert!(over(3, 4));
    }
}
