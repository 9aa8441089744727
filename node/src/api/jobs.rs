//! The job marketplace on the API: open jobs, bids, awards, escrow and disputes from the ledger (`GET /jobs`,
//! `GET /jobs/{id}`), jobs that match a worker (`GET /jobs/match`), who announces jobs of a kind near a cell in the
//! DHT (`GET /jobs/providers`); and the node's own postings, bids, awards, deliveries, verdicts and disputes, signed
//! with its key and submitted to the ledger.

use ::ledger::reads::*;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::message::{
    Award, AwardRule, Bid, ComputeTask, Deliver, Dispute, Empty, Evidence, Job, JobKind, Need, Opening, Outcome, Proof,
    Resource, Verdict,
};
use protocol::types::{BoundedVec, Cell, MeterId, Skill, Text, TokenId};
use protocol::{Body, Id, PublicKey};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::{Authorized, Context, error, no_ledger, parse, sign_now, submit_bytes};
use crate::clock::now_ms;
use ::ledger::state::{BidState, JobState, JobStatus, job_escrow_account};

/// Most jobs one `GET /jobs` lists.
const JOBS_LISTED_MAX: usize = 500;

fn rule_name(rule: AwardRule) -> &'static str {
    match rule {
        AwardRule::LowestPrice => "lowest-price",
        AwardRule::BestScore => "best-score",
        AwardRule::FirstQualified => "first-qualified",
    }
}

fn evidence_json(evidence: &Evidence) -> Value {
    match evidence {
        Evidence::Acceptance(_) => json!({ "kind": "acceptance" }),
        Evidence::Energy(wh) => json!({ "kind": "energy", "wh": wh }),
        Evidence::Compute(task) => json!({
            "kind": "compute", "seed": task.seed.to_hex(), "units": task.units, "rounds": task.rounds,
            "samples": task.samples,
        }),
        Evidence::Healthy(asset) => json!({ "kind": "healthy", "asset": asset.to_hex() }),
        Evidence::Receipt(recipient) => json!({ "kind": "receipt", "recipient": recipient.to_hex() }),
    }
}

fn bid_json(job: &Job, bid: &BidState) -> Value {
    json!({
        "id": bid.id.to_hex(),
        "worker": bid.worker.to_hex(),
        "seq": bid.seq,
        "price": bid.bid.price,
        "collateral": bid.bid.collateral,
        "start_ms": bid.bid.start_ms,
        "cell": bid.bid.cell.as_str(),
        "distance_m": bid.bid.distance_m,
        "score_ppm": bid.score_ppm,
        "cost": u64::try_from(::ledger::state::bid_cost(job, bid)).unwrap_or(u64::MAX),
    })
}

