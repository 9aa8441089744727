//! The job marketplace on the ledger: postings, bids with locked collateral, the award by the posted rule, escrow,
//! completion by evidence, timeouts that refund and slash, disputes settled by a jury drawn from the ledger, and
//! quests the commons posts (from governance or maintenance alerts).
//!
//! A job's tokens never leave the ledger's accounting: collateral and the awarded price sit on the job's escrow
//! account ([`job_escrow_account`]), which no key signs for, until the job closes; so supply = Σ balances holds.
//!
//! Lifecycle (`JobState::status`): open → awarded → (disputed) → done | failed; an open job with no bid when
//! bidding ends, or withdrawn by its poster, is closed. Time-driven steps (the award when bidding ends, the
//! deadline, the end of a jury's period) are end-of-block work, at most [`JOBS_DUE_PER_BLOCK`] a block (the rest
//! the next block, in time order).

use protocol::message::{AwardRule, Bid, Evidence, Job, JobKind, Outcome, Proof};
use protocol::types::TokenId;
use protocol::{Envelope, Id, PublicKey};

use super::TradeReads as _;
use super::keys::*;
use super::read::{Kv, prefixed, value};
use super::{
    ALERT, ASSET, AssetState, COMMONS, EntryError, Event, GUILD, GuildState, INCLUDED, MEMBER, METER, MeterState,
    Pending, VALIDATOR, key,
};

/// Bids one job takes.
pub const BIDS_PER_JOB_MAX: u32 = 64;
/// Open or running jobs one account may have posted at once.
pub const JOBS_PER_POSTER_MAX: u64 = 64;
/// Longest a job may run, from its posting to its deadline.
pub const JOB_SPAN_MS_MAX: u64 = 90 * 86_400_000;
/// Time-driven job steps done in one block.
pub const JOBS_DUE_PER_BLOCK: usize = 64;
/// Candidates a jury is drawn from (validators first, then members in key order).
const JURY_CANDIDATES_MAX: usize = 4096;
/// How long a closed job stays on the ledger's state for the API, ms.
const CLOSED_JOB_RETENTION_MS: u64 = 30 * 86_400_000;

/// Where a job is. Kept in the state as its number (0 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum JobStatus {
    Open = 0,
    Awarded = 1,
    Disputed = 2,
    Done = 3,
    Failed = 4,
    /// No bid by the end of bidding, withdrawn by its poster, or a quest the commons could not pay.
    Closed = 5,
}

impl JobStatus {
    /// The status's name, as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Open => "open",
            JobStatus::Awarded => "awarded",
            JobStatus::Disputed => "disputed",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Closed => "closed",
        }
    }
}

/// The account that holds a job's escrow and its bidders' collateral: `blake3("kos/v1/job-escrow" || 0x00 || id)`.
pub fn job_escrow_account(job: &Id) -> PublicKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kos/v1/job-escrow");
    hasher.update(&[0]);
    hasher.update(job.as_bytes());
    PublicKey(*hasher.finalize().as_bytes())
}

/// A job on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct JobState {
    /// The poster; [`COMMONS`] for a quest.
    pub poster: PublicKey,
    pub job: Job,
    /// 1: a quest of the commons.
    pub quest: u8,
    pub status: JobStatus,
    pub posted_height: u64,
    pub posted_ms: u64,
    /// Bids taken.
    pub bids: u32,
    /// The awarded bid, its worker, price and locked collateral (zeros before the award).
    pub bid: Id,
    pub worker: PublicKey,
    pub price: u64,
    pub collateral: u64,
    pub awarded_height: u64,
    pub awarded_ms: u64,
    /// Energy evidence: the worker's meter and its export counter when it was named.
    pub meter: String,
    pub baseline_export_wh: u64,
    /// Compute evidence: the committed result and the block that fixed its sample.
    pub root: Id,
    pub root_height: u64,
    pub root_ms: u64,
    /// The jury of a dispute, the end of its period, and its votes so far.
    pub jurors: Vec<PublicKey>,
    pub jury_until_ms: u64,
    pub votes_done: u32,
    pub votes_failed: u32,
    /// When it closed (0: running), the collateral slashed, and why it ended as it did.
    pub closed_ms: u64,
    pub slashed: u64,
    pub reason: String,
}

impl JobState {
    /// When its next time-driven step is due: the end of bidding, the deadline, or the jury's end.
    fn due_ms(&self) -> Option<u64> {
        match self.status {
            JobStatus::Open => Some(self.job.bids_until_ms),
            JobStatus::Awarded => Some(self.job.deadline_ms),
            JobStatus::Disputed => Some(self.jury_until_ms),
            _ => None,
        }
    }
}

/// A bid on the ledger, with its place in the order bids landed.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct BidState {
    pub id: Id,
    pub worker: PublicKey,
    pub seq: u32,
    pub bid: Bid,
    /// The worker's reputation score when it bid, ppm.
    pub score_ppm: u32,
}

