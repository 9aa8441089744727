//! The continuous double auction: a limit order book with price-time priority.
//!
//! An incoming order (the taker) trades with resting orders (makers) on the other side while the prices cross:
//! best price first, and among equal prices the earliest order first. Each fill is at the **maker's** price, so a
//! taker never pays more (or receives less) than its limit and gets any improvement. Whatever the taker has left
//! rests in the book until it is filled, cancelled or expires.
//!
//! With a grid fee ([`Fee`]) a bid is kept at its net price (the most a seller can receive from it once the fee is
//! added); a bid and an ask cross when the net bid is at least the ask. The seller receives the fill price, the
//! buyer pays it plus the fee.
//!
//! An owner's orders never trade with each other (the ledger refuses self-trades): a taker skips its owner's
//! resting orders and they keep their place.
//!
//! Bounds: at most `orders_max` resting orders, at most `owner_orders_max` per owner. An order that cannot rest
//! because of a bound trades what it can and the rest is dropped (reported in [`Placed::dropped`]).
//!
//! Cancelled and filled orders leave lazily: the queue of a price level may hold stale entries until they reach
//! its front, and a level is compacted when stale entries outnumber live ones, so every operation is amortised
//! `O(log levels)` plus the fills it makes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::ops::Bound;

pub use protocol::message::Side;

use crate::Fee;

/// An order placed in the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order<K, O> {
    pub id: K,
    pub owner: O,
    pub side: Side,
    /// Quantity in the resource's unit; more than 0.
    pub quantity: u64,
    /// Limit price per 1000 quantity units: the most a bid pays with the fee, the least an ask accepts.
    pub price: u64,
    /// When the order leaves the book, in the caller's milliseconds; after `now_ms` when placed.
    pub expires_ms: u64,
}

/// A trade between a resting order and an incoming one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill<K> {
    pub maker: K,
    pub taker: K,
    /// The side of the taker.
    pub taker_side: Side,
    pub quantity: u64,
    /// What the seller receives per 1000 units: the maker's price (a bid maker's net price).
    pub price: u64,
    /// What the buyer pays per 1000 units: `price` plus the fee.
    pub buyer_price: u64,
    /// The maker's arrival number (its place in time priority), to give a fill back at ([`Book::restore`]).
    pub maker_sequence: u64,
}

/// Why an order was refused outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("an order with this id is already in the book")]
    Duplicate,
    #[error("the order has expired")]
    Expired,
    #[error("the order's quantity is 0")]
    ZeroQuantity,
    #[error("the fee is larger than the bid")]
    BelowFee,
}

/// What happened to a placed order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "fills must be settled"]
pub struct Placed<K> {
    /// Trades made, in the order they happened.
    pub fills: Vec<Fill<K>>,
    /// Quantity left resting in the book.
    pub resting: u64,
    /// Quantity neither traded nor resting because the book or the owner was at its bound.
    pub dropped: u64,
    /// Resting orders that expired before this one was matched; they left the book.
    pub expired: Vec<K>,
    /// The order's arrival number: its place in time priority, whether it rests or not.
    pub sequence: u64,
}

/// A resting order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resting<O> {
    pub owner: O,
    pub side: Side,
    /// The price the order sits at: an ask's limit, a bid's net limit.
    pub price: u64,
    /// Quantity not yet filled.
    pub left: u64,
    /// Arrival number: the time in price-time priority.
    pub sequence: u64,
    pub expires_ms: u64,
}

#[derive(Debug)]
struct Level<K> {
    queue: VecDeque<(u64, K)>,
    live: usize,
    /// The level's total quantity: a sum of up to `orders_max` quantities of 64 bits, so 128 bits wide.
    quantity: u128,
}

impl<K> Default for Level<K> {
    fn default() -> Self {
        Level { queue: VecDeque::new(), live: 0, quantity: 0 }
    }
}

