//! Who explains a feeder gap (PROTOCOL.md §10, *cells*, step 1): a weighted least-squares fit of a cell's gaps,
//! over a window of its intervals, on each member's registers and on the street's line losses.
//!
//! A lie scales one register of one meter, so the gaps it leaves move with that register; line losses move with
//! the street's gross flows. Every roof's export follows the same sun, so one member's export alone barely tells
//! the liar from a larger honest exporter; what does is the fit with the losses taken out, with each interval
//! weighed by its own tolerance (meters err by a share of what they measure, so a quiet morning's gap says more
//! per watt-hour than a sunny noon's). The arithmetic is exact: integers of any size, so that any implementation
//! ranks the members alike.
//!
//! Sans-IO: the ledger feeds it the window's intervals; it reads nothing.

use std::collections::BTreeMap;

use num_bigint::BigInt;
use protocol::PublicKey;

use super::Id;

/// Parts per million: the unit the fit measures an interval's flows in, of its tolerance.
const PPM: i128 = 1_000_000;

/// One member's registers in one interval of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFlows {
    pub import_wh: u64,
    pub export_wh: u64,
}

impl MemberFlows {
    /// The registers a lie can scale, in the order the fit tries them: export, then import.
    fn registers(self) -> [u64; 2] {
        [self.export_wh, self.import_wh]
    }
}

/// The sums of one register of one member over the window: `Σ x²`, `Σ x·g`, `Σ x·z`.
#[derive(Debug, Clone, Default)]
struct RegisterSums {
    xx: BigInt,
    xg: BigInt,
    xz: BigInt,
}

/// The fit over a window of a cell's intervals.
#[derive(Debug, Clone, Default)]
pub struct GapFit {
    /// `Σ g·z`, `Σ z²`: the gaps against the gross flows.
    gz: BigInt,
    zz: BigInt,
    /// Per member asset, per register (export, import).
    members: BTreeMap<Id, [RegisterSums; 2]>,
}

/// `value × 10⁶ / tolerance`, rounded toward zero (a tolerance of 0 counts as 1).
fn scaled(value: i128, tolerance: u64) -> BigInt {
    BigInt::from(value.saturating_mul(PPM) / i128::from(tolerance.max(1)))
}

/// A member the fit suspects, with what ranks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub asset: Id,
    pub author: PublicKey,
    /// 1 when a device attested every reading of the member in this interval: suspected after every other.
    pub attested: u8,
    /// `⌊A² / B⌋`: how much of the gaps (beyond the losses) its register explains.
    pub score: BigInt,
    /// Which register: 0 export, 1 import.
    pub register: u8,
    /// The register now, Wh.
    pub now_wh: u64,
    /// Its share of this interval's gap, Wh: the fitted coefficient times the register now.
    pub share_wh: u128,
}

impl GapFit {
    /// Adds one interval of the window: its gap (`(Me − Mi) − (Fe − Fi)`), its tolerance, and its members' flows.
    pub fn add(&mut self, gap: i128, tolerance: u64, members: impl IntoIterator<Item = (Id, MemberFlows)>) {
        let members: Vec<(Id, MemberFlows)> = members.into_iter().collect();
        let gross = members
            .iter()
            .map(|(_, flows)| i128::from(flows.import_wh) + i128::from(flows.export_wh))
            .fold(0i128, i128::saturating_add);
        let g = scaled(gap, tolerance);
        let z = scaled(gross, tolerance);
        self.gz += &g * &z;
        self.zz += &z * &z;
        for (asset, flows) in members {
            let sums = self.members.entry(asset).or_default();
            for (sum, register) in sums.iter_mut().zip(flows.registers()) {
                let x = scaled(i128::from(register), tolerance);
                sum.xx += &x * &x;
                sum.xg += &x * &g;
                sum.xz += &x * &z;
            }
        }
    }

    /// A member of this interval as a suspect of its gap, by its register that explains the gaps best: one that
    /// moved with the gaps in this gap's direction (`A` of `gap`'s sign) and is not 0 now. None when no register
    /// does.
    pub fn suspect(&self, asset: Id, author: PublicKey, attested: u8, now: MemberFlows, gap: i128) -> Option<Suspect> {
        let sums = self.members.get(&asset)?;
        let mut best: Option<Suspect> = None;
        for (register, (sum, now_wh)) in (0u8..).zip(sums.iter().zip(now.registers())) {
            // With the losses taken out: A = Σxg·Σzz − Σxz·Σgz, B = Σxx·Σzz − (Σxz)². B is 0 when the register
            // moved exactly with the gross flows over the window (a lone member, a window of one interval): then
            // the losses cannot be told from it, and the fit is on the register alone.
            let mut a = &sum.xg * &self.zz - &sum.xz * &self.gz;
            let mut b = &sum.xx * &self.zz - &sum.xz * &sum.xz;
            if b == BigInt::ZERO {
                a = sum.xg.clone();
                b = sum.xx.clone();
            }
            let same_sign = (a > BigInt::ZERO && gap > 0) || (a < BigInt::ZERO && gap < 0);
            if b <= BigInt::ZERO || now_wh == 0 || !same_sign {
                continue;
            }
            let score = &a * &a / &b;
            // Rounded toward zero, as BigInt's division is.
            let share = (&a * BigInt::from(now_wh) / &b).magnitude().clone();
            let share_wh = u128::try_from(share).unwrap_or(u128::MAX);
            if best.as_ref().is_none_or(|best| score > best.score) {
                best = Some(Suspect { asset, author, attested, score, register, now_wh, share_wh });
            }
        }
        best
    }
}

