//! The market actor: the IO shell of the node's trader ([`crate::app::trader`], pure code that holds the books,
//! the barter board and the rules of who settles). It feeds the trader the offers and cancels of the pools the node
//! serves (gossiped or its own) with what the ledger's last commit says of them, ticks it once a second, passes it
//! the ledger's commits, and does what the trader asks: it signs and submits the settlements in which this node is
//! the seller and the barter cycles whose first leg is this node's, and reads the accounts an override froze.

use ::ledger::reads::*;
use std::sync::Arc;
use std::time::Duration;

use ::market::pools::{Depth, Limits};
use protocol::message::{Body, Offer, PoolId, PoolKey};
use protocol::{Envelope, Id, PublicKey};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::app::trader::{Input, Output, Trader};
use crate::clock::now_ms;
use crate::ledger;

pub use crate::app::trader::{Refusal, Stats};

/// Commands queued to the actor before it refuses more.
pub const MAILBOX_LEN_MAX: usize = 4096;
/// How often interval auctions are checked for their gate and expired offers dropped.
const TICK: Duration = Duration::from_secs(1);
/// Gossiped offers and barter offers held while the node's ledger is not current (checked and taken in once it is);
/// beyond this the oldest is dropped.
pub const HELD_MAX: usize = 4096;
/// Unsettled matches waiting for the ledger to be current to be judged; beyond this the oldest is judged at once.
pub const JUDGMENTS_HELD_MAX: usize = 1024;
/// Lifetime of a settlement entry: shorter than the engine waits for it before it gives the match back.
const SETTLEMENT_LIFETIME_MS: u64 = ::market::pools::SETTLEMENT_LIFETIME_MS;

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
    OwnPools {
        reply: oneshot::Sender<std::collections::BTreeSet<PoolKey>>,
    },
    KeepPools {
        joined: std::collections::BTreeSet<PoolKey>,
    },
}

/// Why the market did not take an offer in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the market is busy; try again")]
    Busy,
    #[error("the market has stopped")]
    Stopped,
    /// The node's ledger is not current (syncing, or no block for a while): offers are checked against it.
    #[error("this node's ledger is catching up with the network; offers are checked against it: try again shortly")]
    Behind,
    /// The ledger's state (the pool's rules, a freeze) could not be read: the offer is refused, never taken as if
    /// the read had found nothing.
    #[error("{0}")]
    Ledger(String),
    /// The trader's rules refused it.
    #[error(transparent)]
    Trader(#[from] Refusal),
}

impl Refused {
    fn ledger(error: crate::ledger::Error) -> Self {
        match error {
            crate::ledger::Error::Stopped => Refused::Stopped,
            error => Refused::Ledger(error.to_string()),
        }
    }
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

    /// The pools the node itself trades in (its own open offers or unsettled matches).
    pub async fn own_pools(&self) -> std::collections::BTreeSet<PoolKey> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::OwnPools { reply }).await.is_err() {
            return Default::default();
        }
        answer.await.unwrap_or_default()
    }

    /// Drops the books of pools the node is not in any more (`joined` and those it trades in stay).
    pub async fn keep_pools(&self, joined: std::collections::BTreeSet<PoolKey>) {
        let _ = self.commands.send(Command::KeepPools { joined }).await;
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
    network: crate::network::Handle,
    limits: Limits,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let (commands, inbox) = mpsc::channel(MAILBOX_LEN_MAX);
    let (stats_sender, stats) = tokio::sync::watch::channel(Stats::default());
    let tokens = ledger.genesis().tokens.iter().map(|token| token.id.clone());
    let actor = Actor {
        trader: Trader::new(signer.public(), tokens, limits),
        signer,
        ledger,
        network,
        held: std::collections::VecDeque::new(),
        judgments: std::collections::VecDeque::new(),
    };
    let task = tokio::spawn(actor.run(inbox, stats_sender));
    (Handle { commands, stats, gate_lead_ms: limits.gate_lead_ms }, task)
}

