//! The matching engine of a node: the pools it serves, fed with validated offers and cancels, told of the fills the
//! ledger committed, and ticked with the time. It returns matches to settle. No IO, no clock: the caller passes
//! `now_ms`, and the same inputs give the same outputs.
//!
//! - **Continuous pools** (interval 0) keep a [`Book`]: an offer trades on arrival at the resting order's price.
//! - **Interval pools** collect the offers of each delivery interval and clear them together when the interval's
//!   gate closes (`gate_lead_ms` before it starts) with the pool's auction mechanism. Orders enter the auction
//!   sorted by offer id, so every node that saw the same offers computes the same trades.
//!
//! Bounds: at most `pools_max` pools, `orders_per_pool_max` open offers per pool and `orders_per_owner_max` per
//! author and pool; what would exceed them is refused. An offer holds its place only while it lives: expired offers
//! leave at the next tick (continuous and interval pools alike) and give their places back, and an interval pool
//! takes only offers whose delivery obeys the protocol's delivery rule ([`protocol::validate::check_delivery`]:
//! not after the offer expires, not beyond the delivery horizon).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use protocol::message::{Body, Offer, PoolId, Side};
use protocol::{Envelope, Id, PublicKey};

use crate::Fee;
use crate::auction::{self, Mechanism};
use crate::book::{Book, Order};

/// Most offers whose local matches await the ledger's report (beyond it a reported fill may be taken off twice).
pub const MATCHED_MAX: usize = 1_000_000;
/// How long after a local match the engine waits for the ledger to settle it before it reports the match
/// unsettled ([`Output::Unsettled`]): longer than a settlement entry may live (a node signs its settlements for
/// [`SETTLEMENT_LIFETIME_MS`]), so none can land after the quantity was given back.
pub const SETTLE_WAIT_MS: u64 = SETTLEMENT_LIFETIME_MS + 30_000;
/// How long a settlement entry a node signs for a match lives.
pub const SETTLEMENT_LIFETIME_MS: u64 = 60_000;

/// How a pool matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The auction of an interval pool (ignored in continuous pools).
    pub mechanism: Mechanism,
    pub fee: Fee,
    /// The pool's dynamic base price for the offer's period: asks below it count at it; 0: none.
    pub floor: u64,
    /// An essential pool shares short supply fairly instead of by price (interval pools).
    pub essential: Option<crate::fairness::Essential>,
}

/// The engine's bounds and timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub pools_max: usize,
    pub orders_per_pool_max: usize,
    pub orders_per_owner_max: usize,
    /// How long before a delivery interval starts its auction clears.
    pub gate_lead_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { pools_max: 64, orders_per_pool_max: 100_000, orders_per_owner_max: 256, gate_lead_ms: 5_000 }
    }
}

/// What happens to the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// A validated offer (an envelope whose body is an [`Offer`]), with the rules of its pool and what the ledger
    /// already settled of it (`filled`): only the rest can trade. An offer peers kept for a while (a book fetched on
    /// joining a pool) may be partly or wholly filled.
    Offer { envelope: Arc<Envelope>, rules: Rules, filled: u64 },
    /// The author withdraws an offer.
    Cancel { offer: Id, author: PublicKey },
    /// Every open offer of an account leaves the pools (an override froze its trading).
    Withdraw { author: PublicKey },
    /// The ledger settled `quantity` of an offer (whoever's settlement it was).
    Filled { offer: Id, quantity: u64 },
    /// The ledger settled `quantity` between a bid and an ask (both are [`Input::Filled`], and a local match of
    /// the two is settled by as much).
    Settled { bid: Id, ask: Id, quantity: u64 },
    /// A match reported [`Output::Unsettled`], judged: the offers of the authors `at_fault` get nothing back; the
    /// others get their quantity back at their old place in time priority (continuous pools), as far as the ledger
    /// still lets them settle (`ledger_left`: the bid's and the ask's quantity not filled nor cancelled on the
    /// ledger). An offer given back first trades with what crosses it: the outputs are its matches.
    Restore { unsettled: Unsettled, at_fault: Vec<PublicKey>, ledger_left: (u64, u64) },
    /// The node left the pool: its book and open offers go (its matches awaiting settlement stay, to be judged).
    Forget { pool: PoolId },
    /// Time passed: clear the auctions whose gate closed and drop expired offers.
    Tick,
}

/// A matched bid and ask, to be settled on the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub bid: Arc<Envelope>,
    pub ask: Arc<Envelope>,
    pub quantity: u64,
    /// What the seller receives per 1000 units (the ledger adds the grid fee for the buyer).
    pub unit_price: u64,
    pub mechanism: protocol::message::Mechanism,
}

/// Why an offer was not taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not an offer")]
    NotAnOffer,
    #[error("the node serves too many pools")]
    TooManyPools,
    #[error("the pool is full")]
    PoolFull,
    #[error("the author has too many open offers in the pool")]
    OwnerFull,
    #[error("the offer is already known")]
    Duplicate,
    #[error("the offer has expired")]
    Expired,
    #[error("the auction of its delivery interval has closed")]
    GateClosed,
    #[error("the bid does not cover the grid fee")]
    BelowFee,
    #[error("the ledger has settled all of it, or its author cancelled it")]
    Settled,
    /// The offer breaks the delivery rule (PROTOCOL.md §5, Offer).
    #[error("{0}")]
    Delivery(&'static str),
}

/// What the engine asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "matches must be settled"]
pub enum Output {
    /// Settle this match (a settlement entry carrying both signed offers).
    Match(Match),
    /// An offer was refused.
    Refused { offer: Id, reason: Refusal },
    /// An interval auction cleared (for logs, metrics and the API).
    Cleared { pool: PoolId, delivery_start_s: u64, price: Option<u64>, volume: u64, trades: usize },
    /// A match the ledger did not settle within [`SETTLE_WAIT_MS`]: judge its parties and answer with
    /// [`Input::Restore`].
    Unsettled(Unsettled),
}

/// A match the ledger has not settled (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    /// The match, its quantity what the ledger has not settled of it.
    pub found: Match,
    /// The bid's and the ask's arrival numbers in their book; `None` for an interval auction's match (its auction
    /// is over: nothing can be given back).
    pub sequences: Option<(u64, u64)>,
    /// The pool's rules when it matched (to give the quantity back into a book that emptied meanwhile).
    pub rules: Rules,
}

/// An offer of an interval auction.
#[derive(Debug, Clone)]
struct Pending {
    envelope: Arc<Envelope>,
    left: u64,
}

#[derive(Debug)]
enum Pool {
    Continuous { book: Book<Id, PublicKey>, offers: HashMap<Id, Arc<Envelope>> },
    Interval(Auctions),
}

/// The open offers of an interval pool, by delivery interval, with their expiries and the places they hold.
#[derive(Debug)]
struct Auctions {
    rules: Rules,
    /// Open offers by delivery interval start, then by offer id.
    intervals: BTreeMap<u64, BTreeMap<Id, Pending>>,
    /// Each open offer's delivery interval start.
    starts: HashMap<Id, u64>,
    /// Open offers by expiry: `(expires_ms, id)`.
    expiries: BTreeSet<(u64, Id)>,
    /// The latest delivery interval start whose auction closed.
    closed_through_s: Option<u64>,
    /// Each open interval's floor: the dynamic base price its latest offer came with.
    floors: BTreeMap<u64, u64>,
    per_owner: HashMap<PublicKey, usize>,
}

