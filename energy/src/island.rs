//! Island mode: when a microgrid loses its grid connection, its local supply is shared among its members, essential
//! loads first, by max-min fairness (progressive filling): everyone gets an equal share, capped by what they need;
//! what a member does not need is shared again among the rest. Nobody gets more than they asked for, and every Wh
//! of supply is allocated while anyone still needs it.
//!
//! With integers, the last few Wh that do not divide evenly go one each to members in an order that rotates with
//! the interval, so no member is always first. The allocator is the one every essential pool uses
//! ([`protocol::fairness`]).

use protocol::fairness::Claim;

/// One member's need in an interval, Wh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Need {
    /// Loads that must run: medical devices, heating pumps, refrigeration, communications.
    pub essential_wh: u64,
    /// Everything else the member would use.
    pub other_wh: u64,
}

/// What a member gets in an interval, Wh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    pub essential_wh: u64,
    pub other_wh: u64,
}

impl Allocation {
    #[must_use]
    pub fn total_wh(&self) -> u64 {
        self.essential_wh.saturating_add(self.other_wh)
    }
}

/// Shares an island's supply: essential needs first, then the rest, each by max-min fairness
/// ([`protocol::fairness::allocate`], the allocator of every essential pool). Returns each member's allocation and
/// the unallocated supply (more than everyone needs).
#[must_use]
pub fn allocate(supply_wh: u64, needs: &[Need], rotation: usize) -> (Vec<Allocation>, u64) {
    let claims: Vec<Claim> =
        needs.iter().map(|need| Claim { essential: need.essential_wh, other: need.other_wh }).collect();
    let (shares, left) = protocol::fairness::allocate(supply_wh, &claims, 0, rotation);
    let allocations =
        shares.into_iter().map(|(essential_wh, other_wh)| Allocation { essential_wh, other_wh }).collect();
    (allocations, left)
}

/// Whether the microgrid is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Connected: members trade in the market and the grid balances.
    Grid,
    /// Cut off: local supply is allocated fairly.
    Island,
}

/// What tells the microgrid the grid is up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The operator's configuration forces island mode (true) or grid mode (false).
    Configured(bool),
    /// A meter reports whether it sees the grid (voltage and frequency in range).
    Meter { grid_present: bool },
}

/// Island-mode switching: any "grid lost" signal islands at once; the grid counts as back only after the meter
/// has seen it for `return_intervals` intervals in a row (so a flickering grid does not flip the mode), and never
/// while the configuration forces island mode.
#[derive(Debug, Clone)]
pub struct Microgrid {
    mode: Mode,
    forced: bool,
    present_for: u32,
    return_intervals: u32,
    rotation: usize,
}

impl Microgrid {
    #[must_use]
    pub fn new(return_intervals: u32) -> Microgrid {
        Microgrid { mode: Mode::Grid, forced: false, present_for: 0, return_intervals, rotation: 0 }
    }

    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes a signal; returns the new mode if it changed.
    pub fn signal(&mut self, signal: Signal) -> Option<Mode> {
        let before = self.mode;
        match signal {
            Signal::Configured(island) => {
                self.forced = island;
                if island {
                    self.mode = Mode::Island;
                } else if self.present_for >= self.return_intervals {
                    self.mode = Mode::Grid;
                }
            }
            Signal::Meter { grid_present: false } => {
                self.present_for = 0;
                self.mode = Mode::Island;
            }
            Signal::Meter { grid_present: true } => {
                self.present_for = self.present_for.saturating_add(1);
                if !self.forced && self.present_for >= self.return_intervals {
                    self.mode = Mode::Grid;
                }
            }
        }
        (self.mode != before).then_some(self.mode)
    }

