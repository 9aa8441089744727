//! The state's keys (PROTOCOL.md §10): every prefix byte, in one place, and the functions that build keys.
//! [`PREFIXES`] lists them all; a test checks that no two share a byte.

use protocol::types::TokenId;
use protocol::{Id, PublicKey};

pub(super) const BALANCE: u8 = b'b';
pub(super) const SUPPLY: u8 = b's';
pub(super) const VALIDATOR: u8 = b'v';
pub(super) const PARAM: u8 = b'p';
pub(super) const INCLUDED: u8 = b'x';
pub(super) const INCLUDED_BY_EXPIRY: u8 = b'X';
pub(super) const CANCELLED: u8 = b'c';
pub(super) const CANCELLED_BY_EXPIRY: u8 = b'C';
pub(super) const FILLED: u8 = b'f';
pub(super) const FILLED_BY_EXPIRY: u8 = b'F';
pub(super) const ESCROW: u8 = b'e';
pub(super) const ESCROW_BY_RELEASE: u8 = b'q';
pub(super) const METER: u8 = b'm';
pub(super) const ANCHOR: u8 = b'a';
pub(super) const REPUTATION: u8 = b'r';
pub(super) const PROPOSAL: u8 = b'g';
pub(super) const PROPOSAL_BY_END: u8 = b'G';
pub(super) const BALLOT: u8 = b'w';
pub(super) const FLOW: u8 = b'l';
pub(super) const SOLD: u8 = b'o';
pub(super) const BOUGHT: u8 = b'u';
pub(super) const FORGET: u8 = b'z';
pub(super) const PRICE_INDEX: u8 = b'i';
pub(super) const GUILD: u8 = b'k';
pub(super) const GUILD_SPEND: u8 = b'd';
pub(super) const GUILD_APPROVAL: u8 = b'y';
pub(super) const ASSET: u8 = b'n';
pub(super) const ASSET_BY_METER: u8 = b'N';
pub(super) const MEMBER: u8 = b'M';
pub(super) const VALIDATOR_PENDING: u8 = b'P';
pub(super) const OVERRIDE: u8 = b'O';
pub(super) const OVERRIDE_BY_END: u8 = b'Q';
pub(super) const FROZEN: u8 = b'Z';
pub(super) const FUEL_CAP: u8 = b'U';
pub(super) const DEVICE_CAP: u8 = b'D';
pub(super) const ISLAND_ORDER: u8 = b'I';
pub(super) const ALERT: u8 = b'A';
pub(super) const BASE_PRICE: u8 = b'B';
pub(super) const BASE_PRICE_HISTORY: u8 = b'H';
pub(super) const ESSENTIAL_BOUGHT: u8 = b'E';
pub(super) const ISSUANCE: u8 = b'T';
pub(super) const MEMBER_COUNT: u8 = b'S';
pub(super) const REDISTRIBUTION: u8 = b'J';
pub(super) const POOL_FEE: u8 = b'K';
pub(super) const REPORT: u8 = b'R';
pub(super) const JOB: u8 = b'j';
pub(super) const JOB_BID: u8 = b'L';
pub(super) const JOB_DUE: u8 = b'V';
pub(super) const JOB_JUROR_VOTE: u8 = b'Y';
pub(super) const JOB_BY_METER: u8 = b'h';
pub(super) const QUEST_BY_ASSET: u8 = b't';
pub(super) const JOBS_OPEN: u8 = b'W';
/// A pair of accounts' last epoch in which a delivery counted (every letter is taken).
pub(super) const PAIR: u8 = b'2';
pub(super) const BARTER_LEG: u8 = b'3';
pub(super) const BARTER_LEG_DUE: u8 = b'4';
/// A device key's asset: `5 || kind code || key` → the asset's id.
pub(super) const DEVICE_KEY: u8 = b'5';
/// A cell's feeder: `6 || cell` → the feeder asset's id.
pub(super) const FEEDER: u8 = b'6';
/// A member asset's readings in a cell's interval.
pub(super) const CELL_MEMBER: u8 = b'7';
/// A cell's interval: the feeder's reading and the close's outcome.
pub(super) const CELL_INTERVAL: u8 = b'8';
/// An energy escrow of a cell's pool, by the cell's interval (what a feeder case holds).
pub(super) const CELL_ESCROW: u8 = b'9';
/// Due closes of cells' intervals and ends of cases' juries.
pub(super) const CELL_DUE: u8 = b'0';
/// A case on a cell's readings.
pub(super) const CELL_CASE: u8 = b'1';
/// The scheduled upgrade of the protocol version (PROTOCOL.md §10, *Protocol versions*).
pub(super) const UPGRADE: u8 = b'+';
/// The upgrade in force (absent: version 1).
pub(super) const UPGRADED: u8 = b'^';