impl Auctions {
    fn new(rules: Rules) -> Auctions {
        Auctions {
            rules,
            intervals: BTreeMap::new(),
            starts: HashMap::new(),
            expiries: BTreeSet::new(),
            closed_through_s: None,
            floors: BTreeMap::new(),
            per_owner: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    /// Takes an offer in, or says why not.
    fn insert(
        &mut self,
        now_ms: u64,
        limits: &Limits,
        id: Id,
        envelope: Arc<Envelope>,
        offer: &Offer,
        rules: Rules,
    ) -> Result<(), Refusal> {
        self.rules = rules;
        let start_s = offer.delivery_start_s;
        if self.closed_through_s.is_some_and(|closed| start_s <= closed)
            || gate_ms(start_s, limits.gate_lead_ms) <= now_ms
        {
            return Err(Refusal::GateClosed);
        }
        if self.len() >= limits.orders_per_pool_max {
            return Err(Refusal::PoolFull);
        }
        let owned = self.per_owner.entry(envelope.author).or_insert(0);
        if *owned >= limits.orders_per_owner_max {
            return Err(Refusal::OwnerFull);
        }
        *owned += 1;
        self.starts.insert(id, start_s);
        self.expiries.insert((envelope.expires_ms, id));
        self.floors.insert(start_s, rules.floor);
        let left = offer.quantity;
        self.intervals.entry(start_s).or_default().insert(id, Pending { envelope, left });
        Ok(())
    }

    /// Takes an open offer out (when `author` is given, only if it is the offer's author); gives its place back.
    fn remove(&mut self, id: &Id, author: Option<&PublicKey>) -> bool {
        let Some(start_s) = self.starts.get(id).copied() else { return false };
        let Some(orders) = self.intervals.get_mut(&start_s) else { return false };
        let Some(pending) = orders.get(id) else { return false };
        if author.is_some_and(|author| pending.envelope.author != *author) {
            return false;
        }
        let (owner, expires_ms) = (pending.envelope.author, pending.envelope.expires_ms);
        orders.remove(id);
        if orders.is_empty() {
            self.intervals.remove(&start_s);
            self.floors.remove(&start_s);
        }
        self.starts.remove(id);
        self.expiries.remove(&(expires_ms, *id));
        release(&mut self.per_owner, &owner);
        true
    }

    /// The ledger settled `quantity` of an open offer; a filled offer leaves. Returns whether it left.
    fn reduce(&mut self, id: &Id, quantity: u64) -> bool {
        let Some(start_s) = self.starts.get(id) else { return false };
        let Some(pending) = self.intervals.get_mut(start_s).and_then(|orders| orders.get_mut(id)) else {
            return false;
        };
        pending.left = pending.left.saturating_sub(quantity);
        pending.left == 0 && self.remove(id, None)
    }

    /// Takes out the offers that expired by `now_ms`; returns their ids.
    fn expire(&mut self, now_ms: u64) -> Vec<Id> {
        let mut expired = Vec::new();
        while let Some((_, id)) = self.expiries.first().copied().filter(|(expires_ms, _)| *expires_ms <= now_ms) {
            if !self.remove(&id, None) {
                // Not open any more (cannot happen: every removal takes its expiry out too); do not loop on it.
                self.expiries.pop_first();
            }
            expired.push(id);
        }
        expired
    }

    /// Takes out the first interval whose gate closed by `now_ms`: its start, offers and floor.
    fn close_next(&mut self, now_ms: u64, gate_lead_ms: u64) -> Option<(u64, BTreeMap<Id, Pending>, u64)> {
        let start_s = *self.intervals.keys().next()?;
        if gate_ms(start_s, gate_lead_ms) > now_ms {
            return None;
        }
        let orders = self.intervals.remove(&start_s).unwrap_or_default();
        self.closed_through_s = Some(self.closed_through_s.map_or(start_s, |closed| closed.max(start_s)));
        for (id, pending) in &orders {
            self.starts.remove(id);
            self.expiries.remove(&(pending.envelope.expires_ms, *id));
            release(&mut self.per_owner, &pending.envelope.author);
        }
        // The interval clears with its own floor, not the one of a later interval's offers.
        let floor = self.floors.remove(&start_s).unwrap_or(self.rules.floor);
        Some((start_s, orders, floor))
    }

    /// The open offers of an author.
    fn of(&self, author: PublicKey) -> impl Iterator<Item = Id> + '_ {
        self.intervals
            .values()
            .flatten()
            .filter(move |(_, pending)| pending.envelope.author == author)
            .map(|(id, _)| *id)
    }
}

/// Which pool each open offer is in, and the open offers of each author (their places in the pools are bounded,
/// so these are too).
#[derive(Debug, Default)]
struct Located {
    pools: HashMap<Id, (PoolId, PublicKey)>,
    by_author: HashMap<PublicKey, HashSet<Id>>,
}

impl Located {
    fn insert(&mut self, id: Id, pool: PoolId, author: PublicKey) {
        self.pools.insert(id, (pool, author));
        self.by_author.entry(author).or_default().insert(id);
    }

    fn remove(&mut self, id: &Id) {
        let Some((_, author)) = self.pools.remove(id) else { return };
        if let Some(ids) = self.by_author.get_mut(&author) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_author.remove(&author);
            }
        }
    }

    fn pool(&self, id: &Id) -> Option<&PoolId> {
        self.pools.get(id).map(|(pool, _)| pool)
    }

    fn len(&self) -> usize {
        self.pools.len()
    }
}

/// A pool's open offers, for the API: price levels `(price, quantity)` of bids (best first) and asks (best first)
/// of the continuous book or of the next interval to clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub delivery_start_s: Option<u64>,
    pub bids: Vec<(u64, u64)>,
    pub asks: Vec<(u64, u64)>,
    pub offers: usize,
}

/// The matching engine.
#[derive(Debug)]
pub struct Market {
    limits: Limits,
    pools: BTreeMap<PoolId, Pool>,
    /// Which pool each open offer is in, and each author's open offers.
    located: Located,
    /// The matches made here that the ledger has not settled yet.
    settling: Settling,
}

fn offer_of(envelope: &Envelope) -> Option<&Offer> {
    match &envelope.body {
        Body::Offer(offer) => Some(offer),
        _ => None,
    }
}

impl Market {
    pub fn new(limits: Limits) -> Market {
        Market { limits, pools: BTreeMap::new(), located: Located::default(), settling: Settling::default() }
    }

