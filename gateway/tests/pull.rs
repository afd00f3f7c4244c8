//! Pull sources from the binary: a `/metrics` endpoint (a small HTTP server in the test) and a
//! `/federate` one are scraped on their interval; the samples, `up`, staleness for a series that
//! disappears, a failing source (`up` 0, `fleetgate_pull_*`), and `POST /-/reload` and SIGHUP
//! adding and removing sources without a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

/// A one-route HTTP server answering every GET with the current body; records the request lines
/// and `Authorization` headers it saw.
struct Exporter {
    addr: String,
    body: Arc<Mutex<(u16, String)>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Exporter {
    fn start(body: &str) -> Exporter {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let body = Arc::new(Mutex::new((200u16, body.to_string())));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (b, s) = (Arc::clone(&body), Arc::clone(&seen));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                s.lock().unwrap().push(head);
                let (code, text) = b.lock().unwrap().clone();
                let _ = write!(
                    c,
                    "HTTP/1.1 {code} X\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = c.flush();
                let _ = r.read(&mut [0u8; 1]);
            }
        });
        Exporter { addr, body, seen }
    }

    fn set(&self, code: u16, body: &str) {
        *self.body.lock().unwrap() = (code, body.to_string());
    }
}

fn query(g: &Gateway, q: &str) -> serde_json::Value {
    let (code, body) = http_get(&g.addr, &format!("/api/v1/query?query={}", urlencode(q))).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]["result"].clone()
}

/// Polls `q` until `ok` holds for its result (15 s at most).
fn eventually(g: &Gateway, q: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..150 {
        let r = query(g, q);
        if ok(&r) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{q}: condition not met; last {}", query(g, q));
}

/// `POST /-/reload` with `auth`.
fn reload(g: &Gateway, auth: &str) -> (u16, String) {
    http_request(
        &g.addr,
        "POST",
        "/-/reload",
        &[("Authorization".into(), auth.into())],
        &[],
    )
    .unwrap()
}

fn value(r: &serde_json::Value) -> Option<f64> {
    r.as_array()?.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn scrapes_metrics_and_federate_with_staleness_failures_and_reload() {
    let metrics =
        Exporter::start("# TYPE temp gauge\ntemp{room=\"a\"} 21.5\ntemp{room=\"b\"} 19\n");
    let federate = Exporter::start(
        "up{job=\"node\",instance=\"n1:9100\",cluster=\"theirs\"} 1 1700000000000\nnode_load1{job=\"node\",instance=\"n1:9100\"} 0.5 NOWMS\n",
    );
    let now = now_ms();
    federate.set(
        200,
        &format!("node_load1{{job=\"node\",instance=\"n1:9100\"}} 0.5 {now}\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let sources = format!(
        "sources:\n  - cluster: beta\n    url: http://{}/metrics\n    interval: 1s\n    timeout: 1s\n    bearer_token: pull-secret\n",
        metrics.addr
    );
    let cfg = two_cluster_config(dir.path(), &sources);
    let g = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);

    // scraped, labelled with the cluster, job and instance
    let r = eventually(&g, "temp{room=\"a\"}", |r| value(r) == Some(21.5));
    let m = &r[0]["metric"];
    assert_eq!(
        (m["cluster"].as_str(), m["job"].as_str()),
        (Some("beta"), Some("pull"))
    );
    assert_eq!(m["instance"].as_str(), Some(metrics.addr.as_str()));
    let up = eventually(&g, "up{cluster=\"beta\"}", |r| value(r) == Some(1.0));
    assert_eq!(
        up[0]["metric"]["source"].as_str(),
        Some(metrics.addr.as_str())
    );
    assert!(
        metrics.seen.lock().unwrap()[0].contains("Bearer pull-secret"),
        "the bearer token is sent"
    );
    eventually(&g, "scrape_samples_scraped{cluster=\"beta\"}", |r| {
        value(r) == Some(2.0)
    });

    // room b disappears: stale, so an instant query no longer returns it
    metrics.set(200, "temp{room=\"a\"} 22\n");
    eventually(&g, "temp{room=\"b\"}", |r| {
        r.as_array().is_some_and(|a| a.is_empty())
    });
    eventually(&g, "temp{room=\"a\"}", |r| value(r) == Some(22.0));

    // the source fails: up 0, its series stale, visible in /metrics
    metrics.set(500, "boom");
    eventually(&g, "up{cluster=\"beta\"}", |r| value(r) == Some(0.0));
    eventually(&g, "temp", |r| r.as_array().is_some_and(|a| a.is_empty()));
    let m = g.metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("fleetgate_pull_up{cluster=\"beta\"") && l.ends_with(" 0")),
        "{m}"
    );
    assert!(
        m.contains("fleetgate_pull_failures_total{cluster=\"beta\""),
        "{m}"
    );

    // reload: the /metrics source goes, a /federate source for alpha comes
    let sources = format!(
        "sources:\n  - cluster: alpha\n    url: http://{}/federate\n    interval: 1s\n    timeout: 1s\n    match: ['{{job=\"node\"}}']\n",
        federate.addr
    );
    let cfg = two_cluster_config(dir.path(), &sources);
    assert!(cfg.exists());
    let (code, body) = reload(&g, READER_AUTH);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("1 sources started, 1 stopped"), "{body}");
    let r = eventually(&g, "node_load1", |r| value(r) == Some(0.5));
    let m = &r[0]["metric"];
    // honor_labels: the federated job/instance are kept; the cluster is ours
    assert_eq!(
        (
            m["cluster"].as_str(),
            m["job"].as_str(),
            m["instance"].as_str()
        ),
        (Some("alpha"), Some("node"), Some("n1:9100"))
    );
    let asked = federate.seen.lock().unwrap()[0].clone();
    assert!(asked.starts_with("GET /federate?match%5B%5D="), "{asked}");

    // SIGHUP reloads too: the /metrics source comes back (under a name of its own)
    metrics.set(200, "temp{room=\"c\"} 7\n");
    let sources = format!(
        "sources:\n  - cluster: beta\n    name: thermo\n    url: http://{}/metrics\n    interval: 1s\n    timeout: 1s\n",
        metrics.addr
    );
    two_cluster_config(dir.path(), &sources);
    let pid = g.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(&g, "temp{room=\"c\"}", |r| value(r) == Some(7.0));
    eventually(&g, "up{cluster=\"beta\",source=\"thermo\"}", |r| {
        value(r) == Some(1.0)
    });
    // the federate source is gone: its `up` goes stale
    eventually(&g, "up{cluster=\"alpha\"}", |r| {
        r.as_array().is_some_and(|a| a.is_empty())
    });

    // a cluster token may not reload
    let (code, _) = reload(&g, "Bearer tok-a");
    assert_eq!(code, 403);
    // a config that does not load changes nothing
    std::fs::write(&cfg, "sources:\n  - cluster: alpha\n    url: ftp://x\n").unwrap();
    let (code, body) = reload(&g, READER_AUTH);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("sources[0].url"), "{body}");
    g.stop();
}

