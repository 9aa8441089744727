//! The ledger's state machine: deterministic, integer arithmetic, no IO.
//!
//! The state is a sorted map of byte keys to byte values (layout in PROTOCOL.md §10). A block's entries are
//! executed against it in order; an entry that breaks a rule makes the whole block invalid (a proposer only
//! includes entries that execute, see [`State::build`]). The state root commits to every key and value with a
//! lattice hash (the construction of Solana's SIMD-0215, with blake3): each pair contributes
//! `blake3_xof("kos/v1/kv" || 0x00 || u32be(len k) || k || v)[..2048]` read as 1024 little-endian u16 lanes, and the
//! lattice is the lane-wise sum mod 2^16, so a block updates the root in time proportional to what it changes.
//! `state_root = blake3("kos/v1/state" || 0x00 || lattice)`.
//!
//! Invariants (tested in `tests/it/state.rs`): a token's supply equals the sum of its balances and escrows, and
//! changes only through genesis, `Mint`, `Burn` and the issuance rules of anchored readings; no balance goes below
//! zero (balances are `u64` and every debit is checked); an escrow is released exactly once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use protocol::codec;
use protocol::envelope::Envelope;
use protocol::message::{Action, Body, Choice, Kind, Measure, Offer, Settlement, Side};
use protocol::types::TokenId;
use protocol::{Id, PublicKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::genesis::{self, Genesis, Params, VALIDATORS_MAX};
use crate::hash::{self, Hash};

mod barter;
mod cells;
mod commons;
mod governance;
mod jobs;
mod keys;
mod read;
mod readings;
pub mod suspects;
mod tokens;
mod trade;

pub use barter::{BARTER_LEGS_DUE_PER_BLOCK, BarterLegState, BarterReads, LegStatus, barter_escrow_account};
pub use cells::{
    CASE_NAMED_MAX, CaseKind, CaseStatus, CellCase, CellInterval, CellMember, CellReads, IntervalStatus,
    PLAUSIBILITY_INTERVALS_MAX, SUSPECT_WINDOW, feeder_case_id, plausibility_case_id,
};
pub use commons::CommonsReads;
pub use governance::{GovernanceError, GovernanceReads, UpgradeState};
pub use jobs::{
    BIDS_PER_JOB_MAX, BidState, JOBS_DUE_PER_BLOCK, JOBS_PER_POSTER_MAX, JobState, JobStatus, bid_cost,
    job_escrow_account, winner,
};
pub use jobs::{JobError, JobReads};
use keys::*;
pub use read::{Kv, Pairs, entry_included};
pub use tokens::TokenReads;
use trade::Delivery;
pub use trade::{Flows, TradeReads};

/// The account that receives fees and escrow penalties: the all-zero key, for which nobody can sign.
pub const COMMONS: PublicKey = PublicKey([0; 32]);

const LANES: usize = 1024;
/// Most threads that hash a whole state's pairs into its lattice ([`Lattice::of`]).
pub const LATTICE_THREADS_MAX: usize = 8;
/// Fewer pairs than this are hashed on one thread.
const LATTICE_PARALLEL_MIN: usize = 1_024;
/// Pairs of a state on disk read at once and hashed together when it is opened ([`State::on_disk`]): the memory
/// it takes (about a megabyte) while the lattice is summed.
pub const LATTICE_BATCH: usize = 8_192;
/// The bytes of a lattice hash.
pub const LATTICE_BYTES: usize = LANES * 2;

/// An entry broke a rule of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry is not valid: {0}")]
    Invalid(String),
    #[error("{0} messages are not ledger entries")]
    NotAnEntry(&'static str),
    #[error("entry {0} is already on the ledger")]
    Duplicate(Id),
    #[error("{account} has {balance} {token}, needs {needed}")]
    InsufficientFunds { account: PublicKey, token: TokenId, balance: u64, needed: u64 },
    #[error("token {0} does not exist")]
    UnknownToken(TokenId),
    #[error("{0} may not mint this token")]
    NotIssuer(PublicKey),
    #[error("minting {amount} would exceed the supply cap {cap}")]
    SupplyCap { amount: u64, cap: u64 },
    #[error("offer {0} expired before this block")]
    OfferExpired(Id),
    #[error("offer {0} was cancelled")]
    OfferCancelled(Id),
    #[error("offer {offer} has {left} left, the settlement takes {wanted}")]
    Overfilled { offer: Id, left: u64, wanted: u64 },
    #[error("settlement price is outside an offer's limit")]
    Price,
    #[error("only the author of an offer may cancel it")]
    NotYourOffer,
    #[error(
        "reading for {meter} does not follow the last one (its interval or registers go back, or its registers do not account for its energy)"
    )]
    ReadingOutOfOrder { meter: String },
    #[error("reading for {meter} is physically impossible: {reason}")]
    ReadingImplausible { meter: String, reason: String },
    #[error("reading for {meter} is not its device's: {reason}")]
    ReadingDevice { meter: String, reason: String },
    #[error("device key {key} already belongs to asset {asset} of another account")]
    DeviceKeyTaken { key: String, asset: Id },
    #[error("cell {cell} has a feeder already: asset {asset} of another account")]
    FeederTaken { cell: String, asset: Id },
    #[error("cell {cell}'s interval at {interval_start_s} is closed: its feeder balance was checked")]
    CellIntervalClosed { cell: String, interval_start_s: u64 },
    #[error("proposal {0} is unknown or closed")]
    ProposalClosed(Id),
    #[error("{0} is not a validator and may not vote")]
    NotAVoter(PublicKey),
    #[error("{0} has already voted on this proposal")]
    AlreadyVoted(PublicKey),
    #[error("voting period must be 1..={0} blocks")]
    VotingPeriod(u32),
    #[error("amount overflows")]
    Overflow,
    #[error("{0} is not a guild's account")]
    NotAGuild(PublicKey),
    #[error("{0} is not a member of the guild")]
    NotAGuildMember(PublicKey),
    #[error("guild spend {0} is unknown or already done")]
    SpendClosed(Id),
    #[error("{0} has already approved this spend")]
    AlreadyApproved(PublicKey),
    #[error("{account} is in reputation tier {tier}; the pool needs tier {needed} or higher")]
    Tier { account: PublicKey, tier: usize, needed: usize },
    #[error("the delivery interval is over")]
    DeliveryOver,
    #[error("{account} would buy {wanted} Wh for one interval; the limit is {limit} Wh")]
    HoardingLimit { account: PublicKey, wanted: u64, limit: u64 },
    #[error("{account}'s trading is frozen by override {by} until height {until_height}")]
    Frozen { account: PublicKey, by: Id, until_height: u64 },
    #[error("{0}")]
    Governance(GovernanceError),
    #[error("no asset {0} is registered")]
    UnknownAsset(Id),
    #[error("price {price} is below the pool's base price {base}")]
    BelowBasePrice { price: u64, base: u64 },
    #[error("no job {0} is on the ledger")]
    UnknownJob(Id),
    #[error("{0}")]
    Job(JobError),
}

/// What a block executes in: fixed by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    pub height: u64,
    pub time_ms: u64,
    pub proposer: PublicKey,
}

