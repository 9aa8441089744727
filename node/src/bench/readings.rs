//! `kos bench energy`: (1) readings validated and anchored per second — signed readings of many homes checked
//! (signature, physical plausibility) and executed by the ledger's state machine in blocks; (2) a simulated day
//! of a neighbourhood of N homes, with and without a local market: community self-sufficiency and the share of
//! energy traded between neighbours.

use std::sync::Arc;
use std::time::Instant;

use energy::home::{BatteryConfig, Home, HomeConfig};
use energy::profile::LoadProfile;
use ledger::Genesis;
use ledger::state::{BlockContext, State};
use market::Fee;
use market::auction::{self, Mechanism, Order};
use protocol::message::{Body, MeterSource, Reading};
use protocol::types::MeterId;
use protocol::{Draft, Keypair, NetworkId};

use crate::bench::SplitMix;

/// Settings of the energy benchmark.
#[derive(Debug, Clone)]
pub struct EnergyArgs {
    /// Neighbourhood sizes to simulate.
    pub homes: Vec<usize>,
    /// The simulated day (`YYYY-MM-DD`).
    pub day: (i64, u32, u32),
    /// Homes signing readings in the readings benchmark, and the intervals each signs.
    pub reading_homes: usize,
    pub reading_intervals: usize,
    /// Entries per block in the readings benchmark.
    pub block_entries: usize,
    pub seed: u64,
}

/// Price a home pays for grid energy and gets for feeding in, milli-credits per kWh (30 and 8 cents).
const GRID_PRICE: u64 = 300;
const FEED_IN_PRICE: u64 = 80;

/// One neighbourhood's simulated day.
#[derive(Debug, Clone)]
pub struct DayReport {
    pub homes: usize,
    pub with_pv: usize,
    pub with_battery: usize,
    pub consumption_kwh: f64,
    pub generation_kwh: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    /// Energy matched between neighbours in the interval auctions.
    pub traded_kwh: f64,
    /// Share of consumption not drawn from the grid, homes alone.
    pub self_sufficiency_alone: f64,
    /// The same with neighbours trading.
    pub self_sufficiency_market: f64,
    /// Share of the homes' surplus sold to neighbours.
    pub surplus_sold_locally: f64,
    /// Share of the homes' imports bought from neighbours.
    pub demand_met_locally: f64,
    /// The neighbourhood's energy bill without and with the market, credits.
    pub bill_alone: f64,
    pub bill_market: f64,
    /// Mean clearing price of the intervals that traded, credits per kWh.
    pub mean_price: f64,
    pub seconds: f64,
}

/// The readings benchmark's result.
#[derive(Debug, Clone)]
pub struct ReadingsReport {
    pub readings: usize,
    pub blocks: usize,
    pub refused: usize,
    pub validate_per_s: f64,
    pub anchor_per_s: f64,
    pub end_to_end_per_s: f64,
}

/// A neighbourhood: a third without PV, PV of 4 to 10 kWp on the rest, a battery on every third roof with PV;
/// 2,000 to 6,000 kWh a year. One weather for all (one sky); each household's load noise its own.
pub fn neighbourhood(count: usize, seed: u64, day_start_s: i64, profile: &Arc<LoadProfile>) -> Vec<Home> {
    let mut random = SplitMix(seed);
    let start_ms = u64::try_from(day_start_s).unwrap_or(0) * 1000;
    (0..count)
        .filter_map(|index| {
            let pv_kwp = [0.0, 4.0, 6.0, 0.0, 8.0, 10.0][index % 6];
            let battery = (pv_kwp > 0.0 && index % 3 == 1).then_some(BatteryConfig {
                capacity_wh: 5_000 + random.next() % 6 * 1_000,
                power_w: 3_000,
                efficiency_ppm: 900_000,
            });
            let config = HomeConfig {
                pv_kwp,
                annual_kwh: 2_000.0 + (random.next() % 4_001) as f64,
                battery,
                seed,
                load_seed: seed.wrapping_add(index as u64 + 1),
                ..HomeConfig::default()
            };
            Home::new(config, profile.clone(), start_ms).ok()
        })
        .collect()
}

