//! The `kos` command line: subcommands split by concern, errors that say what to do.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use protocol::message::{Offer, PoolId, Side};
use protocol::{Body, Draft, NetworkId, amount};

use crate::clock::try_now_ms as now_ms;
use crate::keyfile;

#[cfg(feature = "tools")]
mod bench;
mod ledger;
mod market;
pub mod node;

/// kos — a peer-to-peer market where homes and microgrids trade energy and other resources with their neighbours.
#[derive(Debug, Parser)]
#[command(name = "kos", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub paths: Paths,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the node keeps its files.
#[derive(Debug, Args)]
pub struct Paths {
    /// The node's data directory (key, config, ledger).
    #[arg(long, global = true, env = "KOS_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// The key file; defaults to `<data-dir>/node.key`.
    #[arg(long, global = true, env = "KOS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl Paths {
    /// The key file in use.
    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.data_dir.join("node.key"))
    }
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".kos"), |home| PathBuf::from(home).join(".kos"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prepare a data directory to join a network: key, genesis file, bootnodes, config, API token.
    Init(node::InitArgs),
    /// Run the node: join the network and serve until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Start a local devnet: 4 validators and N simulated homes as separate processes on loopback, trading a
    /// simulated day at accelerated time; prints a live summary and serves the dashboard.
    Devnet(crate::devnet::DevnetArgs),
    /// The running node's status (through its API).
    Status(ApiArgs),
    /// An account's balances on the ledger (through the node's API); the node's own account by default.
    Balance {
        /// The account (public key, 64 hex digits).
        account: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Assets: manifests of meters, batteries, shared storage and pods, whose rated limits hold their readings.
    #[command(subcommand)]
    Asset(node::AssetAction),
    /// Guilds: shared accounts whose spending needs k of n members' approvals (through the node's API).
    #[command(subcommand)]
    Guild(node::GuildAction),
    /// Governance: proposals, votes, overrides (through the node's API, signed with its key).
    #[command(subcommand)]
    Gov(node::GovAction),
    /// Jobs: post, bid, award, deliver, accept or dispute (through the node's API, signed with its key).
    #[command(subcommand)]
    Job(node::JobAction),
    /// Send tokens from the node's account (through the node's API, signed with its key).
    Transfer {
        /// The receiving account (public key, 64 hex digits).
        #[arg(long)]
        to: String,
        /// The token id: credit, eco...
        #[arg(long, default_value = "credit")]
        token: String,
        /// The amount in tokens, up to 3 decimals: 12.5.
        #[arg(long)]
        amount: String,
        /// A note for the receiver.
        #[arg(long)]
        memo: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Measure real components on this machine (figures for BENCHMARKS.md).
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create or show the node's ed25519 key (it signs messages and is the node's peer id).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Make signed offers.
    #[command(subcommand)]
    Offer(OfferCommand),
    /// Check signed messages.
    #[command(subcommand)]
    Message(MessageCommand),
    /// The wire protocol's reference material.
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Protocol(ProtocolCommand),
    /// The replicated ledger: genesis files, export, verification.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Matching mechanisms on their own: clear a file of bids and asks.
    #[command(subcommand)]
    Market(market::MarketCommand),
    /// Run seeded simulations of four validators under faults (drops, partitions, crashes, a Byzantine
    /// validator) and check agreement, validity, durability and liveness.
    #[cfg(feature = "tools")]
    Sim {
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// How many seeds.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
    },
}

/// Settings of `kos run`; each flag overrides the config file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file; default `<data-dir>/config.toml` (defaults apply if it does not exist).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Network id to join.
    #[arg(long)]
    pub network: Option<String>,
    /// Listen address (repeatable; replaces the config's list): /ip4/0.0.0.0/tcp/7070.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Bootnode to dial (repeatable; added to the config's list).
    #[arg(long)]
    pub bootnode: Vec<String>,
    /// Pool this node is in for good (repeatable; added to the config's list): energy/credit/u33db/900, or a barter
    /// pool: barter/u33db.
    #[arg(long)]
    pub pool: Vec<String>,
    /// Find peers on the local network by mDNS.
    #[arg(long)]
    pub mdns: Option<bool>,
    /// Log filter, e.g. `info` or `kos=debug`.
    #[arg(long)]
    pub log: Option<String>,
    /// The network's genesis file (default `<data-dir>/genesis.toml`); without one the node keeps no ledger.
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Address of the HTTP API (default 127.0.0.1:7080); `""` turns it off.
    #[arg(long)]
    pub api: Option<String>,
    /// Execute every block from the genesis, never a state snapshot from peers (`[ledger] state_sync = false`).
    #[arg(long)]
    pub replay: bool,
}