/// A 2048-byte lattice hash (1024 u16 lanes).
#[derive(Clone, PartialEq, Eq)]
pub struct Lattice(Box<[u16; LANES]>);

impl std::fmt::Debug for Lattice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lattice({})", self.root())
    }
}

impl Default for Lattice {
    fn default() -> Lattice {
        Lattice(Box::new([0; LANES]))
    }
}

impl Lattice {
    fn pair(key: &[u8], value: &[u8]) -> [u16; LANES] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kos/v1/kv\0");
        hasher.update(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(key);
        hasher.update(value);
        let mut bytes = [0u8; LANES * 2];
        hasher.finalize_xof().fill(&mut bytes);
        let mut lanes = [0u16; LANES];
        for (lane, chunk) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
        }
        lanes
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        for (lane, add) in self.0.iter_mut().zip(Lattice::pair(key, value)) {
            *lane = lane.wrapping_add(add);
        }
    }

    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        for (lane, sub) in self.0.iter_mut().zip(Lattice::pair(key, value)) {
            *lane = lane.wrapping_sub(sub);
        }
    }

    /// The lattice of `pairs` (distinct keys), hashed on up to [`LATTICE_THREADS_MAX`] threads: a restart sums the
    /// whole state, and the sum does not depend on how the pairs are split.
    pub fn of<K: AsRef<[u8]> + Sync, V: AsRef<[u8]> + Sync>(pairs: &[(K, V)]) -> Lattice {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(LATTICE_THREADS_MAX);
        let serial = |part: &[(K, V)]| {
            let mut lattice = Lattice::default();
            for (key, value) in part {
                lattice.add(key.as_ref(), value.as_ref());
            }
            lattice
        };
        if threads < 2 || pairs.len() < LATTICE_PARALLEL_MIN {
            return serial(pairs);
        }
        std::thread::scope(|scope| {
            let parts: Vec<_> =
                pairs.chunks(pairs.len().div_ceil(threads)).map(|part| scope.spawn(move || serial(part))).collect();
            let mut sum = Lattice::default();
            for part in parts {
                match part.join() {
                    Ok(lattice) => sum.absorb(&lattice),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            sum
        })
    }

    /// Adds another lattice lane by lane (mod 2^16): the lattice of the union of two disjoint sets of pairs.
    pub fn absorb(&mut self, other: &Lattice) {
        for (lane, add) in self.0.iter_mut().zip(other.0.iter()) {
            *lane = lane.wrapping_add(*add);
        }
    }

    /// The 2048 bytes: each lane little-endian, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(LATTICE_BYTES);
        for lane in self.0.iter() {
            bytes.extend_from_slice(&lane.to_le_bytes());
        }
        bytes
    }

    /// A lattice from [`Lattice::to_bytes`]; `None` unless there are exactly [`LATTICE_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Lattice> {
        if bytes.len() != LATTICE_BYTES {
            return None;
        }
        let mut lattice = Lattice::default();
        for (lane, chunk) in lattice.0.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
        }
        Some(lattice)
    }

    pub fn root(&self) -> Hash {
        hash::tagged("kos/v1/state", &[&self.to_bytes()])
    }
}

/// Changes to the state: key → new value (`None`: deleted).
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The result of executing a block: its writes and the state root after them.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The ids of the entries executed, in block order.
    pub ids: Vec<Id>,
    pub writes: Writes,
    pub state_root: Hash,
    pub lattice: Lattice,
    /// How many pairs the state holds after the block.
    pub pairs: usize,
    pub events: Vec<Event>,
}

/// Something a block did, for indexes, the API, the market and fuel (not part of consensus: the store keeps each
/// block's events beside it, so a node's followers never decode block bytes again, and a follower that fell behind
/// reads them back).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A settlement matched a bid with an ask: `quantity` at `unit_price` went into escrow.
    TradeSettled {
        settlement: Id,
        pool: protocol::message::PoolId,
        bid: Id,
        ask: Id,
        buyer: PublicKey,
        seller: PublicKey,
        quantity: u64,
        unit_price: u64,
        mechanism: protocol::message::Mechanism,
        delivery_start_s: u64,
    },
    /// A meter reading was anchored.
    ReadingAnchored {
        id: Id,
        author: PublicKey,
        reading: protocol::message::Reading,
    },
    /// A barter cycle was settled: each leg's offer gave `quantity`.
    BarterSettled {
        cycle: Id,
        legs: Vec<(Id, u64)>,
    },
    /// An escrow was settled: `amount` went to the seller (payment less tax and royalty, plus its collateral and
    /// any penalty the buyer paid).
    EscrowReleased {
        settlement: Id,
        to: PublicKey,
        amount: u64,
    },
    /// A party of an energy trade in a pool asking `balanced` delivered by its own readings, but its cell's feeder
    /// did not confirm them: the trade is void (PROTOCOL.md §10, *release of an escrow*).
    Unconfirmed {
        settlement: Id,
        account: PublicKey,
    },
    /// A party of an energy trade under-delivered or under-consumed and paid `amount` from its collateral.
    Penalty {
        settlement: Id,
        account: PublicKey,
        shortfall_wh: u64,
        amount: u64,
    },
    /// The commons' balance of `token` was shared: `share` to each of `accounts` accounts.
    Redistributed {
        token: TokenId,
        accounts: u64,
        share: u64,
    },
    ProposalPassed(Id),
    ProposalRejected(Id),
    /// A passed validator change: the set certifying blocks from `at_height` on changes.
    ValidatorsChanging {
        proposal: Id,
        at_height: u64,
    },
    /// A passed upgrade: blocks carry `version` from `at_height` on.
    UpgradeScheduled {
        proposal: Id,
        version: u8,
        at_height: u64,
    },
    /// The next block, `at_height`, is the first of protocol version `version`.
    Upgraded {
        version: u8,
        at_height: u64,
    },
    /// An override passed: in force until the end of block `until_height`.
    OverrideInForce {
        proposal: Id,
        until_height: u64,
    },
    OverrideExpired(Id),
    /// A maintenance alert about an asset.
    AlertRaised {
        alert: Id,
        asset: Id,
        rule: protocol::message::AlertRule,
    },
    /// A citizen's report.
    Reported {
        report: Id,
        severity: protocol::message::Severity,
    },
    /// A job was posted (by the commons: a quest).
    JobPosted {
        job: Id,
        kind: protocol::message::JobKind,
        quest: u8,
    },
    JobBid {
        job: Id,
        bid: Id,
        worker: PublicKey,
    },
    /// The job was awarded: `price` moved to its escrow.
    JobAwarded {
        job: Id,
        worker: PublicKey,
        price: u64,
    },
    /// The worker delivered (a claim, its meter, or a result to be sampled).
    JobDelivered {
        job: Id,
    },
    /// The work was done and paid.
    JobDone {
        job: Id,
        worker: PublicKey,
        quest: u8,
    },
    /// The work was not done: the price went back, `slashed` of the worker's collateral to the poster.
    JobFailed {
        job: Id,
        worker: PublicKey,
        slashed: u64,
    },
    JobDisputed {
        job: Id,
        jurors: Vec<PublicKey>,
    },
    /// Ended unawarded (no bid, withdrawn, or a quest the commons could not pay).
    JobClosed {
        job: Id,
    },
    /// A barter leg ended (`status`: released, penalised or returned); `penalty` of its collateral went to the
    /// receiver.
    BarterLegClosed {
        leg: Id,
        giver: PublicKey,
        receiver: PublicKey,
        status: String,
        penalty: u64,
    },
    /// A barter leg's dispute went to a jury.
    BarterLegDisputed {
        leg: Id,
        jurors: Vec<PublicKey>,
    },
    /// A case on a cell's readings opened (`kind` 0: a feeder balance that did not add up, 1: implausible
    /// generation): `named` accounts, `held` energy escrows, a jury.
    CellCaseOpened {
        case: Id,
        kind: u8,
        cell: String,
        interval_start_s: u64,
        named: Vec<PublicKey>,
        held: u64,
        jurors: Vec<PublicKey>,
    },
    /// A cell's interval did not balance with its feeder's reading: the members' claimed net export beyond the
    /// feeder's (`gap_wh`) was more than `tolerance_wh`; `named` members each got a case, `held` escrows wait.
    CellUnbalanced {
        cell: String,
        interval_start_s: u64,
        gap_wh: i64,
        tolerance_wh: u64,
        named: Vec<PublicKey>,
        held: u64,
    },
    /// The readings of these accounts in a cell's interval reached the `balanced` trust level (PROTOCOL.md §10,
    /// *trust levels*): the feeder balanced the interval when it closed, the mismatch was laid on other members, or
    /// a jury upheld their readings.
    ReadingsBalanced {
        cell: String,
        interval_start_s: u64,
        interval_s: u32,
        authors: Vec<PublicKey>,
    },
    /// A case was decided (`status`: upheld or refuted).
    CellCaseDecided {
        case: Id,
        status: String,
    },
    /// A guild spend reached its threshold: `amount` of `token` moved from the guild's account to `to`.
    GuildSpent {
        spend: Id,
        guild: PublicKey,
        to: PublicKey,
        token: TokenId,
        amount: u64,
    },
}

