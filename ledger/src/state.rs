//! The ledger's state machine: deterministic, integer arithmetic, no IO.
//!
//! The state is a sorted map of byte keys to byte values (layout in PROTOCOL.md §10). A block's entries are
//! executed against it in order; an entry that breaks a rule makes the whole block invalid (a proposer only
//! includes entries that execute, see [`State::build`]). The state root commits to every key and value with a
//! lattice hash (the construction of Solana's SIMD-0215, with blake3): each pair contributes
//! `blake3_xof("kos/v1/kv" || 0x00 || u32be(len k) || k || v)[..2048]` read as 1024 little-endian u16 lanes, and the
//! lattice is the lane-wise sum mod 2^16, so a block updates the root in time proportional to what it changes.
//! `state_root = blake3("kos/v1/state" || 0x00 || lattice)`.
//!
//! Invariants (tested in `tests/it/state.rs`): a token's supply equals the sum of its balances and escrows, and
//! changes only through genesis, `Mint`, `Burn` and the issuance rules of anchored readings; no balance goes below
//! zero (balances are `u64` and every debit is checked); an escrow is released exactly once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::codec;
use protocol::envelope::Envelope;
use protocol::message::{Action, Body, Choice, Kind, Offer, Settlement, Side};
use protocol::types::TokenId;
use protocol::{Id, PublicKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::genesis::{Genesis, Params, VALIDATORS_MAX};
use crate::hash::{self, Hash};

/// The account that receives fees and escrow penalties: the all-zero key, for which nobody can sign.
pub const COMMONS: PublicKey = PublicKey([0; 32]);

const LANES: usize = 1024;

/// An entry broke a rule of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry is not valid: {0}")]
    Invalid(String),
    #[error("{0} messages are not ledger entries")]
    NotAnEntry(&'static str),
    #[error("entry {0} is already on the ledger")]
    Duplicate(Id),
    #[error("{account} has {balance} {token}, needs {needed}")]
    InsufficientFunds { account: PublicKey, token: TokenId, balance: u64, needed: u64 },
    #[error("token {0} does not exist")]
    UnknownToken(TokenId),
    #[error("{0} may not mint this token")]
    NotIssuer(PublicKey),
    #[error("minting {amount} would exceed the supply cap {cap}")]
    SupplyCap { amount: u64, cap: u64 },
    #[error("offer {0} expired before this block")]
    OfferExpired(Id),
    #[error("offer {0} was cancelled")]
    OfferCancelled(Id),
    #[error("offer {offer} has {left} left, the settlement takes {wanted}")]
    Overfilled { offer: Id, left: u64, wanted: u64 },
    #[error("settlement price is outside an offer's limit")]
    Price,
    #[error("only the author of an offer may cancel it")]
    NotYourOffer,
    #[error("reading for {meter} does not follow the last one (interval or counters go backwards)")]
    ReadingOutOfOrder { meter: String },
    #[error("proposal {0} is unknown or closed")]
    ProposalClosed(Id),
    #[error("{0} is not a validator and may not vote")]
    NotAVoter(PublicKey),
    #[error("{0} has already voted on this proposal")]
    AlreadyVoted(PublicKey),
    #[error("voting period must be 1..={0} blocks")]
    VotingPeriod(u32),
    #[error("amount overflows")]
    Overflow,
}

/// What a block executes in: fixed by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    pub height: u64,
    pub time_ms: u64,
    pub proposer: PublicKey,
}

/// A 2048-byte lattice hash (1024 u16 lanes).
#[derive(Clone, PartialEq, Eq)]
pub struct Lattice(Box<[u16; LANES]>);

impl std::fmt::Debug for Lattice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lattice({})", self.root())
    }
}

impl Default for Lattice {
    fn default() -> Lattice {
        Lattice(Box::new([0; LANES]))
    }
}

impl Lattice {
    fn pair(key: &[u8], value: &[u8]) -> [u16; LANES] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kos/v1/kv\0");
        hasher.update(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(key);
        hasher.update(value);
        let mut bytes = [0u8; LANES * 2];
        hasher.finalize_xof().fill(&mut bytes);
        let mut lanes = [0u16; LANES];
        for (lane, chunk) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
        }
        lanes
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        for (lane, add) in self.0.iter_mut().zip(Lattice::pair(key, value)) {
            *lane = lane.wrapping_add(add);
        }
    }

    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        for (lane, sub) in self.0.iter_mut().zip(Lattice::pair(key, value)) {
            *lane = lane.wrapping_sub(sub);
        }
    }

    pub fn root(&self) -> Hash {
        let mut bytes = Vec::with_capacity(LANES * 2);
        for lane in self.0.iter() {
            bytes.extend_from_slice(&lane.to_le_bytes());
        }
        hash::tagged("kos/v1/state", &[&bytes])
    }
}

