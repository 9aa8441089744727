//! The genesis file: the network id, the first validators, the tokens and their issuance rules, the first
//! balances and the ledger's parameters. Every node of a network starts from the same file; its hash is the
//! parent of block 1, so two nodes with different genesis files never agree on a block.
//!
//! The file is TOML; amounts are token milli-units (integers), keys are hex.
//!
//! ```toml
//! network = "kos-devnet"
//! time_ms = 1767225600000
//!
//! [[validators]]
//! name = "v1"
//! key = "<64 hex digits>"
//! power = 1
//!
//! [[tokens]]
//! id = "credit"
//! kind = "stable"            # or "mission"
//! issuers = ["<64 hex>"]     # who may mint; empty: supply is fixed at genesis
//! supply_max = 0             # 0: no cap
//! export_reward_per_kwh = 0  # milli-units minted to a meter owner per kWh exported (mission tokens)
//!
//! [[balances]]
//! account = "<64 hex>"
//! token = "credit"
//! amount = 100000000
//!
//! [params]                   # every field optional; defaults below
//!
//! [[pools]]                  # market rules per pool pattern; the first that matches applies
//! pool = "energy/credit/*/*" # resource/token/cell-prefix/interval_s, `*` for any
//! grid_fee_per_kwh = 20      # constant grid fee per 1000 units (milli-units), or
//! grid_fee_ppm = 0           # a share of the seller's price (parts per million)
//! royalty_ppm = 0            # a share of each trade's value to `royalty_account` (a licence owner)
//! royalty_account = "<64 hex>"
//! tier_min = 0               # the lowest reputation tier (index in [[tiers]]) allowed to trade in the pool
//! dynamic = { base = 200, min = 100, max = 400, capacity = 10000, target_ppm = 800000, step_ppm = 50000 }
//!                            # a base price (floor) that follows usage per period (market::pricing)
//! trust = "node"             # what a party's readings must reach to count as delivered in the pool's energy
//!                            # trades: node, device (or balanced), balanced (the cell's feeder confirmed them) or
//!                            # device+balanced (PROTOCOL.md §10, trust levels)
//! essential = { essential_per_account = 500, per_account_max = 2000 }
//!                            # short supply shared fairly, essential needs first (market::fairness); the share of
//!                            # supply one account may get is the governable params.essential_share_max_ppm
//!
//! [[tiers]]                  # reputation tiers, lowest first; the first must ask nothing
//! name = "new"
//! score_min_ppm = 0          # fulfilled / (fulfilled + failed) obligations, with one of each as a prior
//! deliveries_min = 0
//! counterparties_min = 0     # distinct accounts with which a delivery counted; default: half of deliveries_min,
//!                            # rounded up (so two accounts of one owner cannot trade each other up the tiers)
//! collateral_ppm = 100000    # collateral locked per energy settlement, as a share of its value
//! fee_discount_ppm = 0       # discount on the grid fee
//!
//! [governance]               # every field optional
//! members = ["<64 hex>"]     # one account, one vote (more are admitted by `admit-member` proposals)
//! stewards = ["<64 hex>"]    # the emergency rule: `emergency_approvals` of them pass an emergency override
//! emergency_approvals = 2
//! emergency_blocks_max = 600 # longest an emergency override lasts
//! validator_change_delay_blocks = 2   # a validator change passed at height h certifies from h + this
//!
//! [[governance.rules]]       # per proposal kind (text, set-parameter, add-validator, remove-validator,
//! kind = "set-parameter"     # override, admit-member, issuance-rule, pool-fee); without one: validators, with
//! weight = "members"         # `governance_threshold_percent` as quorum and threshold. Weight: validators,
//!                            # members or stake:TOKEN
//! quorum_percent = 50        # share of all the weight that must vote (abstain counts) by the period's end
//! threshold_percent = 60     # share of yes among yes and no (or of all the weight, to pass early)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use protocol::types::TokenId;
use protocol::{NetworkId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::hash::{self, Hash};

/// The ledger's tunable parameters. Governance may change those marked so (by name, see [`Params::set`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Most entries in one block.
    pub block_entries_max: u32,
    /// Most bytes of one encoded block.
    pub block_bytes_max: u32,
    /// The token fees are paid in.
    pub fee_token: String,
    /// Fee per entry, milli-units of `fee_token`, paid by the entry's author to the commons account (governable).
    pub fee_per_entry: u64,
    /// How long after the end of a delivery interval an energy settlement's escrow is released (governable).
    pub settlement_grace_ms: u64,
    /// Share of voting power (percent) whose yes votes pass a governance proposal (governable).
    pub governance_threshold_percent: u64,
    /// Longest voting period of a proposal, in blocks.
    pub voting_period_blocks_max: u32,
    /// Largest clock skew allowed between a block's time and an entry's creation time.
    pub clock_skew_ms_max: u64,
    /// Longest lifetime of an entry.
    pub entry_lifetime_ms_max: u64,
    /// Grid fee per 1000 units of pools without a `[[pools]]` rule, milli-units (governable).
    pub grid_fee_per_kwh: u64,
    /// Grid fee as a share of the seller's price, ppm, for pools without a rule (governable).
    pub grid_fee_ppm: u64,
    /// Share of each trade's value the seller pays to the commons account, ppm (governable).
    pub commons_tax_ppm: u64,
    /// Penalty per kWh an energy trade's party under-delivers or under-consumes, milli-units (governable).
    pub penalty_per_kwh: u64,
    /// Anti-hoarding: most energy an account may buy for one delivery interval, Wh; 0: no limit (governable).
    pub bought_per_interval_max_wh: u64,
    /// Every this many blocks the commons' balance of the fee token is shared among members below
    /// `redistribution_balance_max`; 0: never (governable).
    pub redistribution_epoch_blocks: u64,
    /// Members holding less than this (milli-units of the fee token) receive a share (governable).
    pub redistribution_balance_max: u64,
    /// Most accounts paid in one redistribution (the poorest first).
    pub redistribution_accounts_max: u32,
    /// In essential pools, most of an interval's supply one account gets, ppm; 0: no limit (governable).
    pub essential_share_max_ppm: u64,
    /// Jurors drawn for a disputed job, 1 to 15 (governable).
    pub jury_size: u64,
    /// How long a jury has to decide, ms (governable).
    pub jury_period_ms: u64,
    /// The least reputation score (ppm) a juror must have (governable).
    pub jury_score_min_ppm: u64,
    /// The mission token a completed quest mints to its worker ("": none).
    pub quest_eco_token: String,
    /// How much of it, milli-units (governable).
    pub quest_eco_amount: u64,
    /// Reward of the maintenance quest an alert opens, milli-units of the fee token paid from the commons' account;
    /// 0: alerts open no quest (governable).
    pub maintenance_quest_reward: u64,
    /// How long a maintenance quest takes bids, ms (governable).
    pub maintenance_quest_bids_ms: u64,
    /// How long its worker then has to make the asset healthy, ms (governable).
    pub maintenance_quest_work_ms: u64,
    /// Deliveries between the same two accounts count toward reputation at most once per epoch of this length, ms
    /// (at least 1).
    pub reputation_pair_epoch_ms: u64,
    /// Collateral a barter leg giving compute, memory or bandwidth locks per unit given (1000 of its quantity),
    /// milli-units of the fee token.
    pub barter_collateral_per_unit: u64,
    /// How long the receiver of such a leg has to sign its receipt, or either party to dispute it, ms (more than 0).
    pub barter_receipt_window_ms: u64,
    /// A cell's feeder balance holds when the members' net export and the feeder's differ by at most this many Wh
    /// plus `feeder_tolerance_ppm` of the members' gross flows (governable).
    pub feeder_tolerance_wh: u64,
    /// See `feeder_tolerance_wh`: losses and metering error, ppm (governable, at most 10⁶).
    pub feeder_tolerance_ppm: u64,
    /// An interval's generation is implausible above this share of the cell's median yield per kW, ppm (governable,
    /// at least 10⁶).
    pub plausibility_ratio_ppm: u64,
    /// ... plus this many Wh per kW installed per hour of the interval (governable).
    pub plausibility_margin_wh_per_kw: u64,
    /// Implausible intervals in a row that raise an alert and open a case (governable, 1 to 96).
    pub plausibility_intervals: u64,
    /// Fewest generating members a cell's interval needs for its median to judge by; 0: no plausibility check
    /// (governable).
    pub plausibility_members_min: u64,
    /// The trust level (PROTOCOL.md §10, *trust levels*: 0 node, 1 device, 2 balanced, 3 device+balanced) a
    /// reading must reach to earn mission tokens' export rewards (governable, 0 to 3).
    pub reward_trust_min: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            block_entries_max: 10_000,
            block_bytes_max: 4 * 1024 * 1024,
            fee_token: "credit".to_owned(),
            fee_per_entry: 0,
            settlement_grace_ms: 15 * 60 * 1000,
            governance_threshold_percent: 67,
            voting_period_blocks_max: 100_000,
            clock_skew_ms_max: protocol::validate::Config::CLOCK_SKEW_MS_MAX_DEFAULT,
            entry_lifetime_ms_max: protocol::validate::Config::LIFETIME_MS_MAX_DEFAULT,
            grid_fee_per_kwh: 0,
            grid_fee_ppm: 0,
            commons_tax_ppm: 0,
            penalty_per_kwh: 100,
            bought_per_interval_max_wh: 0,
            redistribution_epoch_blocks: 0,
            redistribution_balance_max: 0,
            redistribution_accounts_max: 256,
            essential_share_max_ppm: 0,
            jury_size: 3,
            jury_period_ms: 3_600_000,
            jury_score_min_ppm: 500_000,
            quest_eco_token: String::new(),
            quest_eco_amount: 0,
            maintenance_quest_reward: 0,
            maintenance_quest_bids_ms: 600_000,
            maintenance_quest_work_ms: 7 * 86_400_000,
            reputation_pair_epoch_ms: 86_400_000,
            barter_collateral_per_unit: 1_000,
            barter_receipt_window_ms: 86_400_000,
            feeder_tolerance_wh: 50,
            feeder_tolerance_ppm: 20_000,
            plausibility_ratio_ppm: 1_500_000,
            plausibility_margin_wh_per_kw: 100,
            plausibility_intervals: 4,
            plausibility_members_min: 4,
            reward_trust_min: 0,
        }
    }
}

