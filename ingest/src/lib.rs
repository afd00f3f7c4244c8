//! Ingestion for fleetgate: every way metrics arrive, decoded, validated, labelled with their
//! cluster and appended to the store. The entry point is [`Ingester`]; every protocol is a thin
//! decoder onto its one path ([`pipeline`]): Prometheus remote-write 1.0
//! ([`Ingester::remote_write`]), OTLP metrics ([`otlp::OtlpReceiver`]) and pulled exposition
//! text ([`Ingester::scrape`]).
//!
//! The gateway authenticates the sender, resolves a [`ClusterContext`] and passes it in; this
//! crate never decides who a sender is. Whole-request failures are an [`Error`], classified by
//! [`Error::kind`] for the HTTP status; rejected samples are counted in the [`WriteOutcome`] while
//! the valid samples of the same request are stored. Storage is reached only through the
//! [`SeriesSink`] trait.
#![warn(missing_docs)]

pub mod cluster;
pub mod error;
pub mod exposition;
pub mod limits;
pub mod otlp;
pub mod outcome;
pub mod pipeline;
pub mod remote_write;
mod series_cache;
pub mod sink;
pub mod validate;

pub use cluster::ClusterContext;
pub use error::{Error, ErrorKind, Result};
pub use limits::Limits;
pub use outcome::{RejectCounts, RejectReason, WriteOutcome};
pub use pipeline::{Batch, IngestOptions, Ingester, PreparedWrite, Sample, SeriesLabels};
pub use sink::{MemorySink, SampleRef, SeriesSink};
