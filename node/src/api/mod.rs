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
//! | GET | `/accounts/{key}/fuel` | an author's fuel as this node counts it: levels per class, standing, refusals |
//! | GET | `/meter` | the home meter: latest registers, latest signed reading, counters |
//! | GET | `/island` | the microgrid controller: mode (grid or island) and the last interval's allocation |
//! | POST | `/island` | JSON `{grid_present}`: tells the microgrid controller whether the grid is present |
//! | POST | `/offers` | JSON `{pool, side, quantity, price, delivery_start?, expires_in_s?}`: signed with the node's key, checked as receivers check it, put in the node's market, and only then its pool joined, announced and the offer gossiped; the market's verdict otherwise (400, 403 frozen, 409, 429 too many open offers, 503 the node's bounds) |
//! | POST | `/offers/{id}/cancel?pool=...` | withdraws one of the node's offers: a signed cancel, gossiped on the pool's topic and put on the ledger (so no later settlement can fill it) |
//! | POST | `/barter` | JSON `{give, give_quantity, want, want_quantity, cell?, expires_in_s?}`: a token-free barter offer, signed, gossiped and put on the node's barter board |
//! | POST | `/transfers` | JSON `{to, token, amount, memo?}` (amount a decimal string, up to 3 decimals): a transfer from the node's account, signed and submitted to the ledger |
//! | POST | `/assets` | JSON manifest `{kind, purpose, owner?, meters, limits, cell?, commissioned_s?, maintenance_interval_s?}`: registers an asset, signed by the node |
//! | GET | `/assets/{id}` | an asset's manifest and history: readings anchored for it and the latest of them, its author's recent energy trades, alerts, reports and maintenance logged, overrides on it |
//! | POST | `/guilds` | JSON `{name, members, threshold}`: a guild (shared account, k-of-n spending) signed by the node |
//! | GET | `/guilds/{account}` | a guild: members, threshold, balances |
//! | POST | `/guilds/{account}/spends` | JSON `{to, token, amount, memo?}`: the node (a member) asks to spend; counts as its approval |
//! | GET | `/guild-spends/{id}` | a spend: approvals, status |
//! | POST | `/guild-spends/{id}/approve` | the node (a member) approves a pending spend |
//! | GET | `/governance` | proposals with their ballots, overrides in force, scheduled validator changes, parameters, maintenance alerts and open reports |
//! | POST | `/proposals` | JSON `{title, text?, voting_period_blocks, action}` (action `{kind: text | set-parameter | add-validator | remove-validator | admit-member | override | emergency, ...}`): a proposal signed by the node |
//! | POST | `/proposals/{id}/votes` | JSON `{choice: yes | no | abstain}`: the node's vote |
//! | POST | `/reports` | JSON `{asset?, cell, severity: info | warning | fault, text, reading?}`: a citizen's status report, signed by the node, with a signed reading of its own (envelope hex) as evidence if given |
//! | POST | `/reports/{id}/propose` | JSON `{action?, voting_period_blocks?}`: turns a report into a proposal (a text proposal unless an action is given) |
//! | GET | `/jobs` | jobs on the ledger, newest first (`?status=&kind=&cell=`), with their escrow |
//! | GET | `/jobs/{id}` | a job with its bids and what each costs under its rule, the rule's pick, its award, escrow, jury and votes |
//! | GET | `/jobs/match` | open jobs a worker could take (`?kinds=&skills=&cell=&radius_m=`), best paid first, from the node's bounded index |
//! | GET | `/jobs/providers` | peers announcing open jobs of `?kind=` near `?cell=` in the DHT |
//! | POST | `/jobs` | JSON job (kind, title, reward, rule, evidence...): posted by the node |
//! | POST | `/jobs/{id}/bids` | the node bids on a job |
//! | POST | `/jobs/{id}/award` | the node (the poster) awards the job to the rule's pick |
//! | POST | `/jobs/{id}/deliver` | the node (the worker) delivers: a claim, a meter, a compute result or a reading |
//! | POST | `/jobs/{id}/verdict` | the node (the poster, or a juror) accepts the delivery or votes on a dispute |
//! | POST | `/jobs/{id}/dispute` | the node disputes a delivery |
//! | GET | `/pools` | the pools the node's market holds, with their open offers by price level |
//! | GET | `/pools/book?pool=<resource/token/cell/interval_s>` | one pool's open offers by price level |
//! | GET | `/pools/index?pool=...&from=<s>&to=<s>` | the pool's price indices (volume-weighted average prices) per period, from the ledger, with the dynamic base price each period's trades met |
//! | GET | `/pools/providers?pool=...` | the peers that announce the pool in the DHT (a Kademlia query) |
//! | GET | `/blocks?limit=` | the newest committed blocks |
//! | GET | `/trades?pool=&limit=` | the newest settled trades |
//! | GET | `/readings?author=&limit=` | the newest anchored meter readings |
//! | GET | `/accounts?after=&limit=` | accounts: balances, change since genesis, reputation (paged by key) |
//! | GET | `/validators` | the validator set |
//! | GET | `/peers` | connected peers and their gossip scores |
//! | GET | `/events` | server-sent events: `block`, `trade`, `reading` as they commit |
//! | GET | `/metrics` | Prometheus metrics (OpenMetrics text) |
//! | GET | `/openapi.json` | this API as an OpenAPI 3.1 document |
//! | GET | `/` | the live dashboard |

use ::ledger::reads::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use protocol::message::{Offer, PoolId, Side};
use protocol::{Body, Id, PublicKey};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::info;

use crate::ledger;

pub mod error;
pub mod governance;
pub mod jobs;
pub mod live;
pub mod server;
use crate::clock::now_ms;
use crate::network::{self, Stats};
pub use error::ApiError;

