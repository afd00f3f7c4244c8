//! Connections from the binary's point of view: slow and idle clients are cut off after
//! `http.header_read_timeout`, a trickled body after `http.body_read_timeout`, at most `http.max_connections` are open at once, and SIGTERM exits
//! within `http.shutdown_timeout` even with a long query running.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

fn gauge(gw: &Gateway, name: &str) -> f64 {
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// True when the peer closes `s` within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or similar before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_capped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(
        dir.path(),
        "http:\n  header_read_timeout: 1s\n  max_connections: 40\n",
    );
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    // 20 clients that send half a request header, 19 that send nothing: 39 of 40 slots
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..39 {
        let mut s = TcpStream::connect(&gw.addr).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        held.push(s);
    }
    let started = Instant::now();
    // while they are held, the last slot still answers, and more clients wait for a slot
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
    let extra: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(&gw.addr).unwrap())
        .collect();
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "connection {i} still open"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off after the header timeout, not later: {:?}",
        started.elapsed()
    );
    drop(extra);
    // every held connection is gone; those waiting in the backlog were served (and cut) too
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&gw, "fleetgate_http_connections") > 1.0 {
        assert!(Instant::now() < deadline, "connections not released");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gauge(&gw, "fleetgate_http_connection_limit_waits_total") >= 1.0);
    assert!(gauge(&gw, "fleetgate_http_connections_accepted_total") >= 45.0);
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
    gw.stop();
}

#[test]
fn sigterm_exits_within_the_shutdown_timeout_with_a_query_running() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "http:\n  shutdown_timeout: 1s\n");
    let mut gw = Gateway::start(
        &dir.path().join("data"),
        Some(&cfg),
        &[("FLEETGATE__QUERY__MAX_SAMPLES", "100000000000")],
    );
    let t = now_ms();
    let body = encode(&[(vec![("__name__", "m")], vec![(t - 1000, 1.0)])]);
    assert_eq!(gw.write(Some("tok-a"), body).0, 204);
    // a query that runs for many seconds
    let q = format!(
        "/api/v1/query_range?start={}&end={}&step=10&query={}",
        (t - 86_400_000) / 1000,
        t / 1000,
        urlencode("max_over_time(max_over_time(max_over_time(vector(1)[1h:1s])[1h:1s])[1h:1s])")
    );
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    write!(
        s,
        "GET {q} HTTP/1.1\r\nHost: x\r\nAuthorization: {READER_AUTH}\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&gw, "fleetgate_queries_in_flight") < 1.0 {
        assert!(Instant::now() < deadline, "the query never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = gw.child.id().to_string();
    let signalled = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = signalled + Duration::from_secs(20);
    loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            assert!(status.success(), "exit {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM with a 1 s shutdown timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    // the write before the shutdown is there after a restart
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    assert_eq!(gw.export("m").len(), 1);
}

/// Sends a header announcing 1,000 body bytes and then only 10, and reads the answer.
fn trickled(addr: &str, path: &str, extra: &str) -> (u16, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n{extra}\r\n0123456789"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    (parse_response(&raw).0, t.elapsed())
}

#[test]
fn a_trickled_body_is_answered_408_after_the_body_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "http:\n  body_read_timeout: 1s\n");
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let (code, took) = trickled(
        &gw.addr,
        "/api/v1/write",
        "Authorization: Bearer tok-a\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n",
    );
    assert_eq!(code, 408, "remote-write with a trickled body");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    assert_eq!(
        gauge(&gw, "fleetgate_inflight_request_bytes"),
        0.0,
        "its reservation is released"
    );
    let (code, took) = trickled(
        &gw.addr,
        "/api/v1/query",
        &format!(
            "Authorization: {READER_AUTH}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        ),
    );
    assert!(
        (400..500).contains(&code),
        "a query form with a trickled body: {code}"
    );
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    // the server is fine
    assert_eq!(http_get(&gw.addr, "/-/healthy").unwrap().0, 200);
    gw.stop();
}
