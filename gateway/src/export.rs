//! `/api/v1/export`: raw samples as JSON lines (the VictoriaMetrics export shape), GET or POST form,
//! streamed: series are read in batches on the query pool and each batch is written out before the
//! next is read, so memory stays bounded however much is exported, and a client that goes away
//! stops the read.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::read::{ReadView, Selection};
use fleetgate_query::time::parse_time_ms;
use fleetgate_store::SeriesData;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::http::AppState;
use crate::reader::Reader;

/// Samples one batch of series aims to read (the batch size adapts to the series read so far).
const BATCH_SAMPLES: usize = 1_000_000;
/// Series in the first batch, and most in any batch.
const FIRST_BATCH: usize = 64;
const MAX_BATCH: usize = 4096;
/// Encoded bytes sent to the client at once.
const CHUNK_BYTES: usize = 256 << 10;

/// GET `/api/v1/export?match[]=…&start=…&end=…`.
pub(crate) async fn export(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
) -> Response {
    run(&st, reader, q.unwrap_or_default().as_bytes()).await
}

/// POST `/api/v1/export` with a form-encoded body.
pub(crate) async fn export_form(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let mut all = q.unwrap_or_default().into_bytes();
    if !body.is_empty() {
        if !all.is_empty() {
            all.push(b'&');
        }
        all.extend_from_slice(&body);
    }
    run(&st, reader, &all).await
}

/// What the read task says before it streams: the selection is valid (or why not).
type Start = Result<(), fleetgate_query::Error>;

async fn run(st: &Arc<AppState>, reader: Reader, form: &[u8]) -> Response {
    let mut selectors = Vec::new();
    let mut start = 0i64;
    let mut end = i64::MAX / 4;
    for (k, v) in form_urlencoded::parse(form) {
        let parsed = match k.as_ref() {
            "match[]" => {
                selectors.push(v.into_owned());
                Ok(())
            }
            "start" => parse_time_ms("start", &v).map(|t| start = t),
            "end" => parse_time_ms("end", &v).map(|t| end = t),
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            return ApiError::client(StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    }
    if end < start {
        return ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid parameter \"end\": end is before start",
        )
        .into_response();
    }
    let (started_tx, started_rx) = oneshot::channel::<Start>();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let view = Arc::clone(&reader.view);
    let state = Arc::clone(st);
    // a client that stops reading frees its query slot after this long
    let send_timeout = st.config.query.timeout.0;
    let running = match reader
        .spawn(st, move |_| async move {
            let t0 = std::time::Instant::now();
            let mut selection = match view.select_for_export(&selectors) {
                Ok(s) => s,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            stream_batches(&view, &mut selection, start, end, &tx, send_timeout).await;
            state
                .telemetry
                .query("export", t0.elapsed(), view.samples_read());
        })
        .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match started_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_client_error() => {
            return ApiError::client(StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        Ok(Err(e)) => return ApiError::internal(&e).into_response(),
        Err(_) => {
            return ApiError::internal(&"export task ended before it started").into_response();
        }
    }
    // The body owns the running read: a client that goes away drops it, which aborts the read.
    let body = futures::stream::unfold((rx, running), |(mut rx, running)| async move {
        let item = rx.recv().await?;
        Some((item, (rx, running)))
    });
    (
        [(header::CONTENT_TYPE, "application/stream+json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Reads the selection batch by batch and sends it encoded; stops when the client is gone.
async fn stream_batches(
    view: &ReadView,
    selection: &mut Selection,
    start: i64,
    end: i64,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    send_timeout: std::time::Duration,
) {
    let send = |chunk: Result<Bytes, std::io::Error>| async move {
        matches!(
            tokio::time::timeout(send_timeout, tx.send(chunk)).await,
            Ok(Ok(()))
        )
    };
    let mut batch_len = FIRST_BATCH;
    let mut out = String::with_capacity(CHUNK_BYTES + 4096);
    while !selection.is_empty() {
        let batch = selection.next_batch(batch_len);
        let n = batch.len();
        let series = match view.read_batch(batch, start, end).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "export read failed");
                // the client sees a truncated body, never a silently short one
                send(Err(std::io::Error::other("export read failed"))).await;
                return;
            }
        };
        let samples: usize = series.iter().map(|s| s.timestamps.len()).sum();
        for s in &series {
            encode_line(&mut out, s);
            if out.len() >= CHUNK_BYTES && !send(Ok(Bytes::from(std::mem::take(&mut out)))).await {
                // the client is gone, or stopped reading
                return;
            }
        }
        // size the next batch for about BATCH_SAMPLES samples at the rate seen so far
        let per_series = samples.div_ceil(n.max(1)).max(1);
        batch_len = (BATCH_SAMPLES / per_series).clamp(1, MAX_BATCH);
    }
    if !out.is_empty() {
        send(Ok(Bytes::from(out))).await;
    }
}

/// One series as a JSON line.
fn encode_line(out: &mut String, s: &SeriesData) {
    out.push_str("{\"metric\":{");
    for (i, l) in s.labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", json_str(&l.name), json_str(&l.value));
    }
    out.push_str("},\"values\":[");
    for (i, v) in s.values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_value(*v));
    }
    out.push_str("],\"timestamps\":[");
    for (i, t) in s.timestamps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{t}");
    }
    out.push_str("]}\n");
}

/// A sample value in JSON: numbers as numbers; `"NaN"`, `"+Inf"`, `"-Inf"` as strings, and the
/// staleness marker as `"stale"`.
fn json_value(v: f64) -> String {
    if fleetgate_query::promql::is_stale_nan(v) {
        "\"stale\"".into()
    } else if v.is_nan() {
        "\"NaN\"".into()
    } else if v == f64::INFINITY {
        "\"+Inf\"".into()
    } else if v == f64::NEG_INFINITY {
        "\"-Inf\"".into()
    } else {
        format!("{v}")
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
