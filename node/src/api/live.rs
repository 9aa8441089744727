//! The API's views of what happens: recent blocks, trades and readings, accounts, validators, peers, a stream of
//! server-sent events, Prometheus metrics, the OpenAPI document and the dashboard.

use ::ledger::reads::*;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use libp2p::futures::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast;

use super::{Context, error, ledger_error, no_ledger};
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
/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    pool: Option<String>,
    author: Option<String>,
}

fn limit(query: &ListQuery, default: usize) -> usize {
    query.limit.unwrap_or(default).min(LIST_LEN_MAX)
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
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Recent blocks, newest first.
pub async fn blocks(State(context): State<Context>, Query(query): Query<ListQuery>) -> Response {
    if context.ledger.is_none() {
        return no_ledger();
    }
    Json(json!({ "blocks": context.feed.blocks(limit(&query, 20)) })).into_response()
}

/// Recent settled trades, newest first; `pool` filters.
pub async fn trades(State(context): State<Context>, Query(query): Query<ListQuery>) -> Response {
    if context.ledger.is_none() {
        return no_ledger();
    }
    Json(json!({ "trades": context.feed.trades(limit(&query, 50), query.pool.as_deref()) })).into_response()
}

/// Recent anchored readings, newest first; `author` filters.
pub async fn readings(State(context): State<Context>, Query(query): Query<ListQuery>) -> Response {
    if context.ledger.is_none() {
        return no_ledger();
    }
    Json(json!({ "readings": context.feed.readings(limit(&query, 50), query.author.as_deref()) })).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct AccountsQuery {
    /// Start after this account (paging).
    after: Option<String>,
    limit: Option<usize>,
}

/// Accounts with their balances, their change since genesis, and their reputation: the agents' equity.
pub async fn accounts(State(context): State<Context>, Query(query): Query<AccountsQuery>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let after = match query.after.as_deref().map(protocol::PublicKey::from_hex).transpose() {
        Ok(after) => after,
        Err(_) => return error(StatusCode::BAD_REQUEST, "after: an account is 64 hex digits"),
    };
    let page = query.limit.unwrap_or(100).min(ACCOUNTS_PAGE_MAX);
    let read = ledger
        .query(move |state| {
            let height = state.height();
            let mut accounts: std::collections::BTreeMap<protocol::PublicKey, Vec<(String, u64)>> = Default::default();
            for (account, token, amount) in state.balances_after(after.as_ref()) {
                if accounts.len() == page && !accounts.contains_key(&account) {
                    break;
                }
                accounts.entry(account).or_default().push((token.as_str().to_string(), amount));
            }
            let genesis = state.genesis();
            let list: Vec<serde_json::Value> = accounts
                .into_iter()
                .map(|(account, balances)| {
                    let reputation = state.reputation(&account);
                    let change: serde_json::Map<String, serde_json::Value> = balances
                        .iter()
                        .map(|(token, amount)| {
                            let start: u64 = genesis
                                .balances
                                .iter()
                                .filter(|(key, id, _)| *key == account && id.as_str() == token)
                                .map(|(_, _, amount)| *amount)
                                .sum();
                            (token.clone(), json!(i128::from(*amount) - i128::from(start)))
                        })
                        .collect();
                    let balances: serde_json::Map<String, serde_json::Value> =
                        balances.into_iter().map(|(token, amount)| (token, json!(amount))).collect();
                    json!({
                        "account": account.to_string(),
                        "balances": balances,
                        "change_since_genesis": change,
                        "reputation": {
                            "trades": reputation.trades,
                            "traded_value": reputation.traded_value,
                            "readings": reputation.readings,
                            "deliveries": reputation.deliveries,
                            "failures": reputation.failures,
                            "score_ppm": reputation.score_ppm(),
                        },
                        "tier": state.tier(&account),
                    })
                })
                .collect();
            (height, list)
        })
        .await;
    match read {
        Ok((height, list)) => Json(json!({ "height": height, "accounts": list })).into_response(),
        Err(failed) => ledger_error(&failed),
    }
}

/// The validator set that certifies the next block.
pub async fn validators(State(context): State<Context>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let me = context.signer.public();
    let names: Vec<(protocol::PublicKey, String)> =
        ledger.genesis().validators.iter().map(|validator| (validator.key, validator.name.clone())).collect();
    match ledger.query(|state| (state.height(), state.validators())).await {
        Ok((height, set)) => {
            let list: Vec<serde_json::Value> = set
                .iter()
                .map(|(key, power)| {
                    json!({
                        "key": key.to_string(),
                        "power": power,
                        "name": names.iter().find(|(name_key, _)| name_key == key).map(|(_, name)| name.clone()),
                        "this_node": *key == me,
                    })
                })
                .collect();
            Json(json!({ "height": height, "validators": list })).into_response()
        }
        Err(failed) => ledger_error(&failed),
    }
}

/// Connected peers with their gossip scores.
pub async fn peers(State(context): State<Context>) -> Response {
    let info = match context.network.info().await {
        Ok(info) => info,
        Err(problem) => return error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    };
    let mut list = Vec::new();
    for peer in info.peers.iter().take(LIST_LEN_MAX) {
        let score = context.network.peer_score(*peer).await.ok().flatten();
        list.push(json!({ "peer_id": peer.to_string(), "score": score }));
    }
    Json(json!({
        "peer_id": info.peer_id.to_string(),
        "listen": info.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "nat": info.nat,
        "peers": list,
    }))
    .into_response()
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
                SseEvent::default().event("lagged").data(json!({ "missed": missed }).to_string())
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
    let rocksdb = match context.ledger.as_ref() {
        Some(ledger) => {
            let reader = ledger.reader().clone();
            tokio::task::spawn_blocking(move || reader.sizes()).await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let snapshot = Snapshot {
        peers,
        gossip: metrics::gossip(context.network.stats()),
        ledger,
        market: context.market.as_ref().map(crate::market::Handle::stats),
        meter,
        rocksdb,
    };
    match metrics::render(&context.metrics, snapshot) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed"),
    }
}
