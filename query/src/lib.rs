//! Query side of fleetgate; reads the store only through its scan API.
//!
//! Today: series selectors (parsed with `promql-parser`, so their syntax is exactly PromQL's), the
//! reader's scoped view of the store ([`read::ReadView`], the one way in for every read), the
//! series and label answers ([`metadata`]) and the PromQL engine ([`promql::Engine`]).
//! SQL over the same view ([`sql`]); cost allocation comes here.
#![warn(missing_docs)]

pub mod cost;
pub mod error;
pub mod metadata;
pub mod parse;
pub mod promql;
pub mod read;
pub mod scope;
pub mod selector;
pub mod sql;
pub mod time;

pub use error::{Error, Result};
