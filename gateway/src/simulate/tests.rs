//! Tests of the simulator as a whole: determinism, series counts, churn and stale
//! markers, value shapes, and that payloads decode as canonical remote-write 1.0.

use std::collections::{HashMap, HashSet};

use fleetgate_ingest::remote_write::proto::WriteRequest;
use prost::Message;

use super::encode::Payload;
use super::workload::{Epoch, Fleet, FleetConfig, STALE_NAN, epochs};
use super::*;
use crate::config::parse_duration;

const START: i64 = 1_700_000_000_000;

fn cfg(clusters: u32, nodes: u32, pods: u32, services: u32, churn: f64) -> FleetConfig {
    FleetConfig {
        clusters,
        nodes,
        pods_per_node: pods,
        services,
        seed: 42,
        scrape_interval_ms: 15_000,
        churn_per_hour: churn,
        start_ms: START,
    }
}

fn run_plan(fleet: &mut Fleet, plan: &[Epoch], spr: usize) -> Vec<Payload> {
    let mut out = Vec::new();
    for e in plan {
        fleet
            .generate(e, spr, &mut |p| {
                out.push(p);
                Ok(())
            })
            .unwrap();
    }
    out
}

fn decode(p: &Payload) -> WriteRequest {
    let mut dec = snap::raw::Decoder::new();
    let len = snap::raw::decompress_len(&p.body).unwrap();
    let mut raw = vec![0; len];
    let n = dec.decompress(&p.body, &mut raw).unwrap();
    raw.truncate(n);
    let req = WriteRequest::decode(raw.as_slice()).unwrap();
    // Canonical encoding: prost writes the very same bytes back.
    assert_eq!(
        req.encode_to_vec(),
        raw,
        "payload {} is not canonical protobuf",
        p.seq
    );
    req
}

/// (labels as "k=v,…", samples) of every series of every payload, in order.
fn flatten(payloads: &[Payload]) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut out = Vec::new();
    for p in payloads {
        let req = decode(p);
        assert_eq!(req.timeseries.len() as u32, p.series);
        let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
        assert_eq!(samples as u32, p.samples);
        for ts in req.timeseries {
            let key = ts
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",");
            out.push((
                key,
                ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            ));
        }
    }
    out
}

fn name_of(key: &str) -> &str {
    key.split(',')
        .find_map(|kv| kv.strip_prefix("__name__="))
        .unwrap_or("")
}

#[test]
fn same_seed_same_bytes() {
    let plan = epochs(8, 4, 3);
    let a = run_plan(&mut Fleet::new(cfg(2, 2, 6, 2, 20.0)), &plan, 300);
    let b = run_plan(&mut Fleet::new(cfg(2, 2, 6, 2, 20.0)), &plan, 300);
    assert!(a.len() > 4);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.body, y.body);
        assert_eq!(
            (x.seq, x.cluster, x.epoch, x.series, x.samples),
            (y.seq, y.cluster, y.epoch, y.series, y.samples)
        );
    }
    let mut other = cfg(2, 2, 6, 2, 20.0);
    other.seed = 43;
    let c = run_plan(&mut Fleet::new(other), &plan, 300);
    assert_ne!(a[0].body, c[0].body);
}

#[test]
fn payloads_are_valid_remote_write() {
    let plan = epochs(10, 5, 2);
    let payloads = run_plan(&mut Fleet::new(cfg(2, 2, 8, 3, 0.0)), &plan, 250);
    for p in &payloads {
        assert!(p.series <= 250);
        for ts in decode(p).timeseries {
            assert_eq!(ts.labels[0].name, "__name__", "{:?}", ts.labels);
            assert!(!ts.labels[0].value.is_empty());
            for w in ts.labels.windows(2) {
                assert!(
                    w[0].name < w[1].name,
                    "labels not sorted/unique: {:?}",
                    ts.labels
                );
            }
            for l in &ts.labels {
                assert!(!l.value.is_empty(), "empty value for {}", l.name);
            }
            assert!(ts.labels.iter().any(|l| l.name == "job"));
            assert!(ts.labels.iter().any(|l| l.name == "instance"));
            for w in ts.samples.windows(2) {
                assert!(w[0].timestamp < w[1].timestamp);
            }
        }
    }
    // Live epochs carry one sample per series and a wall-clock deadline; backfill many.
    for p in &payloads {
        let live = p.epoch >= 2;
        assert_eq!(p.not_before_ms.is_some(), live);
        if live {
            assert_eq!(p.series, p.samples);
        } else {
            assert_eq!(p.samples, p.series * 5);
        }
    }
}

