//! Cluster identity: the [`ClusterContext`] a write is made for, and how it labels every series.
//!
//! The stored `cluster` label is always the authenticated cluster, and the configured extra labels
//! override the sender's. As with Prometheus's `honor_labels: false`, a sender value that is
//! overridden is kept under `exported_<name>`; if that name is taken too, the prefix is repeated
//! (`exported_exported_<name>`, …), shortest names first, so no sender value is lost
//! (`resolveConflictingExposedLabels` in Prometheus's `scrape/scrape.go`).

use std::borrow::Cow;
use std::sync::Arc;

use fleetgate_store::Labels;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::validate::is_valid_label_name;

/// The label every stored series carries, naming its cluster.
pub const CLUSTER_LABEL: &str = "cluster";

/// Prefix under which an overridden sender label is kept.
pub const EXPORTED_PREFIX: &str = "exported_";

/// Who a write is for, as resolved by the gateway (from the token, or in open dev mode from a
/// header or the sender's external label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterContext {
    /// The cluster's name: the value of the stored `cluster` label.
    pub name: Arc<str>,
    /// Labels from configuration added to every series, overriding the sender's.
    pub extra_labels: Vec<(String, String)>,
    /// The cluster's limits.
    pub limits: Limits,
    /// Open dev mode only: a sender's own `cluster` label names the cluster (it is kept as is, not
    /// moved to `exported_cluster`); `name` applies to series without one.
    pub cluster_from_payload: bool,
}

impl ClusterContext {
    /// A checked context; see [`ClusterContext::validate`].
    pub fn new(
        name: impl Into<Arc<str>>,
        extra_labels: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<Self> {
        let ctx = Self {
            name: name.into(),
            extra_labels,
            limits,
            cluster_from_payload: false,
        };
        ctx.validate()?;
        Ok(ctx)
    }

    /// Checks the configuration: a non-empty name; extra labels with valid, unique names other than
    /// `cluster` and not starting with `__`, and non-empty values. Invalid extra labels would be
    /// ignored when labelling series; the gateway should call this when it loads its config.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::InvalidConfig("cluster name is empty".into()));
        }
        for (i, (n, v)) in self.extra_labels.iter().enumerate() {
            if !usable_extra_label(n, v) {
                return Err(Error::InvalidConfig(format!(
                    "cluster {:?}: extra label {n:?}={v:?} needs a valid name other than \
                     \"cluster\" not starting with \"__\", and a non-empty value",
                    self.name
                )));
            }
            if self.extra_labels[..i].iter().any(|(m, _)| m == n) {
                return Err(Error::InvalidConfig(format!(
                    "cluster {:?}: extra label {n:?} given twice",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// The stored label set of a series whose sender labels are `sender` (already checked: sorted,
    /// unique names, no empty values).
    pub(crate) fn canonical_labels(&self, sender: &[(&str, &str)]) -> Labels {
        let mut out: Vec<(Cow<'_, str>, &str)> = sender
            .iter()
            .map(|(n, v)| (Cow::Borrowed(*n), *v))
            .collect();
        let mut conflicts: Vec<(&str, &str)> = Vec::new();
        let sender_names_cluster = self.cluster_from_payload
            && sender
                .iter()
                .any(|(n, v)| *n == CLUSTER_LABEL && !v.is_empty());
        let own_cluster = (!sender_names_cluster).then_some((CLUSTER_LABEL, &*self.name));
        let targets = own_cluster.into_iter().chain(
            self.extra_labels
                .iter()
                .filter(|(n, v)| usable_extra_label(n, v))
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        for (name, value) in targets {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => {
                    conflicts.push((name, slot.1));
                    slot.1 = value;
                }
                None => out.push((Cow::Borrowed(name), value)),
            }
        }
        conflicts.sort_by_key(|(n, _)| n.len());
        for (name, value) in conflicts {
            let mut new_name = name.to_owned();
            loop {
                new_name.insert_str(0, EXPORTED_PREFIX);
                if !out.iter().any(|(n, _)| *n == new_name) {
                    out.push((Cow::Owned(new_name), value));
                    break;
                }
            }
        }
        Labels::from_pairs(out)
    }

    /// A hash of everything besides the name that decides a series' stored labels and validity;
    /// the series cache of a cluster is discarded when it changes (config reload).
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(&[u8::from(self.cluster_from_payload)]);
        for (n, v) in &self.extra_labels {
            h.update(&(n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        }
        for x in [
            self.limits.max_label_names_per_series,
            self.limits.max_label_name_length,
            self.limits.max_label_value_length,
        ] {
            h.update(&(x as u64).to_le_bytes());
        }
        h.digest()
    }
}

fn usable_extra_label(name: &str, value: &str) -> bool {
    is_valid_label_name(name.as_bytes())
        && name != CLUSTER_LABEL
        && !name.starts_with("__")
        && !value.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(extra: &[(&str, &str)]) -> ClusterContext {
        ClusterContext::new(
            "prod-eu",
            extra
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn adds_cluster_and_exports_the_senders() {
        let l =
            ctx(&[]).canonical_labels(&[("__name__", "up"), ("cluster", "spoof"), ("job", "a")]);
        assert_eq!(
            l.to_string(),
            r#"up{cluster="prod-eu", exported_cluster="spoof", job="a"}"#
        );
        let l = ctx(&[]).canonical_labels(&[("__name__", "up")]);
        assert_eq!(l.to_string(), r#"up{cluster="prod-eu"}"#);
    }

    #[test]
    fn open_mode_keeps_the_senders_cluster() {
        let mut c = ctx(&[]);
        c.cluster_from_payload = true;
        let l = c.canonical_labels(&[("__name__", "up"), ("cluster", "lab")]);
        assert_eq!(l.to_string(), r#"up{cluster="lab"}"#);
        let l = c.canonical_labels(&[("__name__", "up")]);
        assert_eq!(l.to_string(), r#"up{cluster="prod-eu"}"#);
    }

    #[test]
    fn taken_exported_name_gets_another_prefix() {
        let l = ctx(&[]).canonical_labels(&[
            ("__name__", "up"),
            ("cluster", "a"),
            ("exported_cluster", "b"),
        ]);
        assert_eq!(
            l.to_string(),
            r#"up{cluster="prod-eu", exported_cluster="b", exported_exported_cluster="a"}"#
        );
    }

    #[test]
    fn extra_labels_override() {
        let l = ctx(&[("region", "eu"), ("env", "prod")])
            .canonical_labels(&[("__name__", "up"), ("region", "us")]);
        assert_eq!(
            l.to_string(),
            r#"up{cluster="prod-eu", env="prod", exported_region="us", region="eu"}"#
        );
    }

    #[test]
    fn validation() {
        let bad = |extra: &[(&str, &str)]| {
            ClusterContext::new(
                "c",
                extra
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                Limits::default(),
            )
            .is_err()
        };
        assert!(bad(&[("cluster", "x")]));
        assert!(bad(&[("__name__", "x")]));
        assert!(bad(&[("a-b", "x")]));
        assert!(bad(&[("a", "")]));
        assert!(bad(&[("a", "1"), ("a", "2")]));
        assert!(!bad(&[("a", "1"), ("b", "2")]));
        assert!(ClusterContext::new("", vec![], Limits::default()).is_err());
    }

    #[test]
    fn fingerprint_tracks_extra_labels_and_label_limits() {
        let a = ctx(&[("a", "1")]);
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.limits.max_active_series = 7;
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.limits.max_label_value_length = 7;
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), ctx(&[("a", "2")]).fingerprint());
    }
}
