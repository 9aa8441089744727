//! Interval auctions: every bid and ask for one delivery interval (e.g. 15 minutes of energy) cleared at once at
//! gate closure.
//!
//! Units are those of the wire format: quantities in the resource's unit (Wh for energy), prices in token
//! milli-units per 1000 quantity units (per kWh). All arithmetic is integer; every division rounds down unless said.
//!
//! # Allocation (all mechanisms)
//! Bids are sorted by price, highest first, asks by price, lowest first; equal prices keep the caller's order (the
//! caller passes orders in a deterministic order, e.g. by message id). The merit order walks both lists and trades
//! `min(bid left, ask left)` while the bid's net price (after the grid fee, below) is at least the ask's price.
//! This is the allocation that maximises traded welfare `Σ quantity · (bid price − ask price)`: every unit that
//! could add non-negative surplus is traded, best surplus first.
//!
//! λb is the net price of the lowest accepted bid, λs the price of the highest accepted ask (so λs ≤ λb).
//!
//! # Price (the mechanisms)
//! - **Pay-as-clear**: one uniform price for all trades, the midpoint of the range of market-clearing prices
//!   `[lo, hi]`, where `lo = max(λs, price of the best bid left with quantity)` and
//!   `hi = min(λb, price of the best ask left with quantity)`: at any price in the range no accepted order would
//!   rather not trade and no order left over would rather trade. Price `= lo + (hi − lo) / 2`.
//! - **Pay-as-bid**: each trade at its bid's net price; the clearing price is `None`.
//! - **Mid-market rate (MMR)**: uniform price `λs + (λb − λs) · d`, with the divider `d` in parts per million
//!   (`d = 0.5` is the plain mid-market rate `(λb + λs) / 2`).
//! - **Supply-demand ratio (SDR)** (Liu et al., IEEE Trans. Power Systems 2017): with `SDR = S / D`, `S` the total
//!   ask quantity and `D` the total bid quantity submitted, uniform price
//!   `λb · λs / ((λb − λs) · SDR + λs)` when `SDR < 1`, else `λs`; computed as
//!   `λb · λs · D / ((λb − λs) · S + λs · D)`. It falls from λb when supply is scarce to λs when supply meets demand.
//!
//! # Grid fee
//! A pool may charge a grid fee between buyer and seller: the seller receives the trade price `p`, the buyer pays
//! `p + fee(p)` with `fee(p)` a constant or `ceil(p · ppm / 10⁶)`. Bids enter the merit order at their net price,
//! the largest `p` with `p + fee(p) ≤ bid`, so no buyer ever pays above its bid.

use crate::{Fee, PPM};

/// A bid or ask of an interval auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order<K> {
    pub id: K,
    /// Quantity in the resource's unit; orders of 0 are ignored.
    pub quantity: u64,
    /// Limit price per 1000 quantity units: the most a bid pays (fee included), the least an ask accepts.
    pub price: u64,
}

/// How an interval auction sets prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    PayAsClear,
    PayAsBid,
    /// Mid-market rate with the divider in parts per million (0 = λs, 500 000 = mid, 1 000 000 = λb).
    MidMarketRate {
        divider_ppm: u32,
    },
    SupplyDemandRatio,
}

impl Mechanism {
    /// The mechanism's code on the ledger.
    pub fn wire(self) -> protocol::message::Mechanism {
        match self {
            Mechanism::PayAsClear => protocol::message::Mechanism::PayAsClear,
            Mechanism::PayAsBid => protocol::message::Mechanism::PayAsBid,
            Mechanism::MidMarketRate { .. } => protocol::message::Mechanism::MidMarketRate,
            Mechanism::SupplyDemandRatio => protocol::message::Mechanism::SupplyDemandRatio,
        }
    }
}

/// One trade of an auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade<K> {
    pub bid: K,
    pub ask: K,
    pub quantity: u64,
    /// What the seller receives per 1000 units; between the ask's price and the bid's net price.
    pub price: u64,
    /// What the buyer pays per 1000 units: `price` plus the grid fee; at most the bid's price.
    pub buyer_price: u64,
}

