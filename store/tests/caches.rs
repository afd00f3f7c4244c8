//! The per-file series-table and footer caches are bounded: a store whose caches are far too
//! small for its files (evicting all the time) answers exactly like one with room to spare.

use fleetgate_store::{CacheOptions, MatchOp, Matcher, SeriesData, Store};

use crate::common::*;

const H: i64 = 3_600_000;

async fn scans(store: &Store) -> Vec<Vec<SeriesData>> {
    let all = [Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()];
    let some = [Matcher::new(MatchOp::RegexMatch, "instance", "i1.*").unwrap()];
    let one = [Matcher::equal("instance", "i77")];
    let mut out = Vec::new();
    for _ in 0..2 {
        out.push(store.scan(&all, T0, T0 + 6 * H).await.unwrap());
        out.push(store.scan(&some, T0 + H / 2, T0 + 4 * H).await.unwrap());
        out.push(store.scan(&one, T0, T0 + 6 * H).await.unwrap());
        out.push(
            store
                .scan(&one, T0 + 2 * H, T0 + 2 * H + 60_000)
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn tiny_caches_read_the_same_as_large_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).await;
        let ids: Vec<_> = (0..300)
            .map(|i| {
                let inst = format!("i{i}");
                series(
                    &store,
                    &format!("m{}", i % 7),
                    &[("instance", inst.as_str())],
                )
            })
            .collect();
        // two overlapping writes per hour → two files per partition, later one wins
        for round in 0..2i64 {
            let batch: Vec<_> = (0..6 * 12)
                .flat_map(|k| {
                    ids.iter()
                        .enumerate()
                        .filter(move |(i, _)| *i as i64 % 3 != round)
                        .map(move |(i, id)| {
                            s(*id, T0 + k * 300_000 + i as i64, (round * 1000 + k) as f64)
                        })
                })
                .collect();
            store.append(&batch).await.unwrap();
            store.flush().await.unwrap();
        }
        assert_eq!(store.stats().files, 12);
        store.close().await.unwrap();
    }

    let big = open(dir.path()).await;
    let st = big.stats();
    assert!(st.series_table_cache_bytes > 12 * 16 * 200, "{st:?}");
    assert!(st.parquet_metadata_cache_bytes > 0, "{st:?}");
    let expected = scans(&big).await;
    assert_eq!(expected[0].len(), 300);
    assert_eq!(expected[2].len(), 1);
    drop(big);

    // 4 KiB holds about one series table and no footer; 1 byte holds nothing at all.
    for bytes in [4096, 1] {
        let caches = CacheOptions {
            series_table_cache_bytes: bytes,
            parquet_metadata_cache_bytes: bytes,
        };
        let small = Store::open_with_caches(opts(dir.path()), caches)
            .await
            .unwrap();
        assert_eq!(scans(&small).await, expected, "cache {bytes} B");
        let st = small.stats();
        assert!(st.series_table_cache_bytes <= bytes, "{st:?}");
        assert!(st.parquet_metadata_cache_bytes <= bytes, "{st:?}");
        assert_eq!(st.files, 12);
        drop(small);
    }

    // compaction and fresh writes under eviction pressure
    let caches = CacheOptions {
        series_table_cache_bytes: 4096,
        parquet_metadata_cache_bytes: 4096,
    };
    let o = fleetgate_store::StoreOptions {
        compaction_min_files: 2,
        ..opts(dir.path())
    };
    let small = Store::open_with_caches(o, caches).await.unwrap();
    let m = small.maintain(T0 + 8 * H).await.unwrap();
    assert_eq!(m.compacted_partitions, 6);
    assert_eq!(small.stats().files, 6);
    assert_eq!(scans(&small).await, expected);
    let id = small.lookup(&labels("m0", &[("instance", "i0")])).unwrap();
    small.append(&[s(id, T0 + 1, -1.0)]).await.unwrap();
    small.flush().await.unwrap();
    let out = small
        .scan(&[Matcher::equal("instance", "i0")], T0, T0 + 10)
        .await
        .unwrap();
    assert_eq!(points(&out[0]), vec![(T0, 1000.0), (T0 + 1, -1.0)]);
}