/// Changes to the state: key → new value (`None`: deleted).
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The result of executing a block: its writes and the state root after them.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The ids of the entries executed, in block order.
    pub ids: Vec<Id>,
    pub writes: Writes,
    pub state_root: Hash,
    pub lattice: Lattice,
    pub events: Vec<Event>,
}

/// Something a block did, for indexes, the API and reputation (not part of consensus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    EscrowReleased { settlement: Id, to: PublicKey, amount: u64 },
    ProposalPassed(Id),
    ProposalRejected(Id),
}

/// A block built from candidates: the entries kept, their execution, and the candidates refused with why.
#[derive(Debug)]
pub struct Built {
    pub entries: Vec<Vec<u8>>,
    pub executed: Executed,
    pub rejected: Vec<(Vec<u8>, EntryError)>,
}

/// An undo record: a key and what the block's writes held for it before (`None`: nothing).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// The ledger state.
#[derive(Debug, Clone)]
pub struct State {
    genesis: Arc<Genesis>,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    lattice: Lattice,
}

// Key prefixes (PROTOCOL.md §10).
const BALANCE: u8 = b'b';
const SUPPLY: u8 = b's';
const VALIDATOR: u8 = b'v';
const PARAM: u8 = b'p';
const INCLUDED: u8 = b'x';
const INCLUDED_BY_EXPIRY: u8 = b'X';
const CANCELLED: u8 = b'c';
const CANCELLED_BY_EXPIRY: u8 = b'C';
const FILLED: u8 = b'f';
const FILLED_BY_EXPIRY: u8 = b'F';
const ESCROW: u8 = b'e';
const ESCROW_BY_RELEASE: u8 = b'q';
const METER: u8 = b'm';
const ANCHOR: u8 = b'a';
const REPUTATION: u8 = b'r';
const PROPOSAL: u8 = b'g';
const PROPOSAL_BY_END: u8 = b'G';
const BALLOT: u8 = b'w';

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|part| part.len()).sum::<usize>());
    key.push(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn balance_key(account: &PublicKey, token: &TokenId) -> Vec<u8> {
    key(BALANCE, &[account.as_bytes(), token.as_str().as_bytes()])
}

/// An escrowed payment of an energy settlement, released to the seller after the delivery interval.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct Escrow {
    pub buyer: PublicKey,
    pub seller: PublicKey,
    pub token: TokenId,
    pub amount: u64,
    pub release_ms: u64,
}

/// A meter's last anchored reading.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct MeterState {
    pub interval_start_s: u64,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
    pub reading: Id,
}

/// Counters that make an account's track record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct Reputation {
    pub trades: u64,
    pub traded_value: u64,
    pub readings: u64,
    pub barters: u64,
    pub deliveries: u64,
}

/// An open or closed governance proposal.
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct ProposalState {
    pub author: PublicKey,
    pub action: Action,
    pub end_height: u64,
    pub yes: u64,
    pub no: u64,
    pub abstain: u64,
    /// 0 open, 1 passed, 2 rejected.
    pub status: u8,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value)
}

fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    codec::decode(bytes, usize::MAX).ok()
}

impl State {
    /// The state before block 1.
    pub fn genesis(genesis: Arc<Genesis>) -> State {
        let mut state = State { genesis: genesis.clone(), map: BTreeMap::new(), lattice: Lattice::default() };
        let mut writes = Writes::new();
        for validator in &genesis.validators {
            writes.insert(key(VALIDATOR, &[validator.key.as_bytes()]), Some(encode(&validator.power)));
        }
        let mut supplies: BTreeMap<&TokenId, u64> = BTreeMap::new();
        let mut balances: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (account, token, amount) in &genesis.balances {
            let supply = supplies.entry(token).or_default();
            *supply = supply.saturating_add(*amount);
            let balance = balances.entry(balance_key(account, token)).or_default();
            *balance = balance.saturating_add(*amount);
        }
        for token in &genesis.tokens {
            let supply = supplies.get(&token.id).copied().unwrap_or(0);
            writes.insert(key(SUPPLY, &[token.id.as_str().as_bytes()]), Some(encode(&supply)));
        }
        for (balance_key, amount) in balances {
            writes.insert(balance_key, Some(encode(&amount)));
        }
        for name in Params::GOVERNABLE {
            let value = match *name {
                "fee_per_entry" => genesis.params.fee_per_entry,
                "settlement_grace_ms" => genesis.params.settlement_grace_ms,
                _ => genesis.params.governance_threshold_percent,
            };
            writes.insert(key(PARAM, &[name.as_bytes()]), Some(encode(&value)));
        }
        let lattice = state.lattice_after(&writes);
        state.apply(writes, lattice);
        state
    }

