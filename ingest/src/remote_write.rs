//! Prometheus remote-write 1.0 ingestion: a snappy-compressed `WriteRequest` body decoded onto
//! the [`crate::pipeline`] as one [`Batch`](crate::pipeline::Batch).
//!
//! Per request: check the store's budget, decompress (capped), stream the series
//! ([`decode`]) and push each with its samples. The series cache is keyed by a hash of the
//! encoded label fields as they are on the wire, so a cache hit never parses a label. Native
//! histogram samples are rejected (counted), exemplars and metadata are counted and skipped.

pub mod decode;
pub mod proto;
pub mod synth;

use bytes::Bytes;

use self::decode::{RawSeries, WriteRequestDecoder};
use crate::cluster::ClusterContext;
use crate::error::Result;
use crate::outcome::{RejectReason, WriteOutcome};
use crate::pipeline::{Ingester, PreparedWrite, SeriesLabels};
use crate::sink::SeriesSink;

impl SeriesLabels for RawSeries<'_> {
    #[inline]
    fn key(&self, seed: u64) -> u128 {
        self.label_key(seed)
    }

    fn labels<'s>(&'s self, out: &mut Vec<(&'s str, &'s str)>) -> Result<()> {
        for label in RawSeries::labels(self) {
            out.push(label?);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        RawSeries::describe(self)
    }
}

impl<S: SeriesSink> Ingester<S> {
    /// Ingests one remote-write 1.0 body (snappy block format) for `cluster` at gateway time
    /// `now_ms`. Resolves after the accepted samples are durable. An `Ok` outcome with rejections
    /// means a 400 for the sender (after the valid samples were stored); an `Err` means nothing was
    /// stored (see [`crate::Error::kind`]).
    pub async fn remote_write(
        &self,
        cluster: &ClusterContext,
        body: Bytes,
        now_ms: i64,
    ) -> Result<WriteOutcome> {
        self.check_budget()?;
        let prepared = self.prepare(cluster, &body, now_ms)?;
        self.commit(prepared).await
    }

    /// Everything of [`Ingester::remote_write`] except the budget check and the append: decode,
    /// validate, resolve series ids (creating series in the store as needed). When the body turns
    /// out malformed part-way, series created before that point stay in the store without
    /// samples, which is harmless; no sample of the request is appended.
    pub fn prepare(
        &self,
        cluster: &ClusterContext,
        body: &[u8],
        now_ms: i64,
    ) -> Result<PreparedWrite> {
        let buf = decode::decompress(body, self.options().max_decompressed_bytes)?;
        // A live-shaped series with one sample is ~200 encoded bytes.
        let mut batch = self.batch(cluster, now_ms, buf.len() / 128 + 16);
        let mut decoder = WriteRequestDecoder::new(&buf);
        let mut series = RawSeries::default();
        while decoder.next_series(&mut series)? {
            batch.outcome_mut().exemplars_ignored += series.exemplars();
            let histograms = series.histograms();
            if histograms > 0 {
                batch.reject(RejectReason::NativeHistogramUnsupported, histograms, || {
                    format!(
                        "{}: {}",
                        series.describe(),
                        RejectReason::NativeHistogramUnsupported
                    )
                });
            }
            if !series.samples().is_empty() {
                batch.push(&series, series.samples())?;
            }
        }
        batch.outcome_mut().metadata_ignored = decoder.metadata_count();
        Ok(batch.finish())
    }
}
