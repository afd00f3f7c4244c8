//! OTLP exports, whatever the transport: who may write (the one authentication mechanism), which
//! cluster each resource goes to, the export itself and its self-metrics. The HTTP handler
//! (`http/otlp.rs`) and the gRPC service (`grpc.rs`) only decode and answer.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use fleetgate_ingest::ClusterContext;
use fleetgate_ingest::otlp::OtlpOutcome;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

use crate::auth::PrincipalKind;
use crate::error::ApiError;
use crate::http::{AppState, now_ms};

/// Where an authenticated OTLP writer's series go.
#[derive(Debug, Clone)]
pub(crate) enum Writer {
    /// A cluster token: every resource is this cluster, whatever its attributes say.
    Cluster(Arc<ClusterContext>),
    /// Open dev mode: a resource's `k8s.cluster.name` / `cluster.name`, else this context (from
    /// the cluster header, else the default cluster).
    Open(Arc<ClusterContext>),
}

/// Authenticates an OTLP export from its headers (HTTP headers or gRPC metadata).
pub(crate) fn authorize(st: &AppState, headers: &HeaderMap) -> Result<Writer, ApiError> {
    let principal = st
        .auth
        .authenticate_write(headers)
        .map_err(|e| ApiError::client(StatusCode::UNAUTHORIZED, e.to_string()))?;
    match principal.kind {
        PrincipalKind::Cluster(i) => match st.clusters.get(i) {
            Some(c) => Ok(Writer::Cluster(Arc::clone(c))),
            None => Err(ApiError::internal(&"cluster index out of range")),
        },
        PrincipalKind::Anonymous => Ok(Writer::Open(st.open_context(headers))),
        PrincipalKind::User(_) => Err(ApiError::client(
            StatusCode::FORBIDDEN,
            format!(
                "user {:?} may read but not write; OTLP export needs a cluster token",
                principal.name
            ),
        )),
    }
}

impl Writer {
    /// The cluster named before any resource is seen (for request telemetry).
    pub(crate) fn cluster_name(&self) -> &str {
        match self {
            Self::Cluster(c) | Self::Open(c) => &c.name,
        }
    }
}

/// Ingests a decoded export for `writer`; records accepted, created and rejected counts per
/// cluster. An `Err` means nothing was stored.
pub(crate) async fn export(
    st: &AppState,
    writer: &Writer,
    request: &ExportMetricsServiceRequest,
) -> Result<OtlpOutcome, ApiError> {
    let Some(core) = st.core.get() else {
        return Err(ApiError::unavailable("replaying the WAL; not ready yet"));
    };
    let mut cluster_for = |named: Option<&str>| -> Arc<ClusterContext> {
        match (writer, named) {
            (Writer::Cluster(c), _) => Arc::clone(c),
            (Writer::Open(_), Some(name)) => st.open_named(name, false),
            (Writer::Open(c), None) => Arc::clone(c),
        }
    };
    let outcome = st
        .otlp
        .export(&core.ingester, request, &mut cluster_for, now_ms())
        .await
        .map_err(ApiError::from)?;
    for (cluster, o) in &outcome.clusters {
        st.telemetry.accepted(cluster, o.samples_accepted);
        st.telemetry.series_created(cluster, o.series_created);
        for (reason, n) in o.rejected_samples_by_reason.iter() {
            st.telemetry.rejected(cluster, reason.as_str(), n);
        }
        if o.has_rejections() {
            st.log_rejections(cluster, o.samples_rejected(), &o.examples);
        }
    }
    Ok(outcome)
}
