//! The API's views of what happens: recent blocks, trades and readings, accounts, validators, peers, a stream of
//! server-sent events, Prometheus metrics, the OpenAPI document and the dashboard.

use ::ledger::reads::*;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use protocol::message::Trust;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use libp2p::futures::stream::{self, Stream};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::sync::broadcast;

use super::{Answer, ApiError, Context, Route, doc};
use crate::metrics::{self, LedgerSnapshot, MeterSnapshot, Snapshot};

/// Event streams served at once; a new one takes the place of the oldest, so that no client can hold them all and
/// lock out the dashboard (its stream reconnects by itself when closed).
pub const EVENT_STREAMS_MAX: usize = 64;
/// Event streams of one client address beyond loopback; past it, the client's own oldest stream gives way.
pub const EVENT_STREAMS_PER_CLIENT_MAX: usize = 8;
/// Most items one list answers.
pub const LIST_LEN_MAX: usize = 500;
/// Accounts one `/accounts` page lists at most.
pub const ACCOUNTS_PAGE_MAX: usize = 1000;

/// The dashboard: one page, its script and style inline, nothing fetched from elsewhere.
const DASHBOARD: &str = include_str!("dashboard.html");
/// The OpenAPI 3.1 document of this API, made once from its routes.
static OPENAPI: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::doc::openapi(&super::routes().collect::<Vec<_>>()).to_string());

/// The routes of what happens: lists, the event stream, metrics, this API's description and the dashboard.
pub const ROUTES: &[Route] = &[
    Route::get("/", "The live dashboard", || get(dashboard), doc::Reply::Html),
    Route::get("/openapi.json", "This API as an OpenAPI 3.1 document", || get(openapi), doc::Reply::OpenApi),
    Route::get("/metrics", "Prometheus metrics (OpenMetrics text)", || get(metrics), doc::Reply::Metrics),
    Route::get(
        "/events",
        "Server-sent events: `block`, `trade`, `reading` as they commit, `balanced` when a cell's feeder confirmed \
         readings (JSON data), `lagged` with how many a slow reader missed",
        || get(events),
        doc::Reply::Events(doc::schema::<EventData>),
    ),
    Route::get("/blocks", "The newest committed blocks", || get(blocks), doc::json::<Blocks>())
        .statuses(&[200, 400, 503])
        .query(doc::schema::<ListQuery>),
    Route::get("/trades", "The newest settled trades", || get(trades), doc::json::<Trades>())
        .statuses(&[200, 400, 503])
        .query(doc::schema::<TradesQuery>),
    Route::get("/readings", "The newest anchored meter readings", || get(readings), doc::json::<Readings>())
        .statuses(&[200, 400, 503])
        .query(doc::schema::<ReadingsQuery>),
    Route::get(
        "/accounts",
        "Accounts: balances, change since genesis, reputation (paged by key)",
        || get(accounts),
        doc::json::<Accounts>(),
    )
    .statuses(&[200, 400, 503])
    .query(doc::schema::<AccountsQuery>),
    Route::get(
        "/validators",
        "The validator set that certifies the next block",
        || get(validators),
        doc::json::<Validators>(),
    )
    .statuses(&[200, 503]),
    Route::get("/peers", "Connected peers and their gossip scores", || get(peers), doc::json::<Peers>())
        .statuses(&[200, 503]),
];

/// `?limit=`: how many, newest first.
#[derive(Debug, serde::Deserialize, JsonSchema)]
pub struct ListQuery {
    /// How many, newest first (at most 500).
    limit: Option<usize>,
}

/// `/trades`: how many, and which pool's.
#[derive(Debug, serde::Deserialize, JsonSchema)]
pub struct TradesQuery {
    /// How many, newest first (at most 500).
    limit: Option<usize>,
    /// Only this pool's trades: resource/token/cell/interval_s, e.g. energy/credit/u33db/900.
    pool: Option<String>,
}

/// `/readings`: how many, and whose.
#[derive(Debug, serde::Deserialize, JsonSchema)]
pub struct ReadingsQuery {
    /// How many, newest first (at most 500).
    limit: Option<usize>,
    /// Only this account's readings (64 hex digits).
    author: Option<String>,
}

fn limit(limit: Option<usize>, default: usize) -> usize {
    limit.unwrap_or(default).min(LIST_LEN_MAX)
}

