//! The job marketplace: postings, bids, awards, deliveries with their evidence, verdicts and disputes; and the
//! compute check (a task's unit outputs, their Merkle tree and the sample the ledger re-executes), specified in
//! PROTOCOL.md §13 so that anyone can check a compute job's result without kos.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_repr::{Deserialize_repr, Serialize_repr};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use super::{Empty, Resource};
use crate::envelope::Envelope;
use crate::limits::{
    COMPUTE_SAMPLES_MAX, JOB_NEEDS_MAX, JOB_SKILLS_MAX, JOB_TEXT_BYTES_MAX, JOB_TITLE_BYTES_MAX, MERKLE_PATH_MAX,
};
use crate::types::{BoundedVec, Cell, Id, MeterId, PublicKey, Skill, Text, TokenId};

/// What a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum JobKind {
    /// Rent compute (a training run, a batch).
    Compute = 0,
    /// A storage or memory licence.
    Storage = 1,
    Bandwidth = 2,
    /// Build or fabricate something (print a part).
    Build = 3,
    /// Carry goods somewhere (water to a shelter, a part to a neighbour).
    Delivery = 4,
    /// Repair or service an asset.
    Maintenance = 5,
    Text = 6,
}

impl JobKind {
    /// Every kind, in code order.
    pub const ALL: [JobKind; 7] = [
        JobKind::Compute,
        JobKind::Storage,
        JobKind::Bandwidth,
        JobKind::Build,
        JobKind::Delivery,
        JobKind::Maintenance,
        JobKind::Text,
    ];

    /// The kind's name (`compute`, `maintenance`...).
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Compute => "compute",
            JobKind::Storage => "storage",
            JobKind::Bandwidth => "bandwidth",
            JobKind::Build => "build",
            JobKind::Delivery => "delivery",
            JobKind::Maintenance => "maintenance",
            JobKind::Text => "text",
        }
    }

    /// Whether the job is done somewhere (bids then give their location and route distance).
    pub fn is_physical(self) -> bool {
        matches!(self, JobKind::Build | JobKind::Delivery | JobKind::Maintenance)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(name: &str) -> Result<JobKind, String> {
        JobKind::ALL.into_iter().find(|kind| kind.name() == name).ok_or_else(|| {
            format!("unknown job kind {name:?} (compute, storage, bandwidth, build, delivery, maintenance, text)")
        })
    }
}

/// How the award is chosen among a job's bids; the ledger computes it, so anyone can check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum AwardRule {
    /// The lowest price; ties to the earlier bid.
    LowestPrice = 0,
    /// The lowest cost: price weighted by the bidder's reputation, plus the route distance at the job's `per_km`.
    BestScore = 1,
    /// The first bid that qualifies, awarded as it lands.
    FirstQualified = 2,
}

/// A resource a job needs: `quantity` per hour (Wh for energy, milli-units for the others) for `hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Need {
    pub resource: Resource,
    pub quantity: u64,
    pub hours: u32,
}

/// A compute job's task: `units` independent units, each `rounds` blake3 hashes deep (see [`unit_output`]); the
/// result is the Merkle root of the unit outputs, and the ledger re-executes `samples` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct ComputeTask {
    pub seed: Id,
    /// 1 to [`crate::limits::COMPUTE_UNITS_MAX`].
    pub units: u32,
    /// 1 to [`crate::limits::COMPUTE_ROUNDS_MAX`].
    pub rounds: u32,
    /// 1 to [`COMPUTE_SAMPLES_MAX`].
    pub samples: u32,
}

/// What completes a job, besides the poster's acceptance (which always does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Only the poster's acceptance.
    Acceptance(Empty),
    /// Energy delivered: the worker's meter (named in its delivery) exported at least this many Wh, counted from
    /// its readings anchored on the ledger after the award.
    Energy(u64),
    /// A compute result, checked by re-executing a sample of the task.
    Compute(ComputeTask),
    /// The asset (a manifest's id) is healthy again: a reading of one of its meters anchored after the award, and
    /// no alert about it since the award.
    Healthy(Id),
    /// A receipt: the named recipient's `Done` verdict completes it.
    Receipt(PublicKey),
}

tagged_union!(Evidence, "job evidence", EvidenceKind {
    0 => Acceptance(Empty), "acceptance";
    1 => Energy(u64), "energy";
    2 => Compute(ComputeTask), "compute";
    3 => Healthy(Id), "healthy";
    4 => Receipt(PublicKey), "receipt";
});

