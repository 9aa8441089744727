//! Running one-shot `kos` commands and waiting for conditions, shared by the process tests.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::kos_binary;

/// Runs `kos` with `args` (without any `KOS_KEY_FILE` of the environment); panics unless it succeeds; returns
/// its standard output.
pub fn kos(args: &[&str]) -> String {
    let output = Command::new(kos_binary()).args(args).env_remove("KOS_KEY_FILE").output().expect("running kos");
    assert!(output.status.success(), "kos {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("kos printed UTF-8")
}

/// Generates a node key in `dir`; returns (public key hex, peer id).
pub fn keys(dir: &Path) -> (String, String) {
    let text = kos(&["--data-dir", dir.to_str().expect("a UTF-8 path"), "keys", "generate"]);
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
            .expect("kos keys generate prints the key and peer id")
    };
    (field("public key:"), field("peer id:"))
}

/// Polls `condition` every 100 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
