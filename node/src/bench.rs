//! `kos bench`: measurements of real components on this machine (figures for BENCHMARKS.md).
//!
//! `kos bench gossip` starts N full nodes in this process, each with its own swarm and TCP sockets on 127.0.0.1,
//! links them in a random graph of the given degree, and publishes signed offers from random nodes at a fixed
//! rate. For each offer it measures the time until 99 % of the other nodes have validated and delivered it.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::message::PoolId;
use protocol::{Id, NetworkId};

use crate::cli::BenchCommand;
use crate::network::local::{self, Transport, now_ms};
use crate::network::{Topic, wait_for};

/// Runs one `kos bench` command and prints its report.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Gossip { peers, degree, messages, rate, seed } => {
            gossip_command(peers, degree, messages, rate, seed)
        }
        BenchCommand::Ledger { rate, seconds, clients, readers } => ledger_command(rate, seconds, clients, readers),
        BenchCommand::Governance { rounds } => governance_command(rounds),
        BenchCommand::Jobs { jobs, searches, rounds } => jobs_command(jobs, searches, rounds),
        BenchCommand::Energy { homes, day, reading_homes, reading_intervals, block_entries, seed } => {
            energy_command(homes, day, reading_homes, reading_intervals, block_entries, seed)
        }
        BenchCommand::Market { operations, auction_orders, repetitions, seed } => {
            market_command(operations, auction_orders, repetitions, seed)
        }
    }
}

/// `kos bench gossip`: runs it and prints its report.
fn gossip_command(peers: usize, degree: usize, messages: usize, rate: u64, seed: u64) -> anyhow::Result<()> {
    let args = crate::bench::GossipArgs { peers, degree, messages, rate_per_s: rate, seed };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench::gossip(&args))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "peers {} links {} offers {} (reached 99% of peers: {})",
        report.peers, report.links, report.messages, report.complete
    )?;
    writeln!(
        out,
        "latency to 99% of peers: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.latency_p50_ms, report.latency_p99_ms, report.latency_max_ms
    )?;
    writeln!(
        out,
        "offers published {:.1}/s; validated deliveries {:.0}/s across all nodes",
        report.published_per_s, report.deliveries_per_s
    )?;
    Ok(())
}

/// `kos bench ledger`: runs it and prints its report.
fn ledger_command(rate: u64, seconds: u64, clients: usize, readers: usize) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    let args = crate::bench_ledger::LedgerArgs { rate_per_s: rate, seconds, clients, readers };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench_ledger::ledger(&args))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "submitted {} ({} refused), committed {} in {:.1} s: {:.0} entries/s over {} blocks",
        report.submitted, report.refused, report.committed, report.seconds, report.committed_per_s, report.blocks
    )?;
    writeln!(out, "finality p50 {:.0} ms, p99 {:.0} ms", report.finality_p50_ms, report.finality_p99_ms)?;
    writeln!(
        out,
        "CPU: {:.0} µs per committed entry, all four validators and the clients together",
        report.cpu_us_per_entry
    )?;
    writeln!(
        out,
        "refused as busy (the ledger's input queue full): {}; lowest gossip score between validators: {:.1} (graylist at -80)",
        report.refused_busy, report.lowest_peer_score
    )?;
    writeln!(
        out,
        "sync of a fresh node: {} blocks, {} entries in {:.1} s: {:.0} entries/s",
        report.synced_blocks, report.synced_entries, report.sync_seconds, report.sync_entries_per_s
    )?;
    if readers > 0 {
        writeln!(
            out,
            "reads of account balances by {readers} readers: {} answered, p50 {:.2} ms, p99 {:.2} ms",
            report.reads, report.read_p50_ms, report.read_p99_ms
        )?;
    }
    Ok(())
}

/// `kos bench governance`: runs it and prints its report.
fn governance_command(rounds: usize) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench_governance::governance(rounds.max(1)))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} rounds; a passing block's effect: on every node {:.0} ms (p50) / {:.0} ms (max) after the first, \
         {:.0} / {:.0} ms after the block's time",
        report.rounds,
        report.effect_spread_p50_ms,
        report.effect_spread_max_ms,
        report.effect_from_block_p50_ms,
        report.effect_from_block_max_ms
    )?;
    writeln!(
        out,
        "a freeze passing to the frozen account's next offer refused, slowest node: p50 {:.0} ms, max {:.0} ms",
        report.freeze_to_refusal_p50_ms, report.freeze_to_refusal_max_ms
    )?;
    Ok(())
}

