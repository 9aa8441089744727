//! The commons on the API: the proposals with their votes, the overrides in force, the validator changes
//! scheduled, maintenance alerts and citizens' reports (`GET /governance`); the node's own proposals, votes and
//! reports, signed with its key and submitted to the ledger (`POST /proposals`, `POST /proposals/{id}/votes`,
//! `POST /reports`, `POST /reports/{id}/propose`).

use ::ledger::reads::*;
use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use protocol::message::{
    Action, AddValidator, AdmitMember, AlertRule, Choice, DeviceCap, Empty, Freeze, FuelCap, IslandOrder, Measure,
    Override, Proposal, RemoveValidator, SetParameter, Severity, Vote,
};
use protocol::types::{Cell, MeterId, ParameterName, Text};
use protocol::{Body, Id, PublicKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc::HEX_64;
use super::jobs::JobKindName;
use super::{
    Answer, ApiError, Authorized, Context, Route, SUBMITTED, SUBMITTED_ABOUT, Submitted, Taken, doc, parse,
    sign_and_submit,
};
use ledger::state::ProposalStatus;
use protocol::limits::{
    CELL_CHARS_MAX, METER_ID_BYTES_MAX, PARAMETER_NAME_BYTES_MAX, PROPOSAL_TEXT_BYTES_MAX, PROPOSAL_TITLE_BYTES_MAX,
    REPORT_TEXT_BYTES_MAX, TOKEN_ID_BYTES_MAX,
};

/// A proposal for the node to sign and submit: if it passes the vote, the ledger carries out its action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalRequest {
    /// At most 120 bytes of UTF-8.
    #[schemars(length(max = PROPOSAL_TITLE_BYTES_MAX))]
    pub title: String,
    /// Why, for the voters: at most 4096 bytes of UTF-8; default empty.
    #[serde(default)]
    #[schemars(length(max = PROPOSAL_TEXT_BYTES_MAX))]
    pub text: String,
    /// How many blocks the vote stays open; more than 0.
    #[schemars(range(min = 1))]
    pub voting_period_blocks: u32,
    /// What the ledger does if the proposal passes.
    pub action: ActionRequest,
}

/// What a proposal does if it passes, by `kind`: `{"kind": "set-parameter", "name": "grid_fee_per_kwh", "value":
/// 20}`, `{"kind": "override", "measure": "freeze", "account": "…", "duration_blocks": 100}`…
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActionRequest {
    /// Nothing: the vote is the decision (a resolution, a poll).
    Text,
    /// Sets a governable parameter (those `GET /governance` lists under `params`).
    SetParameter {
        /// The parameter's name, e.g. `grid_fee_per_kwh`.
        #[schemars(length(min = 1, max = PARAMETER_NAME_BYTES_MAX))]
        name: String,
        /// Its new value, in the parameter's unit.
        value: u64,
    },
    /// Adds a validator, or changes its power (after the ledger's validator change delay).
    AddValidator {
        /// The validator's public key, 64 hex digits.
        #[schemars(regex(pattern = HEX_64))]
        key: String,
        /// Its voting power; more than 0.
        #[schemars(range(min = 1))]
        power: u64,
    },
    /// Removes a validator (after the ledger's validator change delay).
    RemoveValidator {
        /// The validator's public key, 64 hex digits.
        #[schemars(regex(pattern = HEX_64))]
        key: String,
    },
    /// Admits an account to the members who vote one account, one vote.
    AdmitMember {
        /// The account's public key, 64 hex digits.
        #[schemars(regex(pattern = HEX_64))]
        key: String,
    },
    /// Sets a token's issuance rule: who may mint it, its supply cap, its reward per kWh exported.
    IssuanceRule {
        /// The token's id (1 to 16 bytes of a-z 0-9 -).
        #[schemars(length(min = 1, max = TOKEN_ID_BYTES_MAX))]
        token: String,
        /// The accounts that may mint it, 64 hex digits each (any order; the node sorts them).
        #[schemars(inner(regex(pattern = HEX_64)))]
        issuers: Vec<String>,
        /// Its largest total supply, milli-units; 0: no cap.
        supply_max: u64,
        /// Milli-units minted to a meter's owner per kWh its anchored readings export.
        export_reward_per_kwh: u64,
    },
    /// Sets one pool's grid fee: a constant per kWh (per 1000 units), or a share of the seller's price; both 0: no
    /// fee; not both above 0.
    PoolFee {
        /// The pool: `resource/token/cell/interval_s`, e.g. `energy/credit/u33db/900`.
        pool: String,
        /// Milli-units of the pool's token per kWh (per 1000 units); default 0.
        #[serde(default)]
        fee_per_kwh: u64,
        /// Parts per million of the seller's price; default 0.
        #[serde(default)]
        fee_ppm: u32,
    },
    /// An override decided by the community's vote.
    Override(OverrideRequest),
    /// An override decided by the emergency rule (k of n stewards), for a short bounded time.
    Emergency(OverrideRequest),
    /// A coordinated upgrade: blocks carry ledger protocol version `version` from block `height` on (after the
    /// vote's end); nodes whose kos does not support it stop before that block.
    Upgrade {
        /// 2 to 255, above the version in force.
        #[schemars(range(min = 2, max = 255))]
        version: u8,
        /// The first block of the new version; after the vote's end.
        #[schemars(range(min = 1))]
        height: u64,
        /// What the operators of nodes that do not support it must install (at most 120 bytes).
        #[schemars(length(max = 120))]
        info: String,
    },
    /// A job the commons posts if the proposal passes, its reward paid from the commons' account (its bidding must
    /// end after the vote).
    Quest {
        /// The job, as `POST /jobs` takes it.
        job: Box<super::jobs::JobRequest>,
    },
}

