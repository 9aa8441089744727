//! Trade and escrow: escrows, reputation, pool fees and rules, dynamic base prices and price indices.

use super::*;
use protocol::message::PoolId;
use protocol::{Id, PublicKey};

use super::read::{Kv, prefixed, value};
use super::{
    BASE_PRICE, BASE_PRICE_HISTORY, ESCROW, Escrow, POOL_FEE, PriceIndex, REPUTATION, Reputation, fee_of, key,
    period_len_s, pool_fee, price_index_key, priced_period, roll_base_price,
};

/// Reads of trades, escrows and pools (see [`Kv`]).
pub trait TradeReads: Kv {
    fn escrows(&self) -> impl Iterator<Item = (Id, Escrow)> + '_ {
        prefixed(self, &[ESCROW])
            .filter_map(|(key, value)| Some((Id(key.get(1..33)?.try_into().ok()?), super::decode(&value)?)))
    }

    fn reputation(&self, account: &PublicKey) -> Reputation {
        value(self, &key(REPUTATION, &[account.as_bytes()])).unwrap_or_default()
    }

    /// An account's reputation tier (index into the genesis tiers).
    fn tier(&self, account: &PublicKey) -> usize {
        self.reputation(account).tier(&self.genesis().tiers)
    }

    /// The grid fee of a pool: its `[[pools]]` rule, else the governable defaults (a constant fee if set, else a
    /// share).
    fn pool_fee(&self, pool: &PoolId) -> market::Fee {
        if let Some(fee) = value(self, &key(POOL_FEE, &[pool.digest().as_bytes()])) {
            return fee_of(&fee);
        }
        pool_fee(self.genesis().pool_rule(pool), self.param("grid_fee_per_kwh"), self.param("grid_fee_ppm"))
    }

    /// How a pool matches: its auction mechanism (pay-as-clear without a rule) and grid fee.
    fn pool_rules(&self, pool: &PoolId) -> market::pools::Rules {
        let rule = self.genesis().pool_rule(pool);
        let mechanism = rule.map_or(market::auction::Mechanism::PayAsClear, |rule| rule.mechanism);
        let essential = rule.and_then(|rule| rule.essential).map(|essential| market::fairness::Essential {
            essential_per_account: essential.essential_per_account,
            per_account_max: essential.per_account_max,
            share_max_ppm: u32::try_from(self.param("essential_share_max_ppm")).unwrap_or(market::PPM),
        });
        market::pools::Rules { mechanism, fee: self.pool_fee(pool), floor: 0, essential }
    }

    /// A dynamic pool's base price for a period, at time `now_s` (`None`: the pool has no dynamic price).
    fn base_price(&self, pool: &PoolId, period_s: u64, now_s: u64) -> Option<u64> {
        let policy = self.genesis().pool_rule(pool)?.dynamic?;
        let anchor = value(self, &key(BASE_PRICE, &[pool.digest().as_bytes()]));
        let volume = |period| self.price_index(pool, period).map_or(0, |index| index.volume);
        let period_s = priced_period(period_s, now_s, period_len_s(pool));
        Some(roll_base_price(&policy, anchor, period_len_s(pool), period_s, volume))
    }

    /// The base prices a dynamic pool's settlements met, by period, for periods `from_s..to_s`.
    fn base_prices(&self, pool: &PoolId, from_s: u64, to_s: u64) -> Vec<(u64, u64)> {
        let digest = pool.digest();
        let start = key(BASE_PRICE_HISTORY, &[digest.as_bytes(), &from_s.to_be_bytes()]);
        let end = key(BASE_PRICE_HISTORY, &[digest.as_bytes(), &to_s.to_be_bytes()]);
        self.range(&start, &end)
            .filter_map(|(key, value)| {
                Some((u64::from_be_bytes(key.get(33..41)?.try_into().ok()?), super::decode(&value)?))
            })
            .collect()
    }

    /// A pool's rules for offers of a period: [`TradeReads::pool_rules`] with the dynamic base price as floor.
    fn pool_rules_for(&self, pool: &PoolId, period_s: u64, now_s: u64) -> market::pools::Rules {
        market::pools::Rules { floor: self.base_price(pool, period_s, now_s).unwrap_or(0), ..self.pool_rules(pool) }
    }

    /// Whether the author of an offer cancelled it on the ledger (a cancel by anyone else counts for nothing).
    fn cancelled(&self, offer: &Id, author: &PublicKey) -> bool {
        self.get(&key(CANCELLED, &[offer.as_bytes(), author.as_bytes()])).is_some()
    }

    /// What the ledger still lets settle of an offer of `quantity` (its envelope's id and author): nothing once its
    /// author cancelled it on the ledger, else what its settlements have not filled.
    fn offer_left(&self, offer: &Id, author: &PublicKey, quantity: u64) -> u64 {
        if self.cancelled(offer, author) {
            return 0;
        }
        let filled: u64 = value(self, &key(FILLED, &[offer.as_bytes()])).unwrap_or(0);
        quantity.saturating_sub(filled)
    }

    /// Refuses trading (settlements, barter cycles) by an account an override froze.
    fn check_not_frozen(&self, account: &PublicKey) -> Result<(), EntryError> {
        match self.frozen(account) {
            Some(in_force) => {
                Err(EntryError::Frozen { account: *account, by: in_force.by, until_height: in_force.until_height })
            }
            None => Ok(()),
        }
    }

    /// One party's standing in a pool (PROTOCOL.md §10, *settlement*): its trading not frozen by an override, its
    /// reputation tier at least the pool rule's `tier_min`. Its tier, an index into the genesis's tiers.
    fn standing(&self, account: &PublicKey, pool: &PoolId) -> Result<usize, EntryError> {
        self.check_not_frozen(account)?;
        let tiers = &self.genesis().tiers;
        let tier = self.tier(account).min(tiers.len() - 1);
        let tier_min =
            self.genesis().pool_rule(pool).map_or(0, |rule| usize::try_from(rule.tier_min).unwrap_or(usize::MAX));
        if tier < tier_min {
            return Err(EntryError::Tier { account: *account, tier, needed: tier_min });
        }
        Ok(tier)
    }

    /// Whether a party can meet what a trade asks of it (PROTOCOL.md §10, *settlement*): it holds
    /// `obligation.pays` of the pool's token, and as a buyer stays within the anti-hoarding limits: energy bought
    /// for the delivery interval (`bought_per_interval_max_wh`) and an essential pool's `per_account_max` a period.
    fn check_means(&self, account: &PublicKey, pool: &PoolId, obligation: &Obligation) -> Result<(), EntryError> {
        let balance = self.balance(account, &pool.token);
        if balance < obligation.pays {
            return Err(EntryError::InsufficientFunds {
                account: *account,
                token: pool.token.clone(),
                balance,
                needed: obligation.pays,
            });
        }
        if metered(pool) {
            self.check_bought(account, obligation.delivery_start_s, obligation.buys_interval)?;
        }
        let essential = self.genesis().pool_rule(pool).and_then(|rule| rule.essential);
        if let Some(essential) = essential.filter(|essential| essential.per_account_max > 0 && obligation.buys_pool > 0)
        {
            let bought_key = essential_bought_key(account, pool, obligation.period_s);
            let wanted = value::<u64>(self, &bought_key).unwrap_or(0).saturating_add(obligation.buys_pool);
            if wanted > essential.per_account_max {
                return Err(EntryError::HoardingLimit { account: *account, wanted, limit: essential.per_account_max });
            }
        }
        Ok(())
    }

    /// Anti-hoarding: whether an account may take `quantity` Wh more energy for the delivery interval starting
    /// `delivery_start_s` (in energy pools and barter legs alike) under `bought_per_interval_max_wh`.
    fn check_bought(&self, account: &PublicKey, delivery_start_s: u64, quantity: u64) -> Result<(), EntryError> {
        let limit = self.param("bought_per_interval_max_wh");
        if quantity > 0 && limit > 0 {
            let bought: u64 = value(self, &interval_key(BOUGHT, account, delivery_start_s)).unwrap_or(0);
            let wanted = bought.saturating_add(quantity);
            if wanted > limit {
                return Err(EntryError::HoardingLimit { account: *account, wanted, limit });
            }
        }
        Ok(())
    }

    /// The one check of an offer before a node's market takes it (PROTOCOL.md §9, *matches the ledger will
    /// honour*): whether a settlement of it at its own limit price (an ask's at its pool's base price at least)
    /// would pass the ledger's checks of its author ([`TradeReads::standing`], [`TradeReads::check_means`]) in this
    /// state, together with the author's other open offers `open` (their quantities what is left of them, and what
    /// they matched that the ledger has not settled yet) in the node's books. `now_s` places a continuous pool's
    /// offer in its hour (an essential pool's period). Necessary, not sufficient: an interval auction may clear an
    /// ask above its price, and the state may change before the settlement.
    fn check_offer(&self, author: &PublicKey, offer: &Offer, open: &[Offer], now_s: u64) -> Result<(), EntryError> {
        let tier = self.standing(author, &offer.pool)?;
        let tier = &self.genesis().tiers[tier];
        let period = |of: &Offer| market::pricing::period_start_s(of.pool.interval_s, of.delivery_start_s, now_s);
        // An ask settles at its pool's base price at least: its collateral is a share of that value.
        let floor = match offer.side {
            Side::Ask if metered(&offer.pool) => self.base_price(&offer.pool, period(offer), now_s).unwrap_or(0),
            _ => 0,
        };
        let own = offer_pays(tier, &Offer { unit_price: offer.unit_price.max(floor), ..offer.clone() });
        if own == 0 && offer.side == Side::Ask {
            return Ok(());
        }
        let mut obligation =
            Obligation { delivery_start_s: offer.delivery_start_s, period_s: period(offer), ..Obligation::default() };
        obligation.pays = own;
        for other in open {
            // Funds are per token; the anti-hoarding limits count every bid of the interval.
            if other.pool.token == offer.pool.token {
                obligation.pays = obligation.pays.saturating_add(offer_pays(tier, other));
            }
        }
        for other in open.iter().chain([offer]) {
            if other.side != Side::Bid || offer.side != Side::Bid {
                continue;
            }
            if metered(&other.pool) && metered(&offer.pool) && other.delivery_start_s == offer.delivery_start_s {
                obligation.buys_interval = obligation.buys_interval.saturating_add(other.quantity);
            }
            if other.pool == offer.pool && period(other) == period(offer) {
                obligation.buys_pool = obligation.buys_pool.saturating_add(other.quantity);
            }
        }
        self.check_means(author, &offer.pool, &obligation)
    }

    /// A pool's price index for one period (`delivery_start_s`, or the hour's start in continuous pools).
    fn price_index(&self, pool: &PoolId, period_s: u64) -> Option<PriceIndex> {
        value(self, &price_index_key(pool, period_s))
    }

    /// A pool's price indices for periods `from_s..to_s`, oldest first.
    fn price_indices(&self, pool: &PoolId, from_s: u64, to_s: u64) -> Vec<(u64, PriceIndex)> {
        self.range(&price_index_key(pool, from_s), &price_index_key(pool, to_s))
            .filter_map(|(key, value)| {
                let period = u64::from_be_bytes(key.get(33..41)?.try_into().ok()?);
                Some((period, super::decode(&value)?))
            })
            .collect()
    }
}

