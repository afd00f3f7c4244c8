//! Bounded caches of label-index answers, held by the [`Catalog`](crate::catalog::Catalog) and
//! used under its lock:
//!
//! - **selections**: normalized matcher set → ids of the matching series *in label order* (what
//!   [`Store::select_series`](crate::Store::select_series) returns, so a hit skips both the
//!   postings work and the sort), at most [`SELECTION_CACHE_BYTES`] (8 B per id plus the key and
//!   [`ENTRY_OVERHEAD`] per entry);
//! - **label values**: label name → its sorted values, at most [`LABEL_VALUES_CACHE_BYTES`]
//!   (string bytes plus 24 B per value plus [`ENTRY_OVERHEAD`] per entry).
//!
//! Both are LRU and byte-weighted (moka).
//!
//! **Invalidation.** Series are never removed from the catalog, and at run time a new series
//! always gets `max_id + 1`. So an entry records `upto`, the highest id it has seen, and the
//! catalog's `epoch` when it was made; the catalog bumps its epoch whenever it registers an id
//! that is *not* above every id before (only while loading, or to fill a hole left by a corrupt
//! file). A lookup under the catalog lock then finds one of:
//! - same epoch, `upto == max_id`: exact hit;
//! - same epoch, `upto < max_id`: the only series missing from the entry are ids in
//!   `(upto, max_id]`; they are checked against the matchers (or read for the label's value) and
//!   merged in, and the entry is replaced — series churn costs only the new series, not a full
//!   recomputation of every cached selection; beyond [`MAX_EXTEND`] new ids the entry is
//!   recomputed instead;
//! - another epoch: recomputed.

use std::fmt;
use std::sync::Arc;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use crate::labels::SeriesId;
use crate::matcher::{MatchOp, Matcher};

/// Capacity of the selection cache, in bytes (32 MiB ≈ 4 M cached series ids).
pub(crate) const SELECTION_CACHE_BYTES: u64 = 32 << 20;
/// Capacity of the label-values cache, in bytes.
pub(crate) const LABEL_VALUES_CACHE_BYTES: u64 = 8 << 20;
/// Fixed cost charged per entry on top of its heap bytes (key, `Arc`s, cache node).
pub(crate) const ENTRY_OVERHEAD: usize = 128;
/// An entry behind by more new series than this is recomputed rather than extended.
pub(crate) const MAX_EXTEND: u64 = 16_384;

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes.saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX)
}

/// Cached ids of the series matching one matcher set, in label order.
#[derive(Debug)]
pub(crate) struct Selection {
    /// Catalog epoch the entry belongs to.
    pub(crate) epoch: u64,
    /// Highest series id the entry accounts for.
    pub(crate) upto: SeriesId,
    /// Matching ids, sorted by their labels.
    pub(crate) ids: Arc<[SeriesId]>,
}

/// Cached sorted values of one label name.
#[derive(Debug)]
pub(crate) struct LabelValues {
    /// Catalog epoch the entry belongs to.
    pub(crate) epoch: u64,
    /// Highest series id the entry accounts for.
    pub(crate) upto: SeriesId,
    /// The values, sorted, unique.
    pub(crate) values: Arc<[String]>,
}

/// The two caches.
pub(crate) struct SelectCache {
    selections: Cache<Box<[u8]>, Arc<Selection>>,
    values: Cache<Box<str>, Arc<LabelValues>>,
}

impl fmt::Debug for SelectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelectCache")
            .field("selections", &self.selections.entry_count())
            .field("selections_bytes", &self.selections.weighted_size())
            .field("label_values", &self.values.entry_count())
            .field("label_values_bytes", &self.values.weighted_size())
            .finish()
    }
}

impl Default for SelectCache {
    fn default() -> Self {
        Self::new(SELECTION_CACHE_BYTES, LABEL_VALUES_CACHE_BYTES)
    }
}

impl SelectCache {
    /// Caches of at most `selection_bytes` and `values_bytes`.
    pub(crate) fn new(selection_bytes: u64, values_bytes: u64) -> Self {
        Self {
            selections: Cache::<Box<[u8]>, Arc<Selection>>::builder()
                .max_capacity(selection_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|k, v| weight(k.len() + v.ids.len() * size_of::<SeriesId>()))
                .build(),
            values: Cache::<Box<str>, Arc<LabelValues>>::builder()
                .max_capacity(values_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|k, v| {
                    let strings: usize =
                        v.values.iter().map(|s| s.len() + size_of::<String>()).sum();
                    weight(k.len() + strings)
                })
                .build(),
        }
    }

    /// The cached selection of `key`, if any.
    pub(crate) fn selection(&self, key: &[u8]) -> Option<Arc<Selection>> {
        self.selections.get(key)
    }

    /// Caches a selection.
    pub(crate) fn put_selection(&self, key: Box<[u8]>, s: Arc<Selection>) {
        self.selections.insert(key, s);
    }

    /// The cached values of label `name`, if any.
    pub(crate) fn label_values(&self, name: &str) -> Option<Arc<LabelValues>> {
        self.values.get(name)
    }

    /// Caches the values of a label.
    pub(crate) fn put_label_values(&self, name: &str, v: Arc<LabelValues>) {
        self.values.insert(name.into(), v);
    }

    /// Drops every entry (series were removed: the cached lists may name them, and entries of an
    /// old epoch would only wait for eviction holding their memory).
    pub(crate) fn clear(&self) {
        self.selections.invalidate_all();
        self.values.invalidate_all();
    }
}

/// The cache key of a matcher set: its matchers sorted (order does not change the answer) and
/// de-duplicated, each as length-prefixed name, operator, length-prefixed value.
pub(crate) fn selection_key(matchers: &[Matcher]) -> Box<[u8]> {
    let op = |m: &Matcher| match m.op {
        MatchOp::Equal => 0u8,
        MatchOp::NotEqual => 1,
        MatchOp::RegexMatch => 2,
        MatchOp::RegexNoMatch => 3,
    };
    let mut ms: Vec<(&str, u8, &str)> = matchers
        .iter()
        .map(|m| (m.name.as_str(), op(m), m.value.as_str()))
        .collect();
    ms.sort_unstable();
    ms.dedup();
    let len: usize = ms.iter().map(|(n, _, v)| n.len() + v.len() + 17).sum();
    let mut key = Vec::with_capacity(len);
    for (n, o, v) in ms {
        key.extend_from_slice(&(n.len() as u64).to_le_bytes());
        key.extend_from_slice(n.as_bytes());
        key.push(o);
        key.extend_from_slice(&(v.len() as u64).to_le_bytes());
        key.extend_from_slice(v.as_bytes());
    }
    key.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_order_and_duplicates_but_not_operators() {
        let a = Matcher::equal("job", "api");
        let b = Matcher::new(MatchOp::RegexMatch, "env", "prod|dev").unwrap();
        let k1 = selection_key(&[a.clone(), b.clone()]);
        assert_eq!(k1, selection_key(&[b.clone(), a.clone(), b.clone()]));
        let c = Matcher::new(MatchOp::NotEqual, "job", "api").unwrap();
        assert_ne!(k1, selection_key(&[c, b.clone()]));
        // length prefixes: moving bytes between name and value changes the key
        assert_ne!(
            selection_key(&[Matcher::equal("ab", "c")]),
            selection_key(&[Matcher::equal("a", "bc")])
        );
    }
}
