//! Gossip admission: what a node does with a gossiped message before it forwards or delivers it. A sans-IO core
//! (like `market::pools`): the swarm passes in the message, its topic, its validation result and the time; the
//! core answers a [`Verdict`] that the swarm only maps to gossipsub (accept, ignore, reject) and to its counters.
//!
//! The checks, in order (PROTOCOL.md §9, *Gossip*, gives them to other implementations):
//! 1. **The sender's budget** ([`Admission::charge`], before the signature is checked): bytes per peer and
//!    second; over it, the message is ignored and the peer's score suffers. Requests (block sync, recent offers)
//!    are charged the same way.
//! 2. **Validity** (the protocol's `validate`): a message that is invalid is rejected, except one that expired or
//!    comes from a little in the future (honest peers forward those when clocks differ), which is ignored.
//! 3. **Its topic**: each kind of message has its topic; anything else is rejected.
//! 4. **A reading must be physically possible**: impossible flows are rejected, a reading whose interval has not
//!    ended is ignored.
//! 5. **Replay**: the same message again is ignored; another message under an author's nonce already seen is
//!    rejected.
//! 6. **The author's fuel**: carrying a message costs its author bandwidth fuel (one unit per started KiB, at its
//!    kind's priority), compute fuel (one unit per signature checked) and, for offers kept in books, memory fuel.
//!    An author out of fuel has its message ignored (no blame on the peer that forwarded it).

use libp2p::PeerId;
use protocol::validate::{Error as Invalid, Validated};
use protocol::{Body, PublicKey};

use super::Topic;
use super::budget::{Budgets, ByStanding, Verdict as BudgetVerdict};
use super::replay::{Guard, Verdict as ReplayVerdict};
use energy::fuel::{Class, Fuel, Priority, Standing, Verdict as FuelVerdict};

/// Authors the replay guard remembers, and nonces per author.
const REPLAY_AUTHORS_MAX: usize = 100_000;
const REPLAY_WINDOW: usize = 64;

/// What to do with a gossiped message.
#[derive(Debug)]
pub enum Verdict {
    /// Forward it and deliver it to the node.
    Accept(Box<Validated>),
    /// Neither forward nor deliver it; the sender is not to blame.
    Ignore(Ignored),
    /// Neither forward nor deliver it, and count it against the sender (gossipsub's score).
    Reject(Rejected),
}

/// Why a message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Expired, or from the future by more than the clock skew allowed.
    Stale,
    /// A reading whose interval has not ended yet.
    EarlyReading,
    /// Seen already (or a nonce below the author's window).
    Duplicate,
    /// Its author has spent its fuel.
    OutOfFuel,
}

/// Why a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Invalid (PROTOCOL.md §6).
    Invalid,
    /// A message of a kind that does not belong on its topic.
    WrongTopic,
    /// A reading no meter could have taken.
    ImpossibleReading,
    /// Another message under a nonce of its author already seen.
    Replay,
}

/// Admission's limits, from the network's configuration.
pub struct Settings {
    pub peer_limits: super::budget::Limits,
    pub peers_max: usize,
    pub fuel: energy::fuel::Config,
    /// Peers and authors with more room: the genesis validators.
    pub trusted_peers: Vec<PeerId>,
    pub trusted_authors: Vec<PublicKey>,
}

/// The admission state of one node: its peers' budgets, its authors' fuel and the nonces it has seen.
pub struct Admission {
    budgets: Budgets<PeerId, ByStanding<PeerId>>,
    fuel: Fuel<PublicKey>,
    replay: Guard,
}

impl Admission {
    pub fn new(settings: Settings, now_ms: u64) -> Admission {
        let standings = settings.trusted_peers.iter().map(|peer| (*peer, Standing::Trusted)).collect();
        let mut fuel = Fuel::new(settings.fuel);
        for author in &settings.trusted_authors {
            fuel.set_standing(author, Standing::Trusted, now_ms);
        }
        Admission {
            budgets: Budgets::new(ByStanding { base: settings.peer_limits, standings }, settings.peers_max),
            fuel,
            replay: Guard::new(REPLAY_AUTHORS_MAX, REPLAY_WINDOW),
        }
    }

