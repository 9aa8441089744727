//! The commons on the API: the proposals with their votes, the overrides in force, the validator changes
//! scheduled, maintenance alerts and citizens' reports (`GET /governance`); the node's own proposals, votes and
//! reports, signed with its key and submitted to the ledger (`POST /proposals`, `POST /proposals/{id}/votes`,
//! `POST /reports`, `POST /reports/{id}/propose`).

use ::ledger::reads::*;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::message::{
    Action, AddValidator, AdmitMember, Choice, DeviceCap, Empty, Freeze, FuelCap, IslandOrder, Measure, Override,
    Proposal, RemoveValidator, SetParameter, Vote,
};
use protocol::types::{Cell, MeterId, ParameterName, Text};
use protocol::{Body, Id, PublicKey};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Authorized, Context, error, ledger_error, no_ledger, parse, sign_and_submit};

/// A proposal asked of the node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalRequest {
    pub title: String,
    #[serde(default)]
    pub text: String,
    pub voting_period_blocks: u32,
    pub action: ActionRequest,
}

/// A proposal's action as JSON: `{"kind": "set-parameter", "name": "grid_fee_per_kwh", "value": 20}`, ...
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActionRequest {
    Text,
    SetParameter {
        name: String,
        value: u64,
    },
    AddValidator {
        key: String,
        power: u64,
    },
    RemoveValidator {
        key: String,
    },
    AdmitMember {
        key: String,
    },
    IssuanceRule {
        token: String,
        issuers: Vec<String>,
        supply_max: u64,
        export_reward_per_kwh: u64,
    },
    PoolFee {
        pool: String,
        #[serde(default)]
        fee_per_kwh: u64,
        #[serde(default)]
        fee_ppm: u32,
    },
    Override(OverrideRequest),
    Emergency(OverrideRequest),
    /// A job the commons posts if the proposal passes (its bidding must end after the vote).
    Quest {
        job: Box<super::jobs::JobRequest>,
    },
}

/// An override: what it does (`measure`) to whom, for how many blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// `freeze`, `fuel-cap`, `device-cap` or `island`.
    pub measure: String,
    pub account: Option<String>,
    pub per_s: Option<u64>,
    pub meter: Option<String>,
    pub import_w_max: Option<u64>,
    pub export_w_max: Option<u64>,
    pub cell: Option<String>,
    pub duration_blocks: u32,
}

fn key(text: &str, what: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(text).map_err(|_| format!("{what}: {text:?} is not 64 hex digits"))
}

impl OverrideRequest {
    fn to_override(&self) -> Result<Override, String> {
        let account = || key(self.account.as_deref().ok_or("account is needed")?, "account");
        let measure = match self.measure.as_str() {
            "freeze" => Measure::Freeze(Freeze { account: account()? }),
            "fuel-cap" => {
                Measure::FuelCap(FuelCap { account: account()?, per_s: self.per_s.ok_or("per_s is needed")? })
            }
            "device-cap" => Measure::DeviceCap(DeviceCap {
                account: account()?,
                meter: MeterId::new(self.meter.clone().ok_or("meter is needed")?).map_err(|error| error.to_string())?,
                import_w_max: self.import_w_max.ok_or("import_w_max is needed")?,
                export_w_max: self.export_w_max.ok_or("export_w_max is needed")?,
            }),
            "island" => Measure::Island(IslandOrder {
                cell: Cell::new(self.cell.clone().ok_or("cell is needed")?).map_err(|error| error.to_string())?,
            }),
            other => return Err(format!("measure {other:?} is not freeze, fuel-cap, device-cap or island")),
        };
        Ok(Override { measure, duration_blocks: self.duration_blocks })
    }
}

