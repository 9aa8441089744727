#![allow(clippy::unwrap_used)]

mod engine;
mod governance;
mod jobs;
mod market;
mod sim;
mod state;
