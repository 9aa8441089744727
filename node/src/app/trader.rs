//! The trader: every decision of the node's market as pure code (sans-IO, like [`market::pools`]). Inputs in
//! (offers with what the ledger says of them, cancels, commits, ticks, the outcome of submissions), outputs out
//! (what was taken or refused and why, the settlements and barter cycles this node must sign and submit, the reads
//! the shell must make). No clock, no socket, no ledger handle: the market actor (the node's `market` module)
//! reads the ledger, signs, submits and passes the time in.
//!
//! Its rules:
//! - **The pool must be able to settle.** An offer of a pool whose token is not in the genesis takes no place.
//! - **The period rule.** An offer's floor is its pool's base price for the period it trades in
//!   ([`market::pricing::period_start_s`], the rule the ledger settles by); [`Trader::period_s`] says which.
//! - **Matches the ledger will honour.** An offer enters a book only if the ledger's last commit says a settlement
//!   of it would pass the ledger's own checks of its author, together with the author's other open offers
//!   ([`ledger::state::TradeReads::check_offer`], the function the ledger's settlement calls): not frozen, in the
//!   pool's tier, able to pay or post collateral, within the anti-hoarding caps. The shell makes that read
//!   ([`Trader::open_of`] says what to read it with) and passes its verdict in.
//! - **Frozen accounts.** An offer or barter offer of an account an override froze is refused; when an override
//!   comes into force, the frozen account's resting offers leave the books and the board.
//! - **Fills.** The fills and barter legs the ledger commits reduce the books and the board, whoever settled them.
//! - **Unsettled matches.** A match the ledger has not settled [`::market::pools::SETTLE_WAIT_MS`] after it was
//!   made is judged against the ledger's last commit: an author the ledger now refuses, or who cancelled its offer
//!   on the ledger, is at fault, and so is a seller whose match goes unsettled with nobody at fault for the second
//!   time within [`STRIKE_MEMORY_MS`] (its node had to settle); an author at fault leaves the books and loses its
//!   fuel for offers at this node. The others get their quantity back at their old place in time priority.
//! - **Who settles.** Every node that serves a pool computes the same matches; only the seller (the ask's author)
//!   settles a match, and only the author of a barter cycle's first leg (the lowest offer id) submits the cycle.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ::ledger::state::Event;
use ::market::pools::{Depth, Limits, Market, Rules, Unsettled};
use protocol::message::{BarterCycle, BarterLeg, BarterPool, Body, Offer, PoolId, PoolKey, Settlement};
use protocol::types::{BoundedVec, TokenId};
use protocol::{Envelope, Id, PublicKey};

/// Barter offers kept on the board.
pub const BARTER_OFFERS_MAX: usize = 10_000;
/// Search steps for barter cycles per tick.
pub const BARTER_EXPANSIONS_MAX: usize = 200_000;
/// A seller whose match goes unsettled with nobody at fault twice within this time is at fault the second time: it
/// was its node's duty to settle.
pub const STRIKE_MEMORY_MS: u64 = 3_600_000;
/// Sellers with a strike remembered (beyond it the oldest is forgotten).
pub const STRIKES_MAX: usize = 10_000;

/// Why the trader did not take an offer in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the pool's token {0} is not a token of this network's genesis")]
    UnknownToken(TokenId),
    #[error("this account's trading is frozen by override {by} until height {until_height}")]
    Frozen { by: Id, until_height: u64 },
    /// The ledger would refuse a settlement of the offer (its author's standing or means, as of the last commit).
    #[error("the ledger would not settle it: {0}")]
    Unsettleable(::ledger::state::EntryError),
    #[error("{0}")]
    Market(::market::pools::Refusal),
    #[error("{0}")]
    Barter(::market::barter::Refusal),
}

/// What happens to the trader.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// An offer of a pool (gossiped, or the node's own), with what the ledger's last commit says of it: its pool's
    /// rules for the offer's period ([`Trader::period_s`]) and the verdict of
    /// [`ledger::state::TradeReads::check_offer`] on it with its author's open offers ([`Trader::open_of`]), and
    /// what the ledger already settled of it (`quantity −` [`ledger::state::TradeReads::offer_left`]).
    Offer { envelope: Arc<Envelope>, rules: Rules, verdict: Result<(), ::ledger::state::EntryError>, filled: u64 },
    /// A barter offer, with the verdict of [`ledger::state::BarterReads::check_barter_offer`] on what is left of it
    /// (the check each leg of a barter cycle meets on the ledger) with its author's open barter offers
    /// ([`Trader::barter_open_of`]), and what the ledger already settled of it.
    Barter { envelope: Arc<Envelope>, verdict: Result<(), ::ledger::state::EntryError>, filled: u64 },
    /// The author withdraws an offer (a validated cancel).
    Cancel { offer: Id, author: PublicKey },
    /// The events of a committed block, in order.
    Committed(&'a [Event]),
    /// The accounts that overrides now in force froze (the answer to [`Output::ReadFreezes`]).
    Frozen(Vec<PublicKey>),
    /// Time passed: auctions whose gate closed clear, expired offers leave, the board is searched for cycles.
    Tick,
    /// What became of a settlement or a barter cycle the trader asked for ([`Output::Settle`],
    /// [`Output::SettleCycle`]): `taken` when the ledger's mempool took it; a cycle's legs (each offer's id and what
    /// the cycle gives of it), whose promises on the board come back when it was not taken.
    Submitted { cycle: Option<Vec<(Id, u64)>>, taken: bool },
    /// The answer to [`Output::Judge`]: the parties of the unsettled match the ledger's last commit refuses
    /// ([`ledger::state::TradeReads::check_offer`] on each party's offer for the match's quantity) or whose offer
    /// their author cancelled on the ledger, and what the ledger still lets settle of the bid and of the ask
    /// ([`ledger::state::TradeReads::offer_left`]).
    Judged { unsettled: Unsettled, at_fault: Vec<PublicKey>, ledger_left: (u64, u64) },
}

