//! Governance: parameters, validators, members, proposals and their ballots, overrides in force, redistributions.

use super::*;
use protocol::{Id, PublicKey};

use super::read::{Kv, prefixed, value};
use super::{
    BALLOT, DEVICE_CAP, FROZEN, FUEL_CAP, ISLAND_ORDER, InForce, MEMBER, OVERRIDE, OverrideState, PARAM, PROPOSAL,
    ProposalState, REDISTRIBUTION, UPGRADE, UPGRADED, VALIDATOR, VALIDATOR_PENDING, key,
};

/// Why a governance entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceError {
    #[error("an emergency override lasts longer than allowed")]
    EmergencyTooLong,
    #[error("the genesis names no stewards for emergencies")]
    NoStewards,
    #[error("an override lasts at most 1000000 blocks")]
    OverrideTooLong,
    #[error("too many proposals end at that height; choose another period")]
    TooManyEnding,
    /// A `set-parameter` proposal that could never take effect (PROTOCOL.md §10, the genesis file's `[params]`).
    #[error("parameter {name} cannot be set to {value}: {why}")]
    NotSettable { name: String, value: u64, why: &'static str },
    #[error("an upgrade to version {version} is not above the version in force ({in_force})")]
    UpgradeVersion { version: u8, in_force: u8 },
    #[error("an upgrade at height {height} comes before the vote ends (block {end_height})")]
    UpgradeTooSoon { height: u64, end_height: u64 },
}

/// An upgrade of the protocol version, as the state keeps it (`+` scheduled, `^` in force).
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct UpgradeState {
    pub version: u8,
    pub height: u64,
    pub info: String,
}

/// Reads of governance (see [`Kv`]).
pub trait GovernanceReads: Kv {
    /// A governable parameter's value (PROTOCOL.md §10; 0 for a name that is not one).
    fn param(&self, name: &str) -> u64 {
        value(self, &key(PARAM, &[name.as_bytes()])).unwrap_or(0)
    }

    /// The protocol version in force for the next block (PROTOCOL.md §10, *Protocol versions*): 1 until an upgrade.
    fn protocol_version(&self) -> u8 {
        self.upgrade_in_force().map_or(1, |upgrade| upgrade.version)
    }

    /// The upgrade in force, if one took effect.
    fn upgrade_in_force(&self) -> Option<UpgradeState> {
        value(self, &key(UPGRADED, &[]))
    }

    /// The upgrade scheduled and not yet in force.
    fn scheduled_upgrade(&self) -> Option<UpgradeState> {
        value(self, &key(UPGRADE, &[]))
    }

    /// The validators (key, power) that certify the next block, in key order.
    fn validators(&self) -> Vec<(PublicKey, u64)> {
        prefixed(self, &[VALIDATOR])
            .filter_map(|(key, value)| Some((PublicKey(key.get(1..33)?.try_into().ok()?), super::decode(&value)?)))
            .collect()
    }

    /// Validator changes passed and waiting for their height: (height, key, power; 0 removes).
    fn validator_changes(&self) -> Vec<(u64, PublicKey, u64)> {
        prefixed(self, &[VALIDATOR_PENDING])
            .filter_map(|(key, value)| {
                let height = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
                Some((height, PublicKey(key.get(9..41)?.try_into().ok()?), super::decode(&value)?))
            })
            .collect()
    }

    /// Whether an account is a one-account-one-vote member.
    fn is_member(&self, account: &PublicKey) -> bool {
        self.get(&key(MEMBER, &[account.as_bytes()])).is_some()
    }

    fn proposal(&self, id: &Id) -> Option<ProposalState> {
        value(self, &key(PROPOSAL, &[id.as_bytes()]))
    }

