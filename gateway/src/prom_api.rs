//! The Prometheus HTTP API as Grafana calls it: `/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/<name>/values`, `metadata`, `status/buildinfo`, `query_exemplars`, `rules`, `alerts`, with
//! Prometheus's response envelope and value encoding, parameter parsing (GET query string or POST
//! form) and error types.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::metadata::{self, TimeRange};
use fleetgate_query::promql::{Annotations, Engine, EngineOptions, Value as QueryValue};
use fleetgate_query::time::parse_time_ms;
use fleetgate_store::Labels;
use serde_json::{Map, Value, json};

use crate::http::AppState;
use crate::reader::{Authenticated, Reader};

/// Prometheus API error types and their HTTP statuses (`getDefaultErrorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    /// 400
    BadData,
    /// 422
    Execution,
    /// 503
    Timeout,
    /// 503 (not ready, or the query pool is full)
    Unavailable,
    /// 499 (the client went away)
    Canceled,
    /// 500
    Internal,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Unavailable => "unavailable",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            // nginx's "client closed request": nobody is left to read it
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A Prometheus-style error answer; internal errors are logged and not shown.
pub(crate) fn api_error(kind: ErrorType, message: &str) -> Response {
    let shown = if kind == ErrorType::Internal {
        tracing::error!(error = message, "query API internal error");
        "internal error".to_string()
    } else {
        message.to_string()
    };
    let body = json!({"status": "error", "errorType": kind.as_str(), "error": shown});
    let mut resp = (kind.status(), json_body(&body)).into_response();
    set_json(&mut resp);
    resp
}

/// An API error carried through `Result`s and turned into a response at the handler's edge.
#[derive(Debug)]
pub(crate) struct ApiErr {
    kind: ErrorType,
    message: String,
}

impl ApiErr {
    fn new(kind: ErrorType, message: &str) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        api_error(self.kind, &self.message)
    }
}

/// A success envelope around `data`, with `warnings` when there are any.
pub(crate) fn api_success(data: Value, warnings: &[String]) -> Response {
    let mut env = Map::new();
    env.insert("status".into(), Value::String("success".into()));
    env.insert("data".into(), data);
    if !warnings.is_empty() {
        env.insert("warnings".into(), json!(warnings));
    }
    let mut resp = (StatusCode::OK, json_body(&Value::Object(env))).into_response();
    set_json(&mut resp);
    resp
}

fn json_body(v: &Value) -> String {
    v.to_string()
}

fn set_json(resp: &mut Response) {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

/// Request parameters from the query string and, for POST, the form-encoded body.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `query` and an optional form body.
    pub(crate) fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut v: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        v.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
        Self(v)
    }

    /// The last value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A time parameter in Unix ms, or `default`.
    pub(crate) fn time(&self, key: &'static str, default: i64) -> Result<i64, ApiErr> {
        match self.get(key).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => {
                parse_time_ms(key, s).map_err(|e| ApiErr::new(ErrorType::BadData, &e.to_string()))
            }
        }
    }

    /// `limit`: 0 or absent means unlimited.
    fn limit(&self) -> Result<usize, ApiErr> {
        match self.get("limit").filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some(s) => s.parse::<usize>().map_err(|_| {
                ApiErr::new(
                    ErrorType::BadData,
                    &format!(
                        "invalid parameter \"limit\": cannot parse {s:?} as a non-negative integer"
                    ),
                )
            }),
        }
    }
}

/// Earliest and latest times accepted when `start`/`end` are absent.
const MIN_TIME: i64 = i64::MIN / 4;
const MAX_TIME: i64 = i64::MAX / 4;

fn labels_json(l: &Labels) -> Value {
    let mut m = Map::new();
    for label in l {
        m.insert(
            label.name.to_string(),
            Value::String(label.value.to_string()),
        );
    }
    Value::Object(m)
}

fn truncate<T>(v: &mut Vec<T>, limit: usize, warnings: &mut Vec<String>) {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        warnings.push("results truncated due to limit".into());
    }
}

/// `start`, `end` (absent: unbounded) and `limit` of the metadata endpoints.
fn range_and_limit(p: &Params) -> Result<(TimeRange, usize), ApiErr> {
    let opt = |key: &'static str| -> Result<Option<i64>, ApiErr> {
        match p.get(key).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(_) => p.time(key, 0).map(Some),
        }
    };
    let range = TimeRange {
        start: opt("start")?,
        end: opt("end")?,
    };
    Ok((range, p.limit()?))
}

