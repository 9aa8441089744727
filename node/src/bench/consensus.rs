//! `kos bench ledger`: four validators in this process, each with its own libp2p swarm on 127.0.0.1 TCP and its
//! own RocksDB in a temporary directory, fully meshed. Clients sign transfers beforehand; during the run each
//! client submits to one validator (which gossips to the others) at a fixed rate, or as fast as the validators
//! take them. Measured: committed entries per second over the run, finality latency (submission to commit at
//! the submitting validator), the process's CPU time per committed entry, submissions refused because a ledger was
//! busy, the lowest gossip score the validators gave each other and, afterwards, how fast a fresh node syncs the
//! whole ledger from the validators.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Genesis;
use ledger::reads::*;
use protocol::message::Transfer;
use protocol::types::{Text, TokenId};
use protocol::{Body, Draft, Id, Keypair, NetworkId};

use crate::ledger::{self as node_ledger, Settings};
use crate::network::local::{Transport, loopback, now_ms};
use crate::network::{self, Multiaddr, Topic, budget, wait_for};

/// What `kos bench ledger` runs.
#[derive(Debug, Clone)]
pub struct LedgerArgs {
    /// Entries submitted per second across all validators; 0: as fast as they are taken.
    pub rate_per_s: u64,
    /// How long entries are submitted.
    pub seconds: u64,
    /// Signing accounts.
    pub clients: usize,
    /// Readers of the state at the first validator during the load, each reading an account's balances again as
    /// soon as it has the answer (the API's `GET /accounts/{key}/balances`, without HTTP).
    pub readers: usize,
    /// The last two validators keep only this many blocks (`[storage] mode = "full"`); the first two keep every
    /// block. `None`: all four keep every block.
    pub keep_blocks: Option<u64>,
    /// The validators write a snapshot every this many blocks, and a fresh node takes the newest after the load
    /// (state sync); 0: none.
    pub snapshot_interval: u64,
    /// Where the validators' directories go (`validator-0` …, with `genesis.toml` beside them) and stay after the
    /// run, for `kos bench reopen`; `None`: temporary directories.
    pub keep_dir: Option<std::path::PathBuf>,
}

impl LedgerArgs {
    /// What the validators keep.
    fn storage(&self) -> Storage {
        Storage {
            keep_blocks: self.keep_blocks,
            snapshot_interval: self.snapshot_interval,
            dir: self.keep_dir.clone(),
            ..Storage::default()
        }
    }
}

/// How a fresh node took a snapshot of the state (`kos bench ledger --snapshot-interval`).
#[derive(Debug, Clone)]
pub struct StateSyncReport {
    /// The snapshot's height, its pairs, chunks and bytes.
    pub height: u64,
    pub pairs: u64,
    pub chunks: u32,
    pub bytes: u64,
    /// Blocks synced after it.
    pub blocks_after: u64,
    /// From the node's start to its state sync's end, and to a current ledger at the validators' tip.
    pub snapshot_seconds: f64,
    pub seconds: f64,
}

/// The results of one run.
#[derive(Debug, Clone)]
pub struct LedgerReport {
    pub submitted: usize,
    pub refused: usize,
    /// Of the refused, those the ledger answered `Busy`: its input queue was full (back-pressure, not an error).
    pub refused_busy: usize,
    /// The lowest gossipsub score one validator gave another, sampled every second of the run and after it (the
    /// graylist, at which a node ignores a peer, is at -80).
    pub lowest_peer_score: f64,
    /// CPU time this process spent (all threads: the four validators and the submitting clients) from the start of
    /// the load until the last entry committed, per committed entry, µs.
    pub cpu_us_per_entry: f64,
    pub committed: usize,
    pub seconds: f64,
    pub committed_per_s: f64,
    pub finality_p50_ms: f64,
    pub finality_p99_ms: f64,
    pub blocks: u64,
    pub synced_blocks: u64,
    pub synced_entries: u64,
    pub sync_seconds: f64,
    pub sync_entries_per_s: f64,
    /// Each validator's ledger directory at the end, bytes, and whether it pruned.
    pub disk: Vec<(u64, bool)>,
    /// State reads answered during the load, and their latency.
    pub reads: usize,
    pub read_p50_ms: f64,
    pub read_p99_ms: f64,
    pub state_sync: Option<StateSyncReport>,
    /// Opening validator 0's ledger again after the run, as a restart does, seconds (`None`: it could not be).
    pub reopen_seconds: Option<f64>,
}

