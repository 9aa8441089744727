//! The node's one libp2p swarm: transports (TCP with noise + yamux, QUIC v1), gossipsub with validation at the
//! door, Kademlia pool discovery, identify, ping, mDNS, AutoNAT, relay client (and optional server), DCUtR and
//! connection limits. Only this module touches the `Swarm`; the rest of the node talks to it through a [`Handle`]
//! and receives validated messages on a bounded channel.
//!
//! What happens to a gossip message (PROTOCOL.md §9):
//! 1. the sending peer's budget is charged (messages and bytes per second): over budget → ignored, and the peer's
//!    application score goes down;
//! 2. stateless validation (`protocol::validate`): expired or from the future → ignored; any other failure →
//!    rejected (gossipsub lowers the sender's score through its invalid-message counter);
//! 3. the message must belong on its topic (an offer on its own pool's topic) → else rejected;
//! 4. replay guard: the same message again → ignored; another message with a used nonce → rejected;
//! 5. accepted: forwarded by gossipsub and delivered to the node.

pub mod admission;
pub mod budget;
pub mod discovery;
pub mod local;
pub mod replay;
mod swarm;
pub mod topic;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use libp2p::{Multiaddr, PeerId};
use protocol::{Envelope, Id, NetworkId};
use tokio::sync::{mpsc, oneshot};

pub use swarm::spawn;
pub use topic::Topic;

/// Everything the network needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub network: NetworkId,
    /// Addresses to listen on: `/ip4/0.0.0.0/tcp/7070`, `/ip4/0.0.0.0/udp/7070/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (with `/p2p/<peer id>` to seed the DHT).
    pub bootnodes: Vec<Multiaddr>,
    /// Relays to reserve a slot on, so that peers can reach this node behind NAT (`<relay addr>/p2p/<id>`).
    pub relays: Vec<Multiaddr>,
    /// Serve as a relay for others (bootnodes with public addresses).
    pub relay_server: bool,
    /// Addresses others can reach this node at (a public IP and port). A relay server with none advertises its
    /// bound listen addresses, which suits a devnet or a LAN.
    pub external_addresses: Vec<Multiaddr>,
    /// Find peers on the local network by mDNS.
    pub mdns: bool,
    /// Run the Kademlia DHT (pool discovery, peer routing). Off only in tests of a fixed topology.
    pub kademlia: bool,
    /// AutoNAT: only trust global addresses (false on a LAN or devnet).
    pub autonat_only_global: bool,
    /// Most established connections.
    pub peers_max: u32,
    /// What each peer may send.
    pub peer_limits: budget::Limits,
    /// Peers with more room (the genesis validators): four times the per-peer limits.
    pub trusted_peers: Vec<PeerId>,
    /// Authors whose messages cost fuel at trusted rates (the genesis validators' keys).
    pub trusted_authors: Vec<protocol::PublicKey>,
    /// Every message an author publishes costs it fuel (bandwidth class); out of fuel, its messages are not
    /// forwarded until it recharges.
    pub fuel: energy::fuel::Config,
    /// Most validated messages waiting for the node; more are dropped and counted.
    pub delivery_queue_len_max: usize,
    /// Receiver-side validation settings (clock skew, lifetime, size).
    pub validation: protocol::Config,
    /// Where consensus messages go (the ledger validates them and reports back with
    /// [`Handle::report_consensus`]); `None`: the node does not follow consensus.
    pub consensus: Option<mpsc::Sender<ConsensusDelivery>>,
    /// The committed blocks this node serves to peers that sync; `None`: it serves none.
    pub blocks: Option<BlockSource>,
    /// The snapshots and validator changes this node serves to peers that sync the state; `None`: none.
    pub snapshots: Option<SnapshotSource>,
    /// The highest ledger protocol version this node runs, announced to peers (identify's agent).
    pub ledger_version_max: u8,
    /// This node keeps every block (`[storage] mode = "archive"`): it announces so in the DHT under
    /// [`archive_key`], where a syncing node whose peers all pruned finds it (PROTOCOL.md §9).
    pub archive: bool,
    /// Gossipsub's queue of RPCs to one peer ([`GOSSIP_PEER_QUEUE`] or [`GOSSIP_PEER_QUEUE_SMALL`]).
    pub gossip_peer_queue: usize,
}

