//! Series lifecycle: a series with no sample left in the store (every file that held it expired
//! under retention, nothing in the memtables) leaves the catalog, the index and the selection
//! caches; the catalog files are then rewritten without it.
//!
//! **When.** A pass runs in maintenance after retention deleted files, and once after open (a
//! crash may have left removed series in catalog files not yet rewritten; they are found again).
//!
//! **Which ids.** Only ids up to the persisted watermark of the *previous* pass (at open: the
//! catalog files' highest id) are candidates, so a series created moments ago whose first append
//! is still on its way is never taken for dead. A candidate is live when any sample file lists it
//! (from the files' series tables; a file whose table cannot be read keeps its whole id range
//! live) or a memtable holds it.
//!
//! **Racing writers.** The removal itself runs under the append gate held exclusively, so no
//! append is half-way; appends check every id against the catalog under the gate, and an append
//! that still carries a removed id (resolved just before the pass) gets
//! [`crate::Error::SeriesRemoved`], which ingest answers with a retryable 503 after dropping the id
//! from its series cache; the retry creates the series afresh under a new id.
//!
//! **Ids are never reused.** A removed id stays inside its catalog file's range (the rewritten
//! file keeps `[first, last]` in its name), so the highest id never goes back after a restart.

use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::labels::SeriesId;
use crate::partition::FileMeta;
use crate::partition::read::series_table;
use crate::store::{MaintState, Store};

/// What one pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GcPass {
    /// Candidate series examined.
    pub(crate) candidates: u64,
    /// Series removed.
    pub(crate) removed: u64,
}

/// Runs a pass when one is due. Must be called with the maintenance mutex held (no flush or
/// compaction changes the file set meanwhile).
pub(crate) async fn run(store: &Store, ms: &mut MaintState) -> Result<Option<GcPass>> {
    if !ms.gc_due {
        return Ok(None);
    }
    let t0 = Instant::now();
    let floor = ms.gc_floor;
    let next_floor = ms.persisted_max_id;
    // Candidates: every series up to the floor, ascending.
    let candidates: Vec<SeriesId> = store.catalog.read().ids_upto(floor);
    let mut live = vec![false; candidates.len()];
    if !candidates.is_empty() {
        let files: Vec<Arc<FileMeta>> = store.files.read().all();
        for f in files {
            if f.rows == 0 || f.min_id > floor {
                continue;
            }
            match series_table(&store.objects, &store.caches, &f).await {
                Ok(table) => mark(&candidates, &mut live, table.ids()),
                Err(e) => {
                    tracing::warn!(
                        file = %f.path,
                        error = %e,
                        "series table unreadable: its whole id range counts as live"
                    );
                    let a = candidates.partition_point(|id| *id < f.min_id);
                    let b = candidates.partition_point(|id| *id <= f.max_id);
                    live[a..b].iter_mut().for_each(|l| *l = true);
                }
            }
        }
    }
    let mut dead: Vec<SeriesId> = candidates
        .iter()
        .zip(&live)
        .filter(|(_, l)| !**l)
        .map(|(id, _)| *id)
        .collect();
    let removed = if dead.is_empty() {
        0
    } else {
        store.remove_series(&mut dead)
    };
    ms.gc_due = false;
    ms.gc_floor = next_floor;
    if removed > 0 {
        ms.catalog_rewrite = true;
        tracing::info!(
            candidates = candidates.len(),
            removed,
            series = store.catalog.read().len(),
            ms = t0.elapsed().as_millis() as u64,
            "series without samples left the catalog"
        );
    }
    Ok(Some(GcPass {
        candidates: candidates.len() as u64,
        removed,
    }))
}

/// Marks `live[i]` for every `candidates[i]` in `ids` (both ascending).
fn mark(candidates: &[SeriesId], live: &mut [bool], ids: &[SeriesId]) {
    if ids.len() * 8 < candidates.len() {
        for id in ids {
            if let Ok(i) = candidates.binary_search(id) {
                live[i] = true;
            }
        }
        return;
    }
    let mut j = 0;
    for (i, c) in candidates.iter().enumerate() {
        while j < ids.len() && ids[j] < *c {
            j += 1;
        }
        if j == ids.len() {
            break;
        }
        if ids[j] == *c {
            live[i] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_walks_and_searches() {
        let c = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20];
        let mut live = vec![false; c.len()];
        mark(&c, &mut live, &[1, 4, 5, 20, 30]);
        assert_eq!(
            live,
            [
                false, true, false, false, false, false, false, false, false, true
            ]
        );
        let mut live = vec![false; c.len()];
        mark(&c, &mut live, &[6]);
        assert!(live[2] && live.iter().filter(|l| **l).count() == 1);
    }
}