/// What the trader asks of its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "settlements must be submitted and reads made"]
pub enum Output {
    /// The offer is in its pool, or the barter offer on the board.
    Taken { offer: Id },
    /// The offer or barter offer was refused.
    Refused { offer: Id, reason: Refusal },
    /// Sign and submit this settlement: the node is the seller of the match.
    Settle(Settlement),
    /// Sign and submit this barter cycle: the node wrote its first leg.
    SettleCycle(BarterCycle),
    /// These overrides came into force: read which accounts they froze and answer with [`Input::Frozen`].
    ReadFreezes(Vec<Id>),
    /// An interval auction cleared (for the logs).
    Cleared { pool: PoolId, delivery_start_s: u64, price: Option<u64>, volume: u64, trades: usize },
    /// A match the ledger did not settle in time ([`::market::pools::SETTLE_WAIT_MS`]): read which of its parties
    /// the ledger now refuses and answer with [`Input::Judged`].
    Judge(Unsettled),
    /// An author whose offer made a match the ledger refused: it loses its fuel for offers at this node (its offers
    /// already left this node's books).
    Penalize(PublicKey),
}

/// The judgment of an unsettled match ([`Output::Judge`]) against a ledger state, as [`Input::Judged`]: the
/// parties at fault (an offer that fails [`ledger::state::TradeReads::check_offer`] alone for the match's quantity,
/// or that its author cancelled on the ledger), and what the ledger still lets settle of the bid and of the ask.
pub fn judgment(state: &(impl ::ledger::state::Kv + ?Sized), unsettled: Unsettled, now_s: u64) -> Input<'static> {
    use ::ledger::state::TradeReads;
    let quantity = unsettled.found.quantity;
    let parties = [&unsettled.found.bid, &unsettled.found.ask];
    let mut at_fault = Vec::new();
    let mut left = [0u64; 2];
    for (slot, envelope) in left.iter_mut().zip(parties) {
        let Body::Offer(offer) = &envelope.body else { continue };
        let (id, author) = (envelope.id(), envelope.author);
        let matched = Offer { quantity, ..offer.clone() };
        if state.cancelled(&id, &author) || state.check_offer(&author, &matched, &[], now_s).is_err() {
            at_fault.push(author);
        }
        *slot = state.offer_left(&id, &author, offer.quantity);
    }
    Input::Judged { unsettled, at_fault, ledger_left: (left[0], left[1]) }
}

/// What the trader has done, for the API and metrics.
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
    /// Offers refused because the ledger would not settle them (their author's tier, funds or caps).
    pub unsettleable: u64,
    pub barter_cycles_found: u64,
    pub barter_cycles_submitted: u64,
    /// Matches the ledger did not settle in time.
    pub unsettled: u64,
    /// Authors found at fault for an unsettled match (their offers left the books).
    pub faults: u64,
}

/// The node's market decisions: its pools' books and auctions, the barter board, and who settles.
pub struct Trader {
    /// The node's account: the seller it settles for.
    me: PublicKey,
    /// The genesis's tokens: a pool of another token could never settle.
    tokens: BTreeSet<TokenId>,
    market: Market,
    board: ::market::barter::Board,
    stats: Stats,
    /// Sellers whose match went unsettled with nobody at fault, and when.
    strikes: HashMap<PublicKey, u64>,
}

impl Trader {
    pub fn new(me: PublicKey, tokens: impl IntoIterator<Item = TokenId>, limits: Limits) -> Trader {
        Trader {
            me,
            tokens: tokens.into_iter().collect(),
            market: Market::new(limits),
            board: ::market::barter::Board::new(BARTER_OFFERS_MAX),
            stats: Stats::default(),
            strikes: HashMap::new(),
        }
    }

    /// The period whose base price is an offer's floor at `now_ms`: the rules to read for it.
    pub fn period_s(offer: &Offer, now_ms: u64) -> u64 {
        ::market::pricing::period_start_s(offer.pool.interval_s, offer.delivery_start_s, now_ms / 1000)
    }

