//! kos market: order books, interval auctions, barter cycles and price indices — pure, deterministic, integers only.
//!
//! Nothing here does IO or reads a clock: callers pass `now_ms` and orders in a deterministic order, and get
//! fills, clearings and cycles back. The node turns them into settlement entries on the ledger.

pub mod assign;
pub mod auction;
pub mod barter;
pub mod book;
pub mod fairness;
pub mod geo;
pub mod index;
pub mod jobs;
pub mod pools;
pub mod pricing;

/// Parts per million: the unit of percentages and dividers.
pub const PPM: u32 = 1_000_000;

/// A grid fee charged between buyer and seller, per 1000 quantity units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fee {
    #[default]
    None,
    /// A constant amount in token milli-units per 1000 quantity units (per kWh).
    Constant(u64),
    /// A share of the seller's price in parts per million, rounded up.
    Ppm(u32),
}

impl Fee {
    /// The fee on a seller's price `price`.
    pub fn on(self, price: u64) -> u64 {
        match self {
            Fee::None => 0,
            Fee::Constant(fee) => fee,
            Fee::Ppm(ppm) => {
                let product = u128::from(price) * u128::from(ppm);
                u64::try_from(product.div_ceil(u128::from(PPM))).unwrap_or(u64::MAX)
            }
        }
    }

    /// What the buyer pays when the seller receives `price`: `price + fee(price)`, saturating.
    pub fn gross_price(self, price: u64) -> u64 {
        price.saturating_add(self.on(price))
    }

    /// The largest seller's price a bid of `bid` can pay with the fee on top, or `None` if the fee alone exceeds it.
    pub fn net_price(self, bid: u64) -> Option<u64> {
        match self {
            Fee::None => Some(bid),
            Fee::Constant(fee) => bid.checked_sub(fee),
            Fee::Ppm(ppm) => {
                let net = u128::from(bid) * u128::from(PPM) / (u128::from(PPM) + u128::from(ppm));
                u64::try_from(net).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn net_price_is_the_largest_price_the_bid_covers(bid in 0u64..10_000_000, fee in 0u64..100_000, ppm in 0u32..2_000_000) {
            for fee in [Fee::None, Fee::Constant(fee), Fee::Ppm(ppm)] {
                if let Some(net) = fee.net_price(bid) {
                    prop_assert!(fee.gross_price(net) <= bid);
                    prop_assert!(fee.gross_price(net + 1) > bid);
                } else {
                    prop_assert!(fee.gross_price(0) > bid);
                }
            }
        }
    }
}
