//! The kos node: CLI, configuration, key files and (as they are built) the swarm, ledger, market and energy actors.

pub mod api;
pub mod app;
#[cfg(feature = "tools")]
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod devnet;
pub mod feed;
pub mod feeder;
pub mod island;
pub mod jobs;
pub mod keyfile;
pub mod ledger;
pub mod market;
pub mod meter;
pub mod metrics;
pub mod network;
pub mod run;
pub mod signer;