impl Params {
    /// The parameters governance may change, by name.
    pub const GOVERNABLE: &'static [&'static str] = &[
        "fee_per_entry",
        "settlement_grace_ms",
        "governance_threshold_percent",
        "grid_fee_per_kwh",
        "grid_fee_ppm",
        "commons_tax_ppm",
        "penalty_per_kwh",
        "bought_per_interval_max_wh",
        "redistribution_epoch_blocks",
        "redistribution_balance_max",
        "essential_share_max_ppm",
        "jury_size",
        "jury_period_ms",
        "jury_score_min_ppm",
        "quest_eco_amount",
        "maintenance_quest_reward",
        "maintenance_quest_bids_ms",
        "maintenance_quest_work_ms",
        "feeder_tolerance_wh",
        "feeder_tolerance_ppm",
        "plausibility_ratio_ppm",
        "plausibility_margin_wh_per_kw",
        "plausibility_intervals",
        "plausibility_members_min",
        "reward_trust_min",
    ];

    /// Applies a governance change; `false` when the name is not governable or the value is out of range.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let ppm = u64::from(market::PPM);
        match name {
            "fee_per_entry" => self.fee_per_entry = value,
            "settlement_grace_ms" => self.settlement_grace_ms = value,
            "governance_threshold_percent" if (51..=100).contains(&value) => self.governance_threshold_percent = value,
            "grid_fee_per_kwh" => self.grid_fee_per_kwh = value,
            "grid_fee_ppm" if value <= 10 * ppm => self.grid_fee_ppm = value,
            "commons_tax_ppm" if value <= ppm / 2 => self.commons_tax_ppm = value,
            "penalty_per_kwh" => self.penalty_per_kwh = value,
            "bought_per_interval_max_wh" => self.bought_per_interval_max_wh = value,
            "redistribution_epoch_blocks" => self.redistribution_epoch_blocks = value,
            "redistribution_balance_max" => self.redistribution_balance_max = value,
            "essential_share_max_ppm" if value <= ppm => self.essential_share_max_ppm = value,
            "jury_size" if (1..=15).contains(&value) => self.jury_size = value,
            "jury_period_ms" if value > 0 => self.jury_period_ms = value,
            "jury_score_min_ppm" if value <= ppm => self.jury_score_min_ppm = value,
            "quest_eco_amount" => self.quest_eco_amount = value,
            "maintenance_quest_reward" => self.maintenance_quest_reward = value,
            "maintenance_quest_bids_ms" if value > 0 => self.maintenance_quest_bids_ms = value,
            "maintenance_quest_work_ms" if value > 0 => self.maintenance_quest_work_ms = value,
            "feeder_tolerance_wh" => self.feeder_tolerance_wh = value,
            "feeder_tolerance_ppm" if value <= ppm => self.feeder_tolerance_ppm = value,
            "plausibility_ratio_ppm" if value >= ppm => self.plausibility_ratio_ppm = value,
            "plausibility_margin_wh_per_kw" => self.plausibility_margin_wh_per_kw = value,
            "plausibility_intervals" if (1..=96).contains(&value) => self.plausibility_intervals = value,
            "plausibility_members_min" => self.plausibility_members_min = value,
            "reward_trust_min" if protocol::message::Trust::from_level(value).is_some() => {
                self.reward_trust_min = value;
            }
            _ => return false,
        }
        true
    }

    /// The value of a governable parameter by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        Some(match name {
            "fee_per_entry" => self.fee_per_entry,
            "settlement_grace_ms" => self.settlement_grace_ms,
            "governance_threshold_percent" => self.governance_threshold_percent,
            "grid_fee_per_kwh" => self.grid_fee_per_kwh,
            "grid_fee_ppm" => self.grid_fee_ppm,
            "commons_tax_ppm" => self.commons_tax_ppm,
            "penalty_per_kwh" => self.penalty_per_kwh,
            "bought_per_interval_max_wh" => self.bought_per_interval_max_wh,
            "redistribution_epoch_blocks" => self.redistribution_epoch_blocks,
            "redistribution_balance_max" => self.redistribution_balance_max,
            "essential_share_max_ppm" => self.essential_share_max_ppm,
            "jury_size" => self.jury_size,
            "jury_period_ms" => self.jury_period_ms,
            "jury_score_min_ppm" => self.jury_score_min_ppm,
            "quest_eco_amount" => self.quest_eco_amount,
            "maintenance_quest_reward" => self.maintenance_quest_reward,
            "maintenance_quest_bids_ms" => self.maintenance_quest_bids_ms,
            "maintenance_quest_work_ms" => self.maintenance_quest_work_ms,
            "feeder_tolerance_wh" => self.feeder_tolerance_wh,
            "feeder_tolerance_ppm" => self.feeder_tolerance_ppm,
            "plausibility_ratio_ppm" => self.plausibility_ratio_ppm,
            "plausibility_margin_wh_per_kw" => self.plausibility_margin_wh_per_kw,
            "plausibility_intervals" => self.plausibility_intervals,
            "plausibility_members_min" => self.plausibility_members_min,
            "reward_trust_min" => self.reward_trust_min,
            _ => return None,
        })
    }
}

