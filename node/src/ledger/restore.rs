//! The IO of state sync (the rules are [`super::statesync`]'s): the requests to peers, the writes into the store
//! (through files kept aside when it has blocks: [`Writer`]), the status and the progress shown in the log. Runs on
//! the ledger thread before the engine exists: entries submitted while the snapshot is chosen wait for the ledger,
//! those submitted while it is fetched are refused ([`super::Error::Syncing`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use ledger::Genesis;
use ledger::hash::Hash;
use ledger::store::{RocksStore, Store as _, Stored};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::statesync::{Ask, Effect, Progress, StateSync};
use super::{Input, Status};
use crate::clock::now_ms;
use crate::network::{self, PeerId, Request, Response};

/// How long one state-sync request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the connected peers are looked at and the time passed in.
const TICK: Duration = Duration::from_millis(500);
/// How often progress is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(2);

/// A peer's answer to a request.
type Answer = (PeerId, Ask, Option<Response>);

pub(super) struct Restore<'a> {
    pub network: &'a network::Handle,
    pub genesis: &'a std::sync::Arc<Genesis>,
    pub status: &'a watch::Sender<Status>,
    /// The ledger's directory: a state sync into a ledger with blocks keeps its chunks in [`STAGING_DIR`] there.
    pub path: &'a Path,
}

/// The directory, in the ledger's, where a ledger far behind keeps the chunks of a state sync until every one has
/// checked out.
pub const STAGING_DIR: &str = "restore";

/// Removes what an interrupted state sync kept aside (at every open: a node that stopped during one, or crashed).
pub fn clean_staging(path: &Path) -> anyhow::Result<()> {
    let dir = path.join(STAGING_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(anyhow::Error::new(error).context(format!("removing {}", dir.display()))),
    }
}

/// The file of the `index`th chunk kept aside in the ledger's directory `path`.
fn staged_file(path: &Path, index: u32) -> PathBuf {
    path.join(STAGING_DIR).join(format!("{index:08}.cbor"))
}

/// The pairs of a chunk kept aside.
fn staged_pairs(file: &Path) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let wire: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> =
        protocol::codec::decode_with(&bytes, ledger::snapshot::CHUNK_BYTES_MAX, ledger::snapshot::CHUNK_PAIRS_MAX)
            .with_context(|| format!("decoding {}", file.display()))?;
    Ok(wire.into_iter().map(|(key, value)| (key.into_vec(), value.into_vec())).collect())
}

/// Where the checked pairs of a snapshot go. Into an empty ledger, straight to its store. A ledger with blocks (a
/// `full` node far behind) keeps them aside, a file per chunk, until every chunk has checked out, and only then
/// trades its ledger for them: a state sync that fails (peers that vanish or never serve a chunk) leaves it as it
/// was.
enum Writer {
    Direct {
        began: bool,
    },
    /// `path`: the ledger's directory, which holds [`STAGING_DIR`].
    Staged {
        path: PathBuf,
        files: u32,
    },
}

impl Writer {
    fn new(store: &RocksStore, path: &Path) -> anyhow::Result<Writer> {
        if store.tip()? == 0 {
            return Ok(Writer::Direct { began: false });
        }
        clean_staging(path)?;
        Ok(Writer::Staged { path: path.to_path_buf(), files: 0 })
    }

    fn begin(&mut self, store: &mut RocksStore, height: u64) -> anyhow::Result<()> {
        match self {
            Writer::Direct { began } => {
                store.restore_begin(height)?;
                *began = true;
            }
            Writer::Staged { path, files } => {
                let dir = path.join(STAGING_DIR);
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                *files = 0;
            }
        }
        Ok(())
    }

