//! The kos node: CLI, configuration, key files and (as they are built) the swarm, ledger, market and energy actors.

pub mod bench;
pub mod cli;
pub mod config;
pub mod keyfile;
pub mod network;
pub mod run;