/// `kos bench jobs`: runs it and prints its report.
fn jobs_command(jobs: usize, searches: usize, rounds: usize) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench_jobs::jobs(jobs.max(1), searches.max(1), rounds.max(1)))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "index: {} open jobs indexed at {:.0}/s; {} searches at {:.0}/s ({:.1} jobs found per search)",
        report.jobs, report.indexed_per_s, report.searches, report.searches_per_s, report.found_per_search
    )?;
    writeln!(
        out,
        "assignment of {} requests to {} providers: heuristic {:.1} ms, {} m; exact {:.1} ms, {} m; gap {:.2} %",
        report.requests,
        report.providers,
        report.solve_ms,
        report.solve_total_m,
        report.exact_ms,
        report.exact_total_m,
        report.gap_percent
    )?;
    writeln!(
        out,
        "{} awards: submitted to escrow committed on every node p50 {:.0} ms, max {:.0} ms (spread between nodes p50 {:.0} ms)",
        report.rounds, report.award_to_escrow_p50_ms, report.award_to_escrow_max_ms, report.award_spread_p50_ms
    )?;
    Ok(())
}

/// The day of an energy bench, as given.
fn args_day(args: &crate::bench_energy::EnergyArgs) -> String {
    format!("{:04}-{:02}-{:02}", args.day.0, args.day.1, args.day.2)
}

/// `kos bench energy`: runs it and prints its report.
fn energy_command(
    homes: Vec<usize>,
    day: String,
    reading_homes: usize,
    reading_intervals: usize,
    block_entries: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let parts: Vec<&str> = day.split('-').collect();
    let parsed = match parts.as_slice() {
        [year, month, day] => Some((year.parse().ok(), month.parse().ok(), day.parse().ok())),
        _ => None,
    };
    let Some((Some(year), Some(month), Some(date))) = parsed else {
        anyhow::bail!("--day {day:?}: give the day as YYYY-MM-DD");
    };
    let args = crate::bench_energy::EnergyArgs {
        homes: homes.clone(),
        day: (year, month, date),
        reading_homes,
        reading_intervals,
        block_entries,
        seed,
    };
    let mut out = std::io::stdout().lock();
    let report = crate::bench_energy::readings(&args)?;
    writeln!(
        out,
        "readings: {} from {} homes, {} blocks ({} refused): validated {:.0}/s, anchored {:.0}/s, both {:.0}/s",
        report.readings,
        reading_homes,
        report.blocks,
        report.refused,
        report.validate_per_s,
        report.anchor_per_s,
        report.end_to_end_per_s
    )?;
    for count in homes {
        let day = crate::bench_energy::day(count, &args)?;
        writeln!(
            out,
            "{} homes ({} with PV, {} with a battery) on {}: consumption {:.0} kWh, generation {:.0} kWh, \
             import {:.0} kWh, export {:.0} kWh, traded between neighbours {:.0} kWh at {:.3} credits/kWh",
            day.homes,
            day.with_pv,
            day.with_battery,
            args_day(&args),
            day.consumption_kwh,
            day.generation_kwh,
            day.import_kwh,
            day.export_kwh,
            day.traded_kwh,
            day.mean_price
        )?;
        writeln!(
            out,
            "  self-sufficiency {:.1} % alone, {:.1} % with the market; surplus sold locally {:.1} %, \
             demand met locally {:.1} %; bill {:.2} credits alone, {:.2} with the market ({:.2} s)",
            day.self_sufficiency_alone * 100.0,
            day.self_sufficiency_market * 100.0,
            day.surplus_sold_locally * 100.0,
            day.demand_met_locally * 100.0,
            day.bill_alone,
            day.bill_market,
            day.seconds
        )?;
    }
    Ok(())
}

/// `kos bench market`: runs it and prints its report.
fn market_command(operations: usize, auction_orders: usize, repetitions: usize, seed: u64) -> anyhow::Result<()> {
    let args = crate::bench_market::MarketArgs { operations, auction_orders, repetitions, seed };
    let report = crate::bench_market::market(&args);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "continuous double auction: {} operations ({} fills, at most {} resting, {} at the end): {:.0} operations/s",
        report.operations, report.fills, report.resting_max, report.resting_at_end, report.operations_per_s
    )?;
    writeln!(
        out,
        "interval auction (pay-as-clear) of {} orders, {} trades: median {:.2} ms, best {:.2} ms",
        report.auction_orders, report.auction_trades, report.auction_median_ms, report.auction_best_ms
    )?;
    Ok(())
}

/// What `kos bench gossip` measures.
#[derive(Debug, Clone)]
pub struct GossipArgs {
    pub peers: usize,
    pub degree: usize,
    pub messages: usize,
    pub rate_per_s: u64,
    pub seed: u64,
}

/// The results of one run.
#[derive(Debug, Clone)]
pub struct GossipReport {
    pub peers: usize,
    pub links: usize,
    pub messages: usize,
    /// Offers that reached 99 % of the other peers before the deadline.
    pub complete: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Validated deliveries per second across all nodes while offers flowed.
    pub deliveries_per_s: f64,
    pub published_per_s: f64,
}