impl ActionRequest {
    /// The action, or what is wrong with the request.
    pub fn to_action(&self) -> Result<Action, String> {
        Ok(match self {
            ActionRequest::Text => Action::Text(Empty),
            ActionRequest::SetParameter { name, value } => Action::SetParameter(SetParameter {
                name: ParameterName::new(name.clone()).map_err(|error| error.to_string())?,
                value: *value,
            }),
            ActionRequest::AddValidator { key: validator, power } => {
                Action::AddValidator(AddValidator { key: key(validator, "key")?, power: *power })
            }
            ActionRequest::RemoveValidator { key: validator } => {
                Action::RemoveValidator(RemoveValidator { key: key(validator, "key")? })
            }
            ActionRequest::AdmitMember { key: member } => Action::AdmitMember(AdmitMember { key: key(member, "key")? }),
            ActionRequest::PoolFee { pool, fee_per_kwh, fee_ppm } => Action::PoolFee(protocol::message::PoolFee {
                pool: pool.parse().map_err(|error| format!("pool: {error}"))?,
                fee_per_kwh: *fee_per_kwh,
                fee_ppm: *fee_ppm,
            }),
            ActionRequest::IssuanceRule { token, issuers, supply_max, export_reward_per_kwh } => {
                let mut keys = issuers.iter().map(|issuer| key(issuer, "issuer")).collect::<Result<Vec<_>, _>>()?;
                keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                keys.dedup();
                Action::IssuanceRule(protocol::message::IssuanceRule {
                    token: protocol::types::TokenId::new(token.clone()).map_err(|error| error.to_string())?,
                    issuers: protocol::types::BoundedVec::new(keys).map_err(|error| error.to_string())?,
                    supply_max: *supply_max,
                    export_reward_per_kwh: *export_reward_per_kwh,
                })
            }
            ActionRequest::Override(request) => Action::Override(request.to_override()?),
            ActionRequest::Emergency(request) => Action::Emergency(request.to_override()?),
            ActionRequest::Quest { job } => Action::Quest(super::jobs::build_job((**job).clone(), "credit")?),
        })
    }
}

/// A measure as JSON, in the request's shape.
pub fn measure_json(measure: &Measure) -> Value {
    match measure {
        Measure::Freeze(freeze) => json!({ "measure": "freeze", "account": freeze.account.to_string() }),
        Measure::FuelCap(cap) => {
            json!({ "measure": "fuel-cap", "account": cap.account.to_string(), "per_s": cap.per_s })
        }
        Measure::DeviceCap(cap) => json!({
            "measure": "device-cap",
            "account": cap.account.to_string(),
            "meter": cap.meter.as_str(),
            "import_w_max": cap.import_w_max,
            "export_w_max": cap.export_w_max,
        }),
        Measure::Island(order) => json!({ "measure": "island", "cell": order.cell.as_str() }),
    }
}

/// An action as JSON, in the request's shape.
pub fn action_json(action: &Action) -> Value {
    let with_kind = |kind: &str, mut value: Value| {
        if let Some(object) = value.as_object_mut() {
            object.insert("kind".into(), json!(kind));
        }
        value
    };
    match action {
        Action::Text(_) => json!({ "kind": "text" }),
        Action::SetParameter(set) => json!({ "kind": "set-parameter", "name": set.name.as_str(), "value": set.value }),
        Action::AddValidator(add) => json!({ "kind": "add-validator", "key": add.key.to_string(), "power": add.power }),
        Action::RemoveValidator(remove) => json!({ "kind": "remove-validator", "key": remove.key.to_string() }),
        Action::AdmitMember(admit) => json!({ "kind": "admit-member", "key": admit.key.to_string() }),
        Action::PoolFee(fee) => json!({
            "kind": "pool-fee",
            "pool": fee.pool.to_string(),
            "fee_per_kwh": fee.fee_per_kwh,
            "fee_ppm": fee.fee_ppm,
        }),
        Action::IssuanceRule(rule) => json!({
            "kind": "issuance-rule",
            "token": rule.token.as_str(),
            "issuers": rule.issuers.as_slice().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "supply_max": rule.supply_max,
            "export_reward_per_kwh": rule.export_reward_per_kwh,
        }),
        Action::Override(measure) | Action::Emergency(measure) => {
            let mut value = measure_json(&measure.measure);
            if let Some(object) = value.as_object_mut() {
                object.insert("duration_blocks".into(), json!(measure.duration_blocks));
            }
            with_kind(if matches!(action, Action::Override(_)) { "override" } else { "emergency" }, value)
        }
        Action::Quest(job) => json!({
            "kind": "quest",
            "job": {
                "kind": job.kind.name(),
                "title": job.title.as_str(),
                "reward": job.reward,
                "token": job.token.as_str(),
                "cell": job.cell.as_str(),
                "bids_until_ms": job.bids_until_ms,
                "deadline_ms": job.deadline_ms,
            },
        }),
    }
}