    /// Whether an offer of `pool` can take a place at all (before its rules are read); a refusal is counted.
    pub fn admit(&mut self, pool: &PoolId) -> Result<(), Refusal> {
        if self.tokens.contains(&pool.token) {
            return Ok(());
        }
        self.stats.refused += 1;
        Err(Refusal::UnknownToken(pool.token.clone()))
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// An author's open offers in the node's books, each with the quantity it has left: what
    /// [`ledger::state::TradeReads::check_offer`] checks a new offer of the author together with.
    pub fn open_of(&self, author: &PublicKey) -> Vec<Offer> {
        let open = self.market.open_of(author);
        open.into_iter()
            .filter_map(|(envelope, left)| match &envelope.body {
                Body::Offer(offer) => Some(Offer { quantity: left, ..offer.clone() }),
                _ => None,
            })
            .collect()
    }

    /// What `author` gives in its barter offers on the board other than `except`: (resource, quantity left).
    pub fn barter_open_of(&self, author: &PublicKey, except: &Id) -> Vec<(::protocol::message::Resource, u64)> {
        self.board.open_of(author, except)
    }

    /// A pool's open offers by price level.
    pub fn depth(&self, pool: &PoolId, levels: usize) -> Option<Depth> {
        self.market.depth(pool, levels)
    }

    /// The pools with offers or books.
    pub fn pools(&self) -> impl Iterator<Item = &PoolId> {
        self.market.pools()
    }

    /// The pools the node itself trades in: its own open offers and unsettled matches are there, or its own barter
    /// offers are on the board.
    pub fn own_pools(&self) -> BTreeSet<PoolKey> {
        let pools = self.open_of(&self.me).into_iter().map(|offer| PoolKey::Market(offer.pool));
        let barter = self.board.cells_of(&self.me).into_iter().map(|cell| PoolKey::Barter(BarterPool { cell }));
        pools.chain(barter).collect()
    }

    /// Drops the books (and barter offers) of the pools the node is no longer in (those it trades in stay): it
    /// receives nothing of them any more, so they would only go stale.
    pub fn keep_pools(&mut self, now_ms: u64, joined: &BTreeSet<PoolKey>) {
        let own = self.own_pools();
        let kept = |key: &PoolKey| joined.contains(key) || own.contains(key);
        let gone: Vec<PoolId> =
            self.market.pools().filter(|pool| !kept(&PoolKey::Market((*pool).clone()))).cloned().collect();
        for pool in gone {
            let _ = self.market.handle(now_ms, ::market::pools::Input::Forget { pool });
        }
        for cell in self.board.cells() {
            if !kept(&PoolKey::Barter(BarterPool { cell: cell.clone() })) {
                self.board.forget(&cell);
            }
        }
    }

    /// The one entry point: an input at `now_ms`, and what the shell must do about it.
    pub fn handle(&mut self, now_ms: u64, input: Input<'_>) -> Vec<Output> {
        match input {
            Input::Offer { envelope, rules, verdict, filled } => self.offer(now_ms, envelope, rules, verdict, filled),
            Input::Barter { envelope, verdict, filled } => vec![self.barter(now_ms, envelope, verdict, filled)],
            Input::Cancel { offer, author } => {
                self.board.cancel(&offer, &author);
                let outputs = self.market.handle(now_ms, ::market::pools::Input::Cancel { offer, author });
                self.matched(outputs)
            }
            Input::Committed(events) => self.committed(now_ms, events),
            Input::Frozen(accounts) => {
                for author in accounts {
                    let _ = self.market.handle(now_ms, ::market::pools::Input::Withdraw { author });
                    self.board.withdraw(&author);
                }
                Vec::new()
            }
            Input::Tick => self.tick(now_ms),
            Input::Judged { unsettled, at_fault, ledger_left } => self.judged(now_ms, unsettled, at_fault, ledger_left),
            Input::Submitted { cycle, taken } => {
                match (cycle, taken) {
                    (None, true) => self.stats.settlements_submitted += 1,
                    (None, false) => self.stats.settlements_refused += 1,
                    (Some(_), true) => self.stats.barter_cycles_submitted += 1,
                    // Refused by the mempool: what it took of its offers may go into other cycles now.
                    (Some(legs), false) => self.board.unpromise(&legs),
                }
                Vec::new()
            }
        }
    }

    fn offer(
        &mut self,
        now_ms: u64,
        envelope: Arc<Envelope>,
        rules: Rules,
        verdict: Result<(), ::ledger::state::EntryError>,
        filled: u64,
    ) -> Vec<Output> {
        let id = envelope.id();
        let Body::Offer(offer) = &envelope.body else {
            return vec![Output::Refused { offer: id, reason: Refusal::Market(::market::pools::Refusal::NotAnOffer) }];
        };
        if let Err(reason) = self.admit(&offer.pool) {
            return vec![Output::Refused { offer: id, reason }];
        }
        if let Err(problem) = verdict {
            self.stats.refused += 1;
            let reason = match problem {
                ::ledger::state::EntryError::Frozen { by, until_height, .. } => {
                    self.stats.frozen += 1;
                    Refusal::Frozen { by, until_height }
                }
                problem => {
                    self.stats.unsettleable += 1;
                    Refusal::Unsettleable(problem)
                }
            };
            return vec![Output::Refused { offer: id, reason }];
        }
        self.stats.offers += 1;
        let outputs = self.market.handle(now_ms, ::market::pools::Input::Offer { envelope, rules, filled });
        let mut outputs = self.matched(outputs);
        if !outputs.iter().any(|output| matches!(output, Output::Refused { offer, .. } if *offer == id)) {
            outputs.insert(0, Output::Taken { offer: id });
        }
        outputs
    }

    fn barter(
        &mut self,
        now_ms: u64,
        envelope: Arc<Envelope>,
        verdict: Result<(), ::ledger::state::EntryError>,
        filled: u64,
    ) -> Output {
        let offer = envelope.id();
        match verdict {
            Ok(()) => {}
            Err(::ledger::state::EntryError::Frozen { by, until_height, .. }) => {
                self.stats.frozen += 1;
                return Output::Refused { offer, reason: Refusal::Frozen { by, until_height } };
            }
            Err(problem) => {
                self.stats.unsettleable += 1;
                return Output::Refused { offer, reason: Refusal::Unsettleable(problem) };
            }
        }
        match self.board.offer(now_ms, envelope, filled) {
            Ok(()) => {
                self.stats.barter_offers += 1;
                Output::Taken { offer }
            }
            Err(reason) => Output::Refused { offer, reason: Refusal::Barter(reason) },
        }
    }

    /// An unsettled match judged: the authors at fault leave the books and lose their fuel for offers; a seller
    /// whose match went unsettled with nobody at fault twice within [`STRIKE_MEMORY_MS`] is at fault; the others
    /// get their quantity back (and may match at once).
    fn judged(
        &mut self,
        now_ms: u64,
        unsettled: Unsettled,
        mut at_fault: Vec<PublicKey>,
        ledger_left: (u64, u64),
    ) -> Vec<Output> {
        if at_fault.is_empty() {
            let seller = unsettled.found.ask.author;
            match self.strikes.remove(&seller) {
                Some(at_ms) if now_ms.saturating_sub(at_ms) < STRIKE_MEMORY_MS => at_fault.push(seller),
                _ => {
                    if self.strikes.len() >= STRIKES_MAX
                        && let Some(oldest) = self.strikes.iter().min_by_key(|(_, at_ms)| **at_ms).map(|(key, _)| *key)
                    {
                        self.strikes.remove(&oldest);
                    }
                    self.strikes.insert(seller, now_ms);
                }
            }
        }
        let mut outputs = Vec::new();
        for author in &at_fault {
            self.stats.faults += 1;
            let _ = self.market.handle(now_ms, ::market::pools::Input::Withdraw { author: *author });
            outputs.push(Output::Penalize(*author));
        }
        let restore = ::market::pools::Input::Restore { unsettled, at_fault, ledger_left };
        let matched = self.market.handle(now_ms, restore);
        outputs.extend(self.matched(matched));
        outputs
    }

    /// Fills the ledger committed reduce the books and the board, whoever settled them; overrides that came into
    /// force are to be read.
    fn committed(&mut self, now_ms: u64, events: &[Event]) -> Vec<Output> {
        let mut overrides = Vec::new();
        for event in events {
            match event {
                Event::TradeSettled { bid, ask, quantity, .. } => {
                    let settled = ::market::pools::Input::Settled { bid: *bid, ask: *ask, quantity: *quantity };
                    let _ = self.market.handle(now_ms, settled);
                }
                Event::BarterSettled { legs, .. } => {
                    for (offer, quantity) in legs {
                        self.board.filled(offer, *quantity);
                    }
                }
                Event::OverrideInForce { proposal, .. } => overrides.push(*proposal),
                _ => {}
            }
        }
        if overrides.is_empty() { Vec::new() } else { vec![Output::ReadFreezes(overrides)] }
    }

    fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let outputs = self.market.handle(now_ms, ::market::pools::Input::Tick);
        let mut outputs = self.matched(outputs);
        for cycle in self.board.search(now_ms, protocol::limits::BARTER_LEGS_MAX, BARTER_EXPANSIONS_MAX) {
            self.stats.barter_cycles_found += 1;
            if cycle.first().is_none_or(|(first, _)| first.author != self.me) {
                continue;
            }
            let legs: Vec<BarterLeg> = cycle
                .iter()
                .map(|(offer, give_quantity)| BarterLeg { offer: (**offer).clone(), give_quantity: *give_quantity })
                .collect();
            // The board's search never finds a cycle longer than the protocol's bound.
            if let Ok(legs) = BoundedVec::new(legs) {
                outputs.push(Output::SettleCycle(BarterCycle { legs }));
            }
        }
        outputs
    }