/// A job posting. The poster pays at most `reward` of `token` (moved to escrow on award) to the worker it awards by
/// `rule` among the bids that land before `bids_until_ms`; the work is due by `deadline_ms`, after which the escrow
/// goes back and `slash_ppm` of the worker's collateral goes to the poster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Job {
    pub kind: JobKind,
    pub title: Text<JOB_TITLE_BYTES_MAX>,
    pub text: Text<JOB_TEXT_BYTES_MAX>,
    pub needs: BoundedVec<Need, 0, JOB_NEEDS_MAX>,
    /// Skills or device classes a worker should have.
    pub skills: BoundedVec<Skill, 0, JOB_SKILLS_MAX>,
    /// Where a physical job is done; empty: anywhere.
    pub cell: Cell,
    /// How far from `cell` a worker may come from, m; 0: no limit.
    pub radius_m: u32,
    pub token: TokenId,
    /// The most the poster pays, token milli-units; more than 0.
    pub reward: u64,
    /// The least collateral a bid must lock, token milli-units of `token`.
    pub collateral: u64,
    /// The share of the collateral a worker who fails loses to the poster, ppm (at most 1 000 000).
    pub slash_ppm: u32,
    /// The lowest reputation tier a bidder must be in (0: anyone).
    pub tier: u32,
    /// Only members of this guild (its account) may bid; none: anyone.
    pub guild: BoundedVec<PublicKey, 0, 1>,
    pub rule: AwardRule,
    /// For [`AwardRule::BestScore`]: what a km of route counts as, token milli-units.
    pub per_km: u64,
    pub evidence: Evidence,
    /// Bids are taken until this time (Unix ms, block time).
    pub bids_until_ms: u64,
    /// The work is due by this time; later than `bids_until_ms`.
    pub deadline_ms: u64,
}

/// A worker's bid on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Bid {
    pub job: Id,
    /// What the worker asks, token milli-units; at most the job's reward.
    pub price: u64,
    /// When the worker can start, Unix ms.
    pub start_ms: u64,
    /// Locked from the bid on (returned to losing bids at the award); at least the job's collateral.
    pub collateral: u64,
    /// Where the worker is, for physical jobs.
    pub cell: Cell,
    /// The worker's route distance to the job, m.
    pub distance_m: u32,
}

/// The poster closes bidding and awards: the bid must be the one the job's rule picks among the bids so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Award {
    pub job: Id,
    pub bid: Id,
}

/// One sampled unit of a compute result: its output and its Merkle path to the result's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Opening {
    pub index: u32,
    pub leaf: Id,
    pub path: BoundedVec<Id, 0, MERKLE_PATH_MAX>,
}

/// What a worker delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// The work is done; the poster (or the receipt's recipient) confirms.
    Claim(Empty),
    /// The worker's meter whose anchored export is the evidence.
    Meter(MeterId),
    /// A compute result: the Merkle root of the unit outputs. Fixes the sample to open.
    Result(Id),
    /// The openings of the sampled units of the committed result.
    Openings(BoundedVec<Opening, 1, COMPUTE_SAMPLES_MAX>),
    /// A reading of the maintained asset's meter (an entry on the ledger).
    Reading(Box<Envelope>),
}

tagged_union!(Proof, "job proof", ProofKind {
    0 => Claim(Empty), "claim";
    1 => Meter(MeterId), "meter";
    2 => Result(Id), "result";
    3 => Openings(BoundedVec<Opening, 1, COMPUTE_SAMPLES_MAX>), "openings";
    4 => Reading(Box<Envelope>), "reading";
});

/// The awarded worker's delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Deliver {
    pub job: Id,
    pub proof: Proof,
}

/// A verdict on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Outcome {
    /// Not done: refund the poster, slash the worker.
    Failed = 0,
    /// Done: pay the worker.
    Done = 1,
}

/// A verdict: the poster's (or the receipt's recipient's) `Done` completes an awarded job; the poster's `Failed`
/// withdraws a job nobody was awarded; a juror's verdict is its vote on a disputed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Verdict {
    pub job: Id,
    pub outcome: Outcome,
}

/// The poster or the worker disputes an awarded job: a jury drawn from the ledger decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Dispute {
    pub job: Id,
    pub text: Text<JOB_TEXT_BYTES_MAX>,
}

pub(crate) fn tagged_hash(domain: &[u8], parts: &[&[u8]]) -> Id {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain);
    hasher.update(&[0]);
    for part in parts {
        hasher.update(part);
    }
    Id(*hasher.finalize().as_bytes())
}

/// The output of unit `index` of a compute task: `h = blake3("kos/v1/job-unit" || 0x00 || seed || u32be(index))`,
/// then `rounds - 1` times `h = blake3(h)`.
pub fn unit_output(task: &ComputeTask, index: u32) -> Id {
    let mut hash = tagged_hash(b"kos/v1/job-unit", &[task.seed.as_bytes(), &index.to_be_bytes()]);
    for _ in 1..task.rounds {
        hash = Id(*blake3::hash(hash.as_bytes()).as_bytes());
    }
    hash
}

/// The parent of two Merkle nodes: `blake3("kos/v1/job-node" || 0x00 || left || right)`.
pub fn merkle_parent(left: &Id, right: &Id) -> Id {
    tagged_hash(b"kos/v1/job-node", &[left.as_bytes(), right.as_bytes()])
}

