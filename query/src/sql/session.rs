//! SQL sessions: the engine every session shares (one memory pool, the limits) and a session for
//! one reader (its scoped view in the session config, the catalog, PostgreSQL's catalog tables).

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::config::Dialect;
use datafusion::common::{DataFusionError, ParamValues};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use super::CATALOG;
use super::catalog::MetricsSchema;
use super::cost_tables::{BudgetSource, BudgetsTable, CostTable, CostTableKind};
use super::promql_table::PromqlFunction;
use super::statement::{Prepared, ReadPlan, Settings, session_verb, show_variable};
use super::tables::StoreTable;
use crate::error::Error;
use crate::promql::EngineOptions;
use crate::read::ReadView;

/// Limits of the SQL engine.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Bytes all running SQL queries may hold together (aggregations, sorts, joins and the
    /// scans' buffers); a query that needs more fails with a resources-exhausted error.
    pub memory_limit: usize,
    /// Partitions a query is planned with (threads it can use at once).
    pub target_partitions: usize,
    /// Rows per Arrow batch.
    pub batch_rows: usize,
    /// Longest SQL text accepted.
    pub max_query_bytes: usize,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            memory_limit: 1 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, usize::from),
            batch_rows: 8192,
            max_query_bytes: 256 * 1024,
        }
    }
}

/// What a session's tables read through (in its config; a scan without it fails closed).
#[derive(Debug)]
pub(crate) struct SessionRead {
    view: Arc<ReadView>,
    promql: EngineOptions,
}

impl SessionRead {
    pub(crate) fn view(&self) -> &Arc<ReadView> {
        &self.view
    }

    pub(crate) fn promql(&self) -> &EngineOptions {
        &self.promql
    }
}

/// What every SQL session shares.
#[derive(Debug)]
pub struct SqlEngine {
    runtime: Arc<RuntimeEnv>,
    opts: SqlOptions,
    parser: Arc<PostgresCompatibilityParser>,
}

impl SqlEngine {
    /// An engine with one memory pool of `opts.memory_limit` bytes and no spilling to disk.
    pub fn new(opts: SqlOptions) -> Result<Self, Error> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(opts.memory_limit.max(1 << 20)),
            NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(from_datafusion)?;
        Ok(Self {
            runtime,
            opts,
            parser: Arc::new(PostgresCompatibilityParser::new()),
        })
    }

    /// The limits.
    pub fn options(&self) -> &SqlOptions {
        &self.opts
    }

    /// Bytes held by running queries now.
    pub fn memory_reserved(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }

    /// A session that reads through `view` (the principal's scope); `promql()` runs with `promql`.
    pub fn session(&self, view: Arc<ReadView>, promql: EngineOptions) -> Result<SqlSession, Error> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, "public")
            // ours (PostgreSQL type names, `udt_name`) instead: `information_schema.rs`
            .with_information_schema(false)
            .with_target_partitions(self.opts.target_partitions.max(1))
            .with_batch_size(self.opts.batch_rows.max(1))
            .with_extension(Arc::new(SessionRead {
                view: Arc::clone(&view),
                promql,
            }));
        config.options_mut().sql_parser.dialect = Dialect::PostgreSQL;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let df = from_datafusion;
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Error::SqlInternal("the default catalog is missing".into()))?;
        let public = MemorySchemaProvider::new();
        public
            .register_table("samples".into(), Arc::new(StoreTable::samples()))
            .map_err(df)?;
        public
            .register_table("series".into(), Arc::new(StoreTable::series()))
            .map_err(df)?;
        for kind in [CostTableKind::Allocation, CostTableKind::Assets] {
            let name = match kind {
                CostTableKind::Allocation => crate::cost::table::ALLOCATION_TABLE,
                CostTableKind::Assets => crate::cost::table::ASSETS_TABLE,
            };
            public
                .register_table(name.into(), Arc::new(CostTable::new(kind)))
                .map_err(df)?;
        }
        public
            .register_table(BUDGETS.into(), Arc::new(BudgetsTable::new(None)))
            .map_err(df)?;
        catalog
            .register_schema("public", Arc::new(public))
            .map_err(df)?;
        catalog
            .register_schema("metrics", Arc::new(MetricsSchema::new(view)))
            .map_err(df)?;
        catalog
            .register_schema(
                super::information_schema::NAME,
                Arc::new(super::information_schema::InformationSchema::new(&catalog)),
            )
            .map_err(df)?;
        ctx.register_udtf("promql", Arc::new(PromqlFunction));
        datafusion_pg_catalog::setup_pg_catalog(&ctx, CATALOG, EmptyContextProvider)
            .map_err(|e| df(*e))?;
        let settings = Arc::new(Settings::default());
        super::functions::register(&ctx, Arc::clone(&settings));
        Ok(SqlSession {
            ctx,
            parser: Arc::clone(&self.parser),
            max_query_bytes: self.opts.max_query_bytes,
            settings,
        })
    }
}