/// What a bid costs the poster under the job's rule (lower wins; ties to the earlier bid): the price for
/// `LowestPrice`; for `BestScore` the price weighted by reputation, `price · (2 − score)`, plus the route at
/// `per_km`; the landing order for `FirstQualified`.
pub fn bid_cost(job: &Job, bid: &BidState) -> u128 {
    match job.rule {
        AwardRule::LowestPrice => u128::from(bid.bid.price),
        AwardRule::BestScore => {
            let ppm = u128::from(market::PPM);
            let weighted = u128::from(bid.bid.price) * (2 * ppm - u128::from(bid.score_ppm.min(market::PPM))) / ppm;
            weighted + u128::from(bid.bid.distance_m) * u128::from(job.per_km) / 1000
        }
        AwardRule::FirstQualified => u128::from(bid.seq),
    }
}

/// The bid a job's rule awards among `bids`.
pub fn winner<'b>(job: &Job, bids: &'b [BidState]) -> Option<&'b BidState> {
    bids.iter().min_by_key(|bid| (bid_cost(job, bid), bid.seq))
}

/// The end of the range of keys `prefix || id || ...`.
fn after(prefix: u8, id: &Id) -> Vec<u8> {
    key(prefix, &[id.as_bytes(), &[0xff; 48]])
}

fn job_key(id: &Id) -> Vec<u8> {
    key(JOB, &[id.as_bytes()])
}

fn id_at(bytes: &[u8], at: usize) -> Option<Id> {
    bytes.get(at..at + 32).and_then(|slice| <[u8; 32]>::try_from(slice).ok()).map(Id)
}

fn key_at(bytes: &[u8], at: usize) -> Option<PublicKey> {
    id_at(bytes, at).map(|id| PublicKey(id.0))
}

/// Why a job entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("the asset raised an alert since the award")]
    AlertSinceAward,
    #[error("the worker has bid on this job already")]
    AlreadyBid,
    #[error("the job takes no more bids")]
    BiddingClosed,
    #[error("bidding would end before this block")]
    BiddingEnded,
    #[error("the job has 64 bids already")]
    BidsFull,
    #[error("the collateral is below what the job asks")]
    CollateralTooLow,
    #[error("the deadline is more than 90 days away")]
    DeadlineTooFar,
    #[error("the juror has voted already")]
    JurorVoted,
    #[error("the worker has named its meter already")]
    MeterNamed,
    #[error("the meter is evidence of another job already")]
    MeterTaken,
    #[error("the job has no bid")]
    NoBid,
    #[error("no result is committed to open")]
    NoCommittedResult,
    #[error("no juror can be drawn")]
    NoJuror,
    #[error("only the poster or the worker disputes a job")]
    NotAParty,
    #[error("only an awarded job can be disputed")]
    NotAwarded,
    #[error("the job is not awarded to this worker, or it is over")]
    NotAwardedToWorker,
    #[error("the job is not open")]
    NotOpen,
    #[error("only the poster awards a job")]
    NotThePoster,
    #[error("the job's rule awards another bid")]
    NotTheRulesPick,
    #[error("this verdict is not the author's to give on the job as it is")]
    NotYourVerdict,
    #[error("a poster may not bid on its own job")]
    OwnJob,
    #[error("the poster has 64 jobs running already")]
    PosterFull,
    #[error("the price is above the job's reward")]
    PriceAboveReward,
    #[error("the proof is not a reading")]
    ProofNotAReading,
    #[error("the reading is from before the award")]
    ReadingBeforeAward,
    #[error("the reading is not on the ledger")]
    ReadingNotOnLedger,
    #[error("the reading is not of the asset's meters")]
    ReadingOfAnotherMeter,
    #[error("to reject the work, open a dispute")]
    RejectByDispute,
    #[error("the worker has committed a result already")]
    ResultCommitted,
    #[error("the worker is farther than the job's radius")]
    TooFar,
    #[error("an energy barter leg is settled by its giver's readings, not by verdicts or disputes")]
    SettledByReadings,
    #[error("the barter leg is disputed or over already")]
    NotPending,
    #[error("the barter leg's receipt window (or jury period) is over")]
    LegDue,
    #[error("the proof is not the evidence the job asks for")]
    WrongEvidence,
}

/// Reads of jobs (see [`Kv`]).
pub trait JobReads: Kv {
    /// A job by its id.
    fn job(&self, id: &Id) -> Option<JobState> {
        value(self, &job_key(id))
    }