#[test]
fn timestamps_jitter_by_at_most_3ms() {
    let plan = epochs(0, 1, 4);
    let payloads = run_plan(&mut Fleet::new(cfg(1, 2, 5, 1, 0.0)), &plan, 2000);
    let mut offsets = HashSet::new();
    for (key, samples) in flatten(&payloads) {
        for (ts, _) in samples {
            let off = (ts - START).rem_euclid(15_000);
            let off = if off > 7_500 { off - 15_000 } else { off };
            assert!((-3..=3).contains(&off), "{key}: {ts}");
            offsets.insert(off);
        }
    }
    assert!(offsets.len() > 3, "jitter should vary: {offsets:?}");
}

#[test]
fn series_counts_follow_flags() {
    let count = |c, n, p, s| Fleet::new(cfg(c, n, p, s, 0.0)).active_series();
    // Cluster 0 is the same whatever the number of clusters; more clusters add series.
    assert!(count(2, 2, 10, 2) > count(1, 2, 10, 2));
    assert!(count(1, 3, 10, 2) > count(1, 2, 10, 2));
    assert!(count(1, 2, 12, 2) > count(1, 2, 10, 2));
    assert!(count(1, 2, 10, 3) >= count(1, 2, 10, 2));

    // Exact shape: one node with only its two daemonset pods (17 series each), and the
    // node's own series: 8 CPU modes per core + 2 memory + 6 filesystem + 4 KSM + 3 OpenCost.
    let mut fleet = Fleet::new(cfg(1, 1, 2, 0, 0.0));
    let active = fleet.active_series();
    let series = flatten(&run_plan(&mut fleet, &epochs(0, 1, 1), 10_000));
    assert_eq!(series.len(), active);
    let cpu = series
        .iter()
        .filter(|(k, _)| name_of(k) == "node_cpu_seconds_total")
        .count();
    assert_eq!(cpu % 8, 0);
    assert_eq!(active, cpu + 15 + 2 * 17);

    // Every series a live tick sends is unique, and all requested metric names occur.
    let mut fleet = Fleet::new(cfg(2, 3, 10, 4, 0.0));
    let active = fleet.active_series();
    let series = flatten(&run_plan(&mut fleet, &epochs(0, 1, 1), 2000));
    assert_eq!(series.len(), active);
    let keys: HashSet<&str> = series.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), active);
    let names: HashSet<&str> = series.iter().map(|(k, _)| name_of(k)).collect();
    for want in [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "kube_pod_container_resource_requests",
        "kube_pod_labels",
        "kube_pod_owner",
        "kube_node_status_allocatable",
        "kube_node_labels",
        "kube_pod_container_status_running",
        "kube_persistentvolumeclaim_resource_requests_storage_bytes",
        "kube_persistentvolumeclaim_info",
        "node_cpu_hourly_cost",
        "node_ram_hourly_cost",
        "node_total_hourly_cost",
        "pv_hourly_cost",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
    ] {
        assert!(names.contains(want), "missing {want}");
    }
    let clusters: HashSet<u32> =
        run_plan(&mut Fleet::new(cfg(3, 1, 3, 1, 0.0)), &epochs(0, 1, 1), 50)
            .iter()
            .map(|p| p.cluster)
            .collect();
    assert_eq!(clusters, HashSet::from([0, 1, 2]));
}

