//! The ledger in a running node: one thread owns the consensus [`Engine`] over a RocksDB store and drives it with
//! the network's messages, real timers and block sync. The engine is sans-IO; everything here is the IO around
//! it:
//! - entries from the ledger topic (already validated by the network) and from local clients go to the mempool
//!   (local ones are then gossiped);
//! - consensus messages go to the engine, which says whether they are valid: gossipsub forwards only those;
//! - the engine's timers run on tokio's clock;
//! - when peers are at a later height, blocks with their certificates are fetched by request-response and fed
//!   to the engine, which verifies each certificate and re-executes each block;
//! - a storage failure stops the node: a validator that cannot persist its votes must not go on signing.
//!
//! The engine runs on its own thread, so that synced RocksDB writes and block execution never hold up the
//! network.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Genesis;
use ledger::consensus::engine::{self, Commit, Effect, Engine, Timer};
pub use ledger::mempool::Rejected;
use ledger::snapshots::Snapshots;
use ledger::store::{RocksReader, RocksStore, StateSnapshot, Store as _, Stored};
use protocol::{Id, Keypair};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::network::{self, Acceptance, ConsensusDelivery, Delivery, PeerId, Topic};

mod follow;
mod restore;
pub mod statesync;
mod sync;

#[cfg(test)]
pub(crate) use follow::empty_commit;
pub use follow::{Follower, STORE_RETRY};

/// Inputs waiting for the ledger thread (entries, client requests, sync results).
const INPUT_QUEUE_LEN_MAX: usize = 16_384;
/// Consensus messages waiting for the engine; more are ignored (not forwarded) until it catches up.
pub const CONSENSUS_QUEUE_LEN_MAX: usize = 4_096;
/// Gossiped entries admitted to the mempool in one batch.
const ENTRY_BATCH_MAX: usize = 1_024;
/// Blocks asked for in one sync request.
const SYNC_BLOCKS_PER_REQUEST: u32 = 128;
/// How long one sync request may take before the next peer is asked.
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often sync progress is logged.
const SYNC_LOG_INTERVAL: Duration = Duration::from_secs(2);
use crate::clock::now_ms;
use follow::COMMIT_CHANNEL_LEN;

/// What the ledger needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub genesis: Arc<Genesis>,
    /// The RocksDB directory.
    pub path: PathBuf,
    pub engine: engine::Config,
    /// `[storage]`: keep only the last this many blocks (a `full` node); `None` keeps every block (an archive).
    pub keep_blocks: Option<u64>,
    /// The memory the database may use.
    pub profile: ledger::store::Profile,
    /// Write a snapshot of the state every this many blocks; 0: none.
    pub snapshot_interval: u64,
    /// An empty ledger takes a snapshot of at least this height from its peers, and a `full` one far behind one at
    /// least this many blocks past its tip ([`sync_from`]); `None`: it syncs every block.
    pub state_sync: Option<u64>,
}

/// The ledger's state as the rest of the node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The last committed height and its block hash (hex).
    pub height: u64,
    pub hash: String,
    /// The round of the height being decided.
    pub round: i64,
    pub mempool_entries: usize,
    pub validator: bool,
    pub validators: usize,
    /// Entries committed since this node started.
    pub committed_entries: u64,
    /// While syncing: the height peers are at.
    pub syncing_to: Option<u64>,
    /// Proposers seen signing two blocks for one round since this node started.
    pub equivocations: u64,
    /// When (this node's clock) it last committed or synced a block since it started; 0 before the first.
    pub committed_ms: u64,
    /// While the node takes a snapshot of the state from its peers (PROTOCOL.md §9, *State sync*): how far.
    pub state_sync: Option<statesync::Progress>,
    /// Key-value pairs in the ledger's state (PROTOCOL.md §10): in the ledger thread's memory on a node of the
    /// standard storage profile, read through RocksDB on one of the small profile (a home).
    pub state_pairs: usize,
}

/// A ledger that committed no block for this long (by the node's own clock: a skewed clock elsewhere does not count)
/// is not current: it has not started following the network, or its peers went quiet.
pub const CURRENT_WITHIN_MS: u64 = 30_000;

impl Status {
    /// Whether the ledger is current at `now_ms`: not syncing, and a block committed or synced since the node started,
    /// at most [`CURRENT_WITHIN_MS`] ago. What the node checks against the last commit (offers, unsettled matches) is
    /// only as good as this.
    pub fn current(&self, now_ms: u64) -> bool {
        self.syncing_to.is_none()
            && self.state_sync.is_none()
            && self.committed_ms > 0
            && self.committed_ms.saturating_add(CURRENT_WITHIN_MS) >= now_ms
    }
}

enum Input {
    Entries(Vec<Delivery>),
    Submit {
        bytes: Vec<u8>,
        reply: Reply,
    },
    /// A round of sync requests from height `from` ended: `served` is the first peer that sent blocks (with its
    /// claimed tip), `empty` the peers asked before it that sent none, with the tips they claimed.
    Synced {
        from: u64,
        served: Option<(PeerId, u64, Vec<Stored>)>,
        empty: Vec<(PeerId, u64)>,
    },
    Shutdown,
}

/// The answer to a submitted entry: its id, or why the mempool refused it.
type Reply = oneshot::Sender<Result<Id, Rejected>>;

/// A cloneable handle to the ledger thread.
#[derive(Clone)]
pub struct Handle {
    inputs: mpsc::Sender<Input>,
    status: watch::Receiver<Status>,
    /// The ledger thread holds the commit channel's only sender: when it ends the channel closes, and every
    /// follower ends after the last commit (handles do not keep it open).
    commits: broadcast::WeakSender<Arc<Commit>>,
    reader: RocksReader,
    genesis: Arc<Genesis>,
    /// Reads of the state waiting for the reader thread.
    queries: mpsc::Sender<Job>,
}

/// Reads of the state ([`Handle::query`]) waiting for the reader thread; more wait to be queued.
pub const QUERY_QUEUE_LEN: usize = 1_024;
/// Most reads answered from one snapshot: the reader thread takes a new one after that many, so that a steady
/// stream of reads still sees new commits.
const QUERIES_PER_SNAPSHOT_MAX: usize = 256;

