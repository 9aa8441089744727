//! Token-free barter: closed cycles of "give X of A, want Y of B" offers in which every participant receives at
//! least its asked ratio.
//!
//! Leg `i` of a cycle gives `g_i` of its resource to leg `i + 1` (the last leg gives to the first), so leg `i`
//! receives `g_{i−1}`. A leg's ratio holds when `g_{i−1} · give_quantity_i ≥ want_quantity_i · g_i` — the same
//! integer condition the ledger checks — and a leg never gives more than it has left.
//!
//! # Search
//! Offer `i` can give to offer `j` when `i` gives the resource `j` wants. Cycles are searched shortest first
//! (iterative deepening from 2 legs to `legs_max`), each from its lowest-index offer through higher-index offers
//! only (so each cycle is met once), depth first in index order, with no author twice. The first cycle whose
//! quantities are all positive is taken, the offers' quantities are reduced, and the search goes on. Everything
//! follows the order of the offers given, so callers that pass them sorted (by message id) all find the same cycles.
//! A budget of expansions bounds the work on hostile input.
//!
//! # Quantities
//! For a cycle, the largest feasible `g_0` is found by descending iteration: start from what leg 0 has left, push
//! it round the cycle with `g_i = min(left_i, ⌊g_{i−1} · give_i / want_i⌋)`, and set `g_0` to what comes back
//! (`⌊g_{k−1} · give_0 / want_0⌋`) until it no longer shrinks. The map is monotone, so the descent stops at the
//! greatest feasible `g_0`; cycles whose ratios multiply to less than 1 are refused before it starts (they are
//! feasible only at 0), and a descent longer than [`DESCENT_STEPS_MAX`] steps is given up.

/// A barter offer open for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<K, A, R> {
    pub id: K,
    pub author: A,
    pub give: R,
    pub give_quantity: u64,
    pub want: R,
    pub want_quantity: u64,
    /// How much of `give_quantity` is still unmatched.
    pub left: u64,
}

/// One leg of a found cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg<K> {
    pub offer: K,
    /// What this leg gives to the next.
    pub give_quantity: u64,
}

/// A closed cycle: leg `i` gives to leg `i + 1`, the last to the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle<K> {
    pub legs: Vec<Leg<K>>,
}

/// Steps of the quantity descent before a cycle is given up.
pub const DESCENT_STEPS_MAX: usize = 128;

/// Finds disjoint-in-quantity barter cycles of 2 to `legs_max` legs among `offers`, within `expansions_max` search
/// steps.
pub fn find_cycles<K: Clone, A: Eq, R: Eq>(
    offers: &[Offer<K, A, R>],
    legs_max: usize,
    expansions_max: usize,
) -> Vec<Cycle<K>> {
    let mut budget = expansions_max;
    find_cycles_within(offers, legs_max, &mut budget)
}

/// [`find_cycles`] with a budget shared across calls: what the search uses is taken off `budget`.
pub fn find_cycles_within<K: Clone, A: Eq, R: Eq>(
    offers: &[Offer<K, A, R>],
    legs_max: usize,
    budget: &mut usize,
) -> Vec<Cycle<K>> {
    let mut left: Vec<u64> = offers.iter().map(|o| o.left.min(o.give_quantity)).collect();
    let mut cycles = Vec::new();
    for legs in 2..=legs_max.max(2) {
        for start in 0..offers.len() {
            while left[start] > 0 {
                let mut path = vec![start];
                let Some(gives) = search(offers, &left, legs, &mut path, budget) else { break };
                for (index, give) in path.iter().zip(&gives) {
                    left[*index] -= give;
                }
                cycles.push(Cycle {
                    legs: path
                        .iter()
                        .zip(gives)
                        .map(|(index, give_quantity)| Leg { offer: offers[*index].id.clone(), give_quantity })
                        .collect(),
                });
            }
            if *budget == 0 {
                return cycles;
            }
        }
    }
    cycles
}

