//! Tests of the `kos` binary as a user runs it.
#![allow(clippy::unwrap_used)]

mod cli;