    /// The matching engine's outputs, as the trader's: matches this node sells in become settlements.
    fn matched(&mut self, outputs: Vec<::market::pools::Output>) -> Vec<Output> {
        let mut mine = Vec::new();
        for output in outputs {
            match output {
                ::market::pools::Output::Match(found) => {
                    self.stats.matches += 1;
                    self.stats.matched_quantity = self.stats.matched_quantity.saturating_add(found.quantity);
                    if found.ask.author == self.me {
                        mine.push(Output::Settle(Settlement {
                            bid: Box::new((*found.bid).clone()),
                            ask: Box::new((*found.ask).clone()),
                            quantity: found.quantity,
                            unit_price: found.unit_price,
                            mechanism: found.mechanism,
                        }));
                    }
                }
                ::market::pools::Output::Refused { offer, reason } => {
                    self.stats.refused += 1;
                    mine.push(Output::Refused { offer, reason: Refusal::Market(reason) });
                }
                ::market::pools::Output::Cleared { pool, delivery_start_s, price, volume, trades } => {
                    mine.push(Output::Cleared { pool, delivery_start_s, price, volume, trades });
                }
                ::market::pools::Output::Unsettled(unsettled) => {
                    self.stats.unsettled += 1;
                    mine.push(Output::Judge(unsettled));
                }
            }
        }
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::Side;
    use protocol::{Draft, Keypair, NetworkId};

    const NOW_MS: u64 = 1_750_000_000_000;

    fn network() -> NetworkId {
        NetworkId::new("kos-test").unwrap()
    }

    fn pool() -> PoolId {
        "energy/credit/u33db/0".parse().unwrap()
    }

    fn rules() -> Rules {
        Rules {
            mechanism: ::market::auction::Mechanism::PayAsClear,
            fee: ::market::Fee::None,
            floor: 0,
            essential: None,
        }
    }

    fn offer(key: &Keypair, nonce: u64, side: Side, quantity: u64, unit_price: u64) -> Arc<Envelope> {
        let body = Body::Offer(Offer { pool: pool(), side, quantity, unit_price, delivery_start_s: 0 });
        let draft = Draft { network: network(), nonce, created_ms: NOW_MS, expires_ms: NOW_MS + 900_000, body };
        Arc::new(draft.sign(key))
    }

    fn trader(key: &Keypair) -> Trader {
        Trader::new(key.public(), [TokenId::new("credit").unwrap()], Limits::default())
    }

    /// The event the ledger commits for a settlement (the ledger's own construction of it).
    fn settled(key: &Keypair, nonce: u64, settlement: &Settlement) -> Event {
        let body = Body::Settlement(settlement.clone());
        let draft = Draft { network: network(), nonce, created_ms: NOW_MS, expires_ms: NOW_MS + 600_000, body };
        let envelope = draft.sign(key);
        ::ledger::state::entry_event(&envelope.id(), &envelope).unwrap()
    }

    /// A seeded stream of numbers (splitmix64): the simulation's only randomness.
    struct Seeded(u64);

    impl Seeded {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % below
        }
    }

