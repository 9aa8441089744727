//! A seeded simulation of a network of validators running the real consensus engine, state machine and mempool
//! on memory stores, under virtual time and faults: messages dropped, delayed, reordered and duplicated; network
//! partitions; crashes (losing unsynced WAL records) and restarts; one Byzantine validator that equivocates, sends
//! bad signatures or withholds its votes. Clients submit transfers throughout.
//!
//! After the run it checks:
//! - **agreement**: no two nodes committed different blocks at one height;
//! - **validity**: every committed block carries a certificate of more than 2/3 of the voting power, and
//!   replaying all blocks from genesis reproduces every state root;
//! - **durability**: a restarted node still has every block it had committed, and every entry any node reported
//!   committed is in every node's ledger at the end;
//! - **liveness**: after the network heals and every node is up, the chain grows and all submitted entries that
//!   have not expired get committed.
//!
//! Everything follows from the seed: a failing seed replays exactly (`Sim::run(seed)`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use malachite_consensus::PeerId;
use malachite_types::{NilOrVal, SignedMessage, SigningProvider};
use protocol::message::{Body, Transfer};
use protocol::types::{Text, TokenId};
use protocol::{Draft, Id, Keypair, NetworkId};

use crate::consensus::context::Signer;
use crate::consensus::engine::{Config, Effect, Engine, Timeouts, Timer, Verdict};
use crate::consensus::wire::Message;
use crate::genesis::Genesis;
use crate::store::{MemoryStore, Store};

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the Byzantine validator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Byzantine {
    /// Sends a vote for the value to some peers and a conflicting vote to the others.
    Equivocate,
    /// Corrupts the signature of some of its messages.
    BadSignatures,
    /// Never sends its votes.
    Withhold,
}

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub validators: usize,
    pub byzantine: Option<Byzantine>,
    /// Virtual milliseconds with faults; then the network heals and every node restarts.
    pub faulty_ms: u64,
    /// Virtual milliseconds after healing in which the chain must progress and entries commit.
    pub heal_ms: u64,
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    pub delay_ms_max: u64,
    pub crashes: usize,
    pub partitions: usize,
    pub transfers: usize,
}

impl Scenario {
    /// A scenario drawn from the seed: 4 validators, one of them Byzantine in two runs out of three.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        let byzantine = match rng.below(3) {
            0 => None,
            1 => Some([Byzantine::Equivocate, Byzantine::BadSignatures, Byzantine::Withhold][rng.below(3) as usize]),
            _ => Some(Byzantine::Equivocate),
        };
        Scenario {
            validators: 4,
            byzantine,
            faulty_ms: 6_000 + rng.below(6_000),
            heal_ms: 20_000,
            drop_percent: rng.below(25),
            duplicate_percent: rng.below(10),
            delay_ms_max: 5 + rng.below(120),
            crashes: rng.below(3) as usize,
            partitions: rng.below(3) as usize,
            transfers: 20 + rng.below(40) as usize,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub scenario: Scenario,
    pub heights: Vec<u64>,
    pub committed_entries: usize,
    pub messages: u64,
    /// How many times an honest node reported the Byzantine validator as misbehaving.
    pub byzantine_reported: u64,
    /// How many times an honest node reported the Byzantine validator's two blocks for one round.
    pub equivocations_reported: u64,
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Debug)]
enum Event {
    Deliver { to: usize, from: usize, bytes: Arc<Vec<u8>> },
    Timer { node: usize, timer: Timer, id: u64 },
    Crash { node: usize },
    Restart { node: usize },
    Partition { groups: Vec<usize> },
    Heal,
    Submit { node: usize, entry: usize },
    Sync { node: usize },
}

struct Node {
    seed: [u8; 32],
    store: MemoryStore,
    engine: Option<Engine<MemoryStore>>,
    timers: HashMap<Timer, u64>,
    peer: PeerId,
    committed_before_crash: u64,
}

/// The simulation; see the module docs.
pub struct Sim {
    scenario: Scenario,
    rng: Rng,
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: HashMap<usize, Event>,
    event_ids: usize,
    nodes: Vec<Node>,
    genesis: Arc<Genesis>,
    group: Vec<usize>,
    healed: bool,
    entries: Vec<(Id, Vec<u8>, u64)>,
    acknowledged: BTreeSet<Id>,
    decided: BTreeMap<u64, crate::hash::Hash>,
    timer_ids: u64,
    messages: u64,
    byzantine_reported: u64,
    equivocations_reported: u64,
    violations: Vec<String>,
}

