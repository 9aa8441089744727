//! `kos market clear`: run a matching mechanism over a JSON file of orders and print the trades as JSON.
//!
//! Input: `{"bids":[{"id":"b1","quantity":500,"price":45.0}], "asks":[{"id":"a1","quantity":500,"price":0.0}],
//! "divider":0.5, "grid_fee":0.02, "grid_fee_percent":5}` — quantities in Wh (whole numbers), prices per kWh in the
//! pool token with up to 3 decimals; `divider` (MMR, default 0.5) and the grid fee (a constant per kWh or a
//! percentage of the seller's price, not both) are optional. For `cda` an order may carry `"time"` (arrival order,
//! default: bids in file order, then asks in file order); the others clear all orders at once.
//!
//! Output: `{"mechanism":...,"price":<uniform price or null>,"trades":[{"bid","ask","quantity","price"}],
//! "volume":...}`; with a grid fee each trade also carries `buyer_price` (price + fee).

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use market::auction::{self, Mechanism};
use market::book::{Book, Order as BookOrder, Side};
use market::{Fee, PPM};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// Clear a set of bids and asks with one mechanism and print the trades (JSON in, JSON out).
    Clear {
        /// The matching mechanism.
        #[arg(long, value_enum)]
        mechanism: MechanismArg,
        /// The orders as JSON (see the README), or `-` for stdin.
        #[arg(long)]
        input: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MechanismArg {
    /// Continuous double auction: orders arrive one by one and trade at the resting order's price.
    Cda,
    /// Uniform price in the middle of the market-clearing range.
    PayAsClear,
    /// Each trade at its bid's price.
    PayAsBid,
    /// Mid-market rate: λs + (λb − λs) · divider.
    Mmr,
    /// Supply-demand ratio pricing (Liu et al. 2017).
    Sdr,
}

impl MechanismArg {
    fn name(self) -> &'static str {
        match self {
            MechanismArg::Cda => "cda",
            MechanismArg::PayAsClear => "pay-as-clear",
            MechanismArg::PayAsBid => "pay-as-bid",
            MechanismArg::Mmr => "mmr",
            MechanismArg::Sdr => "sdr",
        }
    }
}

/// Input files larger than this are refused (about a million orders).
const INPUT_BYTES_MAX: u64 = 128 * 1024 * 1024;

pub fn run(command: MarketCommand) -> anyhow::Result<()> {
    match command {
        MarketCommand::Clear { mechanism, input } => {
            let text = read_input(&input)?;
            let output = clear_json(mechanism, &text)?;
            println!("{output}");
            Ok(())
        }
    }
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        read_limited(std::io::stdin(), INPUT_BYTES_MAX).context("reading stdin")
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        read_limited(file, INPUT_BYTES_MAX).with_context(|| format!("reading {}", path.display()))
    }
}

/// Reads all of `input` as text, refusing more than `bytes_max` bytes (never cutting it short in silence).
fn read_limited(input: impl std::io::Read, bytes_max: u64) -> anyhow::Result<String> {
    let mut text = String::new();
    input.take(bytes_max.saturating_add(1)).read_to_string(&mut text)?;
    if text.len() as u64 > bytes_max {
        anyhow::bail!(
            "input too large: more than {bytes_max} bytes ({} MiB), the most `kos market clear` reads",
            bytes_max >> 20
        );
    }
    Ok(text)
}

/// One order of the input file.
struct Order {
    id: String,
    quantity: u64,
    price_milli: u64,
    time: Option<f64>,
}