/// Whether a token is the stable credit or a mission token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Stable,
    Mission,
}

/// A token and its issuance rules, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub id: String,
    pub kind: TokenKind,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub supply_max: u64,
    #[serde(default)]
    pub export_reward_per_kwh: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorFile {
    pub name: String,
    pub key: String,
    pub power: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceFile {
    pub account: String,
    pub token: String,
    pub amount: u64,
}

/// Market rules of the pools a pattern matches, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRuleFile {
    pub pool: String,
    #[serde(default)]
    pub grid_fee_per_kwh: Option<u64>,
    #[serde(default)]
    pub grid_fee_ppm: Option<u32>,
    #[serde(default)]
    pub royalty_ppm: u32,
    #[serde(default)]
    pub royalty_account: Option<String>,
    #[serde(default)]
    pub tier_min: u32,
    /// The auction of interval pools: `pay-as-clear` (default), `pay-as-bid`, `mmr`, `sdr`.
    #[serde(default)]
    pub mechanism: Option<String>,
    /// The MMR divider in parts per million (default 500000: the mid-market rate).
    #[serde(default)]
    pub divider_ppm: Option<u32>,
    /// A dynamic base price that follows the pool's usage (`market::pricing`).
    #[serde(default)]
    pub dynamic: Option<market::pricing::Policy>,
    /// The pool's resource is essential: short supply is shared fairly (`market::fairness`).
    #[serde(default)]
    pub essential: Option<EssentialFile>,
    /// The trust level a party's readings must reach to count as delivered in the pool's energy trades: `node`
    /// (default), `device`, `balanced` or `device+balanced` (PROTOCOL.md §10, *trust levels*).
    #[serde(default)]
    pub trust: Option<String>,
}

/// An essential pool's fairness rule, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EssentialFile {
    /// Of each account's bids in an interval, this much is essential need, met first.
    pub essential_per_account: u64,
    /// Most one account gets in an interval; 0: no maximum.
    #[serde(default)]
    pub per_account_max: u64,
}

/// A reputation tier, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub name: String,
    #[serde(default)]
    pub score_min_ppm: u32,
    #[serde(default)]
    pub deliveries_min: u64,
    /// Default: `deliveries_min / 2`, rounded up.
    #[serde(default)]
    pub counterparties_min: Option<u64>,
    #[serde(default)]
    pub collateral_ppm: u32,
    #[serde(default)]
    pub fee_discount_ppm: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    network: String,
    time_ms: u64,
    validators: Vec<ValidatorFile>,
    #[serde(default)]
    tokens: Vec<TokenFile>,
    #[serde(default)]
    balances: Vec<BalanceFile>,
    #[serde(default)]
    params: Params,
    #[serde(default)]
    pools: Vec<PoolRuleFile>,
    #[serde(default)]
    tiers: Vec<TierFile>,
    #[serde(default, skip_serializing_if = "GovernanceFile::is_empty")]
    governance: GovernanceFile,
}

