//! kos multi-node test helpers: running real `kos` processes and reading their logs.

pub mod browser;
pub mod cli;
pub mod cluster;
pub mod http;
pub mod openapi;
pub mod process;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
