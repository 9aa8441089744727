#![allow(clippy::unwrap_used)]

mod market;
mod sim;
mod state;
