//! State sync (sans-IO): how a node with an empty ledger, or one far behind, gets a recent state from its peers
//! instead of replaying every block (PROTOCOL.md §9, *State sync*). Inputs are the peers and their answers, with the time; effects are
//! the requests to send, the penalties, and what to write. The node's ledger thread does the IO.
//!
//! 1. **Offers.** Connected peers are asked which snapshots they hold, until [`OFFERS_ENOUGH`] answered, or all
//!    that were asked did and [`SETTLE_MS`] passed, or [`DISCOVERY_MS`] passed. The snapshot chosen is the highest
//!    at or above the node's threshold; at one height, the manifest most peers offer.
//! 2. **Validators.** A peer that offers it is asked for the changes of the validator set from the genesis up to
//!    the snapshot's height, a page after the last change it sent; each is checked by the tracing rule
//!    ([`ledger::trust`]). A change out of order, or that breaks the rule otherwise than by too little overlap or a
//!    version this kos does not run, is its sender's fault. When the snapshot's block cannot be traced from what one
//!    peer sent, another offerer is asked before the node gives up.
//! 3. **Manifest.** The snapshot's block, its certificate and its manifest: the header must be traced from the
//!    genesis, the manifest hash to what was offered, and the manifest's lattices add up to the header's state
//!    root. A manifest that does not is the fault of every peer that offered it.
//! 4. **Chunks.** Fetched from the peers that offered that manifest, at most [`CHUNKS_IN_FLIGHT_MAX`] at once; each
//!    is checked against the manifest when it arrives. A bad chunk is its sender's fault (it offered the manifest):
//!    the sender is penalised, asked for nothing more, and the chunk fetched from another peer.
//!
//! Requests that fail (timeouts, refusals) prove nothing: a snapshot whose requests fail [`FAILURES_PER_OFFERER`]
//! times per peer offering it is given up for another, all failures together are bounded, and a state sync with
//! no progress for [`STALL_MS`] gives up: the node then replays the blocks.

use std::collections::{BTreeMap, BTreeSet};

use ledger::block::Header;
use ledger::consensus::wire;
use ledger::hash::Hash;
use ledger::snapshot::{Manifest, manifest_hash};
use ledger::store::{CHANGES_PER_READ_MAX, Change, Stored};
use ledger::trust::{TrustError, Trusted};
use ledger::{Block, Genesis};
use protocol::NetworkId;

/// Peers asked which snapshots they hold, at most.
pub const OFFERS_PEERS_MAX: usize = 16;
/// Answers after which the choice is made.
pub const OFFERS_ENOUGH: usize = 3;
/// Once every peer asked has answered, how long after the start to wait for more peers.
pub const SETTLE_MS: u64 = 1_000;
/// The longest the node waits for offers.
pub const DISCOVERY_MS: u64 = 10_000;
/// Chunk requests out at once.
pub const CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// Chunk requests out at once to one peer.
pub const CHUNKS_PER_PEER_MAX: usize = 2;
/// Failed requests (timeouts, refusals: no fault proven) a state sync tolerates, besides one per chunk.
pub const FAILURES_SPARE: u32 = 32;
/// Failed requests for one snapshot before it is given up for another, per peer offering it.
pub const FAILURES_PER_OFFERER: u32 = 2;
/// How long a state sync may go without progress (an answer that checks out) before it is given up.
pub const STALL_MS: u64 = 60_000;

/// A request to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    Snapshots,
    Changes { after: u64, upto: u64 },
    Manifest { height: u64 },
    Chunk { height: u64, index: u32 },
}

/// What the node does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<P> {
    Send(P, Ask),
    /// The peer sent something provably wrong.
    Penalize(P, String),
    /// Start writing the snapshot of `height` (into an empty ledger; a ledger with blocks keeps the pairs aside
    /// until [`Effect::Finish`]).
    Begin {
        height: u64,
    },
    /// Verified pairs of the state to write.
    Write(Vec<(Vec<u8>, Vec<u8>)>),
    /// Every chunk is written: end with the snapshot's block and the changes traced (`complete`: every change of
    /// the validator set up to the snapshot was traced, none skipped).
    Finish {
        height: u64,
        stored: Stored,
        changes: Vec<(u64, Change)>,
        complete: bool,
    },
    /// No usable snapshot (or none worth it): sync the blocks. After [`Effect::Begin`], what was written (or kept
    /// aside) must go.
    GiveUp(String),
}

/// How far a state sync is: the snapshot's height, chunks written, chunks in all (0 before the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub height: u64,
    pub done: u32,
    pub chunks: u32,
}

/// A snapshot offered: (height, manifest hash).
type Target = (u64, Hash);