/// Gossipsub's queue of RPCs to one peer (its default): half for published messages, half for forwards and
/// IHAVE/IWANT, which are dropped when it is full (control messages are not bounded). Gossipsub allocates the
/// forwards' half when a peer connects: 580 KB a peer at this length (232-byte slots).
pub const GOSSIP_PEER_QUEUE: usize = 5_000;
/// The queue on a node with the small storage profile (a home): 119 KB a peer. Its peers' bursts are a home's
/// readings and offers, not a validator's blocks and votes; at the default the queues were 5.2 MB of a devnet
/// home's heap with its 11 peers (BENCHMARKS.md, *A home's memory*). A message dropped for a full queue counts
/// against the peer's gossipsub score, as at any length.
pub const GOSSIP_PEER_QUEUE_SMALL: usize = 1_024;

/// The DHT key archive nodes announce themselves under: blake3 of the UTF-8 text `/kos/<network>/archive/1`.
pub fn archive_key(network: &NetworkId) -> Id {
    Id(*blake3::hash(format!("/kos/{}/archive/1", network.as_str()).as_bytes()).as_bytes())
}

/// Most archive nodes a syncing node dials at once when none of its peers keeps the block it needs.
pub const ARCHIVE_DIALS_MAX: usize = 4;

/// Reads `(tip, first, blocks)` from a height: `(from, blocks_max, bytes_max)`; `first` is the lowest height whose
/// block the node keeps (1 unless it prunes).
pub type ReadBlocks = dyn Fn(u64, usize, usize) -> (u64, u64, Vec<ledger::store::Stored>) + Send + Sync;

/// Committed blocks a node serves to syncing peers (read from another thread than the engine's).
#[derive(Clone)]
pub struct BlockSource(pub Arc<ReadBlocks>);

impl std::fmt::Debug for BlockSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("BlockSource")
    }
}

impl BlockSource {
    /// Serves the blocks of a RocksDB ledger.
    pub fn rocks(reader: ledger::store::RocksReader) -> BlockSource {
        BlockSource(Arc::new(move |from, max, bytes_max| {
            let tip = reader.tip().unwrap_or(0);
            let blocks = reader.blocks_from(from, max, bytes_max);
            // Read after the blocks: a commit that pruned `from` meanwhile shows here, so an empty answer is
            // never given for a height pruned a moment ago (the asker would take it for a lie).
            (tip, reader.first().unwrap_or(1), blocks)
        }))
    }
}

/// What gossip does with a message the node validated itself (a consensus message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Forward it.
    Accept,
    /// Drop it without blame.
    Ignore,
    /// Drop it and count it against the peer that sent it.
    Reject,
}

/// A consensus message from the network, not yet forwarded: the ledger decides whether it is valid.
#[derive(Debug, Clone)]
pub struct ConsensusDelivery {
    pub bytes: Vec<u8>,
    /// The peer that forwarded it.
    pub source: PeerId,
    pub message_id: libp2p::gossipsub::MessageId,
}

impl Config {
    /// Defaults for a network, listening on the given addresses.
    pub fn new(network: NetworkId, listen: Vec<Multiaddr>) -> Config {
        Config {
            validation: protocol::Config::new(network.clone()),
            network,
            listen,
            bootnodes: Vec::new(),
            relays: Vec::new(),
            relay_server: false,
            external_addresses: Vec::new(),
            mdns: false,
            kademlia: true,
            autonat_only_global: true,
            peers_max: 64,
            peer_limits: budget::Limits::default(),
            trusted_peers: Vec::new(),
            trusted_authors: Vec::new(),
            fuel: energy::fuel::Config::default(),
            delivery_queue_len_max: 4096,
            consensus: None,
            blocks: None,
            snapshots: None,
            ledger_version_max: ledger::block::PROTOCOL_VERSION_MAX,
            archive: false,
            gossip_peer_queue: GOSSIP_PEER_QUEUE,
        }
    }
}

/// A validated message from the network.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Id,
    pub envelope: Arc<Envelope>,
    /// The envelope's bytes as they were signed.
    pub bytes: Arc<[u8]>,
    pub topic: Topic,
    /// The peer that forwarded it to us (not necessarily its author).
    pub source: PeerId,
}

