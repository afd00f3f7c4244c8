//! Hostile queries against the binary: nesting 10, 400, 10^3 and 10^5 levels deep for every
//! construct that recurses, oversized bodies; each gets its answer (200, or a clear 400/413) and the
//! gateway stays up.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use crate::harness::*;

/// `(name, text at depth n)` for every construct that nests.
fn constructs(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("parens", format!("{}m{}", "(".repeat(n), ")".repeat(n))),
        ("abs", format!("{}m{}", "abs(".repeat(n), ")".repeat(n))),
        ("sum", format!("{}m{}", "sum(".repeat(n), ")".repeat(n))),
        ("negation", format!("{}m{}", "-(".repeat(n), ")".repeat(n))),
        ("sum chain", vec!["m"; n].join("+")),
        ("unary chain", format!("{}m", "-".repeat(n))),
        (
            "subqueries",
            format!("{}m{}", "max_over_time(".repeat(n), "[5m:1m])".repeat(n)),
        ),
    ]
}

fn post_query(addr: &str, q: &str) -> (u16, serde_json::Value) {
    let h = vec![
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Authorization".to_string(), READER_AUTH.to_string()),
    ];
    let form = format!("query={}", urlencode(q));
    let (code, body) = http_request(addr, "POST", "/api/v1/query", &h, form.as_bytes()).unwrap();
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (code, v)
}

#[test]
fn deep_and_long_queries_get_answers_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let t = now_ms();
    let body = encode(&[(vec![("__name__", "m")], vec![(t - 1000, 2.0)])]);
    assert_eq!(gw.write(Some("tok-a"), body).0, 204);
    for (n, allowed) in [(10, true), (400, true), (1_000, false), (100_000, false)] {
        for (what, q) in constructs(n) {
            let (code, v) = post_query(&gw.addr, &q);
            if allowed {
                assert_eq!(code, 200, "{what} × {n}: {v}");
                assert_eq!(v["status"], "success", "{what} × {n}");
            } else if code == 413 {
                // 10^5 subqueries are 3 MB of form, past the 2 MiB read-body limit
                assert!(what == "subqueries" && n == 100_000, "{what} × {n}: 413");
            } else {
                assert_eq!(code, 400, "{what} × {n}: {v}");
                assert_eq!(v["errorType"], "bad_data", "{what} × {n}");
                let msg = v["error"].as_str().unwrap_or_default();
                assert!(
                    msg.contains("at most 500"),
                    "{what} × {n}: the error says the limit: {msg}"
                );
                assert!(msg.len() < 1_000, "{what} × {n}: the error is short");
            }
            // alive after every one
            assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
        }
    }
    // deep match[] selectors of the metadata API and the export are refused the same way
    let deep = format!("{}m{}", "(".repeat(100_000), ")".repeat(100_000));
    for path in ["/api/v1/series", "/api/v1/labels", "/api/v1/export"] {
        let h = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("Authorization".to_string(), READER_AUTH.to_string()),
        ];
        let form = format!("match[]={}", urlencode(&deep));
        let (code, body) = http_request(&gw.addr, "POST", path, &h, form.as_bytes()).unwrap();
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("at most 500"), "{path}: {body}");
    }
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
    gw.stop();
}

#[test]
fn oversized_read_bodies_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let body = format!("query={}", "a".repeat(3 << 20));
    let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: {READER_AUTH}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // send the body from another thread while the answer is read, as a client does
    let mut w = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(body.as_bytes());
    });
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let (code, _, text) = parse_response(&buf);
    assert_eq!(code, 413, "{text}");
    drop(s);
    let _ = sender.join();
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
}

/// Nested fine-grained subqueries over many series are refused by the sample budget before they
/// take the machine, and a query past its `timeout` stops within about a second of it.
#[test]
fn nested_subqueries_and_timeouts_hold() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let gw = Gateway::start(
        &dir.path().join("data"),
        Some(&cfg),
        &[("FLEETGATE__QUERY__MAX_SAMPLES", "1000000")],
    );
    let t = now_ms();
    let names: Vec<String> = (0..200).map(|i| format!("i{i}")).collect();
    let series: Vec<TestSeries<'_>> = names
        .iter()
        .map(|n| {
            (
                vec![("__name__", "m"), ("instance", n.as_str())],
                vec![(t - 1000, 1.0)],
            )
        })
        .collect();
    assert_eq!(gw.write(Some("tok-a"), encode(&series)).0, 204);
    let started = std::time::Instant::now();
    let (code, v) = post_query(&gw.addr, "max_over_time(rate(m[1h:1ms])[1h:1ms])");
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["errorType"], "execution");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("too many samples"),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 1 << 20, "peak RSS {} MiB", peak_kb >> 10);

    // a query that would run for many seconds, asked with timeout=1s
    let h = vec![
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Authorization".to_string(), READER_AUTH.to_string()),
    ];
    let form = format!(
        "timeout=1s&start={}&end={}&step=10&query={}",
        (t - 86_400_000) / 1000,
        t / 1000,
        urlencode("max_over_time(max_over_time(max_over_time(vector(1)[1h:1s])[1h:1s])[1h:1s])")
    );
    let started = std::time::Instant::now();
    let (code, body) =
        http_request(&gw.addr, "POST", "/api/v1/query_range", &h, form.as_bytes()).unwrap();
    let took = started.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"errorType\":\"timeout\""), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "stopped {took:?} after a 1 s timeout"
    );
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
}