impl Event {
    /// The event's kind, as `kos ledger verify --state` counts them.
    pub fn name(&self) -> &'static str {
        match self {
            Event::TradeSettled { .. } => "trade settled",
            Event::ReadingAnchored { .. } => "reading anchored",
            Event::BarterSettled { .. } => "barter settled",
            Event::EscrowReleased { .. } => "escrow released",
            Event::Unconfirmed { .. } => "unconfirmed",
            Event::Penalty { .. } => "penalty",
            Event::Redistributed { .. } => "redistributed",
            Event::ProposalPassed(_) => "proposal passed",
            Event::ProposalRejected(_) => "proposal rejected",
            Event::ValidatorsChanging { .. } => "validators changing",
            Event::UpgradeScheduled { .. } => "upgrade scheduled",
            Event::Upgraded { .. } => "upgraded",
            Event::OverrideInForce { .. } => "override in force",
            Event::OverrideExpired(_) => "override expired",
            Event::AlertRaised { .. } => "alert raised",
            Event::Reported { .. } => "reported",
            Event::JobPosted { .. } => "job posted",
            Event::JobBid { .. } => "job bid",
            Event::JobAwarded { .. } => "job awarded",
            Event::JobDelivered { .. } => "job delivered",
            Event::JobDone { .. } => "job done",
            Event::JobFailed { .. } => "job failed",
            Event::JobDisputed { .. } => "job disputed",
            Event::JobClosed { .. } => "job closed",
            Event::BarterLegClosed { .. } => "barter leg closed",
            Event::BarterLegDisputed { .. } => "barter leg disputed",
            Event::CellCaseOpened { .. } => "cell case opened",
            Event::CellUnbalanced { .. } => "cell unbalanced",
            Event::ReadingsBalanced { .. } => "readings balanced",
            Event::CellCaseDecided { .. } => "cell case decided",
            Event::GuildSpent { .. } => "guild spent",
        }
    }
}

/// The event an executed entry is itself: a settled trade, an anchored reading, a settled barter cycle (what a
/// block's commit reports for it; followers and simulations build the same events with it).
pub fn entry_event(id: &Id, envelope: &Envelope) -> Option<Event> {
    match &envelope.body {
        Body::Settlement(settlement) => {
            let Body::Offer(bid) = &settlement.bid.body else { return None };
            Some(Event::TradeSettled {
                settlement: *id,
                pool: bid.pool.clone(),
                bid: settlement.bid.id(),
                ask: settlement.ask.id(),
                buyer: settlement.bid.author,
                seller: settlement.ask.author,
                quantity: settlement.quantity,
                unit_price: settlement.unit_price,
                mechanism: settlement.mechanism,
                delivery_start_s: bid.delivery_start_s,
            })
        }
        Body::Reading(reading) => {
            Some(Event::ReadingAnchored { id: *id, author: envelope.author, reading: reading.clone() })
        }
        Body::BarterCycle(cycle) => Some(Event::BarterSettled {
            cycle: *id,
            legs: cycle.legs.as_slice().iter().map(|leg| (leg.offer.id(), leg.give_quantity)).collect(),
        }),
        _ => None,
    }
}

/// A block built from candidates: the entries kept, their execution, and the candidates refused with why.
#[derive(Debug)]
pub struct Built {
    pub entries: Vec<Vec<u8>>,
    pub executed: Executed,
    pub rejected: Vec<(Vec<u8>, EntryError)>,
}

/// An undo record: a key and what the block's writes held for it before (`None`: nothing).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// The ledger state.
///
/// Its pairs live in memory ([`State::genesis`], [`State::from_pairs`]: validators, simulations) or in the node's
/// store ([`State::on_disk`]: a home, whose memory must not grow with the state, issue 28). Either way the lattice
/// is in memory. A clone of a state on disk reads the same store: it is not a snapshot.
#[derive(Debug, Clone)]
pub struct State {
    genesis: Arc<Genesis>,
    map: Map,
    lattice: Lattice,
    /// How many pairs the state holds.
    len: usize,
}

/// Where a state's pairs live.
#[derive(Debug, Clone)]
enum Map {
    /// In memory, with the ids under `x` (replay guards) mirrored for the check every entry needs: a hash lookup
    /// instead of a search among all the keys.
    Memory { map: BTreeMap<Vec<u8>, Vec<u8>>, included: HashSet<Id> },
    /// In the node's store, read through on every access.
    Disk(Arc<dyn Backing>),
}

/// A committed state's pairs kept outside the process's memory (a home's RocksDB: issue 28, item 7), read through
/// by a [`State::on_disk`]. The store writes them when it commits a block, before the engine calls
/// [`State::apply`], so between blocks the backing holds exactly the state. A read that fails reads as absent and
/// is remembered ([`Backing::failure`]): the engine stops on it before it votes, proposes or commits.
pub trait Backing: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// The pairs with keys in `start..end` (none when `start >= end`), in key order; a failed read ends them.
    fn range<'a>(&'a self, start: &[u8], end: &[u8]) -> Pairs<'a>;
    /// The first read that failed, if one did.
    fn failure(&self) -> Option<String>;
}