/// Depth-first search for a feasible cycle of exactly `legs` legs extending `path`; leaves the cycle in `path`.
fn search<K, A: Eq, R: Eq>(
    offers: &[Offer<K, A, R>],
    left: &[u64],
    legs: usize,
    path: &mut Vec<usize>,
    budget: &mut usize,
) -> Option<Vec<u64>> {
    let start = path[0];
    let last = path[path.len() - 1];
    if path.len() == legs {
        if offers[last].give != offers[start].want {
            return None;
        }
        return quantities(offers, left, path);
    }
    for next in start + 1..offers.len() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        let candidate = &offers[next];
        if left[next] == 0
            || offers[last].give != candidate.want
            || path.iter().any(|index| offers[*index].author == candidate.author)
        {
            continue;
        }
        path.push(next);
        if let Some(gives) = search(offers, left, legs, path, budget) {
            return Some(gives);
        }
        path.pop();
    }
    None
}

/// The greatest feasible gives around `cycle`, or `None` if some leg would give 0.
fn quantities<K, A, R>(offers: &[Offer<K, A, R>], left: &[u64], cycle: &[usize]) -> Option<Vec<u64>> {
    let ratio = |index: usize| (offers[index].give_quantity, offers[index].want_quantity);
    if !product_at_least(cycle.iter().map(|i| ratio(*i).0), cycle.iter().map(|i| ratio(*i).1)) {
        return None;
    }
    let pass = |quantity: u64, index: usize| {
        let (give, want) = ratio(index);
        let scaled = u128::from(quantity) * u128::from(give) / u128::from(want.max(1));
        u64::try_from(scaled).unwrap_or(u64::MAX).min(left[index])
    };
    let mut first = left[cycle[0]];
    for _ in 0..DESCENT_STEPS_MAX {
        let mut gives = Vec::with_capacity(cycle.len());
        gives.push(first);
        let mut quantity = first;
        for index in &cycle[1..] {
            quantity = pass(quantity, *index);
            gives.push(quantity);
        }
        let back = pass(quantity, cycle[0]);
        if back == 0 {
            return None;
        }
        if back >= first {
            return gives.iter().all(|give| *give > 0).then_some(gives);
        }
        first = back;
    }
    None
}

/// `Π left ≥ Π right` exactly, with products of up to 8 u64 factors in 512-bit limbs.
fn product_at_least(left: impl Iterator<Item = u64>, right: impl Iterator<Item = u64>) -> bool {
    let product = |factors: &mut dyn Iterator<Item = u64>| {
        let mut limbs = vec![1u64];
        for factor in factors {
            let mut carry = 0u128;
            for limb in &mut limbs {
                let value = u128::from(*limb) * u128::from(factor) + carry;
                *limb = value as u64; // the low 64 bits; the high bits carry on
                carry = value >> 64;
            }
            if carry > 0 {
                limbs.push(carry as u64);
            }
        }
        while limbs.len() > 1 && limbs.last() == Some(&0) {
            limbs.pop();
        }
        limbs
    };
    let (mut left, mut right) = (left, right);
    let (a, b) = (product(&mut left), product(&mut right));
    if a.len() != b.len() {
        return a.len() > b.len();
    }
    a.iter().rev().cmp(b.iter().rev()) != std::cmp::Ordering::Less
}

/// The open barter offers a node knows (signed envelopes whose body is a barter offer), searched for cycles in
/// offer-id order within each location cell. Cycles found here are held back from later searches until the ledger
/// reports their legs filled or the offers expire; at most `offers_max` offers are kept.
#[derive(Debug, Clone)]
pub struct Board {
    offers_max: usize,
    offers: std::collections::BTreeMap<protocol::Id, Open>,
}

#[derive(Debug, Clone)]
struct Open {
    envelope: std::sync::Arc<protocol::Envelope>,
    /// What is left to give after fills the ledger reported.
    left: u64,
    /// What cycles found here take, until the ledger reports them or [`crate::pools::SETTLE_WAIT_MS`] passes
    /// (a cycle the ledger refused gives it back).
    promised: u64,
    promised_until_ms: u64,
}

