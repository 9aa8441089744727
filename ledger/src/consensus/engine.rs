//! The consensus engine of one node: Malachite's Tendermint core driven step by step, with the ledger state,
//! the mempool and a [`Store`]. No sockets, no clock, no threads: every call takes the time and returns effects
//! (messages to gossip, timers to set, blocks committed), so the same code runs in the node and in seeded
//! simulations.
//!
//! Safety rules kept here:
//! - every vote and proposal is appended to the store's WAL and the WAL is synced before the message is
//!   published (and at every new round and decision), and the WAL is replayed on restart, so a restarted
//!   validator signs the same things again, never something conflicting;
//! - a proposed block is executed against the state before the core sees it, and only if it is valid (parent,
//!   height, time, validator set, every entry, state root);
//! - a decided block is written with its commit certificate in one synced batch before the next height starts.
//!
//! Liveness rules kept here:
//! - every input, including those the shell queues itself (the block this validator built), runs through the core
//!   before the call returns: nothing waits for the next message or timeout;
//! - at each rebroadcast the validator relays the votes of others it holds (see `relay_votes`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use malachite_consensus::{
    Effect as CoreEffect, Input, LivenessMsg, Params, PeerId, ProposedValue, Resumable, Resume, SignedConsensusMsg,
    State as CoreState, ThresholdParams, WalEntry,
};
use malachite_types::{
    CommitCertificate, NilOrVal, PolkaCertificate, Round, RoundCertificate, RoundCertificateType, SignedVote,
    SigningProvider, Timeout, TimeoutKind, ValidatorSet as _, Validity, ValueOrigin, ValuePayload, ValueResponse,
    Vote as _, VoteType,
};
use protocol::{Id, PublicKey};

use super::check::{self, CertificateError};
use super::context::{Address, Height, Kos, Sig, Signer, ValidatorSet, Vote, proposal_digest, vote_digest};
use super::wire::{self, Message};
use crate::block::{Block, Header, PROTOCOL_VERSION_MAX};
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::mempool::{self, Mempool, Rejected};
use crate::reads::GovernanceReads as _;
use crate::state::{BlockContext, Executed, State, validators_hash};
use crate::store::{Store, Stored};

/// Consensus timeouts, in milliseconds. Each grows by `step_ms` per round, so that a network slower than the
/// base values still reaches a round long enough to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub propose_ms: u64,
    pub prevote_ms: u64,
    pub precommit_ms: u64,
    pub rebroadcast_ms: u64,
    pub step_ms: u64,
}

impl Default for Timeouts {
    /// Sized for homes on ordinary links: a proposer has 3 s to get its block out, votes 1 s to gather; lost
    /// messages are sent again every 2 s.
    fn default() -> Timeouts {
        Timeouts { propose_ms: 3_000, prevote_ms: 1_000, precommit_ms: 1_000, rebroadcast_ms: 2_000, step_ms: 500 }
    }
}

impl Timeouts {
    fn duration(&self, timeout: Timeout) -> u64 {
        let round = u64::from(timeout.round.as_u32().unwrap_or(0));
        let base = match timeout.kind {
            TimeoutKind::Propose => self.propose_ms,
            TimeoutKind::Prevote => self.prevote_ms,
            TimeoutKind::Precommit => self.precommit_ms,
            TimeoutKind::Rebroadcast => self.rebroadcast_ms,
        };
        base.saturating_add(self.step_ms.saturating_mul(round))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub timeouts: Timeouts,
    /// How long a proposer with an empty mempool waits for entries before it proposes an empty block.
    pub empty_block_ms: u64,
    /// Pause after a commit before the next height starts (lets entries gather into fuller blocks).
    pub commit_wait_ms: u64,
    pub mempool: mempool::Config,
    /// Consensus messages buffered for the next heights while this one finishes, at most.
    pub future_messages_max: usize,
    /// The highest protocol version this node runs ([`PROTOCOL_VERSION_MAX`]; lower only to act as an older kos
    /// would, in tests): before a height of a later version it stops, saying what to install.
    pub version_max: u8,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            timeouts: Timeouts::default(),
            empty_block_ms: 1_000,
            commit_wait_ms: 0,
            mempool: mempool::Config::default(),
            future_messages_max: 4_096,
            version_max: PROTOCOL_VERSION_MAX,
        }
    }
}

/// A timer the engine asks its driver to run; when it fires, call [`Engine::on_timer`] with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    Consensus(Timeout),
    /// A proposer waiting for entries.
    Build,
    /// The pause after a commit.
    NextHeight,
}

/// A committed block, as the engine reports it.
#[derive(Debug, Clone)]
pub struct Commit {
    pub height: u64,
    pub block: Block,
    pub certificate: Vec<u8>,
    pub entry_ids: Vec<Id>,
    pub events: Vec<crate::state::Event>,
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Gossip on the consensus topic.
    Broadcast(Vec<u8>),
    StartTimer(Timer, u64),
    CancelTimer(Timer),
    CancelConsensusTimers,
    Committed(Arc<Commit>),
    /// Peers are at `height` or beyond: fetch certified blocks from this node's next height.
    Behind {
        height: u64,
    },
    /// A peer sent something provably invalid.
    Misbehaved {
        peer: PeerId,
        reason: String,
    },
    /// A validator signed two different blocks as its proposal for one height and round (evidence for governance;
    /// the second block is never executed).
    Equivocated {
        proposer: PublicKey,
        height: u64,
        round: u32,
        first: Hash,
        second: Hash,
    },
    /// Storage failed: the node must stop (it can no longer promise not to equivocate).
    Fatal(String),
}