const GENESIS_MS: u64 = 1_767_225_600_000;

fn peer_id(index: usize) -> PeerId {
    // An identity multihash (code 0x00) of the node's index.
    let bytes = [0x00, 0x02, 0x6b, index as u8];
    PeerId::from_bytes(&bytes).expect("an identity multihash of 2 bytes is a valid peer id")
}

impl Sim {
    /// Runs one seed's scenario to the end and checks it.
    pub fn run(seed: u64) -> Report {
        Sim::run_scenario(seed, Scenario::from_seed(seed))
    }

    pub fn run_scenario(seed: u64, scenario: Scenario) -> Report {
        let mut sim = Sim::new(seed, scenario);
        sim.execute();
        sim.check();
        Report {
            seed,
            heights: sim.nodes.iter().map(|node| node.store.tip().unwrap_or(0)).collect(),
            committed_entries: sim.acknowledged.len(),
            messages: sim.messages,
            byzantine_reported: sim.byzantine_reported,
            equivocations_reported: sim.equivocations_reported,
            violations: sim.violations,
            scenario: sim.scenario,
        }
    }

    fn new(seed: u64, scenario: Scenario) -> Sim {
        let mut rng = Rng::new(seed);
        let seeds: Vec<[u8; 32]> = (0..scenario.validators)
            .map(|index| *blake3::hash(format!("sim validator {index}").as_bytes()).as_bytes())
            .collect();
        let keys: Vec<_> = seeds.iter().map(|seed| Keypair::from_seed(seed).public()).collect();
        let clients: Vec<Keypair> =
            (0..4u8).map(|index| Keypair::from_seed(blake3::hash(&[b'c', index]).as_bytes())).collect();
        let funded: Vec<_> = clients.iter().map(|client| client.public()).collect();
        let text = Genesis::devnet_text("kos-sim", GENESIS_MS, &keys, &funded, 1_000_000);
        let genesis = Arc::new(Genesis::parse(&text).unwrap_or_else(|error| unreachable!("sim genesis: {error}")));
        let nodes = seeds
            .iter()
            .enumerate()
            .map(|(index, seed)| Node {
                seed: *seed,
                store: MemoryStore::new(),
                engine: None,
                timers: HashMap::new(),
                peer: peer_id(index),
                committed_before_crash: 0,
            })
            .collect();
        let network = NetworkId::new("kos-sim").unwrap_or_else(|error| unreachable!("{error}"));
        let entries = (0..scenario.transfers)
            .map(|index| {
                let from = &clients[index % clients.len()];
                let to = funded[(index + 1) % funded.len()];
                let created_ms = GENESIS_MS + rng.below(scenario.faulty_ms + scenario.heal_ms / 2);
                let envelope = Draft {
                    network: network.clone(),
                    nonce: index as u64,
                    created_ms,
                    expires_ms: created_ms + 600_000,
                    body: Body::Transfer(Transfer {
                        to,
                        token: TokenId::new("credit").unwrap_or_else(|error| unreachable!("{error}")),
                        amount: 1 + rng.below(1_000),
                        memo: Text::new("sim").unwrap_or_else(|error| unreachable!("{error}")),
                    }),
                }
                .sign(from);
                (envelope.id(), envelope.to_bytes(), created_ms)
            })
            .collect();
        let mut sim = Sim {
            group: vec![0; scenario.validators],
            scenario,
            rng,
            now: GENESIS_MS,
            sequence: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            event_ids: 0,
            nodes,
            genesis,
            healed: false,
            entries,
            acknowledged: BTreeSet::new(),
            decided: BTreeMap::new(),
            timer_ids: 0,
            messages: 0,
            byzantine_reported: 0,
            equivocations_reported: 0,
            violations: Vec::new(),
        };
        sim.plan();
        sim
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.event_ids += 1;
        self.events.insert(self.event_ids, event);
        self.queue.push(Reverse((at, self.sequence, self.event_ids)));
    }