pub(crate) struct Node {
    pub(crate) network: network::Handle,
    pub(crate) ledger: node_ledger::Handle,
    address: Multiaddr,
    /// Resolves when the ledger thread has ended.
    done: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
    /// The node's directory (its ledger is `ledger/` in it).
    dir: std::path::PathBuf,
    /// Removes `dir` when the node goes, unless the bench keeps it (`--keep-dir`).
    _temporary: Option<tempfile::TempDir>,
    prunes: bool,
}

/// The bytes of the files under `path`.
fn disk_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Stops the nodes and waits for their ledger threads to end, before their directories go: a process that
/// exits while a ledger still runs can crash in RocksDB's teardown.
pub(crate) async fn stop(nodes: impl IntoIterator<Item = Node>) {
    for node in nodes {
        node.ledger.shutdown().await;
        if tokio::time::timeout(Duration::from_secs(30), node.done).await.is_err() {
            tracing::warn!("a ledger thread did not end in 30 s");
        }
        node.network.shutdown().await;
    }
}

fn network_config(id: &NetworkId) -> network::Config {
    let mut config = network::Config::new(id.clone(), vec![loopback(Transport::Tcp)]);
    config.autonat_only_global = false;
    config.kademlia = false;
    config.delivery_queue_len_max = 65_536;
    // The benchmark's validators trust each other's volume; real limits come from the fuel model.
    let unlimited = budget::Rate { per_s: 10_000_000, burst: 10_000_000 };
    config.peer_limits = budget::Limits { messages: unlimited, bytes: budget::Rate { per_s: 1 << 32, burst: 1 << 32 } };
    config
}

/// What a bench node keeps and how it starts.
#[derive(Debug, Clone, Default)]
struct Storage {
    keep_blocks: Option<u64>,
    snapshot_interval: u64,
    /// State sync from this height.
    state_sync: Option<u64>,
    /// Its directory, kept after the run; `None`: a temporary one.
    dir: Option<std::path::PathBuf>,
}

pub(crate) async fn start_node(
    genesis: &Arc<Genesis>,
    keypair: &Keypair,
    keep_blocks: Option<u64>,
) -> anyhow::Result<Node> {
    start_node_with(genesis, keypair, Storage { keep_blocks, ..Storage::default() }).await
}

