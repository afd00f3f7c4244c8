//! Retention: whole hour partitions whose end is older than `now − retention` are deleted.

use std::sync::Arc;

use crate::error::Result;
use crate::partition::{self, FileMeta, HOUR_MS};
use crate::store::Store;

/// Deletes expired partitions; returns `(partitions, files)` removed.
pub(crate) async fn run(store: &Store, now_ms: i64) -> Result<(u64, u64)> {
    let cutoff = now_ms - store.opts.retention.as_millis() as i64;
    let expired: Vec<(i64, Vec<Arc<FileMeta>>)> = {
        let mut set = store.files.write();
        let expired: Vec<(i64, Vec<Arc<FileMeta>>)> = set
            .partitions()
            .filter(|(h, _)| h + HOUR_MS < cutoff)
            .map(|(h, v)| (h, v.clone()))
            .collect();
        for (h, files) in &expired {
            for f in files {
                set.remove(*h, &f.path);
            }
        }
        expired
    };
    let (mut parts, mut files) = (0, 0);
    for (hour, list) in expired {
        let bytes: u64 = list.iter().map(|f| f.size).sum();
        for f in list.iter() {
            // deleted once the reads that selected it are done (see `graveyard`)
            store.graveyard.retire(Arc::clone(f));
            files += 1;
        }
        parts += 1;
        tracing::info!(
            partition = %partition::partition_prefix(hour),
            files = list.len(),
            bytes,
            "retention delete"
        );
    }
    Ok((parts, files))
}