/// What gossip should do with a consensus message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "gossip must be told whether to forward the message"]
pub enum Verdict {
    /// Valid (or valid as far as this node can tell at its height): forward it.
    Accept,
    /// Not useful here and not provably wrong (an old height, a round too far ahead, a signer this node cannot
    /// judge, the same proposal again, a proposer's second block): drop it without blame.
    Ignore(&'static str),
    /// Provably invalid (a bad signature, a signer outside the validator set, a proposal from a validator that is
    /// not the round's proposer, an invalid block): drop it and count it against the peer that sent it.
    Reject(String),
}

/// Rounds ahead of the current one whose proposals a validator executes; a proposal for a later round is dropped
/// without blame (an honest proposer is never that far ahead of a validator that follows the round timeouts). With
/// one block executed per round, this bounds the blocks a height can make a validator execute.
pub const PROPOSAL_ROUNDS_AHEAD_MAX: u32 = 8;

/// The engine of one node; see the module docs.
pub struct Engine<S: Store> {
    core: CoreState<Kos>,
    shell: Shell<S>,
}

struct Shell<S: Store> {
    signer: Signer,
    config: Config,
    genesis: Arc<Genesis>,
    store: S,
    state: State,
    mempool: Mempool,
    /// The last committed block: (height, hash, time).
    tip: (u64, Hash, u64),
    validators: ValidatorSet,
    height: u64,
    round: Round,
    /// Executions of blocks proposed at this height, by hash.
    executed: HashMap<Hash, Executed>,
    /// Blocks proposed at this height: by hash.
    blocks: HashMap<Hash, Block>,
    /// The block proposed for each round of this height (the first this node saw signed by the round's proposer),
    /// and whether it was valid: at most one block is executed per round.
    proposed: HashMap<u32, (Hash, bool)>,
    pending: VecDeque<Input<Kos>>,
    /// Checked messages of the next heights, by height (at most `future_messages_max` in all).
    future: BTreeMap<u64, Vec<(PeerId, Message)>>,
    effects: Vec<Effect>,
    replaying: bool,
    wal_dirty: bool,
    decided: Option<CommitCertificate<Kos>>,
    awaiting_value: Option<(Height, Round)>,
    now_ms: u64,
    failed: bool,
    /// The highest height peers were seen at, and when sync was last asked for.
    behind_reported: (u64, u64),
    /// Keys of the signatures verified at this height ([`signature_key`]).
    verified: HashSet<Hash>,
    /// This height's validators are not the previous height's: its block's commit records the change.
    set_changed: bool,
    /// The first signature taken in for each vote (by its digest) at this height ([`Shell::first_signature`]).
    signatures: HashMap<Hash, Sig>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0:#}")]
    Store(#[from] anyhow::Error),
    #[error("stored block {height} is unreadable: {reason}")]
    Corrupt { height: u64, reason: String },
}

impl<S: Store> Engine<S> {
    /// Opens the engine on a store: loads the state and tip, ready for [`Engine::start`].
    pub fn new(
        genesis: Arc<Genesis>,
        seed: &[u8; 32],
        store: S,
        config: Config,
        now_ms: u64,
    ) -> Result<Engine<S>, StartError> {
        let ctx = Kos { network: genesis.network.clone() };
        let signer = Signer::new(genesis.network.clone(), seed);
        let tip_height = store.tip()?;
        let mut last_set = None;
        let (state, tip) = if tip_height == 0 {
            (State::genesis(genesis.clone()), (0, genesis.hash, genesis.time_ms))
        } else {
            let stored =
                store.block(tip_height)?.ok_or(StartError::Corrupt { height: tip_height, reason: "missing".into() })?;
            let block = Block::from_bytes(&stored.block)
                .map_err(|error| StartError::Corrupt { height: tip_height, reason: error.to_string() })?;
            // A home's state stays on disk and is read through; a validator's is loaded into memory. The summary
            // kept with the tip's block, when it matches the block's state root, spares summing the whole state: the
            // node checks the pairs against it after the start (`RocksReader::verify_state`).
            let summary = store
                .summary()?
                .filter(|(height, lattice, _)| *height == tip_height && lattice.root() == block.header().state_root);
            let state = match (store.backing(), summary) {
                (Some(backing), Some((_, lattice, pairs))) => State::on_disk_summarized(
                    genesis.clone(),
                    backing,
                    lattice,
                    usize::try_from(pairs).unwrap_or(usize::MAX),
                ),
                (Some(backing), None) => State::on_disk(genesis.clone(), backing)
                    .map_err(|reason| StartError::Corrupt { height: tip_height, reason })?,
                (None, Some((_, lattice, pairs))) => {
                    let state = State::from_pairs_summarized(genesis.clone(), store.state()?, lattice);
                    if state.len() as u64 != pairs {
                        return Err(StartError::Corrupt {
                            height: tip_height,
                            reason: format!("the state holds {} pairs, its summary {pairs}", state.len()),
                        });
                    }
                    state
                }
                (None, None) => State::from_pairs(genesis.clone(), store.state()?),
            };
            if state.root() != block.header().state_root {
                return Err(StartError::Corrupt {
                    height: tip_height,
                    reason: "state does not match the block's state root".into(),
                });
            }
            last_set = Some(block.header().validators_hash);
            (state, (tip_height, block.hash(), block.header().time_ms))
        };
        let validators = ValidatorSet::new(state.validators());
        let set_changed = last_set.is_some_and(|last| last != validators_hash(&validators.pairs()));
        let address = signer.address();
        let params = Params {
            initial_height: Height(tip.0 + 1),
            initial_validator_set: validators.clone(),
            address,
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalOnly,
        };
        let core = CoreState::new(ctx, params, 8);
        let shell = Shell {
            signer,
            mempool: Mempool::new(config.mempool),
            config,
            genesis,
            store,
            state,
            tip,
            validators,
            height: tip.0 + 1,
            round: Round::Nil,
            executed: HashMap::new(),
            blocks: HashMap::new(),
            proposed: HashMap::new(),
            pending: VecDeque::new(),
            future: BTreeMap::new(),
            effects: Vec::new(),
            replaying: false,
            wal_dirty: false,
            decided: None,
            awaiting_value: None,
            now_ms,
            failed: false,
            behind_reported: (0, 0),
            verified: HashSet::new(),
            set_changed,
            signatures: HashMap::new(),
        };
        Ok(Engine { core, shell })
    }

    pub fn address(&self) -> PublicKey {
        self.shell.signer.address().0
    }

    /// The height being decided (one above the last committed block).
    pub fn height(&self) -> u64 {
        self.shell.height
    }

    pub fn round(&self) -> Round {
        self.shell.round
    }

    /// The last committed block's height and hash.
    pub fn tip(&self) -> (u64, Hash) {
        (self.shell.tip.0, self.shell.tip.1)
    }

    pub fn state(&self) -> &State {
        &self.shell.state
    }

    pub fn store(&self) -> &S {
        &self.shell.store
    }

    pub fn mempool(&self) -> &Mempool {
        &self.shell.mempool
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.shell.validators
    }

    pub fn is_validator(&self) -> bool {
        self.shell.validators.contains(&self.shell.signer.address())
    }

    /// Starts consensus at the next height, replaying this height's WAL first (after a restart).
    pub fn start(&mut self, now_ms: u64) -> Vec<Effect> {
        self.shell.now_ms = now_ms;
        self.start_height();
        self.drain()
    }

