//! The Prometheus metadata API as Grafana calls it: labels, label values, series (GET and POST
//! form), buildinfo, exemplars probe, rules; envelope and error types.

use crate::harness::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn metadata_endpoints_answer_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let t = now_ms();
    let body = encode(&[
        (vec![("__name__", "up"), ("job", "api")], vec![(t, 1.0)]),
        (vec![("__name__", "up"), ("job", "web")], vec![(t, 0.0)]),
        (
            vec![
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("code", "200"),
            ],
            vec![(t, 5.0)],
        ),
    ]);
    assert_eq!(gw.write(Some("tok-a"), body).0, 204);
    let (start, end) = ((t - 60_000) / 1000, (t + 60_000) / 1000);

    let (code, b) = http_get(&gw.addr, &format!("/api/v1/labels?start={start}&end={end}")).unwrap();
    assert_eq!(code, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["status"], "success");
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for n in ["__name__", "cluster", "code", "job", "region"] {
        assert!(names.contains(&n), "{names:?}");
    }

    let (code, b) = http_get(&gw.addr, "/api/v1/label/__name__/values?limit=40000").unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        json(&b)["data"],
        serde_json::json!(["http_requests_total", "up"])
    );
    let (_, b) = http_get(&gw.addr, "/api/v1/label/job/values?match[]=up&limit=1").unwrap();
    let v = json(&b);
    assert_eq!(v["data"], serde_json::json!(["api"]));
    assert_eq!(v["warnings"][0], "results truncated due to limit");

    let q = format!(
        "/api/v1/series?match[]={}&start={start}&end={end}",
        urlencode(r#"up{job=~"a.*"}"#)
    );
    let (code, b) = http_get(&gw.addr, &q).unwrap();
    assert_eq!(code, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["cluster"], "alpha");
    assert_eq!(v["data"][0]["job"], "api");

    // POST form, as Grafana's backend sends by default
    let h = vec![
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Authorization".to_string(), READER_AUTH.to_string()),
    ];
    let form = format!(
        "match[]={}&start={start}&end={end}",
        urlencode("{__name__!=\"\"}")
    );
    let (code, b) = http_request(&gw.addr, "POST", "/api/v1/series", &h, form.as_bytes()).unwrap();
    assert_eq!(code, 200, "{b}");
    assert_eq!(json(&b)["data"].as_array().unwrap().len(), 3);
    // outside the time range: nothing
    let q = format!(
        "/api/v1/series?match[]=up&start={}&end={}",
        start - 7200,
        start - 3600
    );
    assert_eq!(
        json(&http_get(&gw.addr, &q).unwrap().1)["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // errors: bad_data with 400
    let (code, b) = http_get(&gw.addr, "/api/v1/series").unwrap();
    assert_eq!(code, 400);
    let v = json(&b);
    assert_eq!(
        (v["status"].as_str(), v["errorType"].as_str()),
        (Some("error"), Some("bad_data"))
    );
    let (code, b) = http_get(
        &gw.addr,
        &format!("/api/v1/series?match[]={}", urlencode(r#"{job=""}"#)),
    )
    .unwrap();
    assert_eq!(code, 400, "{b}");
    let (code, _) = http_get(&gw.addr, "/api/v1/labels?start=notatime").unwrap();
    assert_eq!(code, 400);

    // Grafana's probes
    let (code, b) = http_get(&gw.addr, "/api/v1/status/buildinfo").unwrap();
    assert_eq!(code, 200);
    assert!(
        json(&b)["data"]["version"]
            .as_str()
            .is_some_and(|s| s.starts_with('3'))
    );
    let (code, b) = http_get(
        &gw.addr,
        &format!(
            "/api/v1/query_exemplars?query=test&start={}&end={}",
            t - 3_600_000,
            t
        ),
    )
    .unwrap();
    assert_eq!(
        (code, json(&b)["data"].clone()),
        (200, serde_json::json!([]))
    );
    let (code, b) = http_get(&gw.addr, "/api/v1/rules").unwrap();
    assert_eq!(
        (code, json(&b)["data"]["groups"].clone()),
        (200, serde_json::json!([]))
    );
    let (code, b) = http_get(&gw.addr, "/api/v1/metadata?limit=10").unwrap();
    assert_eq!(
        (code, json(&b)["status"].clone()),
        (200, serde_json::json!("success"))
    );
    gw.stop();
}

#[test]
fn query_and_query_range_answer_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    // Grafana's health check: 1+1 at time=4
    let (code, b) = http_get(&gw.addr, "/api/v1/query?query=1%2B1&time=4").unwrap();
    assert_eq!(code, 200, "{b}");
    assert_eq!(
        json(&b)["data"],
        serde_json::json!({"resultType": "scalar", "result": [4, "2"]})
    );

    // two clusters, a counter each, 15 s apart for 10 minutes
    let t0 = (now_ms() / 60_000) * 60_000 - 600_000;
    for (tok, rate) in [("tok-a", 1.0), ("tok-b", 2.0)] {
        let samples: Vec<(i64, f64)> = (0..=40)
            .map(|i| (t0 + i * 15_000, rate * 15.0 * i as f64))
            .collect();
        let body = encode(&[(
            vec![
                ("__name__", "container_cpu_usage_seconds_total"),
                ("pod", "p"),
            ],
            samples,
        )]);
        assert_eq!(gw.write(Some(tok), body).0, 204);
    }
    let t_end = t0 + 600_000;
    let q = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("sum by (cluster) (rate(container_cpu_usage_seconds_total[5m]))"),
        t_end / 1000
    );
    let (code, b) = http_get(&gw.addr, &q).unwrap();
    assert_eq!(code, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["data"]["resultType"], "vector");
    let mut got: Vec<(String, f64)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["cluster"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2, "{b}");
    assert_eq!(got[0].0, "alpha");
    assert!((got[0].1 - 1.0).abs() < 1e-9, "{got:?}");
    assert!((got[1].1 - 2.0).abs() < 1e-9, "{got:?}");

    // range query, POST form, step-aligned
    let h = vec![
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Authorization".to_string(), READER_AUTH.to_string()),
    ];
    let form = format!(
        "query={}&start={}&end={}&step=60",
        urlencode("container_cpu_usage_seconds_total"),
        t0 / 1000,
        t_end / 1000
    );
    let (code, b) =
        http_request(&gw.addr, "POST", "/api/v1/query_range", &h, form.as_bytes()).unwrap();
    assert_eq!(code, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    assert_eq!(
        result[0]["metric"]["cluster"], "alpha",
        "matrix sorted by labels"
    );
    assert_eq!(result[0]["values"].as_array().unwrap().len(), 11);

    // annotations reach the envelope: rate() of a name that is not a counter's is an info,
    // a quantile outside [0, 1] a warning
    let gauge: Vec<(i64, f64)> = (0..=40).map(|i| (t0 + i * 15_000, 1e6)).collect();
    let body = encode(&[(vec![("__name__", "memory_bytes")], gauge)]);
    assert_eq!(gw.write(Some("tok-a"), body).0, 204);
    let q = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("rate(memory_bytes[5m])"),
        t_end / 1000
    );
    let (code, b) = http_get(&gw.addr, &q).unwrap();
    assert_eq!(code, 200, "{b}");
    assert!(
        json(&b)["infos"][0]
            .as_str()
            .is_some_and(|s| s.contains("might not be a counter")),
        "{b}"
    );
    let q = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("quantile(2, container_cpu_usage_seconds_total)"),
        t_end / 1000
    );
    let (code, b) = http_get(&gw.addr, &q).unwrap();
    assert_eq!(code, 200, "{b}");
    assert!(
        json(&b)["warnings"][0]
            .as_str()
            .is_some_and(|s| s.contains("quantile value should be between 0 and 1")),
        "{b}"
    );

    // errors and their types
    let (code, b) = http_get(&gw.addr, "/api/v1/query?query=sum(").unwrap();
    assert_eq!(code, 400, "{b}");
    assert_eq!(json(&b)["errorType"], "bad_data");
    let q = format!("/api/v1/query_range?query=up&start=0&end={}&step=1", 20_000);
    let (code, b) = http_get(&gw.addr, &q).unwrap();
    assert_eq!(code, 400, "{b}");
    assert!(b.contains("11,000"), "{b}");
    let (code, _) = http_get(
        &gw.addr,
        "/api/v1/query_range?query=up&start=10&end=0&step=1",
    )
    .unwrap();
    assert_eq!(code, 400);
    gw.stop();
}