/// An override: what it does (`measure`) to whom, for how many blocks. Which fields are needed depends on the
/// measure: `freeze` needs `account`; `fuel-cap` `account` and `per_s`; `device-cap` `account`, `meter`,
/// `import_w_max` and `export_w_max`; `island` `cell`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    pub measure: MeasureName,
    /// The account it applies to (`freeze`, `fuel-cap`, `device-cap`), 64 hex digits.
    #[schemars(regex(pattern = HEX_64))]
    pub account: Option<String>,
    /// `fuel-cap`: the account's fuel recharge in every class, units per second.
    pub per_s: Option<u64>,
    /// `device-cap`: the account's meter (its id).
    #[schemars(length(min = 1, max = METER_ID_BYTES_MAX))]
    pub meter: Option<String>,
    /// `device-cap`: the most the meter may import, W.
    pub import_w_max: Option<u64>,
    /// `device-cap`: the most the meter may export, W.
    pub export_w_max: Option<u64>,
    /// `island`: the location cell (a geohash prefix of at most 12 characters) whose microgrid islands.
    #[schemars(length(max = CELL_CHARS_MAX))]
    pub cell: Option<String>,
    /// How many blocks it holds for, from the block where it passes; more than 0.
    #[schemars(range(min = 1))]
    pub duration_blocks: u32,
}

/// What an override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MeasureName {
    /// Stops an account's trading (needs `account`).
    Freeze,
    /// Caps an account's fuel (needs `account` and `per_s`).
    FuelCap,
    /// Caps what a meter may import and export (needs `account`, `meter`, `import_w_max` and `export_w_max`).
    DeviceCap,
    /// Puts a cell's microgrid into island mode (needs `cell`).
    Island,
}

fn key(text: &str, what: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(text).map_err(|_| format!("{what}: {text:?} is not 64 hex digits"))
}

impl OverrideRequest {
    fn to_override(&self) -> Result<Override, String> {
        let account = || key(self.account.as_deref().ok_or("account is needed")?, "account");
        let measure = match self.measure {
            MeasureName::Freeze => Measure::Freeze(Freeze { account: account()? }),
            MeasureName::FuelCap => {
                Measure::FuelCap(FuelCap { account: account()?, per_s: self.per_s.ok_or("per_s is needed")? })
            }
            MeasureName::DeviceCap => Measure::DeviceCap(DeviceCap {
                account: account()?,
                meter: MeterId::new(self.meter.clone().ok_or("meter is needed")?).map_err(|error| error.to_string())?,
                import_w_max: self.import_w_max.ok_or("import_w_max is needed")?,
                export_w_max: self.export_w_max.ok_or("export_w_max is needed")?,
            }),
            MeasureName::Island => Measure::Island(IslandOrder {
                cell: Cell::new(self.cell.clone().ok_or("cell is needed")?).map_err(|error| error.to_string())?,
            }),
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
            ActionRequest::Upgrade { version, height, info } => Action::Upgrade(protocol::message::Upgrade {
                version: *version,
                height: *height,
                info: protocol::types::Text::new(info.clone()).map_err(|error| format!("info: {error}"))?,
            }),
        })
    }
}

/// What an override does, in the request's shape (`measure` names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "measure", rename_all = "kebab-case")]
pub enum MeasureView {
    /// Stops an account's trading: its offers, barter offers and settlements are refused.
    Freeze {
        /// The account, 64 hex digits.
        account: String,
    },
    /// Caps an account's fuel.
    FuelCap {
        /// The account, 64 hex digits.
        account: String,
        /// Its fuel recharge in every class, units per second.
        per_s: u64,
    },
    /// Caps what a device (a meter of an account) may import and export: readings beyond are refused.
    DeviceCap {
        /// The meter's account, 64 hex digits.
        account: String,
        /// The meter's id.
        meter: String,
        /// The most it may import, W.
        import_w_max: u64,
        /// The most it may export, W.
        export_w_max: u64,
    },
    /// Puts the microgrid of a location cell into island mode.
    Island {
        /// The cell, a geohash prefix.
        cell: String,
    },
}

/// A measure as the API shows it, in the request's shape.
pub(crate) fn measure_view(measure: &Measure) -> MeasureView {
    match measure {
        Measure::Freeze(freeze) => MeasureView::Freeze { account: freeze.account.to_string() },
        Measure::FuelCap(cap) => MeasureView::FuelCap { account: cap.account.to_string(), per_s: cap.per_s },
        Measure::DeviceCap(cap) => MeasureView::DeviceCap {
            account: cap.account.to_string(),
            meter: cap.meter.as_str().to_owned(),
            import_w_max: cap.import_w_max,
            export_w_max: cap.export_w_max,
        },
        Measure::Island(order) => MeasureView::Island { cell: order.cell.as_str().to_owned() },
    }
}

/// An override as a proposal's action shows it: its measure and how long it holds.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OverrideAction {
    #[serde(flatten)]
    pub measure: MeasureView,
    /// How many blocks it holds for, from the block where it passes.
    pub duration_blocks: u32,
}