    fn start_height(&mut self) {
        let height = Height(self.shell.height);
        // A height of a protocol version this node does not run: stop before deciding it (PROTOCOL.md §10,
        // *Protocol versions*).
        let version = self.shell.state.protocol_version();
        if version > self.shell.config.version_max {
            let info = self.shell.state.upgrade_in_force().map(|upgrade| upgrade.info).unwrap_or_default();
            self.shell.fail(format!(
                "the network runs ledger protocol version {version} from block {} on, and this kos supports \
                 versions 1 to {}: install {info:?} (or a later kos) and start the node again; it goes on from \
                 block {}",
                self.shell.state.upgrade_in_force().map_or(height.0, |upgrade| upgrade.height),
                self.shell.config.version_max,
                height.0
            ));
            return;
        }
        let records = match self.shell.store.wal(self.shell.height) {
            Ok(records) => records,
            Err(error) => {
                self.shell.fail(format!("reading the WAL: {error:#}"));
                Vec::new()
            }
        };
        self.shell.replaying = !records.is_empty();
        // This validator's own proposals of the height, known before anything is replayed: the core may ask for a
        // value for a round it already proposed in before the record of that proposal comes (a round certificate in
        // the WAL moves it there first), and a new block would then be a second proposal for the round.
        let own = self.shell.signer.address();
        for record in &records {
            if let Ok(WalEntry::ConsensusMsg(SignedConsensusMsg::Proposal(proposal))) = wire::wal_from_bytes(record)
                && proposal.message.proposer == own
            {
                let round = proposal.message.round.as_u32().unwrap_or(0);
                self.shell.proposed.entry(round).or_insert((proposal.message.block.hash(), true));
                self.shell.remember(&proposal.message.block);
            }
        }
        self.feed(Input::StartHeight(height, self.shell.validators.clone()));
        if !records.is_empty() {
            tracing::info!(height = height.0, records = records.len(), "replaying the consensus WAL");
        }
        for record in records {
            match wire::wal_from_bytes(&record) {
                Ok(WalEntry::ConsensusMsg(SignedConsensusMsg::Vote(vote))) => self.feed(Input::Vote(vote)),
                Ok(WalEntry::ConsensusMsg(SignedConsensusMsg::Proposal(proposal))) => {
                    let round = proposal.message.round.as_u32().unwrap_or(0);
                    self.shell.proposed.entry(round).or_insert((proposal.message.block.hash(), true));
                    self.shell.remember(&proposal.message.block);
                    self.feed(Input::Proposal(proposal))
                }
                Ok(WalEntry::Timeout(timeout)) => {
                    self.shell.effects.push(Effect::CancelTimer(Timer::Consensus(timeout)));
                    self.feed(Input::TimeoutElapsed(timeout))
                }
                Ok(WalEntry::ProposedValue(value)) => {
                    self.shell.remember(&value.value);
                    let _ = self.shell.execute(&value.value);
                    self.feed(Input::ProposedValue(value, ValueOrigin::Consensus))
                }
                Err(error) => tracing::warn!(%error, "skipping an unreadable WAL record"),
            }
        }
        self.shell.replaying = false;
        // Messages for this height that arrived early (their verdict was given when they arrived).
        let early = self.shell.future.remove(&height.0).unwrap_or_default();
        for (peer, message) in early {
            let _ = self.on_message_inner(peer, message);
        }
        // Heights this node skipped (it synced past them) will never start: their messages go.
        self.shell.future.retain(|future_height, _| *future_height > height.0);
    }

    /// A message from the consensus topic, from `peer`; returns what gossip should do with it and the effects.
    pub fn on_message(&mut self, peer: PeerId, bytes: &[u8], now_ms: u64) -> (Verdict, Vec<Effect>) {
        self.shell.now_ms = now_ms;
        let verdict = match Message::from_bytes(bytes) {
            Ok(message) => self.on_message_inner(peer, message),
            Err(error) => Verdict::Reject(format!("undecodable consensus message: {error}")),
        };
        (verdict, self.drain())
    }

    /// Consensus messages of later heights held until their height starts.
    pub fn future_messages(&self) -> usize {
        self.shell.future_len()
    }

    fn on_message_inner(&mut self, peer: PeerId, message: Message) -> Verdict {
        let height = message.height().0;
        let current = self.shell.height;
        if height < current {
            // Late votes of a decided height are normal; nothing in them is needed any more.
            return Verdict::Ignore("a message of a decided height");
        }
        if height > current {
            return self.on_future_message(peer, message);
        }
        match message {
            Message::Proposal(proposal) => self.on_proposal(proposal),
            Message::Vote(vote) => {
                let digest = vote_digest(&self.shell.genesis.network, &vote.message);
                let checked = self
                    .shell
                    .check_signed(digest, &vote.message.validator, &vote.signature)
                    .map_err(|reason| format!("vote {reason}"));
                if checked.is_ok() {
                    match self.shell.first_signature(digest, vote.signature) {
                        Some(first) if first == vote.signature => {}
                        Some(_) => return Verdict::Ignore("a vote already taken, signed again"),
                        None => return Verdict::Ignore("more votes at this height than a node keeps"),
                    }
                }
                self.feed_checked(checked, Input::Vote(vote))
            }
            Message::Polka(mut certificate) => {
                let checked = self
                    .shell
                    .check_certificate(Certificate::Polka(&certificate), None)
                    .map_err(|error| format!("bad polka certificate: {error}"));
                if checked.is_ok() {
                    let (height, round, value) =
                        (certificate.height, certificate.round, NilOrVal::Val(certificate.value_id));
                    for one in &mut certificate.polka_signatures {
                        let vote = Vote { height, round, vote_type: VoteType::Prevote, value, validator: one.address };
                        one.signature = self.shell.taken_signature(&vote, one.signature);
                    }
                }
                self.feed_checked(checked, Input::PolkaCertificate(certificate))
            }
            Message::Round(mut certificate) => {
                let checked = self
                    .shell
                    .check_certificate(Certificate::Round(&certificate), None)
                    .map_err(|error| format!("bad round certificate: {error}"));
                if checked.is_ok() {
                    let (height, round) = (certificate.height, certificate.round);
                    for one in &mut certificate.round_signatures {
                        let vote = Vote {
                            height,
                            round,
                            vote_type: one.vote_type,
                            value: one.value_id,
                            validator: one.address,
                        };
                        one.signature = self.shell.taken_signature(&vote, one.signature);
                    }
                }
                self.feed_checked(checked, Input::RoundCertificate(certificate))
            }
        }
    }

    /// A message of a later height: peers may have decided heights this node missed, and it must fetch them (their
    /// votes will not come again). Only a message signed by a validator of this height's set, with a good signature,
    /// is taken as that proof: anyone can claim a height, so an unchecked claim would send the node syncing towards
    /// a height that never comes. A signer outside the set is not judged (the set may change by then): such a
    /// message is dropped without blame. Checked messages of the next two heights wait for their height.
    fn on_future_message(&mut self, peer: PeerId, message: Message) -> Verdict {
        let height = message.height().0;
        let shell = &mut self.shell;
        let checked = match &message {
            Message::Proposal(proposal) => {
                let digest = proposal_digest(&shell.genesis.network, &proposal.message);
                shell.check_future_signed(digest, &proposal.message.proposer, &proposal.signature)
            }
            Message::Vote(vote) => {
                let digest = vote_digest(&shell.genesis.network, &vote.message);
                shell.check_future_signed(digest, &vote.message.validator, &vote.signature)
            }
            Message::Polka(certificate) => {
                future_certificate(shell.check_certificate(Certificate::Polka(certificate), None))
            }
            Message::Round(certificate) => {
                future_certificate(shell.check_certificate(Certificate::Round(certificate), None))
            }
        };
        if checked != Verdict::Accept {
            return checked;
        }
        shell.report_behind(height);
        let current = shell.height;
        if shell.future_len() < shell.config.future_messages_max && height <= current.saturating_add(2) {
            shell.future.entry(height).or_default().push((peer, message));
        }
        Verdict::Accept
    }