/// The levels of the Merkle tree over `leaves`, leaves first, root last; a node without a sibling moves up as it
/// is. Empty for no leaves.
pub fn merkle_levels(leaves: Vec<Id>) -> Vec<Vec<Id>> {
    let mut levels = Vec::new();
    if leaves.is_empty() {
        return levels;
    }
    levels.push(leaves);
    while let Some(level) = levels.last().filter(|level| level.len() > 1) {
        let next: Vec<Id> = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => merkle_parent(left, right),
                [single] => *single,
                _ => Id([0; 32]),
            })
            .collect();
        levels.push(next);
    }
    levels
}

/// The root of the Merkle tree over `leaves` (the all-zero id for none).
pub fn merkle_root(leaves: Vec<Id>) -> Id {
    merkle_levels(leaves).last().and_then(|level| level.first().copied()).unwrap_or(Id([0; 32]))
}

/// The path of leaf `index` in the tree of `levels`: its sibling at each level that has one.
pub fn merkle_path(levels: &[Vec<Id>], index: u32) -> Vec<Id> {
    let mut path = Vec::new();
    let mut position = index as usize;
    for level in levels.iter().take(levels.len().saturating_sub(1)) {
        let sibling = position ^ 1;
        if let Some(node) = level.get(sibling) {
            path.push(*node);
        }
        position /= 2;
    }
    path
}

/// Whether `path` leads from `leaf` at `index` of a tree over `units` leaves to `root`.
pub fn verify_path(root: &Id, units: u32, index: u32, leaf: &Id, path: &[Id]) -> bool {
    if index >= units {
        return false;
    }
    let (mut position, mut width, mut hash, mut steps) = (index as usize, units as usize, *leaf, path.iter());
    while width > 1 {
        let sibling = position ^ 1;
        if sibling < width {
            let Some(node) = steps.next() else { return false };
            hash = if position % 2 == 0 { merkle_parent(&hash, node) } else { merkle_parent(node, &hash) };
        }
        position /= 2;
        width = width.div_ceil(2);
    }
    steps.next().is_none() && hash == *root
}

/// The units of a committed result the ledger re-executes: `samples` indices (repeats allowed), the j-th being
/// `u64le(blake3("kos/v1/job-sample" || 0x00 || job || root || u64be(height) || u64be(time_ms) || u32be(j))[..8])
/// mod units`, where `height` and `time_ms` are the block's that recorded the result (the worker does not choose
/// them).
pub fn sample_indices(task: &ComputeTask, job: &Id, root: &Id, height: u64, time_ms: u64) -> Vec<u32> {
    (0..task.samples.min(COMPUTE_SAMPLES_MAX as u32))
        .map(|j| {
            let hash = tagged_hash(
                b"kos/v1/job-sample",
                &[job.as_bytes(), root.as_bytes(), &height.to_be_bytes(), &time_ms.to_be_bytes(), &j.to_be_bytes()],
            );
            let mut word = [0u8; 8];
            word.copy_from_slice(&hash.as_bytes()[..8]);
            (u64::from_le_bytes(word) % u64::from(task.units.max(1))) as u32
        })
        .collect()
}

/// Runs a compute task in full: its unit outputs and their Merkle levels (what a worker does).
pub fn run_task(task: &ComputeTask) -> Vec<Vec<Id>> {
    merkle_levels((0..task.units).map(|index| unit_output(task, index)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(units: u32) -> ComputeTask {
        ComputeTask { seed: Id([7; 32]), units, rounds: 3, samples: 4 }
    }

    proptest! {
        #[test]
        fn every_path_verifies_and_a_wrong_leaf_does_not(units in 1u32..70, pick in any::<u32>()) {
            let task = task(units);
            let levels = run_task(&task);
            let root = *levels.last().and_then(|level| level.first()).unwrap();
            let index = pick % units;
            let leaf = levels[0][index as usize];
            let path = merkle_path(&levels, index);
            prop_assert!(verify_path(&root, units, index, &leaf, &path));
            prop_assert!(!verify_path(&root, units, index, &Id([1; 32]), &path));
            prop_assert!(!verify_path(&root, units, (index + 1) % units.max(2), &leaf, &path) || units == 1);
            prop_assert!(!verify_path(&root, units, units, &leaf, &path));
        }
    }

    #[test]
    fn units_chain_hashes_and_samples_fall_in_range() {
        let one = ComputeTask { rounds: 1, ..task(4) };
        let two = ComputeTask { rounds: 2, ..task(4) };
        assert_eq!(unit_output(&two, 0), Id(*blake3::hash(unit_output(&one, 0).as_bytes()).as_bytes()));
        assert_ne!(unit_output(&one, 0), unit_output(&one, 1));
        let samples = sample_indices(&task(5), &Id([1; 32]), &Id([2; 32]), 10, 20);
        assert_eq!(samples.len(), 4);
        assert!(samples.iter().all(|index| *index < 5));
        assert_ne!(samples, sample_indices(&task(5), &Id([1; 32]), &Id([2; 32]), 11, 20));
        assert_eq!(merkle_root(Vec::new()), Id([0; 32]));
    }
}
