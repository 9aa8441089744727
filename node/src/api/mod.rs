//! The node's HTTP API (axum), on loopback by default. Reads are open; writes need the bearer token kept in
//! `<data-dir>/api.token` (created at first start, mode 0600).
//!
//! The routes are [`ROUTES`] here and those of the submodules ([`routes`] lists them all): each says its method,
//! path, what it does, the statuses it answers and the types of its query, body and answer. The router is built
//! from them, and so are `GET /openapi.json` and `docs/API.md` ([`doc`]).

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
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::net::TcpListener;
use tracing::info;

use crate::ledger;

mod barter;
mod cells;
pub mod doc;
pub mod error;
pub mod governance;
pub mod jobs;
pub mod live;
pub mod server;
use crate::clock::now_ms;
use crate::network::{self, Stats};
pub use error::{Accepted, Answer, ApiError, Taken};

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

/// One route of the API: the one place that says what it does, the statuses it answers and the types it reads and
/// answers. The router is built from the routes ([`routes`]), and so are `/openapi.json` and `docs/API.md`; a test
/// of a running node checks that each answers only its statuses, and its answers fit its answer's schema
/// (`kos_devnet_trades_and_its_dashboard_api_and_metrics_show_it_live` in `tests/it/operate.rs`), and every answer
/// the integration tests get is held to the document (`tests/src/openapi.rs`).
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    handler: fn() -> axum::routing::MethodRouter<Context>,
    /// Every status the route answers (the OpenAPI document's responses).
    pub statuses: &'static [u16],
    /// What each of the path's parameters is, in order.
    pub about: &'static [doc::Param],
    /// The query string's type, if it reads one.
    pub query: Option<doc::SchemaFn>,
    pub body: doc::Payload,
    pub answer: doc::Reply,
}

impl Route {
    const fn new(
        method: Method,
        path: &'static str,
        summary: &'static str,
        handler: fn() -> axum::routing::MethodRouter<Context>,
        answer: doc::Reply,
    ) -> Route {
        Route {
            method,
            path,
            summary,
            handler,
            statuses: &[200],
            about: &[],
            query: None,
            body: doc::Payload::None,
            answer,
        }
    }

    /// A read.
    pub(crate) const fn get(
        path: &'static str,
        summary: &'static str,
        handler: fn() -> axum::routing::MethodRouter<Context>,
        answer: doc::Reply,
    ) -> Route {
        Route::new(Method::GET, path, summary, handler, answer)
    }

    /// A write: it needs the token, and answers 202 when it is taken.
    pub(crate) const fn post(
        path: &'static str,
        summary: &'static str,
        handler: fn() -> axum::routing::MethodRouter<Context>,
        answer: doc::Reply,
    ) -> Route {
        Route::new(Method::POST, path, summary, handler, answer).statuses(&[202])
    }

    pub(crate) const fn statuses(mut self, statuses: &'static [u16]) -> Route {
        self.statuses = statuses;
        self
    }

    pub(crate) const fn about(mut self, about: &'static [doc::Param]) -> Route {
        self.about = about;
        self
    }

    pub(crate) const fn query(mut self, query: doc::SchemaFn) -> Route {
        self.query = Some(query);
        self
    }

    pub(crate) const fn body(mut self, body: doc::Payload) -> Route {
        self.body = body;
        self
    }
}

/// Every route the API answers: [`ROUTES`], then the submodules'.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    [ROUTES, live::ROUTES, governance::ROUTES, jobs::ROUTES, barter::ROUTES, cells::ROUTES].into_iter().flatten()
}

const ACCOUNT: &str = "An account: its ed25519 public key, 64 hex digits";

/// What a write the node signs and submits to the ledger answers: taken (202), the request's fault (400), no token
/// (401), a conflict with what the ledger holds or waits for, or with the node's balance (409), a body over the limit
/// (413), too many of the node's entries waiting (429), the ledger busy, full, stopped or absent (503).
pub(crate) const SUBMITTED: &[u16] = &[202, 400, 401, 409, 413, 429, 503];
/// The same, for a write about something the ledger must hold first (404 while it does not).
pub(crate) const SUBMITTED_ABOUT: &[u16] = &[202, 400, 401, 404, 409, 413, 429, 503];