impl GovernanceFile {
    fn is_empty(&self) -> bool {
        self == &GovernanceFile::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GovernanceFile {
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    stewards: Vec<String>,
    #[serde(default)]
    emergency_approvals: u32,
    #[serde(default)]
    emergency_blocks_max: u32,
    validator_change_delay_blocks: Option<u64>,
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    kind: String,
    weight: String,
    quorum_percent: u64,
    threshold_percent: u64,
}

/// Whose votes count on a kind of proposal, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weight {
    /// Validators, by voting power.
    Validators,
    /// Members (of the genesis, or admitted by vote), one vote each.
    Members,
    /// Holders of a token, by the balance they lock into the vote until the proposal closes.
    Stake(TokenId),
}

/// How a kind of proposal is decided. A proposal passes as soon as its yes votes reach `threshold_percent` of
/// all the weight that could vote; otherwise, when its period ends, it passes if the weight that voted (abstain
/// included) reaches `quorum_percent` of all and yes reaches `threshold_percent` of yes and no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub weight: Weight,
    pub quorum_percent: u64,
    pub threshold_percent: u64,
}

/// The community's governance rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governance {
    /// One-account-one-vote members at genesis.
    pub members: BTreeSet<PublicKey>,
    /// Who may decide emergency overrides, and how many of them must.
    pub stewards: BTreeSet<PublicKey>,
    pub emergency_approvals: u32,
    /// Longest an emergency override lasts, blocks.
    pub emergency_blocks_max: u32,
    /// A validator set change passed at height h certifies blocks from h + this (at least 1).
    pub validator_change_delay_blocks: u64,
    /// Rules by proposal kind (`set-parameter`, ...); kinds without one take [`Governance::default_rule`].
    pub rules: BTreeMap<protocol::message::ActionKind, Rule>,
}

impl Governance {
    /// The rule of a kind of proposal. Without a `[[governance.rules]]` entry: validators by power, with the
    /// governable `governance_threshold_percent` as both quorum and threshold.
    #[must_use]
    pub fn rule(&self, kind: protocol::message::ActionKind, threshold_percent: u64) -> Rule {
        self.rules.get(&kind).cloned().unwrap_or(Rule {
            weight: Weight::Validators,
            quorum_percent: threshold_percent,
            threshold_percent,
        })
    }
}

/// A pool pattern: each part is `None` for `*`; the cell is a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPattern {
    pub resource: Option<protocol::message::Resource>,
    pub token: Option<TokenId>,
    pub cell_prefix: Option<String>,
    pub interval_s: Option<u32>,
}

impl PoolPattern {
    /// Parses `resource/token/cell-prefix/interval_s` with `*` for any part.
    pub fn parse(text: &str) -> anyhow::Result<PoolPattern> {
        let parts: Vec<&str> = text.split('/').collect();
        let [resource, token, cell, interval] = parts.as_slice() else {
            bail!("pool pattern {text:?} is not resource/token/cell/interval_s (use * for any)");
        };
        let any = |part: &str| part == "*";
        Ok(PoolPattern {
            resource: if any(resource) { None } else { Some(resource.parse().map_err(|e| anyhow::anyhow!("{e}"))?) },
            token: if any(token) { None } else { Some(TokenId::new(*token).map_err(|e| anyhow::anyhow!("{e}"))?) },
            cell_prefix: if any(cell) {
                None
            } else {
                Some(protocol::types::Cell::new(*cell).map_err(|e| anyhow::anyhow!("{e}"))?.as_str().to_owned())
            },
            interval_s: if any(interval) { None } else { Some(interval.parse().context("pool pattern interval_s")?) },
        })
    }

    /// Whether a pool matches.
    pub fn matches(&self, pool: &protocol::message::PoolId) -> bool {
        self.resource.is_none_or(|resource| resource == pool.resource)
            && self.token.as_ref().is_none_or(|token| *token == pool.token)
            && self.cell_prefix.as_ref().is_none_or(|prefix| pool.cell.as_str().starts_with(prefix.as_str()))
            && self.interval_s.is_none_or(|interval| interval == pool.interval_s)
    }
}

/// The market rules of matching pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRule {
    pub pattern: PoolPattern,
    /// The grid fee; `None`: the governable default of the params.
    pub grid_fee: Option<market::Fee>,
    pub royalty_ppm: u32,
    pub royalty_account: Option<PublicKey>,
    pub tier_min: u32,
    /// The auction of interval pools.
    pub mechanism: market::auction::Mechanism,
    /// The pool's dynamic base price, if it has one.
    pub dynamic: Option<market::pricing::Policy>,
    /// The pool's fairness rule, if its resource is essential.
    pub essential: Option<EssentialFile>,
    /// The trust level a party's readings must reach to count in its energy trades' delivery (and reputation).
    pub trust: protocol::message::Trust,
}

/// A reputation tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub score_min_ppm: u32,
    pub deliveries_min: u64,
    /// Distinct accounts with which a delivery counted.
    pub counterparties_min: u64,
    pub collateral_ppm: u32,
    pub fee_discount_ppm: u32,
}

impl Tier {
    /// The tiers of a genesis without `[[tiers]]`: newcomers lock 10 % collateral; accounts with 10 fulfilled
    /// deliveries at a 95 % score lock 2.5 % and get 10 % off grid fees.
    pub fn defaults() -> Vec<Tier> {
        vec![
            Tier {
                name: "new".into(),
                score_min_ppm: 0,
                deliveries_min: 0,
                counterparties_min: 0,
                collateral_ppm: 100_000,
                fee_discount_ppm: 0,
            },
            Tier {
                name: "trusted".into(),
                score_min_ppm: 950_000,
                deliveries_min: 10,
                counterparties_min: 5,
                collateral_ppm: 25_000,
                fee_discount_ppm: 100_000,
            },
        ]
    }
}

/// A validator of the genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisValidator {
    pub name: String,
    pub key: PublicKey,
    pub power: u64,
}

