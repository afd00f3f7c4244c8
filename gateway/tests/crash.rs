//! kill -9 during sustained ingest, at several points: every acknowledged sample survives, none twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

const SERIES: usize = 40;

#[test]
fn kill9_during_sustained_ingest_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(
        dir.path(),
        "storage:\n  flush_interval: 1s\n  maintenance_interval: 200ms\n  compaction_min_files: 2",
    );
    let data = dir.path().join("data");
    let t0 = now_ms() - 600_000;
    // acked[writer] = ks acknowledged with 204
    let mut acked: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); 2];
    let mut next_k = [0i64; 2];
    for (round, run_ms) in [300u64, 1_300, 2_700].into_iter().enumerate() {
        let gw = Gateway::start(&data, Some(&cfg), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (w, start_k) in next_k.iter().enumerate() {
            let addr = gw.addr.clone();
            let stop = Arc::clone(&stop);
            let mut k = *start_k;
            handles.push(std::thread::spawn(move || {
                let mut ok = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let body = writer_request("crash_metric", SERIES, w, k, t0);
                    let h = vec![
                        ("Content-Encoding".to_string(), "snappy".to_string()),
                        ("Authorization".to_string(), "Bearer tok-a".to_string()),
                    ];
                    match http_request(&addr, "POST", "/api/v1/write", &h, &body) {
                        Ok((204, _)) => ok.push(k),
                        // killed mid-request (no status line, or connection error): not acknowledged
                        Ok((0, _)) | Err(_) => break,
                        Ok((code, body)) => panic!("unexpected {code}: {body}"),
                    }
                    k += 1;
                }
                (ok, k)
            }));
        }
        std::thread::sleep(Duration::from_millis(run_ms));
        gw.kill9();
        stop.store(true, Ordering::Relaxed);
        for (w, h) in handles.into_iter().enumerate() {
            let (ok, k) = h.join().unwrap();
            assert!(
                !ok.is_empty() || round == 0,
                "writer {w} made no progress in round {round}"
            );
            acked[w].extend(ok);
            next_k[w] = k + 1;
        }
    }
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let all = gw.export("crash_metric");
    let mut by_writer: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for s in all {
        by_writer
            .entry(s.labels["writer"].clone())
            .or_default()
            .push(s);
    }
    for (w, acked_w) in acked.iter().enumerate() {
        let series = by_writer
            .get(&w.to_string())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert_eq!(series.len(), SERIES, "writer {w}: every series present");
        for s in series {
            assert!(
                s.timestamps.windows(2).all(|p| p[0] < p[1]),
                "no duplicate or unordered timestamps in {:?}",
                s.labels
            );
            let stored: BTreeSet<i64> = s.timestamps.iter().map(|t| (t - t0) / 10).collect();
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                assert_eq!(((t - t0) / 10) as f64, *v, "value matches its write");
            }
            let missing: Vec<_> = acked_w.difference(&stored).collect();
            assert!(
                missing.is_empty(),
                "writer {w} {:?}: acknowledged but lost: {missing:?}",
                s.labels
            );
        }
    }
    assert!(
        acked.iter().map(BTreeSet::len).sum::<usize>() > 20,
        "enough acknowledged writes to mean something"
    );
    gw.stop();
}
