//! Inverted label index: `name → value → sorted postings of series ids`, and matcher evaluation
//! on it (Prometheus semantics: a matcher that matches "" also accepts series without the label).

use std::sync::Arc;

use hashbrown::HashMap;

use crate::labels::{Labels, SeriesId};
use crate::matcher::{MatchOp, Matcher};

/// Below this many candidates, remaining matchers are checked against labels instead of postings.
const FILTER_THRESHOLD: usize = 4096;

/// Postings by label name and value.
#[derive(Debug, Default)]
pub(crate) struct Index {
    postings: HashMap<Arc<str>, HashMap<Arc<str>, Vec<SeriesId>>>,
}

impl Index {
    /// Returns the index's own `Arc`s for a name and value when it has them, so that a new
    /// series shares strings with the ones before it (the index is the string interner).
    pub(crate) fn intern(&self, name: &str, value: &str) -> (Arc<str>, Arc<str>) {
        match self.postings.get_key_value(name) {
            Some((n, values)) => {
                let v = values.get_key_value(value).map(|(v, _)| Arc::clone(v));
                (Arc::clone(n), v.unwrap_or_else(|| value.into()))
            }
            None => (name.into(), value.into()),
        }
    }

    /// Adds a series; ids normally arrive in increasing order, which keeps postings sorted.
    pub(crate) fn add(&mut self, id: SeriesId, labels: &Labels) {
        for l in labels {
            if !self.postings.contains_key(&*l.name) {
                self.postings.insert(Arc::clone(&l.name), HashMap::new());
            }
            let Some(values) = self.postings.get_mut(&*l.name) else {
                continue;
            };
            if !values.contains_key(&*l.value) {
                values.insert(Arc::clone(&l.value), Vec::new());
            }
            let Some(list) = values.get_mut(&*l.value) else {
                continue;
            };
            match list.last() {
                Some(&last) if last >= id => {
                    if let Err(pos) = list.binary_search(&id) {
                        list.insert(pos, id);
                    }
                }
                _ => list.push(id),
            }
        }
    }

    /// Removes the series `removed` (ascending ids, with their labels): from the posting list of
    /// each of their labels, and a value (or name) no series carries any more from the index.
    /// Each touched list is filtered once, however many of its series go.
    pub(crate) fn remove(&mut self, removed: &[(SeriesId, Labels)]) {
        let ids: Vec<SeriesId> = removed.iter().map(|(id, _)| *id).collect();
        // (name, value) pairs touched, each once: their interned `Arc`s compare by pointer
        let mut touched: hashbrown::HashSet<(*const u8, *const u8)> = Default::default();
        for (_, labels) in removed {
            for l in labels {
                if !touched.insert((l.name.as_ptr(), l.value.as_ptr())) {
                    continue;
                }
                let Some(values) = self.postings.get_mut(&*l.name) else {
                    continue;
                };
                if let Some(list) = values.get_mut(&*l.value) {
                    list.retain(|id| ids.binary_search(id).is_err());
                    if list.is_empty() {
                        values.remove(&*l.value);
                    } else if list.capacity() > 2 * list.len() + 16 {
                        list.shrink_to_fit();
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&*l.name);
                }
            }
        }
    }

    /// The sorted ids of series with label `name` = `value`.
    pub(crate) fn postings(&self, name: &str, value: &str) -> &[SeriesId] {
        self.postings
            .get(name)
            .and_then(|v| v.get(value))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Sorted label names.
    pub(crate) fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.postings.keys().map(|k| k.to_string()).collect();
        v.sort_unstable();
        v
    }

