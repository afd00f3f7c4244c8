//! `/api/v1/export`: raw samples as JSON lines (the VictoriaMetrics export shape), GET or POST form.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::time::parse_time_ms;

use crate::error::ApiError;
use crate::http::AppState;

/// GET `/api/v1/export?match[]=…&start=…&end=…`.
pub(crate) async fn export(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    run(&st, q.unwrap_or_default().as_bytes()).await
}

/// POST `/api/v1/export` with a form-encoded body.
pub(crate) async fn export_form(
    State(st): State<Arc<AppState>>,
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
    run(&st, &all).await
}

async fn run(st: &AppState, form: &[u8]) -> Response {
    let Some(core) = st.core.get() else {
        return ApiError::unavailable("replaying the WAL; not ready yet").into_response();
    };
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
    match fleetgate_query::export::export(&core.store, &selectors, start, end).await {
        Ok(series) => {
            let mut out = String::new();
            for s in &series {
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
            ([(header::CONTENT_TYPE, "application/stream+json")], out).into_response()
        }
        Err(e) if e.is_client_error() => {
            ApiError::client(StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
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
