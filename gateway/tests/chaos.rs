//! Chaos: `kill -9` at random instants while two clusters write concurrently, flushes and
//! compactions run and reads loop beside them. After every restart each acknowledged sample is
//! there exactly once, and no read fails while the process is up.
//!
//! `FLEETGATE_CHAOS_KILLS` sets the number of kills (default 12; the README's figure is from 100),
//! `FLEETGATE_CHAOS_SEED` replays a run (the seed is printed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

const SERIES: usize = 25;
/// (token, cluster) of each writer; two writers per cluster.
const WRITERS: [(&str, &str); 4] = [
    ("tok-a", "alpha"),
    ("tok-a", "alpha"),
    ("tok-b", "beta"),
    ("tok-b", "beta"),
];

/// xorshift64*: reproducible instants from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Writes until `stop` or the process dies; returns the acknowledged `k`s and the next `k`.
fn writer(addr: String, w: usize, mut k: i64, t0: i64, stop: Arc<AtomicBool>) -> (Vec<i64>, i64) {
    let h = vec![
        ("Content-Encoding".to_string(), "snappy".to_string()),
        (
            "Authorization".to_string(),
            format!("Bearer {}", WRITERS[w].0),
        ),
    ];
    let mut ok = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match http_request(
            &addr,
            "POST",
            "/api/v1/write",
            &h,
            &writer_request("chaos_metric", SERIES, w, k, t0),
        ) {
            Ok((204, _)) => ok.push(k),
            // killed mid-request: not acknowledged
            Ok((0, _)) | Err(_) => break,
            Ok((code, body)) => panic!("writer {w}: unexpected {code}: {body}"),
        }
        k += 1;
    }
    (ok, k)
}

/// Reads in a loop until `stop`; a failure counts only if the process was not being killed.
fn reader(addr: String, killing: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = match i % 3 {
            0 => "/api/v1/query?query=count%20by%20(cluster)%20(chaos_metric)".to_string(),
            1 => format!(
                "/api/v1/export?match[]={}",
                urlencode("{__name__=\"chaos_metric\",series=\"s1\"}")
            ),
            _ => "/api/v1/series?match[]=chaos_metric".to_string(),
        };
        i += 1;
        let r = http_get(&addr, &path);
        let down = killing.load(Ordering::Relaxed);
        match r {
            Ok((200, _)) => {}
            _ if down => break,
            Ok((code, body)) => failures.push(format!("{path}: {code} {body}")),
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    failures
}

#[test]
fn kill9_at_random_instants_under_load_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("FLEETGATE_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("FLEETGATE_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    eprintln!("chaos: {kills} kills, FLEETGATE_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // Samples three hours back land in a closed hour, so compaction runs on them too.
    let cfg = two_cluster_config(
        dir.path(),
        "storage:\n  flush_interval: 1s\n  maintenance_interval: 200ms\n  compaction_min_files: 2\n  memtable_flush_bytes: 262144\n",
    );
    let data = dir.path().join("data");
    let t0 = (now_ms() - 3 * 3_600_000) / 3_600_000 * 3_600_000;
    let mut acked: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); WRITERS.len()];
    let mut next_k = vec![0i64; WRITERS.len()];
    let mut read_failures = Vec::new();
    let started = Instant::now();
    let (mut flushes, mut compactions) = (0, 0);
    for round in 0..kills {
        let gw = Gateway::start(&data, Some(&cfg), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let killing = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = next_k
            .iter()
            .enumerate()
            .map(|(w, &k)| {
                let (addr, stop) = (gw.addr.clone(), Arc::clone(&stop));
                std::thread::spawn(move || writer(addr, w, k, t0, stop))
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (addr, k, s) = (gw.addr.clone(), Arc::clone(&killing), Arc::clone(&stop));
                std::thread::spawn(move || reader(addr, k, s))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.between(50, 1_500)));
        killing.store(true, Ordering::Relaxed);
        let lines = Arc::clone(&gw.stderr_lines);
        gw.kill9();
        for l in lines.lock().unwrap().iter() {
            flushes += usize::from(l.contains(" flush files="));
            compactions += usize::from(l.contains(" compaction partition="));
        }
        stop.store(true, Ordering::Relaxed);
        for (w, h) in writers.into_iter().enumerate() {
            let (ok, k) = h.join().unwrap();
            acked[w].extend(ok);
            next_k[w] = k + 1;
        }
        for h in readers {
            read_failures.extend(
                h.join()
                    .unwrap()
                    .into_iter()
                    .map(|f| format!("round {round}: {f}")),
            );
        }
    }
    assert!(
        read_failures.is_empty(),
        "reads failed while up: {read_failures:#?}"
    );

    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let mut by_writer: BTreeMap<String, Vec<ExportedSeries>> = BTreeMap::new();
    for s in gw.export("chaos_metric") {
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
        assert_eq!(series.len(), SERIES, "writer {w}: every series");
        for s in series {
            assert_eq!(
                s.labels["cluster"], WRITERS[w].1,
                "labelled with its cluster"
            );
            assert!(
                s.timestamps.windows(2).all(|p| p[0] < p[1]),
                "a duplicated or unordered sample in {:?}",
                s.labels
            );
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                assert_eq!(((t - t0) / 10) as f64, *v, "value matches its write");
            }
            let stored: BTreeSet<i64> = s.timestamps.iter().map(|t| (t - t0) / 10).collect();
            let missing: Vec<_> = acked_w.difference(&stored).collect();
            assert!(
                missing.is_empty(),
                "seed {seed}, writer {w} {:?}: acknowledged but lost: {missing:?}",
                s.labels
            );
        }
    }
    let total: usize = acked.iter().map(BTreeSet::len).sum();
    eprintln!(
        "chaos: {kills} kills in {:.1} s, {total} acknowledged requests ({} samples), all present \
         once; {flushes} flushes and {compactions} compactions completed between the kills",
        started.elapsed().as_secs_f64(),
        total * SERIES,
    );
    assert!(
        flushes > 0 && compactions > 0,
        "kills interleaved with flushes and compactions"
    );
    assert!(
        total > kills * 4,
        "enough acknowledged writes to mean something: {total}"
    );
    gw.stop();
}