/// A job as the API shows it.
pub fn job_json(id: &Id, state: &JobState) -> Value {
    let job = &state.job;
    let awarded = state.status != JobStatus::Open && state.bid != Id([0; 32]);
    json!({
        "id": id.to_hex(),
        "poster": state.poster.to_hex(),
        "quest": state.quest == 1,
        "status": state.status.name(),
        "kind": job.kind.name(),
        "title": job.title.as_str(),
        "text": job.text.as_str(),
        "needs": job.needs.as_slice().iter().map(|need| json!({
            "resource": need.resource.to_string(), "quantity": need.quantity, "hours": need.hours,
        })).collect::<Vec<_>>(),
        "skills": job.skills.as_slice().iter().map(Skill::as_str).collect::<Vec<_>>(),
        "cell": job.cell.as_str(),
        "radius_m": job.radius_m,
        "token": job.token.as_str(),
        "reward": job.reward,
        "collateral": job.collateral,
        "slash_ppm": job.slash_ppm,
        "tier": job.tier,
        "guild": job.guild.as_slice().first().map(PublicKey::to_hex),
        "rule": rule_name(job.rule),
        "per_km": job.per_km,
        "evidence": evidence_json(&job.evidence),
        "bids_until_ms": job.bids_until_ms,
        "deadline_ms": job.deadline_ms,
        "posted_height": state.posted_height,
        "posted_ms": state.posted_ms,
        "bid_count": state.bids,
        "award": awarded.then(|| json!({
            "bid": state.bid.to_hex(),
            "worker": state.worker.to_hex(),
            "price": state.price,
            "collateral": state.collateral,
            "height": state.awarded_height,
            "time_ms": state.awarded_ms,
        })),
        "meter": (!state.meter.is_empty()).then(|| state.meter.clone()),
        "result": (state.root != Id([0; 32])).then(|| state.root.to_hex()),
        "result_height": state.root_height,
        "result_ms": state.root_ms,
        "jurors": state.jurors.iter().map(PublicKey::to_hex).collect::<Vec<_>>(),
        "jury_until_ms": state.jury_until_ms,
        "votes_done": state.votes_done,
        "votes_failed": state.votes_failed,
        "closed_ms": state.closed_ms,
        "slashed": state.slashed,
        "reason": state.reason,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// open, awarded, disputed, done, failed, closed; default all.
    status: Option<String>,
    kind: Option<String>,
    /// Jobs whose cell starts with this (or is the world).
    cell: Option<String>,
}

/// `GET /jobs`: the jobs on the ledger, newest first, with their escrow.
pub async fn list(State(context): State<Context>, Query(query): Query<ListQuery>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let kind = match query.kind.as_deref().map(str::parse::<JobKind>).transpose() {
        Ok(kind) => kind,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    let read = ledger
        .query(move |state| {
            let height = state.height();
            let mut jobs: Vec<(Id, JobState)> = state
                .jobs()
                .filter(|(_, job)| query.status.as_deref().is_none_or(|status| job.status.name() == status))
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
            let listed: Vec<Value> = jobs
                .iter()
                .map(|(id, job)| {
                    let mut value = job_json(id, job);
                    value["escrow"] = json!(state.balance(&job_escrow_account(id), &job.job.token));
                    value
                })
                .collect();
            json!({ "height": height, "jobs": listed })
        })
        .await;
    match read {
        Ok(answer) => Json(answer).into_response(),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
}

fn parse_id(text: &str) -> Result<Id, Box<Response>> {
    Id::from_hex(text).map_err(|_| Box::new(error(StatusCode::BAD_REQUEST, "job: 64 hex digits")))
}

/// `GET /jobs/{id}`: a job with its bids (and what each costs under the rule), its award, escrow and jury.
pub async fn show(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let read = ledger
        .query(move |state| {
            let height = state.height();
            let job = state.job(&id)?;
            let mut value = job_json(&id, &job);
            let bids = state.job_bids(&id);
            value["bids"] = json!(bids.iter().map(|bid| bid_json(&job.job, bid)).collect::<Vec<_>>());
            value["winner"] = json!(state.job_winner(&id).map(|bid| bid.id.to_hex()));
            value["escrow_account"] = json!(job_escrow_account(&id).to_hex());
            value["escrow"] = json!(state.balance(&job_escrow_account(&id), &job.job.token));
            value["votes"] = json!(
                state
                    .jury_votes(&id)
                    .iter()
                    .map(|(juror, outcome)| json!({
                        "juror": juror.to_hex(),
                        "outcome": if *outcome == Outcome::Done as u8 { "done" } else { "failed" },
                    }))
                    .collect::<Vec<_>>()
            );
            value["height"] = json!(height);
            Some(value)
        })
        .await;
    match read {
        Ok(Some(answer)) => Json(answer).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {} is on the ledger", id.to_hex())),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchQuery {
    /// Comma-separated kinds the worker takes; default all.
    kinds: Option<String>,
    /// Comma-separated skills the worker has.
    skills: Option<String>,
    /// Where the worker is.
    cell: Option<String>,
    /// How far it travels, m; default no limit.
    radius_m: Option<u64>,
    limit: Option<usize>,
}

/// `GET /jobs/match`: the open jobs in the node's index a worker could take, best paid first.
pub async fn matching(State(context): State<Context>, Query(query): Query<MatchQuery>) -> Response {
    let kinds = match query
        .kinds
        .as_deref()
        .map(|kinds| kinds.split(',').map(str::parse::<JobKind>).collect::<Result<Vec<_>, _>>())
        .transpose()
    {
        Ok(kinds) => kinds.unwrap_or_else(|| JobKind::ALL.to_vec()),
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    let skills = match query
        .skills
        .as_deref()
        .map(|skills| skills.split(',').map(Skill::new).collect::<Result<Vec<_>, _>>())
        .transpose()
    {
        Ok(skills) => skills.unwrap_or_default(),
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("skills: {problem}")),
    };
    let cell = match Cell::new(query.cell.clone().unwrap_or_default()) {
        Ok(cell) => cell,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("cell: {problem}")),
    };
    let profile = ::market::jobs::Profile { kinds, skills, cell, radius_m: query.radius_m.unwrap_or(0) };
    let limit = query.limit.unwrap_or(50).min(JOBS_LISTED_MAX);
    let found = context.jobs.matching(&profile, now_ms(), limit);
    Json(json!({
        "indexed": context.jobs.len(),
        "jobs": found.iter().map(|open| json!({
            "id": open.id.to_hex(),
            "poster": open.poster.to_hex(),
            "kind": open.job.kind.name(),
            "title": open.job.title.as_str(),
            "cell": open.job.cell.as_str(),
            "token": open.job.token.as_str(),
            "reward": open.job.reward,
            "bids_until_ms": open.job.bids_until_ms,
            "distance_m": open.distance_m,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersQuery {
    kind: String,
    #[serde(default)]
    cell: String,
}

/// `GET /jobs/providers`: peers that announce open jobs of a kind near a cell in the DHT.
pub async fn providers(State(context): State<Context>, Query(query): Query<ProvidersQuery>) -> Response {
    let (kind, cell) = match (query.kind.parse::<JobKind>(), Cell::new(query.cell.clone())) {
        (Ok(kind), Ok(cell)) => (kind, cell),
        (Err(problem), _) => return error(StatusCode::BAD_REQUEST, problem),
        (_, Err(problem)) => return error(StatusCode::BAD_REQUEST, format!("cell: {problem}")),
    };
    let key = ::market::jobs::dht_key(kind, cell.as_str());
    match context.network.find_providers(key).await {
        Ok(peers) => Json(json!({
            "kind": kind.name(),
            "cell": ::market::jobs::dht_cell(cell.as_str()),
            "key": key.to_hex(),
            "providers": peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedRequest {
    resource: String,
    quantity: u64,
    hours: u32,
}

/// What completes the job, as posted: `{"kind": "compute", "units": 64, "rounds": 256, "samples": 4}`...
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EvidenceRequest {
    Acceptance,
    Energy { wh: u64 },
    Compute { units: u32, rounds: u32, samples: u32, seed: Option<String> },
    Healthy { asset: String },
    Receipt { recipient: String },
}

/// A job posted to `POST /jobs` (or proposed as a quest).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    kind: String,
    title: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    needs: Vec<NeedRequest>,
    #[serde(default)]
    skills: Vec<String>,
    #[serde(default)]
    cell: String,
    #[serde(default)]
    radius_m: u32,
    /// Default the ledger's fee token.
    token: Option<String>,
    /// Decimal, e.g. "24" or "2.5".
    reward: String,
    #[serde(default)]
    collateral: Option<String>,
    #[serde(default)]
    slash_ppm: u32,
    #[serde(default)]
    tier: u32,
    guild: Option<String>,
    /// lowest-price (default), best-score, first-qualified.
    rule: Option<String>,
    /// For best-score: what a km of route counts as, decimal.
    per_km: Option<String>,
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
    let kind = request.kind.parse::<JobKind>()?;
    let rule = match request.rule.as_deref().unwrap_or("lowest-price") {
        "lowest-price" => AwardRule::LowestPrice,
        "best-score" => AwardRule::BestScore,
        "first-qualified" => AwardRule::FirstQualified,
        other => return Err(format!("rule {other:?} is not lowest-price, best-score or first-qualified")),
    };
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
        .map(|need| {
            let resource = match need.resource.as_str() {
                "energy" => Resource::Energy,
                "compute" => Resource::Compute,
                "memory" => Resource::Memory,
                "bandwidth" => Resource::Bandwidth,
                other => return Err(format!("need: resource {other:?} is not energy, compute, memory or bandwidth")),
            };
            Ok(Need { resource, quantity: need.quantity, hours: need.hours })
        })
        .collect::<Result<Vec<_>, String>>()?;
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

/// Signs and submits a job message; the entry's lifetime covers the time it may wait for a block.
async fn submit(context: &Context, body: Body) -> Response {
    // The ledger gossips it (postings and bids on the jobs topic, which job indexes read).
    let envelope = match sign_now(context, body, 600_000) {
        Ok(envelope) => envelope,
        Err(response) => return *response,
    };
    let response = submit_bytes(context, envelope.to_bytes()).await;
    if response.status().is_success()
        && let Body::Job(job) = &envelope.body
    {
        context.jobs.insert(envelope.id(), envelope.author, job.clone(), now_ms());
        crate::jobs::announce(&context.network, job);
    }
    response
}

/// `POST /jobs`: a job posted by the node.
pub async fn post(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let request: JobRequest = match parse(&body, "a job") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    match build_job(request, &ledger.genesis().params.fee_token) {
        Ok(job) => submit(&context, Body::Job(job)).await,
        Err(problem) => error(StatusCode::BAD_REQUEST, problem),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BidRequest {
    /// Decimal.
    price: String,
    /// Decimal; default what the job asks.
    collateral: Option<String>,
    /// Default now.
    start_ms: Option<u64>,
    #[serde(default)]
    cell: String,
    #[serde(default)]
    distance_m: u32,
}

async fn read_job(context: &Context, id: Id) -> Result<JobState, Box<Response>> {
    let Some(ledger) = context.ledger.as_ref() else { return Err(Box::new(no_ledger())) };
    match ledger.query(move |state| state.job(&id)).await {
        Ok(Some(job)) => Ok(job),
        Ok(None) => Err(Box::new(error(StatusCode::NOT_FOUND, format!("no job {} is on the ledger", id.to_hex())))),
        Err(problem) => Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()))),
    }
}

/// `POST /jobs/{id}/bids`: the node bids on a job.
pub async fn bid(State(context): State<Context>, UrlPath(id): UrlPath<String>, _: Authorized, body: Bytes) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let request: BidRequest = match parse(&body, "a bid") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let job = match read_job(&context, id).await {
        Ok(job) => job,
        Err(response) => return *response,
    };
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
    match built {
        Ok(bid) => submit(&context, Body::Bid(bid)).await,
        Err(problem) => error(StatusCode::BAD_REQUEST, problem),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AwardRequest {
    /// Default: the bid the job's rule picks.
    bid: Option<String>,
}

/// `POST /jobs/{id}/award`: the poster closes bidding and awards (the rule's pick unless a bid is named; the
/// ledger refuses any other).
pub async fn award(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let request: AwardRequest = if body.is_empty() {
        AwardRequest::default()
    } else {
        match parse(&body, "an award") {
            Ok(request) => request,
            Err(response) => return *response,
        }
    };
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let bid = match request.bid {
        Some(bid) => match Id::from_hex(&bid) {
            Ok(bid) => bid,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bid: 64 hex digits"),
        },
        None => match ledger.query(move |state| state.job_winner(&id)).await {
            Ok(Some(winner)) => winner.id,
            Ok(None) => return error(StatusCode::CONFLICT, "the job has no bid to award"),
            Err(problem) => return error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
        },
    };
    submit(&context, Body::Award(Award { job: id, bid })).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverRequest {
    /// claim, meter, compute or reading.
    proof: String,
    /// For `meter`: the node's meter whose export is the evidence.
    meter: Option<String>,
    /// For `reading`: the id of a reading of the maintained asset's meter on the ledger... as its signed envelope,
    /// hex.
    reading: Option<String>,
}

/// `POST /jobs/{id}/deliver`: the awarded worker (this node) delivers. `compute` runs the job's task here,
/// commits the result's root, and once the ledger has fixed the sample, opens the sampled units.
pub async fn deliver(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let request: DeliverRequest = match parse(&body, "a delivery") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let proof = match request.proof.as_str() {
        "claim" => Proof::Claim(Empty),
        "meter" => match MeterId::new(request.meter.clone().unwrap_or_default()) {
            Ok(meter) => Proof::Meter(meter),
            Err(problem) => return error(StatusCode::BAD_REQUEST, format!("meter: {problem}")),
        },
        "reading" => {
            let parsed = request
                .reading
                .as_deref()
                .ok_or_else(|| "reading: hex of a signed reading".to_owned())
                .and_then(|text| hex::decode(text).map_err(|_| "reading: hex".to_owned()))
                .and_then(|bytes| {
                    protocol::Envelope::from_bytes(&bytes).map_err(|problem| format!("reading: {problem}"))
                });
            match parsed {
                Ok(envelope) => Proof::Reading(Box::new(envelope)),
                Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
            }
        }
        "compute" => {
            let job = match read_job(&context, id).await {
                Ok(job) => job,
                Err(response) => return *response,
            };
            let Evidence::Compute(task) = job.job.evidence else {
                return error(StatusCode::BAD_REQUEST, "the job is not a compute job");
            };
            let levels = match tokio::task::spawn_blocking(move || protocol::message::run_task(&task)).await {
                Ok(levels) => levels,
                Err(problem) => return error(StatusCode::INTERNAL_SERVER_ERROR, problem.to_string()),
            };
            let root = levels.last().and_then(|level| level.first()).copied().unwrap_or(Id([0; 32]));
            let response = submit(&context, Body::Deliver(Deliver { job: id, proof: Proof::Result(root) })).await;
            if response.status().is_success() {
                tokio::spawn(open_sample(context.clone(), id, task, root, levels));
            }
            return response;
        }
        other => {
            return error(StatusCode::BAD_REQUEST, format!("proof {other:?} is not claim, meter, compute or reading"));
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
        let response = submit(&context, Body::Deliver(Deliver { job: id, proof: Proof::Openings(openings) })).await;
        info!(job = %id, status = %response.status(), "opened the sampled units of a compute result");
        return;
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictRequest {
    /// done or failed.
    outcome: String,
}

/// `POST /jobs/{id}/verdict`: the poster accepts (`done`) or withdraws an unawarded job (`failed`); a recipient
/// signs its receipt; a juror votes.
pub async fn verdict(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let request: VerdictRequest = match parse(&body, "a verdict") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let outcome = match request.outcome.as_str() {
        "done" => Outcome::Done,
        "failed" => Outcome::Failed,
        other => return error(StatusCode::BAD_REQUEST, format!("outcome {other:?} is not done or failed")),
    };
    submit(&context, Body::Verdict(Verdict { job: id, outcome })).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeRequest {
    text: String,
}

/// `POST /jobs/{id}/dispute`: the poster or the worker asks for a jury.
pub async fn dispute(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let request: DisputeRequest = match parse(&body, "a dispute") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    match Text::new(request.text) {
        Ok(text) => submit(&context, Body::Dispute(Dispute { job: id, text })).await,
        Err(problem) => error(StatusCode::BAD_REQUEST, format!("text: {problem}")),
    }
}
