//! The market actor: owns the matching engine ([`market::pools::Market`]), feeds it the offers and cancels of the
//! pools the node serves (gossiped or its own), ticks it once a second, keeps it in step with the fills the ledger
//! commits, and settles the matches in which this node is the seller. It also keeps the board of open barter offers
//! and submits the cycles whose first leg (lowest offer id) is this node's.
//!
//! Who settles: every node that serves a pool computes the same matches from the same offers, so exactly one
//! party submits each — the seller (the ask's author). When nodes saw different offers their settlements may
//! collide; the ledger refuses a fill beyond an offer's quantity, so nothing is settled twice, and the fills it
//! commits reduce every node's books.

use ::ledger::reads::*;
use ::ledger::store::StateSnapshot;
use std::sync::Arc;
use std::time::Duration;

use ::ledger as ledger_crate;
use ::market::pools::{Depth, Input, Limits, Market, Output};
use protocol::message::{BarterCycle, BarterLeg, Body, PoolId, Settlement};
use protocol::types::BoundedVec;
use protocol::{Envelope, Id, PublicKey};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::ledger;

/// Commands queued to the actor before it refuses more.
pub const MAILBOX_LEN_MAX: usize = 4096;
/// How often interval auctions are checked for their gate and expired offers dropped.
const TICK: Duration = Duration::from_secs(1);
/// Barter offers kept on the board.
const BARTER_OFFERS_MAX: usize = 10_000;
/// Search steps for barter cycles per tick.
const BARTER_EXPANSIONS_MAX: usize = 200_000;
/// Lifetime of a settlement entry.
const SETTLEMENT_LIFETIME_MS: u64 = 10 * 60 * 1000;

enum Command {
    /// An offer, with where to say whether the market took it (the node's own offers).
    Offer {
        envelope: Arc<Envelope>,
        reply: Option<oneshot::Sender<Result<(), Refused>>>,
    },
    Barter {
        envelope: Arc<Envelope>,
        reply: Option<oneshot::Sender<Result<(), Refused>>>,
    },
    Cancel {
        offer: Id,
        author: PublicKey,
    },
    Depth {
        pool: PoolId,
        levels: usize,
        reply: oneshot::Sender<Option<Depth>>,
    },
    Pools {
        reply: oneshot::Sender<Vec<PoolId>>,
    },
}

/// Why the market did not take an offer in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the market is busy; try again")]
    Busy,
    #[error("the market has stopped")]
    Stopped,
    /// The ledger's state (the pool's rules, a freeze) could not be read: the offer is refused, never taken as if
    /// the read had found nothing.
    #[error("{0}")]
    Ledger(String),
    #[error("the pool's token {0} is not a token of this network's genesis")]
    UnknownToken(protocol::types::TokenId),
    #[error("this account's trading is frozen by override {by} until height {until_height}")]
    Frozen { by: Id, until_height: u64 },
    #[error("{0}")]
    Market(::market::pools::Refusal),
    #[error("{0}")]
    Barter(::market::barter::Refusal),
}

impl Refused {
    fn ledger(error: crate::ledger::Error) -> Self {
        match error {
            crate::ledger::Error::Stopped => Refused::Stopped,
            error => Refused::Ledger(error.to_string()),
        }
    }
}

/// What the actor has done, for the API and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub offers: u64,
    pub refused: u64,
    pub matches: u64,
    pub settlements_submitted: u64,
    pub settlements_refused: u64,
    pub matched_quantity: u64,
    pub barter_offers: u64,
    /// Offers and barter offers refused because an override froze their author's trading.
    pub frozen: u64,
    pub barter_cycles_found: u64,
    pub barter_cycles_submitted: u64,
}

/// A cloneable handle to the market actor.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    stats: tokio::sync::watch::Receiver<Stats>,
    gate_lead_ms: u64,
}

impl Handle {
    /// A validated offer of a served pool (gossiped). `false` when the actor is overloaded.
    pub fn offer(&self, envelope: Arc<Envelope>) -> bool {
        self.commands.try_send(Command::Offer { envelope, reply: None }).is_ok()
    }

