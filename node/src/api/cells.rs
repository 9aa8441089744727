//! Cells over HTTP (PROTOCOL.md §10, *cells*): a cell's feeder and how its recent intervals closed (balanced,
//! unbalanced, unchecked), the cases a mismatch or implausible generation opened, and a juror's vote on one.

use ::ledger::reads::*;
use ::ledger::state::{CellCase, CellInterval, CellMember};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use protocol::Id;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::jobs::VerdictRequest;
use super::{Answer, ApiError, Authorized, Context, Route, SUBMITTED, Submitted, Taken, doc};

/// Most intervals `GET /cells/{cell}` shows.
const CELL_INTERVALS_MAX: u64 = 192;
/// Most cases `GET /cases` lists.
const CASES_MAX: usize = 500;

/// One member asset's readings in a cell's interval.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MemberView {
    asset: String,
    author: String,
    import_wh: u64,
    export_wh: u64,
    generation_wh: u64,
    /// Intervals in a row (this one the last) in which its generation per kW was implausible.
    streak: u64,
    /// Export whose mission-token reward waits on plausibility, Wh.
    withheld_wh: u64,
    /// The trust level of its readings (PROTOCOL.md §10, *trust levels*): node, device, balanced (the feeder
    /// confirmed them) or device+balanced.
    trust: &'static str,
}

impl MemberView {
    fn of(asset: Id, member: CellMember) -> MemberView {
        MemberView {
            asset: asset.to_hex(),
            author: member.author.to_hex(),
            import_wh: member.import_wh,
            export_wh: member.export_wh,
            generation_wh: member.generation_wh,
            streak: member.streak,
            withheld_wh: member.withheld_wh,
            trust: member.trust().name(),
        }
    }
}

/// One interval of a cell.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IntervalView {
    interval_start_s: u64,
    /// open (readings coming in), balanced (the feeder's reading matched the members'), unbalanced (a case
    /// decides), unchecked (no feeder reading).
    status: String,
    /// The feeder asset whose reading this is.
    feeder: Option<String>,
    feeder_import_wh: u64,
    feeder_export_wh: u64,
    /// Σ over the members.
    members_import_wh: u64,
    members_export_wh: u64,
    /// The members' claimed net export less the feeder's, Wh.
    gap_wh: i64,
    /// When it closes or closed, Unix ms.
    due_ms: u64,
    members: Vec<MemberView>,
}

impl IntervalView {
    fn of(start_s: u64, interval: CellInterval, members: Vec<(Id, CellMember)>) -> IntervalView {
        let members_import_wh = members.iter().map(|(_, member)| member.import_wh).fold(0u64, u64::saturating_add);
        let members_export_wh = members.iter().map(|(_, member)| member.export_wh).fold(0u64, u64::saturating_add);
        let gap = (i128::from(members_export_wh) - i128::from(members_import_wh))
            - (i128::from(interval.feeder_export_wh) - i128::from(interval.feeder_import_wh));
        IntervalView {
            interval_start_s: start_s,
            status: interval.status.name().to_owned(),
            feeder: interval.feeder.first().map(Id::to_hex),
            feeder_import_wh: interval.feeder_import_wh,
            feeder_export_wh: interval.feeder_export_wh,
            members_import_wh,
            members_export_wh,
            gap_wh: i64::try_from(gap).unwrap_or(if gap < 0 { i64::MIN } else { i64::MAX }),
            due_ms: interval.due_ms,
            members: members.into_iter().map(|(asset, member)| MemberView::of(asset, member)).collect(),
        }
    }
}

/// A cell: its feeder, its recent intervals and its cases.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CellView {
    cell: String,
    /// The cell's feeder asset (none registered: null).
    feeder: Option<String>,
    interval_s: u32,
    /// Newest first.
    intervals: Vec<IntervalView>,
    /// The cell's cases the ledger keeps (open, and decided ones for 30 days), newest first.
    cases: Vec<CaseView>,
}

