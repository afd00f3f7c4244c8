//! Series and label answers (`/api/v1/series`, `/labels`, `/label/<name>/values`) within a scope,
//! from the series catalog and per-file series tables, never by decoding samples.

use std::collections::{BTreeSet, HashSet};

use fleetgate_store::{Labels, Matcher, SeriesId};

use crate::error::Result;
use crate::read::ReadView;
use crate::selector::parse_selector;

/// The time range of a metadata request: `None` on a side means unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest time (ms), if given.
    pub start: Option<i64>,
    /// Latest time (ms), if given.
    pub end: Option<i64>,
}

impl TimeRange {
    fn is_unbounded(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }
}

/// The series selected by any of `selectors` (union) with samples in `range`, sorted by labels.
/// No selector selects every series of the scope.
async fn select(
    view: &ReadView,
    selectors: &[String],
    range: TimeRange,
) -> Result<Vec<(SeriesId, Labels)>> {
    let groups: Vec<Vec<Matcher>> = if selectors.is_empty() {
        vec![Vec::new()]
    } else {
        let mut g = Vec::new();
        for s in selectors {
            g.extend(parse_selector(s)?);
        }
        g
    };
    let mut seen: HashSet<SeriesId> = HashSet::new();
    let mut out = Vec::new();
    for group in &groups {
        let found = if range.is_unbounded() {
            view.select_series(group)
        } else {
            let start = range.start.unwrap_or(i64::MIN / 4);
            let end = range.end.unwrap_or(i64::MAX / 4);
            view.series_in_range(group, start, end).await?
        };
        for (id, labels) in found {
            if seen.insert(id) {
                out.push((id, labels));
            }
        }
    }
    if groups.len() > 1 {
        out.sort_by(|a, b| a.1.as_slice().cmp(b.1.as_slice()));
    }
    Ok(out)
}

/// Label sets of the series selected by any of `selectors` with samples in `range`, sorted.
pub async fn series(
    view: &ReadView,
    selectors: &[String],
    range: TimeRange,
) -> Result<Vec<Labels>> {
    Ok(select(view, selectors, range)
        .await?
        .into_iter()
        .map(|(_, l)| l)
        .collect())
}

/// Sorted label names of the selected series (every series of the scope without selectors).
pub async fn label_names(
    view: &ReadView,
    selectors: &[String],
    range: TimeRange,
) -> Result<Vec<String>> {
    if selectors.is_empty() && range.is_unbounded() && view.scope().is_fleet() {
        // the whole catalog: straight from the inverted index
        return Ok(view.store().label_names());
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let found = select(view, selectors, range).await?;
    for (_, labels) in &found {
        for l in labels {
            if seen.insert(&l.name) {
                names.insert(l.name.to_string());
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// Sorted values of label `name` on the selected series.
pub async fn label_values(
    view: &ReadView,
    name: &str,
    selectors: &[String],
    range: TimeRange,
) -> Result<Vec<String>> {
    if selectors.is_empty() && range.is_unbounded() && view.scope().is_fleet() {
        return Ok(view.store().label_values(name));
    }
    // Only series that have the label: `name != ""` narrows the selection through the index.
    let has = Matcher::new(fleetgate_store::MatchOp::NotEqual, name, "")?;
    let groups: Vec<String> = selectors.to_vec();
    let found = if groups.is_empty() {
        if range.is_unbounded() {
            view.select_series(std::slice::from_ref(&has))
        } else {
            let start = range.start.unwrap_or(i64::MIN / 4);
            let end = range.end.unwrap_or(i64::MAX / 4);
            view.series_in_range(std::slice::from_ref(&has), start, end)
                .await?
        }
    } else {
        select(view, &groups, range).await?
    };
    let mut values: BTreeSet<&str> = BTreeSet::new();
    for (_, labels) in &found {
        if let Some(v) = labels.get(name) {
            values.insert(v);
        }
    }
    Ok(values.into_iter().map(str::to_string).collect())
}