    /// A proposal for this height: from the round's proposer, for a round not too far ahead, well signed; then its
    /// block is executed, once per round. A second, different block signed by the same proposer for the same round
    /// is equivocation: reported, never executed.
    fn on_proposal(&mut self, proposal: malachite_types::SignedProposal<Kos>) -> Verdict {
        let shell = &mut self.shell;
        let message = &proposal.message;
        let Some(round) = message.round.as_u32() else { return Verdict::Reject("a proposal without a round".into()) };
        if !shell.validators.contains(&message.proposer) {
            return Verdict::Reject("proposal signed by a key outside this height's validator set".into());
        }
        let expected = super::context::proposer(&shell.validators, message.height, message.round).address;
        if message.proposer != expected {
            return Verdict::Reject(format!(
                "proposal for round {round} from a validator that is not its proposer ({expected} is)"
            ));
        }
        let current_round = self.core.round().as_u32().unwrap_or(0);
        if round > current_round.saturating_add(PROPOSAL_ROUNDS_AHEAD_MAX) {
            return Verdict::Ignore("a proposal for a round too far ahead");
        }
        // The signature before the block: executing a block is the costliest check, and a forged proposal must not
        // buy it (nor fill the caches of executed blocks).
        let digest = proposal_digest(&shell.genesis.network, message);
        if let Err(reason) = shell.check_signed(digest, &message.proposer, &proposal.signature) {
            return Verdict::Reject(format!("proposal {reason}"));
        }
        // A block from a clock ahead of this one may become acceptable: dropped without blame, and not recorded as
        // the round's block.
        let skew_ms = shell.genesis.params.clock_skew_ms_max;
        if message.block.header().time_ms > shell.now_ms.saturating_add(skew_ms) {
            return Verdict::Ignore("a block timed ahead of this node's clock");
        }
        let hash = message.block.hash();
        match shell.proposed.get(&round).copied() {
            Some((first, _)) if first == hash => return Verdict::Ignore("a proposal already seen"),
            Some((first, _)) => {
                tracing::warn!(height = shell.height, round, proposer = %message.proposer.0, %first, second = %hash, "a proposer equivocated");
                shell.effects.push(Effect::Equivocated {
                    proposer: message.proposer.0,
                    height: shell.height,
                    round,
                    first,
                    second: hash,
                });
                return Verdict::Ignore("a proposer's second block for a round");
            }
            None => {}
        }
        let block = message.block.clone();
        let checked = shell.check_block(&block, &message.proposer.0);
        shell.proposed.insert(round, (hash, checked.is_ok()));
        if let Err(reason) = checked {
            // A read of this node's state on disk failed: the block is not shown to be invalid, and the node stops
            // ([`Engine::drain`]) rather than blame the peer.
            if shell.state.failure().is_some() {
                return Verdict::Ignore("this node could not read its state");
            }
            return Verdict::Reject(format!("invalid block proposed: {reason}"));
        }
        shell.remember(&block);
        self.feed(Input::Proposal(proposal));
        Verdict::Accept
    }

    /// A timer set by [`Effect::StartTimer`] fired.
    pub fn on_timer(&mut self, timer: Timer, now_ms: u64) -> Vec<Effect> {
        self.shell.now_ms = now_ms;
        match timer {
            Timer::Consensus(timeout) => {
                self.feed(Input::TimeoutElapsed(timeout));
                if timeout.kind == TimeoutKind::Rebroadcast && timeout.round == self.core.round() {
                    self.relay_votes();
                }
            }
            Timer::Build => {
                if let Some((height, round)) = self.shell.awaiting_value.take() {
                    self.shell.propose(height, round);
                    self.process();
                }
            }
            Timer::NextHeight => self.start_height(),
        }
        self.drain()
    }

    /// A signed entry for the mempool (from gossip or a local client). Validates it; a proposer waiting for
    /// entries proposes at once.
    pub fn on_entry(&mut self, bytes: Vec<u8>, now_ms: u64) -> (Result<Id, Rejected>, Vec<Effect>) {
        let (mut results, effects) = self.on_entries(vec![bytes], now_ms);
        (results.pop().unwrap_or(Err(Rejected::Full)), effects)
    }

    /// Validates entries together (their signatures in batches) and admits the valid ones to the mempool; one
    /// result per entry, in order.
    pub fn on_entries(&mut self, entries: Vec<Vec<u8>>, now_ms: u64) -> (Vec<Result<Id, Rejected>>, Vec<Effect>) {
        self.shell.now_ms = now_ms;
        let slices: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let validated = protocol::validate_batch(&slices, &self.shell.state.entry_config(), now_ms);
        let results: Vec<Result<Id, Rejected>> = entries
            .into_iter()
            .zip(validated)
            .map(|(bytes, validated)| {
                let validated = validated.map_err(Rejected::Invalid)?;
                self.shell.mempool.add_validated(bytes, validated, &self.shell.state)
            })
            .collect();
        if results.iter().any(Result::is_ok)
            && let Some((height, round)) = self.shell.awaiting_value.take()
        {
            self.shell.effects.push(Effect::CancelTimer(Timer::Build));
            self.shell.propose(height, round);
            self.process();
        }
        (results, self.drain())
    }

    /// Admits entries validated elsewhere (the node validates gossip in batches).
    pub fn on_validated_entries(
        &mut self,
        entries: Vec<(Vec<u8>, protocol::Validated)>,
        now_ms: u64,
    ) -> (usize, Vec<Effect>) {
        self.shell.now_ms = now_ms;
        let mut admitted = 0;
        for (bytes, validated) in entries {
            if self.shell.mempool.add_validated(bytes, validated, &self.shell.state).is_ok() {
                admitted += 1;
            }
        }
        if admitted > 0
            && let Some((height, round)) = self.shell.awaiting_value.take()
        {
            self.shell.effects.push(Effect::CancelTimer(Timer::Build));
            self.shell.propose(height, round);
            self.process();
        }
        (admitted, self.drain())
    }