/// The routes of the ledger's blocks and entries, accounts, the market, assets, guilds and the home's devices.
pub const ROUTES: &[Route] = &[
    Route::get("/status", "Node and ledger status", || get(status), doc::json::<Status>()),
    Route::get(
        "/blocks/{height}",
        "A committed block: header fields and entry ids",
        || get(block),
        doc::json::<BlockView>(),
    )
    .statuses(&[200, 400, 404, 410, 503])
    .about(&[doc::height("Block height")]),
    Route::get(
        "/blocks/{height}/raw",
        "The block's bytes and its certificate's, hex",
        || get(block_raw),
        doc::json::<RawBlock>(),
    )
    .statuses(&[200, 400, 404, 410, 503])
    .about(&[doc::height("Block height")]),
    Route::post(
        "/entries",
        "A signed entry (the envelope's bytes, `application/octet-stream`): into the mempool and gossiped",
        || axum::routing::post(submit),
        doc::json::<Submitted>(),
    )
    .statuses(&[202, 400, 401, 409, 413, 429, 503])
    .body(doc::Payload::Envelope),
    Route::get(
        "/entries/{id}",
        "Where a committed entry is (404 while it is not committed, 410 when its block is pruned here)",
        || get(entry),
        doc::json::<EntryPlace>(),
    )
    .statuses(&[200, 400, 404, 410, 503])
    .about(&[doc::hex("Entry id, 64 hex digits")]),
    Route::get(
        "/accounts/{key}/balances",
        "An account's balances by token (milli-units)",
        || get(balances),
        doc::json::<Balances>(),
    )
    .statuses(&[200, 400, 503])
    .about(&[doc::hex(ACCOUNT)]),
    Route::get(
        "/accounts/{key}/fuel",
        "An author's fuel as this node counts it: levels per class, standing, refusals",
        || get(fuel),
        doc::json::<Fuel>(),
    )
    .statuses(&[200, 400, 404, 503])
    .about(&[doc::hex(ACCOUNT)]),
    Route::post(
        "/offers",
        "Sign an offer with the node's key, check it as receivers check it and put it in the node's market; only then \
         join and announce its pool and gossip it. The market takes it only if the ledger would settle it: its \
         author's tier, funds (with its other open offers) and anti-hoarding limits; a refusal names its `reason`",
        || axum::routing::post(post_offer),
        doc::json::<OfferPlaced>(),
    )
    .statuses(&[202, 400, 401, 402, 403, 409, 413, 429, 503])
    .body(doc::json_body::<OfferRequest>()),
    Route::post(
        "/offers/{id}/cancel",
        "Withdraw one of the node's offers: a signed cancel, gossiped on the pool's topic and put on the ledger (so no \
         later settlement can fill it)",
        || axum::routing::post(cancel_offer),
        doc::json::<Published>(),
    )
    .statuses(&[202, 400, 401, 409, 429, 503])
    .about(&[doc::hex("Offer id, 64 hex digits")])
    .query(doc::schema::<CancelQuery>),
    Route::post(
        "/barter",
        "A token-free barter offer, signed, gossiped and put on the node's barter board",
        || axum::routing::post(post_barter),
        doc::json::<Published>(),
    )
    .statuses(&[202, 400, 401, 403, 409, 413, 503])
    .body(doc::json_body::<BarterRequest>()),
    Route::post(
        "/transfers",
        "A transfer from the node's account, signed and submitted to the ledger",
        || axum::routing::post(post_transfer),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .body(doc::json_body::<TransferRequest>()),
    Route::post(
        "/assets",
        "Register an asset, signed by the node; the entry's id is the asset's id (for `GET /assets/{id}`)",
        || axum::routing::post(post_asset),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .body(doc::json_body::<AssetRequest>()),
    Route::post(
        "/readings/ocmf",
        "Relay a charger's or meter's signed OCMF record as its meter's reading, signed by the node (the meter's \
         asset names the device's P-256 key; the flows are the registers' growth when the meter's last reading is \
         of the interval before)",
        || axum::routing::post(post_ocmf_reading),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .body(doc::json_body::<OcmfRequest>()),
    Route::get(
        "/assets/{id}",
        "An asset's manifest and history: readings anchored for it and the latest of them, its author's recent energy \
         trades, alerts, reports and maintenance logged, overrides on it",
        || get(asset),
        doc::json::<AssetView>(),
    )
    .statuses(&[200, 400, 404, 503])
    .about(&[doc::hex("The asset's id, 64 hex digits")]),
    Route::post(
        "/guilds",
        "A guild (shared account, k-of-n spending) signed by the node",
        || axum::routing::post(post_guild),
        doc::json::<GuildMade>(),
    )
    .statuses(SUBMITTED)
    .body(doc::json_body::<GuildRequest>()),
    Route::get("/guilds/{account}", "A guild: members, threshold, balances", || get(guild), doc::json::<GuildView>())
        .statuses(&[200, 400, 404, 503])
        .about(&[doc::hex("A guild's account, 64 hex digits")]),
    Route::post(
        "/guilds/{account}/spends",
        "The node (a member) asks to spend from a guild; counts as its approval",
        || axum::routing::post(post_guild_spend),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex("A guild's account, 64 hex digits")])
    .body(doc::json_body::<TransferRequest>()),
    Route::get(
        "/guild-spends/{id}",
        "A guild's spend: approvals, status",
        || get(guild_spend),
        doc::json::<SpendView>(),
    )
    .statuses(&[200, 400, 404, 503])
    .about(&[doc::hex("A guild spend's id, 64 hex digits")]),
    Route::post(
        "/guild-spends/{id}/approve",
        "The node (a member) approves a pending spend; the approval that reaches the threshold moves the tokens",
        || axum::routing::post(approve_guild_spend),
        doc::json::<Submitted>(),
    )
    .statuses(&[202, 400, 401, 409, 429, 503])
    .about(&[doc::hex("A guild spend's id, 64 hex digits")]),
    Route::get(
        "/meter",
        "The home meter: latest registers, latest signed reading, counters",
        || get(meter),
        doc::json::<crate::meter::Status>(),
    )
    .statuses(&[200, 404]),
    Route::get(
        "/island",
        "The microgrid controller: mode (grid or island) and the last interval's allocation",
        || get(island),
        doc::json::<crate::island::Status>(),
    )
    .statuses(&[200, 404]),
    Route::post(
        "/island",
        "Tell the microgrid controller whether the grid is present (`false` islands at once)",
        || axum::routing::post(island_grid),
        doc::json::<crate::island::Status>(),
    )
    .statuses(&[202, 400, 401, 404, 413, 503])
    .body(doc::json_body::<GridSignal>()),
    Route::get(
        "/pools",
        "The pools the node's market holds, with their open offers by price level",
        || get(pools),
        doc::json::<Pools>(),
    )
    .statuses(&[200, 503]),
    Route::get("/pools/book", "One pool's open offers by price level", || get(book), doc::json::<PoolBook>())
        .statuses(&[200, 400, 404, 503])
        .query(doc::schema::<BookQuery>),
    Route::get(
        "/pools/index",
        "The pool's price indices (volume-weighted average prices) per period, from the ledger, with the dynamic base \
         price each period's trades met",
        || get(price_index),
        doc::json::<PriceIndex>(),
    )
    .statuses(&[200, 400, 503])
    .query(doc::schema::<IndexQuery>),
    Route::get(
        "/pools/providers",
        "The peers that announce the pool in the DHT (a Kademlia query)",
        || get(providers),
        doc::json::<Providers>(),
    )
    .statuses(&[200, 400, 503])
    .query(doc::schema::<PoolQuery>),
];

pub fn router(context: Context) -> Router {
    routes()
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

/// The node and its ledger, now.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Status {
    /// The network's name (its genesis file's).
    network: String,
    /// This node's libp2p peer id.
    peer_id: String,
    /// This node's account: its public key, 64 hex digits.
    account: String,
    /// The kos version it runs.
    version: &'static str,
    /// Peers connected now.
    peers: usize,
    /// Gossip topics joined.
    topics: usize,
    /// The pools this node is in (and announces in the DHT).
    served_pools: Vec<String>,
    /// The same pools, with what discovery knows of each.
    pools: Vec<JoinedPool>,
    /// The addresses it listens on.
    listen: Vec<String>,
    /// Its ledger (null without a genesis file).
    ledger: Option<LedgerStatus>,
    gossip: GossipCounts,
}

/// A pool the node is in: how it finds the pool's peers and book (PROTOCOL.md §9, "Finding a pool").
#[derive(Debug, Serialize, JsonSchema)]
pub struct JoinedPool {
    /// `resource/token/cell/interval_s`.
    pool: String,
    /// Named in the node's configuration: never left. Any other pool is left after two hours without an offer or
    /// match of the node's own in it.
    pinned: bool,
    /// When the node joined it, Unix milliseconds.
    joined_ms: u64,
    /// When the node last traded in it (an open offer or unsettled match of its own), Unix milliseconds.
    used_ms: u64,
    /// Providers its last DHT lookup found (this node aside).
    providers: usize,
    /// Peers in the node's gossip mesh for it.
    mesh: usize,
    /// Connected peers subscribed to its topic.
    subscribed: usize,
    /// When peers last sent the node the pool's recent offers, Unix milliseconds (null: never yet).
    book_filled_ms: Option<u64>,
    /// Offers new to the node in that answer.
    offers_fetched: u64,
    /// DHT lookups of its providers so far.
    lookups: u64,
    /// When the node last announced itself as its provider in the DHT, Unix milliseconds (null: not yet, or no DHT).
    announced_ms: Option<u64>,
}

impl From<crate::network::discovery::PoolView> for JoinedPool {
    fn from(view: crate::network::discovery::PoolView) -> Self {
        JoinedPool {
            pool: view.pool.to_string(),
            pinned: view.pinned,
            joined_ms: view.joined_ms,
            used_ms: view.used_ms,
            providers: view.providers,
            mesh: view.mesh,
            subscribed: view.subscribed,
            book_filled_ms: view.book_filled_ms,
            offers_fetched: view.offers_fetched,
            lookups: view.lookups,
            announced_ms: view.announced_ms,
        }
    }
}

/// Where the node's ledger is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LedgerStatus {
    /// The last committed height.
    height: u64,
    /// Its block's hash, 64 hex digits.
    hash: String,
    /// The round of the height being decided.
    round: i64,
    /// Entries waiting in the mempool.
    mempool_entries: usize,
    /// Whether this node is a validator.
    validator: bool,
    /// Validators in the set.
    validators: usize,
    /// Entries committed since this node started.
    committed_entries: u64,
    /// While syncing: the height peers are at.
    syncing_to: Option<u64>,
    /// Proposers seen signing two blocks for one round since this node started.
    equivocations: u64,
    /// The lowest height whose block this node keeps: 1 on an archive node, higher on a `full` one that pruned
    /// (`[storage]`) or took a snapshot of the state (state sync); older blocks answer 410.
    first_block: u64,
    /// While the node takes a snapshot of the state from its peers instead of replaying the blocks (PROTOCOL.md §9,
    /// *State sync*): the snapshot's height (0 while it is being chosen), chunks written and chunks in all.
    state_sync: Option<StateSyncStatus>,
    /// Key-value pairs in the ledger's state (PROTOCOL.md §10).
    state_pairs: usize,
}

/// How far a state sync is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StateSyncStatus {
    height: u64,
    chunks_done: u32,
    chunks: u32,
}