    fn write(&mut self, store: &mut RocksStore, pairs: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<()> {
        match self {
            Writer::Direct { .. } => store.restore_pairs(pairs),
            Writer::Staged { path, files } => {
                let wire: Vec<(&serde_bytes::Bytes, &serde_bytes::Bytes)> = pairs
                    .iter()
                    .map(|(key, value)| (serde_bytes::Bytes::new(key), serde_bytes::Bytes::new(value)))
                    .collect();
                let file = staged_file(path, *files);
                std::fs::write(&file, protocol::codec::encode(&wire))
                    .with_context(|| format!("writing {}", file.display()))?;
                *files += 1;
                Ok(())
            }
        }
    }

    /// Reads and decodes every file kept aside, before [`Writer::finish`] empties the ledger: one that cannot be
    /// read fails the state sync while the ledger is still whole.
    fn check(&self) -> anyhow::Result<()> {
        let Writer::Staged { path, files } = self else { return Ok(()) };
        for index in 0..*files {
            staged_pairs(&staged_file(path, index))?;
        }
        Ok(())
    }

    /// Every chunk checked out: a ledger with blocks is emptied now (one synced write), and the pairs kept aside
    /// written into it, a chunk at a time, each file removed once its pairs are written. (A crash after the ledger
    /// was emptied leaves an empty ledger, which takes a snapshot again at the next start.)
    fn finish(&mut self, store: &mut RocksStore, height: u64) -> anyhow::Result<()> {
        let Writer::Staged { path, files } = self else { return Ok(()) };
        store.restore_begin(height)?;
        for index in 0..*files {
            let file = staged_file(path, index);
            store.restore_pairs(&staged_pairs(&file)?)?;
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        clean_staging(path)
    }

    fn give_up(&mut self, store: &mut RocksStore) -> anyhow::Result<()> {
        match self {
            Writer::Direct { began: true } => store.restore_abandon(),
            Writer::Direct { began: false } => Ok(()),
            Writer::Staged { path, .. } => clean_staging(path),
        }
    }
}

fn request(ask: &Ask) -> Request {
    match *ask {
        Ask::Snapshots => Request::Snapshots {},
        Ask::Changes { after, upto } => Request::ValidatorChanges { after, upto },
        Ask::Manifest { height } => Request::SnapshotManifest { height },
        Ask::Chunk { height, index } => Request::SnapshotChunk { height, index },
    }
}

/// A text progress bar: `[#####.....] 12/40`.
fn bar(progress: Progress) -> String {
    const WIDTH: u32 = 30;
    let filled = (progress.done * WIDTH).checked_div(progress.chunks).unwrap_or(0) as usize;
    format!(
        "[{}{}] {}/{} chunks",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        progress.done,
        progress.chunks
    )
}

impl Restore<'_> {
    /// Takes a snapshot of at least `min_height` from peers into `store` (`true`), or leaves it as it was when none
    /// can be had (`false`: the node syncs the blocks; empty, if the state sync had begun). `None`: the node shut
    /// down meanwhile.
    pub async fn run(
        &self,
        mut store: RocksStore,
        min_height: u64,
        inputs: &mut mpsc::Receiver<Input>,
        held: &mut Vec<Input>,
    ) -> anyhow::Result<Option<(RocksStore, bool)>> {
        let started = Instant::now();
        let mut machine: StateSync<PeerId> = StateSync::new(self.genesis, min_height, now_ms());
        let mut requests: JoinSet<Answer> = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        let mut logged = Instant::now();
        let mut writer = Writer::new(&store, self.path)?;
        self.publish(machine.progress());
        info!(min_height, "state sync: asking peers for a snapshot of the state");
        loop {
            let effects = tokio::select! {
                _ = tick.tick() => {
                    let peers = self.network.info().await.map(|info| info.peers).unwrap_or_default();
                    machine.peers(&peers, now_ms())
                }
                Some(answer) = requests.join_next() => match answer {
                    Ok((peer, ask, response)) => answered(&mut machine, &peer, &ask, response),
                    Err(error) => {
                        warn!("a state-sync request failed: {error}");
                        Vec::new()
                    }
                },
                input = inputs.recv() => match input {
                    None | Some(Input::Shutdown) => return Ok(None),
                    // Submissions made while the snapshot is chosen wait for the ledger (the handle refuses them
                    // once one is fetched), at most a queue's worth; gossiped entries reach the validators anyway.
                    Some(Input::Submit { bytes, reply }) => {
                        if held.len() < super::INPUT_QUEUE_LEN_MAX {
                            held.push(Input::Submit { bytes, reply });
                        } else {
                            let _ = reply.send(Err(ledger::mempool::Rejected::Full));
                        }
                        Vec::new()
                    }
                    Some(_) => Vec::new(),
                },
            };
            for effect in effects {
                match effect {
                    Effect::Send(peer, ask) => {
                        let network = self.network.clone();
                        requests.spawn(async move {
                            let sent = tokio::time::timeout(REQUEST_TIMEOUT, network.state_sync(peer, request(&ask)));
                            let response = match sent.await {
                                Ok(Ok(response)) => Some(response),
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, ?ask, %error, "a state-sync request was not answered");
                                    None
                                }
                                Err(_) => None,
                            };
                            (peer, ask, response)
                        });
                    }
                    Effect::Penalize(peer, reason) => {
                        warn!(%peer, %reason, "state sync: a peer sent something wrong");
                        self.network.penalize(peer, reason).await;
                    }
                    Effect::Begin { height } => {
                        if let Err(error) = writer.begin(&mut store, height) {
                            return self.staging_failed(store, &mut writer, &error);
                        }
                    }
                    Effect::Write(pairs) => {
                        if let Err(error) = writer.write(&mut store, &pairs) {
                            return self.staging_failed(store, &mut writer, &error);
                        }
                    }
                    Effect::Finish { height, stored, changes, complete } => {
                        if let Err(error) = writer.check() {
                            return self.staging_failed(store, &mut writer, &error);
                        }
                        writer.finish(&mut store, height)?;
                        store.restore_finish(height, &stored, &changes, complete)?;
                        info!(
                            height,
                            seconds = started.elapsed().as_secs_f64(),
                            "state sync: took the snapshot; syncing the blocks after it"
                        );
                        self.publish_done();
                        return Ok(Some((store, true)));
                    }
                    Effect::GiveUp(reason) => {
                        writer.give_up(&mut store)?;
                        let from = store.tip()?.saturating_add(1);
                        info!(%reason, from, "state sync: none; the ledger syncs the blocks from this height on");
                        self.publish_done();
                        return Ok(Some((store, false)));
                    }
                }
            }
            self.publish(machine.progress());
            if logged.elapsed() >= LOG_INTERVAL && machine.progress().chunks > 0 {
                logged = Instant::now();
                info!("state sync: snapshot of height {} {}", machine.progress().height, bar(machine.progress()));
            }
        }
    }

    /// A write the node could not make: into an empty ledger, an error that stops the node; kept aside for a ledger
    /// far behind (a full disk, typically), the state sync is given up and the ledger, untouched, syncs the blocks.
    fn staging_failed(
        &self,
        mut store: RocksStore,
        writer: &mut Writer,
        error: &anyhow::Error,
    ) -> anyhow::Result<Option<(RocksStore, bool)>> {
        if !matches!(writer, Writer::Staged { .. }) {
            return Err(anyhow::anyhow!("{error:#}"));
        }
        warn!("state sync: {error:#}; given up, the ledger syncs the blocks it missed");
        writer.give_up(&mut store)?;
        self.publish_done();
        Ok(Some((store, false)))
    }

    fn publish(&self, progress: Progress) {
        self.status.send_if_modified(|status| {
            let changed = status.state_sync != Some(progress);
            status.state_sync = Some(progress);
            changed
        });
    }

    fn publish_done(&self) {
        self.status.send_modify(|status| status.state_sync = None);
    }
}