/// splitmix64: a small deterministic generator for benchmark inputs (topologies, publishers, orders).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// A connected random graph: a ring plus random chords until each node has about `degree` links.
fn topology(peers: usize, degree: usize, rng: &mut SplitMix) -> Vec<(usize, usize)> {
    let mut links: std::collections::BTreeSet<(usize, usize)> =
        (0..peers).map(|i| (i.min((i + 1) % peers), i.max((i + 1) % peers))).collect();
    let target = peers.saturating_mul(degree) / 2;
    let mut attempts = 0;
    while links.len() < target && attempts < target.saturating_mul(20) {
        attempts += 1;
        let (a, b) = (rng.below(peers), rng.below(peers));
        if a != b {
            links.insert((a.min(b), a.max(b)));
        }
    }
    links.into_iter().filter(|(a, b)| a != b).collect()
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the gossip benchmark.
pub async fn gossip(args: &GossipArgs) -> anyhow::Result<GossipReport> {
    anyhow::ensure!(args.peers >= 2, "--peers must be at least 2");
    let network = NetworkId::new("kos-bench").context("network id")?;
    let pool: PoolId = "energy/credit/u33db/900".parse().context("pool")?;
    let topic = Topic::pool(&pool);
    let mut rng = SplitMix(args.seed);
    let mut nodes = Vec::with_capacity(args.peers);
    for seed in 0..args.peers {
        let node = local::start(10_000 + seed as u64, &network, Transport::Tcp, |config| {
            config.kademlia = false;
            config.peers_max = 256;
        })
        .await?;
        node.handle.subscribe(topic).await?;
        nodes.push(node);
    }
    let links = topology(args.peers, args.degree.max(2), &mut rng);
    for (a, b) in &links {
        local::connect(&nodes[*a], &nodes[*b]).await?;
    }
    // Wait until every node has a mesh for the topic, then two more heartbeats.
    for node in &nodes {
        let meshed = wait_for(Duration::from_secs(30), || async {
            node.handle.topic_peers(topic).await.map(|peers| !peers.is_empty()).unwrap_or(false)
        })
        .await;
        anyhow::ensure!(meshed, "a node formed no mesh");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Collect every delivery: message id -> arrival instants.
    let arrivals: Arc<Mutex<HashMap<Id, Vec<Instant>>>> = Arc::default();
    let mut handles = Vec::with_capacity(nodes.len());
    let mut collectors = Vec::new();
    for node in nodes {
        let (handle, mut deliveries, keypair) = (node.handle, node.deliveries, node.keypair);
        let arrivals = arrivals.clone();
        collectors.push(tokio::spawn(async move {
            while let Some(delivery) = deliveries.recv().await {
                if let Ok(mut arrivals) = arrivals.lock() {
                    arrivals.entry(delivery.id).or_default().push(Instant::now());
                }
            }
        }));
        handles.push((handle, keypair));
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate_per_s.max(1) as f64);
    let mut published: Vec<(Id, Instant)> = Vec::with_capacity(args.messages);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    for n in 0..args.messages {
        ticker.tick().await;
        let (handle, keypair) = &handles[rng.below(handles.len())];
        let offer = local::offer(keypair, &network, &pool, n as u64, now_ms());
        let sent = Instant::now();
        handle.publish(&offer, None, now_ms()).await?;
        published.push((offer.id(), sent));
    }
    let publish_s = start.elapsed().as_secs_f64();
    let needed = ((args.peers - 1) as f64 * 0.99).ceil() as usize;
    let everyone = |arrivals: &HashMap<Id, Vec<Instant>>| {
        published.iter().all(|(id, _)| arrivals.get(id).is_some_and(|times| times.len() >= needed))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !arrivals.lock().map(|a| everyone(&a)).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_s = start.elapsed().as_secs_f64();
    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = Vec::new();
    for (id, sent) in &published {
        let Some(times) = arrivals.get(id) else { continue };
        let mut times: Vec<Instant> = times.clone();
        times.sort();
        if times.len() >= needed {
            latencies.push(times[needed - 1].duration_since(*sent).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let deliveries: usize = arrivals.values().map(Vec::len).sum();
    for (handle, _) in &handles {
        handle.shutdown().await;
    }
    for collector in collectors {
        collector.abort();
    }
    Ok(GossipReport {
        peers: args.peers,
        links: links.len(),
        messages: args.messages,
        complete: latencies.len(),
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        deliveries_per_s: deliveries as f64 / total_s.max(publish_s),
        published_per_s: args.messages as f64 / publish_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topology_is_connected_and_near_the_degree() {
        let links = topology(50, 6, &mut SplitMix(1));
        assert!(links.len() >= 140 && links.len() <= 150, "{}", links.len());
        // Connected: a ring is part of it.
        for i in 0..50 {
            let ring = (i.min((i + 1) % 50), i.max((i + 1) % 50));
            assert!(links.contains(&ring));
        }
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }
}