impl<K: Kv + ?Sized> TradeReads for K {}

/// What an energy trade's delivery is checked for: `quantity` Wh in the interval `delivery_start_s` of
/// `interval_s` seconds, by readings that reach `trust`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivery {
    pub delivery_start_s: u64,
    pub interval_s: u64,
    pub quantity: u64,
    pub trust: protocol::message::Trust,
}

/// An account's flows in an interval (key `l`): `[import_wh, export_wh]` summed over its readings of at least each
/// trust level, level 0 (every reading) first (PROTOCOL.md §10, *trust levels*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Flows(pub [u64; 8]);

impl Flows {
    /// Import (a buyer's delivery) or export (a seller's) over the readings of at least `trust`.
    pub fn at(&self, trust: protocol::message::Trust, export: bool) -> u64 {
        self.0[usize::from(trust.level()) * 2 + usize::from(export)]
    }
}

/// What a trade asks of one party ([`TradeReads::check_means`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Obligation {
    /// Milli-units of the pool's token the party must hold: a buyer the value, the grid fee and its collateral; a
    /// seller its collateral.
    pub pays: u64,
    /// Energy a buyer takes for the delivery interval (checked against `bought_per_interval_max_wh`).
    pub buys_interval: u64,
    /// What a buyer takes in the pool for the period (checked against an essential pool's `per_account_max`).
    pub buys_pool: u64,
    pub delivery_start_s: u64,
    /// The period the trade is priced in ([`market::pricing::period_start_s`]).
    pub period_s: u64,
}