/// Counters of what the network did, readable at any time (and exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub ignored_duplicate: AtomicU64,
    pub ignored_stale: AtomicU64,
    pub throttled: AtomicU64,
    /// Messages not forwarded because their author was out of fuel.
    pub fuel_throttled: AtomicU64,
    pub delivery_dropped: AtomicU64,
    /// Bundles of entries accepted (PROTOCOL.md §9); their entries count in `accepted` one by one.
    pub bundles: AtomicU64,
    /// Relayed connections upgraded to direct ones by DCUtR hole punching.
    pub hole_punched: AtomicU64,
    /// Peers connected (a first connection to a peer) and disconnected (its last one closed) since start, and of
    /// those disconnected, how many the trim closed for being kept for nothing.
    pub peers_connected: AtomicU64,
    pub peers_disconnected: AtomicU64,
    pub peers_trimmed: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A request on `/kos/<network>/sync/1` (CBOR; at most 4 KiB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Request {
    /// The unexpired offers the peer has seen in a pool, newest last, at most `limit` (capped at
    /// [`RECENT_OFFERS_PER_RESPONSE_MAX`]).
    RecentOffers { pool: [u8; 32], limit: u32 },
    /// Committed blocks with their certificates from height `from` on, at most `max` (capped at
    /// [`BLOCKS_PER_RESPONSE_MAX`] and [`BLOCKS_RESPONSE_BYTES_MAX`]).
    Blocks { from: u64, max: u32 },
    /// The state snapshots the peer holds (PROTOCOL.md §9, *State sync*).
    Snapshots {},
    /// A held snapshot's block with its commit certificate, and its manifest.
    SnapshotManifest { height: u64 },
    /// Chunk `index` of a held snapshot.
    SnapshotChunk { height: u64, index: u32 },
    /// The recorded changes of the validator set at heights after `after`, up to `upto`.
    ValidatorChanges { after: u64, upto: u64 },
}

/// A snapshot as a peer offers it: `[height, manifest hash, chunks]`.
pub type SnapshotOffer = (u64, serde_bytes::ByteBuf, u32);

/// A change of the validator set as sync carries it: `[height, header, certificate, [[key, power], ...]]`.
pub type ValidatorChange = (u64, serde_bytes::ByteBuf, serde_bytes::ByteBuf, Vec<(protocol::PublicKey, u64)>);

/// A block and its commit certificate, as sync carries them.
pub type SyncedBlock = (serde_bytes::ByteBuf, serde_bytes::ByteBuf);

/// The answer to a [`Request`] (CBOR; at most 4 MiB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Response {
    /// Signed envelopes as they were gossiped; the receiver validates each one.
    RecentOffers {
        offers: Vec<serde_bytes::ByteBuf>,
    },
    /// The responder's last committed height, and its blocks from the requested height on (none if it has
    /// none); the receiver verifies each certificate and block.
    Blocks {
        tip: u64,
        blocks: Vec<SyncedBlock>,
    },
    /// The request was refused (over budget, unknown pool).
    Refused {
        reason: String,
    },
    /// Blocks were asked from a height this node no longer keeps: it keeps them from `first` on (it prunes), and
    /// its tip is `tip`. Not a fault: ask an archive node.
    Pruned {
        first: u64,
        tip: u64,
    },
    /// The snapshots held, newest first (at most [`SNAPSHOTS_OFFERED_MAX`]).
    Snapshots {
        snapshots: Vec<SnapshotOffer>,
    },
    /// A snapshot's block, its certificate and its manifest.
    SnapshotManifest {
        block: serde_bytes::ByteBuf,
        certificate: serde_bytes::ByteBuf,
        manifest: serde_bytes::ByteBuf,
    },
    SnapshotChunk {
        chunk: serde_bytes::ByteBuf,
    },
    /// The changes asked for, in height order (at most [`ledger::store::CHANGES_PER_READ_MAX`]).
    ValidatorChanges {
        changes: Vec<ValidatorChange>,
    },
}

impl Response {
    /// What a response answers, for errors ("answered another request").
    fn name(&self) -> &'static str {
        match self {
            Response::RecentOffers { .. } => "RecentOffers",
            Response::Blocks { .. } => "Blocks",
            Response::Refused { .. } => "Refused",
            Response::Pruned { .. } => "Pruned",
            Response::Snapshots { .. } => "Snapshots",
            Response::SnapshotManifest { .. } => "SnapshotManifest",
            Response::SnapshotChunk { .. } => "SnapshotChunk",
            Response::ValidatorChanges { .. } => "ValidatorChanges",
        }
    }
}

/// Most snapshots a node offers in one answer.
pub const SNAPSHOTS_OFFERED_MAX: usize = 4;

