//! Grafana's Prometheus datasource, replayed: the request sequence its backend sends (health check,
//! flavour detection, exemplar and rules probes, autocomplete, panel queries with step-aligned
//! ranges, POST with GET fallback), checking every response shape it parses. Grafana is set up
//! with basic auth (the datasource's "Basic auth" user and password), as a fleet-wide reader.

use crate::harness::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn post_form(addr: &str, path: &str, form: &str) -> (u16, serde_json::Value) {
    let h = vec![
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Authorization".to_string(), READER_AUTH.to_string()),
    ];
    let (code, body) = http_request(addr, "POST", path, &h, form.as_bytes()).expect("post");
    let v = if code == 405 {
        serde_json::Value::Null
    } else {
        json(&body)
    };
    (code, v)
}

fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get(addr, path).expect("get");
    (code, json(&body))
}

#[test]
fn grafana_request_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let a = gw.addr.clone();
    let now = now_ms();
    let t0 = now - 3_600_000;
    let series: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                format!("pod-{i}"),
                if i % 2 == 0 { "payments" } else { "search" }.to_string(),
            )
        })
        .collect();
    let batch: Vec<TestSeries<'_>> = series
        .iter()
        .map(|(pod, ns)| {
            (
                vec![
                    ("__name__", "container_cpu_usage_seconds_total"),
                    ("namespace", ns.as_str()),
                    ("pod", pod.as_str()),
                ],
                (0..=240)
                    .map(|i| (t0 + i * 15_000 + 7, i as f64 * 3.0))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(gw.write(Some("tok-a"), encode(&batch)).0, 204);
    assert_eq!(gw.write(Some("tok-b"), encode(&batch)).0, 204);
    let (start_s, end_s) = (t0 / 1000, now / 1000);

    // 1. "Save & test": POST query=1+1&time=4 must give a scalar
    let (code, v) = post_form(&a, "/api/v1/query", "query=1%2B1&time=4");
    assert_eq!(code, 200);
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"], serde_json::json!([4, "2"]));

    // 2. flavour detection: buildinfo without `features` means Prometheus
    let (code, v) = get(&a, "/api/v1/status/buildinfo");
    assert_eq!(code, 200);
    assert!(v["data"]["version"].is_string());
    assert!(v["data"].get("features").is_none());

    // 3. exemplar probe (milliseconds!) and rules probe
    let (code, v) = get(
        &a,
        &format!(
            "/api/v1/query_exemplars?query=test&start={}&end={now}",
            now - 3_600_000
        ),
    );
    assert_eq!((code, v["status"].as_str()), (200, Some("success")));
    let (code, v) = get(&a, "/api/v1/rules");
    assert_eq!((code, v["status"].as_str()), (200, Some("success")));

    // 4. autocomplete: metric names, label keys, label values, series browser, metadata
    let (code, v) = get(
        &a,
        &format!("/api/v1/label/__name__/values?start={start_s}&end={end_s}&limit=40000"),
    );
    assert_eq!(code, 200);
    assert_eq!(
        v["data"],
        serde_json::json!(["container_cpu_usage_seconds_total"])
    );
    let m = urlencode("container_cpu_usage_seconds_total");
    let (code, v) = post_form(
        &a,
        "/api/v1/labels",
        &format!("match[]={m}&start={start_s}&end={end_s}&limit=40000"),
    );
    assert_eq!(code, 200);
    assert_eq!(
        v["data"],
        serde_json::json!(["__name__", "cluster", "namespace", "pod", "region"])
    );
    // label values are GET-only: a POST gets 405 and Grafana falls back to GET
    let (code, _) = post_form(
        &a,
        "/api/v1/label/namespace/values",
        &format!("match[]={m}"),
    );
    assert_eq!(code, 405);
    let (code, v) = get(
        &a,
        &format!("/api/v1/label/namespace/values?match[]={m}&start={start_s}&end={end_s}"),
    );
    assert_eq!(code, 200);
    assert_eq!(v["data"], serde_json::json!(["payments", "search"]));
    let all = urlencode("{__name__!=\"\"}");
    let (code, v) = post_form(
        &a,
        "/api/v1/series",
        &format!("match[]={all}&start={start_s}&end={end_s}&limit=40000"),
    );
    assert_eq!(code, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 8);
    assert!(v["data"][0]["__name__"].is_string());
    let (code, v) = get(&a, "/api/v1/metadata?limit=40000");
    assert_eq!((code, v["data"].is_object()), (200, true));

    // 5. a panel: range query with start/end aligned down to the step, step as float seconds
    let step = 60i64;
    let (rs, re) = ((start_s / step) * step, (end_s / step) * step);
    let q = urlencode("sum by (cluster, namespace) (rate(container_cpu_usage_seconds_total[5m]))");
    let (code, v) = post_form(
        &a,
        "/api/v1/query_range",
        &format!("query={q}&start={rs}&end={re}&step={step}.0&timeout=2m"),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 4, "2 clusters × 2 namespaces");
    let keys: Vec<String> = result
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["metric"]["cluster"].as_str().unwrap(),
                s["metric"]["namespace"].as_str().unwrap()
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "matrix sorted by labels");
    for s in result {
        assert!(s["metric"].get("__name__").is_none());
        for p in s["values"].as_array().unwrap() {
            let t = p[0].as_f64().unwrap() as i64;
            assert_eq!((t - rs) % step, 0, "points on the step grid");
            let v: f64 = p[1].as_str().unwrap().parse().unwrap();
            // once a whole 5m window has data, the rate is exact (no extrapolation at the edges)
            if t * 1000 >= t0 + 330_000 {
                assert!((v - 0.4).abs() < 1e-9, "2 pods × 0.2/s at {t}: {v}");
            }
        }
    }
    // 6. "Both": an instant query at the (unaligned) range end, fractional seconds; then GET works too
    let (code, v) = post_form(
        &a,
        "/api/v1/query",
        &format!("query={q}&time={}.123", end_s),
    );
    assert_eq!(code, 200);
    assert_eq!(v["data"]["resultType"], "vector");
    let first = &v["data"]["result"][0];
    assert!(
        first["metric"].is_object()
            && first["value"][0].is_number()
            && first["value"][1].is_string()
    );
    let (code, v) = get(
        &a,
        &format!("/api/v1/query_range?query={q}&start={rs}&end={re}&step=1m"),
    );
    assert_eq!(
        (code, v["data"]["result"].as_array().map(Vec::len)),
        (200, Some(4))
    );
    // an error Grafana shows as "<errorType>: <error>"
    let (code, v) = post_form(&a, "/api/v1/query", "query=rate(up)");
    assert_eq!(code, 400);
    assert_eq!(v["errorType"], "bad_data");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    gw.stop();
}