/// Proposals `GET /governance` lists: those that end last.
pub const PROPOSALS_SHOWN: usize = 200;
/// Ballots it lists per proposal (in voter order; the proposal's totals count them all).
pub const BALLOTS_SHOWN: usize = 1_000;

/// `GET /governance`: the proposals that end last (newest end first) with their ballots, overrides in force,
/// validator changes.
pub async fn overview(State(context): State<Context>) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let read = ledger
        .query(|state| {
            let height = state.height();
            // The proposals that end last, each with its first ballots: what a request reads does not grow with
            // every proposal and vote ever made.
            let proposals: Vec<Value> = state
                .proposals_ending_last(PROPOSALS_SHOWN)
                .into_iter()
                .map(|(id, proposal)| {
                    let ballots: Vec<Value> = state
                        .ballots_by_voter(&id)
                        .take(BALLOTS_SHOWN)
                        .map(|(voter, choice, weight)| {
                            let choice = match choice {
                                0 => "no",
                                1 => "yes",
                                _ => "abstain",
                            };
                            json!({ "voter": voter.to_string(), "choice": choice, "weight": weight })
                        })
                        .collect();
                    json!({
                        "id": id.to_hex(),
                        "author": proposal.author.to_string(),
                        "action": action_json(&proposal.action),
                        "end_height": proposal.end_height,
                        "yes": proposal.yes,
                        "no": proposal.no,
                        "abstain": proposal.abstain,
                        "status": proposal.status.name(),
                        "ballots": ballots,
                    })
                })
                .collect();
            let overrides: Vec<Value> = state
                .overrides()
                .map(|(id, record)| {
                    let mut value = measure_json(&record.measure);
                    if let Some(object) = value.as_object_mut() {
                        object.insert("id".into(), json!(id.to_hex()));
                        object.insert("from_height".into(), json!(record.from_height));
                        object.insert("until_height".into(), json!(record.until_height));
                        object.insert("emergency".into(), json!(record.emergency == 1));
                    }
                    value
                })
                .collect();
            let changes: Vec<Value> = state
                .validator_changes()
                .into_iter()
                .map(|(at, key, power)| json!({ "height": at, "key": key.to_string(), "power": power }))
                .collect();
            let params: serde_json::Map<String, Value> = ledger::genesis::Params::GOVERNABLE
                .iter()
                .map(|name| ((*name).to_string(), json!(state.param(name))))
                .collect();
            let mut alerts: Vec<ledger::state::AlertState> = state.alerts().collect();
            alerts.sort_by_key(|alert| std::cmp::Reverse(alert.height));
            let alerts: Vec<Value> = alerts.iter().take(100).map(alert_json).collect();
            let mut reports: Vec<(Id, ledger::state::ReportState)> = state.reports().collect();
            reports.sort_by_key(|(_, report)| std::cmp::Reverse(report.height));
            let reports: Vec<Value> = reports.iter().take(100).map(|(id, report)| report_json(id, report)).collect();
            let redistributions: Vec<Value> = state
                .redistributions()
                .into_iter()
                .rev()
                .take(100)
                .map(|(height, token, accounts, share, time_ms)| {
                    json!({ "height": height, "token": token, "accounts": accounts, "share": share, "time_ms": time_ms })
                })
                .collect();
            json!({
                "height": height,
                "redistributions": redistributions,
                "alerts": alerts,
                "reports": reports,
                "proposals": proposals,
                "overrides": overrides,
                "validator_changes": changes,
                "params": params,
            })
        })
        .await;
    match read {
        Ok(value) => Json(value).into_response(),
        Err(failed) => ledger_error(&failed),
    }
}

