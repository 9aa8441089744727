//! The kos node: CLI, configuration, key files and (as they are built) the swarm, ledger, market and energy actors.

pub mod api;
pub mod app;
pub mod bench;
pub mod bench_energy;
pub mod bench_governance;
pub mod bench_jobs;
pub mod bench_ledger;
pub mod bench_market;
pub mod cli;
pub mod clock;
pub mod config;
pub mod devnet;
pub mod feed;
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
