//! The message kinds of kos and their payloads. Each payload is a CBOR array of its fields in declaration order.
//!
//! Amounts are integers in fixed units (no floats anywhere in a signed message):
//! - energy quantities in watt-hours (Wh); other resources (compute, memory, bandwidth) in milli-units;
//! - token amounts in milli-units of the token (1 credit = 1000);
//! - prices (`unit_price`) in token milli-units per 1000 quantity units: per kWh for energy, per whole unit for
//!   the other resources. A fill of `q` at price `p` is worth `q * p / 1000` token milli-units (see [`value_milli`]).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_repr::{Deserialize_repr, Serialize_repr};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use crate::envelope::Envelope;
use crate::limits::{
    ASSET_METERS_MAX, BARTER_LEGS_MAX, BARTER_LEGS_MIN, GUILD_MEMBERS_MAX, GUILD_NAME_BYTES_MAX, MEMO_BYTES_MAX,
    PROPOSAL_TEXT_BYTES_MAX, PROPOSAL_TITLE_BYTES_MAX, REPORT_TEXT_BYTES_MAX, UPGRADE_INFO_BYTES_MAX,
};
use crate::types::{BoundedVec, Cell, Id, Invalid, MeterId, ParameterName, PublicKey, Text, TokenId};

/// Serializes and deserializes an enum of newtype variants as the CBOR array `[code, payload]`.
macro_rules! tagged_union {
    ($name:ident, $what:literal, $kind:ident { $($code:literal => $variant:ident($payload:ty), $label:literal;)+ }) => {
        /// The kind of each variant, with its code on the wire and its name in domain prefixes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $kind {
            $(#[doc = $label] $variant,)+
        }

        impl $kind {
            /// Every kind, in code order.
            pub const ALL: &'static [$kind] = &[$($kind::$variant,)+];

            /// The code of this kind on the wire.
            pub fn code(self) -> u8 {
                match self { $($kind::$variant => $code,)+ }
            }

            /// The kind with this code.
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some($kind::$variant),)+ _ => None }
            }

            /// The lowercase name of this kind, used in domain-separation prefixes.
            pub fn name(self) -> &'static str {
                match self { $($kind::$variant => $label,)+ }
            }
        }

        impl fmt::Display for $kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl $name {
            /// The kind of this value.
            pub fn kind(&self) -> $kind {
                match self { $($name::$variant(_) => $kind::$variant,)+ }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(&self.kind().code())?;
                match self { $($name::$variant(payload) => tuple.serialize_element(payload)?,)+ }
                tuple.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct UnionVisitor;
                impl<'de> Visitor<'de> for UnionVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} as [code, payload]", $what)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        let code: u8 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                        let kind = $kind::from_code(code)
                            .ok_or_else(|| de::Error::custom(format!("unknown {} code {code}", $what)))?;
                        let value = match kind {
                            $($kind::$variant => $name::$variant(
                                seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?,
                            ),)+
                        };
                        Ok(value)
                    }
                }
                deserializer.deserialize_tuple(2, UnionVisitor)
            }
        }
    };
}

mod device;
pub use device::{
    Attestation, AttestationError, AttestationKind, BindingError, Counters, DeviceKey, DeviceKeyKind, DeviceSignature,
    OcmfReadingError, OcmfRecord, Trust, attest, check_attestation, check_binding, device_reading_digest, ocmf_reading,
};
mod job;
pub use job::{
    Award, AwardRule, Bid, ComputeTask, Deliver, Dispute, Evidence, EvidenceKind, Job, JobKind, Need, Opening, Outcome,
    Proof, ProofKind, Verdict, merkle_levels, merkle_parent, merkle_path, merkle_root, run_task, sample_indices,
    unit_output, verify_path,
};

/// The body of a signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Offer(Offer),
    Cancel(Cancel),
    Reading(Reading),
    Transfer(Transfer),
    Settlement(Settlement),
    BarterOffer(BarterOffer),
    BarterCycle(BarterCycle),
    Proposal(Proposal),
    Vote(Vote),
    Mint(Mint),
    Burn(Burn),
    Guild(Guild),
    GuildSpend(GuildSpend),
    GuildApproval(GuildApproval),
    Asset(Asset),
    Alert(Alert),
    Report(Report),
    Job(Job),
    Bid(Bid),
    Award(Award),
    Deliver(Deliver),
    Verdict(Verdict),
    Dispute(Dispute),
}

