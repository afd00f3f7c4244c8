//! Integration tests of the query crate, built as one binary.

mod fleet;
mod promqltest;
mod sql;
