//! The job marketplace on the API: open jobs, bids, awards, escrow and disputes from the ledger (`GET /jobs`,
//! `GET /jobs/{id}`), jobs that match a worker (`GET /jobs/match`), who announces jobs of a kind near a cell in the
//! DHT (`GET /jobs/providers`); and the node's own postings, bids, awards, deliveries, verdicts and disputes, signed
//! with its key and submitted to the ledger.

use ::ledger::reads::*;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use protocol::message::{
    Award, AwardRule, Bid, ComputeTask, Deliver, Dispute, Empty, Evidence, Job, JobKind, Need, Opening, Outcome, Proof,
    Resource, Verdict,
};
use protocol::types::{BoundedVec, Cell, MeterId, Skill, Text, TokenId};
use protocol::{Body, Id, PublicKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::doc::HEX_64;
use super::{
    Accepted, Answer, ApiError, Authorized, Context, Route, SUBMITTED, SUBMITTED_ABOUT, Submitted, Taken, doc, parse,
    submit_signed,
};
use crate::clock::now_ms;
use ::ledger::state::{BidState, JobState, JobStatus, job_escrow_account};
use protocol::limits::{
    CELL_CHARS_MAX, COMPUTE_ROUNDS_MAX, COMPUTE_SAMPLES_MAX, COMPUTE_UNITS_MAX, JOB_NEEDS_MAX, JOB_SKILLS_MAX,
    JOB_TEXT_BYTES_MAX, JOB_TITLE_BYTES_MAX, METER_ID_BYTES_MAX, SKILL_BYTES_MAX, TOKEN_ID_BYTES_MAX,
};

/// Most jobs one `GET /jobs` lists.
const JOBS_LISTED_MAX: usize = 500;

/// How the award is chosen among a job's bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuleName {
    /// The lowest price; ties to the earlier bid.
    LowestPrice,
    /// The lowest cost: the price weighted by the bidder's reputation, plus the route at the job's `per_km`.
    BestScore,
    /// The first bid that qualifies, awarded as it lands.
    FirstQualified,
}

impl From<AwardRule> for RuleName {
    fn from(rule: AwardRule) -> RuleName {
        match rule {
            AwardRule::LowestPrice => RuleName::LowestPrice,
            AwardRule::BestScore => RuleName::BestScore,
            AwardRule::FirstQualified => RuleName::FirstQualified,
        }
    }
}

impl From<RuleName> for AwardRule {
    fn from(rule: RuleName) -> AwardRule {
        match rule {
            RuleName::LowestPrice => AwardRule::LowestPrice,
            RuleName::BestScore => AwardRule::BestScore,
            RuleName::FirstQualified => AwardRule::FirstQualified,
        }
    }
}

/// What a job is.
// One name per `JobKind`, as `JobKind::name` names it (a test holds them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobKindName {
    /// Rent compute (a training run, a batch).
    Compute,
    /// A storage or memory licence.
    Storage,
    /// Provide network bandwidth.
    Bandwidth,
    /// Build or fabricate something (print a part).
    Build,
    /// Carry goods somewhere (water to a shelter, a part to a neighbour).
    Delivery,
    /// Repair or service an asset.
    Maintenance,
    /// Text work: write, translate or review.
    Text,
}

impl From<JobKind> for JobKindName {
    fn from(kind: JobKind) -> JobKindName {
        match kind {
            JobKind::Compute => JobKindName::Compute,
            JobKind::Storage => JobKindName::Storage,
            JobKind::Bandwidth => JobKindName::Bandwidth,
            JobKind::Build => JobKindName::Build,
            JobKind::Delivery => JobKindName::Delivery,
            JobKind::Maintenance => JobKindName::Maintenance,
            JobKind::Text => JobKindName::Text,
        }
    }
}

impl From<JobKindName> for JobKind {
    fn from(kind: JobKindName) -> JobKind {
        match kind {
            JobKindName::Compute => JobKind::Compute,
            JobKindName::Storage => JobKind::Storage,
            JobKindName::Bandwidth => JobKind::Bandwidth,
            JobKindName::Build => JobKind::Build,
            JobKindName::Delivery => JobKind::Delivery,
            JobKindName::Maintenance => JobKind::Maintenance,
            JobKindName::Text => JobKind::Text,
        }
    }
}

/// Where a job is: open → awarded → (disputed) → done or failed; closed when it ended unawarded.
// One name per `JobStatus`, as `JobStatus::name` names it (a test holds them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatusName {
    /// Taking bids.
    Open,
    /// A bid was awarded: the price is in escrow, the worker's collateral locked.
    Awarded,
    /// A jury is voting.
    Disputed,
    /// The work was done: the worker was paid.
    Done,
    /// The work was not done: the poster was refunded, the worker's collateral slashed.
    Failed,
    /// No bid by the end of bidding, withdrawn by its poster, or a quest the commons could not pay.
    Closed,
}

impl From<JobStatus> for JobStatusName {
    fn from(status: JobStatus) -> JobStatusName {
        match status {
            JobStatus::Open => JobStatusName::Open,
            JobStatus::Awarded => JobStatusName::Awarded,
            JobStatus::Disputed => JobStatusName::Disputed,
            JobStatus::Done => JobStatusName::Done,
            JobStatus::Failed => JobStatusName::Failed,
            JobStatus::Closed => JobStatusName::Closed,
        }
    }
}

/// A resource and the unit of its quantities.
// One name per `Resource`, as `Resource::name` names it (a test holds them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceName {
    /// Electric energy; quantity in Wh.
    Energy,
    /// Compute credits; quantity in milli-credits.
    Compute,
    /// Memory blocks; quantity in milli-blocks.
    Memory,
    /// Bandwidth units; quantity in milli-units.
    Bandwidth,
}

impl From<Resource> for ResourceName {
    fn from(resource: Resource) -> ResourceName {
        match resource {
            Resource::Energy => ResourceName::Energy,
            Resource::Compute => ResourceName::Compute,
            Resource::Memory => ResourceName::Memory,
            Resource::Bandwidth => ResourceName::Bandwidth,
        }
    }
}

impl From<ResourceName> for Resource {
    fn from(resource: ResourceName) -> Resource {
        match resource {
            ResourceName::Energy => Resource::Energy,
            ResourceName::Compute => Resource::Compute,
            ResourceName::Memory => Resource::Memory,
            ResourceName::Bandwidth => Resource::Bandwidth,
        }
    }
}

