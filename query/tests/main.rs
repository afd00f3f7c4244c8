//! Integration tests of the query crate, built as one binary.

mod cost;
mod fleet;
mod promqltest;
mod sql;