    /// Charges `bytes` to `peer`'s budget: `false` when it is over (step 1).
    pub fn charge(&mut self, peer: &PeerId, bytes: u64, now_ms: u64) -> bool {
        self.budgets.charge(peer, bytes, now_ms) == BudgetVerdict::Within
    }

    /// Steps 2 to 6 for one message (or one entry of a bundle) of `bytes` bytes received on `topic`.
    pub fn check(
        &mut self,
        topic: Topic,
        bytes: usize,
        validation: Result<Validated, Invalid>,
        now_ms: u64,
    ) -> Verdict {
        self.admit(topic, bytes, validation, now_ms, false)
    }

    /// The same steps for an offer a peer kept and sent when asked (a pool's recent offers, PROTOCOL.md §9), with
    /// one difference: a nonce below its author's window is no reason to drop it. Resting offers are older than
    /// what their authors published since, and a fetched book is for exactly them; expiry still bounds them, the
    /// same id twice is still a duplicate and another message with a nonce in the window still a replay.
    pub fn check_fetched(
        &mut self,
        topic: Topic,
        bytes: usize,
        validation: Result<Validated, Invalid>,
        now_ms: u64,
    ) -> Verdict {
        self.admit(topic, bytes, validation, now_ms, true)
    }

    fn admit(
        &mut self,
        topic: Topic,
        bytes: usize,
        validation: Result<Validated, Invalid>,
        now_ms: u64,
        stale_ok: bool,
    ) -> Verdict {
        let validated = match validation {
            Ok(validated) => validated,
            Err(Invalid::Expired { .. } | Invalid::FromFuture { .. }) => return Verdict::Ignore(Ignored::Stale),
            Err(_) => return Verdict::Reject(Rejected::Invalid),
        };
        let envelope = &validated.envelope;
        if !topic.allows(envelope) {
            return Verdict::Reject(Rejected::WrongTopic);
        }
        if let Body::Reading(reading) = &envelope.body
            && let Err(invalid) =
                energy::reading::check(reading, None, &energy::reading::Capacity::CEILING, now_ms / 1000)
        {
            return if invalid == energy::reading::Invalid::InTheFuture {
                Verdict::Ignore(Ignored::EarlyReading)
            } else {
                Verdict::Reject(Rejected::ImpossibleReading)
            };
        }
        match self.replay.check(&envelope.author, envelope.nonce, &validated.id) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Stale if stale_ok => {}
            ReplayVerdict::Duplicate | ReplayVerdict::Stale => return Verdict::Ignore(Ignored::Duplicate),
            ReplayVerdict::Replay => return Verdict::Reject(Rejected::Replay),
        }
        if !self.pay_fuel(envelope, bytes, now_ms) {
            return Verdict::Ignore(Ignored::OutOfFuel);
        }
        Verdict::Accept(Box::new(validated))
    }

    /// Step 6: `false` when the author is out of bandwidth, compute or (for an offer kept in books) memory fuel.
    fn pay_fuel(&mut self, envelope: &protocol::Envelope, bytes: usize, now_ms: u64) -> bool {
        let author = &envelope.author;
        let units = u64::try_from(bytes.div_ceil(1024)).unwrap_or(u64::MAX).max(1);
        let priority = priority_of(&envelope.body);
        if let FuelVerdict::Throttled { .. } = self.fuel.spend(author, Class::Bandwidth, priority, units, now_ms) {
            return false;
        }
        let signatures = 1 + nested_signatures(&envelope.body);
        if let FuelVerdict::Throttled { .. } = self.fuel.spend(author, Class::Compute, priority, signatures, now_ms) {
            return false;
        }
        let held = matches!(envelope.body, Body::Offer(_) | Body::BarterOffer(_));
        !held || matches!(self.fuel.spend(author, Class::Memory, Priority::Normal, 1, now_ms), FuelVerdict::Allowed)
    }

    /// The bytes a message of `len` bytes on `topic` is charged to its sender. A consensus message is charged as one
    /// message of at most an envelope's size: proposals are large by nature, and an invalid one costs its sender
    /// far more through the ledger's verdict.
    pub fn charged_bytes(topic: Option<Topic>, len: usize) -> u64 {
        let charged = match topic {
            Some(Topic::Consensus) => len.min(protocol::limits::ENVELOPE_BYTES_MAX),
            _ => len,
        };
        u64::try_from(charged).unwrap_or(u64::MAX)
    }

    /// Bytes a peer sent beyond its budget, in total.
    pub fn over_total(&self, peer: &PeerId) -> u64 {
        self.budgets.over_total(peer)
    }

    /// Forgets a peer that disconnected.
    pub fn forget_peer(&mut self, peer: &PeerId) {
        self.budgets.remove(peer);
    }

    /// Authors' fuel, for the credits the ledger earns them, the caps overrides put on them, and their status.
    pub fn fuel(&mut self) -> &mut Fuel<PublicKey> {
        &mut self.fuel
    }
}