/// Feeds a peer's answer to the machine (a response of another kind counts as no answer).
fn answered(
    machine: &mut StateSync<PeerId>,
    peer: &PeerId,
    ask: &Ask,
    response: Option<Response>,
) -> Vec<Effect<PeerId>> {
    match (ask, response) {
        (Ask::Snapshots, Some(Response::Snapshots { snapshots })) => {
            let offers = snapshots
                .into_iter()
                .take(network::SNAPSHOTS_OFFERED_MAX)
                .filter_map(|(height, hash, chunks)| Some((height, Hash(hash.as_slice().try_into().ok()?), chunks)))
                .collect();
            machine.on_offers(peer, Some(offers), now_ms())
        }
        (Ask::Snapshots, _) => machine.on_offers(peer, None, now_ms()),
        (Ask::Changes { .. }, Some(Response::ValidatorChanges { changes })) => machine.on_changes(
            peer,
            Some(
                changes
                    .into_iter()
                    .map(|(height, header, certificate, validators)| {
                        (height, header.into_vec(), certificate.into_vec(), validators)
                    })
                    .collect(),
            ),
        ),
        (Ask::Changes { .. }, _) => machine.on_changes(peer, None),
        (Ask::Manifest { .. }, Some(Response::SnapshotManifest { block, certificate, manifest })) => machine
            .on_manifest(
                peer,
                Some((Stored { block: block.into_vec(), certificate: certificate.into_vec() }, manifest.into_vec())),
            ),
        (Ask::Manifest { .. }, _) => machine.on_manifest(peer, None),
        (Ask::Chunk { index, .. }, Some(Response::SnapshotChunk { chunk })) => {
            machine.on_chunk(peer, *index, Some(chunk.into_vec()))
        }
        (Ask::Chunk { index, .. }, _) => machine.on_chunk(peer, *index, None),
    }
}