/// Clears the orders of a JSON document and returns the result document.
pub fn clear_json(mechanism: MechanismArg, text: &str) -> anyhow::Result<Value> {
    let document: Value = serde_json::from_str(text).context("the input is not JSON")?;
    let bids = orders(&document, "bids")?;
    let asks = orders(&document, "asks")?;
    let divider_ppm = match document.get("divider") {
        None | Some(Value::Null) => PPM / 2,
        Some(value) => {
            let divider = value.as_f64().context("divider: want a number from 0 to 1")?;
            if !(0.0..=1.0).contains(&divider) {
                bail!("divider: {divider} is not between 0 and 1");
            }
            (divider * f64::from(PPM)).round() as u32 // within 0..=PPM, checked above
        }
    };
    let fee = fee(&document)?;
    let mut seen = std::collections::HashSet::new();
    for order in bids.iter().chain(&asks) {
        if !seen.insert(order.id.as_str()) {
            bail!("order id {:?} appears twice", order.id);
        }
    }

    let (price, trades) = match mechanism {
        MechanismArg::Cda => (None, continuous(&bids, &asks, fee)?),
        _ => {
            let to_auction = |orders: &[Order]| -> Vec<auction::Order<usize>> {
                orders
                    .iter()
                    .enumerate()
                    .map(|(index, order)| auction::Order {
                        id: index,
                        quantity: order.quantity,
                        price: order.price_milli,
                    })
                    .collect()
            };
            let mechanism = match mechanism {
                MechanismArg::PayAsBid => Mechanism::PayAsBid,
                MechanismArg::Mmr => Mechanism::MidMarketRate { divider_ppm },
                MechanismArg::Sdr => Mechanism::SupplyDemandRatio,
                _ => Mechanism::PayAsClear,
            };
            let clearing = auction::clear(&to_auction(&bids), &to_auction(&asks), mechanism, fee);
            let trades = clearing
                .trades
                .iter()
                .map(|trade| (trade.bid, trade.ask, trade.quantity, trade.price, trade.buyer_price))
                .collect();
            (clearing.price, trades)
        }
    };
    // Continuous matching can fill more than 2^64 − 1 units in all (the auctions stop there): say so, never wrap.
    let volume = trades
        .iter()
        .try_fold(0u64, |volume, trade| volume.checked_add(trade.2))
        .context("the traded volume exceeds 18446744073709551615 units")?;
    let trades: Vec<Value> = trades
        .into_iter()
        .map(|(bid, ask, quantity, price, buyer_price)| {
            let mut trade = json!({
                "bid": bids[bid].id,
                "ask": asks[ask].id,
                "quantity": quantity,
                "price": decimal(price),
            });
            if fee != Fee::None {
                trade["buyer_price"] = decimal(buyer_price);
            }
            trade
        })
        .collect();
    Ok(json!({
        "mechanism": mechanism.name(),
        "price": price.map_or(Value::Null, decimal),
        "trades": trades,
        "volume": volume,
    }))
}

/// Trades as `(bid index, ask index, quantity, seller price, buyer price)`.
type Trades = Vec<(usize, usize, u64, u64, u64)>;

/// Feeds the orders through a continuous double auction in arrival order.
fn continuous(bids: &[Order], asks: &[Order], fee: Fee) -> anyhow::Result<Trades> {
    // Arrival: by `time` where given, else by position (bids first); the sort is stable.
    let mut arrivals: Vec<(Side, usize, &Order)> = bids
        .iter()
        .enumerate()
        .map(|(index, order)| (Side::Bid, index, order))
        .chain(asks.iter().enumerate().map(|(index, order)| (Side::Ask, index, order)))
        .collect();
    arrivals.sort_by(|a, b| a.2.time.unwrap_or(0.0).total_cmp(&b.2.time.unwrap_or(0.0)));
    let count = arrivals.len().max(1);
    let mut book: Book<(Side, usize), usize> = Book::new(fee, count, count);
    let mut trades = Vec::new();
    for (position, (side, index, order)) in arrivals.iter().enumerate() {
        if order.quantity == 0 {
            continue;
        }
        let placed = book
            .place(
                0,
                BookOrder {
                    id: (*side, *index),
                    owner: position,
                    side: *side,
                    quantity: order.quantity,
                    price: order.price_milli,
                    expires_ms: u64::MAX,
                },
            )
            .or_else(|error| match error {
                // A bid below a constant fee can never trade; it simply does not enter the book.
                market::book::Reject::BelowFee => Ok(market::book::Placed {
                    fills: Vec::new(),
                    resting: 0,
                    dropped: 0,
                    expired: Vec::new(),
                    sequence: 0,
                }),
                other => Err(other),
            })
            .with_context(|| format!("order {:?}", order.id))?;
        for fill in placed.fills {
            let (bid, ask) = match fill.taker_side {
                Side::Bid => (fill.taker.1, fill.maker.1),
                Side::Ask => (fill.maker.1, fill.taker.1),
            };
            trades.push((bid, ask, fill.quantity, fill.price, fill.buyer_price));
        }
    }
    Ok(trades)
}

