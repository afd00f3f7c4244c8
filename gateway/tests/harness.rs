//! Starts the real `fleetgate` binary on an ephemeral port and talks to it like a sender would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleetgate_ingest::remote_write::proto;
use prost::Message as _;

/// A remote-write series for tests: labels and `(timestamp, value)` samples.
pub(crate) type TestSeries<'a> = (Vec<(&'a str, &'a str)>, Vec<(i64, f64)>);

/// The staleness marker.
pub(crate) const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A running gateway.
pub(crate) struct Gateway {
    pub child: Child,
    pub addr: String,
    /// The OTLP/gRPC listener (`host:port`).
    pub grpc_addr: String,
    /// The PostgreSQL wire listener (`host:port`).
    pub pg_addr: String,
    pub data_dir: PathBuf,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The fleet-wide reader of the test configs; [`http_get`] sends its credentials.
pub(crate) const READER_USER: &str = "test-reader";
/// Its password.
pub(crate) const READER_PASSWORD: &str = "reader-pw";
/// `Authorization` value of [`READER_USER`] (basic auth).
pub(crate) const READER_AUTH: &str = "Basic dGVzdC1yZWFkZXI6cmVhZGVyLXB3";

/// A config with two clusters (tokens `tok-a` → `alpha`, `tok-b` → `beta`) and a fleet-wide
/// reader ([`READER_USER`]), small limits for tests.
pub(crate) fn two_cluster_config(dir: &Path, extra: &str) -> PathBuf {
    cluster_config(
        dir,
        "limits:\n  max_label_names_per_series: 12\n  max_label_value_length: 64\n",
        extra,
    )
}

/// The same two clusters with the given limits section (empty: defaults).
pub(crate) fn cluster_config(dir: &Path, limits: &str, extra: &str) -> PathBuf {
    let p = dir.join("fleetgate.yaml");
    let text = format!(
        "{limits}{extra}\nclusters:\n  - name: alpha\n    token: tok-a\n    labels: {{region: eu}}\n  - name: beta\n    token: tok-b\nusers:\n  - name: {READER_USER}\n    password: {READER_PASSWORD}\n    clusters: [\"*\"]\n"
    );
    std::fs::write(&p, text).expect("write config");
    p
}

impl Gateway {
    /// Starts `fleetgate serve` on 127.0.0.1:0 and waits until `/-/ready`.
    pub(crate) fn start(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Gateway {
        let mut g = Gateway {
            child: spawn(data_dir, config, env, "127.0.0.1:0"),
            addr: String::new(),
            grpc_addr: String::new(),
            pg_addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            stderr_lines: Default::default(),
        };
        (g.addr, g.grpc_addr, g.pg_addr) = g.wait_listening();
        g.wait_ready();
        g
    }

    fn wait_listening(&mut self) -> (String, String, String) {
        let stderr = self.child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        let lines = std::sync::Arc::clone(&self.stderr_lines);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("fleetgate listening") {
                    let field = |key: &str| {
                        line.find(&format!(" {key}=")).map(|i| {
                            line[i + key.len() + 2..]
                                .chars()
                                .take_while(|c| !c.is_whitespace())
                                .collect::<String>()
                        })
                    };
                    if let Some(addr) = field("addr") {
                        let _ = tx.send((
                            addr,
                            field("otlp_grpc_addr").unwrap_or_default(),
                            field("pg_addr").unwrap_or_default(),
                        ));
                        sent = true;
                    }
                }
                if std::env::var_os("FLEETGATE_TEST_LOG").is_some() {
                    eprintln!("[gw] {line}");
                }
                lines.lock().expect("lock").push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "gateway did not start listening: {:?}",
                    self.stderr_lines.lock().expect("lock")
                )
            })
    }

    /// Polls `/-/ready` until 200 (60 s at most).
    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(&self.addr, "/-/ready") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway not ready: {:?}",
                    self.stderr_lines.lock().expect("lock")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "gateway exited with {status}: {:?}",
                    self.stderr_lines.lock().expect("lock")
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a remote-write request; returns (status, body).
    pub(crate) fn write(&self, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
        self.write_with(token, body, &[])
    }

    /// Sends a remote-write request with extra headers.
    pub(crate) fn write_with(
        &self,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut h: Vec<(String, String)> = vec![
            ("Content-Encoding".into(), "snappy".into()),
            ("Content-Type".into(), "application/x-protobuf".into()),
            ("X-Prometheus-Remote-Write-Version".into(), "0.1.0".into()),
        ];
        if let Some(t) = token {
            h.push(("Authorization".into(), format!("Bearer {t}")));
        }
        for (k, v) in headers {
            h.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
            h.push((k.to_string(), v.to_string()));
        }
        http_request(&self.addr, "POST", "/api/v1/write", &h, &body).expect("write request")
    }

    /// All series matching `selector`, via `/api/v1/export`.
    pub(crate) fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        let q = format!("/api/v1/export?match[]={}", urlencode(selector));
        let (code, body) = http_get(&self.addr, &q).expect("export");
        assert_eq!(code, 200, "export {selector}: {body}");
        assert!(
            !body.ends_with(TRUNCATED),
            "export {selector}: the gateway aborted the response part-way (a read failed; see its log)"
        );
        body.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                let metric: BTreeMap<String, String> = v["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let timestamps: Vec<i64> = v["timestamps"]
                    .as_array()
                    .expect("ts")
                    .iter()
                    .map(|t| t.as_i64().expect("i64"))
                    .collect();
                let values: Vec<f64> = v["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(|x| match x {
                        serde_json::Value::Number(n) => n.as_f64().expect("f64"),
                        serde_json::Value::String(s) if s == "stale" => f64::from_bits(STALE_NAN),
                        serde_json::Value::String(s) if s == "NaN" => f64::NAN,
                        serde_json::Value::String(s) if s == "+Inf" => f64::INFINITY,
                        serde_json::Value::String(s) if s == "-Inf" => f64::NEG_INFINITY,
                        other => panic!("bad value {other}"),
                    })
                    .collect();
                ExportedSeries {
                    labels: metric,
                    timestamps,
                    values,
                }
            })
            .collect()
    }

    /// The `/metrics` text.
    pub(crate) fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics").expect("metrics").1
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One exported series.
#[derive(Debug, Clone)]
pub(crate) struct ExportedSeries {
    pub labels: BTreeMap<String, String>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

fn spawn(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)], addr: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-addr")
        .arg(addr)
        .arg("--otlp-grpc-addr")
        .arg("127.0.0.1:0")
        .arg("--pg-addr")
        .arg("127.0.0.1:0");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("FLEETGATE_LOG", "info");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn fleetgate")
}