/// Gossip messages since the node started.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GossipCounts {
    accepted: u64,
    /// Invalid: their forwarder was penalised.
    rejected: u64,
    /// Over their forwarder's budget.
    throttled: u64,
    /// Over their author's fuel.
    fuel_throttled: u64,
}

async fn status(State(context): State<Context>) -> Json<Status> {
    let info = context.network.info().await.ok();
    let ledger = context.ledger.as_ref().map(|ledger| {
        let status = ledger.status();
        LedgerStatus {
            height: status.height,
            hash: status.hash,
            round: status.round,
            mempool_entries: status.mempool_entries,
            validator: status.validator,
            validators: status.validators,
            committed_entries: status.committed_entries,
            syncing_to: status.syncing_to,
            equivocations: status.equivocations,
            first_block: ledger.reader().first().unwrap_or(1),
            state_sync: status.state_sync.map(|progress| StateSyncStatus {
                height: progress.height,
                chunks_done: progress.done,
                chunks: progress.chunks,
            }),
            state_pairs: status.state_pairs,
        }
    });
    let pools: Vec<JoinedPool> =
        context.network.pools().await.unwrap_or_default().into_iter().map(JoinedPool::from).collect();
    let served_pools = pools.iter().map(|pool| pool.pool.clone()).collect();
    let stats = context.network.stats();
    Json(Status {
        network: context.network.network().as_str().to_owned(),
        peer_id: context.network.peer_id().to_string(),
        account: context.signer.public().to_string(),
        version: env!("CARGO_PKG_VERSION"),
        peers: info.as_ref().map_or(0, |info| info.peers.len()),
        topics: info.as_ref().map_or(0, |info| info.topics),
        served_pools,
        pools,
        listen: info.map(|info| info.listen.iter().map(ToString::to_string).collect()).unwrap_or_default(),
        ledger,
        gossip: GossipCounts {
            accepted: Stats::get(&stats.accepted),
            rejected: Stats::get(&stats.rejected),
            throttled: Stats::get(&stats.throttled),
            fuel_throttled: Stats::get(&stats.fuel_throttled),
        },
    })
}

/// An author's fuel as this node counts it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Fuel {
    account: String,
    standing: Standing,
    /// Whole units of each class.
    compute: u64,
    bandwidth: u64,
    memory: u64,
    /// Messages of it this node refused for want of fuel.
    throttled: u64,
}

/// How much the network trusts an author: it scales the author's fuel.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Unknown to the ledger, or with little history.
    Newcomer,
    /// Has an account with settled deliveries.
    Member,
    /// A validator, or an account of the ledger's "trusted" reputation tier.
    Trusted,
}

/// An author's fuel as this node counts it: levels per class (compute, bandwidth, memory), standing, refusals.
async fn fuel(State(context): State<Context>, UrlPath(key): UrlPath<String>) -> Answer<Fuel> {
    let author =
        PublicKey::from_hex(&key).map_err(|_| ApiError::bad_request("an account is a public key of 64 hex digits"))?;
    let status = context
        .network
        .fuel(author)
        .await
        .map_err(|problem| ApiError::unavailable(problem.to_string()))?
        .ok_or_else(|| ApiError::not_found("this node has seen nothing from that account lately"))?;
    let standing = match status.standing {
        energy::fuel::Standing::Newcomer => Standing::Newcomer,
        energy::fuel::Standing::Member => Standing::Member,
        energy::fuel::Standing::Trusted => Standing::Trusted,
    };
    Ok(Json(Fuel {
        account: key,
        standing,
        compute: status.levels[0],
        bandwidth: status.levels[1],
        memory: status.levels[2],
        throttled: status.throttled,
    }))
}

fn stored_block(
    context: &Context,
    height: u64,
) -> Result<(ledger_crate::Block, ledger_crate::store::Stored), ApiError> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let reader = ledger.reader();
    let stored = reader.block(height).map_err(|error| ApiError::internal(format!("{error:#}")))?;
    // Read after the block: a block pruned a moment ago is gone, not "not yet".
    let first = reader.first().map_err(|error| ApiError::internal(format!("{error:#}")))?;
    if height < first {
        return Err(ApiError::gone(format!(
            "block {height} is pruned: this node keeps blocks from {first} on ([storage] mode = \"full\"); ask an \
             archive node"
        )));
    }
    let stored = stored.ok_or_else(|| ApiError::not_found(format!("no block at height {height} yet")))?;
    let block = ledger_crate::Block::from_bytes(&stored.block)
        .map_err(|problem| ApiError::internal(format!("stored block {height}: {problem}")))?;
    Ok((block, stored))
}

use ::ledger as ledger_crate;

/// A committed block: its header's fields and its entries' ids.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BlockView {
    /// The ledger protocol version the block was made under (PROTOCOL.md §10, *Protocol versions*).
    version: u8,
    height: u64,
    /// 64 hex digits, as every hash and id here.
    hash: String,
    parent: String,
    /// The proposer's clock when it proposed the block, Unix ms.
    time_ms: u64,
    /// The proposer's account.
    proposer: String,
    entry_count: u32,
    entries_root: String,
    state_root: String,
    validators_hash: String,
    /// The entries' ids, in the block's order.
    entries: Vec<String>,
}

async fn block(State(context): State<Context>, UrlPath(height): UrlPath<u64>) -> Answer<BlockView> {
    let (block, _) = stored_block(&context, height)?;
    let header = block.header();
    let entries = block
        .entries()
        .map(|bytes| protocol::Envelope::from_bytes(bytes).map_or_else(|_| "undecodable".into(), |e| e.id().to_hex()))
        .collect();
    Ok(Json(BlockView {
        version: header.version,
        height: header.height,
        hash: block.hash().to_string(),
        parent: header.parent.to_string(),
        time_ms: header.time_ms,
        proposer: header.proposer.to_string(),
        entry_count: header.entry_count,
        entries_root: header.entries_root.to_string(),
        state_root: header.state_root.to_string(),
        validators_hash: header.validators_hash.to_string(),
        entries,
    }))
}

/// A committed block's bytes and its certificate's (PROTOCOL.md §7), for a verifier of its own.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RawBlock {
    height: u64,
    /// The block's canonical CBOR, hex.
    block: String,
    /// The commit certificate's CBOR, hex.
    certificate: String,
}

async fn block_raw(State(context): State<Context>, UrlPath(height): UrlPath<u64>) -> Answer<RawBlock> {
    let (_, stored) = stored_block(&context, height)?;
    Ok(Json(RawBlock { height, block: hex::encode(&stored.block), certificate: hex::encode(&stored.certificate) }))
}

/// Where a committed entry is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EntryPlace {
    id: String,
    height: u64,
    /// Its place in the block's entries, from 0.
    position: u32,
}

async fn entry(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<EntryPlace> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = Id::from_hex(&id).map_err(|_| ApiError::bad_request("an entry id is 64 hex digits"))?;
    match ledger.reader().locate(&id) {
        Ok(Some((height, position))) => Ok(Json(EntryPlace { id: id.to_hex(), height, position })),
        Ok(None) => {
            // A node that prunes forgets where old entries are; the state still knows they are on the ledger.
            let first = ledger.reader().first().unwrap_or(1);
            let included =
                first > 1 && ledger.query(move |state| ledger_crate::state::entry_included(state, &id)).await?;
            if included {
                Err(ApiError::gone(format!(
                    "committed in a block this node pruned (it keeps blocks from {first} on); an archive node knows \
                     where"
                )))
            } else {
                Err(ApiError::not_found("not committed (yet)"))
            }
        }
        Err(problem) => Err(ApiError::internal(format!("{problem:#}"))),
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

async fn submit(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    submit_bytes(&context, body.to_vec()).await
}

/// An entry the node took into its mempool (and gossiped): it is not on the ledger yet; `GET /entries/{id}` says
/// when it is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Submitted {
    /// The entry's id, 64 hex digits.
    pub id: String,
}

/// Submits an entry's bytes to the ledger: 202 with its id, or why not.
async fn submit_bytes(context: &Context, bytes: Vec<u8>) -> Taken<Submitted> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    // The id of an entry already waiting or committed, so that its sender can follow it (a decodable entry: the
    // mempool decoded it to find it a duplicate).
    let id = protocol::Envelope::from_bytes(&bytes).map(|envelope| envelope.id()).ok();
    match ledger.submit(bytes).await {
        Ok(id) => Ok(Accepted(Submitted { id: id.to_hex() })),
        Err(refused @ ledger::Error::Refused(ledger::Rejected::Duplicate | ledger::Rejected::Included)) => match id {
            Some(id) => Err(ApiError::from(&refused).about(id)),
            None => Err(ApiError::from(&refused)),
        },
        Err(refused) => Err(ApiError::from(&refused)),
    }
}