    /// A certified block fetched from a peer by sync. Blocks must come in height order, starting at
    /// [`Engine::height`]; others are ignored.
    pub fn on_synced_block(&mut self, peer: PeerId, stored: &Stored, now_ms: u64) -> Vec<Effect> {
        self.shell.now_ms = now_ms;
        let certificate = match wire::certificate_from_bytes(&stored.certificate) {
            Ok(certificate) => certificate,
            Err(error) => {
                self.shell.effects.push(Effect::Misbehaved { peer, reason: format!("bad certificate: {error}") });
                return self.drain();
            }
        };
        if certificate.height.0 != self.shell.height {
            return self.drain();
        }
        // Checked here as well as by the core, which drops a bad certificate without saying so: the peer that served
        // it must be penalised. Its good signatures are remembered, so the core's check that follows is lookups.
        if let Err(error) = self.shell.check_certificate(Certificate::Commit(&certificate), None) {
            self.shell
                .effects
                .push(Effect::Misbehaved { peer, reason: format!("synced block's certificate: {error}") });
            return self.drain();
        }
        let proposer = super::context::proposer(&self.shell.validators, certificate.height, certificate.round).address;
        let response = ValueResponse::new(peer, proposer, bytes::Bytes::from(stored.block.clone()), certificate);
        self.feed(Input::SyncValueResponse(response));
        self.drain()
    }

    /// Certified blocks from `from` on, at most `max` (or fewer when their bytes pass `bytes_max`), to serve a
    /// peer's sync request.
    pub fn blocks_from(&self, from: u64, max: usize, bytes_max: usize) -> Vec<Stored> {
        crate::store::blocks_from(|height| self.shell.store.block(height), from, max, bytes_max)
    }

    /// At each rebroadcast, besides its own votes and round certificate (which the core republishes), a validator
    /// relays the votes of others that it holds for its round and the round before:
    /// - the previous round's precommits, as one round certificate when they reach a quorum. The core keeps a
    ///   certificate only when it entered the round on "precommits for anything"; a validator that entered it on
    ///   the timeout after precommits *for one value* (whose proposal it never received) had nothing to show, and
    ///   the validators still in that round could wait for a third precommit forever;
    /// - the current round's votes, one by one: a Byzantine validator may send a valid vote to some validators
    ///   only, then move on (it decided with their votes) and never send it again.
    ///
    /// Found by seeded simulations 124 and 136: a Byzantine proposer whose precommit reached one honest validator,
    /// which had missed the proposal; the two that had it waited in round 1 for good. Only two rounds are relayed:
    /// at most three votes per other validator (or a certificate and two) at each rebroadcast.
    fn relay_votes(&mut self) {
        let round = self.core.round();
        let height = self.core.height();
        let own = self.shell.signer.address();
        let keeper = self.core.driver.votes();
        let mut messages = Vec::new();
        let previous = round.as_u32().and_then(|round| round.checked_sub(1)).map(Round::new);
        // (The core keeps its last certificate across heights: one from an earlier height does not count.)
        let certified = self.core.round_certificate().is_some_and(|certificate| {
            certificate.certificate.height == height
                && certificate.enter_round == round
                && certificate.certificate.cert_type == RoundCertificateType::Precommit
        });
        if let (Some(previous), false) = (previous, certified)
            && let Some(votes) = keeper.per_round(previous)
        {
            let mut seen = std::collections::BTreeSet::new();
            let precommits: Vec<SignedVote<Kos>> = votes
                .received_votes()
                .iter()
                .filter(|vote| vote.vote_type() == VoteType::Precommit && seen.insert(*vote.validator_address()))
                .cloned()
                .collect();
            let weight: u64 = precommits
                .iter()
                .filter_map(|vote| self.shell.validators.get_by_address(vote.validator_address()))
                .map(|validator| validator.power)
                .sum();
            let total = self.shell.validators.total_voting_power();
            if check::Threshold::TwoThirds.met(weight, total) {
                let certificate =
                    RoundCertificate::new_from_votes(height, previous, RoundCertificateType::Precommit, precommits);
                messages.push(Message::Round(certificate));
            } else {
                messages
                    .extend(precommits.into_iter().filter(|vote| *vote.validator_address() != own).map(Message::Vote));
            }
        }
        if let Some(votes) = keeper.per_round(round) {
            messages.extend(
                votes
                    .received_votes()
                    .iter()
                    .filter(|vote| *vote.validator_address() != own)
                    .cloned()
                    .map(Message::Vote),
            );
        }
        for message in messages {
            self.shell.broadcast(message);
        }
    }

    /// Feeds a peer's message to the core if it passed the engine's check; otherwise rejects it.
    fn feed_checked(&mut self, checked: Result<(), String>, input: Input<Kos>) -> Verdict {
        match checked {
            Ok(()) => {
                self.feed(input);
                Verdict::Accept
            }
            Err(reason) => Verdict::Reject(reason),
        }
    }

    fn feed(&mut self, input: Input<Kos>) {
        self.shell.pending.push_back(input);
        self.process();
    }

    /// Runs the queued inputs through the core (inputs queued by the shell, such as a block this node built,
    /// included: they must not wait for the next message or timeout).
    fn process(&mut self) {
        while let Some(input) = self.shell.pending.pop_front() {
            if self.shell.failed {
                self.shell.pending.clear();
                return;
            }
            let shell = &mut self.shell;
            let result: Result<(), malachite_consensus::Error<Kos>> = malachite_consensus::process!(
                input: input,
                state: &mut self.core,
                metrics: &(),
                with: effect => shell.handle(effect)
            );
            if let Err(error) = result {
                tracing::debug!(%error, "consensus input rejected");
            }
            if let Some(certificate) = self.shell.decided.take() {
                let decided = self.core.decided_value();
                self.commit(certificate, decided.map(|(_, block)| block));
            }
        }
    }