#[cfg(feature = "tools")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Start 4 validators on loopback (real swarms, RocksDB in temporary directories), submit signed transfers
    /// and measure committed entries/s, finality latency and the sync speed of a fresh node.
    Ledger {
        /// Entries per second submitted across the validators; 0: as fast as they take them.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Signing accounts.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Readers of account balances at the first validator during the load (each reads again as soon as it has
        /// an answer); their read latency is reported.
        #[arg(long, default_value_t = 0)]
        readers: usize,
        /// The last two validators keep only this many blocks (`[storage] mode = "full"`, at least 1,024); each
        /// validator's disk use is reported.
        #[arg(long)]
        keep_blocks: Option<u64>,
        /// The validators write a snapshot of the state every this many blocks (`[storage] snapshot_interval`); after
        /// the replay, a second fresh node takes the newest one (state sync), and its time to a current ledger is
        /// reported. 0: no snapshots, no state sync.
        #[arg(long, default_value_t = 0)]
        snapshot_interval: u64,
        /// Keep the validators' directories here (`validator-0` …, and `genesis.toml`) after the run, for `kos
        /// bench reopen`; the directory must not exist yet. Unset: temporary directories.
        #[arg(long)]
        keep_dir: Option<std::path::PathBuf>,
    },
    /// Open a ledger that `kos bench ledger --keep-dir` kept (after the bench, or after `kill -9` of it) as `kos
    /// run` opens it at a restart, and print the time it took.
    Reopen {
        /// The directory given to `--keep-dir`.
        dir: std::path::PathBuf,
        /// Whose ledger: validator 0 to 3.
        #[arg(long, default_value_t = 0)]
        validator: usize,
        /// Open it with the small storage profile (a home's: the state read through RocksDB, not loaded).
        #[arg(long)]
        small: bool,
    },
    /// Governance on 4 validators on loopback (real swarms and RocksDB): from a proposal's passing block to its
    /// effect on every node, and from a freeze passing to every node refusing the frozen account's offers.
    Governance {
        /// Rounds of each measurement.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// The job marketplace: open jobs indexed and searched per second, assigning 1,000 requests to 100 providers
    /// (time and gap to the exact optimum), and award to escrow on 4 validators on loopback.
    Jobs {
        /// Open jobs indexed.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Worker searches.
        #[arg(long, default_value_t = 10_000)]
        searches: usize,
        /// Awards measured.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Readings validated and anchored per second, and a simulated day of neighbourhoods of N homes with and
    /// without a local energy market (self-sufficiency, share of energy traded between neighbours).
    Energy {
        /// Neighbourhood sizes (repeat the flag).
        #[arg(long = "homes", default_values_t = [10usize, 100])]
        homes: Vec<usize>,
        /// The simulated day, YYYY-MM-DD.
        #[arg(long, default_value = "2025-06-21")]
        day: String,
        /// Homes signing readings in the readings benchmark.
        #[arg(long, default_value_t = 1000)]
        reading_homes: usize,
        /// 15-minute intervals each of them signs.
        #[arg(long, default_value_t = 24)]
        reading_intervals: usize,
        /// Readings per block when anchoring.
        #[arg(long, default_value_t = 1000)]
        block_entries: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A cell's feeder balance and plausibility through the state machine: a street of simulated homes (the H25
    /// profile, one sky) and its feeder meter for a month, under several meter errors: how often honest homes are
    /// flagged (false positives), and how often a home over-reporting its export is caught and named.
    Cells {
        /// Simulated days per run.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// The month (of 2025).
        #[arg(long, default_value_t = 6)]
        month: u32,
        /// Line losses, ppm of the members' gross flows.
        #[arg(long, default_value_t = 10_000)]
        loss_ppm: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Pools among strangers: N nodes in this process (real swarms, Kademlia, no mDNS) with a few providers per
    /// cell's pool; one newcomer per cell joins knowing none of them. The time until each newcomer holds its pool's
    /// book and until its bid reaches a provider, p50/p99, and the connections every node keeps for pools.
    Pools {
        /// Nodes in all, newcomers included.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Cells, each with its own pool and one newcomer (at most 10).
        #[arg(long, default_value_t = 10)]
        cells: usize,
        /// Providers per cell's pool.
        #[arg(long, default_value_t = 3)]
        providers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Start all newcomers at once (by default one after another, each measured alone: in one process on a
        /// small machine, ten nodes booting at once slow each other down).
        #[arg(long)]
        together: bool,
        /// Let the newcomers come as soon as the providers found each other, while the hundred nodes are still
        /// starting (their DHT bootstraps open hundreds of connections a second), rather than once the network is at
        /// rest.
        #[arg(long)]
        at_start: bool,
    },
    /// Order operations/s of the continuous double auction on one core, and the time to clear an interval
    /// auction of many orders.
    Market {
        /// Order operations (two thirds places, one third cancels).
        #[arg(long, default_value_t = 2_000_000)]
        operations: usize,
        /// Orders in the interval auction.
        #[arg(long, default_value_t = 100_000)]
        auction_orders: usize,
        /// Auction repetitions (the median is reported).
        #[arg(long, default_value_t = 21)]
        repetitions: usize,
        /// Seed of the generated orders.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Start N nodes on loopback TCP, link them in a random graph and measure how fast offers reach 99 % of them.
    Gossip {
        /// Number of nodes.
        #[arg(long, default_value_t = 20)]
        peers: usize,
        /// Links per node (a ring plus random chords).
        #[arg(long, default_value_t = 6)]
        degree: usize,
        /// Offers to publish.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Offers published per second, from random nodes.
        #[arg(long, default_value_t = 20)]
        rate: u64,
        /// Seed of the topology and the choice of publishers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key and write it to the key file (mode 0600).
    Generate {
        /// Replace an existing key file (its key is lost).
        #[arg(long)]
        force: bool,
    },
    /// Print the public key and peer id of the key file.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum OfferCommand {
    /// Sign an offer with the node's key and write its bytes (hex on stdout, or binary to --out); offline.
    Sign(OfferArgs),
    #[command(flatten)]
    Node(node::OfferAction),
}

/// Where the running node's API is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The API's address (default: the config's api.listen, else 127.0.0.1:7080).
    #[arg(long, env = "KOS_API")]
    pub api: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SideArg {
    Bid,
    Ask,
}

/// An offer's terms.
#[derive(Debug, Args)]
pub struct OfferArgs {
    /// Network id the offer is for.
    #[arg(long, default_value = "kos-devnet")]
    pub network: NetworkId,
    /// Pool as resource/token/cell/interval_s, `*` for the world cell: energy/credit/u33db/900.
    #[arg(long)]
    pub pool: PoolId,
    #[arg(long, value_enum)]
    pub side: SideArg,
    /// Quantity in the resource's unit: Wh for energy, milli-units otherwise.
    #[arg(long)]
    pub quantity: u64,
    /// Limit price in tokens per kWh (energy) or per unit, up to 3 decimals: 0.30.
    #[arg(long)]
    pub price: String,
    /// Start of the delivery interval, Unix seconds; default: the next interval of the pool.
    #[arg(long)]
    pub delivery_start: Option<u64>,
    /// Lifetime in seconds; default 900, or until the delivery starts when that is later.
    #[arg(long)]
    pub expires_in: Option<u64>,
    /// Per-author nonce; default: the current time in microseconds (increasing across runs).
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Write the binary message to this file instead of hex to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Validate a signed message (binary or hex, from a file or `-` for stdin) and print what it says.
    Verify {
        /// The message file, or `-` for stdin.
        file: PathBuf,
        /// The network id to validate against.
        #[arg(long, default_value = "kos-devnet")]
        network: NetworkId,
    },
}

#[cfg(feature = "tools")]
#[derive(Debug, Subcommand)]
pub enum ProtocolCommand {
    /// Print the test vectors of PROTOCOL.md.
    Vectors,
}

/// Runs the command line and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`kos protocol vectors | head`) is not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => node::init(&cli.paths, args),
        Command::Run(args) => run_node(&cli.paths, args),
        Command::Devnet(args) => crate::devnet::run(&args),
        Command::Status(api) => node::status(&node::Client::new(&cli.paths, api.api)?),
        Command::Balance { account, api } => {
            node::balance(&node::Client::new(&cli.paths, api.api)?, &cli.paths, account)
        }
        Command::Asset(action) => node::asset(&node::Client::new(&cli.paths, std::env::var("KOS_API").ok())?, action),
        Command::Guild(action) => node::guild(&node::Client::new(&cli.paths, std::env::var("KOS_API").ok())?, action),
        Command::Gov(action) => node::gov(&node::Client::new(&cli.paths, std::env::var("KOS_API").ok())?, action),
        Command::Job(action) => node::job(&node::Client::new(&cli.paths, std::env::var("KOS_API").ok())?, action),
        Command::Transfer { to, token, amount, memo, api } => {
            node::transfer(&node::Client::new(&cli.paths, api.api)?, &to, &token, &amount, memo)
        }
        Command::Offer(OfferCommand::Node(action)) => {
            node::offer(&node::Client::new(&cli.paths, std::env::var("KOS_API").ok())?, action)
        }
        #[cfg(feature = "tools")]
        Command::Bench(command) => bench::run(command),
        Command::Market(command) => market::run(command),
        Command::Keys(KeysCommand::Generate { force }) => keys_generate(&cli.paths.key_file(), force),
        Command::Keys(KeysCommand::Show) => keys_show(&cli.paths.key_file()),
        Command::Offer(OfferCommand::Sign(args)) => offer_sign(&cli.paths.key_file(), args),
        Command::Message(MessageCommand::Verify { file, network }) => message_verify(&file, network),
        Command::Ledger(command) => ledger::run(&cli.paths, command),
        #[cfg(feature = "tools")]
        Command::Sim { first, seeds } => ledger::sim(first, seeds),
        #[cfg(feature = "tools")]
        Command::Protocol(ProtocolCommand::Vectors) => {
            let mut out = std::io::stdout().lock();
            for vector in protocol::vectors::all() {
                writeln!(out, "```text\n{}```\n", vector.to_block())?;
            }
            writeln!(out, "{SIGNATURE_CASES_INTRO}\n")?;
            for case in protocol::vectors::signature_cases() {
                writeln!(out, "```text\n{}```\n", case.to_block())?;
            }
            writeln!(out, "{DEVICE_CASES_INTRO}\n")?;
            for case in protocol::vectors::device_cases() {
                writeln!(out, "```text\n{}```\n", case.to_block())?;
            }
            Ok(())
        }
    }
}

/// What `kos protocol vectors` prints before the signature cases (PROTOCOL.md §12 ends with its output).
#[cfg(feature = "tools")]
const SIGNATURE_CASES_INTRO: &str = "### Signature cases

Each case is a public key, a digest (the 32-byte message `M`), a signature and its verdict under the rule of §3.
The crafted ones use a secret scalar `a = BLAKE3(\"kos signature case secret\") mod ℓ`, a nonce
`r = BLAKE3(\"kos signature case nonce\") mod ℓ` (the 32 hash bytes read little-endian) and `T`, a point of order 8
(encoded `c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a`), with `S = r + k·a`: *mixed-order-r* has
`R = [r]B + T` and *mixed-order-key* the key `[a]B + T`, both valid under the cofactored equation and refused by
`verify_strict`; *small-order-r* (`R = T`, `S = k·a`) and *small-order-key* (the key `T`, `S = r`) pass the
cofactored equation but are refused for their small-order point; *s-not-reduced* is the honest signature with
`S + ℓ`.";

/// What `kos protocol vectors` prints before the device cases.
#[cfg(feature = "tools")]
const DEVICE_CASES_INTRO: &str = "### Device cases

Each case is a reading (its canonical CBOR, `device` included), the account that relays it, and the verdict of the
stateless device check of §5 (*Device-signed readings*). An ed25519 case shows the device digest and signature; an
OCMF case the record and the registers the reading claims. The OCMF records are public samples from S.A.F.E. e.V.'s
Transparenzsoftware (`src/test/resources/xml/test_ocmf_keba_kcp30.xml` and `VW_OCMF_load.xml`, Apache-2.0):
*ocmf-kcp30-tampered* is the first with its first date changed (`2019-08-12`), as that project's own failing sample.";

fn run_node(paths: &Paths, args: RunArgs) -> anyhow::Result<()> {
    let explicit = args.config.is_some();
    let path = args.config.unwrap_or_else(|| crate::config::default_path(&paths.data_dir));
    let mut config = crate::config::Config::load(&path, explicit)?;
    if let Some(network) = args.network {
        config.network = network;
    }
    if !args.listen.is_empty() {
        config.p2p.listen = args.listen;
    }
    config.p2p.bootnodes.extend(args.bootnode);
    config.p2p.pools.extend(args.pool);
    if let Some(mdns) = args.mdns {
        config.p2p.mdns = mdns;
    }
    if let Some(log) = args.log {
        config.log = log;
    }
    if let Some(genesis) = args.genesis {
        config.ledger.genesis = Some(genesis);
    }
    if let Some(api) = args.api {
        config.api.listen = api;
    }
    if args.replay {
        config.ledger.state_sync = false;
    }
    let mut checked = config.validate().with_context(|| format!("invalid configuration ({})", path.display()))?;
    checked.ledger = config.ledger_settings(&paths.data_dir)?;
    checked.data_dir = paths.data_dir.clone();
    let key_file = match (&paths.key_file, &config.key_file) {
        (None, Some(from_config)) => from_config.clone(),
        _ => paths.key_file(),
    };
    let keypair = keyfile::read(&key_file)?;
    crate::run::run(checked, keypair)
}

fn keys_generate(path: &Path, force: bool) -> anyhow::Result<()> {
    let keypair = protocol::Keypair::generate();
    keyfile::write(path, &keypair, force)?;
    println!("wrote {}", path.display());
    print_key(&keypair)
}

fn keys_show(path: &Path) -> anyhow::Result<()> {
    let keypair = keyfile::read(path)?;
    print_key(&keypair)
}

fn print_key(keypair: &protocol::Keypair) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "public key: {}", keypair.public())?;
    writeln!(out, "peer id:    {}", keyfile::peer_id(keypair))?;
    Ok(())
}

fn offer_sign(key_file: &Path, args: OfferArgs) -> anyhow::Result<()> {
    let keypair = keyfile::read(key_file)?;
    let unit_price = amount::parse_milli(&args.price).context("--price")?;
    let created_ms = now_ms()?;
    let delivery_start_s = args.delivery_start.unwrap_or_else(|| args.pool.next_delivery_start_s(created_ms / 1000));
    let nonce = match args.nonce {
        Some(nonce) => nonce,
        None => u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros())?,
    };
    let expires_ms = match args.expires_in {
        Some(seconds) => created_ms.saturating_add(seconds.saturating_mul(1000)),
        None => created_ms.saturating_add(protocol::validate::default_offer_lifetime_ms(delivery_start_s, created_ms)),
    };
    let side = match args.side {
        SideArg::Bid => Side::Bid,
        SideArg::Ask => Side::Ask,
    };
    let body = Body::Offer(Offer { pool: args.pool, side, quantity: args.quantity, unit_price, delivery_start_s });
    let envelope = Draft { network: args.network.clone(), nonce, created_ms, expires_ms, body }.sign(&keypair);
    // Check what we made with the same rules a receiver applies.
    let config = protocol::Config::new(args.network);
    protocol::validate(&envelope.to_bytes(), &config, created_ms).context("the offer is not valid")?;
    eprintln!("offer {} signed by {}", envelope.id(), envelope.author);
    match args.out {
        Some(path) => std::fs::write(&path, envelope.to_bytes()).with_context(|| format!("writing {}", path.display())),
        None => Ok(writeln!(std::io::stdout().lock(), "{}", hex::encode(envelope.to_bytes()))?),
    }
}

/// Reads a message: hex text (whitespace ignored) or raw bytes, at most twice the envelope limit.
fn read_message(file: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = u64::try_from(2 * protocol::limits::ENVELOPE_BYTES_MAX + 2)?;
    let mut raw = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut raw).context("reading stdin")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("opening {}", file.display()))?
            .take(limit)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    let text: Vec<u8> = raw.iter().copied().filter(|byte| !byte.is_ascii_whitespace()).collect();
    if !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
        return hex::decode(&text).context("the input looks like hex but does not decode");
    }
    Ok(raw)
}

