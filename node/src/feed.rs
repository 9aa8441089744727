//! What the ledger commits, as the API, the dashboard and the metrics see it: recent blocks, settled trades and
//! anchored readings in bounded rings, and a broadcast of each as it commits (the API's server-sent events).
//!
//! The feed follows the ledger's commits; at start it fills its rings from the last blocks in the store, so a
//! restarted node shows its recent history at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ::ledger::consensus::engine::Commit;
use ::ledger::state::Event as LedgerEvent;
use protocol::message::Mechanism;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::ledger;
use crate::metrics::Metrics;

/// Blocks kept for `/blocks`.
pub const RECENT_BLOCKS_MAX: usize = 128;
/// Trades kept for `/trades`.
pub const RECENT_TRADES_MAX: usize = 512;
/// Readings kept for `/readings`.
pub const RECENT_READINGS_MAX: usize = 512;
/// Events queued per subscriber; a subscriber further behind skips the oldest (it is told how many).
pub const EVENTS_QUEUE_LEN: usize = 1024;
/// Blocks read from the store at start.
const BACKFILL_BLOCKS: u64 = 64;

/// A committed block, briefly.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "RecentBlock")]
pub struct BlockView {
    pub height: u64,
    pub hash: String,
    /// The proposer's clock when it proposed the block, Unix ms.
    pub time_ms: u64,
    pub proposer: String,
    pub entries: u32,
}

/// A settled trade: a bid matched with an ask and put in escrow by the ledger.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TradeView {
    /// The settlement entry's id.
    pub id: String,
    pub height: u64,
    pub time_ms: u64,
    pub pool: String,
    pub resource: String,
    pub token: String,
    pub buyer: String,
    pub seller: String,
    /// In the resource's unit (Wh for energy, milli-units otherwise).
    pub quantity: u64,
    /// Token milli-units per 1000 quantity units (per kWh for energy).
    pub unit_price: u64,
    pub mechanism: &'static str,
    pub delivery_start: u64,
}

/// A meter reading anchored in the ledger.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "AnchoredReading")]
pub struct ReadingView {
    pub id: String,
    pub height: u64,
    pub author: String,
    pub meter: String,
    pub interval_start_s: u64,
    pub interval_s: u32,
    pub import_wh: u64,
    pub export_wh: u64,
    pub generation_wh: u64,
    pub consumption_wh: u64,
    /// How it is attested (PROTOCOL.md §10, *trust levels*): `node` (its author's signature only) or `device` (also
    /// the meter's registered device, which the ledger checked); `balanced` or `device+balanced` once its cell's
    /// feeder confirmed it (`GET /readings` shows the level now; the event stream, as anchored, then a `balanced`
    /// event).
    pub trust: &'static str,
    /// The device key that signed it, when one did.
    pub device_key: Option<String>,
}

/// A cell's feeder confirmed these accounts' readings of an interval: they reached the `balanced` trust level.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BalancedView {
    pub height: u64,
    pub cell: String,
    pub interval_start_s: u64,
    pub interval_s: u32,
    /// Whose readings (64 hex digits each).
    pub authors: Vec<String>,
}

/// One event of the stream.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Block(BlockView),
    Trade(TradeView),
    Reading(ReadingView),
    Balanced(BalancedView),
}

impl Event {
    /// The server-sent event's name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Block(_) => "block",
            Event::Trade(_) => "trade",
            Event::Reading(_) => "reading",
            Event::Balanced(_) => "balanced",
        }
    }
}

#[derive(Default)]
struct Recent {
    blocks: VecDeque<BlockView>,
    trades: VecDeque<TradeView>,
    readings: VecDeque<ReadingView>,
    /// The last height taken in.
    height: u64,
}