/// Answers the state-sync requests ([`Request::Snapshots`], [`Request::SnapshotManifest`],
/// [`Request::SnapshotChunk`], [`Request::ValidatorChanges`]) off the network task: they read files and the
/// database.
pub type AnswerSnapshots = dyn Fn(Request) -> Response + Send + Sync;

/// What a node serves to peers that sync the state.
#[derive(Clone)]
pub struct SnapshotSource(pub Arc<AnswerSnapshots>);

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SnapshotSource")
    }
}

impl SnapshotSource {
    /// Serves a node's snapshots and its record of the validator set's changes.
    pub fn new(snapshots: Arc<ledger::snapshots::Snapshots>, reader: ledger::store::RocksReader) -> SnapshotSource {
        let refuse = |reason: String| Response::Refused { reason };
        SnapshotSource(Arc::new(move |request| match request {
            Request::Snapshots {} => Response::Snapshots {
                snapshots: snapshots
                    .held()
                    .into_iter()
                    .take(SNAPSHOTS_OFFERED_MAX)
                    .map(|held| (held.height, serde_bytes::ByteBuf::from(held.manifest_hash.0.to_vec()), held.chunks))
                    .collect(),
            },
            Request::SnapshotManifest { height } => match snapshots.manifest(height) {
                Ok(Some((stored, manifest))) => Response::SnapshotManifest {
                    block: stored.block.into(),
                    certificate: stored.certificate.into(),
                    manifest: manifest.into(),
                },
                Ok(None) => refuse(format!("no snapshot of height {height}")),
                Err(error) => refuse(format!("reading the snapshot: {error:#}")),
            },
            Request::SnapshotChunk { height, index } => match snapshots.chunk(height, index) {
                Ok(Some(chunk)) => Response::SnapshotChunk { chunk: chunk.into() },
                Ok(None) => refuse(format!("no chunk {index} of a snapshot of height {height}")),
                Err(error) => refuse(format!("reading the snapshot: {error:#}")),
            },
            Request::ValidatorChanges { after, upto } => match reader.changes(after, upto) {
                Ok(Some(changes)) => Response::ValidatorChanges {
                    changes: changes
                        .into_iter()
                        .map(|(height, change)| {
                            (height, change.header.into(), change.certificate.into(), change.validators)
                        })
                        .collect(),
                },
                Ok(None) => refuse(format!("this node's record of validator changes does not reach back to {after}")),
                Err(error) => refuse(format!("reading validator changes: {error:#}")),
            },
            _ => refuse("not a state-sync request".into()),
        }))
    }
}