/// Signatures inside a message besides its own: the offers a settlement or barter cycle carries, the reading a
/// report or delivery attaches, a device's attestation of a reading (an OCMF record's P-256 check counts four).
fn nested_signatures(body: &Body) -> u64 {
    let inner = |envelope: &protocol::Envelope| 1 + nested_signatures(&envelope.body);
    match body {
        Body::Settlement(_) => 2,
        Body::BarterCycle(cycle) => cycle.legs.as_slice().len() as u64,
        Body::Reading(reading) => match reading.device.as_slice().first() {
            Some(protocol::message::Attestation::Ed25519(_)) => 1,
            Some(protocol::message::Attestation::Ocmf(_)) => 4,
            None => 0,
        },
        Body::Report(report) => report.reading.as_slice().iter().map(inner).sum(),
        Body::Deliver(deliver) => match &deliver.proof {
            protocol::message::Proof::Reading(reading) => inner(reading),
            _ => 0,
        },
        _ => 0,
    }
}

/// What a message's carriage costs: readings and votes are background work, offers and cancels are time-critical
/// (interval auctions close), everything else normal.
fn priority_of(body: &Body) -> Priority {
    match body {
        Body::Reading(_) | Body::Vote(_) => Priority::Background,
        Body::Offer(_) | Body::Cancel(_) => Priority::RealTime,
        _ => Priority::Normal,
    }
}

#[cfg(test)]
mod tests {
    use protocol::message::Transfer;
    use protocol::types::{Text, TokenId};
    use protocol::{Draft, Keypair, NetworkId};

    use super::*;

    const NOW_MS: u64 = 1_767_225_600_000;

    fn network() -> NetworkId {
        NetworkId::new("kos-test").unwrap()
    }

    fn admission(fuel: energy::fuel::Config) -> Admission {
        let settings = Settings {
            peer_limits: super::super::budget::Limits::default(),
            peers_max: 16,
            fuel,
            trusted_peers: Vec::new(),
            trusted_authors: Vec::new(),
        };
        Admission::new(settings, NOW_MS)
    }

    /// A transfer of `amount` from `author` under `nonce`, signed: its bytes.
    fn transfer(author: &Keypair, nonce: u64, amount: u64, created_ms: u64) -> Vec<u8> {
        let body = protocol::Body::Transfer(Transfer {
            to: Keypair::from_seed(&[9; 32]).public(),
            token: TokenId::new("credit").unwrap(),
            amount,
            memo: Text::new("").unwrap(),
        });
        Draft { network: network(), nonce, created_ms, expires_ms: created_ms + 600_000, body }.sign(author).to_bytes()
    }

    fn check(admission: &mut Admission, topic: Topic, bytes: &[u8], now_ms: u64) -> Verdict {
        let validation = protocol::validate(bytes, &protocol::Config::new(network()), now_ms);
        admission.check(topic, bytes.len(), validation, now_ms)
    }

