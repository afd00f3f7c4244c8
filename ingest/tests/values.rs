//! Special float values are stored bit-exact.

use crate::util::*;

#[tokio::test]
async fn nan_inf_and_stale_marker_keep_their_bits() {
    let values = [
        f64::from_bits(0x7ff0_0000_0000_0002), // Prometheus stale marker
        f64::NAN,
        f64::from_bits(0xfff8_0000_0000_0001), // negative NaN with payload
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE / 2.0, // subnormal
        f64::MAX,
    ];
    let samples: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (NOW_MS - 1000 + i as i64, *v))
        .collect();
    let ing = ingester();
    let out = ing
        .remote_write(
            &ctx("c"),
            body(vec![series(&[("__name__", "m")], &samples)]),
            NOW_MS,
        )
        .await
        .unwrap();
    assert_eq!(out.samples_accepted, values.len() as u64);
    let stored = ing.store().samples();
    let got: Vec<u64> = stored.iter().map(|s| s.value.to_bits()).collect();
    let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want);
    assert!(
        stored
            .iter()
            .zip(&samples)
            .all(|(s, (t, _))| s.timestamp_ms == *t)
    );
}

/// prost's encoder omits a double equal to 0.0, and so drops `-0.0`; Go's encoder (Prometheus)
/// compares bits and sends it. Hand-encoded here.
#[tokio::test]
async fn negative_zero_keeps_its_sign() {
    let mut sample = vec![0x09];
    sample.extend_from_slice(&(-0.0f64).to_bits().to_le_bytes());
    sample.push(0x10);
    let mut ts = NOW_MS as u64;
    while ts >= 0x80 {
        sample.push((ts as u8) | 0x80);
        ts >>= 7;
    }
    sample.push(ts as u8);
    let label = [&[0x0a, 8][..], b"__name__", &[0x12, 1], b"m"].concat();
    let series = [
        &[0x0a, label.len() as u8][..],
        &label,
        &[0x12, sample.len() as u8],
        &sample,
    ]
    .concat();
    let req = [&[0x0a, series.len() as u8][..], &series].concat();
    let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
    let ing = ingester();
    ing.remote_write(&ctx("c"), body.into(), NOW_MS)
        .await
        .unwrap();
    assert_eq!(
        ing.store().samples()[0].value.to_bits(),
        0x8000_0000_0000_0000
    );
}