    fn byzantine_index(&self) -> Option<usize> {
        self.scenario.byzantine.map(|_| self.scenario.validators - 1)
    }

    fn plan(&mut self) {
        let start = self.now;
        let faulty_end = start + self.scenario.faulty_ms;
        for node in 0..self.nodes.len() {
            self.schedule(start + node as u64, Event::Restart { node });
        }
        let honest = self.scenario.validators - usize::from(self.scenario.byzantine.is_some());
        for _ in 0..self.scenario.crashes {
            let node = self.rng.below(honest as u64) as usize;
            let at = start + 500 + self.rng.below(self.scenario.faulty_ms);
            self.schedule(at.min(faulty_end), Event::Crash { node });
            let back = at + 200 + self.rng.below(3_000);
            self.schedule(back.min(faulty_end), Event::Restart { node });
        }
        for _ in 0..self.scenario.partitions {
            let at = start + self.rng.below(self.scenario.faulty_ms);
            let groups = (0..self.scenario.validators).map(|_| self.rng.below(2) as usize).collect();
            self.schedule(at, Event::Partition { groups });
            let until = at + 300 + self.rng.below(3_000);
            self.schedule(until.min(faulty_end), Event::Partition { groups: vec![0; self.scenario.validators] });
        }
        self.schedule(faulty_end, Event::Heal);
        for entry in 0..self.entries.len() {
            let at = self.entries[entry].2;
            let node = self.rng.below(self.scenario.validators as u64) as usize;
            self.schedule(at, Event::Submit { node, entry });
        }
    }

