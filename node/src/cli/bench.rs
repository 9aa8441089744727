//! `kos bench …`: runs a benchmark of the node's crate (`crate::bench*`) and prints its report.

use std::io::Write as _;

use super::BenchCommand;

/// Runs one `kos bench` command and prints its report.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Gossip { peers, degree, messages, rate, seed } => {
            gossip_command(peers, degree, messages, rate, seed)
        }
        BenchCommand::Ledger { rate, seconds, clients, readers, keep_blocks, snapshot_interval, keep_dir } => {
            ledger_command(crate::bench::consensus::LedgerArgs {
                rate_per_s: rate,
                seconds,
                clients,
                readers,
                keep_blocks,
                snapshot_interval,
                keep_dir,
            })
        }
        BenchCommand::Reopen { dir, validator, small } => reopen_command(&dir, validator, small),
        BenchCommand::Governance { rounds } => governance_command(rounds),
        BenchCommand::Jobs { jobs, searches, rounds } => jobs_command(jobs, searches, rounds),
        BenchCommand::Energy { homes, day, reading_homes, reading_intervals, block_entries, seed } => {
            energy_command(homes, day, reading_homes, reading_intervals, block_entries, seed)
        }
        BenchCommand::Market { operations, auction_orders, repetitions, seed } => {
            market_command(operations, auction_orders, repetitions, seed)
        }
        BenchCommand::Cells { days, month, loss_ppm, seed } => cells_command(days, month, loss_ppm, seed),
        BenchCommand::Pools { nodes, cells, providers, seed, together, at_start } => {
            pools_command(crate::bench::pools::PoolsArgs { nodes, cells, providers, seed, together, at_start })
        }
    }
}

/// `kos bench cells`: the false-positive rate of honest streets under several meter errors, and the detection rate
/// of a home over-reporting its export by several amounts.
fn cells_command(days: u32, month: u32, loss_ppm: u32, seed: u64) -> anyhow::Result<()> {
    use ::ledger::cellsim::{CellSim, Liar, Noise};
    anyhow::ensure!((1..=12).contains(&month) && (1..=31).contains(&days), "--month 1..=12, --days 1..=31");
    let street = |meter_noise, liar, attested| CellSim {
        pv_kwp: vec![10.0, 0.0, 6.0, 8.0, 0.0, 5.0, 12.0, 4.0],
        days,
        month,
        meter_noise,
        feeder_noise: meter_noise,
        loss_ppm,
        liar,
        attested,
        seed,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "street of 8 homes (2 without PV), {days} days from 2025-{month:02}-01, losses {loss_ppm} ppm")?;
    writeln!(out, "meter error              intervals  unbalanced  false-positive rate  implausible alerts")?;
    for (name, noise) in [
        ("bounded ±0.5 %", Noise::Bounded(5_000)),
        ("bounded ±1 %", Noise::Bounded(10_000)),
        ("gaussian σ 0.5 %", Noise::Gaussian(5_000)),
        ("gaussian σ 1 %", Noise::Gaussian(10_000)),
        ("gaussian σ 2 %", Noise::Gaussian(20_000)),
    ] {
        let started = std::time::Instant::now();
        let report = ::ledger::cellsim::run(&street(noise, None, false));
        writeln!(
            out,
            "{name:<24} {:>9}  {:>10}  {:>18.3} %  {:>18}   ({:.1} s)",
            report.intervals,
            report.unbalanced,
            100.0 * report.unbalanced as f64 / report.intervals.max(1) as f64,
            report.honest_alerts,
            started.elapsed().as_secs_f64()
        )?;
    }
    writeln!(out, "liar (home of 8 kWp), meters ±0.5 %; neighbours' meters signing (device) or not (node):")?;
    writeln!(
        out,
        "over-report  neighbours  lying intervals  unbalanced  liar named  honest named  implausible (liar)"
    )?;
    for over_ppm in [50_000u32, 100_000, 200_000, 500_000] {
        for attested in [false, true] {
            let report =
                ::ledger::cellsim::run(&street(Noise::Bounded(5_000), Some(Liar { home: 3, over_ppm }), attested));
            writeln!(
                out,
                "{:>10} %  {:>10}  {:>15}  {:>10}  {:>10} ({:>4})  {:>12}  {:>18}  {:>7}",
                over_ppm / 10_000,
                if attested { "device" } else { "node" },
                report.lied,
                report.unbalanced,
                report.liar_named,
                report.liar_first,
                report.honest_named,
                report.liar_alerts,
                report.refused
            )?;
        }
    }
    Ok(())
}