/// A JSON request body, or a 400 that says what is wrong with it.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|problem| ApiError::bad_request(format!("not {what}: {problem}")))
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "write endpoints need `Authorization: Bearer <data-dir/api.token>`")
}

/// An account's balances.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Balances {
    account: String,
    /// The height whose state this is.
    height: u64,
    /// Milli-units by token.
    balances: BTreeMap<String, u64>,
}

async fn balances(State(context): State<Context>, UrlPath(key): UrlPath<String>) -> Answer<Balances> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let account =
        PublicKey::from_hex(&key).map_err(|_| ApiError::bad_request("an account is its public key, 64 hex digits"))?;
    let (height, balances) = ledger.query(move |state| (state.height(), state.account_balances(&account))).await?;
    let balances = balances.into_iter().map(|(token, amount)| (token.as_str().to_string(), amount)).collect();
    Ok(Json(Balances { account: key, height, balances }))
}

/// An offer to make, as posted to `/offers`.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OfferRequest {
    /// The pool: `resource/token/cell/interval_s`.
    #[schemars(example = "energy/credit/u33db/900")]
    pool: String,
    side: OfferSide,
    /// In the resource's unit: Wh for energy, milli-units otherwise.
    #[schemars(range(min = 1))]
    quantity: u64,
    /// Limit price per kWh (energy) or per unit, in the pool's token, as a decimal string with up to 3 decimals.
    #[schemars(example = "0.30")]
    price: String,
    /// Start of the delivery interval, Unix seconds; default: the pool's next interval whose auction is open.
    delivery_start: Option<u64>,
    /// Lifetime in seconds; default 900, or until the delivery starts when that is later (at most 7 days).
    expires_in_s: Option<u64>,
}

/// A bid buys, an ask sells.
#[derive(Debug, Clone, Copy, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum OfferSide {
    Bid,
    Ask,
}

/// Signs a body with the node's signer, now, for `lifetime_ms` (500 when it cannot: its nonce reservation could not
/// be written).
pub(crate) fn sign_now(context: &Context, body: Body, lifetime_ms: u64) -> Result<protocol::Envelope, ApiError> {
    let created_ms = now_ms();
    context
        .signer
        .sign(body, created_ms, created_ms.saturating_add(lifetime_ms))
        .map_err(|problem| ApiError::internal(format!("signing with the node's key: {problem:#}")))
}

/// An offer the node's market took.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OfferPlaced {
    /// The offer's id, 64 hex digits.
    id: String,
    pool: String,
    /// Start of its delivery interval, Unix seconds.
    delivery_start: u64,
    /// When it expires, Unix ms.
    expires_ms: u64,
    /// Whether it was gossiped to peers in the pool (false: nobody in the pool's topic yet).
    published: bool,
}

async fn post_offer(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<OfferPlaced> {
    let placer = context.placer.as_ref().ok_or_else(ApiError::no_market)?;
    let request: OfferRequest = parse(&body, "an offer request")?;
    let pool: PoolId = request.pool.parse().map_err(|problem| ApiError::bad_request(format!("pool: {problem}")))?;
    let side = match request.side {
        OfferSide::Bid => Side::Bid,
        OfferSide::Ask => Side::Ask,
    };
    let unit_price = protocol::amount::parse_milli(&request.price)
        .map_err(|problem| ApiError::bad_request(format!("price: {problem}")))?;
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
    let placed = placer.offer(offer, created_ms, created_ms.saturating_add(lifetime_ms)).await?;
    Ok(Accepted(OfferPlaced {
        id: placed.id.to_hex(),
        pool: pool.to_string(),
        delivery_start: delivery_start_s,
        expires_ms: placed.envelope.expires_ms,
        published: placed.published,
    }))
}

/// A pool's open offers by price level.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BookView {
    /// The delivery interval shown (Unix seconds), in an interval pool.
    delivery_start: Option<u64>,
    /// Open offers in the book.
    offers: usize,
    /// Best first.
    bids: Vec<Level>,
    /// Best first.
    asks: Vec<Level>,
}

/// A price level: the quantity open at a price.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Level {
    /// Milli-units of the pool's token per kWh (energy) or per 1000 units.
    price: u64,
    /// Wh for energy, milli-units otherwise.
    quantity: u64,
}

impl From<&::market::pools::Depth> for BookView {
    fn from(depth: &::market::pools::Depth) -> BookView {
        let levels = |levels: &[(u64, u64)]| -> Vec<Level> {
            levels.iter().map(|(price, quantity)| Level { price: *price, quantity: *quantity }).collect()
        };
        BookView {
            delivery_start: depth.delivery_start_s,
            offers: depth.offers,
            bids: levels(&depth.bids),
            asks: levels(&depth.asks),
        }
    }
}

/// The home meter's latest registers, its latest signed reading and its counters.
async fn meter(State(context): State<Context>) -> Answer<crate::meter::Status> {
    let meter = context
        .meter
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this node reads no meter (set [meter] kind in its config)"))?;
    Ok(Json(meter.status()))
}

/// The microgrid controller: mode (grid or island) and the last interval's allocation.
async fn island(State(context): State<Context>) -> Answer<crate::island::Status> {
    let island = context
        .island
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this node controls no microgrid (set [island] enabled in its config)"))?;
    Ok(Json(island.status()))
}

/// Whether the grid is present, as posted to `/island`.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GridSignal {
    /// `false` islands the microgrid at once; the grid must be present for the configured intervals before grid
    /// mode returns.
    grid_present: bool,
}

/// Tells the microgrid controller whether the grid is present: `{"grid_present": false}` islands at once; the
/// grid must be present for `return_intervals` intervals before grid mode returns.
async fn island_grid(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<crate::island::Status> {
    let island = context.island.as_ref().ok_or_else(|| ApiError::not_found("this node controls no microgrid"))?;
    let signal = serde_json::from_slice::<GridSignal>(&body)
        .map_err(|_| ApiError::bad_request("expected {\"grid_present\": true|false}"))?;
    if island.grid(signal.grid_present).await {
        Ok(Accepted(island.status()))
    } else {
        Err(ApiError::unavailable("the microgrid controller stopped"))
    }
}

/// The node's market: its pools and its counters since it started.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Pools {
    pools: Vec<PoolView>,
    /// Offers taken.
    offers: u64,
    /// Offers refused.
    refused: u64,
    matches: u64,
    matched_quantity: u64,
    settlements_submitted: u64,
    settlements_refused: u64,
    barter_offers: u64,
    /// Offers and barter offers refused because an override froze their author's trading.
    frozen: u64,
    /// Offers refused because the ledger would not settle them (their author's tier, funds or anti-hoarding caps).
    unsettleable: u64,
    /// Matches the ledger did not settle in time (judged, and their quantity given back to the party not at fault).
    unsettled: u64,
    /// Authors found at fault for an unsettled match (their offers left the books, their fuel for offers spent).
    faults: u64,
    barter_cycles_found: u64,
    barter_cycles_submitted: u64,
}