/// A change of the validator set as a peer sent it: (height, header bytes, certificate bytes, the set).
pub type SentChange = (u64, Vec<u8>, Vec<u8>, Vec<(protocol::PublicKey, u64)>);

enum Phase {
    Discover,
    Trace { target: Target, asking: usize },
    Manifest { target: Target, asking: usize },
    Chunks { target: Target, chunks: Chunks },
    Ended,
}

struct Chunks {
    manifest: Manifest,
    stored: Stored,
    missing: BTreeSet<u32>,
    in_flight: BTreeMap<u32, usize>,
    done: u32,
}

/// The validator trace so far: the trust it gives, the changes it took, and from where the next page is asked.
#[derive(Clone)]
struct Trace {
    trusted: Trusted,
    changes: Vec<(u64, Change)>,
    /// The height of the last change received (taken or skipped): the next page starts after it.
    after: u64,
    /// No change was skipped.
    complete: bool,
}

/// The state sync of one node.
pub struct StateSync<P> {
    network: NetworkId,
    genesis: Trace,
    trace: Trace,
    /// Snapshots below this height are not worth it: the blocks are replayed.
    min_height: u64,
    started_ms: u64,
    now_ms: u64,
    /// When something last checked out (or the phase began).
    progress_ms: u64,
    phase: Phase,
    /// Peers by index (effects and inputs name peers; the machine keeps them in this list).
    peers: Vec<P>,
    asked: BTreeSet<usize>,
    answered: BTreeSet<usize>,
    offers: BTreeMap<Target, BTreeSet<usize>>,
    /// Snapshots given up (their requests kept failing, or their manifest was wrong).
    dead: BTreeSet<Target>,
    /// Peers that sent something provably wrong: asked nothing more.
    excluded: BTreeSet<usize>,
    /// Offerers of the current snapshot asked for its validator changes.
    tracers: BTreeSet<usize>,
    /// Failed requests in all, and for the current snapshot.
    failures: u32,
    target_failures: u32,
    effects: Vec<Effect<P>>,
}

impl<P: Clone + Ord + std::fmt::Display> StateSync<P> {
    pub fn new(genesis: &Genesis, min_height: u64, now_ms: u64) -> StateSync<P> {
        let trace = Trace { trusted: Trusted::genesis(genesis), changes: Vec::new(), after: 0, complete: true };
        StateSync {
            network: genesis.network.clone(),
            genesis: trace.clone(),
            trace,
            min_height: min_height.max(1),
            started_ms: now_ms,
            now_ms,
            progress_ms: now_ms,
            phase: Phase::Discover,
            peers: Vec::new(),
            asked: BTreeSet::new(),
            answered: BTreeSet::new(),
            offers: BTreeMap::new(),
            dead: BTreeSet::new(),
            excluded: BTreeSet::new(),
            tracers: BTreeSet::new(),
            failures: 0,
            target_failures: 0,
            effects: Vec::new(),
        }
    }

    pub fn progress(&self) -> Progress {
        match &self.phase {
            Phase::Discover | Phase::Ended => Progress::default(),
            Phase::Trace { target, .. } | Phase::Manifest { target, .. } => {
                Progress { height: target.0, ..Progress::default() }
            }
            Phase::Chunks { target, chunks } => Progress {
                height: target.0,
                done: chunks.done,
                chunks: u32::try_from(chunks.manifest.chunks.len()).unwrap_or(u32::MAX),
            },
        }
    }

    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    fn index(&mut self, peer: &P) -> usize {
        match self.peers.iter().position(|known| known == peer) {
            Some(index) => index,
            None => {
                self.peers.push(peer.clone());
                self.peers.len() - 1
            }
        }
    }

    fn send(&mut self, peer: usize, ask: Ask) {
        self.effects.push(Effect::Send(self.peers[peer].clone(), ask));
    }

    fn penalize(&mut self, peer: usize, reason: String) {
        self.excluded.insert(peer);
        self.effects.push(Effect::Penalize(self.peers[peer].clone(), reason));
    }

    fn give_up(&mut self, reason: String) {
        self.phase = Phase::Ended;
        self.effects.push(Effect::GiveUp(reason));
    }

    fn progressed(&mut self) {
        self.progress_ms = self.now_ms;
    }

    fn drain(&mut self) -> Vec<Effect<P>> {
        std::mem::take(&mut self.effects)
    }

    /// The peers connected now; new ones are asked for their snapshots while the node is choosing.
    pub fn peers(&mut self, connected: &[P], now_ms: u64) -> Vec<Effect<P>> {
        if matches!(self.phase, Phase::Discover) {
            for peer in connected {
                if self.asked.len() >= OFFERS_PEERS_MAX {
                    break;
                }
                let index = self.index(peer);
                if self.asked.insert(index) {
                    self.send(index, Ask::Snapshots);
                }
            }
        }
        self.tick(now_ms)
    }

