//! WAL durability: torn tails, damaged records in any segment (replay resynchronises and keeps
//! the segment aside), segment removal after flush.

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

/// Samples per batch of [`write_segments`]; one samples record is 9 + 4 + 50 × 24 = 1,213 bytes.
const BATCH: i64 = 50;
const RECORD: usize = 1213;

/// Writes `batches` batches of [`BATCH`] samples with 4 KiB segments: the first segment holds
/// the series record and 4 batches, each later one 4 batches; the newest holds what is left.
async fn write_segments(dir: &Path, batches: i64) {
    let mut o = opts(dir);
    o.wal_segment_bytes = 4096;
    let store = fleetgate_store::Store::open(o).await.unwrap();
    let a = series(&store, "g", &[]);
    for i in 0..batches {
        let batch: Vec<_> = (0..BATCH)
            .map(|j| s(a, T0 + i * 100 + j, (i * 100 + j) as f64))
            .collect();
        store.append(&batch).await.unwrap();
    }
}

/// What a reopened store holds of `g`: the timestamps' batch numbers.
async fn batches_kept(dir: &Path) -> (Vec<i64>, fleetgate_store::StoreStats) {
    let store = open(dir).await;
    let out = store
        .scan(&[Matcher::equal("__name__", "g")], T0, T0 + 100_000)
        .await
        .unwrap();
    let mut b: Vec<i64> = out[0].timestamps.iter().map(|t| (t - T0) / 100).collect();
    assert_eq!(b.len() % BATCH as usize, 0, "whole batches only");
    b.dedup();
    (b, store.stats())
}

fn damaged_copies(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal/damaged"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_damaged_record_in_an_older_segment_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), 18).await;
    let segs = segments(dir.path());
    // second segment: batches 4..8; damage the payload of its second record (batch 5)
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[8 + RECORD + 100] ^= 0x5a;
    std::fs::write(&segs[1], &bytes).unwrap();
    let (kept, stats) = batches_kept(dir.path()).await;
    let want: Vec<i64> = (0..18).filter(|b| *b != 5).collect();
    assert_eq!(
        kept, want,
        "every intact record of the segment and after it"
    );
    assert_eq!(stats.wal_corrupt_records, 1);
    assert_eq!(stats.wal_corrupt_bytes, RECORD as u64);
    assert_eq!(stats.wal_damaged_segments, 1);
    assert_eq!(damaged_copies(dir.path()), 1, "the segment is kept aside");
    assert_eq!(
        std::fs::read(&segs[1]).unwrap(),
        bytes,
        "older segments are not cut"
    );
}

#[tokio::test]
async fn a_bad_header_and_a_broken_length_are_resynchronised() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), 18).await;
    let segs = segments(dir.path());
    // segment 2: magic overwritten; segment 3: the first record's length field smashed, so
    // framing is lost and the next record must be found by scanning
    let mut b2 = std::fs::read(&segs[1]).unwrap();
    b2[..4].copy_from_slice(b"XXXX");
    std::fs::write(&segs[1], &b2).unwrap();
    let mut b3 = std::fs::read(&segs[2]).unwrap();
    b3[8..12].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&segs[2], &b3).unwrap();
    let (kept, stats) = batches_kept(dir.path()).await;
    let want: Vec<i64> = (0..18).filter(|b| *b != 8).collect();
    assert_eq!(kept, want);
    assert_eq!(stats.wal_corrupt_records, 2, "the header and one record");
    assert_eq!(stats.wal_damaged_segments, 2);
    assert_eq!(damaged_copies(dir.path()), 2);
}

#[tokio::test]
async fn damage_inside_the_newest_segment_is_not_mistaken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), 18).await;
    let seg = last_nonempty(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    assert_eq!(
        bytes.len(),
        8 + 2 * RECORD,
        "the newest segment holds batches 16 and 17"
    );
    bytes[8 + 100] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();
    let (kept, stats) = batches_kept(dir.path()).await;
    assert_eq!(kept, (0..16).chain([17]).collect::<Vec<_>>());
    assert_eq!(stats.wal_corrupt_records, 1);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        bytes.len() as u64,
        "not truncated"
    );
    // a second reopen finds the same (the damaged copy is not replayed)
    let (again, _) = batches_kept(dir.path()).await;
    assert_eq!(again, kept);
}