/// Largest request body (one envelope).
const BODY_BYTES_MAX: usize = protocol::limits::ENVELOPE_BYTES_MAX;

/// What the handlers reach.
#[derive(Clone)]
pub struct Context {
    pub network: network::Handle,
    pub ledger: Option<ledger::Handle>,
    pub market: Option<crate::market::Handle>,
    pub meter: Option<crate::meter::Handle>,
    pub island: Option<crate::island::Handle>,
    /// The node's one signer (its key, and one sequence of nonces for the whole node): it signs what the API
    /// posts.
    pub signer: Arc<crate::signer::Signer>,
    pub token: Arc<str>,
    /// Recent blocks, trades and readings, and their stream.
    pub feed: crate::feed::Feed,
    pub metrics: crate::metrics::Metrics,
    /// Event streams open now (bounded by [`live::EVENT_STREAMS_MAX`]).
    pub event_streams: live::Streams,
    /// The pools this node serves: its config's, and those it first trades in through the API. The node announces
    /// them in the DHT (again every few minutes).
    pub served_pools: crate::app::place::ServedPools,
    /// Places the node's own offers (the one way, shared with the home's trader); none without a market.
    pub placer: Option<crate::app::place::Placer>,
    /// Open jobs heard on the jobs topic or committed.
    pub jobs: crate::jobs::Index,
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

/// Binds the API's address (failing early if it is taken) and serves it until the node stops, with at most
/// `connections_max` connections ([`server::connections_max`]).
pub async fn serve(
    address: SocketAddr,
    context: Context,
    connections_max: usize,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("binding the API on {address}: is another node running? set api.listen or --api to another port")
    })?;
    info!(address = %listener.local_addr().unwrap_or(address), connections_max, "API listening");
    if !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "the API listens beyond this machine without TLS: its bearer token (for every write) and everything it \
             answers travel in clear text; bind it to 127.0.0.1, or put it behind a TLS proxy or a VPN"
        );
    }
    let app = router(context);
    Ok(tokio::spawn(server::serve(listener, app, connections_max)))
}

/// One route of the API. [`ROUTES`] is the one list of them: the router is built from it, and tests check that
/// the module's table above and `/openapi.json` list exactly these routes, and that each answers only the statuses
/// given here (`route_statuses_are_the_documented_ones` in `tests/it/operate.rs`).
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: fn() -> axum::routing::MethodRouter<Context>,
    /// Every status the route answers (the OpenAPI document's responses).
    pub statuses: &'static [u16],
}