/// A quest's job, in short (`GET /jobs/{id}` shows it in full once posted).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct QuestJob {
    pub kind: JobKindName,
    pub title: String,
    /// The most the commons pays, milli-units of `token`.
    pub reward: u64,
    /// The token it pays in (its id).
    pub token: String,
    /// Where it is done (a geohash prefix); empty: anywhere.
    pub cell: String,
    /// Bids are taken until then, Unix ms.
    pub bids_until_ms: u64,
    /// The work is due by then, Unix ms.
    pub deadline_ms: u64,
}

/// A proposal's action, in the request's shape (`kind` names it; see the proposal request).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ActionView {
    /// Nothing: the vote is the decision.
    Text,
    /// Sets a governable parameter.
    SetParameter {
        name: String,
        /// In the parameter's unit.
        value: u64,
    },
    /// Adds a validator, or changes its power.
    AddValidator {
        /// Its public key, 64 hex digits.
        key: String,
        /// Its voting power.
        power: u64,
    },
    /// Removes a validator.
    RemoveValidator {
        /// Its public key, 64 hex digits.
        key: String,
    },
    /// Blocks carry ledger protocol version `version` from block `height` on.
    Upgrade {
        version: u8,
        height: u64,
        /// What to install.
        info: String,
    },
    /// Admits an account to the members who vote one account, one vote.
    AdmitMember {
        /// Its public key, 64 hex digits.
        key: String,
    },
    /// Sets one pool's grid fee.
    PoolFee {
        /// `resource/token/cell/interval_s`.
        pool: String,
        /// Milli-units of the pool's token per kWh (per 1000 units).
        fee_per_kwh: u64,
        /// Parts per million of the seller's price.
        fee_ppm: u32,
    },
    /// Sets a token's issuance rule.
    IssuanceRule {
        /// The token's id.
        token: String,
        /// The accounts that may mint it, 64 hex digits each.
        issuers: Vec<String>,
        /// Its largest total supply, milli-units; 0: no cap.
        supply_max: u64,
        /// Milli-units minted to a meter's owner per kWh its anchored readings export.
        export_reward_per_kwh: u64,
    },
    /// An override decided by the community's vote.
    Override(OverrideAction),
    /// An override decided by the emergency rule.
    Emergency(OverrideAction),
    /// A job the commons posts if the proposal passes.
    Quest { job: QuestJob },
}

/// An action as the API shows it, in the request's shape.
pub fn action_view(action: &Action) -> ActionView {
    let measure = |measure: &Override| OverrideAction {
        measure: measure_view(&measure.measure),
        duration_blocks: measure.duration_blocks,
    };
    match action {
        Action::Text(_) => ActionView::Text,
        Action::SetParameter(set) => ActionView::SetParameter { name: set.name.as_str().to_owned(), value: set.value },
        Action::AddValidator(add) => ActionView::AddValidator { key: add.key.to_string(), power: add.power },
        Action::RemoveValidator(remove) => ActionView::RemoveValidator { key: remove.key.to_string() },
        Action::Upgrade(upgrade) => ActionView::Upgrade {
            version: upgrade.version,
            height: upgrade.height,
            info: upgrade.info.as_str().to_owned(),
        },
        Action::AdmitMember(admit) => ActionView::AdmitMember { key: admit.key.to_string() },
        Action::PoolFee(fee) => {
            ActionView::PoolFee { pool: fee.pool.to_string(), fee_per_kwh: fee.fee_per_kwh, fee_ppm: fee.fee_ppm }
        }
        Action::IssuanceRule(rule) => ActionView::IssuanceRule {
            token: rule.token.as_str().to_owned(),
            issuers: rule.issuers.as_slice().iter().map(ToString::to_string).collect(),
            supply_max: rule.supply_max,
            export_reward_per_kwh: rule.export_reward_per_kwh,
        },
        Action::Override(with) => ActionView::Override(measure(with)),
        Action::Emergency(with) => ActionView::Emergency(measure(with)),
        Action::Quest(job) => ActionView::Quest {
            job: QuestJob {
                kind: job.kind.into(),
                title: job.title.as_str().to_owned(),
                reward: job.reward,
                token: job.token.as_str().to_owned(),
                cell: job.cell.as_str().to_owned(),
                bids_until_ms: job.bids_until_ms,
                deadline_ms: job.deadline_ms,
            },
        },
    }
}

/// Proposals `GET /governance` lists: those that end last.
pub const PROPOSALS_SHOWN: usize = 200;
/// Ballots it lists per proposal (in voter order; the proposal's totals count them all).
pub const BALLOTS_SHOWN: usize = 1_000;
/// Alerts, reports and redistributions it lists: the newest.
const NOTICES_SHOWN: usize = 100;

/// The commons: proposals, overrides in force, validator changes, parameters, alerts, reports and redistributions.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Governance {
    /// The height whose state this is.
    pub height: u64,
    /// The redistributions of the commons' pot of the last 30 days, newest first (at most 100).
    pub redistributions: Vec<Redistribution>,
    /// Maintenance alerts, newest first (at most 100).
    pub alerts: Vec<AlertView>,
    /// Citizens' reports of the last 30 days, newest first (at most 100).
    pub reports: Vec<ReportView>,
    /// The 200 proposals that end last, newest end first.
    pub proposals: Vec<ProposalView>,
    /// The overrides in force.
    pub overrides: Vec<OverrideView>,
    /// Validator changes scheduled, by height.
    pub validator_changes: Vec<ValidatorChange>,
    /// The governable parameters' values by name (each in its own unit).
    pub params: BTreeMap<String, u64>,
    /// The ledger protocol version of the next block (PROTOCOL.md §10, *Protocol versions*).
    pub protocol_version: u8,
    /// The upgrade scheduled, if one is, with which validators announced that they run its version.
    pub upgrade: Option<UpgradeView>,
}

