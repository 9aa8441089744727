//! Governance: parameters, validators, members, proposals and their ballots, overrides in force, redistributions.

use protocol::{Id, PublicKey};

use super::read::{Kv, prefixed, value};
use super::{
    BALLOT, DEVICE_CAP, FROZEN, FUEL_CAP, ISLAND_ORDER, InForce, MEMBER, OVERRIDE, OverrideState, PARAM, PROPOSAL,
    ProposalState, REDISTRIBUTION, VALIDATOR, VALIDATOR_PENDING, key,
};

/// Reads of governance (see [`Kv`]).
pub trait GovernanceReads: Kv {
    /// A governable parameter's value (PROTOCOL.md §10; 0 for a name that is not one).
    fn param(&self, name: &str) -> u64 {
        value(self, &key(PARAM, &[name.as_bytes()])).unwrap_or(0)
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
        prefixed(self, &key(BALLOT, &[proposal.as_bytes()]))
            .filter_map(|(key, value)| {
                let (choice, weight): (u8, u64) = super::decode(&value)?;
                Some((PublicKey(key.get(33..65)?.try_into().ok()?), choice, weight))
            })
            .collect()
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