/// Most one-account-one-vote members (genesis and admitted).
const MEMBERS_MAX: u64 = 16_384;
/// Most periods a dynamic base price is rolled over at once (after that many quiet periods it has settled).
const BASE_PRICE_ROLL_MAX: u64 = 10_000;
/// How long alerts and reports stay on the ledger's state (the blocks keep them for ever).
const NOTICE_RETENTION_MS: u64 = 30 * 86_400_000;
/// Most proposals that may end at one height.
pub const PROPOSALS_ENDING_MAX: usize = 64;
/// Longest an override lasts, blocks.
pub const OVERRIDE_BLOCKS_MAX: u32 = 1_000_000;

/// Where an override's measure is looked up by the layers that enforce it.
fn lookup_key(measure: &Measure) -> Vec<u8> {
    match measure {
        Measure::Freeze(freeze) => key(FROZEN, &[freeze.account.as_bytes()]),
        Measure::FuelCap(cap) => key(FUEL_CAP, &[cap.account.as_bytes()]),
        Measure::DeviceCap(cap) => key(DEVICE_CAP, &[cap.account.as_bytes(), cap.meter.as_str().as_bytes()]),
        Measure::Island(order) => key(ISLAND_ORDER, &[order.cell.as_str().as_bytes()]),
    }
}

/// The limits an override's lookup carries (`first`, `second`).
fn limits_of(measure: &Measure) -> (u64, u64) {
    match measure {
        Measure::FuelCap(cap) => (cap.per_s, 0),
        Measure::DeviceCap(cap) => (cap.import_w_max, cap.export_w_max),
        Measure::Freeze(_) | Measure::Island(_) => (0, 0),
    }
}

/// Whose votes count on a proposal.
enum Weight {
    Validators,
    Members,
    Stewards,
    Stake(TokenId),
}

/// The account that holds the stakes voted on a proposal until it closes: `blake3("kos/v1/vote-lock" || 0 ||
/// proposal id)`, an account no key signs for.
#[must_use]
pub fn vote_lock_account(proposal: &Id) -> PublicKey {
    PublicKey(*hash::tagged("kos/v1/vote-lock", &[proposal.as_bytes()]).as_bytes())
}

/// How long the per-interval energy counters (readings' flows, energy sold and bought) outlive their interval.
const INTERVAL_RECORDS_RETENTION_MS: u64 = 2 * 86_400_000;

/// A pool's period length for prices: its delivery interval, or an hour in continuous pools.
fn period_len_s(pool: &protocol::message::PoolId) -> u64 {
    if pool.interval_s == 0 { market::pricing::CONTINUOUS_PERIOD_S } else { u64::from(pool.interval_s) }
}

/// The period a base price is computed for: `period_s`, but no later than the period after the one containing
/// `now_s` (a settlement for a far future interval must not move the pool's price into that future).
fn priced_period(period_s: u64, now_s: u64, period_len_s: u64) -> u64 {
    let len = period_len_s.max(1);
    period_s.min((now_s / len).saturating_add(1).saturating_mul(len))
}

/// A dynamic pool's base price for `period_s`: rolled from the anchor (the period and price of the pool's latest
/// settlement) over the volumes of the periods since; the policy's base before any settlement.
fn roll_base_price(
    policy: &market::pricing::Policy,
    anchor: Option<(u64, u64)>,
    period_len_s: u64,
    period_s: u64,
    volume: impl Fn(u64) -> u64,
) -> u64 {
    let Some((from, price)) = anchor else { return policy.base };
    let steps = period_s.saturating_sub(from) / period_len_s.max(1);
    policy.roll(price, (0..steps.min(BASE_PRICE_ROLL_MAX)).map(|step| volume(from + step * period_len_s)))
}

/// A governance-set pool fee as the market applies it.
fn fee_of(fee: &protocol::message::PoolFee) -> market::Fee {
    match (fee.fee_per_kwh, fee.fee_ppm) {
        (0, 0) => market::Fee::None,
        (0, ppm) => market::Fee::Ppm(ppm),
        (constant, _) => market::Fee::Constant(constant),
    }
}

fn pool_fee(rule: Option<&crate::genesis::PoolRule>, per_kwh: u64, ppm: u64) -> market::Fee {
    match rule.and_then(|rule| rule.grid_fee) {
        Some(fee) => fee,
        None if per_kwh > 0 => market::Fee::Constant(per_kwh),
        None if ppm > 0 => market::Fee::Ppm(u32::try_from(ppm).unwrap_or(u32::MAX)),
        None => market::Fee::None,
    }
}

/// `value · ppm / 10⁶`, rounded down.
fn share(value: u64, ppm: u64) -> u64 {
    u64::try_from(u128::from(value) * u128::from(ppm) / u128::from(market::PPM)).unwrap_or(u64::MAX)
}

/// What a settlement of a delivery-interval pool holds until the interval is over: the buyer's payment and both
/// parties' collateral. At `release_ms` an energy trade is checked against both parties' anchored readings.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct Escrow {
    pub buyer: PublicKey,
    pub seller: PublicKey,
    pub token: TokenId,
    /// The payment, `quantity · price / 1000`.
    pub amount: u64,
    pub release_ms: u64,
    pub quantity: u64,
    pub delivery_start_s: u64,
    pub interval_s: u32,
    /// 1 when delivery is checked against meter readings (energy pools), else 0 (the codec has no booleans).
    pub metered: u8,
    pub buyer_collateral: u64,
    pub seller_collateral: u64,
    /// Commons tax taken from the payment at release.
    pub tax: u64,
    /// Royalty taken from the payment at release, to `royalty_account`.
    pub royalty: u64,
    pub royalty_account: PublicKey,
    /// The trust level (PROTOCOL.md §10, *trust levels*) a party's readings must reach to count as delivered: the
    /// pool rule's when the trade settled (0 for trades that are not metered).
    pub trust: u8,
}

impl Escrow {
    /// Everything the escrow holds.
    pub fn held(&self) -> u64 {
        self.amount.saturating_add(self.buyer_collateral).saturating_add(self.seller_collateral)
    }
}

/// A pool's trades in one period (a delivery interval, or an hour of block time in continuous pools).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct PriceIndex {
    /// Σ quantity.
    pub volume: u64,
    /// Σ payment (token milli-units).
    pub value: u64,
    pub trades: u64,
}

impl PriceIndex {
    /// The volume-weighted average price per 1000 units: `value · 1000 / volume`.
    pub fn vwap(&self) -> Option<u64> {
        (u128::from(self.value) * 1000).checked_div(u128::from(self.volume)).and_then(|price| u64::try_from(price).ok())
    }
}

/// A meter's last anchored reading.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct MeterState {
    pub interval_start_s: u64,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
    pub reading: Id,
}

/// Counters that make an account's track record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct Reputation {
    pub trades: u64,
    pub traded_value: u64,
    pub readings: u64,
    pub barters: u64,
    /// Obligations fulfilled: energy delivered as sold, consumed as bought, other escrows completed.
    pub deliveries: u64,
    /// Obligations failed: energy under-delivered or under-consumed.
    pub failures: u64,
    /// Distinct accounts with which a delivery counted (PROTOCOL.md §10, *reputation*).
    pub counterparties: u64,
}