/// An upgrade scheduled.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpgradeView {
    /// The ledger protocol version of blocks from `height` on.
    pub version: u8,
    pub height: u64,
    /// What to install.
    pub info: String,
    /// Each validator of the current set, and whether it runs the version: as it announced to this node (`null`:
    /// not connected, or it announced nothing), or this node itself.
    pub validators: Vec<UpgradeReadiness>,
}

/// Whether a validator runs an upgrade's version.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpgradeReadiness {
    /// Its public key, 64 hex digits.
    pub key: String,
    pub runs: Option<bool>,
}

/// A redistribution: the commons' pot shared among the accounts with the least.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Redistribution {
    /// The block that made it.
    pub height: u64,
    /// The token shared (the fee token).
    pub token: String,
    /// How many accounts were paid.
    pub accounts: u64,
    /// What each was paid, milli-units.
    pub share: u64,
    /// When, Unix ms (block time).
    pub time_ms: u64,
}

/// A proposal with its totals and its first ballots.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProposalView {
    /// The proposal's id (its entry's), 64 hex digits.
    pub id: String,
    /// Its author's account, 64 hex digits.
    pub author: String,
    pub action: ActionView,
    /// The height where its vote ends.
    pub end_height: u64,
    /// The weight voting yes (by the proposal's rule: validators' power, members, or stake in milli-units).
    pub yes: u64,
    /// The weight voting no.
    pub no: u64,
    /// The weight abstaining.
    pub abstain: u64,
    pub status: ProposalStatusName,
    /// Its first 1000 ballots, in voter order.
    pub ballots: Vec<Ballot>,
}

/// Where a proposal is.
// One name per `ProposalStatus`, as `ProposalStatus::name` names it (a test holds them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProposalStatusName {
    /// Voting until its end height.
    Open,
    /// The vote passed: the ledger carries out its action.
    Passed,
    /// The vote ended without passing.
    Rejected,
}

impl From<ProposalStatus> for ProposalStatusName {
    fn from(status: ProposalStatus) -> ProposalStatusName {
        match status {
            ProposalStatus::Open => ProposalStatusName::Open,
            ProposalStatus::Passed => ProposalStatusName::Passed,
            ProposalStatus::Rejected => ProposalStatusName::Rejected,
        }
    }
}

/// How a voter voted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChoiceName {
    No,
    Yes,
    Abstain,
}

impl From<ChoiceName> for Choice {
    fn from(choice: ChoiceName) -> Choice {
        match choice {
            ChoiceName::No => Choice::No,
            ChoiceName::Yes => Choice::Yes,
            ChoiceName::Abstain => Choice::Abstain,
        }
    }
}

/// A voter's ballot.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ballot {
    /// The voter's account, 64 hex digits.
    pub voter: String,
    pub choice: ChoiceName,
    /// The weight it counts for, in the unit of the proposal's totals (`yes`, `no`, `abstain`).
    pub weight: u64,
}

/// An override in force.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OverrideView {
    #[serde(flatten)]
    pub measure: MeasureView,
    /// The override's id (its proposal's), 64 hex digits.
    pub id: String,
    /// The block whose execution passed it.
    pub from_height: u64,
    /// The last block it holds for.
    pub until_height: u64,
    /// Whether the emergency rule decided it.
    pub emergency: bool,
}

/// A validator change scheduled.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ValidatorChange {
    /// The height where it takes effect.
    pub height: u64,
    /// The validator's public key, 64 hex digits.
    pub key: String,
    /// Its new power; 0: removed.
    pub power: u64,
}

/// The upgrade scheduled in `state`, its validators' readiness not yet known.
fn upgrade_view(state: &impl ledger::reads::GovernanceReads) -> Option<UpgradeView> {
    state.scheduled_upgrade().map(|upgrade| UpgradeView {
        version: upgrade.version,
        height: upgrade.height,
        info: upgrade.info,
        validators: state
            .validators()
            .into_iter()
            .map(|(key, _)| UpgradeReadiness { key: key.to_string(), runs: None })
            .collect(),
    })
}

/// Which validators run an upgrade's version: this node by its own kos, the others as they announced it.
async fn readiness(context: &Context, upgrade: &mut UpgradeView) {
    let announced: std::collections::HashMap<crate::network::PeerId, u8> =
        context.network.peer_versions().await.unwrap_or_default().into_iter().collect();
    let own = context.signer.public().to_string();
    let own_max = crate::config::ledger_version_max();
    for validator in &mut upgrade.validators {
        validator.runs = if validator.key == own {
            Some(own_max >= upgrade.version)
        } else {
            peer_of(&validator.key).and_then(|peer| announced.get(&peer)).map(|highest| *highest >= upgrade.version)
        };
    }
}

/// The libp2p peer id of a node whose key is `hex` (a kos node's peer id is its ed25519 key's).
fn peer_of(hex: &str) -> Option<crate::network::PeerId> {
    let key = protocol::PublicKey::from_hex(hex).ok()?;
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(libp2p_identity::PublicKey::from(key).to_peer_id())
}

