//! Cells (PROTOCOL.md §10, *cells*): what the ledger checks of a location cell's readings when one of the cell's
//! intervals closes, at the interval's end plus `settlement_grace_ms` (before the interval's escrows are
//! released):
//! - **the feeder balance**: the members' net flows (their assets' readings in the cell) must add up to what the
//!   cell's feeder meter measured at its connection point, within `feeder_tolerance_wh` plus
//!   `feeder_tolerance_ppm` of the members' gross flows. A mismatch opens a case on the cell: the interval's
//!   energy trades in the cell's pools are held, the members whose claims explain the gap most are named and their
//!   rewards for the interval withheld, and a jury decides;
//! - **plausibility**: an asset's generation per installed kW compared with the cell's median; an asset far above
//!   it has the interval's export reward withheld, and after `plausibility_intervals` such intervals in a row an
//!   alert (*implausible generation*) and a case open on it, decided by a jury.
//!
//! Mission-token export rewards of a cell's members are paid when the interval closes, not when a reading anchors,
//! so that these checks come first; a reading anchored after its cell's interval closed earns none.
//!
//! The work is end-of-block work over the cell's records of the interval: one close per cell and interval with a
//! reading, linear in the cell's members (its records are bounded by the readings the blocks held); an unbalanced
//! close also reads the members' records of up to [`SUSPECT_WINDOW`] intervals before it.

use super::*;
use protocol::message::{Outcome, Trust};
use protocol::types::Cell;

use super::jobs::JobError;
use super::read::{Kv, prefixed, value};
use super::suspects::{self, GapFit, MemberFlows};

/// Most members a feeder case names.
pub const CASE_NAMED_MAX: usize = 8;
/// Most of a cell's intervals (this one and those before it) the suspects of a feeder gap are judged over: two days
/// of quarter hours, as long as the ledger keeps an interval's records (longer intervals: fewer, within the two
/// days). Each unbalanced close reads the window's member records: at most this many times the cell's members.
pub const SUSPECT_WINDOW: u64 = 192;
/// A case is decided (by its votes so far) at the latest this long after its interval's end: a day before the
/// interval's records (the held escrows' index, the flows they are released by) are forgotten.
pub const CASE_DECIDED_WITHIN_MS: u64 = INTERVAL_RECORDS_RETENTION_MS - 86_400_000;
/// Most intervals a plausibility streak's records are walked back over (`plausibility_intervals` is at most this).
pub const PLAUSIBILITY_INTERVALS_MAX: u64 = 96;

/// A cell as a fixed-width key part: its characters, then zero bytes up to 12.
fn cell_part(cell: &str) -> [u8; protocol::limits::CELL_CHARS_MAX] {
    let mut part = [0u8; protocol::limits::CELL_CHARS_MAX];
    for (slot, byte) in part.iter_mut().zip(cell.as_bytes()) {
        *slot = *byte;
    }
    part
}

/// `cell (12) ‖ interval_start_s (8) ‖ interval_s (4)`: one interval of one cell.
fn interval_part(cell: &str, start_s: u64, interval_s: u32) -> Vec<u8> {
    let mut part = cell_part(cell).to_vec();
    part.extend_from_slice(&start_s.to_be_bytes());
    part.extend_from_slice(&interval_s.to_be_bytes());
    part
}

fn interval_record_key(cell: &str, start_s: u64, interval_s: u32) -> Vec<u8> {
    key(CELL_INTERVAL, &[&interval_part(cell, start_s, interval_s)])
}

fn member_key(cell: &str, start_s: u64, interval_s: u32, asset: &Id) -> Vec<u8> {
    key(CELL_MEMBER, &[&interval_part(cell, start_s, interval_s), asset.as_bytes()])
}

fn close_due_key(due_ms: u64, cell: &str, start_s: u64, interval_s: u32) -> Vec<u8> {
    key(CELL_DUE, &[&due_ms.to_be_bytes(), &[0], &interval_part(cell, start_s, interval_s)])
}

fn case_due_key(due_ms: u64, case: &Id) -> Vec<u8> {
    key(CELL_DUE, &[&due_ms.to_be_bytes(), &[1], case.as_bytes()])
}

fn case_key(case: &Id) -> Vec<u8> {
    key(CELL_CASE, &[case.as_bytes()])
}

/// The id of the feeder case of a member named in a cell's interval: `tagged("kos/v1/cell-case", 0 ‖ cell (12) ‖
/// start (8) ‖ interval_s (4) ‖ account (32))`.
pub fn feeder_case_id(cell: &str, start_s: u64, interval_s: u32, account: &PublicKey) -> Id {
    Id(crate::hash::tagged("kos/v1/cell-case", &[&[0], &interval_part(cell, start_s, interval_s), account.as_bytes()])
        .0)
}

/// The id of the plausibility case of an asset's streak that began in the interval `start_s`:
/// `tagged("kos/v1/cell-case", 1 ‖ asset id ‖ start (8) ‖ interval_s (4))`.
pub fn plausibility_case_id(asset: &Id, start_s: u64, interval_s: u32) -> Id {
    Id(crate::hash::tagged(
        "kos/v1/cell-case",
        &[&[1], asset.as_bytes(), &start_s.to_be_bytes(), &interval_s.to_be_bytes()],
    )
    .0)
}

/// Where a cell's interval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum IntervalStatus {
    /// Readings are coming in; it closes at its end plus the grace.
    Open = 0,
    /// Closed, and the feeder's reading balanced the members'.
    Balanced = 1,
    /// Closed, and the feeder's reading did not balance the members': a case decides.
    Unbalanced = 2,
    /// Closed without a reading of the cell's feeder (or the cell has none).
    Unchecked = 3,
}

impl IntervalStatus {
    /// The lowercase name the API shows.
    pub fn name(self) -> &'static str {
        match self {
            IntervalStatus::Open => "open",
            IntervalStatus::Balanced => "balanced",
            IntervalStatus::Unbalanced => "unbalanced",
            IntervalStatus::Unchecked => "unchecked",
        }
    }
}

