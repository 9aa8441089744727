#![allow(clippy::unwrap_used)]
// Scenario tests read top to bottom, as a story; product functions stay within 100 lines.
#![allow(clippy::too_many_lines)]

mod barter;
mod cells;
mod certificates;
mod engine;
mod export;
mod governance;
mod jobs;
mod market;
mod mempool;
mod sim;
mod state;