    /// A state from stored pairs (after a restart); the lattice is recomputed.
    pub fn from_pairs(genesis: Arc<Genesis>, pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> State {
        let mut lattice = Lattice::default();
        let map: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().collect();
        for (key, value) in &map {
            lattice.add(key, value);
        }
        State { genesis, map, lattice }
    }

    pub fn genesis_info(&self) -> &Arc<Genesis> {
        &self.genesis
    }

    pub fn root(&self) -> Hash {
        self.lattice.root()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn lattice_after(&self, writes: &Writes) -> Lattice {
        let mut lattice = self.lattice.clone();
        for (key, value) in writes {
            if let Some(old) = self.map.get(key) {
                lattice.remove(key, old);
            }
            if let Some(new) = value {
                lattice.add(key, new);
            }
        }
        lattice
    }

    /// Applies a block's writes (from [`State::execute`]).
    pub fn apply(&mut self, writes: Writes, lattice: Lattice) {
        for (key, value) in writes {
            match value {
                Some(value) => {
                    self.map.insert(key, value);
                }
                None => {
                    self.map.remove(&key);
                }
            }
        }
        self.lattice = lattice;
    }

    /// The stateless validation rules entries are checked with at a block's time.
    pub fn entry_config(&self) -> protocol::Config {
        let params = &self.genesis.params;
        let mut config = protocol::Config::new(self.genesis.network.clone());
        config.clock_skew_ms_max = params.clock_skew_ms_max;
        config.lifetime_ms_max = params.entry_lifetime_ms_max;
        config
    }

    pub fn balance(&self, account: &PublicKey, token: &TokenId) -> u64 {
        self.map.get(&balance_key(account, token)).and_then(|bytes| decode(bytes)).unwrap_or(0)
    }

    pub fn supply(&self, token: &TokenId) -> u64 {
        self.map.get(&key(SUPPLY, &[token.as_str().as_bytes()])).and_then(|bytes| decode(bytes)).unwrap_or(0)
    }

    /// Every account's balance of every token.
    pub fn balances(&self) -> impl Iterator<Item = (PublicKey, TokenId, u64)> + '_ {
        self.map.range(vec![BALANCE]..vec![BALANCE + 1]).filter_map(|(key, value)| {
            let account = PublicKey(key.get(1..33)?.try_into().ok()?);
            let token = TokenId::new(std::str::from_utf8(key.get(33..)?).ok()?).ok()?;
            Some((account, token, decode(value)?))
        })
    }

    /// One account's balances, by token.
    pub fn account_balances(&self, account: &PublicKey) -> Vec<(TokenId, u64)> {
        let mut start = vec![BALANCE];
        start.extend_from_slice(account.as_bytes());
        let mut end = start.clone();
        end.push(0xff);
        self.map
            .range(start..end)
            .filter_map(|(key, value)| {
                let token = TokenId::new(std::str::from_utf8(key.get(33..)?).ok()?).ok()?;
                Some((token, decode(value)?))
            })
            .collect()
    }

    pub fn escrows(&self) -> impl Iterator<Item = (Id, Escrow)> + '_ {
        self.map
            .range(vec![ESCROW]..vec![ESCROW + 1])
            .filter_map(|(key, value)| Some((Id(key.get(1..33)?.try_into().ok()?), decode(value)?)))
    }

    pub fn reputation(&self, account: &PublicKey) -> Reputation {
        self.map.get(&key(REPUTATION, &[account.as_bytes()])).and_then(|bytes| decode(bytes)).unwrap_or_default()
    }

    pub fn proposal(&self, id: &Id) -> Option<ProposalState> {
        self.map.get(&key(PROPOSAL, &[id.as_bytes()])).and_then(|bytes| decode(bytes))
    }

    pub fn param(&self, name: &str) -> u64 {
        self.map.get(&key(PARAM, &[name.as_bytes()])).and_then(|bytes| decode(bytes)).unwrap_or(0)
    }

    /// Whether an entry with this id is on the ledger (within its lifetime; afterwards it could not be included).
    pub fn includes(&self, id: &Id) -> bool {
        self.map.contains_key(&key(INCLUDED, &[id.as_bytes()]))
    }