/// `POST /proposals`: the node proposes.
pub async fn propose(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let request: ProposalRequest = match parse(&body, "a proposal") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let action = match request.action.to_action() {
        Ok(action) => action,
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("action: {problem}")),
    };
    let (Ok(title), Ok(text)) = (Text::new(request.title.clone()), Text::new(request.text.clone())) else {
        return error(StatusCode::BAD_REQUEST, "title at most 120 bytes, text at most 4096");
    };
    let proposal = Proposal { action, title, text, voting_period_blocks: request.voting_period_blocks };
    sign_and_submit(&context, Body::Proposal(proposal)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteRequest {
    choice: String,
    /// On a proposal decided by stake: the tokens to lock into the vote (a decimal, up to 3 places).
    stake: Option<String>,
}

/// `POST /proposals/{id}/votes`: the node votes.
pub async fn vote(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Response {
    let Ok(proposal) = Id::from_hex(&id) else {
        return error(StatusCode::BAD_REQUEST, "a proposal id is 64 hex digits");
    };
    let request: VoteRequest = match parse(&body, "a vote") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let choice = match request.choice.as_str() {
        "yes" => Choice::Yes,
        "no" => Choice::No,
        "abstain" => Choice::Abstain,
        other => return error(StatusCode::BAD_REQUEST, format!("choice {other:?} is not yes, no or abstain")),
    };
    let stake = match request.stake.as_deref().map(protocol::amount::parse_milli).transpose() {
        Ok(stake) => stake.unwrap_or(0),
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("stake: {problem}")),
    };
    sign_and_submit(&context, Body::Vote(Vote { proposal, choice, stake })).await
}

/// An alert as JSON.
pub fn alert_json(alert: &ledger::state::AlertState) -> Value {
    let rule = match alert.alert.rule {
        protocol::message::AlertRule::Wear => "wear",
        protocol::message::AlertRule::Depletion => "depletion",
        protocol::message::AlertRule::Misuse => "misuse",
        protocol::message::AlertRule::Silent => "silent",
    };
    json!({
        "id": alert.id.to_hex(),
        "asset": alert.alert.asset.to_hex(),
        "author": alert.author.to_string(),
        "rule": rule,
        "measured": alert.alert.measured,
        "threshold": alert.alert.threshold,
        "interval_start_s": alert.alert.interval_start_s,
        "height": alert.height,
    })
}

fn severity_name(severity: protocol::message::Severity) -> &'static str {
    match severity {
        protocol::message::Severity::Info => "info",
        protocol::message::Severity::Warning => "warning",
        protocol::message::Severity::Fault => "fault",
        protocol::message::Severity::Done => "maintenance-done",
    }
}