    fn execute(&mut self) {
        let end = GENESIS_MS + self.scenario.faulty_ms + self.scenario.heal_ms;
        let mut steps: u64 = 0;
        while let Some(Reverse((at, _, id))) = self.queue.pop() {
            if at > end {
                break;
            }
            steps += 1;
            if steps > 5_000_000 {
                self.violations.push("the simulation did not settle (event storm)".into());
                break;
            }
            self.now = at;
            let Some(event) = self.events.remove(&id) else { continue };
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        // Log lines (of the engine and of Malachite's core) name the node and the virtual time.
        let node = match &event {
            Event::Deliver { to: node, .. }
            | Event::Timer { node, .. }
            | Event::Crash { node }
            | Event::Restart { node }
            | Event::Sync { node } => Some(*node),
            // A submission reaches every reachable node: each gets its own span below.
            Event::Submit { .. } | Event::Partition { .. } | Event::Heal => None,
        };
        let _span = tracing::debug_span!("sim", t = self.now - GENESIS_MS, node).entered();
        match event {
            Event::Deliver { to, from, bytes } => {
                let now = self.now;
                let peer = self.nodes[from].peer;
                if let Some(engine) = self.nodes[to].engine.as_mut() {
                    let (verdict, effects) = engine.on_message(peer, &bytes, now);
                    if let Verdict::Reject(reason) = verdict {
                        self.reported(to, peer, &reason);
                    }
                    self.apply(to, effects);
                }
            }
            Event::Timer { node, timer, id } => {
                if self.nodes[node].timers.get(&timer) == Some(&id) {
                    self.nodes[node].timers.remove(&timer);
                    let now = self.now;
                    if let Some(engine) = self.nodes[node].engine.as_mut() {
                        let effects = engine.on_timer(timer, now);
                        self.apply(node, effects);
                    }
                }
            }
            Event::Crash { node } => {
                let state = &mut self.nodes[node];
                if let Some(engine) = state.engine.take() {
                    state.committed_before_crash = engine.tip().0;
                }
                state.store.crash();
                state.timers.clear();
            }
            Event::Restart { node } => self.restart(node),
            Event::Partition { groups } => self.group = groups,
            Event::Heal => {
                self.debug_nodes("heal");
                self.healed = true;
                self.group = vec![0; self.scenario.validators];
                for node in 0..self.nodes.len() {
                    self.schedule(self.now, Event::Restart { node });
                }
            }
            Event::Submit { node, entry } => self.submit(node, entry),
            Event::Sync { node } => self.sync(node),
        }
    }

    /// Restarts a crashed node from its store (a node that runs is left alone).
    fn restart(&mut self, node: usize) {
        if self.nodes[node].engine.is_some() {
            return;
        }
        let config = Config {
            timeouts: Timeouts {
                propose_ms: 400,
                prevote_ms: 150,
                precommit_ms: 150,
                rebroadcast_ms: 300,
                step_ms: 100,
            },
            empty_block_ms: 150,
            ..Config::default()
        };
        let state = &self.nodes[node];
        match Engine::new(self.genesis.clone(), &state.seed, state.store.clone(), config, self.now) {
            Ok(mut engine) => {
                if engine.tip().0 < state.committed_before_crash {
                    self.violations.push(format!(
                        "node {node} lost blocks in a crash: had {}, restarted at {}",
                        state.committed_before_crash,
                        engine.tip().0
                    ));
                }
                let effects = engine.start(self.now);
                self.nodes[node].engine = Some(engine);
                self.apply(node, effects);
                self.schedule(self.now + 500, Event::Sync { node });
            }
            Err(error) => self.violations.push(format!("node {node} could not restart: {error}")),
        }
    }

    /// A client submits an entry to a node, which passes it to every node it reaches.
    fn submit(&mut self, node: usize, entry: usize) {
        let now = self.now;
        let (id, _, created_ms) = self.entries[entry];
        if self.acknowledged.contains(&id) {
            return;
        }
        // Like a wallet, the client sends again every 2 s until the entry is committed.
        let again = self.rng.below(self.scenario.validators as u64) as usize;
        if now + 2_000 < created_ms + 600_000 {
            self.schedule(now + 2_000, Event::Submit { node: again, entry });
        }
        let bytes = self.entries[entry].1.clone();
        // Clients send to one node; nodes gossip entries to each other (here: to all reachable).
        for target in 0..self.nodes.len() {
            if target != node && !self.reachable(node, target) {
                continue;
            }
            let _span = tracing::debug_span!("sim", t = now - GENESIS_MS, node = target).entered();
            if let Some(engine) = self.nodes[target].engine.as_mut() {
                let (result, effects) = engine.on_entry(bytes.clone(), now);
                if let Err(error) = result
                    && std::env::var_os("KOS_SIM_DEBUG").is_some()
                {
                    eprintln!("t={} node {target}: entry {} refused: {error}", now - GENESIS_MS, id.to_hex());
                }
                self.apply(target, effects);
            }
        }
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        self.group[from] == self.group[to]
    }

    /// Fetches certified blocks from a reachable peer that is ahead.
    fn sync(&mut self, node: usize) {
        let Some(height) = self.nodes[node].engine.as_ref().map(|engine| engine.height()) else { return };
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|peer| *peer != node && self.reachable(node, *peer) && Some(*peer) != self.byzantine_index())
            .collect();
        for peer in peers {
            let blocks = match self.nodes[peer].engine.as_ref() {
                Some(engine) => engine.blocks_from(height, 20, 4 * 1024 * 1024),
                None => continue,
            };
            if blocks.is_empty() {
                continue;
            }
            let from = self.nodes[peer].peer;
            let now = self.now;
            for stored in blocks {
                if let Some(engine) = self.nodes[node].engine.as_mut() {
                    let effects = engine.on_synced_block(from, &stored, now);
                    if std::env::var_os("KOS_SIM_DEBUG").is_some() {
                        eprintln!(
                            "t={} node {node}: synced a block from {peer} at height {height}: {} effects, now at {}",
                            now - GENESIS_MS,
                            effects.len(),
                            engine.height()
                        );
                    }
                    self.apply(node, effects);
                }
            }
            break;
        }
    }

