//! `POST /api/v1/sql`: one read-only SQL statement (the body, or form field `query`) through the
//! principal's scope, answered as JSON (default), CSV (`Accept: text/csv` or `format=csv`) or an
//! Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream` or `format=arrow`), streamed
//! batch by batch. The query runs on the query pool under `sql.timeout`, `sql.max_concurrency` and
//! the SQL memory pool; a client that goes away stops it.
//!
//! The status is decided before the first byte: 400 for SQL that does not parse or plan (and for
//! writes), 422 for an execution error, 503 + `Retry-After` over the concurrency or memory limit,
//! 503 on timeout, 401 without credentials. An error after rows were sent ends the body early
//! (the transfer is cut, never silently short).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::Error;
use fleetgate_query::sql::output::{plain_batch, plain_schema};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::AppState;
use crate::error::RETRY_AFTER_SECS;
use crate::prom_api::{ErrorType, api_error, query_error};
use crate::reader::Reader;

/// Bytes encoded before they are sent to the client.
const CHUNK_BYTES: usize = 256 << 10;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// A SQL error as an HTTP answer: the query API's classification, and `Retry-After` when a
/// shared limit (memory, concurrency) said no.
fn sql_error(e: &Error) -> Response {
    let mut r = query_error(e);
    if r.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE
        && matches!(e, Error::ResourcesExhausted(_))
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    r
}

fn bad(message: &str) -> Response {
    api_error(ErrorType::BadData, message)
}

/// The SQL text and the format from the query string, the body and the headers (or the
/// `bad_data` message).
fn request(headers: &HeaderMap, query: &str, body: &[u8]) -> Result<(String, Format), String> {
    let mut sql = None;
    let mut format = None;
    let mut take = |k: &str, v: String| match k {
        "query" => sql = Some(v),
        "format" => format = Some(v),
        _ => {}
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        take(&k, v.into_owned());
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let mut from_form = false;
    if form {
        for (k, v) in form_urlencoded::parse(body) {
            from_form |= k == "query";
            take(&k, v.into_owned());
        }
    }
    // a body without a `query` field is the SQL itself (`curl -d 'SELECT …'` sends it as a form)
    if !from_form && (sql.is_none() || !form) && !body.is_empty() {
        let text = std::str::from_utf8(body)
            .map_err(|_| "invalid body: the SQL text is not UTF-8".to_string())?;
        sql = Some(text.to_string());
    }
    let sql = sql.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        "invalid parameter \"query\": no SQL given (send it as the body, or as form field `query`)"
            .to_string()
    })?;
    let format = match format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("arrow") => Format::Arrow,
        Some(other) => {
            return Err(format!(
                "invalid parameter \"format\": {other:?} (json, csv or arrow)"
            ));
        }
        None => {
            let accept = headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",")
                .to_ascii_lowercase();
            if accept.contains("application/vnd.apache.arrow.stream") {
                Format::Arrow
            } else if accept.contains("text/csv") {
                Format::Csv
            } else {
                Format::Json
            }
        }
    };
    Ok((sql, format))
}

/// POST `/api/v1/sql`.
pub(crate) async fn sql(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let (text, format) = match request(&headers, q.as_deref().unwrap_or(""), &body) {
        Ok(r) => r,
        Err(msg) => return bad(&msg),
    };
    let slot = match st.sql.try_slot() {
        Ok(s) => s,
        Err(e) => return sql_error(&Error::ResourcesExhausted(e.to_string())),
    };
    let budgets = Arc::new(super::cost::ReaderBudgets::new(&st, &reader.view));
    let session = match st.sql.session(Arc::clone(&reader.view), budgets) {
        Ok(s) => s,
        Err(e) => return sql_error(&e),
    };
    let timeout = st.sql.timeout(None);
    let (started_tx, started_rx) = oneshot::channel::<Result<(), Error>>();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let state = Arc::clone(&st);
    let view = Arc::clone(&reader.view);
    let running = match reader
        .spawn(&st, move |_cancel| async move {
            let _slot = slot;
            let t0 = std::time::Instant::now();
            let mut started = Some(started_tx);
            let work = run(&session, &text, format, &tx, &mut started);
            let result = match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout("SQL execution")),
            };
            if let Err(e) = result {
                match started.take() {
                    Some(s) => {
                        let _ = s.send(Err(e));
                    }
                    None => {
                        if !e.is_client_error() {
                            tracing::warn!(error = %e, "SQL query failed after its first rows");
                        }
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    }
                }
            }
            state
                .telemetry
                .query("sql", t0.elapsed(), view.samples_read());
        })
        .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match started_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return sql_error(&e),
        Err(_) => return sql_error(&Error::SqlInternal("the SQL task ended early".into())),
    }
    // The body owns the running query: a client that goes away drops it, which stops the query.
    let body = futures::stream::unfold((rx, running), |(mut rx, running)| async move {
        let item = rx.recv().await?;
        Some((item, (rx, running)))
    });
    (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response()
}