    /// Handles one input at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Output> {
        match input {
            Input::Offer { envelope, rules, filled } => {
                let id = envelope.id();
                match self.offer(now_ms, envelope, rules, filled) {
                    Ok(outputs) => outputs,
                    Err(reason) => vec![Output::Refused { offer: id, reason }],
                }
            }
            Input::Cancel { offer, author } => {
                self.cancel(&offer, &author);
                Vec::new()
            }
            Input::Withdraw { author } => {
                let mut theirs: Vec<Id> = Vec::new();
                for pool in self.pools.values() {
                    match pool {
                        Pool::Continuous { offers, .. } => theirs
                            .extend(offers.iter().filter(|(_, envelope)| envelope.author == author).map(|(id, _)| *id)),
                        Pool::Interval(auctions) => theirs.extend(auctions.of(author)),
                    }
                }
                for id in theirs {
                    self.cancel(&id, &author);
                }
                Vec::new()
            }
            Input::Filled { offer, quantity } => {
                self.filled(&offer, quantity);
                Vec::new()
            }
            Input::Settled { bid, ask, quantity } => {
                self.settling.settled(bid, ask, quantity);
                self.filled(&bid, quantity);
                self.filled(&ask, quantity);
                Vec::new()
            }
            Input::Restore { unsettled, at_fault, ledger_left } => {
                self.restore(now_ms, &unsettled, &at_fault, ledger_left)
            }
            Input::Forget { pool } => {
                self.forget(&pool);
                Vec::new()
            }
            Input::Tick => self.tick(now_ms),
        }
    }

    /// Drops a pool's book and open offers.
    fn forget(&mut self, pool_id: &PoolId) {
        let Some(pool) = self.pools.remove(pool_id) else { return };
        let ids: Vec<Id> = match &pool {
            Pool::Continuous { offers, .. } => offers.keys().copied().collect(),
            Pool::Interval(auctions) => auctions.starts.keys().copied().collect(),
        };
        for id in ids {
            self.located.remove(&id);
        }
    }

    fn offer(
        &mut self,
        now_ms: u64,
        envelope: Arc<Envelope>,
        rules: Rules,
        filled: u64,
    ) -> Result<Vec<Output>, Refusal> {
        let offer = offer_of(&envelope).ok_or(Refusal::NotAnOffer)?.clone();
        let left = offer.quantity.saturating_sub(filled);
        if left == 0 {
            return Err(Refusal::Settled);
        }
        let id = envelope.id();
        if self.located.pool(&id).is_some() {
            return Err(Refusal::Duplicate);
        }
        if envelope.expires_ms <= now_ms {
            return Err(Refusal::Expired);
        }
        protocol::validate::check_delivery(&offer, envelope.created_ms, envelope.expires_ms)
            .map_err(Refusal::Delivery)?;
        if !self.pools.contains_key(&offer.pool) {
            if self.pools.len() >= self.limits.pools_max {
                return Err(Refusal::TooManyPools);
            }
            let pool = if offer.pool.interval_s == 0 {
                Pool::Continuous {
                    book: Book::new(rules.fee, self.limits.orders_per_pool_max, self.limits.orders_per_owner_max),
                    offers: HashMap::new(),
                }
            } else {
                Pool::Interval(Auctions::new(rules))
            };
            self.pools.insert(offer.pool.clone(), pool);
        }
        let limits = self.limits;
        let Some(pool) = self.pools.get_mut(&offer.pool) else { return Ok(Vec::new()) };
        match pool {
            Pool::Continuous { book, offers } => {
                // Governance may have changed the pool's fee, and its base price moves: new orders take both.
                book.set_fee(rules.fee);
                book.set_floor(rules.floor);
                let placed = book
                    .place(
                        now_ms,
                        Order {
                            id,
                            owner: envelope.author,
                            side: offer.side,
                            quantity: left,
                            price: offer.unit_price,
                            expires_ms: envelope.expires_ms,
                        },
                    )
                    .map_err(|reject| match reject {
                        crate::book::Reject::Duplicate => Refusal::Duplicate,
                        crate::book::Reject::Expired => Refusal::Expired,
                        crate::book::Reject::ZeroQuantity => Refusal::NotAnOffer,
                        crate::book::Reject::BelowFee => Refusal::BelowFee,
                    })?;
                for gone in &placed.expired {
                    offers.remove(gone);
                    self.located.remove(gone);
                }
                let taker = (&envelope, placed.sequence);
                let settling = (&mut self.located, &mut self.settling);
                let outputs = continuous_matches(now_ms, taker, &placed.fills, (book, offers), settling, rules);
                if placed.resting > 0 {
                    let author = envelope.author;
                    offers.insert(id, envelope);
                    self.located.insert(id, offer.pool.clone(), author);
                } else if placed.dropped > 0 && placed.fills.is_empty() {
                    return Err(if book.len() >= limits.orders_per_pool_max {
                        Refusal::PoolFull
                    } else {
                        Refusal::OwnerFull
                    });
                }
                Ok(outputs)
            }
            Pool::Interval(auctions) => {
                let author = envelope.author;
                auctions.insert(now_ms, &limits, id, envelope, &Offer { quantity: left, ..offer.clone() }, rules)?;
                self.located.insert(id, offer.pool, author);
                Ok(Vec::new())
            }
        }
    }

    fn cancel(&mut self, id: &Id, author: &PublicKey) {
        let Some(pool_id) = self.located.pool(id).cloned() else { return };
        let Some(pool) = self.pools.get_mut(&pool_id) else { return };
        let removed = match pool {
            Pool::Continuous { book, offers } => {
                if offers.get(id).is_some_and(|envelope| envelope.author == *author) {
                    book.cancel(id);
                    offers.remove(id);
                    true
                } else {
                    false
                }
            }
            Pool::Interval(auctions) => auctions.remove(id, Some(author)),
        };
        if removed {
            self.located.remove(id);
        }
    }

    fn filled(&mut self, id: &Id, quantity: u64) {
        let quantity = self.settling.unknown_fill(id, quantity);
        if quantity == 0 {
            return;
        }
        let Some(pool_id) = self.located.pool(id).cloned() else { return };
        let Some(pool) = self.pools.get_mut(&pool_id) else { return };
        let gone = match pool {
            Pool::Continuous { book, offers } => {
                book.reduce(id, quantity);
                let gone = book.get(id).is_none();
                if gone {
                    offers.remove(id);
                }
                gone
            }
            Pool::Interval(auctions) => auctions.reduce(id, quantity),
        };
        if gone {
            self.located.remove(id);
        }
    }

    /// Gives an unsettled match's quantity back to the offers of the parties not at fault (see [`Input::Restore`]).
    fn restore(
        &mut self,
        now_ms: u64,
        unsettled: &Unsettled,
        at_fault: &[PublicKey],
        ledger_left: (u64, u64),
    ) -> Vec<Output> {
        let mut outputs = Vec::new();
        let Some((bid_sequence, ask_sequence)) = unsettled.sequences else { return outputs };
        let found = &unsettled.found;
        let parties = [
            (&found.bid, bid_sequence, Side::Bid, ledger_left.0),
            (&found.ask, ask_sequence, Side::Ask, ledger_left.1),
        ];
        for (envelope, sequence, side, ledger_left) in parties {
            if at_fault.contains(&envelope.author) {
                continue;
            }
            let Some(offer) = offer_of(envelope) else { continue };
            let id = envelope.id();
            self.settling.unmatch(&id, found.quantity);
            if !self.pools.contains_key(&offer.pool) && self.pools.len() >= self.limits.pools_max {
                continue;
            }
            let limits = self.limits;
            let rules = unsettled.rules;
            let pool = self.pools.entry(offer.pool.clone()).or_insert_with(|| {
                // A pool that emptied meanwhile comes back with the rules of the match (its fee and floor).
                let mut book = Book::new(rules.fee, limits.orders_per_pool_max, limits.orders_per_owner_max);
                book.set_floor(rules.floor);
                Pool::Continuous { book, offers: HashMap::new() }
            });
            let Pool::Continuous { book, offers } = pool else { continue };
            // Never more than the ledger still lets settle, less what rests in the book already.
            let resting = book.get(&id).map_or(0, |resting| resting.left);
            let quantity = found.quantity.min(ledger_left.saturating_sub(resting));
            let order = Order {
                id,
                owner: envelope.author,
                side,
                quantity,
                price: offer.unit_price,
                expires_ms: envelope.expires_ms,
            };
            let Some(fills) = book.restore(now_ms, order, sequence) else { continue };
            if book.get(&id).is_some() {
                offers.insert(id, envelope.clone());
                self.located.insert(id, offer.pool.clone(), envelope.author);
            }
            let settling = (&mut self.located, &mut self.settling);
            let taker = (envelope, sequence);
            outputs.extend(continuous_matches(now_ms, taker, &fills, (book, offers), settling, unsettled.rules));
        }
        outputs
    }

    fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut outputs = Vec::new();
        outputs.extend(self.settling.take_due(now_ms).into_iter().map(Output::Unsettled));
        self.settling.forget_expired(now_ms);
        let gate_lead_ms = self.limits.gate_lead_ms;
        for (pool_id, pool) in &mut self.pools {
            match pool {
                Pool::Continuous { book, offers } => {
                    for gone in book.expire(now_ms) {
                        offers.remove(&gone);
                        self.located.remove(&gone);
                    }
                }
                Pool::Interval(auctions) => {
                    while let Some((start_s, orders, floor)) = auctions.close_next(now_ms, gate_lead_ms) {
                        for id in orders.keys() {
                            self.located.remove(id);
                        }
                        // Cleared as at its gate, however late the tick: every node that saw the same offers clears
                        // the same trades.
                        let at_ms = gate_ms(start_s, gate_lead_ms);
                        let (trades, cleared) = clear_interval(&orders, Rules { floor, ..auctions.rules }, at_ms);
                        outputs.push(Output::Cleared {
                            pool: pool_id.clone(),
                            delivery_start_s: start_s,
                            price: cleared.price,
                            volume: cleared.volume,
                            trades: trades.len(),
                        });
                        for found in trades {
                            let unsettled = Unsettled { found: found.clone(), sequences: None, rules: auctions.rules };
                            self.settling.await_settlement(now_ms, unsettled);
                            outputs.push(Output::Match(found));
                        }
                    }
                    // Then offers that expired while waiting for their gate leave and give their places back (with
                    // the delivery rule an offer reaches its gate first; this is the second line).
                    for gone in auctions.expire(now_ms) {
                        self.located.remove(&gone);
                    }
                }
            }
        }
        // A pool without open offers takes no place among the `pools_max` (it comes back with its next offer).
        self.pools.retain(|_, pool| match pool {
            Pool::Continuous { offers, .. } => !offers.is_empty(),
            Pool::Interval(auctions) => auctions.len() > 0,
        });
        outputs
    }

    /// A pool's open offers, `levels` price levels a side.
    pub fn depth(&self, pool: &PoolId, levels: usize) -> Option<Depth> {
        match self.pools.get(pool)? {
            Pool::Continuous { book, offers } => Some(Depth {
                delivery_start_s: None,
                bids: book.depth(Side::Bid, levels),
                asks: book.depth(Side::Ask, levels),
                offers: offers.len(),
            }),
            Pool::Interval(auctions) => {
                let (start_s, orders) = auctions.intervals.first_key_value()?;
                let mut bids: BTreeMap<u64, u64> = BTreeMap::new();
                let mut asks: BTreeMap<u64, u64> = BTreeMap::new();
                for pending in orders.values() {
                    let Some(offer) = offer_of(&pending.envelope) else { continue };
                    let side = if offer.side == Side::Bid { &mut bids } else { &mut asks };
                    let level = side.entry(offer.unit_price).or_default();
                    *level = level.saturating_add(pending.left);
                }
                Some(Depth {
                    delivery_start_s: Some(*start_s),
                    bids: bids.into_iter().rev().take(levels).collect(),
                    asks: asks.into_iter().take(levels).collect(),
                    offers: orders.len(),
                })
            }
        }
    }

    /// The pools with open offers (those without leave at the next tick), in order.
    pub fn pools(&self) -> impl Iterator<Item = &PoolId> {
        self.pools.keys()
    }

    /// Open offers across all pools.
    pub fn open_offers(&self) -> usize {
        self.located.len()
    }

    /// An author's open offers in every pool, each with the quantity it has left, and its side of the matches made
    /// here that the ledger has not settled yet, each with the quantity matched (what a new offer of the author is
    /// checked together with: the ledger settles them all against one balance).
    pub fn open_of(&self, author: &PublicKey) -> Vec<(Arc<Envelope>, u64)> {
        let Some(ids) = self.located.by_author.get(author) else { return Vec::new() };
        let mut open: Vec<(Arc<Envelope>, u64)> = ids
            .iter()
            .filter_map(|id| {
                let pool = self.pools.get(self.located.pool(id)?)?;
                match pool {
                    Pool::Continuous { book, offers } => Some((offers.get(id)?.clone(), book.get(id)?.left)),
                    Pool::Interval(auctions) => {
                        let pending = auctions.intervals.get(auctions.starts.get(id)?)?.get(id)?;
                        Some((pending.envelope.clone(), pending.left))
                    }
                }
            })
            .collect();
        open.extend(self.settling.of(author));
        open.sort_by_key(|(envelope, _)| envelope.id());
        open
    }
}