/// What completes a job besides the poster's acceptance (which always does), by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EvidenceView {
    /// Only the poster's acceptance.
    Acceptance,
    /// Energy delivered: the worker's meter exported at least `wh` after the award.
    Energy {
        /// Wh.
        wh: u64,
    },
    /// A compute result, checked by re-executing a sample of the task.
    Compute {
        /// The task's seed, 64 hex digits.
        seed: String,
        /// Independent units of work.
        units: u32,
        /// Hashes per unit.
        rounds: u32,
        /// Units the ledger re-executes.
        samples: u32,
    },
    /// The asset is healthy again: a reading of one of its meters after the award, no alert since.
    Healthy {
        /// The asset (its manifest's id), 64 hex digits.
        asset: String,
    },
    /// The named recipient's `done` verdict (its receipt) completes it.
    Receipt {
        /// The recipient's account, 64 hex digits.
        recipient: String,
    },
}

fn evidence_view(evidence: &Evidence) -> EvidenceView {
    match evidence {
        Evidence::Acceptance(_) => EvidenceView::Acceptance,
        Evidence::Energy(wh) => EvidenceView::Energy { wh: *wh },
        Evidence::Compute(task) => EvidenceView::Compute {
            seed: task.seed.to_hex(),
            units: task.units,
            rounds: task.rounds,
            samples: task.samples,
        },
        Evidence::Healthy(asset) => EvidenceView::Healthy { asset: asset.to_hex() },
        Evidence::Receipt(recipient) => EvidenceView::Receipt { recipient: recipient.to_hex() },
    }
}

/// A bid on a job, and what it costs the poster under the job's rule.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BidView {
    /// The bid's id (its entry's), 64 hex digits.
    pub id: String,
    /// The bidder's account, 64 hex digits.
    pub worker: String,
    /// Its place in the order bids landed, from 0.
    pub seq: u32,
    /// What the worker asks, milli-units of the job's token.
    pub price: u64,
    /// What it locks, milli-units of the job's token.
    pub collateral: u64,
    /// When the worker can start, Unix ms.
    pub start_ms: u64,
    /// Where the worker is (a geohash prefix).
    pub cell: String,
    /// The worker's route distance to the job, m.
    pub distance_m: u32,
    /// The worker's reputation score when it bid, ppm.
    pub score_ppm: u32,
    /// What it costs under the job's rule (lowest wins): the price for lowest-price, the weighted price plus the
    /// route for best-score (milli-units), the landing order for first-qualified.
    pub cost: u64,
}

fn bid_view(job: &Job, bid: &BidState) -> BidView {
    BidView {
        id: bid.id.to_hex(),
        worker: bid.worker.to_hex(),
        seq: bid.seq,
        price: bid.bid.price,
        collateral: bid.bid.collateral,
        start_ms: bid.bid.start_ms,
        cell: bid.bid.cell.as_str().to_owned(),
        distance_m: bid.bid.distance_m,
        score_ppm: bid.score_ppm,
        cost: u64::try_from(::ledger::state::bid_cost(job, bid)).unwrap_or(u64::MAX),
    }
}

/// A resource a job needs: `quantity` per hour for `hours`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NeedView {
    pub resource: ResourceName,
    /// Per hour: Wh for energy, milli-units for the others.
    pub quantity: u64,
    /// For how many hours.
    pub hours: u32,
}

/// A job's award: the bid, its worker, its price and the collateral locked.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AwardView {
    /// The awarded bid's id, 64 hex digits.
    pub bid: String,
    /// The worker's account, 64 hex digits.
    pub worker: String,
    /// The price moved to escrow, milli-units of the job's token.
    pub price: u64,
    /// The worker's collateral locked, milli-units of the job's token.
    pub collateral: u64,
    /// The block that awarded it.
    pub height: u64,
    /// That block's time, Unix ms.
    pub time_ms: u64,
}

/// A job on the ledger: its posting, status, award, result and jury.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobView {
    /// The job's id (its posting's), 64 hex digits.
    pub id: String,
    /// The poster's account, 64 hex digits (the commons' for a quest).
    pub poster: String,
    /// Whether the commons posted it (a quest, by a proposal).
    pub quest: bool,
    pub status: JobStatusName,
    pub kind: JobKindName,
    pub title: String,
    /// The description.
    pub text: String,
    /// Resources the job needs.
    pub needs: Vec<NeedView>,
    /// Skills or device classes a worker should have.
    pub skills: Vec<String>,
    /// Where it is done (a geohash prefix); empty: anywhere.
    pub cell: String,
    /// How far from `cell` a worker may come from, m; 0: no limit.
    pub radius_m: u32,
    /// The token it pays in (its id).
    pub token: String,
    /// The most the poster pays, milli-units of `token`.
    pub reward: u64,
    /// The least collateral a bid must lock, milli-units of `token`.
    pub collateral: u64,
    /// The share of the collateral a worker who fails loses to the poster, ppm.
    pub slash_ppm: u32,
    /// The lowest reputation tier a bidder must be in (0: anyone).
    pub tier: u32,
    /// Only members of this guild (its account, 64 hex digits) may bid; null: anyone.
    pub guild: Option<String>,
    pub rule: RuleName,
    /// For best-score: what a km of route counts as, milli-units of `token`.
    pub per_km: u64,
    pub evidence: EvidenceView,
    /// Bids are taken until then, Unix ms (block time).
    pub bids_until_ms: u64,
    /// The work is due by then, Unix ms.
    pub deadline_ms: u64,
    /// The block that holds the posting.
    pub posted_height: u64,
    /// That block's time, Unix ms.
    pub posted_ms: u64,
    /// Bids taken.
    pub bid_count: u32,
    /// The award; null while open (or withdrawn before one).
    pub award: Option<AwardView>,
    /// For energy evidence: the worker's meter (its id) named in its delivery; null before.
    pub meter: Option<String>,
    /// For compute evidence: the Merkle root of the worker's result, 64 hex digits; null before.
    pub result: Option<String>,
    /// The block that fixed the result's sample (0: none yet).
    pub result_height: u64,
    /// That block's time, Unix ms.
    pub result_ms: u64,
    /// The jury of a dispute, accounts (64 hex digits).
    pub jurors: Vec<String>,
    /// When the jury's period ends, Unix ms (0: no dispute).
    pub jury_until_ms: u64,
    /// Jurors' votes that the work was done.
    pub votes_done: u32,
    /// Jurors' votes that it failed.
    pub votes_failed: u32,
    /// When it closed, Unix ms (0: running).
    pub closed_ms: u64,
    /// The worker's collateral slashed, milli-units of `token`.
    pub slashed: u64,
    /// Why it ended as it did (empty while running).
    pub reason: String,
}

