//! Catalog compaction: every flush that saw new series adds one
//! `catalog/series-{first}-{last}.parquet` file, and all of them are read at open. When there are
//! more than [`MAX_CATALOG_FILES`] of them, when their id ranges overlap (left behind by a
//! crash, see below), or when series were removed (`series_gc`), maintenance merges them all
//! into one file covering `[min first, max last]` (removed series left out, their ids still
//! inside the range so that they are never handed out again), writes it durably (fsync of the
//! file and its directory on the local filesystem) and only then deletes the inputs.
//!
//! **Crash safety.** A crash after the merged file is written but before (all) the inputs are
//! deleted leaves overlapping ranges. Open loads every file and de-duplicates by id: ids are never
//! reused, so an id seen twice carries the same labels, and different labels are
//! [`Error::Corrupt`](crate::Error::Corrupt) (see [`catalog::load_into`]). The next maintenance
//! sees the overlap and compacts again, whatever the file count; if that merge has the same range
//! as the leftover merged file, it is overwritten in place (an atomic put) and not deleted.
//!
//! **Source.** The merged rows come from the in-memory catalog, which for ids up to the persisted
//! watermark holds exactly what the files hold (loaded from them at open, or the very labels a
//! flush wrote to them): this saves re-reading and decoding every file, and shares the interned
//! strings instead of duplicating them. They are copied out in chunks so that series creation
//! (which takes the catalog's write lock) never waits for a whole-catalog copy.
//!
//! **Concurrency.** Flush is the only other writer of catalog files, and both run under the
//! maintenance mutex (`Store::flush` and `Store::maintain` take it; `close` goes through `flush`),
//! so no catalog file can appear mid-compaction. Even so, the compaction deletes exactly the inputs
//! it merged, never the result of a fresh listing, so a file written concurrently would survive.

use std::time::Instant;

use bytes::Bytes;

use crate::catalog::{self, CatalogFile};
use crate::error::{Error, Result};
use crate::labels::{Labels, SeriesId};
use crate::store::Store;

/// Catalog compaction starts when there are more catalog files than this.
pub(crate) const MAX_CATALOG_FILES: usize = 8;

/// Ids copied out of the catalog per read-lock acquisition.
const COPY_CHUNK: SeriesId = 65_536;

/// What one catalog compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatalogCompaction {
    /// Input files merged (including a leftover merged file that was overwritten).
    pub(crate) inputs: u64,
    /// Input files deleted.
    pub(crate) removed: u64,
    /// Series in the merged file.
    pub(crate) series: u64,
}

/// True when `files` should be merged: too many, or overlapping id ranges.
pub(crate) fn due(files: &[CatalogFile]) -> bool {
    if files.len() > MAX_CATALOG_FILES {
        return true;
    }
    let mut ranges: Vec<(SeriesId, SeriesId)> = files.iter().map(|f| (f.first, f.last)).collect();
    ranges.sort_unstable();
    let mut max_last: Option<SeriesId> = None;
    for (first, last) in ranges {
        if max_last.is_some_and(|m| first <= m) {
            return true;
        }
        max_last = Some(max_last.map_or(last, |m| m.max(last)));
    }
    false
}

/// Merges the catalog files `files` (the maintenance state's list, updated in place to what is
/// on the object store) when [`due`] or `force`d (series were removed: the merged file leaves
/// them out). Must be called with the maintenance mutex held.
pub(crate) async fn run(
    store: &Store,
    files: &mut Vec<CatalogFile>,
    force: bool,
) -> Result<Option<CatalogCompaction>> {
    if files.is_empty() || !(force || due(files)) {
        return Ok(None);
    }
    let t0 = Instant::now();
    let inputs: Vec<CatalogFile> = files.clone();
    let (Some(first), Some(last)) = (
        inputs.iter().map(|f| f.first).min(),
        inputs.iter().map(|f| f.last).max(),
    ) else {
        return Ok(None);
    };
    let merged = CatalogFile::new(first, last);

    let mut series: Vec<(SeriesId, Labels)> = Vec::new();
    let mut after = first.saturating_sub(1);
    while after < last {
        let upto = after.saturating_add(COPY_CHUNK).min(last);
        series.extend(store.catalog.read().range(after, upto));
        after = upto;
    }
    let n_series = series.len() as u64;
    let bytes = tokio::task::spawn_blocking(move || catalog::encode(&series))
        .await
        .map_err(|e| Error::Io {
            op: "catalog compaction task",
            path: merged.path.to_string(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let size = bytes.len() as u64;

    // Listed before the write: should the put fail half-way, a later compaction still sees the
    // (possibly present) merged file and folds it in.
    files.retain(|f| f.path != merged.path);
    files.push(merged.clone());
    store
        .objects
        .put_durable(&merged.path, Bytes::from(bytes))
        .await?;

    let mut removed = 0;
    for f in inputs.iter().filter(|f| f.path != merged.path) {
        store.objects.delete(&f.path).await?;
        files.retain(|x| x.path != f.path);
        removed += 1;
    }
    tracing::info!(
        files = inputs.len(),
        series = n_series,
        first,
        last,
        bytes = size,
        ms = t0.elapsed().as_millis() as u64,
        "catalog compaction"
    );
    Ok(Some(CatalogCompaction {
        inputs: inputs.len() as u64,
        removed,
        series: n_series,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(ranges: &[(SeriesId, SeriesId)]) -> Vec<CatalogFile> {
        ranges
            .iter()
            .map(|&(a, b)| CatalogFile::new(a, b))
            .collect()
    }

    #[test]
    fn due_on_count_or_overlap() {
        assert!(!due(&[]));
        assert!(!due(&files(&[(1, 40)])));
        let eight: Vec<_> = (0..8).map(|i| (i * 10 + 1, i * 10 + 10)).collect();
        assert!(!due(&files(&eight)));
        let nine: Vec<_> = (0..9).map(|i| (i * 10 + 1, i * 10 + 10)).collect();
        assert!(due(&files(&nine)));
        // merged file left beside (some of) its inputs by a crash
        assert!(due(&files(&[(1, 40), (31, 40)])));
        assert!(due(&files(&[(41, 45), (1, 5), (1, 40)])));
        // overlap hidden behind a short range
        assert!(due(&files(&[(1, 40), (2, 3), (39, 41)])));
        assert!(!due(&files(&[(6, 10), (1, 5), (11, 11)])));
    }
}