/// `GET /governance`: the proposals that end last (newest end first) with their ballots, overrides in force,
/// validator changes.
pub async fn overview(State(context): State<Context>) -> Answer<Governance> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let governance = ledger
        .query(|state| {
            let height = state.height();
            // The proposals that end last, each with its first ballots: what a request reads does not grow with
            // every proposal and vote ever made.
            let proposals = state
                .proposals_ending_last(PROPOSALS_SHOWN)
                .into_iter()
                .map(|(id, proposal)| {
                    let ballots = state
                        .ballots_by_voter(&id)
                        .take(BALLOTS_SHOWN)
                        .map(|(voter, choice, weight)| {
                            let choice = match choice {
                                0 => ChoiceName::No,
                                1 => ChoiceName::Yes,
                                _ => ChoiceName::Abstain,
                            };
                            Ballot { voter: voter.to_string(), choice, weight }
                        })
                        .collect();
                    ProposalView {
                        id: id.to_hex(),
                        author: proposal.author.to_string(),
                        action: action_view(&proposal.action),
                        end_height: proposal.end_height,
                        yes: proposal.yes,
                        no: proposal.no,
                        abstain: proposal.abstain,
                        status: proposal.status.into(),
                        ballots,
                    }
                })
                .collect();
            let overrides = state
                .overrides()
                .map(|(id, record)| OverrideView {
                    measure: measure_view(&record.measure),
                    id: id.to_hex(),
                    from_height: record.from_height,
                    until_height: record.until_height,
                    emergency: record.emergency == 1,
                })
                .collect();
            let validator_changes = state
                .validator_changes()
                .into_iter()
                .map(|(at, key, power)| ValidatorChange { height: at, key: key.to_string(), power })
                .collect();
            let params = ledger::genesis::Params::GOVERNABLE
                .iter()
                .map(|name| ((*name).to_string(), state.param(name)))
                .collect();
            let mut alerts: Vec<ledger::state::AlertState> = state.alerts().collect();
            alerts.sort_by_key(|alert| std::cmp::Reverse(alert.height));
            let alerts = alerts.iter().take(NOTICES_SHOWN).map(alert_view).collect();
            let mut reports: Vec<(Id, ledger::state::ReportState)> = state.reports().collect();
            reports.sort_by_key(|(_, report)| std::cmp::Reverse(report.height));
            let reports = reports.iter().take(NOTICES_SHOWN).map(|(id, report)| report_view(id, report)).collect();
            let redistributions = state
                .redistributions()
                .into_iter()
                .rev()
                .take(NOTICES_SHOWN)
                .map(|(height, token, accounts, share, time_ms)| Redistribution {
                    height,
                    token,
                    accounts,
                    share,
                    time_ms,
                })
                .collect();
            let upgrade = upgrade_view(state);
            Governance {
                height,
                redistributions,
                alerts,
                reports,
                proposals,
                overrides,
                validator_changes,
                params,
                protocol_version: state.protocol_version(),
                upgrade,
            }
        })
        .await?;
    let mut governance = governance;
    if let Some(upgrade) = &mut governance.upgrade {
        readiness(&context, upgrade).await;
    }
    Ok(Json(governance))
}

/// `POST /proposals`: the node proposes.
pub async fn propose(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    let request: ProposalRequest = parse(&body, "a proposal")?;
    let action = request.action.to_action().map_err(|problem| ApiError::bad_request(format!("action: {problem}")))?;
    // The ledger refuses a parameter change that could never take effect (PROTOCOL.md §10): say so now, rather
    // than accept a proposal no block will hold.
    if let (Action::SetParameter(set), Some(ledger)) = (&action, context.ledger.as_ref())
        && let Err(why) = ledger.genesis().settable(set.name.as_str(), set.value)
    {
        return Err(ApiError::bad_request(format!("parameter {} cannot be set to {}: {why}", set.name, set.value)));
    }
    let (Ok(title), Ok(text)) = (Text::new(request.title.clone()), Text::new(request.text.clone())) else {
        return Err(ApiError::bad_request(format!(
            "title at most {PROPOSAL_TITLE_BYTES_MAX} bytes, text at most {PROPOSAL_TEXT_BYTES_MAX}"
        )));
    };
    let proposal = Proposal { action, title, text, voting_period_blocks: request.voting_period_blocks };
    sign_and_submit(&context, Body::Proposal(proposal)).await
}

/// The node's vote on a proposal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    choice: ChoiceName,
    /// On a proposal decided by stake: how much of the staked token (the one its rule weighs by) to lock into the
    /// vote until the proposal closes, a decimal string with up to 3 decimals (e.g. "2.5"); default none.
    stake: Option<String>,
}

/// `POST /proposals/{id}/votes`: the node votes.
pub async fn vote(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let proposal = Id::from_hex(&id).map_err(|_| ApiError::bad_request("a proposal id is 64 hex digits"))?;
    let request: VoteRequest = parse(&body, "a vote")?;
    let choice = Choice::from(request.choice);
    let stake = request
        .stake
        .as_deref()
        .map(protocol::amount::parse_milli)
        .transpose()
        .map_err(|problem| ApiError::bad_request(format!("stake: {problem}")))?
        .unwrap_or(0);
    sign_and_submit(&context, Body::Vote(Vote { proposal, choice, stake })).await
}

/// The maintenance rule that raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertRuleName {
    /// A battery's round-trip efficiency fell below the threshold (ppm).
    Wear,
    /// Stored energy fell below the reserve (ppm of capacity).
    Depletion,
    /// Consumption far above the asset's usual (Wh).
    Misuse,
    /// The meter went silent (intervals).
    Silent,
    /// Generation far above the cell's median yield per kW for several intervals (ppm of the median); raised by
    /// the ledger, with a case a jury decides (`GET /cases/{id}`).
    Implausible,
}

