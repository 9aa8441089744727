//! Price benchmarks: the volume-weighted average price (VWAP) of a pool's trades in one interval.
//!
//! `vwap = Σ(quantity_i · price_i) / Σ quantity_i`, rounded down, in the pool's price unit (token milli-units per
//! 1000 quantity units). The sums are kept exactly (u128), so the index is the same whatever the order of trades.

/// Running sums of one pool's trades in one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vwap {
    /// Σ quantity.
    pub volume: u128,
    /// Σ quantity · price.
    pub notional: u128,
    pub trades: u64,
    pub low: Option<u64>,
    pub high: Option<u64>,
}

impl Vwap {
    /// Adds a trade of `quantity` at `price`.
    pub fn add(&mut self, quantity: u64, price: u64) {
        if quantity == 0 {
            return;
        }
        self.volume += u128::from(quantity);
        self.notional += u128::from(quantity) * u128::from(price);
        self.trades += 1;
        self.low = Some(self.low.map_or(price, |low| low.min(price)));
        self.high = Some(self.high.map_or(price, |high| high.max(price)));
    }

    /// The volume-weighted average price, or `None` without trades.
    pub fn price(&self) -> Option<u64> {
        self.notional.checked_div(self.volume).map(|price| u64::try_from(price).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_by_volume() {
        let mut index = Vwap::default();
        assert_eq!(index.price(), None);
        index.add(300, 10_000);
        index.add(100, 30_000);
        index.add(0, 1);
        assert_eq!(index.price(), Some(15_000));
        assert_eq!((index.trades, index.low, index.high, index.volume), (2, Some(10_000), Some(30_000), 400));
    }
}