tagged_union!(Body, "message body", Kind {
    1 => Offer(Offer), "offer";
    2 => Cancel(Cancel), "cancel";
    3 => Reading(Reading), "reading";
    4 => Transfer(Transfer), "transfer";
    5 => Settlement(Settlement), "settlement";
    6 => BarterOffer(BarterOffer), "barter-offer";
    7 => BarterCycle(BarterCycle), "barter-cycle";
    8 => Proposal(Proposal), "proposal";
    9 => Vote(Vote), "vote";
    10 => Mint(Mint), "mint";
    11 => Burn(Burn), "burn";
    12 => Guild(Guild), "guild";
    13 => GuildSpend(GuildSpend), "guild-spend";
    14 => GuildApproval(GuildApproval), "guild-approval";
    15 => Asset(Asset), "asset";
    16 => Alert(Alert), "alert";
    17 => Report(Report), "report";
    18 => Job(Job), "job";
    19 => Bid(Bid), "bid";
    20 => Award(Award), "award";
    21 => Deliver(Deliver), "deliver";
    22 => Verdict(Verdict), "verdict";
    23 => Dispute(Dispute), "dispute";
});

/// A tradable resource and the unit of its quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Resource {
    /// Electric energy delivered in an interval; quantity in Wh.
    Energy = 0,
    /// Compute credits; quantity in milli-credits.
    Compute = 1,
    /// Memory blocks; quantity in milli-blocks.
    Memory = 2,
    /// Bandwidth units; quantity in milli-units.
    Bandwidth = 3,
}

impl Resource {
    /// Every resource, in code order.
    pub const ALL: [Resource; 4] = [Resource::Energy, Resource::Compute, Resource::Memory, Resource::Bandwidth];

    /// What a price is quoted per: 1000 quantity units, i.e. a kWh of energy or one whole unit of the others.
    pub fn price_unit(self) -> &'static str {
        match self {
            Resource::Energy => "kWh",
            Resource::Compute => "credit",
            Resource::Memory => "block",
            Resource::Bandwidth => "unit",
        }
    }

    /// The lowercase name used in pool names and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Energy => "energy",
            Resource::Compute => "compute",
            Resource::Memory => "memory",
            Resource::Bandwidth => "bandwidth",
        }
    }
}

