//! Query side of fleetgate; reads the store only through its scan API.
//!
//! Today: series selectors (parsed with `promql-parser`, so their syntax is exactly PromQL's), the
//! raw-sample export behind `/api/v1/export`, and the PromQL engine ([`promql::Engine`]).
//! SQL and cost allocation come here.
#![warn(missing_docs)]

pub mod error;
pub mod export;
pub mod promql;
pub mod selector;
pub mod time;

pub use error::{Error, Result};
