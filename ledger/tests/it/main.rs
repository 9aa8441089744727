#![allow(clippy::unwrap_used)]

mod governance;
mod jobs;
mod market;
mod sim;
mod state;