/// A token with its issuance rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: TokenId,
    pub kind: TokenKind,
    /// Accounts allowed to mint it. Empty: the supply is what the genesis allocates.
    pub issuers: BTreeSet<PublicKey>,
    /// Largest total supply in milli-units; `None`: no cap.
    pub supply_max: Option<u64>,
    /// Milli-units minted to a meter's owner per kWh its anchored readings export.
    pub export_reward_per_kwh: u64,
}

/// A checked genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub network: NetworkId,
    pub time_ms: u64,
    pub validators: Vec<GenesisValidator>,
    pub tokens: Vec<Token>,
    pub balances: Vec<(PublicKey, TokenId, u64)>,
    pub params: Params,
    /// Market rules by pool pattern, first match wins.
    pub pools: Vec<PoolRule>,
    /// Reputation tiers, lowest first (never empty).
    pub tiers: Vec<Tier>,
    pub governance: Governance,
    /// `blake3("kos/v1/genesis" || 0x00 || file bytes)`: the parent hash of block 1.
    pub hash: Hash,
    /// The file's text, as read (exports carry it).
    pub text: String,
}

/// The largest `block_bytes_max` a genesis may set: a proposal carries its block on the consensus topic, whose
/// messages are at most 4 MiB and 64 KiB (PROTOCOL.md §9).
pub const BLOCK_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// Most validators a genesis (and governance) may name.
pub const VALIDATORS_MAX: usize = 256;

fn parse_validators(files: &[ValidatorFile]) -> anyhow::Result<Vec<GenesisValidator>> {
    ensure!(!files.is_empty(), "at least one validator is needed");
    ensure!(files.len() <= VALIDATORS_MAX, "more than {VALIDATORS_MAX} validators");
    let mut keys = BTreeSet::new();
    let mut validators = Vec::new();
    let mut power_total: u64 = 0;
    for validator in files {
        let key = parse_key(&validator.key).with_context(|| format!("validator {}", validator.name))?;
        ensure!(validator.power > 0, "validator {}: power must be more than 0", validator.name);
        ensure!(keys.insert(key), "validator {} is listed twice", validator.name);
        power_total = power_total.checked_add(validator.power).context("total voting power overflows")?;
        validators.push(GenesisValidator { name: validator.name.clone(), key, power: validator.power });
    }
    ensure!(power_total <= u64::MAX / 1000, "total voting power too large");
    Ok(validators)
}

fn parse_tokens(files: &[TokenFile]) -> anyhow::Result<Vec<Token>> {
    let mut tokens = Vec::new();
    for token in files {
        let id = TokenId::new(token.id.clone()).map_err(|error| anyhow::anyhow!("token {}: {error}", token.id))?;
        ensure!(!tokens.iter().any(|known: &Token| known.id == id), "token {} is listed twice", token.id);
        let issuers = token.issuers.iter().map(|key| parse_key(key)).collect::<anyhow::Result<BTreeSet<_>>>()?;
        tokens.push(Token {
            id,
            kind: token.kind,
            issuers,
            supply_max: (token.supply_max > 0).then_some(token.supply_max),
            export_reward_per_kwh: token.export_reward_per_kwh,
        });
    }
    Ok(tokens)
}

fn check_params(params: &Params, tokens: &[Token]) -> anyhow::Result<()> {
    // One rule for a governable parameter's value, whether the genesis or governance sets it.
    for name in Params::GOVERNABLE {
        let value = params.get(name).unwrap_or(0);
        ensure!(Params::default().set(name, value), "params.{name}: {value} is out of its range (PROTOCOL.md §10)");
    }
    ensure!(
        params.block_bytes_max <= BLOCK_BYTES_MAX,
        "params.block_bytes_max: at most {BLOCK_BYTES_MAX} (a larger block cannot be gossiped)"
    );
    ensure!(
        (1..=crate::block::BLOCK_ENTRIES_LIMIT).contains(&u64::from(params.block_entries_max)),
        "params.block_entries_max: 1 to {}",
        crate::block::BLOCK_ENTRIES_LIMIT
    );
    ensure!(params.block_bytes_max >= 64 * 1024, "params.block_bytes_max must be at least 65536");
    ensure!((51..=100).contains(&params.governance_threshold_percent), "governance_threshold_percent: 51..=100");
    if params.fee_per_entry > 0 {
        ensure!(
            tokens.iter().any(|token| token.id.as_str() == params.fee_token),
            "fee token {} is not a token of the genesis",
            params.fee_token
        );
    }
    ensure!(
        params.quest_eco_token.is_empty() || tokens.iter().any(|token| token.id.as_str() == params.quest_eco_token),
        "quest eco token {} is not a token of the genesis",
        params.quest_eco_token
    );
    ensure!((1..=15).contains(&params.jury_size), "params.jury_size: 1..=15");
    ensure!(params.jury_score_min_ppm <= u64::from(market::PPM), "params.jury_score_min_ppm: at most 1000000");
    ensure!(params.grid_fee_ppm <= 10 * u64::from(market::PPM), "params.grid_fee_ppm: at most 10000000");
    ensure!(params.commons_tax_ppm <= u64::from(market::PPM) / 2, "params.commons_tax_ppm: at most 500000");
    ensure!(params.reputation_pair_epoch_ms > 0, "params.reputation_pair_epoch_ms must be more than 0");
    ensure!(params.barter_receipt_window_ms > 0, "params.barter_receipt_window_ms must be more than 0");
    ensure!(params.feeder_tolerance_ppm <= u64::from(market::PPM), "params.feeder_tolerance_ppm: at most 1000000");
    ensure!(params.plausibility_ratio_ppm >= u64::from(market::PPM), "params.plausibility_ratio_ppm: at least 1000000");
    ensure!((1..=96).contains(&params.plausibility_intervals), "params.plausibility_intervals: 1..=96");
    ensure!(params.reward_trust_min <= 3, "params.reward_trust_min: 0 (node) to 3 (device+balanced)");
    Ok(())
}