/// Which intervals of a cell.
#[derive(Debug, Deserialize, JsonSchema)]
struct CellQuery {
    /// The intervals' length, seconds (default 900).
    interval_s: Option<u32>,
    /// How many of the newest (default 96, at most 192).
    count: Option<u64>,
}

/// A case on a cell's readings.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CaseView {
    /// The case's id (what jurors' verdicts name), 64 hex digits.
    id: String,
    /// feeder (a cell's interval whose members' readings did not add up to its feeder's) or implausible (an asset
    /// whose generation per kW was far above its cell's for several intervals).
    kind: String,
    cell: String,
    interval_start_s: u64,
    interval_s: u32,
    /// The feeder asset, or the implausible asset.
    asset: String,
    /// A feeder case: the members' import and export, the feeder's import and export (Wh). An implausible case:
    /// the asset's yield and the cell's median (Wh per kW), 0, 0.
    flows: [u64; 4],
    /// A feeder case: the gap allowed, Wh; an implausible case: the yield above which an interval is implausible.
    tolerance: u64,
    /// A feeder case: the members' claimed net export less the feeder's, Wh.
    gap_wh: i64,
    /// The accounts named (largest unexplained claims first).
    named: Vec<String>,
    /// Export (Wh) whose reward waits on the case, by account.
    withheld: Vec<(String, u64)>,
    /// Energy trades held until the case is decided.
    held: u64,
    jurors: Vec<String>,
    votes_upheld: u32,
    votes_refuted: u32,
    /// The end of the jury's period, Unix ms.
    due_ms: u64,
    /// open, upheld (the readings stand) or refuted (the named accounts' readings are not believed).
    status: String,
    opened_ms: u64,
    closed_ms: u64,
}

impl CaseView {
    fn of(id: Id, case: CellCase) -> CaseView {
        let gap = case.gap_wh();
        CaseView {
            id: id.to_hex(),
            kind: match case.kind {
                ::ledger::state::CaseKind::Feeder => "feeder",
                ::ledger::state::CaseKind::Implausible => "implausible",
            }
            .to_owned(),
            gap_wh: match case.kind {
                ::ledger::state::CaseKind::Feeder => {
                    i64::try_from(gap).unwrap_or(if gap < 0 { i64::MIN } else { i64::MAX })
                }
                ::ledger::state::CaseKind::Implausible => 0,
            },
            cell: case.cell,
            interval_start_s: case.interval_start_s,
            interval_s: case.interval_s,
            asset: case.asset.to_hex(),
            flows: case.flows,
            tolerance: case.tolerance,
            named: case.named.iter().map(|account| account.to_hex()).collect(),
            withheld: case.withheld.iter().map(|(account, wh)| (account.to_hex(), *wh)).collect(),
            held: case.held,
            jurors: case.jurors.iter().map(|juror| juror.to_hex()).collect(),
            votes_upheld: case.votes_upheld,
            votes_refuted: case.votes_refuted,
            due_ms: case.due_ms,
            status: case.status.name().to_owned(),
            opened_ms: case.opened_ms,
            closed_ms: case.closed_ms,
        }
    }
}

/// The cases the ledger keeps.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Cases {
    /// Open ones first, then the newest.
    cases: Vec<CaseView>,
}

fn parse_id(text: &str) -> Result<Id, ApiError> {
    Id::from_hex(text).map_err(|_| ApiError::bad_request("case: 64 hex digits"))
}

fn newest_first(mut cases: Vec<(Id, CellCase)>) -> Vec<CaseView> {
    cases.sort_by(|(a_id, a), (b_id, b)| {
        (a.status != ::ledger::state::CaseStatus::Open)
            .cmp(&(b.status != ::ledger::state::CaseStatus::Open))
            .then(b.opened_ms.cmp(&a.opened_ms))
            .then(a_id.cmp(b_id))
    });
    cases.into_iter().take(CASES_MAX).map(|(id, case)| CaseView::of(id, case)).collect()
}