/// A metadata error: bad selectors and regexes are the client's, the rest internal.
fn metadata_error(e: &fleetgate_query::Error) -> ApiErr {
    if e.is_client_error() {
        ApiErr::new(
            ErrorType::BadData,
            &format!("invalid parameter \"match[]\": {e}"),
        )
    } else {
        ApiErr::new(ErrorType::Internal, &e.to_string())
    }
}

/// A sorted list of strings (label names or values) as the API answers it, limited.
fn string_list(
    r: Result<Vec<String>, fleetgate_query::Error>,
    limit: usize,
) -> Result<Response, ApiErr> {
    let mut list = r.map_err(|e| metadata_error(&e))?;
    let mut warnings = Vec::new();
    truncate(&mut list, limit, &mut warnings);
    Ok(api_success(json!(list), &warnings))
}

/// GET/POST `/api/v1/series`.
pub(crate) async fn series(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let selectors = p.all("match[]");
    if selectors.is_empty() {
        return Err(
            ApiErr::new(ErrorType::BadData, "no match[] parameter provided").into_response(),
        );
    }
    let (range, limit) = range_and_limit(&p).map_err(IntoResponse::into_response)?;
    let view = Arc::clone(&reader.view);
    let found = reader
        .run(&st, "series", move |_| async move {
            metadata::series(&view, &selectors, range).await
        })
        .await?;
    let mut found = found.map_err(|e| metadata_error(&e).into_response())?;
    let mut warnings = Vec::new();
    truncate(&mut found, limit, &mut warnings);
    Ok(api_success(
        Value::Array(found.iter().map(labels_json).collect()),
        &warnings,
    ))
}

/// GET/POST `/api/v1/labels`.
pub(crate) async fn labels(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let (range, limit) = range_and_limit(&p).map_err(IntoResponse::into_response)?;
    let selectors = p.all("match[]");
    let view = Arc::clone(&reader.view);
    let r = reader
        .run(&st, "labels", move |_| async move {
            metadata::label_names(&view, &selectors, range).await
        })
        .await?;
    string_list(r, limit).map_err(IntoResponse::into_response)
}

/// GET/POST `/api/v1/label/<name>/values`.
pub(crate) async fn label_values(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let name = unescape_name(&name);
    let (range, limit) = range_and_limit(&p).map_err(IntoResponse::into_response)?;
    let selectors = p.all("match[]");
    let view = Arc::clone(&reader.view);
    let r = reader
        .run(&st, "label_values", move |_| async move {
            metadata::label_values(&view, &name, &selectors, range).await
        })
        .await?;
    string_list(r, limit).map_err(IntoResponse::into_response)
}

/// Prometheus's `model.UnescapeName` for names escaped as `U__…` (`__` is `_`, `_<hex>_` a code point).
pub(crate) fn unescape_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("U__") else {
        return name.to_string();
    };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let hex: String = chars.by_ref().take_while(|c| *c != '_').collect();
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(ch) => out.push(ch),
            None => return name.to_string(),
        }
    }
    out
}

/// Maps a query-engine error to the Prometheus error type it is reported as.
pub(crate) fn query_error(e: &fleetgate_query::Error) -> Response {
    use fleetgate_query::error::ApiErrorType;
    let kind = match e.api_error_type() {
        ApiErrorType::BadData => ErrorType::BadData,
        ApiErrorType::Execution => ErrorType::Execution,
        ApiErrorType::Timeout => ErrorType::Timeout,
        ApiErrorType::Canceled => ErrorType::Canceled,
        ApiErrorType::Internal => ErrorType::Internal,
        ApiErrorType::Unavailable => ErrorType::Unavailable,
    };
    api_error(kind, &e.to_string())
}

/// A duration parameter: Prometheus duration (`15s`, `1m30s`) or float seconds.
fn duration_ms(p: &Params, key: &'static str) -> Result<Option<i64>, ApiErr> {
    let Some(s) = p.get(key).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && (0.0..9.2e12).contains(&secs)
    {
        return Ok(Some((secs * 1000.0).round() as i64));
    }
    crate::config::parse_duration(s)
        .map(|d| Some(d.as_millis() as i64))
        .map_err(|e| {
            ApiErr::new(
                ErrorType::BadData,
                &format!("invalid parameter {key:?}: {e}"),
            )
        })
}