/// A job as the API shows it.
pub fn job_view(id: &Id, state: &JobState) -> JobView {
    let job = &state.job;
    let awarded = state.status != JobStatus::Open && state.bid != Id([0; 32]);
    JobView {
        id: id.to_hex(),
        poster: state.poster.to_hex(),
        quest: state.quest == 1,
        status: state.status.into(),
        kind: job.kind.into(),
        title: job.title.as_str().to_owned(),
        text: job.text.as_str().to_owned(),
        needs: job
            .needs
            .as_slice()
            .iter()
            .map(|need| NeedView { resource: need.resource.into(), quantity: need.quantity, hours: need.hours })
            .collect(),
        skills: job.skills.as_slice().iter().map(|skill| skill.as_str().to_owned()).collect(),
        cell: job.cell.as_str().to_owned(),
        radius_m: job.radius_m,
        token: job.token.as_str().to_owned(),
        reward: job.reward,
        collateral: job.collateral,
        slash_ppm: job.slash_ppm,
        tier: job.tier,
        guild: job.guild.as_slice().first().map(PublicKey::to_hex),
        rule: job.rule.into(),
        per_km: job.per_km,
        evidence: evidence_view(&job.evidence),
        bids_until_ms: job.bids_until_ms,
        deadline_ms: job.deadline_ms,
        posted_height: state.posted_height,
        posted_ms: state.posted_ms,
        bid_count: state.bids,
        award: awarded.then(|| AwardView {
            bid: state.bid.to_hex(),
            worker: state.worker.to_hex(),
            price: state.price,
            collateral: state.collateral,
            height: state.awarded_height,
            time_ms: state.awarded_ms,
        }),
        meter: (!state.meter.is_empty()).then(|| state.meter.clone()),
        result: (state.root != Id([0; 32])).then(|| state.root.to_hex()),
        result_height: state.root_height,
        result_ms: state.root_ms,
        jurors: state.jurors.iter().map(PublicKey::to_hex).collect(),
        jury_until_ms: state.jury_until_ms,
        votes_done: state.votes_done,
        votes_failed: state.votes_failed,
        closed_ms: state.closed_ms,
        slashed: state.slashed,
        reason: state.reason.clone(),
    }
}

/// `GET /jobs`: which jobs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Only jobs in this status; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "JobStatusName")]
    status: Option<JobStatusName>,
    /// Only jobs of this kind; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "JobKindName")]
    kind: Option<JobKindName>,
    /// Only jobs whose cell starts with this geohash prefix (and those done anywhere).
    cell: Option<String>,
}

/// A job listed, with its escrow.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListedJob {
    #[serde(flatten)]
    pub job: JobView,
    /// What the job's escrow account holds, milli-units of its token: the awarded price and the bidders'
    /// collateral.
    pub escrow: u64,
}

/// The jobs on the ledger, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Jobs {
    /// The height whose state this is.
    pub height: u64,
    /// Newest posting first, at most 500.
    pub jobs: Vec<ListedJob>,
}

/// `GET /jobs`: the jobs on the ledger, newest first, with their escrow.
pub async fn list(State(context): State<Context>, Query(query): Query<JobsQuery>) -> Answer<Jobs> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let kind = query.kind.map(JobKind::from);
    let listed = ledger
        .query(move |state| {
            let height = state.height();
            let mut jobs: Vec<(Id, JobState)> = state
                .jobs()
                .filter(|(_, job)| query.status.is_none_or(|status| JobStatusName::from(job.status) == status))
                .filter(|(_, job)| kind.is_none_or(|kind| job.job.kind == kind))
                .filter(|(_, job)| {
                    query
                        .cell
                        .as_deref()
                        .is_none_or(|cell| job.job.cell.as_str().is_empty() || job.job.cell.as_str().starts_with(cell))
                })
                .collect();
            jobs.sort_by_key(|(id, job)| (std::cmp::Reverse(job.posted_height), *id));
            jobs.truncate(JOBS_LISTED_MAX);
            let jobs = jobs
                .iter()
                .map(|(id, job)| ListedJob {
                    job: job_view(id, job),
                    escrow: state.balance(&job_escrow_account(id), &job.job.token),
                })
                .collect();
            Jobs { height, jobs }
        })
        .await?;
    Ok(Json(listed))
}

fn parse_id(text: &str) -> Result<Id, ApiError> {
    Id::from_hex(text).map_err(|_| ApiError::bad_request("job: 64 hex digits"))
}

/// A juror's vote on a disputed job.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JuryVote {
    /// The juror's account, 64 hex digits.
    pub juror: String,
    pub outcome: OutcomeName,
}

/// A verdict: the work was done, or it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeName {
    Done,
    Failed,
}

impl From<OutcomeName> for Outcome {
    fn from(outcome: OutcomeName) -> Outcome {
        match outcome {
            OutcomeName::Done => Outcome::Done,
            OutcomeName::Failed => Outcome::Failed,
        }
    }
}

/// A job with its bids, the rule's pick, its escrow and its jury's votes.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    /// Its bids, in the order they landed, with what each costs under the job's rule.
    pub bids: Vec<BidView>,
    /// The bid the job's rule picks now (among the bidders of its tier), 64 hex digits; null: none.
    pub winner: Option<String>,
    /// The account that holds its escrow and its bidders' collateral, 64 hex digits.
    pub escrow_account: String,
    /// What that account holds, milli-units of the job's token.
    pub escrow: u64,
    /// The jurors' votes so far.
    pub votes: Vec<JuryVote>,
    /// The height whose state this is.
    pub height: u64,
}

/// `GET /jobs/{id}`: a job with its bids (and what each costs under the rule), its award, escrow and jury.
pub async fn show(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<JobDetail> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = parse_id(&id)?;
    let found = ledger
        .query(move |state| {
            let height = state.height();
            let job = state.job(&id)?;
            let bids = state.job_bids(&id);
            let votes = state
                .jury_votes(&id)
                .iter()
                .map(|(juror, outcome)| JuryVote {
                    juror: juror.to_hex(),
                    outcome: if *outcome == Outcome::Done as u8 { OutcomeName::Done } else { OutcomeName::Failed },
                })
                .collect();
            Some(JobDetail {
                job: job_view(&id, &job),
                bids: bids.iter().map(|bid| bid_view(&job.job, bid)).collect(),
                winner: state.job_winner(&id).map(|bid| bid.id.to_hex()),
                escrow_account: job_escrow_account(&id).to_hex(),
                escrow: state.balance(&job_escrow_account(&id), &job.job.token),
                votes,
                height,
            })
        })
        .await?;
    let detail = found.ok_or_else(|| ApiError::not_found(format!("no job {} is on the ledger", id.to_hex())))?;
    Ok(Json(detail))
}

