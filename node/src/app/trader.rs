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
//! - **Frozen accounts.** An offer or barter offer of an account an override froze is refused; when an override
//!   comes into force, the frozen account's resting offers leave the books and the board.
//! - **Fills.** The fills and barter legs the ledger commits reduce the books and the board, whoever settled them.
//! - **Who settles.** Every node that serves a pool computes the same matches; only the seller (the ask's author)
//!   settles a match, and only the author of a barter cycle's first leg (the lowest offer id) submits the cycle.

use std::collections::BTreeSet;
use std::sync::Arc;

use ::ledger::state::{Event, InForce};
use ::market::pools::{Depth, Limits, Market, Rules};
use protocol::message::{BarterCycle, BarterLeg, Body, Offer, PoolId, Settlement};
use protocol::types::{BoundedVec, TokenId};
use protocol::{Envelope, Id, PublicKey};

/// Barter offers kept on the board.
pub const BARTER_OFFERS_MAX: usize = 10_000;
/// Search steps for barter cycles per tick.
pub const BARTER_EXPANSIONS_MAX: usize = 200_000;

/// Why the trader did not take an offer in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the pool's token {0} is not a token of this network's genesis")]
    UnknownToken(TokenId),
    #[error("this account's trading is frozen by override {by} until height {until_height}")]
    Frozen { by: Id, until_height: u64 },
    #[error("{0}")]
    Market(::market::pools::Refusal),
    #[error("{0}")]
    Barter(::market::barter::Refusal),
}

/// What happens to the trader.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// An offer of a pool (gossiped, or the node's own), with what the ledger's last commit says of it: its pool's
    /// rules for the offer's period ([`Trader::period_s`]) and whether an override froze its author's trading.
    Offer { envelope: Arc<Envelope>, rules: Rules, frozen: Option<InForce> },
    /// A barter offer, and whether an override froze its author's trading.
    Barter { envelope: Arc<Envelope>, frozen: Option<InForce> },
    /// The author withdraws an offer (a validated cancel).
    Cancel { offer: Id, author: PublicKey },
    /// The events of a committed block, in order.
    Committed(&'a [Event]),
    /// The accounts that overrides now in force froze (the answer to [`Output::ReadFreezes`]).
    Frozen(Vec<PublicKey>),
    /// Time passed: auctions whose gate closed clear, expired offers leave, the board is searched for cycles.
    Tick,
    /// What became of a settlement or a barter cycle the trader asked for ([`Output::Settle`],
    /// [`Output::SettleCycle`]): `true` when the ledger's mempool took it.
    Submitted { cycle: bool, taken: bool },
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
    pub barter_cycles_found: u64,
    pub barter_cycles_submitted: u64,
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
}

impl Trader {
    pub fn new(me: PublicKey, tokens: impl IntoIterator<Item = TokenId>, limits: Limits) -> Trader {
        Trader {
            me,
            tokens: tokens.into_iter().collect(),
            market: Market::new(limits),
            board: ::market::barter::Board::new(BARTER_OFFERS_MAX),
            stats: Stats::default(),
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

    /// A pool's open offers by price level.
    pub fn depth(&self, pool: &PoolId, levels: usize) -> Option<Depth> {
        self.market.depth(pool, levels)
    }

    /// The pools with offers or books.
    pub fn pools(&self) -> impl Iterator<Item = &PoolId> {
        self.market.pools()
    }

    /// The one entry point: an input at `now_ms`, and what the shell must do about it.
    pub fn handle(&mut self, now_ms: u64, input: Input<'_>) -> Vec<Output> {
        match input {
            Input::Offer { envelope, rules, frozen } => self.offer(now_ms, envelope, rules, frozen),
            Input::Barter { envelope, frozen } => vec![self.barter(now_ms, envelope, frozen)],
            Input::Cancel { offer, author } => {
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
            Input::Submitted { cycle, taken } => {
                match (cycle, taken) {
                    (false, true) => self.stats.settlements_submitted += 1,
                    (false, false) => self.stats.settlements_refused += 1,
                    (true, true) => self.stats.barter_cycles_submitted += 1,
                    (true, false) => {}
                }
                Vec::new()
            }
        }
    }

    fn offer(&mut self, now_ms: u64, envelope: Arc<Envelope>, rules: Rules, frozen: Option<InForce>) -> Vec<Output> {
        let id = envelope.id();
        let Body::Offer(offer) = &envelope.body else {
            return vec![Output::Refused { offer: id, reason: Refusal::Market(::market::pools::Refusal::NotAnOffer) }];
        };
        if let Err(reason) = self.admit(&offer.pool) {
            return vec![Output::Refused { offer: id, reason }];
        }
        if let Some(in_force) = frozen {
            self.stats.frozen += 1;
            return vec![Output::Refused {
                offer: id,
                reason: Refusal::Frozen { by: in_force.by, until_height: in_force.until_height },
            }];
        }
        self.stats.offers += 1;
        let outputs = self.market.handle(now_ms, ::market::pools::Input::Offer { envelope, rules });
        let mut outputs = self.matched(outputs);
        if !outputs.iter().any(|output| matches!(output, Output::Refused { offer, .. } if *offer == id)) {
            outputs.insert(0, Output::Taken { offer: id });
        }
        outputs
    }

    fn barter(&mut self, now_ms: u64, envelope: Arc<Envelope>, frozen: Option<InForce>) -> Output {
        let offer = envelope.id();
        if let Some(in_force) = frozen {
            self.stats.frozen += 1;
            return Output::Refused {
                offer,
                reason: Refusal::Frozen { by: in_force.by, until_height: in_force.until_height },
            };
        }
        match self.board.offer(now_ms, envelope) {
            Ok(()) => {
                self.stats.barter_offers += 1;
                Output::Taken { offer }
            }
            Err(reason) => Output::Refused { offer, reason: Refusal::Barter(reason) },
        }
    }

    /// Fills the ledger committed reduce the books and the board, whoever settled them; overrides that came into
    /// force are to be read.
    fn committed(&mut self, now_ms: u64, events: &[Event]) -> Vec<Output> {
        let mut overrides = Vec::new();
        for event in events {
            match event {
                Event::TradeSettled { bid, ask, quantity, .. } => {
                    for offer in [*bid, *ask] {
                        let _ =
                            self.market.handle(now_ms, ::market::pools::Input::Filled { offer, quantity: *quantity });
                    }
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
                    let input = Input::Offer { envelope: envelope.clone(), rules: rules(), frozen: None };
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
        let outputs = trader.handle(NOW_MS, Input::Offer { envelope: envelope.clone(), rules: rules(), frozen: None });
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
        let in_force = InForce { by: Id([7; 32]), until_height: 9, first: 0, second: 0 };
        let refused = offer(&other, 1, Side::Bid, 10, 100);
        let outputs =
            trader.handle(NOW_MS, Input::Offer { envelope: refused.clone(), rules: rules(), frozen: Some(in_force) });
        let reason = Refusal::Frozen { by: in_force.by, until_height: 9 };
        assert_eq!(outputs, vec![Output::Refused { offer: refused.id(), reason }]);
        assert_eq!(trader.stats().frozen, 1);

        let resting = offer(&other, 2, Side::Bid, 10, 100);
        let outputs = trader.handle(NOW_MS, Input::Offer { envelope: resting.clone(), rules: rules(), frozen: None });
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
}
