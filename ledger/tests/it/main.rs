#![allow(clippy::unwrap_used)]

mod governance;
mod market;
mod sim;
mod state;
