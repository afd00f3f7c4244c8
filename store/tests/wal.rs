//! WAL durability: torn tails, CRC corruption, segment removal after flush.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use fleetgate_store::Matcher;

use crate::common::*;

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// The newest segment that holds records (the store starts a fresh one at open).
fn last_nonempty(dir: &Path) -> PathBuf {
    segments(dir)
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap()
}

async fn write_two_batches(dir: &Path) -> u64 {
    let store = open(dir).await;
    let a = series(&store, "g", &[]);
    store
        .append(&[s(a, T0, 1.0), s(a, T0 + 1, 2.0)])
        .await
        .unwrap();
    store
        .append(&[s(a, T0 + 2, 3.0), s(a, T0 + 3, 4.0)])
        .await
        .unwrap();
    a
}

#[tokio::test]
async fn torn_tail_is_truncated_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    write_two_batches(dir.path()).await;
    let seg = last_nonempty(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    // cut the second samples record in half (4 samples × 24 B + 13 B header → cut 30 B)
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 10)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, 1.0), (T0 + 1, 2.0)]);
    // the file was truncated at the record boundary
    let new_len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(new_len, len - (9 + 4 + 2 * 24));
    // and new writes after reopen survive another reopen
    let a = store.lookup(&labels("g", &[])).unwrap();
    store.append(&[s(a, T0 + 5, 5.0)]).await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        points(&out[0]),
        vec![(T0, 1.0), (T0 + 1, 2.0), (T0 + 5, 5.0)]
    );
}

#[tokio::test]
async fn crc_corruption_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    write_two_batches(dir.path()).await;
    let seg = last_nonempty(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x55; // inside the last record's payload
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 10)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, 1.0), (T0 + 1, 2.0)]);
}

#[tokio::test]
async fn segments_removed_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.wal_segment_bytes = 4096;
    let store = fleetgate_store::Store::open(o).await.unwrap();
    let a = series(&store, "g", &[]);
    for i in 0..20 {
        let batch: Vec<_> = (0..50).map(|j| s(a, T0 + i * 100 + j, 1.0)).collect();
        store.append(&batch).await.unwrap();
    }
    assert!(segments(dir.path()).len() > 5, "segments rotate by size");
    let before = store.stats().wal_bytes;
    let fs = store.flush().await.unwrap();
    assert!(fs.wal_segments_removed > 5);
    let left = segments(dir.path());
    assert_eq!(left.len(), 1);
    assert_eq!(std::fs::metadata(&left[0]).unwrap().len(), 8);
    assert!(store.stats().wal_bytes < before);
    drop(store);
    let store = open(dir.path()).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 10_000)
        .await
        .unwrap();
    assert_eq!(out[0].timestamps.len(), 1000);
}