/// A limit order book for one pool.
#[derive(Debug)]
pub struct Book<K, O> {
    fee: Fee,
    /// The pool's base price: asks below it rest at it (see [`crate::pricing`]); 0: none.
    floor: u64,
    orders_max: usize,
    owner_orders_max: usize,
    bids: BTreeMap<u64, Level<K>>,
    asks: BTreeMap<u64, Level<K>>,
    orders: HashMap<K, Resting<O>, ahash::RandomState>,
    per_owner: HashMap<O, usize, ahash::RandomState>,
    /// Orders by expiry, soonest first: (expires_ms, sequence, id). Entries of orders that left the book earlier
    /// (filled, cancelled) stay until they surface or until they outnumber the live ones, when they are swept.
    expiry: BinaryHeap<Reverse<(u64, u64, K)>>,
    sequence: u64,
}

/// Stale expiry entries tolerated beyond twice the live orders before a sweep.
const EXPIRY_SLACK: usize = 1024;

impl<K: Clone + Eq + Ord + Hash, O: Clone + Eq + Hash> Book<K, O> {
    /// An empty book with a grid fee and its bounds (both at least 1).
    /// Sets the pool's grid fee (bids placed from now on are netted by it).
    pub fn set_fee(&mut self, fee: Fee) {
        self.fee = fee;
    }

    /// Sets the pool's base price (asks placed from now on rest at least at it).
    pub fn set_floor(&mut self, floor: u64) {
        self.floor = floor;
    }

    pub fn new(fee: Fee, orders_max: usize, owner_orders_max: usize) -> Self {
        Book {
            fee,
            floor: 0,
            orders_max: orders_max.max(1),
            owner_orders_max: owner_orders_max.max(1),
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            orders: HashMap::default(),
            per_owner: HashMap::default(),
            expiry: BinaryHeap::new(),
            sequence: 0,
        }
    }

    /// Matches an order against the book and rests what is left.
    pub fn place(&mut self, now_ms: u64, order: Order<K, O>) -> Result<Placed<K>, Reject> {
        let expired = self.expire(now_ms);
        if order.quantity == 0 {
            return Err(Reject::ZeroQuantity);
        }
        if order.expires_ms <= now_ms {
            return Err(Reject::Expired);
        }
        if self.orders.contains_key(&order.id) {
            return Err(Reject::Duplicate);
        }
        let price = match order.side {
            Side::Bid => self.fee.net_price(order.price).ok_or(Reject::BelowFee)?,
            Side::Ask => order.price.max(self.floor),
        };
        let mut left = order.quantity;
        let mut fills = Vec::new();
        self.take(&order, price, &mut left, &mut fills);
        self.sequence += 1;
        let sequence = self.sequence;
        let mut placed = Placed { fills, resting: 0, dropped: 0, expired, sequence };
        if left == 0 {
            return Ok(placed);
        }
        let owned = self.per_owner.get(&order.owner).copied().unwrap_or(0);
        if self.orders.len() >= self.orders_max || owned >= self.owner_orders_max {
            placed.dropped = left;
            return Ok(placed);
        }
        let level = self.side_mut(order.side).entry(price).or_default();
        level.queue.push_back((sequence, order.id.clone()));
        level.live += 1;
        level.quantity += u128::from(left);
        self.expiry.push(Reverse((order.expires_ms, sequence, order.id.clone())));
        self.sweep_expiry();
        *self.per_owner.entry(order.owner.clone()).or_insert(0) += 1;
        self.orders.insert(
            order.id,
            Resting { owner: order.owner, side: order.side, price, left, sequence, expires_ms: order.expires_ms },
        );
        placed.resting = left;
        Ok(placed)
    }