fn push<T>(ring: &mut VecDeque<T>, item: T, max: usize) {
    if ring.len() == max {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// A cloneable handle to the feed.
#[derive(Clone)]
pub struct Feed {
    recent: Arc<Mutex<Recent>>,
    events: broadcast::Sender<Arc<Event>>,
}

fn mechanism_name(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::ContinuousDoubleAuction => "continuous-double-auction",
        Mechanism::PayAsClear => "pay-as-clear",
        Mechanism::PayAsBid => "pay-as-bid",
        Mechanism::MidMarketRate => "mid-market-rate",
        Mechanism::SupplyDemandRatio => "supply-demand-ratio",
    }
}

/// The events of one block: itself, then its trades and readings in block order.
pub fn events_of(commit: &Commit) -> Vec<Event> {
    let height = commit.height;
    let header = commit.block.header();
    let mut events = vec![Event::Block(BlockView {
        height,
        hash: commit.block.hash().to_string(),
        time_ms: header.time_ms,
        proposer: header.proposer.to_string(),
        entries: header.entry_count,
    })];
    for event in &commit.events {
        match event {
            LedgerEvent::TradeSettled {
                settlement,
                pool,
                buyer,
                seller,
                quantity,
                unit_price,
                mechanism,
                delivery_start_s,
                ..
            } => events.push(Event::Trade(TradeView {
                id: settlement.to_hex(),
                height,
                time_ms: header.time_ms,
                pool: pool.to_string(),
                resource: pool.resource.to_string(),
                token: pool.token.to_string(),
                buyer: buyer.to_string(),
                seller: seller.to_string(),
                quantity: *quantity,
                unit_price: *unit_price,
                mechanism: mechanism_name(*mechanism),
                delivery_start: *delivery_start_s,
            })),
            LedgerEvent::ReadingAnchored { id, author, reading } => events.push(Event::Reading(ReadingView {
                id: id.to_hex(),
                height,
                author: author.to_string(),
                meter: reading.meter.to_string(),
                interval_start_s: reading.interval_start_s,
                interval_s: reading.interval_s,
                import_wh: reading.import_wh,
                export_wh: reading.export_wh,
                generation_wh: reading.generation_wh,
                consumption_wh: reading.consumption_wh,
                trust: protocol::message::Trust::of(reading).name(),
                device_key: reading.device.as_slice().first().map(|attestation| attestation.key().to_string()),
            })),
            LedgerEvent::ReadingsBalanced { cell, interval_start_s, interval_s, authors } => {
                events.push(Event::Balanced(BalancedView {
                    height,
                    cell: cell.clone(),
                    interval_start_s: *interval_start_s,
                    interval_s: *interval_s,
                    authors: authors.iter().map(ToString::to_string).collect(),
                }));
            }
            _ => {}
        }
    }
    events
}

impl Feed {
    /// An empty feed (a node without a ledger has nothing to show).
    pub fn empty() -> Feed {
        let (events, _) = broadcast::channel(EVENTS_QUEUE_LEN);
        Feed { recent: Arc::new(Mutex::new(Recent::default())), events }
    }

    /// Starts following the ledger's commits from the store's last blocks, so the rings fill as soon as it starts
    /// (a store whose tip cannot be read: from the next commit on).
    pub fn spawn(ledger: &ledger::Handle, metrics: Metrics) -> Feed {
        let feed = Feed::empty();
        let (commits, tip) = match ledger.reader().tip() {
            Ok(tip) => (ledger.follow_from(tip.saturating_sub(BACKFILL_BLOCKS - 1).max(1)), tip),
            Err(_) => (ledger.follow(), 0),
        };
        tokio::spawn(feed.clone().follow(commits, tip, ledger.clone(), metrics));
        feed
    }

    fn take(&self, height: u64, events: &[Event]) -> bool {
        let Ok(mut recent) = self.recent.lock() else { return false };
        if height <= recent.height {
            return false;
        }
        recent.height = height;
        for event in events {
            match event {
                Event::Block(block) => push(&mut recent.blocks, block.clone(), RECENT_BLOCKS_MAX),
                Event::Trade(trade) => push(&mut recent.trades, trade.clone(), RECENT_TRADES_MAX),
                Event::Reading(reading) => push(&mut recent.readings, reading.clone(), RECENT_READINGS_MAX),
                Event::Balanced(_) => {}
            }
        }
        true
    }

    /// Takes every commit in; the ones up to `backfill` (the tip at start) only fill the rings.
    async fn follow(self, mut commits: ledger::Follower, backfill: u64, ledger: ledger::Handle, metrics: Metrics) {
        while let Some(commit) = commits.next().await {
            let events = events_of(&commit);
            if !self.take(commit.height, &events) || commit.height <= backfill {
                continue;
            }
            // A block synced, or read back late from the store, says nothing about finality.
            let live = ledger.status().syncing_to.is_none() && !commits.last_read_back();
            metrics.committed(&commit, live, crate::clock::now_ms());
            for event in events {
                // No subscriber is not an error.
                let _ = self.events.send(Arc::new(event));
            }
        }
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The newest blocks, newest first.
    pub fn blocks(&self, limit: usize) -> Vec<BlockView> {
        self.recent.lock().map(|recent| recent.blocks.iter().rev().take(limit).cloned().collect()).unwrap_or_default()
    }

    /// The newest trades, newest first, of one pool or all.
    pub fn trades(&self, limit: usize, pool: Option<&str>) -> Vec<TradeView> {
        self.recent
            .lock()
            .map(|recent| {
                recent
                    .trades
                    .iter()
                    .rev()
                    .filter(|trade| pool.is_none_or(|pool| trade.pool == pool))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The newest readings, newest first, of one author or all.
    pub fn readings(&self, limit: usize, author: Option<&str>) -> Vec<ReadingView> {
        self.recent
            .lock()
            .map(|recent| {
                recent
                    .readings
                    .iter()
                    .rev()
                    .filter(|reading| author.is_none_or(|author| reading.author == author))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