/// Every route the API answers.
pub const ROUTES: &[Route] = &[
    Route { method: Method::GET, path: "/", handler: || get(live::dashboard), statuses: &[200] },
    Route { method: Method::GET, path: "/openapi.json", handler: || get(live::openapi), statuses: &[200] },
    Route { method: Method::GET, path: "/metrics", handler: || get(live::metrics), statuses: &[200] },
    Route { method: Method::GET, path: "/events", handler: || get(live::events), statuses: &[200, 503] },
    Route { method: Method::GET, path: "/blocks", handler: || get(live::blocks), statuses: &[200, 400, 503] },
    Route { method: Method::GET, path: "/trades", handler: || get(live::trades), statuses: &[200, 400, 503] },
    Route { method: Method::GET, path: "/readings", handler: || get(live::readings), statuses: &[200, 400, 503] },
    Route { method: Method::GET, path: "/accounts", handler: || get(live::accounts), statuses: &[200, 400, 503] },
    Route { method: Method::GET, path: "/validators", handler: || get(live::validators), statuses: &[200, 503] },
    Route { method: Method::GET, path: "/peers", handler: || get(live::peers), statuses: &[200, 503] },
    Route { method: Method::GET, path: "/status", handler: || get(status), statuses: &[200, 503] },
    Route { method: Method::GET, path: "/blocks/{height}", handler: || get(block), statuses: &[200, 400, 404, 503] },
    Route {
        method: Method::GET,
        path: "/blocks/{height}/raw",
        handler: || get(block_raw),
        statuses: &[200, 400, 404, 503],
    },
    Route {
        method: Method::POST,
        path: "/entries",
        handler: || axum::routing::post(submit),
        statuses: &[202, 400, 401, 409, 413, 429, 503],
    },
    Route { method: Method::GET, path: "/entries/{id}", handler: || get(entry), statuses: &[200, 400, 404, 503] },
    Route {
        method: Method::GET,
        path: "/accounts/{key}/balances",
        handler: || get(balances),
        statuses: &[200, 400, 503],
    },
    Route { method: Method::GET, path: "/accounts/{key}/fuel", handler: || get(fuel), statuses: &[200, 400, 404, 503] },
    Route {
        method: Method::POST,
        path: "/offers",
        handler: || axum::routing::post(post_offer),
        statuses: &[202, 400, 401, 403, 409, 413, 429, 503],
    },
    Route {
        method: Method::POST,
        path: "/offers/{id}/cancel",
        handler: || axum::routing::post(cancel_offer),
        statuses: &[202, 400, 401, 409, 429, 503],
    },
    Route {
        method: Method::POST,
        path: "/barter",
        handler: || axum::routing::post(post_barter),
        statuses: &[202, 400, 401, 403, 409, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/transfers",
        handler: || axum::routing::post(post_transfer),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/assets",
        handler: || axum::routing::post(post_asset),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route { method: Method::GET, path: "/assets/{id}", handler: || get(asset), statuses: &[200, 400, 404, 503] },
    Route {
        method: Method::POST,
        path: "/guilds",
        handler: || axum::routing::post(post_guild),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route { method: Method::GET, path: "/guilds/{account}", handler: || get(guild), statuses: &[200, 400, 404, 503] },
    Route {
        method: Method::POST,
        path: "/guilds/{account}/spends",
        handler: || axum::routing::post(post_guild_spend),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::GET,
        path: "/guild-spends/{id}",
        handler: || get(guild_spend),
        statuses: &[200, 400, 404, 503],
    },
    Route {
        method: Method::POST,
        path: "/guild-spends/{id}/approve",
        handler: || axum::routing::post(approve_guild_spend),
        statuses: &[202, 400, 401, 503],
    },
    Route { method: Method::GET, path: "/governance", handler: || get(governance::overview), statuses: &[200, 503] },
    Route {
        method: Method::POST,
        path: "/proposals",
        handler: || axum::routing::post(governance::propose),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/proposals/{id}/votes",
        handler: || axum::routing::post(governance::vote),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/reports",
        handler: || axum::routing::post(governance::report),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/reports/{id}/propose",
        handler: || axum::routing::post(governance::propose_report),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route { method: Method::GET, path: "/jobs", handler: || get(jobs::list), statuses: &[200, 400, 503] },
    Route {
        method: Method::POST,
        path: "/jobs",
        handler: || axum::routing::post(jobs::post),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route { method: Method::GET, path: "/jobs/match", handler: || get(jobs::matching), statuses: &[200, 400] },
    Route {
        method: Method::GET,
        path: "/jobs/providers",
        handler: || get(jobs::providers),
        statuses: &[200, 400, 503],
    },
    Route { method: Method::GET, path: "/jobs/{id}", handler: || get(jobs::show), statuses: &[200, 400, 404, 503] },
    Route {
        method: Method::POST,
        path: "/jobs/{id}/bids",
        handler: || axum::routing::post(jobs::bid),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/jobs/{id}/award",
        handler: || axum::routing::post(jobs::award),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/jobs/{id}/deliver",
        handler: || axum::routing::post(jobs::deliver),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/jobs/{id}/verdict",
        handler: || axum::routing::post(jobs::verdict),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route {
        method: Method::POST,
        path: "/jobs/{id}/dispute",
        handler: || axum::routing::post(jobs::dispute),
        statuses: &[202, 400, 401, 413, 503],
    },
    Route { method: Method::GET, path: "/meter", handler: || get(meter), statuses: &[200, 503] },
    Route { method: Method::GET, path: "/island", handler: || get(island), statuses: &[200, 404, 503] },
    Route {
        method: Method::POST,
        path: "/island",
        handler: || axum::routing::post(island_grid),
        statuses: &[202, 400, 401, 404, 413, 503],
    },
    Route { method: Method::GET, path: "/pools", handler: || get(pools), statuses: &[200, 503] },
    Route { method: Method::GET, path: "/pools/book", handler: || get(book), statuses: &[200, 400, 503] },
    Route { method: Method::GET, path: "/pools/index", handler: || get(price_index), statuses: &[200, 400, 503] },
    Route { method: Method::GET, path: "/pools/providers", handler: || get(providers), statuses: &[200, 400, 503] },
];

pub fn router(context: Context) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| router.route(route.path, (route.handler)()))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(axum::middleware::from_fn_with_state(context.clone(), writes_need_the_token))
        .with_state(context)
}

/// Most of an error text the framework wrote that is carried into the API's error shape.
const FRAMEWORK_ERROR_BYTES_MAX: usize = 4 * 1024;

/// The errors the framework answers on its own (a malformed query string or path parameter, a body over the
/// limit, a wrong content type) in the API's one error shape, `{"error": "…"}`, like every other error.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, FRAMEWORK_ERROR_BYTES_MAX).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut answer = error(status, text);
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}

/// Every write needs the token, checked before anything of its body is read: a client without it cannot keep a
/// connection busy by sending a body slowly.
async fn writes_need_the_token(
    State(context): State<Context>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method();
    if method != axum::http::Method::GET
        && method != axum::http::Method::HEAD
        && !authorized(&context, request.headers())
    {
        return unauthorized();
    }
    next.run(request).await
}

/// An error answer: [`ApiError`] rendered.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}

pub(crate) fn no_ledger() -> Response {
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
            "equivocations": status.equivocations,
        })
    });
    let served_pools: Vec<String> =
        context.served_pools.lock().map(|pools| pools.iter().map(ToString::to_string).collect()).unwrap_or_default();
    Json(json!({
        "network": context.network.network().as_str(),
        "peer_id": context.network.peer_id().to_string(),
        "account": context.signer.public().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "peers": info.as_ref().map_or(0, |info| info.peers.len()),
        "topics": info.as_ref().map_or(0, |info| info.topics),
        "served_pools": served_pools,
        "listen": info.map(|info| info.listen.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
        "ledger": ledger,
        "gossip": {
            "accepted": Stats::get(&context.network.stats().accepted),
            "rejected": Stats::get(&context.network.stats().rejected),
            "throttled": Stats::get(&context.network.stats().throttled),
            "fuel_throttled": Stats::get(&context.network.stats().fuel_throttled),
        },
    }))
    .into_response()
}