fn parse_pool_rule(rule: &PoolRuleFile) -> anyhow::Result<PoolRule> {
    let ppm_ok = |value: u32| value <= market::PPM;
    let context = || format!("pool rule {:?}", rule.pool);
    let pattern = PoolPattern::parse(&rule.pool).with_context(context)?;
    ensure!(
        rule.essential.is_none() || pattern.interval_s.is_some_and(|interval| interval > 0),
        "{}: essential pools are interval pools (their supply is shared per interval)",
        context()
    );
    let grid_fee = match (rule.grid_fee_per_kwh, rule.grid_fee_ppm) {
        (Some(_), Some(_)) => bail!("{}: give grid_fee_per_kwh or grid_fee_ppm, not both", context()),
        (Some(constant), None) => Some(market::Fee::Constant(constant)),
        (None, Some(ppm)) => Some(market::Fee::Ppm(ppm)),
        (None, None) => None,
    };
    ensure!(rule.royalty_ppm <= market::PPM / 2, "{}: royalty_ppm at most 500000", context());
    let royalty_account = rule.royalty_account.as_deref().map(parse_key).transpose().with_context(context)?;
    ensure!(rule.royalty_ppm == 0 || royalty_account.is_some(), "{}: royalty_ppm needs a royalty_account", context());
    let divider_ppm = rule.divider_ppm.unwrap_or(market::PPM / 2);
    ensure!(ppm_ok(divider_ppm), "{}: divider_ppm at most 1000000", context());
    let mechanism = match rule.mechanism.as_deref().unwrap_or("pay-as-clear") {
        "pay-as-clear" => market::auction::Mechanism::PayAsClear,
        "pay-as-bid" => market::auction::Mechanism::PayAsBid,
        "mmr" => market::auction::Mechanism::MidMarketRate { divider_ppm },
        "sdr" => market::auction::Mechanism::SupplyDemandRatio,
        other => bail!("{}: mechanism {other:?} is not pay-as-clear, pay-as-bid, mmr or sdr", context()),
    };
    if let Some(policy) = &rule.dynamic {
        policy.check().map_err(|problem| anyhow::anyhow!("{}: dynamic: {problem}", context()))?;
    }
    let trust = match rule.trust.as_deref() {
        None => protocol::message::Trust::Node,
        Some(name) => protocol::message::Trust::from_name(name).with_context(|| {
            format!("{}: trust {name:?} is not node, device, balanced or device+balanced", context())
        })?,
    };
    // Readings check the delivery of energy interval pools only: a trust level anywhere else would ask nothing.
    let metered = pattern.resource.is_none_or(|resource| resource == protocol::message::Resource::Energy)
        && pattern.interval_s.is_none_or(|interval| interval > 0);
    ensure!(
        trust == protocol::message::Trust::Node || metered,
        "{}: trust asks readings of a level, which only energy interval pools are checked by",
        context()
    );
    Ok(PoolRule {
        pattern,
        grid_fee,
        royalty_ppm: rule.royalty_ppm,
        royalty_account,
        tier_min: rule.tier_min,
        mechanism,
        dynamic: rule.dynamic,
        essential: rule.essential,
        trust,
    })
}