impl FromStr for Resource {
    type Err = Invalid;
    fn from_str(text: &str) -> Result<Self, Invalid> {
        Resource::ALL.into_iter().find(|resource| resource.name() == text).ok_or_else(|| Invalid {
            what: "Resource",
            reason: format!("{text:?} is not one of energy, compute, memory, bandwidth"),
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A liquidity pool: one resource, priced in one token, in one location cell, for one delivery interval length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize_tuple, Deserialize_tuple)]
pub struct PoolId {
    pub resource: Resource,
    pub token: TokenId,
    pub cell: Cell,
    /// Length of a delivery interval in seconds (900 for 15-minute energy products); 0 for continuous pools.
    pub interval_s: u32,
}

impl PoolId {
    /// The pool's digest: `blake3("kos/v1/pool" 0x00 || CBOR(pool))`. Keys the pool's DHT record and gossip topic.
    pub fn digest(&self) -> Id {
        let mut hasher = blake3::Hasher::new();
        hasher.update(crate::envelope::POOL_DOMAIN);
        hasher.update(&crate::codec::encode(self));
        Id(*hasher.finalize().as_bytes())
    }
}

impl PoolId {
    /// The start of the first delivery interval after `now_s` (Unix seconds); 0 in continuous pools.
    pub fn next_delivery_start_s(&self, now_s: u64) -> u64 {
        match u64::from(self.interval_s) {
            0 => 0,
            interval => now_s.checked_div(interval).unwrap_or(0).saturating_add(1).saturating_mul(interval),
        }
    }
}

impl fmt::Display for PoolId {
    /// `resource/token/cell/interval_s`, with `*` for the world cell: `energy/credit/u33db/900`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = if self.cell.as_str().is_empty() { "*" } else { self.cell.as_str() };
        write!(f, "{}/{}/{}/{}", self.resource, self.token, cell, self.interval_s)
    }
}

impl FromStr for PoolId {
    type Err = Invalid;
    fn from_str(text: &str) -> Result<Self, Invalid> {
        let parts: Vec<&str> = text.split('/').collect();
        let [resource, token, cell, interval] = parts.as_slice() else {
            return Err(Invalid { what: "PoolId", reason: format!("{text:?} is not resource/token/cell/interval_s") });
        };
        let interval_s = interval
            .parse::<u32>()
            .map_err(|error| Invalid { what: "PoolId", reason: format!("interval {interval:?}: {error}") })?;
        Ok(PoolId {
            resource: resource.parse()?,
            token: token.parse()?,
            cell: Cell::new(if *cell == "*" { "" } else { *cell })?,
            interval_s,
        })
    }
}

/// A barter pool: the barter offers of one location cell (the world cell `*` for what has no place), where barter
/// cycles are searched. Its digest keys its DHT records and names its gossip topic, as a pool's does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize_tuple, Deserialize_tuple)]
pub struct BarterPool {
    pub cell: Cell,
}

impl BarterPool {
    /// The barter pool's digest: `blake3("kos/v1/barter-pool" 0x00 || CBOR([cell]))`.
    pub fn digest(&self) -> Id {
        let mut hasher = blake3::Hasher::new();
        hasher.update(crate::envelope::BARTER_POOL_DOMAIN);
        hasher.update(&crate::codec::encode(self));
        Id(*hasher.finalize().as_bytes())
    }
}

impl fmt::Display for BarterPool {
    /// `barter/<cell>`, with `*` for the world cell: `barter/u33db`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = if self.cell.as_str().is_empty() { "*" } else { self.cell.as_str() };
        write!(f, "barter/{cell}")
    }
}

impl FromStr for BarterPool {
    type Err = Invalid;
    fn from_str(text: &str) -> Result<Self, Invalid> {
        let Some(cell) = text.strip_prefix("barter/") else {
            return Err(Invalid { what: "BarterPool", reason: format!("{text:?} is not barter/<cell>") });
        };
        Ok(BarterPool { cell: Cell::new(if cell == "*" { "" } else { cell })? })
    }
}

/// What a node joins, announces in the DHT and finds peers in: a pool of offers, or a barter pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolKey {
    Market(PoolId),
    Barter(BarterPool),
}

impl PoolKey {
    /// Its digest: the pool's or the barter pool's.
    pub fn digest(&self) -> Id {
        match self {
            PoolKey::Market(pool) => pool.digest(),
            PoolKey::Barter(pool) => pool.digest(),
        }
    }
}

impl From<PoolId> for PoolKey {
    fn from(pool: PoolId) -> Self {
        PoolKey::Market(pool)
    }
}

impl From<BarterPool> for PoolKey {
    fn from(pool: BarterPool) -> Self {
        PoolKey::Barter(pool)
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolKey::Market(pool) => pool.fmt(f),
            PoolKey::Barter(pool) => pool.fmt(f),
        }
    }
}

impl FromStr for PoolKey {
    type Err = Invalid;
    /// `barter/<cell>`, or a pool's `resource/token/cell/interval_s`.
    fn from_str(text: &str) -> Result<Self, Invalid> {
        if text.starts_with("barter/") { text.parse().map(PoolKey::Barter) } else { text.parse().map(PoolKey::Market) }
    }
}

impl BarterOffer {
    /// The barter pool the offer belongs to: its cell's.
    pub fn pool(&self) -> BarterPool {
        BarterPool { cell: self.cell.clone() }
    }
}

/// Which side of the book an offer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Side {
    /// Wants to buy: `unit_price` is the most it pays.
    Bid = 0,
    /// Wants to sell: `unit_price` is the least it accepts.
    Ask = 1,
}

