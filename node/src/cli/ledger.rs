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
    /// With founders, also the bootnodes file joiners dial; prints the genesis hash to publish.
    Genesis {
        #[arg(long, default_value = "kos-devnet")]
        network: NetworkId,
        /// A validator's public key (hex; `kos keys show` prints it). Repeatable.
        #[arg(long = "validator", value_parser = parse_key)]
        validators: Vec<PublicKey>,
        /// A founding validator and the address it listens on, `KEY@MULTIADDR`
        /// (`3cac…bdc@/ip4/203.0.113.7/tcp/7070`): a validator of the genesis and a bootnode (its peer id, derived
        /// from the key, is appended). Repeatable.
        #[arg(long = "founder", value_parser = parse_founder)]
        founders: Vec<(PublicKey, String)>,
        /// Where to write the bootnodes file; default `bootnodes.txt` beside `--out` when founders are given.
        #[arg(long)]
        bootnodes: Option<PathBuf>,
        /// Replace existing files (a published genesis is never overwritten by accident).
        #[arg(long)]
        force: bool,
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
    /// Check a genesis file (every rule of PROTOCOL.md §10; an error names what is wrong) and print its hash, the
    /// one its network publishes.
    GenesisHash {
        /// The genesis file.
        file: PathBuf,
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
        /// Also say what the re-execution exercised: the entries by kind, the effects by kind, the kinds of entry
        /// that no block held, and the final state's keys by prefix.
        #[arg(long)]
        state: bool,
    },
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(text).map_err(|error| error.to_string())
}

/// `KEY@MULTIADDR` of `--founder`: the key and the bootnode address with the key's peer id appended.
fn parse_founder(text: &str) -> Result<(PublicKey, String), String> {
    let (key, address) = text.split_once('@').ok_or_else(|| format!("{text:?} is not KEY@MULTIADDR"))?;
    let key = parse_key(key)?;
    let address: libp2p::Multiaddr = address.parse().map_err(|error| format!("{address:?}: {error}"))?;
    use libp2p::multiaddr::Protocol;
    if address.iter().any(|part| matches!(part, Protocol::P2p(_))) {
        return Err(format!("{address}: give the address without /p2p/ (the key gives the peer id)"));
    }
    // Joiners dial it: a host others can reach (not 0.0.0.0 or ::) and a TCP port, as `kos init --listen` sets.
    let mut parts = address.iter();
    let host_ok = match parts.next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
        _ => false,
    };
    if !host_ok || !matches!(parts.next(), Some(Protocol::Tcp(port)) if port > 0) {
        return Err(format!(
            "{address:?}: give the address joiners dial, /ip4/ADDRESS/tcp/PORT (or /ip6/ or /dns/), not 0.0.0.0"
        ));
    }
    let peer = crate::keyfile::peer_id_of(&key).map_err(|error| format!("{key}: {error}"))?;
    Ok((key, format!("{address}/p2p/{peer}")))
}

/// What `kos ledger genesis` was asked for.
struct Founding {
    network: NetworkId,
    validators: Vec<PublicKey>,
    founders: Vec<(PublicKey, String)>,
    bootnodes: Option<PathBuf>,
    force: bool,
    funded: Vec<PublicKey>,
    amount: u64,
    time_ms: Option<u64>,
    out: Option<PathBuf>,
}

