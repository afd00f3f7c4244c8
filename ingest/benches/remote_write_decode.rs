//! The remote-write receive path on a live-shaped request: 2,000 series × 1 sample, ten labels
//! each (Kubernetes node/pod values from `remote_write::synth`), measured in samples/s:
//! - `snappy`: block decompression alone;
//! - `snappy+decode`: decompression plus the streaming decoder as the hit path uses it (series
//!   framing, samples, label-bytes hash);
//! - `snappy+decode+labels`: the same plus every label parsed into UTF-8-checked `&str`s (what a
//!   cache miss adds to decoding);
//! - `snappy+prost`: decompression plus prost decoding into owned structs, for comparison;
//! - `prepare/hit`: `Ingester::prepare` with a warm series cache (decode, timestamp checks,
//!   cache lookups) against an in-memory sink: the steady-state path;
//! - `prepare/miss`: the same with a cold cache (label parsing, validation, canonicalisation,
//!   sink lookups of existing series).

// The request is generated here, not received: a failure to encode or decode it is a bug that
// should abort the bench.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate_ingest::remote_write::decode::{RawSeries, WriteRequestDecoder, decompress};
use fleetgate_ingest::remote_write::proto::WriteRequest;
use fleetgate_ingest::remote_write::synth::{Prng, live_request};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};
use prost::Message;

const SERIES: usize = 2_000;
const NOW_MS: i64 = 1_760_000_000_000;
const MAX: usize = 32 << 20;

fn body() -> Vec<u8> {
    let req = live_request(0, SERIES, 1, NOW_MS - 5_000, &mut Prng::new(42));
    req.encode_snappy().unwrap()
}

fn decode(c: &mut Criterion) {
    let body = body();
    let raw_len = decompress(&body, MAX).unwrap().len();
    eprintln!(
        "request: {SERIES} series, {} bytes protobuf, {} bytes snappy",
        raw_len,
        body.len()
    );
    let mut g = c.benchmark_group("remote_write_decode");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("snappy", |b| {
        b.iter(|| decompress(black_box(&body), MAX).unwrap().len())
    });
    g.bench_function("snappy+decode", |b| {
        b.iter(|| {
            let buf = decompress(black_box(&body), MAX).unwrap();
            let mut d = WriteRequestDecoder::new(&buf);
            let mut s = RawSeries::default();
            let mut acc = 0u128;
            while d.next_series(&mut s).unwrap() {
                acc ^= s.label_key(7);
                for x in s.samples() {
                    acc ^= x.timestamp_ms as u128 ^ u128::from(x.value.to_bits());
                }
            }
            acc
        })
    });
    g.bench_function("snappy+decode+labels", |b| {
        b.iter(|| {
            let buf = decompress(black_box(&body), MAX).unwrap();
            let mut d = WriteRequestDecoder::new(&buf);
            let mut s = RawSeries::default();
            let mut acc = 0usize;
            while d.next_series(&mut s).unwrap() {
                for l in s.labels() {
                    let (n, v) = l.unwrap();
                    acc += n.len() + v.len();
                }
                acc += s.samples().len();
            }
            acc
        })
    });
    g.bench_function("snappy+prost", |b| {
        b.iter(|| {
            let buf = decompress(black_box(&body), MAX).unwrap();
            WriteRequest::decode(buf.as_slice())
                .unwrap()
                .timeseries
                .len()
        })
    });
    g.finish();
}

fn prepare(c: &mut Criterion) {
    let body = body();
    let ctx = ClusterContext::new(
        "prod-eu-1",
        vec![("region".into(), "eu-west-1".into())],
        Limits::default(),
    )
    .unwrap();
    let sink = Arc::new(MemorySink::discarding());
    let warm = Ingester::new(Arc::clone(&sink), IngestOptions::default());
    let first = warm.prepare(&ctx, &body, NOW_MS).unwrap();
    assert_eq!(first.outcome.samples_accepted, SERIES as u64);
    assert_eq!(first.outcome.series_created, SERIES as u64);

    let mut g = c.benchmark_group("remote_write_prepare");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("hit", |b| {
        b.iter(|| {
            let p = warm.prepare(&ctx, black_box(&body), NOW_MS).unwrap();
            debug_assert_eq!(p.outcome.samples_accepted, SERIES as u64);
            p.samples.len()
        })
    });
    g.bench_function("miss", |b| {
        b.iter_batched(
            || Ingester::new(Arc::clone(&sink), IngestOptions::default()),
            |cold| {
                cold.prepare(&ctx, black_box(&body), NOW_MS)
                    .unwrap()
                    .samples
                    .len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decode, prepare);
criterion_main!(benches);