/// A bid or ask in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Offer {
    pub pool: PoolId,
    pub side: Side,
    /// Quantity in the resource's unit (Wh for energy); more than 0.
    pub quantity: u64,
    /// Limit price in token milli-units per 1000 quantity units (per kWh for energy).
    pub unit_price: u64,
    /// Start of the delivery interval (Unix seconds, a multiple of the pool's interval); 0 in continuous pools.
    pub delivery_start_s: u64,
}

/// Withdraws an earlier offer of the same author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Cancel {
    /// The id of the offer to withdraw.
    pub offer: Id,
}

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum MeterSource {
    Simulated = 0,
    SunSpecModbus = 1,
    Mqtt = 2,
    Manual = 3,
}

/// A meter's energy flows over one delivery interval, signed by the meter's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Reading {
    pub meter: MeterId,
    /// Start of the interval (Unix seconds, a multiple of `interval_s`).
    pub interval_start_s: u64,
    /// Length of the interval in seconds; more than 0.
    pub interval_s: u32,
    /// Energy taken from the grid in the interval, Wh.
    pub import_wh: u64,
    /// Energy fed into the grid in the interval, Wh.
    pub export_wh: u64,
    /// Energy generated on site (PV, wind) in the interval, Wh.
    pub generation_wh: u64,
    /// Energy consumed on site in the interval, Wh.
    pub consumption_wh: u64,
    /// The meter's lifetime import register at the end of the interval, Wh (never decreases).
    pub import_counter_wh: u64,
    /// The meter's lifetime export register at the end of the interval, Wh (never decreases).
    pub export_counter_wh: u64,
    pub source: MeterSource,
    /// The meter's own signature over the reading, when its asset names a device key (PROTOCOL.md §5,
    /// *Device-signed readings*); empty otherwise.
    pub device: BoundedVec<Attestation, 0, 1>,
}

/// Moves tokens from the author's account to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Transfer {
    pub to: PublicKey,
    pub token: TokenId,
    /// Amount in token milli-units; more than 0.
    pub amount: u64,
    pub memo: Text<MEMO_BYTES_MAX>,
}

/// Creates new tokens for an account; only an issuer the genesis names for the token may mint, within its cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Mint {
    pub to: PublicKey,
    pub token: TokenId,
    /// Amount in token milli-units; more than 0.
    pub amount: u64,
    pub memo: Text<MEMO_BYTES_MAX>,
}

/// Destroys tokens of the author's account (e.g. when credits are redeemed off the ledger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Burn {
    pub token: TokenId,
    /// Amount in token milli-units; more than 0.
    pub amount: u64,
    pub memo: Text<MEMO_BYTES_MAX>,
}

/// How a match's price was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Mechanism {
    ContinuousDoubleAuction = 0,
    PayAsClear = 1,
    PayAsBid = 2,
    MidMarketRate = 3,
    SupplyDemandRatio = 4,
}

/// A match of a bid and an ask, carrying both signed offers so that anyone can check it against them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Settlement {
    /// The signed bid (an envelope whose body is an [`Offer`] with [`Side::Bid`]).
    pub bid: Box<Envelope>,
    /// The signed ask (an envelope whose body is an [`Offer`] with [`Side::Ask`]).
    pub ask: Box<Envelope>,
    /// Quantity traded, at most either offer's quantity.
    pub quantity: u64,
    /// Price in token milli-units per 1000 quantity units, between the ask's and the bid's limit.
    pub unit_price: u64,
    pub mechanism: Mechanism,
}

/// "Give `give_quantity` of `give`, want `want_quantity` of `want`" — a token-free exchange ratio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct BarterOffer {
    pub give: Resource,
    pub give_quantity: u64,
    pub want: Resource,
    pub want_quantity: u64,
    pub cell: Cell,
    /// When energy is given or wanted: the start of the [`BARTER_ENERGY_INTERVAL_S`] interval it is delivered in
    /// (Unix seconds, a multiple of it, more than 0); otherwise 0.
    pub delivery_start_s: u64,
}

/// The length of the delivery interval of a barter offer's energy, seconds (15 minutes).
pub const BARTER_ENERGY_INTERVAL_S: u64 = 900;