    /// One of this node's own offers: `Ok` once the market took it into its pool, else why not.
    pub async fn place(&self, envelope: Arc<Envelope>) -> Result<(), Refused> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(Command::Offer { envelope, reply: Some(reply) }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Refused::Busy,
            mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
        })?;
        answer.await.map_err(|_| Refused::Stopped)?
    }

    /// A validated barter offer (gossiped). `false` when the actor is overloaded.
    pub fn barter(&self, envelope: Arc<Envelope>) -> bool {
        self.commands.try_send(Command::Barter { envelope, reply: None }).is_ok()
    }

    /// One of this node's own barter offers: `Ok` once it is on the board, else why not.
    pub async fn place_barter(&self, envelope: Arc<Envelope>) -> Result<(), Refused> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(Command::Barter { envelope, reply: Some(reply) }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Refused::Busy,
            mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
        })?;
        answer.await.map_err(|_| Refused::Stopped)?
    }

    /// A validated cancel.
    pub fn cancel(&self, offer: Id, author: PublicKey) -> bool {
        self.commands.try_send(Command::Cancel { offer, author }).is_ok()
    }

    /// A pool's open offers by price level.
    pub async fn depth(&self, pool: PoolId, levels: usize) -> Option<Depth> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Depth { pool, levels, reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    /// The pools with offers or books.
    pub async fn pools(&self) -> Vec<PoolId> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Pools { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    /// The start of the first delivery interval of `pool` this market still takes offers for at `now_ms`.
    pub fn first_open_delivery_s(&self, pool: &PoolId, now_ms: u64) -> u64 {
        ::market::pools::first_open_delivery_s(pool, now_ms, self.gate_lead_ms)
    }
}

/// Starts the actor on the current tokio runtime.
pub fn spawn(
    signer: Arc<crate::signer::Signer>,
    ledger: ledger::Handle,
    limits: Limits,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let (commands, inbox) = mpsc::channel(MAILBOX_LEN_MAX);
    let (stats_sender, stats) = tokio::sync::watch::channel(Stats::default());
    let actor = Actor {
        signer,
        ledger,
        market: Market::new(limits),
        board: ::market::barter::Board::new(BARTER_OFFERS_MAX),
        stats: Stats::default(),
    };
    let task = tokio::spawn(actor.run(inbox, stats_sender));
    (Handle { commands, stats, gate_lead_ms: limits.gate_lead_ms }, task)
}

struct Actor {
    signer: Arc<crate::signer::Signer>,
    ledger: ledger::Handle,
    market: Market,
    board: ::market::barter::Board,
    stats: Stats,
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>, stats: tokio::sync::watch::Sender<Stats>) {
        let mut commits = self.ledger.follow();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = inbox.recv() => {
                    let Some(command) = command else { break };
                    self.command(command).await;
                }
                commit = commits.next() => {
                    let Some(commit) = commit else { break };
                    self.committed(&commit);
                    self.withdraw_frozen(&commit).await;
                }
                _ = tick.tick() => {
                    let outputs = self.market.handle(now_ms(), Input::Tick);
                    self.act(outputs).await;
                    let cycles = self.board.search(now_ms(), protocol::limits::BARTER_LEGS_MAX, BARTER_EXPANSIONS_MAX);
                    for cycle in cycles {
                        self.stats.barter_cycles_found += 1;
                        if cycle.first().is_some_and(|(first, _)| first.author == self.signer.public()) {
                            self.submit_cycle(cycle).await;
                        }
                    }
                }
            }
            stats.send_if_modified(|published| {
                let changed = *published != self.stats;
                *published = self.stats.clone();
                changed
            });
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Offer { envelope, reply } => {
                let verdict = self.offer(envelope).await;
                if let Some(reply) = reply {
                    let _ = reply.send(verdict);
                }
            }
            Command::Barter { envelope, reply } => {
                let verdict = self.barter(envelope).await;
                if let Some(reply) = reply {
                    let _ = reply.send(verdict);
                }
            }
            Command::Cancel { offer, author } => {
                let outputs = self.market.handle(now_ms(), Input::Cancel { offer, author });
                self.act(outputs).await;
            }
            Command::Depth { pool, levels, reply } => {
                let _ = reply.send(self.market.depth(&pool, levels));
            }
            Command::Pools { reply } => {
                let _ = reply.send(self.market.pools().cloned().collect());
            }
        }
    }

    /// Takes a barter offer onto the board, or says why not.
    async fn barter(&mut self, envelope: Arc<Envelope>) -> Result<(), Refused> {
        let author = envelope.author;
        // A freeze that cannot be read refuses the offer (as a pool offer is): never taken as no freeze.
        let frozen = self.ledger.query(move |state| state.frozen(&author)).await.map_err(Refused::ledger)?;
        if let Some(in_force) = frozen {
            self.stats.frozen += 1;
            debug!(%author, "barter offer of a frozen account refused");
            return Err(Refused::Frozen { by: in_force.by, until_height: in_force.until_height });
        }
        match self.board.offer(now_ms(), envelope) {
            Ok(()) => {
                self.stats.barter_offers += 1;
                Ok(())
            }
            Err(reason) => {
                debug!(%reason, "barter offer not taken onto the board");
                Err(Refused::Barter(reason))
            }
        }
    }

    /// Takes an offer into its pool, with the pool's rules from the ledger, or says why not.
    async fn offer(&mut self, envelope: Arc<Envelope>) -> Result<(), Refused> {
        let Body::Offer(offer) = &envelope.body else {
            return Err(Refused::Market(::market::pools::Refusal::NotAnOffer));
        };
        let pool = offer.pool.clone();
        // A pool of a token the genesis does not know could never settle: its offers take no place.
        if self.ledger.genesis().token(&pool.token).is_none() {
            self.stats.refused += 1;
            return Err(Refused::UnknownToken(pool.token));
        }
        let author = envelope.author;
        // The period whose base price is the offer's floor: its delivery interval, or this hour.
        let period_s = if pool.interval_s == 0 { now_ms() / 1000 / 3600 * 3600 } else { offer.delivery_start_s };
        let now_s = now_ms() / 1000;
        let read =
            move |state: &StateSnapshot<'_>| (state.pool_rules_for(&pool, period_s, now_s), state.frozen(&author));
        let (rules, frozen) = self.ledger.query(read).await.map_err(Refused::ledger)?;
        // An override froze the author's trading: every honest node refuses its offers.
        if let Some(in_force) = frozen {
            self.stats.frozen += 1;
            debug!(%author, by = %in_force.by, until = in_force.until_height, "offer of a frozen account refused");
            return Err(Refused::Frozen { by: in_force.by, until_height: in_force.until_height });
        }
        self.stats.offers += 1;
        let id = envelope.id();
        let outputs = self.market.handle(now_ms(), Input::Offer { envelope, rules });
        let refusal = outputs.iter().find_map(|output| match output {
            Output::Refused { offer, reason } if *offer == id => Some(*reason),
            _ => None,
        });
        self.act(outputs).await;
        refusal.map_or(Ok(()), |reason| Err(Refused::Market(reason)))
    }

    /// An override that froze an account's trading takes its resting offers out of the books at once.
    async fn withdraw_frozen(&mut self, commit: &ledger_crate::consensus::engine::Commit) {
        let passed: Vec<protocol::Id> = commit
            .events
            .iter()
            .filter_map(|event| match event {
                ledger_crate::state::Event::OverrideInForce { proposal, .. } => Some(*proposal),
                _ => None,
            })
            .collect();
        if passed.is_empty() {
            return;
        }
        let read = self.ledger.query(move |state| {
            state
                .overrides()
                .filter(|(id, _)| passed.contains(id))
                .filter_map(|(_, record)| match record.measure {
                    protocol::message::Measure::Freeze(freeze) => Some(freeze.account),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        // The ledger refuses a frozen account's trades whatever the books hold; a freeze that cannot be read here
        // only leaves its offers resting until they expire.
        let frozen = read.await.unwrap_or_else(|error| {
            warn!(%error, "the accounts an override froze could not be read; their offers stay in the books");
            Vec::new()
        });
        for author in frozen {
            let _ = self.market.handle(now_ms(), Input::Withdraw { author });
            self.board.withdraw(&author);
            debug!(%author, "a frozen account's offers left the books");
        }
    }

    /// Fills the ledger committed reduce the books, whoever settled them.
    fn committed(&mut self, commit: &ledger_crate::consensus::engine::Commit) {
        for event in &commit.events {
            match event {
                ledger_crate::state::Event::TradeSettled { bid, ask, quantity, .. } => {
                    for offer in [*bid, *ask] {
                        let _ = self.market.handle(now_ms(), Input::Filled { offer, quantity: *quantity });
                    }
                }
                ledger_crate::state::Event::BarterSettled { legs, .. } => {
                    for (offer, quantity) in legs {
                        self.board.filled(offer, *quantity);
                    }
                }
                _ => {}
            }
        }
    }

    async fn act(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Match(found) => {
                    self.stats.matches += 1;
                    self.stats.matched_quantity = self.stats.matched_quantity.saturating_add(found.quantity);
                    if found.ask.author != self.signer.public() {
                        continue;
                    }
                    self.settle(found).await;
                }
                Output::Refused { offer, reason } => {
                    self.stats.refused += 1;
                    debug!(%offer, %reason, "offer not taken into the market");
                }
                Output::Cleared { pool, delivery_start_s, price, volume, trades } => {
                    info!(%pool, delivery_start_s, ?price, volume, trades, "interval auction cleared");
                }
            }
        }
    }

    /// Submits a barter cycle found on the board, all legs at once (the ledger settles it atomically).
    async fn submit_cycle(&mut self, cycle: ::market::barter::FoundCycle) {
        let legs: Vec<BarterLeg> = cycle
            .iter()
            .map(|(offer, give_quantity)| BarterLeg { offer: (**offer).clone(), give_quantity: *give_quantity })
            .collect();
        let count = legs.len();
        let Ok(legs) = BoundedVec::new(legs) else { return };
        let created_ms = now_ms();
        let expires_ms = created_ms.saturating_add(SETTLEMENT_LIFETIME_MS);
        let envelope = match self.signer.sign(Body::BarterCycle(BarterCycle { legs }), created_ms, expires_ms) {
            Ok(envelope) => envelope,
            Err(error) => {
                warn!(error = %format!("{error:#}"), legs = count, "a barter cycle could not be signed");
                return;
            }
        };
        match self.ledger.submit(envelope.to_bytes()).await {
            Ok(id) => {
                self.stats.barter_cycles_submitted += 1;
                info!(cycle = %id, legs = count, "settling a barter cycle");
            }
            Err(error) => warn!(%error, legs = count, "a barter cycle was refused"),
        }
    }

    async fn settle(&mut self, found: ::market::pools::Match) {
        let created_ms = now_ms();
        let (quantity, unit_price) = (found.quantity, found.unit_price);
        let settlement = Settlement {
            bid: Box::new((*found.bid).clone()),
            ask: Box::new((*found.ask).clone()),
            quantity,
            unit_price,
            mechanism: found.mechanism,
        };
        let expires_ms = created_ms.saturating_add(SETTLEMENT_LIFETIME_MS);
        let envelope = match self.signer.sign(Body::Settlement(settlement), created_ms, expires_ms) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.stats.settlements_refused += 1;
                warn!(error = %format!("{error:#}"), quantity, unit_price, "a settlement could not be signed");
                return;
            }
        };
        match self.ledger.submit(envelope.to_bytes()).await {
            Ok(id) => {
                self.stats.settlements_submitted += 1;
                info!(settlement = %id, buyer = %found.bid.author, quantity, unit_price, "settling a sale");
            }
            Err(error) => {
                self.stats.settlements_refused += 1;
                warn!(%error, quantity, unit_price, "a settlement was refused");
            }
        }
    }
}