/// `kos bench pools`: runs it and prints its report.
fn pools_command(args: crate::bench::pools::PoolsArgs) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench::pools::pools(&args))?;
    let args = &args;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "nodes {} cells {} providers per pool {} (settled in {:.1} s, {}); newcomers {}",
        report.nodes,
        report.cells,
        report.providers,
        report.settle_s,
        match (args.at_start, report.quiet_s) {
            (true, _) => "newcomers while the network starts".to_string(),
            (false, Some(quiet)) => format!("network at rest after {quiet:.1} s"),
            (false, None) => "the network never came to rest".to_string(),
        },
        if args.together { "all at once" } else { "one after another" }
    )?;
    writeln!(
        out,
        "newcomer holds its pool's book: {} of {}, p50 {:.0} ms, p99 {:.0} ms",
        report.books, report.cells, report.book_p50_ms, report.book_p99_ms
    )?;
    let steps = &report.steps;
    let step = |times: &[f64]| {
        format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            crate::bench::percentile(times, 0.5),
            crate::bench::percentile(times, 0.99)
        )
    };
    writeln!(
        out,
        "  on the way: a provider found {}; a peer of the pool connected {}; a peer's answer with the book {}",
        step(&steps.providers),
        step(&steps.subscribed),
        step(&steps.filled)
    )?;
    writeln!(
        out,
        "newcomer's bid reaches a provider: {} of {}, p50 {:.0} ms, p99 {:.0} ms",
        report.matches, report.cells, report.match_p50_ms, report.match_p99_ms
    )?;
    writeln!(
        out,
        "connections: most peers of a node {} (peers_max {}); dialed for pools most {} mean {:.2} (budget {})",
        report.peers_max_seen, report.peers_max, report.pool_peers_max_seen, report.pool_peers_mean, report.pool_budget
    )?;
    for (when, churn) in [("before the newcomers", report.churn_before), ("with the newcomers", report.churn_newcomers)]
    {
        let per_s = |count: u64| count as f64 / churn.seconds.max(1e-3);
        writeln!(
            out,
            "churn {when}, over {:.0} s, all nodes: {} peers connected ({:.0}/s), {} trimmed ({:.0}/s)",
            churn.seconds,
            churn.connected,
            per_s(churn.connected),
            churn.trimmed,
            per_s(churn.trimmed)
        )?;
    }
    Ok(())
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
fn ledger_command(args: crate::bench::consensus::LedgerArgs) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    if let Some(keep) = args.keep_blocks {
        anyhow::ensure!(
            keep >= ledger::store::KEEP_BLOCKS_MIN,
            "--keep-blocks must be at least {}",
            ledger::store::KEEP_BLOCKS_MIN
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench::consensus::ledger(&args))?;
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
    if let Some(state_sync) = &report.state_sync {
        writeln!(
            out,
            "state sync of a fresh node: the snapshot of block {} ({} pairs, {} chunks, {:.1} MiB), then {} blocks: \
             current in {:.1} s (the snapshot taken in {:.1} s)",
            state_sync.height,
            state_sync.pairs,
            state_sync.chunks,
            state_sync.bytes as f64 / (1 << 20) as f64,
            state_sync.blocks_after,
            state_sync.seconds,
            state_sync.snapshot_seconds
        )?;
    }
    if let Some(seconds) = report.reopen_seconds {
        writeln!(out, "restart: validator 0's ledger opened again (state loaded, root checked) in {seconds:.2} s")?;
    }
    for (index, (bytes, prunes)) in report.disk.iter().enumerate() {
        let kept = if *prunes { "keeps the last blocks" } else { "keeps every block" };
        writeln!(out, "validator {index} ({kept}): {:.1} MiB on disk", *bytes as f64 / (1 << 20) as f64)?;
    }
    if args.readers > 0 {
        writeln!(
            out,
            "reads of account balances by {} readers: {} answered, p50 {:.2} ms, p99 {:.2} ms",
            args.readers, report.reads, report.read_p50_ms, report.read_p99_ms
        )?;
    }
    Ok(())
}

/// `kos bench reopen`: see [`crate::bench::consensus::reopen_kept`].
fn reopen_command(dir: &std::path::Path, validator: usize, small: bool) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    let profile = if small { ledger::store::Profile::Small } else { ledger::store::Profile::Standard };
    let report = crate::bench::consensus::reopen_kept(dir, validator, profile)?;
    writeln!(
        std::io::stdout().lock(),
        "opened validator-{validator}'s ledger (height {}, {} state pairs, {profile:?} profile) in {:.2} s",
        report.height,
        report.pairs,
        report.seconds
    )?;
    let checked = match report.verify_seconds {
        Some(seconds) => format!("its pairs checked against the summary kept with it in {seconds:.2} s"),
        None => "no summary kept with it: the open summed the state".into(),
    };
    writeln!(std::io::stdout().lock(), "after the start (in the background in `kos run`): {checked}")?;
    Ok(())
}

/// `kos bench governance`: runs it and prints its report.
fn governance_command(rounds: usize) -> anyhow::Result<()> {
    crate::run::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(crate::bench::governance::governance(rounds.max(1)))?;
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
    let report = runtime.block_on(crate::bench::jobs::jobs(jobs.max(1), searches.max(1), rounds.max(1)))?;
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
fn args_day(args: &crate::bench::readings::EnergyArgs) -> String {
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
    let args = crate::bench::readings::EnergyArgs {
        homes: homes.clone(),
        day: (year, month, date),
        reading_homes,
        reading_intervals,
        block_entries,
        seed,
    };
    let mut out = std::io::stdout().lock();
    let report = crate::bench::readings::readings(&args)?;
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
        let day = crate::bench::readings::day(count, &args)?;
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
    let args = crate::bench::matching::MarketArgs { operations, auction_orders, repetitions, seed };
    let report = crate::bench::matching::market(&args);
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