    /// Time passes: the choice is made when enough peers answered or the wait is over; a state sync without
    /// progress for [`STALL_MS`] gives up.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect<P>> {
        self.now_ms = self.now_ms.max(now_ms);
        match self.phase {
            Phase::Discover => {
                let elapsed = self.now_ms.saturating_sub(self.started_ms);
                let all_answered = !self.asked.is_empty() && self.answered.len() == self.asked.len();
                if self.answered.len() >= OFFERS_ENOUGH
                    || (all_answered && elapsed >= SETTLE_MS)
                    || elapsed >= DISCOVERY_MS
                {
                    self.choose();
                }
            }
            Phase::Ended => {}
            _ if self.now_ms.saturating_sub(self.progress_ms) >= STALL_MS => {
                self.give_up(format!("no progress for {} s", STALL_MS / 1_000));
            }
            _ => {}
        }
        self.drain()
    }

    /// A peer's snapshots (`None`: the request failed).
    pub fn on_offers(&mut self, peer: &P, offers: Option<Vec<(u64, Hash, u32)>>, now_ms: u64) -> Vec<Effect<P>> {
        let index = self.index(peer);
        self.answered.insert(index);
        for (height, hash, _chunks) in offers.unwrap_or_default() {
            self.offers.entry((height, hash)).or_default().insert(index);
        }
        self.tick(now_ms)
    }

    /// The offerers of `target` that may still be asked.
    fn offerers(&self, target: &Target) -> Vec<usize> {
        self.offers
            .get(target)
            .map(|peers| peers.iter().filter(|peer| !self.excluded.contains(peer)).copied().collect())
            .unwrap_or_default()
    }

    /// Picks the snapshot: among those at or above the threshold, not given up, offered by a peer not excluded —
    /// one offered by at least two peers before one offered by a single peer, then the highest, then the one most
    /// peers offer, then the lowest hash.
    fn choose(&mut self) {
        let best = self
            .offers
            .keys()
            .filter(|target| target.0 >= self.min_height && !self.dead.contains(target))
            .map(|target| (*target, self.offerers(target).len()))
            .filter(|(_, offerers)| *offerers > 0)
            .max_by_key(|(target, offerers)| ((*offerers).min(2), target.0, *offerers, std::cmp::Reverse(target.1)))
            .map(|(target, _)| target);
        let Some(target) = best else {
            return self.give_up(format!(
                "no peer offers a usable snapshot at height {} or above ({} asked, {} answered)",
                self.min_height,
                self.asked.len(),
                self.answered.len()
            ));
        };
        // What was traced stays valid below the new snapshot; above it, it is of no use.
        if self.trace.trusted.height() > target.0 {
            self.trace = self.genesis.clone();
        }
        self.trace.after = self.trace.trusted.height();
        self.tracers.clear();
        self.target_failures = 0;
        self.progressed();
        self.ask_changes(target);
    }

    /// The chosen snapshot cannot be had: it is given up, and another chosen.
    fn give_up_target(&mut self, target: Target) {
        self.dead.insert(target);
        self.phase = Phase::Discover;
        self.choose();
    }

    /// A request for `target` failed: after too many, the snapshot (or the whole state sync) is given up.
    /// Returns whether to go on with it.
    fn failed(&mut self, target: Target) -> bool {
        self.failures += 1;
        self.target_failures += 1;
        if self.failures > FAILURES_SPARE * 4 {
            self.give_up(format!("{} requests failed", self.failures));
            return false;
        }
        let offerers = u32::try_from(self.offerers(&target).len()).unwrap_or(u32::MAX);
        if self.target_failures > FAILURES_PER_OFFERER.saturating_mul(offerers.max(1)) {
            self.give_up_target(target);
            return false;
        }
        true
    }

    /// Asks an offerer of the target not yet asked for the validator changes after the last one received; with
    /// none left, goes on to the manifest (the block may still be traced in one step).
    fn ask_changes(&mut self, target: Target) {
        let offerers = self.offerers(&target);
        match offerers.iter().find(|peer| !self.tracers.contains(peer)) {
            Some(&peer) => {
                self.tracers.insert(peer);
                self.phase = Phase::Trace { target, asking: peer };
                let after = self.trace.after;
                self.send(peer, Ask::Changes { after, upto: target.0 });
            }
            None => self.ask_manifest(target),
        }
    }

    /// A peer's validator changes (`None`: the request failed or was refused).
    pub fn on_changes(&mut self, peer: &P, changes: Option<Vec<SentChange>>) -> Vec<Effect<P>> {
        let index = self.index(peer);
        let Phase::Trace { target, asking } = self.phase else { return self.drain() };
        if asking != index {
            return self.drain();
        }
        let Some(changes) = changes else {
            if self.failed(target) {
                self.ask_changes(target);
            }
            return self.drain();
        };
        let full = changes.len() >= CHANGES_PER_READ_MAX;
        for (height, header, certificate, validators) in changes.into_iter().take(CHANGES_PER_READ_MAX) {
            if height <= self.trace.after || height > target.0 {
                self.penalize(index, format!("a validator change of height {height} out of order or not asked for"));
                self.ask_changes(target);
                return self.drain();
            }
            self.trace.after = height;
            match self.trace(height, &header, &certificate, validators) {
                Ok(()) => {}
                // A genuine change too large to trace in one step: the next one (or the block) may be.
                Err(TrustError::Overlap { .. }) => self.trace.complete = false,
                Err(TrustError::Version { height, version }) => {
                    self.give_up(newer(height, version));
                    return self.drain();
                }
                Err(error) => {
                    self.penalize(index, format!("a bad validator change: {error}"));
                    self.ask_changes(target);
                    return self.drain();
                }
            }
        }
        self.progressed();
        if full && self.trace.after < target.0 {
            self.phase = Phase::Trace { target, asking: index };
            let after = self.trace.after;
            self.send(index, Ask::Changes { after, upto: target.0 });
        } else {
            self.ask_manifest(target);
        }
        self.drain()
    }

    fn trace(
        &mut self,
        height: u64,
        header_bytes: &[u8],
        certificate_bytes: &[u8],
        validators: Vec<(protocol::PublicKey, u64)>,
    ) -> Result<(), TrustError> {
        let header: Header = protocol::codec::decode(header_bytes, 4096).map_err(|_| TrustError::Header(0))?;
        let certificate =
            wire::certificate_from_bytes(certificate_bytes).map_err(|_| TrustError::CertificateFor(height))?;
        if header.height != height {
            return Err(TrustError::CertificateFor(height));
        }
        let trusted = self.trace.trusted.step(&self.network, &header, &certificate, validators)?;
        // The set as the header names it (key order, nothing of power 0): what the node serves on.
        let change = Change {
            header: header_bytes.to_vec(),
            certificate: certificate_bytes.to_vec(),
            validators: trusted.validators().pairs(),
        };
        self.trace.changes.push((height, change));
        self.trace.trusted = trusted;
        Ok(())
    }

    fn ask_manifest(&mut self, target: Target) {
        let offerers = self.offerers(&target);
        let Some(&peer) = offerers.get(self.target_failures as usize % offerers.len().max(1)) else {
            return self.give_up_target(target);
        };
        self.phase = Phase::Manifest { target, asking: peer };
        self.send(peer, Ask::Manifest { height: target.0 });
    }

    /// A peer's snapshot block, certificate and manifest (`None`: the request failed or was refused).
    pub fn on_manifest(&mut self, peer: &P, answer: Option<(Stored, Vec<u8>)>) -> Vec<Effect<P>> {
        let index = self.index(peer);
        let Phase::Manifest { target, asking } = self.phase else { return self.drain() };
        if asking != index {
            return self.drain();
        }
        let Some((stored, bytes)) = answer else {
            if self.failed(target) {
                self.ask_manifest(target);
            }
            return self.drain();
        };
        if manifest_hash(&bytes) != target.1 {
            self.penalize(index, "sent a manifest other than the one it offered".into());
            self.ask_manifest(target);
            return self.drain();
        }
        match self.check_manifest(target.0, &stored, &bytes) {
            Ok(manifest) => {
                let missing = (0..u32::try_from(manifest.chunks.len()).unwrap_or(u32::MAX)).collect();
                let chunks = Chunks { manifest, stored, missing, in_flight: BTreeMap::new(), done: 0 };
                self.effects.push(Effect::Begin { height: target.0 });
                self.phase = Phase::Chunks { target, chunks };
                self.progressed();
                self.schedule();
            }
            Err(Blame::Sender(reason)) => {
                self.penalize(index, reason);
                self.ask_manifest(target);
            }
            Err(Blame::Offerers(reason)) => {
                // Every peer that offered this manifest vouched for it.
                for offerer in self.offerers(&target) {
                    self.penalize(offerer, reason.clone());
                }
                self.give_up_target(target);
            }
            // The changes one peer sent do not reach the block: another offerer may send them all.
            Err(Blame::Untraced(reason)) => {
                if self.offerers(&target).iter().any(|peer| !self.tracers.contains(peer)) {
                    self.trace = self.genesis.clone();
                    self.ask_changes(target);
                } else {
                    self.give_up(reason);
                }
            }
            Err(Blame::Nobody(reason)) => self.give_up(reason),
        }
        self.drain()
    }

    fn check_manifest(&self, height: u64, stored: &Stored, bytes: &[u8]) -> Result<Manifest, Blame> {
        let block = match Block::from_bytes(&stored.block) {
            Ok(block) => block,
            Err(ledger::block::DecodeError::Version(version)) => return Err(Blame::Nobody(newer(height, version))),
            Err(error) => return Err(Blame::Sender(format!("snapshot block: {error}"))),
        };
        let certificate = wire::certificate_from_bytes(&stored.certificate)
            .map_err(|error| Blame::Sender(format!("snapshot certificate: {error}")))?;
        if block.height() != height {
            return Err(Blame::Sender(format!("sent block {} for a snapshot of {height}", block.height())));
        }
        let validators = self.trace.trusted.validators().pairs();
        match self.trace.trusted.step(&self.network, block.header(), &certificate, validators) {
            Ok(_) => {}
            Err(TrustError::Set(_) | TrustError::Overlap { .. }) => {
                return Err(Blame::Untraced(format!(
                    "the validators of block {height} could not be traced from the genesis (the changes in between \
                     were not served, or changed too much)"
                )));
            }
            Err(TrustError::Version { height, version }) => return Err(Blame::Nobody(newer(height, version))),
            Err(error) => return Err(Blame::Sender(format!("snapshot block: {error}"))),
        }
        let manifest = Manifest::from_bytes(bytes).map_err(|error| Blame::Offerers(format!("manifest: {error}")))?;
        manifest
            .check(height, &block.header().state_root)
            .map_err(|error| Blame::Offerers(format!("manifest: {error}")))?;
        Ok(manifest)
    }

    /// Sends chunk requests up to the bounds, to the target's offerers in turn.
    fn schedule(&mut self) {
        let Phase::Chunks { target, chunks } = &self.phase else { return };
        let target = *target;
        let offerers = self.offerers(&target);
        if offerers.is_empty() {
            return self.give_up(format!("no peer left to fetch the snapshot of height {} from", target.0));
        }
        let mut sends = Vec::new();
        let mut load: BTreeMap<usize, usize> = BTreeMap::new();
        for peer in chunks.in_flight.values() {
            *load.entry(*peer).or_default() += 1;
        }
        let room = CHUNKS_IN_FLIGHT_MAX.saturating_sub(chunks.in_flight.len());
        for &index in chunks.missing.iter().filter(|index| !chunks.in_flight.contains_key(index)) {
            if sends.len() >= room {
                break;
            }
            let start = (index as usize + self.failures as usize) % offerers.len();
            let Some(peer) = (0..offerers.len())
                .map(|step| offerers[(start + step) % offerers.len()])
                .find(|peer| load.get(peer).copied().unwrap_or(0) < CHUNKS_PER_PEER_MAX)
            else {
                break;
            };
            *load.entry(peer).or_default() += 1;
            sends.push((index, peer));
        }
        if let Phase::Chunks { chunks, .. } = &mut self.phase {
            for (index, peer) in &sends {
                chunks.in_flight.insert(*index, *peer);
            }
        }
        for (index, peer) in sends {
            self.send(peer, Ask::Chunk { height: target.0, index });
        }
    }

    /// A chunk from a peer (`None`: the request failed or was refused).
    pub fn on_chunk(&mut self, peer: &P, index: u32, bytes: Option<Vec<u8>>) -> Vec<Effect<P>> {
        let from = self.index(peer);
        let Phase::Chunks { target, chunks } = &mut self.phase else { return self.drain() };
        if chunks.in_flight.get(&index) != Some(&from) {
            return self.drain();
        }
        chunks.in_flight.remove(&index);
        let height = target.0;
        let chunk_count = u32::try_from(chunks.manifest.chunks.len()).unwrap_or(u32::MAX);
        let verdict = bytes.map(|bytes| chunks.manifest.chunk(index as usize, &bytes));
        match verdict {
            None => {
                self.failures += 1;
                if self.failures > chunk_count.saturating_add(FAILURES_SPARE) {
                    self.give_up(format!("too many failed requests for the snapshot of height {height}"));
                    return self.drain();
                }
            }
            Some(Err(error)) => self.penalize(from, format!("a bad snapshot chunk: {error}")),
            Some(Ok(pairs)) => {
                chunks.missing.remove(&index);
                chunks.done += 1;
                self.effects.push(Effect::Write(pairs));
                if chunks.missing.is_empty() {
                    let stored = chunks.stored.clone();
                    let trace = std::mem::replace(&mut self.trace, self.genesis.clone());
                    self.phase = Phase::Ended;
                    self.effects.push(Effect::Finish {
                        height,
                        stored,
                        changes: trace.changes,
                        complete: trace.complete,
                    });
                    return self.drain();
                }
                self.progressed();
            }
        }
        self.schedule();
        self.drain()
    }
}