/// Simulates one day of `count` homes in 15-minute intervals (after a day of warm-up).
pub fn day(count: usize, args: &EnergyArgs) -> anyhow::Result<DayReport> {
    let started = Instant::now();
    let profile = Arc::new(LoadProfile::h25()?);
    let (year, month, day) = args.day;
    let day_start_s = energy::calendar::days(year, month, day) * 86_400;
    // The day before warms the batteries up, so that the day starts with the charge the evening left.
    let mut homes = neighbourhood(count, args.seed, day_start_s - 86_400, &profile);
    for home in &mut homes {
        home.advance(u64::try_from(day_start_s).unwrap_or(0) * 1000);
    }
    let mut previous: Vec<energy::meter::Sample> = homes.iter().map(Home::sample).collect();
    let (mut consumption, mut generation, mut import, mut export, mut traded) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut traded_value, mut bill_market_milli) = (0u128, 0i128);
    for interval in 1..=96u64 {
        let end_ms = (u64::try_from(day_start_s).unwrap_or(0) + interval * 900) * 1000;
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for (index, home) in homes.iter_mut().enumerate() {
            home.advance(end_ms);
            let sample = home.sample();
            let before = previous[index];
            let (imported, exported) = (sample.import_wh - before.import_wh, sample.export_wh - before.export_wh);
            consumption += sample.consumption_wh - before.consumption_wh;
            generation += sample.generation_wh - before.generation_wh;
            import += imported;
            export += exported;
            // What each home needs from outside and has to spare this interval, offered at the grid's prices:
            // neighbours trade whenever the clearing price lies between feed-in and grid tariff.
            if imported > 0 {
                bids.push(Order { id: index, quantity: imported, price: GRID_PRICE });
            }
            if exported > 0 {
                asks.push(Order { id: index, quantity: exported, price: FEED_IN_PRICE });
            }
            previous[index] = sample;
        }
        let clearing = auction::clear(&bids, &asks, Mechanism::PayAsClear, Fee::None);
        traded += clearing.volume;
        let price = u128::from(clearing.price.unwrap_or(0));
        traded_value += u128::from(clearing.volume) * price;
        let interval_import: u64 = bids.iter().map(|bid| bid.quantity).sum();
        let interval_export: u64 = asks.iter().map(|ask| ask.quantity).sum();
        // Bill with the market: the rest from and to the grid at its prices; traded energy at the clearing price
        // (paid by buyers, earned by sellers: it nets out within the neighbourhood).
        bill_market_milli += i128::from(interval_import - clearing.volume) * i128::from(GRID_PRICE)
            - i128::from(interval_export - clearing.volume) * i128::from(FEED_IN_PRICE);
    }
    let kwh = |wh: u64| wh as f64 / 1000.0;
    let bill_alone = (kwh(import) * GRID_PRICE as f64 - kwh(export) * FEED_IN_PRICE as f64) / 1000.0;
    Ok(DayReport {
        homes: homes.len(),
        with_pv: homes.iter().filter(|home| home.config().pv_kwp > 0.0).count(),
        with_battery: homes.iter().filter(|home| home.config().battery.is_some()).count(),
        consumption_kwh: kwh(consumption),
        generation_kwh: kwh(generation),
        import_kwh: kwh(import),
        export_kwh: kwh(export),
        traded_kwh: kwh(traded),
        self_sufficiency_alone: 1.0 - import as f64 / consumption.max(1) as f64,
        self_sufficiency_market: 1.0 - (import - traded) as f64 / consumption.max(1) as f64,
        surplus_sold_locally: traded as f64 / export.max(1) as f64,
        demand_met_locally: traded as f64 / import.max(1) as f64,
        bill_alone,
        bill_market: bill_market_milli as f64 / 1e6,
        mean_price: if traded == 0 { 0.0 } else { traded_value as f64 / traded as f64 / 1000.0 },
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Signs `reading_homes × reading_intervals` readings from simulated homes, then measures protocol validation
/// (signature and form) with the plausibility check, and anchoring by the ledger's state machine in blocks.
pub fn readings(args: &EnergyArgs) -> anyhow::Result<ReadingsReport> {
    let network = NetworkId::new("kos-bench")?;
    let profile = Arc::new(LoadProfile::h25()?);
    let (year, month, day) = args.day;
    let day_start_s = energy::calendar::days(year, month, day) * 86_400;
    let start_ms = u64::try_from(day_start_s).unwrap_or(0) * 1000;
    let keys: Vec<Keypair> = (0..args.reading_homes)
        .map(|index| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
            Keypair::from_seed(&seed)
        })
        .collect();
    let public: Vec<_> = keys.iter().map(Keypair::public).collect();
    let genesis = Arc::new(Genesis::parse(&Genesis::devnet_text("kos-bench", start_ms, &public[..1], &public, 0))?);
    let mut homes = neighbourhood(args.reading_homes, args.seed, day_start_s, &profile);
    let mut intervals: Vec<energy::meter::Intervals> =
        homes.iter().map(|_| energy::meter::Intervals::new(900)).collect();
    let meter = MeterId::new("main")?;
    let mut signed: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut nonce = 0u64;
    for interval in 0..=args.reading_intervals as u64 {
        let at_ms = start_ms + interval * 900_000;
        let mut batch = Vec::new();
        for (index, home) in homes.iter_mut().enumerate() {
            home.advance(at_ms);
            if let energy::meter::Push::Closed(closed) = intervals[index].push(home.sample()) {
                let reading: Reading = closed.reading(meter.clone(), MeterSource::Simulated);
                nonce += 1;
                let envelope = Draft {
                    network: network.clone(),
                    nonce,
                    created_ms: at_ms,
                    expires_ms: at_ms + 3_600_000,
                    body: Body::Reading(reading),
                }
                .sign(&keys[index]);
                batch.push(envelope.to_bytes());
            }
        }
        if !batch.is_empty() {
            signed.push(batch);
        }
    }
    let readings: usize = signed.iter().map(Vec::len).sum();
    // Validation as a peer does it: decode, check form and signature, then the physical checks.
    let config = protocol::Config::new(network.clone());
    let started = Instant::now();
    let mut previous = std::collections::HashMap::new();
    for (interval, batch) in signed.iter().enumerate() {
        let now_s = day_start_s as u64 + (interval as u64 + 1) * 900 + 1;
        for bytes in batch {
            let envelope = protocol::validate(bytes, &config, now_s * 1000)?.envelope;
            if let Body::Reading(reading) = &envelope.body {
                energy::reading::check(
                    reading,
                    previous.get(&envelope.author),
                    &energy::reading::Capacity::RESIDENTIAL,
                    now_s,
                )?;
                previous.insert(envelope.author, energy::reading::Previous::from(reading));
            }
        }
    }
    let validate_seconds = started.elapsed().as_secs_f64();
    // Anchoring: the ledger's state machine builds and applies blocks of readings (it validates them again).
    let mut state = State::genesis(genesis);
    let started = Instant::now();
    let (mut blocks, mut refused, mut height) = (0usize, 0usize, 0u64);
    for (interval, batch) in signed.iter().enumerate() {
        let time_ms = start_ms + (interval as u64 + 1) * 900_000 + 1_000;
        for chunk in batch.chunks(args.block_entries.max(1)) {
            height += 1;
            let context = BlockContext { height, time_ms, proposer: public[0] };
            let built = state.build(context, chunk.to_vec(), &|_| false);
            refused += built.rejected.len();
            state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
            blocks += 1;
        }
    }
    let anchor_seconds = started.elapsed().as_secs_f64();
    Ok(ReadingsReport {
        readings,
        blocks,
        refused,
        validate_per_s: readings as f64 / validate_seconds.max(1e-9),
        anchor_per_s: readings as f64 / anchor_seconds.max(1e-9),
        end_to_end_per_s: readings as f64 / (validate_seconds + anchor_seconds).max(1e-9),
    })
}