async fn start_node_with(
    genesis: &Arc<Genesis>,
    keypair: &Keypair,
    Storage { keep_blocks, snapshot_interval, state_sync, dir }: Storage,
) -> anyhow::Result<Node> {
    let (dir, temporary) = match dir {
        Some(path) => {
            anyhow::ensure!(!path.exists(), "{} exists already: give --keep-dir a new directory", path.display());
            std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
            (path, None)
        }
        None => {
            let temporary = tempfile::tempdir().context("a temporary directory")?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    let mut engine = ledger::consensus::Config { empty_block_ms: 200, ..Default::default() };
    engine.mempool.per_author_max = 1_000_000;
    engine.mempool.entries_max = 1_000_000;
    let settings = Settings {
        genesis: genesis.clone(),
        path: dir.join("ledger"),
        engine,
        keep_blocks,
        profile: ledger::store::Profile::Standard,
        snapshot_interval,
        state_sync,
    };
    let opened = node_ledger::open(&settings, keypair)?;
    let (consensus_sender, consensus) = tokio::sync::mpsc::channel(node_ledger::CONSENSUS_QUEUE_LEN_MAX);
    let mut config = network_config(&genesis.network);
    config.consensus = Some(consensus_sender);
    config.blocks = Some(network::BlockSource::rocks(opened.reader()));
    config.snapshots = Some(network::SnapshotSource::new(opened.snapshots(), opened.reader()));
    let (network, mut deliveries, _task) = network::spawn(config, keypair).await?;
    for topic in [Topic::Ledger, Topic::Consensus] {
        network.subscribe(topic).await?;
    }
    let started = node_ledger::start(opened, network.clone(), consensus)?;
    let (ledger, done) = (started.handle, started.done);
    let forward = ledger.clone();
    tokio::spawn(async move {
        while let Some(delivery) = deliveries.recv().await {
            if delivery.topic == Topic::Ledger {
                let mut batch = vec![delivery];
                while batch.len() < 1024
                    && let Ok(more) = deliveries.try_recv()
                {
                    batch.push(more);
                }
                forward.entries(batch);
            }
        }
    });
    let info = network.info().await?;
    let address =
        info.listen.first().cloned().context("not listening")?.with(libp2p::multiaddr::Protocol::P2p(info.peer_id));
    Ok(Node { network, ledger, address, done, dir, _temporary: temporary, prunes: keep_blocks.is_some() })
}

pub(crate) async fn connect(from: &Node, to: &Node) -> anyhow::Result<()> {
    from.network.dial(to.address.clone()).await?;
    let peer = to.network.peer_id();
    let connected = wait_for(Duration::from_secs(10), || async {
        from.network.info().await.is_ok_and(|info| info.peers.contains(&peer))
    })
    .await;
    anyhow::ensure!(connected, "nodes did not connect");
    Ok(())
}

/// Starts a validator node for each key and connects every pair of them.
pub(crate) async fn start_cluster<'k>(
    genesis: &Arc<Genesis>,
    keys: impl IntoIterator<Item = &'k Keypair>,
) -> anyhow::Result<Vec<Node>> {
    start_cluster_keeping(genesis, keys, Storage::default()).await
}

/// [`start_cluster`], the nodes from the third on keeping only `storage.keep_blocks` blocks when set, each writing
/// a snapshot every `storage.snapshot_interval` blocks, node `i`'s directory under `storage.dir/validator-i` when
/// set.
async fn start_cluster_keeping<'k>(
    genesis: &Arc<Genesis>,
    keys: impl IntoIterator<Item = &'k Keypair>,
    storage: Storage,
) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for (index, keypair) in keys.into_iter().enumerate() {
        let node = Storage {
            keep_blocks: storage.keep_blocks.filter(|_| index >= 2),
            dir: storage.dir.as_ref().map(|dir| dir.join(format!("validator-{index}"))),
            ..storage.clone()
        };
        nodes.push(start_node_with(genesis, keypair, node).await?);
    }
    for (index, from) in nodes.iter().enumerate() {
        for to in &nodes[index + 1..] {
            connect(from, to).await?;
        }
    }
    Ok(nodes)
}

pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A fresh node joins and fetches the whole ledger from the validators: the node, the height it reached, the
/// entries in its blocks and the seconds it took.
async fn sync_fresh_node(genesis: &Arc<Genesis>, nodes: &[Node]) -> anyhow::Result<(Node, u64, u64, f64)> {
    let follower_key = Keypair::from_seed(blake3::hash(b"follower").as_bytes());
    // The highest validator's tip: validator 0 may still be a block behind the others, and the follower syncs
    // from all of them.
    let tip = nodes.iter().map(|node| node.ledger.status().height).max().unwrap_or(0);
    let sync_start = Instant::now();
    let follower = start_node(genesis, &follower_key, None).await?;
    for node in nodes {
        connect(&follower, node).await?;
    }
    let synced = wait_for(Duration::from_secs(600), || async { follower.ledger.status().height >= tip }).await;
    let sync_seconds = sync_start.elapsed().as_secs_f64();
    anyhow::ensure!(synced, "the follower did not catch up in 10 minutes");
    let synced_height = follower.ledger.status().height;
    let mut entries = 0u64;
    for height in 1..=synced_height {
        if let Some(stored) = follower.ledger.reader().block(height)? {
            entries += ledger::Block::from_bytes(&stored.block).map(|block| block.entries().len() as u64).unwrap_or(0);
        }
    }
    Ok((follower, synced_height, entries, sync_seconds))
}