    /// Trades `taker` against the other side while prices cross.
    fn take(&mut self, taker: &Order<K, O>, price: u64, left: &mut u64, fills: &mut Vec<Fill<K>>) {
        let maker_side = match taker.side {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
        };
        let mut cursor = match maker_side {
            Side::Ask => self.asks.first_key_value().map(|(p, _)| *p),
            Side::Bid => self.bids.last_key_value().map(|(p, _)| *p),
        };
        while let Some(level_price) = cursor {
            let crosses = match taker.side {
                Side::Bid => level_price <= price,
                Side::Ask => level_price >= price,
            };
            if *left == 0 || !crosses {
                break;
            }
            self.take_level(taker, maker_side, level_price, left, fills);
            cursor = match maker_side {
                Side::Ask => self.asks.range((Bound::Excluded(level_price), Bound::Unbounded)).next(),
                Side::Bid => self.bids.range(..level_price).next_back(),
            }
            .map(|(p, _)| *p);
        }
    }

    /// Trades `taker` against one price level in time order, skipping its owner's orders.
    fn take_level(
        &mut self,
        taker: &Order<K, O>,
        maker_side: Side,
        level_price: u64,
        left: &mut u64,
        fills: &mut Vec<Fill<K>>,
    ) {
        let fee = self.fee;
        let levels = match maker_side {
            Side::Ask => &mut self.asks,
            Side::Bid => &mut self.bids,
        };
        let (orders, per_owner) = (&mut self.orders, &mut self.per_owner);
        let Some(level) = levels.get_mut(&level_price) else { return };
        let mut position = 0;
        while *left > 0 && position < level.queue.len() {
            let (sequence, id) = &level.queue[position];
            position += 1;
            let live = |maker: &&mut Resting<O>| maker.sequence == *sequence && maker.price == level_price;
            let Some(maker) = orders.get_mut(id).filter(live) else { continue };
            if maker.owner == taker.owner {
                continue;
            }
            let quantity = (*left).min(maker.left);
            *left -= quantity;
            maker.left -= quantity;
            level.quantity -= u128::from(quantity);
            fills.push(Fill {
                maker: id.clone(),
                taker: taker.id.clone(),
                taker_side: taker.side,
                quantity,
                price: level_price,
                buyer_price: fee.gross_price(level_price),
                maker_sequence: *sequence,
            });
            if maker.left == 0 {
                let owner = maker.owner.clone();
                orders.remove(id);
                release_owner(per_owner, &owner);
                level.live -= 1;
            }
        }
        tidy(levels, level_price, orders);
    }

    /// Gives `order.quantity` back to an order at its arrival number `sequence` (a fill the ledger did not settle):
    /// added to what it has left if it rests; else it first trades with what crosses it on the other side (the book
    /// never rests crossed) and rests what is left in its old place in time priority. Nothing is given back to an
    /// expired order, nor beyond the book's bounds (`None`); else the fills it made.
    pub fn restore(&mut self, now_ms: u64, order: Order<K, O>, sequence: u64) -> Option<Vec<Fill<K>>> {
        if order.quantity == 0 || order.expires_ms <= now_ms {
            return None;
        }
        if let Some(resting) = self.orders.get_mut(&order.id) {
            resting.left = resting.left.saturating_add(order.quantity);
            let (side, price) = (resting.side, resting.price);
            if let Some(level) = self.side_mut(side).get_mut(&price) {
                level.quantity += u128::from(order.quantity);
            }
            return Some(Vec::new());
        }
        let price = match order.side {
            Side::Bid => self.fee.net_price(order.price)?,
            Side::Ask => order.price.max(self.floor),
        };
        let mut left = order.quantity;
        let mut fills = Vec::new();
        self.take(&order, price, &mut left, &mut fills);
        let owned = self.per_owner.get(&order.owner).copied().unwrap_or(0);
        if left == 0 || self.orders.len() >= self.orders_max || owned >= self.owner_orders_max {
            return Some(fills);
        }
        // A book made anew (its pool emptied meanwhile) numbers later arrivals after the order given back.
        self.sequence = self.sequence.max(sequence);
        let level = self.side_mut(order.side).entry(price).or_default();
        // The queue is in arrival order; a stale entry of this very order (left lazily) is its place already.
        let place = level.queue.partition_point(|(queued, _)| *queued < sequence);
        if level.queue.get(place) != Some(&(sequence, order.id.clone())) {
            level.queue.insert(place, (sequence, order.id.clone()));
        }
        level.live += 1;
        level.quantity += u128::from(left);
        self.expiry.push(Reverse((order.expires_ms, sequence, order.id.clone())));
        *self.per_owner.entry(order.owner.clone()).or_insert(0) += 1;
        let resting =
            Resting { owner: order.owner, side: order.side, price, left, sequence, expires_ms: order.expires_ms };
        self.orders.insert(order.id, resting);
        Some(fills)
    }