#[cfg(test)]
mod tests {
    use ledger::state::Writes;
    use ledger::store::{Outcome, Store as _, Stored};

    use super::*;

    /// A ledger with blocks 1 to 3 and one pair of state.
    fn ledger_with_blocks(path: &Path) -> RocksStore {
        let mut store = RocksStore::open(path).unwrap();
        let mut writes = Writes::new();
        writes.insert(b"old".to_vec(), Some(b"pair".to_vec()));
        for height in 1..=3u8 {
            let stored = Stored { block: vec![height], certificate: vec![height] };
            store.commit(u64::from(height), &stored, &writes, &Outcome::default()).unwrap();
        }
        store
    }

    /// Issue 28, item 2: a ledger far behind keeps its blocks and state until every chunk of the snapshot has
    /// checked out. Chunks wait in files beside it; a state sync given up after some (peers that vanish, or never
    /// serve a chunk) leaves the ledger as it was, and one that finishes replaces it with the snapshot's state
    /// only. An empty ledger takes the pairs straight.
    #[test]
    fn a_ledger_with_blocks_is_kept_until_every_chunk_checked_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ledger_with_blocks(dir.path());
        let old = store.state().unwrap();
        let chunks = [vec![(b"a".to_vec(), b"1".to_vec())], vec![(b"b".to_vec(), b"2".to_vec())]];

        let mut writer = Writer::new(&store, dir.path()).unwrap();
        writer.begin(&mut store, 500).unwrap();
        writer.write(&mut store, &chunks[0]).unwrap();
        assert_eq!((store.tip().unwrap(), store.state().unwrap()), (3, old.clone()), "nothing replaced yet");
        assert!(dir.path().join(STAGING_DIR).is_dir());
        writer.give_up(&mut store).unwrap();
        assert_eq!((store.tip().unwrap(), store.state().unwrap()), (3, old.clone()), "a failed sync keeps it");
        assert!(store.block(3).unwrap().is_some());
        assert!(!dir.path().join(STAGING_DIR).exists());

        // A stop in the middle leaves files, which the next open of the ledger removes.
        let mut writer = Writer::new(&store, dir.path()).unwrap();
        writer.begin(&mut store, 500).unwrap();
        writer.write(&mut store, &chunks[0]).unwrap();
        clean_staging(dir.path()).unwrap();
        assert!(!dir.path().join(STAGING_DIR).exists());

        // A file kept aside that cannot be read back fails the state sync before the ledger is emptied.
        let mut writer = Writer::new(&store, dir.path()).unwrap();
        writer.begin(&mut store, 500).unwrap();
        writer.write(&mut store, &chunks[0]).unwrap();
        std::fs::write(staged_file(dir.path(), 0), b"\xff").unwrap();
        assert!(writer.check().is_err());
        assert_eq!((store.tip().unwrap(), store.state().unwrap()), (3, old.clone()));
        writer.give_up(&mut store).unwrap();

        let mut writer = Writer::new(&store, dir.path()).unwrap();
        writer.begin(&mut store, 500).unwrap();
        for chunk in &chunks {
            writer.write(&mut store, chunk).unwrap();
        }
        assert_eq!(store.tip().unwrap(), 3);
        writer.check().unwrap();
        writer.finish(&mut store, 500).unwrap();
        let stored = Stored { block: b"block-500".to_vec(), certificate: b"cert-500".to_vec() };
        store.restore_finish(500, &stored, &[], true).unwrap();
        assert_eq!((store.tip().unwrap(), store.first().unwrap()), (500, 500));
        assert_eq!(store.reader().restored().unwrap(), Some(500));
        assert_eq!(store.state().unwrap(), chunks.concat(), "only the snapshot's state");
        assert_eq!(store.block(3).unwrap(), None);
        assert!(!dir.path().join(STAGING_DIR).exists());

        // An empty ledger: straight into the store.
        let empty = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(empty.path()).unwrap();
        let mut writer = Writer::new(&store, empty.path()).unwrap();
        writer.begin(&mut store, 40).unwrap();
        writer.write(&mut store, &chunks[0]).unwrap();
        assert_eq!(store.state().unwrap(), chunks[0]);
        assert!(!empty.path().join(STAGING_DIR).exists());
        writer.give_up(&mut store).unwrap();
        assert_eq!(store.state().unwrap(), Vec::new());
    }
}