/// `GET /cells/{cell}`: a cell's feeder, its newest intervals and its cases.
async fn cell(
    State(context): State<Context>,
    UrlPath(cell): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<CellQuery>,
) -> Answer<CellView> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let cell = protocol::types::Cell::new(cell.clone())
        .map_err(|problem| ApiError::bad_request(format!("cell: {problem}")))?
        .as_str()
        .to_owned();
    if cell.is_empty() {
        return Err(ApiError::bad_request("cell: a geohash of 1 to 12 characters"));
    }
    let interval_s = query.interval_s.unwrap_or(900);
    if interval_s == 0 {
        return Err(ApiError::bad_request("interval_s: more than 0"));
    }
    let count = query.count.unwrap_or(96).clamp(1, CELL_INTERVALS_MAX);
    let now_s = crate::clock::now_ms() / 1000;
    let view = ledger
        .query(move |state| {
            let from_s = now_s.saturating_sub(count.saturating_add(2).saturating_mul(u64::from(interval_s)));
            let intervals: Vec<IntervalView> = state
                .cell_intervals(&cell, interval_s, from_s, u64::MAX)
                .into_iter()
                .rev()
                .take(usize::try_from(count).unwrap_or(usize::MAX))
                .map(|(start_s, interval)| {
                    let members = state.cell_members(&cell, start_s, interval_s);
                    IntervalView::of(start_s, interval, members)
                })
                .collect();
            let cases = state.cell_cases().into_iter().filter(|(_, case)| case.cell == cell).collect();
            CellView {
                feeder: state.feeder_of(&cell).map(|feeder| feeder.to_hex()),
                cell,
                interval_s,
                intervals,
                cases: newest_first(cases),
            }
        })
        .await?;
    Ok(Json(view))
}

/// `GET /cases`: every case the ledger keeps.
async fn cases(State(context): State<Context>) -> Answer<Cases> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let cases = ledger.query(|state| state.cell_cases()).await?;
    Ok(Json(Cases { cases: newest_first(cases) }))
}

/// `GET /cases/{id}`: one case.
async fn case(State(context): State<Context>, UrlPath(id): UrlPath<String>) -> Answer<CaseView> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let id = parse_id(&id)?;
    let case = ledger.query(move |state| state.cell_case(&id)).await?;
    let case = case.ok_or_else(|| ApiError::not_found(format!("no case {} is on the ledger", id.to_hex())))?;
    Ok(Json(CaseView::of(id, case)))
}

/// `POST /cases/{id}/verdict`: as a juror of the case, the node votes: `done` upholds the readings, `failed`
/// refutes the named accounts'.
async fn verdict(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    super::jobs::submit_verdict(&context, parse_id(&id)?, &body).await
}

const CELL: &str = "The cell, a geohash of 1 to 12 characters (0-9 b-z without a i l o)";
const CASE: &str = "The case's id, 64 hex digits";

/// The cells' routes.
pub const ROUTES: &[Route] = &[
    Route::get(
        "/cells/{cell}",
        "A cell's feeder and its newest intervals: the feeder's reading against the members' (balanced, unbalanced \
         or unchecked), each member's flows, plausibility streak and withheld reward; and the cell's cases",
        || axum::routing::get(cell),
        doc::json::<CellView>(),
    )
    .statuses(&[200, 400, 503])
    .about(&[doc::cell(CELL)])
    .query(doc::schema::<CellQuery>),
    Route::get(
        "/cases",
        "The cases on cells' readings the ledger keeps (a feeder balance that did not add up, implausible \
         generation): who is named, what is held and withheld, the jury and its votes; open ones first",
        || axum::routing::get(cases),
        doc::json::<Cases>(),
    )
    .statuses(&[200, 503]),
    Route::get("/cases/{id}", "One case", || axum::routing::get(case), doc::json::<CaseView>())
        .statuses(&[200, 400, 404, 503])
        .about(&[doc::hex(CASE)]),
    Route::post(
        "/cases/{id}/verdict",
        "A juror's vote on a case: done upholds the readings (held trades released by them, withheld rewards paid), \
         failed refutes the named accounts' (their held trades count as undelivered, their rewards are forfeit)",
        || axum::routing::post(verdict),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex(CASE)])
    .body(doc::json_body::<VerdictRequest>()),
];