fn parse_tiers(files: &[TierFile]) -> anyhow::Result<Vec<Tier>> {
    let ppm_ok = |value: u32| value <= market::PPM;
    let tiers = if files.is_empty() {
        Tier::defaults()
    } else {
        files
            .iter()
            .map(|tier| {
                ensure!(
                    ppm_ok(tier.score_min_ppm) && ppm_ok(tier.collateral_ppm) && ppm_ok(tier.fee_discount_ppm),
                    "tier {}: ppm values are at most 1000000",
                    tier.name
                );
                Ok(Tier {
                    name: tier.name.clone(),
                    score_min_ppm: tier.score_min_ppm,
                    deliveries_min: tier.deliveries_min,
                    counterparties_min: tier.counterparties_min.unwrap_or(tier.deliveries_min.div_ceil(2)),
                    collateral_ppm: tier.collateral_ppm,
                    fee_discount_ppm: tier.fee_discount_ppm,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    Ok(tiers)
}

impl Genesis {
    /// Reads and checks a genesis file.
    pub fn load(path: &Path) -> anyhow::Result<Genesis> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading genesis {}", path.display()))?;
        Genesis::parse(&text).with_context(|| format!("genesis {}", path.display()))
    }

    /// Parses and checks genesis text.
    pub fn parse(text: &str) -> anyhow::Result<Genesis> {
        let file: GenesisFile = toml::from_str(text)?;
        let network = NetworkId::new(file.network.clone()).map_err(|error| anyhow::anyhow!("network: {error}"))?;
        let validators = parse_validators(&file.validators)?;
        let tokens = parse_tokens(&file.tokens)?;
        let mut balances = Vec::new();
        let mut supplies: BTreeMap<&TokenId, u64> = BTreeMap::new();
        for balance in &file.balances {
            let account = parse_key(&balance.account)?;
            let token = TokenId::new(balance.token.clone()).map_err(|error| anyhow::anyhow!("{error}"))?;
            let Some(known) = tokens.iter().find(|known| known.id == token) else {
                bail!("balance in unknown token {}", balance.token);
            };
            // The supply is the sum of the balances: it must fit in 64 bits (and so does every balance).
            let supply = supplies.entry(&known.id).or_default();
            *supply = supply
                .checked_add(balance.amount)
                .with_context(|| format!("the balances of token {} sum above 2^64 - 1", balance.token))?;
            if let Some(max) = known.supply_max {
                ensure!(*supply <= max, "the balances of token {} exceed its supply_max {max}", balance.token);
            }
            balances.push((account, token, balance.amount));
        }
        let params = file.params.clone();
        check_params(&params, &tokens)?;
        let pools = file.pools.iter().map(parse_pool_rule).collect::<anyhow::Result<Vec<_>>>()?;
        let tiers = parse_tiers(&file.tiers)?;
        ensure!(
            tiers[0].score_min_ppm == 0 && tiers[0].deliveries_min == 0 && tiers[0].counterparties_min == 0,
            "the first tier must ask nothing (score_min_ppm = 0, deliveries_min = 0, counterparties_min = 0): every \
             newcomer is in it"
        );
        for rule in &pools {
            ensure!(
                usize::try_from(rule.tier_min).is_ok_and(|tier| tier < tiers.len()),
                "pool rule: tier_min {} names no tier",
                rule.tier_min
            );
        }
        let governance = governance(&file.governance, &tokens)?;
        let hash = hash::tagged("kos/v1/genesis", &[text.as_bytes()]);
        Ok(Genesis {
            network,
            time_ms: file.time_ms,
            validators,
            tokens,
            balances,
            params,
            pools,
            tiers,
            governance,
            hash,
            text: text.to_owned(),
        })
    }

    /// A genesis text for tests and devnets: the given validators (power 1 each), a stable `credit` token that
    /// the first validator may mint, a mission token `eco` rewarded for exported energy, and `amount` credits to
    /// each of `funded`.
    pub fn devnet_text(
        network: &str,
        time_ms: u64,
        validators: &[PublicKey],
        funded: &[PublicKey],
        amount: u64,
    ) -> String {
        let mut text = format!("network = \"{network}\"\ntime_ms = {time_ms}\n");
        for (index, key) in validators.iter().enumerate() {
            text.push_str(&format!(
                "\n[[validators]]\nname = \"v{}\"\nkey = \"{}\"\npower = 1\n",
                index + 1,
                key.to_hex()
            ));
        }
        let issuer = validators.first().map(|key| format!("\"{}\"", key.to_hex())).unwrap_or_default();
        text.push_str(&format!(
            "\n[[tokens]]\nid = \"credit\"\nkind = \"stable\"\nissuers = [{issuer}]\n\n[[tokens]]\nid = \"eco\"\nkind = \"mission\"\nexport_reward_per_kwh = 1000\n"
        ));
        for key in funded {
            text.push_str(&format!(
                "\n[[balances]]\naccount = \"{}\"\ntoken = \"credit\"\namount = {amount}\n",
                key.to_hex()
            ));
        }
        text
    }

    /// Whether a `set-parameter` proposal could take effect, and why not: a governable parameter, a value within
    /// its range, and a fee per entry only where the fee token is a token (else every later entry, the votes that
    /// could undo it included, would be refused).
    pub fn settable(&self, name: &str, value: u64) -> Result<(), &'static str> {
        if !Params::GOVERNABLE.contains(&name) {
            return Err("not a parameter governance may set");
        }
        if !self.params.clone().set(name, value) {
            return Err("out of its range");
        }
        let fee_token_known = self.tokens.iter().any(|token| token.id.as_str() == self.params.fee_token);
        if name == "fee_per_entry" && value > 0 && !fee_token_known {
            return Err("the genesis' fee token is not one of its tokens");
        }
        Ok(())
    }

    /// The token rules by id.
    pub fn token(&self, id: &TokenId) -> Option<&Token> {
        self.tokens.iter().find(|token| &token.id == id)
    }

    /// The market rule of a pool: the first `[[pools]]` pattern that matches it.
    pub fn pool_rule(&self, pool: &protocol::message::PoolId) -> Option<&PoolRule> {
        self.pools.iter().find(|rule| rule.pattern.matches(pool))
    }
}

fn governance(file: &GovernanceFile, tokens: &[Token]) -> anyhow::Result<Governance> {
    use protocol::message::ActionKind;
    let keys = |list: &[String], what: &str| -> anyhow::Result<BTreeSet<PublicKey>> {
        let keys = list.iter().map(|key| parse_key(key)).collect::<anyhow::Result<BTreeSet<_>>>()?;
        ensure!(keys.len() == list.len(), "governance.{what}: a key is listed twice");
        ensure!(keys.len() <= MEMBERS_MAX, "governance.{what}: at most {MEMBERS_MAX}");
        Ok(keys)
    };
    let members = keys(&file.members, "members")?;
    let stewards = keys(&file.stewards, "stewards")?;
    if !stewards.is_empty() {
        ensure!(
            (1..=stewards.len()).contains(&usize::try_from(file.emergency_approvals).unwrap_or(usize::MAX)),
            "governance.emergency_approvals: from 1 to the number of stewards"
        );
        ensure!(file.emergency_blocks_max > 0, "governance.emergency_blocks_max: more than 0");
    }
    let delay = file.validator_change_delay_blocks.unwrap_or(2);
    ensure!((1..=10_000).contains(&delay), "governance.validator_change_delay_blocks: 1 to 10000");
    let mut rules = BTreeMap::new();
    for rule in &file.rules {
        let kind = ActionKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == rule.kind)
            .with_context(|| format!("governance.rules: no proposal kind {:?}", rule.kind))?;
        ensure!(kind != ActionKind::Emergency, "governance.rules: emergencies follow the stewards' rule");
        let weight = match rule.weight.as_str() {
            "validators" => Weight::Validators,
            "members" => Weight::Members,
            other => {
                let token = other.strip_prefix("stake:").with_context(|| {
                    format!("governance.rules {}: weight is validators, members or stake:TOKEN", rule.kind)
                })?;
                let token = TokenId::new(token).map_err(|error| anyhow::anyhow!("{error}"))?;
                ensure!(tokens.iter().any(|known| known.id == token), "governance.rules {}: unknown token", rule.kind);
                Weight::Stake(token)
            }
        };
        ensure!(rule.quorum_percent <= 100, "governance.rules {}: quorum_percent at most 100", rule.kind);
        ensure!(
            (51..=100).contains(&rule.threshold_percent),
            "governance.rules {}: threshold_percent 51..=100",
            rule.kind
        );
        ensure!(
            !matches!(kind, ActionKind::AddValidator | ActionKind::RemoveValidator) || weight == Weight::Validators,
            "governance.rules {}: validator changes are decided by the validators",
            rule.kind
        );
        ensure!(
            rules
                .insert(
                    kind,
                    Rule { weight, quorum_percent: rule.quorum_percent, threshold_percent: rule.threshold_percent }
                )
                .is_none(),
            "governance.rules: {} is listed twice",
            rule.kind
        );
    }
    Ok(Governance {
        members,
        stewards,
        emergency_approvals: file.emergency_approvals,
        emergency_blocks_max: file.emergency_blocks_max,
        validator_change_delay_blocks: delay,
        rules,
    })
}

/// Most members (or stewards) a genesis may name.
pub const MEMBERS_MAX: usize = 4096;

fn parse_key(text: &str) -> anyhow::Result<PublicKey> {
    let key = PublicKey::from_hex(text).map_err(|error| anyhow::anyhow!("key {text:?}: {error}"))?;
    if protocol::keys::verifying_key(&key).is_err() {
        bail!("key {text} is not a valid ed25519 public key");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Keypair;

    #[test]
    fn devnet_genesis_parses_and_hashes_its_bytes() {
        let keys: Vec<PublicKey> = (0..4u8).map(|i| Keypair::from_seed(&[i; 32]).public()).collect();
        let text = Genesis::devnet_text("kos-test", 1_000, &keys, &keys[..1], 5_000);
        let genesis = Genesis::parse(&text).unwrap();
        assert_eq!(genesis.validators.len(), 4);
        assert_eq!(genesis.tokens.len(), 2);
        assert_eq!(genesis.balances.len(), 1);
        let other = Genesis::parse(&format!("{text}\n")).unwrap();
        assert_ne!(genesis.hash, other.hash, "the hash covers the file's bytes");
    }

    #[test]
    fn bad_genesis_files_say_what_is_wrong() {
        let key = Keypair::from_seed(&[1; 32]).public().to_hex();
        let cases = [
            ("network = \"x\"\ntime_ms = 0\nvalidators = []\n", "at least one validator"),
            (
                &format!("network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{key}\"\npower=0\n"),
                "power must be more than 0",
            ),
            (
                &format!(
                    "network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{key}\"\npower=1\n[[validators]]\nname=\"b\"\nkey=\"{key}\"\npower=1\n"
                ),
                "listed twice",
            ),
            (
                &format!(
                    "network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{key}\"\npower=1\n[[balances]]\naccount=\"{key}\"\ntoken=\"gold\"\namount=1\n"
                ),
                "unknown token",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Genesis::parse(text).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }

    /// The genesis supply is the sum of its balances: it must fit in 64 bits and within the token's cap. (It
    /// saturated at 2^64 - 1 before, so two balances of 2^63 made a supply smaller than their sum.)
    #[test]
    fn genesis_balances_must_sum_within_64_bits_and_the_tokens_cap() {
        let one = Keypair::from_seed(&[1; 32]).public().to_hex();
        let two = Keypair::from_seed(&[2; 32]).public().to_hex();
        let head = format!(
            "network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{one}\"\npower=1\n\
             [[tokens]]\nid=\"gold\"\nkind=\"stable\"\nsupply_max=100\n\
             [[tokens]]\nid=\"credit\"\nkind=\"stable\"\n"
        );
        let balance = |account: &str, token: &str, amount: u64| {
            format!("[[balances]]\naccount=\"{account}\"\ntoken=\"{token}\"\namount={amount}\n")
        };
        let half = i64::MAX as u64;
        let cases = [
            (
                format!(
                    "{head}{}{}{}",
                    balance(&one, "credit", half),
                    balance(&two, "credit", half),
                    balance(&two, "credit", 2)
                ),
                "the balances of token credit sum above 2^64 - 1",
            ),
            (format!("{head}{}{}", balance(&one, "gold", 60), balance(&two, "gold", 41)), "exceed its supply_max 100"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Genesis::parse(&text).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
        let within = format!("{head}{}{}", balance(&one, "gold", 60), balance(&two, "gold", 40));
        assert_eq!(Genesis::parse(&within).unwrap().balances.len(), 2);
    }

    /// Every parameter of the genesis is held to the rule PROTOCOL.md's table gives it — the governable ones to
    /// the rule governance is held to — and the block limits to what the network can carry.
    #[test]
    fn genesis_parameters_are_held_to_their_rules() {
        let key = Keypair::from_seed(&[1; 32]).public();
        let text = Genesis::devnet_text("kos-test", 1_000, &[key], &[key], 5_000);
        let with =
            |params: &str| text.replacen("\n[[validators]]", &format!("\n[params]\n{params}\n\n[[validators]]"), 1);
        for (params, expected) in [
            ("jury_period_ms = 0", "params.jury_period_ms: 0 is out of its range"),
            ("maintenance_quest_bids_ms = 0", "params.maintenance_quest_bids_ms: 0"),
            ("maintenance_quest_work_ms = 0", "params.maintenance_quest_work_ms: 0"),
            ("essential_share_max_ppm = 1000001", "params.essential_share_max_ppm: 1000001"),
            ("block_bytes_max = 4194305", "params.block_bytes_max: at most 4194304"),
            ("block_entries_max = 100001", "params.block_entries_max: 1 to 100000"),
        ] {
            let error = format!("{:#}", Genesis::parse(&with(params)).unwrap_err());
            assert!(error.contains(expected), "{params}: {error}");
        }
        for params in ["block_entries_max = 100000\nblock_bytes_max = 4194304", "jury_period_ms = 1"] {
            assert!(Genesis::parse(&with(params)).is_ok(), "{params}");
        }
    }

    /// A pool rule's trust level is one of the four names, and only where readings check deliveries.
    #[test]
    fn a_pool_rules_trust_level_is_named_and_asked_only_of_energy_interval_pools() {
        let key = Keypair::from_seed(&[1; 32]).public();
        let text = Genesis::devnet_text("kos-test", 1_000, &[key], &[key], 5_000);
        let rule = |pool: &str, trust: &str| format!("{text}\n[[pools]]\npool = \"{pool}\"\ntrust = \"{trust}\"\n");
        let genesis = Genesis::parse(&rule("energy/credit/u33/*", "device+balanced")).unwrap();
        assert_eq!(genesis.pools[0].trust, protocol::message::Trust::DeviceBalanced);
        assert!(Genesis::parse(&rule("*/credit/*/900", "balanced")).is_ok());
        assert!(Genesis::parse(&rule("compute/credit/*/*", "node")).is_ok());
        let cases = [
            (rule("energy/credit/*/*", "feeder"), "is not node, device, balanced or device+balanced"),
            (rule("compute/credit/*/*", "device"), "only energy interval pools"),
            (rule("energy/credit/*/0", "balanced"), "only energy interval pools"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Genesis::parse(&text).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }
}