/// Plans and runs `text`, then streams it encoded; `started` is answered once the first batch (or
/// the end) is there, so that early errors still choose the status.
async fn run(
    session: &fleetgate_query::sql::SqlSession,
    text: &str,
    format: Format,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    started: &mut Option<oneshot::Sender<Result<(), Error>>>,
) -> Result<(), Error> {
    let mut stream = session.execute(text).await?;
    let schema = stream.schema();
    let first = stream.next().await.transpose().map_err(from_df)?;
    if let Some(s) = started.take() {
        let _ = s.send(Ok(()));
    }
    let mut enc = Encoder::new(format, &schema)?;
    let mut out = Vec::with_capacity(CHUNK_BYTES + 4096);
    enc.begin(&mut out)?;
    let mut next = first;
    while let Some(batch) = next {
        enc.batch(&mut out, batch)?;
        if out.len() >= CHUNK_BYTES
            && tx
                .send(Ok(Bytes::from(std::mem::take(&mut out))))
                .await
                .is_err()
        {
            return Ok(()); // the client is gone
        }
        next = stream.next().await.transpose().map_err(from_df)?;
    }
    enc.end(&mut out)?;
    let _ = tx.send(Ok(Bytes::from(out))).await;
    Ok(())
}

fn from_df(e: fleetgate_query::sql::DataFusionError) -> Error {
    fleetgate_query::sql::from_datafusion(e)
}

fn enc_err(e: impl std::fmt::Display) -> Error {
    Error::SqlInternal(format!("encoding the result: {e}"))
}

/// Writes batches in one format.
enum Encoder {
    Json { schema: SchemaRef, rows: usize },
    Csv { schema: SchemaRef, header: bool },
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef) -> Result<Self, Error> {
        Ok(match format {
            Format::Json => Encoder::Json {
                schema: Arc::clone(schema),
                rows: 0,
            },
            Format::Csv => Encoder::Csv {
                schema: plain_schema(schema),
                header: true,
            },
            Format::Arrow => Encoder::Arrow(Box::new(
                arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(enc_err)?,
            )),
        })
    }

    fn begin(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Encoder::Json { schema, .. } => {
                let columns: Vec<serde_json::Value> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name(),
                            "type": type_name(f.data_type()),
                        })
                    })
                    .collect();
                out.extend_from_slice(b"{\"columns\":");
                serde_json::to_writer(&mut *out, &columns).map_err(enc_err)?;
                out.extend_from_slice(b",\"rows\":[");
            }
            Encoder::Csv { .. } => {}
            Encoder::Arrow(w) => out.append(w.get_mut()),
        }
        Ok(())
    }

    fn batch(&mut self, out: &mut Vec<u8>, batch: RecordBatch) -> Result<(), Error> {
        match self {
            Encoder::Json { rows, .. } => {
                if batch.num_rows() == 0 {
                    return Ok(());
                }
                let mut lines = Vec::new();
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut lines);
                w.write(&batch).map_err(enc_err)?;
                w.finish().map_err(enc_err)?;
                drop(w);
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if *rows > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(line);
                    *rows += 1;
                }
            }
            Encoder::Csv { header, .. } => {
                let batch = plain_batch(batch)?;
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(&mut *out);
                w.write(&batch).map_err(enc_err)?;
                *header = false;
            }
            Encoder::Arrow(w) => {
                w.write(&batch).map_err(enc_err)?;
                out.append(w.get_mut());
            }
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Encoder::Json { .. } => out.extend_from_slice(b"]}\n"),
            Encoder::Csv { schema, header } => {
                // an empty result still has its header line
                if *header {
                    let empty = RecordBatch::new_empty(Arc::clone(schema));
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut *out);
                    w.write(&empty).map_err(enc_err)?;
                }
            }
            Encoder::Arrow(w) => {
                w.finish().map_err(enc_err)?;
                out.append(w.get_mut());
            }
        }
        Ok(())
    }
}

/// A column type as PostgreSQL names it (what the PostgreSQL wire reports; a map is `json`),
/// else Arrow's name.
fn type_name(t: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType;
    let plain = match t {
        DataType::Map(..) => return "json".to_string(),
        DataType::Dictionary(_, v) => v.as_ref(),
        t => t,
    };
    match arrow_pg::datatypes::into_pg_type(plain) {
        Ok(pg) => pg.name().to_string(),
        Err(_) => t.to_string(),
    }
}