    /// Four nodes trade in one continuous pool under a seeded stream of offers, each seeing every offer in the same
    /// order. Every node computes the same matches; each match is settled by exactly one node, its seller; once the
    /// ledger commits the settlements every node's book is the same, and no offer was settled beyond its quantity.
    #[test]
    fn in_a_seeded_market_every_match_is_settled_once_by_its_seller() {
        for seed in 0..20 {
            let keys: Vec<Keypair> = (1..=4u8).map(|i| Keypair::from_seed(&[i; 32])).collect();
            let mut traders: Vec<Trader> = keys.iter().map(trader).collect();
            let mut random = Seeded(seed);
            let mut offered = std::collections::HashMap::new();
            let mut settled_of = std::collections::HashMap::<Id, u64>::new();
            let mut matched = 0;
            for nonce in 1..=200u64 {
                let author = usize::try_from(random.next(4)).unwrap();
                let side = if random.next(2) == 0 { Side::Bid } else { Side::Ask };
                let quantity = 1 + random.next(1000);
                let envelope = offer(&keys[author], nonce, side, quantity, 200 + random.next(100));
                offered.insert(envelope.id(), quantity);
                let now_ms = NOW_MS + nonce;
                let mut settlements = Vec::new();
                let mut matches = Vec::new();
                for (node, trader) in traders.iter_mut().enumerate() {
                    let before = trader.stats().matches;
                    let input = Input::Offer { envelope: envelope.clone(), rules: rules(), verdict: Ok(()), filled: 0 };
                    for output in trader.handle(now_ms, input) {
                        if let Output::Settle(settlement) = output {
                            assert_eq!(
                                settlement.ask.author,
                                keys[node].public(),
                                "seed {seed}: only the seller settles"
                            );
                            settlements.push(settlement);
                        }
                    }
                    matches.push(trader.stats().matches - before);
                }
                assert!(matches.iter().all(|count| *count == matches[0]), "seed {seed}: the nodes matched alike");
                assert_eq!(settlements.len() as u64, matches[0], "seed {seed}: each match settled exactly once");
                matched += matches[0];
                let events: Vec<Event> = settlements
                    .iter()
                    .map(|settlement| {
                        let seller = keys.iter().find(|key| key.public() == settlement.ask.author).unwrap();
                        settled(seller, nonce, settlement)
                    })
                    .collect();
                for settlement in &settlements {
                    for offer in [settlement.bid.id(), settlement.ask.id()] {
                        *settled_of.entry(offer).or_default() += settlement.quantity;
                    }
                }
                for trader in &mut traders {
                    assert!(trader.handle(now_ms, Input::Committed(&events)).is_empty());
                }
            }
            assert!(matched > 20, "seed {seed}: the market traded ({matched} matches)");
            for (offer, quantity) in &settled_of {
                assert!(quantity <= &offered[offer], "seed {seed}: an offer settled beyond its quantity");
            }
            let depths: Vec<_> = traders.iter().map(|trader| trader.depth(&pool(), 1000)).collect();
            assert!(depths.iter().all(|depth| *depth == depths[0]), "seed {seed}: the books agree after the commits");
        }
    }

    #[test]
    fn an_offer_of_a_pool_the_genesis_cannot_settle_is_refused() {
        let key = Keypair::from_seed(&[1; 32]);
        let mut trader = Trader::new(key.public(), [TokenId::new("watt").unwrap()], Limits::default());
        let envelope = offer(&key, 1, Side::Bid, 10, 100);
        let outputs = trader
            .handle(NOW_MS, Input::Offer { envelope: envelope.clone(), rules: rules(), verdict: Ok(()), filled: 0 });
        let reason = Refusal::UnknownToken(TokenId::new("credit").unwrap());
        assert_eq!(outputs, vec![Output::Refused { offer: envelope.id(), reason }]);
        assert_eq!(trader.stats().refused, 1);
    }

    /// A frozen account's offers are refused; an override coming into force asks for its accounts, and the answer
    /// takes their resting offers out of the book.
    #[test]
    fn frozen_accounts_are_refused_and_their_resting_offers_leave() {
        let (me, other) = (Keypair::from_seed(&[1; 32]), Keypair::from_seed(&[2; 32]));
        let mut trader = trader(&me);
        let in_force = ::ledger::state::InForce { by: Id([7; 32]), until_height: 9, first: 0, second: 0 };
        let refused = offer(&other, 1, Side::Bid, 10, 100);
        let frozen = ::ledger::state::EntryError::Frozen { account: other.public(), by: in_force.by, until_height: 9 };
        let outputs = trader.handle(
            NOW_MS,
            Input::Offer { envelope: refused.clone(), rules: rules(), verdict: Err(frozen), filled: 0 },
        );
        let reason = Refusal::Frozen { by: in_force.by, until_height: 9 };
        assert_eq!(outputs, vec![Output::Refused { offer: refused.id(), reason }]);
        assert_eq!(trader.stats().frozen, 1);

        let resting = offer(&other, 2, Side::Bid, 10, 100);
        let outputs = trader
            .handle(NOW_MS, Input::Offer { envelope: resting.clone(), rules: rules(), verdict: Ok(()), filled: 0 });
        assert_eq!(outputs, vec![Output::Taken { offer: resting.id() }]);
        assert_eq!(trader.depth(&pool(), 10).unwrap().offers, 1);
        let events = [Event::OverrideInForce { proposal: in_force.by, until_height: 9 }];
        assert_eq!(trader.handle(NOW_MS, Input::Committed(&events)), vec![Output::ReadFreezes(vec![in_force.by])]);
        assert!(trader.handle(NOW_MS, Input::Frozen(vec![other.public()])).is_empty());
        assert_eq!(trader.depth(&pool(), 10).map_or(0, |depth| depth.offers), 0);
    }

    /// The period rule the ledger settles by: a continuous pool's offers are priced in the hour, an interval pool's
    /// in their delivery interval.
    #[test]
    fn an_offer_is_priced_in_its_hour_or_its_delivery_interval() {
        let mut continuous = Offer { pool: pool(), side: Side::Bid, quantity: 1, unit_price: 1, delivery_start_s: 0 };
        assert_eq!(Trader::period_s(&continuous, 7_200_000 + 59 * 60_000), 7_200);
        continuous.pool = "energy/credit/u33db/900".parse().unwrap();
        continuous.delivery_start_s = 9_000;
        assert_eq!(Trader::period_s(&continuous, 7_200_000), 9_000);
    }

    /// The griefing drill of issue 26, under a seeded simulation with the real state machine: honest homes trade
    /// in a compute pool for tier 1 and up while an unfunded account floods it with the best bids and a funded
    /// account below the pool's tier with the best asks. Each author runs a node (a trader seeing every offer in
    /// the same order); the sellers' settlements are executed as blocks of the ledger's state machine.
    mod griefing {
        use super::*;
        use ::ledger::reads::*;
        use ::ledger::state::{BlockContext, State};
        use protocol::message::{Mechanism, Resource};
        use protocol::types::Cell;

        const FUNDS: u64 = 1_000_000_000_000;
        const STEPS: u64 = 400;

        fn compute() -> PoolId {
            "compute/credit/u33db/0".parse().unwrap()
        }

        /// What a run came to: the honest volume the ledger settled, and the honest offers whose quantity neither
        /// the ledger settled nor the book holds (left reduced by a match that never settled).
        #[derive(Debug)]
        struct Outcome {
            volume: u64,
            reduced: Vec<Id>,
            unsettleable: u64,
        }

        struct World {
            state: State,
            height: u64,
            keys: Vec<Keypair>,
            nonce: u64,
        }