/// The outcome of an auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clearing<K> {
    /// The uniform price (before the grid fee), or `None` for pay-as-bid and when nothing trades.
    pub price: Option<u64>,
    pub trades: Vec<Trade<K>>,
    /// Total quantity traded. An auction trades at most `u64::MAX` units in all (matching stops there), so the
    /// total always fits.
    pub volume: u64,
}

/// A merit-order match of one bid with one ask, by index into the sorted lists.
struct Pair {
    bid: usize,
    ask: usize,
    quantity: u64,
}

/// Clears one interval. Deterministic: the same orders in the same order give the same result.
pub fn clear<K: Clone>(bids: &[Order<K>], asks: &[Order<K>], mechanism: Mechanism, fee: Fee) -> Clearing<K> {
    let mut bids: Vec<(u64, &Order<K>)> =
        bids.iter().filter(|bid| bid.quantity > 0).filter_map(|bid| Some((fee.net_price(bid.price)?, bid))).collect();
    let mut asks: Vec<&Order<K>> = asks.iter().filter(|ask| ask.quantity > 0).collect();
    // Stable sorts keep the caller's order among equal prices.
    bids.sort_by_key(|bid| std::cmp::Reverse(bid.0));
    asks.sort_by_key(|ask| ask.price);

    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut bid_left, mut ask_left) =
        (bids.first().map_or(0, |b| b.1.quantity), asks.first().map_or(0, |a| a.quantity));
    // What may still trade before the total volume would pass 64 bits (only absurd quantities get there).
    let mut room = u64::MAX;
    while let (Some(&(net, _)), Some(ask)) = (bids.get(i), asks.get(j)) {
        if net < ask.price || room == 0 {
            break;
        }
        let quantity = bid_left.min(ask_left).min(room);
        room -= quantity;
        pairs.push(Pair { bid: i, ask: j, quantity });
        bid_left -= quantity;
        ask_left -= quantity;
        if bid_left == 0 {
            i += 1;
            bid_left = bids.get(i).map_or(0, |b| b.1.quantity);
        }
        if ask_left == 0 {
            j += 1;
            ask_left = asks.get(j).map_or(0, |a| a.quantity);
        }
    }
    let (Some(last_bid), Some(last_ask)) = (pairs.last().map(|p| p.bid), pairs.last().map(|p| p.ask)) else {
        return Clearing { price: None, trades: Vec::new(), volume: 0 };
    };
    let lambda_b = bids[last_bid].0;
    let lambda_s = asks[last_ask].price;

    let uniform = match mechanism {
        Mechanism::PayAsBid => None,
        Mechanism::PayAsClear => {
            // Orders left with quantity: the bid at `i` and the ask at `j` (the marginal ones if partly filled).
            let lo = bids.get(i).map_or(lambda_s, |b| b.0.max(lambda_s));
            let hi = asks.get(j).map_or(lambda_b, |a| a.price.min(lambda_b));
            Some(lo + (hi.saturating_sub(lo)) / 2)
        }
        Mechanism::MidMarketRate { divider_ppm } => {
            let divider = u128::from(divider_ppm.min(PPM));
            let spread = u128::from(lambda_b - lambda_s);
            Some(lambda_s + narrow(spread * divider / u128::from(PPM)))
        }
        Mechanism::SupplyDemandRatio => {
            let supply: u128 = asks.iter().map(|a| u128::from(a.quantity)).sum();
            let demand: u128 = bids.iter().map(|b| u128::from(b.1.quantity)).sum();
            let (b, s) = (u128::from(lambda_b), u128::from(lambda_s));
            let denominator = (b - s) * supply + s * demand;
            if supply >= demand || denominator == 0 {
                Some(lambda_s)
            } else {
                // λb·λs·D can exceed 128 bits only for absurd prices; it then saturates to λb (the cap below).
                let numerator = b.checked_mul(s).and_then(|bs| bs.checked_mul(demand));
                Some(numerator.map_or(lambda_b, |n| narrow(n / denominator).clamp(lambda_s, lambda_b)))
            }
        }
    };

    let volume = u64::MAX - room;
    let trades = pairs
        .into_iter()
        .map(|pair| {
            let price = uniform.unwrap_or(bids[pair.bid].0);
            Trade {
                bid: bids[pair.bid].1.id.clone(),
                ask: asks[pair.ask].id.clone(),
                quantity: pair.quantity,
                price,
                buyer_price: fee.gross_price(price),
            }
        })
        .collect();
    Clearing { price: uniform, trades, volume }
}

