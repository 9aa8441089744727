//! kos multi-node test helpers: running real `kos` processes and reading their logs.

pub mod process;