fn message_verify(file: &Path, network: NetworkId) -> anyhow::Result<()> {
    let bytes = read_message(file)?;
    let config = protocol::Config::new(network);
    let validated = match protocol::validate(&bytes, &config, now_ms()?) {
        Ok(validated) => validated,
        Err(error) => bail!("invalid message: {error}"),
    };
    let envelope = &validated.envelope;
    let mut out = std::io::stdout().lock();
    writeln!(out, "valid {} {}", envelope.kind(), validated.id)?;
    writeln!(out, "network:  {}", envelope.network)?;
    writeln!(out, "author:   {}", envelope.author)?;
    writeln!(out, "nonce:    {}", envelope.nonce)?;
    writeln!(out, "created:  {} ms", envelope.created_ms)?;
    writeln!(out, "expires:  {} ms", envelope.expires_ms)?;
    if let Body::Offer(offer) = &envelope.body {
        writeln!(out, "pool:     {} (digest {})", offer.pool, offer.pool.digest())?;
        writeln!(out, "side:     {:?}", offer.side)?;
        writeln!(out, "quantity: {}", offer.quantity)?;
        writeln!(
            out,
            "price:    {} {} per {}",
            amount::format_milli(offer.unit_price),
            offer.pool.token,
            offer.pool.resource.price_unit()
        )?;
        writeln!(out, "delivery: {} s", offer.delivery_start_s)?;
    } else {
        writeln!(out, "body:     {:#?}", envelope.body)?;
    }
    Ok(())
}