impl Reputation {
    /// The trust score in parts per million: `(deliveries + 1) / (deliveries + failures + 2)` (one fulfilled and one
    /// failed obligation as a prior, so a newcomer scores 500 000).
    pub fn score_ppm(&self) -> u32 {
        let fulfilled = u128::from(self.deliveries) + 1;
        let total = fulfilled + u128::from(self.failures) + 1;
        u32::try_from(fulfilled * u128::from(market::PPM) / total).unwrap_or(market::PPM)
    }

    /// The index of the highest tier whose thresholds this record meets (tier 0 asks nothing).
    pub fn tier(&self, tiers: &[crate::genesis::Tier]) -> usize {
        let score = self.score_ppm();
        tiers
            .iter()
            .rposition(|tier| {
                score >= tier.score_min_ppm
                    && self.deliveries >= tier.deliveries_min
                    && self.counterparties >= tier.counterparties_min
            })
            .unwrap_or(0)
    }
}

/// A guild: its members (in increasing byte order) and how many of them must approve a spend.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct GuildState {
    pub name: String,
    pub members: Vec<PublicKey>,
    pub threshold: u32,
    /// The entry that created it.
    pub created_by: Id,
}

/// A registered asset: its manifest, who registered it, and the readings anchored for it.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct AssetState {
    /// The manifest's author: the account whose readings of the asset's meters are checked against its limits.
    pub author: PublicKey,
    pub manifest: protocol::message::Asset,
    /// Readings anchored for the asset's meters since it was registered.
    pub readings: u64,
    /// The interval start of the latest of them (0: none yet).
    pub last_interval_start_s: u64,
}

impl AssetState {
    /// The asset's limits as the reading check takes them.
    pub fn capacity(&self) -> energy::reading::Capacity {
        let limits = &self.manifest.limits;
        energy::reading::Capacity {
            generation_w_max: limits.generation_w_max,
            import_w_max: limits.import_w_max,
            export_w_max: limits.export_w_max,
            consumption_w_max: limits.consumption_w_max,
            storage_w_max: limits.storage_w_max,
        }
    }
}

/// A spend from a guild's account, pending until `threshold` members approved it.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct GuildSpendState {
    pub guild: PublicKey,
    pub to: PublicKey,
    pub token: TokenId,
    pub amount: u64,
    pub approvals: u32,
    pub status: SpendStatus,
}

/// Where a guild's spend is. Kept in the state as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum SpendStatus {
    /// Waiting for approvals.
    Pending = 0,
    /// Approved: the tokens moved.
    Done = 1,
}

impl SpendStatus {
    /// The status's name, as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            SpendStatus::Pending => "pending",
            SpendStatus::Done => "done",
        }
    }
}

/// Where a governance proposal is. Kept in the state as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum ProposalStatus {
    /// Voting until its end height.
    Open = 0,
    Passed = 1,
    Rejected = 2,
}

impl ProposalStatus {
    /// The status's name, as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            ProposalStatus::Open => "open",
            ProposalStatus::Passed => "passed",
            ProposalStatus::Rejected => "rejected",
        }
    }
}

/// A maintenance alert as the ledger keeps it (for 30 days), under its asset.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct AlertState {
    pub id: Id,
    pub author: PublicKey,
    pub alert: protocol::message::Alert,
    pub height: u64,
}

/// A citizen's report as the ledger keeps it (for 30 days).
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct ReportState {
    pub author: PublicKey,
    pub report: protocol::message::Report,
    pub height: u64,
    pub time_ms: u64,
}

/// An override in force: what it does, and the last block it holds for.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct OverrideState {
    pub measure: protocol::message::Measure,
    /// The block whose execution passed it.
    pub from_height: u64,
    pub until_height: u64,
    /// 1 when decided by the emergency rule.
    pub emergency: u8,
}

/// A lookup of an override in force on an account, device or cell: the override's id and last block, and its
/// limits (for caps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct InForce {
    pub by: Id,
    pub until_height: u64,
    pub first: u64,
    pub second: u64,
}

/// An open or closed governance proposal.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct ProposalState {
    pub author: PublicKey,
    pub action: Action,
    pub end_height: u64,
    pub yes: u64,
    pub no: u64,
    pub abstain: u64,
    pub status: ProposalStatus,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value)
}

fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    codec::decode(bytes, usize::MAX).ok()
}

impl State {
    /// The state before block 1.
    pub fn genesis(genesis: Arc<Genesis>) -> State {
        let mut state = State {
            genesis: genesis.clone(),
            map: Map::Memory { map: BTreeMap::new(), included: HashSet::new() },
            lattice: Lattice::default(),
            len: 0,
        };
        let mut writes = Writes::new();
        for validator in &genesis.validators {
            writes.insert(key(VALIDATOR, &[validator.key.as_bytes()]), Some(encode(&validator.power)));
        }
        let mut supplies: BTreeMap<&TokenId, u64> = BTreeMap::new();
        let mut balances: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (account, token, amount) in &genesis.balances {
            let supply = supplies.entry(token).or_default();
            *supply = supply.saturating_add(*amount);
            let balance = balances.entry(balance_key(account, token)).or_default();
            *balance = balance.saturating_add(*amount);
        }
        for token in &genesis.tokens {
            let supply = supplies.get(&token.id).copied().unwrap_or(0);
            writes.insert(key(SUPPLY, &[token.id.as_str().as_bytes()]), Some(encode(&supply)));
        }
        // A balance of 0 is never stored (a `[[balances]]` line of 0 writes nothing).
        for (balance_key, amount) in balances.into_iter().filter(|(_, amount)| *amount > 0) {
            writes.insert(balance_key, Some(encode(&amount)));
        }
        for member in &genesis.governance.members {
            writes.insert(key(MEMBER, &[member.as_bytes()]), Some(encode(&1u8)));
        }
        if !genesis.governance.members.is_empty() {
            writes.insert(key(MEMBER_COUNT, &[]), Some(encode(&(genesis.governance.members.len() as u64))));
        }
        for name in Params::GOVERNABLE {
            let value = genesis.params.get(name).unwrap_or(0);
            writes.insert(key(PARAM, &[name.as_bytes()]), Some(encode(&value)));
        }
        let (writes, lattice, pairs) = state.summarize(writes);
        state.apply(writes, lattice, pairs);
        state
    }