/// A pool the node's market holds.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolView {
    /// `resource/token/cell/interval_s`.
    pool: String,
    /// Its DHT key and topic name's digest, 64 hex digits.
    digest: String,
    /// Its five best levels a side (null: no open offers).
    book: Option<BookView>,
    /// The trust level (PROTOCOL.md §10, *trust levels*) a party's readings must reach to count as delivered in
    /// its energy trades: node, device, balanced or device+balanced (the genesis's pool rule; null: no ledger, or
    /// not an energy interval pool, whose trades no reading checks).
    trust: Option<&'static str>,
}

async fn pools(State(context): State<Context>) -> Answer<Pools> {
    let market = context.market.as_ref().ok_or_else(ApiError::no_market)?;
    let mut list = Vec::new();
    for pool in market.pools().await {
        let depth = market.depth(pool.clone(), 5).await;
        let metered = pool.resource == protocol::message::Resource::Energy && pool.interval_s > 0;
        let trust = context.ledger.as_ref().filter(|_| metered).map(|ledger| {
            let rule = ledger.genesis().pool_rule(&pool);
            rule.map_or(protocol::message::Trust::Node, |rule| rule.trust).name()
        });
        list.push(PoolView {
            pool: pool.to_string(),
            digest: pool.digest().to_hex(),
            book: depth.as_ref().map(BookView::from),
            trust,
        });
    }
    let stats = market.stats();
    Ok(Json(Pools {
        pools: list,
        offers: stats.offers,
        refused: stats.refused,
        matches: stats.matches,
        matched_quantity: stats.matched_quantity,
        settlements_submitted: stats.settlements_submitted,
        settlements_refused: stats.settlements_refused,
        barter_offers: stats.barter_offers,
        frozen: stats.frozen,
        unsettleable: stats.unsettleable,
        unsettled: stats.unsettled,
        faults: stats.faults,
        barter_cycles_found: stats.barter_cycles_found,
        barter_cycles_submitted: stats.barter_cycles_submitted,
    }))
}

fn pool_id(text: &str) -> Result<PoolId, ApiError> {
    text.parse().map_err(|problem| ApiError::bad_request(format!("pool: {problem}")))
}

/// `?pool=`: which pool.
#[derive(Debug, serde::Deserialize, JsonSchema)]
struct PoolQuery {
    /// A pool: resource/token/cell/interval_s, e.g. energy/credit/u33db/900.
    pool: String,
}

/// `/pools/book`: which pool, how deep.
#[derive(Debug, serde::Deserialize, JsonSchema)]
struct BookQuery {
    /// A pool: resource/token/cell/interval_s, e.g. energy/credit/u33db/900.
    pool: String,
    /// Price levels per side (default 20, at most 1000).
    levels: Option<usize>,
}

/// `/pools/index`: which pool, which periods.
#[derive(Debug, serde::Deserialize, JsonSchema)]
struct IndexQuery {
    /// A pool: resource/token/cell/interval_s, e.g. energy/credit/u33db/900.
    pool: String,
    /// From, Unix seconds.
    from: Option<u64>,
    /// To, Unix seconds.
    to: Option<u64>,
}

/// One pool's book.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolBook {
    pool: String,
    book: BookView,
}

async fn book(
    State(context): State<Context>,
    axum::extract::Query(query): axum::extract::Query<BookQuery>,
) -> Answer<PoolBook> {
    let market = context.market.as_ref().ok_or_else(ApiError::no_market)?;
    let pool = pool_id(&query.pool)?;
    let depth = market
        .depth(pool.clone(), query.levels.unwrap_or(20).min(1000))
        .await
        .ok_or_else(|| ApiError::not_found("this node's market has no open offers in that pool"))?;
    Ok(Json(PoolBook { pool: pool.to_string(), book: BookView::from(&depth) }))
}

/// A pool's price indices per period.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PriceIndex {
    pool: String,
    /// The height whose state this is.
    height: u64,
    /// Oldest first, the last 1000 at most.
    periods: Vec<PeriodIndex>,
}

/// One period's trades in a pool.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PeriodIndex {
    /// The period's start, Unix seconds.
    period: u64,
    /// Σ quantity traded (Wh for energy).
    volume: u64,
    /// Σ paid, token milli-units.
    value: u64,
    trades: u64,
    /// The volume-weighted average price, milli-units per kWh (energy) or per 1000 units.
    vwap: Option<u64>,
    /// The dynamic base price the period's trades met (null: none recorded).
    base_price: Option<u64>,
}

async fn price_index(
    State(context): State<Context>,
    axum::extract::Query(query): axum::extract::Query<IndexQuery>,
) -> Answer<PriceIndex> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let pool = pool_id(&query.pool)?;
    let to = query.to.unwrap_or(u64::MAX);
    let from = query.from.unwrap_or(0);
    let key = pool.clone();
    let (height, indices, bases) = ledger
        .query(move |state| {
            let height = state.height();
            let bases: BTreeMap<u64, u64> = state.base_prices(&key, from, to).into_iter().collect();
            (height, state.price_indices(&key, from, to), bases)
        })
        .await?;
    let periods: Vec<PeriodIndex> = indices
        .iter()
        .rev()
        .take(1000)
        .rev()
        .map(|(period, index)| PeriodIndex {
            period: *period,
            volume: index.volume,
            value: index.value,
            trades: index.trades,
            vwap: index.vwap(),
            base_price: bases.get(period).copied(),
        })
        .collect();
    Ok(Json(PriceIndex { pool: pool.to_string(), height, periods }))
}

/// A barter offer to make, as posted to `/barter`.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BarterRequest {
    /// The resource given: energy, compute, memory or bandwidth.
    give: String,
    /// In the given resource's unit (Wh for energy).
    give_quantity: u64,
    /// The resource wanted: energy, compute, memory or bandwidth.
    want: String,
    /// In the wanted resource's unit.
    want_quantity: u64,
    /// Geohash cell where the exchange happens; default the whole world.
    cell: Option<String>,
    /// When energy is given or wanted: the start of the 15-minute interval it is delivered in (Unix seconds, a
    /// multiple of 900); default the next one. Not allowed without energy.
    delivery_start_s: Option<u64>,
    /// Lifetime in seconds; default 3600, or until the end of its energy's interval.
    expires_in_s: Option<u64>,
}

/// Something the node signed and gossiped.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Published {
    /// Its id, 64 hex digits.
    id: String,
    /// Whether it was gossiped to peers (false: nobody in its topic yet).
    published: bool,
}