/// An author's fuel as this node counts it: levels per class (compute, bandwidth, memory), standing, refusals.
async fn fuel(State(context): State<Context>, UrlPath(key): UrlPath<String>) -> Response {
    let Ok(author) = PublicKey::from_hex(&key) else {
        return error(StatusCode::BAD_REQUEST, "an account is a public key of 64 hex digits");
    };
    match context.network.fuel(author).await {
        Ok(Some(status)) => Json(json!({
            "account": key,
            "standing": status.standing,
            "compute": status.levels[0],
            "bandwidth": status.levels[1],
            "memory": status.levels[2],
            "throttled": status.throttled,
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "this node has seen nothing from that account lately"),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
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

/// A request that carries the API token (`Authorization: Bearer <data-dir/api.token>`): every write handler takes
/// one, so a handler that changes anything cannot be written without the check. (The router's middleware checks
/// the token too, before a body is read: see [`writes_need_the_token`].)
pub struct Authorized;

impl axum::extract::FromRequestParts<Context> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        context: &Context,
    ) -> Result<Authorized, Response> {
        if authorized(context, &parts.headers) { Ok(Authorized) } else { Err(unauthorized()) }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn submit(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    submit_bytes(&context, body.to_vec()).await
}

/// Submits an entry's bytes to the ledger: 202 with its id, or why not.
async fn submit_bytes(context: &Context, bytes: Vec<u8>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    // The id of an entry already waiting or committed, so that its sender can follow it (a decodable entry: the
    // mempool decoded it to find it a duplicate).
    let id = protocol::Envelope::from_bytes(&bytes).map(|envelope| envelope.id()).ok();
    match ledger.submit(bytes).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id.to_hex() }))).into_response(),
        Err(refused @ ledger::Error::Refused(ledger::Rejected::Duplicate | ledger::Rejected::Included)) => match id {
            Some(id) => ApiError::from(&refused).about(id).into_response(),
            None => ledger_error(&refused),
        },
        Err(refused) => ledger_error(&refused),
    }
}

/// The answer to a request the ledger did not serve: an entry it did not take, with a status that says whose move
/// it is (the entry's own fault 400; a conflict with what is waiting or committed, or with the author's balance
/// 409; too many of this author's entries waiting 429; the node's capacity 503), or a read of its state that failed
/// (503: the ledger stopped, or its store could not be read; never answered as if nothing were there).
pub(crate) fn ledger_error(refused: &ledger::Error) -> Response {
    ApiError::from(refused).into_response()
}

/// A JSON request body, or a 400 that says what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|problem| Box::new(error(StatusCode::BAD_REQUEST, format!("not {what}: {problem}"))))
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "write endpoints need `Authorization: Bearer <data-dir/api.token>`")
}

async fn balances(State(context): State<Context>, UrlPath(key): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(account) = PublicKey::from_hex(&key) else {
        return error(StatusCode::BAD_REQUEST, "an account is its public key, 64 hex digits");
    };
    match ledger.query(move |state| (state.height(), state.account_balances(&account))).await {
        Ok((height, balances)) => {
            let balances: serde_json::Map<String, serde_json::Value> =
                balances.into_iter().map(|(token, amount)| (token.as_str().to_string(), json!(amount))).collect();
            Json(json!({ "account": key, "height": height, "balances": balances })).into_response()
        }
        Err(failed) => ledger_error(&failed),
    }
}

fn no_market() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "this node runs no market (it needs a ledger: a genesis file)")
}

/// An offer to make, as posted to `/offers`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferRequest {
    /// `resource/token/cell/interval_s`.
    pool: String,
    /// `bid` or `ask`.
    side: String,
    /// In the resource's unit (Wh for energy).
    quantity: u64,
    /// Per kWh (energy) or per unit, in the pool's token, as a decimal string with up to 3 decimals.
    price: String,
    /// Start of the delivery interval (Unix seconds); default: the pool's next interval whose auction is open.
    delivery_start: Option<u64>,
    /// Lifetime in seconds; default 900, or until the delivery starts when that is later (at most 7 days).
    expires_in_s: Option<u64>,
}

/// Signs a body with the node's signer, now, for `lifetime_ms` (500 when it cannot: its nonce reservation could not
/// be written).
pub(crate) fn sign_now(context: &Context, body: Body, lifetime_ms: u64) -> Result<protocol::Envelope, Box<Response>> {
    let created_ms = now_ms();
    context.signer.sign(body, created_ms, created_ms.saturating_add(lifetime_ms)).map_err(|problem| {
        Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, format!("signing with the node's key: {problem:#}")))
    })
}

async fn post_offer(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let Some(placer) = context.placer.as_ref() else { return no_market() };
    let request: OfferRequest = match parse(&body, "an offer request") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let pool: PoolId = match request.pool.parse() {
        Ok(pool) => pool,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("pool: {problem}")),
    };
    let side = match request.side.as_str() {
        "bid" => Side::Bid,
        "ask" => Side::Ask,
        other => return error(StatusCode::BAD_REQUEST, format!("side: {other:?} is not bid or ask")),
    };
    let unit_price = match protocol::amount::parse_milli(&request.price) {
        Ok(price) => price,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("price: {problem}")),
    };
    let created_ms = now_ms();
    let delivery_start_s =
        request.delivery_start.unwrap_or_else(|| placer.market.first_open_delivery_s(&pool, created_ms));
    // By default an offer lives 15 minutes, and in an interval pool at least until its delivery starts (it may not
    // expire before that: PROTOCOL.md §5).
    let lifetime_ms = match request.expires_in_s {
        Some(seconds) => seconds.saturating_mul(1000),
        None => protocol::validate::default_offer_lifetime_ms(delivery_start_s, created_ms),
    };
    let offer = Offer { pool: pool.clone(), side, quantity: request.quantity, unit_price, delivery_start_s };
    match placer.offer(offer, created_ms, created_ms.saturating_add(lifetime_ms)).await {
        Ok(placed) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "id": placed.id.to_hex(),
                "pool": pool.to_string(),
                "delivery_start": delivery_start_s,
                "expires_ms": placed.envelope.expires_ms,
                "published": placed.published,
            })),
        )
            .into_response(),
        Err(problem) => place_error(&problem),
    }
}

/// The answer to an offer that was not placed (see [`ApiError`]'s conversions).
fn place_error(problem: &crate::app::place::PlaceError) -> Response {
    ApiError::from(problem).into_response()
}

