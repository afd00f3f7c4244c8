//! The streaming decoder agrees with prost on randomized requests, including non-canonical
//! encodings (interleaved repeated fields, unknown fields at every level, repeated singular
//! fields), and on every truncation of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetgate_ingest::remote_write::decode::{RawSeries, WriteRequestDecoder};
use fleetgate_ingest::remote_write::proto::{
    BucketSpan, Exemplar, Histogram, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
    histogram,
};
use fleetgate_ingest::remote_write::synth::Prng;
use fleetgate_ingest::{IngestOptions, Ingester, MemorySink};
use prost::Message;

use crate::util::*;

const NAMES: [&str; 8] = [
    "__name__",
    "job",
    "instance",
    "pod",
    "a",
    "zz",
    "le",
    "namespace",
];
const VALUES: [&str; 8] = [
    "up",
    "",
    "10.0.0.1:9100",
    "ünïcödé ✓",
    "x",
    "a\"b\\c\n",
    "0.5",
    "api-7d9c8b6f5d-x2k4q",
];

fn random_string(rng: &mut Prng, pool: &[&str]) -> String {
    if rng.chance(0.7) {
        pool[rng.below(pool.len() as u64) as usize].to_string()
    } else {
        (0..rng.below(40))
            .map(|_| char::from_u32(rng.below(0x1_0000) as u32).unwrap_or('x'))
            .collect()
    }
}

fn random_labels(rng: &mut Prng, max: u64) -> Vec<Label> {
    (0..rng.below(max + 1))
        .map(|_| Label {
            name: random_string(rng, &NAMES),
            value: random_string(rng, &VALUES),
        })
        .collect()
}

fn random_f64(rng: &mut Prng) -> f64 {
    match rng.below(4) {
        0 => f64::from_bits(rng.next_u64()), // any bits, NaN payloads included
        1 => f64::from_bits(0x7ff0_0000_0000_0002),
        2 => 0.0,
        _ => rng.unit() * 1e9,
    }
}

fn random_i64(rng: &mut Prng) -> i64 {
    match rng.below(3) {
        0 => rng.next_u64() as i64,
        1 => 0,
        _ => NOW_MS + rng.below(100_000) as i64 - 50_000,
    }
}