fn orders(document: &Value, field: &str) -> anyhow::Result<Vec<Order>> {
    let Some(list) = document.get(field) else { return Ok(Vec::new()) };
    let list = list.as_array().with_context(|| format!("{field}: want an array of orders"))?;
    list.iter()
        .enumerate()
        .map(|(position, order)| {
            let at = || format!("{field}[{position}]");
            let id = match order.get("id") {
                Some(Value::String(id)) => id.clone(),
                Some(Value::Number(id)) => id.to_string(),
                None => format!("{}{}", &field[..1], position + 1),
                Some(_) => bail!("{}.id: want a string", at()),
            };
            let quantity = order
                .get("quantity")
                .and_then(Value::as_u64)
                .with_context(|| format!("{}.quantity: want a whole number of Wh, 0 or more", at()))?;
            let price = order
                .get("price")
                .and_then(Value::as_f64)
                .with_context(|| format!("{}.price: want a number (per kWh)", at()))?;
            let price_milli = milli(price).with_context(|| format!("{}.price", at()))?;
            let time = order.get("time").and_then(Value::as_f64);
            Ok(Order { id, quantity, price_milli, time })
        })
        .collect()
}

fn fee(document: &Value) -> anyhow::Result<Fee> {
    let constant = document.get("grid_fee").and_then(Value::as_f64);
    let percent = document.get("grid_fee_percent").and_then(Value::as_f64);
    match (constant, percent) {
        (Some(_), Some(_)) => bail!("give grid_fee or grid_fee_percent, not both"),
        (Some(constant), None) => Ok(Fee::Constant(milli(constant).context("grid_fee")?)),
        (None, Some(percent)) => {
            if !(0.0..=1000.0).contains(&percent) {
                bail!("grid_fee_percent: {percent} is not between 0 and 1000");
            }
            Ok(Fee::Ppm((percent * 10_000.0).round() as u32)) // at most 10⁷, checked above
        }
        (None, None) => Ok(Fee::None),
    }
}

/// A decimal with at most 3 decimals as milli-units.
fn milli(value: f64) -> anyhow::Result<u64> {
    let scaled = value * 1000.0;
    if !scaled.is_finite() || !(0.0..=1e15).contains(&scaled) {
        bail!("{value} is not a price from 0 to 10¹²");
    }
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        bail!("{value} has more than 3 decimals");
    }
    Ok(rounded as u64) // 0 ..= 10¹⁵, checked above
}

