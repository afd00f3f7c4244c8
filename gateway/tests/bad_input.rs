//! Each kind of bad input gets the right status and a message naming the problem, and loses nothing else.

use crate::harness::*;

fn good(t: i64) -> Vec<u8> {
    encode(&[(vec![("__name__", "keep_me"), ("k", "v")], vec![(t, 42.0)])])
}

#[test]
fn bad_inputs_get_clear_errors_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(
        dir.path(),
        "http:\n  max_body_bytes: 65536\n  max_decompressed_bytes: 1048576",
    );
    let gw = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let t = now_ms();
    assert_eq!(gw.write(Some("tok-a"), good(t)).0, 204);

    // authentication
    let (code, body) = gw.write(None, good(t + 1));
    assert_eq!(code, 401, "{body}");
    let (code, body) = gw.write(Some("wrong"), good(t + 1));
    assert_eq!(code, 401, "{body}");

    // garbage, bad snappy, truncated protobuf
    let (code, body) = gw.write(Some("tok-a"), b"this is not snappy at all".to_vec());
    assert_eq!(code, 400, "garbage: {body}");
    let mut bad_snappy = good(t + 1);
    let n = bad_snappy.len();
    bad_snappy.truncate(n - 3);
    let (code, body) = gw.write(Some("tok-a"), bad_snappy);
    assert_eq!(code, 400, "bad snappy: {body}");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&good(t + 1))
        .unwrap();
    let truncated = snap::raw::Encoder::new()
        .compress_vec(&raw[..raw.len() - 4])
        .unwrap();
    let (code, body) = gw.write(Some("tok-a"), truncated);
    assert_eq!(code, 400, "truncated protobuf: {body}");
    assert!(body.to_lowercase().contains("protobuf"), "{body}");

    // oversized body and oversized decompressed length (checked before allocating)
    let (code, _) = gw.write(Some("tok-a"), vec![0u8; 100_000]);
    assert_eq!(code, 413, "oversized body");
    let mut bomb = Vec::new();
    let mut len = 4u64 << 20; // varint header claiming 4 MiB
    while len >= 0x80 {
        bomb.push((len as u8) | 0x80);
        len >>= 7;
    }
    bomb.push(len as u8);
    bomb.extend_from_slice(&[0u8; 16]);
    let (code, body) = gw.write(Some("tok-a"), bomb);
    assert_eq!(code, 413, "decompressed size over limit: {body}");

    // wrong encoding / remote-write 2.0
    let (code, _) = gw.write_with(Some("tok-a"), good(t + 1), &[("Content-Encoding", "gzip")]);
    assert_eq!(code, 415);

    // empty request
    assert_eq!(gw.write(Some("tok-a"), encode(&[])).0, 204);

    // over-limit labels (max 12 names, value ≤ 64) and bad names next to a valid series: 400, valid stored
    let long = "x".repeat(65);
    let many: Vec<(String, String)> = (0..13).map(|i| (format!("l{i:02}"), "v".into())).collect();
    let mut many_refs: Vec<(&str, &str)> = vec![("__name__", "too_many")];
    many_refs.extend(many.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let body = encode(&[
        (
            vec![("__name__", "long_value"), ("v", long.as_str())],
            vec![(t, 1.0)],
        ),
        (many_refs, vec![(t, 1.0)]),
        (vec![("__name__", "bad-name")], vec![(t, 1.0)]),
        (
            vec![("__name__", "fine"), ("bad.label", "x")],
            vec![(t, 1.0)],
        ),
        (
            vec![("__name__", "future"), ("a", "b")],
            vec![(t + 3_600_000, 1.0)],
        ),
        (
            vec![("__name__", "ancient"), ("a", "b")],
            vec![(t - 40 * 86_400_000, 1.0)],
        ),
        (
            vec![("__name__", "valid_neighbour"), ("a", "b")],
            vec![(t, 7.0)],
        ),
    ]);
    let (code, body) = gw.write(Some("tok-a"), body);
    assert_eq!(code, 400, "{body}");
    for needle in [
        "long_value",
        "too_many",
        "bad-name",
        "bad.label",
        "future",
        "ancient",
    ] {
        assert!(body.contains(needle), "400 body names {needle}: {body}");
    }
    let v = gw.export("valid_neighbour");
    assert_eq!(
        v.len(),
        1,
        "the valid series of a rejected request is stored"
    );
    assert_eq!(v[0].values, vec![7.0]);
    for name in ["long_value", "too_many", "future", "ancient"] {
        assert!(gw.export(name).is_empty(), "{name} not stored");
    }
    let m = gw.metrics();
    assert!(
        m.contains("fleetgate_samples_rejected_total{cluster=\"alpha\",reason="),
        "{m}"
    );

    // spoofed cluster label is kept as exported_cluster
    let body = encode(&[(
        vec![("__name__", "spoof"), ("cluster", "beta")],
        vec![(t, 1.0)],
    )]);
    assert_eq!(gw.write(Some("tok-a"), body).0, 204);
    let s = gw.export("spoof");
    assert_eq!(s[0].labels["cluster"], "alpha");
    assert_eq!(s[0].labels["exported_cluster"], "beta");

    // NaN, ±Inf and the stale marker are stored bit-exact
    let stale = f64::from_bits(STALE_NAN);
    let body = encode(&[(
        vec![("__name__", "specials")],
        vec![
            (t, f64::NAN),
            (t + 1, f64::INFINITY),
            (t + 2, f64::NEG_INFINITY),
            (t + 3, stale),
        ],
    )]);
    assert_eq!(gw.write(Some("tok-a"), body).0, 204);
    let s = gw.export("specials");
    assert!(s[0].values[0].is_nan() && s[0].values[0].to_bits() != STALE_NAN);
    assert_eq!(s[0].values[1], f64::INFINITY);
    assert_eq!(s[0].values[2], f64::NEG_INFINITY);
    assert_eq!(s[0].values[3].to_bits(), STALE_NAN);

    // nothing else was lost, also after a restart
    let data = gw.data_dir.clone();
    gw.stop();
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let k = gw.export("keep_me");
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].values, vec![42.0]);
    assert_eq!(gw.export("specials")[0].values[3].to_bits(), STALE_NAN);
    gw.stop();
}

#[test]
fn export_rejects_bad_selectors_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&dir.path().join("data"), None, &[]);
    let (code, body) = http_get(&gw.addr, "/api/v1/export?match[]=up%7B").unwrap();
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_get(&gw.addr, "/api/v1/export?match[]=up&start=yesterday").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("start"), "{body}");
    gw.stop();
}
