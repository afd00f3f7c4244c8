//! Bytes per sample of sample files under several encodings, on simulated scrape data
//! (20k series × 480 samples, 15 s interval ±3 ms, counters/gauges/constants mixed; see
//! `sim.rs`), and the time to encode one hour of 2k series with the chosen encoding.
//!
//! Run: `cargo bench -p fleetgate-store --bench encoding`. Set `FLEETGATE_SIM_SERIES` to change
//! the series count.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/bench code: panics are failures

mod sim;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetgate_store::partition::write::encode_samples;
use fleetgate_store::partition::{SamplesEncoding, TimestampEncoding, ValueEncoding};
use object_store::path::Path;
use parquet::file::metadata::ParquetMetaDataReader;

const T0: i64 = 1_767_225_600_000;

fn variants() -> Vec<(&'static str, SamplesEncoding)> {
    let chosen = SamplesEncoding::default();
    vec![
        (
            "parquet defaults (dictionary everywhere) + zstd3",
            SamplesEncoding {
                delta_ids_and_timestamps: false,
                timestamp: TimestampEncoding::Delta,
                value: ValueEncoding::Dictionary,
                zstd_level: 3,
            },
        ),
        (
            "delta ids/ts + PLAIN value + zstd3",
            SamplesEncoding {
                value: ValueEncoding::Plain,
                ..chosen
            },
        ),
        (
            "delta ids/ts + dictionary value + zstd3",
            SamplesEncoding {
                value: ValueEncoding::Dictionary,
                ..chosen
            },
        ),
        (
            "delta ids/ts + BYTE_STREAM_SPLIT value + zstd3 (chosen)",
            chosen,
        ),
        (
            "delta ids, PLAIN ts + BYTE_STREAM_SPLIT value + zstd3",
            SamplesEncoding {
                timestamp: TimestampEncoding::Plain,
                ..chosen
            },
        ),
        (
            "delta ids, BYTE_STREAM_SPLIT ts + BSS value + zstd3",
            SamplesEncoding {
                timestamp: TimestampEncoding::ByteStreamSplit,
                ..chosen
            },
        ),
        (
            "delta ids/ts + BYTE_STREAM_SPLIT value + zstd9",
            SamplesEncoding {
                zstd_level: 9,
                ..chosen
            },
        ),
        (
            "delta ids/ts + dictionary value + zstd9",
            SamplesEncoding {
                value: ValueEncoding::Dictionary,
                zstd_level: 9,
                ..chosen
            },
        ),
    ]
}

fn report_sizes() {
    let n: usize = std::env::var("FLEETGATE_SIM_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let hours = sim::generate(n, 480, T0);
    let samples: usize = hours
        .iter()
        .flat_map(|h| h.1.iter())
        .map(|r| r.ts.len())
        .sum();
    println!(
        "\nbytes/sample over {n} series × 480 samples = {samples} samples, {} hour files",
        hours.len()
    );
    for (name, enc) in variants() {
        let mut bytes = 0usize;
        let t = std::time::Instant::now();
        for (i, (hour, rows)) in hours.iter().enumerate() {
            let (b, _) =
                encode_samples(rows.clone(), enc, *hour, i as u64, 0, Path::from("x")).unwrap();
            bytes += b.len();
        }
        println!(
            "  {name:<58} {:>6.3} B/sample  ({bytes} B, encode {:.2} s)",
            bytes as f64 / samples as f64,
            t.elapsed().as_secs_f64()
        );
        if enc == SamplesEncoding::default() {
            let Some((hour, rows)) = hours.iter().max_by_key(|h| h.1.len()) else {
                continue;
            };
            let (b, _) = encode_samples(rows.clone(), enc, *hour, 0, 0, Path::from("x")).unwrap();
            let md = ParquetMetaDataReader::new()
                .parse_and_finish(&Bytes::from(b))
                .unwrap();
            let rows = md.file_metadata().num_rows() as f64;
            let mut cols = vec![0i64; md.file_metadata().schema_descr().num_columns()];
            for rg in md.row_groups() {
                for (i, c) in rg.columns().iter().enumerate() {
                    cols[i] += c.compressed_size();
                }
            }
            let names = ["metric", "cluster", "series_id", "timestamp", "value"];
            let parts: Vec<String> = names
                .iter()
                .zip(&cols)
                .map(|(n, c)| format!("{n} {:.3}", *c as f64 / rows))
                .collect();
            println!(
                "      per column (B/row, fullest hour file): {}",
                parts.join(", ")
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    report_sizes();
    let hours = sim::generate(2000, 240, T0);
    let (hour, rows) = hours.into_iter().max_by_key(|h| h.1.len()).unwrap();
    let n: usize = rows.iter().map(|r| r.ts.len()).sum();
    let mut g = c.benchmark_group("encode_hour");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("chosen_2k_series", |b| {
        b.iter(|| {
            encode_samples(
                rows.clone(),
                SamplesEncoding::default(),
                hour,
                1,
                0,
                Path::from("x"),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