async fn post_barter(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Published> {
    let placer = context.placer.as_ref().ok_or_else(ApiError::no_market)?;
    let request: BarterRequest = parse(&body, "a barter request")?;
    let created_ms = now_ms();
    let parsed = (|| -> Result<protocol::message::BarterOffer, protocol::types::Invalid> {
        let (give, want): (protocol::message::Resource, protocol::message::Resource) =
            (request.give.parse()?, request.want.parse()?);
        let energy = give == protocol::message::Resource::Energy || want == protocol::message::Resource::Energy;
        let interval_s = protocol::message::BARTER_ENERGY_INTERVAL_S;
        let next_interval_s = (created_ms / 1000 / interval_s + 1) * interval_s;
        Ok(protocol::message::BarterOffer {
            give,
            give_quantity: request.give_quantity,
            want,
            want_quantity: request.want_quantity,
            cell: protocol::types::Cell::new(request.cell.clone().unwrap_or_default())?,
            delivery_start_s: request.delivery_start_s.unwrap_or(if energy { next_interval_s } else { 0 }),
        })
    })();
    let offer = parsed.map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    // An offer with energy lives, unless told otherwise, until its interval ends (it cannot be traded after).
    let default_lifetime_ms = match offer.delivery_start_s {
        0 => 3_600_000,
        start_s => {
            let end_ms = start_s.saturating_add(protocol::message::BARTER_ENERGY_INTERVAL_S).saturating_mul(1000);
            if end_ms <= created_ms {
                return Err(ApiError::bad_request(format!("the energy's interval starting {start_s} is over")));
            }
            (end_ms - created_ms).min(protocol::validate::Config::LIFETIME_MS_MAX_DEFAULT)
        }
    };
    let lifetime_ms = request.expires_in_s.map_or(default_lifetime_ms, |seconds| seconds.saturating_mul(1000));
    let placed = placer.barter(offer, created_ms, created_ms.saturating_add(lifetime_ms)).await?;
    Ok(Accepted(Published { id: placed.id.to_hex(), published: placed.published }))
}

/// `?pool=`: the pool of the offer to cancel.
#[derive(Debug, serde::Deserialize, JsonSchema)]
struct CancelQuery {
    /// The offer's pool: resource/token/cell/interval_s, e.g. energy/credit/u33db/900; for a barter offer, its
    /// barter pool: barter/<cell>, e.g. barter/u33db.
    pool: String,
}

async fn cancel_offer(
    State(context): State<Context>,
    _: Authorized,
    UrlPath(id): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<CancelQuery>,
) -> Taken<Published> {
    let (Some(market), Some(ledger)) = (context.market.as_ref(), context.ledger.as_ref()) else {
        return Err(ApiError::no_market());
    };
    let offer = Id::from_hex(&id).map_err(|_| ApiError::bad_request("an offer id is 64 hex digits"))?;
    let pool: protocol::message::PoolKey =
        query.pool.parse().map_err(|problem| ApiError::bad_request(format!("pool: {problem}")))?;
    let envelope = sign_now(&context, Body::Cancel(protocol::message::Cancel { offer }), 3_600_000)?;
    let created_ms = envelope.created_ms;
    // Peers' books drop the offer; the ledger refuses later settlements of it.
    let published =
        context.network.publish(&envelope, Some(network::Topic::Pool(pool.digest())), created_ms).await.is_ok();
    market.cancel(offer, context.signer.public());
    let id = ledger.submit(envelope.to_bytes()).await?;
    Ok(Accepted(Published { id: id.to_hex(), published }))
}

/// A transfer from the node's account, as posted to `/transfers` (and a guild's spend, to `/guilds/{account}/spends`).
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    /// The receiving account: its public key, 64 hex digits.
    to: String,
    /// The token's id.
    #[schemars(example = &"credit")]
    token: String,
    /// In tokens, as a decimal string with up to 3 decimals.
    #[schemars(example = "1.5")]
    amount: String,
    /// A note for the receiver (at most 256 bytes).
    memo: Option<String>,
}

type Payment = (PublicKey, protocol::types::TokenId, u64, protocol::types::Text<{ protocol::limits::MEMO_BYTES_MAX }>);

impl TransferRequest {
    /// Receiver, token, amount (milli-units) and memo, checked.
    fn payment(&self) -> Result<Payment, ApiError> {
        let problem = |what: &str, problem: &dyn std::fmt::Display| ApiError::bad_request(format!("{what}: {problem}"));
        Ok((
            PublicKey::from_hex(&self.to).map_err(|_| ApiError::bad_request("to: an account is 64 hex digits"))?,
            protocol::types::TokenId::new(self.token.clone()).map_err(|error| problem("token", &error))?,
            protocol::amount::parse_milli(&self.amount).map_err(|error| problem("amount", &error))?,
            protocol::types::Text::new(self.memo.clone().unwrap_or_default())
                .map_err(|error| problem("memo", &error))?,
        ))
    }
}

async fn post_transfer(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let request: TransferRequest = parse(&body, "a transfer request")?;
    let (to, token, amount, memo) = request.payment()?;
    let transfer = protocol::message::Transfer { to, token, amount, memo };
    // The ledger would refuse it at execution; say so now, with the balance.
    let (me, token, amount) = (context.signer.public(), transfer.token.clone(), transfer.amount);
    let balance = ledger.query(move |state| state.balance(&me, &token)).await?;
    if balance < amount {
        return Err(ApiError::bad_request(format!(
            "insufficient balance: the node's account holds {} {}",
            protocol::amount::format_milli(balance),
            transfer.token.as_str()
        )));
    }
    sign_and_submit(&context, Body::Transfer(transfer)).await
}

/// Signs `body` with the node's key and submits it to the ledger: 202 with the entry's id, or why not.
pub(crate) async fn sign_and_submit(context: &Context, body: Body) -> Taken<Submitted> {
    let id = submit_signed(context, body).await?;
    Ok(Accepted(Submitted { id: id.to_hex() }))
}

/// Signs `body` with the node's key and submits it to the ledger: the entry's id, or why not.
pub(crate) async fn submit_signed(context: &Context, body: Body) -> Result<Id, ApiError> {
    let envelope = sign_now(context, body, 600_000)?;
    let id = envelope.id();
    submit_bytes(context, envelope.to_bytes()).await?;
    Ok(id)
}

/// A guild to make, as posted to `/guilds`.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GuildRequest {
    name: String,
    /// Members' accounts (64 hex digits each); any order, the node sorts them.
    members: Vec<String>,
    /// How many members' approvals a spend needs.
    threshold: u32,
}

/// A guild the node asked the ledger to make.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GuildMade {
    /// The guild's account (derived from the entry's id), 64 hex digits.
    account: String,
}

async fn post_guild(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<GuildMade> {
    let request: GuildRequest = parse(&body, "a guild request")?;
    let mut members = Vec::with_capacity(request.members.len());
    for member in &request.members {
        let key = PublicKey::from_hex(member)
            .map_err(|_| ApiError::bad_request(format!("member {member:?} is not 64 hex digits")))?;
        members.push(key);
    }
    members.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    members.dedup();
    let guild = (|| -> Result<protocol::message::Guild, protocol::types::Invalid> {
        Ok(protocol::message::Guild {
            name: protocol::types::Text::new(request.name.clone())?,
            members: protocol::types::BoundedVec::new(members)?,
            threshold: request.threshold,
        })
    })()
    .map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    let envelope = sign_now(&context, Body::Guild(guild), 600_000)?;
    let account = protocol::message::guild_account(&envelope.id());
    submit_bytes(&context, envelope.to_bytes()).await?;
    Ok(Accepted(GuildMade { account: account.to_string() }))
}

/// A guild: a shared account whose spends need `threshold` of its members.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GuildView {
    account: String,
    /// The height whose state this is.
    height: u64,
    name: String,
    /// Members' accounts, sorted.
    members: Vec<String>,
    threshold: u32,
    /// The id of the entry that made it.
    created_by: String,
    /// Milli-units by token.
    balances: BTreeMap<String, u64>,
}

async fn guild(State(context): State<Context>, UrlPath(account): UrlPath<String>) -> Answer<GuildView> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let account =
        PublicKey::from_hex(&account).map_err(|_| ApiError::bad_request("a guild's account is 64 hex digits"))?;
    let (height, guild, balances) =
        ledger.query(move |state| (state.height(), state.guild(&account), state.account_balances(&account))).await?;
    let guild = guild.ok_or_else(|| ApiError::not_found("no guild has that account (yet)"))?;
    Ok(Json(GuildView {
        account: account.to_string(),
        height,
        name: guild.name,
        members: guild.members.iter().map(ToString::to_string).collect(),
        threshold: guild.threshold,
        created_by: guild.created_by.to_hex(),
        balances: balances.into_iter().map(|(token, amount)| (token.as_str().to_string(), amount)).collect(),
    }))
}

async fn post_guild_spend(
    State(context): State<Context>,
    _: Authorized,
    UrlPath(account): UrlPath<String>,
    body: Bytes,
) -> Taken<Submitted> {
    let guild =
        PublicKey::from_hex(&account).map_err(|_| ApiError::bad_request("a guild's account is 64 hex digits"))?;
    let request: TransferRequest = parse(&body, "a spend request")?;
    let (to, token, amount, memo) = request.payment()?;
    sign_and_submit(&context, Body::GuildSpend(protocol::message::GuildSpend { guild, to, token, amount, memo })).await
}