/// Whether a pool's trades are energy delivered in an interval, checked against readings and backed by collateral.
pub fn metered(pool: &PoolId) -> bool {
    pool.resource == protocol::message::Resource::Energy && pool.interval_s > 0
}

/// The collateral a party of a tier locks on a trade of `value` in `pool` (energy interval pools only).
fn collateral(tier: &crate::genesis::Tier, pool: &PoolId, value: u64) -> u64 {
    if metered(pool) { share(value, u64::from(tier.collateral_ppm)) } else { 0 }
}

/// The most an offer can ask of its author when settled at its own limit price: a bid's price covers the price
/// and the grid fee, plus the buyer's collateral; an ask's author locks its collateral.
fn offer_pays(tier: &crate::genesis::Tier, offer: &Offer) -> u64 {
    let value = protocol::message::value_milli(offer.quantity, offer.unit_price).unwrap_or(u64::MAX);
    let collateral = collateral(tier, &offer.pool, value);
    match offer.side {
        Side::Bid => value.saturating_add(collateral),
        Side::Ask => collateral,
    }
}

fn essential_bought_key(buyer: &PublicKey, pool: &PoolId, period_s: u64) -> Vec<u8> {
    key(ESSENTIAL_BOUGHT, &[buyer.as_bytes(), pool.digest().as_bytes(), &period_s.to_be_bytes()])
}

