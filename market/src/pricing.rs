//! Dynamic pricing: a pool's base price that follows its usage, computed from ledger data alone so that every
//! node gets the same price.
//!
//! Each period (a delivery interval, or an hour in continuous pools) has a utilisation `u = volume / capacity`.
//! The next period's base price moves toward balance: up when the period cleared above the target utilisation,
//! down when below, by at most `step_ppm` of the price per period:
//!
//! ```text
//! change = clamp((u − target) / target, −1, 1) × step        (all in ppm, integer arithmetic)
//! next   = clamp(price + ⌊price × change / 10⁶⌋ (at least ±1 when change ≠ 0), min, max)
//! ```
//!
//! The base price is the pool's floor: a settlement below it is refused, and the market raises asks below it to
//! it. Integers only; no clock.

use crate::PPM;

/// Length of a continuous pool's pricing period, seconds (an hour).
pub const CONTINUOUS_PERIOD_S: u64 = 3600;

/// The period an offer of a pool is priced in (its base price, its price index, an essential pool's share): the
/// offer's delivery interval (`delivery_start_s`) in an interval pool, or the hour holding `now_s` in a continuous
/// pool (`interval_s` 0). The one rule the market (an offer's floor) and the ledger (a settlement's checks) share.
pub fn period_start_s(interval_s: u32, delivery_start_s: u64, now_s: u64) -> u64 {
    if interval_s == 0 { now_s / CONTINUOUS_PERIOD_S * CONTINUOUS_PERIOD_S } else { delivery_start_s }
}

/// A pool's dynamic price policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The base price of the first period, milli-units per 1000 quantity units.
    pub base: u64,
    pub min: u64,
    pub max: u64,
    /// Units a period can carry (the pool's capacity): utilisation is volume over it.
    pub capacity: u64,
    /// Target utilisation, ppm (more than 0).
    pub target_ppm: u32,
    /// Largest move per period, ppm of the price.
    pub step_ppm: u32,
}

impl Policy {
    /// Whether the policy is usable: min ≤ base ≤ max, a capacity and a target above 0, a step of at most 100 %.
    pub fn check(&self) -> Result<(), &'static str> {
        if !(1 <= self.min && self.min <= self.base && self.base <= self.max) {
            return Err("1 ≤ min ≤ base ≤ max is needed");
        }
        if self.capacity == 0 || self.target_ppm == 0 || self.target_ppm > PPM {
            return Err("capacity above 0 and target_ppm from 1 to 1000000");
        }
        if self.step_ppm > PPM {
            return Err("step_ppm at most 1000000");
        }
        Ok(())
    }

    /// The next period's base price after a period at `price` that carried `volume` units.
    #[must_use]
    pub fn next(&self, price: u64, volume: u64) -> u64 {
        let target = i128::from(self.target_ppm.max(1));
        let utilisation = i128::from(volume) * i128::from(PPM) / i128::from(self.capacity.max(1));
        // (u − target) / target in ppm, within ±100 %.
        let pressure = ((utilisation - target) * i128::from(PPM) / target).clamp(-i128::from(PPM), i128::from(PPM));
        let change = pressure * i128::from(self.step_ppm) / i128::from(PPM);
        // At least one unit whenever there is pressure, so that a low price is never stuck by rounding.
        let delta = match i128::from(price) * change / i128::from(PPM) {
            0 => change.signum(),
            delta => delta,
        };
        let moved = i128::from(price) + delta;
        let bounded = moved.clamp(i128::from(self.min), i128::from(self.max));
        u64::try_from(bounded).unwrap_or(self.max)
    }

    /// The base price `periods` periods after a period at `price`, with the volumes of those periods (a missing
    /// volume is 0).
    #[must_use]
    pub fn roll(&self, mut price: u64, volumes: impl IntoIterator<Item = u64>) -> u64 {
        for volume in volumes {
            price = self.next(price, volume);
        }
        price
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: Policy =
        Policy { base: 200, min: 100, max: 400, capacity: 10_000, target_ppm: 800_000, step_ppm: 50_000 };

    #[test]
    fn busy_periods_raise_the_price_and_quiet_ones_lower_it_by_at_most_the_step() {
        // At the target: unchanged. Full (125 % of target): +1.25 % ... capped at the step (+5 %) when far above.
        assert_eq!(POLICY.next(200, 8_000), 200);
        assert_eq!(POLICY.next(200, 10_000), 202);
        assert_eq!(POLICY.next(200, 100_000), 210);
        // Empty: −5 %, and never below the floor.
        assert_eq!(POLICY.next(200, 0), 190);
        assert_eq!(POLICY.roll(200, [0; 100]), 100);
        assert_eq!(POLICY.roll(390, [1_000_000; 10]), 400);
        assert!(POLICY.check().is_ok());
        // A low price still moves (by at least one unit), and a floor of 0 is refused (it could never rise again).
        let low = Policy { base: 10, min: 1, max: 100, ..POLICY };
        assert_eq!((low.next(10, 0), low.next(10, 100_000)), (9, 11));
        assert!(Policy { min: 0, ..POLICY }.check().is_err());
        assert!(Policy { min: 300, ..POLICY }.check().is_err());
    }

    proptest! {
        /// Whatever the volumes, the price stays within its bounds, never moves more than the step in a period,
        /// and is a function of its inputs alone (the same on every node).
        #[test]
        fn the_price_stays_within_bounds_and_steps(
            base in 100u64..=400,
            volumes in proptest::collection::vec(0u64..50_000, 0..200),
        ) {
            let mut price = base;
            for volume in &volumes {
                let next = POLICY.next(price, *volume);
                prop_assert!((POLICY.min..=POLICY.max).contains(&next));
                let step = price * u64::from(POLICY.step_ppm) / u64::from(PPM) + 1;
                prop_assert!(next.abs_diff(price) <= step, "{price} -> {next}");
                price = next;
            }
            prop_assert_eq!(POLICY.roll(base, volumes.iter().copied()), price);
        }
    }
}