    /// Every job on the ledger (open, running, and closed in the last 30 days), by id.
    fn jobs(&self) -> impl Iterator<Item = (Id, JobState)> + '_ {
        prefixed(self, &[JOB]).filter_map(|(key, value)| Some((id_at(&key, 1)?, super::decode(&value)?)))
    }

    /// A job's bids, in the order they landed (none after it closes).
    fn job_bids(&self, job: &Id) -> Vec<BidState> {
        let mut bids: Vec<BidState> = self
            .range(&key(JOB_BID, &[job.as_bytes()]), &after(JOB_BID, job))
            .filter_map(|(_, value)| super::decode(&value))
            .collect();
        bids.sort_by_key(|bid| bid.seq);
        bids
    }

    /// The bid the job's rule awards among its bids so far.
    fn job_winner(&self, job: &Id) -> Option<BidState> {
        let state = self.job(job)?;
        let mut bids = self.job_bids(job);
        bids.retain(|bid| self.tier(&bid.worker) as u64 >= u64::from(state.job.tier));
        winner(&state.job, &bids).cloned()
    }

    /// The jurors' votes on a disputed job: (juror, outcome code).
    fn jury_votes(&self, job: &Id) -> Vec<(PublicKey, u8)> {
        self.range(&key(JOB_JUROR_VOTE, &[job.as_bytes()]), &after(JOB_JUROR_VOTE, job))
            .filter_map(|(key, value)| Some((key_at(&key, 33)?, super::decode(&value)?)))
            .collect()
    }
}

impl<K: Kv + ?Sized> JobReads for K {}