/// Why a barter offer was not taken onto the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a barter offer")]
    NotABarterOffer,
    #[error("the offer is already on the board")]
    Duplicate,
    #[error("the offer has expired")]
    Expired,
    #[error("the board is full")]
    Full,
    #[error("the ledger has settled all of it, or its author cancelled it")]
    Settled,
}

/// A cycle found on the board: each leg's signed offer and what it gives to the next.
pub type FoundCycle = Vec<(std::sync::Arc<protocol::Envelope>, u64)>;

impl Board {
    pub fn new(offers_max: usize) -> Board {
        Board { offers_max, offers: std::collections::BTreeMap::new() }
    }

    /// Puts a validated barter offer on the board, with what the ledger already settled of it (`filled`): only the
    /// rest is given (peers may keep an offer after it was filled, and send it with a barter pool's book).
    pub fn offer(
        &mut self,
        now_ms: u64,
        envelope: std::sync::Arc<protocol::Envelope>,
        filled: u64,
    ) -> Result<(), Refusal> {
        let protocol::Body::BarterOffer(offer) = &envelope.body else { return Err(Refusal::NotABarterOffer) };
        let id = envelope.id();
        if self.offers.contains_key(&id) {
            return Err(Refusal::Duplicate);
        }
        if envelope.expires_ms <= now_ms {
            return Err(Refusal::Expired);
        }
        if self.offers.len() >= self.offers_max {
            return Err(Refusal::Full);
        }
        let left = offer.give_quantity.saturating_sub(filled);
        if left == 0 {
            return Err(Refusal::Settled);
        }
        self.offers.insert(id, Open { envelope, left, promised: 0, promised_until_ms: 0 });
        Ok(())
    }

    /// Takes every open barter offer of `author` off the board (an override froze its trading).
    pub fn withdraw(&mut self, author: &protocol::PublicKey) {
        self.offers.retain(|_, open| open.envelope.author != *author);
    }

    /// Takes an offer off the board if `author` is its author (a cancel).
    pub fn cancel(&mut self, id: &protocol::Id, author: &protocol::PublicKey) {
        if self.offers.get(id).is_some_and(|open| open.envelope.author == *author) {
            self.offers.remove(id);
        }
    }

    /// Drops the offers of a cell's barter pool (the node left it).
    pub fn forget(&mut self, cell: &protocol::types::Cell) {
        self.offers.retain(
            |_, open| !matches!(&open.envelope.body, protocol::Body::BarterOffer(offer) if offer.cell == *cell),
        );
    }

    /// The cells `author` has open offers in.
    pub fn cells_of(&self, author: &protocol::PublicKey) -> std::collections::BTreeSet<protocol::types::Cell> {
        self.offers
            .values()
            .filter(|open| open.envelope.author == *author)
            .filter_map(|open| match &open.envelope.body {
                protocol::Body::BarterOffer(offer) => Some(offer.cell.clone()),
                _ => None,
            })
            .collect()
    }

    /// What `author` gives in its open offers on the board other than `except`: (resource, quantity left).
    pub fn open_of(
        &self,
        author: &protocol::PublicKey,
        except: &protocol::Id,
    ) -> Vec<(protocol::message::Resource, u64)> {
        self.offers
            .iter()
            .filter(|(id, open)| open.envelope.author == *author && *id != except)
            .map(|(_, open)| open)
            .filter_map(|open| match &open.envelope.body {
                protocol::Body::BarterOffer(offer) => Some((offer.give, open.left)),
                _ => None,
            })
            .collect()
    }

    /// The cells with offers on the board.
    pub fn cells(&self) -> std::collections::BTreeSet<protocol::types::Cell> {
        self.offers
            .values()
            .filter_map(|open| match &open.envelope.body {
                protocol::Body::BarterOffer(offer) => Some(offer.cell.clone()),
                _ => None,
            })
            .collect()
    }