fn engine_options(st: &AppState, p: &Params) -> Result<EngineOptions, ApiErr> {
    let mut opts = EngineOptions {
        timeout: Some(st.config.query.timeout.0),
        ..EngineOptions::default()
    };
    opts.max_samples = st.config.query.max_samples;
    if let Some(t) = duration_ms(p, "timeout")? {
        let asked = std::time::Duration::from_millis(t.max(1) as u64);
        opts.timeout = Some(opts.timeout.map_or(asked, |cfg| cfg.min(asked)));
    }
    if let Some(lb) = duration_ms(p, "lookback_delta")?
        && lb > 0
    {
        opts.lookback_ms = lb;
    }
    Ok(opts)
}

/// The `query` parameter, or the `bad_data` response Prometheus gives when it is missing.
fn query_text(p: &Params) -> Result<String, ApiErr> {
    match p.get("query").filter(|s| !s.is_empty()) {
        Some(t) => Ok(t.to_string()),
        None => Err(ApiErr::new(
            ErrorType::BadData,
            "invalid parameter \"query\": no query given",
        )),
    }
}

/// GET/POST `/api/v1/query`: an instant query at `time` (default now).
pub(crate) async fn query(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let text = query_text(&p).map_err(IntoResponse::into_response)?;
    let t = p
        .time("time", crate::http::now_ms())
        .map_err(IntoResponse::into_response)?;
    let mut opts = engine_options(&st, &p).map_err(IntoResponse::into_response)?;
    let view = Arc::clone(&reader.view);
    let r = reader
        .run(&st, "query", move |cancel| async move {
            opts.cancel = Some(cancel);
            let r = Engine::new(opts).instant_annotated(&*view, &text, t).await;
            // encoded on the pool too: a large answer is work
            r.map(|(v, notes)| (encode_value(&v), notes))
        })
        .await?;
    match r {
        Ok((data, notes)) => Ok(api_success_raw(&data, &notes)),
        Err(e) => Err(query_error(&e)),
    }
}

/// GET/POST `/api/v1/query_range`: `query` at `start, start+step, …, end`.
pub(crate) async fn query_range(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let text = query_text(&p).map_err(IntoResponse::into_response)?;
    let (start, end) = match (p.get("start"), p.get("end")) {
        (Some(_), Some(_)) => (
            p.time("start", 0).map_err(IntoResponse::into_response)?,
            p.time("end", 0).map_err(IntoResponse::into_response)?,
        ),
        _ => {
            return Err(api_error(
                ErrorType::BadData,
                "invalid parameter \"start\"/\"end\": both are required",
            ));
        }
    };
    let step = match duration_ms(&p, "step") {
        Ok(Some(s)) if s > 0 => s,
        Ok(_) => {
            return Err(api_error(
                ErrorType::BadData,
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        Err(r) => return Err(r.into_response()),
    };
    // end before start and more than 11,000 steps are refused by the engine, before any read
    let mut opts = engine_options(&st, &p).map_err(IntoResponse::into_response)?;
    let view = Arc::clone(&reader.view);
    let r = reader
        .run(&st, "query_range", move |cancel| async move {
            opts.cancel = Some(cancel);
            let r = Engine::new(opts)
                .range_annotated(&*view, &text, start, end, step)
                .await;
            r.map(|(v, notes)| (encode_value(&v), notes))
        })
        .await?;
    match r {
        Ok((data, notes)) => Ok(api_success_raw(&data, &notes)),
        Err(e) => Err(query_error(&e)),
    }
}

/// A success envelope around already-encoded `data` JSON, with the query's warnings and infos.
fn api_success_raw(data: &str, notes: &Annotations) -> Response {
    let mut body = format!("{{\"status\":\"success\",\"data\":{data}");
    if !notes.warnings.is_empty() {
        body.push_str(",\"warnings\":");
        body.push_str(&json!(notes.warnings).to_string());
    }
    if !notes.infos.is_empty() {
        body.push_str(",\"infos\":");
        body.push_str(&json!(notes.infos).to_string());
    }
    body.push('}');
    let mut resp = (StatusCode::OK, body).into_response();
    set_json(&mut resp);
    resp
}

/// `{"resultType":…,"result":…}` with Prometheus's number and timestamp formats.
pub(crate) fn encode_value(v: &QueryValue) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"resultType\":\"");
    out.push_str(v.type_name());
    out.push_str("\",\"result\":");
    match v {
        QueryValue::Scalar { t_ms, value } => {
            out.push('[');
            push_ts(&mut out, *t_ms);
            out.push(',');
            push_float(&mut out, *value);
            out.push(']');
        }
        QueryValue::String { t_ms, value } => {
            out.push('[');
            push_ts(&mut out, *t_ms);
            out.push(',');
            out.push_str(&Value::String(value.clone()).to_string());
            out.push(']');
        }
        QueryValue::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_series_head(&mut out, &s.labels, "value");
                push_ts(&mut out, s.t_ms);
                out.push(',');
                push_float(&mut out, s.value);
                out.push_str("]}");
            }
            out.push(']');
        }
        QueryValue::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_series_head(&mut out, &s.labels, "values");
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push('[');
                    push_ts(&mut out, *t);
                    out.push(',');
                    push_float(&mut out, *v);
                    out.push(']');
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// `{"metric":{…},"<key>":[` — the opening of a vector or matrix element.
fn push_series_head(out: &mut String, labels: &Labels, key: &str) {
    out.push_str("{\"metric\":");
    out.push_str(&labels_json(labels).to_string());
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":[");
}

