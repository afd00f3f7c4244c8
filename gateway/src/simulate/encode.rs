//! Writes remote-write 1.0 `WriteRequest` protobuf bytes and snappy-compresses them.
//!
//! Written by hand instead of building `fleetgate_ingest::remote_write::proto` messages:
//! the simulator's hot path is "same labels, one new sample" 100k times a tick, and
//! pre-encoding each series' labels once and appending samples avoids building and
//! dropping a tree of owned `String`s per request. The bytes are canonical protobuf
//! (fields in order, proto3 defaults omitted, as Go's gogoproto and prost both write),
//! and the tests decode them with prost and re-encode them byte for byte.

use prost::encoding::{encode_varint, encoded_len_varint};

/// `WriteRequest.timeseries` (field 1, length-delimited).
const TAG_TIMESERIES: u8 = 0x0a;
/// `TimeSeries.labels` (field 1, length-delimited).
const TAG_LABEL: u8 = 0x0a;
/// `TimeSeries.samples` (field 2, length-delimited).
const TAG_SAMPLE: u8 = 0x12;
/// `Label.name` (field 1) and `Label.value` (field 2), length-delimited.
const TAG_NAME: u8 = 0x0a;
const TAG_VALUE: u8 = 0x12;
/// `Sample.value` (field 1, fixed64 double) and `Sample.timestamp` (field 2, varint int64).
const TAG_SAMPLE_VALUE: u8 = 0x09;
const TAG_SAMPLE_TS: u8 = 0x10;

/// Encodes a label set as the repeated `TimeSeries.labels` fields. Sorts by name;
/// the caller guarantees unique names (checked in debug builds).
pub(crate) fn encode_labels(mut labels: Vec<(&str, String)>) -> Box<[u8]> {
    labels.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    debug_assert!(
        labels.windows(2).all(|w| w[0].0 != w[1].0),
        "duplicate label name in {labels:?}"
    );
    let mut out = Vec::with_capacity(labels.iter().map(|(n, v)| n.len() + v.len() + 6).sum());
    for (name, value) in &labels {
        let mut len = 0;
        if !name.is_empty() {
            len += 1 + encoded_len_varint(name.len() as u64) + name.len();
        }
        if !value.is_empty() {
            len += 1 + encoded_len_varint(value.len() as u64) + value.len();
        }
        out.push(TAG_LABEL);
        encode_varint(len as u64, &mut out);
        if !name.is_empty() {
            out.push(TAG_NAME);
            encode_varint(name.len() as u64, &mut out);
            out.extend_from_slice(name.as_bytes());
        }
        if !value.is_empty() {
            out.push(TAG_VALUE);
            encode_varint(value.len() as u64, &mut out);
            out.extend_from_slice(value.as_bytes());
        }
    }
    out.into_boxed_slice()
}

/// Encoded length of one `Sample` message body.
fn sample_len(ts: i64, value: f64) -> usize {
    let mut len = 0;
    if value != 0.0 {
        len += 9;
    }
    if ts != 0 {
        len += 1 + encoded_len_varint(ts as u64);
    }
    len
}

/// One finished request: the snappy-compressed body and what it carries.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// Position in the generated (or recorded) sequence, from 0.
    pub(crate) seq: u64,
    /// Index of the cluster (`sim-NN`) whose token sends it.
    pub(crate) cluster: u32,
    /// Requests of epoch e+1 of a cluster are sent only after epoch e's completed,
    /// so every series' samples arrive in time order (as a Prometheus shard sends).
    pub(crate) epoch: u64,
    pub(crate) series: u32,
    pub(crate) samples: u32,
    /// Live mode: do not send before this wall-clock time (unix ms).
    pub(crate) not_before_ms: Option<i64>,
    /// Snappy block-format body.
    pub(crate) body: bytes::Bytes,
}

/// Accumulates `TimeSeries` into one `WriteRequest` and compresses it.
#[derive(Debug)]
pub(crate) struct RequestBuilder {
    raw: Vec<u8>,
    compressed: Vec<u8>,
    encoder: snap::raw::Encoder,
    series: u32,
    samples: u32,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self {
            raw: Vec::with_capacity(1 << 20),
            compressed: Vec::new(),
            encoder: snap::raw::Encoder::new(),
            series: 0,
            samples: 0,
        }
    }
}

impl RequestBuilder {
    /// Number of series appended since the last `finish`.
    pub(crate) fn series(&self) -> u32 {
        self.series
    }

    /// Appends one `TimeSeries` with pre-encoded `labels` and its `samples` (time order).
    pub(crate) fn push(&mut self, labels: &[u8], samples: &[(i64, f64)]) {
        let mut body = labels.len();
        for &(ts, v) in samples {
            let sl = sample_len(ts, v);
            body += 1 + encoded_len_varint(sl as u64) + sl;
        }
        let raw = &mut self.raw;
        raw.reserve(body + 6);
        raw.push(TAG_TIMESERIES);
        encode_varint(body as u64, raw);
        raw.extend_from_slice(labels);
        for &(ts, v) in samples {
            raw.push(TAG_SAMPLE);
            encode_varint(sample_len(ts, v) as u64, raw);
            if v != 0.0 {
                raw.push(TAG_SAMPLE_VALUE);
                raw.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            if ts != 0 {
                raw.push(TAG_SAMPLE_TS);
                encode_varint(ts as u64, raw);
            }
        }
        self.series += 1;
        self.samples += samples.len() as u32;
    }

    /// Compresses what was appended and resets; `None` when nothing was appended.
    /// Returns `(snappy body, series, samples)`.
    pub(crate) fn finish(&mut self) -> anyhow::Result<Option<(bytes::Bytes, u32, u32)>> {
        if self.series == 0 {
            return Ok(None);
        }
        self.compressed
            .resize(snap::raw::max_compress_len(self.raw.len()), 0);
        let n = self.encoder.compress(&self.raw, &mut self.compressed)?;
        let body = bytes::Bytes::copy_from_slice(&self.compressed[..n]);
        let out = (body, self.series, self.samples);
        self.raw.clear();
        self.series = 0;
        self.samples = 0;
        Ok(Some(out))
    }
}