/// Narrows a value known to be at most a u64 price.
fn narrow(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Traded welfare `Σ quantity · (bid price − ask price)` in price units × quantity, with prices looked up by id.
/// Used by tests and benchmarks to compare allocations.
pub fn welfare<K: PartialEq>(trades: &[Trade<K>], bids: &[Order<K>], asks: &[Order<K>]) -> i128 {
    let price_of =
        |orders: &[Order<K>], id: &K| orders.iter().find(|order| order.id == *id).map_or(0, |order| order.price);
    trades
        .iter()
        .map(|trade| {
            i128::from(trade.quantity)
                * (i128::from(price_of(bids, &trade.bid)) - i128::from(price_of(asks, &trade.ask)))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(id: u32, quantity: u64, price: u64) -> Order<u32> {
        Order { id, quantity, price }
    }

    #[test]
    fn one_bid_one_ask_clear_at_the_midpoint() {
        let clearing = clear(&[order(1, 500, 45_000)], &[order(2, 500, 0)], Mechanism::PayAsClear, Fee::None);
        assert_eq!(clearing.price, Some(22_500));
        assert_eq!(clearing.volume, 500);
        assert_eq!(clearing.trades, vec![Trade { bid: 1, ask: 2, quantity: 500, price: 22_500, buyer_price: 22_500 }]);
    }

    #[test]
    fn excess_supply_sets_the_price_to_the_marginal_ask() {
        // Supply 800 Wh against demand 500: the marginal ask (20/kWh) is partly filled and sets the price.
        let bids = [order(1, 300, 40_000), order(2, 200, 30_000)];
        let asks = [order(3, 400, 10_000), order(4, 400, 20_000)];
        let clearing = clear(&bids, &asks, Mechanism::PayAsClear, Fee::None);
        assert_eq!(clearing.volume, 500);
        assert_eq!(clearing.price, Some(20_000));
        let pay_as_bid = clear(&bids, &asks, Mechanism::PayAsBid, Fee::None);
        assert_eq!(pay_as_bid.price, None);
        let prices: Vec<u64> = pay_as_bid.trades.iter().map(|t| t.price).collect();
        assert_eq!(prices, vec![40_000, 30_000, 30_000]);
    }

    #[test]
    fn mmr_and_sdr_follow_their_formulas() {
        // λb = 30 (lowest accepted bid), λs = 10 (highest accepted ask).
        let bids = [order(1, 600, 30_000)];
        let asks = [order(2, 300, 10_000)];
        let mid = clear(&bids, &asks, Mechanism::MidMarketRate { divider_ppm: 500_000 }, Fee::None);
        assert_eq!(mid.price, Some(20_000));
        let quarter = clear(&bids, &asks, Mechanism::MidMarketRate { divider_ppm: 250_000 }, Fee::None);
        assert_eq!(quarter.price, Some(15_000));
        // SDR = 300 / 600 = 0.5: price = 30·10 / (20·0.5 + 10) = 15.
        let sdr = clear(&bids, &asks, Mechanism::SupplyDemandRatio, Fee::None);
        assert_eq!(sdr.price, Some(15_000));
        assert_eq!(sdr.volume, 300);
        // Supply meets demand: SDR ≥ 1 gives λs.
        let plenty = clear(&bids, &[order(2, 900, 10_000)], Mechanism::SupplyDemandRatio, Fee::None);
        assert_eq!(plenty.price, Some(10_000));
    }

    #[test]
    fn grid_fees_sit_between_buyer_and_seller() {
        let bids = [order(1, 100, 30_000)];
        let asks = [order(2, 100, 10_000)];
        let constant = clear(&bids, &asks, Mechanism::PayAsBid, Fee::Constant(5_000));
        assert_eq!((constant.trades[0].price, constant.trades[0].buyer_price), (25_000, 30_000));
        let percent = clear(&bids, &asks, Mechanism::PayAsBid, Fee::Ppm(200_000));
        assert_eq!((percent.trades[0].price, percent.trades[0].buyer_price), (25_000, 30_000));
        // A fee larger than the spread stops the trade.
        assert_eq!(clear(&bids, &asks, Mechanism::PayAsClear, Fee::Constant(20_001)).volume, 0);
    }

    #[test]
    fn no_cross_no_trade() {
        let clearing = clear(&[order(1, 100, 10_000)], &[order(2, 100, 11_000)], Mechanism::PayAsClear, Fee::None);
        assert_eq!(clearing, Clearing { price: None, trades: vec![], volume: 0 });
        assert_eq!(clear::<u32>(&[], &[], Mechanism::SupplyDemandRatio, Fee::None).volume, 0);
    }

    fn book() -> impl Strategy<Value = (Vec<Order<u32>>, Vec<Order<u32>>)> {
        let side = |offset: u32| {
            prop::collection::vec((0u64..=3, 0u64..=8), 0..=3).prop_map(move |orders| {
                orders
                    .into_iter()
                    .enumerate()
                    .map(|(index, (quantity, price))| order(offset + index as u32, quantity, price * 1_000))
                    .collect::<Vec<_>>()
            })
        };
        (side(0), side(100))
    }

    /// The best welfare of any allocation, by enumerating every quantity each order could trade.
    fn brute_force_welfare(bids: &[Order<u32>], asks: &[Order<u32>]) -> i128 {
        let orders: Vec<(bool, &Order<u32>)> =
            bids.iter().map(|b| (true, b)).chain(asks.iter().map(|a| (false, a))).collect();
        let mut best = 0i128;
        let mut choice = vec![0u64; orders.len()];
        loop {
            let bought: u64 = orders.iter().zip(&choice).filter(|(o, _)| o.0).map(|(_, q)| q).sum();
            let sold: u64 = orders.iter().zip(&choice).filter(|(o, _)| !o.0).map(|(_, q)| q).sum();
            if bought == sold {
                let value: i128 = orders
                    .iter()
                    .zip(&choice)
                    .map(|((is_bid, o), q)| {
                        let v = i128::from(*q) * i128::from(o.price);
                        if *is_bid { v } else { -v }
                    })
                    .sum();
                best = best.max(value);
            }
            // Next combination (odometer).
            let mut position = 0;
            loop {
                if position == orders.len() {
                    return best;
                }
                if choice[position] < orders[position].1.quantity {
                    choice[position] += 1;
                    break;
                }
                choice[position] = 0;
                position += 1;
            }
        }
    }

    const MECHANISMS: [Mechanism; 4] = [
        Mechanism::PayAsClear,
        Mechanism::PayAsBid,
        Mechanism::MidMarketRate { divider_ppm: 370_000 },
        Mechanism::SupplyDemandRatio,
    ];

    proptest! {
        #[test]
        fn pay_as_clear_welfare_is_the_brute_force_optimum((bids, asks) in book()) {
            let clearing = clear(&bids, &asks, Mechanism::PayAsClear, Fee::None);
            prop_assert_eq!(welfare(&clearing.trades, &bids, &asks), brute_force_welfare(&bids, &asks));
        }

        #[test]
        fn every_mechanism_conserves_quantity_and_respects_limits(
            (bids, asks) in book(),
            fee in prop_oneof![Just(Fee::None), (0u64..3_000).prop_map(Fee::Constant), (0u32..300_000).prop_map(Fee::Ppm)],
        ) {
            for mechanism in MECHANISMS {
                let clearing = clear(&bids, &asks, mechanism, fee);
                let mut bought = std::collections::HashMap::new();
                let mut sold = std::collections::HashMap::new();
                for trade in &clearing.trades {
                    let bid = bids.iter().find(|b| b.id == trade.bid).expect("trade names a bid");
                    let ask = asks.iter().find(|a| a.id == trade.ask).expect("trade names an ask");
                    prop_assert!(trade.quantity > 0);
                    prop_assert!(ask.price <= trade.price, "{mechanism:?} pays a seller below its ask");
                    prop_assert!(trade.price <= trade.buyer_price && trade.buyer_price <= bid.price,
                        "{mechanism:?} charges a buyer above its bid");
                    if let Some(price) = clearing.price {
                        prop_assert_eq!(trade.price, price);
                    }
                    *bought.entry(trade.bid).or_insert(0u64) += trade.quantity;
                    *sold.entry(trade.ask).or_insert(0u64) += trade.quantity;
                }
                for bid in &bids { prop_assert!(bought.get(&bid.id).copied().unwrap_or(0) <= bid.quantity); }
                for ask in &asks { prop_assert!(sold.get(&ask.id).copied().unwrap_or(0) <= ask.quantity); }
                prop_assert_eq!(bought.values().sum::<u64>(), clearing.volume);
                prop_assert_eq!(sold.values().sum::<u64>(), clearing.volume);
                // Determinism: clearing again gives the same result.
                prop_assert_eq!(&clear(&bids, &asks, mechanism, fee), &clearing);
            }
        }

        /// Issue 25, defect 8: quantities near 2^64 − 1 made the volume wrap (two trades of 2^64 − 1 Wh were
        /// reported as a volume of 2^64 − 2). Every mechanism now trades at most 2^64 − 1 units in all, and the
        /// volume it reports is exactly what its trades add up to.
        #[test]
        fn extreme_quantities_never_wrap_the_volume(
            bids in prop::collection::vec((u64::MAX - 3..=u64::MAX, 1u64..=5), 1..=4),
            asks in prop::collection::vec((u64::MAX - 3..=u64::MAX, 0u64..=3), 1..=4),
            fee in prop_oneof![Just(Fee::None), Just(Fee::Constant(500)), Just(Fee::Ppm(100_000))],
        ) {
            let to_orders = |orders: &[(u64, u64)], offset: u32| -> Vec<Order<u32>> {
                orders.iter().enumerate().map(|(index, (quantity, price))| order(offset + index as u32, *quantity, price * 1_000)).collect()
            };
            let (bids, asks) = (to_orders(&bids, 0), to_orders(&asks, 100));
            for mechanism in MECHANISMS {
                let clearing = clear(&bids, &asks, mechanism, fee);
                let traded: u128 = clearing.trades.iter().map(|trade| u128::from(trade.quantity)).sum();
                prop_assert_eq!(traded, u128::from(clearing.volume), "{:?}", mechanism);
                for bid in &bids {
                    let bought: u128 = clearing.trades.iter().filter(|t| t.bid == bid.id).map(|t| u128::from(t.quantity)).sum();
                    prop_assert!(bought <= u128::from(bid.quantity));
                }
                for ask in &asks {
                    let sold: u128 = clearing.trades.iter().filter(|t| t.ask == ask.id).map(|t| u128::from(t.quantity)).sum();
                    prop_assert!(sold <= u128::from(ask.quantity));
                }
                // When bids and asks cross, something trades.
                let crossing = bids.iter().any(|b| fee.net_price(b.price).is_some_and(|net| asks.iter().any(|a| a.price <= net)));
                prop_assert_eq!(crossing, clearing.volume > 0, "{:?}", mechanism);
            }
            let essential = crate::fairness::Essential { essential_per_account: 1 << 62, per_account_max: 0, share_max_ppm: 0 };
            let owned: Vec<(u32, Order<u32>)> = bids.iter().map(|bid| (bid.id, bid.clone())).collect();
            let fair = crate::fairness::clear(&owned, &asks, fee, &essential, 0);
            let traded: u128 = fair.trades.iter().map(|trade| u128::from(trade.quantity)).sum();
            prop_assert_eq!(traded, u128::from(fair.volume));
        }

        #[test]
        fn every_mechanism_trades_the_same_volume((bids, asks) in book()) {
            let volumes: Vec<u64> = MECHANISMS.iter().map(|m| clear(&bids, &asks, *m, Fee::None).volume).collect();
            prop_assert!(volumes.windows(2).all(|w| w[0] == w[1]), "{volumes:?}");
        }
    }
}