/// Execution of trade entries.
impl Pending<'_> {
    /// A cancel on the ledger: no later settlement may fill the offer.
    pub(super) fn cancel(&mut self, envelope: &Envelope, cancel: &protocol::message::Cancel) -> Result<(), EntryError> {
        let author = envelope.author;
        // A cancel on the ledger stops later settlements of the offer. The marker lives as long as the
        // offer could (its creation precedes the cancel's).
        let until = envelope.created_ms.saturating_add(
            self.base.genesis.params.entry_lifetime_ms_max.max(protocol::validate::Config::LIFETIME_MS_MAX_DEFAULT),
        );
        // Keyed by offer and canceller: only the offer's author's cancel counts, and nobody can undo it.
        self.write(key(CANCELLED, &[cancel.offer.as_bytes(), author.as_bytes()]), &author);
        self.put(
            key(CANCELLED_BY_EXPIRY, &[&until.to_be_bytes(), cancel.offer.as_bytes(), author.as_bytes()]),
            Some(Vec::new()),
        );
        Ok(())
    }

    /// Records a fill of `quantity` against an offer of `total`, refusing expired, cancelled and over-filled offers.
    pub(super) fn fill(&mut self, offer: &Envelope, total: u64, quantity: u64) -> Result<(), EntryError> {
        let offer_id = offer.id();
        if offer.expires_ms <= self.context.time_ms {
            return Err(EntryError::OfferExpired(offer_id));
        }
        // Only the offer's author can cancel it: a cancel by anyone else (the ledger cannot know whose offer an id is
        // until a settlement shows it) has no effect.
        if self.get(&key(CANCELLED, &[offer_id.as_bytes(), offer.author.as_bytes()])).is_some() {
            return Err(EntryError::OfferCancelled(offer_id));
        }
        let filled_key = key(FILLED, &[offer_id.as_bytes()]);
        let filled: u64 = self.read(&filled_key).unwrap_or(0);
        let left = total.saturating_sub(filled);
        if quantity > left {
            return Err(EntryError::Overfilled { offer: offer_id, left, wanted: quantity });
        }
        if filled == 0 {
            self.put(key(FILLED_BY_EXPIRY, &[&offer.expires_ms.to_be_bytes(), offer_id.as_bytes()]), Some(Vec::new()));
        }
        self.write(filled_key, &(filled + quantity));
        Ok(())
    }

    /// Settles a matched bid and ask: checks both offers, both parties ([`TradeReads::standing`] and
    /// [`TradeReads::check_means`], the checks a node makes before its market takes an offer), the grid fee and the
    /// pool's base price, then pays at once (continuous pools) or escrows payment and collateral until the delivery
    /// interval is over (interval pools), and adds the trade to the pool's price index.
    pub(super) fn settle(&mut self, id: &Id, settlement: &Settlement) -> Result<(), EntryError> {
        let (Body::Offer(bid), Body::Offer(ask)) = (&settlement.bid.body, &settlement.ask.body) else {
            return Err(EntryError::Invalid("settlement offers are not offers".into()));
        };
        check_offer_pair(bid, ask, settlement)?;
        let genesis = &self.base.genesis;
        let pool = &bid.pool;
        let token = &pool.token;
        if genesis.token(token).is_none() {
            return Err(EntryError::UnknownToken(token.clone()));
        }
        let buyer = settlement.bid.author;
        let seller = settlement.ask.author;
        let buyer_tier = &genesis.tiers[self.standing(&buyer, pool)?];
        let seller_tier = &genesis.tiers[self.standing(&seller, pool)?];
        let rule = genesis.pool_rule(pool);
        let full_fee = TradeReads::pool_fee(self, pool).on(settlement.unit_price);
        let fee_per_unit = full_fee - share(full_fee, u64::from(buyer_tier.fee_discount_ppm));
        if settlement.unit_price.checked_add(fee_per_unit).is_none_or(|gross| gross > bid.unit_price) {
            return Err(EntryError::Price);
        }
        let interval_s = u64::from(pool.interval_s);
        let delivery_end_ms = bid.delivery_start_s.saturating_add(interval_s).saturating_mul(1000);
        if interval_s > 0 && delivery_end_ms <= self.context.time_ms {
            return Err(EntryError::DeliveryOver);
        }
        let period_s =
            market::pricing::period_start_s(pool.interval_s, bid.delivery_start_s, self.context.time_ms / 1000);
        let (quantity, delivery_start_s) = (settlement.quantity, bid.delivery_start_s);
        let value = protocol::message::value_milli(quantity, settlement.unit_price).ok_or(EntryError::Overflow)?;
        let fee_amount = protocol::message::value_milli(quantity, fee_per_unit).ok_or(EntryError::Overflow)?;
        let buyer_collateral = collateral(buyer_tier, pool, value);
        let seller_collateral = collateral(seller_tier, pool, value);
        let pays = [fee_amount, value, buyer_collateral].into_iter().try_fold(0u64, u64::checked_add);
        let bought = Obligation {
            pays: pays.ok_or(EntryError::Overflow)?,
            buys_interval: quantity,
            buys_pool: quantity,
            delivery_start_s,
            period_s,
        };
        self.check_means(&buyer, pool, &bought)?;
        let sold = Obligation { pays: seller_collateral, delivery_start_s, period_s, ..Obligation::default() };
        self.check_means(&seller, pool, &sold)?;
        if let Some(policy) = rule.and_then(|rule| rule.dynamic) {
            self.check_base_price(&policy, pool, period_s, settlement.unit_price)?;
        }
        if rule.and_then(|rule| rule.essential).is_some_and(|essential| essential.per_account_max > 0) {
            self.count_essential(&buyer, pool, period_s, quantity, delivery_end_ms);
        }
        self.fill(&settlement.bid, bid.quantity, quantity)?;
        self.fill(&settlement.ask, ask.quantity, quantity)?;
        let tax = share(value, self.param("commons_tax_ppm"));
        let (royalty, royalty_account) = match rule {
            Some(rule) if rule.royalty_ppm > 0 => {
                (share(value, u64::from(rule.royalty_ppm)), rule.royalty_account.unwrap_or(COMMONS))
            }
            _ => (0, COMMONS),
        };
        if fee_amount > 0 {
            self.move_tokens(&buyer, &COMMONS, token, fee_amount)?;
        }
        if interval_s == 0 {
            self.move_tokens(&buyer, &seller, token, value)?;
            self.move_tokens(&seller, &COMMONS, token, tax)?;
            self.move_tokens(&seller, &royalty_account, token, royalty)?;
        } else {
            let metered = metered(pool);
            let release_ms = delivery_end_ms.saturating_add(self.param("settlement_grace_ms"));
            if metered {
                self.count_energy(&buyer, &seller, delivery_start_s, quantity, release_ms)?;
            }
            self.debit(&buyer, token, value.checked_add(buyer_collateral).ok_or(EntryError::Overflow)?)?;
            self.debit(&seller, token, seller_collateral)?;
            let escrow = Escrow {
                buyer,
                seller,
                token: token.clone(),
                amount: value,
                release_ms,
                quantity,
                delivery_start_s,
                interval_s: pool.interval_s,
                metered: u8::from(metered),
                buyer_collateral,
                seller_collateral,
                tax,
                royalty,
                royalty_account,
                trust: if metered { rule.map_or(0, |rule| rule.trust.level()) } else { 0 },
            };
            self.put_escrow(id, &escrow, pool);
        }
        self.add_to_price_index(pool, period_s, quantity, value);
        for party in [buyer, seller] {
            self.reputation(&party, |reputation| {
                reputation.trades += 1;
                reputation.traded_value = reputation.traded_value.saturating_add(value);
            });
        }
        Ok(())
    }

    /// Records an escrow, due at its release time; a feeder case on its cell's interval may hold it (PROTOCOL.md
    /// §10, *cells*).
    fn put_escrow(&mut self, id: &Id, escrow: &Escrow, pool: &PoolId) {
        self.write(key(ESCROW, &[id.as_bytes()]), escrow);
        self.put(key(ESCROW_BY_RELEASE, &[&escrow.release_ms.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
        self.index_cell_escrow(id, pool, escrow.delivery_start_s);
    }

    /// A dynamic pool's floor: the pool's base price for the period. The anchor moves to the latest period settled.
    fn check_base_price(
        &mut self,
        policy: &market::pricing::Policy,
        pool: &PoolId,
        period_s: u64,
        price: u64,
    ) -> Result<(), EntryError> {
        // The pool's base price for the period is its floor; the anchor moves to the latest period settled.
        let anchor_key = key(BASE_PRICE, &[pool.digest().as_bytes()]);
        let anchor: Option<(u64, u64)> = self.read(&anchor_key);
        let volume = |period| self.read::<PriceIndex>(&price_index_key(pool, period)).map_or(0, |index| index.volume);
        let priced = priced_period(period_s, self.context.time_ms / 1000, period_len_s(pool));
        let base = roll_base_price(policy, anchor, period_len_s(pool), priced, volume);
        if price < base {
            return Err(EntryError::BelowBasePrice { price, base });
        }
        if anchor.is_none_or(|(from, _)| priced > from) {
            self.write(anchor_key, &(priced, base));
        }
        self.write(key(BASE_PRICE_HISTORY, &[pool.digest().as_bytes(), &period_s.to_be_bytes()]), &base);
        Ok(())
    }

    /// Adds an essential pool's purchase to the buyer's total for the period (its limit is checked by
    /// [`TradeReads::check_means`]).
    fn count_essential(
        &mut self,
        buyer: &PublicKey,
        pool: &PoolId,
        period_s: u64,
        quantity: u64,
        delivery_end_ms: u64,
    ) {
        let bought_key = essential_bought_key(buyer, pool, period_s);
        let bought: u64 = self.read(&bought_key).unwrap_or(0);
        if bought == 0 {
            self.forget_at(delivery_end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &bought_key);
        }
        self.write(bought_key, &bought.saturating_add(quantity));
    }

    /// Adds a trade to its pool's price index for the period.
    fn add_to_price_index(&mut self, pool: &PoolId, period_s: u64, quantity: u64, value: u64) {
        let index_key = price_index_key(pool, period_s);
        let mut index: PriceIndex = self.read(&index_key).unwrap_or_default();
        index.volume = index.volume.saturating_add(quantity);
        index.value = index.value.saturating_add(value);
        index.trades = index.trades.saturating_add(1);
        self.write(index_key, &index);
    }

    /// Adds an energy trade to the buyer's and seller's totals for the interval (the buyer's limit is checked by
    /// [`TradeReads::check_means`]). The totals are what delivery is checked against, and are forgotten after
    /// release.
    pub(super) fn count_energy(
        &mut self,
        buyer: &PublicKey,
        seller: &PublicKey,
        start_s: u64,
        quantity: u64,
        release_ms: u64,
    ) -> Result<(), EntryError> {
        self.add_interval_total(BOUGHT, buyer, start_s, quantity, release_ms)?;
        self.add_interval_total(SOLD, seller, start_s, quantity, release_ms)
    }

    /// Adds `quantity` Wh to an account's energy sold (`SOLD`) or bought (`BOUGHT`) for the interval starting
    /// `start_s`, forgotten a while after `release_ms`.
    pub(super) fn add_interval_total(
        &mut self,
        prefix: u8,
        account: &PublicKey,
        start_s: u64,
        quantity: u64,
        release_ms: u64,
    ) -> Result<(), EntryError> {
        let total_key = interval_key(prefix, account, start_s);
        let before: Option<u64> = self.read(&total_key);
        let total = before.unwrap_or(0).checked_add(quantity).ok_or(EntryError::Overflow)?;
        if before.is_none() {
            self.forget_at(release_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &total_key);
        }
        self.write(total_key, &total);
        Ok(())
    }

    /// An account's shortfall on one energy trade of `quantity` Wh: its measured flow (export for a seller, import
    /// for a buyer, summed over the readings it anchored for the interval that reach the `trust` level) is shared
    /// pro rata over everything it traded for the interval; what this trade does not get is the shortfall. No
    /// reading counts as nothing measured.
    pub(super) fn shortfall_wh(&self, account: &PublicKey, trade: &Delivery, seller: bool) -> u64 {
        let Delivery { delivery_start_s, interval_s, quantity, trust } = *trade;
        let end_s = delivery_start_s.saturating_add(interval_s);
        let flows = self.scan(interval_key(FLOW, account, delivery_start_s), interval_key(FLOW, account, end_s));
        let measured: u64 = flows
            .iter()
            .filter_map(|(_, value)| decode::<Flows>(value))
            .map(|flows| flows.at(trust, seller))
            .fold(0u64, u64::saturating_add);
        let prefix = if seller { SOLD } else { BOUGHT };
        let traded: u64 = self.read(&interval_key(prefix, account, delivery_start_s)).unwrap_or(quantity);
        let traded = traded.max(quantity).max(1);
        let met = u128::from(quantity) * u128::from(measured.min(traded)) / u128::from(traded);
        quantity - u64::try_from(met).unwrap_or(quantity)
    }

    /// Adds a reading's import and export to its author's flows of the interval starting `start_s` (`l`), at every
    /// trust level in `levels` (a reading anchored: from `node` to its own level; a reading its cell's feeder
    /// confirmed: the levels it gained). The record is forgotten a while after `end_ms`.
    pub(super) fn add_flows(
        &mut self,
        author: &PublicKey,
        start_s: u64,
        end_ms: u64,
        [import_wh, export_wh]: [u64; 2],
        levels: std::ops::RangeInclusive<u8>,
    ) {
        let flow_key = interval_key(FLOW, author, start_s);
        let mut flows = match self.read::<Flows>(&flow_key) {
            Some(flows) => flows,
            None => {
                self.forget_at(end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &flow_key);
                Flows::default()
            }
        };
        for level in levels {
            let slot = usize::from(level) * 2;
            if let Some(pair) = flows.0.get_mut(slot..slot + 2) {
                pair[0] = pair[0].saturating_add(import_wh);
                pair[1] = pair[1].saturating_add(export_wh);
            }
        }
        self.write(flow_key, &flows);
    }

    /// Releases an escrow: checks an energy trade's delivery, takes penalties from collateral, pays tax and
    /// royalty, pays the seller and returns what is left to each party.
    pub(super) fn release(&mut self, id: Id, escrow: &Escrow) {
        self.release_judged(id, escrow, &[]);
    }

    /// [`Pending::release`], where a party in `refuted` (a decided cell case did not believe its readings) falls
    /// short by the whole quantity.
    pub(super) fn release_judged(&mut self, id: Id, escrow: &Escrow, refuted: &[PublicKey]) {
        let rate = self.param("penalty_per_kwh");
        let asked = protocol::message::Trust::from_level(u64::from(escrow.trust))
            .unwrap_or(protocol::message::Trust::DeviceBalanced);
        // Each party's shortfall, and whether it is only unconfirmed: in a pool asking `balanced`, its readings show
        // the delivery at the level without the feeder's confirmation, which its cell's feeder did not give.
        let judge = |account: &PublicKey, seller| {
            if escrow.metered != 1 {
                return (0, false);
            }
            if refuted.contains(account) {
                return (escrow.quantity, false);
            }
            let delivery = |trust| Delivery {
                delivery_start_s: escrow.delivery_start_s,
                interval_s: u64::from(escrow.interval_s),
                quantity: escrow.quantity,
                trust,
            };
            let short = self.shortfall_wh(account, &delivery(asked), seller);
            let unconfirmed = short > 0
                && asked >= protocol::message::Trust::Balanced
                && self.shortfall_wh(account, &delivery(asked.unbalanced()), seller) == 0;
            if unconfirmed { (0, true) } else { (short, false) }
        };
        let (seller_short, seller_unconfirmed) = judge(&escrow.seller, true);
        let (buyer_short, buyer_unconfirmed) = judge(&escrow.buyer, false);
        // An unconfirmed party voids the trade: nobody is at fault for it, and nothing was proven delivered.
        let void = seller_unconfirmed || buyer_unconfirmed;
        let penalty = |short: u64, collateral: u64| {
            protocol::message::value_milli(short, rate).unwrap_or(u64::MAX).min(collateral)
        };
        let seller_penalty = penalty(seller_short, escrow.seller_collateral);
        let buyer_penalty = penalty(buyer_short, escrow.buyer_collateral);
        // A seller whose readings a case refuted sold nothing, and a void trade sold nothing: the value goes back to
        // the buyer (no tax, no royalty).
        let (value, tax, royalty, refund) = if refuted.contains(&escrow.seller) || void {
            (0, 0, 0, escrow.amount)
        } else {
            (escrow.amount, escrow.tax, escrow.royalty, 0)
        };
        // Every amount below is part of what the escrow holds, so the credits cannot overflow a supply.
        let to_seller = (value - tax - royalty) + (escrow.seller_collateral - seller_penalty) + buyer_penalty;
        let to_buyer = refund + (escrow.buyer_collateral - buyer_penalty) + seller_penalty;
        for (account, amount) in
            [(escrow.seller, to_seller), (escrow.buyer, to_buyer), (COMMONS, tax), (escrow.royalty_account, royalty)]
        {
            if amount > 0 {
                let _ = self.credit(&account, &escrow.token, amount);
            }
        }
        // Only a delivery checked against readings counts toward reputation: an escrow of another resource is
        // released by time alone, so it counts nothing (PROTOCOL.md §10, *reputation*).
        let parties = [
            (escrow.seller, escrow.buyer, seller_short, seller_penalty),
            (escrow.buyer, escrow.seller, buyer_short, buyer_penalty),
        ];
        for (account, counterparty, short, paid) in parties.into_iter().filter(|_| escrow.metered == 1) {
            if short == 0 && !void {
                self.count_delivery(&account, &counterparty);
            } else if short == 0 {
                let unconfirmed = if account == escrow.seller { seller_unconfirmed } else { buyer_unconfirmed };
                if unconfirmed {
                    self.events.push(Event::Unconfirmed { settlement: id, account });
                }
            } else {
                self.reputation(&account, |reputation| reputation.failures += 1);
                self.events.push(Event::Penalty { settlement: id, account, shortfall_wh: short, amount: paid });
            }
        }
        self.events.push(Event::EscrowReleased { settlement: id, to: escrow.seller, amount: to_seller });
    }

    /// Shares the commons' balance of the fee token equally among the poorest members (accounts with a track
    /// record) below the threshold, at most `redistribution_accounts_max` of them; the remainder stays.
    pub(super) fn redistribute(&mut self) {
        let epoch = self.param("redistribution_epoch_blocks");
        if epoch == 0 || !self.context.height.is_multiple_of(epoch) {
            return;
        }
        let Ok(token) = TokenId::new(self.base.genesis.params.fee_token.clone()) else { return };
        let pot = self.balance(&COMMONS, &token);
        let threshold = self.param("redistribution_balance_max");
        let accounts_max = usize::try_from(self.base.genesis.params.redistribution_accounts_max).unwrap_or(0);
        if pot == 0 || accounts_max == 0 {
            return;
        }
        let mut members: Vec<(u64, PublicKey)> = self
            .scan(vec![REPUTATION], vec![REPUTATION + 1])
            .into_iter()
            .filter_map(|(key, _)| Some(PublicKey(key.get(1..33)?.try_into().ok()?)))
            .filter(|account| *account != COMMONS)
            .map(|account| (self.balance(&account, &token), account))
            .filter(|(balance, _)| *balance < threshold)
            .collect();
        members.sort();
        members.truncate(accounts_max);
        let Some(share) = pot.checked_div(members.len() as u64).filter(|share| *share > 0) else { return };
        for (_, account) in &members {
            if self.move_tokens(&COMMONS, account, &token, share).is_err() {
                return;
            }
        }
        // The record of it, for the commons to see (kept 30 days).
        let record_key = key(REDISTRIBUTION, &[&self.context.height.to_be_bytes()]);
        let record = (token.as_str().to_owned(), members.len() as u64, share, self.context.time_ms);
        self.write(record_key.clone(), &record);
        self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &record_key);
        self.events.push(Event::Redistributed { token, accounts: members.len() as u64, share });
    }
}