/// The snapshots a node holds on disk, newest first: (height, chunks, bytes of its chunks).
fn held_snapshots(node: &Node) -> Vec<(u64, u32, u64)> {
    let dir = node.dir.join("ledger").join("snapshots");
    let mut held: Vec<(u64, u32, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let height = entry.file_name().to_str()?.parse().ok()?;
            let chunks: Vec<u64> = std::fs::read_dir(entry.path())
                .ok()?
                .filter_map(|file| {
                    let file = file.ok()?;
                    file.file_name().to_str()?.starts_with("chunk-").then(|| file.metadata().ok().map(|m| m.len()))?
                })
                .collect();
            Some((height, u32::try_from(chunks.len()).unwrap_or(u32::MAX), chunks.iter().sum()))
        })
        .collect();
    held.sort_unstable_by_key(|one| std::cmp::Reverse(one.0));
    held
}

/// A fresh node takes the validators' newest snapshot and syncs the blocks after it; measured until its ledger is
/// current at the validators' tip (as it is when it starts).
async fn state_sync_fresh_node(genesis: &Arc<Genesis>, nodes: &[Node]) -> anyhow::Result<(Node, StateSyncReport)> {
    let held = wait_for(Duration::from_secs(600), || async { !held_snapshots(&nodes[0]).is_empty() }).await;
    anyhow::ensure!(held, "the validators wrote no snapshot in 10 minutes");
    let key = Keypair::from_seed(blake3::hash(b"state sync").as_bytes());
    let tip = nodes.iter().map(|node| node.ledger.status().height).max().unwrap_or(0);
    let start = Instant::now();
    let node = start_node_with(genesis, &key, Storage { state_sync: Some(1), ..Storage::default() }).await?;
    for validator in nodes {
        connect(&node, validator).await?;
    }
    let mut snapshot_seconds = None;
    let current = wait_for(Duration::from_secs(600), || {
        let status = node.ledger.status();
        if status.state_sync.is_none() && status.height > 0 && snapshot_seconds.is_none() {
            snapshot_seconds = Some(start.elapsed().as_secs_f64());
        }
        let done = status.height >= tip && status.current(now_ms());
        async move { done }
    })
    .await;
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(current, "the state-syncing node was not current in 10 minutes");
    let first = node.ledger.reader().first()?;
    anyhow::ensure!(first > 1, "the fresh node replayed from the genesis instead of taking a snapshot");
    let (_, chunks, bytes) = held_snapshots(&nodes[0]).into_iter().find(|one| one.0 == first).unwrap_or((first, 0, 0));
    let pairs = node.ledger.reader().snapshot(genesis)?.all().count() as u64;
    let report = StateSyncReport {
        height: first,
        pairs,
        chunks,
        bytes,
        blocks_after: node.ledger.status().height.saturating_sub(first),
        snapshot_seconds: snapshot_seconds.unwrap_or(seconds),
        seconds,
    };
    Ok((node, report))
}

/// With snapshots, another fresh node takes the newest one instead of replaying.
async fn state_sync_if_asked(
    args: &LedgerArgs,
    genesis: &Arc<Genesis>,
    nodes: &[Node],
) -> anyhow::Result<Option<StateSyncReport>> {
    if args.snapshot_interval == 0 {
        return Ok(None);
    }
    let (node, report) = state_sync_fresh_node(genesis, nodes).await?;
    stop(std::iter::once(node)).await;
    Ok(Some(report))
}

