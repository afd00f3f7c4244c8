//! Unit tests of the streaming decoder on hand-built byte strings.

use super::*;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_len(field: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn label(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    field_len(1, name, &mut b);
    field_len(2, value, &mut b);
    b
}

fn sample(value: f64, ts: i64) -> Vec<u8> {
    let mut b = vec![0x09];
    b.extend_from_slice(&value.to_bits().to_le_bytes());
    b.push(0x10);
    varint(ts as u64, &mut b);
    b
}

fn request(series: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    for s in series {
        field_len(1, s, &mut b);
    }
    b
}

type Decoded = Vec<(Vec<(String, String)>, Vec<RawSample>, u128)>;

fn decode_all(buf: &[u8]) -> Result<Decoded> {
    let mut d = WriteRequestDecoder::new(buf);
    let mut s = RawSeries::default();
    let mut out = Vec::new();
    while d.next_series(&mut s)? {
        let labels = s
            .labels()
            .map(|l| l.map(|(n, v)| (n.to_owned(), v.to_owned())))
            .collect::<Result<Vec<_>>>()?;
        out.push((labels, s.samples().to_vec(), s.label_key(1)));
    }
    Ok(out)
}

fn err_reason(buf: &[u8]) -> (usize, String) {
    match decode_all(buf) {
        Err(Error::Protobuf { offset, reason }) => (offset, reason),
        other => panic!("expected a protobuf error, got {other:?}"),
    }
}

#[test]
fn decodes_labels_and_samples() {
    let mut ts = Vec::new();
    field_len(1, &label(b"__name__", b"up"), &mut ts);
    field_len(1, &label(b"job", b"a"), &mut ts);
    field_len(2, &sample(1.5, 1_700_000_000_000), &mut ts);
    field_len(2, &sample(-2.0, -5), &mut ts);
    let got = decode_all(&request(&[ts])).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        vec![("__name__".into(), "up".into()), ("job".into(), "a".into())]
    );
    assert_eq!(
        got[0].1,
        vec![
            RawSample {
                timestamp_ms: 1_700_000_000_000,
                value: 1.5
            },
            RawSample {
                timestamp_ms: -5,
                value: -2.0
            }
        ]
    );
}

#[test]
fn split_labels_hash_like_contiguous_ones() {
    let (l1, l2) = (label(b"__name__", b"up"), label(b"job", b"a"));
    let mut contiguous = Vec::new();
    field_len(1, &l1, &mut contiguous);
    field_len(1, &l2, &mut contiguous);
    field_len(2, &sample(1.0, 1), &mut contiguous);
    let mut split = Vec::new();
    field_len(1, &l1, &mut split);
    field_len(2, &sample(1.0, 1), &mut split);
    field_len(1, &l2, &mut split);
    let a = decode_all(&request(&[contiguous])).unwrap();
    let b = decode_all(&request(&[split])).unwrap();
    assert_eq!(a[0].0, b[0].0);
    assert_eq!(a[0].2, b[0].2);
}

#[test]
fn defaults_unknown_fields_and_skipped_fields() {
    // empty Sample = value 0, timestamp 0; unknown fields of every wire type are skipped
    let mut ts = Vec::new();
    field_len(2, &[], &mut ts);
    ts.extend_from_slice(&[0x28, 0x96, 0x01]); // field 5 varint
    ts.extend_from_slice(&[0x31, 1, 2, 3, 4, 5, 6, 7, 8]); // field 6 fixed64
    ts.extend_from_slice(&[0x3d, 1, 2, 3, 4]); // field 7 fixed32
    field_len(3, b"exemplar", &mut ts);
    field_len(4, b"histogram", &mut ts);
    let mut req = request(&[ts]);
    field_len(3, b"metadata", &mut req);
    field_len(9, b"future field", &mut req);
    let mut d = WriteRequestDecoder::new(&req);
    let mut s = RawSeries::default();
    assert!(d.next_series(&mut s).unwrap());
    assert_eq!(
        s.samples(),
        &[RawSample {
            timestamp_ms: 0,
            value: 0.0
        }]
    );
    assert_eq!((s.exemplars(), s.histograms(), s.label_count()), (1, 1, 0));
    assert!(!d.next_series(&mut s).unwrap());
    assert_eq!(d.metadata_count(), 1);
}

#[test]
fn nan_bits_survive() {
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let mut ts = Vec::new();
    field_len(2, &sample(stale, 1), &mut ts);
    let got = decode_all(&request(&[ts])).unwrap();
    assert_eq!(got[0].1[0].value.to_bits(), 0x7ff0_0000_0000_0002);
}

#[test]
fn malformed_inputs_name_offset_and_field() {
    // truncated varint tag
    let (off, reason) = err_reason(&[0x0a, 0x80]);
    assert_eq!(off, 1);
    assert!(reason.contains("truncated varint"), "{reason}");
    // length past end
    let (off, reason) = err_reason(&[0x0a, 0x05, 0x00]);
    assert_eq!(off, 1);
    assert!(reason.contains("WriteRequest.timeseries"), "{reason}");
    // bad wire type
    let (_, reason) = err_reason(&[0x17]);
    assert!(reason.contains("invalid wire type 7"), "{reason}");
    // timeseries with the wrong wire type
    let (off, reason) = err_reason(&[0x08, 0x01]);
    assert_eq!(off, 0);
    assert!(
        reason.contains("wrong wire type 0 for field 1 of WriteRequest"),
        "{reason}"
    );
    // field number 0
    let (_, reason) = err_reason(&[0x02, 0x00]);
    assert!(reason.contains("field number 0"), "{reason}");
    // group
    let (_, reason) = err_reason(&[0x13]);
    assert!(reason.contains("group"), "{reason}");
    // truncated sample value
    let mut ts = Vec::new();
    field_len(2, &[0x09, 1, 2, 3], &mut ts);
    let (_, reason) = err_reason(&request(&[ts]));
    assert!(reason.contains("Sample.value"), "{reason}");
    // varint overflow
    let mut ts = Vec::new();
    field_len(
        2,
        &[
            0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ],
        &mut ts,
    );
    let (_, reason) = err_reason(&request(&[ts]));
    assert!(reason.contains("overflows"), "{reason}");
    // invalid UTF-8 in a label value, at its offset
    let mut ts = Vec::new();
    field_len(1, &label(b"job", b"a\xffb"), &mut ts);
    let req = request(&[ts]);
    let (off, reason) = err_reason(&req);
    assert!(reason.contains("Label.value"), "{reason}");
    assert_eq!(req[off], 0xff);
    // length inside a label past the label's end (but within the buffer)
    let mut ts = Vec::new();
    field_len(1, &[0x0a, 0x09, b'a'], &mut ts);
    field_len(2, &sample(1.0, 1), &mut ts);
    let (_, reason) = err_reason(&request(&[ts]));
    assert!(reason.contains("Label.name"), "{reason}");
}

#[test]
fn decompress_limits() {
    let body = snap::raw::Encoder::new()
        .compress_vec(&[7u8; 1000])
        .unwrap();
    assert_eq!(decompress(&body, 1000).unwrap(), vec![7u8; 1000]);
    assert!(matches!(
        decompress(&body, 999),
        Err(Error::TooLarge {
            limit: 999,
            actual: 1000
        })
    ));
    assert!(matches!(
        decompress(b"\xff\xff\xff", 1 << 20),
        Err(Error::Snappy(_))
    ));
    assert!(decompress(&[], 0).unwrap().is_empty());
}