/// Builds a snappy-compressed WriteRequest from `(labels, samples)`.
pub(crate) fn encode(series: &[TestSeries<'_>]) -> Vec<u8> {
    let req = proto::WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| proto::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| proto::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|(t, v)| proto::Sample {
                        timestamp: *t,
                        value: *v,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

/// Unix ms now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// GET over a fresh HTTP/1.1 connection, as the test configs' fleet-wide reader (open mode
/// ignores the credentials).
pub(crate) fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(
        addr,
        "GET",
        path,
        &[("Authorization".into(), READER_AUTH.into())],
        &[],
    )
}

/// A minimal blocking HTTP/1.1 client (one request per connection), enough for tests.
pub(crate) fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_exchange(addr, method, path, headers, body).map(|(code, _, body)| (code, body))
}

/// Like [`http_request`], also returning the response head (status line and headers).
pub(crate) fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // a server that answers before reading the whole body: still read its answer
    let wrote = s.write_all(body);
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    if buf.is_empty() {
        wrote?;
        read?;
    }
    Ok(parse_response(&buf))
}

/// `(status, head, body)` of a raw HTTP/1.1 response (chunked bodies decoded).
pub(crate) fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (code, head.to_string(), body)
}

/// Appended to a chunked body that ended without its terminating zero-size chunk (the server
/// aborted the response).
pub(crate) const TRUNCATED: &str = "\n<truncated: the chunked body had no final chunk>";

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    let mut complete = false;
    while let Some((size_line, rest)) = s.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
        if size == 0 && size_line.trim() == "0" {
            complete = true;
            break;
        }
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        s = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    if !complete {
        out.push_str(TRUNCATED);
    }
    out
}

/// Request `k` of writer `w` in the crash tests: sample `k` (timestamp `t0 + 10k`, value `k`) of
/// each of its `series` series `metric{series="s<i>", writer="<w>"}`.
pub(crate) fn writer_request(metric: &str, series: usize, w: usize, k: i64, t0: i64) -> Vec<u8> {
    let ws = w.to_string();
    let names: Vec<String> = (0..series).map(|i| format!("s{i}")).collect();
    let series: Vec<TestSeries<'_>> = names
        .iter()
        .map(|n| {
            (
                vec![
                    ("__name__", metric),
                    ("series", n.as_str()),
                    ("writer", ws.as_str()),
                ],
                vec![(t0 + k * 10, k as f64)],
            )
        })
        .collect();
    encode(&series)
}

/// Percent-encodes a query parameter value.
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