#[test]
fn churn_emits_stale_markers_then_new_pods() {
    // 240 replacements per hour at a 15 s interval: every pod is replaced at every tick.
    let plan = epochs(0, 1, 3);
    let mut fleet = Fleet::new(cfg(1, 1, 6, 2, 240.0));
    let active = fleet.active_series();
    let payloads = run_plan(&mut fleet, &plan, 1000);
    let series = flatten(&payloads);
    let mut stale_keys = HashSet::new();
    let mut seen_after_stale = Vec::new();
    let mut pods_by_tick: HashMap<i64, HashSet<String>> = HashMap::new();
    for (key, samples) in &series {
        for &(ts, v) in samples {
            if v.to_bits() == STALE_NAN {
                stale_keys.insert(key.clone());
            } else if stale_keys.contains(key) {
                seen_after_stale.push(key.clone());
            } else if let Some(pod) = key.split(',').find_map(|kv| kv.strip_prefix("pod=")) {
                pods_by_tick
                    .entry((ts - START + 7_500).div_euclid(15_000))
                    .or_default()
                    .insert(pod.to_string());
            }
        }
    }
    assert!(!stale_keys.is_empty(), "no stale markers");
    assert!(
        seen_after_stale.is_empty(),
        "a stale series came back: {seen_after_stale:?}"
    );
    // Every stale series belongs to a pod (nodes and PVCs do not churn, StatefulSets are kept).
    assert!(
        stale_keys
            .iter()
            .all(|k| k.contains(",pod=") || k.contains("pod="))
    );
    // New pod names at every tick; the node-level series count stays the same.
    let t0 = &pods_by_tick[&0];
    let t1 = &pods_by_tick[&1];
    assert!(t0.len() >= 5);
    assert!(t1.difference(t0).count() >= 5, "no new pod names");
    assert_eq!(fleet.active_series(), active);
}

#[test]
fn stale_marker_bits_are_prometheus_stale_nan() {
    let v = f64::from_bits(STALE_NAN);
    assert!(v.is_nan());
    assert_eq!(v.to_bits(), 0x7ff0_0000_0000_0002);
}

#[test]
fn counters_are_monotonic_and_histograms_consistent() {
    let plan = epochs(40, 10, 5);
    let series = flatten(&run_plan(&mut Fleet::new(cfg(1, 2, 8, 4, 0.0)), &plan, 700));
    let mut last: HashMap<&str, f64> = HashMap::new();
    let mut by_key: HashMap<&str, Vec<(i64, f64)>> = HashMap::new();
    for (key, samples) in &series {
        let name = name_of(key);
        let counter = name.ends_with("_total")
            || name.ends_with("_bucket")
            || name.ends_with("_count")
            || name.ends_with("_sum");
        for &(_, v) in samples {
            assert!(v.is_finite(), "{key}");
            if counter {
                if let Some(prev) = last.get(key.as_str()) {
                    assert!(v >= *prev, "{key}: {prev} -> {v}");
                }
                last.insert(key, v);
            }
        }
        by_key.entry(key).or_default().extend(samples);
    }
    // Counters other than the zero-rate CPU modes actually move.
    let moving = last
        .keys()
        .filter(|k| {
            !k.contains("mode=irq")
                && !k.contains("mode=nice")
                && !k.contains("code=5")
                && !k.contains("code=4")
        })
        .filter(|k| {
            let s = &by_key[*k];
            s.first().map(|f| f.1) != s.last().map(|l| l.1)
        })
        .count();
    assert!(
        moving * 10 > last.len() * 8,
        "{moving} of {} counters move",
        last.len()
    );

    // Histogram buckets are cumulative; +Inf equals _count equals the sum over codes.
    let at_end = |pred: &dyn Fn(&str) -> bool| -> Vec<(String, f64)> {
        by_key
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(k, s)| (k.to_string(), s.last().map_or(0.0, |x| x.1)))
            .collect()
    };
    let counts = at_end(&|k| name_of(k) == "http_request_duration_seconds_count");
    assert!(!counts.is_empty());
    for (ck, count) in counts {
        let pod = ck
            .split(',')
            .find(|kv| kv.starts_with("pod="))
            .unwrap()
            .to_string();
        let handler = ck
            .split(',')
            .find(|kv| kv.starts_with("handler="))
            .unwrap()
            .to_string();
        let method = ck
            .split(',')
            .find(|kv| kv.starts_with("method="))
            .unwrap()
            .to_string();
        let same = |k: &str| k.contains(&pod) && k.contains(&handler) && k.contains(&method);
        let total: f64 = at_end(&|k| name_of(k) == "http_requests_total" && same(k))
            .iter()
            .map(|x| x.1)
            .sum();
        assert_eq!(total, count);
        let mut buckets: Vec<(f64, f64)> =
            at_end(&|k| name_of(k) == "http_request_duration_seconds_bucket" && same(k))
                .into_iter()
                .map(|(k, v)| {
                    let le = k.split(',').find_map(|kv| kv.strip_prefix("le=")).unwrap();
                    (
                        if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap()
                        },
                        v,
                    )
                })
                .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(buckets.len(), 12);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        assert_eq!(buckets[11].1, count);
    }
}