/// A cell's interval (key `8` ‖ cell ‖ start ‖ interval_s): the feeder's reading and where the close stands.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct CellInterval {
    pub status: IntervalStatus,
    /// The feeder asset whose reading this is (none yet: empty).
    pub feeder: Vec<Id>,
    pub feeder_import_wh: u64,
    pub feeder_export_wh: u64,
    /// Member assets with a reading in the interval.
    pub members: u64,
    /// When it closes (its end plus the grace in force at its first reading).
    pub due_ms: u64,
    /// Unbalanced: the members named (each has a feeder case), the strongest suspect first.
    pub named: Vec<PublicKey>,
    /// Unbalanced: its members' cases not decided yet (the interval's escrows are held until none is left).
    pub cases_open: u32,
}

/// One member asset's readings in a cell's interval (key `7` ‖ cell ‖ start ‖ interval_s ‖ asset id).
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct CellMember {
    /// The asset's author (whose meters they are).
    pub author: PublicKey,
    pub import_wh: u64,
    pub export_wh: u64,
    pub generation_wh: u64,
    /// Set at the close: how many intervals in a row (this one the last) the asset's generation was implausible.
    pub streak: u64,
    /// Set at the close: export whose reward waits on plausibility (paid when the streak ends short of an alert,
    /// else by the case).
    pub withheld_wh: u64,
    /// 1: every reading of the asset in the interval carried its device's attestation (PROTOCOL.md §5); else 0.
    pub attested: u8,
    /// Of `import_wh` and `export_wh`, what readings carrying a device attestation claimed.
    pub device_import_wh: u64,
    pub device_export_wh: u64,
    /// 1 once the readings reached the `balanced` trust level (PROTOCOL.md §10, *trust levels*), else 0.
    pub balanced: u8,
}

impl CellMember {
    /// The trust level of its readings (the weakest, when only some carried a device attestation).
    pub fn trust(&self) -> Trust {
        let signed = if self.attested == 1 { Trust::Device } else { Trust::Node };
        if self.balanced == 1 { signed.balanced() } else { signed }
    }
}

/// What a case is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum CaseKind {
    /// A cell's interval whose members' readings did not add up to its feeder's.
    Feeder = 0,
    /// An asset whose generation was far above its cell's for several intervals.
    Implausible = 1,
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum CaseStatus {
    /// Its jury votes until `due_ms`.
    Open = 0,
    /// The readings stand: held trades released by them, withheld rewards paid.
    Upheld = 1,
    /// The named accounts' readings are not believed: their held trades count as not delivered at all, their
    /// withheld rewards are forfeit, and each counts a failure.
    Refuted = 2,
}

impl CaseStatus {
    pub fn name(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Upheld => "upheld",
            CaseStatus::Refuted => "refuted",
        }
    }
}

/// A case on a cell's readings (key `1` ‖ case id).
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct CellCase {
    pub kind: CaseKind,
    pub cell: String,
    /// The interval (a feeder case), or the first of the streak's intervals (a plausibility case).
    pub interval_start_s: u64,
    pub interval_s: u32,
    /// The feeder asset, or the asset whose generation is implausible.
    pub asset: Id,
    /// A feeder case: the members' import and export, the feeder's import and export (Wh). A plausibility case:
    /// the asset's yield and the cell's median yield in the interval that opened it (Wh per kW), 0, 0.
    pub flows: [u64; 4],
    /// A feeder case: the tolerance (Wh). A plausibility case: the yield above which an interval is implausible.
    pub tolerance: u64,
    /// The accounts the case names (a feeder case: largest claims first).
    pub named: Vec<PublicKey>,
    /// Export (Wh) whose mission-token reward waits on the case, by account.
    pub withheld: Vec<(PublicKey, u64)>,
    /// Energy escrows of the cell's pools held for the interval (a feeder case).
    pub held: u64,
    pub jurors: Vec<PublicKey>,
    pub votes_upheld: u32,
    pub votes_refuted: u32,
    /// The end of the jury's period.
    pub due_ms: u64,
    pub status: CaseStatus,
    pub opened_ms: u64,
    /// When it was decided (0 while open).
    pub closed_ms: u64,
}

impl CellCase {
    /// The members' net export claimed less the feeder's net export, Wh (a feeder case).
    pub fn gap_wh(&self) -> i128 {
        gap_of(self.flows)
    }
}

/// `(Me − Mi) − (Fe − Fi)` of `[Mi, Me, Fi, Fe]`: the members' claimed net export beyond what the feeder measured.
fn gap_of(flows: [u64; 4]) -> i128 {
    let [members_import, members_export, feeder_import, feeder_export] = flows.map(i128::from);
    (members_export - members_import) - (feeder_export - feeder_import)
}

/// Reads of cells (see [`Kv`]).
pub trait CellReads: Kv {
    /// A cell's feeder asset (the asset `6` gives the cell to).
    fn feeder_of(&self, cell: &str) -> Option<Id> {
        value(self, &key(FEEDER, &[cell.as_bytes()]))
    }

    fn cell_interval(&self, cell: &str, start_s: u64, interval_s: u32) -> Option<CellInterval> {
        value(self, &interval_record_key(cell, start_s, interval_s))
    }

    /// A cell's intervals of length `interval_s` starting in `from_s..to_s`, oldest first.
    fn cell_intervals(&self, cell: &str, interval_s: u32, from_s: u64, to_s: u64) -> Vec<(u64, CellInterval)> {
        let start = interval_record_key(cell, from_s, 0);
        let end = interval_record_key(cell, to_s, 0);
        self.range(&start, &end)
            .filter_map(|(key, value)| {
                let start_s = u64::from_be_bytes(key.get(13..21)?.try_into().ok()?);
                let length = u32::from_be_bytes(key.get(21..25)?.try_into().ok()?);
                (length == interval_s).then_some(())?;
                Some((start_s, super::decode(&value)?))
            })
            .collect()
    }

    /// The members of a cell's interval, by asset id.
    fn cell_members(&self, cell: &str, start_s: u64, interval_s: u32) -> Vec<(Id, CellMember)> {
        prefixed(self, &key(CELL_MEMBER, &[&interval_part(cell, start_s, interval_s)]))
            .filter_map(|(key, value)| Some((Id(key.get(25..57)?.try_into().ok()?), super::decode(&value)?)))
            .collect()
    }