        impl World {
            /// Key 0 validates; 1..=4 are honest homes; 5 holds nothing; 6 and 7 are funded, and 6 has failed a
            /// delivery (an energy sale to 7 it never read), which puts it below the compute pool's tier.
            fn new() -> World {
                let keys: Vec<Keypair> = (0..8u8).map(|index| Keypair::from_seed(&[index + 60; 32])).collect();
                let public: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
                let funded: Vec<PublicKey> = [0, 1, 2, 3, 4, 6, 7].iter().map(|index| public[*index]).collect();
                let mut text =
                    ::ledger::Genesis::devnet_text("kos-test", NOW_MS - 3_600_000, &public[..1], &funded, FUNDS);
                text.push_str(
                    "\n[params]\nsettlement_grace_ms = 0\n\n[[pools]]\npool = \"compute/*/*/*\"\ntier_min = 1\n",
                );
                text.push_str("\n[[tiers]]\nname = \"new\"\n\n[[tiers]]\nname = \"member\"\nscore_min_ppm = 500000\n");
                let genesis = Arc::new(::ledger::Genesis::parse(&text).unwrap());
                let mut world = World { state: State::genesis(genesis), height: 0, keys, nonce: 0 };
                let energy = PoolId {
                    resource: Resource::Energy,
                    token: TokenId::new("credit").unwrap(),
                    cell: Cell::new("u33db").unwrap(),
                    interval_s: 900,
                };
                let start_ms = NOW_MS - 3_600_000;
                let delivery_start_s = energy.next_delivery_start_s(start_ms / 1000);
                let [bid, ask] = [(7, Side::Bid), (6, Side::Ask)].map(|(author, side)| {
                    let offer =
                        Offer { pool: energy.clone(), side, quantity: 1_000, unit_price: 1_000, delivery_start_s };
                    world.sign(author, Body::Offer(offer), start_ms)
                });
                let settlement = Settlement {
                    bid: Box::new(bid),
                    ask: Box::new(ask),
                    quantity: 1_000,
                    unit_price: 1_000,
                    mechanism: Mechanism::PayAsClear,
                };
                let entry = world.sign(6, Body::Settlement(settlement), start_ms).to_bytes();
                assert!(world.block(start_ms, vec![entry]).0.is_empty());
                assert!(world.block((delivery_start_s + 901) * 1000, Vec::new()).0.is_empty());
                assert_eq!(world.state.tier(&public[6]), 0, "the failed seller is below the pool's tier");
                assert_eq!(world.state.tier(&public[1]), 1, "a newcomer is a member");
                world
            }

            fn sign(&mut self, author: usize, body: Body, now_ms: u64) -> Envelope {
                self.nonce += 1;
                let draft = Draft {
                    network: network(),
                    nonce: self.nonce,
                    created_ms: now_ms,
                    expires_ms: now_ms + 3_600_000,
                    body,
                };
                draft.sign(&self.keys[author])
            }

            /// Executes a block of `entries` at `now_ms`: its events, and the errors of the entries it refused.
            fn block(&mut self, now_ms: u64, entries: Vec<Vec<u8>>) -> (Vec<::ledger::state::EntryError>, Vec<Event>) {
                self.height += 1;
                let context = BlockContext { height: self.height, time_ms: now_ms, proposer: self.keys[0].public() };
                let built = self.state.build(context, entries, &|_| false);
                let events = built.executed.events.clone();
                self.state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
                (built.rejected.into_iter().map(|(_, error)| error).collect(), events)
            }
        }

        /// One step's offers: an honest home's (seeded), and with `attack` the flood's best bid and best ask.
        fn offers_of_step(random: &mut Seeded, attack: bool) -> Vec<(usize, Offer)> {
            let offer = |side: Side, quantity: u64, unit_price: u64| Offer {
                pool: compute(),
                side,
                quantity,
                unit_price,
                delivery_start_s: 0,
            };
            let author = 1 + usize::try_from(random.next(4)).unwrap();
            let side = if random.next(2) == 0 { Side::Bid } else { Side::Ask };
            let quantity = 1 + random.next(1_000);
            let mut offers = vec![(author, offer(side, quantity, 90_000 + random.next(20_000)))];
            if attack {
                offers.push((5, offer(Side::Bid, 1_000, 200_000)));
                offers.push((6, offer(Side::Ask, 1_000, 1_000)));
            }
            offers
        }

        /// Does what a trader asks that the drill plays: settlements are collected, unsettled matches judged
        /// (when `checked`).
        fn act(
            world: &World,
            trader: &mut Trader,
            outputs: Vec<Output>,
            now_ms: u64,
            checked: bool,
        ) -> Vec<Settlement> {
            let mut settlements = Vec::new();
            let mut pending = outputs;
            while !pending.is_empty() {
                let mut next = Vec::new();
                for output in pending {
                    match output {
                        Output::Settle(settlement) => settlements.push(settlement),
                        Output::Judge(unsettled) if checked => {
                            next.extend(trader.handle(now_ms, judgment(&world.state, unsettled, now_ms / 1000)));
                        }
                        _ => {}
                    }
                }
                pending = next;
            }
            settlements
        }

        /// An offer reaches every node: each checks it with the ledger (when `checked`) and takes it or not.
        fn deliver(
            world: &World,
            traders: &mut [Trader],
            envelope: &Arc<Envelope>,
            now_ms: u64,
            checked: bool,
        ) -> Vec<Settlement> {
            let Body::Offer(terms) = &envelope.body else { return Vec::new() };
            let mut settlements = Vec::new();
            for trader in traders {
                let author = envelope.author;
                let verdict = match checked {
                    true => world.state.check_offer(&author, terms, &trader.open_of(&author), now_ms / 1000),
                    false => Ok(()),
                };
                let mut outputs = trader
                    .handle(now_ms, Input::Offer { envelope: envelope.clone(), rules: rules(), verdict, filled: 0 });
                outputs.extend(trader.handle(now_ms, Input::Tick));
                settlements.extend(act(world, trader, outputs, now_ms, checked));
            }
            settlements
        }

