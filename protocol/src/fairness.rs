//! Max-min fair shares of a scarce supply (progressive filling): everyone gets an equal share, capped by what they
//! need; what a member does not need is shared again among the rest; the last units that do not divide evenly go
//! one each in an order that rotates. Essential needs are served before the rest.
//!
//! One allocator for every place that shares a scarce resource: an essential pool's interval auction (the market,
//! and the ledger that re-executes its settlements) and a microgrid in island mode (energy). Pure integer
//! arithmetic, so that every node computes the same shares.

/// Max-min fair shares of `supply` for `needs`, the last units that do not divide evenly going one each starting
/// at index `rotation % len` (so nobody is always first). Returns the shares and what is left over.
#[must_use]
pub fn fair_shares(supply: u64, needs: &[u64], rotation: usize) -> (Vec<u64>, u64) {
    let mut shares = vec![0u64; needs.len()];
    let mut left = supply;
    let mut open: Vec<usize> = (0..needs.len()).filter(|&member| needs[member] > 0).collect();
    while left > 0 && !open.is_empty() {
        let count = open.len() as u64;
        let equal = left / count;
        if equal == 0 {
            let start = rotation % needs.len();
            open.sort_by_key(|&member| (member + needs.len() - start) % needs.len());
            for &member in open.iter().take(usize::try_from(left).unwrap_or(usize::MAX)) {
                shares[member] += 1;
            }
            left = 0;
            break;
        }
        let mut still_open = Vec::with_capacity(open.len());
        for &member in &open {
            let given = (needs[member] - shares[member]).min(equal);
            shares[member] += given;
            left -= given;
            if shares[member] < needs[member] {
                still_open.push(member);
            }
        }
        open = still_open;
    }
    (shares, left)
}

/// One account's claim on a scarce resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Claim {
    /// What must be met first (medical devices, water for drinking, a shelter bed).
    pub essential: u64,
    /// The rest of what it asks for.
    pub other: u64,
}

/// Shares `supply`: each claim first trimmed to `cap` (0: no cap; the other part goes first), then essential
/// claims by max-min fairness, then the rest. Returns (essential, other) per claim and the supply left over.
#[must_use]
pub fn allocate(supply: u64, claims: &[Claim], cap: u64, rotation: usize) -> (Vec<(u64, u64)>, u64) {
    let trimmed: Vec<Claim> = claims
        .iter()
        .map(|claim| {
            if cap == 0 {
                return *claim;
            }
            let essential = claim.essential.min(cap);
            Claim { essential, other: claim.other.min(cap - essential) }
        })
        .collect();
    let essential: Vec<u64> = trimmed.iter().map(|claim| claim.essential).collect();
    let (essential_shares, left) = fair_shares(supply, &essential, rotation);
    let other: Vec<u64> = trimmed.iter().map(|claim| claim.other).collect();
    let (other_shares, left) = fair_shares(left, &other, rotation);
    (essential_shares.into_iter().zip(other_shares).collect(), left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remainders_rotate() {
        assert_eq!(fair_shares(2, &[10, 10, 10], 0).0, vec![1, 1, 0]);
        assert_eq!(fair_shares(2, &[10, 10, 10], 1).0, vec![0, 1, 1]);
        assert_eq!(fair_shares(2, &[10, 10, 10], 2).0, vec![1, 0, 1]);
    }

    proptest! {
        /// Never more than the supply, never more than a claim (nor the cap), equal claims get equal shares (up to
        /// one unit of rounding), and essentials are met before anything else.
        #[test]
        fn allocation_is_bounded_and_fair(
            supply in 0u64..20_000,
            claims in proptest::collection::vec((0u64..2_000, 0u64..2_000), 0..25),
            cap in 0u64..3_000,
            rotation in 0usize..50,
        ) {
            let claims: Vec<Claim> = claims.into_iter().map(|(essential, other)| Claim { essential, other }).collect();
            let (shares, left) = allocate(supply, &claims, cap, rotation);
            let given: u64 = shares.iter().map(|(e, o)| e + o).sum();
            prop_assert_eq!(given + left, supply);
            for ((essential, other), claim) in shares.iter().zip(&claims) {
                prop_assert!(*essential <= claim.essential && *other <= claim.other);
                if cap > 0 {
                    prop_assert!(essential + other <= cap);
                }
            }
            let essential_given: u64 = shares.iter().map(|(e, _)| e).sum();
            let essential_claimed: u64 = claims.iter().map(|c| if cap > 0 { c.essential.min(cap) } else { c.essential }).sum();
            prop_assert_eq!(essential_given, supply.min(essential_claimed));
            for (a, claim_a) in claims.iter().enumerate() {
                for (b, claim_b) in claims.iter().enumerate() {
                    if claim_a == claim_b {
                        let (total_a, total_b) = (shares[a].0 + shares[a].1, shares[b].0 + shares[b].1);
                        prop_assert!(total_a.abs_diff(total_b) <= 2, "{:?} {:?}", shares[a], shares[b]);
                    }
                }
            }
        }

    }
}
