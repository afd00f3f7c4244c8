//! Entry points for the fuzz targets in `fuzz/`: the store's decoders of on-disk bytes, reachable
//! without a data directory. Not an API (hidden from the docs; may change with any release).

use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};

use crate::error::Result;
use crate::objects::Objects;
use crate::partition::cache::FileCaches;
use crate::partition::{self, read};
use crate::wal::record::Record;
use crate::wal::segment;

/// Replays `bytes` as one WAL segment, as the store does at open: `(records, samples, damaged
/// stretches)`, or `None` for a format version this build refuses.
pub fn wal_segment(bytes: &[u8]) -> Option<(u64, u64, usize)> {
    let mut samples = 0u64;
    let r = segment::read_segment_bytes(bytes, &mut |rec| {
        if let Record::Samples(s) = rec {
            samples += s.len() as u64;
        }
    })
    .ok()?;
    Some((r.records, samples, r.bad.len()))
}

/// Opens `bytes` as an hour partition's sample file, as the store does at open (footer, schema,
/// key-value metadata, series table), then reads every series it lists: the number of samples.
pub async fn sample_file(bytes: Vec<u8>) -> Result<usize> {
    let store = Arc::new(InMemory::new());
    let path = partition::file_path(0, 1, 0);
    let size = bytes.len() as u64;
    store
        .put(&path, PutPayload::from_bytes(Bytes::from(bytes)))
        .await?;
    let objects = Objects::new(std::path::Path::new("."), Some(store))?;
    let caches = FileCaches::new(1 << 20, 1 << 20);
    let meta = read::load_meta(&objects, &caches, path, size, 0, 1, 0).await?;
    read::series_table(&objects, &caches, &meta).await?;
    let chunks = read::read_series(&objects, &caches, &meta, None).await?;
    Ok(chunks.iter().map(|c| c.1.len()).sum())
}

pub use crate::partition::read::in_contained_decode;

/// Wraps the current panic hook (libFuzzer's, which aborts) so that a panic the store contains
/// (inside a Parquet/Arrow decode, turned into [`crate::Error::Corrupt`], see
/// [`in_contained_decode`]) is reported once per location on stderr and does not abort; every
/// other panic still reaches the previous hook. Call once, from the first fuzz iteration.
pub fn install_contained_panic_hook() {
    let previous = std::panic::take_hook();
    let seen = std::sync::Mutex::new(std::collections::HashSet::<String>::new());
    std::panic::set_hook(Box::new(move |info| {
        if !in_contained_decode() {
            return previous(info);
        }
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let new = seen
            .lock()
            .map(|mut s| s.insert(at.clone()))
            .unwrap_or(false);
        if new {
            eprintln!("contained decoder panic (an error, not a crash) at {at}: {info}");
        }
    }));
}