    /// The allocation of one interval: in island mode the fair shares of `supply_wh`; in grid mode everyone gets
    /// what they need (the grid supplies the rest), and `None` is returned.
    pub fn interval(&mut self, supply_wh: u64, needs: &[Need]) -> Option<(Vec<Allocation>, u64)> {
        if self.mode == Mode::Grid {
            return None;
        }
        let result = allocate(supply_wh, needs, self.rotation);
        self.rotation = self.rotation.wrapping_add(1);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn essentials_first_then_equal_shares_capped_by_need() {
        let needs = [
            Need { essential_wh: 100, other_wh: 900 },
            Need { essential_wh: 300, other_wh: 0 },
            Need { essential_wh: 0, other_wh: 200 },
        ];
        // 300 Wh: essentials get 100 and 200 (equal shares, the first capped at its 100).
        let (shares, left) = allocate(300, &needs, 0);
        assert_eq!(shares.iter().map(Allocation::total_wh).collect::<Vec<_>>(), vec![100, 200, 0]);
        assert_eq!(left, 0);
        // 1,000 Wh: essentials fully (400), then 600 for the others: 200 is all the third needs, 400 to the first.
        let (shares, _) = allocate(1_000, &needs, 0);
        assert_eq!(shares[0], Allocation { essential_wh: 100, other_wh: 400 });
        assert_eq!(shares[2], Allocation { essential_wh: 0, other_wh: 200 });
        // More than everyone needs: nobody hoards; the surplus is left over.
        let (shares, left) = allocate(5_000, &needs, 0);
        assert_eq!(shares.iter().map(Allocation::total_wh).sum::<u64>(), 1_500);
        assert_eq!(left, 3_500);
    }

    #[test]
    fn remainders_rotate() {
        let needs = [Need { essential_wh: 10, other_wh: 0 }; 3];
        let mut grid = Microgrid::new(2);
        assert_eq!(grid.interval(1, &needs), None);
        assert_eq!(grid.signal(Signal::Meter { grid_present: false }), Some(Mode::Island));
        let firsts: Vec<usize> = (0..3)
            .map(|_| grid.interval(1, &needs).expect("island").0.iter().position(|a| a.essential_wh == 1).expect("one"))
            .collect();
        assert_eq!(firsts, vec![0, 1, 2]);
    }

    #[test]
    fn the_grid_must_be_back_for_a_while_and_configuration_wins() {
        let mut grid = Microgrid::new(3);
        assert_eq!(grid.signal(Signal::Meter { grid_present: false }), Some(Mode::Island));
        assert_eq!(grid.signal(Signal::Meter { grid_present: true }), None);
        assert_eq!(grid.signal(Signal::Meter { grid_present: true }), None);
        assert_eq!(grid.signal(Signal::Meter { grid_present: false }), None);
        for _ in 0..2 {
            assert_eq!(grid.signal(Signal::Meter { grid_present: true }), None);
        }
        assert_eq!(grid.signal(Signal::Meter { grid_present: true }), Some(Mode::Grid));
        assert_eq!(grid.signal(Signal::Configured(true)), Some(Mode::Island));
        assert_eq!(grid.signal(Signal::Meter { grid_present: true }), None);
        assert_eq!(grid.signal(Signal::Configured(false)), Some(Mode::Grid));
    }

    proptest! {
        /// Conservation, no hoarding, essentials first, and max-min fairness.
        #[test]
        fn island_allocation_is_fair_and_conserves_energy(
            supply in 0u64..50_000,
            needs in proptest::collection::vec((0u64..5_000, 0u64..5_000), 0..30),
            rotation in 0usize..100,
        ) {
            let needs: Vec<Need> = needs.into_iter().map(|(essential_wh, other_wh)| Need { essential_wh, other_wh }).collect();
            let (shares, left) = allocate(supply, &needs, rotation);
            let total_need: u64 = needs.iter().map(|n| n.essential_wh + n.other_wh).sum();
            let given: u64 = shares.iter().map(Allocation::total_wh).sum();
            prop_assert_eq!(given + left, supply);
            prop_assert_eq!(given, supply.min(total_need));
            let essential_need: u64 = needs.iter().map(|n| n.essential_wh).sum();
            let essential_given: u64 = shares.iter().map(|a| a.essential_wh).sum();
            prop_assert_eq!(essential_given, supply.min(essential_need));
            for (share, need) in shares.iter().zip(&needs) {
                prop_assert!(share.essential_wh <= need.essential_wh && share.other_wh <= need.other_wh);
                if share.other_wh > 0 {
                    prop_assert_eq!(share.essential_wh, need.essential_wh);
                }
            }
            // Max-min: a member short of its need got at least as much as anyone else, less one Wh of rounding.
            let tiers: [(Vec<u64>, Vec<u64>); 2] = [
                (shares.iter().map(|a| a.essential_wh).collect(), needs.iter().map(|n| n.essential_wh).collect()),
                (shares.iter().map(|a| a.other_wh).collect(), needs.iter().map(|n| n.other_wh).collect()),
            ];
            for (got, need) in tiers {
                for short in 0..got.len() {
                    if got[short] < need[short] {
                        for other in &got {
                            prop_assert!(*other <= got[short] + 1);
                        }
                    }
                }
            }
        }
    }
}