    #[test]
    fn each_check_of_the_door_gives_its_verdict() {
        let mut door = admission(energy::fuel::Config::default());
        let author = Keypair::from_seed(&[1; 32]);
        let first = transfer(&author, 1, 10, NOW_MS);
        assert!(matches!(check(&mut door, Topic::Ledger, &first, NOW_MS), Verdict::Accept(_)));
        // The same message again: nothing new, nobody to blame.
        assert!(matches!(check(&mut door, Topic::Ledger, &first, NOW_MS), Verdict::Ignore(Ignored::Duplicate)));
        // Another message under the same nonce: a replay.
        let again = transfer(&author, 1, 11, NOW_MS);
        assert!(matches!(check(&mut door, Topic::Ledger, &again, NOW_MS), Verdict::Reject(Rejected::Replay)));
        // A transfer on the readings topic does not belong there.
        let other = transfer(&author, 2, 10, NOW_MS);
        assert!(matches!(check(&mut door, Topic::Readings, &other, NOW_MS), Verdict::Reject(Rejected::WrongTopic)));
        // Expired (clocks differ): ignored; damaged: rejected.
        let old = transfer(&author, 3, 10, NOW_MS - 700_000);
        assert!(matches!(check(&mut door, Topic::Ledger, &old, NOW_MS), Verdict::Ignore(Ignored::Stale)));
        let mut damaged = transfer(&author, 4, 10, NOW_MS);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(check(&mut door, Topic::Ledger, &damaged, NOW_MS), Verdict::Reject(Rejected::Invalid)));
    }

    /// Review of issue 26, item 1: a resting offer fetched with a pool's book is older than what its author published
    /// since; below the author's replay window it was dropped as stale, so the newcomer's book missed exactly the
    /// older liquidity the fetch is for.
    #[test]
    fn a_fetched_offer_below_its_authors_replay_window_is_taken_and_a_gossiped_one_is_not() {
        let mut door = admission(energy::fuel::Config::default());
        let author = Keypair::from_seed(&[3; 32]);
        let pool: protocol::message::PoolId = "compute/credit/*/0".parse().unwrap();
        let offer = |nonce| {
            let body = protocol::Body::Offer(protocol::message::Offer {
                pool: pool.clone(),
                side: protocol::message::Side::Ask,
                quantity: 1000,
                unit_price: 5_000,
                delivery_start_s: 0,
            });
            Draft { network: network(), nonce, created_ms: NOW_MS, expires_ms: NOW_MS + 600_000, body }.sign(&author)
        };
        let resting = offer(1).to_bytes();
        for nonce in 2..(2 + REPLAY_WINDOW as u64) {
            assert!(matches!(
                check(&mut door, Topic::Ledger, &transfer(&author, nonce, 1, NOW_MS), NOW_MS),
                Verdict::Accept(_)
            ));
        }
        let topic = Topic::pool(&pool);
        let validate = || protocol::validate(&resting, &protocol::Config::new(network()), NOW_MS);
        let gossiped = door.check(topic, resting.len(), validate(), NOW_MS);
        assert!(matches!(gossiped, Verdict::Ignore(Ignored::Duplicate)), "{gossiped:?}");
        let fetched = door.check_fetched(topic, resting.len(), validate(), NOW_MS);
        assert!(matches!(fetched, Verdict::Accept(_)), "{fetched:?}");
        // Another message under a nonce still in the window is a replay, fetched or not.
        let replay = offer(REPLAY_WINDOW as u64).to_bytes();
        let validation = protocol::validate(&replay, &protocol::Config::new(network()), NOW_MS);
        let verdict = door.check_fetched(topic, replay.len(), validation, NOW_MS);
        assert!(matches!(verdict, Verdict::Reject(Rejected::Replay)), "{verdict:?}");
    }

    #[test]
    fn an_author_out_of_fuel_is_ignored_until_it_recharges() {
        let budget = energy::fuel::Budget { capacity: 8, recharge_per_s: 1 };
        let mut door = admission(energy::fuel::Config { bandwidth: budget, ..energy::fuel::Config::default() });
        let author = Keypair::from_seed(&[2; 32]);
        let mut nonce = 0;
        let mut verdict = || {
            nonce += 1;
            check(&mut door, Topic::Ledger, &transfer(&author, nonce, 1, NOW_MS), NOW_MS)
        };
        let accepted = std::iter::repeat_with(&mut verdict).take_while(|verdict| matches!(verdict, Verdict::Accept(_)));
        let accepted = accepted.count();
        assert!((1..=8).contains(&accepted), "{accepted} accepted before the fuel ran out");
        assert!(matches!(verdict(), Verdict::Ignore(Ignored::OutOfFuel)));
        // Ten seconds later it has fuel again.
        let later = transfer(&author, 100, 1, NOW_MS);
        assert!(matches!(check(&mut door, Topic::Ledger, &later, NOW_MS + 10_000), Verdict::Accept(_)));
    }
}