fn depth_json(depth: &::market::pools::Depth) -> serde_json::Value {
    let levels = |levels: &[(u64, u64)]| -> Vec<serde_json::Value> {
        levels.iter().map(|(price, quantity)| json!({ "price": price, "quantity": quantity })).collect()
    };
    json!({
        "delivery_start": depth.delivery_start_s,
        "offers": depth.offers,
        "bids": levels(&depth.bids),
        "asks": levels(&depth.asks),
    })
}

/// The home meter's latest registers, its latest signed reading and its counters.
async fn meter(State(context): State<Context>) -> Response {
    match context.meter.as_ref() {
        Some(meter) => Json(meter.status()).into_response(),
        None => error(StatusCode::NOT_FOUND, "this node reads no meter (set [meter] kind in its config)"),
    }
}

/// The microgrid controller: mode (grid or island) and the last interval's allocation.
async fn island(State(context): State<Context>) -> Response {
    match context.island.as_ref() {
        Some(island) => Json(island.status()).into_response(),
        None => error(StatusCode::NOT_FOUND, "this node controls no microgrid (set [island] enabled in its config)"),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GridSignal {
    grid_present: bool,
}

/// Tells the microgrid controller whether the grid is present: `{"grid_present": false}` islands at once; the
/// grid must be present for `return_intervals` intervals before grid mode returns.
async fn island_grid(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let Some(island) = context.island.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this node controls no microgrid");
    };
    let Ok(signal) = serde_json::from_slice::<GridSignal>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"grid_present\": true|false}");
    };
    if island.grid(signal.grid_present).await {
        (StatusCode::ACCEPTED, Json(island.status())).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "the microgrid controller stopped")
    }
}

async fn pools(State(context): State<Context>) -> Response {
    let Some(market) = context.market.as_ref() else { return no_market() };
    let mut list = Vec::new();
    for pool in market.pools().await {
        let depth = market.depth(pool.clone(), 5).await;
        list.push(json!({
            "pool": pool.to_string(),
            "digest": pool.digest().to_hex(),
            "book": depth.as_ref().map(depth_json),
        }));
    }
    let stats = market.stats();
    Json(json!({
        "pools": list,
        "offers": stats.offers,
        "refused": stats.refused,
        "matches": stats.matches,
        "matched_quantity": stats.matched_quantity,
        "settlements_submitted": stats.settlements_submitted,
        "settlements_refused": stats.settlements_refused,
        "barter_offers": stats.barter_offers,
        "frozen": stats.frozen,
        "barter_cycles_found": stats.barter_cycles_found,
        "barter_cycles_submitted": stats.barter_cycles_submitted,
    }))
    .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct PoolQuery {
    pool: String,
    from: Option<u64>,
    to: Option<u64>,
    levels: Option<usize>,
}

async fn book(
    State(context): State<Context>,
    axum::extract::Query(query): axum::extract::Query<PoolQuery>,
) -> Response {
    let Some(market) = context.market.as_ref() else { return no_market() };
    let pool: PoolId = match query.pool.parse() {
        Ok(pool) => pool,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("pool: {problem}")),
    };
    match market.depth(pool.clone(), query.levels.unwrap_or(20).min(1000)).await {
        Some(depth) => Json(json!({ "pool": pool.to_string(), "book": depth_json(&depth) })).into_response(),
        None => error(StatusCode::NOT_FOUND, "this node's market has no open offers in that pool"),
    }
}

async fn price_index(
    State(context): State<Context>,
    axum::extract::Query(query): axum::extract::Query<PoolQuery>,
) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let pool: PoolId = match query.pool.parse() {
        Ok(pool) => pool,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("pool: {problem}")),
    };
    let to = query.to.unwrap_or(u64::MAX);
    let from = query.from.unwrap_or(0);
    let key = pool.clone();
    let read = ledger
        .query(move |state| {
            let height = state.height();
            let bases: std::collections::BTreeMap<u64, u64> = state.base_prices(&key, from, to).into_iter().collect();
            (height, state.price_indices(&key, from, to), bases)
        })
        .await;
    let (height, indices, bases) = match read {
        Ok(read) => read,
        Err(failed) => return ledger_error(&failed),
    };
    let periods: Vec<serde_json::Value> = indices
        .iter()
        .rev()
        .take(1000)
        .rev()
        .map(|(period, index)| {
            json!({
                "period": period,
                "volume": index.volume,
                "value": index.value,
                "trades": index.trades,
                "vwap": index.vwap(),
                "base_price": bases.get(period),
            })
        })
        .collect();
    Json(json!({ "pool": pool.to_string(), "height": height, "periods": periods })).into_response()
}

/// A barter offer to make, as posted to `/barter`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BarterRequest {
    /// The resource given: energy, compute, memory or bandwidth.
    give: String,
    give_quantity: u64,
    want: String,
    want_quantity: u64,
    /// Geohash cell where the exchange happens; default the whole world.
    cell: Option<String>,
    /// Lifetime in seconds; default 3600.
    expires_in_s: Option<u64>,
}

async fn post_barter(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let Some(placer) = context.placer.as_ref() else { return no_market() };
    let request: BarterRequest = match parse(&body, "a barter request") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let parsed = (|| -> Result<protocol::message::BarterOffer, protocol::types::Invalid> {
        Ok(protocol::message::BarterOffer {
            give: request.give.parse()?,
            give_quantity: request.give_quantity,
            want: request.want.parse()?,
            want_quantity: request.want_quantity,
            cell: protocol::types::Cell::new(request.cell.clone().unwrap_or_default())?,
        })
    })();
    let offer = match parsed {
        Ok(offer) => offer,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem.to_string()),
    };
    let lifetime_ms = request.expires_in_s.unwrap_or(3600).saturating_mul(1000);
    let created_ms = now_ms();
    match placer.barter(offer, created_ms, created_ms.saturating_add(lifetime_ms)).await {
        Ok(placed) => (StatusCode::ACCEPTED, Json(json!({ "id": placed.id.to_hex(), "published": placed.published })))
            .into_response(),
        Err(problem) => place_error(&problem),
    }
}

