//! Fairness for scarce essential resources (power in island mode, water, bandwidth, shelter slots): supply is
//! shared by max-min fairness (progressive filling), essential needs before the rest, and no account gets more
//! than a cap (a per-account maximum, and a share of the supply set by governance) — so that when an essential
//! pool is short, who needs it gets it, not who bids most.
//!
//! [`allocate`] is the allocator, a rule of the protocol ([`protocol::fairness`]; island mode uses it too). [`clear`] is an essential pool's interval auction:
//! the price is the supply's marginal price — the dearest ask the merit-order clearing needs — so that one
//! account's large bid cannot price its neighbours out; the supply offered at or below it is shared among every
//! account bidding at least that price by [`allocate`], and matched with the asks in price order.

use std::collections::BTreeMap;

use crate::Fee;
use crate::PPM;
use crate::auction::{self, Clearing, Mechanism, Order, Trade};
pub use protocol::fairness::{Claim, allocate, fair_shares};

/// An essential pool's fairness rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Essential {
    /// Of each account's bids, this much counts as essential need.
    pub essential_per_account: u64,
    /// Most any account gets in one interval; 0: no maximum.
    pub per_account_max: u64,
    /// Most any account gets of the interval's supply, ppm; 0: no limit.
    pub share_max_ppm: u32,
}