    fn commit(&mut self, certificate: CommitCertificate<Kos>, decided: Option<Block>) {
        let shell = &mut self.shell;
        let certificate = check::commit_in_key_order(certificate);
        let Some(block) = decided.or_else(|| shell.blocks.get(&certificate.value_id).cloned()) else {
            shell.fail(format!("decided block {} is unknown", certificate.value_id));
            return;
        };
        // A block this node proposed or voted for passed these checks already; a synced one has only its certificate
        // behind it. More than two thirds signing a block that breaks a rule of the chain is a fault to stop at.
        if let Err(reason) = check::check_header(block.header(), &shell.parent()) {
            shell.fail(format!("decided block {} breaks a rule of the chain: {reason}", block.height()));
            return;
        }
        // The execution cached when the block was checked or built; taken, not cloned.
        let cached = shell.executed.remove(&block.hash());
        let executed = match cached.map_or_else(|| shell.run_block(&block), Ok) {
            Ok(executed) => executed,
            Err(reason) => {
                // More than two thirds of the voting power signed a block this node cannot execute: its state or
                // code differs from theirs. Stop rather than diverge.
                shell.fail(format!("decided block {} does not execute here: {reason}", block.height()));
                return;
            }
        };
        let validators = shell.set_changed.then(|| shell.validators.pairs());
        let summary = Some((executed.lattice.clone(), u64::try_from(executed.pairs).unwrap_or(u64::MAX)));
        let outcome = crate::store::Outcome { entry_ids: executed.ids, events: executed.events, validators, summary };
        let stored = Stored { block: block.to_bytes(), certificate: wire::certificate_to_bytes(&certificate) };
        // The store holds the whole state: block 1 writes the genesis pairs too.
        let genesis_writes;
        let writes = if block.height() == 1 {
            let mut all: crate::state::Writes =
                shell.state.pairs().map(|(key, value)| (key.into_owned(), Some(value.into_owned()))).collect();
            all.extend(executed.writes.iter().map(|(key, value)| (key.clone(), value.clone())));
            genesis_writes = all;
            &genesis_writes
        } else {
            &executed.writes
        };
        // An execution that read through a failed read of the state is not committed.
        if let Some(failure) = shell.state.failure() {
            shell.fail(format!("block {} not committed: {failure}", block.height()));
            return;
        }
        if let Err(error) = shell.store.commit(block.height(), &stored, writes, &outcome) {
            shell.fail(format!("writing block {}: {error:#}", block.height()));
            return;
        }
        shell.state.apply(executed.writes, executed.lattice, executed.pairs);
        // Block 1 wrote the genesis pairs to the store: a home's state leaves memory from here.
        if !shell.state.is_on_disk()
            && let Some(backing) = shell.store.backing()
        {
            shell.state.spill(backing);
        }
        shell.mempool.remove_all(&outcome.entry_ids);
        shell.mempool.prune_expired(block.header().time_ms);
        shell.tip = (block.height(), block.hash(), block.header().time_ms);
        shell.height = block.height() + 1;
        shell.round = Round::Nil;
        let validators = ValidatorSet::new(shell.state.validators());
        shell.set_changed = validators.pairs() != shell.validators.pairs();
        shell.validators = validators;
        shell.executed.clear();
        shell.blocks.clear();
        shell.proposed.clear();
        // The validator set may have changed.
        shell.verified.clear();
        shell.signatures.clear();
        shell.awaiting_value = None;
        shell.effects.push(Effect::CancelTimer(Timer::Build));
        shell.effects.push(Effect::CancelConsensusTimers);
        shell.effects.push(Effect::Committed(Arc::new(Commit {
            height: block.height(),
            certificate: stored.certificate,
            block: block.clone(),
            entry_ids: outcome.entry_ids,
            events: outcome.events,
        })));
        if shell.config.commit_wait_ms > 0 {
            shell.effects.push(Effect::StartTimer(Timer::NextHeight, shell.config.commit_wait_ms));
        } else {
            self.start_height();
        }
    }

    fn drain(&mut self) -> Vec<Effect> {
        // A read of a state on disk that failed (whatever asked for it): the node can no longer trust what it
        // executes, so it stops.
        if let Some(failure) = self.shell.state.failure() {
            self.shell.fail(failure);
        }
        std::mem::take(&mut self.shell.effects)
    }