struct Actor {
    signer: Arc<crate::signer::Signer>,
    ledger: ledger::Handle,
    /// Where an author at fault loses its fuel.
    network: crate::network::Handle,
    trader: Trader,
    /// Gossiped offers (`false`) and barter offers (`true`) that came while the ledger was not current.
    held: std::collections::VecDeque<(Arc<Envelope>, bool)>,
    /// Unsettled matches to judge once the ledger is current.
    judgments: std::collections::VecDeque<::market::pools::Unsettled>,
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
                    let outputs = self.trader.handle(now_ms(), Input::Committed(&commit.events));
                    self.act(outputs).await;
                }
                _ = tick.tick() => {
                    let outputs = self.trader.handle(now_ms(), Input::Tick);
                    self.act(outputs).await;
                    self.catch_up().await;
                }
            }
            stats.send_if_modified(|published| {
                let changed = published != self.trader.stats();
                if changed {
                    published.clone_from(self.trader.stats());
                }
                changed
            });
        }
    }

    /// Whether the ledger is current: what offers and matches are checked against is the state of its last commit.
    fn current(&self) -> bool {
        self.ledger.status().current(now_ms())
    }

    /// Once the ledger is current: takes in the offers held meanwhile and judges the matches that waited.
    async fn catch_up(&mut self) {
        if (self.held.is_empty() && self.judgments.is_empty()) || !self.current() {
            return;
        }
        while let Some((envelope, barter)) = self.held.pop_front() {
            let _ = if barter { self.barter(envelope).await } else { self.offer(envelope).await };
        }
        while let Some(unsettled) = self.judgments.pop_front() {
            let outputs = self.judged(unsettled).await;
            self.act(outputs).await;
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            // While the ledger is not current, a gossiped offer waits and the node's own is refused (its user hears
            // why): checked against an old state, an offer filled since would be taken as open, and matched.
            Command::Offer { envelope, reply: None } | Command::Barter { envelope, reply: None } if !self.current() => {
                if self.held.len() >= HELD_MAX {
                    self.held.pop_front();
                }
                let barter = matches!(envelope.body, Body::BarterOffer(_));
                self.held.push_back((envelope, barter));
            }
            Command::Offer { reply: Some(reply), .. } | Command::Barter { reply: Some(reply), .. }
                if !self.current() =>
            {
                let _ = reply.send(Err(Refused::Behind));
            }
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
                let outputs = self.trader.handle(now_ms(), Input::Cancel { offer, author });
                self.act(outputs).await;
            }
            Command::Depth { pool, levels, reply } => {
                let _ = reply.send(self.trader.depth(&pool, levels));
            }
            Command::Pools { reply } => {
                let _ = reply.send(self.trader.pools().cloned().collect());
            }
            Command::OwnPools { reply } => {
                let _ = reply.send(self.trader.own_pools());
            }
            Command::KeepPools { joined } => self.trader.keep_pools(now_ms(), &joined),
        }
    }

    /// Reads the ledger's verdict on a barter offer (the check each leg of a cycle meets on the ledger: its author
    /// not frozen, its collateral held with the author's other barter offers on the board), and gives it to the
    /// trader.
    async fn barter(&mut self, envelope: Arc<Envelope>) -> Result<(), Refused> {
        let (author, id) = (envelope.author, envelope.id());
        let Body::BarterOffer(offer) = &envelope.body else {
            return Err(Refusal::Barter(::market::barter::Refusal::NotABarterOffer).into());
        };
        let (offer, open, asked_ms) = (offer.clone(), self.trader.barter_open_of(&author, &id), now_ms());
        // A verdict that cannot be read refuses the offer (as a pool offer is). What the ledger already settled of
        // it is read with it (an offer kept by peers may be spent), and only the rest is checked.
        let read = move |state: &::ledger::store::StateSnapshot<'_>| {
            let left = state.offer_left(&id, &author, offer.give_quantity);
            let verdict =
                if left == 0 { Ok(()) } else { state.check_barter_offer(&author, &offer, left, &open, asked_ms) };
            (verdict, offer.give_quantity - left)
        };
        let (verdict, filled) = self.ledger.query(read).await.map_err(Refused::ledger)?;
        let outputs = self.trader.handle(now_ms(), Input::Barter { envelope, verdict, filled });
        self.verdict(id, outputs).await
    }

    /// Reads an offer's pool rules for its period and the ledger's verdict on its author (the ledger's own check of
    /// a settlement's party, with the author's open offers in this node's books), and gives it to the trader.
    async fn offer(&mut self, envelope: Arc<Envelope>) -> Result<(), Refused> {
        let id = envelope.id();
        let Body::Offer(offer) = &envelope.body else {
            return Err(Refusal::Market(::market::pools::Refusal::NotAnOffer).into());
        };
        // An offer of a pool that could never settle costs no read.
        self.trader.admit(&offer.pool)?;
        let (offer, author, asked_ms) = (offer.clone(), envelope.author, now_ms());
        let open = self.trader.open_of(&author);
        let period_s = Trader::period_s(&offer, asked_ms);
        // What the ledger still lets settle of it: an offer kept by peers (a book fetched on joining a pool) may have
        // been filled or cancelled meanwhile, and only the rest is checked and booked.
        let read = move |state: &::ledger::store::StateSnapshot<'_>| {
            let rules = state.pool_rules_for(&offer.pool, period_s, asked_ms / 1000);
            let left = state.offer_left(&id, &author, offer.quantity);
            let rest = Offer { quantity: left, ..offer.clone() };
            let verdict = if left == 0 { Ok(()) } else { state.check_offer(&author, &rest, &open, asked_ms / 1000) };
            (rules, verdict, offer.quantity - left)
        };
        let (rules, verdict, filled) = self.ledger.query(read).await.map_err(Refused::ledger)?;
        if let Err(problem) = &verdict {
            debug!(%author, %problem, "an offer the ledger would not settle is refused");
        }
        // Matched at the time it is taken in, after the read (an offer that expired or whose gate closed meanwhile
        // is refused, as its receivers will).
        let outputs = self.trader.handle(now_ms(), Input::Offer { envelope, rules, verdict, filled });
        self.verdict(id, outputs).await
    }

    /// Does what the trader asked, and says whether it took the offer `id`.
    async fn verdict(&mut self, id: Id, outputs: Vec<Output>) -> Result<(), Refused> {
        let refusal = outputs.iter().find_map(|output| match output {
            Output::Refused { offer, reason } if *offer == id => Some(reason.clone()),
            _ => None,
        });
        self.act(outputs).await;
        refusal.map_or(Ok(()), |reason| Err(reason.into()))
    }

    async fn act(&mut self, outputs: Vec<Output>) {
        let mut pending = outputs;
        while !pending.is_empty() {
            let mut next = Vec::new();
            for output in pending {
                match output {
                    Output::Taken { .. } => {}
                    Output::Refused { offer, reason } => debug!(%offer, %reason, "not taken into the market"),
                    Output::Cleared { pool, delivery_start_s, price, volume, trades } => {
                        info!(%pool, delivery_start_s, ?price, volume, trades, "interval auction cleared");
                    }
                    Output::Settle(settlement) => {
                        let (quantity, unit_price) = (settlement.quantity, settlement.unit_price);
                        let buyer = settlement.bid.author;
                        let what = format!("settlement of {quantity} at {unit_price}");
                        let submitted = self.submit(Body::Settlement(settlement), &what).await;
                        if let Some(id) = submitted {
                            info!(settlement = %id, %buyer, quantity, unit_price, "settling a sale");
                        }
                        let taken = submitted.is_some();
                        next.extend(self.trader.handle(now_ms(), Input::Submitted { cycle: None, taken }));
                    }
                    Output::SettleCycle(cycle) => {
                        let given: Vec<(Id, u64)> =
                            cycle.legs.as_slice().iter().map(|leg| (leg.offer.id(), leg.give_quantity)).collect();
                        let legs = cycle.legs.len();
                        let what = format!("barter cycle of {legs} legs");
                        let submitted = self.submit(Body::BarterCycle(cycle), &what).await;
                        if let Some(id) = submitted {
                            info!(cycle = %id, legs, "settling a barter cycle");
                        }
                        let taken = submitted.is_some();
                        let cycle = Some(given);
                        next.extend(self.trader.handle(now_ms(), Input::Submitted { cycle, taken }));
                    }
                    // Judged against an old state, a party could be blamed for what the ledger settled since.
                    Output::Judge(unsettled) if !self.current() && self.judgments.len() < JUDGMENTS_HELD_MAX => {
                        self.judgments.push_back(unsettled);
                    }
                    Output::Judge(unsettled) => next.extend(self.judged(unsettled).await),
                    Output::Penalize(author) => {
                        info!(%author, "an author whose match the ledger refused loses its offers here and its fuel");
                        self.network.fault(author);
                    }
                    Output::ReadFreezes(overrides) => {
                        let frozen = self.frozen_by(overrides).await;
                        for author in &frozen {
                            debug!(%author, "a frozen account's offers leave the books");
                        }
                        next.extend(self.trader.handle(now_ms(), Input::Frozen(frozen)));
                    }
                }
            }
            pending = next;
        }
    }

    /// Judges an unsettled match and tells the trader.
    async fn judged(&mut self, unsettled: ::market::pools::Unsettled) -> Vec<Output> {
        let (bid, ask) = (unsettled.found.bid.id(), unsettled.found.ask.id());
        let quantity = unsettled.found.quantity;
        let judged = self.judge(unsettled).await;
        let at_fault = match &judged {
            Input::Judged { at_fault, .. } => at_fault.len(),
            _ => 0,
        };
        info!(%bid, %ask, quantity, at_fault, "a match the ledger did not settle");
        self.trader.handle(now_ms(), judged)
    }

    /// Judges an unsettled match against the ledger's last commit ([`crate::app::trader::judgment`]). When the
    /// ledger cannot be read: nobody at fault, and nothing given back.
    async fn judge(&self, unsettled: ::market::pools::Unsettled) -> Input<'static> {
        let now_s = now_ms() / 1000;
        let kept = unsettled.clone();
        let read = self.ledger.query(move |state| crate::app::trader::judgment(state, unsettled, now_s));
        read.await.unwrap_or_else(|error| {
            warn!(%error, "the parties of an unsettled match could not be judged");
            Input::Judged { unsettled: kept, at_fault: Vec::new(), ledger_left: (0, 0) }
        })
    }

    /// The accounts whose trading these overrides froze. The ledger refuses a frozen account's trades whatever the
    /// books hold; a freeze that cannot be read here only leaves its offers resting until they expire.
    async fn frozen_by(&self, overrides: Vec<Id>) -> Vec<PublicKey> {
        let read = self.ledger.query(move |state| {
            state
                .overrides()
                .filter(|(id, _)| overrides.contains(id))
                .filter_map(|(_, record)| match record.measure {
                    protocol::message::Measure::Freeze(freeze) => Some(freeze.account),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        read.await.unwrap_or_else(|error| {
            warn!(%error, "the accounts an override froze could not be read; their offers stay in the books");
            Vec::new()
        })
    }

    /// Signs an entry the trader asked for and submits it to the ledger: its id when the mempool took it.
    async fn submit(&self, body: Body, what: &str) -> Option<Id> {
        let created_ms = now_ms();
        let envelope = match self.signer.sign(body, created_ms, created_ms.saturating_add(SETTLEMENT_LIFETIME_MS)) {
            Ok(envelope) => envelope,
            Err(error) => {
                warn!(error = %format!("{error:#}"), "a {what} could not be signed");
                return None;
            }
        };
        match self.ledger.submit(envelope.to_bytes()).await {
            Ok(id) => Some(id),
            Err(error) => {
                warn!(%error, "a {what} was refused");
                None
            }
        }
    }
}