    /// The ledger settled a leg giving `quantity` of an offer.
    pub fn filled(&mut self, id: &protocol::Id, quantity: u64) {
        if let Some(open) = self.offers.get_mut(id) {
            open.left = open.left.saturating_sub(quantity);
            open.promised = open.promised.saturating_sub(quantity);
            if open.left == 0 {
                self.offers.remove(id);
            }
        }
    }

    /// A cycle found here will not be settled (the mempool refused it): what it took of each leg's offer comes back
    /// at once (`legs`: each offer's id and what the cycle gave of it).
    pub fn unpromise(&mut self, legs: &[(protocol::Id, u64)]) {
        for (id, quantity) in legs {
            if let Some(open) = self.offers.get_mut(id) {
                open.promised = open.promised.saturating_sub(*quantity);
            }
        }
    }

    /// Offers on the board.
    pub fn len(&self) -> usize {
        self.offers.len()
    }

    /// No offers on the board.
    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    /// Drops expired offers and those whose energy's interval is over, gives back what cycles the ledger did not
    /// report within [`crate::pools::SETTLE_WAIT_MS`] promised, then finds cycles of 2 to `legs_max` legs per cell
    /// within `expansions_max` steps in all. The quantities found are promised until the ledger reports them.
    pub fn search(&mut self, now_ms: u64, legs_max: usize, expansions_max: usize) -> Vec<FoundCycle> {
        self.offers.retain(|_, open| {
            let energy = protocol::message::Resource::Energy;
            let delivery_over = match &open.envelope.body {
                protocol::Body::BarterOffer(offer) if offer.give == energy || offer.want == energy => {
                    let end_s = offer.delivery_start_s.saturating_add(protocol::message::BARTER_ENERGY_INTERVAL_S);
                    end_s.saturating_mul(1000) <= now_ms
                }
                _ => false,
            };
            open.envelope.expires_ms > now_ms && !delivery_over
        });
        for open in self.offers.values_mut() {
            if open.promised > 0 && now_ms >= open.promised_until_ms {
                open.promised = 0;
            }
        }
        let mut cells: std::collections::BTreeMap<&str, Vec<(protocol::Id, &Open)>> = std::collections::BTreeMap::new();
        for (id, open) in &self.offers {
            if let protocol::Body::BarterOffer(offer) = &open.envelope.body {
                cells.entry(offer.cell.as_str()).or_default().push((*id, open));
            }
        }
        let mut found = Vec::new();
        let mut budget = expansions_max;
        for offers in cells.values() {
            // Energy is what is delivered in one interval: energy of another interval is another good.
            let good = |resource, delivery_start_s| match resource {
                protocol::message::Resource::Energy => (resource, delivery_start_s),
                _ => (resource, 0),
            };
            let candidates: Vec<Offer<protocol::Id, protocol::PublicKey, _>> = offers
                .iter()
                .filter_map(|(id, open)| {
                    let protocol::Body::BarterOffer(offer) = &open.envelope.body else { return None };
                    Some(Offer {
                        id: *id,
                        author: open.envelope.author,
                        give: good(offer.give, offer.delivery_start_s),
                        give_quantity: offer.give_quantity,
                        want: good(offer.want, offer.delivery_start_s),
                        want_quantity: offer.want_quantity,
                        left: open.left.saturating_sub(open.promised),
                    })
                })
                .collect();
            let cycles = find_cycles_within(&candidates, legs_max, &mut budget);
            for cycle in cycles {
                let legs: FoundCycle = cycle
                    .legs
                    .iter()
                    .filter_map(|leg| {
                        Some((offers.iter().find(|(id, _)| *id == leg.offer)?.1.envelope.clone(), leg.give_quantity))
                    })
                    .collect();
                found.push((cycle, legs));
            }
        }
        let mut cycles = Vec::with_capacity(found.len());
        for (cycle, legs) in found {
            for leg in &cycle.legs {
                if let Some(open) = self.offers.get_mut(&leg.offer) {
                    open.promised = open.promised.saturating_add(leg.give_quantity);
                    open.promised_until_ms = now_ms.saturating_add(crate::pools::SETTLE_WAIT_MS);
                }
            }
            cycles.push(legs);
        }
        cycles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(id: u32, author: u8, give: u8, give_quantity: u64, want: u8, want_quantity: u64) -> Offer<u32, u8, u8> {
        Offer { id, author, give, give_quantity, want, want_quantity, left: give_quantity }
    }

    #[test]
    fn a_three_party_cycle_is_found() {
        // Energy (0) → compute (1) → bandwidth (2) → energy.
        let offers = [
            offer(1, 1, 0, 1_000, 2, 100), // gives 1000 energy, wants 100 bandwidth
            offer(2, 2, 1, 50, 0, 1_000),  // gives 50 compute, wants 1000 energy
            offer(3, 3, 2, 100, 1, 50),    // gives 100 bandwidth, wants 50 compute
        ];
        let cycles = find_cycles(&offers, 8, 10_000);
        assert_eq!(cycles.len(), 1);
        let legs: Vec<(u32, u64)> = cycles[0].legs.iter().map(|l| (l.offer, l.give_quantity)).collect();
        assert_eq!(legs, vec![(1, 1_000), (2, 50), (3, 100)]);
    }

    #[test]
    fn greedy_ratios_do_not_close() {
        // Each wants more than the previous gives: the ratios multiply to less than 1.
        let offers = [offer(1, 1, 0, 100, 1, 101), offer(2, 2, 1, 100, 0, 100)];
        assert!(find_cycles(&offers, 8, 10_000).is_empty());
        // The same author on both sides is never matched with itself.
        let own = [offer(1, 1, 0, 100, 1, 100), offer(2, 1, 1, 100, 0, 100)];
        assert!(find_cycles(&own, 8, 10_000).is_empty());
    }

    #[test]
    fn the_largest_exchange_is_taken() {
        // Leg 2 would take 50 energy for 100 compute; leg 1 gives up to 100 energy at 1:1. The cycle trades the
        // most leg 0 can give (100), which leaves leg 2 above its ratio.
        let offers = [offer(1, 1, 0, 100, 1, 100), offer(2, 2, 1, 100, 0, 50)];
        let cycles = find_cycles(&offers, 2, 100);
        let legs: Vec<(u32, u64)> = cycles[0].legs.iter().map(|l| (l.offer, l.give_quantity)).collect();
        assert_eq!(legs, vec![(1, 100), (2, 100)]);
    }

    #[test]
    fn products_compare_exactly() {
        assert!(product_at_least([u64::MAX; 8].into_iter(), [u64::MAX; 8].into_iter()));
        assert!(!product_at_least([u64::MAX - 1, u64::MAX].into_iter(), [u64::MAX, u64::MAX].into_iter()));
        assert!(product_at_least([3, 4].into_iter(), [2, 6].into_iter()));
        assert!(!product_at_least([3, 4].into_iter(), [13].into_iter()));
    }

    #[test]
    fn the_board_finds_cycles_per_cell_and_holds_them_back() {
        use protocol::message::{BarterOffer, Resource};
        use protocol::types::Cell;
        use protocol::{Body, Draft, Keypair, NetworkId};
        let sign_until = |key: u8, give: Resource, want: Resource, cell: &str, delivery_start_s: u64, expires_ms| {
            let body = Body::BarterOffer(BarterOffer {
                give,
                give_quantity: 100,
                want,
                want_quantity: 100,
                cell: Cell::new(cell).unwrap(),
                delivery_start_s,
            });
            let draft = Draft {
                network: NetworkId::new("kos-test").unwrap(),
                nonce: u64::from(key),
                created_ms: 1_000,
                expires_ms,
                body,
            };
            std::sync::Arc::new(draft.sign(&Keypair::from_seed(&[key; 32])))
        };
        let sign_at = |key: u8, give: Resource, want: Resource, cell: &str, delivery_start_s: u64| {
            sign_until(key, give, want, cell, delivery_start_s, 100_000)
        };
        let sign = |key: u8, give: Resource, want: Resource, cell: &str| sign_at(key, give, want, cell, 900);
        // Energy of one interval is not energy of another: no cycle between them.
        let mut intervals = Board::new(3);
        intervals.offer(1_000, sign_at(1, Resource::Energy, Resource::Compute, "u33", 900), 0).unwrap();
        intervals.offer(1_000, sign_at(2, Resource::Compute, Resource::Energy, "u33", 1_800), 0).unwrap();
        assert!(intervals.search(2_000, 8, 10_000).is_empty());
        intervals.offer(1_000, sign_at(3, Resource::Compute, Resource::Energy, "u33", 900), 0).unwrap();
        assert_eq!(intervals.search(2_000, 8, 10_000).len(), 1);
        let mut board = Board::new(3);
        board.offer(1_000, sign(1, Resource::Energy, Resource::Compute, "u33"), 0).unwrap();
        board.offer(1_000, sign(2, Resource::Compute, Resource::Energy, "u33"), 0).unwrap();
        // The same exchange in another cell does not close a cycle with the first two.
        board.offer(1_000, sign(3, Resource::Compute, Resource::Energy, "sp3"), 0).unwrap();
        assert_eq!(board.offer(1_000, sign(4, Resource::Energy, Resource::Memory, "u33"), 0), Err(Refusal::Full));
        // An offer the ledger filled in part gives only the rest; one it filled (or saw cancelled) is refused.
        let mut spent = Board::new(3);
        assert_eq!(spent.offer(1_000, sign(5, Resource::Energy, Resource::Compute, "u33"), 100), Err(Refusal::Settled));
        spent.offer(1_000, sign(5, Resource::Energy, Resource::Compute, "u33"), 60).unwrap();
        spent.offer(1_000, sign(6, Resource::Compute, Resource::Energy, "u33"), 0).unwrap();
        let cycles = spent.search(2_000, 8, 10_000);
        assert_eq!(
            cycles.iter().map(|cycle| cycle.iter().map(|(_, give)| *give).collect()).collect::<Vec<Vec<u64>>>(),
            vec![vec![40, 40]]
        );
        // A cancel by its author takes an offer off (by anyone else, nothing); a left barter pool takes its cell's.
        let (one, two) = (Keypair::from_seed(&[1; 32]).public(), Keypair::from_seed(&[2; 32]).public());
        let mut cancelled = board.clone();
        let first = sign(1, Resource::Energy, Resource::Compute, "u33").id();
        cancelled.cancel(&first, &two);
        assert_eq!(cancelled.len(), 3);
        cancelled.cancel(&first, &one);
        assert_eq!(cancelled.len(), 2);
        assert!(cancelled.cells_of(&one).is_empty() && cancelled.cells_of(&two).len() == 1);
        let mut left = board.clone();
        left.forget(&Cell::new("u33").unwrap());
        assert_eq!((left.len(), left.cells().into_iter().collect::<Vec<_>>()), (1, vec![Cell::new("sp3").unwrap()]));
        // A frozen account's offers leave the board: no cycle with it, and room for others.
        let mut frozen = board.clone();
        frozen.withdraw(&Keypair::from_seed(&[2; 32]).public());
        assert_eq!(frozen.len(), 2);
        assert!(frozen.search(2_000, 8, 10_000).is_empty());
        let cycles = board.search(2_000, 8, 10_000);
        assert_eq!(cycles.len(), 1);
        let mut authors: Vec<u8> = cycles[0]
            .iter()
            .map(|(envelope, give)| {
                assert_eq!(*give, 100);
                if envelope.author == Keypair::from_seed(&[1; 32]).public() { 1 } else { 2 }
            })
            .collect();
        authors.sort_unstable();
        assert_eq!(authors, vec![1, 2]);
        assert!(board.search(2_000, 8, 10_000).is_empty(), "promised quantities are held back");
        // A cycle the mempool refused gives its promises back at once.
        let mut unsent = board.clone();
        let legs: Vec<(protocol::Id, u64)> = cycles[0].iter().map(|(envelope, give)| (envelope.id(), *give)).collect();
        unsent.unpromise(&legs);
        assert_eq!(unsent.search(3_000, 8, 10_000).len(), 1);
        // A cycle the ledger never reported (it refused it) gives its promises back after the settle wait.
        let mut refused = board.clone();
        let wait = crate::pools::SETTLE_WAIT_MS;
        assert!(refused.search(2_000 + wait - 1, 8, 10_000).is_empty());
        assert_eq!(refused.search(2_000 + wait, 8, 10_000).len(), 1);
        // Energy of an interval that is over leaves the board, however long the offer lives.
        let mut late = Board::new(3);
        late.offer(1_000, sign_until(7, Resource::Energy, Resource::Compute, "u33", 900, 10_000_000), 0).unwrap();
        late.offer(1_000, sign_until(8, Resource::Memory, Resource::Compute, "u33", 0, 10_000_000), 0).unwrap();
        assert!(late.search(1_799_999, 8, 10_000).is_empty());
        assert_eq!(late.len(), 2);
        late.search(1_800_000, 8, 10_000);
        assert_eq!(late.len(), 1, "the memory offer stays");
        for (envelope, give) in &cycles[0] {
            board.filled(&envelope.id(), *give);
        }
        assert_eq!(board.len(), 1);
        assert!(board.search(200_000, 8, 10_000).is_empty());
        assert!(board.is_empty(), "expired offers leave the board");
    }

    proptest! {
        #[test]
        fn cycles_respect_every_ratio_and_quantity(
            raw in prop::collection::vec((0u8..5, 0u8..3, 1u64..60, 0u8..3, 1u64..60), 2..12),
            legs_max in 2usize..5,
        ) {
            let offers: Vec<Offer<u32, u8, u8>> = raw
                .iter()
                .filter(|r| r.1 != r.3)
                .enumerate()
                .map(|(i, r)| offer(i as u32, r.0, r.1, r.2, r.3, r.4))
                .collect();
            let cycles = find_cycles(&offers, legs_max, 100_000);
            prop_assert_eq!(&cycles, &find_cycles(&offers, legs_max, 100_000), "deterministic");
            let mut given = std::collections::HashMap::new();
            for cycle in &cycles {
                let k = cycle.legs.len();
                prop_assert!((2..=legs_max).contains(&k));
                let legs: Vec<&Offer<u32, u8, u8>> = cycle.legs.iter().map(|l| &offers[l.offer as usize]).collect();
                let mut authors: Vec<u8> = legs.iter().map(|o| o.author).collect();
                authors.sort_unstable();
                authors.dedup();
                prop_assert_eq!(authors.len(), k, "an author twice");
                for i in 0..k {
                    let previous = (i + k - 1) % k;
                    prop_assert!(legs[previous].give == legs[i].want);
                    let received = u128::from(cycle.legs[previous].give_quantity) * u128::from(legs[i].give_quantity);
                    let asked = u128::from(legs[i].want_quantity) * u128::from(cycle.legs[i].give_quantity);
                    prop_assert!(received >= asked, "ratio violated");
                    prop_assert!(cycle.legs[i].give_quantity > 0);
                    *given.entry(cycle.legs[i].offer).or_insert(0u64) += cycle.legs[i].give_quantity;
                }
            }
            for (id, total) in given {
                prop_assert!(total <= offers[id as usize].give_quantity);
            }
        }
    }
}