/// An HTTPS `/metrics` endpoint with a self-signed certificate for 127.0.0.1 (tokio-rustls);
/// returns its address and the certificate's PEM file.
fn https_exporter(dir: &std::path::Path, body: &'static str) -> (String, std::path::PathBuf) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = dir.join("exporter-ca.crt");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let cert = rustls_pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((tcp, _)) = l.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    (addr, pem)
}

#[test]
fn https_sources_trust_their_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca) = https_exporter(dir.path(), "secure_metric{a=\"1\"} 42\n");
    let sources = format!(
        "sources:\n  - cluster: beta\n    url: https://{addr}/metrics\n    tls_ca_file: {}\n    interval: 1s\n    timeout: 1s\n  - cluster: alpha\n    url: https://{addr}/metrics\n    interval: 1s\n    timeout: 1s\n",
        ca.display()
    );
    let cfg = two_cluster_config(dir.path(), &sources);
    let g = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let r = eventually(&g, "secure_metric", |r| value(r) == Some(42.0));
    assert_eq!(r[0]["metric"]["cluster"].as_str(), Some("beta"));
    // without the CA file the system's roots do not trust the self-signed certificate
    eventually(&g, "up{cluster=\"alpha\"}", |r| value(r) == Some(0.0));
    // a CA file that cannot be read stops the reload with its name; nothing changes
    let bad = format!(
        "sources:\n  - cluster: beta\n    url: https://{addr}/metrics\n    tls_ca_file: /nonexistent/ca.crt\n"
    );
    two_cluster_config(dir.path(), &bad);
    let (code, body) = reload(&g, READER_AUTH);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("/nonexistent/ca.crt"), "{body}");
    eventually(&g, "up{cluster=\"alpha\"}", |r| value(r) == Some(0.0));
    g.stop();
}