        /// The honest offers whose quantity the ledger still lets settle but the validator's book does not hold.
        fn reduced(world: &World, trader: &Trader, offers: &[Arc<Envelope>]) -> Vec<Id> {
            offers
                .iter()
                .filter(|envelope| {
                    let Body::Offer(offer) = &envelope.body else { return false };
                    let on_ledger = world.state.offer_left(&envelope.id(), &envelope.author, offer.quantity);
                    let in_book: u64 = trader
                        .open_of(&envelope.author)
                        .iter()
                        .filter(|open| **open == Offer { quantity: open.quantity, ..offer.clone() })
                        .map(|open| open.quantity)
                        .sum();
                    in_book < on_ledger
                })
                .map(|envelope| envelope.id())
                .collect()
        }

        /// One run: `attack` adds the flooding accounts; `checked` makes the node check every offer with the
        /// ledger (and judge unsettled matches), as it does now; unchecked is the node before issue 26.
        fn run(seed: u64, attack: bool, checked: bool) -> Outcome {
            let mut world = World::new();
            let mut traders: Vec<Trader> = world.keys.iter().map(trader).collect();
            let mut random = Seeded(seed);
            let mut honest_offers: Vec<Arc<Envelope>> = Vec::new();
            let mut volume = 0;
            for step in 0..STEPS {
                let now_ms = NOW_MS + step * 1_000;
                let mut settlements = Vec::new();
                for (author, terms) in offers_of_step(&mut random, attack) {
                    let envelope = Arc::new(world.sign(author, Body::Offer(terms), now_ms));
                    if (1..=4).contains(&author) {
                        honest_offers.push(envelope.clone());
                    }
                    settlements.extend(deliver(&world, &mut traders, &envelope, now_ms, checked));
                }
                let entries: Vec<Vec<u8>> = settlements
                    .into_iter()
                    .map(|settlement| {
                        let seller = world.keys.iter().position(|key| key.public() == settlement.ask.author).unwrap();
                        world.sign(seller, Body::Settlement(settlement), now_ms).to_bytes()
                    })
                    .collect();
                let (_, events) = world.block(now_ms, entries);
                for event in &events {
                    if let Event::TradeSettled { quantity, .. } = event {
                        volume += quantity;
                    }
                }
                for trader in &mut traders {
                    let _ = trader.handle(now_ms, Input::Committed(&events));
                }
            }
            // Time for every unsettled match to be judged.
            let end_ms = NOW_MS + STEPS * 1_000 + ::market::pools::SETTLE_WAIT_MS;
            for trader in &mut traders {
                let outputs = trader.handle(end_ms, Input::Tick);
                let _ = act(&world, trader, outputs, end_ms, checked);
            }
            let reduced = reduced(&world, &traders[0], &honest_offers);
            Outcome { volume, reduced, unsettleable: traders[0].stats().unsettleable }
        }

        fn terms(side: Side, quantity: u64) -> Offer {
            Offer { pool: compute(), side, quantity, unit_price: 100_000, delivery_start_s: 0 }
        }

        /// An offer of `author`, checked with the ledger and given to `trader`: the envelope and the outputs.
        fn place(
            world: &mut World,
            trader: &mut Trader,
            author: usize,
            offer: Offer,
            now_ms: u64,
        ) -> (Arc<Envelope>, Vec<Output>) {
            let envelope = Arc::new(world.sign(author, Body::Offer(offer.clone()), now_ms));
            let key = envelope.author;
            let verdict = world.state.check_offer(&key, &offer, &trader.open_of(&key), now_ms / 1000);
            assert_eq!(verdict, Ok(()));
            (envelope.clone(), trader.handle(now_ms, Input::Offer { envelope, rules: rules(), verdict, filled: 0 }))
        }

        fn settlement_of(outputs: Vec<Output>) -> Settlement {
            let found = outputs.into_iter().find_map(|output| match output {
                Output::Settle(settlement) => Some(settlement),
                _ => None,
            });
            found.expect("the seller settles its match")
        }

        /// A bidder that cancels its bid on the ledger once matched: the settlement is refused, the bidder is at
        /// fault, and the ask gets its place back.
        #[test]
        fn a_bidder_that_cancels_after_its_match_is_at_fault() {
            let mut world = World::new();
            let mut seller = trader(&world.keys[1]);
            let (bid, _) = place(&mut world, &mut seller, 2, terms(Side::Bid, 1_000), NOW_MS);
            let (ask, outputs) = place(&mut world, &mut seller, 1, terms(Side::Ask, 1_000), NOW_MS + 1);
            let settlement = settlement_of(outputs);
            let cancel = world.sign(2, Body::Cancel(protocol::message::Cancel { offer: bid.id() }), NOW_MS + 1);
            let entry = world.sign(1, Body::Settlement(settlement), NOW_MS + 1).to_bytes();
            let (refused, events) = world.block(NOW_MS + 2, vec![cancel.to_bytes(), entry]);
            assert!(matches!(refused[..], [::ledger::state::EntryError::OfferCancelled(_)]), "{refused:?}");
            let _ = seller.handle(NOW_MS + 2, Input::Committed(&events));
            let now_ms = NOW_MS + 1 + ::market::pools::SETTLE_WAIT_MS;
            let outputs = seller.handle(now_ms, Input::Tick);
            let [Output::Judge(unsettled)] = &outputs[..] else { panic!("{outputs:?}") };
            assert_eq!(
                seller.handle(now_ms, judgment(&world.state, unsettled.clone(), now_ms / 1000)),
                vec![Output::Penalize(bid.author)]
            );
            let depth = seller.depth(&compute(), 5).unwrap();
            assert_eq!((depth.asks, depth.bids), (vec![(100_000, 1_000)], vec![]));
            assert_eq!(seller.open_of(&ask.author).len(), 1);
        }

