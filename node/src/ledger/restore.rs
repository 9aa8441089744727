//! The IO of state sync (the rules are [`super::statesync`]'s): the requests to peers, the writes into the store
//! (emptied first when it was far behind), the status and the progress shown in the log. Runs on the ledger thread before the engine exists: entries
//! submitted while the snapshot is chosen wait for the ledger, those submitted while it is fetched are refused
//! ([`super::Error::Syncing`]).

use std::time::{Duration, Instant};

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
        let mut began = false;
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
                        store.restore_begin(height)?;
                        began = true;
                    }
                    Effect::Write(pairs) => store.restore_pairs(&pairs)?,
                    Effect::Finish { height, stored, changes, complete } => {
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
                        if began {
                            store.restore_abandon()?;
                        }
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