/// The newest committed blocks.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Blocks {
    /// Newest first.
    blocks: Vec<crate::feed::BlockView>,
}

/// The newest settled trades.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Trades {
    /// Newest first.
    trades: Vec<crate::feed::TradeView>,
}

/// The newest anchored readings.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Readings {
    /// Newest first.
    readings: Vec<crate::feed::ReadingView>,
}

pub async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI.as_str()).into_response()
}

/// Recent blocks, newest first.
pub async fn blocks(State(context): State<Context>, Query(query): Query<ListQuery>) -> Answer<Blocks> {
    context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    Ok(Json(Blocks { blocks: context.feed.blocks(limit(query.limit, 20)) }))
}

/// Recent settled trades, newest first; `pool` filters.
pub async fn trades(State(context): State<Context>, Query(query): Query<TradesQuery>) -> Answer<Trades> {
    context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    Ok(Json(Trades { trades: context.feed.trades(limit(query.limit, 50), query.pool.as_deref()) }))
}

/// Recent anchored readings, newest first, with their trust level now; `author` filters.
pub async fn readings(State(context): State<Context>, Query(query): Query<ReadingsQuery>) -> Answer<Readings> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let readings = context.feed.readings(limit(query.limit, 50), query.author.as_deref());
    // The level now: a cell's feeder may have confirmed a reading since it was anchored.
    let readings = ledger
        .query(move |state| {
            readings
                .into_iter()
                .map(|mut reading| {
                    let signed = if reading.device_key.is_some() { Trust::Device } else { Trust::Node };
                    if let Ok(author) = protocol::PublicKey::from_hex(&reading.author) {
                        let trust = state.reading_trust(
                            &author,
                            &reading.meter,
                            reading.interval_start_s,
                            reading.interval_s,
                            signed,
                        );
                        reading.trust = trust.name();
                    }
                    reading
                })
                .collect()
        })
        .await?;
    Ok(Json(Readings { readings }))
}

/// `/accounts`: a page of accounts, by key.
#[derive(Debug, serde::Deserialize, JsonSchema)]
pub struct AccountsQuery {
    /// Start after this account (paging): 64 hex digits.
    after: Option<String>,
    /// Accounts per page (at most 1000; default 100).
    limit: Option<usize>,
}

/// A page of accounts, by key.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Accounts {
    /// The height whose state this is.
    height: u64,
    accounts: Vec<AccountView>,
}

/// An account: its balances, their change since genesis, its reputation: an agent's equity.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AccountView {
    /// Its public key, 64 hex digits.
    account: String,
    /// Milli-units by token.
    balances: BTreeMap<String, u64>,
    /// Milli-units by token, since the genesis balances.
    change_since_genesis: BTreeMap<String, i128>,
    reputation: ReputationView,
    /// Its trading tier (PROTOCOL.md §10): what its reputation lets it trade.
    tier: usize,
}

/// An account's record on the ledger.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReputationView {
    trades: u64,
    traded_value: u64,
    readings: u64,
    /// Barter legs it gave that were released as delivered (PROTOCOL.md §10, *barter escrow*).
    barters: u64,
    /// Checked deliveries (at most one a day per counterparty), and how many distinct counterparties they were with.
    deliveries: u64,
    counterparties: u64,
    failures: u64,
    /// Its score, parts per million.
    score_ppm: u32,
}