/// `GET /jobs/match`: what a worker takes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchQuery {
    /// Comma-separated job kinds the worker takes; default all.
    #[schemars(regex(pattern = kinds_pattern()))]
    kinds: Option<String>,
    /// Comma-separated skills the worker has; default none.
    skills: Option<String>,
    /// Where the worker is, a geohash prefix; default anywhere.
    cell: Option<String>,
    /// How far it travels, m; default no limit.
    radius_m: Option<u64>,
    /// How many jobs to answer at most (default 50, at most 500).
    limit: Option<usize>,
}

/// The pattern of a comma-separated list of job kinds, from the kinds' names.
fn kinds_pattern() -> String {
    let kinds: Vec<&str> = JobKind::ALL.iter().map(|kind| kind.name()).collect();
    let kind = format!("({})", kinds.join("|"));
    format!("^{kind}(,{kind})*$")
}

/// An open job a worker could take.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MatchedJob {
    /// The job's id, 64 hex digits.
    pub id: String,
    /// The poster's account, 64 hex digits.
    pub poster: String,
    pub kind: JobKindName,
    pub title: String,
    /// Where it is done (a geohash prefix); empty: anywhere.
    pub cell: String,
    /// The token it pays in (its id).
    pub token: String,
    /// The most the poster pays, milli-units of `token`.
    pub reward: u64,
    /// Bids are taken until then, Unix ms.
    pub bids_until_ms: u64,
    /// The distance from the worker, m; null unless both the worker and the job have a cell.
    pub distance_m: Option<u64>,
}

/// The open jobs in the node's index a worker could take, best paid first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobMatches {
    /// Open jobs in the node's index (heard on the jobs topic or committed).
    pub indexed: usize,
    /// Best paid first.
    pub jobs: Vec<MatchedJob>,
}

/// `GET /jobs/match`: the open jobs in the node's index a worker could take, best paid first.
pub async fn matching(State(context): State<Context>, Query(query): Query<MatchQuery>) -> Answer<JobMatches> {
    let kinds = query
        .kinds
        .as_deref()
        .map(|kinds| kinds.split(',').map(str::parse::<JobKind>).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or_else(|| JobKind::ALL.to_vec());
    let skills = query
        .skills
        .as_deref()
        .map(|skills| skills.split(',').map(Skill::new).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|problem| ApiError::bad_request(format!("skills: {problem}")))?
        .unwrap_or_default();
    let cell = Cell::new(query.cell.clone().unwrap_or_default())
        .map_err(|problem| ApiError::bad_request(format!("cell: {problem}")))?;
    let profile = ::market::jobs::Profile { kinds, skills, cell, radius_m: query.radius_m.unwrap_or(0) };
    let limit = query.limit.unwrap_or(50).min(JOBS_LISTED_MAX);
    let found = context.jobs.matching(&profile, now_ms(), limit);
    Ok(Json(JobMatches {
        indexed: context.jobs.len(),
        jobs: found
            .iter()
            .map(|open| MatchedJob {
                id: open.id.to_hex(),
                poster: open.poster.to_hex(),
                kind: open.job.kind.into(),
                title: open.job.title.as_str().to_owned(),
                cell: open.job.cell.as_str().to_owned(),
                token: open.job.token.as_str().to_owned(),
                reward: open.job.reward,
                bids_until_ms: open.job.bids_until_ms,
                distance_m: open.distance_m,
            })
            .collect(),
    }))
}

/// `GET /jobs/providers`: which kind, where.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidersQuery {
    /// The kind of job.
    kind: JobKindName,
    /// Near this location cell (a geohash prefix; the DHT keys its first characters); default anywhere.
    #[serde(default)]
    #[schemars(length(max = CELL_CHARS_MAX))]
    cell: String,
}

/// The peers that announce open jobs of a kind near a cell in the DHT.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobProviders {
    /// The kind asked.
    pub kind: JobKindName,
    /// The cell the DHT key names (the asked cell cut to the DHT's length).
    pub cell: String,
    /// The DHT key, 64 hex digits.
    pub key: String,
    /// The announcing peers' ids (libp2p peer ids, base58).
    pub providers: Vec<String>,
}

/// `GET /jobs/providers`: peers that announce open jobs of a kind near a cell in the DHT.
pub async fn providers(State(context): State<Context>, Query(query): Query<ProvidersQuery>) -> Answer<JobProviders> {
    let kind = JobKind::from(query.kind);
    let cell = Cell::new(query.cell.clone()).map_err(|problem| ApiError::bad_request(format!("cell: {problem}")))?;
    let key = ::market::jobs::dht_key(kind, cell.as_str());
    let peers =
        context.network.find_providers(key).await.map_err(|problem| ApiError::unavailable(problem.to_string()))?;
    Ok(Json(JobProviders {
        kind: query.kind,
        cell: ::market::jobs::dht_cell(cell.as_str()).to_owned(),
        key: key.to_hex(),
        providers: peers.iter().map(ToString::to_string).collect(),
    }))
}

/// A resource a job needs: `quantity` per hour for `hours`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeedRequest {
    resource: ResourceName,
    /// Per hour: Wh for energy, milli-units for the others.
    quantity: u64,
    /// For how many hours.
    hours: u32,
}

/// What completes the job besides the poster's acceptance, by `kind`: `{"kind": "compute", "units": 64, "rounds":
/// 256, "samples": 4}`…
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EvidenceRequest {
    /// Only the poster's acceptance (the default).
    Acceptance,
    /// Energy delivered: the worker's meter (named in its delivery) exports at least `wh` after the award.
    Energy {
        /// Wh.
        wh: u64,
    },
    /// A compute task, checked by re-executing a sample of the worker's result.
    Compute {
        /// Independent units of work (1 to 65536).
        #[schemars(range(min = 1, max = COMPUTE_UNITS_MAX))]
        units: u32,
        /// Hashes per unit (1 to 4096).
        #[schemars(range(min = 1, max = COMPUTE_ROUNDS_MAX))]
        rounds: u32,
        /// Units the ledger re-executes (1 to 16).
        #[schemars(range(min = 1, max = COMPUTE_SAMPLES_MAX))]
        samples: u32,
        /// The task's seed, 64 hex digits; default random.
        #[schemars(regex(pattern = HEX_64))]
        seed: Option<String>,
    },
    /// The asset is healthy again: a reading of one of its meters after the award, no alert since.
    Healthy {
        /// The asset (its manifest's id), 64 hex digits.
        #[schemars(regex(pattern = HEX_64))]
        asset: String,
    },
    /// The named recipient's `done` verdict (its receipt) completes it.
    Receipt {
        /// The recipient's account, 64 hex digits.
        #[schemars(regex(pattern = HEX_64))]
        recipient: String,
    },
}

