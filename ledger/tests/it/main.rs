#![allow(clippy::unwrap_used)]

mod sim;
mod state;