/// A read of the state, run on the reader thread against a snapshot (or the reason there is none).
type Query = Box<dyn for<'a> FnOnce(&anyhow::Result<StateSnapshot<'a>>) + Send>;

/// What the reader thread is sent: a read, or the word to stop (from the ledger thread, as it ends).
enum Job {
    Read(Query),
    Stop,
}

/// The node's reader thread: where reads are sent, and the thread, which the ledger thread joins as it ends.
struct Reader {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    /// Stops the thread after the reads queued before this call and waits for it, so that it holds no snapshot
    /// or handle of the database when the ledger has ended (a process that exits while a thread still uses
    /// RocksDB can crash in RocksDB's teardown). Reads sent later are answered [`Error::Stopped`]. Blocking:
    /// call it outside the async runtime.
    fn stop(self) {
        let _ = self.jobs.blocking_send(Job::Stop);
        if self.thread.join().is_err() {
            error!("the reader thread panicked");
        }
    }
}

/// Stops the reader thread when dropped (on the ledger thread, outside its runtime).
struct StopOnDrop(Option<Reader>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(reader) = self.0.take() {
            reader.stop();
        }
    }
}

/// Starts the node's reader thread ("kos-reads"): it answers [`Handle::query`]s in order from RocksDB snapshots
/// of the last commit, as many queued reads from one snapshot as are waiting (at most
/// [`QUERIES_PER_SNAPSHOT_MAX`]), and takes a new snapshot as soon as a block is committed: a read sent after a
/// commit sees it. One thread: reads, however many and however large, take at most one core and never the
/// ledger thread's time. It ends on [`Reader::stop`] (or when every handle is gone).
fn spawn_reader(reader: RocksReader, genesis: Arc<Genesis>) -> anyhow::Result<Reader> {
    let (jobs, mut queue) = mpsc::channel::<Job>(QUERY_QUEUE_LEN);
    let thread = std::thread::Builder::new()
        .name("kos-reads".into())
        .spawn(move || {
            let answer = |query: Query, snapshot: &anyhow::Result<StateSnapshot<'_>>| {
                // A read that panics (a bug) loses its own answer (its caller hears that the ledger stopped), not
                // the thread.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| query(snapshot))).is_err() {
                    error!("a read of the state panicked");
                }
            };
            // Whether a block was committed after the snapshot was taken. A tip that cannot be read takes a new
            // snapshot too (which reports the failure if it lasts).
            let stale = |snapshot: &anyhow::Result<StateSnapshot<'_>>| match snapshot {
                Ok(snapshot) => !matches!(reader.tip(), Ok(tip) if tip <= snapshot.height()),
                Err(_) => true,
            };
            'reads: while let Some(Job::Read(first)) = queue.blocking_recv() {
                let mut snapshot = reader.snapshot(&genesis);
                answer(first, &snapshot);
                for _ in 1..QUERIES_PER_SNAPSHOT_MAX {
                    let Ok(job) = queue.try_recv() else { break };
                    let Job::Read(query) = job else { break 'reads };
                    if stale(&snapshot) {
                        snapshot = reader.snapshot(&genesis);
                    }
                    answer(query, &snapshot);
                }
            }
            // Stopped: reads still on their way are dropped (their callers hear that the ledger stopped), those
            // sent from now on are refused.
            queue.close();
            while queue.blocking_recv().is_some() {}
        })
        .context("starting the reader thread")?;
    Ok(Reader { jobs, thread })
}

/// Why the ledger refused a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the ledger has stopped")]
    Stopped,
    #[error("the ledger is busy; try again")]
    Busy,
    #[error("the ledger is taking a snapshot of the state from its peers; try again when it is done")]
    Syncing,
    #[error("entry refused: {0}")]
    Refused(Rejected),
    #[error("the ledger's store could not be read: {0:#}")]
    Unreadable(anyhow::Error),
}