    /// Storage failed or the node diverged: it must stop.
    pub fn failed(&self) -> bool {
        self.shell.failed
    }
}

/// How many verified signatures and certificates a node remembers within a height (past it, it forgets them all and
/// verifies again: the memory is bounded, whatever peers send).
const VERIFIED_MAX: usize = 4_096;

/// The key under which a verified signature is remembered: everything the verdict depends on.
fn signature_key(digest: &Hash, signer: &Address, signature: &Sig) -> Hash {
    crate::hash::tagged(
        "kos/v1/consensus/verified-signature",
        &[digest.as_bytes(), signer.0.as_bytes(), &signature.0.to_bytes()],
    )
}

/// Verifies a consensus signature, or finds it among those verified (remembered until the next commit, at most
/// [`VERIFIED_MAX`]).
fn remembered_verify(verified: &mut HashSet<Hash>, digest: Hash, signer: &Address, signature: &Sig) -> bool {
    let key = signature_key(&digest, signer, signature);
    if verified.contains(&key) {
        return true;
    }
    let valid = check::verify_signature(&digest, signer, signature);
    if valid {
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(key);
    }
    valid
}

/// How many votes' first signatures a node keeps at a height ([`Shell::first_signature`]): a vote per validator,
/// type and round, for 256 validators through 32 rounds.
const VOTE_SIGNATURES_MAX: usize = 16_384;

/// The verdict on a certificate of a later height, checked against this height's validator set: good signatures
/// of enough power prove that peers are there; a bad signature of a known validator, or signatures out of order,
/// are invalid under any set; a signer this node does not know, or too little power, may be right for a set this
/// node has not reached yet.
fn future_certificate(checked: Result<(), CertificateError>) -> Verdict {
    match checked {
        Ok(()) => Verdict::Accept,
        Err(CertificateError::UnknownSigner(_) | CertificateError::Power { .. }) => {
            Verdict::Ignore("a certificate of a later height this node cannot judge yet")
        }
        Err(error) => Verdict::Reject(format!("bad certificate of a later height: {error}")),
    }
}

/// A certificate of any of the three kinds, for [`Shell::check_certificate`].
enum Certificate<'a> {
    Commit(&'a CommitCertificate<Kos>),
    Polka(&'a PolkaCertificate<Kos>),
    Round(&'a RoundCertificate<Kos>),
}

/// The core's form of a certificate's fault (it only logs it).
fn core_error(error: CertificateError) -> malachite_types::CertificateError<Kos> {
    use malachite_types::CertificateError as Core;
    match error {
        CertificateError::Order(address) => Core::DuplicateVote(address),
        CertificateError::UnknownSigner(address) => Core::UnknownValidator(address),
        CertificateError::VoteType(address) => Core::InvalidVoteType(address),
        CertificateError::BadSignature(_) | CertificateError::Power { .. } => {
            Core::NotEnoughVotingPower { signed: 0, total: 0, expected: 0 }
        }
    }
}

impl<S: Store> Shell<S> {
    /// Checks a peer's vote or proposal before the core sees it: signed by a validator of this height, with a good
    /// signature. The core drops a bad one without saying so; checked here, its sender is penalised and gossip does
    /// not relay it.
    fn check_signed(&mut self, digest: Hash, signer: &Address, signature: &Sig) -> Result<(), &'static str> {
        if !self.validators.contains(signer) {
            return Err("signed by a key outside this height's validator set");
        }
        if !self.verified_signature(digest, signer, signature) {
            return Err("with a bad signature");
        }
        Ok(())
    }

    /// Checks a vote or proposal of a later height against this height's set (the only one known): a signer outside
    /// it is not judged, a bad signature of a member is rejected.
    fn check_future_signed(&mut self, digest: Hash, signer: &Address, signature: &Sig) -> Verdict {
        if !self.validators.contains(signer) {
            return Verdict::Ignore("a message of a later height signed by a key this node cannot judge yet");
        }
        if !self.verified_signature(digest, signer, signature) {
            return Verdict::Reject("a message of a later height with a bad signature".into());
        }
        Verdict::Accept
    }

    /// Messages of later heights held.
    fn future_len(&self) -> usize {
        self.future.values().map(Vec::len).sum()
    }

    /// Verifies a consensus signature, remembering good ones until the next commit: a message checked on arrival
    /// is checked again by the core, and that second check is a lookup.
    fn verified_signature(&mut self, digest: Hash, signer: &Address, signature: &Sig) -> bool {
        remembered_verify(&mut self.verified, digest, signer, signature)
    }

    /// Checks a certificate by the one rule ([`check`]) against `validators`, or this height's set; good signatures
    /// are remembered like those of votes.
    fn check_certificate(
        &mut self,
        certificate: Certificate<'_>,
        validators: Option<&ValidatorSet>,
    ) -> Result<(), CertificateError> {
        let Shell { validators: own, genesis, verified, .. } = self;
        let (validators, network) = (validators.unwrap_or(own), &genesis.network);
        let mut verify =
            |digest: &Hash, signer: &Address, signature: &Sig| remembered_verify(verified, *digest, signer, signature);
        match certificate {
            Certificate::Commit(certificate) => check::check_commit(network, validators, certificate, &mut verify),
            Certificate::Polka(certificate) => check::check_polka(network, validators, certificate, &mut verify),
            Certificate::Round(certificate) => check::check_round(network, validators, certificate, &mut verify),
        }
    }

    /// The signature this node took in for the vote of `digest` — `signature` if it is the first — or `None` when
    /// it keeps [`VOTE_SIGNATURES_MAX`] already. Ed25519 signatures are not unique: a validator can sign one vote
    /// again with another nonce, and Malachite's vote keeper keeps both copies, then builds a certificate naming the
    /// validator twice and stops on it (an assertion). One signature per vote keeps a Byzantine validator from
    /// crashing every honest node that way.
    fn first_signature(&mut self, digest: Hash, signature: Sig) -> Option<Sig> {
        if let Some(first) = self.signatures.get(&digest) {
            return Some(*first);
        }
        if self.signatures.len() >= VOTE_SIGNATURES_MAX {
            return None;
        }
        self.signatures.insert(digest, signature);
        Some(signature)
    }

    /// The signature of a certificate's vote to hand the core: the one taken in first for that vote (the
    /// certificate's own when it is the first, or when the table is full).
    fn taken_signature(&mut self, vote: &Vote, signature: Sig) -> Sig {
        let digest = vote_digest(&self.genesis.network, vote);
        self.first_signature(digest, signature).unwrap_or(signature)
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "consensus stopped");
        if !self.failed {
            self.failed = true;
            self.effects.push(Effect::Fatal(reason));
        }
    }

    /// Asks the driver to sync, at most once a second unless peers are seen at a new height.
    fn report_behind(&mut self, height: u64) {
        let (reported_height, reported_ms) = self.behind_reported;
        if height > reported_height || self.now_ms >= reported_ms.saturating_add(1_000) {
            self.behind_reported = (height.max(reported_height), self.now_ms);
            self.effects.push(Effect::Behind { height });
        }
    }

    fn remember(&mut self, block: &Block) {
        if self.blocks.len() < 64 {
            self.blocks.insert(block.hash(), block.clone());
        }
    }

    fn context(&self, header: &Header) -> BlockContext {
        BlockContext { height: header.height, time_ms: header.time_ms, proposer: header.proposer }
    }

    /// Executes a block of the current height and checks its state root; the execution is cached by hash for the
    /// commit.
    fn execute(&mut self, block: &Block) -> Result<(), String> {
        let hash = block.hash();
        if self.executed.contains_key(&hash) {
            return Ok(());
        }
        let executed = self.run_block(block)?;
        if self.executed.len() < 16 {
            self.executed.insert(hash, executed);
        }
        Ok(())
    }

    /// Executes a block of the current height; checks its state root.
    fn run_block(&self, block: &Block) -> Result<Executed, String> {
        let context = self.context(block.header());
        let mempool = &self.mempool;
        let executed = self.state.execute(context, block.entries(), &|bytes| mempool.verified(bytes));
        // A failed read of a state on disk, not the block, is then at fault.
        if let Some(failure) = self.state.failure() {
            return Err(failure);
        }
        let executed = executed.map_err(|(index, error)| format!("entry {index}: {error}"))?;
        if executed.state_root != block.header().state_root {
            return Err("state root does not match".into());
        }
        Ok(executed)
    }

    /// What the block of this height must follow ([`check::check_header`]).
    fn parent(&self) -> check::Parent<'_> {
        check::Parent {
            network: &self.genesis.network,
            height: self.tip.0,
            hash: self.tip.1,
            time_ms: self.tip.2,
            validators: &self.validators,
            entries_max: self.genesis.params.block_entries_max,
            version: self.state.protocol_version(),
        }
    }

    /// Everything a validator checks before it lets the core vote for a proposed block.
    fn check_block(&mut self, block: &Block, proposer: &PublicKey) -> Result<(), String> {
        let header = block.header();
        check::check_header(header, &self.parent())?;
        // The proposal's signer must be a validator too (a later round may re-propose another's block); and a
        // validator does not vote for a time ahead of its own clock (its judgement now, not a rule of the chain).
        if !self.validators.contains(&Address(*proposer)) {
            return Err("proposer".to_owned());
        }
        if header.time_ms > self.now_ms.saturating_add(self.genesis.params.clock_skew_ms_max) {
            return Err("time ahead of this clock".to_owned());
        }
        self.execute(block)
    }

    /// Builds this node's block for (height, round) from the mempool and hands it to the core; for a round it already
    /// proposed in (before a restart), the same block again, never another.
    fn propose(&mut self, height: Height, round: Round) {
        if height.0 != self.height {
            return;
        }
        if let Some((hash, _)) = self.proposed.get(&round.as_u32().unwrap_or(0))
            && let Some(block) = self.blocks.get(hash).cloned()
        {
            self.pending
                .push_back(Input::Propose(malachite_consensus::LocallyProposedValue::new(height, round, block)));
            return;
        }
        let time_ms = self.now_ms.max(self.tip.2.saturating_add(1));
        let context = BlockContext { height: height.0, time_ms, proposer: self.signer.address().0 };
        let max = usize::try_from(self.genesis.params.block_entries_max).unwrap_or(usize::MAX);
        let candidates = self.mempool.candidates(max.saturating_mul(2));
        let mempool = &self.mempool;
        let crate::state::Built { entries, executed, rejected } =
            self.state.build(context, candidates, &|bytes| mempool.verified(bytes));
        // Built on a failed read of the state: not proposed ([`Engine::drain`] stops the node).
        if self.state.failure().is_some() {
            return;
        }
        let rejected_ids: Vec<Id> = rejected
            .iter()
            .filter_map(|(bytes, _)| protocol::Envelope::from_bytes(bytes).ok().map(|envelope| envelope.id()))
            .collect();
        if !rejected.is_empty() {
            tracing::debug!(count = rejected.len(), first = %rejected[0].1, "dropping entries that no longer execute");
        }
        self.mempool.remove_all(&rejected_ids);
        let header = Header {
            version: self.state.protocol_version(),
            network: self.genesis.network.clone(),
            height: height.0,
            time_ms,
            parent: self.tip.1,
            proposer: context.proposer,
            entries_root: Hash::ZERO,
            entry_count: 0,
            state_root: executed.state_root,
            validators_hash: validators_hash(&self.validators.pairs()),
        };
        let block = Block::new(header, entries);
        self.proposed.entry(round.as_u32().unwrap_or(0)).or_insert((block.hash(), true));
        self.executed.insert(block.hash(), executed);
        self.remember(&block);
        self.pending.push_back(Input::Propose(malachite_consensus::LocallyProposedValue::new(height, round, block)));
    }

