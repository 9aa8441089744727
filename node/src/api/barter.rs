//! Barter escrow over HTTP (PROTOCOL.md §10, *barter escrow*): a cycle's legs as the ledger holds them, the
//! receiver's receipt, a juror's vote and a party's dispute on a leg.

use ::ledger::reads::*;
use ::ledger::state::BarterLegState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use protocol::message::Dispute;
use protocol::types::Text;
use protocol::{Body, Id};
use schemars::JsonSchema;
use serde::Serialize;

use super::jobs::{DisputeRequest, VerdictRequest};
use super::{Accepted, Answer, ApiError, Authorized, Context, Route, SUBMITTED, Submitted, Taken, doc, parse};

/// A barter leg on the ledger: what its giver owes its receiver, the collateral locked for it, and where it stands.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Leg {
    /// The leg's id (what receipts, votes and disputes name), 64 hex digits.
    id: String,
    /// The barter cycle's id and the leg's place in it.
    cycle: String,
    index: u8,
    giver: String,
    receiver: String,
    /// energy, compute, memory or bandwidth.
    resource: String,
    /// In the resource's unit (Wh for energy).
    quantity: u64,
    /// An energy leg's 15-minute delivery interval start, Unix seconds; 0 for the others.
    delivery_start_s: u64,
    /// The collateral, milli-units of `token` (the fee token), on the leg's escrow account until it ends.
    token: String,
    collateral: u64,
    /// pending, disputed, released, penalised or returned.
    status: String,
    /// When it is next due (Unix ms): the end of an energy leg's interval and grace, of the receipt window, or of
    /// the jury's period.
    due_ms: u64,
    /// The jury of a disputed leg.
    jurors: Vec<String>,
    votes_done: u32,
    votes_failed: u32,
    /// What the giver fell short by (Wh of energy; a leg found not done: its quantity), and the part of the
    /// collateral the receiver got.
    shortfall: u64,
    penalty: u64,
    /// When it ended, Unix ms; 0 while pending or disputed.
    closed_ms: u64,
}

impl Leg {
    fn of(id: Id, leg: BarterLegState) -> Leg {
        Leg {
            id: id.to_hex(),
            cycle: leg.cycle.to_hex(),
            index: leg.index,
            giver: leg.giver.to_hex(),
            receiver: leg.receiver.to_hex(),
            resource: leg.resource.name().to_owned(),
            quantity: leg.quantity,
            delivery_start_s: leg.delivery_start_s,
            token: leg.token.as_str().to_owned(),
            collateral: leg.collateral,
            status: leg.status.name().to_owned(),
            due_ms: leg.due_ms,
            jurors: leg.jurors.iter().map(|juror| juror.to_hex()).collect(),
            votes_done: leg.votes_done,
            votes_failed: leg.votes_failed,
            shortfall: leg.shortfall,
            penalty: leg.penalty,
            closed_ms: leg.closed_ms,
        }
    }
}

/// A barter cycle's legs, in order.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Cycle {
    legs: Vec<Leg>,
}

fn parse_id(text: &str, what: &str) -> Result<Id, ApiError> {
    Id::from_hex(text).map_err(|_| ApiError::bad_request(format!("{what}: 64 hex digits")))
}

/// `GET /barter/cycles/{id}`: the legs of a barter cycle on the ledger (kept 30 days after they end).
async fn cycle(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<Cycle> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = parse_id(&id, "cycle")?;
    let legs = ledger.query(move |state| state.barter_legs_of_cycle(&id)).await?;
    if legs.is_empty() {
        return Err(ApiError::not_found(format!("no barter cycle {} is on the ledger", id.to_hex())));
    }
    Ok(Json(Cycle { legs: legs.into_iter().map(|(id, leg)| Leg::of(id, leg)).collect() }))
}

/// `GET /barter/legs/{id}`: one barter leg.
async fn leg(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<Leg> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = parse_id(&id, "leg")?;
    let leg = ledger.query(move |state| state.barter_leg(&id)).await?;
    let leg = leg.ok_or_else(|| ApiError::not_found(format!("no barter leg {} is on the ledger", id.to_hex())))?;
    Ok(Json(Leg::of(id, leg)))
}

/// `POST /barter/legs/{id}/verdict`: as the leg's receiver, the node signs its receipt (`done`); as a juror of its
/// dispute, it votes.
async fn verdict(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    super::jobs::submit_verdict(&context, parse_id(&id, "leg")?, &body).await
}

/// `POST /barter/legs/{id}/dispute`: as the leg's giver or receiver, the node asks for a jury.
async fn dispute(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let id = parse_id(&id, "leg")?;
    let request: DisputeRequest = parse(&body, "a dispute")?;
    let text = Text::new(request.text()).map_err(|problem| ApiError::bad_request(format!("text: {problem}")))?;
    let id = super::submit_signed(&context, Body::Dispute(Dispute { job: id, text })).await?;
    Ok(Accepted(Submitted { id: id.to_hex() }))
}

const CYCLE: &str = "The barter cycle's id (its entry's), 64 hex digits";
const LEG: &str =
    "The barter leg's id (`blake3(\"kos/v1/barter-leg\" || 0x00 || cycle id || u8(index))`), 64 hex digits";

/// The barter escrow's routes.
pub const ROUTES: &[Route] = &[
    Route::get(
        "/barter/cycles/{id}",
        "A barter cycle's legs on the ledger: giver, receiver, what is given, the collateral locked and where each \
         leg stands",
        || axum::routing::get(cycle),
        doc::json::<Cycle>(),
    )
    .statuses(&[200, 400, 404, 503])
    .about(&[doc::hex(CYCLE)]),
    Route::get("/barter/legs/{id}", "One barter leg on the ledger", || axum::routing::get(leg), doc::json::<Leg>())
        .statuses(&[200, 400, 404, 503])
        .about(&[doc::hex(LEG)]),
    Route::post(
        "/barter/legs/{id}/verdict",
        "The node's word on a compute, memory or bandwidth leg: as its receiver, its receipt (done), which releases \
         the giver's collateral; as a juror of its dispute, a vote (done or failed)",
        || axum::routing::post(verdict),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex(LEG)])
    .body(doc::json_body::<VerdictRequest>()),
    Route::post(
        "/barter/legs/{id}/dispute",
        "The node (the leg's giver or receiver) disputes a compute, memory or bandwidth leg within its receipt window: \
         the ledger draws a jury",
        || axum::routing::post(dispute),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex(LEG)])
    .body(doc::json_body::<DisputeRequest>()),
];