    /// A state from stored pairs (after a restart); the lattice is recomputed.
    pub fn from_pairs(genesis: Arc<Genesis>, pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> State {
        let mut state = State::from_pairs_summarized(genesis, pairs, Lattice::default());
        if let Map::Memory { map, .. } = &state.map {
            state.lattice = Lattice::of(&map.iter().collect::<Vec<_>>());
        }
        state
    }

    /// A state from stored pairs whose lattice is known (the store's summary of them, checked against the tip's
    /// state root): nothing is hashed, and the pairs are checked against it after the start
    /// ([`crate::store::RocksReader::verify_state`]).
    pub fn from_pairs_summarized(
        genesis: Arc<Genesis>,
        pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
        lattice: Lattice,
    ) -> State {
        let map: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().collect();
        let included: HashSet<Id> = map.keys().filter_map(|key| included_id(key)).collect();
        let len = map.len();
        State { genesis, map: Map::Memory { map, included }, lattice, len }
    }

    /// The state whose pairs `backing` holds, with its lattice and number of pairs known (the store's summary,
    /// checked against the tip's state root): read through from now on, with nothing read at the start.
    pub fn on_disk_summarized(genesis: Arc<Genesis>, backing: Arc<dyn Backing>, lattice: Lattice, len: usize) -> State {
        State { genesis, map: Map::Disk(backing), lattice, len }
    }

    /// The state whose pairs `backing` holds, read through from now on; the lattice is recomputed from one pass
    /// over them. Fails if a read fails.
    pub fn on_disk(genesis: Arc<Genesis>, backing: Arc<dyn Backing>) -> Result<State, String> {
        let mut lattice = Lattice::default();
        let mut len = 0;
        let mut batch = Vec::with_capacity(LATTICE_BATCH);
        for pair in backing.range(&[], &[0xff; 64]) {
            batch.push(pair);
            len += 1;
            if batch.len() == LATTICE_BATCH {
                lattice.absorb(&Lattice::of(&batch));
                batch.clear();
            }
        }
        lattice.absorb(&Lattice::of(&batch));
        if let Some(failure) = backing.failure() {
            return Err(failure);
        }
        Ok(State { genesis, map: Map::Disk(backing), lattice, len })
    }

    /// Moves the pairs out of memory to `backing`, which must hold exactly them (the store after the commit of
    /// block 1, which writes the genesis pairs too). A state on disk already stays as it is.
    pub fn spill(&mut self, backing: Arc<dyn Backing>) {
        if matches!(self.map, Map::Memory { .. }) {
            self.map = Map::Disk(backing);
        }
    }

    /// Whether the pairs are read through a [`Backing`] rather than held in memory.
    pub fn is_on_disk(&self) -> bool {
        matches!(self.map, Map::Disk(_))
    }

    /// The first read of the backing that failed, if one did (a state in memory never fails).
    pub fn failure(&self) -> Option<String> {
        match &self.map {
            Map::Memory { .. } => None,
            Map::Disk(backing) => backing.failure(),
        }
    }

    pub fn genesis_info(&self) -> &Arc<Genesis> {
        &self.genesis
    }

    pub fn root(&self) -> Hash {
        self.lattice.root()
    }

    /// Every pair, in key order.
    pub fn pairs(&self) -> Pairs<'_> {
        Kv::range(self, &[], &[0xff; 64])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A block's writes without those that change nothing, with the lattice and the number of pairs after them.
    fn summarize(&self, writes: Writes) -> (Writes, Lattice, usize) {
        let mut lattice = self.lattice.clone();
        let mut len = self.len;
        let mut changes = Writes::new();
        for (key, value) in writes {
            let old = Kv::get(self, &key);
            if old.as_deref() == value.as_deref() {
                continue;
            }
            if let Some(old) = &old {
                lattice.remove(&key, old);
                len = len.saturating_sub(1);
            }
            if let Some(new) = &value {
                lattice.add(&key, new);
                len = len.saturating_add(1);
            }
            changes.insert(key, value);
        }
        (changes, lattice, len)
    }

    /// Applies a block's writes, lattice and count of pairs (from [`State::execute`]). A state on disk only takes
    /// the lattice and count: the store's commit wrote the pairs.
    pub fn apply(&mut self, writes: Writes, lattice: Lattice, pairs: usize) {
        if let Map::Memory { map, included } = &mut self.map {
            for (key, value) in writes {
                if let Some(id) = included_id(&key) {
                    if value.is_some() {
                        included.insert(id);
                    } else {
                        included.remove(&id);
                    }
                }
                match value {
                    Some(value) => {
                        map.insert(key, value);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
            debug_assert_eq!(map.len(), pairs, "the pairs counted by the execution");
        }
        self.lattice = lattice;
        self.len = pairs;
    }

    /// The stateless validation rules entries are checked with at a block's time.
    pub fn entry_config(&self) -> protocol::Config {
        let params = &self.genesis.params;
        let mut config = protocol::Config::new(self.genesis.network.clone());
        config.clock_skew_ms_max = params.clock_skew_ms_max;
        config.lifetime_ms_max = params.entry_lifetime_ms_max;
        config
    }

    /// Whether an entry with this id is on the ledger (within its lifetime; afterwards it could not be included).
    pub fn includes(&self, id: &Id) -> bool {
        match &self.map {
            Map::Memory { included, .. } => included.contains(id),
            Map::Disk(_) => entry_included(self, id),
        }
    }

    /// Executes a block's entries at `context`. `verified` says whether this process already verified the
    /// signature of these exact entry bytes (see [`protocol::validate::revalidate`]).
    pub fn execute<'e>(
        &self,
        context: BlockContext,
        entries: impl IntoIterator<Item = &'e [u8]>,
        verified: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Executed, (usize, EntryError)> {
        let entries: Vec<&[u8]> = entries.into_iter().collect();
        let checked = self.verify_in_batches(&entries, context, verified);
        let config = self.entry_config();
        let mut pending = Pending::new(self, context);
        for (index, (bytes, checked)) in entries.into_iter().zip(checked).enumerate() {
            let envelope = State::check_entry(bytes, &config, context, checked).map_err(|error| (index, error))?;
            pending.run(&envelope).map_err(|error| (index, error))?;
        }
        Ok(pending.finish())
    }

    /// For each entry, whether its signature is known good: `verified` by this process before, or verified here
    /// with the other unverified entries in batches (which give each signature the verdict of single verification,
    /// PROTOCOL.md §3). An entry that fails here is checked again alone, for its exact error.
    fn verify_in_batches(
        &self,
        entries: &[&[u8]],
        context: BlockContext,
        verified: &dyn Fn(&[u8]) -> bool,
    ) -> Vec<bool> {
        let mut checked: Vec<bool> = entries.iter().map(|bytes| verified(bytes)).collect();
        let unverified: Vec<usize> = (0..entries.len()).filter(|index| !checked[*index]).collect();
        if unverified.is_empty() {
            return checked;
        }
        let slices: Vec<&[u8]> = unverified.iter().map(|index| entries[*index]).collect();
        let results = protocol::validate_batch(&slices, &self.entry_config(), context.time_ms);
        for (index, result) in unverified.into_iter().zip(results) {
            checked[index] = result.is_ok();
        }
        checked
    }

    /// Builds a block's entries from candidates in order: keeps those that execute (and fit the limits), and
    /// returns them with the execution and the rejected candidates' errors.
    pub fn build(&self, context: BlockContext, candidates: Vec<Vec<u8>>, verified: &dyn Fn(&[u8]) -> bool) -> Built {
        let params = &self.genesis.params;
        let entries_max = usize::try_from(params.block_entries_max).unwrap_or(usize::MAX);
        let bytes_max = usize::try_from(params.block_bytes_max).unwrap_or(usize::MAX).saturating_sub(4096);
        let config = self.entry_config();
        let mut pending = Pending::new(self, context);
        let mut kept = Vec::new();
        let mut rejected = Vec::new();
        let mut bytes_total = 0usize;
        for bytes in candidates {
            if kept.len() >= entries_max || bytes_total.saturating_add(bytes.len() + 5) > bytes_max {
                break;
            }
            let result = State::check_entry(&bytes, &config, context, verified(&bytes))
                .and_then(|envelope| pending.run(&envelope));
            match result {
                Ok(()) => {
                    bytes_total += bytes.len() + 5;
                    kept.push(bytes);
                }
                Err(error) => rejected.push((bytes, error)),
            }
        }
        Built { entries: kept, executed: pending.finish(), rejected }
    }

    /// Validates an entry at the block's time; `verified`: its signature is known good.
    fn check_entry(
        bytes: &[u8],
        config: &protocol::Config,
        context: BlockContext,
        verified: bool,
    ) -> Result<Envelope, EntryError> {
        let validated = if verified {
            protocol::validate::revalidate(bytes, config, context.time_ms)
        } else {
            protocol::validate(bytes, config, context.time_ms)
        }
        .map_err(|error| EntryError::Invalid(error.to_string()))?;
        Ok(validated.envelope)
    }
}

/// A block in execution: writes over the state, with an undo log per entry.
struct Pending<'s> {
    base: &'s State,
    context: BlockContext,
    writes: Writes,
    undo: Vec<Undo>,
    events: Vec<Event>,
    ids: Vec<Id>,
}

/// A block in execution reads as the state it is making: the shared reads ([`TradeReads`] and the others) run on
/// it as they run on a committed state, so a check the node makes before the block and the block's own are one.
impl Kv for Pending<'_> {
    fn genesis(&self) -> &Genesis {
        &self.base.genesis
    }

    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        Pending::get(self, key)
    }

    fn range<'a>(&'a self, start: &[u8], end: &[u8]) -> Pairs<'a> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let pairs = self.scan(start.to_vec(), end.to_vec());
        Box::new(pairs.into_iter().map(|(key, value)| (Cow::Owned(key), Cow::Owned(value))))
    }
}

