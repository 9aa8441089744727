//! Hard limits of the wire format. Every length a peer can choose is capped here, in the unit its name ends with.
//!
//! Changing a limit is a protocol change: peers with a smaller limit would reject what peers with a larger one send.

/// Largest encoded envelope, nested signed messages included.
pub const ENVELOPE_BYTES_MAX: usize = 16 * 1024;
/// Network id: 1 to this many bytes of `[a-z0-9-]`.
pub const NETWORK_ID_BYTES_MAX: usize = 32;
/// Token id: 1 to this many bytes of `[a-z0-9-]`.
pub const TOKEN_ID_BYTES_MAX: usize = 16;
/// Location cell: 0 to this many geohash characters (0 = the whole world).
pub const CELL_CHARS_MAX: usize = 12;
/// Meter id: 1 to this many bytes of `[A-Za-z0-9._:/-]`.
pub const METER_ID_BYTES_MAX: usize = 64;
/// Free-text memo on a transfer, UTF-8 bytes.
pub const MEMO_BYTES_MAX: usize = 140;
/// A citizen's report, UTF-8 bytes.
pub const REPORT_TEXT_BYTES_MAX: usize = 1024;
/// Governance proposal title, UTF-8 bytes.
pub const PROPOSAL_TITLE_BYTES_MAX: usize = 120;
/// Governance proposal text, UTF-8 bytes.
pub const PROPOSAL_TEXT_BYTES_MAX: usize = 4096;
/// An upgrade's `info` (what to install), UTF-8 bytes.
pub const UPGRADE_INFO_BYTES_MAX: usize = 120;
/// Governance parameter name, bytes of `[a-z0-9._-]`.
pub const PARAMETER_NAME_BYTES_MAX: usize = 64;
/// Legs of one barter cycle (a cycle has at least 2).
pub const BARTER_LEGS_MAX: usize = 8;
/// Members of one guild.
pub const GUILD_MEMBERS_MAX: usize = 32;
/// A guild's name, UTF-8 bytes.
pub const GUILD_NAME_BYTES_MAX: usize = 64;
/// Meters one asset manifest binds.
pub const ASSET_METERS_MAX: usize = 4;
/// An OCMF record a reading carries as its device's signature, bytes.
pub const OCMF_RECORD_BYTES_MAX: usize = 4096;
/// How far after its interval's end an OCMF register may be read and still attest the interval, seconds (a
/// device's clock and its reading cycle).
pub const OCMF_LATE_SECONDS_MAX: u64 = 60;
/// A skill or device class named by a job, bytes of `[a-z0-9-]`.
pub const SKILL_BYTES_MAX: usize = 32;
/// Job title, UTF-8 bytes.
pub const JOB_TITLE_BYTES_MAX: usize = 120;
/// Job description and dispute reasons, UTF-8 bytes.
pub const JOB_TEXT_BYTES_MAX: usize = 1024;
/// Resources one job needs.
pub const JOB_NEEDS_MAX: usize = 8;
/// Skills or device classes one job asks for.
pub const JOB_SKILLS_MAX: usize = 8;
/// Units of a compute job's task (so a Merkle path has at most 16 steps).
pub const COMPUTE_UNITS_MAX: u32 = 65_536;
/// Hash rounds of one compute unit (bounds the ledger's re-execution of a sample).
pub const COMPUTE_ROUNDS_MAX: u32 = 4096;
/// Units of a compute job re-executed to check its result.
pub const COMPUTE_SAMPLES_MAX: usize = 16;
/// Steps of a Merkle path over compute units.
pub const MERKLE_PATH_MAX: usize = 16;
/// Smallest barter cycle.
pub const BARTER_LEGS_MIN: usize = 2;
/// Signatures verified in one batch equation; larger inputs are split into chunks of this size.
pub const BATCH_SIGNATURES_MAX: usize = 256;
/// Delivery interval of an interval pool: at most one day.
pub const INTERVAL_SECONDS_MAX: u32 = 86_400;
/// How far ahead of its creation an offer's delivery may start: a week, for day-ahead and week-ahead offers. An
/// offer for a later interval would hold a slot of its pool (on every node that serves it) until that interval's
/// auction, which may be never.
pub const DELIVERY_HORIZON_SECONDS_MAX: u64 = 7 * 86_400;
/// Depth of nested CBOR arrays the decoder follows (an envelope nested in a settlement is about 5 deep).
pub const CBOR_DEPTH_MAX: usize = 16;

// The largest nested message must fit: a barter cycle of the most legs, each a full offer envelope.
const _: () = assert!(BARTER_LEGS_MAX * 512 + 1024 <= ENVELOPE_BYTES_MAX);
const _: () = assert!(PROPOSAL_TEXT_BYTES_MAX + PROPOSAL_TITLE_BYTES_MAX + 1024 <= ENVELOPE_BYTES_MAX);
const _: () = assert!(GUILD_MEMBERS_MAX * 34 + GUILD_NAME_BYTES_MAX + 1024 <= ENVELOPE_BYTES_MAX);
// A compute opening of the most samples, each with the longest path, fits.
const _: () = assert!(COMPUTE_SAMPLES_MAX * (MERKLE_PATH_MAX * 34 + 48) + 1024 <= ENVELOPE_BYTES_MAX);
const _: () = assert!(1u64 << MERKLE_PATH_MAX == COMPUTE_UNITS_MAX as u64);
const _: () = assert!(BARTER_LEGS_MIN >= 2 && BARTER_LEGS_MIN <= BARTER_LEGS_MAX);
// A delivery interval fits within the horizon, so every interval pool has an interval an offer may name.
const _: () = assert!(INTERVAL_SECONDS_MAX as u64 <= DELIVERY_HORIZON_SECONDS_MAX);

/// Most entries in one bundle (PROTOCOL.md §9).
pub const BUNDLE_ENTRIES_MAX: usize = 256;
/// Most bytes of one bundle.
pub const BUNDLE_BYTES_MAX: usize = 512 * 1024;
const _: () = assert!(ENVELOPE_BYTES_MAX + 8 <= BUNDLE_BYTES_MAX);