/// Every prefix, with its name (for the check that they are distinct).
#[cfg(test)]
pub(super) const PREFIXES: &[(&str, u8)] = &[
    ("UPGRADE", UPGRADE),
    ("UPGRADED", UPGRADED),
    ("BALANCE", BALANCE),
    ("SUPPLY", SUPPLY),
    ("VALIDATOR", VALIDATOR),
    ("PARAM", PARAM),
    ("INCLUDED", INCLUDED),
    ("INCLUDED_BY_EXPIRY", INCLUDED_BY_EXPIRY),
    ("CANCELLED", CANCELLED),
    ("CANCELLED_BY_EXPIRY", CANCELLED_BY_EXPIRY),
    ("FILLED", FILLED),
    ("FILLED_BY_EXPIRY", FILLED_BY_EXPIRY),
    ("ESCROW", ESCROW),
    ("ESCROW_BY_RELEASE", ESCROW_BY_RELEASE),
    ("METER", METER),
    ("ANCHOR", ANCHOR),
    ("REPUTATION", REPUTATION),
    ("PROPOSAL", PROPOSAL),
    ("PROPOSAL_BY_END", PROPOSAL_BY_END),
    ("BALLOT", BALLOT),
    ("FLOW", FLOW),
    ("SOLD", SOLD),
    ("BOUGHT", BOUGHT),
    ("FORGET", FORGET),
    ("PRICE_INDEX", PRICE_INDEX),
    ("GUILD", GUILD),
    ("GUILD_SPEND", GUILD_SPEND),
    ("GUILD_APPROVAL", GUILD_APPROVAL),
    ("ASSET", ASSET),
    ("ASSET_BY_METER", ASSET_BY_METER),
    ("MEMBER", MEMBER),
    ("VALIDATOR_PENDING", VALIDATOR_PENDING),
    ("OVERRIDE", OVERRIDE),
    ("OVERRIDE_BY_END", OVERRIDE_BY_END),
    ("FROZEN", FROZEN),
    ("FUEL_CAP", FUEL_CAP),
    ("DEVICE_CAP", DEVICE_CAP),
    ("ISLAND_ORDER", ISLAND_ORDER),
    ("ALERT", ALERT),
    ("BASE_PRICE", BASE_PRICE),
    ("BASE_PRICE_HISTORY", BASE_PRICE_HISTORY),
    ("ESSENTIAL_BOUGHT", ESSENTIAL_BOUGHT),
    ("ISSUANCE", ISSUANCE),
    ("MEMBER_COUNT", MEMBER_COUNT),
    ("REDISTRIBUTION", REDISTRIBUTION),
    ("POOL_FEE", POOL_FEE),
    ("REPORT", REPORT),
    ("JOB", JOB),
    ("JOB_BID", JOB_BID),
    ("JOB_DUE", JOB_DUE),
    ("JOB_JUROR_VOTE", JOB_JUROR_VOTE),
    ("JOB_BY_METER", JOB_BY_METER),
    ("QUEST_BY_ASSET", QUEST_BY_ASSET),
    ("JOBS_OPEN", JOBS_OPEN),
    ("PAIR", PAIR),
    ("BARTER_LEG", BARTER_LEG),
    ("BARTER_LEG_DUE", BARTER_LEG_DUE),
    ("DEVICE_KEY", DEVICE_KEY),
    ("FEEDER", FEEDER),
    ("CELL_MEMBER", CELL_MEMBER),
    ("CELL_INTERVAL", CELL_INTERVAL),
    ("CELL_ESCROW", CELL_ESCROW),
    ("CELL_DUE", CELL_DUE),
    ("CELL_CASE", CELL_CASE),
];

pub(super) fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|part| part.len()).sum::<usize>());
    key.push(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// The entry id of a replay guard's key (`x` ‖ id).
pub(super) fn included_id(key: &[u8]) -> Option<Id> {
    match key {
        [INCLUDED, id @ ..] => <[u8; 32]>::try_from(id).ok().map(Id),
        _ => None,
    }
}

pub(super) fn balance_key(account: &PublicKey, token: &TokenId) -> Vec<u8> {
    key(BALANCE, &[account.as_bytes(), token.as_str().as_bytes()])
}

pub(super) fn price_index_key(pool: &protocol::message::PoolId, period_s: u64) -> Vec<u8> {
    key(PRICE_INDEX, &[pool.digest().as_bytes(), &period_s.to_be_bytes()])
}

pub(super) fn interval_key(prefix: u8, account: &PublicKey, start_s: u64) -> Vec<u8> {
    key(prefix, &[account.as_bytes(), &start_s.to_be_bytes()])
}

#[cfg(test)]
mod tests {
    use super::PREFIXES;

    #[test]
    fn no_two_kinds_of_key_share_a_prefix() {
        let mut bytes: Vec<u8> = PREFIXES.iter().map(|(_, byte)| *byte).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), PREFIXES.len());
    }
}