/// The id of leg `index` of a barter cycle, which verdicts and disputes name (PROTOCOL.md §10, *barter escrow*):
/// `blake3("kos/v1/barter-leg" || 0x00 || cycle id || u8(index))`.
pub fn barter_leg_id(cycle: &Id, index: u8) -> Id {
    job::tagged_hash(b"kos/v1/barter-leg", &[cycle.as_bytes(), &[index]])
}

/// One participant of a barter cycle: its signed barter offer and how much of it this cycle uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct BarterLeg {
    /// The signed barter offer (an envelope whose body is a [`BarterOffer`]).
    pub offer: Envelope,
    /// How much of the offer's `give` resource this leg hands to the next leg.
    pub give_quantity: u64,
}

/// A closed cycle of barter offers: leg `i` gives to leg `i + 1`, the last leg gives to the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct BarterCycle {
    pub legs: BoundedVec<BarterLeg, BARTER_LEGS_MIN, BARTER_LEGS_MAX>,
}

/// A payload with no fields, encoded as the empty array `0x80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Empty;

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_tuple(0)?.end()
    }
}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EmptyVisitor;
        impl<'de> Visitor<'de> for EmptyVisitor {
            type Value = Empty;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an empty array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Empty, A::Error> {
                Ok(Empty)
            }
        }
        deserializer.deserialize_tuple(0, EmptyVisitor)
    }
}

/// Sets a governance parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct SetParameter {
    pub name: ParameterName,
    pub value: u64,
}

/// Adds a validator (or changes its power).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct AddValidator {
    pub key: PublicKey,
    /// Voting power; more than 0.
    pub power: u64,
}

/// Schedules the ledger's protocol version `version` from block `height` on (PROTOCOL.md §10, *Protocol versions*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Upgrade {
    /// 2 to 255.
    pub version: u8,
    pub height: u64,
    /// What the operators of nodes that do not support the version must install.
    pub info: Text<UPGRADE_INFO_BYTES_MAX>,
}

/// Removes a validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct RemoveValidator {
    pub key: PublicKey,
}

/// Admits an account to the members who vote one account, one vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct AdmitMember {
    pub key: PublicKey,
}

/// Changes a token's issuance rule: who may mint it, its supply cap and its reward per kWh exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct IssuanceRule {
    pub token: TokenId,
    /// In strictly increasing byte order.
    pub issuers: BoundedVec<PublicKey, 0, ISSUERS_MAX>,
    /// Largest total supply, milli-units; 0: no cap.
    pub supply_max: u64,
    /// Milli-units minted to a meter's owner per kWh its anchored readings export.
    pub export_reward_per_kwh: u64,
}

/// Sets one pool's grid fee, replacing its genesis rule's and the governable defaults: a constant per 1000
/// units, or a share of the seller's price (ppm); both 0: no fee. Not both above 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct PoolFee {
    pub pool: PoolId,
    pub fee_per_kwh: u64,
    pub fee_ppm: u32,
}

/// Most issuers an issuance rule names.
pub const ISSUERS_MAX: usize = 16;

/// A fail-safe override: a measure in force for `duration_blocks` blocks from the block where it passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Override {
    pub measure: Measure,
    /// More than 0.
    pub duration_blocks: u32,
}

/// Stops an account's trading: its offers, barter offers and settlements are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Freeze {
    pub account: PublicKey,
}

/// Caps an agent's fuel: its recharge in every class, units per second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct FuelCap {
    pub account: PublicKey,
    pub per_s: u64,
}

/// Caps what a device (a meter of an account) may import and export, W: readings beyond are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct DeviceCap {
    pub account: PublicKey,
    pub meter: MeterId,
    pub import_w_max: u64,
    pub export_w_max: u64,
}

/// Puts the microgrid of a location cell into island mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct IslandOrder {
    pub cell: Cell,
}

/// What an override does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    Freeze(Freeze),
    FuelCap(FuelCap),
    DeviceCap(DeviceCap),
    Island(IslandOrder),
}

