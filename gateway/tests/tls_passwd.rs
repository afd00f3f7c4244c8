//! HTTPS from `http.tls_cert_file` / `http.tls_key_file` (and no fallback to HTTP when they are
//! unusable), and `fleetgate passwd` verifiers accepted as `users[].password_scram`.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::harness::*;

/// A self-signed certificate for 127.0.0.1 and its key, written as PEM files.
fn write_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().to_vec())
}

/// One HTTPS GET trusting only `ca_der`; returns (status, body).
fn https_get(addr: &str, ca_der: &[u8], path: &str, auth: &str) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    // a peer that closes without close_notify ends the read with an error after the data
    let _ = tls.read_to_end(&mut buf);
    let (code, _, body) = parse_response(&buf);
    (code, body)
}

fn passwd(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn https_with_a_scram_user() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_cert(dir.path());
    let verifier = passwd("s3cret pass");
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert_ne!(verifier, passwd("s3cret pass"), "a fresh salt each time");
    let cfg = dir.path().join("fleetgate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "http:\n  tls_cert_file: {}\n  tls_key_file: {}\nclusters:\n  - name: alpha\n    token: tok-a\nusers:\n  - name: grafana\n    password_scram: \"{verifier}\"\n    clusters: [\"*\"]\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(i) = line.find("addr=")
                && line.contains("fleetgate listening")
            {
                let addr: String = line[i + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("grafana:s3cret pass")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("grafana:s3cret")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = https_get(&addr, &ca, "/-/ready", &good);
        if code == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready over TLS");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = https_get(&addr, &ca, "/api/v1/query?query=1%2B1", &good);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"2\""), "{body}");
    assert_eq!(https_get(&addr, &ca, "/api/v1/labels", &bad).0, 401);
    // plain HTTP on the TLS port gets no answer
    let plain = http_get(&addr, "/-/healthy");
    assert!(!matches!(plain, Ok((200, _))), "{plain:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn unusable_tls_files_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key, _) = write_cert(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key, _) = write_cert(other.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    for (c, k, key_named) in [
        (garbage.clone(), other_key.clone(), "http.tls_cert_file"),
        (cert.clone(), garbage.clone(), "http.tls_key_file"),
        (cert.clone(), other_key.clone(), "http.tls_key_file"),
        (
            dir.path().join("missing.crt"),
            other_key,
            "http.tls_cert_file",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--pg-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("FLEETGATE__HTTP__TLS_CERT_FILE", &c)
            .env("FLEETGATE__HTTP__TLS_KEY_FILE", &k)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {c:?} / {k:?}: {err}");
        assert!(err.contains(key_named), "{key_named}: {err}");
        assert!(!err.contains("fleetgate listening"), "{err}");
    }
}
