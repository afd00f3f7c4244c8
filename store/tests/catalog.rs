//! Catalog compaction: many flushes with new series end up in one catalog file, ids and labels
//! survive reopen, and a crash between writing the merged file and deleting its inputs is harmless.

use std::path::{Path, PathBuf};

use fleetgate_store::{Error, Labels, MatchOp, Matcher, SeriesId, Store};

use crate::common::*;

/// `MAX_CATALOG_FILES` in `store/src/catalog_compaction.rs`.
const MAX_CATALOG_FILES: usize = 8;

fn catalog_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("catalog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    v.sort();
    v
}

fn file_name(first: u64, last: u64) -> String {
    format!("series-{first:020}-{last:020}.parquet")
}

fn all() -> [Matcher; 1] {
    [Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()]
}

/// One flush that persists `n` new series of metric `m{round}`; returns them.
async fn round_of_series(store: &Store, round: usize, n: usize) -> Vec<(SeriesId, Labels)> {
    let metric = format!("m{}", round % 3);
    let mut out = Vec::new();
    for i in 0..n {
        let job = format!("job-{round}-{i}");
        let l = labels(&metric, &[("cluster", "c1"), ("job", &job)]);
        let (id, created) = store.series_id(&l).unwrap();
        assert!(created);
        store
            .append(&[s(id, T0 + round as i64 * 1000, i as f64)])
            .await
            .unwrap();
        out.push((id, l));
    }
    store.flush().await.unwrap();
    out
}

fn check_series(store: &Store, known: &[(SeriesId, Labels)]) {
    for (id, l) in known {
        assert_eq!(store.lookup(l), Some(*id), "{l}");
        assert_eq!(store.labels_of(*id).as_ref(), Some(l), "{id}");
    }
    assert_eq!(store.stats().series_total, known.len() as u64);
    let mut expected: Vec<(SeriesId, Labels)> = known.to_vec();
    expected.sort_by(|a, b| a.1.as_slice().cmp(b.1.as_slice()));
    assert_eq!(store.select_series(&all()), expected);
}

#[tokio::test]
async fn many_flushes_compact_the_catalog_into_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut known = Vec::new();
    let rounds = 2 * MAX_CATALOG_FILES + 4;
    for round in 0..rounds {
        known.extend(round_of_series(&store, round, 3).await);
    }
    assert_eq!(catalog_files(dir.path()).len(), rounds);
    assert_eq!(store.stats().catalog_files, rounds as u64);
    let sel = [
        Matcher::equal("__name__", "m1"),
        Matcher::equal("job", "job-4-2"),
    ];
    let one_before = store.select_series(&sel);
    assert_eq!(one_before.len(), 1);
    let scan_before = store.scan(&all(), T0, T0 + 3_600_000).await.unwrap();

    let m = store.maintain(T0 + 60_000).await.unwrap();
    assert_eq!(m.catalog_compacted_files, rounds as u64);
    let n = known.len() as u64;
    assert_eq!(
        catalog_files(dir.path()),
        vec![dir.path().join("catalog").join(file_name(1, n))]
    );
    let st = store.stats();
    assert_eq!((st.catalog_files, st.catalog_compactions_total), (1, 1));
    check_series(&store, &known);
    assert_eq!(store.select_series(&sel), one_before);

    // nothing to do with a single file
    let m = store.maintain(T0 + 120_000).await.unwrap();
    assert_eq!(m.catalog_compacted_files, 0);
    assert_eq!(store.stats().catalog_compactions_total, 1);
    drop(store);

    let store = open(dir.path()).await;
    check_series(&store, &known);
    assert_eq!(store.select_series(&sel), one_before);
    assert_eq!(store.stats().catalog_files, 1);
    assert_eq!(
        store.scan(&all(), T0, T0 + 3_600_000).await.unwrap(),
        scan_before
    );
    // ids are not reused after compaction + reopen
    let (id, created) = store.series_id(&labels("fresh", &[])).unwrap();
    assert!(created);
    assert_eq!(id, n + 1);
}

/// Compaction as part of regular maintenance: the file count stays bounded and every round's
/// series stay resolvable, across reopens.
#[tokio::test]
async fn catalog_stays_bounded_under_regular_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).await;
    let (mut known, mut compactions) = (Vec::new(), 0);
    for round in 0..3 * MAX_CATALOG_FILES {
        known.extend(round_of_series(&store, round, 2).await);
        let m = store.maintain(T0 + 60_000).await.unwrap();
        compactions += u64::from(m.catalog_compacted_files > 0);
        let files = catalog_files(dir.path()).len();
        assert!(files <= MAX_CATALOG_FILES, "{files} catalog files");
        assert_eq!(store.stats().catalog_files, files as u64);
        if round % 7 == 6 {
            drop(store);
            store = open(dir.path()).await;
            check_series(&store, &known);
        }
    }
    check_series(&store, &known);
    // 9 files after round 8 → 1, then 1 + 8 more after round 16
    assert_eq!(compactions, 2);
}