fn random_request(rng: &mut Prng) -> WriteRequest {
    let timeseries = (0..rng.below(12))
        .map(|_| TimeSeries {
            labels: random_labels(rng, 8),
            samples: (0..rng.below(5))
                .map(|_| Sample {
                    value: random_f64(rng),
                    timestamp: random_i64(rng),
                })
                .collect(),
            exemplars: (0..rng.below(3).saturating_sub(1))
                .map(|_| Exemplar {
                    labels: random_labels(rng, 2),
                    value: random_f64(rng),
                    timestamp: random_i64(rng),
                })
                .collect(),
            histograms: (0..rng.below(3).saturating_sub(1))
                .map(|_| Histogram {
                    count: Some(histogram::Count::CountInt(rng.below(1000))),
                    sum: random_f64(rng),
                    schema: rng.below(8) as i32 - 4,
                    positive_spans: vec![BucketSpan {
                        offset: -1,
                        length: 2,
                    }],
                    positive_deltas: vec![3, -1],
                    timestamp: random_i64(rng),
                    ..Histogram::default()
                })
                .collect(),
        })
        .collect();
    let metadata = (0..rng.below(3))
        .map(|_| MetricMetadata {
            r#type: rng.below(8) as i32,
            metric_family_name: random_string(rng, &VALUES),
            help: "help".into(),
            unit: String::new(),
        })
        .collect();
    WriteRequest {
        timeseries,
        metadata,
    }
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(field: u64, body: &[u8], out: &mut Vec<u8>) {
    put_varint(field << 3 | 2, out);
    put_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Maybe appends a field no message here defines (numbers 16..=40), of a random wire type.
fn maybe_unknown(rng: &mut Prng, out: &mut Vec<u8>) {
    if !rng.chance(0.2) {
        return;
    }
    let field = 16 + rng.below(25);
    match rng.below(4) {
        0 => {
            put_varint(field << 3, out);
            put_varint(rng.next_u64() >> rng.below(64), out);
        }
        1 => {
            put_varint(field << 3 | 1, out);
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        2 => {
            let body: Vec<u8> = (0..rng.below(20)).map(|_| rng.next_u64() as u8).collect();
            put_len(field, &body, out);
        }
        _ => {
            put_varint(field << 3 | 5, out);
            out.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
        }
    }
}

fn messy_label(l: &Label, rng: &mut Prng) -> Vec<u8> {
    let mut b = Vec::new();
    if rng.chance(0.1) {
        put_len(1, b"overwritten", &mut b); // repeated singular field: the last one wins
    }
    maybe_unknown(rng, &mut b);
    let (name, value) = (
        |b: &mut Vec<u8>| put_len(1, l.name.as_bytes(), b),
        |b: &mut Vec<u8>| put_len(2, l.value.as_bytes(), b),
    );
    if rng.chance(0.5) {
        name(&mut b);
        maybe_unknown(rng, &mut b);
        value(&mut b);
    } else {
        value(&mut b);
        name(&mut b);
    }
    maybe_unknown(rng, &mut b);
    b
}

fn messy_sample(s: &Sample, rng: &mut Prng) -> Vec<u8> {
    let mut b = Vec::new();
    if rng.chance(0.1) {
        b.push(0x09);
        b.extend_from_slice(&rng.next_u64().to_le_bytes());
        b.push(0x10);
        put_varint(rng.next_u64(), &mut b);
    }
    maybe_unknown(rng, &mut b);
    let value = |b: &mut Vec<u8>| {
        b.push(0x09);
        b.extend_from_slice(&s.value.to_bits().to_le_bytes());
    };
    let ts = |b: &mut Vec<u8>| {
        b.push(0x10);
        put_varint(s.timestamp as u64, b);
    };
    if rng.chance(0.5) {
        value(&mut b);
        ts(&mut b);
    } else {
        ts(&mut b);
        value(&mut b);
    }
    maybe_unknown(rng, &mut b);
    b
}

/// Encodes `req` the way a sloppy but valid encoder could.
fn encode_messy(req: &WriteRequest, rng: &mut Prng) -> Vec<u8> {
    let mut out = Vec::new();
    let mut md = req.metadata.iter().peekable();
    for ts in &req.timeseries {
        if rng.chance(0.3)
            && let Some(m) = md.next()
        {
            put_len(3, &m.encode_to_vec(), &mut out);
        }
        maybe_unknown(rng, &mut out);
        // queues of encoded fields, one per repeated field, merged in random order
        let mut queues: Vec<Vec<Vec<u8>>> = vec![
            ts.labels
                .iter()
                .map(|l| field(1, &messy_label(l, rng)))
                .collect(),
            ts.samples
                .iter()
                .map(|s| field(2, &messy_sample(s, rng)))
                .collect(),
            ts.exemplars
                .iter()
                .map(|e| field(3, &e.encode_to_vec()))
                .collect(),
            ts.histograms
                .iter()
                .map(|h| field(4, &h.encode_to_vec()))
                .collect(),
        ];
        for q in &mut queues {
            q.reverse();
        }
        let mut body = Vec::new();
        while queues.iter().any(|q| !q.is_empty()) {
            let k = rng.below(4) as usize;
            if let Some(f) = queues[k].pop() {
                body.extend_from_slice(&f);
                maybe_unknown(rng, &mut body);
            }
        }
        put_len(1, &body, &mut out);
    }
    for m in md {
        put_len(3, &m.encode_to_vec(), &mut out);
    }
    maybe_unknown(rng, &mut out);
    out
}

fn field(n: u64, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_len(n, body, &mut b);
    b
}

type Decoded = (Vec<(Vec<(String, String)>, Vec<(i64, u64)>, u64, u64)>, u64);

fn decode_fast(buf: &[u8]) -> Result<Decoded, fleetgate_ingest::Error> {
    let mut d = WriteRequestDecoder::new(buf);
    let mut s = RawSeries::default();
    let mut series = Vec::new();
    while d.next_series(&mut s)? {
        let labels = s
            .labels()
            .map(|l| l.map(|(n, v)| (n.to_owned(), v.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        let samples = s
            .samples()
            .iter()
            .map(|x| (x.timestamp_ms, x.value.to_bits()))
            .collect();
        series.push((labels, samples, s.exemplars(), s.histograms()));
    }
    Ok((series, d.metadata_count()))
}

fn decode_prost(buf: &[u8]) -> Result<Decoded, prost::DecodeError> {
    let req = WriteRequest::decode(buf)?;
    let series = req
        .timeseries
        .iter()
        .map(|t| {
            (
                t.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                t.samples
                    .iter()
                    .map(|s| (s.timestamp, s.value.to_bits()))
                    .collect(),
                t.exemplars.len() as u64,
                t.histograms.len() as u64,
            )
        })
        .collect();
    Ok((series, req.metadata.len() as u64))
}

#[test]
fn decode_equals_prost_on_random_requests() {
    let mut rng = Prng::new(0xdec0de);
    for round in 0..3000 {
        let req = random_request(&mut rng);
        let canonical = req.encode_to_vec();
        let messy = encode_messy(&req, &mut rng);
        for buf in [&canonical, &messy] {
            let want = decode_prost(buf).unwrap();
            let got = decode_fast(buf).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(got, want, "round {round}");
        }
        // prost agrees with what was encoded
        let prost_view = decode_prost(&messy).unwrap();
        assert_eq!(prost_view.0.len(), req.timeseries.len());
        assert_eq!(prost_view.1, req.metadata.len() as u64);
    }
}

#[test]
fn truncations_fail_exactly_when_prost_fails() {
    let mut rng = Prng::new(7);
    for _ in 0..300 {
        let req = random_request(&mut rng);
        let messy = encode_messy(&req, &mut rng);
        for cut in 0..messy.len() {
            let buf = &messy[..cut];
            let (a, b) = (decode_fast(buf), decode_prost(buf));
            assert_eq!(
                a.is_ok(),
                b.is_ok(),
                "cut {cut} of {}: {a:?} vs {b:?}",
                messy.len()
            );
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b);
            }
        }
    }
}

/// The stored result does not depend on how the request was encoded.
#[tokio::test]
async fn canonical_and_messy_encodings_store_the_same() {
    let mut rng = Prng::new(11);
    for _ in 0..200 {
        let mut req = random_request(&mut rng);
        req.timeseries.iter_mut().for_each(|t| t.histograms.clear());
        let messy = encode_messy(&req, &mut rng);
        let canonical = req.encode_to_vec();
        let mut results = Vec::new();
        for raw in [canonical, messy] {
            let ing = Ingester::new(Arc::new(MemorySink::new()), IngestOptions::default());
            let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
            let out = ing
                .remote_write(&ctx("c"), body.into(), NOW_MS)
                .await
                .unwrap();
            let sink = ing.store();
            let mut stored: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
            for s in sink.samples() {
                let labels = sink.labels(s.series).unwrap().to_string();
                stored
                    .entry(labels)
                    .or_default()
                    .push((s.timestamp_ms, s.value.to_bits()));
            }
            results.push((out.rejected_samples_by_reason, out.samples_accepted, stored));
        }
        assert_eq!(results[0], results[1]);
    }
}