    /// A reading's trust level now (PROTOCOL.md §10, *trust levels*): `signed` (what it carries), raised to
    /// `balanced` once its cell's feeder confirmed its asset's readings of the interval (while the ledger keeps the
    /// interval's records).
    fn reading_trust(&self, author: &PublicKey, meter: &str, start_s: u64, interval_s: u32, signed: Trust) -> Trust {
        let confirmed = || {
            let asset: Id = value(self, &key(ASSET_BY_METER, &[author.as_bytes(), meter.as_bytes()]))?;
            let state: AssetState = value(self, &key(ASSET, &[asset.as_bytes()]))?;
            let cell = state.manifest.cell.as_str();
            let member: CellMember = value(self, &member_key(cell, start_s, interval_s, &asset))?;
            Some(member.balanced == 1 && member.author == *author)
        };
        if confirmed().unwrap_or(false) { signed.balanced() } else { signed }
    }

    fn cell_case(&self, case: &Id) -> Option<CellCase> {
        value(self, &case_key(case))
    }

    /// Every case the ledger keeps (open ones, and decided ones for 30 days), by id.
    fn cell_cases(&self) -> Vec<(Id, CellCase)> {
        self.range(&[CELL_CASE], &[CELL_CASE + 1])
            .filter_map(|(key, value)| Some((Id(key.get(1..33)?.try_into().ok()?), super::decode(&value)?)))
            .collect()
    }
}

impl<K: Kv + ?Sized> CellReads for K {}

/// A cell's plausibility judgement of an interval ([`Pending::plausibility`]): per member `(streak, implausible,
/// yield)`.
struct Judgement {
    members: Vec<(u64, bool, u64)>,
    median: u64,
    threshold: u64,
}

/// The lower median of a non-empty sorted list.
fn lower_median(sorted: &[u64]) -> u64 {
    sorted[(sorted.len() - 1) / 2]
}