        /// A seller whose node does not settle: the first time nobody is found at fault and both offers are given
        /// back (they meet again at once); the second time the seller is at fault.
        #[test]
        fn a_seller_that_never_settles_is_at_fault_the_second_time() {
            let mut world = World::new();
            let mut node = trader(&world.keys[3]);
            let (bid, _) = place(&mut world, &mut node, 2, terms(Side::Bid, 1_000), NOW_MS);
            let (ask, _) = place(&mut world, &mut node, 1, terms(Side::Ask, 1_000), NOW_MS + 1);
            let now_ms = NOW_MS + 1 + ::market::pools::SETTLE_WAIT_MS;
            let outputs = node.handle(now_ms, Input::Tick);
            let [Output::Judge(unsettled)] = &outputs[..] else { panic!("{outputs:?}") };
            let judged = judgment(&world.state, unsettled.clone(), now_ms / 1000);
            assert!(matches!(&judged, Input::Judged { at_fault, .. } if at_fault.is_empty()));
            assert!(
                node.handle(now_ms, judged).is_empty(),
                "given back, and matched again (not this node's to settle)"
            );
            assert_eq!(node.stats().matches, 2);
            let later_ms = now_ms + ::market::pools::SETTLE_WAIT_MS;
            let outputs = node.handle(later_ms, Input::Tick);
            let [Output::Judge(unsettled)] = &outputs[..] else { panic!("{outputs:?}") };
            assert_eq!((unsettled.found.bid.id(), unsettled.found.ask.id()), (bid.id(), ask.id()));
            assert_eq!(
                node.handle(later_ms, judgment(&world.state, unsettled.clone(), later_ms / 1000)),
                vec![Output::Penalize(ask.author)]
            );
            let depth = node.depth(&compute(), 5).unwrap();
            assert_eq!((depth.bids, depth.asks), (vec![(100_000, 1_000)], vec![]));
        }

        /// A bidder that spends its funds after the market took its bid: the seller's settlement of their match is
        /// refused by the ledger. When the match is judged, the bidder is at fault (its offers leave, it loses its
        /// fuel for offers) and the seller's ask is back at its place, where the next bid finds it.
        #[test]
        fn a_bidder_that_spends_its_funds_is_at_fault_and_the_ask_gets_its_place_back() {
            let mut world = World::new();
            let mut seller = trader(&world.keys[1]);
            let (bid, _) = place(&mut world, &mut seller, 2, terms(Side::Bid, 1_000), NOW_MS);
            // The bidder moves everything it holds elsewhere.
            let transfer = Body::Transfer(protocol::message::Transfer {
                to: world.keys[3].public(),
                token: TokenId::new("credit").unwrap(),
                amount: FUNDS,
                memo: protocol::types::Text::new(String::new()).unwrap(),
            });
            let entry = world.sign(2, transfer, NOW_MS).to_bytes();
            assert!(world.block(NOW_MS + 1, vec![entry]).0.is_empty());
            let (ask, outputs) = place(&mut world, &mut seller, 1, terms(Side::Ask, 1_000), NOW_MS + 2);
            let Some(Output::Settle(settlement)) =
                outputs.into_iter().find(|output| matches!(output, Output::Settle(_)))
            else {
                panic!("the seller settles its match")
            };
            let entry = world.sign(1, Body::Settlement(settlement), NOW_MS + 2).to_bytes();
            let (refused, events) = world.block(NOW_MS + 3, vec![entry]);
            assert!(matches!(refused[..], [::ledger::state::EntryError::InsufficientFunds { .. }]), "{refused:?}");
            assert!(seller.handle(NOW_MS + 3, Input::Committed(&events)).is_empty());
            assert_eq!(
                seller.depth(&compute(), 5).map_or(0, |depth| depth.offers),
                0,
                "the ask is taken while it waits"
            );

            let now_ms = NOW_MS + 2 + ::market::pools::SETTLE_WAIT_MS;
            let outputs = seller.handle(now_ms, Input::Tick);
            let [Output::Judge(unsettled)] = &outputs[..] else { panic!("{outputs:?}") };
            assert_eq!((unsettled.found.bid.id(), unsettled.found.ask.id()), (bid.id(), ask.id()));
            let judged = judgment(&world.state, unsettled.clone(), now_ms / 1000);
            let Input::Judged { at_fault, .. } = &judged else { unreachable!() };
            assert_eq!(at_fault, &vec![bid.author]);
            assert_eq!(seller.handle(now_ms, judged), vec![Output::Penalize(bid.author)]);
            assert_eq!(seller.stats().faults, 1);
            let depth = seller.depth(&compute(), 5).unwrap();
            assert_eq!((depth.asks, depth.bids), (vec![(100_000, 1_000)], vec![]));
            // The next bid takes the ask, and its settlement passes.
            let (_, outputs) = place(&mut world, &mut seller, 4, terms(Side::Bid, 1_000), now_ms);
            let Some(Output::Settle(settlement)) =
                outputs.into_iter().find(|output| matches!(output, Output::Settle(_)))
            else {
                panic!("the restored ask matches")
            };
            assert_eq!(settlement.ask.id(), ask.id());
            let entry = world.sign(1, Body::Settlement(settlement), now_ms).to_bytes();
            assert!(world.block(now_ms + 1, vec![entry]).0.is_empty());
        }

        #[test]
        fn offers_the_ledger_would_refuse_take_no_liquidity_from_honest_homes() {
            for seed in 0..3 {
                let calm = run(seed, false, true);
                let attacked = run(seed, true, true);
                assert!(calm.volume > 10_000, "seed {seed}: the homes traded ({calm:?})");
                assert!(
                    attacked.volume * 100 >= calm.volume * 95,
                    "seed {seed}: honest volume {} under attack, {} without",
                    attacked.volume,
                    calm.volume
                );
                assert_eq!(attacked.reduced, Vec::<Id>::new(), "seed {seed}: honest offers left reduced");
                assert!(attacked.unsettleable >= 2 * STEPS - 2, "seed {seed}: the attackers' offers were refused");
                // The node before this check: the same attack takes the homes' liquidity (the drill can fail).
                let unchecked = run(seed, true, false);
                assert!(
                    unchecked.volume * 100 < calm.volume * 95 || !unchecked.reduced.is_empty(),
                    "seed {seed}: {unchecked:?} against {calm:?}"
                );
            }
        }
    }
}
