//! OTLP metrics ingestion: an `ExportMetricsServiceRequest` (protobuf or JSON, optionally gzip)
//! translated as Prometheus 3.x's OTLP receiver does and pushed onto the [`crate::pipeline`].
//!
//! The [`OtlpReceiver`] holds the translation options and the delta-to-cumulative state; the
//! gateway owns one and calls [`OtlpReceiver::export`] per request (HTTP and gRPC alike). Which
//! cluster a resource's series belong to is the gateway's decision: it passes a resolver that gets
//! the resource's own cluster attribute (`k8s.cluster.name`, else `cluster.name`) and returns the
//! context to use (the token's cluster, whatever the attribute says, when authenticated).

pub mod delta;
pub mod names;
pub mod translate;

use std::io::Read;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::Message;

use self::delta::DeltaStore;
pub use self::translate::PointCounts;
use self::translate::Translator;
use crate::cluster::ClusterContext;
use crate::error::{Error, Result};
use crate::outcome::WriteOutcome;
use crate::pipeline::{Ingester, PreparedWrite};
use crate::sink::SeriesSink;

/// What happens to exponential histograms until native histograms are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExponentialHistograms {
    /// Converted to classic `_bucket{le}` series at scale 0 at most (power-of-two bounds, so a
    /// stream keeps its bounds when its SDK rescales), plus `_sum` and `_count`.
    #[default]
    Classic,
    /// Rejected through `partial_success`.
    Reject,
}

/// OTLP translation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpOptions {
    /// Resource attributes copied onto every series of the resource (a data point attribute of
    /// the same label name wins). Default: the Kubernetes attributes cost allocation needs.
    pub promote_resource_attributes: Vec<String>,
    /// See [`ExponentialHistograms`].
    pub exponential_histograms: ExponentialHistograms,
    /// Most delta streams held for delta-to-cumulative conversion (past it, new delta streams are
    /// rejected as `max_active_series`). Default 1,000,000.
    pub max_delta_streams: usize,
}

impl OtlpOptions {
    /// Default for [`OtlpOptions::promote_resource_attributes`].
    pub const DEFAULT_PROMOTED: [&'static str; 5] = [
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.node.name",
        "k8s.container.name",
        "k8s.deployment.name",
    ];
}

impl Default for OtlpOptions {
    fn default() -> Self {
        Self {
            promote_resource_attributes: Self::DEFAULT_PROMOTED
                .iter()
                .map(|s| s.to_string())
                .collect(),
            exponential_histograms: ExponentialHistograms::default(),
            max_delta_streams: 1_000_000,
        }
    }
}

/// The encodings of an OTLP/HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (proto3 JSON with OTLP's deviations).
    Json,
}

impl Encoding {
    /// The encoding named by a `Content-Type` value (parameters ignored), if it is one of OTLP's.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Self::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of a response in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Decompresses a gzip body, failing with [`Error::TooLarge`] as soon as the output would pass
/// `max_len`.
pub fn gunzip(body: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_len));
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(max_len as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| Error::Otlp(format!("invalid gzip body: {e}")))?;
    if out.len() > max_len {
        return Err(Error::TooLarge {
            limit: max_len,
            actual: out.len(),
        });
    }
    Ok(out)
}

/// Decodes a request body in `encoding`.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportMetricsServiceRequest> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|e| Error::Otlp(format!("protobuf: {e}"))),
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let req = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| Error::Otlp(format!("JSON at {}: {}", e.path(), e.inner())))?;
            de.end().map_err(|e| Error::Otlp(format!("JSON: {e}")))?;
            Ok(req)
        }
    }
}

/// The success response of an export: `partial_success` set when any data point was rejected.
pub fn response(outcome: &OtlpOutcome) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (outcome.rejected_data_points > 0 || outcome.write.has_rejections()).then(
            || ExportMetricsPartialSuccess {
                rejected_data_points: outcome.rejected_data_points as i64,
                error_message: outcome.write.rejection_message(),
            },
        ),
    }
}

/// Encodes a response in `encoding`.
pub fn encode_response(resp: &ExportMetricsServiceResponse, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => resp.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(resp).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// The result of an export that was stored (possibly partially).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpOutcome {
    /// Sample counts, rejections by reason and examples.
    pub write: WriteOutcome,
    /// Data points in the request.
    pub data_points: u64,
    /// Data points of which a sample was not stored (`partial_success.rejected_data_points`).
    pub rejected_data_points: u64,
    /// The counts of each cluster the request wrote to (one in token mode), in request order.
    pub clusters: Vec<(Arc<str>, WriteOutcome)>,
}