/// A report as JSON.
pub fn report_json(id: &Id, report: &ledger::state::ReportState) -> Value {
    json!({
        "id": id.to_hex(),
        "author": report.author.to_string(),
        "asset": report.report.asset.as_slice().first().map(Id::to_hex),
        "cell": report.report.cell.as_str(),
        "severity": severity_name(report.report.severity),
        "text": report.report.text.as_str(),
        "reading": report.report.reading.as_slice().first().map(|reading| reading.id().to_hex()),
        "height": report.height,
        "time_ms": report.time_ms,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    asset: Option<String>,
    cell: String,
    severity: String,
    text: String,
    /// A signed reading of the node's, hex.
    reading: Option<String>,
}

/// `POST /reports`: a citizen's report, signed by the node.
pub async fn report(State(context): State<Context>, _: Authorized, body: Bytes) -> Response {
    let request: ReportRequest = match parse(&body, "a report") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let built = (|| -> Result<protocol::message::Report, String> {
        let asset = match &request.asset {
            Some(asset) => vec![Id::from_hex(asset).map_err(|_| "asset: 64 hex digits".to_owned())?],
            None => Vec::new(),
        };
        let severity = match request.severity.as_str() {
            "info" => protocol::message::Severity::Info,
            "warning" => protocol::message::Severity::Warning,
            "fault" => protocol::message::Severity::Fault,
            "maintenance-done" => protocol::message::Severity::Done,
            other => return Err(format!("severity {other:?} is not info, warning, fault or maintenance-done")),
        };
        let reading = match &request.reading {
            Some(text) => {
                let bytes = hex::decode(text).map_err(|_| "reading: hex of a signed envelope".to_owned())?;
                vec![protocol::Envelope::from_bytes(&bytes).map_err(|error| format!("reading: {error}"))?]
            }
            None => Vec::new(),
        };
        Ok(protocol::message::Report {
            asset: protocol::types::BoundedVec::new(asset).map_err(|error| error.to_string())?,
            cell: Cell::new(request.cell.clone()).map_err(|error| format!("cell: {error}"))?,
            severity,
            text: Text::new(request.text.clone()).map_err(|error| format!("text: {error}"))?,
            reading: protocol::types::BoundedVec::new(reading).map_err(|error| error.to_string())?,
        })
    })();
    let report = match built {
        Ok(report) => report,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    // A report on an asset the ledger does not know would only be dropped when blocks are built: say so now.
    if let (Some(ledger), Some(asset)) = (context.ledger.as_ref(), report.asset.as_slice().first().copied())
        && ledger.query(move |state| state.asset(&asset).is_none()).await.unwrap_or(false)
    {
        return error(StatusCode::BAD_REQUEST, format!("no asset {} is registered", asset.to_hex()));
    }
    sign_and_submit(&context, Body::Report(report)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportProposalRequest {
    action: Option<ActionRequest>,
    voting_period_blocks: Option<u32>,
}

/// `POST /reports/{id}/propose`: turns a report into a proposal that cites it.
pub async fn propose_report(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Response {
    let Some(ledger) = context.ledger.as_ref() else { return no_ledger() };
    let Ok(report_id) = Id::from_hex(&id) else {
        return error(StatusCode::BAD_REQUEST, "a report id is 64 hex digits");
    };
    let request: ReportProposalRequest = if body.is_empty() {
        ReportProposalRequest { action: None, voting_period_blocks: None }
    } else {
        match parse(&body, "a proposal from a report") {
            Ok(request) => request,
            Err(response) => return *response,
        }
    };
    let found = ledger.query(move |state| state.report(&report_id)).await;
    let report = match found {
        Ok(Some(report)) => report,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such report (or older than 30 days)"),
        Err(failed) => return ledger_error(&failed),
    };
    let action = match request.action.as_ref().map(ActionRequest::to_action).transpose() {
        Ok(action) => action.unwrap_or(Action::Text(Empty)),
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("action: {problem}")),
    };
    let summary: String = report.report.text.as_str().chars().take(80).collect();
    let (Ok(title), Ok(text)) = (
        Text::new(format!("Report {}: {summary}", &id[..8])),
        Text::new(format!(
            "From report {id} by {} in cell {}:\n{}",
            report.author,
            report.report.cell.as_str(),
            report.report.text.as_str()
        )),
    ) else {
        return error(StatusCode::BAD_REQUEST, "the report does not fit a proposal's title and text");
    };
    let proposal = Proposal { action, title, text, voting_period_blocks: request.voting_period_blocks.unwrap_or(100) };
    sign_and_submit(&context, Body::Proposal(proposal)).await
}
