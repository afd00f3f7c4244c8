//! `POST /v1/metrics`: OTLP/HTTP, protobuf or JSON, optionally gzip. Answers as the OTLP spec
//! says: 200 with an `ExportMetricsServiceResponse` (with `partial_success` when data points were
//! rejected) in the request's encoding; errors carry a `google.rpc.Status` in that encoding, 400
//! for bad data, 413 over a size limit, 415 for an unknown encoding, 429/503 with `Retry-After`
//! when the sender should retry.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_ingest::otlp::{self, Encoding};

use super::AppState;
use crate::error::{ApiError, RETRY_AFTER_SECS};

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The gRPC code that matches an HTTP error status (the `code` of the error body).
pub(crate) fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::UNAUTHORIZED => 16,                                    // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,                                        // PERMISSION_DENIED
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
        StatusCode::REQUEST_TIMEOUT => 4,                                  // DEADLINE_EXCEEDED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        _ => 13,                                                           // INTERNAL
    }
}

fn error_response(e: ApiError, encoding: Encoding) -> Response {
    let status = RpcStatus {
        code: grpc_code(e.status),
        message: e.message,
    };
    let body = match encoding {
        Encoding::Protobuf => prost::Message::encode_to_vec(&status),
        Encoding::Json => serde_json::to_vec(&status).unwrap_or_default(),
    };
    let mut resp = (e.status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    if e.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

/// `POST /v1/metrics`.
pub(crate) async fn metrics(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = Encoding::from_content_type(content_type);
    let (cluster, resp) = match encoding {
        None => (
            String::new(),
            error_response(
                ApiError::client(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "Content-Type {content_type:?} is not an OTLP encoding; use application/x-protobuf or application/json"
                    ),
                ),
                Encoding::Protobuf,
            ),
        ),
        Some(enc) => match export(&st, &headers, body, enc).await {
            Ok((c, r)) => (c, r),
            Err((c, e)) => (c, error_response(e, enc)),
        },
    };
    st.telemetry.request(
        "otlp_http",
        &cluster,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

async fn export(
    st: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    encoding: Encoding,
) -> Result<(String, Response), (String, ApiError)> {
    let body: Bytes = crate::inflight::read_body(
        body,
        crate::inflight::content_length(headers),
        st.config.http.max_body_bytes,
    )
    .await
    .map_err(|e| (String::new(), e))?;
    let writer = crate::otlp::authorize(st, headers).map_err(|e| (String::new(), e))?;
    let cluster = writer.cluster_name().to_string();
    let fail = |e: ApiError| (cluster.clone(), e);
    let max = st.config.http.max_decompressed_bytes;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" => true,
        Some(e) => {
            return Err(fail(ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {e:?} is not supported; use gzip or none"),
            )));
        }
    };
    // The decoded request holds a few times its encoded size: reserve that before decoding.
    let hint = if gzip {
        gzip_size_hint(&body).min(max)
    } else {
        body.len()
    };
    let _decoded = st
        .inflight
        .reserve((hint as u64).saturating_mul(3), "decoded OTLP request")
        .map_err(fail)?;
    let raw = if gzip {
        otlp::gunzip(&body, max).map_err(|e| fail(e.into()))?
    } else if body.len() > max {
        return Err(fail(
            fleetgate_ingest::Error::TooLarge {
                limit: max,
                actual: body.len(),
            }
            .into(),
        ));
    } else {
        body.to_vec()
    };
    drop(body);
    let request = otlp::decode(&raw, encoding).map_err(|e| fail(e.into()))?;
    drop(raw);
    let outcome = crate::otlp::export(st, &writer, &request)
        .await
        .map_err(fail)?;
    let resp = otlp::encode_response(&otlp::response(&outcome), encoding);
    let mut resp = (StatusCode::OK, resp).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    Ok((cluster, resp))
}

/// The decompressed size a gzip body declares in its trailer (modulo 2^32; a hint for the
/// memory reservation, not trusted: decompression is capped on its own).
fn gzip_size_hint(body: &[u8]) -> usize {
    match body.len().checked_sub(4).and_then(|i| body.get(i..)) {
        Some(t) => u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize,
        None => 0,
    }
}