/// A crash after the merged file is written but before the inputs are deleted (all of them, or
/// only some) leaves overlapping ranges: open de-duplicates, and the next maintenance merges
/// again regardless of the file count.
#[tokio::test]
async fn crash_between_catalog_merge_and_input_delete_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut known = Vec::new();
    for round in 0..=MAX_CATALOG_FILES {
        known.extend(round_of_series(&store, round, 4).await);
    }
    let saved: Vec<(PathBuf, Vec<u8>)> = catalog_files(dir.path())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert_eq!(saved.len(), MAX_CATALOG_FILES + 1);
    store.maintain(T0 + 60_000).await.unwrap();
    let n = known.len() as u64;
    let merged = dir.path().join("catalog").join(file_name(1, n));
    assert_eq!(catalog_files(dir.path()), vec![merged.clone()]);
    drop(store);

    // every input "un-deleted"
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    let store = open(dir.path()).await;
    assert_eq!(store.stats().catalog_files, saved.len() as u64 + 1);
    check_series(&store, &known);
    known.extend(round_of_series(&store, 100, 1).await);
    assert_eq!(known.last().unwrap().0, n + 1);
    let m = store.maintain(T0 + 60_000).await.unwrap();
    assert_eq!(m.catalog_compacted_files, saved.len() as u64 + 2);
    assert_eq!(
        catalog_files(dir.path()),
        vec![dir.path().join("catalog").join(file_name(1, n + 1))]
    );
    check_series(&store, &known);
    drop(store);

    // only some inputs left: fewer files than the threshold, but overlapping
    let store = open(dir.path()).await;
    check_series(&store, &known);
    drop(store);
    for (p, b) in &saved[..2] {
        std::fs::write(p, b).unwrap();
    }
    let store = open(dir.path()).await;
    assert_eq!(store.stats().catalog_files, 3);
    check_series(&store, &known);
    let m = store.maintain(T0 + 60_000).await.unwrap();
    assert_eq!(
        m.catalog_compacted_files, 2,
        "the merged file is rewritten in place"
    );
    assert_eq!(
        catalog_files(dir.path()),
        vec![dir.path().join("catalog").join(file_name(1, n + 1))]
    );
    check_series(&store, &known);
    drop(store);
    let store = open(dir.path()).await;
    check_series(&store, &known);
    assert_eq!(store.stats().catalog_compactions_total, 0);
}

/// Two catalog files giving the same id different labels is corruption, not a silent pick.
#[tokio::test]
async fn conflicting_labels_for_one_id_are_corrupt() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, metric) in [(&a, "x"), (&b, "y")] {
        let store = open(dir.path()).await;
        series(&store, metric, &[]);
        store.close().await.unwrap();
    }
    // b's file for id 1, under a name that does not replace a's
    std::fs::copy(
        b.path().join("catalog").join(file_name(1, 1)),
        a.path().join("catalog").join(file_name(1, 2)),
    )
    .unwrap();
    let err = Store::open(opts(a.path())).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("series 1"), "{err}");

    // an id outside the range the file's name claims is corrupt too
    std::fs::remove_file(a.path().join("catalog").join(file_name(1, 2))).unwrap();
    std::fs::copy(
        b.path().join("catalog").join(file_name(1, 1)),
        a.path().join("catalog").join(file_name(2, 2)),
    )
    .unwrap();
    let err = Store::open(opts(a.path())).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    // identical duplicates are fine
    std::fs::remove_file(a.path().join("catalog").join(file_name(2, 2))).unwrap();
    std::fs::copy(
        a.path().join("catalog").join(file_name(1, 1)),
        a.path().join("catalog").join(file_name(1, 2)),
    )
    .unwrap();
    let store = open(a.path()).await;
    assert_eq!(store.stats().series_total, 1);
    assert_eq!(store.labels_of(1), Some(labels("x", &[])));
}

/// Flushes writing new catalog files while maintenance compacts them: none is lost (flush and
/// maintenance share the maintenance mutex).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_and_catalog_compaction_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let writer = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            let mut known = Vec::new();
            for round in 0..40 {
                known.extend(round_of_series(&store, round, 2).await);
            }
            known
        })
    };
    let maint = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..200 {
                store.maintain(T0 + 60_000).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let known = writer.await.unwrap();
    maint.await.unwrap();
    store.maintain(T0 + 60_000).await.unwrap();
    assert!(catalog_files(dir.path()).len() <= MAX_CATALOG_FILES);
    assert!(store.stats().catalog_compactions_total >= 1);
    check_series(&store, &known);
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    check_series(&store, &known);
}