fn decimal(milli: u64) -> Value {
    // Exact for every milli-unit amount below 2⁵³; the shortest representation is printed.
    json!(milli as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example() {
        let input = r#"{"bids":[{"id":"b1","quantity":500,"price":45.0}],
                        "asks":[{"id":"a1","quantity":500,"price":0.0}], "divider":0.5}"#;
        let clear = |mechanism| clear_json(mechanism, input).unwrap().to_string();
        assert_eq!(
            clear(MechanismArg::PayAsClear),
            r#"{"mechanism":"pay-as-clear","price":22.5,"trades":[{"ask":"a1","bid":"b1","price":22.5,"quantity":500}],"volume":500}"#
        );
        assert!(clear(MechanismArg::PayAsBid).contains(r#""price":null"#));
        assert!(clear(MechanismArg::PayAsBid).contains(r#""price":45.0"#));
        assert!(clear(MechanismArg::Mmr).contains(r#""price":22.5"#));
        // SDR = 500 / 500 = 1: the price is λs.
        assert!(clear(MechanismArg::Sdr).contains(r#""price":0.0"#));
        // The bid arrives first and rests; the ask trades at the bid's price.
        assert_eq!(
            clear(MechanismArg::Cda),
            r#"{"mechanism":"cda","price":null,"trades":[{"ask":"a1","bid":"b1","price":45.0,"quantity":500}],"volume":500}"#
        );
    }

    #[test]
    fn cda_follows_arrival_times_and_fees_show() {
        let input = r#"{"bids":[{"id":"b1","quantity":300,"price":30,"time":2}],
                        "asks":[{"id":"a1","quantity":200,"price":10,"time":1},{"id":"a2","quantity":200,"price":20,"time":3}],
                        "grid_fee":2}"#;
        let result = clear_json(MechanismArg::Cda, input).unwrap();
        let trades = result["trades"].as_array().unwrap();
        // b1 takes a1 at 10 (the maker's price); the rest of b1 (100 Wh, net 28) rests and a2 takes it at 28.
        assert_eq!(trades.len(), 2);
        assert_eq!((trades[0]["ask"].as_str(), trades[0]["price"].as_f64()), (Some("a1"), Some(10.0)));
        assert_eq!(trades[0]["buyer_price"].as_f64(), Some(12.0));
        assert_eq!((trades[1]["ask"].as_str(), trades[1]["price"].as_f64()), (Some("a2"), Some(28.0)));
        assert_eq!(result["volume"], 300);
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let error = |text: &str| clear_json(MechanismArg::PayAsClear, text).unwrap_err().to_string();
        assert!(error("{").contains("not JSON"));
        assert!(error(r#"{"bids":[{"quantity":1.5,"price":1}]}"#).contains("bids[0].quantity"));
        assert!(error(r#"{"asks":[{"quantity":1,"price":-1}]}"#).contains("asks[0].price"));
        assert!(error(r#"{"asks":[{"quantity":1,"price":0.0001}]}"#).contains("asks[0].price"));
        assert!(error(r#"{"divider":2}"#).contains("divider"));
        assert!(
            error(r#"{"bids":[{"id":"x","quantity":1,"price":1}],"asks":[{"id":"x","quantity":1,"price":1}]}"#)
                .contains("twice")
        );
    }

    /// Issue 25, defect 9: input past the limit was cut off in silence and the rest cleared as if it were all.
    #[test]
    fn input_past_the_limit_is_refused_not_cut() {
        let text = "x".repeat(100);
        assert_eq!(read_limited(text.as_bytes(), 100).unwrap().len(), 100);
        let error = read_limited(text.as_bytes(), 99).unwrap_err().to_string();
        assert!(error.starts_with("input too large: more than 99 bytes"), "{error}");
        assert!(read_limited(std::io::repeat(b' ').take(INPUT_BYTES_MAX + 1), INPUT_BYTES_MAX).is_err());
    }

    /// Issue 25, defect 8: two trades of 2^64 − 1 Wh printed a volume of 18446744073709551614.
    #[test]
    fn volumes_past_64_bits_are_refused_not_wrapped() {
        let max = u64::MAX;
        let auction = format!(
            r#"{{"bids":[{{"id":"b1","quantity":{max},"price":5}},{{"id":"b2","quantity":{max},"price":5}}],
                "asks":[{{"id":"a1","quantity":{max},"price":1}},{{"id":"a2","quantity":{max},"price":1}}]}}"#
        );
        // An auction trades at most 2^64 − 1 units in all.
        let result = clear_json(MechanismArg::PayAsClear, &auction).unwrap();
        assert_eq!(result["volume"], max);
        // Continuous matching fills both pairs: the total does not fit, and says so.
        let error = clear_json(MechanismArg::Cda, &auction).unwrap_err().to_string();
        assert!(error.contains("exceeds"), "{error}");
    }
}