/// Every validator's commits, timed as they happen: (validator, when, commit).
fn timed_commits(
    nodes: &[Node],
) -> tokio::sync::mpsc::UnboundedReceiver<(usize, Instant, Arc<ledger::consensus::Commit>)> {
    let (sender, stream) = tokio::sync::mpsc::unbounded_channel();
    for (node, handle) in nodes.iter().enumerate() {
        let mut commits = handle.ledger.follow();
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(commit) = commits.next().await {
                if sender.send((node, Instant::now(), commit)).is_err() {
                    break;
                }
            }
        });
    }
    stream
}

/// Submits signed entries (id, bytes, validator) at once: how many were sent, refused, and refused as busy.
async fn submit(
    nodes: &[Node],
    submissions: Vec<(Id, Vec<u8>, usize)>,
    submitted_at: &std::sync::Mutex<HashMap<Id, (Instant, usize)>>,
) -> anyhow::Result<(usize, usize, usize)> {
    let now = Instant::now();
    let mut futures = Vec::with_capacity(submissions.len());
    for (id, bytes, node) in submissions {
        submitted_at.lock().map_err(|_| anyhow::anyhow!("lock"))?.insert(id, (now, node));
        let ledger = nodes[node].ledger.clone();
        futures.push(tokio::spawn(async move { ledger.submit(bytes).await }));
    }
    let (mut submitted, mut refused, mut busy) = (0, 0, 0);
    for future in futures {
        submitted += 1;
        match future.await {
            Ok(Ok(_)) => {}
            Ok(Err(node_ledger::Error::Busy)) => {
                refused += 1;
                busy += 1;
            }
            _ => refused += 1,
        }
    }
    Ok((submitted, refused, busy))
}

/// The bench's entries: transfers of 1 credit from each client in turn to the next funded account.
struct Transfers<'a> {
    network: NetworkId,
    clients: &'a [Keypair],
    funded: &'a [protocol::PublicKey],
    token: TokenId,
    memo: Text<{ protocol::limits::MEMO_BYTES_MAX }>,
    created_ms: u64,
}

impl Transfers<'_> {
    /// The `index`th transfer, signed: its id and bytes.
    fn sign(&self, index: usize) -> (Id, Vec<u8>) {
        let from = &self.clients[index % self.clients.len()];
        let envelope = Draft {
            network: self.network.clone(),
            nonce: (index / self.clients.len()) as u64 + 1,
            created_ms: self.created_ms,
            expires_ms: self.created_ms + 600_000,
            body: Body::Transfer(Transfer {
                to: self.funded[(index + 1) % self.funded.len()],
                token: self.token.clone(),
                amount: 1,
                memo: self.memo.clone(),
            }),
        }
        .sign(from);
        (envelope.id(), envelope.to_bytes())
    }
}

/// Four validators of a new network that funds `funded`, committing blocks: its genesis and the nodes.
async fn start_validators(
    network: &NetworkId,
    funded: &[protocol::PublicKey],
    storage: Storage,
) -> anyhow::Result<(Arc<Genesis>, Vec<Node>)> {
    let validators: Vec<Keypair> =
        (0..4u8).map(|index| Keypair::from_seed(blake3::hash(&[b'v', index]).as_bytes())).collect();
    let keys: Vec<_> = validators.iter().map(Keypair::public).collect();
    let text = Genesis::devnet_text(network.as_str(), now_ms(), &keys, funded, 1_000_000_000_000);
    let genesis = Arc::new(Genesis::parse(&text)?);
    if let Some(dir) = &storage.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("genesis.toml"), &text).context("writing the genesis")?;
    }
    let nodes = start_cluster_keeping(&genesis, &validators, storage).await?;
    // Let the meshes form and the first blocks commit.
    let ready =
        wait_for(Duration::from_secs(30), || async { nodes.iter().all(|node| node.ledger.status().height >= 2) }).await;
    anyhow::ensure!(ready, "the validators did not start committing blocks");
    Ok((genesis, nodes))
}