/// Why the node stops its state sync when the network runs a version this kos does not.
fn newer(height: u64, version: u8) -> String {
    format!(
        "block {height} is of ledger protocol version {version}, which this kos does not run: install a kos that \
         does (see the network's upgrade announcement)"
    )
}

/// Whose fault a manifest that does not verify is.
enum Blame {
    /// The peer that sent it (a block or certificate that is not the chain's).
    Sender(String),
    /// Every peer that offered it (the manifest is the one they offered, and it is wrong).
    Offerers(String),
    /// No one's provably: the validator changes served so far do not reach the block.
    Untraced(String),
    /// No one's: the node cannot go on (a version it does not run).
    Nobody(String),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ledger::consensus::engine::{Config, Engine, Timer};
    use ledger::snapshot::Chunker;
    use ledger::store::{MemoryStore, Store};
    use protocol::Keypair;

    use super::*;

    /// A chain of `blocks` empty blocks committed by one validator, with its store.
    fn chain(blocks: u64) -> (Arc<Genesis>, MemoryStore) {
        let seed = [1; 32];
        let key = Keypair::from_seed(&seed).public();
        let text = Genesis::devnet_text("kos-test", 1_000, &[key], &[key], 5_000);
        let genesis = Arc::new(Genesis::parse(&text).unwrap());
        let store = MemoryStore::new();
        let mut engine = Engine::new(genesis.clone(), &seed, store.clone(), Config::default(), 2_000).unwrap();
        let mut now = 2_000;
        let _ = engine.start(now);
        while engine.tip().0 < blocks {
            now += 1_000;
            let _ = engine.on_timer(Timer::NextHeight, now);
            let _ = engine.on_timer(Timer::Build, now);
        }
        (genesis, store)
    }

