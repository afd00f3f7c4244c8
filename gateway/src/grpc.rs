//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export` (tonic, gzip
//! accepted), served on `otlp.grpc_addr` through the same connection handling as HTTP (connection
//! cap, timeouts, graceful shutdown) and the same authentication (`authorization: Bearer <token>`
//! metadata) and export path as `POST /v1/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;

use crate::error::ApiError;
use crate::http::AppState;
use crate::http::otlp::grpc_code;

/// The gRPC service.
#[derive(Debug)]
struct Metrics {
    st: Arc<AppState>,
}

/// An error as a gRPC status: the code that matches its HTTP status, the same message.
fn status(e: ApiError) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(grpc_code(e.status)), e.message)
}

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let started = Instant::now();
        let st = &self.st;
        let headers = request.metadata().clone().into_headers();
        let result = async {
            let writer = crate::otlp::authorize(st, &headers).map_err(|e| (String::new(), e))?;
            let cluster = writer.cluster_name().to_string();
            let req = request.into_inner();
            // tonic decoded the message already (up to its size limit); count what it holds
            let _held = st
                .inflight
                .reserve(
                    (req.encoded_len() as u64).saturating_mul(3),
                    "decoded OTLP request",
                )
                .map_err(|e| (cluster.clone(), e))?;
            let outcome = crate::otlp::export(st, &writer, &req)
                .await
                .map_err(|e| (cluster.clone(), e))?;
            Ok::<_, (String, ApiError)>((cluster, fleetgate_ingest::otlp::response(&outcome)))
        }
        .await;
        let (cluster, code, answer) = match result {
            Ok((c, resp)) => (c, StatusCode::OK, Ok(tonic::Response::new(resp))),
            Err((c, e)) => (c, e.status, Err(status(e))),
        };
        st.telemetry
            .request("otlp_grpc", &cluster, code.as_u16(), started.elapsed());
        answer
    }
}

/// The gRPC router: the OTLP metrics service, gzip accepted and sent, messages up to
/// `http.max_decompressed_bytes` (larger ones get `RESOURCE_EXHAUSTED` from tonic). tonic decodes
/// a message before the handler can reserve its bytes, so at most `http.max_inflight_bytes /
/// http.max_decompressed_bytes` exports are taken at once (at least one); the others wait, their
/// bodies held back by HTTP/2 flow control.
pub(crate) fn router(st: Arc<AppState>) -> axum::Router {
    let max = st.config.http.max_decompressed_bytes;
    let at_once = (st.config.http.max_inflight_bytes / (max as u64).max(1)).max(1) as usize;
    let svc = MetricsServiceServer::new(Metrics { st })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    tonic::service::Routes::new(svc)
        .into_axum_router()
        .layer(axum::middleware::map_response(otlp_codes))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(at_once))
}

/// tonic answers a request it cannot decode with INTERNAL and one over the size limit with
/// OUT_OF_RANGE; OTLP says INVALID_ARGUMENT (bad data, not retried) and RESOURCE_EXHAUSTED.
/// Errors before the body are trailers-only responses, so the status is in the headers.
async fn otlp_codes(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers();
    let code = h.get("grpc-status").and_then(|v| v.to_str().ok());
    let msg = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    let fixed = match code {
        Some("13") if msg.starts_with("failed to decode Protobuf message") => Some("3"),
        Some("11") if msg.starts_with("Error, decoded message length too large") => Some("8"),
        _ => None,
    };
    if let Some(c) = fixed {
        resp.headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static(c));
    }
    resp
}
