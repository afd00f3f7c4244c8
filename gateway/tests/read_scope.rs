//! The read side's authentication and cluster scope, from the binary: two clusters and three kinds
//! of principal (a fleet-wide reader, a reader scoped by a glob, a cluster's write token) call
//! every read endpoint without, with wrong and with their credentials, and try to escape their
//! scope; a disconnected long query releases its work.

use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::harness::*;

/// Every read endpoint (GET), with parameters that select something.
const ENDPOINTS: &[&str] = &[
    "/api/v1/query?query=up",
    "/api/v1/query_range?query=up&start=1&end=2&step=1",
    "/api/v1/series?match[]=up",
    "/api/v1/labels",
    "/api/v1/label/cluster/values",
    "/api/v1/export?match[]=up",
    "/api/v1/metadata",
    "/api/v1/query_exemplars?query=up",
    "/api/v1/rules",
    "/api/v1/alerts",
    "/api/v1/status/buildinfo",
];

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("fleetgate.yaml");
    std::fs::write(
        &p,
        format!(
            "{extra}
clusters:
  - name: alpha
    token: tok-a
  - name: beta
    token: tok-b
users:
  - name: fleet
    password: fleet-pw
    clusters: [\"*\"]
  - name: team-a
    token: team-a-tok
    clusters: [\"al*\"]
"
        ),
    )
    .unwrap();
    p
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

fn get_as(addr: &str, auth: Option<&str>, path: &str) -> (u16, String, String) {
    let h: Vec<(String, String)> = auth
        .map(|a| ("Authorization".to_string(), a.to_string()))
        .into_iter()
        .collect();
    http_exchange(addr, "GET", path, &h, &[]).unwrap()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Writes `m` and a cluster-only metric and label for each cluster.
fn load(gw: &Gateway) -> i64 {
    let t = now_ms();
    let samples: Vec<(i64, f64)> = (0..20)
        .map(|i| (t - 600_000 + i * 30_000, i as f64))
        .collect();
    let a = encode(&[
        (
            vec![("__name__", "m"), ("job", "x"), ("only_alpha", "1")],
            samples.clone(),
        ),
        (vec![("__name__", "alpha_only_metric")], samples.clone()),
    ]);
    assert_eq!(gw.write(Some("tok-a"), a).0, 204);
    let b = encode(&[
        (
            vec![("__name__", "m"), ("job", "x"), ("only_beta", "1")],
            samples.clone(),
        ),
        (vec![("__name__", "beta_only_metric")], samples),
    ]);
    assert_eq!(gw.write(Some("tok-b"), b).0, 204);
    t
}

/// The clusters named in a PromQL/series answer's label sets.
fn clusters_in(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let items = v["data"]["result"]
        .as_array()
        .or_else(|| v["data"].as_array())
        .cloned()
        .unwrap_or_default();
    for it in items {
        let m = if it.get("metric").is_some() {
            &it["metric"]
        } else {
            &it
        };
        out.push(m["cluster"].as_str().unwrap_or("<none>").to_string());
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_read_endpoint_needs_credentials_and_keeps_to_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let a = gw.addr.clone();
    let t = load(&gw);

    // 1. No credentials, wrong credentials: 401 with the challenge and a Prometheus-shaped body.
    let wrong = [
        None,
        Some("Bearer nope".to_string()),
        Some(basic("fleet", "wrong")),
        Some(basic("nobody", "fleet-pw")),
        Some("Digest abc".to_string()),
    ];
    for path in ENDPOINTS {
        for auth in &wrong {
            let (code, head, body) = get_as(&a, auth.as_deref(), path);
            assert_eq!(code, 401, "{path} with {auth:?}: {body}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"fleetgate\""),
                "{path}: {head}"
            );
            let v = json(&body);
            assert_eq!(v["status"], "error");
            assert_eq!(v["errorType"], "unauthorized");
            assert!(!body.contains("alpha") && !body.contains("beta"), "{body}");
        }
    }
    // health, readiness and self-metrics stay open, as in Prometheus
    for path in ["/-/healthy", "/-/ready", "/metrics"] {
        assert_eq!(get_as(&a, None, path).0, 200, "{path}");
    }
    let m = gw.metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("fleetgate_auth_failures_total{reason=\"missing\"}")),
        "{m}"
    );
    for reason in ["unknown_token", "bad_password", "malformed"] {
        assert!(
            m.contains(&format!(
                "fleetgate_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {m}"
        );
    }

    // 2. Every credential reaches every endpoint.
    let fleet = basic("fleet", "fleet-pw");
    let team = "Bearer team-a-tok".to_string();
    let writer_a = "Bearer tok-a".to_string();
    let writer_b = basic("prometheus", "tok-b");
    for path in ENDPOINTS {
        for auth in [&fleet, &team, &writer_a, &writer_b] {
            let (code, _, body) = get_as(&a, Some(auth), path);
            assert_eq!(code, 200, "{path} as {auth}: {body}");
        }
    }
    // Grafana's health check with basic auth
    let (code, _, body) = get_as(&a, Some(&fleet), "/api/v1/query?query=1%2B1");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["data"]["result"][1], "2");

    // 3. The fleet reader sees both clusters.
    let (_, _, body) = get_as(&a, Some(&fleet), "/api/v1/label/cluster/values");
    assert_eq!(json(&body)["data"], serde_json::json!(["alpha", "beta"]));
    let q = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("count by (cluster) (m)"),
        t / 1000
    );
    let (_, _, body) = get_as(&a, Some(&fleet), &q);
    assert_eq!(clusters_in(&json(&body)), vec!["alpha", "beta"]);

    // 4. Scoped principals: the team (glob `al*`) and alpha's write token see alpha only; beta's
    // write token (basic auth, token as password) sees beta only.
    let (start, end) = ((t - 3_600_000) / 1000, (t + 60_000) / 1000);
    let escapes: Vec<String> = vec![
        format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(r#"{__name__=~".+"}"#)
        ),
        format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(r#"{cluster=~".+"}"#)
        ),
        format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(r#"{__name__="m",cluster=~".*"}"#)
        ),
        format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(r#"count by (cluster) ({__name__=~".+"})"#)
        ),
        format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(r#"max_over_time(count by (cluster) ({__name__=~".+"})[10m:1m])"#)
        ),
        format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(r#"m or on() vector(1)"#)
        ),
        format!(
            "/api/v1/query_range?start={start}&end={end}&step=60&query={}",
            urlencode(r#"sum by (cluster, only_alpha, only_beta) ({__name__=~".+"})"#)
        ),
        format!(
            "/api/v1/series?match[]={}",
            urlencode(r#"{__name__=~".+"}"#)
        ),
        format!(
            "/api/v1/series?start={start}&end={end}&match[]={}",
            urlencode(r#"{cluster=~".+"}"#)
        ),
        format!("/api/v1/export?match[]={}", urlencode(r#"{cluster=~".+"}"#)),
    ];
    for (auth, mine, other) in [
        (&team, "alpha", "beta"),
        (&writer_a, "alpha", "beta"),
        (&writer_b, "beta", "alpha"),
    ] {
        for path in &escapes {
            let (code, _, body) = get_as(&a, Some(auth), path);
            assert_eq!(code, 200, "{path} as {auth}: {body}");
            assert!(
                !body.contains(other) && !body.contains(&format!("only_{other}")),
                "{auth} escaped its scope with {path}: {body}"
            );
            if path.contains("/export") {
                assert!(body.lines().count() >= 2, "{path}: {body}");
                for line in body.lines() {
                    assert_eq!(json(line)["metric"]["cluster"], mine, "{line}");
                }
            } else {
                let found = clusters_in(&json(&body));
                assert!(
                    found.iter().all(|c| c == mine || c == "<none>"),
                    "{path} as {auth}: {found:?}"
                );
            }
        }
        // another cluster, by name: nothing
        let q = format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(&format!(r#"{{cluster="{other}"}}"#))
        );
        let (_, _, body) = get_as(&a, Some(auth), &q);
        assert_eq!(
            json(&body)["data"]["result"],
            serde_json::json!([]),
            "{body}"
        );
        // absent() of another cluster's series answers from the query text alone
        let q = format!(
            "/api/v1/query?time={}&query={}",
            t / 1000,
            urlencode(&format!(r#"absent(m{{cluster="{other}"}})"#))
        );
        let (_, _, body) = get_as(&a, Some(auth), &q);
        assert_eq!(json(&body)["data"]["result"][0]["value"][1], "1", "{body}");
        // label names and values, with and without match[] and a range
        for path in [
            "/api/v1/labels".to_string(),
            format!("/api/v1/labels?start={start}&end={end}"),
            format!(
                "/api/v1/labels?match[]={}",
                urlencode(r#"{__name__=~".+"}"#)
            ),
        ] {
            let (_, _, body) = get_as(&a, Some(auth), &path);
            let names = json(&body)["data"].clone();
            assert!(
                names
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n == &format!("only_{mine}")),
                "{path}: {names}"
            );
            assert!(!body.contains(&format!("only_{other}")), "{path}: {body}");
        }
        for path in [
            "/api/v1/label/cluster/values".to_string(),
            format!("/api/v1/label/cluster/values?start={start}&end={end}"),
            format!(
                "/api/v1/label/cluster/values?match[]={}",
                urlencode(r#"{cluster=~".+"}"#)
            ),
        ] {
            let (_, _, body) = get_as(&a, Some(auth), &path);
            assert_eq!(json(&body)["data"], serde_json::json!([mine]), "{path}");
        }
        let (_, _, body) = get_as(
            &a,
            Some(auth),
            &format!("/api/v1/label/only_{other}/values"),
        );
        assert_eq!(json(&body)["data"], serde_json::json!([]), "{body}");
        let (_, _, body) = get_as(&a, Some(auth), "/api/v1/label/__name__/values");
        assert!(!body.contains(&format!("{other}_only_metric")), "{body}");
        assert!(body.contains(&format!("{mine}_only_metric")), "{body}");
    }

    // 5. A reader cannot write; nobody writes without a token.
    let body = encode(&[(vec![("__name__", "w")], vec![(t, 1.0)])]);
    assert_eq!(gw.write(Some("team-a-tok"), body.clone()).0, 403);
    assert_eq!(gw.write(None, body).0, 401);
    gw.stop();
}

#[test]
fn metadata_time_ranges_answer_from_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let a = gw.addr.clone();
    let fleet = basic("fleet", "fleet-pw");
    let t = now_ms();
    let old = encode(&[(
        vec![("__name__", "old_metric"), ("old_label", "x")],
        vec![(t - 5 * 3_600_000, 1.0)],
    )]);
    assert_eq!(gw.write(Some("tok-a"), old).0, 204);
    let new = encode(&[(vec![("__name__", "new_metric")], vec![(t, 1.0)])]);
    assert_eq!(gw.write(Some("tok-b"), new).0, 204);
    let recent = format!("start={}&end={}", (t - 600_000) / 1000, (t + 60_000) / 1000);
    // without match[]: the range alone narrows labels and values
    let check = |a: &str, round: &str| {
        let (_, _, body) = get_as(a, Some(&fleet), &format!("/api/v1/labels?{recent}"));
        assert!(!body.contains("old_label"), "{round}: {body}");
        let (_, _, body) = get_as(
            a,
            Some(&fleet),
            &format!("/api/v1/label/__name__/values?{recent}"),
        );
        assert_eq!(
            json(&body)["data"],
            serde_json::json!(["new_metric"]),
            "{round}: {body}"
        );
        let (_, _, body) = get_as(a, Some(&fleet), "/api/v1/label/__name__/values");
        assert_eq!(
            json(&body)["data"],
            serde_json::json!(["new_metric", "old_metric"]),
            "{round}: {body}"
        );
        let (_, _, body) = get_as(
            a,
            Some(&fleet),
            &format!(
                "/api/v1/series?{recent}&match[]={}",
                urlencode(r#"{__name__=~".+"}"#)
            ),
        );
        assert_eq!(clusters_in(&json(&body)), vec!["beta"], "{round}: {body}");
    };
    check(&a, "memtable");
    // SIGTERM flushes to Parquet: after the restart the files' series tables answer
    gw.stop();
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    assert!(
        std::fs::read_dir(dir.path().join("data/samples")).is_ok(),
        "flushed to Parquet"
    );
    check(&gw.addr, "parquet");
}

/// A long query whose client goes away stops: the query pool's in-flight gauge returns to 0 and
/// the query never completes.
#[test]
fn a_disconnected_query_releases_its_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let gw = Gateway::start(
        &dir.path().join("data"),
        Some(&cfg),
        &[("FLEETGATE__QUERY__MAX_SAMPLES", "100000000000")],
    );
    let t = load(&gw);
    // nested 1 s subqueries over a day: tens of seconds of evaluation, little memory
    let q = format!(
        "/api/v1/query_range?start={}&end={}&step=10&query={}",
        (t - 86_400_000) / 1000,
        t / 1000,
        urlencode("max_over_time(max_over_time(max_over_time(vector(1)[1h:1s])[1h:1s])[1h:1s])")
    );
    let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
    write!(
        s,
        "GET {q} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("fleet", "fleet-pw")
    )
    .unwrap();
    let gauge = |name: &str| -> f64 {
        gw.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge("fleetgate_queries_in_flight") < 1.0 {
        assert!(Instant::now() < deadline, "the query never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gauge("fleetgate_queries_in_flight"), 1.0, "still running");
    drop(s); // the client goes away
    let deadline = Instant::now() + Duration::from_secs(20);
    while gauge("fleetgate_queries_in_flight") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the query still runs after its client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // it was stopped, not finished: no query_range ever completed
    let m = gw.metrics();
    assert!(
        !m.contains("fleetgate_query_duration_seconds_count{kind=\"query_range\"}"),
        "{m}"
    );
    // and the gateway still answers
    let (code, _, _) = get_as(
        &gw.addr,
        Some(&basic("fleet", "fleet-pw")),
        "/api/v1/query?query=1",
    );
    assert_eq!(code, 200);
}