    /// Removes a resting order; returns what it had left, or `None` if it is not in the book.
    pub fn cancel(&mut self, id: &K) -> Option<u64> {
        let resting = self.orders.remove(id)?;
        release_owner(&mut self.per_owner, &resting.owner);
        let levels = match resting.side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        if let Some(level) = levels.get_mut(&resting.price) {
            level.live -= 1;
            level.quantity -= u128::from(resting.left);
        }
        tidy(levels, resting.price, &self.orders);
        Some(resting.left)
    }

    /// Reduces a resting order by `quantity` traded elsewhere (a settlement seen on the ledger); removes it when
    /// nothing is left. Returns the quantity actually taken off.
    pub fn reduce(&mut self, id: &K, quantity: u64) -> u64 {
        let Some(resting) = self.orders.get_mut(id) else { return 0 };
        let taken = quantity.min(resting.left);
        if taken == resting.left {
            self.cancel(id);
            return taken;
        }
        resting.left -= taken;
        let levels = match resting.side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        if let Some(level) = levels.get_mut(&resting.price) {
            level.quantity -= u128::from(taken);
        }
        taken
    }

    /// Removes every order that expires at or before `now_ms`; returns their ids in expiry order.
    pub fn expire(&mut self, now_ms: u64) -> Vec<K> {
        let mut expired = Vec::new();
        while self.expiry.peek().is_some_and(|Reverse((expires_ms, _, _))| *expires_ms <= now_ms) {
            let Some(Reverse((_, sequence, id))) = self.expiry.pop() else { break };
            // Only the order this entry was made for: an id that left and came back has a new sequence.
            if self.orders.get(&id).is_some_and(|resting| resting.sequence == sequence) {
                self.cancel(&id);
                expired.push(id);
            }
        }
        expired
    }

    /// Drops the expiry entries of orders no longer in the book once they outnumber the live ones.
    fn sweep_expiry(&mut self) {
        if self.expiry.len() <= 2 * self.orders.len() + EXPIRY_SLACK {
            return;
        }
        let orders = &self.orders;
        self.expiry
            .retain(|Reverse((_, sequence, id))| orders.get(id).is_some_and(|resting| resting.sequence == *sequence));
    }

    /// The best `levels` price levels of a side, best first, as `(price, quantity)`; bid prices are net of the fee,
    /// and a level holding more than 2^64 − 1 units in all shows that many.
    pub fn depth(&self, side: Side, levels: usize) -> Vec<(u64, u64)> {
        let level = |(price, level): (&u64, &Level<K>)| (*price, u64::try_from(level.quantity).unwrap_or(u64::MAX));
        match side {
            Side::Bid => self.bids.iter().rev().take(levels).map(level).collect(),
            Side::Ask => self.asks.iter().take(levels).map(level).collect(),
        }
    }

    /// The best bid's net price and the best ask's price.
    pub fn best(&self) -> (Option<u64>, Option<u64>) {
        (self.bids.last_key_value().map(|(p, _)| *p), self.asks.first_key_value().map(|(p, _)| *p))
    }

    /// A resting order.
    pub fn get(&self, id: &K) -> Option<&Resting<O>> {
        self.orders.get(id)
    }

    /// Resting orders.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// No resting orders.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<u64, Level<K>> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }
}