/// Runs the benchmark.
pub async fn ledger(args: &LedgerArgs) -> anyhow::Result<LedgerReport> {
    let network = NetworkId::new("kos-bench").context("network id")?;
    let clients: Vec<Keypair> = (0..args.clients.max(1))
        .map(|index| Keypair::from_seed(blake3::hash(format!("client {index}").as_bytes()).as_bytes()))
        .collect();
    let funded: Vec<_> = clients.iter().map(Keypair::public).collect();
    let (genesis, nodes) = start_validators(&network, &funded, args.storage()).await?;

    // Sign every entry before the clock starts.
    let rate = args.rate_per_s;
    let total = if rate == 0 { 2_000_000usize } else { usize::try_from(rate * args.seconds).unwrap_or(usize::MAX) };
    let transfers = Transfers {
        network: network.clone(),
        clients: &clients,
        funded: &funded,
        token: TokenId::new("credit")?,
        memo: Text::new("bench")?,
        created_ms: now_ms(),
    };
    let sign = |index: usize| transfers.sign(index);
    let presigned: Vec<(Id, Vec<u8>)> = if rate == 0 { Vec::new() } else { (0..total).map(sign).collect() };

    let mut commit_stream = timed_commits(&nodes);
    let submitted_at: Arc<std::sync::Mutex<HashMap<Id, (Instant, usize)>>> = Arc::default();
    let mut submitted = 0usize;
    let mut refused = 0usize;
    let mut refused_busy = 0usize;
    let mut lowest_peer_score = f64::INFINITY;
    let mut scores_sampled = Instant::now();
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let deadline = start + Duration::from_secs(args.seconds);
    let start_height = nodes[0].ledger.status().height;
    let mut latencies = Vec::new();
    let mut committed = 0usize;
    let mut index = 0usize;
    let in_flight_max = 40_000usize;
    let readers = spawn_readers(&nodes[0].ledger, &funded, args.readers, deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < deadline {
        tick.tick().await;
        let due = if rate == 0 {
            in_flight_max.saturating_sub(submitted - committed - refused).min(4_000)
        } else {
            let elapsed = start.elapsed().as_secs_f64();
            ((elapsed * rate as f64) as usize).min(presigned.len()).saturating_sub(index)
        };
        let mut submissions = Vec::with_capacity(due);
        for _ in 0..due {
            let (id, bytes) = if rate == 0 { sign(index) } else { presigned[index].clone() };
            let client = index % clients.len();
            index += 1;
            submissions.push((id, bytes, client % nodes.len()));
        }
        let (sent, not_taken, busy) = submit(&nodes, submissions, &submitted_at).await?;
        submitted += sent;
        refused += not_taken;
        refused_busy += busy;
        committed += drain_commits(&mut commit_stream, &submitted_at, &mut latencies)?;
        if scores_sampled.elapsed() >= Duration::from_secs(1) {
            lowest_peer_score = lowest_peer_score.min(lowest_score(&nodes).await);
            scores_sampled = Instant::now();
        }
    }
    // Let what was submitted commit (bounded wait).
    let settle = Instant::now() + Duration::from_secs(30);
    while committed + refused < submitted && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
        committed += drain_commits(&mut commit_stream, &submitted_at, &mut latencies)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_us_per_entry = (cpu_seconds() - cpu_start) * 1e6 / committed.max(1) as f64;
    lowest_peer_score = lowest_peer_score.min(lowest_score(&nodes).await);
    let end_height = nodes[0].ledger.status().height;
    latencies.sort_by(f64::total_cmp);
    let reads = read_latencies(readers).await?;

    // Sync: a fresh node fetches the whole ledger from the validators.
    let (follower, synced_height, entries, sync_seconds) = sync_fresh_node(&genesis, &nodes).await?;
    stop(std::iter::once(follower)).await;
    let state_sync = state_sync_if_asked(args, &genesis, &nodes).await?;
    let disk = nodes.iter().map(|node| (disk_bytes(&node.dir), node.prunes)).collect();
    Ok(LedgerReport {
        submitted,
        refused,
        refused_busy,
        lowest_peer_score,
        cpu_us_per_entry,
        committed,
        seconds,
        committed_per_s: committed as f64 / seconds,
        finality_p50_ms: percentile(&latencies, 0.5),
        finality_p99_ms: percentile(&latencies, 0.99),
        blocks: end_height - start_height,
        synced_blocks: synced_height,
        synced_entries: entries,
        sync_seconds,
        sync_entries_per_s: entries as f64 / sync_seconds,
        disk,
        reads: reads.len(),
        read_p50_ms: percentile(&reads, 0.5),
        read_p99_ms: percentile(&reads, 0.99),
        state_sync,
        reopen_seconds: reopen(&genesis, nodes).await?,
    })
}

/// Stops the nodes, then opens validator 0's ledger again as `kos run` does at a restart (RocksDB, the state loaded
/// and its root checked against the tip's block): the seconds it takes.
async fn reopen(genesis: &Arc<Genesis>, mut nodes: Vec<Node>) -> anyhow::Result<Option<f64>> {
    let first = nodes.remove(0);
    stop(nodes).await;
    let Node { network, ledger, done, dir, .. } = first;
    ledger.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
    network.shutdown().await;
    // The handles hold the database's reader: let go of them before the database is opened again.
    drop((ledger, network));
    let settings = Settings {
        genesis: genesis.clone(),
        path: dir.join("ledger"),
        engine: ledger::consensus::Config::default(),
        keep_blocks: None,
        profile: ledger::store::Profile::Standard,
        snapshot_interval: 0,
        state_sync: None,
    };
    let keypair = Keypair::from_seed(blake3::hash(b"reopen").as_bytes());
    // The network task lets go of the database (its block and snapshot sources) a moment after it stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let start = Instant::now();
        match tokio::task::block_in_place(|| node_ledger::open(&settings, &keypair)) {
            Ok(opened) => {
                let seconds = start.elapsed().as_secs_f64();
                drop(opened);
                return Ok(Some(seconds));
            }
            Err(error) if format!("{error:#}").contains("lock") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                tracing::warn!("opening the ledger again: {error:#}");
                return Ok(None);
            }
        }
    }
}