#[derive(Debug, serde::Deserialize)]
struct CancelQuery {
    pool: String,
}

async fn cancel_offer(
    State(context): State<Context>,
    _: Authorized,
    UrlPath(id): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<CancelQuery>,
) -> Response {
    let (Some(market), Some(ledger)) = (context.market.as_ref(), context.ledger.as_ref()) else { return no_market() };
    let Ok(offer) = Id::from_hex(&id) else { return error(StatusCode::BAD_REQUEST, "an offer id is 64 hex digits") };
    let pool: PoolId = match query.pool.parse() {
        Ok(pool) => pool,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("pool: {problem}")),
    };
    let envelope = match sign_now(&context, Body::Cancel(protocol::message::Cancel { offer }), 3_600_000) {
        Ok(envelope) => envelope,
        Err(response) => return *response,
    };
    let created_ms = envelope.created_ms;
    // Peers' books drop the offer; the ledger refuses later settlements of it.
    let published = context.network.publish(&envelope, Some(network::Topic::pool(&pool)), created_ms).await.is_ok();
    market.cancel(offer, context.signer.public());
    match ledger.submit(envelope.to_bytes()).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id.to_hex(), "published": published }))).into_response(),
        Err(refused) => ledger_error(&refused),
    }
}

/// A transfer from the node's account, as posted to `/transfers`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    /// The receiving account (public key, hex).
    to: String,
    token: String,
    /// In tokens, as a decimal string with up to 3 decimals.
    amount: String,
    memo: Option<String>,
}

type Payment = (PublicKey, protocol::types::TokenId, u64, protocol::types::Text<{ protocol::limits::MEMO_BYTES_MAX }>);

impl TransferRequest {
    /// Receiver, token, amount (milli-units) and memo, checked.
    fn payment(&self) -> Result<Payment, String> {
        Ok((
            PublicKey::from_hex(&self.to).map_err(|_| "to: an account is 64 hex digits".to_string())?,
            protocol::types::TokenId::new(self.token.clone()).map_err(|problem| format!("token: {problem}"))?,
            protocol::amount::parse_milli(&self.amount).map_err(|problem| format!("amount: {problem}"))?,
            protocol::types::Text::new(self.memo.clone().unwrap_or_default())
                .map_err(|problem| format!("memo: {problem}"))?,
        ))
    }
}

async fn post_transfer(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let request: TransferRequest = match parse(&body, "a transfer request") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let parsed =
        request.payment().map(|(to, token, amount, memo)| protocol::message::Transfer { to, token, amount, memo });
    let transfer = match parsed {
        Ok(transfer) => transfer,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    // The ledger would refuse it at execution; say so now, with the balance.
    let (me, token, amount) = (context.signer.public(), transfer.token.clone(), transfer.amount);
    match ledger.query(move |state| state.balance(&me, &token)).await {
        Ok(balance) if balance < amount => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "insufficient balance: the node's account holds {} {}",
                    protocol::amount::format_milli(balance),
                    transfer.token.as_str()
                ),
            );
        }
        Ok(_) => {}
        Err(failed) => return ledger_error(&failed),
    }
    sign_and_submit(&context, Body::Transfer(transfer)).await
}