/// The named of an unbalanced interval: the suspects ordered (members not attested first, then score descending,
/// then export before import, then the register now descending, then asset id ascending), taken while their shares
/// sum to less than the gap's excess over its tolerance and fewer than `named_max` accounts are named; each author
/// once.
pub fn named(mut suspects: Vec<Suspect>, excess_wh: u128, named_max: usize) -> Vec<PublicKey> {
    suspects.sort_by(|a, b| {
        a.attested
            .cmp(&b.attested)
            .then_with(|| b.score.cmp(&a.score))
            .then(a.register.cmp(&b.register))
            .then(b.now_wh.cmp(&a.now_wh))
            .then(a.asset.cmp(&b.asset))
    });
    let mut named: Vec<PublicKey> = Vec::new();
    let mut covered = 0u128;
    for suspect in suspects {
        if covered >= excess_wh || named.len() >= named_max {
            break;
        }
        covered = covered.saturating_add(suspect.share_wh);
        if !named.contains(&suspect.author) {
            named.push(suspect.author);
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> Id {
        Id([byte; 32])
    }

    fn key(byte: u8) -> PublicKey {
        protocol::Keypair::from_seed(&[byte; 32]).public()
    }

    /// Two exporters under one sky whose exports follow the same sun, with different loads; the cables lose 1 %
    /// of the gross flows, and the smaller exporter claims a fifth more than it sent. The larger one's export is
    /// larger and just as sun-shaped; the fit names the liar, and only it. (A street of eight homes over days, where
    /// a fit without the losses and the weights names the wrong home, is the ledger's test
    /// `a_home_over_reporting_by_a_fifth_is_caught_and_named_first_among_node_signed_neighbours`.)
    #[test]
    fn the_liar_explains_the_gaps_not_the_larger_exporter() {
        let sun = [0u64, 50, 200, 600, 900, 1000, 950, 700, 300, 80, 0, 820];
        let big_load = [300u64, 280, 350, 250, 200, 400, 220, 300, 500, 450, 380, 320];
        let liar_load = [200u64, 260, 120, 380, 150, 160, 330, 170, 140, 300, 250, 210];
        let mut fit = GapFit::default();
        let mut judged = (0i128, 0u64, [MemberFlows { import_wh: 0, export_wh: 0 }; 2]);
        for t in 0..sun.len() {
            let flows = |kwp: u64, load: u64| {
                let pv = sun[t] * kwp / 5;
                MemberFlows { import_wh: load.saturating_sub(pv), export_wh: pv.saturating_sub(load) }
            };
            let big = flows(12, big_load[t]);
            let honest = flows(8, liar_load[t]);
            let claimed = MemberFlows { export_wh: honest.export_wh * 6 / 5, ..honest };
            let lie = claimed.export_wh - honest.export_wh;
            let gross = big.import_wh + big.export_wh + claimed.import_wh + claimed.export_wh;
            let gap = i128::from(lie + (gross - lie) / 100);
            let tolerance = 50 + gross / 50;
            fit.add(gap, tolerance, [(id(1), big), (id(2), claimed)]);
            judged = (gap, tolerance, [big, claimed]);
        }
        let (gap, tolerance, [big, claimed]) = judged;
        assert!(gap.unsigned_abs() > u128::from(tolerance), "the interval judged is unbalanced");
        let suspects: Vec<Suspect> = [(id(1), big), (id(2), claimed)]
            .into_iter()
            .filter_map(|(asset, now)| fit.suspect(asset, key(asset.0[0]), 0, now, gap))
            .collect();
        assert_eq!(suspects.len(), 2, "both exported now");
        let excess = gap.unsigned_abs() - u128::from(tolerance);
        assert_eq!(named(suspects, excess, 8), vec![key(2)]);
    }

    #[test]
    fn a_window_of_one_interval_fits_the_register_alone() {
        let mut fit = GapFit::default();
        fit.add(120, 60, [(id(1), MemberFlows { import_wh: 0, export_wh: 600 })]);
        let suspect = fit.suspect(id(1), key(1), 0, MemberFlows { import_wh: 0, export_wh: 600 }, 120);
        let suspect = suspect.expect("a lone member explains its cell's gap");
        // The whole gap is its share: the fit on its export alone.
        assert_eq!(suspect.share_wh, 120);
    }

    #[test]
    fn a_register_that_is_zero_now_or_moves_against_the_gap_is_no_suspect() {
        let mut fit = GapFit::default();
        fit.add(100, 50, [(id(1), MemberFlows { import_wh: 0, export_wh: 500 })]);
        fit.add(-100, 50, [(id(1), MemberFlows { import_wh: 0, export_wh: 500 })]);
        fit.add(100, 50, [(id(1), MemberFlows { import_wh: 0, export_wh: 0 })]);
        assert_eq!(fit.suspect(id(1), key(1), 0, MemberFlows { import_wh: 0, export_wh: 0 }, 100), None);
        assert_eq!(fit.suspect(id(2), key(2), 0, MemberFlows { import_wh: 0, export_wh: 10 }, 100), None);
    }

    #[test]
    fn attested_members_come_last_and_each_author_is_named_once() {
        let suspect = |byte: u8, author: u8, attested: u8, score: i64, share_wh: u128| Suspect {
            asset: id(byte),
            author: key(author),
            attested,
            score: BigInt::from(score),
            register: 0,
            now_wh: 10,
            share_wh,
        };
        let all =
            vec![suspect(1, 1, 1, 900, 50), suspect(2, 2, 0, 10, 5), suspect(3, 2, 0, 9, 5), suspect(4, 3, 0, 8, 5)];
        assert_eq!(named(all.clone(), 12, 8), vec![key(2), key(3)]);
        assert_eq!(named(all.clone(), 100, 8), vec![key(2), key(3), key(1)]);
        assert_eq!(named(all, 100, 1), vec![key(2)]);
    }
}