#[test]
fn about_a_third_of_series_are_constant() {
    let plan = epochs(0, 1, 20);
    let series = flatten(&run_plan(
        &mut Fleet::new(cfg(2, 3, 20, 4, 0.0)),
        &plan,
        2000,
    ));
    let mut values: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (k, s) in &series {
        values
            .entry(k)
            .or_default()
            .extend(s.iter().map(|x| x.1.to_bits()));
    }
    let constant = values.values().filter(|v| v.len() == 1).count();
    let share = constant as f64 / values.len() as f64;
    eprintln!("constant share {share:.3} of {} series", values.len());
    assert!((0.25..0.5).contains(&share), "constant share {share}");
}

#[test]
fn epoch_plan() {
    let p = epochs(250, 120, 2);
    assert_eq!(
        p.iter().map(|e| e.ticks).collect::<Vec<_>>(),
        vec![120, 120, 10, 1, 1]
    );
    assert_eq!(p[0].first_tick, -250);
    assert_eq!(p[2].first_tick, -10);
    assert_eq!(p[3].first_tick, 0);
    assert!(p[3].live && !p[2].live);
    assert!(epochs(0, 120, 0).is_empty());
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(parse_duration("5x").is_err());
}

#[tokio::test]
async fn dry_run_records_and_replay_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let args = SimulateArgs {
        url: "http://127.0.0.1:1/api/v1/write".into(),
        clusters: 2,
        nodes: 1,
        pods_per_node: 4,
        services: 1,
        seed: 5,
        start_ms: Some(START),
        scrape_interval: Duration::from_secs(15),
        churn: 0.2,
        series_per_request: 100,
        backfill_hours: 0.25,
        backfill_samples_per_series: 30,
        duration: Duration::from_secs(30),
        fast: true,
        rate: 0.0,
        concurrency: 2,
        token_prefix: None,
        max_retries: 0,
        timeout: Duration::from_secs(1),
        record_dir: Some(dir.path().to_path_buf()),
        dry_run: true,
        replay_dir: None,
    };
    run(args.clone()).await.unwrap();
    let index = record::read_index(dir.path()).unwrap();
    assert!(!index.is_empty());
    assert_eq!(
        index.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..index.len() as u64).collect::<Vec<_>>()
    );
    let clusters: HashSet<&str> = index.iter().map(|e| e.cluster.as_str()).collect();
    assert_eq!(clusters, HashSet::from(["sim-00", "sim-01"]));
    // The recorded bytes are exactly what the generator produces.
    let cfg = FleetConfig {
        clusters: 2,
        nodes: 1,
        pods_per_node: 4,
        services: 1,
        seed: 5,
        scrape_interval_ms: 15_000,
        churn_per_hour: 0.2,
        start_ms: START,
    };
    let payloads = run_plan(&mut Fleet::new(cfg), &epochs(60, 30, 2), 100);
    assert_eq!(payloads.len(), index.len());
    for (p, e) in payloads.iter().zip(&index) {
        let loaded = record::load(dir.path(), e, p.cluster).unwrap();
        assert_eq!(loaded.body, p.body);
        assert_eq!(
            (e.series, e.samples, e.epoch),
            (p.series, p.samples, p.epoch)
        );
    }
    // Replaying to a closed port: every request fails (no retries), and run says so.
    let replay = SimulateArgs {
        record_dir: None,
        dry_run: false,
        replay_dir: Some(dir.path().to_path_buf()),
        ..args
    };
    let err = run(replay).await.unwrap_err();
    assert!(err.to_string().contains("ended in error"), "{err}");
}
