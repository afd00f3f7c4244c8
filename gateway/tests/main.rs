//! Integration tests of the `fleetgate` binary: one test binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod bad_input;
mod chaos;
mod connections;
mod cost;
mod crash;
mod disk_full;
mod grafana;
mod harness;
mod hostile_queries;
mod ingest_restart;
mod interop;
mod interop_promql;
mod memory_budget;
mod ops;
mod otlp;
mod power_loss;
mod prom_api;
mod pull;
mod read_scope;
mod sql;
mod tls_passwd;