impl Handle {
    /// Adds a signed entry to the mempool (validating it as a block would) and gossips it to the validators.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Id, Error> {
        // While a state sync chooses its snapshot (at most seconds) entries wait for the ledger; once it fetches
        // one, they are refused until it is done.
        if self.status.borrow().state_sync.is_some_and(|progress| progress.height > 0) {
            return Err(Error::Syncing);
        }
        let (reply, answer) = oneshot::channel();
        self.inputs.try_send(Input::Submit { bytes, reply }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Error::Busy,
            mpsc::error::TrySendError::Closed(_) => Error::Stopped,
        })?;
        answer.await.map_err(|_| Error::Stopped)?.map_err(Error::Refused)
    }

    /// Gossiped entries from the ledger topic; dropped (and counted by the caller) when the ledger is behind.
    pub fn entries(&self, deliveries: Vec<Delivery>) -> bool {
        self.inputs.try_send(Input::Entries(deliveries)).is_ok()
    }

    /// Reads the committed state: `query` gets a snapshot of the last commit (with its height). It runs on the
    /// node's reader thread (see [`spawn_reader`]), never on the ledger thread: a read, however large, does not
    /// hold up consensus, and a snapshot is unchanged by the commits made while it is read.
    pub async fn query<T: Send + 'static>(
        &self,
        query: impl FnOnce(&StateSnapshot<'_>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let job: Query = Box::new(move |snapshot| {
            // A caller that left (an HTTP client gone, a timeout) costs no read.
            if reply.is_closed() {
                return;
            }
            let answer = match snapshot {
                Ok(snapshot) => {
                    let value = query(snapshot);
                    snapshot.check().map(|()| value).map_err(Error::Unreadable)
                }
                Err(error) => Err(Error::Unreadable(anyhow::anyhow!("{error:#}"))),
            };
            let _ = reply.send(answer);
        });
        self.queries.send(Job::Read(job)).await.map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// [`Handle::query`] for the node's own followers of the ledger, which must neither act on a read that failed
    /// nor give up on one: a read the store could not answer (a transient I/O error) is tried again every
    /// [`STORE_RETRY`] until it is answered; `None` once the ledger has stopped.
    pub async fn query_until_read<T: Send + 'static>(
        &self,
        query: impl Fn(&StateSnapshot<'_>) -> T + Clone + Send + 'static,
    ) -> Option<T> {
        for failures in 1u64.. {
            match self.query(query.clone()).await {
                Ok(value) => return Some(value),
                Err(Error::Unreadable(error)) => {
                    // Logged at the 1st, 2nd, 4th, 8th… failure in a row: a store that stays unreadable does not
                    // fill the log.
                    if failures.is_power_of_two() {
                        warn!(error = %format!("{error:#}"), failures, "a read of the ledger's state failed; trying again");
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Returns once no state sync is under way (at once, mostly): during one the store holds the state the
    /// snapshot is about to replace (the genesis', or a ledger far behind's), which a follower that builds what it
    /// keeps from the state at its start should not read. `false`: the ledger stopped.
    pub async fn state_synced(&self) -> bool {
        let mut status = self.status.clone();
        while status.borrow_and_update().state_sync.is_some() {
            if status.changed().await.is_err() {
                return false;
            }
        }
        true
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Every block committed from now on, none missed (see [`Follower`]).
    pub fn follow(&self) -> Follower {
        let commits = self.subscribe();
        let next = self.reader.tip().unwrap_or_else(|_| self.status.borrow().height) + 1;
        Follower::new(commits, self.reader.clone(), next)
    }

    /// Every block committed from `height` on, the ones already committed read from the store first.
    pub fn follow_from(&self, height: u64) -> Follower {
        Follower::new(self.subscribe(), self.reader.clone(), height)
    }

    /// The commit channel, or one already closed when the ledger thread has ended (a follower made then reads
    /// what the store holds and ends).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Commit>> {
        match self.commits.upgrade() {
            Some(commits) => commits.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Reads of committed blocks and the entry index (any thread).
    pub fn reader(&self) -> &RocksReader {
        &self.reader
    }

    pub fn genesis(&self) -> &Arc<Genesis> {
        &self.genesis
    }

    /// Stops the ledger thread after the input it is handling.
    pub async fn shutdown(&self) {
        let _ = self.inputs.send(Input::Shutdown).await;
    }
}

/// A started ledger: its handle, the block source for the network, and the thread's result.
pub struct Started {
    pub handle: Handle,
    /// Resolves when the ledger thread ends: `Err` when it stopped on a fatal error.
    pub done: oneshot::Receiver<anyhow::Result<()>>,
}

/// An opened ledger, not yet running: the network needs its block reader before the ledger needs the network.
pub struct Opened {
    ready: Ready,
    genesis: Arc<Genesis>,
    reader: RocksReader,
    prunes: bool,
    snapshots: Arc<Snapshots>,
    snapshot_interval: u64,
    /// The ledger's directory, for errors that name it.
    path: PathBuf,
}

/// What the ledger thread starts from.
enum Ready {
    /// A ledger with blocks (or one that replays from the genesis).
    Engine(Box<Engine<RocksStore>>),
    /// An empty ledger, or one far behind, that first tries to take a snapshot of at least `min_height` from its
    /// peers.
    Sync { store: Box<RocksStore>, seed: [u8; 32], config: engine::Config, min_height: u64, path: PathBuf },
}

impl Opened {
    /// Reads of committed blocks, for the network to serve syncing peers.
    pub fn reader(&self) -> RocksReader {
        self.reader.clone()
    }

    /// Whether this ledger keeps every block from the genesis on (an archive that never pruned). An empty ledger
    /// that may take a snapshot is not (yet): it announces itself once it replays instead.
    pub fn archive(&self) -> bool {
        !self.prunes && !matches!(self.ready, Ready::Sync { .. }) && self.reader.first().is_ok_and(|first| first <= 1)
    }

    /// The snapshots this node keeps, for the network to serve.
    pub fn snapshots(&self) -> Arc<Snapshots> {
        self.snapshots.clone()
    }
}

fn open_engine(
    genesis: &Arc<Genesis>,
    seed: &[u8; 32],
    store: RocksStore,
    config: engine::Config,
    path: &std::path::Path,
) -> anyhow::Result<Engine<RocksStore>> {
    Engine::new(genesis.clone(), seed, store, config, now_ms()).map_err(|error| {
        anyhow::anyhow!(
            "{error}: the ledger in {} does not match the genesis file or is damaged; move it aside and the node will \
             sync the ledger again from its peers",
            path.display()
        )
    })
}

/// The lowest snapshot height worth a state sync for this ledger, or `None` when it does not ask for one (PROTOCOL.md
/// §9, *State sync*): an empty ledger asks for one of at least `state_sync_min_height`; a `full` ledger far behind
/// (see [`far_behind`]) for one at least that many blocks past its tip. An archive, or a ledger near its network's
/// tip, syncs blocks.
fn sync_from(settings: &Settings, store: &RocksStore, now_ms: u64) -> anyhow::Result<Option<u64>> {
    let Some(min_height) = settings.state_sync else { return Ok(None) };
    let tip = store.tip()?;
    if tip == 0 {
        return Ok(Some(min_height));
    }
    if settings.keep_blocks.is_none() {
        return Ok(None);
    }
    let Some(stored) = store.block(tip)? else { return Ok(None) };
    let time_ms = ledger::Block::from_bytes(&stored.block)
        .with_context(|| format!("reading the ledger's last block ({tip})"))?
        .header()
        .time_ms;
    if !far_behind(time_ms, now_ms, min_height, settings.engine.empty_block_ms) {
        return Ok(None);
    }
    let minutes = now_ms.saturating_sub(time_ms) / 60_000;
    tracing::info!(tip, minutes, "the ledger's last block is old: it asks its peers for a snapshot past it");
    Ok(Some(tip.saturating_add(min_height)))
}

/// Whether a ledger whose last block was made at `tip_ms` is far behind at `now_ms`: older than the time its network
/// takes to make `min_height` empty blocks, one every `empty_block_ms` (busy, it makes them faster). A guess that
/// only decides whether to ask: the snapshots offered decide whether to take one.
fn far_behind(tip_ms: u64, now_ms: u64, min_height: u64, empty_block_ms: u64) -> bool {
    now_ms.saturating_sub(tip_ms) > min_height.saturating_mul(empty_block_ms.max(1))
}

/// Opens the store and the engine, failing early with the reason.
pub fn open(settings: &Settings, keypair: &Keypair) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&settings.path)
        .with_context(|| format!("creating the ledger directory {}", settings.path.display()))?;
    let mut store = RocksStore::open_with(&settings.path, settings.profile)?;
    store.set_keep_blocks(settings.keep_blocks);
    match settings.keep_blocks {
        Some(keep) => tracing::info!(
            keep_blocks = keep.max(ledger::store::KEEP_BLOCKS_MIN),
            first = store.first().unwrap_or(1),
            "storage mode full: the ledger keeps the state and only its last blocks"
        ),
        None => tracing::info!("storage mode archive: the ledger keeps every block"),
    }
    let snapshots = Arc::new(Snapshots::open(&settings.path.join("snapshots"))?);
    restore::clean_staging(&settings.path)?;
    let reader = store.reader();
    let ready = match sync_from(settings, &store, now_ms())? {
        Some(min_height) => Ready::Sync {
            store: Box::new(store),
            seed: *keypair.seed(),
            config: settings.engine.clone(),
            min_height,
            path: settings.path.clone(),
        },
        None => Ready::Engine(Box::new(open_engine(
            &settings.genesis,
            keypair.seed(),
            store,
            settings.engine.clone(),
            &settings.path,
        )?)),
    };
    Ok(Opened {
        ready,
        genesis: settings.genesis.clone(),
        reader,
        prunes: settings.keep_blocks.is_some(),
        snapshots,
        snapshot_interval: settings.snapshot_interval,
        path: settings.path.clone(),
    })
}

/// Starts the ledger thread.
pub fn start(
    opened: Opened,
    network: network::Handle,
    consensus: mpsc::Receiver<ConsensusDelivery>,
) -> anyhow::Result<Started> {
    let Opened { ready, genesis, reader, snapshots, snapshot_interval, prunes, path: path_for_errors } = opened;
    let (inputs, mut input_receiver) = mpsc::channel(INPUT_QUEUE_LEN_MAX);
    // A ledger that starts with a state sync says so from the start, so that no follower reads the state before it.
    let syncing = matches!(ready, Ready::Sync { .. }).then(statesync::Progress::default);
    let (status_sender, status) = watch::channel(Status { state_sync: syncing, ..Status::default() });
    let (commits, _) = broadcast::channel(COMMIT_CHANNEL_LEN);
    let reads = spawn_reader(reader.clone(), genesis.clone())?;
    let handle = Handle {
        inputs: inputs.clone(),
        status,
        commits: commits.downgrade(),
        reader: reader.clone(),
        genesis: genesis.clone(),
        queries: reads.jobs.clone(),
    };
    let (done_sender, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("kos-ledger".into())
        .spawn(move || {
            // The ledger has ended when its reads have too, however it ended (a panic included): declared before
            // the runtime, the guard stops the reader thread after the runtime is gone.
            let reads = StopOnDrop(Some(reads));
            let run = async move {
                // Submissions that came while a state sync chose its snapshot: handled first once the ledger runs.
                let mut held = Vec::new();
                let engine = match ready {
                    Ready::Engine(engine) => *engine,
                    Ready::Sync { store, seed, config, min_height, path } => {
                        let sync = restore::Restore {
                            network: &network,
                            genesis: &genesis,
                            status: &status_sender,
                            path: &path,
                        };
                        let Some((store, restored)) =
                            sync.run(*store, min_height, &mut input_receiver, &mut held).await?
                        else {
                            return Ok(());
                        };
                        if !restored && !prunes {
                            network.announce_archive().await;
                        }
                        open_engine(&genesis, &seed, store, config, &path)?
                    }
                };
                // The engine trusted the state's summary kept with its tip rather than summing the whole state
                // (a restart that does not grow with it): the pairs are checked against it now, beside the running
                // ledger, and a state that does not add up stops it. A ledger that stops first cancels the check.
                let verify_reader = reader.clone();
                let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let cancelled = cancel.clone();
                let verify = tokio::task::spawn_blocking(move || verify_reader.verify_state(&cancelled));
                let stop = inputs.clone();
                let actor = Actor {
                    engine,
                    network,
                    inputs,
                    status: status_sender,
                    commits,
                    timers: HashMap::new(),
                    sync: Sync::default(),
                    committed_entries: 0,
                    equivocations: 0,
                    committed_ms: 0,
                    snapshots: SnapshotWriter::new(snapshots, snapshot_interval, reader, genesis),
                };
                let run = actor.run(input_receiver, consensus, held);
                tokio::pin!(run);
                let damaged = tokio::select! {
                    result = &mut run => {
                        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                        return result;
                    }
                    verified = verify => match verified {
                        Ok(Ok(Some(height))) => {
                            info!(height, "the ledger's state adds up to its block's state root");
                            None
                        }
                        Ok(Ok(None)) => None,
                        Ok(Err(error)) => Some(error),
                        Err(error) => {
                            warn!("the check of the ledger's state did not run: {error}");
                            None
                        }
                    },
                };
                let Some(error) = damaged else { return run.await };
                // Stopped as at a shutdown, then reported: the node ends with the reason. The actor runs while the
                // stop waits for room in its queue (it ends the wait by ending, if it ends first).
                let _ = tokio::join!(stop.send(Input::Shutdown), &mut run);
                Err(error.context(format!(
                    "checking the ledger's state after the start: move {} aside and the node will sync the ledger \
                     again from its peers",
                    path_for_errors.display()
                )))
            };
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the ledger runtime")
                .and_then(|runtime| runtime.block_on(run));
            drop(reads);
            let _ = done_sender.send(result);
        })
        .context("starting the ledger thread")?;
    Ok(Started { handle, done })
}

/// Writes a snapshot every `interval` blocks, on a thread of its own (one at a time: a height that comes while one
/// is written gets none).
struct SnapshotWriter {
    snapshots: Arc<Snapshots>,
    interval: u64,
    reader: RocksReader,
    genesis: Arc<Genesis>,
    writing: Arc<std::sync::atomic::AtomicBool>,
}

impl SnapshotWriter {
    fn new(snapshots: Arc<Snapshots>, interval: u64, reader: RocksReader, genesis: Arc<Genesis>) -> SnapshotWriter {
        SnapshotWriter { snapshots, interval, reader, genesis, writing: Arc::default() }
    }

    fn committed(&self, height: u64) {
        use std::sync::atomic::Ordering;
        if self.interval == 0 || !height.is_multiple_of(self.interval) || self.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (snapshots, reader, genesis, writing) =
            (self.snapshots.clone(), self.reader.clone(), self.genesis.clone(), self.writing.clone());
        let spawned = std::thread::Builder::new().name("kos-snapshot".into()).spawn(move || {
            let started = Instant::now();
            match snapshots.write(&reader, &genesis, height) {
                Ok(Some(held)) => info!(
                    height,
                    chunks = held.chunks,
                    manifest = %held.manifest_hash,
                    ms = started.elapsed().as_millis() as u64,
                    "wrote a snapshot of the state"
                ),
                Ok(None) => debug!(height, "no snapshot: the ledger moved on before it was taken"),
                Err(error) => warn!(height, "writing a snapshot of the state: {error:#}"),
            }
            writing.store(false, Ordering::Release);
        });
        if let Err(error) = spawned {
            warn!("starting the snapshot thread: {error}");
            self.writing.store(false, Ordering::Release);
        }
    }
}

fn to_malachite(peer: &PeerId) -> Option<ledger::consensus::PeerId> {
    ledger::consensus::PeerId::from_bytes(&peer.to_bytes()).ok()
}

fn from_malachite(peer: ledger::consensus::PeerId) -> Option<PeerId> {
    PeerId::from_bytes(&peer.to_bytes()).ok()
}

/// Block sync in progress.
#[derive(Default)]
struct Sync {
    /// A request is out.
    in_flight: bool,
    /// The height peers are known to have committed, from checked evidence only.
    target: sync::Target,
    /// Rotates the peer asked first.
    attempt: usize,
    /// Height and time of the last progress log.
    logged: Option<(u64, Instant)>,
    started: Option<(u64, Instant)>,
}

struct Actor {
    engine: Engine<RocksStore>,
    network: network::Handle,
    inputs: mpsc::Sender<Input>,
    status: watch::Sender<Status>,
    commits: broadcast::Sender<Arc<Commit>>,
    timers: HashMap<Timer, Instant>,
    sync: Sync,
    committed_entries: u64,
    equivocations: u64,
    committed_ms: u64,
    snapshots: SnapshotWriter,
}

impl Actor {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut consensus: mpsc::Receiver<ConsensusDelivery>,
        held: Vec<Input>,
    ) -> anyhow::Result<()> {
        let (height, hash) = self.engine.tip();
        info!(
            height,
            %hash,
            validator = self.engine.is_validator(),
            validators = self.engine.validators().validators.len(),
            "ledger opened"
        );
        let effects = self.engine.start(now_ms());
        self.apply(effects).await?;
        for input in held {
            self.on_input(input, &mut inputs).await?;
        }
        loop {
            let deadline = self.timers.values().min().copied();
            tokio::select! {
                input = inputs.recv() => match input {
                    None | Some(Input::Shutdown) => break,
                    Some(input) => self.on_input(input, &mut inputs).await?,
                },
                Some(delivery) = consensus.recv() => {
                    let (acceptance, effects) = match to_malachite(&delivery.source) {
                        Some(peer) => {
                            let (verdict, effects) = self.engine.on_message(peer, &delivery.bytes, now_ms());
                            (acceptance(&delivery.source, verdict), effects)
                        }
                        None => (Acceptance::Ignore, Vec::new()),
                    };
                    self.network.report_consensus(delivery.message_id, delivery.source, acceptance).await;
                    self.apply(effects).await?;
                }
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    let due: Vec<Timer> =
                        self.timers.iter().filter(|(_, at)| **at <= now).map(|(timer, _)| *timer).collect();
                    for timer in due {
                        self.timers.remove(&timer);
                        let effects = self.engine.on_timer(timer, now_ms());
                        self.apply(effects).await?;
                    }
                }
            }
        }
        info!(height = self.engine.tip().0, "ledger stopped");
        Ok(())
    }

    async fn on_input(&mut self, input: Input, inputs: &mut mpsc::Receiver<Input>) -> anyhow::Result<()> {
        match input {
            Input::Entries(first) => {
                // Take whatever else is queued, so a busy mempool is fed in batches.
                let mut deliveries = first;
                while deliveries.len() < ENTRY_BATCH_MAX {
                    match inputs.try_recv() {
                        Ok(Input::Entries(more)) => deliveries.extend(more),
                        Ok(other) => {
                            self.admit(deliveries).await?;
                            return Box::pin(self.on_input(other, inputs)).await;
                        }
                        Err(_) => break,
                    }
                }
                self.admit(deliveries).await
            }
            Input::Submit { bytes, reply } => {
                // Take the other submissions queued behind this one, so their signatures are verified together.
                let mut submissions = vec![(bytes, reply)];
                let mut next = None;
                while submissions.len() < ENTRY_BATCH_MAX {
                    match inputs.try_recv() {
                        Ok(Input::Submit { bytes, reply }) => submissions.push((bytes, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.submit(submissions).await?;
                match next {
                    Some(input) => Box::pin(self.on_input(input, inputs)).await,
                    None => Ok(()),
                }
            }
            Input::Synced { from, served, empty } => self.on_synced(from, served, empty).await,
            Input::Shutdown => Ok(()),
        }
    }

    /// Admits entries submitted by local clients, gossips the accepted ones and answers each client.
    async fn submit(&mut self, submissions: Vec<(Vec<u8>, Reply)>) -> anyhow::Result<()> {
        let (entries, replies): (Vec<Vec<u8>>, Vec<Reply>) = submissions.into_iter().unzip();
        let (results, effects) = self.engine.on_entries(entries.clone(), now_ms());
        // Each accepted entry travels on its own topic: readings on the readings topic, job postings and bids on the
        // jobs topic (which every node also feeds to its mempool), the rest on the ledger topic (several at once in
        // bundles).
        let mut accepted = Vec::new();
        for ((bytes, result), reply) in entries.into_iter().zip(results).zip(replies) {
            if result.is_ok() {
                accepted.push(bytes);
            }
            let _ = reply.send(result);
        }
        if let Err(error) = self.network.publish_entries(&accepted).await {
            // A lone validator has no peers to gossip to; its own mempool has the entries.
            debug!(%error, "gossiping submitted entries");
        }
        self.apply(effects).await
    }

    async fn admit(&mut self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        let entries = deliveries
            .into_iter()
            .map(|delivery| {
                let envelope = Arc::unwrap_or_clone(delivery.envelope);
                (delivery.bytes.to_vec(), protocol::Validated { envelope, id: delivery.id })
            })
            .collect();
        let (_, effects) = self.engine.on_validated_entries(entries, now_ms());
        self.apply(effects).await
    }

    async fn apply(&mut self, effects: Vec<Effect>) -> anyhow::Result<()> {
        for effect in effects {
            match effect {
                Effect::Broadcast(bytes) => {
                    if let Err(error) = self.network.publish_bytes(Topic::Consensus, bytes).await {
                        debug!(%error, "publishing a consensus message");
                    }
                }
                Effect::StartTimer(timer, ms) => {
                    self.timers.insert(timer, Instant::now() + Duration::from_millis(ms));
                }
                Effect::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Effect::CancelConsensusTimers => self.timers.retain(|timer, _| !matches!(timer, Timer::Consensus(_))),
                Effect::Committed(commit) => self.on_commit(commit),
                Effect::Behind { height } => {
                    self.sync.target.behind(height);
                    self.request_sync();
                }
                Effect::Misbehaved { peer, reason } => {
                    let peer = from_malachite(peer);
                    debug!(?peer, %reason, "peer misbehaved");
                    if let Some(peer) = peer {
                        self.network.penalize(peer, reason).await;
                    }
                }
                Effect::Equivocated { proposer, height, round, first, second } => {
                    warn!(%proposer, height, round, %first, %second, "a validator proposed two blocks for one round");
                    self.equivocations += 1;
                }
                Effect::Fatal(reason) => {
                    error!(%reason, "the ledger stopped; the node shuts down");
                    anyhow::bail!("the ledger stopped: {reason}");
                }
            }
        }
        self.publish_status();
        Ok(())
    }

    fn on_commit(&mut self, commit: Arc<Commit>) {
        self.snapshots.committed(commit.height);
        let entries = commit.entry_ids.len();
        self.committed_entries += entries as u64;
        self.committed_ms = crate::clock::now_ms();
        if entries > 0 || commit.height.is_multiple_of(60) {
            info!(height = commit.height, entries, hash = %commit.block.hash(), "committed");
        } else {
            debug!(height = commit.height, hash = %commit.block.hash(), "committed an empty block");
        }
        let _ = self.commits.send(commit);
    }

    fn publish_status(&self) {
        let (height, hash) = self.engine.tip();
        let status = Status {
            height,
            hash: hash.to_string(),
            round: self.engine.round().as_i64(),
            mempool_entries: self.engine.mempool().len(),
            validator: self.engine.is_validator(),
            validators: self.engine.validators().validators.len(),
            committed_entries: self.committed_entries,
            syncing_to: self.sync.target.syncing(height),
            equivocations: self.equivocations,
            committed_ms: self.committed_ms,
            state_sync: None,
            state_pairs: self.engine.state().len(),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    /// Asks peers, one after the other, for the blocks after this node's tip; the answer comes back as an input.
    fn request_sync(&mut self) {
        if self.sync.in_flight {
            return;
        }
        self.sync.in_flight = true;
        self.sync.target.round_started();
        self.sync.attempt = self.sync.attempt.wrapping_add(1);
        let from = self.engine.height();
        if self.sync.started.is_none() {
            self.sync.started = Some((from, Instant::now()));
        }
        let (network, inputs, attempt) = (self.network.clone(), self.inputs.clone(), self.sync.attempt);
        tokio::spawn(async move {
            // Each round starts at another peer, and asks at most PEERS_PER_ROUND_MAX of them.
            let mut peers = network.info().await.map(|info| info.peers).unwrap_or_default();
            if !peers.is_empty() {
                let start = attempt % peers.len();
                peers.rotate_left(start);
            }
            peers.truncate(sync::PEERS_PER_ROUND_MAX);
            let mut empty = Vec::new();
            let mut pruned = 0usize;
            let asked = peers.len();
            for peer in peers {
                match tokio::time::timeout(SYNC_REQUEST_TIMEOUT, network.blocks(peer, from, SYNC_BLOCKS_PER_REQUEST))
                    .await
                {
                    Ok(Ok((tip, blocks))) if !blocks.is_empty() => {
                        let _ = inputs.send(Input::Synced { from, served: Some((peer, tip, blocks)), empty }).await;
                        return;
                    }
                    Ok(Ok((tip, _))) => empty.push((peer, tip)),
                    Ok(Err(error @ network::Error::Pruned { .. })) => {
                        pruned += 1;
                        debug!(%peer, %error, "sync request: a pruned peer");
                    }
                    Ok(Err(error)) => debug!(%peer, %error, "sync request failed"),
                    Err(_) => debug!(%peer, "sync request timed out"),
                }
            }
            if pruned > 0 && pruned == asked {
                // Archive nodes announce themselves in the DHT: dial a few, whom the next round asks.
                warn!(
                    height = from,
                    "no connected peer keeps block {from}: they all prune their history; dialing archive nodes \
                     found in the DHT ([storage] mode = \"archive\", e.g. validators)"
                );
                network.dial_archives().await;
            }
            // Nobody had the next block yet: wait a little before asking again.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = inputs.send(Input::Synced { from, served: None, empty }).await;
        });
    }

    async fn on_synced(
        &mut self,
        from: u64,
        served: Option<(PeerId, u64, Vec<Stored>)>,
        empty: Vec<(PeerId, u64)>,
    ) -> anyhow::Result<()> {
        self.sync.in_flight = false;
        // A peer that claims to have committed the height asked for, yet sends no block of it, lies (an honest
        // server sends at least one block whenever its tip reaches `from`).
        for (peer, tip) in empty {
            if let Some(reason) = self.sync.target.answered(from, tip, 0) {
                warn!(%peer, tip, from, "a peer claimed blocks it does not serve");
                self.network.penalize(peer, reason).await;
            }
        }
        match served {
            Some((peer, tip, blocks)) if from == self.engine.height() => {
                let _ = self.sync.target.answered(from, tip, blocks.len());
                let malachite = to_malachite(&peer);
                for stored in &blocks {
                    let before = self.engine.height();
                    let effects = match malachite {
                        Some(malachite) => self.engine.on_synced_block(malachite, stored, now_ms()),
                        None => Vec::new(),
                    };
                    self.apply(effects).await?;
                    if self.engine.height() == before {
                        warn!(%peer, height = before, "a synced block was not accepted; asking another peer");
                        break;
                    }
                }
            }
            Some(_) => {}
            // No peer had a block past this node's tip: whatever a peer claimed, there is nothing to sync now.
            None => self.sync.target.nothing_served(self.engine.tip().0),
        }
        let height = self.engine.tip().0;
        self.log_sync(height);
        if self.sync.target.syncing(height).is_some() {
            self.request_sync();
        } else if let Some((start, since)) = self.sync.started.take() {
            let blocks = height.saturating_sub(start.saturating_sub(1));
            info!(height, blocks, seconds = since.elapsed().as_secs_f64(), "caught up");
            self.sync.logged = None;
        }
        self.publish_status();
        Ok(())
    }

    fn log_sync(&mut self, height: u64) {
        let now = Instant::now();
        match self.sync.logged {
            Some((_, at)) if now.duration_since(at) < SYNC_LOG_INTERVAL => {}
            Some((last, at)) => {
                let rate = height.saturating_sub(last) as f64 / now.duration_since(at).as_secs_f64().max(1e-3);
                info!(height, target = self.sync.target.height(), blocks_per_s = rate.round(), "syncing");
                self.sync.logged = Some((height, now));
            }
            None => {
                info!(height, target = self.sync.target.height(), "syncing");
                self.sync.logged = Some((height, now));
            }
        }
    }
}

/// What gossipsub does with a consensus message, from the engine's verdict.
fn acceptance(source: &PeerId, verdict: engine::Verdict) -> Acceptance {
    match verdict {
        engine::Verdict::Accept => Acceptance::Accept,
        engine::Verdict::Ignore(reason) => {
            debug!(peer = %source, reason, "consensus message not forwarded");
            Acceptance::Ignore
        }
        engine::Verdict::Reject(reason) => {
            debug!(peer = %source, %reason, "invalid consensus message");
            Acceptance::Reject
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use ledger::reads::*;
    use ledger::store::{Outcome, Store};
    use protocol::types::TokenId;

    use super::*;
    use ledger::State;

    /// A handle whose ledger thread never takes an input: it is busy (executing, syncing, writing) for the whole
    /// test.
    fn busy_ledger(reader: RocksReader, genesis: Arc<Genesis>) -> (Handle, mpsc::Receiver<Input>, Reader) {
        let (inputs, received) = mpsc::channel(1);
        let (_, status) = watch::channel(Status::default());
        let (commits, _) = broadcast::channel(COMMIT_CHANNEL_LEN);
        let reads = spawn_reader(reader.clone(), genesis.clone()).unwrap();
        let commits = commits.downgrade();
        (Handle { inputs, status, commits, reader, genesis, queries: reads.jobs.clone() }, received, reads)
    }

    /// Stops a test's reader thread, so that it does not outlive the test holding the database.
    async fn stop(reads: Reader) {
        tokio::task::spawn_blocking(move || reads.stop()).await.unwrap();
    }

    fn test_genesis() -> (Arc<Genesis>, [protocol::PublicKey; 2]) {
        let keys = [Keypair::from_seed(&[1; 32]).public(), Keypair::from_seed(&[2; 32]).public()];
        let text = Genesis::devnet_text("kos-test", 1_000, &keys[..1], &keys, 5_000);
        (Arc::new(Genesis::parse(&text).unwrap()), keys)
    }

    /// Commits block `height` (empty) with `writes` to the store, as the ledger thread would.
    fn commit(store: &mut RocksStore, height: u64, writes: &ledger::state::Writes) {
        let outcome = Outcome::default();
        store.commit(height, &Stored { block: Vec::new(), certificate: Vec::new() }, writes, &outcome).unwrap();
    }

    /// The genesis pairs, which block 1 writes to the store.
    fn genesis_writes(genesis: &Arc<Genesis>) -> ledger::state::Writes {
        State::genesis(genesis.clone())
            .pairs()
            .map(|(key, value)| (key.into_owned(), Some(value.into_owned())))
            .collect()
    }

    /// Sends a read that holds the reader thread, and its snapshot, until it is let go; returns once it runs. The
    /// read answers its snapshot's height.
    async fn hold_the_reader(
        ledger: &Handle,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<u64, Error>>) {
        let (let_go, held) = std::sync::mpsc::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let ledger = ledger.clone();
            async move {
                ledger
                    .query(move |state| {
                        let _ = running.send(());
                        held.recv().unwrap();
                        state.height()
                    })
                    .await
            }
        });
        started.await.unwrap();
        (let_go, first)
    }

    #[tokio::test]
    async fn a_read_sent_after_a_commit_sees_it() {
        let (genesis, _) = test_genesis();
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let (ledger, _inputs, reads) = busy_ledger(store.reader(), genesis.clone());
        // A first read holds the reader thread (and its snapshot, at height 0) until it is let go.
        let (let_go, first) = hold_the_reader(&ledger).await;
        // Block 1 is committed while the first read runs; a read sent after it waits behind the first one.
        commit(&mut store, 1, &genesis_writes(&genesis));
        let after = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.query(|state| state.height()).await }
        });
        while ledger.queries.capacity() == QUERY_QUEUE_LEN {
            tokio::task::yield_now().await;
        }
        let_go.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0, "the first read keeps its snapshot");
        assert_eq!(after.await.unwrap().unwrap(), 1, "a read sent after a commit sees it");
        stop(reads).await;
    }

    #[tokio::test]
    async fn a_read_whose_caller_left_is_not_run() {
        let (genesis, _) = test_genesis();
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let (ledger, _inputs, reads) = busy_ledger(store.reader(), genesis);
        // A first read holds the reader thread while a second one is sent and its caller gives up on it.
        let (let_go, first) = hold_the_reader(&ledger).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = tokio::spawn({
            let (ledger, ran) = (ledger.clone(), ran.clone());
            async move { ledger.query(move |_| ran.store(true, std::sync::atomic::Ordering::SeqCst)).await }
        });
        while ledger.queries.capacity() == QUERY_QUEUE_LEN {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        let_go.send(()).unwrap();
        first.await.unwrap().unwrap();
        // A read sent after it is answered, so the abandoned one has been taken from the queue.
        assert_eq!(ledger.query(|state| state.height()).await.unwrap(), 0);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "the abandoned read ran");
        stop(reads).await;
    }

    /// When the ledger thread ends (its commit sender dropped), a follower ends too, though handles still live:
    /// before, every handle kept the channel open and a follower waited forever.
    #[tokio::test]
    async fn a_follower_ends_when_the_ledger_thread_ends_though_handles_live() {
        let dir = tempfile::tempdir().unwrap();
        let (genesis, _) = test_genesis();
        let store = RocksStore::open(dir.path()).unwrap();
        let (inputs, _received) = mpsc::channel(1);
        let (_, status) = watch::channel(Status::default());
        let (sender, _) = broadcast::channel(COMMIT_CHANNEL_LEN);
        let reads = spawn_reader(store.reader(), genesis.clone()).unwrap();
        let ledger = Handle {
            inputs,
            status,
            commits: sender.downgrade(),
            reader: store.reader(),
            genesis,
            queries: reads.jobs.clone(),
        };
        let mut follower = ledger.follow();
        drop(sender);
        let ended = tokio::time::timeout(Duration::from_secs(5), follower.next()).await;
        assert!(matches!(ended, Ok(None)), "the follower did not end with the ledger thread");
        let ended = tokio::time::timeout(Duration::from_secs(5), ledger.follow().next()).await;
        assert!(matches!(ended, Ok(None)), "a follower made after the end waits");
        stop(reads).await;
    }

    #[tokio::test]
    async fn the_reader_thread_ends_with_the_ledger_and_lets_go_of_the_store() {
        let (genesis, _) = test_genesis();
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let (ledger, _inputs, reads) = busy_ledger(store.reader(), genesis.clone());
        assert_eq!(ledger.query(|state| state.height()).await.unwrap(), 0);
        stop(reads).await;
        // The handle lives on, the reads have ended with the ledger.
        assert!(matches!(ledger.query(|state| state.height()).await, Err(Error::Stopped)));
        // Once the last handle and the store are dropped the database is closed: it opens again at once.
        drop((ledger, store));
        RocksStore::open(dir.path()).expect("the store is no longer held");
    }

    #[tokio::test]
    async fn reads_of_the_state_are_answered_while_the_ledger_thread_is_busy() {
        let (genesis, keys) = test_genesis();
        let credit = TokenId::new("credit").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let (ledger, _inputs, reads) = busy_ledger(store.reader(), genesis.clone());
        let read = |ledger: Handle| {
            let credit = credit.clone();
            async move {
                let query = ledger.query(move |state| (state.height(), state.balance(&keys[1], &credit)));
                tokio::time::timeout(Duration::from_secs(5), query).await.expect("an answer in time").unwrap()
            }
        };
        // Before block 1 the store holds no state: the genesis state answers.
        let genesis_balance = State::genesis(genesis.clone()).balance(&keys[1], &TokenId::new("credit").unwrap());
        assert!(genesis_balance > 0);
        assert_eq!(read(ledger.clone()).await, (0, genesis_balance));
        // Block 1 (which writes the genesis pairs too) paid 7 more.
        let mut writes = genesis_writes(&genesis);
        let balance_key = [&b"b"[..], keys[1].as_bytes(), b"credit"].concat();
        assert!(writes.contains_key(&balance_key));
        writes.insert(balance_key, Some(protocol::codec::encode(&(genesis_balance + 7))));
        commit(&mut store, 1, &writes);
        assert_eq!(read(ledger.clone()).await, (1, genesis_balance + 7));
        stop(reads).await;
    }

    /// Issue 28, item 2: which ledgers ask their peers for a snapshot at start, and of what height. An empty one
    /// does; a `full` one whose last block is older than `state_sync_min_height` empty blocks asks for one that many
    /// blocks past its tip; an archive, one near the tip, and one told to replay do not.
    #[test]
    fn an_empty_ledger_or_a_full_one_far_behind_asks_for_a_snapshot() {
        let (genesis, keys) = test_genesis();
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let engine = engine::Config { empty_block_ms: 1_000, ..engine::Config::default() };
        let mut settings = Settings {
            genesis: genesis.clone(),
            path: dir.path().to_path_buf(),
            engine,
            keep_blocks: Some(1_024),
            profile: ledger::store::Profile::Small,
            snapshot_interval: 1_000,
            state_sync: Some(1_000),
        };
        let now = 1_700_000_000_000;
        assert_eq!(sync_from(&settings, &store, now).unwrap(), Some(1_000), "an empty ledger");
        // Block 40, made at `made`.
        let made = now - 1_000 * 1_000;
        let header = ledger::block::Header {
            version: ledger::block::BLOCK_VERSION,
            network: genesis.network.clone(),
            height: 40,
            time_ms: made,
            parent: ledger::hash::Hash([0; 32]),
            proposer: keys[0],
            entries_root: ledger::hash::Hash([0; 32]),
            entry_count: 0,
            state_root: ledger::hash::Hash([0; 32]),
            validators_hash: ledger::hash::Hash([0; 32]),
        };
        let stored = Stored { block: ledger::Block::new(header, Vec::new()).to_bytes(), certificate: Vec::new() };
        store.commit(40, &stored, &ledger::state::Writes::new(), &Outcome::default()).unwrap();
        // 1,000 empty blocks of 1 s: exactly that old is not yet far behind; a millisecond more is.
        assert_eq!(sync_from(&settings, &store, now).unwrap(), None, "near the tip");
        assert_eq!(sync_from(&settings, &store, now + 1).unwrap(), Some(1_040), "far behind");
        settings.engine.empty_block_ms = 5;
        assert_eq!(sync_from(&settings, &store, made + 5_001).unwrap(), Some(1_040), "fast empty blocks");
        settings.keep_blocks = None;
        assert_eq!(sync_from(&settings, &store, now * 2).unwrap(), None, "an archive keeps every block");
        settings.keep_blocks = Some(1_024);
        settings.state_sync = None;
        assert_eq!(sync_from(&settings, &store, now * 2).unwrap(), None, "--replay");
    }
}
