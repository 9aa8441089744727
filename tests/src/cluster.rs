//! A local network of `kos run` processes on loopback: nodes started one after another, each dialling those
//! before it, with their API addresses and tokens, and small readers of their JSON API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http;
use crate::process::{Process, kos_binary};

/// How long a node may take to start.
pub const STARTUP: Duration = Duration::from_secs(30);

/// One running node.
pub struct Node {
    pub dir: PathBuf,
    pub peer: String,
    pub key: String,
    pub process: Process,
    pub api: String,
    pub p2p: String,
    pub token: String,
}

/// Starts `kos run` in `dir` (keys and config already there), dialling `bootnodes`, with `extra` arguments.
pub fn start(dir: &Path, bootnodes: &[String], extra: &[&str]) -> (Process, String, String) {
    start_with_env(dir, bootnodes, extra, &[])
}

/// [`start`] with environment variables set.
pub fn start_with_env(
    dir: &Path,
    bootnodes: &[String],
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Process, String, String) {
    let mut args = vec!["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    for bootnode in bootnodes {
        args.push("--bootnode");
        args.push(bootnode);
    }
    let process =
        Process::kos_with_env(&kos_binary(), dir, &args, env).unwrap_or_else(|error| panic!("starting kos: {error}"));
    let api = process.wait_for_field(STARTUP, "API listening", "address").unwrap_or_else(|| {
        panic!("no API address: {:#?}", process.lines());
    });
    let p2p = process.wait_for_field(STARTUP, "listening", "address").unwrap_or_else(|| {
        panic!("no listen address: {:#?}", process.lines());
    });
    (process, api, p2p)
}

impl Node {
    /// Starts a node whose keys are in `dir`, dialling `bootnodes`.
    pub fn start(dir: &Path, key: &str, peer: &str, bootnodes: &[String], extra: &[&str]) -> Node {
        Node::start_with_env(dir, key, peer, bootnodes, extra, &[])
    }

    /// [`Node::start`] with environment variables set.
    pub fn start_with_env(
        dir: &Path,
        key: &str,
        peer: &str,
        bootnodes: &[String],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let (process, api, p2p) = start_with_env(dir, bootnodes, extra, env);
        let token = std::fs::read_to_string(dir.join("api.token")).unwrap_or_default().trim().to_owned();
        Node { dir: dir.to_owned(), peer: peer.to_owned(), key: key.to_owned(), process, api, p2p, token }
    }

    /// The address others dial it at.
    #[must_use]
    pub fn bootnode(&self) -> String {
        format!("{}/p2p/{}", self.p2p, self.peer)
    }

    /// A GET of the node's API as JSON (`None` unless 200).
    #[must_use]
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        json(&self.api, path)
    }

    /// A POST of JSON with the node's token: the status and the answer.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let bytes = body.to_string().into_bytes();
        let authorization = format!("Bearer {}", self.token);
        let headers = [("Authorization", authorization.as_str()), ("Content-Type", "application/json")];
        match http::request(&self.api, "POST", path, &headers, &bytes) {
            Ok(response) => (response.status, serde_json::from_slice(&response.body).unwrap_or_default()),
            Err(error) => (0, serde_json::json!({ "error": error.to_string() })),
        }
    }

    /// A POST of raw bytes (an entry to `/entries`) with the node's token: the status and the answer.
    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> (u16, serde_json::Value) {
        let authorization = format!("Bearer {}", self.token);
        let headers = [("Authorization", authorization.as_str()), ("Content-Type", "application/octet-stream")];
        match http::request(&self.api, "POST", path, &headers, bytes) {
            Ok(response) => (response.status, serde_json::from_slice(&response.body).unwrap_or_default()),
            Err(error) => (0, serde_json::json!({ "error": error.to_string() })),
        }
    }

    /// The node's ledger height.
    #[must_use]
    pub fn height(&self) -> Option<u64> {
        self.get("/status")?["ledger"]["height"].as_u64()
    }
}

/// A GET of `path` on the API at `api` as JSON (`None` unless 200).
#[must_use]
pub fn json(api: &str, path: &str) -> Option<serde_json::Value> {
    let response = http::get(api, path).ok()?;
    (response.status == 200).then(|| serde_json::from_slice(&response.body).ok()).flatten()
}