/// Accounts with their balances, their change since genesis, and their reputation: the agents' equity.
pub async fn accounts(State(context): State<Context>, Query(query): Query<AccountsQuery>) -> Answer<Accounts> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let after = query
        .after
        .as_deref()
        .map(protocol::PublicKey::from_hex)
        .transpose()
        .map_err(|_| ApiError::bad_request("after: an account is 64 hex digits"))?;
    let page = query.limit.unwrap_or(100).min(ACCOUNTS_PAGE_MAX);
    let (height, accounts) = ledger
        .query(move |state| {
            let mut accounts: BTreeMap<protocol::PublicKey, BTreeMap<String, u64>> = BTreeMap::new();
            for (account, token, amount) in state.balances_after(after.as_ref()) {
                if accounts.len() == page && !accounts.contains_key(&account) {
                    break;
                }
                accounts.entry(account).or_default().insert(token.as_str().to_string(), amount);
            }
            let genesis = state.genesis();
            let list = accounts
                .into_iter()
                .map(|(account, balances)| {
                    let reputation = state.reputation(&account);
                    let change_since_genesis = balances
                        .iter()
                        .map(|(token, amount)| {
                            let start: u64 = genesis
                                .balances
                                .iter()
                                .filter(|(key, id, _)| *key == account && id.as_str() == token)
                                .map(|(_, _, amount)| *amount)
                                .sum();
                            (token.clone(), i128::from(*amount) - i128::from(start))
                        })
                        .collect();
                    AccountView {
                        account: account.to_string(),
                        balances,
                        change_since_genesis,
                        reputation: ReputationView {
                            trades: reputation.trades,
                            traded_value: reputation.traded_value,
                            readings: reputation.readings,
                            barters: reputation.barters,
                            deliveries: reputation.deliveries,
                            counterparties: reputation.counterparties,
                            failures: reputation.failures,
                            score_ppm: reputation.score_ppm(),
                        },
                        tier: state.tier(&account),
                    }
                })
                .collect();
            (state.height(), list)
        })
        .await?;
    Ok(Json(Accounts { height, accounts }))
}

/// The validator set.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Validators {
    height: u64,
    validators: Vec<ValidatorView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ValidatorView {
    /// Its public key, 64 hex digits.
    key: String,
    /// Its voting power.
    power: u64,
    /// Its name in the genesis file, if it is there.
    name: Option<String>,
    /// Whether it is this node.
    this_node: bool,
}

/// The validator set that certifies the next block.
pub async fn validators(State(context): State<Context>) -> Answer<Validators> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let me = context.signer.public();
    let names: Vec<(protocol::PublicKey, String)> =
        ledger.genesis().validators.iter().map(|validator| (validator.key, validator.name.clone())).collect();
    let (height, set) = ledger.query(|state| (state.height(), state.validators())).await?;
    let validators = set
        .iter()
        .map(|(key, power)| ValidatorView {
            key: key.to_string(),
            power: *power,
            name: names.iter().find(|(name_key, _)| name_key == key).map(|(_, name)| name.clone()),
            this_node: *key == me,
        })
        .collect();
    Ok(Json(Validators { height, validators }))
}

/// This node's peers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Peers {
    /// This node's libp2p peer id.
    peer_id: String,
    /// The addresses it listens on.
    listen: Vec<String>,
    /// Whether it is reachable from outside (AutoNAT's verdict).
    nat: String,
    peers: Vec<PeerView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PeerView {
    peer_id: String,
    /// Its gossipsub score, when gossipsub keeps one.
    score: Option<f64>,
}

/// Connected peers with their gossip scores.
pub async fn peers(State(context): State<Context>) -> Answer<Peers> {
    let info = context.network.info().await.map_err(|problem| ApiError::unavailable(problem.to_string()))?;
    let mut peers = Vec::new();
    for peer in info.peers.iter().take(LIST_LEN_MAX) {
        let score = context.network.peer_score(*peer).await.ok().flatten();
        peers.push(PeerView { peer_id: peer.to_string(), score });
    }
    Ok(Json(Peers {
        peer_id: info.peer_id.to_string(),
        listen: info.listen.iter().map(ToString::to_string).collect(),
        nat: info.nat,
        peers,
    }))
}

/// The open event streams, oldest first: at most [`EVENT_STREAMS_MAX`].
#[derive(Clone, Default)]
pub struct Streams(Arc<std::sync::Mutex<OpenStreams>>);

#[derive(Default)]
struct OpenStreams {
    next: u64,
    /// Oldest first: id, client address (`None`: unknown or loopback), and the signal that closes the stream.
    open: std::collections::VecDeque<(u64, Option<std::net::IpAddr>, Arc<tokio::sync::Notify>)>,
}

