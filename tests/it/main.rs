//! Multi-node tests: real libp2p swarms on loopback sockets, and real `kos` processes.
#![allow(clippy::unwrap_used)]

mod ledger;
mod network;
mod processes;
