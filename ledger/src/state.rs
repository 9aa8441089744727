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

mod commons;
mod governance;
mod jobs;
mod read;
mod tokens;
mod trade;

pub use commons::CommonsReads;
pub use governance::GovernanceReads;
pub use jobs::JobReads;
pub use jobs::{
    BIDS_PER_JOB_MAX, BidState, JOBS_DUE_PER_BLOCK, JOBS_PER_POSTER_MAX, JobState, bid_cost, job_escrow_account,
    status as job_status, winner,
};
pub use read::{Kv, Pairs};
pub use tokens::TokenReads;
pub use trade::TradeReads;

/// The account that receives fees and escrow penalties: the all-zero key, for which nobody can sign.
pub const COMMONS: PublicKey = PublicKey([0; 32]);

const LANES: usize = 1024;

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
    Governance(&'static str),
    #[error("no asset {0} is registered")]
    UnknownAsset(Id),
    #[error("price {price} is below the pool's base price {base}")]
    BelowBasePrice { price: u64, base: u64 },
    #[error("no job {0} is on the ledger")]
    UnknownJob(Id),
    #[error("{0}")]
    Job(&'static str),
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

    pub fn root(&self) -> Hash {
        let mut bytes = Vec::with_capacity(LANES * 2);
        for lane in self.0.iter() {
            bytes.extend_from_slice(&lane.to_le_bytes());
        }
        hash::tagged("kos/v1/state", &[&bytes])
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
    /// A guild spend reached its threshold: `amount` of `token` moved from the guild's account to `to`.
    GuildSpent {
        spend: Id,
        guild: PublicKey,
        to: PublicKey,
        token: TokenId,
        amount: u64,
    },
}

/// The event an executed entry is itself: a settled trade, an anchored reading, a settled barter cycle.
fn entry_event(id: &Id, envelope: &Envelope) -> Option<Event> {
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
#[derive(Debug, Clone)]
pub struct State {
    genesis: Arc<Genesis>,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    lattice: Lattice,
    /// The ids under `x` (replay guards), mirrored from `map` for the check every entry needs: a hash lookup
    /// instead of a search among all the keys.
    included: HashSet<Id>,
}

// Key prefixes (PROTOCOL.md §10).
const BALANCE: u8 = b'b';
const SUPPLY: u8 = b's';
const VALIDATOR: u8 = b'v';
const PARAM: u8 = b'p';
const INCLUDED: u8 = b'x';
const INCLUDED_BY_EXPIRY: u8 = b'X';
const CANCELLED: u8 = b'c';
const CANCELLED_BY_EXPIRY: u8 = b'C';
const FILLED: u8 = b'f';
const FILLED_BY_EXPIRY: u8 = b'F';
const ESCROW: u8 = b'e';
const ESCROW_BY_RELEASE: u8 = b'q';
const METER: u8 = b'm';
const ANCHOR: u8 = b'a';
const REPUTATION: u8 = b'r';
const PROPOSAL: u8 = b'g';
const PROPOSAL_BY_END: u8 = b'G';
const BALLOT: u8 = b'w';
const FLOW: u8 = b'l';
const SOLD: u8 = b'o';
const BOUGHT: u8 = b'u';
const FORGET: u8 = b'z';
const PRICE_INDEX: u8 = b'i';
const GUILD: u8 = b'k';
const GUILD_SPEND: u8 = b'd';
const GUILD_APPROVAL: u8 = b'y';
const ASSET: u8 = b'n';
const ASSET_BY_METER: u8 = b'N';
const MEMBER: u8 = b'M';
const VALIDATOR_PENDING: u8 = b'P';
const OVERRIDE: u8 = b'O';
const OVERRIDE_BY_END: u8 = b'Q';
const FROZEN: u8 = b'Z';
const FUEL_CAP: u8 = b'U';
const DEVICE_CAP: u8 = b'D';
const ISLAND_ORDER: u8 = b'I';
const ALERT: u8 = b'A';
const BASE_PRICE: u8 = b'B';
const BASE_PRICE_HISTORY: u8 = b'H';
const ESSENTIAL_BOUGHT: u8 = b'E';
const ISSUANCE: u8 = b'T';
const MEMBER_COUNT: u8 = b'S';
/// Most one-account-one-vote members (genesis and admitted).
const MEMBERS_MAX: u64 = 16_384;
const REDISTRIBUTION: u8 = b'J';
const POOL_FEE: u8 = b'K';
/// Most periods a dynamic base price is rolled over at once (after that many quiet periods it has settled).
const BASE_PRICE_ROLL_MAX: u64 = 10_000;
const REPORT: u8 = b'R';
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

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|part| part.len()).sum::<usize>());
    key.push(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// The entry id of a replay guard's key (`x` ‖ id).
fn included_id(key: &[u8]) -> Option<Id> {
    match key {
        [INCLUDED, id @ ..] => <[u8; 32]>::try_from(id).ok().map(Id),
        _ => None,
    }
}

fn balance_key(account: &PublicKey, token: &TokenId) -> Vec<u8> {
    key(BALANCE, &[account.as_bytes(), token.as_str().as_bytes()])
}

/// A pool's period length for prices: its delivery interval, or an hour in continuous pools.
fn period_len_s(pool: &protocol::message::PoolId) -> u64 {
    if pool.interval_s == 0 { 3600 } else { u64::from(pool.interval_s) }
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

fn price_index_key(pool: &protocol::message::PoolId, period_s: u64) -> Vec<u8> {
    key(PRICE_INDEX, &[pool.digest().as_bytes(), &period_s.to_be_bytes()])
}

fn interval_key(prefix: u8, account: &PublicKey, start_s: u64) -> Vec<u8> {
    key(prefix, &[account.as_bytes(), &start_s.to_be_bytes()])
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
            .rposition(|tier| score >= tier.score_min_ppm && self.deliveries >= tier.deliveries_min)
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
    /// 0 pending, 1 done (the tokens moved).
    pub status: u8,
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
    /// 0 open, 1 passed, 2 rejected.
    pub status: u8,
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
            map: BTreeMap::new(),
            lattice: Lattice::default(),
            included: HashSet::new(),
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
        for (balance_key, amount) in balances {
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
        let lattice = state.lattice_after(&writes);
        state.apply(writes, lattice);
        state
    }

    /// A state from stored pairs (after a restart); the lattice is recomputed.
    pub fn from_pairs(genesis: Arc<Genesis>, pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> State {
        let mut lattice = Lattice::default();
        let map: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().collect();
        let mut included = HashSet::new();
        for (key, value) in &map {
            lattice.add(key, value);
            if let Some(id) = included_id(key) {
                included.insert(id);
            }
        }
        State { genesis, map, lattice, included }
    }

    pub fn genesis_info(&self) -> &Arc<Genesis> {
        &self.genesis
    }

    pub fn root(&self) -> Hash {
        self.lattice.root()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn lattice_after(&self, writes: &Writes) -> Lattice {
        let mut lattice = self.lattice.clone();
        for (key, value) in writes {
            if let Some(old) = self.map.get(key) {
                lattice.remove(key, old);
            }
            if let Some(new) = value {
                lattice.add(key, new);
            }
        }
        lattice
    }

    /// Applies a block's writes (from [`State::execute`]).
    pub fn apply(&mut self, writes: Writes, lattice: Lattice) {
        for (key, value) in writes {
            if let Some(id) = included_id(&key) {
                if value.is_some() {
                    self.included.insert(id);
                } else {
                    self.included.remove(&id);
                }
            }
            match value {
                Some(value) => {
                    self.map.insert(key, value);
                }
                None => {
                    self.map.remove(&key);
                }
            }
        }
        self.lattice = lattice;
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
        self.included.contains(id)
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

impl<'s> Pending<'s> {
    fn new(base: &'s State, context: BlockContext) -> Pending<'s> {
        Pending { base, context, writes: Writes::new(), undo: Vec::new(), events: Vec::new(), ids: Vec::new() }
    }

    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        match self.writes.get(key) {
            Some(Some(value)) => Some(Cow::Borrowed(value)),
            Some(None) => None,
            None => self.base.map.get(key).map(|value| Cow::Borrowed(value.as_slice())),
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
        let mut keys: Vec<Vec<u8>> = self
            .base
            .map
            .range(start.clone()..end.clone())
            .map(|(key, _)| key.clone())
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
            self.base.map.range(start.clone()..end.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, value) in self.writes.range(start..end) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_iter().collect()
    }

    /// Deletes `target` at the first block at or after `at_ms`.
    fn forget_at(&mut self, at_ms: u64, target: &[u8]) {
        self.put(key(FORGET, &[&at_ms.to_be_bytes(), target]), Some(Vec::new()));
    }

    fn balance(&self, account: &PublicKey, token: &TokenId) -> u64 {
        self.read(&balance_key(account, token)).unwrap_or(0)
    }

    fn credit(&mut self, account: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let balance = self.balance(account, token).checked_add(amount).ok_or(EntryError::Overflow)?;
        self.write(balance_key(account, token), &balance);
        Ok(())
    }

    fn debit(&mut self, account: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let balance = self.balance(account, token);
        let left = balance.checked_sub(amount).ok_or_else(|| EntryError::InsufficientFunds {
            account: *account,
            token: token.clone(),
            balance,
            needed: amount,
        })?;
        if left == 0 {
            self.delete(balance_key(account, token));
        } else {
            self.write(balance_key(account, token), &left);
        }
        Ok(())
    }

    fn move_tokens(
        &mut self,
        from: &PublicKey,
        to: &PublicKey,
        token: &TokenId,
        amount: u64,
    ) -> Result<(), EntryError> {
        if self.base.genesis.token(token).is_none() {
            return Err(EntryError::UnknownToken(token.clone()));
        }
        self.debit(from, token, amount)?;
        self.credit(to, token, amount)
    }

    fn change_supply(&mut self, token: &TokenId, add: u64, sub: u64) -> Result<(), EntryError> {
        let supply_key = key(SUPPLY, &[token.as_str().as_bytes()]);
        let supply: u64 = self.read(&supply_key).unwrap_or(0);
        let supply = supply.checked_add(add).and_then(|supply| supply.checked_sub(sub)).ok_or(EntryError::Overflow)?;
        self.write(supply_key, &supply);
        Ok(())
    }

    /// A token's issuance rule: the genesis', or the latest governance changed it to.
    fn token_rules(&self, token: &TokenId) -> Option<crate::genesis::Token> {
        let mut rules = self.base.genesis.token(token)?.clone();
        if let Some(changed) =
            self.read::<protocol::message::IssuanceRule>(&key(ISSUANCE, &[token.as_str().as_bytes()]))
        {
            rules.issuers = changed.issuers.as_slice().iter().copied().collect();
            rules.supply_max = (changed.supply_max > 0).then_some(changed.supply_max);
            rules.export_reward_per_kwh = changed.export_reward_per_kwh;
        }
        Some(rules)
    }

    fn mint(&mut self, to: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let rules = self.token_rules(token).ok_or_else(|| EntryError::UnknownToken(token.clone()))?;
        if let Some(cap) = rules.supply_max {
            let supply: u64 = self.read(&key(SUPPLY, &[token.as_str().as_bytes()])).unwrap_or(0);
            if supply.checked_add(amount).is_none_or(|total| total > cap) {
                return Err(EntryError::SupplyCap { amount, cap });
            }
        }
        self.change_supply(token, amount, 0)?;
        self.credit(to, token, amount)
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
            Body::Cancel(cancel) => {
                // A cancel on the ledger stops later settlements of the offer. The marker lives as long as the
                // offer could (its creation precedes the cancel's).
                let until = envelope.created_ms.saturating_add(
                    self.base
                        .genesis
                        .params
                        .entry_lifetime_ms_max
                        .max(protocol::validate::Config::LIFETIME_MS_MAX_DEFAULT),
                );
                // Keyed by offer and canceller: only the offer's author's cancel counts, and nobody can undo it.
                self.write(key(CANCELLED, &[cancel.offer.as_bytes(), author.as_bytes()]), &author);
                self.put(
                    key(CANCELLED_BY_EXPIRY, &[&until.to_be_bytes(), cancel.offer.as_bytes(), author.as_bytes()]),
                    Some(Vec::new()),
                );
                Ok(())
            }
            Body::Transfer(transfer) => self.move_tokens(&author, &transfer.to, &transfer.token, transfer.amount),
            Body::Mint(mint) => {
                let rules =
                    self.token_rules(&mint.token).ok_or_else(|| EntryError::UnknownToken(mint.token.clone()))?;
                if !rules.issuers.contains(&author) {
                    return Err(EntryError::NotIssuer(author));
                }
                self.mint(&mint.to, &mint.token, mint.amount)
            }
            Body::Burn(burn) => {
                if self.base.genesis.token(&burn.token).is_none() {
                    return Err(EntryError::UnknownToken(burn.token.clone()));
                }
                self.debit(&author, &burn.token, burn.amount)?;
                self.change_supply(&burn.token, 0, burn.amount)
            }
            Body::Reading(reading) => self.anchor_reading(&author, &id, reading),
            Body::Settlement(settlement) => self.settle(&id, settlement),
            Body::BarterCycle(cycle) => {
                for leg in cycle.legs.as_slice() {
                    let Body::BarterOffer(offer) = &leg.offer.body else {
                        return Err(EntryError::Invalid("barter leg is not a barter offer".into()));
                    };
                    self.check_not_frozen(&leg.offer.author)?;
                    self.fill(&leg.offer, offer.give_quantity, leg.give_quantity)?;
                    self.reputation(&leg.offer.author, |reputation| reputation.barters += 1);
                }
                Ok(())
            }
            Body::Proposal(proposal) => {
                let period_max = self.base.genesis.params.voting_period_blocks_max;
                if proposal.voting_period_blocks == 0 || proposal.voting_period_blocks > period_max {
                    return Err(EntryError::VotingPeriod(period_max));
                }
                match &proposal.action {
                    Action::Emergency(measure) => {
                        let governance = &self.base.genesis.governance;
                        if governance.stewards.is_empty() {
                            return Err(EntryError::Governance("the genesis names no stewards for emergencies"));
                        }
                        if measure.duration_blocks > governance.emergency_blocks_max {
                            return Err(EntryError::Governance("an emergency override lasts longer than allowed"));
                        }
                    }
                    Action::Override(measure) if measure.duration_blocks > OVERRIDE_BLOCKS_MAX => {
                        return Err(EntryError::Governance("an override lasts at most 1000000 blocks"));
                    }
                    _ => {}
                }
                let end_height = self.context.height.saturating_add(u64::from(proposal.voting_period_blocks));
                // Closing proposals is end-of-block work: a bounded number may end at one height.
                let ending = key(PROPOSAL_BY_END, &[&end_height.to_be_bytes()]);
                let after = key(PROPOSAL_BY_END, &[&end_height.saturating_add(1).to_be_bytes()]);
                if self.scan(ending, after).len() >= PROPOSALS_ENDING_MAX {
                    return Err(EntryError::Governance("too many proposals end at that height; choose another period"));
                }
                let record = ProposalState {
                    author,
                    action: proposal.action.clone(),
                    end_height,
                    yes: 0,
                    no: 0,
                    abstain: 0,
                    status: 0,
                };
                self.write(key(PROPOSAL, &[id.as_bytes()]), &record);
                self.put(key(PROPOSAL_BY_END, &[&end_height.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
                Ok(())
            }
            Body::Vote(vote) => self.vote(&author, vote),
            Body::Guild(guild) => {
                let account = protocol::message::guild_account(&id);
                let record = GuildState {
                    name: guild.name.as_str().to_string(),
                    members: guild.members.as_slice().to_vec(),
                    threshold: guild.threshold,
                    created_by: id,
                };
                self.write(key(GUILD, &[account.as_bytes()]), &record);
                Ok(())
            }
            Body::GuildSpend(spend) => {
                if self.base.genesis.token(&spend.token).is_none() {
                    return Err(EntryError::UnknownToken(spend.token.clone()));
                }
                let record = GuildSpendState {
                    guild: spend.guild,
                    to: spend.to,
                    token: spend.token.clone(),
                    amount: spend.amount,
                    approvals: 0,
                    status: 0,
                };
                self.write(key(GUILD_SPEND, &[id.as_bytes()]), &record);
                self.approve(&author, &id)
            }
            Body::GuildApproval(approval) => self.approve(&author, &approval.spend),
            Body::Alert(alert) => {
                if self.get(&key(ASSET, &[alert.asset.as_bytes()])).is_none() {
                    return Err(EntryError::UnknownAsset(alert.asset));
                }
                let alert_key =
                    key(ALERT, &[alert.asset.as_bytes(), &self.context.height.to_be_bytes(), id.as_bytes()]);
                let record = AlertState { id, author, alert: alert.clone(), height: self.context.height };
                self.write(alert_key.clone(), &record);
                self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &alert_key);
                self.events.push(Event::AlertRaised { alert: id, asset: alert.asset, rule: alert.rule });
                self.maintenance_quest(&id, alert);
                Ok(())
            }
            Body::Report(report) => {
                if let Some(asset) = report.asset.as_slice().first()
                    && self.get(&key(ASSET, &[asset.as_bytes()])).is_none()
                {
                    return Err(EntryError::UnknownAsset(*asset));
                }
                let report_key = key(REPORT, &[id.as_bytes()]);
                let record = ReportState {
                    author,
                    report: report.clone(),
                    height: self.context.height,
                    time_ms: self.context.time_ms,
                };
                self.write(report_key.clone(), &record);
                self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &report_key);
                self.events.push(Event::Reported { report: id, severity: report.severity });
                Ok(())
            }
            Body::Job(job) => self.post_job(&author, &id, job, false),
            Body::Bid(bid) => self.bid(&author, &id, bid),
            Body::Award(award) => self.award_entry(&author, award),
            Body::Deliver(deliver) => self.deliver(&author, deliver),
            Body::Verdict(verdict) => self.verdict(&author, verdict),
            Body::Dispute(dispute) => self.dispute(&author, dispute),
            Body::Asset(asset) => {
                let record = AssetState { author, manifest: asset.clone(), readings: 0, last_interval_start_s: 0 };
                self.write(key(ASSET, &[id.as_bytes()]), &record);
                for meter in asset.meters.as_slice() {
                    self.write(key(ASSET_BY_METER, &[author.as_bytes(), meter.as_str().as_bytes()]), &id);
                }
                Ok(())
            }
        }
    }

    /// Counts a member's approval of a pending spend; the approval that reaches the guild's threshold moves the
    /// tokens (and fails, leaving the spend pending, when the guild's balance does not cover them).
    fn approve(&mut self, member: &PublicKey, spend_id: &Id) -> Result<(), EntryError> {
        let spend_key = key(GUILD_SPEND, &[spend_id.as_bytes()]);
        let mut spend: GuildSpendState = self
            .read(&spend_key)
            .filter(|spend: &GuildSpendState| spend.status == 0)
            .ok_or(EntryError::SpendClosed(*spend_id))?;
        let guild: GuildState =
            self.read(&key(GUILD, &[spend.guild.as_bytes()])).ok_or(EntryError::NotAGuild(spend.guild))?;
        if !guild.members.contains(member) {
            return Err(EntryError::NotAGuildMember(*member));
        }
        let approval_key = key(GUILD_APPROVAL, &[spend_id.as_bytes(), member.as_bytes()]);
        if self.get(&approval_key).is_some() {
            return Err(EntryError::AlreadyApproved(*member));
        }
        self.write(approval_key, &1u8);
        spend.approvals = spend.approvals.saturating_add(1);
        if spend.approvals >= guild.threshold {
            self.move_tokens(&spend.guild, &spend.to, &spend.token, spend.amount)?;
            spend.status = 1;
            self.events.push(Event::GuildSpent {
                spend: *spend_id,
                guild: spend.guild,
                to: spend.to,
                token: spend.token.clone(),
                amount: spend.amount,
            });
        }
        self.write(spend_key, &spend);
        Ok(())
    }

    fn anchor_reading(
        &mut self,
        author: &PublicKey,
        id: &Id,
        reading: &protocol::message::Reading,
    ) -> Result<(), EntryError> {
        let meter_key = key(METER, &[author.as_bytes(), reading.meter.as_str().as_bytes()]);
        // The previous reading's interval is taken to be this one's (a meter keeps its interval length).
        let previous = self.read::<MeterState>(&meter_key).map(|last| energy::reading::Previous {
            interval_start_s: last.interval_start_s,
            interval_s: reading.interval_s,
            import_counter_wh: last.import_counter_wh,
            export_counter_wh: last.export_counter_wh,
        });
        let now_s = self.context.time_ms / 1000;
        // A meter bound to a registered asset is held to the asset's rated limits; others to a household's.
        let asset_key = self
            .read::<Id>(&key(ASSET_BY_METER, &[author.as_bytes(), reading.meter.as_str().as_bytes()]))
            .map(|asset| key(ASSET, &[asset.as_bytes()]));
        let mut asset = asset_key.as_ref().and_then(|asset_key| self.read::<AssetState>(asset_key));
        let mut capacity = asset.as_ref().map_or(energy::reading::Capacity::RESIDENTIAL, AssetState::capacity);
        // An override may cap the device's import and export below what it is rated for.
        if let Some(cap) =
            self.read::<InForce>(&key(DEVICE_CAP, &[author.as_bytes(), reading.meter.as_str().as_bytes()]))
        {
            capacity.import_w_max = capacity.import_w_max.min(cap.first);
            capacity.export_w_max = capacity.export_w_max.min(cap.second);
        }
        match energy::reading::check(reading, previous.as_ref(), &capacity, now_s) {
            Ok(()) => {}
            Err(energy::reading::Invalid::NotAfterPrevious | energy::reading::Invalid::Register { .. }) => {
                return Err(EntryError::ReadingOutOfOrder { meter: reading.meter.as_str().to_owned() });
            }
            Err(invalid) => {
                return Err(EntryError::ReadingImplausible {
                    meter: reading.meter.as_str().to_owned(),
                    reason: invalid.to_string(),
                });
            }
        }
        self.write(
            meter_key,
            &MeterState {
                interval_start_s: reading.interval_start_s,
                import_counter_wh: reading.import_counter_wh,
                export_counter_wh: reading.export_counter_wh,
                reading: *id,
            },
        );
        if let (Some(asset_key), Some(asset)) = (asset_key, asset.as_mut()) {
            asset.readings = asset.readings.saturating_add(1);
            asset.last_interval_start_s = reading.interval_start_s;
            self.write(asset_key, asset);
        }
        // The account's energy flows per interval start, summed over its meters: what trades are checked against.
        let flow_key = interval_key(FLOW, author, reading.interval_start_s);
        let (import_wh, export_wh): (u64, u64) = self.read(&flow_key).unwrap_or((0, 0));
        if import_wh == 0 && export_wh == 0 && self.get(&flow_key).is_none() {
            let end_ms = reading.interval_start_s.saturating_add(u64::from(reading.interval_s)).saturating_mul(1000);
            self.forget_at(end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &flow_key);
        }
        self.write(
            flow_key,
            &(import_wh.saturating_add(reading.import_wh), export_wh.saturating_add(reading.export_wh)),
        );
        let anchor_key = key(ANCHOR, &[&reading.interval_start_s.to_be_bytes()]);
        let previous: Hash = self.read(&anchor_key).unwrap_or(Hash::ZERO);
        self.write(anchor_key, &hash::tagged("kos/v1/anchor", &[previous.as_bytes(), id.as_bytes()]));
        self.reputation(author, |reputation| reputation.readings += 1);
        self.check_energy_job(author, reading.meter.as_str(), reading.export_counter_wh)?;
        // Issuance rules: mission tokens rewarded per kWh exported, as far as their cap allows.
        let tokens: Vec<crate::genesis::Token> =
            self.base.genesis.tokens.iter().filter_map(|token| self.token_rules(&token.id)).collect();
        for token in &tokens {
            if token.export_reward_per_kwh == 0 || reading.export_wh == 0 {
                continue;
            }
            let mut reward = protocol::message::value_milli(reading.export_wh, token.export_reward_per_kwh)
                .ok_or(EntryError::Overflow)?;
            if let Some(cap) = token.supply_max {
                let supply: u64 = self.read(&key(SUPPLY, &[token.id.as_str().as_bytes()])).unwrap_or(0);
                reward = reward.min(cap.saturating_sub(supply));
            }
            if reward > 0 {
                self.mint(author, &token.id, reward)?;
            }
        }
        Ok(())
    }

    /// Records a fill of `quantity` against an offer of `total`, refusing expired, cancelled and over-filled offers.
    fn fill(&mut self, offer: &Envelope, total: u64, quantity: u64) -> Result<(), EntryError> {
        let offer_id = offer.id();
        if offer.expires_ms <= self.context.time_ms {
            return Err(EntryError::OfferExpired(offer_id));
        }
        // Only the offer's author can cancel it: a cancel by anyone else (the ledger cannot know whose offer an id is
        // until a settlement shows it) has no effect.
        if self.get(&key(CANCELLED, &[offer_id.as_bytes(), offer.author.as_bytes()])).is_some() {
            return Err(EntryError::OfferCancelled(offer_id));
        }
        let filled_key = key(FILLED, &[offer_id.as_bytes()]);
        let filled: u64 = self.read(&filled_key).unwrap_or(0);
        let left = total.saturating_sub(filled);
        if quantity > left {
            return Err(EntryError::Overfilled { offer: offer_id, left, wanted: quantity });
        }
        if filled == 0 {
            self.put(key(FILLED_BY_EXPIRY, &[&offer.expires_ms.to_be_bytes(), offer_id.as_bytes()]), Some(Vec::new()));
        }
        self.write(filled_key, &(filled + quantity));
        Ok(())
    }

    /// Settles a matched bid and ask: checks both offers, the pool's tier rule, the grid fee and the anti-hoarding
    /// limit, then pays at once (continuous pools) or escrows payment and collateral until the delivery interval
    /// is over (interval pools), and adds the trade to the pool's price index.
    fn settle(&mut self, id: &Id, settlement: &Settlement) -> Result<(), EntryError> {
        let (Body::Offer(bid), Body::Offer(ask)) = (&settlement.bid.body, &settlement.ask.body) else {
            return Err(EntryError::Invalid("settlement offers are not offers".into()));
        };
        check_offer_pair(bid, ask, settlement)?;
        let genesis = &self.base.genesis;
        let pool = &bid.pool;
        let token = &pool.token;
        if genesis.token(token).is_none() {
            return Err(EntryError::UnknownToken(token.clone()));
        }
        let buyer = settlement.bid.author;
        let seller = settlement.ask.author;
        self.check_not_frozen(&buyer)?;
        self.check_not_frozen(&seller)?;
        let rule = genesis.pool_rule(pool);
        let tier_min = rule.map_or(0, |rule| usize::try_from(rule.tier_min).unwrap_or(usize::MAX));
        let mut tiers = [0usize; 2];
        for (slot, party) in tiers.iter_mut().zip([buyer, seller]) {
            let reputation: Reputation = self.read(&key(REPUTATION, &[party.as_bytes()])).unwrap_or_default();
            *slot = reputation.tier(&genesis.tiers);
            if *slot < tier_min {
                return Err(EntryError::Tier { account: party, tier: *slot, needed: tier_min });
            }
        }
        let [buyer_tier, seller_tier] = tiers.map(|tier| &genesis.tiers[tier.min(genesis.tiers.len() - 1)]);
        let fee = match self.read::<protocol::message::PoolFee>(&key(POOL_FEE, &[pool.digest().as_bytes()])) {
            Some(fee) => fee_of(&fee),
            None => pool_fee(rule, self.param("grid_fee_per_kwh"), self.param("grid_fee_ppm")),
        };
        let full_fee = fee.on(settlement.unit_price);
        let fee_per_unit = full_fee - share(full_fee, u64::from(buyer_tier.fee_discount_ppm));
        if settlement.unit_price.checked_add(fee_per_unit).is_none_or(|gross| gross > bid.unit_price) {
            return Err(EntryError::Price);
        }
        let interval_s = u64::from(pool.interval_s);
        let delivery_end_ms = bid.delivery_start_s.saturating_add(interval_s).saturating_mul(1000);
        if interval_s > 0 && delivery_end_ms <= self.context.time_ms {
            return Err(EntryError::DeliveryOver);
        }
        let period_s = if interval_s == 0 { self.context.time_ms / 1000 / 3600 * 3600 } else { bid.delivery_start_s };
        if let Some(policy) = rule.and_then(|rule| rule.dynamic) {
            // The pool's base price for the period is its floor; the anchor moves to the latest period settled.
            let anchor_key = key(BASE_PRICE, &[pool.digest().as_bytes()]);
            let anchor: Option<(u64, u64)> = self.read(&anchor_key);
            let volume =
                |period| self.read::<PriceIndex>(&price_index_key(pool, period)).map_or(0, |index| index.volume);
            let priced = priced_period(period_s, self.context.time_ms / 1000, period_len_s(pool));
            let base = roll_base_price(&policy, anchor, period_len_s(pool), priced, volume);
            if settlement.unit_price < base {
                return Err(EntryError::BelowBasePrice { price: settlement.unit_price, base });
            }
            if anchor.is_none_or(|(from, _)| priced > from) {
                self.write(anchor_key, &(priced, base));
            }
            self.write(key(BASE_PRICE_HISTORY, &[pool.digest().as_bytes(), &period_s.to_be_bytes()]), &base);
        }
        if let Some(essential) = rule.and_then(|rule| rule.essential)
            && essential.per_account_max > 0
        {
            // No hoarding of an essential resource: an account's purchases in an interval stay within the rule.
            let bought_key =
                key(ESSENTIAL_BOUGHT, &[buyer.as_bytes(), pool.digest().as_bytes(), &period_s.to_be_bytes()]);
            let bought: u64 = self.read(&bought_key).unwrap_or(0);
            let wanted = bought.saturating_add(settlement.quantity);
            if wanted > essential.per_account_max {
                return Err(EntryError::HoardingLimit { account: buyer, wanted, limit: essential.per_account_max });
            }
            if bought == 0 {
                self.forget_at(delivery_end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &bought_key);
            }
            self.write(bought_key, &wanted);
        }
        self.fill(&settlement.bid, bid.quantity, settlement.quantity)?;
        self.fill(&settlement.ask, ask.quantity, settlement.quantity)?;
        let quantity = settlement.quantity;
        let value = protocol::message::value_milli(quantity, settlement.unit_price).ok_or(EntryError::Overflow)?;
        let fee_amount = protocol::message::value_milli(quantity, fee_per_unit).ok_or(EntryError::Overflow)?;
        let tax = share(value, self.param("commons_tax_ppm"));
        let (royalty, royalty_account) = match rule {
            Some(rule) if rule.royalty_ppm > 0 => {
                (share(value, u64::from(rule.royalty_ppm)), rule.royalty_account.unwrap_or(COMMONS))
            }
            _ => (0, COMMONS),
        };
        if fee_amount > 0 {
            self.move_tokens(&buyer, &COMMONS, token, fee_amount)?;
        }
        if interval_s == 0 {
            self.move_tokens(&buyer, &seller, token, value)?;
            self.move_tokens(&seller, &COMMONS, token, tax)?;
            self.move_tokens(&seller, &royalty_account, token, royalty)?;
        } else {
            let metered = pool.resource == protocol::message::Resource::Energy;
            let release_ms = delivery_end_ms.saturating_add(self.param("settlement_grace_ms"));
            let (buyer_collateral, seller_collateral) = if metered {
                self.count_energy(&buyer, &seller, bid.delivery_start_s, quantity, release_ms)?;
                (
                    share(value, u64::from(buyer_tier.collateral_ppm)),
                    share(value, u64::from(seller_tier.collateral_ppm)),
                )
            } else {
                (0, 0)
            };
            self.debit(&buyer, token, value.checked_add(buyer_collateral).ok_or(EntryError::Overflow)?)?;
            self.debit(&seller, token, seller_collateral)?;
            let escrow = Escrow {
                buyer,
                seller,
                token: token.clone(),
                amount: value,
                release_ms,
                quantity,
                delivery_start_s: bid.delivery_start_s,
                interval_s: pool.interval_s,
                metered: u8::from(metered),
                buyer_collateral,
                seller_collateral,
                tax,
                royalty,
                royalty_account,
            };
            self.write(key(ESCROW, &[id.as_bytes()]), &escrow);
            self.put(key(ESCROW_BY_RELEASE, &[&release_ms.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
        }
        let index_key = price_index_key(pool, period_s);
        let mut index: PriceIndex = self.read(&index_key).unwrap_or_default();
        index.volume = index.volume.saturating_add(quantity);
        index.value = index.value.saturating_add(value);
        index.trades = index.trades.saturating_add(1);
        self.write(index_key, &index);
        for party in [buyer, seller] {
            self.reputation(&party, |reputation| {
                reputation.trades += 1;
                reputation.traded_value = reputation.traded_value.saturating_add(value);
            });
        }
        Ok(())
    }

    /// Adds an energy trade to the buyer's and seller's totals for the interval, refusing a buyer over the
    /// anti-hoarding limit. The totals are what delivery is checked against, and are forgotten after release.
    fn count_energy(
        &mut self,
        buyer: &PublicKey,
        seller: &PublicKey,
        start_s: u64,
        quantity: u64,
        release_ms: u64,
    ) -> Result<(), EntryError> {
        let limit = self.param("bought_per_interval_max_wh");
        for (prefix, account) in [(BOUGHT, buyer), (SOLD, seller)] {
            let total_key = interval_key(prefix, account, start_s);
            let before: Option<u64> = self.read(&total_key);
            let total = before.unwrap_or(0).checked_add(quantity).ok_or(EntryError::Overflow)?;
            if prefix == BOUGHT && limit > 0 && total > limit {
                return Err(EntryError::HoardingLimit { account: *account, wanted: total, limit });
            }
            if before.is_none() {
                self.forget_at(release_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &total_key);
            }
            self.write(total_key, &total);
        }
        Ok(())
    }

    /// An account's shortfall on one energy trade of `quantity` Wh: its measured flow (export for a seller, import
    /// for a buyer, summed over the readings it anchored for the interval) is shared pro rata over everything it
    /// traded for the interval; what this trade does not get is the shortfall. No reading counts as nothing
    /// measured.
    fn shortfall_wh(&self, account: &PublicKey, escrow: &Escrow, seller: bool) -> u64 {
        let end_s = escrow.delivery_start_s.saturating_add(u64::from(escrow.interval_s));
        let flows = self.scan(interval_key(FLOW, account, escrow.delivery_start_s), interval_key(FLOW, account, end_s));
        let measured: u64 = flows
            .iter()
            .filter_map(|(_, value)| decode::<(u64, u64)>(value))
            .map(|(import_wh, export_wh)| if seller { export_wh } else { import_wh })
            .fold(0u64, u64::saturating_add);
        let prefix = if seller { SOLD } else { BOUGHT };
        let traded: u64 = self.read(&interval_key(prefix, account, escrow.delivery_start_s)).unwrap_or(escrow.quantity);
        let traded = traded.max(escrow.quantity);
        let met = u128::from(escrow.quantity) * u128::from(measured.min(traded)) / u128::from(traded);
        escrow.quantity - u64::try_from(met).unwrap_or(escrow.quantity)
    }

    /// Releases an escrow: checks an energy trade's delivery, takes penalties from collateral, pays tax and
    /// royalty, pays the seller and returns what is left to each party.
    fn release(&mut self, id: Id, escrow: &Escrow) {
        let rate = self.param("penalty_per_kwh");
        let (seller_short, buyer_short) = if escrow.metered == 1 {
            (self.shortfall_wh(&escrow.seller, escrow, true), self.shortfall_wh(&escrow.buyer, escrow, false))
        } else {
            (0, 0)
        };
        let penalty = |short: u64, collateral: u64| {
            protocol::message::value_milli(short, rate).unwrap_or(u64::MAX).min(collateral)
        };
        let seller_penalty = penalty(seller_short, escrow.seller_collateral);
        let buyer_penalty = penalty(buyer_short, escrow.buyer_collateral);
        // Every amount below is part of what the escrow holds, so the credits cannot overflow a supply.
        let to_seller =
            (escrow.amount - escrow.tax - escrow.royalty) + (escrow.seller_collateral - seller_penalty) + buyer_penalty;
        let to_buyer = (escrow.buyer_collateral - buyer_penalty) + seller_penalty;
        for (account, amount) in [
            (escrow.seller, to_seller),
            (escrow.buyer, to_buyer),
            (COMMONS, escrow.tax),
            (escrow.royalty_account, escrow.royalty),
        ] {
            if amount > 0 {
                let _ = self.credit(&account, &escrow.token, amount);
            }
        }
        for (account, short, paid, checked) in [
            (escrow.seller, seller_short, seller_penalty, true),
            (escrow.buyer, buyer_short, buyer_penalty, escrow.metered == 1),
        ] {
            if !checked {
                continue;
            }
            self.reputation(&account, |reputation| {
                if short == 0 {
                    reputation.deliveries += 1;
                } else {
                    reputation.failures += 1;
                }
            });
            if short > 0 {
                self.events.push(Event::Penalty { settlement: id, account, shortfall_wh: short, amount: paid });
            }
        }
        self.events.push(Event::EscrowReleased { settlement: id, to: escrow.seller, amount: to_seller });
    }

    /// Shares the commons' balance of the fee token equally among the poorest members (accounts with a track
    /// record) below the threshold, at most `redistribution_accounts_max` of them; the remainder stays.
    fn redistribute(&mut self) {
        let epoch = self.param("redistribution_epoch_blocks");
        if epoch == 0 || !self.context.height.is_multiple_of(epoch) {
            return;
        }
        let Ok(token) = TokenId::new(self.base.genesis.params.fee_token.clone()) else { return };
        let pot = self.balance(&COMMONS, &token);
        let threshold = self.param("redistribution_balance_max");
        let accounts_max = usize::try_from(self.base.genesis.params.redistribution_accounts_max).unwrap_or(0);
        if pot == 0 || accounts_max == 0 {
            return;
        }
        let mut members: Vec<(u64, PublicKey)> = self
            .scan(vec![REPUTATION], vec![REPUTATION + 1])
            .into_iter()
            .filter_map(|(key, _)| Some(PublicKey(key.get(1..33)?.try_into().ok()?)))
            .filter(|account| *account != COMMONS)
            .map(|account| (self.balance(&account, &token), account))
            .filter(|(balance, _)| *balance < threshold)
            .collect();
        members.sort();
        members.truncate(accounts_max);
        let Some(share) = pot.checked_div(members.len() as u64).filter(|share| *share > 0) else { return };
        for (_, account) in &members {
            if self.move_tokens(&COMMONS, account, &token, share).is_err() {
                return;
            }
        }
        // The record of it, for the commons to see (kept 30 days).
        let record_key = key(REDISTRIBUTION, &[&self.context.height.to_be_bytes()]);
        let record = (token.as_str().to_owned(), members.len() as u64, share, self.context.time_ms);
        self.write(record_key.clone(), &record);
        self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &record_key);
        self.events.push(Event::Redistributed { token, accounts: members.len() as u64, share });
    }

    /// The rule a proposal is decided by: who votes, the weight of all who could, the quorum and the threshold
    /// in percent (an emergency: the stewards, one each, and all of `emergency_approvals` must say yes).
    fn rule_of(&self, action: &Action) -> (Weight, u64, u64, u64) {
        let governance = &self.base.genesis.governance;
        if let Action::Emergency(_) = action {
            // Passed when k stewards said yes (100 % of k); never by the end of the period (no quorum reaches 101 %).
            return (Weight::Stewards, u64::from(governance.emergency_approvals), 101, 100);
        }
        let rule = governance.rule(action.kind(), self.param("governance_threshold_percent"));
        let total = match &rule.weight {
            genesis::Weight::Validators => self.validators().iter().map(|(_, power)| power).sum(),
            genesis::Weight::Members => self.read(&key(MEMBER_COUNT, &[])).unwrap_or(0),
            // Tokens that can vote: the supply less the commons' (no key signs for it).
            genesis::Weight::Stake(token) => {
                let supply: u64 = self.read(&key(SUPPLY, &[token.as_str().as_bytes()])).unwrap_or(0);
                supply.saturating_sub(self.balance(&COMMONS, token))
            }
        };
        let weight = match rule.weight {
            genesis::Weight::Validators => Weight::Validators,
            genesis::Weight::Members => Weight::Members,
            genesis::Weight::Stake(token) => Weight::Stake(token),
        };
        (weight, total, rule.quorum_percent, rule.threshold_percent)
    }

    fn vote(&mut self, voter: &PublicKey, vote: &protocol::message::Vote) -> Result<(), EntryError> {
        let (proposal_id, choice) = (&vote.proposal, vote.choice);
        let proposal_key = key(PROPOSAL, &[proposal_id.as_bytes()]);
        let mut proposal: ProposalState = self
            .read(&proposal_key)
            .filter(|p: &ProposalState| p.status == 0)
            .ok_or(EntryError::ProposalClosed(*proposal_id))?;
        let ballot_key = key(BALLOT, &[proposal_id.as_bytes(), voter.as_bytes()]);
        if self.get(&ballot_key).is_some() {
            return Err(EntryError::AlreadyVoted(*voter));
        }
        let (weight, total, quorum, threshold) = self.rule_of(&proposal.action);
        let power: u64 = match &weight {
            Weight::Validators => self.read(&key(VALIDATOR, &[voter.as_bytes()])),
            Weight::Members => self.get(&key(MEMBER, &[voter.as_bytes()])).map(|_| 1),
            Weight::Stewards => self.base.genesis.governance.stewards.contains(voter).then_some(1),
            Weight::Stake(token) => {
                // The stake the vote names is locked: it returns to the voter when the proposal closes, so no token
                // votes twice (the rest of the balance stays free for fees and trades).
                if vote.stake > 0 {
                    self.move_tokens(voter, &vote_lock_account(proposal_id), token, vote.stake)?;
                }
                (vote.stake > 0).then_some(vote.stake)
            }
        }
        .ok_or(EntryError::NotAVoter(*voter))?;
        self.write(ballot_key, &(choice as u8, power));
        match choice {
            Choice::Yes => proposal.yes = proposal.yes.saturating_add(power),
            Choice::No => proposal.no = proposal.no.saturating_add(power),
            Choice::Abstain => proposal.abstain = proposal.abstain.saturating_add(power),
        }
        // Passed already when its yes votes alone are the threshold, and the quorum, of all who could vote.
        let early = u128::from(threshold.max(quorum.min(100)));
        if total > 0 && u128::from(proposal.yes) * 100 >= u128::from(total) * early {
            self.close(proposal_id, &mut proposal, true);
        }
        self.write(proposal_key, &proposal);
        Ok(())
    }

    /// Closes a proposal: passed (its action is enacted now) or rejected; staked votes return to their voters.
    fn close(&mut self, id: &Id, proposal: &mut ProposalState, passed: bool) {
        proposal.status = if passed { 1 } else { 2 };
        if passed {
            self.enact(id, &proposal.action);
            self.events.push(Event::ProposalPassed(*id));
        } else {
            self.events.push(Event::ProposalRejected(*id));
        }
        if let (Weight::Stake(token), _, _, _) = self.rule_of(&proposal.action) {
            let start = key(BALLOT, &[id.as_bytes()]);
            let end = key(BALLOT, &[id.as_bytes(), &[0xff; 33]]);
            for (ballot, value) in self.scan(start, end) {
                let (Some(voter), Some((_, stake))) = (
                    ballot.get(33..65).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(PublicKey),
                    decode::<(u8, u64)>(&value),
                ) else {
                    continue;
                };
                // The lock holds exactly the stakes voted; a failure here would be a bug, and leaves them locked.
                let _ = self.move_tokens(&vote_lock_account(id), &voter, &token, stake);
            }
        }
    }

    fn validators(&self) -> Vec<(PublicKey, u64)> {
        let mut validators: BTreeMap<PublicKey, u64> = self.base.validators().into_iter().collect();
        for (key, value) in self.writes.range(vec![VALIDATOR]..vec![VALIDATOR + 1]) {
            let Some(account) = key.get(1..33).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) else { continue };
            match value.as_ref().and_then(|bytes| decode::<u64>(bytes)) {
                Some(power) => validators.insert(PublicKey(account), power),
                None => validators.remove(&PublicKey(account)),
            };
        }
        validators.into_iter().collect()
    }

    /// Applies a passed proposal's action. A validator change is scheduled for `validator_change_delay_blocks`
    /// later (announced by an event), and then applied unless it would leave no validator, too many, or a total
    /// power that overflows (the proposal still passed; its effect is void).
    fn enact(&mut self, id: &Id, action: &Action) {
        let height = self.context.height;
        match action {
            Action::Text(_) => {}
            Action::SetParameter(set) => {
                let mut params = self.base.genesis.params.clone();
                if params.set(set.name.as_str(), set.value) {
                    self.write(key(PARAM, &[set.name.as_str().as_bytes()]), &set.value);
                }
            }
            Action::AddValidator(_) | Action::RemoveValidator(_) => {
                let at_height = height.saturating_add(self.base.genesis.governance.validator_change_delay_blocks);
                let (validator, power) = match action {
                    Action::AddValidator(add) => (add.key, add.power),
                    Action::RemoveValidator(remove) => (remove.key, 0),
                    _ => return,
                };
                self.write(key(VALIDATOR_PENDING, &[&at_height.to_be_bytes(), validator.as_bytes()]), &power);
                self.events.push(Event::ValidatorsChanging { proposal: *id, at_height });
            }
            Action::PoolFee(fee) => self.write(key(POOL_FEE, &[fee.pool.digest().as_bytes()]), fee),
            Action::Quest(job) => {
                // The job is the proposal's: its id, the commons its poster. A quest that can no longer be posted
                // (its bidding over, say) is void.
                let mark = self.undo.len();
                if self.post_job(&COMMONS, id, job, true).is_err() {
                    self.rollback(mark);
                }
            }
            Action::IssuanceRule(rule) => {
                // Only a token of the genesis; a new token is a new network.
                if self.base.genesis.token(&rule.token).is_some() {
                    self.write(key(ISSUANCE, &[rule.token.as_str().as_bytes()]), rule);
                }
            }
            Action::AdmitMember(admit) => {
                let member_key = key(MEMBER, &[admit.key.as_bytes()]);
                let count: u64 = self.read(&key(MEMBER_COUNT, &[])).unwrap_or(0);
                if self.get(&member_key).is_none() && count < MEMBERS_MAX {
                    self.write(member_key, &1u8);
                    self.write(key(MEMBER_COUNT, &[]), &(count + 1));
                }
            }
            Action::Override(measure) | Action::Emergency(measure) => {
                let until_height = height.saturating_add(u64::from(measure.duration_blocks));
                let (first, second) = limits_of(&measure.measure);
                // The latest override on the same target replaces an earlier one (which returns if it outlives it).
                self.write(lookup_key(&measure.measure), &InForce { by: *id, until_height, first, second });
                let record = OverrideState {
                    measure: measure.measure.clone(),
                    from_height: height,
                    until_height,
                    emergency: u8::from(matches!(action, Action::Emergency(_))),
                };
                self.write(key(OVERRIDE, &[id.as_bytes()]), &record);
                self.put(key(OVERRIDE_BY_END, &[&until_height.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
                self.events.push(Event::OverrideInForce { proposal: *id, until_height });
            }
        }
    }

    /// Applies the validator changes due at the next height.
    fn change_validators(&mut self) {
        for pending in self.due(VALIDATOR_PENDING, self.context.height.saturating_add(1)) {
            let power: u64 = self.read(&pending).unwrap_or(0);
            self.delete(pending.clone());
            let Some(validator) = pending.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(PublicKey)
            else {
                continue;
            };
            let validators = self.validators();
            let known = validators.iter().any(|(key, _)| *key == validator);
            if power == 0 {
                if validators.len() > 1 && known {
                    self.delete(key(VALIDATOR, &[validator.as_bytes()]));
                }
                continue;
            }
            let others: u128 =
                validators.iter().filter(|(key, _)| *key != validator).map(|(_, power)| u128::from(*power)).sum();
            if (known || validators.len() < VALIDATORS_MAX)
                && others + u128::from(power) <= u128::from(u64::MAX / 1000)
                && protocol::keys::verifying_key(&validator).is_ok()
            {
                self.write(key(VALIDATOR, &[validator.as_bytes()]), &power);
            }
        }
    }

    /// Lifts the overrides whose last block this is.
    fn expire_overrides(&mut self) {
        for index_key in self.due(OVERRIDE_BY_END, self.context.height) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let override_key = key(OVERRIDE, &[id.as_bytes()]);
            let Some(record) = self.read::<OverrideState>(&override_key) else { continue };
            self.delete(override_key);
            let lookup = lookup_key(&record.measure);
            // Only if no later override on the same target replaced it; then the latest other one still in force on
            // the target (a long community freeze outlives a short emergency one) takes its place.
            if self.read::<InForce>(&lookup).is_some_and(|in_force| in_force.by == id) {
                let same_target = |other: &OverrideState| lookup_key(&other.measure) == lookup;
                let successor = self
                    .scan(vec![OVERRIDE], vec![OVERRIDE + 1])
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let other_id = Id(key.get(1..33)?.try_into().ok()?);
                        let other: OverrideState = decode(&value)?;
                        (same_target(&other) && other.until_height > self.context.height).then_some((other_id, other))
                    })
                    .max_by_key(|(other_id, other)| (other.from_height, *other_id));
                match successor {
                    Some((other_id, other)) => {
                        let (first, second) = limits_of(&other.measure);
                        let value = InForce { by: other_id, until_height: other.until_height, first, second };
                        self.write(lookup, &value);
                    }
                    None => self.delete(lookup),
                }
            }
            self.events.push(Event::OverrideExpired(id));
        }
    }

    /// Refuses trading by an account an override froze.
    fn check_not_frozen(&self, account: &PublicKey) -> Result<(), EntryError> {
        match self.read::<InForce>(&key(FROZEN, &[account.as_bytes()])) {
            Some(in_force) => {
                Err(EntryError::Frozen { account: *account, by: in_force.by, until_height: in_force.until_height })
            }
            None => Ok(()),
        }
    }

    /// End of block: release due escrows, close proposals whose period ended, forget expired markers.
    fn end_block(&mut self) {
        let now = self.context.time_ms;
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
        for index_key in self.due(PROPOSAL_BY_END, self.context.height) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let proposal_key = key(PROPOSAL, &[id.as_bytes()]);
            if let Some(mut proposal) = self.read::<ProposalState>(&proposal_key)
                && proposal.status == 0
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
        // Drop writes that change nothing, so the lattice and the store see only real changes.
        let base = self.base;
        let writes: Writes =
            self.writes.into_iter().filter(|(key, value)| base.map.get(key) != value.as_ref()).collect();
        let lattice = base.lattice_after(&writes);
        Executed { state_root: lattice.root(), lattice, writes, events: self.events, ids: self.ids }
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

/// `blake3("kos/v1/validators" || 0x00 || CBOR([[key, power], ...]))` over the set in key order.
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