    /// Every proposal the state holds (open and closed), by id.
    fn proposals(&self) -> impl Iterator<Item = (Id, ProposalState)> + '_ {
        prefixed(self, &[PROPOSAL])
            .filter_map(|(key, value)| Some((Id(key.get(1..33)?.try_into().ok()?), super::decode(&value)?)))
    }

    /// The ballots cast on a proposal: voter, choice (0 no, 1 yes, 2 abstain) and weight.
    fn ballots(&self, proposal: &Id) -> Vec<(PublicKey, u8, u64)> {
        self.ballots_by_voter(proposal).collect()
    }

    /// The ballots cast on a proposal in voter order, read as they are taken (a reader may stop early).
    fn ballots_by_voter(&self, proposal: &Id) -> impl Iterator<Item = (PublicKey, u8, u64)> + '_ {
        prefixed(self, &key(BALLOT, &[proposal.as_bytes()])).filter_map(|(key, value)| {
            let (choice, weight): (u8, u64) = super::decode(&value)?;
            Some((PublicKey(key.get(33..65)?.try_into().ok()?), choice, weight))
        })
    }

    /// The `count` proposals that end last, newest end first (ties: in id order), held `count` at a time while
    /// every proposal is looked at once.
    fn proposals_ending_last(&self, count: usize) -> Vec<(Id, ProposalState)> {
        type Rank = (u64, std::cmp::Reverse<Id>);
        let mut kept: std::collections::BTreeMap<Rank, ProposalState> = std::collections::BTreeMap::new();
        for (id, proposal) in self.proposals() {
            let rank = (proposal.end_height, std::cmp::Reverse(id));
            if kept.len() == count && kept.first_key_value().is_none_or(|(lowest, _)| *lowest >= rank) {
                continue;
            }
            kept.insert(rank, proposal);
            if kept.len() > count {
                kept.pop_first();
            }
        }
        kept.into_iter().rev().map(|((_, std::cmp::Reverse(id)), proposal)| (id, proposal)).collect()
    }

    /// The overrides in force, by the id of the proposal that passed them.
    fn overrides(&self) -> impl Iterator<Item = (Id, OverrideState)> + '_ {
        prefixed(self, &[OVERRIDE])
            .filter_map(|(key, value)| Some((Id(key.get(1..33)?.try_into().ok()?), super::decode(&value)?)))
    }

    /// Whether an account's trading is frozen by an override in force.
    fn frozen(&self, account: &PublicKey) -> Option<InForce> {
        value(self, &key(FROZEN, &[account.as_bytes()]))
    }

    /// The fuel cap (units per second in every class) an override puts on an agent.
    fn fuel_cap(&self, account: &PublicKey) -> Option<InForce> {
        value(self, &key(FUEL_CAP, &[account.as_bytes()]))
    }

    /// The import and export cap (W, in `first` and `second`) an override puts on a meter of an account.
    fn device_cap(&self, account: &PublicKey, meter: &str) -> Option<InForce> {
        value(self, &key(DEVICE_CAP, &[account.as_bytes(), meter.as_bytes()]))
    }

    /// Whether an override orders a cell's microgrid into island mode.
    fn island_ordered(&self, cell: &str) -> Option<InForce> {
        value(self, &key(ISLAND_ORDER, &[cell.as_bytes()]))
    }

    /// The redistributions of the last 30 days, oldest first: (height, token, accounts paid, share each, time).
    fn redistributions(&self) -> Vec<(u64, String, u64, u64, u64)> {
        prefixed(self, &[REDISTRIBUTION])
            .filter_map(|(key, value)| {
                let height = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
                let (token, accounts, share, time_ms): (String, u64, u64, u64) = super::decode(&value)?;
                Some((height, token, accounts, share, time_ms))
            })
            .collect()
    }
}

impl<K: Kv + ?Sized> GovernanceReads for K {}

