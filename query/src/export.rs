//! Raw-sample export: every sample of the series matching any of several selectors in a time range.

use std::collections::BTreeMap;

use fleetgate_store::{SeriesData, Store};

use crate::error::{Error, Result};
use crate::selector::parse_selector;

/// Scans the series selected by any of `selectors` (union, each series once) in `[start_ms, end_ms]`,
/// sorted by labels.
pub async fn export(
    store: &Store,
    selectors: &[String],
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<SeriesData>> {
    if selectors.is_empty() {
        return Err(Error::BadParam {
            param: "match[]",
            reason: "at least one series selector is required".into(),
        });
    }
    if end_ms < start_ms {
        return Err(Error::BadParam {
            param: "end",
            reason: "end is before start".into(),
        });
    }
    let mut by_id: BTreeMap<u64, SeriesData> = BTreeMap::new();
    for s in selectors {
        for group in parse_selector(s)? {
            for series in store.scan(&group, start_ms, end_ms).await? {
                by_id.entry(series.id).or_insert(series);
            }
        }
    }
    let mut out: Vec<SeriesData> = by_id.into_values().collect();
    out.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
    Ok(out)
}