/// A spend from a guild's account.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SpendView {
    id: String,
    /// The height whose state this is.
    height: u64,
    guild: String,
    to: String,
    token: String,
    /// Milli-units.
    amount: u64,
    /// Members' approvals so far.
    approvals: u32,
    status: SpendStatusView,
}

/// Where a spend is.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpendStatusView {
    /// Waiting for approvals.
    Pending,
    /// Paid.
    Done,
}

async fn guild_spend(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<SpendView> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = Id::from_hex(&id).map_err(|_| ApiError::bad_request("a spend id is 64 hex digits"))?;
    let (height, spend) = ledger.query(move |state| (state.height(), state.guild_spend(&id))).await?;
    let spend = spend.ok_or_else(|| ApiError::not_found("no such spend on the ledger (yet)"))?;
    Ok(Json(SpendView {
        id: id.to_hex(),
        height,
        guild: spend.guild.to_string(),
        to: spend.to.to_string(),
        token: spend.token.as_str().to_owned(),
        amount: spend.amount,
        approvals: spend.approvals,
        status: match spend.status {
            ledger_crate::state::SpendStatus::Pending => SpendStatusView::Pending,
            ledger_crate::state::SpendStatus::Done => SpendStatusView::Done,
        },
    }))
}

async fn approve_guild_spend(
    State(context): State<Context>,
    _: Authorized,
    UrlPath(id): UrlPath<String>,
) -> Taken<Submitted> {
    let spend = Id::from_hex(&id).map_err(|_| ApiError::bad_request("a spend id is 64 hex digits"))?;
    sign_and_submit(&context, Body::GuildApproval(protocol::message::GuildApproval { spend })).await
}

/// The peers that announce a pool in the DHT.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Providers {
    pool: String,
    /// Its DHT key, 64 hex digits.
    digest: String,
    /// Their libp2p peer ids.
    providers: Vec<String>,
}

/// The peers that serve a pool, found in the DHT.
async fn providers(
    State(context): State<Context>,
    axum::extract::Query(query): axum::extract::Query<PoolQuery>,
) -> Answer<Providers> {
    let pool = pool_id(&query.pool)?;
    let peers = context
        .network
        .find_providers(pool.digest())
        .await
        .map_err(|problem| ApiError::unavailable(problem.to_string()))?;
    Ok(Json(Providers {
        pool: pool.to_string(),
        digest: pool.digest().to_hex(),
        providers: peers.iter().map(ToString::to_string).collect(),
    }))
}

/// An asset's rated limits, W and Wh; absent or 0: none.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct LimitsRequest {
    generation_w_max: u64,
    import_w_max: u64,
    export_w_max: u64,
    consumption_w_max: u64,
    storage_w_max: u64,
    storage_wh: u64,
}

/// An OCMF record of a meter's device, for the node to relay as the meter's reading (PROTOCOL.md §5, *Relaying a
/// record*).
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OcmfRequest {
    /// The meter's id: a meter of this node's account, bound to an asset that names the device's P-256 key.
    meter: String,
    /// The record exactly as the device sent it: `OCMF|{payload}|{signature}`.
    record: String,
    /// The reading's interval length, seconds (default 900): the interval is the one the record's last register
    /// was read in, or the one before when that read came within 60 s of its end (PROTOCOL.md §5, *Relaying a
    /// record*).
    interval_s: Option<u32>,
}

/// `POST /readings/ocmf`: the reading an OCMF record attests, from the meter's last anchored one.
async fn post_ocmf_reading(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    use protocol::message::{Counters, DeviceKey};
    let request: OcmfRequest = parse(&body, "an OCMF record to relay")?;
    let record = request.record.trim();
    if record.len() > protocol::limits::OCMF_RECORD_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "record: {} bytes, more than the {} an OCMF record may have",
            record.len(),
            protocol::limits::OCMF_RECORD_BYTES_MAX
        )));
    }
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let meter = protocol::types::MeterId::new(request.meter.clone())
        .map_err(|problem| ApiError::bad_request(format!("meter: {problem}")))?;
    let (author, name) = (context.signer.public(), request.meter.clone());
    let (key, capacity, previous) = ledger
        .query(move |state| {
            let asset = state.asset_of_meter(&author, &name).and_then(|id| state.asset(&id));
            let mut capacity = asset.as_ref().map(::ledger::state::AssetState::capacity);
            // An override may cap the device below its rating (the ledger's check, PROTOCOL.md §10, *reading*).
            if let (Some(capacity), Some(cap)) = (capacity.as_mut(), state.device_cap(&author, &name)) {
                capacity.import_w_max = capacity.import_w_max.min(cap.first);
                capacity.export_w_max = capacity.export_w_max.min(cap.second);
            }
            let key = asset.and_then(|asset| asset.manifest.device.as_slice().first().cloned());
            let previous = state.meter_state(&author, &name).map(|last| Counters {
                interval_start_s: last.interval_start_s,
                import_counter_wh: last.import_counter_wh,
                export_counter_wh: last.export_counter_wh,
            });
            (key, capacity, previous)
        })
        .await?;
    let key = match key {
        Some(DeviceKey::P256(key)) => key,
        Some(DeviceKey::Ed25519(_)) => {
            return Err(ApiError::bad_request(format!(
                "meter {}: its asset names an ed25519 device key, whose device signs readings itself (not OCMF)",
                request.meter
            )));
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "meter {}: no asset of this node's account binds it with a P-256 device key (register one: kos asset \
                 register --meter {} --device-key p256:<the key the device's register publishes>)",
                request.meter, request.meter
            )));
        }
    };
    let reading = protocol::message::ocmf_reading(meter, key, record, request.interval_s.unwrap_or(900), previous)
        .map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    // The ledger's own check (PROTOCOL.md §10, *reading*) first: a reading it would refuse is not submitted.
    let last = previous.map(|previous| energy::reading::Previous {
        interval_start_s: previous.interval_start_s,
        interval_s: reading.interval_s,
        import_counter_wh: previous.import_counter_wh,
        export_counter_wh: previous.export_counter_wh,
    });
    let now_s = now_ms() / 1000;
    let capacity = capacity.unwrap_or(energy::reading::Capacity::RESIDENTIAL);
    if let Err(invalid) = energy::reading::check(&reading, last.as_ref(), &capacity, now_s) {
        let end_s = reading.interval_start_s.saturating_add(u64::from(reading.interval_s));
        let when = if end_s > now_s.saturating_add(30) {
            format!(
                " (its interval ends at Unix second {end_s}, in {} s: hand the record over after it)",
                end_s - now_s
            )
        } else {
            String::new()
        };
        return Err(ApiError::bad_request(format!(
            "the reading the record makes (interval {}, import {} Wh, export {} Wh): {invalid}{when}",
            reading.interval_start_s, reading.import_wh, reading.export_wh
        )));
    }
    sign_and_submit(&context, Body::Reading(reading)).await
}

/// An asset's manifest as posted to `/assets`.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AssetRequest {
    kind: AssetKindName,
    /// What it is for, for people.
    purpose: String,
    /// The owning account or guild (64 hex digits); default the node's account.
    owner: Option<String>,
    /// The node's meters whose readings are this asset's.
    #[serde(default)]
    meters: Vec<String>,
    limits: LimitsRequest,
    /// Geohash cell; default the whole world.
    cell: Option<String>,
    /// When it was commissioned, Unix seconds; default now.
    commissioned_s: Option<u64>,
    /// Seconds between maintenance visits its owner promises; 0: none.
    #[serde(default)]
    maintenance_interval_s: u64,
    /// The key of the device that signs its meters' readings: `ed25519:<64 hex digits>`, or `p256:<hex>` for an
    /// OCMF meter (its 65-byte SEC1 point, its 64-byte X || Y, or its DER SubjectPublicKeyInfo as OCMF registers
    /// publish it). Its meters' readings then count only with the device's signature.
    device_key: Option<String>,
}