    /// Sorted values of label `name`.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .postings
            .get(name)
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Union of the postings of every value of `m.name` that `m` accepts (`m` must not match "").
    fn union_matching(&self, m: &Matcher) -> Vec<SeriesId> {
        let Some(values) = self.postings.get(m.name.as_str()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (v, ids) in values {
            if m.matches_value(v) {
                out.extend_from_slice(ids);
            }
        }
        out.sort_unstable();
        out
    }

    /// Ids of series matching every matcher, sorted by id. `all` lists every id (used only when
    /// no matcher narrows the set), `labels_of` resolves an id for the final filtering.
    pub(crate) fn select<'a>(
        &self,
        matchers: &[Matcher],
        all: impl FnOnce() -> Vec<SeriesId>,
        labels_of: impl Fn(SeriesId) -> Option<&'a Labels>,
    ) -> Vec<SeriesId> {
        let mut cand: Option<Vec<SeriesId>> = None;
        let mut used = vec![false; matchers.len()];
        // 1. `=` matchers with a non-empty value: intersect postings, shortest first.
        let mut lists: Vec<(usize, &[SeriesId])> = matchers
            .iter()
            .enumerate()
            .filter(|(_, m)| m.op == MatchOp::Equal && !m.value.is_empty())
            .map(|(i, m)| (i, self.postings(&m.name, &m.value)))
            .collect();
        lists.sort_by_key(|(_, l)| l.len());
        for (i, list) in lists {
            used[i] = true;
            cand = Some(match cand {
                None => list.to_vec(),
                Some(c) => intersect(&c, list),
            });
            if cand.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        // 2. Other matchers that reject "": the series must carry the label; use postings while
        //    the candidate set is large, else leave them to the filter.
        for (i, m) in matchers.iter().enumerate() {
            if used[i] || m.matches_empty() {
                continue;
            }
            if cand.as_ref().is_some_and(|c| c.len() < FILTER_THRESHOLD) {
                continue;
            }
            used[i] = true;
            let u = self.union_matching(m);
            cand = Some(match cand {
                None => u,
                Some(c) => intersect(&c, &u),
            });
            if cand.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        // 3. Filter by what is left (includes every matcher that accepts "").
        let mut ids = cand.unwrap_or_else(all);
        let rest: Vec<&Matcher> = matchers
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(m, _)| m)
            .collect();
        if !rest.is_empty() {
            ids.retain(|&id| labels_of(id).is_some_and(|l| rest.iter().all(|m| m.matches(l))));
        }
        ids
    }
}

/// Intersection of two sorted id lists.
pub(crate) fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.len() * 16 < large.len() {
        for &x in small {
            if large.binary_search(&x).is_ok() {
                out.push(x);
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        match small[i].cmp(&large[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(small[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Index, Vec<Labels>) {
        let series = vec![
            Labels::from_pairs([("__name__", "up"), ("job", "api"), ("env", "prod")]),
            Labels::from_pairs([("__name__", "up"), ("job", "web")]),
            Labels::from_pairs([("__name__", "cpu"), ("job", "api")]),
        ];
        let mut idx = Index::default();
        for (i, l) in series.iter().enumerate() {
            idx.add(i as u64 + 1, l);
        }
        (idx, series)
    }

    fn sel(idx: &Index, series: &[Labels], ms: &[Matcher]) -> Vec<SeriesId> {
        idx.select(
            ms,
            || (1..=series.len() as u64).collect(),
            |id| series.get(id as usize - 1),
        )
    }

    #[test]
    fn removal_drops_ids_values_and_names() {
        let (mut idx, s) = setup();
        idx.remove(&[(1, s[0].clone()), (3, s[2].clone())]);
        assert_eq!(idx.postings("__name__", "up"), &[2]);
        assert!(idx.postings("__name__", "cpu").is_empty());
        assert_eq!(idx.label_values("job"), vec!["web".to_string()]);
        assert!(!idx.label_names().contains(&"env".to_string()));
        assert_eq!(
            idx.label_names(),
            vec!["__name__".to_string(), "job".to_string()]
        );
    }

    #[test]
    fn equal_regex_and_missing_label() {
        let (idx, s) = setup();
        assert_eq!(
            sel(&idx, &s, &[Matcher::equal("__name__", "up")]),
            vec![1, 2]
        );
        assert_eq!(
            sel(
                &idx,
                &s,
                &[Matcher::equal("__name__", "up"), Matcher::equal("env", "")]
            ),
            vec![2]
        );
        let re = Matcher::new(MatchOp::RegexMatch, "job", "a.*").unwrap();
        assert_eq!(sel(&idx, &s, &[re]), vec![1, 3]);
        let ne = Matcher::new(MatchOp::NotEqual, "env", "prod").unwrap();
        assert_eq!(sel(&idx, &s, &[ne]), vec![2, 3]);
        let nre = Matcher::new(MatchOp::RegexNoMatch, "job", "api").unwrap();
        assert_eq!(sel(&idx, &s, &[nre]), vec![2]);
        assert_eq!(intersect(&[1, 2, 3, 9], &[2, 9, 10]), vec![2, 9]);
    }
}