/// The SQL name of the budgets table.
const BUDGETS: &str = "budgets";

/// One reader's SQL session.
pub struct SqlSession {
    ctx: SessionContext,
    parser: Arc<PostgresCompatibilityParser>,
    max_query_bytes: usize,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for SqlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSession")
            .field("session_id", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}

/// DataFusion's plan check: no DDL, no DML (COPY included), no statements.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl SqlSession {
    /// The `budgets` table reads `source` (without one it is empty).
    pub fn with_budgets(self, source: Arc<dyn BudgetSource>) -> Result<Self, Error> {
        let table = format!("{CATALOG}.public.{BUDGETS}");
        self.ctx
            .deregister_table(table.as_str())
            .map_err(from_datafusion)?;
        self.ctx
            .register_table(table.as_str(), Arc::new(BudgetsTable::new(Some(source))))
            .map_err(from_datafusion)?;
        Ok(self)
    }

    /// The DataFusion session (for the PostgreSQL wire handlers).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Parses `sql` with PostgreSQL's dialect and its client-compatibility rewrites.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, Error> {
        if sql.len() > self.max_query_bytes {
            return Err(Error::SqlParse(format!(
                "query is {} bytes long; at most {} are accepted",
                sql.len(),
                self.max_query_bytes
            )));
        }
        self.parser
            .parse(sql)
            .map_err(|e| Error::SqlParse(e.to_string()))
    }

    /// Plans one read statement (`SHOW` included); refuses anything else (session verbs
    /// included: they apply to PostgreSQL wire sessions), and checks the plan again.
    pub async fn plan_statement(&self, stmt: Statement) -> Result<LogicalPlan, Error> {
        match self.prepare(stmt).await? {
            Prepared::Read(r) => Ok(r.plan),
            Prepared::Set { name, .. } => Err(Error::ReadOnly(format!(
                "SET {name}: session settings apply to PostgreSQL wire sessions only"
            ))),
            Prepared::Transaction(_) => Err(Error::ReadOnly(
                "transaction statements apply to PostgreSQL wire sessions only".into(),
            )),
        }
    }

    /// Plans a statement the guard let through, then DataFusion's plan check.
    async fn plan_checked(&self, stmt: Statement) -> Result<LogicalPlan, Error> {
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await
            .map_err(from_datafusion)?;
        read_only()
            .verify_plan(&plan)
            .map_err(|e| Error::ReadOnly(e.strip_backtrace()))?;
        Ok(plan)
    }

    /// The session's settings (SET / SHOW / `current_setting()`).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Makes one statement ready to run: a read is planned (its `$n` placeholders kept), `SHOW
    /// <setting>` becomes a one-row read of the session's value, SET of a session cosmetic and
    /// the transaction verbs are returned for the caller to acknowledge; anything else is
    /// refused.
    pub async fn prepare(&self, stmt: Statement) -> Result<Prepared, Error> {
        match &stmt {
            // DataFusion's SHOW TABLES / COLUMNS need its own information_schema, which is off
            Statement::ShowTables { .. } => {
                let plan = self
                    .ctx
                    .state()
                    .create_logical_plan(
                        "SELECT table_catalog, table_schema, table_name, table_type \
                         FROM information_schema.tables ORDER BY table_schema, table_name",
                    )
                    .await
                    .map_err(from_datafusion)?;
                return Ok(Prepared::Read(ReadPlan::new(plan)?));
            }
            Statement::ShowColumns { .. } => {
                return Err(Error::SqlPlan(
                    "SHOW COLUMNS is not supported; query information_schema.columns".into(),
                ));
            }
            _ => {}
        }
        if let Some(name) = show_variable(&stmt) {
            let value = self.settings.get(&name).ok_or_else(|| {
                Error::SqlPlan(format!("unrecognized configuration parameter \"{name}\""))
            })?;
            let column = name.replace(' ', "_");
            let sql = format!(
                "SELECT {} AS \"{}\"",
                quote_literal(&value),
                column.replace('"', "")
            );
            let plan = self
                .ctx
                .state()
                .create_logical_plan(&sql)
                .await
                .map_err(from_datafusion)?;
            return Ok(Prepared::Read(ReadPlan::new(plan)?));
        }
        if let Some(verb) = session_verb(&stmt)? {
            return Ok(verb);
        }
        let plan = self.plan_checked(stmt).await?;
        Ok(Prepared::Read(ReadPlan::new(plan)?))
    }

    /// Runs a prepared read with the values of its parameters (`$1…`), if it has any.
    pub async fn execute_read(
        &self,
        read: &ReadPlan,
        params: Option<ParamValues>,
    ) -> Result<SendableRecordBatchStream, Error> {
        let plan = match params {
            Some(p) => read
                .plan
                .clone()
                .replace_params_with_values(&p)
                .map_err(from_datafusion)?,
            None if !read.param_types().is_empty() => {
                return Err(Error::SqlPlan(format!(
                    "the query has {} parameters and no values were given",
                    read.param_types().len()
                )));
            }
            None => read.plan.clone(),
        };
        self.execute_plan(plan).await
    }

    /// Plans `sql`, which must be exactly one read statement.
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan, Error> {
        let mut stmts = self.parse(sql)?;
        if stmts.len() != 1 {
            return Err(Error::SqlParse(format!(
                "expected exactly one statement, got {}",
                stmts.len()
            )));
        }
        self.plan_statement(stmts.remove(0)).await
    }

    /// Runs a planned read; the stream yields the result batch by batch.
    pub async fn execute_plan(
        &self,
        plan: LogicalPlan,
    ) -> Result<SendableRecordBatchStream, Error> {
        read_only()
            .verify_plan(&plan)
            .map_err(|e| Error::ReadOnly(e.strip_backtrace()))?;
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(from_datafusion)?;
        df.execute_stream().await.map_err(from_datafusion)
    }

    /// Plans and runs `sql` (one read statement).
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream, Error> {
        let plan = self.plan(sql).await?;
        self.execute_plan(plan).await
    }
}

/// `s` as a SQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Classifies a DataFusion error once: planning errors are the client's (400), running out of the
/// memory pool is a limit (503), other execution errors 422, the rest internal.
pub fn from_datafusion(e: DataFusionError) -> Error {
    // our own errors travel through DataFusion as External
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(q) = inner.downcast_ref::<Error>()
    {
        return q.clone_for_sql();
    }
    let msg = e.strip_backtrace();
    match e.find_root() {
        DataFusionError::SQL(..) => Error::SqlParse(msg),
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Error::SqlPlan(msg),
        DataFusionError::ResourcesExhausted(_) => Error::ResourcesExhausted(msg),
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => Error::Execution(msg),
        _ => Error::SqlInternal(msg),
    }
}