/// What `kos bench reopen` measured.
#[derive(Debug, Clone)]
pub struct ReopenReport {
    /// Opening the ledger as `kos run` does at a restart, seconds.
    pub seconds: f64,
    /// The tip it opened at.
    pub height: u64,
    /// The state's pairs.
    pub pairs: u64,
    /// Checking the state's pairs against the summary kept with it, as a node does after it started, seconds;
    /// `None`: the ledger kept no summary (an older kos wrote it), so the open summed the state instead.
    pub verify_seconds: Option<f64>,
}

/// `kos bench reopen`: opens the ledger of validator `validator` that `kos bench ledger --keep-dir dir` kept (after
/// the bench ended, or after it was killed with `kill -9`) as `kos run` opens it at a restart: RocksDB recovers its
/// log, and the engine loads the state (or, with `profile` small, reads it through) with the summary kept with the
/// tip, which must match the tip's state root (without one, it sums the state). Then, timed apart, the check of every
/// pair against the summary that a node runs beside its ledger after it started. (The engine's consensus WAL, one
/// height's messages, is replayed after the open, when the node starts.)
pub fn reopen_kept(dir: &Path, validator: usize, profile: ledger::store::Profile) -> anyhow::Result<ReopenReport> {
    let genesis_path = dir.join("genesis.toml");
    let text = std::fs::read_to_string(&genesis_path)
        .with_context(|| format!("reading {} (written by kos bench ledger --keep-dir)", genesis_path.display()))?;
    let genesis = Arc::new(Genesis::parse(&text).with_context(|| format!("parsing {}", genesis_path.display()))?);
    let path = dir.join(format!("validator-{validator}")).join("ledger");
    anyhow::ensure!(path.is_dir(), "{} is not a kept ledger", path.display());
    let settings = Settings {
        genesis: genesis.clone(),
        path,
        engine: ledger::consensus::Config::default(),
        keep_blocks: None,
        profile,
        snapshot_interval: 0,
        state_sync: None,
    };
    let keypair = Keypair::from_seed(blake3::hash(b"reopen").as_bytes());
    let start = Instant::now();
    let opened = node_ledger::open(&settings, &keypair)?;
    let seconds = start.elapsed().as_secs_f64();
    let reader = opened.reader();
    let snapshot = reader.snapshot(&genesis)?;
    let pairs = snapshot.all().count() as u64;
    snapshot.check()?;
    let start = Instant::now();
    let verified = reader.verify_state(&std::sync::atomic::AtomicBool::new(false))?;
    let verify_seconds = verified.map(|_| start.elapsed().as_secs_f64());
    Ok(ReopenReport { seconds, height: snapshot.height(), pairs, verify_seconds })
}

