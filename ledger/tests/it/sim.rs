//! Seeded simulations of four validators under faults (see `ledger::sim`). `KOS_SIM_SEEDS` sets how many seeds
//! (default 200), `KOS_SIM_FIRST` the first; a failing seed is printed and replays exactly with
//! `KOS_SIM_FIRST=<seed> KOS_SIM_SEEDS=1`.

use ledger::sim::{Byzantine, Sim};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// With `KOS_SIM_DEBUG` set, the engine's and Malachite's logs go to stderr (`RUST_LOG` filters them).
fn debug_logs() {
    if std::env::var_os("KOS_SIM_DEBUG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).without_time().with_ansi(false).try_init();
    }
}

#[test]
fn seeded_simulations_keep_agreement_validity_durability_and_liveness() {
    debug_logs();
    let first = env("KOS_SIM_FIRST", 0);
    let count = env("KOS_SIM_SEEDS", 200);
    let mut failures = Vec::new();
    let mut blocks = 0;
    // Runs whose Byzantine validator forges signatures, and those of them in which an honest node reported it.
    let mut forging = (0, 0);
    // Runs whose Byzantine validator equivocates, and those in which an honest node saw two blocks of one round.
    let mut equivocating = (0, 0);
    for seed in first..first + count {
        let report = Sim::run(seed);
        blocks += report.heights.iter().max().copied().unwrap_or(0);
        if report.scenario.byzantine == Some(Byzantine::BadSignatures) {
            forging.0 += 1;
            forging.1 += u64::from(report.byzantine_reported > 0);
        }
        if report.scenario.byzantine == Some(Byzantine::Equivocate) {
            equivocating.0 += 1;
            equivocating.1 += u64::from(report.equivocations_reported > 0);
        }
        if !report.ok() {
            eprintln!("seed {seed} failed: {:?}\n  scenario {:?}", report.violations, report.scenario);
            failures.push(seed);
        }
    }
    eprintln!(
        "{count} seeds, {blocks} blocks committed; {} of {} forging validators reported; {} of {} equivocating \
         validators seen proposing two blocks for a round",
        forging.1, forging.0, equivocating.1, equivocating.0
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    // Honest nodes never report one another (a violation above); a validator that forges is reported.
    assert_eq!(forging.1, forging.0, "a validator that forged signatures went unreported");
    // A proposer that equivocates is seen doing it (in runs where it got to propose while others heard both blocks).
    assert!(equivocating.0 == 0 || equivocating.1 > 0, "no equivocating proposer was ever reported");
}

#[test]
fn a_seed_replays_exactly() {
    let first = Sim::run(42);
    let again = Sim::run(42);
    assert_eq!(first.heights, again.heights);
    assert_eq!(first.messages, again.messages);
    assert_eq!(first.committed_entries, again.committed_entries);
}