tagged_union!(Measure, "override measure", MeasureKind {
    0 => Freeze(Freeze), "freeze";
    1 => FuelCap(FuelCap), "fuel-cap";
    2 => DeviceCap(DeviceCap), "device-cap";
    3 => Island(IslandOrder), "island";
});

/// What a governance proposal does if it passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Text(Empty),
    SetParameter(SetParameter),
    AddValidator(AddValidator),
    RemoveValidator(RemoveValidator),
    /// An override decided by the community's vote.
    Override(Override),
    AdmitMember(AdmitMember),
    /// An override decided by the emergency rule (k of n stewards), for a short bounded time.
    Emergency(Override),
    IssuanceRule(IssuanceRule),
    PoolFee(PoolFee),
    /// A quest: a job the commons posts (its reward paid from the commons' account, with fuel and eco-tokens).
    Quest(Job),
    /// A coordinated upgrade of the ledger's protocol version.
    Upgrade(Upgrade),
}

tagged_union!(Action, "proposal action", ActionKind {
    0 => Text(Empty), "text";
    1 => SetParameter(SetParameter), "set-parameter";
    2 => AddValidator(AddValidator), "add-validator";
    3 => RemoveValidator(RemoveValidator), "remove-validator";
    4 => Override(Override), "override";
    5 => AdmitMember(AdmitMember), "admit-member";
    6 => Emergency(Override), "emergency";
    7 => IssuanceRule(IssuanceRule), "issuance-rule";
    8 => PoolFee(PoolFee), "pool-fee";
    9 => Quest(Job), "quest";
    10 => Upgrade(Upgrade), "upgrade";
});

/// A governance proposal, voted on for `voting_period_blocks` blocks after the one that includes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Proposal {
    pub action: Action,
    pub title: Text<PROPOSAL_TITLE_BYTES_MAX>,
    pub text: Text<PROPOSAL_TEXT_BYTES_MAX>,
    /// More than 0.
    pub voting_period_blocks: u32,
}

/// A vote's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Choice {
    No = 0,
    Yes = 1,
    Abstain = 2,
}

/// A vote on a proposal (the proposal message's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Vote {
    pub proposal: Id,
    pub choice: Choice,
    /// On a proposal decided by stake: the token milli-units the voter locks into its vote until the proposal
    /// closes (its weight); 0 otherwise.
    pub stake: u64,
}

/// A guild: a shared account of its members, from which tokens move only when `threshold` of them approve.
/// Its account is [`guild_account`] of this message's id; anyone funds it with an ordinary transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Guild {
    pub name: Text<GUILD_NAME_BYTES_MAX>,
    /// In strictly increasing byte order (so each member appears once).
    pub members: BoundedVec<PublicKey, 1, GUILD_MEMBERS_MAX>,
    /// Approvals a spend needs: 1 to the number of members.
    pub threshold: u32,
}

/// A member's request to move tokens from a guild's account; it counts as the requester's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct GuildSpend {
    /// The guild's account.
    pub guild: PublicKey,
    pub to: PublicKey,
    pub token: TokenId,
    /// Token milli-units; more than 0.
    pub amount: u64,
    pub memo: Text<MEMO_BYTES_MAX>,
}

/// A member's approval of a pending spend (the spend message's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct GuildApproval {
    pub spend: Id,
}

/// What kind of thing an asset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum AssetKind {
    Meter = 0,
    Inverter = 1,
    Battery = 2,
    CommunityStorage = 3,
    /// An infrastructure pod: a shelter, a data-centre rack, a water pump.
    Pod = 4,
    Other = 5,
    /// A cell's feeder meter, at its connection point to the grid: its import is what the cell took from the grid,
    /// its export what it fed back (PROTOCOL.md §10, *the feeder balance*). Owned by a guild.
    Feeder = 6,
}

/// An asset's rated limits, W and Wh; 0 where it has none (no storage, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Limits {
    pub generation_w_max: u64,
    pub import_w_max: u64,
    pub export_w_max: u64,
    pub consumption_w_max: u64,
    pub storage_w_max: u64,
    pub storage_wh: u64,
}