impl Pending<'_> {
    fn job_state(&self, id: &Id) -> Result<JobState, EntryError> {
        self.read(&job_key(id)).ok_or(EntryError::UnknownJob(*id))
    }

    /// Writes a job and moves its due-index entry to its next step (none once it is over).
    fn save_job(&mut self, id: &Id, before: Option<&JobState>, job: &JobState) {
        let old = before.and_then(JobState::due_ms);
        let new = job.due_ms();
        if old != new {
            if let Some(at) = old {
                self.delete(key(JOB_DUE, &[&at.to_be_bytes(), id.as_bytes()]));
            }
            if let Some(at) = new {
                self.put(key(JOB_DUE, &[&at.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
            }
        }
        self.write(job_key(id), job);
    }

    fn open_jobs(&self, poster: &PublicKey) -> u64 {
        self.read(&key(JOBS_OPEN, &[poster.as_bytes()])).unwrap_or(0)
    }

    fn count_open(&mut self, poster: &PublicKey, opened: bool) {
        if *poster == COMMONS {
            return;
        }
        let count = self.open_jobs(poster);
        let count = if opened { count.saturating_add(1) } else { count.saturating_sub(1) };
        if count == 0 {
            self.delete(key(JOBS_OPEN, &[poster.as_bytes()]));
        } else {
            self.write(key(JOBS_OPEN, &[poster.as_bytes()]), &count);
        }
    }

    /// Posts a job (`poster` = [`COMMONS`] for a quest).
    pub(super) fn post_job(&mut self, poster: &PublicKey, id: &Id, job: &Job, quest: bool) -> Result<(), EntryError> {
        let now = self.context.time_ms;
        if self.base.genesis.token(&job.token).is_none() {
            return Err(EntryError::UnknownToken(job.token.clone()));
        }
        if job.bids_until_ms <= now {
            return Err(EntryError::Job(JobError::BiddingEnded));
        }
        if job.deadline_ms.saturating_sub(now) > JOB_SPAN_MS_MAX {
            return Err(EntryError::Job(JobError::DeadlineTooFar));
        }
        if let Some(guild) = job.guild.as_slice().first()
            && self.get(&key(GUILD, &[guild.as_bytes()])).is_none()
        {
            return Err(EntryError::NotAGuild(*guild));
        }
        if let Evidence::Healthy(asset) = &job.evidence
            && self.get(&key(ASSET, &[asset.as_bytes()])).is_none()
        {
            return Err(EntryError::UnknownAsset(*asset));
        }
        let balance = self.balance(poster, &job.token);
        if !quest && balance < job.reward {
            return Err(EntryError::InsufficientFunds {
                account: *poster,
                token: job.token.clone(),
                balance,
                needed: job.reward,
            });
        }
        if *poster != COMMONS && self.open_jobs(poster) >= JOBS_PER_POSTER_MAX {
            return Err(EntryError::Job(JobError::PosterFull));
        }
        if self.get(&job_key(id)).is_some() {
            return Err(EntryError::Duplicate(*id));
        }
        let state = JobState {
            poster: *poster,
            job: job.clone(),
            quest: u8::from(quest),
            status: JobStatus::Open,
            posted_height: self.context.height,
            posted_ms: now,
            bids: 0,
            bid: Id([0; 32]),
            worker: COMMONS,
            price: 0,
            collateral: 0,
            awarded_height: 0,
            awarded_ms: 0,
            meter: String::new(),
            baseline_export_wh: 0,
            root: Id([0; 32]),
            root_height: 0,
            root_ms: 0,
            jurors: Vec::new(),
            jury_until_ms: 0,
            votes_done: 0,
            votes_failed: 0,
            closed_ms: 0,
            slashed: 0,
            reason: String::new(),
        };
        self.count_open(poster, true);
        self.save_job(id, None, &state);
        self.events.push(Event::JobPosted { job: *id, kind: job.kind, quest: u8::from(quest) });
        Ok(())
    }

    /// A bid: checked against the job's terms, its collateral locked on the job's escrow account.
    pub(super) fn bid(&mut self, worker: &PublicKey, id: &Id, bid: &Bid) -> Result<(), EntryError> {
        let mut state = self.job_state(&bid.job)?;
        if state.status != JobStatus::Open || self.context.time_ms >= state.job.bids_until_ms {
            return Err(EntryError::Job(JobError::BiddingClosed));
        }
        let job = &state.job;
        if *worker == state.poster {
            return Err(EntryError::Job(JobError::OwnJob));
        }
        if bid.price > job.reward {
            return Err(EntryError::Job(JobError::PriceAboveReward));
        }
        if bid.collateral < job.collateral {
            return Err(EntryError::Job(JobError::CollateralTooLow));
        }
        if state.bids >= BIDS_PER_JOB_MAX {
            return Err(EntryError::Job(JobError::BidsFull));
        }
        let reputation =
            self.read::<super::Reputation>(&key(super::REPUTATION, &[worker.as_bytes()])).unwrap_or_default();
        let tier = reputation.tier(&self.base.genesis.tiers);
        if (tier as u64) < u64::from(job.tier) {
            return Err(EntryError::Tier { account: *worker, tier, needed: job.tier as usize });
        }
        if let Some(guild) = job.guild.as_slice().first() {
            let record: GuildState =
                self.read(&key(GUILD, &[guild.as_bytes()])).ok_or(EntryError::NotAGuild(*guild))?;
            if !record.members.contains(worker) {
                return Err(EntryError::NotAGuildMember(*worker));
            }
        }
        if job.radius_m > 0 && bid.distance_m > job.radius_m {
            return Err(EntryError::Job(JobError::TooFar));
        }
        let bid_key = key(JOB_BID, &[bid.job.as_bytes(), worker.as_bytes()]);
        if self.get(&bid_key).is_some() {
            return Err(EntryError::Job(JobError::AlreadyBid));
        }
        let token = job.token.clone();
        self.move_tokens(worker, &job_escrow_account(&bid.job), &token, bid.collateral)?;
        let record =
            BidState { id: *id, worker: *worker, seq: state.bids, bid: bid.clone(), score_ppm: reputation.score_ppm() };
        self.write(bid_key, &record);
        let before = state.clone();
        state.bids += 1;
        self.save_job(&bid.job, Some(&before), &state);
        self.events.push(Event::JobBid { job: bid.job, bid: *id, worker: *worker });
        if state.job.rule == AwardRule::FirstQualified {
            self.award(&bid.job, state, &record)?;
        }
        Ok(())
    }

    fn bids_of(&self, job: &Id) -> Vec<BidState> {
        let start = key(JOB_BID, &[job.as_bytes()]);
        let end = after(JOB_BID, job);
        let mut bids: Vec<BidState> =
            self.scan(start, end).iter().filter_map(|(_, value)| super::decode(value)).collect();
        bids.sort_by_key(|bid| bid.seq);
        bids
    }

    /// The bids whose workers are still in the job's tier (a failure since bidding may have lowered it).
    fn eligible_bids(&self, id: &Id, job: &Job) -> Vec<BidState> {
        let mut bids = self.bids_of(id);
        bids.retain(|bid| {
            let reputation: super::Reputation =
                self.read(&key(super::REPUTATION, &[bid.worker.as_bytes()])).unwrap_or_default();
            reputation.tier(&self.base.genesis.tiers) as u64 >= u64::from(job.tier)
        });
        bids
    }

    /// Returns every bid's collateral except `keep`'s and forgets the bids.
    fn release_bids(&mut self, job: &Id, token: &TokenId, keep: Option<&Id>) -> Result<(), EntryError> {
        for bid in self.bids_of(job) {
            self.delete(key(JOB_BID, &[job.as_bytes(), bid.worker.as_bytes()]));
            if Some(&bid.id) != keep {
                self.move_tokens(&job_escrow_account(job), &bid.worker, token, bid.bid.collateral)?;
            }
        }
        Ok(())
    }

    /// The poster's award: the named bid must be the rule's pick.
    pub(super) fn award_entry(
        &mut self,
        author: &PublicKey,
        award: &protocol::message::Award,
    ) -> Result<(), EntryError> {
        let state = self.job_state(&award.job)?;
        if state.poster != *author {
            return Err(EntryError::Job(JobError::NotThePoster));
        }
        if state.status != JobStatus::Open {
            return Err(EntryError::Job(JobError::NotOpen));
        }
        let bids = self.eligible_bids(&award.job, &state.job);
        let pick = winner(&state.job, &bids).cloned().ok_or(EntryError::Job(JobError::NoBid))?;
        if pick.id != award.bid {
            return Err(EntryError::Job(JobError::NotTheRulesPick));
        }
        self.award(&award.job, state, &pick)
    }

    /// Awards `bid`: the price moves from the poster to escrow, the other bids' collateral goes back.
    fn award(&mut self, id: &Id, mut state: JobState, bid: &BidState) -> Result<(), EntryError> {
        let before = state.clone();
        let token = state.job.token.clone();
        self.move_tokens(&state.poster, &job_escrow_account(id), &token, bid.bid.price)?;
        self.release_bids(id, &token, Some(&bid.id))?;
        state.status = JobStatus::Awarded;
        state.bid = bid.id;
        state.worker = bid.worker;
        state.price = bid.bid.price;
        state.collateral = bid.bid.collateral;
        state.awarded_height = self.context.height;
        state.awarded_ms = self.context.time_ms;
        self.save_job(id, Some(&before), &state);
        self.events.push(Event::JobAwarded { job: *id, worker: bid.worker, price: bid.bid.price });
        Ok(())
    }

    /// Ends a job that was never awarded.
    fn close_unawarded(&mut self, id: &Id, mut state: JobState, reason: &str) -> Result<(), EntryError> {
        let before = state.clone();
        let token = state.job.token.clone();
        self.release_bids(id, &token, None)?;
        state.status = JobStatus::Closed;
        state.reason = reason.to_owned();
        self.finish_job(id, &before, state);
        Ok(())
    }

    fn finish_job(&mut self, id: &Id, before: &JobState, mut state: JobState) {
        state.closed_ms = self.context.time_ms;
        self.count_open(&state.poster, false);
        if !state.meter.is_empty() {
            self.delete(key(JOB_BY_METER, &[state.worker.as_bytes(), state.meter.as_bytes()]));
        }
        if let Evidence::Healthy(asset) = &state.job.evidence
            && self.read::<Id>(&key(QUEST_BY_ASSET, &[asset.as_bytes()])).as_ref() == Some(id)
        {
            self.delete(key(QUEST_BY_ASSET, &[asset.as_bytes()]));
        }
        for (juror, _) in self.scan(key(JOB_JUROR_VOTE, &[id.as_bytes()]), after(JOB_JUROR_VOTE, id)) {
            self.delete(juror);
        }
        self.save_job(id, Some(before), &state);
        self.forget_at(self.context.time_ms.saturating_add(CLOSED_JOB_RETENTION_MS), &job_key(id));
        if state.status == JobStatus::Closed {
            self.events.push(Event::JobClosed { job: *id });
        }
    }

    /// The work is done: the worker gets the price and its collateral back (and, for a quest, eco-tokens).
    fn complete(&mut self, id: &Id, mut state: JobState, reason: &str) -> Result<(), EntryError> {
        let before = state.clone();
        let token = state.job.token.clone();
        let paid = state.price.checked_add(state.collateral).ok_or(EntryError::Overflow)?;
        self.move_tokens(&job_escrow_account(id), &state.worker, &token, paid)?;
        let poster = state.poster;
        self.count_delivery(&state.worker, &poster);
        if state.quest == 1 {
            let amount = self.param("quest_eco_amount");
            if amount > 0
                && let Ok(eco) = TokenId::new(self.base.genesis.params.quest_eco_token.clone())
            {
                // As far as the token's cap allows; a capped-out eco-token still pays the quest's reward.
                let mark = self.undo.len();
                if self.mint(&state.worker, &eco, amount).is_err() {
                    self.rollback(mark);
                }
            }
        }
        state.status = JobStatus::Done;
        state.reason = reason.to_owned();
        let (worker, quest) = (state.worker, state.quest);
        self.finish_job(id, &before, state);
        self.events.push(Event::JobDone { job: *id, worker, quest });
        Ok(())
    }

    /// The work was not done: the price goes back to the poster, `slash_ppm` of the collateral to the poster too
    /// (the commons for a quest), the rest of it to the worker. A jury that cannot decide slashes nothing.
    fn fail(&mut self, id: &Id, mut state: JobState, reason: &str, slash: bool) -> Result<(), EntryError> {
        let before = state.clone();
        let token = state.job.token.clone();
        let escrow = job_escrow_account(id);
        let slashed = if slash { super::share(state.collateral, u64::from(state.job.slash_ppm)) } else { 0 };
        let refund = state.price.checked_add(slashed).ok_or(EntryError::Overflow)?;
        self.move_tokens(&escrow, &state.poster, &token, refund)?;
        self.move_tokens(&escrow, &state.worker, &token, state.collateral.saturating_sub(slashed))?;
        if slash {
            self.reputation(&state.worker, |reputation| reputation.failures += 1);
        }
        state.status = JobStatus::Failed;
        state.slashed = slashed;
        state.reason = reason.to_owned();
        let worker = state.worker;
        self.finish_job(id, &before, state);
        self.events.push(Event::JobFailed { job: *id, worker, slashed });
        Ok(())
    }

    /// The awarded worker's delivery.
    pub(super) fn deliver(
        &mut self,
        worker: &PublicKey,
        deliver: &protocol::message::Deliver,
    ) -> Result<(), EntryError> {
        let id = deliver.job;
        let mut state = self.job_state(&id)?;
        if state.status != JobStatus::Awarded || state.worker != *worker {
            return Err(EntryError::Job(JobError::NotAwardedToWorker));
        }
        let before = state.clone();
        match (&deliver.proof, &state.job.evidence) {
            (Proof::Claim(_), _) => {
                self.events.push(Event::JobDelivered { job: id });
                Ok(())
            }
            (Proof::Meter(meter), Evidence::Energy(_)) => {
                if !state.meter.is_empty() {
                    return Err(EntryError::Job(JobError::MeterNamed));
                }
                let meter_state: Option<MeterState> =
                    self.read(&key(METER, &[worker.as_bytes(), meter.as_str().as_bytes()]));
                let index_key = key(JOB_BY_METER, &[worker.as_bytes(), meter.as_str().as_bytes()]);
                if self.get(&index_key).is_some() {
                    return Err(EntryError::Job(JobError::MeterTaken));
                }
                state.meter = meter.as_str().to_owned();
                state.baseline_export_wh = meter_state.map_or(0, |meter| meter.export_counter_wh);
                self.write(index_key, &id);
                self.save_job(&id, Some(&before), &state);
                self.events.push(Event::JobDelivered { job: id });
                Ok(())
            }
            (Proof::Result(root), Evidence::Compute(_)) => {
                if state.root != Id([0; 32]) {
                    return Err(EntryError::Job(JobError::ResultCommitted));
                }
                state.root = *root;
                state.root_height = self.context.height;
                state.root_ms = self.context.time_ms;
                self.save_job(&id, Some(&before), &state);
                self.events.push(Event::JobDelivered { job: id });
                Ok(())
            }
            (Proof::Openings(openings), Evidence::Compute(task)) => {
                if state.root == Id([0; 32]) {
                    return Err(EntryError::Job(JobError::NoCommittedResult));
                }
                let task = *task;
                let sample =
                    protocol::message::sample_indices(&task, &id, &state.root, state.root_height, state.root_ms);
                let openings = openings.as_slice();
                // Every sampled unit opened, on the committed root, with the output re-execution gives.
                let sound = sample.iter().all(|index| {
                    openings.iter().any(|opening| {
                        opening.index == *index
                            && protocol::message::verify_path(
                                &state.root,
                                task.units,
                                opening.index,
                                &opening.leaf,
                                opening.path.as_slice(),
                            )
                            && protocol::message::unit_output(&task, opening.index) == opening.leaf
                    })
                });
                if sound {
                    self.complete(&id, state, "the sampled units re-executed to the committed result")
                } else {
                    self.fail(&id, state, "a sampled unit did not re-execute to the committed result", true)
                }
            }
            (Proof::Reading(reading), Evidence::Healthy(asset)) => {
                let asset = *asset;
                self.check_healthy(&state, &asset, reading)?;
                self.complete(&id, state, "a reading after the award shows the asset healthy")
            }
            _ => Err(EntryError::Job(JobError::WrongEvidence)),
        }
    }

    fn check_healthy(&self, state: &JobState, asset: &Id, reading: &Envelope) -> Result<(), EntryError> {
        let record: AssetState = self.read(&key(ASSET, &[asset.as_bytes()])).ok_or(EntryError::UnknownAsset(*asset))?;
        let protocol::Body::Reading(body) = &reading.body else {
            return Err(EntryError::Job(JobError::ProofNotAReading));
        };
        if reading.author != record.author || !record.manifest.meters.as_slice().contains(&body.meter) {
            return Err(EntryError::Job(JobError::ReadingOfAnotherMeter));
        }
        if self.get(&key(INCLUDED, &[reading.id().as_bytes()])).is_none() {
            return Err(EntryError::Job(JobError::ReadingNotOnLedger));
        }
        if body.interval_start_s.saturating_mul(1000) < state.awarded_ms {
            return Err(EntryError::Job(JobError::ReadingBeforeAward));
        }
        let alerts =
            self.scan(key(ALERT, &[asset.as_bytes(), &state.awarded_height.to_be_bytes()]), after(ALERT, asset));
        if !alerts.is_empty() {
            return Err(EntryError::Job(JobError::AlertSinceAward));
        }
        Ok(())
    }

    /// After a reading is anchored: completes the energy job its meter is evidence for, once enough is exported.
    pub(super) fn check_energy_job(
        &mut self,
        author: &PublicKey,
        meter: &str,
        export_counter_wh: u64,
    ) -> Result<(), EntryError> {
        let Some(id) = self.read::<Id>(&key(JOB_BY_METER, &[author.as_bytes(), meter.as_bytes()])) else {
            return Ok(());
        };
        let Ok(state) = self.job_state(&id) else { return Ok(()) };
        if state.status != JobStatus::Awarded {
            return Ok(());
        }
        if let Evidence::Energy(wh) = state.job.evidence
            && export_counter_wh.saturating_sub(state.baseline_export_wh) >= wh
        {
            return self.complete(&id, state, "the worker's meter exported the energy");
        }
        Ok(())
    }

    /// A verdict: the poster's or recipient's `Done`, the poster's withdrawal of an open job, or a juror's vote.
    pub(super) fn verdict(
        &mut self,
        author: &PublicKey,
        verdict: &protocol::message::Verdict,
    ) -> Result<(), EntryError> {
        let id = verdict.job;
        let mut state = self.job_state(&id)?;
        let recipient = matches!(&state.job.evidence, Evidence::Receipt(recipient) if recipient == author);
        match (state.status, verdict.outcome) {
            (JobStatus::Open, Outcome::Failed) if state.poster == *author => {
                self.close_unawarded(&id, state, "withdrawn by its poster")
            }
            (JobStatus::Awarded, Outcome::Done) if state.poster == *author => {
                self.complete(&id, state, "accepted by its poster")
            }
            (JobStatus::Awarded, Outcome::Done) if recipient => {
                self.complete(&id, state, "receipt signed by its recipient")
            }
            (JobStatus::Awarded, Outcome::Failed) if state.poster == *author || recipient => {
                Err(EntryError::Job(JobError::RejectByDispute))
            }
            (JobStatus::Disputed, outcome) if state.jurors.contains(author) => {
                let vote_key = key(JOB_JUROR_VOTE, &[id.as_bytes(), author.as_bytes()]);
                if self.get(&vote_key).is_some() {
                    return Err(EntryError::Job(JobError::JurorVoted));
                }
                self.write(vote_key, &(outcome as u8));
                let before = state.clone();
                match outcome {
                    Outcome::Done => state.votes_done += 1,
                    Outcome::Failed => state.votes_failed += 1,
                }
                let majority = state.jurors.len() as u32 / 2 + 1;
                if state.votes_done >= majority {
                    self.complete(&id, state, "the jury found it done")
                } else if state.votes_failed >= majority {
                    self.fail(&id, state, "the jury found it not done", true)
                } else {
                    self.save_job(&id, Some(&before), &state);
                    Ok(())
                }
            }
            _ => Err(EntryError::Job(JobError::NotYourVerdict)),
        }
    }

    /// The poster or the worker disputes an awarded job: a jury is drawn deterministically from the ledger —
    /// validators and members (not the parties) whose reputation score is at least `jury_score_min_ppm`, ordered by
    /// `blake3("kos/v1/jury" || 0x00 || job || u64be(height) || account)`, the first `jury_size` of them.
    pub(super) fn dispute(
        &mut self,
        author: &PublicKey,
        dispute: &protocol::message::Dispute,
    ) -> Result<(), EntryError> {
        let id = dispute.job;
        let mut state = self.job_state(&id)?;
        if state.status != JobStatus::Awarded {
            return Err(EntryError::Job(JobError::NotAwarded));
        }
        if *author != state.poster && *author != state.worker {
            return Err(EntryError::Job(JobError::NotAParty));
        }
        let jurors = self.draw_jury(&id, &[state.poster, state.worker]);
        if jurors.is_empty() {
            return Err(EntryError::Job(JobError::NoJuror));
        }
        let before = state.clone();
        state.status = JobStatus::Disputed;
        state.jury_until_ms = self.context.time_ms.saturating_add(self.param("jury_period_ms").max(1));
        state.jurors = jurors.clone();
        self.save_job(&id, Some(&before), &state);
        self.events.push(Event::JobDisputed { job: id, jurors });
        Ok(())
    }

    /// The jury of a dispute over `id` (a job or a barter leg) between `parties`, who never sit on it.
    pub(super) fn draw_jury(&self, id: &Id, parties: &[PublicKey]) -> Vec<PublicKey> {
        let mut candidates: Vec<PublicKey> = self
            .scan(vec![VALIDATOR], vec![VALIDATOR + 1])
            .iter()
            .filter_map(|(key, _)| key_at(key, 1))
            .chain(self.scan(vec![MEMBER], vec![MEMBER + 1]).iter().filter_map(|(key, _)| key_at(key, 1)))
            .take(JURY_CANDIDATES_MAX)
            .filter(|account| !parties.contains(account))
            .collect();
        candidates.sort();
        candidates.dedup();
        let score_min = self.param("jury_score_min_ppm");
        candidates.retain(|account| {
            let reputation: super::Reputation =
                self.read(&key(super::REPUTATION, &[account.as_bytes()])).unwrap_or_default();
            u64::from(reputation.score_ppm()) >= score_min
        });
        let height = self.context.height.to_be_bytes();
        candidates
            .sort_by_key(|account| crate::hash::tagged("kos/v1/jury", &[id.as_bytes(), &height, account.as_bytes()]));
        candidates.truncate(usize::try_from(self.param("jury_size").clamp(1, 15)).unwrap_or(3));
        candidates
    }

    /// An alert about an asset opens a maintenance quest when governance set a reward and the commons can pay it,
    /// unless the asset has one running.
    pub(super) fn maintenance_quest(&mut self, alert_id: &Id, alert: &protocol::message::Alert) {
        let reward = self.param("maintenance_quest_reward");
        if reward == 0 || self.get(&key(QUEST_BY_ASSET, &[alert.asset.as_bytes()])).is_some() {
            return;
        }
        let Ok(token) = TokenId::new(self.base.genesis.params.fee_token.clone()) else { return };
        if self.balance(&COMMONS, &token) < reward {
            return;
        }
        let Some(asset) = self.read::<AssetState>(&key(ASSET, &[alert.asset.as_bytes()])) else { return };
        let bids_until_ms = self.context.time_ms.saturating_add(self.param("maintenance_quest_bids_ms").max(1));
        let title = format!("Maintain asset {}: {:?} alert", &alert.asset.to_string()[..12], alert.rule);
        let (Ok(title), Ok(text)) = (
            protocol::types::Text::new(title),
            protocol::types::Text::new(format!(
                "{} (measured {}, threshold {})",
                asset.manifest.purpose.as_str(),
                alert.measured,
                alert.threshold
            )),
        ) else {
            return;
        };
        let job = Job {
            kind: JobKind::Maintenance,
            title,
            text,
            needs: protocol::types::BoundedVec::default(),
            skills: protocol::types::BoundedVec::default(),
            cell: asset.manifest.cell.clone(),
            radius_m: 0,
            token,
            reward,
            collateral: 0,
            slash_ppm: 0,
            tier: 0,
            guild: protocol::types::BoundedVec::default(),
            rule: AwardRule::BestScore,
            per_km: 0,
            evidence: Evidence::Healthy(alert.asset),
            bids_until_ms,
            deadline_ms: bids_until_ms.saturating_add(self.param("maintenance_quest_work_ms").max(1)),
        };
        let mark = self.undo.len();
        if self.post_job(&COMMONS, alert_id, &job, true).is_ok() {
            self.write(key(QUEST_BY_ASSET, &[alert.asset.as_bytes()]), alert_id);
        } else {
            self.rollback(mark);
        }
    }

    /// End of block: awards when bidding ends, fails jobs past their deadline, settles juries whose time is up.
    pub(super) fn jobs_due(&mut self) {
        let now = self.context.time_ms;
        for index_key in self.due(JOB_DUE, now).into_iter().take(JOBS_DUE_PER_BLOCK) {
            let Some(id) = id_at(&index_key, 9) else {
                self.delete(index_key);
                continue;
            };
            let Ok(state) = self.job_state(&id) else {
                self.delete(index_key);
                continue;
            };
            let mark = self.undo.len();
            let result = match state.status {
                JobStatus::Open => match winner(&state.job, &self.eligible_bids(&id, &state.job)).cloned() {
                    Some(bid) => match self.award(&id, state.clone(), &bid) {
                        Ok(()) => Ok(()),
                        Err(_) => {
                            self.rollback(mark);
                            self.close_unawarded(&id, state, "the poster could not pay the award")
                        }
                    },
                    None => self.close_unawarded(&id, state, "no bid by the end of bidding"),
                },
                JobStatus::Awarded => self.fail(&id, state, "the deadline passed", true),
                JobStatus::Disputed => {
                    if state.votes_done > state.votes_failed {
                        self.complete(&id, state, "the jury found it done")
                    } else if state.votes_failed > state.votes_done {
                        self.fail(&id, state, "the jury found it not done", true)
                    } else {
                        self.fail(&id, state, "the jury did not decide: refunded, nothing slashed", false)
                    }
                }
                _ => Ok(()),
            };
            if result.is_err() {
                // Cannot happen while the escrow account holds what the job locked; drop the step, keep the job.
                self.rollback(mark);
            }
            self.delete(index_key);
        }
    }
}
