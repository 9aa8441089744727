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

    /// A barter cycle: every leg's offer filled by its part.
    pub(super) fn barter(&mut self, cycle: &protocol::message::BarterCycle) -> Result<(), EntryError> {
        for leg in cycle.legs.as_slice() {
            let Body::BarterOffer(offer) = &leg.offer.body else {
                return Err(EntryError::Invalid("barter leg is not a barter offer".into()));
            };
            self.check_not_frozen(&leg.offer.author)?;
            self.fill(&leg.offer, offer.give_quantity, leg.give_quantity)?;
            self.reputation(&leg.offer.author, |reputation| reputation.barters += 1);
        }
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

    /// Settles a matched bid and ask: checks both offers, the pool's tier rule, the grid fee and the anti-hoarding
    /// limit, then pays at once (continuous pools) or escrows payment and collateral until the delivery interval
    /// is over (interval pools), and adds the trade to the pool's price index.
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
        self.check_not_frozen(&buyer)?;
        self.check_not_frozen(&seller)?;
        let rule = genesis.pool_rule(pool);
        let [buyer_tier, seller_tier] = self.tiers_of([buyer, seller], rule)?.map(|tier| &genesis.tiers[tier]);
        let fee = match self.read::<protocol::message::PoolFee>(&key(POOL_FEE, &[pool.digest().as_bytes()])) {
            Some(fee) => fee_of(&fee),
            None => pool_fee(rule, self.param("grid_fee_per_kwh"), self.param("grid_fee_ppm")),
        };
        let full_fee = fee.on(settlement.unit_price);
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
        if let Some(policy) = rule.and_then(|rule| rule.dynamic) {
            self.check_base_price(&policy, pool, period_s, settlement.unit_price)?;
        }
        if let Some(essential) = rule.and_then(|rule| rule.essential) {
            self.check_hoarding(&essential, &buyer, pool, period_s, settlement.quantity, delivery_end_ms)?;
        }
        self.fill(&settlement.bid, bid.quantity, settlement.quantity)?;
        self.fill(&settlement.ask, ask.quantity, settlement.quantity)?;
        let quantity = settlement.quantity;
        let value = protocol::message::value_milli(quantity, settlement.unit_price).ok_or(EntryError::Overflow)?;
        let fee_amount = protocol::message::value_milli(quantity, fee_per_unit).ok_or(EntryError::Overflow)?;
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
            let metered = pool.resource == protocol::message::Resource::Energy;
            let release_ms = delivery_end_ms.saturating_add(self.param("settlement_grace_ms"));
            let (buyer_collateral, seller_collateral) = if metered {
                self.count_energy(&buyer, &seller, bid.delivery_start_s, quantity, release_ms)?;
                (
                    share(value, u64::from(buyer_tier.collateral_ppm)),
                    share(value, u64::from(seller_tier.collateral_ppm)),
                )
            } else {
                (0, 0)
            };
            self.debit(&buyer, token, value.checked_add(buyer_collateral).ok_or(EntryError::Overflow)?)?;
            self.debit(&seller, token, seller_collateral)?;
            let escrow = Escrow {
                buyer,
                seller,
                token: token.clone(),
                amount: value,
                release_ms,
                quantity,
                delivery_start_s: bid.delivery_start_s,
                interval_s: pool.interval_s,
                metered: u8::from(metered),
                buyer_collateral,
                seller_collateral,
                tax,
                royalty,
                royalty_account,
            };
            self.write(key(ESCROW, &[id.as_bytes()]), &escrow);
            self.put(key(ESCROW_BY_RELEASE, &[&release_ms.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
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

    /// The tiers of a trade's parties (indices into the genesis's tiers), or the refusal of one below the pool's
    /// `tier_min`.
    fn tiers_of(
        &self,
        parties: [PublicKey; 2],
        rule: Option<&crate::genesis::PoolRule>,
    ) -> Result<[usize; 2], EntryError> {
        let tiers = &self.base.genesis.tiers;
        let tier_min = rule.map_or(0, |rule| usize::try_from(rule.tier_min).unwrap_or(usize::MAX));
        let mut found = [0usize; 2];
        for (slot, party) in found.iter_mut().zip(parties) {
            let reputation: Reputation = self.read(&key(REPUTATION, &[party.as_bytes()])).unwrap_or_default();
            *slot = reputation.tier(tiers);
            if *slot < tier_min {
                return Err(EntryError::Tier { account: party, tier: *slot, needed: tier_min });
            }
        }
        Ok(found.map(|tier| tier.min(tiers.len() - 1)))
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

    /// No hoarding of an essential resource: an account's purchases in an interval stay within the rule.
    fn check_hoarding(
        &mut self,
        essential: &crate::genesis::EssentialFile,
        buyer: &PublicKey,
        pool: &PoolId,
        period_s: u64,
        quantity: u64,
        delivery_end_ms: u64,
    ) -> Result<(), EntryError> {
        if essential.per_account_max == 0 {
            return Ok(());
        }
        let bought_key = key(ESSENTIAL_BOUGHT, &[buyer.as_bytes(), pool.digest().as_bytes(), &period_s.to_be_bytes()]);
        let bought: u64 = self.read(&bought_key).unwrap_or(0);
        let wanted = bought.saturating_add(quantity);
        if wanted > essential.per_account_max {
            return Err(EntryError::HoardingLimit { account: *buyer, wanted, limit: essential.per_account_max });
        }
        if bought == 0 {
            self.forget_at(delivery_end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &bought_key);
        }
        self.write(bought_key, &wanted);
        Ok(())
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

    /// Adds an energy trade to the buyer's and seller's totals for the interval, refusing a buyer over the
    /// anti-hoarding limit. The totals are what delivery is checked against, and are forgotten after release.
    pub(super) fn count_energy(
        &mut self,
        buyer: &PublicKey,
        seller: &PublicKey,
        start_s: u64,
        quantity: u64,
        release_ms: u64,
    ) -> Result<(), EntryError> {
        let limit = self.param("bought_per_interval_max_wh");
        for (prefix, account) in [(BOUGHT, buyer), (SOLD, seller)] {
            let total_key = interval_key(prefix, account, start_s);
            let before: Option<u64> = self.read(&total_key);
            let total = before.unwrap_or(0).checked_add(quantity).ok_or(EntryError::Overflow)?;
            if prefix == BOUGHT && limit > 0 && total > limit {
                return Err(EntryError::HoardingLimit { account: *account, wanted: total, limit });
            }
            if before.is_none() {
                self.forget_at(release_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &total_key);
            }
            self.write(total_key, &total);
        }
        Ok(())
    }

    /// An account's shortfall on one energy trade of `quantity` Wh: its measured flow (export for a seller, import
    /// for a buyer, summed over the readings it anchored for the interval) is shared pro rata over everything it
    /// traded for the interval; what this trade does not get is the shortfall. No reading counts as nothing
    /// measured.
    pub(super) fn shortfall_wh(&self, account: &PublicKey, escrow: &Escrow, seller: bool) -> u64 {
        let end_s = escrow.delivery_start_s.saturating_add(u64::from(escrow.interval_s));
        let flows = self.scan(interval_key(FLOW, account, escrow.delivery_start_s), interval_key(FLOW, account, end_s));
        let measured: u64 = flows
            .iter()
            .filter_map(|(_, value)| decode::<(u64, u64)>(value))
            .map(|(import_wh, export_wh)| if seller { export_wh } else { import_wh })
            .fold(0u64, u64::saturating_add);
        let prefix = if seller { SOLD } else { BOUGHT };
        let traded: u64 = self.read(&interval_key(prefix, account, escrow.delivery_start_s)).unwrap_or(escrow.quantity);
        let traded = traded.max(escrow.quantity);
        let met = u128::from(escrow.quantity) * u128::from(measured.min(traded)) / u128::from(traded);
        escrow.quantity - u64::try_from(met).unwrap_or(escrow.quantity)
    }

    /// Releases an escrow: checks an energy trade's delivery, takes penalties from collateral, pays tax and
    /// royalty, pays the seller and returns what is left to each party.
    pub(super) fn release(&mut self, id: Id, escrow: &Escrow) {
        let rate = self.param("penalty_per_kwh");
        let (seller_short, buyer_short) = if escrow.metered == 1 {
            (self.shortfall_wh(&escrow.seller, escrow, true), self.shortfall_wh(&escrow.buyer, escrow, false))
        } else {
            (0, 0)
        };
        let penalty = |short: u64, collateral: u64| {
            protocol::message::value_milli(short, rate).unwrap_or(u64::MAX).min(collateral)
        };
        let seller_penalty = penalty(seller_short, escrow.seller_collateral);
        let buyer_penalty = penalty(buyer_short, escrow.buyer_collateral);
        // Every amount below is part of what the escrow holds, so the credits cannot overflow a supply.
        let to_seller =
            (escrow.amount - escrow.tax - escrow.royalty) + (escrow.seller_collateral - seller_penalty) + buyer_penalty;
        let to_buyer = (escrow.buyer_collateral - buyer_penalty) + seller_penalty;
        for (account, amount) in [
            (escrow.seller, to_seller),
            (escrow.buyer, to_buyer),
            (COMMONS, escrow.tax),
            (escrow.royalty_account, escrow.royalty),
        ] {
            if amount > 0 {
                let _ = self.credit(&account, &escrow.token, amount);
            }
        }
        for (account, short, paid, checked) in [
            (escrow.seller, seller_short, seller_penalty, true),
            (escrow.buyer, buyer_short, buyer_penalty, escrow.metered == 1),
        ] {
            if !checked {
                continue;
            }
            self.reputation(&account, |reputation| {
                if short == 0 {
                    reputation.deliveries += 1;
                } else {
                    reputation.failures += 1;
                }
            });
            if short > 0 {
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

    /// Refuses trading by an account an override froze.
    pub(super) fn check_not_frozen(&self, account: &PublicKey) -> Result<(), EntryError> {
        match self.read::<InForce>(&key(FROZEN, &[account.as_bytes()])) {
            Some(in_force) => {
                Err(EntryError::Frozen { account: *account, by: in_force.by, until_height: in_force.until_height })
            }
            None => Ok(()),
        }
    }
}