/// `kos ledger genesis`: the genesis file, and with founders the bootnodes file; prints the genesis hash.
fn write_genesis(founding: Founding) -> anyhow::Result<()> {
    let Founding { network, validators, founders, bootnodes, force, funded, amount, time_ms, out } = founding;
    let time_ms = match time_ms {
        Some(time_ms) => time_ms,
        None => super::now_ms()?,
    };
    let mut all = validators;
    all.extend(founders.iter().map(|(key, _)| *key));
    if all.is_empty() {
        bail!("name the network's validators: --founder KEY@ADDRESS or --validator KEY (repeatable)");
    }
    let text = Genesis::devnet_text(network.as_str(), time_ms, &all, &funded, amount);
    let genesis = Genesis::parse(&text).context("the generated genesis")?;
    let bootnodes = match (bootnodes, &out) {
        (Some(path), _) => Some(path),
        (None, Some(out)) if !founders.is_empty() => Some(out.parent().unwrap_or(Path::new(".")).join("bootnodes.txt")),
        (None, _) if !founders.is_empty() => {
            bail!("--founder writes a bootnodes file: give --out or --bootnodes")
        }
        (None, _) => None,
    };
    if bootnodes.is_some() && founders.is_empty() {
        bail!("--bootnodes lists the founders' addresses: give them with --founder KEY@ADDRESS");
    }
    for path in out.iter().chain(bootnodes.iter()) {
        if path.exists() && !force {
            bail!("{} exists; pass --force to replace it (a published genesis must never change)", path.display());
        }
    }
    match out {
        Some(path) => {
            std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    if let Some(path) = bootnodes {
        let mut list = format!("# Bootnodes of {network}: its founding validators. Genesis hash {}\n", genesis.hash);
        for (_, address) in &founders {
            list.push_str(address);
            list.push('\n');
        }
        std::fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // What the founders publish beside the files, and joiners check (`kos init --genesis-hash`).
    eprintln!("genesis hash {}", genesis.hash);
    Ok(())
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
        LedgerCommand::Genesis { network, validators, founders, bootnodes, force, funded, amount, time_ms, out } => {
            let founding = Founding { network, validators, founders, bootnodes, force, funded, amount, time_ms, out };
            write_genesis(founding)
        }
        LedgerCommand::GenesisHash { file } => {
            let genesis = Genesis::load(&file)?;
            println!("{}", genesis.hash);
            Ok(())
        }
        LedgerCommand::Export { out, genesis, ledger } => {
            let (genesis, path) = local_ledger(paths, genesis, ledger)?;
            let reader = ledger::store::RocksStore::open_read_only(&path)?;
            every_block_kept(&reader)?;
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
        LedgerCommand::Verify { file: Some(file), genesis, state, .. } => {
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
            report(&verifier, expected.is_some(), state)
        }
        LedgerCommand::Verify { file: None, genesis, ledger, state } => {
            let (genesis, path) = local_ledger(paths, genesis, ledger)?;
            let reader = ledger::store::RocksStore::open_read_only(&path)?;
            every_block_kept(&reader)?;
            let mut verifier = Verifier::new(genesis);
            for height in 1..=reader.tip()? {
                let stored = reader.block(height)?.with_context(|| format!("block {height} is missing"))?;
                verifier.push(&stored).map_err(|problem| anyhow::anyhow!("verification failed: {problem}"))?;
            }
            report(&verifier, true, state)
        }
    }
}

/// Export and verification replay every block from the genesis: a pruned ledger (`[storage] mode = "full"`) has
/// not got them.
fn every_block_kept(reader: &ledger::store::RocksReader) -> anyhow::Result<()> {
    let first = reader.first()?;
    anyhow::ensure!(
        first <= 1,
        "this ledger is pruned: it keeps blocks from height {first} on ([storage] mode = \"full\"), and exporting or \
         verifying needs every block from 1; use an archive node's ledger (mode = \"archive\")"
    );
    Ok(())
}

/// What was verified. An export carries its own genesis, so a ledger verified without `--genesis` proves only that
/// it follows from *a* genesis: the report names that genesis' hash for the reader to compare with their network's.
fn report(verifier: &Verifier, genesis_compared: bool, state: bool) -> anyhow::Result<()> {
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
    if state {
        report_state(&mut out, verifier)?;
    }
    Ok(())
}

/// `--state`: what the re-execution exercised, so that whoever re-executes the ledger independently knows which
/// rules its agreement covered (PROTOCOL.md §10, *export*).
fn report_state(out: &mut dyn std::io::Write, verifier: &Verifier) -> anyhow::Result<()> {
    let counts = |counts: &mut dyn Iterator<Item = (&str, u64)>| {
        let listed: Vec<String> = counts.map(|(name, count)| format!("{name} {count}")).collect();
        if listed.is_empty() { "none".to_owned() } else { listed.join(", ") }
    };
    let kinds = verifier.kinds();
    writeln!(out, "entries by kind: {}", counts(&mut kinds.iter().map(|(name, count)| (*name, *count))))?;
    let missing: Vec<&str> = protocol::message::Kind::ALL
        .iter()
        .filter(|kind| ledger::state::is_entry_kind(**kind) && !kinds.contains_key(kind.name()))
        .map(|kind| kind.name())
        .collect();
    writeln!(
        out,
        "entry kinds not exercised: {}",
        if missing.is_empty() { "none".to_owned() } else { missing.join(", ") }
    )?;
    writeln!(out, "effects: {}", counts(&mut verifier.effects().iter().map(|(name, count)| (*name, *count))))?;
    let mut prefixes: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (key, _) in verifier.state().pairs() {
        let prefix = key.first().map_or_else(String::new, |byte| char::from(*byte).to_string());
        *prefixes.entry(prefix).or_default() += 1;
    }
    let total: u64 = prefixes.values().sum();
    writeln!(out, "state: {total} keys; by prefix: {}", counts(&mut prefixes.iter().map(|(p, n)| (p.as_str(), *n))))?;
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