fn release_owner<O: Eq + Hash, S: std::hash::BuildHasher>(per_owner: &mut HashMap<O, usize, S>, owner: &O) {
    if let Some(count) = per_owner.get_mut(owner) {
        *count -= 1;
        if *count == 0 {
            per_owner.remove(owner);
        }
    }
}

/// Drops stale entries at a level's front, compacts it when stale entries dominate, removes it when empty.
fn tidy<K: Eq + Hash, O, S: std::hash::BuildHasher>(
    levels: &mut BTreeMap<u64, Level<K>>,
    price: u64,
    orders: &HashMap<K, Resting<O>, S>,
) {
    let Some(level) = levels.get_mut(&price) else { return };
    if level.live == 0 {
        levels.remove(&price);
        return;
    }
    // An entry is live when its order rests with this arrival number at this price (an order given back at
    // another price, after the fee or floor changed, leaves its old entry stale).
    let is_live =
        |(sequence, id): &(u64, K)| orders.get(id).is_some_and(|o| o.sequence == *sequence && o.price == price);
    while level.queue.front().is_some_and(|entry| !is_live(entry)) {
        level.queue.pop_front();
    }
    if level.queue.len() > 2 * level.live + 8 {
        level.queue.retain(is_live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(id: u32, owner: u8, side: Side, quantity: u64, price: u64) -> Order<u32, u8> {
        Order { id, owner, side, quantity, price, expires_ms: 1_000 }
    }

    /// An order given back after its fill went unsettled rests at the price the book's fee and floor give it now;
    /// its old queue entry at another price is stale and never trades (it would take quantity off the wrong level).
    #[test]
    fn an_order_given_back_at_another_price_leaves_no_live_entry_behind() {
        let mut book: Book<u32, u8> = Book::new(Fee::None, 100, 100);
        let _ = book.place(0, order(9, 2, Side::Ask, 100, 10)).unwrap();
        let ask_sequence = book.place(0, order(1, 1, Side::Ask, 100, 10)).unwrap().sequence;
        // Owner 2's bid skips its own ask and takes order 1, whose queue entry stays behind order 9's.
        let placed = book.place(0, order(2, 2, Side::Bid, 100, 10)).unwrap();
        assert_eq!(placed.fills.iter().map(|fill| fill.maker).collect::<Vec<_>>(), vec![1]);
        book.set_floor(12);
        assert_eq!(book.restore(0, order(1, 1, Side::Ask, 100, 10), ask_sequence), Some(Vec::new()));
        assert_eq!(book.depth(Side::Ask, 5), vec![(10, 100), (12, 100)]);
        let placed = book.place(0, order(3, 3, Side::Bid, 150, 11)).unwrap();
        let fills: Vec<(u32, u64, u64)> =
            placed.fills.iter().map(|fill| (fill.maker, fill.quantity, fill.price)).collect();
        assert_eq!(fills, vec![(9, 100, 10)], "only order 9 rests at 10");
        assert_eq!(book.depth(Side::Ask, 5), vec![(12, 100)]);
        assert_eq!(book.depth(Side::Bid, 5), vec![(11, 50)]);
    }

    /// An order given back trades first with what crosses it, then rests what is left at its old place.
    #[test]
    fn an_order_given_back_trades_what_crosses_it_first() {
        let mut book: Book<u32, u8> = Book::new(Fee::None, 100, 100);
        let early = book.place(0, order(1, 1, Side::Bid, 100, 12)).unwrap().sequence;
        let placed = book.place(0, order(2, 2, Side::Ask, 100, 12)).unwrap();
        assert_eq!(placed.fills[0].maker, 1);
        let _ = book.place(0, order(3, 3, Side::Bid, 100, 12)).unwrap();
        let _ = book.place(0, order(4, 4, Side::Ask, 50, 13)).unwrap();
        let _ = book.place(0, order(5, 5, Side::Bid, 100, 10)).unwrap();
        let _ = book.place(0, order(6, 6, Side::Ask, 20, 11)).unwrap();
        // Order 6 met order 3 at 12. Order 1 comes back: nothing at or below 12 rests on the ask side, so it rests,
        // ahead of order 3 at 12.
        let fills = book.restore(0, order(1, 1, Side::Bid, 100, 12), early).unwrap();
        assert!(fills.is_empty());
        let placed = book.place(0, order(7, 7, Side::Ask, 100, 12)).unwrap();
        assert_eq!((placed.fills[0].maker, placed.fills[0].quantity), (1, 100));
        // Given back while an ask rests at 13, a bid at 14 trades with it at once and rests the rest.
        let (bid, sequence) = (order(8, 8, Side::Bid, 80, 14), 2);
        let fills = book.restore(0, bid, sequence).unwrap();
        assert_eq!(
            fills.iter().map(|fill| (fill.maker, fill.quantity, fill.price)).collect::<Vec<_>>(),
            vec![(4, 50, 13)]
        );
        assert_eq!(book.depth(Side::Ask, 5), vec![]);
        assert_eq!(book.depth(Side::Bid, 1), vec![(14, 30)]);
    }

    #[test]
    fn price_time_priority_and_maker_price() {
        let mut book = Book::new(Fee::None, 100, 100);
        assert_eq!(book.place(0, order(1, 1, Side::Ask, 100, 12_000)).unwrap().resting, 100);
        assert_eq!(book.place(0, order(2, 2, Side::Ask, 100, 10_000)).unwrap().resting, 100);
        assert_eq!(book.place(0, order(3, 3, Side::Ask, 100, 10_000)).unwrap().resting, 100);
        let placed = book.place(1, order(4, 4, Side::Bid, 250, 12_000)).unwrap();
        let fills: Vec<(u32, u64, u64)> = placed.fills.iter().map(|f| (f.maker, f.quantity, f.price)).collect();
        // Best price first (10), earliest first among equals (2 before 3), then 12.
        assert_eq!(fills, vec![(2, 100, 10_000), (3, 100, 10_000), (1, 50, 12_000)]);
        assert_eq!(placed.resting, 0);
        assert_eq!(book.get(&1).map(|r| r.left), Some(50));
        assert_eq!(book.depth(Side::Ask, 5), vec![(12_000, 50)]);
    }

    #[test]
    fn an_order_placed_again_after_a_cancel_keeps_its_own_expiry() {
        let mut book = Book::new(Fee::None, 100, 100);
        let _ = book.place(0, order(1, 1, Side::Ask, 100, 10_000)).unwrap();
        assert_eq!(book.cancel(&1), Some(100));
        let again = Order { expires_ms: 5_000, ..order(1, 1, Side::Ask, 60, 10_000) };
        assert_eq!(book.place(10, again).unwrap().resting, 60);
        // The first placement's expiry (1,000) passes: the order placed again stays.
        assert!(book.expire(1_500).is_empty());
        assert_eq!(book.get(&1).map(|resting| resting.left), Some(60));
        assert_eq!(book.expire(5_000), vec![1]);
        assert!(book.is_empty());
    }

    #[test]
    fn many_cancels_do_not_grow_the_expiry_index_without_bound() {
        let mut book = Book::new(Fee::None, 10, 10);
        for id in 0..100_000u32 {
            let _ = book.place(0, Order { expires_ms: u64::MAX, ..order(id, 1, Side::Bid, 1, 10_000) }).unwrap();
            book.cancel(&id);
        }
        assert!(book.expiry.len() <= EXPIRY_SLACK + 1, "{}", book.expiry.len());
    }

    #[test]
    fn partial_fill_rests_the_remainder_and_cancel_removes_it() {
        let mut book = Book::new(Fee::None, 100, 100);
        let _ = book.place(0, order(1, 1, Side::Ask, 100, 10_000)).unwrap();
        let placed = book.place(0, order(2, 2, Side::Bid, 300, 11_000)).unwrap();
        assert_eq!((placed.fills.len(), placed.resting), (1, 200));
        assert_eq!(book.best(), (Some(11_000), None));
        assert_eq!(book.cancel(&2), Some(200));
        assert_eq!(book.cancel(&2), None);
        assert!(book.is_empty());
        assert_eq!(book.best(), (None, None));
    }

    #[test]
    fn own_orders_are_skipped_and_keep_their_place() {
        let mut book = Book::new(Fee::None, 100, 100);
        let _ = book.place(0, order(1, 7, Side::Ask, 100, 10_000)).unwrap();
        let _ = book.place(0, order(2, 8, Side::Ask, 100, 10_000)).unwrap();
        let placed = book.place(0, order(3, 7, Side::Bid, 100, 10_000)).unwrap();
        assert_eq!(placed.fills.iter().map(|f| f.maker).collect::<Vec<_>>(), vec![2]);
        assert_eq!(book.get(&1).map(|r| r.left), Some(100));
    }

    /// Issue 25, defect 8 (the book's share of it): a price level's total of two orders of 2^64 − 1 wrapped (a panic
    /// in debug builds). Levels add in 128 bits; depth shows at most 2^64 − 1.
    #[test]
    fn extreme_quantities_at_one_price_neither_wrap_nor_panic() {
        let mut book = Book::new(Fee::None, 10, 10);
        let _ = book.place(0, order(1, 1, Side::Ask, u64::MAX, 10_000)).unwrap();
        let _ = book.place(0, order(2, 2, Side::Ask, u64::MAX, 10_000)).unwrap();
        assert_eq!(book.depth(Side::Ask, 1), vec![(10_000, u64::MAX)]);
        let placed = book.place(0, order(3, 3, Side::Bid, u64::MAX, 10_000)).unwrap();
        assert_eq!(placed.fills.iter().map(|fill| fill.quantity).sum::<u64>(), u64::MAX);
        assert_eq!(book.depth(Side::Ask, 1), vec![(10_000, u64::MAX)]);
        let placed = book.place(0, order(4, 4, Side::Bid, 5, 10_000)).unwrap();
        assert_eq!(placed.fills.len(), 1);
        assert_eq!(book.depth(Side::Ask, 1), vec![(10_000, u64::MAX - 5)]);
    }

    #[test]
    fn expired_orders_leave_and_bounds_hold() {
        let mut book = Book::new(Fee::None, 2, 1);
        let _ = book.place(0, Order { expires_ms: 50, ..order(1, 1, Side::Ask, 100, 10_000) }).unwrap();
        assert_eq!(book.place(0, order(2, 1, Side::Ask, 100, 10_000)).unwrap().dropped, 100, "owner bound");
        let _ = book.place(0, order(3, 2, Side::Ask, 100, 10_000)).unwrap();
        assert_eq!(book.place(0, order(4, 3, Side::Ask, 100, 10_000)).unwrap().dropped, 100, "book bound");
        let placed = book.place(60, order(5, 4, Side::Bid, 100, 10_000)).unwrap();
        assert_eq!(placed.expired, vec![1]);
        assert_eq!(placed.fills[0].maker, 3);
        assert_eq!(book.place(60, order(6, 4, Side::Bid, 100, 10_000)).map(|p| p.resting), Ok(100));
        assert_eq!(book.place(60, order(6, 4, Side::Bid, 100, 10_000)), Err(Reject::Duplicate));
        assert_eq!(book.place(2_000, order(7, 4, Side::Bid, 100, 10_000)), Err(Reject::Expired));
    }

    #[test]
    fn fees_sit_between_the_prices() {
        let mut book = Book::new(Fee::Constant(2_000), 100, 100);
        let _ = book.place(0, order(1, 1, Side::Ask, 100, 10_000)).unwrap();
        assert!(book.place(0, order(2, 2, Side::Bid, 100, 11_000)).unwrap().fills.is_empty(), "11 − 2 < 10");
        let placed = book.place(0, order(3, 3, Side::Bid, 100, 12_000)).unwrap();
        assert_eq!((placed.fills[0].price, placed.fills[0].buyer_price), (10_000, 12_000));
        assert_eq!(book.place(0, order(4, 3, Side::Bid, 100, 1_000)), Err(Reject::BelowFee));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Place { owner: u8, bid: bool, quantity: u64, price: u64, life: u64 },
        Cancel(u32),
        Reduce(u32, u64),
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, any::<bool>(), 1u64..50, 5u64..15, 1u64..100)
                .prop_map(|(owner, bid, quantity, price, life)| Op::Place { owner, bid, quantity, price, life }),
            1 => (0u32..40).prop_map(Op::Cancel),
            1 => (0u32..40, 1u64..30).prop_map(|(id, q)| Op::Reduce(id, q)),
            1 => (0u64..30).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Against a model that keeps every order in a list: the book never crosses, never trades an order beyond
        /// its quantity or outside its limit, never trades an owner with itself, and its depth equals the model's.
        #[test]
        fn book_matches_a_simple_model(ops in prop::collection::vec(op(), 1..200)) {
            let mut book: Book<u32, u8> = Book::new(Fee::None, 30, 10);
            let mut quantity = HashMap::new();
            let mut traded: HashMap<u32, u64> = HashMap::new();
            let mut now = 0u64;
            let mut next_id = 0u32;
            for op in ops {
                match op {
                    Op::Place { owner, bid, quantity: q, price, life } => {
                        let id = next_id;
                        next_id += 1;
                        let side = if bid { Side::Bid } else { Side::Ask };
                        let o = Order { id, owner, side, quantity: q, price, expires_ms: now + life };
                        quantity.insert(id, (owner, side, q, price));
                        let placed = book.place(now, o).expect("valid order");
                        let mut sum = 0;
                        for fill in &placed.fills {
                            let (maker_owner, maker_side, _, maker_price) = quantity[&fill.maker];
                            prop_assert_ne!(maker_owner, owner);
                            prop_assert_ne!(maker_side, side);
                            prop_assert_eq!(fill.price, maker_price);
                            if bid { prop_assert!(fill.price <= price) } else { prop_assert!(fill.price >= price) }
                            *traded.entry(fill.maker).or_default() += fill.quantity;
                            sum += fill.quantity;
                        }
                        *traded.entry(id).or_default() += sum;
                        prop_assert_eq!(sum + placed.resting + placed.dropped, q);
                    }
                    Op::Cancel(id) => { book.cancel(&id); }
                    Op::Reduce(id, q) => { *traded.entry(id).or_default() += book.reduce(&id, q); }
                    Op::Tick(step) => { now += step; book.expire(now); }
                }
                for (id, (_, _, q, _)) in &quantity {
                    prop_assert!(traded.get(id).copied().unwrap_or(0) <= *q);
                }
                if let (Some(bid), Some(ask)) = book.best() {
                    // Only an owner's own orders may face each other across the spread.
                    if bid >= ask {
                        let bid_owners: Vec<u8> = book.orders.values().filter(|r| r.side == Side::Bid && r.price >= ask).map(|r| r.owner).collect();
                        let ask_owners: Vec<u8> = book.orders.values().filter(|r| r.side == Side::Ask && r.price <= bid).map(|r| r.owner).collect();
                        prop_assert!(bid_owners.iter().all(|b| ask_owners.iter().all(|a| a == b)));
                    }
                }
                let depth_total: u64 = book.depth(Side::Bid, usize::MAX).iter().chain(book.depth(Side::Ask, usize::MAX).iter()).map(|l| l.1).sum();
                let resting_total: u64 = book.orders.values().map(|r| r.left).sum();
                prop_assert_eq!(depth_total, resting_total);
                prop_assert!(book.len() <= 30);
                for resting in book.orders.values() { prop_assert!(resting.expires_ms > now); }
            }
        }
    }
}