/// What kind of asset.
#[derive(Debug, Clone, Copy, serde::Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum AssetKindName {
    Meter,
    Inverter,
    Battery,
    CommunityStorage,
    Pod,
    Other,
    /// A cell's feeder meter at its connection point to the grid (its owner must be a guild the node is a member
    /// of; PROTOCOL.md §10, *cells*).
    Feeder,
}

impl AssetKindName {
    fn kind(self) -> protocol::message::AssetKind {
        use protocol::message::AssetKind;
        match self {
            AssetKindName::Meter => AssetKind::Meter,
            AssetKindName::Inverter => AssetKind::Inverter,
            AssetKindName::Battery => AssetKind::Battery,
            AssetKindName::CommunityStorage => AssetKind::CommunityStorage,
            AssetKindName::Pod => AssetKind::Pod,
            AssetKindName::Other => AssetKind::Other,
            AssetKindName::Feeder => AssetKind::Feeder,
        }
    }

    fn of(kind: protocol::message::AssetKind) -> AssetKindName {
        use protocol::message::AssetKind;
        match kind {
            AssetKind::Meter => AssetKindName::Meter,
            AssetKind::Inverter => AssetKindName::Inverter,
            AssetKind::Battery => AssetKindName::Battery,
            AssetKind::CommunityStorage => AssetKindName::CommunityStorage,
            AssetKind::Pod => AssetKindName::Pod,
            AssetKind::Other => AssetKindName::Other,
            AssetKind::Feeder => AssetKindName::Feeder,
        }
    }
}

async fn post_asset(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    let request: AssetRequest = parse(&body, "an asset manifest")?;
    let asset = (|| -> Result<protocol::message::Asset, String> {
        let limits = &request.limits;
        let meters = request
            .meters
            .iter()
            .map(|meter| protocol::types::MeterId::new(meter.clone()).map_err(|problem| format!("meter: {problem}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(protocol::message::Asset {
            kind: request.kind.kind(),
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
            device: protocol::types::BoundedVec::new(
                request
                    .device_key
                    .as_deref()
                    .map(protocol::message::DeviceKey::from_text)
                    .transpose()
                    .map_err(|problem| format!("device_key: {problem}"))?
                    .into_iter()
                    .collect(),
            )
            .map_err(|problem| format!("device_key: {problem}"))?,
        })
    })()
    .map_err(ApiError::bad_request)?;
    sign_and_submit(&context, Body::Asset(asset)).await
}

/// An asset's rated limits, W and Wh (0: none).
#[derive(Debug, Serialize, JsonSchema)]
pub struct LimitsView {
    generation_w_max: u64,
    import_w_max: u64,
    export_w_max: u64,
    consumption_w_max: u64,
    storage_w_max: u64,
    storage_wh: u64,
}

/// An asset: its manifest and its history.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AssetView {
    id: String,
    /// The height whose state this is.
    height: u64,
    /// The manifest's author: the account whose readings of the asset's meters are checked against its limits.
    author: String,
    kind: AssetKindName,
    purpose: String,
    owner: String,
    meters: Vec<String>,
    limits: LimitsView,
    cell: String,
    /// Unix seconds.
    commissioned_s: u64,
    /// Seconds between promised maintenance visits; 0: none.
    maintenance_interval_s: u64,
    /// The key of the device that signs its meters' readings (`ed25519:…` or `p256:…`); none: its author's node.
    device_key: Option<String>,
    /// Readings anchored for its meters since it was registered.
    readings: u64,
    /// The interval start of the latest of them, Unix seconds (0: none yet).
    last_interval_start_s: u64,
    /// Its meters' latest anchored readings, newest first (at most 20).
    recent_readings: Vec<crate::feed::ReadingView>,
    /// Its author's latest energy trades, newest first (at most 20): what its readings are checked against.
    recent_trades: Vec<crate::feed::TradeView>,
    /// Maintenance alerts logged for it.
    alerts: Vec<governance::AlertView>,
    /// Citizens' reports about it.
    reports: Vec<governance::ReportView>,
    /// Overrides in force on it, its author or its owner.
    interventions: Vec<Intervention>,
}

/// An override in force on an asset.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Intervention {
    /// The override's id, 64 hex digits.
    id: String,
    /// The height it lasts until.
    until_height: u64,
    #[serde(flatten)]
    measure: governance::MeasureView,
}

async fn asset(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<AssetView> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = Id::from_hex(&id).map_err(|_| ApiError::bad_request("an asset id is 64 hex digits"))?;
    let read = ledger.query(move |state| {
        let height = state.height();
        let Some(asset) = state.asset(&id) else { return (height, None) };
        // Its history beyond readings: alerts, reports and maintenance logged, overrides on it.
        let reports: Vec<governance::ReportView> = state
            .reports()
            .filter(|(_, report)| report.report.asset.as_slice().first() == Some(&id))
            .map(|(report_id, report)| governance::report_view(&report_id, &report))
            .collect();
        let meters: Vec<String> =
            asset.manifest.meters.as_slice().iter().map(|meter| meter.as_str().to_owned()).collect();
        let interventions: Vec<Intervention> = state
            .overrides()
            .filter(|(_, record)| match &record.measure {
                protocol::message::Measure::DeviceCap(cap) => {
                    cap.account == asset.author && meters.iter().any(|meter| meter == cap.meter.as_str())
                }
                protocol::message::Measure::Freeze(freeze) => freeze.account == asset.manifest.owner,
                protocol::message::Measure::Island(order) => order.cell == asset.manifest.cell,
                protocol::message::Measure::FuelCap(_) => false,
            })
            .map(|(override_id, record)| Intervention {
                id: override_id.to_hex(),
                until_height: record.until_height,
                measure: governance::measure_view(&record.measure),
            })
            .collect();
        let alerts = state.alerts_of(&id);
        (height, Some((asset, alerts, reports, interventions)))
    });
    let (height, found) = read.await?;
    let (asset, alerts, reports, interventions) =
        found.ok_or_else(|| ApiError::not_found("no asset with that id on the ledger (yet)"))?;
    let manifest = &asset.manifest;
    let limits = &manifest.limits;
    let author = asset.author.to_string();
    let meters: Vec<String> = manifest.meters.as_slice().iter().map(|meter| meter.as_str().to_string()).collect();
    let recent_readings: Vec<_> = context
        .feed
        .readings(live::LIST_LEN_MAX, Some(&author))
        .into_iter()
        .filter(|reading| meters.contains(&reading.meter))
        .take(20)
        .collect();
    // The energy its author traded lately (what its meters' readings are checked against).
    let recent_trades: Vec<_> = context
        .feed
        .trades(crate::feed::RECENT_TRADES_MAX, None)
        .into_iter()
        .filter(|trade| trade.resource == "energy" && (trade.buyer == author || trade.seller == author))
        .take(20)
        .collect();
    Ok(Json(AssetView {
        id: id.to_hex(),
        height,
        author,
        kind: AssetKindName::of(manifest.kind),
        purpose: manifest.purpose.as_str().to_owned(),
        owner: manifest.owner.to_string(),
        meters,
        limits: LimitsView {
            generation_w_max: limits.generation_w_max,
            import_w_max: limits.import_w_max,
            export_w_max: limits.export_w_max,
            consumption_w_max: limits.consumption_w_max,
            storage_w_max: limits.storage_w_max,
            storage_wh: limits.storage_wh,
        },
        cell: manifest.cell.as_str().to_owned(),
        commissioned_s: manifest.commissioned_s,
        maintenance_interval_s: manifest.maintenance_interval_s,
        device_key: manifest.device.as_slice().first().map(ToString::to_string),
        readings: asset.readings,
        last_interval_start_s: asset.last_interval_start_s,
        recent_readings,
        recent_trades,
        alerts: alerts.iter().map(governance::alert_view).collect(),
        reports,
        interventions,
    }))
}