impl<'s> Pending<'s> {
    fn new(base: &'s State, context: BlockContext) -> Pending<'s> {
        Pending { base, context, writes: Writes::new(), undo: Vec::new(), events: Vec::new(), ids: Vec::new() }
    }

    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        match self.writes.get(key) {
            Some(Some(value)) => Some(Cow::Borrowed(value)),
            Some(None) => None,
            None => Kv::get(self.base, key),
        }
    }

    fn read<T: Serialize + DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        self.get(key).and_then(|bytes| decode(&bytes))
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.writes.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    fn write<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.put(key, Some(encode(value)));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.put(key, None);
    }

    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some((key, previous)) = self.undo.pop() else { break };
            match previous {
                Some(value) => {
                    self.writes.insert(key, value);
                }
                None => {
                    self.writes.remove(&key);
                }
            }
        }
    }

    /// Keys with `prefix` whose next 8 bytes (big-endian) are at most `limit`, over the base and the writes.
    fn due(&self, prefix: u8, limit: u64) -> Vec<Vec<u8>> {
        let start = vec![prefix];
        let mut end = vec![prefix];
        end.extend_from_slice(&limit.saturating_add(1).to_be_bytes());
        let mut keys: Vec<Vec<u8>> = Kv::range(self.base, &start, &end)
            .map(|(key, _)| key.into_owned())
            .filter(|key| !matches!(self.writes.get(key), Some(None)))
            .collect();
        keys.extend(self.writes.range(start..end).filter(|(_, value)| value.is_some()).map(|(key, _)| key.clone()));
        keys.sort();
        keys.dedup();
        keys
    }

    /// The pairs with keys in `start..end`, over the base and the writes.
    fn scan(&self, start: Vec<u8>, end: Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)> {
        if start >= end {
            return Vec::new();
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            Kv::range(self.base, &start, &end).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        for (key, value) in self.writes.range(start..end) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_iter().collect()
    }

    /// Counts a checked delivery of `account` to or from `counterparty` (PROTOCOL.md §10, *reputation*): at most
    /// one per pair of accounts and epoch of `reputation_pair_epoch_ms`, and a pair's first counts a counterparty.
    fn count_delivery(&mut self, account: &PublicKey, counterparty: &PublicKey) {
        let epoch_ms = self.base.genesis.params.reputation_pair_epoch_ms.max(1);
        let epoch = self.context.time_ms / epoch_ms;
        let (low, high) = if account <= counterparty { (account, counterparty) } else { (counterparty, account) };
        let pair_key = key(PAIR, &[low.as_bytes(), high.as_bytes(), account.as_bytes()]);
        let last: Option<u64> = self.read(&pair_key);
        if last.is_some_and(|last| last >= epoch) {
            return;
        }
        self.write(pair_key, &epoch);
        self.reputation(account, |reputation| {
            reputation.deliveries += 1;
            if last.is_none() {
                reputation.counterparties += 1;
            }
        });
    }

    /// Deletes `target` at the first block at or after `at_ms`.
    fn forget_at(&mut self, at_ms: u64, target: &[u8]) {
        self.put(key(FORGET, &[&at_ms.to_be_bytes(), target]), Some(Vec::new()));
    }

    fn balance(&self, account: &PublicKey, token: &TokenId) -> u64 {
        self.read(&balance_key(account, token)).unwrap_or(0)
    }

    fn reputation(&mut self, account: &PublicKey, update: impl FnOnce(&mut Reputation)) {
        let reputation_key = key(REPUTATION, &[account.as_bytes()]);
        let mut reputation: Reputation = self.read(&reputation_key).unwrap_or_default();
        update(&mut reputation);
        self.write(reputation_key, &reputation);
    }

    fn param(&self, name: &str) -> u64 {
        self.read(&key(PARAM, &[name.as_bytes()])).unwrap_or(0)
    }

    /// Runs one entry; on error, undoes what it wrote.
    fn run(&mut self, envelope: &Envelope) -> Result<(), EntryError> {
        let mark = self.undo.len();
        let events = self.events.len();
        let result = self.run_inner(envelope);
        match result {
            Ok(()) => {
                let id = envelope.id();
                if let Some(event) = entry_event(&id, envelope) {
                    self.events.push(event);
                }
                self.ids.push(id);
            }
            Err(_) => {
                self.rollback(mark);
                // A refused entry did nothing, so it says nothing either.
                self.events.truncate(events);
            }
        }
        result
    }

    fn run_inner(&mut self, envelope: &Envelope) -> Result<(), EntryError> {
        let id = envelope.id();
        let included_key = key(INCLUDED, &[id.as_bytes()]);
        let included = match self.writes.get(&included_key) {
            Some(value) => value.is_some(),
            None => self.base.includes(&id),
        };
        if included {
            return Err(EntryError::Duplicate(id));
        }
        self.write(included_key, &envelope.expires_ms);
        self.put(key(INCLUDED_BY_EXPIRY, &[&envelope.expires_ms.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
        let fee = self.param("fee_per_entry");
        if fee > 0 {
            let fee_token = TokenId::new(self.base.genesis.params.fee_token.clone())
                .map_err(|error| EntryError::Invalid(error.to_string()))?;
            self.move_tokens(&envelope.author, &COMMONS, &fee_token, fee)?;
        }
        let author = envelope.author;
        match &envelope.body {
            Body::Offer(_) => Err(EntryError::NotAnEntry("offer")),
            Body::BarterOffer(_) => Err(EntryError::NotAnEntry("barter offer")),
            Body::Cancel(cancel) => self.cancel(envelope, cancel),
            Body::Transfer(transfer) => self.move_tokens(&author, &transfer.to, &transfer.token, transfer.amount),
            Body::Mint(mint) => self.mint_entry(&author, mint),
            Body::Burn(burn) => self.burn(&author, burn),
            Body::Reading(reading) => self.anchor_reading(&author, &id, reading),
            Body::Settlement(settlement) => self.settle(&id, settlement),
            Body::BarterCycle(cycle) => self.barter(&id, cycle),
            Body::Proposal(proposal) => self.propose(&author, &id, proposal),
            Body::Vote(vote) => self.vote(&author, vote),
            Body::Guild(guild) => self.found_guild(&id, guild),
            Body::GuildSpend(spend) => self.ask_guild_spend(&author, &id, spend),
            Body::GuildApproval(approval) => self.approve(&author, &approval.spend),
            Body::Alert(alert) => self.raise_alert(&author, &id, alert),
            Body::Report(report) => self.report(&author, &id, report),
            Body::Job(job) => self.post_job(&author, &id, job, false),
            Body::Bid(bid) => self.bid(&author, &id, bid),
            Body::Award(award) => self.award_entry(&author, award),
            Body::Deliver(deliver) => self.deliver(&author, deliver),
            // A verdict or dispute names a job or a barter leg (PROTOCOL.md §10).
            Body::Verdict(verdict) if self.cell_case(&verdict.job).is_some() => {
                self.case_verdict(&author, &verdict.job, verdict.outcome)
            }
            Body::Verdict(verdict) if self.barter_leg(&verdict.job).is_some() => {
                self.barter_verdict(&author, &verdict.job, verdict.outcome)
            }
            Body::Dispute(dispute) if self.barter_leg(&dispute.job).is_some() => {
                self.barter_dispute(&author, &dispute.job)
            }
            Body::Verdict(verdict) => self.verdict(&author, verdict),
            Body::Dispute(dispute) => self.dispute(&author, dispute),
            Body::Asset(asset) => self.register_asset(&author, &id, asset),
        }
    }

    /// End of block: release due escrows, close proposals whose period ended, forget expired markers.
    fn end_block(&mut self) {
        let now = self.context.time_ms;
        // Cells' intervals close before their escrows are released: a feeder case holds them.
        self.cells_due();
        for index_key in self.due(ESCROW_BY_RELEASE, now) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let escrow_key = key(ESCROW, &[id.as_bytes()]);
            if let Some(escrow) = self.read::<Escrow>(&escrow_key) {
                self.delete(escrow_key);
                self.release(id, &escrow);
            }
        }
        for index_key in self.due(FORGET, now) {
            self.delete(index_key.clone());
            if let Some(target) = index_key.get(9..) {
                self.delete(target.to_vec());
            }
        }
        self.redistribute();
        self.expire_overrides();
        self.jobs_due();
        self.barter_legs_due();
        for index_key in self.due(PROPOSAL_BY_END, self.context.height) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let proposal_key = key(PROPOSAL, &[id.as_bytes()]);
            if let Some(mut proposal) = self.read::<ProposalState>(&proposal_key)
                && proposal.status == ProposalStatus::Open
            {
                // The period is over: quorum of all the weight voted, and the threshold of yes among yes and no.
                let (_, total, quorum, threshold) = self.rule_of(&proposal.action);
                let turnout = u128::from(proposal.yes) + u128::from(proposal.no) + u128::from(proposal.abstain);
                let decided = u128::from(proposal.yes) + u128::from(proposal.no);
                let passed = quorum <= 100
                    && proposal.yes > 0
                    && turnout * 100 >= u128::from(total) * u128::from(quorum)
                    && u128::from(proposal.yes) * 100 >= decided * u128::from(threshold);
                self.close(&id, &mut proposal, passed);
                self.write(proposal_key, &proposal);
            }
        }
        self.change_validators();
        for (index, marker) in
            [(INCLUDED_BY_EXPIRY, INCLUDED), (CANCELLED_BY_EXPIRY, CANCELLED), (FILLED_BY_EXPIRY, FILLED)]
        {
            for index_key in self.due(index, now) {
                self.delete(index_key.clone());
                // What follows the time: the entry or offer id (and, for cancels, the canceller).
                if let Some(target) = index_key.get(9..) {
                    self.delete(key(marker, &[target]));
                }
            }
        }
    }

    fn finish(mut self) -> Executed {
        self.end_block();
        // Last of all (PROTOCOL.md §10, *end of each block*).
        self.apply_upgrade();
        // Drop writes that change nothing, so the lattice and the store see only real changes.
        let (writes, lattice, pairs) = self.base.summarize(self.writes);
        Executed { state_root: lattice.root(), lattice, pairs, writes, events: self.events, ids: self.ids }
    }
}

fn check_offer_pair(bid: &Offer, ask: &Offer, settlement: &Settlement) -> Result<(), EntryError> {
    if bid.side != Side::Bid || ask.side != Side::Ask || bid.pool != ask.pool {
        return Err(EntryError::Invalid("settlement offers do not pair".into()));
    }
    if settlement.unit_price < ask.unit_price || settlement.unit_price > bid.unit_price {
        return Err(EntryError::Price);
    }
    Ok(())
}

/// `blake3("kos/v1/validators" || 0x00 || CBOR([key, power]) || CBOR([key, power]) || ...)` over the set in key
/// order: the pairs' encodings one after the other, not one array.
pub fn validators_hash(validators: &[(PublicKey, u64)]) -> Hash {
    let mut bytes = Vec::new();
    for (key, power) in validators {
        bytes.extend_from_slice(&codec::encode(&(key, power)));
    }
    hash::tagged("kos/v1/validators", &[&bytes])
}

/// The kinds a block may carry.
pub fn is_entry_kind(kind: Kind) -> bool {
    !matches!(kind, Kind::Offer | Kind::BarterOffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statuses are kept in the state as their numbers: the state's encoding, and so its root, is what it was when
    /// they were plain integers.
    #[test]
    fn statuses_are_kept_as_their_numbers() {
        let jobs = [
            JobStatus::Open,
            JobStatus::Awarded,
            JobStatus::Disputed,
            JobStatus::Done,
            JobStatus::Failed,
            JobStatus::Closed,
        ];
        for (number, status) in jobs.into_iter().enumerate() {
            assert_eq!(encode(&status), encode(&(number as u8)));
            assert_eq!(decode::<JobStatus>(&encode(&(number as u8))), Some(status));
        }
        for (number, status) in
            [ProposalStatus::Open, ProposalStatus::Passed, ProposalStatus::Rejected].into_iter().enumerate()
        {
            assert_eq!(encode(&status), encode(&(number as u8)));
        }
        for (number, status) in [SpendStatus::Pending, SpendStatus::Done].into_iter().enumerate() {
            assert_eq!(encode(&status), encode(&(number as u8)));
        }
        // A number no status has is not read as one.
        assert_eq!(decode::<JobStatus>(&encode(&6u8)), None);
    }
}
