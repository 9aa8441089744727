#![allow(clippy::unwrap_used)]

mod engine;
mod export;
mod governance;
mod jobs;
mod market;
mod mempool;
mod sim;
mod state;