impl Streams {
    /// A place for a new stream of `client`: the client's own oldest stream is told to close when it holds its
    /// share (beyond loopback), else the oldest of all when all are taken.
    fn open(&self, client: Option<std::net::IpAddr>) -> StreamSlot {
        let client = client.filter(|address| !address.is_loopback());
        let close = Arc::new(tokio::sync::Notify::new());
        let mut streams = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let own =
            |streams: &OpenStreams| streams.open.iter().filter(|(_, of, _)| client.is_some() && *of == client).count();
        if own(&streams) >= EVENT_STREAMS_PER_CLIENT_MAX
            && let Some(index) = streams.open.iter().position(|(_, of, _)| *of == client)
            && let Some((_, _, oldest)) = streams.open.remove(index)
        {
            oldest.notify_one();
        }
        while streams.open.len() >= EVENT_STREAMS_MAX {
            if let Some((_, _, oldest)) = streams.open.pop_front() {
                oldest.notify_one();
            }
        }
        let id = streams.next;
        streams.next += 1;
        streams.open.push_back((id, client, close.clone()));
        StreamSlot { streams: self.clone(), id, close }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |streams| streams.open.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open stream's place; given back when the stream ends.
struct StreamSlot {
    streams: Streams,
    id: u64,
    close: Arc<tokio::sync::Notify>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.open.retain(|(id, _, _)| *id != self.id);
    }
}

/// The data of a `lagged` event: how many events a slow reader missed.
#[derive(Debug, Serialize, JsonSchema)]
struct Lagged {
    missed: u64,
}

/// The `data` of an event on `/events`: a committed block, trade or reading (`type` says which, as does the
/// event's name), or for a `lagged` event how many events a slow reader missed.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only its schema is used: the stream writes the two types it joins.
enum EventData {
    Commit(crate::feed::Event),
    Lagged(Lagged),
}

/// Server-sent events: `block`, `trade` and `reading` as they commit (JSON `data`), and `lagged` with how many
/// events a slow reader missed. When [`EVENT_STREAMS_MAX`] are open, the oldest ends to make room.
pub async fn events(State(context): State<Context>, extensions: axum::http::Extensions) -> Response {
    let client = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip());
    let slot = context.event_streams.open(client);
    let receiver = context.feed.subscribe();
    Sse::new(event_stream(receiver, slot))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn event_stream(
    receiver: broadcast::Receiver<Arc<crate::feed::Event>>,
    slot: StreamSlot,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold((receiver, slot), |(mut receiver, slot)| async move {
        let received = tokio::select! {
            received = receiver.recv() => received,
            // A newer stream took this one's place.
            () = slot.close.notified() => return None,
        };
        let event = match received {
            Ok(event) => {
                let data = serde_json::to_string(&*event).unwrap_or_else(|_| "{}".into());
                SseEvent::default().event(event.name()).data(data)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let data = serde_json::to_string(&Lagged { missed }).unwrap_or_else(|_| "{}".into());
                SseEvent::default().event("lagged").data(data)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (receiver, slot)))
    })
}

/// Prometheus metrics (OpenMetrics text).
pub async fn metrics(State(context): State<Context>) -> Response {
    let peers = context.network.info().await.map(|info| info.peers.len() as u64).unwrap_or(0);
    let ledger = context.ledger.as_ref().map(|ledger| {
        let status = ledger.status();
        LedgerSnapshot {
            height: status.height,
            round: status.round,
            mempool_entries: status.mempool_entries as u64,
            validators: status.validators as u64,
            validator: status.validator,
            committed_entries: status.committed_entries,
            syncing: status.syncing_to.is_some(),
            state_sync: status.state_sync.map(|progress| (progress.done, progress.chunks)),
            state_pairs: status.state_pairs as u64,
        }
    });
    let meter = context.meter.as_ref().map(|meter| {
        let status = meter.status();
        MeterSnapshot {
            samples: status.samples,
            sample_errors: status.sample_errors,
            readings_published: status.readings_published,
            readings_refused: status.readings_refused,
            intervals_missed: status.intervals_missed,
        }
    });
    let (rocksdb, rocksdb_block_cache) = match context.ledger.as_ref() {
        Some(ledger) => {
            let reader = ledger.reader().clone();
            let sizes = tokio::task::spawn_blocking(move || (reader.sizes(), reader.block_cache_bytes())).await;
            sizes.map_or_else(|_| (Vec::new(), None), |(sizes, cache)| (sizes, Some(cache)))
        }
        None => (Vec::new(), None),
    };
    let snapshot = Snapshot {
        peers,
        churn: metrics::churn(context.network.stats()),
        gossip: metrics::gossip(context.network.stats()),
        ledger,
        market: context.market.as_ref().map(crate::market::Handle::stats),
        meter,
        rocksdb,
        rocksdb_block_cache,
    };
    match metrics::render(&context.metrics, snapshot) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => ApiError::internal("encoding the metrics failed").into_response(),
    }
}