/// A job posted to `POST /jobs` (or proposed as a quest). Amounts are decimal strings of the token with up to 3
/// decimals ("24", "2.5").
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    kind: JobKindName,
    /// At most 120 bytes of UTF-8.
    #[schemars(length(max = JOB_TITLE_BYTES_MAX))]
    title: String,
    /// At most 1024 bytes of UTF-8; default empty.
    #[serde(default)]
    #[schemars(length(max = JOB_TEXT_BYTES_MAX))]
    text: String,
    /// Resources the job needs (at most 8); default none.
    #[serde(default)]
    #[schemars(length(max = JOB_NEEDS_MAX))]
    needs: Vec<NeedRequest>,
    /// Skills or device classes a worker should have (at most 8, each 1 to 32 bytes of a-z 0-9 -); default none.
    #[serde(default)]
    #[schemars(length(max = JOB_SKILLS_MAX), inner(length(min = 1, max = SKILL_BYTES_MAX)))]
    skills: Vec<String>,
    /// Where a physical job is done, a geohash prefix (at most 12 characters); default anywhere.
    #[serde(default)]
    #[schemars(length(max = CELL_CHARS_MAX))]
    cell: String,
    /// How far from `cell` a worker may come from, m; default 0, no limit.
    #[serde(default)]
    radius_m: u32,
    /// The token it pays in (its id, 1 to 16 bytes of a-z 0-9 -); default the ledger's fee token.
    #[schemars(length(min = 1, max = TOKEN_ID_BYTES_MAX))]
    token: Option<String>,
    /// The most the poster pays, decimal, e.g. "24" or "2.5".
    reward: String,
    /// The least collateral a bid must lock, decimal; default 0.
    collateral: Option<String>,
    /// The share of the collateral a worker who fails loses to the poster, ppm (at most 1000000); default 0.
    #[serde(default)]
    slash_ppm: u32,
    /// The lowest reputation tier a bidder must be in; default 0, anyone.
    #[serde(default)]
    tier: u32,
    /// Only members of this guild (its account, 64 hex digits) may bid; default anyone.
    #[schemars(regex(pattern = HEX_64))]
    guild: Option<String>,
    /// How the award is chosen; default `lowest-price`.
    rule: Option<RuleName>,
    /// For best-score: what a km of route counts as, decimal; default 0.
    per_km: Option<String>,
    /// What completes the job; default the poster's acceptance.
    evidence: Option<EvidenceRequest>,
    /// How long bids are taken, s; default 60.
    bids_for_s: Option<u64>,
    /// How long the work may take after bidding ends, s; default 3600.
    work_for_s: Option<u64>,
}

fn amount(text: &str, what: &str) -> Result<u64, String> {
    protocol::amount::parse_milli(text).map_err(|problem| format!("{what}: {problem}"))
}

fn key_hex(text: &str, what: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(text).map_err(|_| format!("{what}: 64 hex digits"))
}

/// The job a request describes, bidding from now.
pub fn build_job(request: JobRequest, fee_token: &str) -> Result<Job, String> {
    let kind = JobKind::from(request.kind);
    let rule = AwardRule::from(request.rule.unwrap_or(RuleName::LowestPrice));
    let evidence = match request.evidence.unwrap_or(EvidenceRequest::Acceptance) {
        EvidenceRequest::Acceptance => Evidence::Acceptance(Empty),
        EvidenceRequest::Energy { wh } => Evidence::Energy(wh),
        EvidenceRequest::Compute { units, rounds, samples, seed } => Evidence::Compute(ComputeTask {
            seed: match seed {
                Some(seed) => Id::from_hex(&seed).map_err(|_| "evidence.seed: 64 hex digits".to_owned())?,
                None => {
                    let mut seed = [0u8; 32];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
                    Id(seed)
                }
            },
            units,
            rounds,
            samples,
        }),
        EvidenceRequest::Healthy { asset } => {
            Evidence::Healthy(Id::from_hex(&asset).map_err(|_| "evidence.asset: 64 hex digits".to_owned())?)
        }
        EvidenceRequest::Receipt { recipient } => Evidence::Receipt(key_hex(&recipient, "evidence.recipient")?),
    };
    let needs = request
        .needs
        .iter()
        .map(|need| Need { resource: need.resource.into(), quantity: need.quantity, hours: need.hours })
        .collect::<Vec<_>>();
    let skills = request
        .skills
        .iter()
        .map(|skill| Skill::new(skill.clone()).map_err(|problem| format!("skill: {problem}")))
        .collect::<Result<Vec<_>, String>>()?;
    let now = now_ms();
    let bids_until_ms = now.saturating_add(request.bids_for_s.unwrap_or(60).saturating_mul(1000));
    let job = Job {
        kind,
        title: Text::new(request.title).map_err(|problem| format!("title: {problem}"))?,
        text: Text::new(request.text).map_err(|problem| format!("text: {problem}"))?,
        needs: BoundedVec::new(needs).map_err(|problem| format!("needs: {problem}"))?,
        skills: BoundedVec::new(skills).map_err(|problem| format!("skills: {problem}"))?,
        cell: Cell::new(request.cell).map_err(|problem| format!("cell: {problem}"))?,
        radius_m: request.radius_m,
        token: TokenId::new(request.token.unwrap_or_else(|| fee_token.to_owned()))
            .map_err(|problem| format!("token: {problem}"))?,
        reward: amount(&request.reward, "reward")?,
        collateral: request.collateral.as_deref().map(|text| amount(text, "collateral")).transpose()?.unwrap_or(0),
        slash_ppm: request.slash_ppm,
        tier: request.tier,
        guild: BoundedVec::new(
            request.guild.as_deref().map(|guild| key_hex(guild, "guild")).transpose()?.into_iter().collect(),
        )
        .map_err(|problem| format!("guild: {problem}"))?,
        rule,
        per_km: request.per_km.as_deref().map(|text| amount(text, "per_km")).transpose()?.unwrap_or(0),
        evidence,
        bids_until_ms,
        deadline_ms: bids_until_ms.saturating_add(request.work_for_s.unwrap_or(3600).saturating_mul(1000)),
    };
    protocol::validate::check_job(&job).map_err(str::to_owned)?;
    Ok(job)
}