/// Seconds with the milliseconds as a fraction, as Prometheus's `MarshalTimestamp` writes them.
fn push_ts(out: &mut String, t_ms: i64) {
    use std::fmt::Write as _;
    let (sign, abs) = if t_ms < 0 {
        ("-", t_ms.unsigned_abs())
    } else {
        ("", t_ms as u64)
    };
    let _ = write!(out, "{sign}{}", abs / 1000);
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A value as a JSON string, formatted like Go's `strconv.AppendFloat(f, 'f' or 'e', -1, 64)`.
fn push_float(out: &mut String, v: f64) {
    out.push('"');
    out.push_str(&format_float(v));
    out.push('"');
}

/// Go-compatible float text: `NaN`, `+Inf`, `-Inf`, plain decimals, exponent form below 1e-6 and
/// from 1e21 (`1e-07`, `1.5e+21`).
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{v:e}");
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{v}")
}

/// GET `/api/v1/metadata`: fleetgate does not keep remote-write metadata yet, so the map is empty.
pub(crate) async fn metadata(_: Authenticated) -> Response {
    api_success(json!({}), &[])
}

/// GET `/api/v1/status/buildinfo`: Prometheus-shaped, so Grafana detects a Prometheus flavour.
pub(crate) async fn buildinfo(_: Authenticated) -> Response {
    api_success(
        json!({
            "version": "3.0.0",
            "revision": "fleetgate",
            "branch": "main",
            "buildUser": "fleetgate",
            "buildDate": "",
            "goVersion": format!("fleetgate {}", env!("CARGO_PKG_VERSION")),
        }),
        &[],
    )
}

/// GET/POST `/api/v1/query_exemplars`: no exemplars are stored; an empty list.
pub(crate) async fn query_exemplars(
    _: Authenticated,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    if let Err(r) = p
        .time("start", MIN_TIME)
        .and_then(|_| p.time("end", MAX_TIME))
    {
        return r.into_response();
    }
    api_success(json!([]), &[])
}

/// GET `/api/v1/rules`: no rules yet.
pub(crate) async fn rules(_: Authenticated) -> Response {
    api_success(json!({"groups": []}), &[])
}

/// GET `/api/v1/alerts`: no alerts yet.
pub(crate) async fn alerts(_: Authenticated) -> Response {
    api_success(json!({"alerts": []}), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_timestamps_like_prometheus() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(-0.0), "-0");
        assert_eq!(format_float(1e-7), "1e-07");
        assert_eq!(format_float(1.5e21), "1.5e+21");
        assert_eq!(format_float(123456789.0), "123456789");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        let mut s = String::new();
        push_ts(&mut s, 1_435_781_451_781);
        s.push(' ');
        push_ts(&mut s, 4000);
        s.push(' ');
        push_ts(&mut s, -1500);
        s.push(' ');
        push_ts(&mut s, 1005);
        assert_eq!(s, "1435781451.781 4 -1.500 1.005");
    }

    #[test]
    fn unescapes_utf8_names() {
        assert_eq!(unescape_name("job"), "job");
        assert_eq!(unescape_name("U__my_2e_label"), "my.label");
        assert_eq!(unescape_name("U__a__b"), "a_b");
    }

    #[test]
    fn params_from_query_and_form() {
        let p = Params::parse(Some("match[]=up&start=1"), b"match[]=down&limit=5");
        assert_eq!(p.all("match[]"), vec!["up", "down"]);
        assert_eq!(p.get("limit"), Some("5"));
        assert!(p.time("start", 0).is_ok_and(|t| t == 1000));
        assert!(p.time("end", 7).is_ok_and(|t| t == 7));
        assert!(p.time("start", 0).is_ok());
        let bad = Params::parse(Some("start=soon"), b"");
        assert!(bad.time("start", 0).is_err());
    }
}
