//! `kos bench market`: order operations per second of the continuous double auction on one core, and the time to
//! clear an interval auction of many orders. Inputs come from a seeded generator, so runs are comparable.

use std::time::Instant;

use market::Fee;
use market::auction::{self, Mechanism};
use market::book::{Book, Order, Side};

/// Settings of the market benchmark.
#[derive(Debug, Clone)]
pub struct MarketArgs {
    /// Order operations (places and cancels) fed to the book.
    pub operations: usize,
    /// Orders in one interval auction.
    pub auction_orders: usize,
    /// Repetitions of the auction; the median is reported.
    pub repetitions: usize,
    pub seed: u64,
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct MarketReport {
    pub operations: usize,
    pub fills: usize,
    pub operations_per_s: f64,
    pub resting_at_end: usize,
    pub resting_max: usize,
    pub auction_orders: usize,
    pub auction_trades: usize,
    pub auction_median_ms: f64,
    pub auction_best_ms: f64,
}

/// The shared benchmark generator, with `u64` bounds.
struct Random(crate::bench::SplitMix);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0.next() % bound.max(1)
    }
}

enum Operation {
    Place(Order<u64, u32>),
    Cancel(u64),
}

/// Runs the benchmark on the calling thread.
pub fn market(args: &MarketArgs) -> MarketReport {
    let mut random = Random(crate::bench::SplitMix(args.seed));
    // A steady-state market around 245 credits/kWh: bids 190..250, asks 240..300, so the orders near the spread
    // cross; one operation in three cancels one of the 20,000 most recent orders; orders live 10 to 50 seconds
    // of a clock that advances 1 ms per operation, so the book stays at some tens of thousands of orders.
    let mut operations = Vec::with_capacity(args.operations);
    let mut next_id = 0u64;
    for _ in 0..args.operations {
        if next_id > 0 && random.below(3) == 0 {
            let window = next_id.min(20_000);
            operations.push(Operation::Cancel(next_id - 1 - random.below(window)));
        } else {
            let side = if random.below(2) == 0 { Side::Bid } else { Side::Ask };
            let offset = random.below(60);
            let price = match side {
                Side::Bid => 190 + offset,
                Side::Ask => 250 + offset - 10,
            };
            operations.push(Operation::Place(Order {
                id: next_id,
                owner: u32::try_from(random.below(10_000)).unwrap_or(0),
                side,
                quantity: 100 + random.below(900),
                price: price * 1_000,
                expires_ms: operations.len() as u64 + 10_000 + random.below(40_000),
            }));
            next_id += 1;
        }
    }
    let mut book: Book<u64, u32> = Book::new(Fee::None, 1_000_000, 1_000);
    let mut fills = 0usize;
    let mut book_max = 0usize;
    let started = Instant::now();
    for (now_ms, operation) in operations.into_iter().enumerate() {
        match operation {
            Operation::Place(order) => {
                if let Ok(placed) = book.place(now_ms as u64, order) {
                    fills += placed.fills.len();
                }
            }
            Operation::Cancel(id) => {
                book.cancel(&id);
            }
        }
        book_max = book_max.max(book.len());
    }
    let seconds = started.elapsed().as_secs_f64();

    let orders = |random: &mut Random, count: usize, base: u64| -> Vec<auction::Order<u64>> {
        (0..count)
            .map(|id| auction::Order {
                id: id as u64,
                quantity: 100 + random.below(5_000),
                price: (base + random.below(200)) * 1_000,
            })
            .collect()
    };
    let bids = orders(&mut random, args.auction_orders / 2, 150);
    let asks = orders(&mut random, args.auction_orders - args.auction_orders / 2, 100);
    let mut times = Vec::with_capacity(args.repetitions);
    let mut trades = 0;
    for _ in 0..args.repetitions.max(1) {
        let started = Instant::now();
        let clearing = auction::clear(&bids, &asks, Mechanism::PayAsClear, Fee::None);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        trades = clearing.trades.len();
    }
    times.sort_by(f64::total_cmp);
    MarketReport {
        operations: args.operations,
        fills,
        operations_per_s: args.operations as f64 / seconds.max(1e-9),
        resting_at_end: book.len(),
        resting_max: book_max,
        auction_orders: args.auction_orders,
        auction_trades: trades,
        auction_median_ms: times[times.len() / 2],
        auction_best_ms: times[0],
    }
}