/// A maintenance alert about a registered asset, raised by a watcher's rules over its readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AlertView {
    /// The alert's id (its entry's), 64 hex digits.
    pub id: String,
    /// The asset (its manifest's id), 64 hex digits.
    pub asset: String,
    /// The watcher that raised it, 64 hex digits.
    pub author: String,
    pub rule: AlertRuleName,
    /// What was measured, in the rule's unit (ppm for wear and depletion, Wh for misuse, intervals for silent).
    pub measured: u64,
    /// The rule's threshold, in the same unit.
    pub threshold: u64,
    /// The start of the interval where the rule fired, Unix seconds.
    pub interval_start_s: u64,
    /// The block that holds it.
    pub height: u64,
}

/// An alert as the API shows it.
pub(crate) fn alert_view(alert: &ledger::state::AlertState) -> AlertView {
    let rule = match alert.alert.rule {
        AlertRule::Wear => AlertRuleName::Wear,
        AlertRule::Depletion => AlertRuleName::Depletion,
        AlertRule::Misuse => AlertRuleName::Misuse,
        AlertRule::Silent => AlertRuleName::Silent,
        AlertRule::Implausible => AlertRuleName::Implausible,
    };
    AlertView {
        id: alert.id.to_hex(),
        asset: alert.alert.asset.to_hex(),
        author: alert.author.to_string(),
        rule,
        measured: alert.alert.measured,
        threshold: alert.alert.threshold,
        interval_start_s: alert.alert.interval_start_s,
        height: alert.height,
    }
}

/// How serious a citizen's report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SeverityName {
    Info,
    Warning,
    Fault,
    /// Maintenance was done on the asset: the report is its log entry.
    MaintenanceDone,
}

impl From<Severity> for SeverityName {
    fn from(severity: Severity) -> SeverityName {
        match severity {
            Severity::Info => SeverityName::Info,
            Severity::Warning => SeverityName::Warning,
            Severity::Fault => SeverityName::Fault,
            Severity::Done => SeverityName::MaintenanceDone,
        }
    }
}

impl From<SeverityName> for Severity {
    fn from(severity: SeverityName) -> Severity {
        match severity {
            SeverityName::Info => Severity::Info,
            SeverityName::Warning => Severity::Warning,
            SeverityName::Fault => Severity::Fault,
            SeverityName::MaintenanceDone => Severity::Done,
        }
    }
}

/// A citizen's report about an asset or an area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReportView {
    /// The report's id (its entry's), 64 hex digits.
    pub id: String,
    /// Its author's account, 64 hex digits.
    pub author: String,
    /// The asset reported on (its manifest's id, 64 hex digits); null: the area of `cell`.
    pub asset: Option<String>,
    /// The location cell, a geohash prefix.
    pub cell: String,
    pub severity: SeverityName,
    pub text: String,
    /// The id of the signed reading given as evidence, 64 hex digits; null: none.
    pub reading: Option<String>,
    /// The block that holds it.
    pub height: u64,
    /// Its block's time, Unix ms.
    pub time_ms: u64,
}

/// A report as the API shows it.
pub(crate) fn report_view(id: &Id, report: &ledger::state::ReportState) -> ReportView {
    ReportView {
        id: id.to_hex(),
        author: report.author.to_string(),
        asset: report.report.asset.as_slice().first().map(Id::to_hex),
        cell: report.report.cell.as_str().to_owned(),
        severity: report.report.severity.into(),
        text: report.report.text.as_str().to_owned(),
        reading: report.report.reading.as_slice().first().map(|reading| reading.id().to_hex()),
        height: report.height,
        time_ms: report.time_ms,
    }
}

/// A citizen's status report for the node to sign and submit: about an asset, or an area.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The asset reported on (its manifest's id, 64 hex digits; the ledger must know it); none: the area of `cell`.
    #[schemars(regex(pattern = HEX_64))]
    asset: Option<String>,
    /// The location cell, a geohash prefix of at most 12 characters (empty: the world).
    #[schemars(length(max = CELL_CHARS_MAX))]
    cell: String,
    severity: SeverityName,
    /// At most 1024 bytes of UTF-8.
    #[schemars(length(max = REPORT_TEXT_BYTES_MAX))]
    text: String,
    /// Evidence: a signed reading of the node's (an envelope whose body is a reading), its bytes in hex.
    reading: Option<String>,
}