    /// The snapshot of block `height`'s state (the tip of `store`): its block, manifest bytes and chunks.
    fn snapshot(store: &MemoryStore, height: u64) -> (Stored, Vec<u8>, Vec<Vec<u8>>) {
        let stored = store.block(height).unwrap().unwrap();
        let root = Block::from_bytes(&stored.block).unwrap().header().state_root;
        let mut chunker = Chunker::new();
        let mut chunks: Vec<Vec<u8>> =
            store.state().unwrap().iter().filter_map(|(key, value)| chunker.push(key, value)).collect();
        let (last, manifest) = chunker.finish(height, root);
        chunks.extend(last);
        (stored, manifest.to_bytes(), chunks)
    }

    fn sends(effects: &[Effect<u8>]) -> Vec<(u8, Ask)> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Send(peer, ask) => Some((*peer, ask.clone())),
                _ => None,
            })
            .collect()
    }

    fn penalized(effects: &[Effect<u8>]) -> Vec<u8> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Penalize(peer, _) => Some(*peer),
                _ => None,
            })
            .collect()
    }

    /// Issue 28, item 2: a node chooses the newest snapshot over a stale one, takes the manifest that adds up to
    /// the certified root, penalises the peer that serves a corrupted chunk and fetches it from another, and ends
    /// with exactly the snapshot's state.
    #[test]
    fn a_corrupted_chunk_and_a_stale_snapshot_do_not_stop_a_state_sync() {
        let (genesis, store) = chain(12);
        let (stored, manifest, chunks) = snapshot(&store, 12);
        let hash = manifest_hash(&manifest);
        // Peer 1 holds a stale snapshot (height 4, a manifest of another state); peers 2 and 3 the newest.
        let stale = Hash([4; 32]);
        let mut sync: StateSync<u8> = StateSync::new(&genesis, 3, 0);
        let asked = sends(&sync.peers(&[1, 2, 3], 0));
        assert_eq!(asked.len(), 3, "every peer is asked for its snapshots: {asked:?}");
        assert!(sync.on_offers(&1, Some(vec![(4, stale, 1)]), 10).is_empty());
        assert!(sync.on_offers(&2, Some(vec![(12, hash, 1), (4, stale, 1)]), 20).is_empty());
        let effects = sync.on_offers(&3, Some(vec![(12, hash, 1)]), 30);
        // Three answers: the newest snapshot is chosen, and its validators traced (no change since the genesis).
        let asked = sends(&effects);
        assert_eq!(asked.len(), 1);
        let (tracer, Ask::Changes { after: 0, upto: 12 }) = asked[0].clone() else { panic!("{asked:?}") };
        assert!([2, 3].contains(&tracer), "only peers offering the chosen snapshot are asked");
        let asked = sends(&sync.on_changes(&tracer, Some(Vec::new())));
        let (server, Ask::Manifest { height: 12 }) = asked[0].clone() else { panic!("{asked:?}") };
        assert_eq!(sync.progress(), Progress { height: 12, done: 0, chunks: 0 });
        let effects = sync.on_manifest(&server, Some((stored.clone(), manifest.clone())));
        assert!(effects.contains(&Effect::Begin { height: 12 }));
        let asked = sends(&effects);
        let (first, Ask::Chunk { height: 12, index: 0 }) = asked[0].clone() else { panic!("{asked:?}") };
        // The first peer asked sends a corrupted chunk: penalised, and the chunk asked of the other one.
        let mut corrupted = chunks[0].clone();
        let last = corrupted.len() - 1;
        corrupted[last] ^= 1;
        let effects = sync.on_chunk(&first, 0, Some(corrupted));
        assert_eq!(penalized(&effects), vec![first]);
        let asked = sends(&effects);
        let other = if first == 2 { 3 } else { 2 };
        assert_eq!(asked, vec![(other, Ask::Chunk { height: 12, index: 0 })]);
        // A late answer from the penalised peer is not taken.
        assert!(sync.on_chunk(&first, 0, Some(chunks[0].clone())).is_empty());
        let effects = sync.on_chunk(&other, 0, Some(chunks[0].clone()));
        let Some(Effect::Write(pairs)) = effects.iter().find(|effect| matches!(effect, Effect::Write(_))) else {
            panic!("{effects:?}")
        };
        assert_eq!(pairs, &store.state().unwrap());
        assert!(effects.contains(&Effect::Finish { height: 12, stored, changes: Vec::new(), complete: true }));
        assert!(sync.ended());
    }

    /// A manifest that does not add up to the certified root is the fault of every peer that offered it; a block
    /// that is not the chain's, of the peer that sent it.
    #[test]
    fn a_wrong_manifest_or_block_is_blamed_on_who_vouched_for_it() {
        let (genesis, store) = chain(12);
        let (stored, _, _) = snapshot(&store, 12);
        let mut forged = Chunker::new();
        let _ = forged.push(b"k", b"v");
        let (_, wrong) = forged.finish(12, Block::from_bytes(&stored.block).unwrap().header().state_root);
        let wrong = wrong.to_bytes();
        let mut sync: StateSync<u8> = StateSync::new(&genesis, 3, 0);
        let _ = sync.peers(&[1, 2], 0);
        let _ = sync.on_offers(&1, Some(vec![(12, manifest_hash(&wrong), 1)]), 10);
        let _ = sync.on_offers(&2, Some(vec![(12, manifest_hash(&wrong), 1)]), 10);
        let effects = sync.tick(SETTLE_MS);
        let (peer, _) = sends(&effects)[0].clone();
        let asked = sends(&sync.on_changes(&peer, Some(Vec::new())));
        let (peer, _) = asked[0].clone();
        // A block that is not the chain's (its time changed; the certificate is the real block's): the sender is at
        // fault, and the other offerer asked.
        let block = Block::from_bytes(&stored.block).unwrap();
        let mut header = block.header().clone();
        header.time_ms += 1;
        let entries = block.entries().map(<[u8]>::to_vec).collect();
        let foreign = Stored { block: Block::new(header, entries).to_bytes(), certificate: stored.certificate.clone() };
        let effects = sync.on_manifest(&peer, Some((foreign, wrong.clone())));
        assert_eq!(penalized(&effects), vec![peer], "{effects:?}");
        let asked = sends(&effects);
        let (next, Ask::Manifest { height: 12 }) = asked[0].clone() else { panic!("{asked:?}") };
        assert_ne!(next, peer);
        // The manifest both offered does not add up to the block's root: the one left is penalised, none is left.
        let effects = sync.on_manifest(&next, Some((stored, wrong)));
        assert_eq!(penalized(&effects), vec![next]);
        assert!(matches!(effects.last(), Some(Effect::GiveUp(_))), "{effects:?}");
    }

    /// Below the threshold, or with no peer offering anything, the node replays the blocks.
    #[test]
    fn without_a_snapshot_worth_it_the_node_replays() {
        let (genesis, _) = chain(1);
        let mut sync: StateSync<u8> = StateSync::new(&genesis, 1_000, 0);
        let _ = sync.peers(&[1], 0);
        assert!(sync.on_offers(&1, Some(vec![(900, Hash([1; 32]), 1)]), 100).is_empty());
        assert!(matches!(sync.tick(SETTLE_MS)[..], [Effect::GiveUp(_)]));
        let mut alone: StateSync<u8> = StateSync::new(&genesis, 1_000, 0);
        assert!(alone.tick(DISCOVERY_MS - 1).is_empty(), "it waits for peers");
        assert!(matches!(alone.tick(DISCOVERY_MS)[..], [Effect::GiveUp(_)]));
    }

    /// Review of issue 28: a snapshot offered high by peers that then refuse every request is given up after a
    /// bounded number of failures, and one offered by two peers is preferred over a higher one offered by one.
    #[test]
    fn a_snapshot_whose_offerers_refuse_everything_is_given_up_for_another() {
        let (genesis, store) = chain(12);
        let (stored, manifest, _) = snapshot(&store, 12);
        let hash = manifest_hash(&manifest);
        let fake = Hash([9; 32]);
        // One peer alone offers a higher snapshot: the one two peers offer comes first.
        let mut sync: StateSync<u8> = StateSync::new(&genesis, 3, 0);
        let _ = sync.peers(&[1, 2, 3], 0);
        let _ = sync.on_offers(&1, Some(vec![(500, fake, 1)]), 10);
        let _ = sync.on_offers(&2, Some(vec![(12, hash, 1)]), 10);
        let effects = sync.on_offers(&3, Some(vec![(12, hash, 1)]), 10);
        assert!(matches!(sends(&effects)[..], [(2 | 3, Ask::Changes { upto: 12, .. })]), "{effects:?}");
        // Two peers offer the higher one and refuse everything: after two failures per offerer it is given up.
        let mut sync: StateSync<u8> = StateSync::new(&genesis, 3, 0);
        let _ = sync.peers(&[1, 4, 2], 0);
        let _ = sync.on_offers(&1, Some(vec![(500, fake, 1)]), 10);
        let _ = sync.on_offers(&4, Some(vec![(500, fake, 1)]), 10);
        let mut effects = sync.on_offers(&2, Some(vec![(12, hash, 1)]), 10);
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 20, "the refused snapshot was never given up: {effects:?}");
            let asked = sends(&effects);
            let Some((peer, ask)) = asked.first().cloned() else { panic!("nothing asked: {effects:?}") };
            effects = match ask {
                Ask::Changes { upto: 500, .. } => sync.on_changes(&peer, None),
                Ask::Manifest { height: 500 } => sync.on_manifest(&peer, None),
                Ask::Changes { upto: 12, .. } => break,
                other => panic!("{other:?}"),
            };
            assert!(penalized(&effects).is_empty(), "refusals prove nothing");
        }
        assert!(
            sync.on_changes(&2, Some(Vec::new()))
                .iter()
                .any(|effect| matches!(effect, Effect::Send(2, Ask::Manifest { height: 12 })))
        );
        let effects = sync.on_manifest(&2, Some((stored, manifest)));
        assert!(effects.contains(&Effect::Begin { height: 12 }));
        // Without progress for a minute, the state sync gives up.
        assert!(sync.tick(STALL_MS - 1).is_empty());
        assert!(matches!(sync.tick(STALL_MS + 10)[..], [Effect::GiveUp(_)]));
    }

    /// Review of issue 28: a validator change at the snapshot's own height traces the snapshot's block; the
    /// manifest's block must then be that very block (it was taken for a later one, and every honest offerer was
    /// penalised). Changes out of order are their sender's fault.
    #[test]
    fn a_change_at_the_snapshots_height_traces_its_block_and_changes_must_ascend() {
        let (genesis, store) = chain(12);
        let (stored, manifest, _) = snapshot(&store, 12);
        let hash = manifest_hash(&manifest);
        let block = Block::from_bytes(&stored.block).unwrap();
        let set = ledger::consensus::ValidatorSet::new(
            genesis.validators.iter().map(|validator| (validator.key, validator.power)).collect(),
        );
        let header = protocol::codec::encode(block.header());
        let change = |height: u64| (height, header.clone(), stored.certificate.clone(), set.pairs());
        let mut sync: StateSync<u8> = StateSync::new(&genesis, 3, 0);
        let _ = sync.peers(&[1, 2], 0);
        let _ = sync.on_offers(&1, Some(vec![(12, hash, 1)]), 10);
        let effects = sync.on_offers(&2, Some(vec![(12, hash, 1)]), 2_000);
        let (tracer, _) = sends(&effects)[0].clone();
        // Out of order: the sender is penalised, and the other offerer asked.
        let effects = sync.on_changes(&tracer, Some(vec![change(12), change(12)]));
        assert_eq!(penalized(&effects), vec![tracer]);
        let (other, ask) = sends(&effects)[0].clone();
        assert_eq!(ask, Ask::Changes { after: 12, upto: 12 }, "the change it took stays traced");
        let effects = sync.on_changes(&other, Some(Vec::new()));
        let (server, Ask::Manifest { height: 12 }) = sends(&effects)[0].clone() else { panic!("{effects:?}") };
        let effects = sync.on_manifest(&server, Some((stored, manifest)));
        assert!(penalized(&effects).is_empty(), "{effects:?}");
        assert!(effects.contains(&Effect::Begin { height: 12 }), "{effects:?}");
    }
}