/// The start of the first delivery interval of `pool` whose auction is still open at `now_ms` (its gate closes
/// `gate_lead_ms` before it starts): where a new offer for "the next interval" belongs. 0 in continuous pools.
pub fn first_open_delivery_s(pool: &PoolId, now_ms: u64, gate_lead_ms: u64) -> u64 {
    let interval_s = u64::from(pool.interval_s);
    if interval_s == 0 {
        return 0;
    }
    // The first multiple of the interval whose gate, start × 1000 − lead, is after now.
    let earliest_s = now_ms.saturating_add(gate_lead_ms) / 1000;
    (earliest_s / interval_s).saturating_add(1).saturating_mul(interval_s)
}

/// The matches made here that the ledger has not settled yet (each bound: [`MATCHED_MAX`]).
#[derive(Debug, Default)]
struct Settling {
    /// Quantity of continuous offers matched here whose settlement the ledger has not yet reported, and when the
    /// offer expires: a fill the ledger reports is first set against it, so a match is not taken off twice.
    matched: HashMap<Id, (u64, u64)>,
    /// Matches awaiting the ledger, by `(deadline_ms, bid, ask)`; each pair's deadline; each author's matches.
    awaiting: BTreeMap<(u64, Id, Id), Unsettled>,
    due: HashMap<(Id, Id), u64>,
    by_author: HashMap<PublicKey, HashSet<(u64, Id, Id)>>,
}

impl Settling {
    /// `quantity` of a continuous offer was matched here.
    fn matched(&mut self, offer: Id, expires_ms: u64, quantity: u64) {
        if self.matched.len() >= MATCHED_MAX && !self.matched.contains_key(&offer) {
            return;
        }
        let entry = self.matched.entry(offer).or_insert((0, expires_ms));
        entry.0 = entry.0.saturating_add(quantity);
    }

    /// A match given back: its quantity is no longer awaited from the ledger.
    fn unmatch(&mut self, offer: &Id, quantity: u64) {
        if let Some(entry) = self.matched.get_mut(offer) {
            entry.0 = entry.0.saturating_sub(quantity);
            if entry.0 == 0 {
                self.matched.remove(offer);
            }
        }
    }

    /// The ledger filled `quantity` of an offer: what of it was not matched here (and must come off its book).
    fn unknown_fill(&mut self, offer: &Id, quantity: u64) -> u64 {
        let Some(entry) = self.matched.get_mut(offer) else { return quantity };
        let known = entry.0.min(quantity);
        entry.0 -= known;
        if entry.0 == 0 {
            self.matched.remove(offer);
        }
        quantity - known
    }

    /// Records a match to await its settlement until [`SETTLE_WAIT_MS`] from `now_ms` (a pair matched again adds
    /// to its record).
    fn await_settlement(&mut self, now_ms: u64, unsettled: Unsettled) {
        let pair = (unsettled.found.bid.id(), unsettled.found.ask.id());
        if let Some(deadline_ms) = self.due.get(&pair)
            && let Some(known) = self.awaiting.get_mut(&(*deadline_ms, pair.0, pair.1))
        {
            known.found.quantity = known.found.quantity.saturating_add(unsettled.found.quantity);
            return;
        }
        if self.awaiting.len() >= MATCHED_MAX {
            return;
        }
        let deadline_ms = now_ms.saturating_add(SETTLE_WAIT_MS);
        let key = (deadline_ms, pair.0, pair.1);
        for author in [unsettled.found.bid.author, unsettled.found.ask.author] {
            self.by_author.entry(author).or_default().insert(key);
        }
        self.due.insert(pair, deadline_ms);
        self.awaiting.insert(key, unsettled);
    }