/// A translated export whose samples are not yet appended; see [`OtlpReceiver::prepare`].
#[derive(Debug, Clone, Default)]
pub struct OtlpPrepared {
    /// All clusters' samples, to append at once.
    pub write: PreparedWrite,
    /// Each cluster's counts.
    pub clusters: Vec<(Arc<str>, WriteOutcome)>,
    /// Data point counts.
    pub points: PointCounts,
}

/// The resource attributes that name a resource's own cluster, in order of preference.
pub const CLUSTER_ATTRIBUTES: [&str; 2] = ["k8s.cluster.name", "cluster.name"];

/// The cluster a resource names for itself, if any.
pub fn resource_cluster(rm: &ResourceMetrics) -> Option<&str> {
    let attrs = &rm.resource.as_ref()?.attributes;
    CLUSTER_ATTRIBUTES.iter().find_map(|key| {
        attrs.iter().find(|kv| kv.key == *key).and_then(|kv| {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
                _ => None,
            }
        })
    })
}

/// The OTLP receiver: options and delta state, shared by every OTLP listener.
#[derive(Debug)]
pub struct OtlpReceiver {
    options: OtlpOptions,
    deltas: DeltaStore,
}

impl OtlpReceiver {
    /// A receiver with `options`.
    pub fn new(options: OtlpOptions) -> Self {
        let deltas = DeltaStore::new(options.max_delta_streams);
        Self { options, deltas }
    }

    /// The options in effect.
    pub fn options(&self) -> &OtlpOptions {
        &self.options
    }

    /// Delta streams held.
    pub fn delta_streams(&self) -> usize {
        self.deltas.len()
    }

    /// Drops delta streams not seen since `cutoff_ms`; returns how many.
    pub fn sweep(&self, cutoff_ms: i64) -> usize {
        self.deltas.sweep(cutoff_ms)
    }

    /// Translates `request` and resolves its series ids without appending: one batch per
    /// cluster, the cluster of each resource chosen by `cluster_for` from the resource's own
    /// cluster attribute. Returns the write and the data point counts.
    pub fn prepare<S: SeriesSink>(
        &self,
        ingester: &Ingester<S>,
        request: &ExportMetricsServiceRequest,
        cluster_for: &mut (dyn FnMut(Option<&str>) -> Arc<ClusterContext> + Send),
        now_ms: i64,
    ) -> Result<OtlpPrepared> {
        let mut groups: Vec<(Arc<ClusterContext>, Vec<&ResourceMetrics>)> = Vec::new();
        for rm in &request.resource_metrics {
            let ctx = cluster_for(resource_cluster(rm));
            match groups.iter_mut().find(|(c, _)| c.name == ctx.name) {
                Some((_, v)) => v.push(rm),
                None => groups.push((ctx, vec![rm])),
            }
        }
        let mut prepared = OtlpPrepared::default();
        for (ctx, resources) in &groups {
            let mut batch = ingester.batch(ctx, now_ms, 1024);
            let mut t = Translator {
                options: &self.options,
                deltas: &self.deltas,
                cluster: &ctx.name,
                now_ms,
                counts: PointCounts::default(),
            };
            for rm in resources {
                t.resource(&mut batch, rm)?;
            }
            prepared.points.points += t.counts.points;
            prepared.points.rejected += t.counts.rejected;
            let part = batch.finish();
            prepared
                .clusters
                .push((Arc::clone(&ctx.name), part.outcome.clone()));
            prepared.write.merge(part);
        }
        Ok(prepared)
    }

    /// Ingests one decoded export: budget check, translation, one append. Resolves after the
    /// accepted samples are durable; an `Err` means nothing was stored.
    pub async fn export<S: SeriesSink>(
        &self,
        ingester: &Ingester<S>,
        request: &ExportMetricsServiceRequest,
        cluster_for: &mut (dyn FnMut(Option<&str>) -> Arc<ClusterContext> + Send),
        now_ms: i64,
    ) -> Result<OtlpOutcome> {
        ingester.check_budget()?;
        let prepared = self.prepare(ingester, request, cluster_for, now_ms)?;
        let counts = prepared.points;
        let write = ingester.commit(prepared.write).await?;
        Ok(OtlpOutcome {
            write,
            data_points: counts.points,
            rejected_data_points: counts.rejected.min(counts.points),
            clusters: prepared.clusters,
        })
    }
}