/// Signs and submits a job message (the entry may wait 10 minutes for a block); a posting the ledger took goes into
/// the node's job index under its entry's id and is announced in the DHT (the ledger gossips it: postings and bids
/// on the jobs topic, which job indexes read).
async fn submit(context: &Context, body: Body) -> Taken<Submitted> {
    let posting = match &body {
        Body::Job(job) => Some(job.clone()),
        _ => None,
    };
    let id = submit_signed(context, body).await?;
    if let Some(job) = posting {
        context.jobs.insert(id, context.signer.public(), job.clone(), now_ms());
        crate::jobs::announce(&context.network, &job);
    }
    Ok(Accepted(Submitted { id: id.to_hex() }))
}

/// `POST /jobs`: a job posted by the node.
pub async fn post(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let request: JobRequest = parse(&body, "a job")?;
    let job = build_job(request, &ledger.genesis().params.fee_token).map_err(ApiError::bad_request)?;
    submit(&context, Body::Job(job)).await
}

/// The node's bid on a job. Amounts are decimal strings of the job's token with up to 3 decimals.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BidRequest {
    /// What the node asks, decimal (at most the job's reward).
    price: String,
    /// What it locks, decimal; default what the job asks.
    collateral: Option<String>,
    /// When it can start, Unix ms; default now.
    start_ms: Option<u64>,
    /// Where it is, a geohash prefix of at most 12 characters (for physical jobs); default none.
    #[serde(default)]
    #[schemars(length(max = CELL_CHARS_MAX))]
    cell: String,
    /// Its route distance to the job, m; default 0.
    #[serde(default)]
    distance_m: u32,
}

async fn read_job(context: &Context, id: Id) -> Result<JobState, ApiError> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    ledger
        .query(move |state| state.job(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {} is on the ledger", id.to_hex())))
}

/// `POST /jobs/{id}/bids`: the node bids on a job.
pub async fn bid(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let id = parse_id(&id)?;
    let request: BidRequest = parse(&body, "a bid")?;
    let job = read_job(&context, id).await?;
    let built = (|| -> Result<Bid, String> {
        Ok(Bid {
            job: id,
            price: amount(&request.price, "price")?,
            start_ms: request.start_ms.unwrap_or_else(now_ms),
            collateral: match &request.collateral {
                Some(text) => amount(text, "collateral")?,
                None => job.job.collateral,
            },
            cell: Cell::new(request.cell.clone()).map_err(|problem| format!("cell: {problem}"))?,
            distance_m: request.distance_m,
        })
    })();
    submit(&context, Body::Bid(built.map_err(ApiError::bad_request)?)).await
}

/// The poster's award. The body may be empty: the bid the job's rule picks.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AwardRequest {
    /// The bid to award, 64 hex digits; default the one the job's rule picks (the ledger refuses any other).
    #[schemars(regex(pattern = HEX_64))]
    bid: Option<String>,
}

/// `POST /jobs/{id}/award`: the poster closes bidding and awards (the rule's pick unless a bid is named; the
/// ledger refuses any other).
pub async fn award(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let id = parse_id(&id)?;
    let request: AwardRequest = if body.is_empty() { AwardRequest::default() } else { parse(&body, "an award")? };
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let bid = match request.bid {
        Some(bid) => Id::from_hex(&bid).map_err(|_| ApiError::bad_request("bid: 64 hex digits"))?,
        None => {
            let winner = ledger.query(move |state| state.job_winner(&id)).await?;
            winner.ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "the job has no bid to award"))?.id
        }
    };
    submit(&context, Body::Award(Award { job: id, bid })).await
}

/// The worker's delivery, by `proof`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverRequest {
    proof: ProofName,
    /// For `meter`: the id of the node's meter whose export is the evidence.
    #[schemars(length(min = 1, max = METER_ID_BYTES_MAX))]
    meter: Option<String>,
    /// For `reading`: a signed reading of the maintained asset's meter (an envelope whose body is a reading), its
    /// bytes in hex.
    reading: Option<String>,
}

/// What a delivery proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProofName {
    /// The worker says it is done (the poster's acceptance, a receipt or a jury completes the job).
    Claim,
    /// Energy evidence: the node's meter (`meter`) whose export after the award counts.
    Meter,
    /// Compute evidence: the node runs the job's task, commits its result and opens the sample the ledger draws.
    Compute,
    /// Healthy evidence: a signed reading of the maintained asset's meter (`reading`).
    Reading,
}

/// `POST /jobs/{id}/deliver`: the awarded worker (this node) delivers. `compute` runs the job's task here,
/// commits the result's root, and once the ledger has fixed the sample, opens the sampled units.
pub async fn deliver(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let id = parse_id(&id)?;
    let request: DeliverRequest = parse(&body, "a delivery")?;
    let proof = match request.proof {
        ProofName::Claim => Proof::Claim(Empty),
        ProofName::Meter => Proof::Meter(
            MeterId::new(request.meter.clone().unwrap_or_default())
                .map_err(|problem| ApiError::bad_request(format!("meter: {problem}")))?,
        ),
        ProofName::Reading => {
            let envelope = request
                .reading
                .as_deref()
                .ok_or_else(|| "reading: hex of a signed reading".to_owned())
                .and_then(|text| hex::decode(text).map_err(|_| "reading: hex".to_owned()))
                .and_then(|bytes| {
                    protocol::Envelope::from_bytes(&bytes).map_err(|problem| format!("reading: {problem}"))
                })
                .map_err(ApiError::bad_request)?;
            Proof::Reading(Box::new(envelope))
        }
        ProofName::Compute => {
            let job = read_job(&context, id).await?;
            let Evidence::Compute(task) = job.job.evidence else {
                return Err(ApiError::bad_request("the job is not a compute job"));
            };
            let levels = tokio::task::spawn_blocking(move || protocol::message::run_task(&task))
                .await
                .map_err(|problem| ApiError::internal(problem.to_string()))?;
            let root = levels.last().and_then(|level| level.first()).copied().unwrap_or(Id([0; 32]));
            let submitted = submit(&context, Body::Deliver(Deliver { job: id, proof: Proof::Result(root) })).await?;
            tokio::spawn(open_sample(context.clone(), id, task, root, levels));
            return Ok(submitted);
        }
    };
    submit(&context, Body::Deliver(Deliver { job: id, proof })).await
}

