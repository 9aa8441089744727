//! Multi-node tests: real libp2p swarms on loopback sockets, and real `kos` processes.
#![allow(clippy::unwrap_used)]
// Scenario tests read top to bottom, as a story; product functions stay within 100 lines.
#![allow(clippy::too_many_lines)]

mod governance;
mod hardening;
mod jobs;
mod ledger;
mod market;
mod meters;
mod network;
mod operate;
mod processes;
