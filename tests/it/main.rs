//! Multi-node tests: real libp2p swarms on loopback sockets, and real `kos` processes.
#![allow(clippy::unwrap_used)]

mod governance;
mod hardening;
mod jobs;
mod ledger;
mod market;
mod meters;
mod network;
mod operate;
mod processes;
