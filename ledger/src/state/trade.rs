//! Trade and escrow: escrows, reputation, pool fees and rules, dynamic base prices and price indices.

use protocol::message::PoolId;
use protocol::{Id, PublicKey};

use super::read::{Kv, prefixed, value};
use super::{
    BASE_PRICE, BASE_PRICE_HISTORY, ESCROW, Escrow, POOL_FEE, PriceIndex, REPUTATION, Reputation, fee_of, key,
    period_len_s, pool_fee, price_index_key, priced_period, roll_base_price,
};
use crate::state::GovernanceReads as _;

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