/// Waits for the committed result's block (which fixes the sample), then opens the sampled units.
async fn open_sample(context: Context, id: Id, task: ComputeTask, root: Id, levels: Vec<Vec<Id>>) {
    let Some(ledger) = context.ledger.clone() else { return };
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let Ok(Some(job)) = ledger.query(move |state| state.job(&id)).await else { return };
        if job.status != JobStatus::Awarded || now_ms() > job.job.deadline_ms {
            return;
        }
        if job.root != root {
            continue;
        }
        let openings: Vec<Opening> = protocol::message::sample_indices(&task, &id, &root, job.root_height, job.root_ms)
            .into_iter()
            .filter_map(|index| {
                Some(Opening {
                    index,
                    leaf: *levels.first()?.get(index as usize)?,
                    path: BoundedVec::new(protocol::message::merkle_path(&levels, index)).ok()?,
                })
            })
            .collect();
        let Ok(openings) = BoundedVec::new(openings) else { return };
        let status = match submit(&context, Body::Deliver(Deliver { job: id, proof: Proof::Openings(openings) })).await
        {
            Ok(_) => StatusCode::ACCEPTED,
            Err(refused) => refused.status(),
        };
        info!(job = %id, %status, "opened the sampled units of a compute result");
        return;
    }
}

/// A verdict on a job.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictRequest {
    /// `done` (the poster accepts, a recipient signs its receipt, a juror votes it done) or `failed` (the poster
    /// withdraws an unawarded job, a juror votes it failed).
    outcome: OutcomeName,
}

/// `POST /jobs/{id}/verdict`: the poster accepts (`done`) or withdraws an unawarded job (`failed`); a recipient
/// signs its receipt; a juror votes.
pub async fn verdict(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let id = parse_id(&id)?;
    let request: VerdictRequest = parse(&body, "a verdict")?;
    submit(&context, Body::Verdict(Verdict { job: id, outcome: request.outcome.into() })).await
}

/// A dispute: the poster or the worker asks for a jury.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeRequest {
    /// Why, for the jurors: at most 1024 bytes of UTF-8.
    #[schemars(length(max = JOB_TEXT_BYTES_MAX))]
    text: String,
}

impl DisputeRequest {
    pub(super) fn text(self) -> String {
        self.text
    }
}

impl VerdictRequest {
    pub(super) fn outcome(&self) -> Outcome {
        self.outcome.into()
    }
}

/// Signs and submits the node's verdict on what `id` names (a barter leg, a cell's case): the request's outcome.
pub(super) async fn submit_verdict(context: &Context, id: Id, body: &Bytes) -> Taken<Submitted> {
    let request: VerdictRequest = parse(body, "a verdict")?;
    let id = submit_signed(context, Body::Verdict(Verdict { job: id, outcome: request.outcome() })).await?;
    Ok(Accepted(Submitted { id: id.to_hex() }))
}

/// `POST /jobs/{id}/dispute`: the poster or the worker asks for a jury.
pub async fn dispute(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let id = parse_id(&id)?;
    let request: DisputeRequest = parse(&body, "a dispute")?;
    let text = Text::new(request.text).map_err(|problem| ApiError::bad_request(format!("text: {problem}")))?;
    submit(&context, Body::Dispute(Dispute { job: id, text })).await
}

const JOB: &str = "The job's id (its posting's), 64 hex digits";