    fn apply(&mut self, node: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Broadcast(bytes) => self.broadcast(node, bytes),
                Effect::StartTimer(timer, duration) => {
                    self.timer_ids += 1;
                    let id = self.timer_ids;
                    self.nodes[node].timers.insert(timer, id);
                    self.schedule(self.now + duration, Event::Timer { node, timer, id });
                }
                Effect::CancelTimer(timer) => {
                    self.nodes[node].timers.remove(&timer);
                }
                Effect::CancelConsensusTimers => {
                    self.nodes[node].timers.retain(|timer, _| !matches!(timer, Timer::Consensus(_)));
                }
                Effect::Committed(commit) => {
                    match self.decided.get(&commit.height) {
                        Some(hash) if *hash != commit.block.hash() => self.violations.push(format!(
                            "agreement: node {node} committed {} at height {}, another node {}",
                            commit.block.hash(),
                            commit.height,
                            hash
                        )),
                        _ => {
                            self.decided.insert(commit.height, commit.block.hash());
                        }
                    }
                    self.acknowledged.extend(commit.entry_ids.iter().copied());
                }
                Effect::Behind { .. } => {
                    let at = self.now + 1 + self.rng.below(50);
                    self.schedule(at, Event::Sync { node });
                }
                Effect::Misbehaved { peer, reason } => self.reported(node, peer, &reason),
                Effect::Equivocated { proposer, height, round, .. } => {
                    // Only the Byzantine validator signs two blocks for one round.
                    let signer =
                        self.nodes.iter().position(|other| Keypair::from_seed(&other.seed).public() == proposer);
                    if signer.is_some() && signer == self.byzantine_index() {
                        self.byzantine_reported += 1;
                        self.equivocations_reported += 1;
                    } else if Some(node) != self.byzantine_index() {
                        self.violations.push(format!(
                            "node {node} reported validator {signer:?} as equivocating at height {height}, round {round}"
                        ));
                    }
                }
                Effect::Fatal(reason) => self.violations.push(format!("node {node} stopped: {reason}")),
            }
        }
    }

    /// Node `node` penalised `peer` (the sender of a message; in the simulation, its signer). An honest validator
    /// must never be reported: a real node would score it down and, past the graylist, stop hearing it.
    fn reported(&mut self, node: usize, peer: PeerId, reason: &str) {
        if std::env::var_os("KOS_SIM_DEBUG").is_some() {
            eprintln!("t={} node {node}: peer misbehaved: {reason}", self.now - GENESIS_MS);
        }
        let reported = self.nodes.iter().position(|other| other.peer == peer);
        if reported.is_some() && reported == self.byzantine_index() {
            self.byzantine_reported += 1;
        } else if Some(node) != self.byzantine_index() {
            self.violations.push(format!("node {node} reported peer {reported:?} as misbehaving: {reason}"));
        }
    }

    fn broadcast(&mut self, from: usize, bytes: Vec<u8>) {
        let byzantine = self.byzantine_index() == Some(from);
        let targets: Vec<usize> = (0..self.nodes.len()).filter(|to| *to != from).collect();
        for (position, to) in targets.into_iter().enumerate() {
            let messages = match self.scenario.byzantine {
                Some(mode) if byzantine => self.misbehave(mode, from, &bytes, position),
                _ => vec![bytes.clone()],
            };
            for message in messages {
                self.send(from, to, message);
            }
        }
    }

    /// The Byzantine validator's versions of a message for the `position`-th peer (none: withheld).
    fn misbehave(&mut self, mode: Byzantine, from: usize, bytes: &[u8], position: usize) -> Vec<Vec<u8>> {
        let Ok(message) = Message::from_bytes(bytes) else { return vec![bytes.to_vec()] };
        let signer = Signer::new(self.genesis.network.clone(), &self.nodes[from].seed);
        let one = |message: Option<Vec<u8>>| message.into_iter().collect();
        match (mode, message) {
            (Byzantine::Withhold, Message::Vote(_)) => Vec::new(),
            (Byzantine::Equivocate, Message::Vote(vote)) if position % 2 == 1 => {
                let mut other = vote.message.clone();
                other.value = match other.value {
                    NilOrVal::Nil => NilOrVal::Val(crate::hash::Hash([0xee; 32])),
                    NilOrVal::Val(_) => NilOrVal::Nil,
                };
                one(Some(Message::Vote(signer.sign_vote(other)).to_bytes()))
            }
            // A second block for the same round (a later time, the same entries): every other peer gets it as well
            // as the first, in an order the network's delays decide.
            (Byzantine::Equivocate, Message::Proposal(proposal)) if position % 2 == 1 => {
                let mut other = proposal.message.clone();
                let mut header = other.block.header().clone();
                header.time_ms += 1;
                other.block = crate::Block::new(header, other.block.entries().map(<[u8]>::to_vec).collect());
                vec![bytes.to_vec(), Message::Proposal(signer.sign_proposal(other)).to_bytes()]
            }
            (Byzantine::BadSignatures, Message::Vote(vote)) if self.rng.chance(50) => {
                let mut signature = vote.signature.0.to_bytes();
                signature[5] ^= 0x40;
                let bad = crate::consensus::context::Sig(ed25519_dalek::Signature::from_bytes(&signature));
                one(Some(Message::Vote(SignedMessage::new(vote.message, bad)).to_bytes()))
            }
            (Byzantine::BadSignatures, Message::Proposal(proposal)) if self.rng.chance(50) => {
                let mut signature = proposal.signature.0.to_bytes();
                signature[9] ^= 0x01;
                let bad = crate::consensus::context::Sig(ed25519_dalek::Signature::from_bytes(&signature));
                one(Some(Message::Proposal(SignedMessage::new(proposal.message, bad)).to_bytes()))
            }
            (_, message) => vec![message.to_bytes()],
        }
    }

    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.messages += 1;
        if !self.reachable(from, to) {
            return;
        }
        let faulty = !self.healed;
        if faulty && self.rng.chance(self.scenario.drop_percent) {
            return;
        }
        let copies = if faulty && self.rng.chance(self.scenario.duplicate_percent) { 2 } else { 1 };
        let bytes = Arc::new(bytes);
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.scenario.delay_ms_max.max(1));
            self.schedule(self.now + delay, Event::Deliver { to, from, bytes: bytes.clone() });
        }
    }

    fn debug_nodes(&self, label: &str) {
        if std::env::var_os("KOS_SIM_DEBUG").is_some() {
            for (index, node) in self.nodes.iter().enumerate() {
                match &node.engine {
                    Some(engine) => eprintln!(
                        "{label} t={} node {index}: height {} round {} mempool {} timers {:?}",
                        self.now - GENESIS_MS,
                        engine.height(),
                        engine.round(),
                        engine.mempool().len(),
                        node.timers.keys().collect::<Vec<_>>()
                    ),
                    None => eprintln!("{label} node {index}: down"),
                }
            }
        }
    }

    fn check(&mut self) {
        self.debug_nodes("end");
        let honest: Vec<usize> = (0..self.nodes.len()).filter(|node| Some(*node) != self.byzantine_index()).collect();
        // Agreement over what is stored, height by height.
        let tips: Vec<u64> = self.nodes.iter().map(|node| node.store.tip().unwrap_or(0)).collect();
        let top = tips.iter().copied().max().unwrap_or(0);
        for height in 1..=top {
            let hashes: BTreeSet<Vec<u8>> = self
                .nodes
                .iter()
                .filter_map(|node| node.store.block(height).ok().flatten())
                .map(|stored| stored.block)
                .collect();
            if hashes.len() > 1 {
                self.violations.push(format!("agreement: {} different blocks stored at height {height}", hashes.len()));
            }
        }
        // Validity: replay the longest chain from genesis; check every certificate.
        if let Some(longest) = self.nodes.iter().max_by_key(|node| node.store.tip().unwrap_or(0))
            && let Err(violation) = crate::verify::verify_store(&self.genesis, &longest.store)
        {
            self.violations.push(format!("validity: {violation}"));
        }
        // Liveness: after healing, every honest node is past the height reached at the heal and at the same tip,
        // give or take the last block.
        let honest_tips: Vec<u64> = honest.iter().map(|node| tips[*node]).collect();
        let lowest = honest_tips.iter().copied().min().unwrap_or(0);
        if lowest + 2 < top {
            self.violations.push(format!("liveness: honest tips {honest_tips:?} lag the top {top}"));
        }
        if top < 3 {
            self.violations.push(format!("liveness: only {top} blocks in the whole run"));
        }
        // Durability and liveness of entries: every submitted, unexpired entry is committed on every honest node.
        for node in &honest {
            let store = &self.nodes[*node].store;
            for (id, _, _) in &self.entries {
                let located = store.locate(id).ok().flatten();
                if located.is_none() {
                    let acknowledged = self.acknowledged.contains(id);
                    self.violations.push(format!(
                        "{}: entry {} is not in node {node}'s ledger",
                        if acknowledged { "durability" } else { "liveness" },
                        id.to_hex()
                    ));
                    break;
                }
            }
        }
    }
}