    fn forget(&mut self, key: &(u64, Id, Id)) -> Option<Unsettled> {
        let unsettled = self.awaiting.remove(key)?;
        self.due.remove(&(key.1, key.2));
        for author in [unsettled.found.bid.author, unsettled.found.ask.author] {
            if let Some(keys) = self.by_author.get_mut(&author) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_author.remove(&author);
                }
            }
        }
        Some(unsettled)
    }

    /// The ledger settled `quantity` between `bid` and `ask`: their match awaits that much less.
    fn settled(&mut self, bid: Id, ask: Id, quantity: u64) {
        let Some(deadline_ms) = self.due.get(&(bid, ask)).copied() else { return };
        let key = (deadline_ms, bid, ask);
        let Some(unsettled) = self.awaiting.get_mut(&key) else { return };
        unsettled.found.quantity = unsettled.found.quantity.saturating_sub(quantity);
        if unsettled.found.quantity == 0 {
            self.forget(&key);
        }
    }

    /// The matches whose wait ended by `now_ms`, oldest first.
    fn take_due(&mut self, now_ms: u64) -> Vec<Unsettled> {
        let mut due = Vec::new();
        while let Some(key) = self.awaiting.keys().next().copied().filter(|key| key.0 <= now_ms) {
            due.extend(self.forget(&key));
        }
        due
    }

    fn forget_expired(&mut self, now_ms: u64) {
        self.matched.retain(|_, (_, expires_ms)| *expires_ms > now_ms);
    }

    /// An author's side of its matches awaiting the ledger: each offer with the quantity matched.
    fn of(&self, author: &PublicKey) -> Vec<(Arc<Envelope>, u64)> {
        let Some(keys) = self.by_author.get(author) else { return Vec::new() };
        keys.iter()
            .filter_map(|key| self.awaiting.get(key))
            .flat_map(|unsettled| {
                let found = &unsettled.found;
                [&found.bid, &found.ask]
                    .into_iter()
                    .filter(|envelope| envelope.author == *author)
                    .map(|envelope| (envelope.clone(), found.quantity))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The matches of an order's fills in a continuous book (`taker`: the order and its arrival number): each awaits
/// its settlement; a maker filled whole leaves the pool's offers.
fn continuous_matches(
    now_ms: u64,
    taker: (&Arc<Envelope>, u64),
    fills: &[crate::book::Fill<Id>],
    pool: (&Book<Id, PublicKey>, &mut HashMap<Id, Arc<Envelope>>),
    (located, settling): (&mut Located, &mut Settling),
    rules: Rules,
) -> Vec<Output> {
    let ((envelope, taker_sequence), (book, offers)) = (taker, pool);
    let mut outputs = Vec::new();
    for fill in fills {
        let Some(maker) = offers.get(&fill.maker).cloned() else { continue };
        settling.matched(fill.maker, maker.expires_ms, fill.quantity);
        settling.matched(envelope.id(), envelope.expires_ms, fill.quantity);
        if book.get(&fill.maker).is_none() {
            offers.remove(&fill.maker);
            located.remove(&fill.maker);
        }
        let (bid, ask, sequences) = match fill.taker_side {
            Side::Bid => (envelope.clone(), maker, (taker_sequence, fill.maker_sequence)),
            Side::Ask => (maker, envelope.clone(), (fill.maker_sequence, taker_sequence)),
        };
        let found = Match {
            bid,
            ask,
            quantity: fill.quantity,
            unit_price: fill.price,
            mechanism: protocol::message::Mechanism::ContinuousDoubleAuction,
        };
        settling.await_settlement(now_ms, Unsettled { found: found.clone(), sequences: Some(sequences), rules });
        outputs.push(Output::Match(found));
    }
    outputs
}

/// When the auction of the interval starting at `start_s` closes.
fn gate_ms(start_s: u64, lead_ms: u64) -> u64 {
    start_s.saturating_mul(1000).saturating_sub(lead_ms)
}

fn release(per_owner: &mut HashMap<PublicKey, usize>, author: &PublicKey) {
    if let Some(count) = per_owner.get_mut(author) {
        *count -= 1;
        if *count == 0 {
            per_owner.remove(author);
        }
    }
}

/// Runs one interval's auction over the unexpired offers with quantity left, in offer-id order. An author's bid
/// and ask are never matched with each other: its asks leave the auction when it also bids (a home that needs
/// energy in an interval does not sell it).
fn clear_interval(orders: &BTreeMap<Id, Pending>, rules: Rules, now_ms: u64) -> (Vec<Match>, auction::Clearing<Id>) {
    let live = || orders.iter().filter(|(_, pending)| pending.left > 0 && pending.envelope.expires_ms > now_ms);
    let bidders: std::collections::HashSet<PublicKey> = live()
        .filter(|(_, pending)| offer_of(&pending.envelope).is_some_and(|offer| offer.side == Side::Bid))
        .map(|(_, pending)| pending.envelope.author)
        .collect();
    let mut bids = Vec::new();
    let mut owned_bids = Vec::new();
    let mut asks = Vec::new();
    for (id, pending) in live() {
        let Some(offer) = offer_of(&pending.envelope) else { continue };
        // An ask below the pool's base price counts at it.
        let price = match offer.side {
            Side::Ask => offer.unit_price.max(rules.floor),
            Side::Bid => offer.unit_price,
        };
        let order = auction::Order { id: *id, quantity: pending.left, price };
        match offer.side {
            Side::Bid => {
                owned_bids.push((pending.envelope.author, order.clone()));
                bids.push(order);
            }
            Side::Ask if !bidders.contains(&pending.envelope.author) => asks.push(order),
            Side::Ask => {}
        }
    }
    let clearing = match &rules.essential {
        // Remainders rotate with the interval, so no account is always first.
        Some(essential) => {
            let rotation = usize::try_from(now_ms / 1000).unwrap_or(0);
            crate::fairness::clear(&owned_bids, &asks, rules.fee, essential, rotation)
        }
        None => auction::clear(&bids, &asks, rules.mechanism, rules.fee),
    };
    let mechanism = if rules.essential.is_some() { Mechanism::PayAsClear.wire() } else { rules.mechanism.wire() };
    let trades = clearing
        .trades
        .iter()
        .filter_map(|trade| {
            Some(Match {
                bid: orders.get(&trade.bid)?.envelope.clone(),
                ask: orders.get(&trade.ask)?.envelope.clone(),
                quantity: trade.quantity,
                unit_price: trade.price,
                mechanism,
            })
        })
        .collect();
    (trades, clearing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::Resource;
    use protocol::types::{Cell, TokenId};
    use protocol::{Draft, Keypair, NetworkId};

    const NOW_MS: u64 = 1_800_000_000_000;

    fn pool(interval_s: u32) -> PoolId {
        PoolId {
            resource: Resource::Energy,
            token: TokenId::new("credit").unwrap(),
            cell: Cell::new("u33db").unwrap(),
            interval_s,
        }
    }

    fn offer(key: u8, pool: &PoolId, side: Side, quantity: u64, price: u64) -> Arc<Envelope> {
        let delivery_start_s = pool.next_delivery_start_s(NOW_MS / 1000);
        let body = Body::Offer(Offer { pool: pool.clone(), side, quantity, unit_price: price, delivery_start_s });
        let draft = Draft {
            network: NetworkId::new("kos-test").unwrap(),
            nonce: u64::from(key) * 1000 + quantity,
            created_ms: NOW_MS,
            expires_ms: NOW_MS + 3_600_000,
            body,
        };
        Arc::new(draft.sign(&Keypair::from_seed(&[key; 32])))
    }

    const RULES: Rules = Rules { mechanism: Mechanism::PayAsClear, fee: Fee::None, floor: 0, essential: None };

    fn matches(outputs: &[Output]) -> Vec<(u64, u64)> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Match(found) => Some((found.quantity, found.unit_price)),
                _ => None,
            })
            .collect()
    }

    /// A match the ledger does not settle within [`SETTLE_WAIT_MS`] is reported, and one it settles is not. Judged,
    /// the party not at fault gets its quantity back at its old place in time priority (ahead of a later offer at
    /// its price), and the party at fault nothing.
    #[test]
    fn an_unsettled_match_gives_the_party_not_at_fault_its_place_back() {
        let mut market = Market::new(Limits::default());
        let pool = pool(0);
        let early = offer(1, &pool, Side::Ask, 500, 10_000);
        let late = offer(3, &pool, Side::Ask, 500, 10_000);
        for ask in [&early, &late] {
            assert!(market.handle(NOW_MS, Input::Offer { envelope: ask.clone(), rules: RULES, filled: 0 }).is_empty());
        }
        // A bid that will never settle takes all of the early ask; another takes 100 of the late one and settles.
        let bad = offer(2, &pool, Side::Bid, 500, 10_000);
        let outputs = market.handle(NOW_MS + 1, Input::Offer { envelope: bad.clone(), rules: RULES, filled: 0 });
        assert_eq!(matches(&outputs), vec![(500, 10_000)]);
        let good = offer(4, &pool, Side::Bid, 100, 10_000);
        let outputs = market.handle(NOW_MS + 2, Input::Offer { envelope: good.clone(), rules: RULES, filled: 0 });
        assert_eq!(matches(&outputs), vec![(100, 10_000)]);
        let _ = market.handle(NOW_MS + 3, Input::Settled { bid: good.id(), ask: late.id(), quantity: 100 });
        assert_eq!(market.depth(&pool, 5).unwrap().asks, vec![(10_000, 400)]);

        assert!(market.handle(NOW_MS + SETTLE_WAIT_MS, Input::Tick).is_empty(), "not before its time");
        let now_ms = NOW_MS + 2 + SETTLE_WAIT_MS;
        let outputs = market.handle(now_ms, Input::Tick);
        let [Output::Unsettled(unsettled)] = &outputs[..] else { panic!("only the unsettled match: {outputs:?}") };
        assert_eq!(
            (unsettled.found.bid.id(), unsettled.found.ask.id(), unsettled.found.quantity),
            (bad.id(), early.id(), 500)
        );
        let restore =
            Input::Restore { unsettled: unsettled.clone(), at_fault: vec![bad.author], ledger_left: (500, 500) };
        let _ = market.handle(now_ms, restore);
        assert_eq!(market.depth(&pool, 5).unwrap().asks, vec![(10_000, 900)]);
        assert!(market.depth(&pool, 5).unwrap().bids.is_empty(), "the bid at fault gets nothing back");
        // The early ask is first again: the next bid takes it, not the later one.
        let next = offer(5, &pool, Side::Bid, 500, 10_000);
        let outputs = market.handle(now_ms, Input::Offer { envelope: next, rules: RULES, filled: 0 });
        let [Output::Match(found)] = &outputs[..] else { panic!("{outputs:?}") };
        assert_eq!((found.ask.id(), found.quantity), (early.id(), 500));
    }

    /// Nobody gets back more than the ledger still lets its offer settle, and what is given back trades at once
    /// with what crosses it (the book never rests crossed).
    #[test]
    fn an_unsettled_match_gives_back_no_more_than_the_ledger_lets_settle() {
        let mut market = Market::new(Limits::default());
        let pool = pool(0);
        let ask = offer(1, &pool, Side::Ask, 300, 10_000);
        let bid = offer(2, &pool, Side::Bid, 300, 10_000);
        let _ = market.handle(NOW_MS, Input::Offer { envelope: ask, rules: RULES, filled: 0 });
        assert_eq!(
            matches(&market.handle(NOW_MS, Input::Offer { envelope: bid, rules: RULES, filled: 0 })),
            vec![(300, 10_000)]
        );
        let outputs = market.handle(NOW_MS + SETTLE_WAIT_MS, Input::Tick);
        let [Output::Unsettled(unsettled)] = &outputs[..] else { panic!("{outputs:?}") };
        // Another settlement filled 200 of the bid meanwhile: 100 of it is given back, and all 300 of the ask, which
        // meets the bid again at once.
        let restore = Input::Restore { unsettled: unsettled.clone(), at_fault: Vec::new(), ledger_left: (100, 300) };
        let outputs = market.handle(NOW_MS + SETTLE_WAIT_MS, restore);
        assert_eq!(matches(&outputs), vec![(100, 10_000)]);
        let depth = market.depth(&pool, 5).unwrap();
        assert_eq!((depth.bids, depth.asks), (vec![], vec![(10_000, 200)]));
    }

    #[test]
    fn continuous_offers_match_on_arrival() {
        let mut market = Market::new(Limits::default());
        let pool = pool(0);
        let ask = offer(1, &pool, Side::Ask, 500, 10_000);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: ask.clone(), rules: RULES, filled: 0 }).is_empty());
        let bid = offer(2, &pool, Side::Bid, 300, 12_000);
        let outputs = market.handle(NOW_MS, Input::Offer { envelope: bid.clone(), rules: RULES, filled: 0 });
        assert_eq!(matches(&outputs), vec![(300, 10_000)]);
        let Output::Match(found) = &outputs[0] else { panic!("{outputs:?}") };
        assert_eq!((found.bid.id(), found.ask.id()), (bid.id(), ask.id()));
        assert_eq!(market.depth(&pool, 5).unwrap().asks, vec![(10_000, 200)]);
        // The ledger commits this match: nothing more comes off the ask.
        let _ = market.handle(NOW_MS, Input::Filled { offer: ask.id(), quantity: 300 });
        let _ = market.handle(NOW_MS, Input::Filled { offer: bid.id(), quantity: 300 });
        assert_eq!(market.depth(&pool, 5).unwrap().asks, vec![(10_000, 200)]);
        // The ledger settles 200 more of the ask (someone else's match): it leaves the book.
        let _ = market.handle(NOW_MS, Input::Filled { offer: ask.id(), quantity: 200 });
        assert_eq!(market.open_offers(), 0);
    }

    #[test]
    fn interval_offers_clear_together_at_the_gate() {
        let mut market = Market::new(Limits { gate_lead_ms: 60_000, ..Limits::default() });
        let pool = pool(900);
        let start_s = pool.next_delivery_start_s(NOW_MS / 1000);
        for envelope in [
            offer(1, &pool, Side::Ask, 400, 10_000),
            offer(2, &pool, Side::Ask, 400, 20_000),
            offer(3, &pool, Side::Bid, 300, 40_000),
            offer(4, &pool, Side::Bid, 200, 30_000),
        ] {
            assert!(market.handle(NOW_MS, Input::Offer { envelope, rules: RULES, filled: 0 }).is_empty());
        }
        assert_eq!(market.depth(&pool, 5).unwrap().bids, vec![(40_000, 300), (30_000, 200)]);
        assert!(market.handle(start_s * 1000 - 60_001, Input::Tick).is_empty(), "gate not yet closed");
        let outputs = market.handle(start_s * 1000 - 60_000, Input::Tick);
        // Demand 500 against supply 800: the marginal ask (20) sets the uniform price.
        assert_eq!(matches(&outputs), vec![(300, 20_000), (100, 20_000), (100, 20_000)]);
        assert!(outputs.contains(&Output::Cleared {
            pool: pool.clone(),
            delivery_start_s: start_s,
            price: Some(20_000),
            volume: 500,
            trades: 3
        }));
        // The interval is closed: a late offer for it is refused.
        let late = offer(5, &pool, Side::Bid, 100, 50_000);
        let outputs =
            market.handle(start_s * 1000 - 1_000, Input::Offer { envelope: late.clone(), rules: RULES, filled: 0 });
        assert_eq!(outputs, vec![Output::Refused { offer: late.id(), reason: Refusal::GateClosed }]);
        assert_eq!(market.open_offers(), 0);
    }

    #[test]
    fn an_essential_pool_shares_short_supply_by_need_and_a_floor_lifts_cheap_asks() {
        let mut market = Market::new(Limits { gate_lead_ms: 60_000, ..Limits::default() });
        let pool = pool(900);
        let start_s = pool.next_delivery_start_s(NOW_MS / 1000);
        let essential = crate::fairness::Essential { essential_per_account: 100, per_account_max: 0, share_max_ppm: 0 };
        let rules = Rules { essential: Some(essential), floor: 15_000, ..RULES };
        // 300 units at 10 (lifted to the floor of 15); a big bid at 90 for 1,000, two neighbours at 20 for 150.
        for envelope in [
            offer(1, &pool, Side::Ask, 300, 10_000),
            offer(2, &pool, Side::Bid, 1_000, 90_000),
            offer(3, &pool, Side::Bid, 150, 20_000),
            offer(4, &pool, Side::Bid, 150, 20_000),
        ] {
            assert!(market.handle(NOW_MS, Input::Offer { envelope, rules, filled: 0 }).is_empty());
        }
        let outputs = market.handle(start_s * 1000 - 60_000, Input::Tick);
        // Essentials (100 each) first, then equal shares of the rest: 100 each, at the supply's price (the floor).
        let mut got = matches(&outputs);
        got.sort_unstable();
        assert_eq!(got, vec![(100, 15_000); 3]);
    }

    #[test]
    fn a_frozen_accounts_offers_all_leave_the_pools() {
        let mut market = Market::new(Limits { gate_lead_ms: 60_000, ..Limits::default() });
        let (continuous, interval) = (pool(0), pool(900));
        let frozen = [offer(1, &continuous, Side::Ask, 100, 50_000), offer(1, &interval, Side::Ask, 100, 10_000)];
        for envelope in frozen.iter().cloned().chain([offer(2, &interval, Side::Ask, 50, 10_000)]) {
            assert!(market.handle(NOW_MS, Input::Offer { envelope, rules: RULES, filled: 0 }).is_empty());
        }
        assert_eq!(market.open_offers(), 3);
        let _ = market.handle(NOW_MS, Input::Withdraw { author: frozen[0].author });
        assert_eq!(market.open_offers(), 1, "only the other account's offer is left");
        // Nothing of the frozen account's matches any more.
        let bid = offer(3, &continuous, Side::Bid, 100, 60_000);
        assert!(matches(&market.handle(NOW_MS, Input::Offer { envelope: bid, rules: RULES, filled: 0 })).is_empty());
    }

    #[test]
    fn a_forgotten_pool_takes_its_book_and_offers_with_it_and_leaves_the_others() {
        let mut market = Market::new(Limits { gate_lead_ms: 60_000, ..Limits::default() });
        let (continuous, interval) = (pool(0), pool(900));
        let resting = [offer(1, &continuous, Side::Ask, 100, 50_000), offer(2, &interval, Side::Ask, 100, 10_000)];
        for envelope in resting.iter().cloned().chain([offer(3, &interval, Side::Bid, 50, 1_000)]) {
            assert!(market.handle(NOW_MS, Input::Offer { envelope, rules: RULES, filled: 0 }).is_empty());
        }
        let _ = market.handle(NOW_MS, Input::Forget { pool: interval.clone() });
        assert_eq!(market.open_offers(), 1);
        assert_eq!(market.pools().collect::<Vec<_>>(), vec![&continuous]);
        assert!(market.open_of(&resting[1].author).is_empty(), "no trace of the forgotten pool's offers");
        // The other pool trades on.
        let bid = offer(4, &continuous, Side::Bid, 100, 60_000);
        assert_eq!(
            matches(&market.handle(NOW_MS, Input::Offer { envelope: bid, rules: RULES, filled: 0 })),
            vec![(100, 50_000)]
        );
    }

    /// Review of issue 26, item 1: an ask a peer kept and sent with the pool's book had been filled on the ledger in
    /// part (or all of it): booked at full quantity it matched what the ledger would never settle.
    #[test]
    fn only_what_the_ledger_left_of_an_offer_is_booked() {
        let mut market = Market::new(Limits::default());
        let continuous = pool(0);
        let ask = offer(1, &continuous, Side::Ask, 2_000, 5_000);
        let taken = market.handle(NOW_MS, Input::Offer { envelope: ask.clone(), rules: RULES, filled: 1_500 });
        assert!(taken.is_empty(), "{taken:?}");
        let bid = offer(2, &continuous, Side::Bid, 2_000, 7_000);
        let outputs = market.handle(NOW_MS, Input::Offer { envelope: bid, rules: RULES, filled: 0 });
        assert_eq!(matches(&outputs), vec![(500, 5_000)], "only the 500 the ledger left");
        let settled = offer(3, &continuous, Side::Ask, 1_000, 5_000);
        let outputs = market.handle(NOW_MS, Input::Offer { envelope: settled.clone(), rules: RULES, filled: 1_000 });
        assert_eq!(outputs, vec![Output::Refused { offer: settled.id(), reason: Refusal::Settled }]);
        // An interval auction books only the rest as well.
        let interval = pool(900);
        let ask = offer(4, &interval, Side::Ask, 1_000, 1_000);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: ask.clone(), rules: RULES, filled: 400 }).is_empty());
        assert_eq!(market.open_of(&ask.author), vec![(ask, 600)]);
    }

    /// Issue 25, defect 1: 256 bids with a 20 s lifetime for a later interval filled their author's places in an
    /// interval pool, and after they expired every new offer of that author was still refused (they left only at
    /// their interval's gate). Such bids break the delivery rule (delivered after they expire) and take no place now;
    /// an offer that can be delivered still gets in.
    #[test]
    fn offers_that_expire_before_their_delivery_take_no_place() {
        let limits = Limits { orders_per_owner_max: 256, ..Limits::default() };
        let mut market = Market::new(limits);
        let pool = pool(900);
        let start_s = pool.next_delivery_start_s(NOW_MS / 1000) + 900;
        let keypair = Keypair::from_seed(&[1; 32]);
        let bid = |nonce: u64, expires_ms: u64| {
            let body = Body::Offer(Offer {
                pool: pool.clone(),
                side: Side::Bid,
                quantity: 10,
                unit_price: 1_000,
                delivery_start_s: start_s,
            });
            let draft =
                Draft { network: NetworkId::new("kos-test").unwrap(), nonce, created_ms: NOW_MS, expires_ms, body };
            Arc::new(draft.sign(&keypair))
        };
        for nonce in 0..256 {
            let outputs =
                market.handle(NOW_MS, Input::Offer { envelope: bid(nonce, NOW_MS + 20_000), rules: RULES, filled: 0 });
            assert!(matches!(&outputs[..], [Output::Refused { reason: Refusal::Delivery(_), .. }]), "{outputs:?}");
        }
        assert_eq!(market.open_offers(), 0);
        let good = bid(1_000, start_s * 1000);
        assert!(market.handle(NOW_MS + 1_000, Input::Offer { envelope: good, rules: RULES, filled: 0 }).is_empty());
        assert_eq!(market.depth(&pool, 5).unwrap().bids, vec![(1_000, 10)]);
    }

    /// The second line behind the delivery rule: an interval pool's offer that expires while it waits for its gate
    /// leaves at the next tick and gives its places back (the pool's and its author's).
    #[test]
    fn expired_interval_offers_leave_and_give_their_places_back() {
        let limits =
            Limits { orders_per_owner_max: 2, orders_per_pool_max: 3, gate_lead_ms: 60_000, ..Limits::default() };
        let pool = pool(900);
        let start_s = pool.next_delivery_start_s(NOW_MS / 1000) + 900;
        let mut auctions = Auctions::new(RULES);
        let offer_of = |key: u8, nonce: u64, expires_ms: u64| {
            let offer = Offer {
                pool: pool.clone(),
                side: Side::Bid,
                quantity: 10,
                unit_price: 1_000,
                delivery_start_s: start_s,
            };
            let draft = Draft {
                network: NetworkId::new("kos-test").unwrap(),
                nonce,
                created_ms: NOW_MS,
                expires_ms,
                body: Body::Offer(offer.clone()),
            };
            (Arc::new(draft.sign(&Keypair::from_seed(&[key; 32]))), offer)
        };
        for (key, nonce) in [(1, 1), (1, 2), (2, 3)] {
            let (envelope, offer) = offer_of(key, nonce, NOW_MS + 20_000);
            auctions.insert(NOW_MS, &limits, envelope.id(), envelope, &offer, RULES).unwrap();
        }
        let (late, offer) = offer_of(1, 4, start_s * 1000);
        assert_eq!(auctions.insert(NOW_MS, &limits, late.id(), late.clone(), &offer, RULES), Err(Refusal::PoolFull));
        assert!(auctions.expire(NOW_MS + 19_999).is_empty());
        assert_eq!(auctions.expire(NOW_MS + 20_000).len(), 3);
        assert_eq!((auctions.len(), auctions.per_owner.len(), auctions.intervals.len()), (0, 0, 0));
        assert_eq!(auctions.insert(NOW_MS + 20_000, &limits, late.id(), late, &offer, RULES), Ok(()));
    }

    /// The delivery rule of the protocol holds in the market too: an offer delivered after it expires, or beyond
    /// the horizon, takes no place.
    #[test]
    fn interval_offers_obey_the_delivery_rule() {
        let mut market = Market::new(Limits::default());
        let pool = pool(900);
        let keypair = Keypair::from_seed(&[1; 32]);
        let bid = |start_s: u64, expires_ms: u64| {
            let body = Body::Offer(Offer {
                pool: pool.clone(),
                side: Side::Bid,
                quantity: 10,
                unit_price: 1_000,
                delivery_start_s: start_s,
            });
            let draft =
                Draft { network: NetworkId::new("kos-test").unwrap(), nonce: 1, created_ms: NOW_MS, expires_ms, body };
            Arc::new(draft.sign(&keypair))
        };
        let next_s = pool.next_delivery_start_s(NOW_MS / 1000);
        let after_expiry = bid(next_s + 900, next_s * 1000);
        let beyond = bid((u64::MAX / 1000) / 900 * 900, NOW_MS + 20_000);
        for envelope in [after_expiry, beyond] {
            let outputs = market.handle(NOW_MS, Input::Offer { envelope: envelope.clone(), rules: RULES, filled: 0 });
            assert!(matches!(&outputs[..], [Output::Refused { reason: Refusal::Delivery(_), .. }]), "{outputs:?}");
        }
        assert_eq!(market.open_offers(), 0);
    }

    #[test]
    fn a_filled_interval_offer_leaves_its_pool() {
        let mut market = Market::new(Limits { orders_per_owner_max: 1, ..Limits::default() });
        let pool = pool(900);
        let first = offer(1, &pool, Side::Ask, 100, 10_000);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: first.clone(), rules: RULES, filled: 0 }).is_empty());
        let _ = market.handle(NOW_MS, Input::Filled { offer: first.id(), quantity: 60 });
        assert_eq!(market.open_offers(), 1);
        let _ = market.handle(NOW_MS, Input::Filled { offer: first.id(), quantity: 40 });
        assert_eq!(market.open_offers(), 0, "filled: its place is free");
        let second = offer(1, &pool, Side::Ask, 200, 10_000);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: second, rules: RULES, filled: 0 }).is_empty());
    }

    /// The pools bound counts pools with open offers: one whose offers all left makes room at the next tick (else a
    /// node that ever traded in `pools_max` pools would refuse every new one for good).
    #[test]
    fn a_pool_without_offers_leaves_and_makes_room() {
        let mut market = Market::new(Limits { pools_max: 1, ..Limits::default() });
        let (first, second) = (pool(0), pool(900));
        let ask = offer(1, &first, Side::Ask, 100, 10_000);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: ask.clone(), rules: RULES, filled: 0 }).is_empty());
        let other = offer(2, &second, Side::Ask, 100, 10_000);
        let outputs = market.handle(NOW_MS, Input::Offer { envelope: other.clone(), rules: RULES, filled: 0 });
        assert_eq!(outputs, vec![Output::Refused { offer: other.id(), reason: Refusal::TooManyPools }]);
        let _ = market.handle(NOW_MS, Input::Cancel { offer: ask.id(), author: ask.author });
        let _ = market.handle(NOW_MS, Input::Tick);
        assert_eq!(market.pools().count(), 0);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: other, rules: RULES, filled: 0 }).is_empty());
        assert_eq!(market.pools().cloned().collect::<Vec<_>>(), vec![second]);
    }

    #[test]
    fn the_first_open_interval_is_after_the_gate() {
        let short = pool(2);
        // At 1000.0 s with a 5 s lead, 1002 and 1004 have closed (their gates at 997 and 999 s), 1006 is open.
        assert_eq!(first_open_delivery_s(&short, 1_000_000, 5_000), 1_006);
        assert_eq!(first_open_delivery_s(&short, 1_000_999, 5_000), 1_006);
        assert_eq!(first_open_delivery_s(&short, 1_001_000, 5_000), 1_008);
        let hourly = pool(3600);
        assert_eq!(first_open_delivery_s(&hourly, 3_600_000, 5_000), 7_200);
        assert_eq!(first_open_delivery_s(&hourly, 7_195_000, 5_000), 10_800);
        assert_eq!(first_open_delivery_s(&pool(0), 7_195_000, 5_000), 0);
        for now_ms in [1_000_000u64, 1_000_999, 1_004_999, 1_005_000] {
            let start_s = first_open_delivery_s(&short, now_ms, 5_000);
            assert!(gate_ms(start_s, 5_000) > now_ms && gate_ms(start_s - 2, 5_000) <= now_ms, "{now_ms}");
        }
    }

    #[test]
    fn cancels_need_the_author_and_bounds_hold() {
        let mut market = Market::new(Limits { orders_per_owner_max: 1, ..Limits::default() });
        let pool = pool(900);
        let first = offer(1, &pool, Side::Ask, 100, 10_000);
        let second = offer(1, &pool, Side::Ask, 200, 10_000);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: first.clone(), rules: RULES, filled: 0 }).is_empty());
        let outputs = market.handle(NOW_MS, Input::Offer { envelope: second.clone(), rules: RULES, filled: 0 });
        assert_eq!(outputs, vec![Output::Refused { offer: second.id(), reason: Refusal::OwnerFull }]);
        let _ = market.handle(NOW_MS, Input::Cancel { offer: first.id(), author: PublicKey([9; 32]) });
        assert_eq!(market.open_offers(), 1, "a stranger cannot cancel");
        let _ = market.handle(NOW_MS, Input::Cancel { offer: first.id(), author: first.author });
        assert_eq!(market.open_offers(), 0);
        assert!(market.handle(NOW_MS, Input::Offer { envelope: second, rules: RULES, filled: 0 }).is_empty());
    }
}
