//! The simple and extended query protocols over the connection's SQL session: statements are
//! prepared by the query crate (read-only guard, plan check), reads run under a SQL slot, the
//! session's timeout and the connection's cancel signal, and their rows are encoded batch by
//! batch (arrow-pg) as pgwire sends them.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use fleetgate_query::sql::output::{plain_batch, plain_schema};
use fleetgate_query::sql::{ParamValues, Prepared, SqlSession, TransactionVerb};
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use tokio::time::Instant;

use super::Conn;
use super::error::{canceled, from_query, timed_out, user_error};

/// A statement of the extended protocol, prepared.
#[derive(Debug)]
pub(super) struct PgStatement {
    prepared: Prepared,
}

/// The query handlers of one connection.
#[derive(Debug)]
pub(super) struct Queries {
    conn: Arc<Conn>,
    parser: Arc<Parser>,
}

impl Queries {
    pub(super) fn new(conn: Arc<Conn>) -> Self {
        Self {
            parser: Arc::new(Parser {
                conn: Arc::clone(&conn),
            }),
            conn,
        }
    }

    /// Runs one prepared statement: a session verb is acknowledged, a read starts streaming.
    async fn run(
        &self,
        session: &SqlSession,
        prepared: &Prepared,
        params: Option<ParamValues>,
        format: &Format,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<Response> {
        match prepared {
            Prepared::Set { name, value } => {
                session
                    .settings()
                    .set(name, value)
                    .map_err(|e| from_query(&e))?;
                Ok(Response::Execution(Tag::new("SET")))
            }
            Prepared::Transaction(TransactionVerb::Begin) => {
                Ok(Response::TransactionStart(Tag::new("BEGIN")))
            }
            Prepared::Transaction(TransactionVerb::Commit) => {
                Ok(Response::TransactionEnd(Tag::new("COMMIT")))
            }
            Prepared::Transaction(TransactionVerb::Rollback) => {
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Prepared::Transaction(TransactionVerb::Other(tag)) => {
                Ok(Response::Execution(Tag::new(tag)))
            }
            Prepared::Read(read) => {
                let st = &self.conn.st;
                let slot = st
                    .sql
                    .try_slot()
                    .map_err(|e| user_error("ERROR", "53300", e.to_string()))?;
                let limit = st.sql.timeout(session.settings().statement_timeout());
                let deadline = Instant::now() + limit;
                let cancel = Arc::clone(&self.conn.cancel);
                let seen = cancel.generation();
                let stream = tokio::select! {
                    r = session.execute_read(read, params) => r.map_err(|e| from_query(&e))?,
                    _ = tokio::time::sleep_until(deadline) => return Err(timed_out(limit)),
                    _ = cancel.canceled_after(seen) => return Err(canceled()),
                };
                let fields = Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(
                    &plain_schema(&stream.schema()),
                    format,
                    Some(options),
                )?);
                let rows = Rows {
                    stream,
                    fields: Arc::clone(&fields),
                    pending: VecDeque::new(),
                    deadline,
                    limit,
                    cancel,
                    seen,
                    done: false,
                    _slot: slot,
                };
                let rows = futures::stream::unfold(rows, |mut r| async move {
                    let item = r.next().await?;
                    Some((item, r))
                });
                Ok(Response::Query(QueryResponse::new(fields, rows)))
            }
        }
    }
}

/// A read's rows as pgwire takes them, a batch at a time; the SQL slot is held until the last
/// row is sent (or the client stops reading).
struct Rows {
    stream: fleetgate_query::sql::RecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    pending: VecDeque<PgWireResult<DataRow>>,
    deadline: Instant,
    limit: std::time::Duration,
    cancel: Arc<super::CancelToken>,
    seen: u64,
    done: bool,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Rows {
    async fn next(&mut self) -> Option<PgWireResult<DataRow>> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                if row.is_err() {
                    self.done = true;
                    self.pending.clear();
                }
                return Some(row);
            }
            if self.done {
                return None;
            }
            let batch = tokio::select! {
                b = self.stream.next() => b,
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                    return Some(Err(timed_out(self.limit)));
                }
                _ = self.cancel.canceled_after(self.seen) => {
                    self.done = true;
                    return Some(Err(canceled()));
                }
            };
            match batch {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(from_query(&fleetgate_query::sql::from_datafusion(e))));
                }
                Some(Ok(b)) => match plain_batch(b) {
                    Ok(b) => self.pending.extend(arrow_pg::datatypes::encode_recordbatch(
                        Arc::clone(&self.fields),
                        b,
                    )),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(from_query(&e)));
                    }
                },
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.conn.session()?;
        let statements = session.parse(query).map_err(|e| from_query(&e))?;
        if statements.is_empty() {
            // a comment alone (Grafana's `-- ping`)
            return Ok(vec![Response::EmptyQuery]);
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut out = Vec::with_capacity(statements.len());
        for stmt in statements {
            let result = match session.prepare(stmt).await {
                Ok(p) => {
                    self.run(
                        session,
                        &p,
                        None,
                        &Format::UnifiedText,
                        Arc::clone(&options),
                    )
                    .await
                }
                Err(e) => Err(from_query(&e)),
            };
            match result {
                Ok(r) => out.push(r),
                Err(e) => {
                    // like PostgreSQL: the statements before it answered, the rest do not run
                    out.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Parses and describes statements of the extended protocol.
#[derive(Debug)]
pub(super) struct Parser {
    conn: Arc<Conn>,
}

fn pg_type(t: &Option<DataType>) -> Type {
    t.as_ref()
        .and_then(|t| arrow_pg::datatypes::into_pg_type(t).ok())
        .unwrap_or(Type::UNKNOWN)
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<PgStatement>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.conn.session()?;
        let mut statements = session.parse(sql).map_err(|e| from_query(&e))?;
        match statements.len() {
            0 => Ok(None),
            1 => {
                let prepared = session
                    .prepare(statements.remove(0))
                    .await
                    .map_err(|e| from_query(&e))?;
                Ok(Some(Arc::new(PgStatement { prepared })))
            }
            _ => Err(user_error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            )),
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(match &stmt.prepared {
            Prepared::Read(r) => r.param_types().iter().map(pg_type).collect(),
            _ => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.prepared {
            Prepared::Read(r) => arrow_pg::datatypes::arrow_schema_to_pg_fields(
                &plain_schema(r.schema()),
                column_format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Arc<PgStatement>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.conn.session()?;
        let prepared = &portal.statement.statement.prepared;
        let params = match prepared {
            Prepared::Read(r) if !r.param_types().is_empty() => {
                let types: Vec<Option<&DataType>> =
                    r.param_types().iter().map(Option::as_ref).collect();
                Some(arrow_pg::datatypes::df::deserialize_parameters(
                    portal, &types,
                )?)
            }
            _ => None,
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        self.run(
            session,
            prepared,
            params,
            &portal.result_column_format,
            options,
        )
        .await
    }
}