    fn sync_wal(&mut self) -> bool {
        if self.wal_dirty {
            if let Err(error) = self.store.wal_sync() {
                self.fail(format!("syncing the WAL: {error:#}"));
                return false;
            }
            self.wal_dirty = false;
        }
        !self.failed
    }

    /// Publishes a message (a certificate's signatures in key order, as the rule wants them).
    fn broadcast(&mut self, message: Message) {
        if self.sync_wal() {
            self.effects.push(Effect::Broadcast(check::message_in_key_order(message).to_bytes()));
        }
    }

    fn handle(&mut self, effect: CoreEffect<Kos>) -> Result<Resume<Kos>, std::convert::Infallible> {
        Ok(match effect {
            CoreEffect::ResetTimeouts(r) => r.resume_with(()),
            CoreEffect::CancelAllTimeouts(r) => {
                self.effects.push(Effect::CancelConsensusTimers);
                r.resume_with(())
            }
            CoreEffect::CancelTimeout(timeout, r) => {
                self.effects.push(Effect::CancelTimer(Timer::Consensus(timeout)));
                r.resume_with(())
            }
            CoreEffect::ScheduleTimeout(timeout, r) => {
                let duration = self.config.timeouts.duration(timeout);
                self.effects.push(Effect::StartTimer(Timer::Consensus(timeout), duration));
                r.resume_with(())
            }
            CoreEffect::GetValidatorSet(height, r) => {
                // Only the current height's set is known; future heights use it provisionally (their messages
                // are checked again when that height starts).
                let set = (height.0 >= self.height).then(|| self.validators.clone());
                r.resume_with(set)
            }
            CoreEffect::StartRound(height, round, proposer, role, r) => {
                tracing::debug!(height = height.0, round = %round, %proposer, ?role, "round started");
                self.round = round;
                self.sync_wal();
                r.resume_with(())
            }
            CoreEffect::PublishConsensusMsg(message, r) => {
                self.broadcast(Message::from_consensus(message));
                r.resume_with(())
            }
            CoreEffect::PublishLivenessMsg(message, r) => {
                self.broadcast(Message::from_liveness(message));
                r.resume_with(())
            }
            CoreEffect::RepublishVote(vote, r) => {
                self.broadcast(Message::from_liveness(LivenessMsg::Vote(vote)));
                r.resume_with(())
            }
            CoreEffect::RepublishRoundCertificate(certificate, r) => {
                self.broadcast(Message::Round(certificate));
                r.resume_with(())
            }
            CoreEffect::GetValue(height, round, _timeout, r) => {
                if self.mempool.is_empty() && self.config.empty_block_ms > 0 {
                    self.awaiting_value = Some((height, round));
                    self.effects.push(Effect::StartTimer(Timer::Build, self.config.empty_block_ms));
                } else {
                    self.propose(height, round);
                }
                r.resume_with(())
            }
            CoreEffect::RestreamProposal(_, _, _, _, _, r) => r.resume_with(()),
            CoreEffect::SyncValue(response, r) => {
                self.on_sync_value(response);
                r.resume_with(())
            }
            CoreEffect::Decide(certificate, _extensions, r) => {
                self.sync_wal();
                self.decided = Some(certificate);
                r.resume_with(())
            }
            CoreEffect::SignVote(vote, r) => r.resume_with(self.signer.sign_vote(vote)),
            CoreEffect::SignProposal(proposal, r) => r.resume_with(self.signer.sign_proposal(proposal)),
            CoreEffect::VerifySignature(message, public_key, r) => {
                let digest = match &message.message {
                    malachite_consensus::ConsensusMsg::Vote(vote) => vote_digest(&self.genesis.network, vote),
                    malachite_consensus::ConsensusMsg::Proposal(p) => proposal_digest(&self.genesis.network, p),
                };
                let signer = Address(PublicKey(public_key.to_bytes()));
                r.resume_with(self.verified_signature(digest, &signer, &message.signature))
            }
            // The core's own checks go through the one rule too (its thresholds are the rule's: Malachite's defaults).
            CoreEffect::VerifyCommitCertificate(certificate, validators, _thresholds, r) => r.resume_with(
                self.check_certificate(Certificate::Commit(&certificate), Some(&validators)).map_err(core_error),
            ),
            CoreEffect::VerifyPolkaCertificate(certificate, validators, _thresholds, r) => r.resume_with(
                self.check_certificate(Certificate::Polka(&certificate), Some(&validators)).map_err(core_error),
            ),
            CoreEffect::VerifyRoundCertificate(certificate, validators, _thresholds, r) => r.resume_with(
                self.check_certificate(Certificate::Round(&certificate), Some(&validators)).map_err(core_error),
            ),
            CoreEffect::WalAppend(entry, r) => {
                self.wal_append(&entry);
                r.resume_with(())
            }
            CoreEffect::ExtendVote(_, _, _, r) => r.resume_with(None),
            CoreEffect::VerifyVoteExtension(_, _, _, _, _, r) => {
                r.resume_with(Err(malachite_consensus::VoteExtensionError::InvalidVoteExtension))
            }
        })
    }

    /// Appends a consensus step to the WAL (not while replaying it); synced before the next message goes out.
    fn wal_append(&mut self, entry: &WalEntry<Kos>) {
        if self.replaying {
            return;
        }
        match self.store.wal_append(self.height, wire::wal_to_bytes(entry)) {
            Ok(()) => self.wal_dirty = true,
            Err(error) => self.fail(format!("appending to the WAL: {error:#}")),
        }
    }

    fn on_sync_value(&mut self, response: ValueResponse<Kos>) {
        let certificate = &response.certificate;
        if certificate.height.0 != self.height {
            return;
        }
        let block = match Block::from_bytes(&response.value_bytes) {
            Ok(block) if check::certificate_is_for(certificate, self.height, block.hash()) => block,
            _ => {
                self.effects.push(Effect::Misbehaved {
                    peer: response.peer,
                    reason: "synced block does not match its certificate".into(),
                });
                return;
            }
        };
        let validity = Validity::from_bool(self.execute(&block).is_ok());
        self.remember(&block);
        self.pending.push_back(Input::ProposedValue(
            ProposedValue {
                height: certificate.height,
                round: certificate.round,
                valid_round: Round::Nil,
                proposer: response.proposer,
                value: block,
                validity,
            },
            ValueOrigin::Sync(response.peer),
        ));
    }
}