/// An asset's manifest (its "infrastructure DNA"): what it is, who owns it, what it is rated for, where, since when
/// and how often it needs maintenance. Readings its author signs for one of `meters` are checked against `limits`.
/// The asset's id is the id of its first manifest; a later manifest from the same author naming the same meter
/// replaces the binding of that meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Asset {
    pub kind: AssetKind,
    pub purpose: Text<MEMO_BYTES_MAX>,
    /// The owning account or guild.
    pub owner: PublicKey,
    pub meters: BoundedVec<MeterId, 0, ASSET_METERS_MAX>,
    pub limits: Limits,
    pub cell: Cell,
    /// When it went into service, Unix seconds.
    pub commissioned_s: u64,
    /// How often it needs maintenance, seconds; 0: never.
    pub maintenance_interval_s: u64,
    /// The key of the device that signs the readings of `meters` (the meter itself or its gateway); empty: they are
    /// signed by the author's node only. A device key belongs to one asset at a time.
    pub device: BoundedVec<DeviceKey, 0, 1>,
}

/// Which maintenance rule raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum AlertRule {
    /// A battery's round-trip efficiency fell below the threshold (ppm).
    Wear = 0,
    /// Stored energy fell below the reserve (ppm of capacity).
    Depletion = 1,
    /// Consumption far above the asset's usual (Wh).
    Misuse = 2,
    /// The meter went silent (intervals).
    Silent = 3,
    /// Generation far above the cell's median yield per installed kWp for several intervals (raised by the ledger
    /// when a cell's interval closes, PROTOCOL.md §10, *plausibility*; ppm of the median).
    Implausible = 4,
}

/// A maintenance alert about a registered asset, raised by a watcher's rules over its readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Alert {
    /// The asset (its manifest's id).
    pub asset: Id,
    pub rule: AlertRule,
    pub measured: u64,
    pub threshold: u64,
    /// The interval where the rule fired.
    pub interval_start_s: u64,
}

/// How serious a citizen's report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Severity {
    Info = 0,
    Warning = 1,
    Fault = 2,
    /// Maintenance was done on the asset: the report is its log entry.
    Done = 3,
}

/// A citizen's status report about an asset or an area (a feedback port), optionally with a signed reading as
/// evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Report {
    /// The asset reported on; none: the area of `cell`.
    pub asset: BoundedVec<Id, 0, 1>,
    pub cell: Cell,
    pub severity: Severity,
    pub text: Text<REPORT_TEXT_BYTES_MAX>,
    /// A signed reading of the reporter's (an envelope whose body is a [`Reading`]).
    pub reading: BoundedVec<Envelope, 0, 1>,
}

/// The account of the guild created by the message with id `guild`: `blake3("kos/v1/guild" || 0x00 || id)`. No key
/// signs for it: only approved spends move its tokens.
pub fn guild_account(guild: &Id) -> PublicKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kos/v1/guild");
    hasher.update(&[0]);
    hasher.update(guild.as_bytes());
    PublicKey(*hasher.finalize().as_bytes())
}

