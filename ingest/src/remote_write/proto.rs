//! Prometheus remote-write 1.0 messages (`prompb/remote.proto`, `prompb/types.proto`) as prost
//! structs, for encoding requests (simulator, tests, benches) and as the oracle the fast decoder
//! is tested against. The receive path does not use them: see [`super::decode`].
//!
//! Written by hand with `#[derive(prost::Message)]` rather than generated, because the messages are
//! few and stable and a `build.rs` would need `protoc`. Field numbers follow the upstream files.

use prost::Message;

/// The request body (after snappy decompression).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (tag 2 is reserved upstream).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series: its labels and its samples, exemplars and native histograms.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, sorted by name, names unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// A label pair.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A float sample.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// An exemplar.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Exemplar labels (e.g. `trace_id`).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// Metadata of a metric family.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// A [`metric_metadata::MetricType`].
    #[prost(enumeration = "metric_metadata::MetricType", tag = "1")]
    pub r#type: i32,
    /// The metric family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// UNIT text.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Nested types of [`MetricMetadata`].
pub mod metric_metadata {
    /// The metric type.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Unknown.
        Unknown = 0,
        /// Counter.
        Counter = 1,
        /// Gauge.
        Gauge = 2,
        /// Histogram.
        Histogram = 3,
        /// Gauge histogram.
        Gaugehistogram = 4,
        /// Summary.
        Summary = 5,
        /// Info.
        Info = 6,
        /// State set.
        Stateset = 7,
    }
}

/// A native histogram sample.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    /// Observation count, integer or float.
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    /// Sum of observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// Bucket schema.
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// Width of the zero bucket.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Zero bucket count, integer or float.
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    /// Negative bucket spans.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative bucket deltas (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative bucket counts (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Positive bucket spans.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive bucket deltas (integer histograms).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive bucket counts (float histograms).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// A [`histogram::ResetHint`].
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Custom bucket bounds (schema -53).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// Nested types of [`Histogram`].
pub mod histogram {
    /// Observation count.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Count {
        /// Integer count.
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        /// Float count.
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    /// Zero bucket count.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        /// Integer count.
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        /// Float count.
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }

    /// Whether the histogram's counters were reset.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        /// Unknown.
        Unknown = 0,
        /// A reset happened.
        Yes = 1,
        /// No reset.
        No = 2,
        /// A gauge histogram: resets do not apply.
        Gauge = 3,
    }
}

/// A run of consecutive buckets.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or the start index of the first span.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Number of consecutive buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

impl WriteRequest {
    /// The request as a remote-write body: protobuf, then snappy block format.
    pub fn encode_snappy(&self) -> Result<Vec<u8>, snap::Error> {
        snap::raw::Encoder::new().compress_vec(&self.encode_to_vec())
    }
}

impl Label {
    /// A label from two strings.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}