/// The jobs' routes.
pub const ROUTES: &[Route] = &[
    Route::get(
        "/jobs",
        "Jobs on the ledger (of a status, a kind, near a cell), newest first, with their escrow",
        || axum::routing::get(list),
        doc::json::<Jobs>(),
    )
    .statuses(&[200, 400, 503])
    .query(doc::schema::<JobsQuery>),
    Route::post(
        "/jobs",
        "The node posts a job, bidding from now; once submitted, it is in the node's job index and announced in the \
         DHT",
        || axum::routing::post(post),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
        .body(doc::json_body::<JobRequest>()),
    Route::get(
        "/jobs/match",
        "Open jobs a worker could take, best paid first, from the node's bounded index",
        || axum::routing::get(matching),
        doc::json::<JobMatches>(),
    )
    .statuses(&[200, 400])
    .query(doc::schema::<MatchQuery>),
    Route::get(
        "/jobs/providers",
        "Peers announcing open jobs of a kind near a cell in the DHT",
        || axum::routing::get(providers),
        doc::json::<JobProviders>(),
    )
    .statuses(&[200, 400, 503])
    .query(doc::schema::<ProvidersQuery>),
    Route::get(
        "/jobs/{id}",
        "A job with its bids and what each costs under its rule, the rule's pick, its award, escrow, jury and votes",
        || axum::routing::get(show),
        doc::json::<JobDetail>(),
    )
    .statuses(&[200, 400, 404, 503])
    .about(&[doc::hex(JOB)]),
    Route::post(
        "/jobs/{id}/bids",
        "The node bids on a job; the bid's collateral (default what the job asks) is locked on the job's escrow until \
         the award, which returns it to every bidder but the winner (a first-qualified job is awarded to the first \
         bid that qualifies as it lands)",
        || axum::routing::post(bid),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED_ABOUT)
        .about(&[doc::hex(JOB)])
        .body(doc::json_body::<BidRequest>()),
    Route::post(
        "/jobs/{id}/award",
        "The node (the poster) closes bidding and awards the job to the rule's pick (a bid named must be it): the price \
         moves to escrow",
        || axum::routing::post(award),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex(JOB)])
    .body(doc::optional_json_body::<AwardRequest>()),
    Route::post(
        "/jobs/{id}/deliver",
        "The node (the awarded worker) delivers: a claim, its meter, a signed reading, or a compute result (it runs the \
         task, commits the result and opens the sample the ledger draws)",
        || axum::routing::post(deliver),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED_ABOUT)
    .about(&[doc::hex(JOB)])
    .body(doc::json_body::<DeliverRequest>()),
    Route::post(
        "/jobs/{id}/verdict",
        "The node's verdict: as the poster, accepts the awarded job (done) or withdraws an unawarded one (failed); as the \
         job's recipient, signs its receipt (done); as a juror of a dispute, votes done or failed",
        || axum::routing::post(verdict),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex(JOB)])
    .body(doc::json_body::<VerdictRequest>()),
    Route::post(
        "/jobs/{id}/dispute",
        "The node (the poster or the awarded worker) disputes an awarded job: the ledger draws a jury",
        || axum::routing::post(dispute),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex(JOB)])
    .body(doc::json_body::<DisputeRequest>()),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn posted(request: &str) -> Job {
        build_job(serde_json::from_str(request).unwrap(), "credit").unwrap()
    }

    fn open(job: Job) -> JobState {
        JobState {
            poster: PublicKey([1; 32]),
            job,
            quest: 0,
            status: JobStatus::Open,
            posted_height: 2,
            posted_ms: 3,
            bids: 0,
            bid: Id([0; 32]),
            worker: PublicKey([0; 32]),
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
        }
    }

    /// The answer enums name what the protocol and the ledger name: every kind, resource and status maps to the
    /// name its `name()` gives, and a kind or resource read from a request is the one named.
    #[test]
    fn the_names_shown_are_the_protocols() {
        for kind in JobKind::ALL {
            assert_eq!(serde_json::to_value(JobKindName::from(kind)).unwrap(), kind.name());
            assert_eq!(JobKind::from(serde_json::from_value::<JobKindName>(kind.name().into()).unwrap()), kind);
        }
        for resource in Resource::ALL {
            assert_eq!(serde_json::to_value(ResourceName::from(resource)).unwrap(), resource.name());
            let read: ResourceName = serde_json::from_value(resource.name().into()).unwrap();
            assert_eq!(Resource::from(read), resource);
        }
        // `From<JobStatus>` matches every status: one the ledger adds must be named here before this compiles.
        for status in [
            JobStatus::Open,
            JobStatus::Awarded,
            JobStatus::Disputed,
            JobStatus::Done,
            JobStatus::Failed,
            JobStatus::Closed,
        ] {
            assert_eq!(serde_json::to_value(JobStatusName::from(status)).unwrap(), status.name());
        }
        for rule in [AwardRule::LowestPrice, AwardRule::BestScore, AwardRule::FirstQualified] {
            assert_eq!(AwardRule::from(RuleName::from(rule)), rule);
        }
        for outcome in [Outcome::Done, Outcome::Failed] {
            let name = if outcome == Outcome::Done { OutcomeName::Done } else { OutcomeName::Failed };
            assert_eq!(Outcome::from(name), outcome);
        }
    }

    /// A word a request field does not know is refused by its enum, naming the words it takes.
    #[test]
    fn an_unknown_word_is_refused_with_the_words_known() {
        let refused = serde_json::from_str::<JobRequest>(r#"{"kind": "juggling", "title": "Do", "reward": "1"}"#)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("unknown variant `juggling`") && refused.contains("`maintenance`"), "{refused}");
        let refused = serde_json::from_str::<DeliverRequest>(r#"{"proof": "photo"}"#).unwrap_err().to_string();
        assert!(refused.contains("`claim`, `meter`, `compute`, `reading`"), "{refused}");
        let job = posted(
            r#"{"kind": "compute", "title": "Do", "reward": "1", "rule": "first-qualified",
            "needs": [{"resource": "memory", "quantity": 5, "hours": 2}]}"#,
        );
        assert_eq!(
            (job.kind, job.rule, job.needs.as_slice()[0].resource),
            (JobKind::Compute, AwardRule::FirstQualified, Resource::Memory)
        );
    }

    /// The request schemas carry the protocol's limits, and the answers' names their enums.
    #[test]
    fn the_schemas_carry_the_limits_and_the_names() {
        let mut generator = schemars::generate::SchemaSettings::draft2020_12().for_deserialize().into_generator();
        let job = doc::schema::<JobRequest>(&mut generator).to_value();
        let definitions = generator.take_definitions(true);
        let job = &definitions[job["$ref"].as_str().unwrap().rsplit('/').next().unwrap()]["properties"];
        assert_eq!(job["title"]["maxLength"], JOB_TITLE_BYTES_MAX, "{job:#}");
        assert_eq!(job["text"]["maxLength"], JOB_TEXT_BYTES_MAX);
        assert_eq!(job["skills"]["maxItems"], JOB_SKILLS_MAX);
        assert_eq!(job["skills"]["items"]["maxLength"], SKILL_BYTES_MAX);
        let kinds = serde_json::to_string(&definitions["JobKindName"]).unwrap();
        let statuses = serde_json::to_string(&schemars::schema_for!(JobStatusName)).unwrap();
        for kind in JobKind::ALL {
            assert!(kinds.contains(&format!("\"{}\"", kind.name())), "{kinds}");
        }
        assert!(statuses.contains("\"disputed\"") && statuses.contains("\"closed\""), "{statuses}");
        let names = JobKind::ALL.map(JobKind::name).join("|");
        assert_eq!(kinds_pattern(), format!("^({names})(,({names}))*$"));
    }

    /// A job's evidence as the API shows it is the request for the same evidence.
    #[test]
    fn evidence_shown_is_the_request_for_it() {
        let seed = Id([7; 32]).to_hex();
        for (kind, evidence) in [
            ("delivery", r#"{"kind": "acceptance"}"#.to_owned()),
            ("storage", r#"{"kind": "energy", "wh": 40}"#.to_owned()),
            (
                "compute",
                format!(r#"{{"kind": "compute", "units": 64, "rounds": 256, "samples": 4, "seed": "{seed}"}}"#),
            ),
            ("maintenance", format!(r#"{{"kind": "healthy", "asset": "{seed}"}}"#)),
            ("delivery", format!(r#"{{"kind": "receipt", "recipient": "{seed}"}}"#)),
        ] {
            let job = posted(&format!(r#"{{"kind": "{kind}", "title": "Do", "reward": "1", "evidence": {evidence}}}"#));
            let shown = serde_json::to_value(evidence_view(&job.evidence)).unwrap();
            assert_eq!(shown, serde_json::from_str::<Value>(&evidence).unwrap());
        }
    }

    /// A job answers every field, null where there is nothing yet (no award, meter, result or guild), and a
    /// listed job or a job with its bids carries its own fields beside the job's.
    #[test]
    fn a_job_answers_its_fields_with_nulls_and_its_extras_beside_them() {
        let id = Id([21; 32]);
        let state = open(posted(r#"{"kind": "delivery", "title": "Carry", "reward": "10", "rule": "best-score"}"#));
        let listed = serde_json::to_value(ListedJob { job: job_view(&id, &state), escrow: 9_000 }).unwrap();
        for field in ["award", "meter", "result", "guild"] {
            assert_eq!(listed.get(field), Some(&Value::Null), "{field}: {listed}");
        }
        assert_eq!(
            (&listed["id"], &listed["escrow"], &listed["reward"]),
            (&id.to_hex().into(), &9_000.into(), &10_000.into())
        );
        assert_eq!(
            (&listed["rule"], &listed["status"], &listed["quest"]),
            (&"best-score".into(), &"open".into(), &false.into())
        );
        let detail = serde_json::to_value(JobDetail {
            job: job_view(&id, &state),
            bids: Vec::new(),
            winner: None,
            escrow_account: job_escrow_account(&id).to_hex(),
            escrow: 0,
            votes: vec![JuryVote { juror: PublicKey([2; 32]).to_hex(), outcome: OutcomeName::Failed }],
            height: 99,
        })
        .unwrap();
        assert_eq!(detail.get("winner"), Some(&Value::Null));
        assert_eq!(
            (&detail["height"], &detail["posted_height"], &detail["votes"][0]["outcome"]),
            (&99.into(), &2.into(), &"failed".into())
        );
    }
}