/// The worth of `quantity` at `unit_price`, in token milli-units, rounded down: `quantity * unit_price / 1000`.
/// `None` when it does not fit in 64 bits.
pub fn value_milli(quantity: u64, unit_price: u64) -> Option<u64> {
    let product = u128::from(quantity).checked_mul(u128::from(unit_price))?;
    u64::try_from(product.checked_div(1000)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn pool_names_round_trip() {
        let pool: PoolId = "energy/credit/u33db/900".parse().unwrap();
        assert_eq!(pool.to_string(), "energy/credit/u33db/900");
        let world: PoolId = "compute/credit/*/0".parse().unwrap();
        assert_eq!(world.cell.as_str(), "");
        assert_eq!(world.to_string(), "compute/credit/*/0");
        assert!("energy/credit/u33db".parse::<PoolId>().is_err());
        assert!("heat/credit/u33db/900".parse::<PoolId>().is_err());
        assert_ne!(pool.digest(), world.digest());
        assert_eq!(pool.next_delivery_start_s(1_800_000_000), 1_800_000_900);
        assert_eq!(pool.next_delivery_start_s(1_800_000_900), 1_800_001_800);
        assert_eq!(world.next_delivery_start_s(1_800_000_000), 0);
    }

    #[test]
    fn barter_pools_and_pool_keys_round_trip_and_have_their_own_digests() {
        let barter: BarterPool = "barter/u33db".parse().unwrap();
        assert_eq!(barter.to_string(), "barter/u33db");
        let world: BarterPool = "barter/*".parse().unwrap();
        assert_eq!((world.cell.as_str(), world.to_string().as_str()), ("", "barter/*"));
        assert!("barter/u33da".parse::<BarterPool>().is_err(), "a is not a geohash character");
        assert!("energy/credit/u33db/900".parse::<BarterPool>().is_err());
        // The vectors of PROTOCOL.md §5.
        assert_eq!(barter.digest().to_hex(), "9788ab472e2a1f45d66f7b1c0fddb2106e8bcf8bf48a8dde56b3af8918242cd5");
        let pool: PoolId = "energy/credit/u33db/900".parse().unwrap();
        assert_eq!(pool.digest().to_hex(), "930a438f06d0ffbbe1d6bf82cd2487b287d781dfb86a583d996750833c5a16a6");
        for text in ["barter/u33db", "barter/*", "energy/credit/u33db/900", "compute/credit/*/0"] {
            let key: PoolKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
        assert_eq!(PoolKey::from(barter.clone()).digest(), barter.digest());
        assert_ne!(barter.digest(), world.digest());
        let offer = BarterOffer {
            give: Resource::Compute,
            give_quantity: 1,
            want: Resource::Memory,
            want_quantity: 1,
            cell: Cell::new("u33db").unwrap(),
            delivery_start_s: 0,
        };
        assert_eq!(offer.pool(), barter);
        // The vector of PROTOCOL.md §10 (barter escrow).
        assert_eq!(
            barter_leg_id(&Id([7; 32]), 2).to_hex(),
            "f6c710e5e310ca8832b04db289d99a3cdfd0256f385a435514de2c67b2c79630"
        );
    }

    #[test]
    fn unknown_codes_and_extra_fields_are_rejected() {
        let cancel = Body::Cancel(Cancel { offer: Id([3; 32]) });
        let bytes = codec::encode(&cancel);
        assert_eq!(bytes[..3], [0x82, 0x02, 0x81]);
        assert_eq!(codec::decode::<Body>(&bytes, 1024), Ok(cancel));
        let mut unknown = bytes.clone();
        unknown[1] = 0x0a;
        assert!(matches!(codec::decode::<Body>(&unknown, 1024), Err(codec::Error::Invalid(_))));
        // The cancel payload with a second, unknown field.
        let mut extra = bytes.clone();
        extra[2] = 0x82;
        extra.push(0x00);
        assert!(matches!(codec::decode::<Body>(&extra, 1024), Err(codec::Error::Invalid(_))));
        // An empty payload.
        let missing = [0x82, 0x02, 0x80];
        assert!(matches!(codec::decode::<Body>(&missing, 1024), Err(codec::Error::Invalid(_))));
        // A body with a third element.
        let mut three = bytes.clone();
        three[0] = 0x83;
        three.push(0x00);
        assert!(matches!(codec::decode::<Body>(&three, 1024), Err(codec::Error::Invalid(_))));
    }

    #[test]
    fn enum_fields_reject_unknown_values() {
        let side = codec::encode(&Side::Ask);
        assert_eq!(side, [0x01]);
        assert!(codec::decode::<Side>(&[0x02], 8).is_err());
        assert!(codec::decode::<Resource>(&[0x04], 8).is_err());
        assert_eq!(codec::encode(&Empty), [0x80]);
        assert!(codec::decode::<Empty>(&[0x81, 0x00], 8).is_err());
    }

    #[test]
    fn value_is_rounded_down_and_checked() {
        assert_eq!(value_milli(500, 45_000), Some(22_500));
        assert_eq!(value_milli(1, 999), Some(0));
        assert_eq!(value_milli(u64::MAX, u64::MAX), None);
    }
}
