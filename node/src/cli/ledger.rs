//! `kos ledger ...` and `kos sim`: genesis files, export and verification of a ledger, seeded simulations.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use ledger::Genesis;
use ledger::verify::{ExportWriter, Verifier, verify_export};
use protocol::{NetworkId, PublicKey};

use super::Paths;

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Write a genesis file for a new network: its validators (equal power), and accounts funded with credit.
    Genesis {
        #[arg(long, default_value = "kos-devnet")]
        network: NetworkId,
        /// A validator's public key (hex; `kos keys show` prints it). Repeatable.
        #[arg(long = "validator", required = true, value_parser = parse_key)]
        validators: Vec<PublicKey>,
        /// An account to fund with credit at genesis (hex public key). Repeatable.
        #[arg(long = "fund", value_parser = parse_key)]
        funded: Vec<PublicKey>,
        /// Credit each funded account receives, in milli-units.
        #[arg(long, default_value_t = 1_000_000_000)]
        amount: u64,
        /// The genesis time, Unix milliseconds; default now.
        #[arg(long)]
        time_ms: Option<u64>,
        /// Where to write it; default stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the node's ledger (genesis, blocks, certificates) to a file anyone can verify (PROTOCOL.md §10).
    Export {
        /// The output file; `-` for stdout.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// The genesis file; default from the config, else `<data-dir>/genesis.toml`.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// The ledger directory; default from the config, else `<data-dir>/ledger`.
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Verify a ledger end to end: every certificate, every entry, every state root. Without a file, verifies
    /// this node's own ledger.
    Verify {
        /// An export file; `-` for stdin.
        file: Option<PathBuf>,
        /// The genesis file the export must start from (its hash is compared); for the node's own ledger, the
        /// genesis to verify against (default from the config).
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// The ledger directory, when verifying the node's own ledger.
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(text).map_err(|error| error.to_string())
}

/// The genesis and ledger directory of the node in `paths`, as `kos run` would find them.
fn local_ledger(
    paths: &Paths,
    genesis: Option<PathBuf>,
    ledger: Option<PathBuf>,
) -> anyhow::Result<(Arc<Genesis>, PathBuf)> {
    let config = crate::config::Config::load(&crate::config::default_path(&paths.data_dir), false)?;
    let genesis_path = genesis.or(config.ledger.genesis.clone()).unwrap_or_else(|| paths.data_dir.join("genesis.toml"));
    let genesis = Genesis::load(&genesis_path).with_context(|| format!("reading {}", genesis_path.display()))?;
    let path = ledger.or(config.ledger.path).unwrap_or_else(|| paths.data_dir.join("ledger"));
    if !path.exists() {
        bail!("no ledger in {}: run the node first, or give --ledger", path.display());
    }
    Ok((Arc::new(genesis), path))
}

pub fn run(paths: &Paths, command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Genesis { network, validators, funded, amount, time_ms, out } => {
            let time_ms = match time_ms {
                Some(time_ms) => time_ms,
                None => super::now_ms()?,
            };
            let text = Genesis::devnet_text(network.as_str(), time_ms, &validators, &funded, amount);
            let genesis = Genesis::parse(&text).context("the generated genesis")?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {} (genesis hash {})", path.display(), genesis.hash);
                }
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            Ok(())
        }
        LedgerCommand::Export { out, genesis, ledger } => {
            let (genesis, path) = local_ledger(paths, genesis, ledger)?;
            let reader = ledger::store::RocksStore::open_read_only(&path)?;
            let tip = reader.tip()?;
            let mut file: Box<dyn std::io::Write> = if out == Path::new("-") {
                Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
            } else {
                let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
                Box::new(std::io::BufWriter::new(file))
            };
            let mut writer = ExportWriter::new(&mut file, &genesis)?;
            for height in 1..=tip {
                let stored = reader.block(height)?.with_context(|| format!("block {height} is missing"))?;
                writer.block(&stored)?;
            }
            writer.finish()?;
            file.flush()?;
            eprintln!("exported {tip} blocks of {} (genesis {})", genesis.network, genesis.hash);
            Ok(())
        }
        LedgerCommand::Verify { file: Some(file), genesis, .. } => {
            let mut input: Box<dyn std::io::Read> = if file == Path::new("-") {
                Box::new(std::io::BufReader::new(std::io::stdin().lock()))
            } else {
                let opened = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
                Box::new(std::io::BufReader::new(opened))
            };
            let expected = match &genesis {
                Some(path) => Some(Genesis::load(path).with_context(|| format!("reading {}", path.display()))?),
                None => None,
            };
            let verifier = verify_export(&mut input, expected.as_ref())?;
            report(&verifier, expected.is_some())
        }
        LedgerCommand::Verify { file: None, genesis, ledger } => {
            let (genesis, path) = local_ledger(paths, genesis, ledger)?;
            let reader = ledger::store::RocksStore::open_read_only(&path)?;
            let mut verifier = Verifier::new(genesis);
            for height in 1..=reader.tip()? {
                let stored = reader.block(height)?.with_context(|| format!("block {height} is missing"))?;
                verifier.push(&stored).map_err(|problem| anyhow::anyhow!("verification failed: {problem}"))?;
            }
            report(&verifier, true)
        }
    }
}

/// What was verified. An export carries its own genesis, so a ledger verified without `--genesis` proves only that
/// it follows from *a* genesis: the report names that genesis' hash for the reader to compare with their network's.
fn report(verifier: &Verifier, genesis_compared: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let genesis = verifier.state().genesis_info();
    writeln!(out, "verified {} blocks, {} entries", verifier.height(), verifier.entries())?;
    writeln!(out, "tip {}", verifier.tip_hash())?;
    writeln!(out, "state root {}", verifier.state().root())?;
    writeln!(out, "network {}, genesis {}", genesis.network, genesis.hash)?;
    if !genesis_compared {
        writeln!(
            out,
            "the genesis is the export's own: compare its hash with your network's genesis file (or pass --genesis)"
        )?;
    }
    Ok(())
}

#[cfg(feature = "tools")]
/// `kos sim`: seeded simulations of four validators under faults (the same harness the tests run).
pub fn sim(first: u64, seeds: u64) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let mut blocks = 0;
    let started = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    for seed in first..first.saturating_add(seeds) {
        let report = ledger::sim::Sim::run(seed);
        blocks += report.heights.iter().max().copied().unwrap_or(0);
        if !report.ok() {
            writeln!(out, "seed {seed} FAILED: {:?}\n  scenario {:?}", report.violations, report.scenario)?;
            failures.push(seed);
        }
        let done = seed - first + 1;
        if done.is_multiple_of(100) {
            writeln!(out, "{done} seeds, {} failed, {:.0} s", failures.len(), started.elapsed().as_secs_f64())?;
        }
    }
    writeln!(out, "{seeds} seeds from {first}: {blocks} blocks committed, {} failed", failures.len())?;
    if !failures.is_empty() {
        bail!(
            "failing seeds {failures:?}; replay one with `kos sim --first <seed> --seeds 1` (KOS_SIM_DEBUG=1 traces it)"
        );
    }
    Ok(())
}