/// Signs `body` with the node's key and submits it to the ledger: 202 with the entry's id, or why not.
pub(crate) async fn sign_and_submit(context: &Context, body: Body) -> Response {
    match sign_now(context, body, 600_000) {
        Ok(envelope) => submit_bytes(context, envelope.to_bytes()).await,
        Err(response) => *response,
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GuildRequest {
    name: String,
    /// Members' accounts (hex); any order, the node sorts them.
    members: Vec<String>,
    threshold: u32,
}

async fn post_guild(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let request: GuildRequest = match parse(&body, "a guild request") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let mut members = Vec::with_capacity(request.members.len());
    for member in &request.members {
        match PublicKey::from_hex(member) {
            Ok(key) => members.push(key),
            Err(_) => return error(StatusCode::BAD_REQUEST, format!("member {member:?} is not 64 hex digits")),
        }
    }
    members.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    members.dedup();
    let guild = (|| -> Result<protocol::message::Guild, protocol::types::Invalid> {
        Ok(protocol::message::Guild {
            name: protocol::types::Text::new(request.name.clone())?,
            members: protocol::types::BoundedVec::new(members)?,
            threshold: request.threshold,
        })
    })();
    let guild = match guild {
        Ok(guild) => guild,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem.to_string()),
    };
    let envelope = match sign_now(&context, Body::Guild(guild.clone()), 600_000) {
        Ok(envelope) => envelope,
        Err(response) => return *response,
    };
    let account = protocol::message::guild_account(&envelope.id());
    let response = submit_bytes(&context, envelope.to_bytes()).await;
    if response.status() == StatusCode::ACCEPTED {
        return (StatusCode::ACCEPTED, Json(json!({ "account": account.to_string() }))).into_response();
    }
    response
}

async fn guild(State(context): State<Context>, UrlPath(account): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(account) = PublicKey::from_hex(&account) else {
        return error(StatusCode::BAD_REQUEST, "a guild's account is 64 hex digits");
    };
    let read =
        ledger.query(move |state| (state.height(), state.guild(&account), state.account_balances(&account))).await;
    match read {
        Ok((height, Some(guild), balances)) => {
            let balances: serde_json::Map<String, serde_json::Value> =
                balances.into_iter().map(|(token, amount)| (token.as_str().to_string(), json!(amount))).collect();
            Json(json!({
                "account": account.to_string(),
                "height": height,
                "name": guild.name,
                "members": guild.members.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "threshold": guild.threshold,
                "created_by": guild.created_by.to_hex(),
                "balances": balances,
            }))
            .into_response()
        }
        Ok((_, None, _)) => error(StatusCode::NOT_FOUND, "no guild has that account (yet)"),
        Err(failed) => ledger_error(&failed),
    }
}

async fn post_guild_spend(
    State(context): State<Context>,
    _: Authorized,
    UrlPath(account): UrlPath<String>,
    body: Bytes,
) -> Response {
    let Ok(guild) = PublicKey::from_hex(&account) else {
        return error(StatusCode::BAD_REQUEST, "a guild's account is 64 hex digits");
    };
    let request: TransferRequest = match parse(&body, "a spend request") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let spend = request.payment().map(|(to, token, amount, memo)| protocol::message::GuildSpend {
        guild,
        to,
        token,
        amount,
        memo,
    });
    match spend {
        Ok(spend) => sign_and_submit(&context, Body::GuildSpend(spend)).await,
        Err(problem) => error(StatusCode::BAD_REQUEST, problem),
    }
}

async fn guild_spend(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(id) = Id::from_hex(&id) else { return error(StatusCode::BAD_REQUEST, "a spend id is 64 hex digits") };
    match ledger.query(move |state| (state.height(), state.guild_spend(&id))).await {
        Ok((height, Some(spend))) => Json(json!({
            "id": id.to_hex(),
            "height": height,
            "guild": spend.guild.to_string(),
            "to": spend.to.to_string(),
            "token": spend.token.as_str(),
            "amount": spend.amount,
            "approvals": spend.approvals,
            "status": spend.status.name(),
        }))
        .into_response(),
        Ok((_, None)) => error(StatusCode::NOT_FOUND, "no such spend on the ledger (yet)"),
        Err(failed) => ledger_error(&failed),
    }
}

async fn approve_guild_spend(State(context): State<Context>, _: Authorized, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(spend) = Id::from_hex(&id) else { return error(StatusCode::BAD_REQUEST, "a spend id is 64 hex digits") };
    sign_and_submit(&context, Body::GuildApproval(protocol::message::GuildApproval { spend })).await
}

/// The peers that serve a pool, found in the DHT.
async fn providers(
    State(context): State<Context>,
    axum::extract::Query(query): axum::extract::Query<PoolQuery>,
) -> Response {
    let pool: PoolId = match query.pool.parse() {
        Ok(pool) => pool,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("pool: {problem}")),
    };
    match context.network.find_providers(pool.digest()).await {
        Ok(peers) => Json(json!({
            "pool": pool.to_string(),
            "digest": pool.digest().to_hex(),
            "providers": peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
}

/// An asset's rated limits as posted, W and Wh; absent: 0 (none).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LimitsRequest {
    generation_w_max: u64,
    import_w_max: u64,
    export_w_max: u64,
    consumption_w_max: u64,
    storage_w_max: u64,
    storage_wh: u64,
}

/// An asset's manifest as posted to `/assets`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetRequest {
    /// meter, inverter, battery, community-storage, pod, other.
    kind: String,
    purpose: String,
    /// The owning account or guild; default the node's account.
    owner: Option<String>,
    /// The node's meters whose readings are this asset's.
    #[serde(default)]
    meters: Vec<String>,
    limits: LimitsRequest,
    /// Geohash cell; default the whole world.
    cell: Option<String>,
    /// Default now.
    commissioned_s: Option<u64>,
    #[serde(default)]
    maintenance_interval_s: u64,
}

fn asset_kind(name: &str) -> Option<protocol::message::AssetKind> {
    use protocol::message::AssetKind;
    Some(match name {
        "meter" => AssetKind::Meter,
        "inverter" => AssetKind::Inverter,
        "battery" => AssetKind::Battery,
        "community-storage" => AssetKind::CommunityStorage,
        "pod" => AssetKind::Pod,
        "other" => AssetKind::Other,
        _ => return None,
    })
}

fn asset_kind_name(kind: protocol::message::AssetKind) -> &'static str {
    use protocol::message::AssetKind;
    match kind {
        AssetKind::Meter => "meter",
        AssetKind::Inverter => "inverter",
        AssetKind::Battery => "battery",
        AssetKind::CommunityStorage => "community-storage",
        AssetKind::Pod => "pod",
        AssetKind::Other => "other",
    }
}

async fn post_asset(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let request: AssetRequest = match parse(&body, "an asset manifest") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let parsed = (|| -> Result<protocol::message::Asset, String> {
        let limits = &request.limits;
        let meters = request
            .meters
            .iter()
            .map(|meter| protocol::types::MeterId::new(meter.clone()).map_err(|problem| format!("meter: {problem}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(protocol::message::Asset {
            kind: asset_kind(&request.kind).ok_or_else(|| {
                format!("kind {:?}: meter, inverter, battery, community-storage, pod or other", request.kind)
            })?,
            purpose: protocol::types::Text::new(request.purpose.clone())
                .map_err(|problem| format!("purpose: {problem}"))?,
            owner: match &request.owner {
                Some(owner) => {
                    PublicKey::from_hex(owner).map_err(|_| "owner: an account is 64 hex digits".to_string())?
                }
                None => context.signer.public(),
            },
            meters: protocol::types::BoundedVec::new(meters).map_err(|problem| format!("meters: {problem}"))?,
            limits: protocol::message::Limits {
                generation_w_max: limits.generation_w_max,
                import_w_max: limits.import_w_max,
                export_w_max: limits.export_w_max,
                consumption_w_max: limits.consumption_w_max,
                storage_w_max: limits.storage_w_max,
                storage_wh: limits.storage_wh,
            },
            cell: protocol::types::Cell::new(request.cell.clone().unwrap_or_default())
                .map_err(|problem| format!("cell: {problem}"))?,
            commissioned_s: request.commissioned_s.unwrap_or(now_ms() / 1000),
            maintenance_interval_s: request.maintenance_interval_s,
        })
    })();
    match parsed {
        Ok(asset) => sign_and_submit(&context, Body::Asset(asset)).await,
        Err(problem) => error(StatusCode::BAD_REQUEST, problem),
    }
}

async fn asset(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(id) = Id::from_hex(&id) else { return error(StatusCode::BAD_REQUEST, "an asset id is 64 hex digits") };
    let read = ledger.query(move |state| {
        let height = state.height();
        let Some(asset) = state.asset(&id) else { return (height, None) };
        // Its history beyond readings: alerts, reports and maintenance logged, overrides on it.
        let reports: Vec<serde_json::Value> = state
            .reports()
            .filter(|(_, report)| report.report.asset.as_slice().first() == Some(&id))
            .map(|(report_id, report)| governance::report_json(&report_id, &report))
            .collect();
        let meters: Vec<String> =
            asset.manifest.meters.as_slice().iter().map(|meter| meter.as_str().to_owned()).collect();
        let interventions: Vec<serde_json::Value> = state
            .overrides()
            .filter(|(_, record)| match &record.measure {
                protocol::message::Measure::DeviceCap(cap) => {
                    cap.account == asset.author && meters.iter().any(|meter| meter == cap.meter.as_str())
                }
                protocol::message::Measure::Freeze(freeze) => freeze.account == asset.manifest.owner,
                protocol::message::Measure::Island(order) => order.cell == asset.manifest.cell,
                protocol::message::Measure::FuelCap(_) => false,
            })
            .map(|(override_id, record)| {
                let mut value = governance::measure_json(&record.measure);
                value["id"] = json!(override_id.to_hex());
                value["until_height"] = json!(record.until_height);
                value
            })
            .collect();
        let alerts = state.alerts_of(&id);
        (height, Some((asset, alerts, reports, interventions)))
    });
    match read.await {
        Ok((height, Some((asset, alerts, reports, interventions)))) => {
            let alerts: Vec<serde_json::Value> = alerts.iter().map(governance::alert_json).collect();
            let manifest = &asset.manifest;
            let limits = &manifest.limits;
            let author = asset.author.to_string();
            let meters: Vec<String> =
                manifest.meters.as_slice().iter().map(|meter| meter.as_str().to_string()).collect();
            let recent: Vec<_> = context
                .feed
                .readings(live::LIST_LEN_MAX, Some(&author))
                .into_iter()
                .filter(|reading| meters.contains(&reading.meter))
                .take(20)
                .collect();
            // The energy its author traded lately (what its meters' readings are checked against).
            let trades: Vec<_> = context
                .feed
                .trades(crate::feed::RECENT_TRADES_MAX, None)
                .into_iter()
                .filter(|trade| trade.resource == "energy" && (trade.buyer == author || trade.seller == author))
                .take(20)
                .collect();
            Json(json!({
                "id": id.to_hex(),
                "height": height,
                "author": author,
                "kind": asset_kind_name(manifest.kind),
                "purpose": manifest.purpose.as_str(),
                "owner": manifest.owner.to_string(),
                "meters": meters,
                "limits": {
                    "generation_w_max": limits.generation_w_max,
                    "import_w_max": limits.import_w_max,
                    "export_w_max": limits.export_w_max,
                    "consumption_w_max": limits.consumption_w_max,
                    "storage_w_max": limits.storage_w_max,
                    "storage_wh": limits.storage_wh,
                },
                "cell": manifest.cell.as_str(),
                "commissioned_s": manifest.commissioned_s,
                "maintenance_interval_s": manifest.maintenance_interval_s,
                "readings": asset.readings,
                "last_interval_start_s": asset.last_interval_start_s,
                "recent_readings": recent,
                "recent_trades": trades,
                "alerts": alerts,
                "reports": reports,
                "interventions": interventions,
            }))
            .into_response()
        }
        Ok((_, None)) => error(StatusCode::NOT_FOUND, "no asset with that id on the ledger (yet)"),
        Err(failed) => ledger_error(&failed),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{ROUTES, live};

    fn routes() -> BTreeSet<(String, String)> {
        ROUTES.iter().map(|route| (route.method.to_string(), route.path.to_string())).collect()
    }

    /// The module's table (the API's documentation) lists every route, one a row, and no other.
    #[test]
    fn the_documented_routes_are_the_routes() {
        let documented: BTreeSet<(String, String)> = include_str!("mod.rs")
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix("//! | ")?.split(" | ");
                let method = cells.next()?;
                let path = cells.next()?.trim_matches('`').split('?').next()?;
                matches!(method, "GET" | "POST").then(|| (method.to_string(), path.to_string()))
            })
            .collect();
        assert_eq!(documented, routes());
    }

    /// `/openapi.json` lists every route, and each with exactly the statuses it answers.
    #[test]
    fn the_openapi_document_lists_every_route_with_its_statuses() {
        let document: serde_json::Value = serde_json::from_str(live::OPENAPI).unwrap();
        let mut listed = BTreeSet::new();
        for (path, methods) in document["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                let method = method.to_uppercase();
                let statuses: BTreeSet<u16> =
                    operation["responses"].as_object().unwrap().keys().map(|code| code.parse().unwrap()).collect();
                let route = ROUTES.iter().find(|route| route.method.as_str() == method && route.path == path);
                let route = route.unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
                assert_eq!(statuses, route.statuses.iter().copied().collect(), "{method} {path}");
                listed.insert((method, path.clone()));
            }
        }
        assert_eq!(listed, routes());
    }
}