/// `POST /reports`: a citizen's report, signed by the node.
pub async fn report(State(context): State<Context>, _: Authorized, body: Bytes) -> Taken<Submitted> {
    let request: ReportRequest = parse(&body, "a report")?;
    let built = (|| -> Result<protocol::message::Report, String> {
        let asset = match &request.asset {
            Some(asset) => vec![Id::from_hex(asset).map_err(|_| "asset: 64 hex digits".to_owned())?],
            None => Vec::new(),
        };
        let severity = Severity::from(request.severity);
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
    let report = built.map_err(ApiError::bad_request)?;
    // A report on an asset the ledger does not know would only be dropped when blocks are built: say so now.
    if let (Some(ledger), Some(asset)) = (context.ledger.as_ref(), report.asset.as_slice().first().copied())
        && ledger.query(move |state| state.asset(&asset).is_none()).await.unwrap_or(false)
    {
        return Err(ApiError::bad_request(format!("no asset {} is registered", asset.to_hex())));
    }
    sign_and_submit(&context, Body::Report(report)).await
}

/// A proposal made from a report, citing it. The body may be empty: a text proposal, voted for 100 blocks.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportProposalRequest {
    /// What the proposal does if it passes; default nothing (a text proposal).
    action: Option<ActionRequest>,
    /// How many blocks the vote stays open, more than 0; default 100.
    #[schemars(range(min = 1))]
    voting_period_blocks: Option<u32>,
}

/// `POST /reports/{id}/propose`: turns a report into a proposal that cites it.
pub async fn propose_report(
    State(context): State<Context>,
    UrlPath(id): UrlPath<String>,
    _: Authorized,
    body: Bytes,
) -> Taken<Submitted> {
    let ledger = context.ledger.as_ref().ok_or_else(ApiError::no_ledger)?;
    let report_id = Id::from_hex(&id).map_err(|_| ApiError::bad_request("a report id is 64 hex digits"))?;
    let request: ReportProposalRequest =
        if body.is_empty() { ReportProposalRequest::default() } else { parse(&body, "a proposal from a report")? };
    let report = ledger
        .query(move |state| state.report(&report_id))
        .await?
        .ok_or_else(|| ApiError::not_found("no such report (or older than 30 days)"))?;
    let action = request
        .action
        .as_ref()
        .map(ActionRequest::to_action)
        .transpose()
        .map_err(|problem| ApiError::bad_request(format!("action: {problem}")))?
        .unwrap_or(Action::Text(Empty));
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
        return Err(ApiError::bad_request("the report does not fit a proposal's title and text"));
    };
    let proposal = Proposal { action, title, text, voting_period_blocks: request.voting_period_blocks.unwrap_or(100) };
    sign_and_submit(&context, Body::Proposal(proposal)).await
}