    /// The anchor of an interval's readings: `blake3("kos/v1/anchor" || 0 || previous || reading id)` chained in
    /// ledger order, starting from 32 zero bytes.
    pub fn anchor(&self, interval_start_s: u64) -> Option<Hash> {
        self.map.get(&key(ANCHOR, &[&interval_start_s.to_be_bytes()])).and_then(|bytes| decode(bytes))
    }

    /// The validators (key, power) that certify the next block, in key order.
    pub fn validators(&self) -> Vec<(PublicKey, u64)> {
        self.map
            .range(vec![VALIDATOR]..vec![VALIDATOR + 1])
            .filter_map(|(key, value)| Some((PublicKey(key.get(1..33)?.try_into().ok()?), decode(value)?)))
            .collect()
    }

    /// Executes a block's entries at `context`. `verified` says whether this process already verified the
    /// signature of these exact entry bytes (see [`protocol::validate::revalidate`]).
    pub fn execute<'e>(
        &self,
        context: BlockContext,
        entries: impl IntoIterator<Item = &'e [u8]>,
        verified: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Executed, (usize, EntryError)> {
        let mut pending = Pending::new(self, context);
        for (index, bytes) in entries.into_iter().enumerate() {
            let envelope = self.check_entry(bytes, context, verified).map_err(|error| (index, error))?;
            pending.run(&envelope).map_err(|error| (index, error))?;
        }
        Ok(pending.finish())
    }

    /// Builds a block's entries from candidates in order: keeps those that execute (and fit the limits), and
    /// returns them with the execution and the rejected candidates' errors.
    pub fn build(&self, context: BlockContext, candidates: Vec<Vec<u8>>, verified: &dyn Fn(&[u8]) -> bool) -> Built {
        let params = &self.genesis.params;
        let entries_max = usize::try_from(params.block_entries_max).unwrap_or(usize::MAX);
        let bytes_max = usize::try_from(params.block_bytes_max).unwrap_or(usize::MAX).saturating_sub(4096);
        let mut pending = Pending::new(self, context);
        let mut kept = Vec::new();
        let mut rejected = Vec::new();
        let mut bytes_total = 0usize;
        for bytes in candidates {
            if kept.len() >= entries_max || bytes_total.saturating_add(bytes.len() + 5) > bytes_max {
                break;
            }
            let result = self.check_entry(&bytes, context, verified).and_then(|envelope| pending.run(&envelope));
            match result {
                Ok(()) => {
                    bytes_total += bytes.len() + 5;
                    kept.push(bytes);
                }
                Err(error) => rejected.push((bytes, error)),
            }
        }
        Built { entries: kept, executed: pending.finish(), rejected }
    }

    fn check_entry(
        &self,
        bytes: &[u8],
        context: BlockContext,
        verified: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Envelope, EntryError> {
        let config = self.entry_config();
        let validated = if verified(bytes) {
            protocol::validate::revalidate(bytes, &config, context.time_ms)
        } else {
            protocol::validate(bytes, &config, context.time_ms)
        }
        .map_err(|error| EntryError::Invalid(error.to_string()))?;
        Ok(validated.envelope)
    }
}

/// A block in execution: writes over the state, with an undo log per entry.
struct Pending<'s> {
    base: &'s State,
    context: BlockContext,
    writes: Writes,
    undo: Vec<Undo>,
    events: Vec<Event>,
    ids: Vec<Id>,
}

impl<'s> Pending<'s> {
    fn new(base: &'s State, context: BlockContext) -> Pending<'s> {
        Pending { base, context, writes: Writes::new(), undo: Vec::new(), events: Vec::new(), ids: Vec::new() }
    }

    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        match self.writes.get(key) {
            Some(Some(value)) => Some(Cow::Borrowed(value)),
            Some(None) => None,
            None => self.base.map.get(key).map(|value| Cow::Borrowed(value.as_slice())),
        }
    }

