//! The node's HTTP API (axum), on loopback by default. Reads are open; writes need the bearer token kept in
//! `<data-dir>/api.token` (created at first start, mode 0600).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/status` | node and ledger status |
//! | GET | `/blocks/{height}` | a committed block: header fields and entry ids |
//! | GET | `/blocks/{height}/raw` | the block's bytes and its certificate's, hex |
//! | GET | `/entries/{id}` | where a committed entry is (404 while it is not committed) |
//! | POST | `/entries` | a signed entry (the envelope's bytes, `application/octet-stream`): into the mempool and gossiped |
//! | GET | `/accounts/{key}/balances` | an account's balances by token (milli-units) |

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use protocol::{Id, PublicKey};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::info;

use crate::ledger;
use crate::network;

/// Largest request body (one envelope).
const BODY_BYTES_MAX: usize = protocol::limits::ENVELOPE_BYTES_MAX;

/// What the handlers reach.
#[derive(Clone)]
pub struct Context {
    pub network: network::Handle,
    pub ledger: Option<ledger::Handle>,
    pub token: Arc<str>,
}

/// Reads the API token of a data directory, creating it if missing.
pub fn token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("api.token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let token = hex::encode(secret);
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}

/// Binds the API's address (failing early if it is taken) and serves it until the node stops.
pub async fn serve(address: SocketAddr, context: Context) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("binding the API on {address}: is another node running? set api.listen or --api to another port")
    })?;
    info!(address = %listener.local_addr().unwrap_or(address), "API listening");
    let app = router(context);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the API stopped");
        }
    }))
}

pub fn router(context: Context) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/blocks/{height}", get(block))
        .route("/blocks/{height}/raw", get(block_raw))
        .route("/entries", axum::routing::post(submit))
        .route("/entries/{id}", get(entry))
        .route("/accounts/{key}/balances", get(balances))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(context)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn no_ledger() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "this node keeps no ledger (no genesis file)")
}

async fn status(State(context): State<Context>) -> Response {
    let info = context.network.info().await.ok();
    let ledger = context.ledger.as_ref().map(|ledger| {
        let status = ledger.status();
        json!({
            "height": status.height,
            "hash": status.hash,
            "round": status.round,
            "mempool_entries": status.mempool_entries,
            "validator": status.validator,
            "validators": status.validators,
            "committed_entries": status.committed_entries,
            "syncing_to": status.syncing_to,
        })
    });
    Json(json!({
        "network": context.network.network().as_str(),
        "peer_id": context.network.peer_id().to_string(),
        "peers": info.as_ref().map_or(0, |info| info.peers.len()),
        "listen": info.map(|info| info.listen.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
        "ledger": ledger,
    }))
    .into_response()
}

fn stored_block(
    context: &Context,
    height: u64,
) -> Result<(ledger_crate::Block, ledger_crate::store::Stored), Box<Response>> {
    let ledger = context.ledger.as_ref().ok_or_else(|| Box::new(no_ledger()))?;
    let stored = ledger
        .reader()
        .block(height)
        .map_err(|error| Box::new(error_response(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))))?
        .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, format!("no block at height {height} yet"))))?;
    let block = ledger_crate::Block::from_bytes(&stored.block).map_err(|problem| {
        Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, format!("stored block {height}: {problem}")))
    })?;
    Ok((block, stored))
}

fn error_response(status: StatusCode, message: String) -> Response {
    error(status, message)
}

use ::ledger as ledger_crate;

async fn block(State(context): State<Context>, UrlPath(height): UrlPath<u64>) -> Response {
    let (block, _) = match stored_block(&context, height) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let header = block.header();
    let entries: Vec<String> = block
        .entries()
        .map(|bytes| protocol::Envelope::from_bytes(bytes).map_or_else(|_| "undecodable".into(), |e| e.id().to_hex()))
        .collect();
    Json(json!({
        "height": header.height,
        "hash": block.hash().to_string(),
        "parent": header.parent.to_string(),
        "time_ms": header.time_ms,
        "proposer": header.proposer.to_string(),
        "entry_count": header.entry_count,
        "entries_root": header.entries_root.to_string(),
        "state_root": header.state_root.to_string(),
        "validators_hash": header.validators_hash.to_string(),
        "entries": entries,
    }))
    .into_response()
}

async fn block_raw(State(context): State<Context>, UrlPath(height): UrlPath<u64>) -> Response {
    match stored_block(&context, height) {
        Ok((_, stored)) => Json(json!({
            "height": height,
            "block": hex::encode(&stored.block),
            "certificate": hex::encode(&stored.certificate),
        }))
        .into_response(),
        Err(response) => *response,
    }
}

async fn entry(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(id) = Id::from_hex(&id) else { return error(StatusCode::BAD_REQUEST, "an entry id is 64 hex digits") };
    match ledger.reader().locate(&id) {
        Ok(Some((height, position))) => {
            Json(json!({ "id": id.to_hex(), "height": height, "position": position })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "not committed (yet)"),
        Err(problem) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{problem:#}")),
    }
}

fn authorized(context: &Context, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| constant_time_eq(token.trim().as_bytes(), context.token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn submit(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&context, &headers) {
        return error(StatusCode::UNAUTHORIZED, "write endpoints need `Authorization: Bearer <data-dir/api.token>`");
    }
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    match ledger.submit(body.to_vec()).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id.to_hex() }))).into_response(),
        Err(ledger::Error::Refused(reason)) => error(StatusCode::BAD_REQUEST, reason),
        Err(ledger::Error::Busy) => error(StatusCode::SERVICE_UNAVAILABLE, "the ledger is busy; try again"),
        Err(ledger::Error::Stopped) => error(StatusCode::SERVICE_UNAVAILABLE, "the ledger has stopped"),
    }
}

async fn balances(State(context): State<Context>, UrlPath(key): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(account) = PublicKey::from_hex(&key) else {
        return error(StatusCode::BAD_REQUEST, "an account is its public key, 64 hex digits");
    };
    match ledger.read(move |state, height| (height, state.account_balances(&account))).await {
        Ok((height, balances)) => {
            let balances: serde_json::Map<String, serde_json::Value> =
                balances.into_iter().map(|(token, amount)| (token.as_str().to_string(), json!(amount))).collect();
            Json(json!({ "account": key, "height": height, "balances": balances })).into_response()
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the ledger has stopped"),
    }
}
