//! Ingest through remote-write, restart (clean and kill -9), and find every sample again.

use crate::harness::*;

fn series_batch(cluster_tag: &str, n_series: usize, ts: &[i64]) -> Vec<u8> {
    let names: Vec<String> = (0..n_series).map(|i| format!("pod-{i}")).collect();
    let series: Vec<TestSeries<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            (
                vec![
                    ("__name__", "container_cpu_usage_seconds_total"),
                    ("pod", pod.as_str()),
                    ("tag", cluster_tag),
                ],
                ts.iter()
                    .map(|t| (*t, (*t as f64) / 1000.0 + i as f64))
                    .collect(),
            )
        })
        .collect();
    encode(&series)
}

#[test]
fn samples_survive_clean_restart_and_kill9_and_carry_the_authenticated_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let data = dir.path().join("data");
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let t0 = now_ms() - 3_600_000;
    let ts: Vec<i64> = (0..30).map(|i| t0 + i * 15_000).collect();
    assert_eq!(gw.write(Some("tok-a"), series_batch("a", 50, &ts)).0, 204);
    assert_eq!(gw.write(Some("tok-b"), series_batch("b", 50, &ts)).0, 204);
    let check = |gw: &Gateway| {
        let all = gw.export("container_cpu_usage_seconds_total");
        assert_eq!(all.len(), 100, "series count");
        for s in &all {
            assert_eq!(s.timestamps, ts, "timestamps of {:?}", s.labels);
            let cluster = &s.labels["cluster"];
            assert!(cluster == "alpha" || cluster == "beta");
            if cluster == "alpha" {
                assert_eq!(s.labels.get("region").map(String::as_str), Some("eu"));
                assert_eq!(s.labels["tag"], "a");
            } else {
                assert_eq!(s.labels["tag"], "b");
            }
        }
        assert_eq!(
            gw.export(r#"container_cpu_usage_seconds_total{cluster="alpha",pod=~"pod-1.*"}"#)
                .len(),
            11
        );
    };
    check(&gw);
    // clean restart: flush on SIGTERM
    gw.stop();
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    check(&gw);
    // more data, then kill -9: only the WAL has it
    let ts2: Vec<i64> = (30..40).map(|i| t0 + i * 15_000).collect();
    assert_eq!(gw.write(Some("tok-a"), series_batch("a", 50, &ts2)).0, 204);
    gw.kill9();
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let alpha = gw.export(r#"container_cpu_usage_seconds_total{cluster="alpha"}"#);
    assert_eq!(alpha.len(), 50);
    for s in &alpha {
        assert_eq!(s.timestamps.len(), 40);
    }
    gw.stop();
}

#[test]
fn out_of_order_and_duplicate_writes_keep_the_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let data = dir.path().join("data");
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let t0 = now_ms() - 7_200_000;
    let l = vec![("__name__", "ooo_metric"), ("job", "x")];
    assert_eq!(
        gw.write(
            Some("tok-a"),
            encode(&[(l.clone(), vec![(t0 + 2000, 2.0), (t0 + 3000, 3.0)])])
        )
        .0,
        204
    );
    // older, and a duplicate timestamp with a new value
    assert_eq!(
        gw.write(
            Some("tok-a"),
            encode(&[(l.clone(), vec![(t0 + 1000, 1.0), (t0 + 3000, 30.0)])])
        )
        .0,
        204
    );
    let s = gw.export("ooo_metric");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].timestamps, vec![t0 + 1000, t0 + 2000, t0 + 3000]);
    assert_eq!(s[0].values, vec![1.0, 2.0, 30.0]);
    gw.stop();
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let s = gw.export("ooo_metric");
    assert_eq!(s[0].values, vec![1.0, 2.0, 30.0], "after flush to Parquet");
    // a late duplicate after the flush still wins
    assert_eq!(
        gw.write(Some("tok-a"), encode(&[(l, vec![(t0 + 2000, 20.0)])]))
            .0,
        204
    );
    let s = gw.export("ooo_metric");
    assert_eq!(s[0].values, vec![1.0, 20.0, 30.0]);
    gw.stop();
}
