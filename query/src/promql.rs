//! PromQL engine: parses with `promql-parser` and evaluates with Prometheus 3.x semantics over a
//! [`SeriesSource`] (the store, or memory in tests). Entry point: [`Engine`].
//!
//! Evaluation is columnar: every selector's series are read once for the whole time span the query
//! needs, then each node is evaluated for all steps of the query at once, series at a time.

mod aggregate;
mod binary;
mod engine;
mod functions;
pub mod source;
pub mod value;

pub use engine::{Engine, EngineOptions};
pub use source::{MemorySource, SeriesSource};
pub use value::{Annotations, STALE_NAN_BITS, Sample, Series, Value, is_stale_nan, stale_nan};
