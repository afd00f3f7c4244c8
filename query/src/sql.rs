//! SQL over the store: DataFusion sessions whose tables read through the reader's scoped view.
//!
//! The catalog `fleetgate` holds schema `public` (`samples`: one row per sample with `cluster`,
//! `metric`, `labels` as a map, `timestamp`, `value`; `series`: one row per series with its first
//! and last sample time; `cost_allocation`, `cost_assets`: the materialized cost rows;
//! `budgets`: every budget's state), schema `metrics` (one table per metric, its label names as columns,
//! found in the series catalog when a query names it), the `promql()` table function, and
//! PostgreSQL's `pg_catalog` and `information_schema` for the clients that look there.
//!
//! Every scan reads through the [`crate::read::ReadView`] the session was made with, so the
//! principal's cluster scope is a filter no SQL can remove (a scan in a session without a view
//! fails). Filters on time, cluster, metric and labels are pushed down to the store's selection;
//! `EXPLAIN` shows them on `StoreScanExec`. Only reads run: a statement check ([`guard`]) and
//! DataFusion's plan check refuse the rest, and every session allocates from one memory pool.

pub mod functions;
pub mod guard;
pub mod output;

mod catalog;
mod cost_tables;
mod information_schema;
mod promql_table;
mod pushdown;
mod scan;
mod session;
mod statement;
mod tables;

pub use cost_tables::BudgetSource;
pub use datafusion::common::{DataFusionError, ParamValues};
pub use datafusion::physical_plan::SendableRecordBatchStream as RecordBatchStream;
pub use session::{SqlEngine, SqlOptions, SqlSession, from_datafusion};
pub use statement::{Prepared, ReadPlan, Settings, TransactionVerb};

/// The catalog (PostgreSQL: database) name.
pub const CATALOG: &str = "fleetgate";
