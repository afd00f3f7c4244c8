//! The SQL engine the HTTP and PostgreSQL listeners share: one memory pool, `sql.max_concurrency`
//! slots for running queries, the timeout, and a session per principal that reads through the
//! principal's scoped view.

use std::sync::Arc;
use std::time::Duration;

use fleetgate_query::promql::EngineOptions;
use fleetgate_query::read::ReadView;
use fleetgate_query::sql::{BudgetSource, SqlEngine, SqlOptions, SqlSession};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// Shared by every SQL query.
#[derive(Debug)]
pub(crate) struct SqlService {
    engine: SqlEngine,
    slots: Arc<Semaphore>,
    max_concurrency: usize,
    timeout: Duration,
    promql: EngineOptions,
}

/// Why a SQL query was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SqlBusy {
    /// Every SQL slot is taken (503 + Retry-After; SQLSTATE 53300).
    #[error("too many SQL queries running (sql.max_concurrency = {0}); retry later")]
    Concurrency(usize),
}

impl SqlService {
    /// From the validated config.
    pub(crate) fn new(cfg: &Config) -> anyhow::Result<Self> {
        let engine = SqlEngine::new(SqlOptions {
            memory_limit: cfg.sql.memory_limit,
            target_partitions: cfg.query.threads.max(1),
            max_query_bytes: cfg.sql.max_query_bytes,
            ..SqlOptions::default()
        })
        .map_err(|e| anyhow::anyhow!("starting the SQL engine: {e}"))?;
        let promql = EngineOptions {
            timeout: Some(cfg.query.timeout.0.min(cfg.sql.timeout.0)),
            max_samples: cfg.query.max_samples,
            ..EngineOptions::default()
        };
        Ok(Self {
            engine,
            slots: Arc::new(Semaphore::new(cfg.sql.max_concurrency)),
            max_concurrency: cfg.sql.max_concurrency,
            timeout: cfg.sql.timeout.0,
            promql,
        })
    }

    /// A session reading through `view` (the principal's scope); its `budgets` table reads
    /// `budgets`.
    pub(crate) fn session(
        &self,
        view: Arc<ReadView>,
        budgets: Arc<dyn BudgetSource>,
    ) -> Result<SqlSession, fleetgate_query::Error> {
        self.engine
            .session(view, self.promql.clone())?
            .with_budgets(budgets)
    }

    /// A slot for one running query, or why not (never waits: a full gateway answers at once).
    pub(crate) fn try_slot(&self) -> Result<OwnedSemaphorePermit, SqlBusy> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| SqlBusy::Concurrency(self.max_concurrency))
    }

    /// The timeout of one query: `sql.timeout`, or the session's shorter `statement_timeout`.
    pub(crate) fn timeout(&self, session: Option<Duration>) -> Duration {
        session.map_or(self.timeout, |s| s.min(self.timeout))
    }

    /// Bytes the running SQL queries hold now (shown at `/metrics`).
    pub(crate) fn memory_reserved(&self) -> usize {
        self.engine.memory_reserved()
    }

    /// SQL queries running now.
    pub(crate) fn running(&self) -> usize {
        self.max_concurrency
            .saturating_sub(self.slots.available_permits())
    }
}