    fn read<T: Serialize + DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        self.get(key).and_then(|bytes| decode(&bytes))
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.writes.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    fn write<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.put(key, Some(encode(value)));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.put(key, None);
    }

    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some((key, previous)) = self.undo.pop() else { break };
            match previous {
                Some(value) => {
                    self.writes.insert(key, value);
                }
                None => {
                    self.writes.remove(&key);
                }
            }
        }
    }

    /// Keys with `prefix` whose next 8 bytes (big-endian) are at most `limit`, over the base and the writes.
    fn due(&self, prefix: u8, limit: u64) -> Vec<Vec<u8>> {
        let start = vec![prefix];
        let mut end = vec![prefix];
        end.extend_from_slice(&limit.saturating_add(1).to_be_bytes());
        let mut keys: Vec<Vec<u8>> = self
            .base
            .map
            .range(start.clone()..end.clone())
            .map(|(key, _)| key.clone())
            .filter(|key| !matches!(self.writes.get(key), Some(None)))
            .collect();
        keys.extend(self.writes.range(start..end).filter(|(_, value)| value.is_some()).map(|(key, _)| key.clone()));
        keys.sort();
        keys.dedup();
        keys
    }

    fn balance(&self, account: &PublicKey, token: &TokenId) -> u64 {
        self.read(&balance_key(account, token)).unwrap_or(0)
    }

    fn credit(&mut self, account: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let balance = self.balance(account, token).checked_add(amount).ok_or(EntryError::Overflow)?;
        self.write(balance_key(account, token), &balance);
        Ok(())
    }

    fn debit(&mut self, account: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let balance = self.balance(account, token);
        let left = balance.checked_sub(amount).ok_or_else(|| EntryError::InsufficientFunds {
            account: *account,
            token: token.clone(),
            balance,
            needed: amount,
        })?;
        if left == 0 {
            self.delete(balance_key(account, token));
        } else {
            self.write(balance_key(account, token), &left);
        }
        Ok(())
    }

    fn move_tokens(
        &mut self,
        from: &PublicKey,
        to: &PublicKey,
        token: &TokenId,
        amount: u64,
    ) -> Result<(), EntryError> {
        if self.base.genesis.token(token).is_none() {
            return Err(EntryError::UnknownToken(token.clone()));
        }
        self.debit(from, token, amount)?;
        self.credit(to, token, amount)
    }

    fn change_supply(&mut self, token: &TokenId, add: u64, sub: u64) -> Result<(), EntryError> {
        let supply_key = key(SUPPLY, &[token.as_str().as_bytes()]);
        let supply: u64 = self.read(&supply_key).unwrap_or(0);
        let supply = supply.checked_add(add).and_then(|supply| supply.checked_sub(sub)).ok_or(EntryError::Overflow)?;
        self.write(supply_key, &supply);
        Ok(())
    }

    fn mint(&mut self, to: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let rules = self.base.genesis.token(token).ok_or_else(|| EntryError::UnknownToken(token.clone()))?;
        if let Some(cap) = rules.supply_max {
            let supply: u64 = self.read(&key(SUPPLY, &[token.as_str().as_bytes()])).unwrap_or(0);
            if supply.checked_add(amount).is_none_or(|total| total > cap) {
                return Err(EntryError::SupplyCap { amount, cap });
            }
        }
        self.change_supply(token, amount, 0)?;
        self.credit(to, token, amount)
    }

    fn reputation(&mut self, account: &PublicKey, update: impl FnOnce(&mut Reputation)) {
        let reputation_key = key(REPUTATION, &[account.as_bytes()]);
        let mut reputation: Reputation = self.read(&reputation_key).unwrap_or_default();
        update(&mut reputation);
        self.write(reputation_key, &reputation);
    }

    fn param(&self, name: &str) -> u64 {
        self.read(&key(PARAM, &[name.as_bytes()])).unwrap_or(0)
    }

    /// Runs one entry; on error, undoes what it wrote.
    fn run(&mut self, envelope: &Envelope) -> Result<(), EntryError> {
        let mark = self.undo.len();
        let result = self.run_inner(envelope);
        match result {
            Ok(()) => self.ids.push(envelope.id()),
            Err(_) => self.rollback(mark),
        }
        result
    }

    fn run_inner(&mut self, envelope: &Envelope) -> Result<(), EntryError> {
        let id = envelope.id();
        let included_key = key(INCLUDED, &[id.as_bytes()]);
        if self.get(&included_key).is_some() {
            return Err(EntryError::Duplicate(id));
        }
        self.write(included_key, &envelope.expires_ms);
        self.put(key(INCLUDED_BY_EXPIRY, &[&envelope.expires_ms.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
        let fee = self.param("fee_per_entry");
        if fee > 0 {
            let fee_token = TokenId::new(self.base.genesis.params.fee_token.clone())
                .map_err(|error| EntryError::Invalid(error.to_string()))?;
            self.move_tokens(&envelope.author, &COMMONS, &fee_token, fee)?;
        }
        let author = envelope.author;
        match &envelope.body {
            Body::Offer(_) => Err(EntryError::NotAnEntry("offer")),
            Body::BarterOffer(_) => Err(EntryError::NotAnEntry("barter offer")),
            Body::Cancel(cancel) => {
                // A cancel on the ledger stops later settlements of the offer. The marker lives as long as the
                // offer could (its creation precedes the cancel's).
                let until = envelope.created_ms.saturating_add(
                    self.base
                        .genesis
                        .params
                        .entry_lifetime_ms_max
                        .max(protocol::validate::Config::LIFETIME_MS_MAX_DEFAULT),
                );
                self.write(key(CANCELLED, &[cancel.offer.as_bytes()]), &author);
                self.put(key(CANCELLED_BY_EXPIRY, &[&until.to_be_bytes(), cancel.offer.as_bytes()]), Some(Vec::new()));
                Ok(())
            }
            Body::Transfer(transfer) => self.move_tokens(&author, &transfer.to, &transfer.token, transfer.amount),
            Body::Mint(mint) => {
                let rules =
                    self.base.genesis.token(&mint.token).ok_or_else(|| EntryError::UnknownToken(mint.token.clone()))?;
                if !rules.issuers.contains(&author) {
                    return Err(EntryError::NotIssuer(author));
                }
                self.mint(&mint.to, &mint.token, mint.amount)
            }
            Body::Burn(burn) => {
                if self.base.genesis.token(&burn.token).is_none() {
                    return Err(EntryError::UnknownToken(burn.token.clone()));
                }
                self.debit(&author, &burn.token, burn.amount)?;
                self.change_supply(&burn.token, 0, burn.amount)
            }
            Body::Reading(reading) => self.anchor_reading(&author, &id, reading),
            Body::Settlement(settlement) => self.settle(&id, settlement),
            Body::BarterCycle(cycle) => {
                for leg in cycle.legs.as_slice() {
                    let Body::BarterOffer(offer) = &leg.offer.body else {
                        return Err(EntryError::Invalid("barter leg is not a barter offer".into()));
                    };
                    self.fill(&leg.offer, offer.give_quantity, leg.give_quantity)?;
                    self.reputation(&leg.offer.author, |reputation| reputation.barters += 1);
                }
                Ok(())
            }
            Body::Proposal(proposal) => {
                let period_max = self.base.genesis.params.voting_period_blocks_max;
                if proposal.voting_period_blocks == 0 || proposal.voting_period_blocks > period_max {
                    return Err(EntryError::VotingPeriod(period_max));
                }
                let end_height = self.context.height.saturating_add(u64::from(proposal.voting_period_blocks));
                let record = ProposalState {
                    author,
                    action: proposal.action.clone(),
                    end_height,
                    yes: 0,
                    no: 0,
                    abstain: 0,
                    status: 0,
                };
                self.write(key(PROPOSAL, &[id.as_bytes()]), &record);
                self.put(key(PROPOSAL_BY_END, &[&end_height.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
                Ok(())
            }
            Body::Vote(vote) => self.vote(&author, &vote.proposal, vote.choice),
        }
    }

    fn anchor_reading(
        &mut self,
        author: &PublicKey,
        id: &Id,
        reading: &protocol::message::Reading,
    ) -> Result<(), EntryError> {
        let meter_key = key(METER, &[author.as_bytes(), reading.meter.as_str().as_bytes()]);
        if let Some(last) = self.read::<MeterState>(&meter_key)
            && (reading.interval_start_s <= last.interval_start_s
                || reading.import_counter_wh < last.import_counter_wh
                || reading.export_counter_wh < last.export_counter_wh)
        {
            return Err(EntryError::ReadingOutOfOrder { meter: reading.meter.as_str().to_owned() });
        }
        self.write(
            meter_key,
            &MeterState {
                interval_start_s: reading.interval_start_s,
                import_counter_wh: reading.import_counter_wh,
                export_counter_wh: reading.export_counter_wh,
                reading: *id,
            },
        );
        let anchor_key = key(ANCHOR, &[&reading.interval_start_s.to_be_bytes()]);
        let previous: Hash = self.read(&anchor_key).unwrap_or(Hash::ZERO);
        self.write(anchor_key, &hash::tagged("kos/v1/anchor", &[previous.as_bytes(), id.as_bytes()]));
        self.reputation(author, |reputation| reputation.readings += 1);
        // Issuance rules: mission tokens rewarded per kWh exported, as far as their cap allows.
        for token in &self.base.genesis.tokens {
            if token.export_reward_per_kwh == 0 || reading.export_wh == 0 {
                continue;
            }
            let mut reward = protocol::message::value_milli(reading.export_wh, token.export_reward_per_kwh)
                .ok_or(EntryError::Overflow)?;
            if let Some(cap) = token.supply_max {
                let supply: u64 = self.read(&key(SUPPLY, &[token.id.as_str().as_bytes()])).unwrap_or(0);
                reward = reward.min(cap.saturating_sub(supply));
            }
            if reward > 0 {
                self.mint(author, &token.id, reward)?;
            }
        }
        Ok(())
    }

    /// Records a fill of `quantity` against an offer of `total`, refusing expired, cancelled and over-filled offers.
    fn fill(&mut self, offer: &Envelope, total: u64, quantity: u64) -> Result<(), EntryError> {
        let offer_id = offer.id();
        if offer.expires_ms <= self.context.time_ms {
            return Err(EntryError::OfferExpired(offer_id));
        }
        if self.get(&key(CANCELLED, &[offer_id.as_bytes()])).is_some() {
            return Err(EntryError::OfferCancelled(offer_id));
        }
        let filled_key = key(FILLED, &[offer_id.as_bytes()]);
        let filled: u64 = self.read(&filled_key).unwrap_or(0);
        let left = total.saturating_sub(filled);
        if quantity > left {
            return Err(EntryError::Overfilled { offer: offer_id, left, wanted: quantity });
        }
        if filled == 0 {
            self.put(key(FILLED_BY_EXPIRY, &[&offer.expires_ms.to_be_bytes(), offer_id.as_bytes()]), Some(Vec::new()));
        }
        self.write(filled_key, &(filled + quantity));
        Ok(())
    }

    fn settle(&mut self, id: &Id, settlement: &Settlement) -> Result<(), EntryError> {
        let (Body::Offer(bid), Body::Offer(ask)) = (&settlement.bid.body, &settlement.ask.body) else {
            return Err(EntryError::Invalid("settlement offers are not offers".into()));
        };
        check_offer_pair(bid, ask, settlement)?;
        self.fill(&settlement.bid, bid.quantity, settlement.quantity)?;
        self.fill(&settlement.ask, ask.quantity, settlement.quantity)?;
        let buyer = settlement.bid.author;
        let seller = settlement.ask.author;
        let token = &bid.pool.token;
        let amount =
            protocol::message::value_milli(settlement.quantity, settlement.unit_price).ok_or(EntryError::Overflow)?;
        if bid.pool.interval_s == 0 {
            self.move_tokens(&buyer, &seller, token, amount)?;
        } else {
            // Energy for a delivery interval: the payment waits in escrow until the interval is over (issue 6 checks
            // it against both parties' readings before release).
            if self.base.genesis.token(token).is_none() {
                return Err(EntryError::UnknownToken(token.clone()));
            }
            self.debit(&buyer, token, amount)?;
            let delivery_end_ms =
                bid.delivery_start_s.saturating_add(u64::from(bid.pool.interval_s)).saturating_mul(1000);
            let release_ms = delivery_end_ms.saturating_add(self.param("settlement_grace_ms"));
            let escrow = Escrow { buyer, seller, token: token.clone(), amount, release_ms };
            self.write(key(ESCROW, &[id.as_bytes()]), &escrow);
            self.put(key(ESCROW_BY_RELEASE, &[&release_ms.to_be_bytes(), id.as_bytes()]), Some(Vec::new()));
        }
        for party in [buyer, seller] {
            self.reputation(&party, |reputation| {
                reputation.trades += 1;
                reputation.traded_value = reputation.traded_value.saturating_add(amount);
            });
        }
        Ok(())
    }

    fn vote(&mut self, voter: &PublicKey, proposal_id: &Id, choice: Choice) -> Result<(), EntryError> {
        let proposal_key = key(PROPOSAL, &[proposal_id.as_bytes()]);
        let mut proposal: ProposalState = self
            .read(&proposal_key)
            .filter(|p: &ProposalState| p.status == 0)
            .ok_or(EntryError::ProposalClosed(*proposal_id))?;
        let power: u64 = self.read(&key(VALIDATOR, &[voter.as_bytes()])).ok_or(EntryError::NotAVoter(*voter))?;
        let ballot_key = key(BALLOT, &[proposal_id.as_bytes(), voter.as_bytes()]);
        if self.get(&ballot_key).is_some() {
            return Err(EntryError::AlreadyVoted(*voter));
        }
        self.write(ballot_key, &(choice as u8));
        match choice {
            Choice::Yes => proposal.yes = proposal.yes.saturating_add(power),
            Choice::No => proposal.no = proposal.no.saturating_add(power),
            Choice::Abstain => proposal.abstain = proposal.abstain.saturating_add(power),
        }
        let total: u64 = self.validators().iter().map(|(_, power)| power).sum();
        let threshold = self.param("governance_threshold_percent");
        if u128::from(proposal.yes) * 100 >= u128::from(total) * u128::from(threshold) {
            proposal.status = 1;
            self.enact(&proposal.action);
            self.events.push(Event::ProposalPassed(*proposal_id));
        }
        self.write(proposal_key, &proposal);
        Ok(())
    }

    fn validators(&self) -> Vec<(PublicKey, u64)> {
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

    /// Applies a passed proposal's action. Validator changes that would leave no validator, or too many, or a
    /// total power that overflows, are ignored (the proposal still passes; its effect is void).
    fn enact(&mut self, action: &Action) {
        match action {
            Action::Text(_) => {}
            Action::SetParameter(set) => {
                let mut params = self.base.genesis.params.clone();
                if params.set(set.name.as_str(), set.value) {
                    self.write(key(PARAM, &[set.name.as_str().as_bytes()]), &set.value);
                }
            }
            Action::AddValidator(add) => {
                let validators = self.validators();
                let known = validators.iter().any(|(key, _)| *key == add.key);
                let total: u128 =
                    validators.iter().map(|(_, power)| u128::from(*power)).sum::<u128>() + u128::from(add.power);
                if (known || validators.len() < VALIDATORS_MAX)
                    && total <= u128::from(u64::MAX / 1000)
                    && protocol::keys::verifying_key(&add.key).is_ok()
                {
                    self.write(key(VALIDATOR, &[add.key.as_bytes()]), &add.power);
                }
            }
            Action::RemoveValidator(remove) => {
                let validators = self.validators();
                if validators.len() > 1 && validators.iter().any(|(key, _)| *key == remove.key) {
                    self.delete(key(VALIDATOR, &[remove.key.as_bytes()]));
                }
            }
        }
    }

    /// End of block: release due escrows, close proposals whose period ended, forget expired markers.
    fn end_block(&mut self) {
        let now = self.context.time_ms;
        for index_key in self.due(ESCROW_BY_RELEASE, now) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let escrow_key = key(ESCROW, &[id.as_bytes()]);
            if let Some(escrow) = self.read::<Escrow>(&escrow_key) {
                self.delete(escrow_key);
                // Credit cannot overflow: the amount was debited from the same token's supply.
                let _ = self.credit(&escrow.seller, &escrow.token, escrow.amount);
                self.reputation(&escrow.seller, |reputation| reputation.deliveries += 1);
                self.events.push(Event::EscrowReleased { settlement: id, to: escrow.seller, amount: escrow.amount });
            }
        }
        for index_key in self.due(PROPOSAL_BY_END, self.context.height) {
            self.delete(index_key.clone());
            let Some(id) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let proposal_key = key(PROPOSAL, &[id.as_bytes()]);
            if let Some(mut proposal) = self.read::<ProposalState>(&proposal_key)
                && proposal.status == 0
            {
                proposal.status = 2;
                self.write(proposal_key, &proposal);
                self.events.push(Event::ProposalRejected(id));
            }
        }
        for (index, marker) in
            [(INCLUDED_BY_EXPIRY, INCLUDED), (CANCELLED_BY_EXPIRY, CANCELLED), (FILLED_BY_EXPIRY, FILLED)]
        {
            for index_key in self.due(index, now) {
                self.delete(index_key.clone());
                if let Some(id) = index_key.get(9..41) {
                    self.delete(key(marker, &[id]));
                }
            }
        }
    }

    fn finish(mut self) -> Executed {
        self.end_block();
        // Drop writes that change nothing, so the lattice and the store see only real changes.
        let base = self.base;
        let writes: Writes =
            self.writes.into_iter().filter(|(key, value)| base.map.get(key) != value.as_ref()).collect();
        let lattice = base.lattice_after(&writes);
        Executed { state_root: lattice.root(), lattice, writes, events: self.events, ids: self.ids }
    }
}

fn check_offer_pair(bid: &Offer, ask: &Offer, settlement: &Settlement) -> Result<(), EntryError> {
    if bid.side != Side::Bid || ask.side != Side::Ask || bid.pool != ask.pool {
        return Err(EntryError::Invalid("settlement offers do not pair".into()));
    }
    if settlement.unit_price < ask.unit_price || settlement.unit_price > bid.unit_price {
        return Err(EntryError::Price);
    }
    Ok(())
}

/// `blake3("kos/v1/validators" || 0x00 || CBOR([[key, power], ...]))` over the set in key order.
pub fn validators_hash(validators: &[(PublicKey, u64)]) -> Hash {
    let mut bytes = Vec::new();
    for (key, power) in validators {
        bytes.extend_from_slice(&codec::encode(&(key, power)));
    }
    hash::tagged("kos/v1/validators", &[&bytes])
}

/// The kinds a block may carry.
pub fn is_entry_kind(kind: Kind) -> bool {
    !matches!(kind, Kind::Offer | Kind::BarterOffer)
}