/// The readers' latencies, sorted.
async fn read_latencies(readers: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> anyhow::Result<Vec<f64>> {
    let mut reads = Vec::new();
    for reader in readers {
        reads.extend(reader.await.context("a reader")?);
    }
    reads.sort_by(f64::total_cmp);
    Ok(reads)
}

/// `count` readers of account balances at `ledger` until `deadline`; each returns its read latencies, ms.
fn spawn_readers(
    ledger: &node_ledger::Handle,
    accounts: &[protocol::PublicKey],
    count: usize,
    deadline: Instant,
) -> Vec<tokio::task::JoinHandle<Vec<f64>>> {
    (0..count)
        .map(|reader| {
            let (ledger, accounts) = (ledger.clone(), accounts.to_vec());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut index = reader;
                while Instant::now() < deadline {
                    let account = accounts[index % accounts.len()];
                    index += count;
                    let sent = Instant::now();
                    if ledger.query(move |state| state.account_balances(&account)).await.is_err() {
                        break;
                    }
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect()
}

/// User and system CPU time of this process so far, seconds (NaN where it cannot be read).
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let seconds = |time: nix::sys::time::TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
            seconds(usage.user_time()) + seconds(usage.system_time())
        }
        Err(_) => f64::NAN,
    }
}

/// The lowest gossipsub score any validator gives another (a peer it has no score for counts as 0).
async fn lowest_score(nodes: &[Node]) -> f64 {
    let mut lowest = f64::INFINITY;
    for node in nodes {
        for other in nodes {
            let peer = other.network.peer_id();
            if peer != node.network.peer_id() {
                lowest = lowest.min(node.network.peer_score(peer).await.ok().flatten().unwrap_or(0.0));
            }
        }
    }
    lowest
}

type Submitted = Arc<std::sync::Mutex<HashMap<Id, (Instant, usize)>>>;

/// Takes the commits seen so far; an entry counts when the validator it was submitted to commits it.
fn drain_commits(
    stream: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Instant, Arc<ledger::consensus::Commit>)>,
    submitted: &Submitted,
    latencies: &mut Vec<f64>,
) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut submitted = submitted.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    while let Ok((node, at, commit)) = stream.try_recv() {
        for id in &commit.entry_ids {
            if let Some((sent, submitted_to)) = submitted.get(id).copied()
                && submitted_to == node
            {
                submitted.remove(id);
                latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                count += 1;
            }
        }
    }
    Ok(count)
}