/// Execution of governance entries.
impl Pending<'_> {
    /// A proposal: checked against the rules of its action, opened until its period ends.
    pub(super) fn propose(
        &mut self,
        author: &PublicKey,
        id: &Id,
        proposal: &protocol::message::Proposal,
    ) -> Result<(), EntryError> {
        let author = *author;
        let period_max = self.base.genesis.params.voting_period_blocks_max;
        if proposal.voting_period_blocks == 0 || proposal.voting_period_blocks > period_max {
            return Err(EntryError::VotingPeriod(period_max));
        }
        match &proposal.action {
            Action::Emergency(measure) => {
                let governance = &self.base.genesis.governance;
                if governance.stewards.is_empty() {
                    return Err(EntryError::Governance(GovernanceError::NoStewards));
                }
                if measure.duration_blocks > governance.emergency_blocks_max {
                    return Err(EntryError::Governance(GovernanceError::EmergencyTooLong));
                }
            }
            Action::Override(measure) if measure.duration_blocks > OVERRIDE_BLOCKS_MAX => {
                return Err(EntryError::Governance(GovernanceError::OverrideTooLong));
            }
            // One rule for what may be set: the one that applies it when the proposal passes.
            Action::SetParameter(set) => {
                if let Err(why) = self.base.genesis.settable(set.name.as_str(), set.value) {
                    return Err(EntryError::Governance(GovernanceError::NotSettable {
                        name: set.name.as_str().to_owned(),
                        value: set.value,
                        why,
                    }));
                }
            }
            _ => {}
        }
        let end_height = self.context.height.saturating_add(u64::from(proposal.voting_period_blocks));
        if let Action::Upgrade(upgrade) = &proposal.action {
            let in_force = self.protocol_version();
            if upgrade.version <= in_force {
                return Err(EntryError::Governance(GovernanceError::UpgradeVersion {
                    version: upgrade.version,
                    in_force,
                }));
            }
            if upgrade.height <= end_height {
                return Err(EntryError::Governance(GovernanceError::UpgradeTooSoon {
                    height: upgrade.height,
                    end_height,
                }));
            }
        }
        // Closing proposals is end-of-block work: a bounded number may end at one height.
        let ending = key(PROPOSAL_BY_END, &[&end_height.to_be_bytes()]);
        let after = key(PROPOSAL_BY_END, &[&end_height.saturating_add(1).to_be_bytes()]);
        if self.scan(ending, after).len() >= PROPOSALS_ENDING_MAX {
            return Err(EntryError::Governance(GovernanceError::TooManyEnding));
        }
        let record = ProposalState {
            author,
            action: proposal.action.clone(),
            end_height,
            yes: 0,
            no: 0,
            abstain: 0,
            status: ProposalStatus::Open,
        };
        self.write(key(PROPOSAL, &[id.as_bytes()]), &record);
        self.put(key(PROPOSAL_BY_END, &[&end_height.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
        Ok(())
    }

    /// The rule a proposal is decided by: who votes, the weight of all who could, the quorum and the threshold
    /// in percent (an emergency: the stewards, one each, and all of `emergency_approvals` must say yes).
    pub(super) fn rule_of(&self, action: &Action) -> (Weight, u64, u64, u64) {
        let governance = &self.base.genesis.governance;
        if let Action::Emergency(_) = action {
            // Passed when k stewards said yes (100 % of k); never by the end of the period (no quorum reaches 101 %).
            return (Weight::Stewards, u64::from(governance.emergency_approvals), 101, 100);
        }
        let rule = governance.rule(action.kind(), self.param("governance_threshold_percent"));
        let total = match &rule.weight {
            genesis::Weight::Validators => self.validators().iter().map(|(_, power)| power).sum(),
            genesis::Weight::Members => self.read(&key(MEMBER_COUNT, &[])).unwrap_or(0),
            // Tokens that can vote: the supply less the commons' (no key signs for it).
            genesis::Weight::Stake(token) => {
                let supply: u64 = self.read(&key(SUPPLY, &[token.as_str().as_bytes()])).unwrap_or(0);
                supply.saturating_sub(self.balance(&COMMONS, token))
            }
        };
        let weight = match rule.weight {
            genesis::Weight::Validators => Weight::Validators,
            genesis::Weight::Members => Weight::Members,
            genesis::Weight::Stake(token) => Weight::Stake(token),
        };
        (weight, total, rule.quorum_percent, rule.threshold_percent)
    }

    pub(super) fn vote(&mut self, voter: &PublicKey, vote: &protocol::message::Vote) -> Result<(), EntryError> {
        let (proposal_id, choice) = (&vote.proposal, vote.choice);
        let proposal_key = key(PROPOSAL, &[proposal_id.as_bytes()]);
        let mut proposal: ProposalState = self
            .read(&proposal_key)
            .filter(|p: &ProposalState| p.status == ProposalStatus::Open)
            .ok_or(EntryError::ProposalClosed(*proposal_id))?;
        let ballot_key = key(BALLOT, &[proposal_id.as_bytes(), voter.as_bytes()]);
        if self.get(&ballot_key).is_some() {
            return Err(EntryError::AlreadyVoted(*voter));
        }
        let (weight, total, quorum, threshold) = self.rule_of(&proposal.action);
        let power: u64 = match &weight {
            Weight::Validators => self.read(&key(VALIDATOR, &[voter.as_bytes()])),
            Weight::Members => self.get(&key(MEMBER, &[voter.as_bytes()])).map(|_| 1),
            Weight::Stewards => self.base.genesis.governance.stewards.contains(voter).then_some(1),
            Weight::Stake(token) => {
                // The stake the vote names is locked: it returns to the voter when the proposal closes, so no token
                // votes twice (the rest of the balance stays free for fees and trades).
                if vote.stake > 0 {
                    self.move_tokens(voter, &vote_lock_account(proposal_id), token, vote.stake)?;
                }
                (vote.stake > 0).then_some(vote.stake)
            }
        }
        .ok_or(EntryError::NotAVoter(*voter))?;
        self.write(ballot_key, &(choice as u8, power));
        match choice {
            Choice::Yes => proposal.yes = proposal.yes.saturating_add(power),
            Choice::No => proposal.no = proposal.no.saturating_add(power),
            Choice::Abstain => proposal.abstain = proposal.abstain.saturating_add(power),
        }
        // Passed already when its yes votes alone are the threshold, and the quorum, of all who could vote.
        let early = u128::from(threshold.max(quorum.min(100)));
        if total > 0 && u128::from(proposal.yes) * 100 >= u128::from(total) * early {
            self.close(proposal_id, &mut proposal, true);
        }
        self.write(proposal_key, &proposal);
        Ok(())
    }

    /// Closes a proposal: passed (its action is enacted now) or rejected; staked votes return to their voters.
    pub(super) fn close(&mut self, id: &Id, proposal: &mut ProposalState, passed: bool) {
        proposal.status = if passed { ProposalStatus::Passed } else { ProposalStatus::Rejected };
        if passed {
            self.enact(id, &proposal.action);
            self.events.push(Event::ProposalPassed(*id));
        } else {
            self.events.push(Event::ProposalRejected(*id));
        }
        if let (Weight::Stake(token), _, _, _) = self.rule_of(&proposal.action) {
            let start = key(BALLOT, &[id.as_bytes()]);
            let end = key(BALLOT, &[id.as_bytes(), &[0xff; 33]]);
            for (ballot, value) in self.scan(start, end) {
                let (Some(voter), Some((_, stake))) = (
                    ballot.get(33..65).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(PublicKey),
                    decode::<(u8, u64)>(&value),
                ) else {
                    continue;
                };
                // The lock holds exactly the stakes voted; a failure here would be a bug, and leaves them locked.
                let _ = self.move_tokens(&vote_lock_account(id), &voter, &token, stake);
            }
        }
    }

    pub(super) fn validators(&self) -> Vec<(PublicKey, u64)> {
        let mut validators: BTreeMap<PublicKey, u64> = self.base.validators().into_iter().collect();
        for (key, value) in self.writes.range(vec![VALIDATOR]..vec![VALIDATOR + 1]) {
            let Some(account) = key.get(1..33).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) else { continue };
            match value.as_ref().and_then(|bytes| decode::<u64>(bytes)) {
                Some(power) => validators.insert(PublicKey(account), power),
                None => validators.remove(&PublicKey(account)),
            };
        }
        validators.into_iter().collect()
    }

    /// Applies a passed proposal's action. A validator change is scheduled for `validator_change_delay_blocks`
    /// later (announced by an event), and then applied unless it would leave no validator, too many, or a total
    /// power that overflows (the proposal still passed; its effect is void).
    pub(super) fn enact(&mut self, id: &Id, action: &Action) {
        let height = self.context.height;
        match action {
            Action::Text(_) => {}
            Action::SetParameter(set) => {
                let mut params = self.base.genesis.params.clone();
                if params.set(set.name.as_str(), set.value) {
                    self.write(key(PARAM, &[set.name.as_str().as_bytes()]), &set.value);
                }
            }
            Action::AddValidator(_) | Action::RemoveValidator(_) => {
                let at_height = height.saturating_add(self.base.genesis.governance.validator_change_delay_blocks);
                let (validator, power) = match action {
                    Action::AddValidator(add) => (add.key, add.power),
                    Action::RemoveValidator(remove) => (remove.key, 0),
                    _ => return,
                };
                self.write(key(VALIDATOR_PENDING, &[&at_height.to_be_bytes(), validator.as_bytes()]), &power);
                self.events.push(Event::ValidatorsChanging { proposal: *id, at_height });
            }
            Action::PoolFee(fee) => self.write(key(POOL_FEE, &[fee.pool.digest().as_bytes()]), fee),
            Action::Upgrade(upgrade) => {
                // Void when, by now, it would not raise the version in force or its height is not after this block
                // (another upgrade took effect while it was voted on); otherwise it replaces one scheduled.
                if upgrade.version <= self.protocol_version() || upgrade.height <= height {
                    return;
                }
                let record = UpgradeState {
                    version: upgrade.version,
                    height: upgrade.height,
                    info: upgrade.info.as_str().to_owned(),
                };
                self.write(key(UPGRADE, &[]), &record);
                self.events.push(Event::UpgradeScheduled {
                    proposal: *id,
                    version: upgrade.version,
                    at_height: upgrade.height,
                });
            }
            Action::Quest(job) => {
                // The job is the proposal's: its id, the commons its poster. A quest that can no longer be posted
                // (its bidding over, say) is void.
                let mark = self.undo.len();
                if self.post_job(&COMMONS, id, job, true).is_err() {
                    self.rollback(mark);
                }
            }
            Action::IssuanceRule(rule) => {
                // Only a token of the genesis; a new token is a new network.
                if self.base.genesis.token(&rule.token).is_some() {
                    self.write(key(ISSUANCE, &[rule.token.as_str().as_bytes()]), rule);
                }
            }
            Action::AdmitMember(admit) => {
                let member_key = key(MEMBER, &[admit.key.as_bytes()]);
                let count: u64 = self.read(&key(MEMBER_COUNT, &[])).unwrap_or(0);
                if self.get(&member_key).is_none() && count < MEMBERS_MAX {
                    self.write(member_key, &1u8);
                    self.write(key(MEMBER_COUNT, &[]), &(count + 1));
                }
            }
            Action::Override(measure) | Action::Emergency(measure) => {
                let until_height = height.saturating_add(u64::from(measure.duration_blocks));
                let (first, second) = limits_of(&measure.measure);
                // The latest override on the same target replaces an earlier one (which returns if it outlives it).
                self.write(lookup_key(&measure.measure), &InForce { by: *id, until_height, first, second });
                let record = OverrideState {
                    measure: measure.measure.clone(),
                    from_height: height,
                    until_height,
                    emergency: u8::from(matches!(action, Action::Emergency(_))),
                };
                self.write(key(OVERRIDE, &[id.as_bytes()]), &record);
                self.put(key(OVERRIDE_BY_END, &[&until_height.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
                self.events.push(Event::OverrideInForce { proposal: *id, until_height });
            }
        }
    }

    /// The upgrade scheduled for the next height takes effect: the next block carries its version.
    pub(super) fn apply_upgrade(&mut self) {
        let Some(upgrade) = self.read::<UpgradeState>(&key(UPGRADE, &[])) else { return };
        if upgrade.height > self.context.height.saturating_add(1) {
            return;
        }
        self.delete(key(UPGRADE, &[]));
        // One whose height passed while it was scheduled (it cannot: the proposal's rule) is dropped.
        if upgrade.height == self.context.height.saturating_add(1) {
            self.events.push(Event::Upgraded { version: upgrade.version, at_height: upgrade.height });
            self.write(key(UPGRADED, &[]), &upgrade);
        }
    }

    /// Applies the validator changes due at the next height.
    pub(super) fn change_validators(&mut self) {
        for pending in self.due(VALIDATOR_PENDING, self.context.height.saturating_add(1)) {
            let power: u64 = self.read(&pending).unwrap_or(0);
            self.delete(pending.clone());
            let Some(validator) = pending.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(PublicKey)
            else {
                continue;
            };
            let validators = self.validators();
            let known = validators.iter().any(|(key, _)| *key == validator);
            if power == 0 {
                if validators.len() > 1 && known {
                    self.delete(key(VALIDATOR, &[validator.as_bytes()]));
                }
                continue;
            }
            let others: u128 =
                validators.iter().filter(|(key, _)| *key != validator).map(|(_, power)| u128::from(*power)).sum();
            if (known || validators.len() < VALIDATORS_MAX)
                && others + u128::from(power) <= u128::from(u64::MAX / 1000)
                && protocol::keys::verifying_key(&validator).is_ok()
            {
                self.write(key(VALIDATOR, &[validator.as_bytes()]), &power);
            }
        }
    }

    /// Lifts the overrides whose last block this is.
    pub(super) fn expire_overrides(&mut self) {
        for index_key in self.due(OVERRIDE_BY_END, self.context.height) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let override_key = key(OVERRIDE, &[id.as_bytes()]);
            let Some(record) = self.read::<OverrideState>(&override_key) else { continue };
            self.delete(override_key);
            let lookup = lookup_key(&record.measure);
            // Only if no later override on the same target replaced it; then the latest other one still in force on
            // the target (a long community freeze outlives a short emergency one) takes its place.
            if self.read::<InForce>(&lookup).is_some_and(|in_force| in_force.by == id) {
                let same_target = |other: &OverrideState| lookup_key(&other.measure) == lookup;
                let successor = self
                    .scan(vec![OVERRIDE], vec![OVERRIDE + 1])
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let other_id = Id(key.get(1..33)?.try_into().ok()?);
                        let other: OverrideState = decode(&value)?;
                        (same_target(&other) && other.until_height > self.context.height).then_some((other_id, other))
                    })
                    .max_by_key(|(other_id, other)| (other.from_height, *other_id));
                match successor {
                    Some((other_id, other)) => {
                        let (first, second) = limits_of(&other.measure);
                        let value = InForce { by: other_id, until_height: other.until_height, first, second };
                        self.write(lookup, &value);
                    }
                    None => self.delete(lookup),
                }
            }
            self.events.push(Event::OverrideExpired(id));
        }
    }
}
