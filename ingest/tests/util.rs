//! Shared helpers: contexts, an ingester over an in-memory sink, request builders.

use std::sync::Arc;

use fleetgate_ingest::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};
use fleetgate_store::Labels;

pub(crate) const NOW_MS: i64 = 1_760_000_000_000;

pub(crate) fn ctx(name: &str) -> ClusterContext {
    ClusterContext::new(name, vec![], Limits::default()).unwrap()
}

pub(crate) fn ctx_with(name: &str, extra: &[(&str, &str)], limits: Limits) -> ClusterContext {
    ClusterContext::new(
        name,
        extra
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        limits,
    )
    .unwrap()
}

pub(crate) fn ingester() -> Ingester<MemorySink> {
    Ingester::new(
        Arc::new(MemorySink::new()),
        IngestOptions {
            max_sample_age_ms: 24 * 3_600_000,
            ..IngestOptions::default()
        },
    )
}

pub(crate) fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        samples: samples
            .iter()
            .map(|(t, v)| Sample {
                value: *v,
                timestamp: *t,
            })
            .collect(),
        ..TimeSeries::default()
    }
}

pub(crate) fn body(timeseries: Vec<TimeSeries>) -> bytes::Bytes {
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
    .encode_snappy()
    .unwrap()
    .into()
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}