/// The commons' routes.
pub const ROUTES: &[Route] = &[
    Route::get(
        "/governance",
        "The proposals that end last with their first ballots, the overrides in force, scheduled validator changes, \
         the governable parameters, and the newest maintenance alerts, citizens' reports and redistributions",
        || axum::routing::get(overview),
        doc::json::<Governance>(),
    )
    .statuses(&[200, 503]),
    Route::post(
        "/proposals",
        "The node proposes: if the vote passes, the ledger carries out the proposal's action",
        || axum::routing::post(propose),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .body(doc::json_body::<ProposalRequest>()),
    Route::post(
        "/proposals/{id}/votes",
        "The node votes on a proposal (locking stake into the vote on a proposal decided by stake, if given)",
        || axum::routing::post(vote),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .about(&[doc::hex("The proposal's id, 64 hex digits")])
    .body(doc::json_body::<VoteRequest>()),
    Route::post(
        "/reports",
        "A citizen's status report on an asset the ledger knows or on an area, signed by the node, with a signed \
         reading of its own as evidence if given",
        || axum::routing::post(report),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED)
    .body(doc::json_body::<ReportRequest>()),
    Route::post(
        "/reports/{id}/propose",
        "The node proposes from a report, citing it (a text proposal unless an action is given)",
        || axum::routing::post(propose_report),
        doc::json::<Submitted>(),
    )
    .statuses(SUBMITTED_ABOUT)
    .about(&[doc::hex("The report's id, 64 hex digits")])
    .body(doc::optional_json_body::<ReportProposalRequest>()),
];

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::types::{BoundedVec, TokenId};
    use serde_json::Value;

    fn measures() -> Vec<Measure> {
        vec![
            Measure::Freeze(Freeze { account: PublicKey([1; 32]) }),
            Measure::FuelCap(FuelCap { account: PublicKey([2; 32]), per_s: 7 }),
            Measure::DeviceCap(DeviceCap {
                account: PublicKey([3; 32]),
                meter: MeterId::new("main").unwrap(),
                import_w_max: 43_470,
                export_w_max: 500,
            }),
            Measure::Island(IslandOrder { cell: Cell::new("u33db").unwrap() }),
        ]
    }

    /// An action as `GET /governance` shows it is a request for the same action: a client can propose it again.
    #[test]
    fn an_action_shown_is_the_request_for_it() {
        let mut actions = vec![
            Action::Text(Empty),
            Action::SetParameter(SetParameter { name: ParameterName::new("grid_fee_per_kwh").unwrap(), value: 20 }),
            Action::AddValidator(AddValidator { key: PublicKey([4; 32]), power: 3 }),
            Action::RemoveValidator(RemoveValidator { key: PublicKey([5; 32]) }),
            Action::AdmitMember(AdmitMember { key: PublicKey([6; 32]) }),
            Action::PoolFee(protocol::message::PoolFee {
                pool: "energy/credit/u33db/900".parse().unwrap(),
                fee_per_kwh: 3,
                fee_ppm: 0,
            }),
            Action::IssuanceRule(protocol::message::IssuanceRule {
                token: TokenId::new("solar").unwrap(),
                issuers: BoundedVec::new(vec![PublicKey([7; 32]), PublicKey([8; 32])]).unwrap(),
                supply_max: 100,
                export_reward_per_kwh: 5,
            }),
        ];
        for measure in measures() {
            actions.push(Action::Override(Override { measure: measure.clone(), duration_blocks: 9 }));
            actions.push(Action::Emergency(Override { measure, duration_blocks: 4 }));
        }
        for action in actions {
            let shown = serde_json::to_value(action_view(&action)).unwrap();
            let request: ActionRequest = serde_json::from_value(shown.clone()).unwrap();
            assert_eq!(request.to_action().unwrap(), action, "{shown}");
        }
    }

    /// The answer enums name what the ledger and the protocol name, and the request enums read into them.
    #[test]
    fn the_names_shown_are_the_ledgers() {
        // `From<ProposalStatus>` matches every status: one the ledger adds must be named here before this compiles.
        for status in [ProposalStatus::Open, ProposalStatus::Passed, ProposalStatus::Rejected] {
            assert_eq!(serde_json::to_value(ProposalStatusName::from(status)).unwrap(), status.name());
        }
        for severity in [Severity::Info, Severity::Warning, Severity::Fault, Severity::Done] {
            let shown = serde_json::to_value(SeverityName::from(severity)).unwrap();
            assert_eq!(Severity::from(serde_json::from_value::<SeverityName>(shown).unwrap()), severity);
        }
        for (word, choice) in [("yes", Choice::Yes), ("no", Choice::No), ("abstain", Choice::Abstain)] {
            let request: VoteRequest = serde_json::from_str(&format!(r#"{{"choice": "{word}"}}"#)).unwrap();
            assert_eq!(Choice::from(request.choice), choice);
        }
        let refused = serde_json::from_str::<VoteRequest>(r#"{"choice": "maybe"}"#).unwrap_err().to_string();
        assert!(refused.contains("unknown variant `maybe`, expected one of `no`, `yes`, `abstain`"), "{refused}");
        let refused = serde_json::from_str::<OverrideRequest>(r#"{"measure": "ban", "duration_blocks": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("`freeze`, `fuel-cap`, `device-cap`, `island`"), "{refused}");
    }

    /// The request schemas carry the protocol's limits.
    #[test]
    fn the_request_schemas_carry_the_limits() {
        let mut generator = schemars::generate::SchemaSettings::draft2020_12().for_deserialize().into_generator();
        let proposal = doc::schema::<ProposalRequest>(&mut generator).to_value();
        let report = doc::schema::<ReportRequest>(&mut generator).to_value();
        let from_report = doc::schema::<ReportProposalRequest>(&mut generator).to_value();
        let definitions = generator.take_definitions(true);
        let properties = |schema: &Value| {
            definitions[schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap()]["properties"].clone()
        };
        let proposal = properties(&proposal);
        assert_eq!(proposal["title"]["maxLength"], PROPOSAL_TITLE_BYTES_MAX, "{proposal:#}");
        assert_eq!(proposal["text"]["maxLength"], PROPOSAL_TEXT_BYTES_MAX);
        assert_eq!(proposal["voting_period_blocks"]["minimum"], 1);
        let report = properties(&report);
        assert_eq!(report["text"]["maxLength"], REPORT_TEXT_BYTES_MAX, "{report:#}");
        assert_eq!(report["asset"]["pattern"], HEX_64);
        assert_eq!(properties(&from_report)["voting_period_blocks"]["minimum"], 1);
    }

    /// The views answer what the `json!` answers did: every field present, a missing value as null.
    #[test]
    fn views_answer_their_fields_with_nulls() {
        let device_cap = serde_json::to_value(OverrideView {
            measure: measure_view(&measures()[2]),
            id: Id([9; 32]).to_hex(),
            from_height: 3,
            until_height: 8,
            emergency: true,
        })
        .unwrap();
        let expected: Value = serde_json::from_str(&format!(
            r#"{{"measure": "device-cap", "account": "{}", "meter": "main", "import_w_max": 43470,
                "export_w_max": 500, "id": "{}", "from_height": 3, "until_height": 8, "emergency": true}}"#,
            PublicKey([3; 32]).to_hex(),
            Id([9; 32]).to_hex()
        ))
        .unwrap();
        assert_eq!(device_cap, expected);
        let report = ledger::state::ReportState {
            author: PublicKey([2; 32]),
            report: protocol::message::Report {
                asset: BoundedVec::new(Vec::new()).unwrap(),
                cell: Cell::new("u33").unwrap(),
                severity: Severity::Done,
                text: Text::new("Replaced the fan.".to_owned()).unwrap(),
                reading: BoundedVec::new(Vec::new()).unwrap(),
            },
            height: 3,
            time_ms: 4,
        };
        let expected: Value = serde_json::from_str(&format!(
            r#"{{"id": "{}", "author": "{}", "asset": null, "cell": "u33", "severity": "maintenance-done",
                "text": "Replaced the fan.", "reading": null, "height": 3, "time_ms": 4}}"#,
            Id([5; 32]).to_hex(),
            PublicKey([2; 32]).to_hex()
        ))
        .unwrap();
        assert_eq!(serde_json::to_value(report_view(&Id([5; 32]), &report)).unwrap(), expected);
        let alert = ledger::state::AlertState {
            id: Id([1; 32]),
            author: PublicKey([2; 32]),
            alert: protocol::message::Alert {
                asset: Id([3; 32]),
                rule: AlertRule::Misuse,
                measured: 5,
                threshold: 6,
                interval_start_s: 7,
            },
            height: 8,
        };
        let shown = serde_json::to_value(alert_view(&alert)).unwrap();
        assert_eq!(
            (&shown["rule"], &shown["measured"], &shown["height"]),
            (&Value::from("misuse"), &5.into(), &8.into())
        );
    }
}