/// Execution of a cell's records, closes and cases.
impl Pending<'_> {
    /// A feeder asset: its owner is a guild the author is a member of, and the cell is not another author's
    /// feeder's.
    pub(super) fn check_feeder(&self, author: &PublicKey, asset: &protocol::message::Asset) -> Result<(), EntryError> {
        let guild: GuildState =
            self.read(&key(GUILD, &[asset.owner.as_bytes()])).ok_or(EntryError::NotAGuild(asset.owner))?;
        if !guild.members.contains(author) {
            return Err(EntryError::NotAGuildMember(*author));
        }
        if let Some(holder) = self.read::<Id>(&key(FEEDER, &[asset.cell.as_str().as_bytes()]))
            && let Some(held) = self.read::<AssetState>(&key(ASSET, &[holder.as_bytes()]))
            && held.author != *author
        {
            return Err(EntryError::FeederTaken { cell: asset.cell.as_str().to_owned(), asset: holder });
        }
        Ok(())
    }

    /// The record of a cell's interval, created (and its close scheduled) by its first reading.
    fn open_interval(&mut self, cell: &str, start_s: u64, interval_s: u32) -> CellInterval {
        let record_key = interval_record_key(cell, start_s, interval_s);
        if let Some(record) = self.read::<CellInterval>(&record_key) {
            return record;
        }
        let end_ms = start_s.saturating_add(u64::from(interval_s)).saturating_mul(1000);
        let due_ms = end_ms.saturating_add(self.param("settlement_grace_ms"));
        self.put(close_due_key(due_ms, cell, start_s, interval_s), Some(Vec::new()));
        self.forget_at(end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &record_key);
        CellInterval {
            status: IntervalStatus::Open,
            feeder: Vec::new(),
            feeder_import_wh: 0,
            feeder_export_wh: 0,
            members: 0,
            due_ms,
            named: Vec::new(),
            cases_open: 0,
        }
    }

    /// A reading of the cell's feeder: its flows are the interval's feeder flows (a later reading of the same
    /// interval cannot exist: a meter's readings move forward). Refused once the interval closed.
    pub(super) fn feeder_reading(
        &mut self,
        asset: &Id,
        cell: &Cell,
        reading: &protocol::message::Reading,
    ) -> Result<(), EntryError> {
        let (start_s, interval_s) = (reading.interval_start_s, reading.interval_s);
        let mut record = self.open_interval(cell.as_str(), start_s, interval_s);
        if record.status != IntervalStatus::Open {
            return Err(EntryError::CellIntervalClosed { cell: cell.as_str().to_owned(), interval_start_s: start_s });
        }
        record.feeder = vec![*asset];
        record.feeder_import_wh = record.feeder_import_wh.saturating_add(reading.import_wh);
        record.feeder_export_wh = record.feeder_export_wh.saturating_add(reading.export_wh);
        self.write(interval_record_key(cell.as_str(), start_s, interval_s), &record);
        Ok(())
    }

    /// A reading of a member asset of a cell: added to the asset's record of the interval. Refused once the
    /// interval closed (it would count in no check, yet in its author's flows).
    pub(super) fn member_reading(
        &mut self,
        author: &PublicKey,
        asset: &Id,
        cell: &Cell,
        reading: &protocol::message::Reading,
    ) -> Result<(), EntryError> {
        let (start_s, interval_s) = (reading.interval_start_s, reading.interval_s);
        let mut record = self.open_interval(cell.as_str(), start_s, interval_s);
        if record.status != IntervalStatus::Open {
            return Err(EntryError::CellIntervalClosed { cell: cell.as_str().to_owned(), interval_start_s: start_s });
        }
        let member_key = member_key(cell.as_str(), start_s, interval_s, asset);
        let mut member = match self.read::<CellMember>(&member_key) {
            Some(member) => member,
            None => {
                record.members += 1;
                let end_ms = start_s.saturating_add(u64::from(interval_s)).saturating_mul(1000);
                self.forget_at(end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &member_key);
                CellMember {
                    author: *author,
                    import_wh: 0,
                    export_wh: 0,
                    generation_wh: 0,
                    streak: 0,
                    withheld_wh: 0,
                    attested: u8::from(!reading.device.is_empty()),
                    device_import_wh: 0,
                    device_export_wh: 0,
                    balanced: 0,
                }
            }
        };
        member.attested &= u8::from(!reading.device.is_empty());
        member.import_wh = member.import_wh.saturating_add(reading.import_wh);
        member.export_wh = member.export_wh.saturating_add(reading.export_wh);
        if !reading.device.is_empty() {
            member.device_import_wh = member.device_import_wh.saturating_add(reading.import_wh);
            member.device_export_wh = member.device_export_wh.saturating_add(reading.export_wh);
        }
        member.generation_wh = member.generation_wh.saturating_add(reading.generation_wh);
        self.write(member_key, &member);
        self.write(interval_record_key(cell.as_str(), start_s, interval_s), &record);
        Ok(())
    }

    /// Mission tokens with an export reward: `export_wh × reward / 1000` each to `account`, within their caps.
    pub(super) fn reward_export(&mut self, account: &PublicKey, export_wh: u64) -> Result<(), EntryError> {
        if export_wh == 0 {
            return Ok(());
        }
        let tokens: Vec<crate::genesis::Token> =
            self.base.genesis.tokens.iter().filter_map(|token| self.token_rules(&token.id)).collect();
        for token in &tokens {
            if token.export_reward_per_kwh == 0 {
                continue;
            }
            let mut reward =
                protocol::message::value_milli(export_wh, token.export_reward_per_kwh).ok_or(EntryError::Overflow)?;
            if let Some(cap) = token.supply_max {
                let supply: u64 = self.read(&key(SUPPLY, &[token.id.as_str().as_bytes()])).unwrap_or(0);
                reward = reward.min(cap.saturating_sub(supply));
            }
            if reward > 0 {
                self.mint(account, &token.id, reward)?;
            }
        }
        Ok(())
    }

    /// Whether readings of this trust level earn export rewards (`reward_trust_min`).
    pub(super) fn rewarded(&self, trust: Trust) -> bool {
        u64::from(trust.level()) >= self.param("reward_trust_min")
    }

    /// Of a member's export in an interval, what earns rewards: the device-attested part at the device's level, the
    /// rest at the node's, each raised to `balanced` when `balanced`.
    fn rewarded_export(&self, member: &CellMember, balanced: bool) -> u64 {
        let raise = |trust: Trust| if balanced { trust.balanced() } else { trust };
        let device = member.device_export_wh.min(member.export_wh);
        let mut export = 0;
        if self.rewarded(raise(Trust::Device)) {
            export += device;
        }
        if self.rewarded(raise(Trust::Node)) {
            export += member.export_wh - device;
        }
        export
    }

    /// A member's readings in an interval reach the `balanced` level: their flows count at the levels they gain.
    fn confirm_member(&mut self, cell: &str, start_s: u64, interval_s: u32, asset: &Id, member: &mut CellMember) {
        if member.balanced == 1 {
            return;
        }
        member.balanced = 1;
        let end_ms = start_s.saturating_add(u64::from(interval_s)).saturating_mul(1000);
        let device = [member.device_import_wh.min(member.import_wh), member.device_export_wh.min(member.export_wh)];
        let node = [member.import_wh - device[0], member.export_wh - device[1]];
        // Node-signed readings rise from level 0 to 2, device-signed ones from 1 to 3.
        if node != [0, 0] {
            self.add_flows(&member.author, start_s, end_ms, node, 1..=2);
        }
        if device != [0, 0] {
            self.add_flows(&member.author, start_s, end_ms, device, 2..=3);
        }
        self.write(member_key(cell, start_s, interval_s, asset), member);
    }

    /// End of block, first: cells' intervals whose close is due are closed, and cases whose jury's period ended are
    /// decided by the votes they have.
    pub(super) fn cells_due(&mut self) {
        for index_key in self.due(CELL_DUE, self.context.time_ms) {
            self.delete(index_key.clone());
            match index_key.get(9) {
                Some(0) => {
                    let Some(part) = index_key.get(10..34) else { continue };
                    let cell: String =
                        part[..12].iter().take_while(|byte| **byte != 0).map(|byte| char::from(*byte)).collect();
                    let start_s = u64::from_be_bytes(part[12..20].try_into().unwrap_or_default());
                    let interval_s = u32::from_be_bytes(part[20..24].try_into().unwrap_or_default());
                    self.close_interval(&cell, start_s, interval_s);
                }
                Some(1) => {
                    let Some(case) = index_key.get(10..42).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) else {
                        continue;
                    };
                    let case = Id(case);
                    if let Some(state) = self.cell_case(&case).filter(|state| state.status == CaseStatus::Open) {
                        let upheld = state.votes_upheld >= state.votes_refuted;
                        self.decide_case(&case, state, upheld);
                    }
                }
                _ => {}
            }
        }
    }

    /// The feeder balance of a closing interval (PROTOCOL.md §10, *cells*, step 1): the record's status and named
    /// members; unbalanced with named members, the interval's escrows held and the case to open for each of them.
    fn feeder_balance(
        &mut self,
        record: &mut CellInterval,
        cell: &str,
        start_s: u64,
        interval_s: u32,
        members: &[(Id, CellMember)],
    ) -> Option<CellCase> {
        let mut case: Option<CellCase> = None;
        record.status = IntervalStatus::Unchecked;
        if let Some(feeder) = record.feeder.first().copied() {
            let members_import = members.iter().map(|(_, member)| member.import_wh).fold(0u64, u64::saturating_add);
            let members_export = members.iter().map(|(_, member)| member.export_wh).fold(0u64, u64::saturating_add);
            let tolerance = self.tolerance(members_import, members_export);
            let flows = [members_import, members_export, record.feeder_import_wh, record.feeder_export_wh];
            let mut state = CellCase {
                kind: CaseKind::Feeder,
                cell: cell.to_owned(),
                interval_start_s: start_s,
                interval_s,
                asset: feeder,
                flows,
                tolerance,
                named: Vec::new(),
                withheld: Vec::new(),
                held: 0,
                jurors: Vec::new(),
                votes_upheld: 0,
                votes_refuted: 0,
                due_ms: 0,
                status: CaseStatus::Open,
                opened_ms: self.context.time_ms,
                closed_ms: 0,
            };
            let gap = state.gap_wh();
            if gap.unsigned_abs() <= u128::from(tolerance) {
                record.status = IntervalStatus::Balanced;
            } else {
                record.status = IntervalStatus::Unbalanced;
                let named = self.suspects(cell, start_s, interval_s, members, gap, tolerance);
                // A close this late (after a long outage) comes in the block that forgets the interval's records:
                // its cases would be decided without the index of the escrows they hold, which would stay locked
                // for good. Then nothing is held, and the escrows are released at their time.
                let end_ms = start_s.saturating_add(u64::from(interval_s)).saturating_mul(1000);
                let records_live = self.context.time_ms < end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS);
                if !named.is_empty() && records_live {
                    state.held = self.hold_escrows(cell, start_s, interval_s);
                }
                record.cases_open = u32::try_from(named.len()).unwrap_or(u32::MAX);
                record.named = named.clone();
                self.events.push(Event::CellUnbalanced {
                    cell: cell.to_owned(),
                    interval_start_s: start_s,
                    gap_wh: i64::try_from(gap).unwrap_or(if gap < 0 { i64::MIN } else { i64::MAX }),
                    tolerance_wh: tolerance,
                    named: named.clone(),
                    held: state.held,
                });
                case = Some(state);
            }
        }
        case
    }

    /// Closes a cell's interval: the feeder balance, then plausibility, then the members' rewards.
    fn close_interval(&mut self, cell: &str, start_s: u64, interval_s: u32) {
        let record_key = interval_record_key(cell, start_s, interval_s);
        let Some(mut record) = self.read::<CellInterval>(&record_key) else { return };
        if record.status != IntervalStatus::Open {
            return;
        }
        let members = self.cell_members(cell, start_s, interval_s);
        let case = self.feeder_balance(&mut record, cell, start_s, interval_s, &members);
        let named = record.named.clone();
        self.write(record_key, &record);
        // The feeder confirms its members' readings (trust level `balanced`) when the interval balanced (an
        // unbalanced one's, if a jury refutes a named member's: `feeder_case_decided`). Rewards follow the level
        // the readings have at the close.
        let balanced = record.status == IntervalStatus::Balanced;
        // Plausibility, then the rewards: a named member's waits on its feeder case, an implausible interval's on
        // its streak.
        let judgement = self.plausibility(cell, start_s, interval_s, &members);
        let mut withheld: Vec<(PublicKey, u64)> = Vec::new();
        let mut parties: Vec<PublicKey> = Vec::new();
        let mut confirmed: Vec<PublicKey> = Vec::new();
        for ((asset, mut member), (streak, implausible, yield_per_kw)) in members.into_iter().zip(judgement.members) {
            member.streak = streak;
            parties.push(member.author);
            let export_wh = self.rewarded_export(&member, balanced);
            if named.contains(&member.author) {
                if export_wh > 0 {
                    add_withheld(&mut withheld, member.author, export_wh);
                }
            } else if implausible {
                member.withheld_wh = export_wh;
            } else {
                let _ = self.reward_export(&member.author, export_wh);
            }
            if !implausible {
                self.end_streak(cell, start_s, interval_s, &asset, &member.author);
            }
            self.write(member_key(cell, start_s, interval_s, &asset), &member);
            if balanced {
                self.confirm_member(cell, start_s, interval_s, &asset, &mut member);
                if !confirmed.contains(&member.author) {
                    confirmed.push(member.author);
                }
            }
            if implausible && !named.contains(&member.author) {
                let measured = [yield_per_kw, judgement.median, judgement.threshold];
                self.implausible_interval(cell, start_s, interval_s, &asset, &member, measured);
            }
        }
        if !confirmed.is_empty() {
            self.events.push(Event::ReadingsBalanced {
                cell: cell.to_owned(),
                interval_start_s: start_s,
                interval_s,
                authors: confirmed,
            });
        }
        // One case per named member. Nobody with a reading in the interval, nor the feeder's author, sits on a jury.
        if let Some(state) = case {
            if let Some(feeder) = self.read::<AssetState>(&key(ASSET, &[state.asset.as_bytes()])) {
                parties.push(feeder.author);
            }
            for account in &named {
                let mut member_case = state.clone();
                member_case.named = vec![*account];
                member_case.withheld = withheld.iter().filter(|(held, _)| held == account).copied().collect();
                let id = feeder_case_id(cell, start_s, interval_s, account);
                self.open_case(&id, member_case, &parties);
            }
        }
    }

    /// Holds a cell's interval's energy escrows (their release index is deleted); how many.
    fn hold_escrows(&mut self, cell: &str, start_s: u64, interval_s: u32) -> u64 {
        let mut held = 0;
        for (_, settlement) in self.cell_escrows(cell, start_s, interval_s) {
            if let Some(escrow) = self.read::<Escrow>(&key(ESCROW, &[settlement.as_bytes()])) {
                self.delete(key(ESCROW_BY_RELEASE, &[&escrow.release_ms.to_be_bytes(), settlement.as_bytes()]));
                held += 1;
            }
        }
        held
    }

    /// The energy escrows indexed under a cell's interval (`9`): each index key and its settlement id.
    fn cell_escrows(&self, cell: &str, start_s: u64, interval_s: u32) -> Vec<(Vec<u8>, Id)> {
        let prefix = key(CELL_ESCROW, &[&interval_part(cell, start_s, interval_s)]);
        // Every key that starts with the prefix, ids beginning with 0xff included.
        let end = super::read::end_of_prefix(&prefix).unwrap_or_else(|| vec![0xff; 64]);
        self.scan(prefix, end)
            .into_iter()
            .filter_map(|(index_key, _)| {
                let settlement = Id(index_key.get(25..57)?.try_into().ok()?);
                Some((index_key, settlement))
            })
            .collect()
    }

    /// Records a case with its jury and its due time, and says so.
    fn open_case(&mut self, id: &Id, mut state: CellCase, parties: &[PublicKey]) {
        state.jurors = self.draw_jury(id, parties);
        // Decided while the interval's records (its held escrows' index, the flows they are judged by) live.
        let end_ms = state.interval_start_s.saturating_add(u64::from(state.interval_s)).saturating_mul(1000);
        let records_until = end_ms.saturating_add(CASE_DECIDED_WITHIN_MS);
        let due_ms = self.context.time_ms.saturating_add(self.param("jury_period_ms").max(1));
        state.due_ms = due_ms.min(records_until).max(self.context.time_ms.saturating_add(1));
        self.put(case_due_key(state.due_ms, id), Some(Vec::new()));
        self.events.push(Event::CellCaseOpened {
            case: *id,
            kind: state.kind as u8,
            cell: state.cell.clone(),
            interval_start_s: state.interval_start_s,
            named: state.named.clone(),
            held: state.held,
            jurors: state.jurors.clone(),
        });
        self.write(case_key(id), &state);
    }

    /// The cell's plausibility judgement of an interval: each member's streak after it, whether it was
    /// implausible, and its yield; the median and the threshold (none when the check does not run).
    fn plausibility(&self, cell: &str, start_s: u64, interval_s: u32, members: &[(Id, CellMember)]) -> Judgement {
        let members_min = self.param("plausibility_members_min");
        let intervals = self.param("plausibility_intervals");
        // Yield: Wh generated per kW installed (the asset's rated generation), of the members that generate.
        let yields: Vec<Option<u64>> = members
            .iter()
            .map(|(asset, member)| {
                let rated = self.read::<AssetState>(&key(ASSET, &[asset.as_bytes()]))?.manifest.limits.generation_w_max;
                (rated > 0).then(|| {
                    let per_kw = u128::from(member.generation_wh) * 1000 / u128::from(rated);
                    u64::try_from(per_kw).unwrap_or(u64::MAX)
                })
            })
            .collect();
        let mut sorted: Vec<u64> = yields.iter().flatten().copied().collect();
        let unjudged = Judgement { members: vec![(0, false, 0); members.len()], median: 0, threshold: 0 };
        if members_min == 0 || intervals == 0 || (sorted.len() as u64) < members_min {
            return unjudged;
        }
        sorted.sort_unstable();
        let median = lower_median(&sorted);
        let threshold = self.implausible_above(median, interval_s);
        let judged = members
            .iter()
            .zip(yields)
            .map(|((asset, _), yield_per_kw)| {
                let Some(yield_per_kw) = yield_per_kw.filter(|value| *value > threshold) else {
                    return (0, false, yield_per_kw.unwrap_or(0));
                };
                let previous_start = start_s.saturating_sub(u64::from(interval_s));
                let previous = self
                    .read::<CellMember>(&member_key(cell, previous_start, interval_s, asset))
                    .map_or(0, |member| member.streak);
                // A streak whose case was decided starts again.
                let decided = previous >= intervals
                    && self
                        .cell_case(&self.streak_case(asset, previous_start, interval_s, previous))
                        .is_some_and(|case| case.status != CaseStatus::Open);
                let streak = if decided { 1 } else { previous.saturating_add(1) };
                (streak, true, yield_per_kw)
            })
            .collect();
        Judgement { members: judged, median, threshold }
    }

    /// The yield (Wh per kW) above which an interval's generation is implausible, given the cell's median.
    fn implausible_above(&self, median: u64, interval_s: u32) -> u64 {
        let ratio = u128::from(self.param("plausibility_ratio_ppm"));
        let margin = u128::from(self.param("plausibility_margin_wh_per_kw")) * u128::from(interval_s) / 3600;
        u64::try_from(u128::from(median) * ratio / u128::from(market::PPM) + margin).unwrap_or(u64::MAX)
    }

    /// The case of the streak that includes the interval `start_s` as its `streak`-th.
    fn streak_case(&self, asset: &Id, start_s: u64, interval_s: u32, streak: u64) -> Id {
        let first = start_s.saturating_sub(streak.saturating_sub(1).saturating_mul(u64::from(interval_s)));
        plausibility_case_id(asset, first, interval_s)
    }

    /// An implausible interval of an asset: at `plausibility_intervals` in a row, an alert and a case with the
    /// streak's withheld export; beyond, the interval's withheld export joins the open case.
    fn implausible_interval(
        &mut self,
        cell: &str,
        start_s: u64,
        interval_s: u32,
        asset: &Id,
        member: &CellMember,
        [own, median, threshold]: [u64; 3],
    ) {
        let intervals = self.param("plausibility_intervals").min(PLAUSIBILITY_INTERVALS_MAX);
        if member.streak < intervals {
            return;
        }
        let case = self.streak_case(asset, start_s, interval_s, member.streak);
        if let Some(mut state) = self.cell_case(&case) {
            if state.status == CaseStatus::Open && member.withheld_wh > 0 {
                add_withheld(&mut state.withheld, member.author, member.withheld_wh);
                self.write(case_key(&case), &state);
                self.set_withheld(cell, start_s, interval_s, asset, 0);
            }
            return;
        }
        // The streak's intervals: their withheld export moves to the case.
        let mut withheld = 0u64;
        for back in 0..member.streak.min(PLAUSIBILITY_INTERVALS_MAX) {
            let start = start_s.saturating_sub(back.saturating_mul(u64::from(interval_s)));
            if let Some(earlier) = self.read::<CellMember>(&member_key(cell, start, interval_s, asset)) {
                withheld = withheld.saturating_add(earlier.withheld_wh);
                self.set_withheld(cell, start, interval_s, asset, 0);
            }
        }
        let first = start_s.saturating_sub((member.streak - 1).saturating_mul(u64::from(interval_s)));
        let state = CellCase {
            kind: CaseKind::Implausible,
            cell: cell.to_owned(),
            interval_start_s: first,
            interval_s,
            asset: *asset,
            flows: [own, median, 0, 0],
            tolerance: threshold,
            named: vec![member.author],
            withheld: if withheld > 0 { vec![(member.author, withheld)] } else { Vec::new() },
            held: 0,
            jurors: Vec::new(),
            votes_upheld: 0,
            votes_refuted: 0,
            due_ms: 0,
            status: CaseStatus::Open,
            opened_ms: self.context.time_ms,
            closed_ms: 0,
        };
        // The alert on the asset, under the case's id, by the commons (the ledger raised it).
        let alert = protocol::message::Alert {
            asset: *asset,
            rule: protocol::message::AlertRule::Implausible,
            measured: ppm_of(own, median),
            threshold: self.param("plausibility_ratio_ppm"),
            interval_start_s: start_s,
        };
        let alert_key = key(ALERT, &[asset.as_bytes(), &self.context.height.to_be_bytes(), case.as_bytes()]);
        let record = AlertState { id: case, author: COMMONS, alert: alert.clone(), height: self.context.height };
        self.write(alert_key.clone(), &record);
        self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &alert_key);
        self.events.push(Event::AlertRaised { alert: case, asset: *asset, rule: alert.rule });
        let parties = [member.author];
        self.open_case(&case, state, &parties);
    }

    /// A plausible interval after a streak that did not reach an alert: the streak's withheld export is rewarded.
    fn end_streak(&mut self, cell: &str, start_s: u64, interval_s: u32, asset: &Id, author: &PublicKey) {
        let length = u64::from(interval_s);
        let mut start = start_s;
        for _ in 0..PLAUSIBILITY_INTERVALS_MAX {
            start = start.saturating_sub(length);
            let Some(earlier) = self.read::<CellMember>(&member_key(cell, start, interval_s, asset)) else { return };
            if earlier.streak == 0 {
                return;
            }
            if earlier.withheld_wh > 0 {
                let _ = self.reward_export(author, earlier.withheld_wh);
                self.set_withheld(cell, start, interval_s, asset, 0);
            }
        }
    }

    fn set_withheld(&mut self, cell: &str, start_s: u64, interval_s: u32, asset: &Id, withheld_wh: u64) {
        let member_key = member_key(cell, start_s, interval_s, asset);
        if let Some(mut member) = self.read::<CellMember>(&member_key) {
            member.withheld_wh = withheld_wh;
            self.write(member_key, &member);
        }
    }

    /// A juror's vote on an open case (a verdict naming it): `done` upholds the readings, `failed` refutes the
    /// named accounts'. A majority decides at once.
    pub(super) fn case_verdict(&mut self, author: &PublicKey, case: &Id, outcome: Outcome) -> Result<(), EntryError> {
        let mut state = self.cell_case(case).ok_or(EntryError::UnknownJob(*case))?;
        if state.status != CaseStatus::Open || self.context.time_ms >= state.due_ms {
            return Err(EntryError::Job(JobError::LegDue));
        }
        if !state.jurors.contains(author) {
            return Err(EntryError::Job(JobError::NotYourVerdict));
        }
        let vote_key = key(JOB_JUROR_VOTE, &[case.as_bytes(), author.as_bytes()]);
        if self.get(&vote_key).is_some() {
            return Err(EntryError::Job(JobError::JurorVoted));
        }
        self.write(vote_key, &(outcome as u8));
        match outcome {
            Outcome::Done => state.votes_upheld += 1,
            Outcome::Failed => state.votes_refuted += 1,
        }
        let majority = state.jurors.len() as u32 / 2 + 1;
        if state.votes_upheld >= majority {
            self.decide_case(case, state, true);
        } else if state.votes_refuted >= majority {
            self.decide_case(case, state, false);
        } else {
            self.write(case_key(case), &state);
        }
        Ok(())
    }

    /// Decides a case: upheld, its withheld rewards are paid; refuted, they are forfeit and the named account counts
    /// a failure. The last feeder case of an interval to be decided releases the interval's held escrows, a refuted
    /// member's shortfall its whole quantity.
    fn decide_case(&mut self, id: &Id, mut state: CellCase, upheld: bool) {
        self.delete(case_due_key(state.due_ms, id));
        if upheld {
            for (account, export_wh) in state.withheld.clone() {
                let _ = self.reward_export(&account, export_wh);
            }
        } else {
            for account in &state.named {
                self.reputation(account, |reputation| reputation.failures += 1);
            }
        }
        for juror in &state.jurors {
            self.delete(key(JOB_JUROR_VOTE, &[id.as_bytes(), juror.as_bytes()]));
        }
        state.status = if upheld { CaseStatus::Upheld } else { CaseStatus::Refuted };
        state.closed_ms = self.context.time_ms;
        self.events.push(Event::CellCaseDecided { case: *id, status: state.status.name().to_owned() });
        let case_key = case_key(id);
        self.write(case_key.clone(), &state);
        self.forget_at(state.closed_ms.saturating_add(NOTICE_RETENTION_MS), &case_key);
        if state.kind == CaseKind::Feeder {
            self.feeder_case_decided(&state);
        }
    }

    /// An unbalanced interval whose mismatch a jury laid on the `refuted` members: every other member's readings
    /// reach the `balanced` level (before the interval's held escrows are released by them), and a member whose
    /// generation was plausible is paid the export reward the confirmation adds.
    fn confirm_all_but(&mut self, cell: &str, start_s: u64, interval_s: u32, refuted: &[PublicKey]) {
        let mut authors = Vec::new();
        for (asset, mut member) in self.cell_members(cell, start_s, interval_s) {
            if !refuted.contains(&member.author) && member.balanced == 0 {
                let added = self.rewarded_export(&member, true).saturating_sub(self.rewarded_export(&member, false));
                if member.streak == 0 && added > 0 {
                    let _ = self.reward_export(&member.author, added);
                }
                self.confirm_member(cell, start_s, interval_s, &asset, &mut member);
                if !authors.contains(&member.author) {
                    authors.push(member.author);
                }
            }
        }
        if !authors.is_empty() {
            self.events.push(Event::ReadingsBalanced {
                cell: cell.to_owned(),
                interval_start_s: start_s,
                interval_s,
                authors,
            });
        }
    }

    /// One of an interval's feeder cases was decided: when it is the last, the held escrows are released.
    fn feeder_case_decided(&mut self, state: &CellCase) {
        let (cell, start_s, interval_s) = (state.cell.as_str(), state.interval_start_s, state.interval_s);
        let record_key = interval_record_key(cell, start_s, interval_s);
        let Some(mut record) = self.read::<CellInterval>(&record_key) else { return };
        record.cases_open = record.cases_open.saturating_sub(1);
        self.write(record_key, &record);
        if record.cases_open > 0 {
            return;
        }
        let refuted: Vec<PublicKey> = record
            .named
            .iter()
            .filter(|account| {
                self.cell_case(&feeder_case_id(cell, start_s, interval_s, account))
                    .is_some_and(|case| case.status == CaseStatus::Refuted)
            })
            .copied()
            .collect();
        // A refuted member explains the mismatch: the others' readings stand confirmed. With none refuted, the
        // feeder still disagrees with the members' sum, and nobody's readings are confirmed.
        if !refuted.is_empty() {
            self.confirm_all_but(cell, start_s, interval_s, &refuted);
        }
        for (index_key, settlement) in self.cell_escrows(cell, start_s, interval_s) {
            self.delete(index_key);
            let escrow_key = key(ESCROW, &[settlement.as_bytes()]);
            if let Some(escrow) = self.read::<Escrow>(&escrow_key) {
                self.delete(escrow_key);
                self.release_judged(settlement, &escrow, &refuted);
            }
        }
    }

    /// The members whose readings explain a feeder gap most (PROTOCOL.md §10, *cells*, step 1): the fit of the
    /// gaps of the cell's last [`SUSPECT_WINDOW`] intervals with a feeder reading (this one included) on each
    /// member's registers and on the line losses ([`suspects::GapFit`]); named strongest first until their shares
    /// of this gap cover its excess over the tolerance, at most [`CASE_NAMED_MAX`] accounts.
    fn suspects(
        &self,
        cell: &str,
        start_s: u64,
        interval_s: u32,
        members: &[(Id, CellMember)],
        gap: i128,
        tolerance: u64,
    ) -> Vec<PublicKey> {
        let flows = |members: &[(Id, CellMember)]| -> Vec<(Id, MemberFlows)> {
            members
                .iter()
                .map(|(asset, member)| {
                    (*asset, MemberFlows { import_wh: member.import_wh, export_wh: member.export_wh })
                })
                .collect()
        };
        let mut fit = GapFit::default();
        fit.add(gap, tolerance, flows(members));
        // No further back than the records are kept (two days: 192 quarter hours, 48 hours), nor before time 0.
        let kept = INTERVAL_RECORDS_RETENTION_MS / 1000 / u64::from(interval_s.max(1));
        for back in 1..SUSPECT_WINDOW.min(kept) {
            let Some(earlier) = back.checked_mul(u64::from(interval_s)).and_then(|ago| start_s.checked_sub(ago)) else {
                break;
            };
            let Some(record) = self.read::<CellInterval>(&interval_record_key(cell, earlier, interval_s)) else {
                continue;
            };
            if record.feeder.is_empty() || record.status == IntervalStatus::Open {
                continue;
            }
            let earlier_members = self.cell_members(cell, earlier, interval_s);
            let (gap, tolerance) = self.gap_and_tolerance(&record, &earlier_members);
            fit.add(gap, tolerance, flows(&earlier_members));
        }
        let suspects = members
            .iter()
            .filter_map(|(asset, member)| {
                let now = MemberFlows { import_wh: member.import_wh, export_wh: member.export_wh };
                fit.suspect(*asset, member.author, member.attested, now, gap)
            })
            .collect();
        let excess = gap.unsigned_abs().saturating_sub(u128::from(tolerance));
        suspects::named(suspects, excess, CASE_NAMED_MAX)
    }

    /// A closed interval's gap (`(Me − Mi) − (Fe − Fi)`) and tolerance (`feeder_tolerance_wh` plus
    /// `feeder_tolerance_ppm` of the members' gross flows), with the parameters in force.
    fn gap_and_tolerance(&self, record: &CellInterval, members: &[(Id, CellMember)]) -> (i128, u64) {
        let import = members.iter().map(|(_, member)| member.import_wh).fold(0u64, u64::saturating_add);
        let export = members.iter().map(|(_, member)| member.export_wh).fold(0u64, u64::saturating_add);
        let flows = [import, export, record.feeder_import_wh, record.feeder_export_wh];
        (gap_of(flows), self.tolerance(import, export))
    }

    /// `feeder_tolerance_wh + ⌊(Mi + Me) × feeder_tolerance_ppm / 10⁶⌋`.
    fn tolerance(&self, members_import: u64, members_export: u64) -> u64 {
        let gross = u128::from(members_import) + u128::from(members_export);
        let tolerance = u128::from(self.param("feeder_tolerance_wh"))
            + gross * u128::from(self.param("feeder_tolerance_ppm")) / u128::from(market::PPM);
        u64::try_from(tolerance).unwrap_or(u64::MAX)
    }

    /// Indexes an energy escrow of a cell's pool under its interval, so a feeder case can hold it.
    pub(super) fn index_cell_escrow(&mut self, settlement: &Id, pool: &protocol::message::PoolId, start_s: u64) {
        let (cell, interval_s) = (&pool.cell, pool.interval_s);
        if !super::trade::metered(pool) || cell.as_str().is_empty() {
            return;
        }
        let index_key = key(CELL_ESCROW, &[&interval_part(cell.as_str(), start_s, interval_s), settlement.as_bytes()]);
        self.put(index_key.clone(), Some(Vec::new()));
        let end_ms = start_s.saturating_add(u64::from(interval_s)).saturating_mul(1000);
        self.forget_at(end_ms.saturating_add(INTERVAL_RECORDS_RETENTION_MS), &index_key);
    }
}

fn add_withheld(withheld: &mut Vec<(PublicKey, u64)>, account: PublicKey, export_wh: u64) {
    match withheld.iter_mut().find(|(held, _)| *held == account) {
        Some((_, wh)) => *wh = wh.saturating_add(export_wh),
        None => withheld.push((account, export_wh)),
    }
}

/// `value` as parts per million of `of` (`of` 0: the largest).
fn ppm_of(value: u64, of: u64) -> u64 {
    if of == 0 {
        return u64::MAX;
    }
    u64::try_from(u128::from(value) * u128::from(market::PPM) / u128::from(of)).unwrap_or(u64::MAX)
}