/// Most offers in one response.
pub const RECENT_OFFERS_PER_RESPONSE_MAX: usize = 256;
/// Most recent offers a node keeps per pool it serves.
pub const RECENT_OFFERS_PER_POOL_MAX: usize = 1024;
/// Most blocks in one sync response.
pub const BLOCKS_PER_RESPONSE_MAX: usize = 256;
/// Most gossip topics a node joins (the fixed ones, its pools' and its jobs'): every topic costs mesh upkeep and
/// a place in the DHT announcements, and the API or a meter may ask for new ones.
pub const TOPICS_MAX: usize = 128;
/// Most bytes of blocks and certificates in one sync response (more only when a single block is larger).
pub const BLOCKS_RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the network task has stopped")]
    Stopped,
    #[error("message not valid for publishing: {0}")]
    Invalid(#[from] protocol::validate::Error),
    #[error("publishing failed: {0}")]
    Publish(String),
    #[error("the DHT is off (kademlia = false)")]
    NoDht,
    #[error("too many DHT queries in flight ({0}); try again")]
    Busy(usize),
    #[error("dialing {0} failed: {1}")]
    Dial(Multiaddr, String),
    #[error("request to {0} failed: {1}")]
    Request(PeerId, String),
    #[error("{peer} keeps blocks from {first} on (tip {tip}): a pruned node")]
    Pruned { peer: PeerId, first: u64, tip: u64 },
    #[error("this node already takes part in {0} topics, the most it joins")]
    TooManyTopics(usize),
    #[error(transparent)]
    Join(#[from] discovery::JoinError),
}

/// What the node knows about its place in the network.
#[derive(Debug, Clone)]
pub struct Info {
    pub peer_id: PeerId,
    pub listen: Vec<Multiaddr>,
    pub peers: Vec<PeerId>,
    /// What AutoNAT concluded: `unknown`, `private`, or `public <address>`.
    pub nat: String,
    /// Gossip topics joined (at most [`TOPICS_MAX`]).
    pub topics: usize,
    /// Peers dialed for the pools the node is in and still connected (at most a quarter of `peers_max`).
    pub pool_peers: usize,
}

pub(crate) enum Command {
    Publish {
        topic: Topic,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Id, Error>>,
    },
    Subscribe {
        topic: Topic,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe {
        topic: Topic,
    },
    JoinPool {
        pool: protocol::message::PoolKey,
        pinned: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    UsePools {
        pools: Vec<Id>,
    },
    /// Whether the node's ledger is current (discovery fetches no book while it is not).
    LedgerCurrent {
        current: bool,
    },
    Pools {
        reply: oneshot::Sender<Vec<discovery::PoolView>>,
    },
    Provide {
        key: Id,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    FindProviders {
        key: Id,
        reply: oneshot::Sender<Result<Vec<PeerId>, Error>>,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Look up the archive nodes in the DHT and dial a few while the lookup runs (it holds their addresses).
    DialArchives,
    AnnounceArchive,
    Disconnect {
        peer: PeerId,
    },
    Info {
        reply: oneshot::Sender<Info>,
    },
    PeerScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
    TopicPeers {
        topic: Topic,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    OverBudget {
        peer: PeerId,
        reply: oneshot::Sender<u64>,
    },
    PeerVersions {
        reply: oneshot::Sender<Vec<(PeerId, u8)>>,
    },
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Respond {
        channel: libp2p::request_response::ResponseChannel<Response>,
        response: Response,
    },
    ReportConsensus {
        message_id: libp2p::gossipsub::MessageId,
        source: PeerId,
        acceptance: Acceptance,
    },
    Penalize {
        peer: PeerId,
        reason: String,
    },
    Credit {
        author: protocol::PublicKey,
        credit: Credit,
    },
    Fault {
        author: protocol::PublicKey,
    },
    FuelCaps(Vec<(protocol::PublicKey, u64)>),
    Fuel {
        author: protocol::PublicKey,
        reply: oneshot::Sender<Option<energy::fuel::Status>>,
    },
    Shutdown,
}

/// Fuel an author earned on the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credit {
    /// A completed delivery (an escrow released to it).
    Quest,
    /// Energy it exported to the grid, Wh.
    Energy(u64),
}

/// A cloneable handle to the network task. Every call is a message to the task with a one-shot reply.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    network: NetworkId,
    local_peer_id: PeerId,
    validation: protocol::Config,
}

impl Handle {
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }

    /// Recharges an author's fuel for what it did for the network (dropped when the task is busy).
    pub fn credit(&self, author: protocol::PublicKey, credit: Credit) {
        let _ = self.commands.try_send(Command::Credit { author, credit });
    }

    /// An author whose offer made a match the ledger refused loses its fuel for offers (dropped when the task is
    /// busy).
    pub fn fault(&self, author: protocol::PublicKey) {
        let _ = self.commands.try_send(Command::Fault { author });
    }

    /// Replaces the fuel caps that overrides in force put on authors (units per second in every class).
    pub async fn set_fuel_caps(&self, caps: Vec<(protocol::PublicKey, u64)>) -> Result<(), Error> {
        self.commands.send(Command::FuelCaps(caps)).await.map_err(|_| Error::Stopped)
    }

    /// An author's fuel as this node counts it (`None`: it sent nothing lately).
    pub async fn fuel(&self, author: protocol::PublicKey) -> Result<Option<energy::fuel::Status>, Error> {
        self.ask(|reply| Command::Fuel { author, reply }).await
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The network id.
    pub fn network(&self) -> &NetworkId {
        &self.network
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Validates a message as any receiver would, then publishes it on its topic (`topic` is needed for cancels,
    /// which go to the topic of the offer they cancel).
    pub async fn publish(&self, envelope: &Envelope, topic: Option<Topic>, now_ms: u64) -> Result<Id, Error> {
        let bytes = envelope.to_bytes();
        protocol::validate(&bytes, &self.validation, now_ms)?;
        let topic =
            topic.or_else(|| Topic::of(envelope)).ok_or(Error::Publish("a cancel needs its pool's topic".into()))?;
        self.publish_bytes(topic, bytes).await
    }

    /// Publishes bytes as they are, without checking them: for tests and benchmarks of what peers do with
    /// invalid or excessive traffic. Returns the gossip message id (blake3 of the bytes).
    pub async fn publish_bytes(&self, topic: Topic, bytes: Vec<u8>) -> Result<Id, Error> {
        self.ask(|reply| Command::Publish { topic, bytes, reply }).await?
    }

    /// Publishes ledger entries this node has validated, each on its own topic ([`Topic::of`], PROTOCOL.md §9):
    /// readings one by one on [`Topic::Readings`], job postings and bids on [`Topic::Jobs`], and the entries of the
    /// ledger topic (cancels too: the author publishes them on their pool's topic as well) one alone on
    /// [`Topic::Ledger`], several in bundles on [`Topic::Bundles`], which peers take apart and check entry by entry.
    /// Peers reject an entry on another kind's topic and blame the node for it: a reading on the ledger topic or in
    /// a bundle cost its sender its peers. Entries that do not decode are left out.
    /// Returns how many gossip messages were published, or the first error when one failed (the others are still
    /// published).
    pub async fn publish_entries(&self, entries: &[Vec<u8>]) -> Result<usize, Error> {
        let mut messages: Vec<(Topic, Vec<u8>)> = Vec::new();
        let mut ledger = Vec::new();
        for entry in entries {
            let Ok(envelope) = protocol::Envelope::from_bytes(entry) else { continue };
            // A cancel (whose pool topic only its author knows) goes to the validators on the ledger topic.
            match Topic::of(&envelope).unwrap_or(Topic::Ledger) {
                Topic::Ledger => ledger.push(entry.as_slice()),
                topic => messages.push((topic, entry.clone())),
            }
        }
        match ledger[..] {
            [] => {}
            [entry] => messages.push((Topic::Ledger, entry.to_vec())),
            _ => messages.extend(
                protocol::bundle::pack(ledger.iter().copied()).into_iter().map(|bundle| (Topic::Bundles, bundle)),
            ),
        }
        let mut published = 0;
        let mut failed = None;
        for (topic, bytes) in messages {
            match self.publish_bytes(topic, bytes).await {
                Ok(_) => published += 1,
                Err(error) => failed = failed.or(Some(error)),
            }
        }
        failed.map_or(Ok(published), Err)
    }

    /// Receives (and forwards) the messages of a topic; at most [`TOPICS_MAX`] topics.
    pub async fn subscribe(&self, topic: Topic) -> Result<(), Error> {
        self.ask(|reply| Command::Subscribe { topic, reply }).await?
    }

    /// Stops receiving (and forwarding) a topic's messages.
    pub async fn unsubscribe(&self, topic: Topic) {
        let _ = self.commands.send(Command::Unsubscribe { topic }).await;
    }

    /// Joins a pool (PROTOCOL.md §9, "Finding a pool"): subscribes to its topic, announces it in the DHT, finds
    /// its providers and its book ([`discovery`]). A `pinned` pool (named in the configuration) is never left; any
    /// other is left after [`discovery::POOL_IDLE_MS`] without use. Joining a pool the node is in is using it.
    pub async fn join_pool(&self, pool: &protocol::message::PoolKey, pinned: bool) -> Result<(), Error> {
        self.ask(|reply| Command::JoinPool { pool: pool.clone(), pinned, reply }).await?
    }

    /// The node used these pools now (it has open offers or unsettled matches there).
    pub async fn use_pools(&self, pools: Vec<Id>) {
        let _ = self.commands.send(Command::UsePools { pools }).await;
    }

    /// Whether the node's ledger is current (not syncing, a block lately; the node says when): a node with a ledger
    /// starts without, and fetches no pool's book until it is.
    pub async fn ledger_current(&self, current: bool) {
        let _ = self.commands.send(Command::LedgerCurrent { current }).await;
    }

    /// The pools the node is in, with what discovery knows of each.
    pub async fn pools(&self) -> Result<Vec<discovery::PoolView>, Error> {
        self.ask(|reply| Command::Pools { reply }).await
    }

    /// Checks a message as any receiver would (stateless validation, PROTOCOL.md §6) at `now_ms`.
    pub fn validate(&self, envelope: &Envelope, now_ms: u64) -> Result<(), protocol::validate::Error> {
        protocol::validate(&envelope.to_bytes(), &self.validation, now_ms).map(|_| ())
    }

    /// Announces in the DHT that this node serves a pool (a provider record keyed by the pool's digest).
    pub async fn provide(&self, pool_digest: Id) -> Result<(), Error> {
        self.ask(|reply| Command::Provide { key: pool_digest, reply }).await?
    }

    /// Finds the providers of a pool through the DHT.
    pub async fn find_providers(&self, pool_digest: Id) -> Result<Vec<PeerId>, Error> {
        self.ask(|reply| Command::FindProviders { key: pool_digest, reply }).await?
    }

    /// Dials an address.
    pub async fn dial(&self, address: Multiaddr) -> Result<(), Error> {
        self.ask(|reply| Command::Dial { address, reply }).await?
    }

    /// Looks the archive nodes up in the DHT ([`archive_key`]) and dials up to [`ARCHIVE_DIALS_MAX`] it is not
    /// connected to, within the node's dialing budget; returns at once (the dials happen as the lookup finds them).
    pub async fn dial_archives(&self) {
        let _ = self.commands.send(Command::DialArchives).await;
    }

    /// This node keeps every block from 1 after all (an empty ledger that replayed instead of taking a snapshot):
    /// it announces itself as an archive from now on.
    pub async fn announce_archive(&self) {
        let _ = self.commands.send(Command::AnnounceArchive).await;
    }

    /// Closes every connection to a peer.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Error> {
        self.commands.send(Command::Disconnect { peer }).await.map_err(|_| Error::Stopped)
    }

    /// Peer id, listen addresses and connected peers.
    pub async fn info(&self) -> Result<Info, Error> {
        self.ask(|reply| Command::Info { reply }).await
    }

    /// The gossipsub score this node gives a peer.
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, Error> {
        self.ask(|reply| Command::PeerScore { peer, reply }).await
    }

    /// The peers in this node's mesh for a topic.
    pub async fn topic_peers(&self, topic: Topic) -> Result<Vec<PeerId>, Error> {
        self.ask(|reply| Command::TopicPeers { topic, reply }).await
    }

    /// The highest ledger protocol version each connected peer announced (PROTOCOL.md §9, identify).
    pub async fn peer_versions(&self) -> Result<Vec<(PeerId, u8)>, Error> {
        self.ask(|reply| Command::PeerVersions { reply }).await
    }

    /// How many messages from a peer were dropped for being over its budget.
    pub async fn over_budget(&self, peer: PeerId) -> Result<u64, Error> {
        self.ask(|reply| Command::OverBudget { peer, reply }).await
    }

    /// Asks a peer for the recent offers of a pool (a provider found with [`Handle::find_providers`]) and returns
    /// those that pass validation and belong to the pool; the others are counted as rejected.
    pub async fn recent_offers(
        &self,
        peer: PeerId,
        pool_digest: Id,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<protocol::Validated>, Error> {
        let request = Request::RecentOffers { pool: pool_digest.0, limit };
        let response = self.ask(|reply| Command::Request { peer, request, reply }).await??;
        let offers = match response {
            Response::RecentOffers { offers } => offers,
            Response::Refused { reason } => return Err(Error::Request(peer, reason)),
            other => return Err(Error::Request(peer, format!("answered another request ({})", other.name()))),
        };
        let topic = Topic::Pool(pool_digest);
        let mut valid = Vec::with_capacity(offers.len().min(RECENT_OFFERS_PER_RESPONSE_MAX));
        for bytes in offers.iter().take(RECENT_OFFERS_PER_RESPONSE_MAX) {
            match protocol::validate(bytes, &self.validation, now_ms) {
                Ok(validated)
                    if validated.envelope.kind() == protocol::Kind::Offer && topic.allows(&validated.envelope) =>
                {
                    valid.push(validated);
                }
                _ => Stats::bump(&self.stats.rejected),
            }
        }
        Ok(valid)
    }

    /// Asks a peer for committed blocks from height `from` on. Returns the peer's tip and the blocks, unverified:
    /// the ledger verifies every certificate.
    pub async fn blocks(&self, peer: PeerId, from: u64, max: u32) -> Result<(u64, Vec<ledger::store::Stored>), Error> {
        let request = Request::Blocks { from, max };
        match self.ask(|reply| Command::Request { peer, request, reply }).await?? {
            Response::Blocks { tip, blocks } => Ok((
                tip,
                blocks
                    .into_iter()
                    .take(BLOCKS_PER_RESPONSE_MAX)
                    .map(|(block, certificate)| ledger::store::Stored {
                        block: block.into_vec(),
                        certificate: certificate.into_vec(),
                    })
                    .collect(),
            )),
            Response::Refused { reason } => Err(Error::Request(peer, reason)),
            Response::Pruned { first, tip } => Err(Error::Pruned { peer, first, tip }),
            other => Err(Error::Request(peer, format!("answered another request ({})", other.name()))),
        }
    }

    /// Sends a state-sync request to a peer and returns its answer, unverified (a `Refused` as an error).
    pub async fn state_sync(&self, peer: PeerId, request: Request) -> Result<Response, Error> {
        match self.ask(|reply| Command::Request { peer, request, reply }).await?? {
            Response::Refused { reason } => Err(Error::Request(peer, reason)),
            response => Ok(response),
        }
    }

    /// Tells gossipsub what to do with a consensus message: valid ones are forwarded, invalid ones count against
    /// the peer that sent them, ignored ones are dropped without blame.
    pub async fn report_consensus(
        &self,
        message_id: libp2p::gossipsub::MessageId,
        source: PeerId,
        acceptance: Acceptance,
    ) {
        let _ = self.commands.send(Command::ReportConsensus { message_id, source, acceptance }).await;
    }

    /// Lowers a peer's score for something provably wrong it sent outside gossip validation (a bad synced block).
    pub async fn penalize(&self, peer: PeerId, reason: String) {
        let _ = self.commands.send(Command::Penalize { peer, reason }).await;
    }

    /// Stops the network task (connections close).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Waits until `condition` holds, polling every 50 ms, for at most `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use libp2p::request_response::Codec as _;

    use super::*;

    /// The lines of PROTOCOL.md's `text` block that starts with `sync-vectors:`, as (name, hex).
    fn documented() -> Vec<(String, String)> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md")).unwrap();
        let Some(start) = text.find("sync-vectors: ") else { return Vec::new() };
        let block = &text[start..text[start..].find("```").map_or(text.len(), |end| start + end)];
        block.lines().skip(1).filter_map(|line| line.split_once(": ")).map(|(a, b)| (a.into(), b.into())).collect()
    }

    /// PROTOCOL.md §9's state-sync requests and answers, byte for byte as the network's codec writes them: what a
    /// stranger's implementation checks its encoding against.
    #[tokio::test]
    async fn the_state_sync_messages_are_encoded_as_protocol_md_lists_them() {
        let mut codec = libp2p::request_response::cbor::codec::Codec::<Request, Response>::default();
        let protocol = libp2p::StreamProtocol::new("/kos/kos-vectors/sync/1");
        let requests = [
            ("snapshots", Request::Snapshots {}),
            ("snapshot-manifest", Request::SnapshotManifest { height: 1_000 }),
            ("snapshot-chunk", Request::SnapshotChunk { height: 1_000, index: 3 }),
            ("validator-changes", Request::ValidatorChanges { after: 0, upto: 1_000 }),
        ];
        let mut produced = Vec::new();
        for (name, request) in requests {
            let mut out = libp2p::futures::io::Cursor::new(Vec::new());
            codec.write_request(&protocol, &mut out, request).await.unwrap();
            produced.push((format!("request-{name}"), hex::encode(out.into_inner())));
        }
        let key = protocol::Keypair::from_seed(&[1; 32]).public();
        let responses = [
            ("snapshots", Response::Snapshots { snapshots: vec![(1_000, serde_bytes::ByteBuf::from(vec![7; 32]), 2)] }),
            ("snapshot-chunk", Response::SnapshotChunk { chunk: serde_bytes::ByteBuf::from(vec![0x80]) }),
            (
                "validator-changes",
                Response::ValidatorChanges { changes: vec![(5, vec![1].into(), vec![2].into(), vec![(key, 1)])] },
            ),
            ("refused", Response::Refused { reason: "busy".into() }),
        ];
        for (name, response) in responses {
            let mut out = libp2p::futures::io::Cursor::new(Vec::new());
            codec.write_response(&protocol, &mut out, response).await.unwrap();
            produced.push((format!("response-{name}"), hex::encode(out.into_inner())));
        }
        let documented = documented();
        if documented != produced {
            let text: String = produced.iter().map(|(name, hex)| format!("{name}: {hex}\n")).collect();
            panic!("PROTOCOL.md §9's sync vectors differ from the code's; the code makes:\nsync-vectors: kos\n{text}");
        }
    }
}