/// An essential pool's interval auction. `bids` carry their owner; every order of one owner counts toward one
/// claim. Prices are uniform (pay-as-clear).
#[must_use]
pub fn clear<K: Clone + PartialEq, O: Ord + Clone>(
    bids: &[(O, Order<K>)],
    asks: &[Order<K>],
    fee: Fee,
    rules: &Essential,
    rotation: usize,
) -> Clearing<K> {
    let orders: Vec<Order<K>> = bids.iter().map(|(_, order)| order.clone()).collect();
    let merit = auction::clear(&orders, asks, Mechanism::PayAsBid, fee);
    let ask_price = |id: &K| asks.iter().find(|ask| ask.id == *id).map(|ask| ask.price);
    let Some(price) = merit.trades.iter().filter_map(|trade| ask_price(&trade.ask)).max() else {
        return Clearing { price: None, trades: Vec::new(), volume: 0 };
    };
    // Everyone who bids at least the price, by owner, their bids highest first.
    let mut eligible: BTreeMap<O, Vec<&Order<K>>> = BTreeMap::new();
    for (owner, order) in bids {
        if order.quantity > 0 && fee.net_price(order.price).is_some_and(|net| net >= price) {
            eligible.entry(owner.clone()).or_default().push(order);
        }
    }
    for orders in eligible.values_mut() {
        orders.sort_by_key(|order| std::cmp::Reverse(order.price));
    }
    // What can trade at the price: the supply offered at or below it, as far as the eligible bids want it.
    let supply: u64 = asks.iter().filter(|ask| ask.price <= price).map(|ask| ask.quantity).fold(0, u64::saturating_add);
    let demand: u64 = eligible.values().flatten().map(|order| order.quantity).fold(0, u64::saturating_add);
    let volume = supply.min(demand);
    let claims: Vec<Claim> = eligible
        .values()
        .map(|orders| {
            let total = orders.iter().map(|order| order.quantity).fold(0u64, u64::saturating_add);
            let essential = total.min(rules.essential_per_account);
            Claim { essential, other: total - essential }
        })
        .collect();
    let share_cap = if rules.share_max_ppm == 0 {
        0
    } else {
        u64::try_from(u128::from(volume) * u128::from(rules.share_max_ppm) / u128::from(PPM)).unwrap_or(u64::MAX).max(1)
    };
    let cap = match (rules.per_account_max, share_cap) {
        (0, share) => share,
        (most, 0) => most,
        (most, share) => most.min(share),
    };
    let (shares, _) = allocate(volume, &claims, cap, rotation);
    // Each owner's share over its bids, then matched with the asks at or below the price, cheapest first.
    let mut wanted: Vec<(&Order<K>, u64)> = Vec::new();
    for (orders, (essential, other)) in eligible.values().zip(shares) {
        let mut left = essential + other;
        for order in orders {
            let take = left.min(order.quantity);
            if take > 0 {
                wanted.push((order, take));
            }
            left -= take;
        }
    }
    let mut offered: Vec<&Order<K>> = asks.iter().filter(|ask| ask.quantity > 0 && ask.price <= price).collect();
    offered.sort_by_key(|ask| ask.price);
    let mut trades = Vec::new();
    let mut asks_left = offered.iter().map(|ask| ask.quantity);
    let mut asks = offered.iter();
    let (mut ask, mut ask_left) = (asks.next(), asks_left.next().unwrap_or(0));
    let mut traded = 0u64;
    for (bid, mut want) in wanted {
        while want > 0 {
            let Some(current) = ask else { break };
            let quantity = want.min(ask_left);
            trades.push(Trade {
                bid: bid.id.clone(),
                ask: current.id.clone(),
                quantity,
                price,
                buyer_price: fee.gross_price(price),
            });
            traded += quantity;
            want -= quantity;
            ask_left -= quantity;
            if ask_left == 0 {
                (ask, ask_left) = (asks.next(), asks_left.next().unwrap_or(0));
            }
        }
    }
    Clearing { price: Some(price), trades, volume: traded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(id: u32, quantity: u64, price: u64) -> Order<u32> {
        Order { id, quantity, price }
    }

    #[test]
    fn a_short_essential_pool_serves_needs_not_the_highest_bidder() {
        // 300 units offered; a rich account bids 1,000 at a high price, two neighbours 100 each at the price.
        let asks = [order(10, 300, 100)];
        let bids = [("rich", order(1, 1_000, 900)), ("ann", order(2, 100, 150)), ("bob", order(3, 100, 150))];
        let rules = Essential { essential_per_account: 80, per_account_max: 0, share_max_ppm: 0 };
        let merit = auction::clear(
            &bids.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
            &asks,
            Mechanism::PayAsClear,
            Fee::None,
        );
        assert_eq!(merit.trades.iter().filter(|t| t.bid == 1).map(|t| t.quantity).sum::<u64>(), 300, "price decides");
        let fair = clear(&bids, &asks, Fee::None, &rules, 0);
        let got = |id| fair.trades.iter().filter(|t| t.bid == id).map(|t| t.quantity).sum::<u64>();
        // Essentials first (80 each), then the 60 left shared equally: 100 each for the neighbours, 100 for the
        // rich account.
        assert_eq!((got(1), got(2), got(3)), (100, 100, 100));
        assert_eq!(fair.volume, 300);
        assert!(fair.trades.iter().all(|t| t.price == fair.price.unwrap()));
        // A governance share cap of 20 % of supply: nobody above 60; what is not allocated is not traded.
        let capped = clear(&bids, &asks, Fee::None, &Essential { share_max_ppm: 200_000, ..rules }, 0);
        let got = |id| capped.trades.iter().filter(|t| t.bid == id).map(|t| t.quantity).sum::<u64>();
        assert_eq!((got(1), got(2), got(3)), (60, 60, 60));
    }

    proptest! {
        /// An essential auction never trades more than the merit-order clearing would, nor beyond any order.
        #[test]
        fn an_essential_clearing_trades_within_the_orders(
            bids in proptest::collection::vec((0u8..6, 1u64..500, 50u64..300), 0..20),
            asks in proptest::collection::vec((1u64..500, 50u64..300), 0..10),
            per_account in 0u64..200,
            share in 0u32..1_000_000,
        ) {
            let bids: Vec<(u8, Order<u32>)> =
                bids.iter().enumerate().map(|(i, (owner, q, p))| (*owner, order(i as u32, *q, *p))).collect();
            let asks: Vec<Order<u32>> = asks.iter().enumerate().map(|(i, (q, p))| order(1_000 + i as u32, *q, *p)).collect();
            let rules = Essential { essential_per_account: per_account, per_account_max: 0, share_max_ppm: share };
            let fair = clear(&bids, &asks, Fee::None, &rules, 0);
            let orders: Vec<Order<u32>> = bids.iter().map(|(_, o)| o.clone()).collect();
            let merit = auction::clear(&orders, &asks, Mechanism::PayAsClear, Fee::None);
            prop_assert!(fair.volume <= merit.volume);
            for order in orders.iter().chain(&asks) {
                let traded: u64 = fair.trades.iter().filter(|t| t.bid == order.id || t.ask == order.id).map(|t| t.quantity).sum();
                prop_assert!(traded <= order.quantity);
            }
            for trade in &fair.trades {
                let ask = asks.iter().find(|a| a.id == trade.ask).map(|a| a.price).unwrap_or(u64::MAX);
                let bid = orders.iter().find(|b| b.id == trade.bid).map(|b| b.price).unwrap_or(0);
                prop_assert!(ask <= trade.price && trade.price <= bid);
            }
        }
    }
}
