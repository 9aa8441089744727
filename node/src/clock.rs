//! The node's one clock. Wall time is read here, at the node's edges (actors, the API, the CLI), and passed into the
//! sans-IO cores (consensus, matching, admission, fuel), which never read it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970 (whatever uses it then refuses what it dates).
pub fn now_ms() -> u64 {
    try_now_ms().unwrap_or(0)
}

/// Seconds since the Unix epoch; 0 for a clock set before 1970.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch, or why the clock cannot date anything (for commands that must say so).
pub fn try_now_ms() -> anyhow::Result<u64> {
    let since =
        SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| anyhow::anyhow!("the system clock is before 1970"))?;
    u64::try_from(since.as_millis()).map_err(|_| anyhow::anyhow!("the system clock is beyond the year 584 million"))
}
