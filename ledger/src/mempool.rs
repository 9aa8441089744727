//! The mempool: signed entries waiting for a block. Bounded in entries, bytes and entries per author; deduplicates
//! by id; admits only entries that validate (signature included) and are not already on the ledger; hands them to
//! the proposer by priority: the kinds that are due soonest first (settlements and readings belong to delivery
//! intervals), then token movements, then the rest, each in arrival order. Every entry pays the same fee (the
//! genesis' `fee_per_entry`), so fees do not order them, but an author must be able to pay them: its committed
//! balance of the fee token must cover the fees of its waiting entries and the new one. When full, an entry that
//! ranks higher evicts the lowest-ranked one.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use protocol::message::Kind;
use protocol::{Id, PublicKey};

use crate::reads::*;
use crate::state::{State, is_entry_kind};

/// Bounds of the mempool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub entries_max: usize,
    pub bytes_max: usize,
    pub per_author_max: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { entries_max: 100_000, bytes_max: 64 * 1024 * 1024, per_author_max: 10_000 }
    }
}

/// Why an entry was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    Invalid(protocol::validate::Error),
    #[error("{0} messages are not ledger entries")]
    NotAnEntry(&'static str),
    #[error("already in the mempool")]
    Duplicate,
    #[error("already on the ledger")]
    Included,
    #[error("the mempool is full")]
    Full,
    #[error("this author has {0} entries waiting, the most allowed")]
    AuthorFull(usize),
    /// The author's balance does not cover the fee of this entry and of those it has waiting.
    #[error("the author cannot pay the fee: {owed} {token} for this and its waiting entries, its balance is {balance}")]
    CannotPay { token: protocol::types::TokenId, owed: u64, balance: u64 },
}

#[derive(Debug)]
struct Item {
    bytes: Vec<u8>,
    author: PublicKey,
    expires_ms: u64,
    key: (Reverse<u8>, u64, Id),
    digest: [u8; 32],
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Mempool {
    config: Config,
    items: HashMap<Id, Item>,
    order: BTreeSet<(Reverse<u8>, u64, Id)>,
    per_author: HashMap<PublicKey, usize>,
    verified: HashSet<[u8; 32]>,
    bytes: usize,
    sequence: u64,
}

/// Priority class of a kind: settlements and readings first (they belong to delivery intervals), then token
/// movements, then governance and cancels.
fn class(kind: Kind) -> u8 {
    match kind {
        Kind::Settlement | Kind::Reading | Kind::BarterCycle => 3,
        Kind::Transfer | Kind::Mint | Kind::Burn | Kind::GuildSpend | Kind::GuildApproval => 2,
        _ => 1,
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

impl Mempool {
    pub fn new(config: Config) -> Mempool {
        Mempool { config, ..Mempool::default() }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.items.contains_key(id)
    }

    /// Whether these exact bytes were verified on admission (their signature need not be checked again).
    pub fn verified(&self, bytes: &[u8]) -> bool {
        self.verified.contains(&digest(bytes))
    }

    /// Admits an entry validated by the caller ([`protocol::validate`] or `validate_batch`, at the state's
    /// `entry_config`), returning its id.
    pub fn add_validated(
        &mut self,
        bytes: Vec<u8>,
        validated: protocol::Validated,
        state: &State,
    ) -> Result<Id, Rejected> {
        let envelope = &validated.envelope;
        let kind = envelope.kind();
        if !is_entry_kind(kind) {
            return Err(Rejected::NotAnEntry(kind.name()));
        }
        let id = validated.id;
        if self.items.contains_key(&id) {
            return Err(Rejected::Duplicate);
        }
        if state.includes(&id) {
            return Err(Rejected::Included);
        }
        let author_count = self.per_author.get(&envelope.author).copied().unwrap_or(0);
        if author_count >= self.config.per_author_max {
            return Err(Rejected::AuthorFull(author_count));
        }
        // Every entry pays the fee when it executes; one its author cannot pay would only take a place (and the
        // network's work) and then fail. The author's committed balance must cover its waiting entries' fees too.
        if let Some((token, fee)) = state.entry_fee() {
            let owed = fee.saturating_mul(u64::try_from(author_count).unwrap_or(u64::MAX).saturating_add(1));
            let balance = state.balance(&envelope.author, &token);
            if balance < owed {
                return Err(Rejected::CannotPay { token, owed, balance });
            }
        }
        let key = (Reverse(class(kind)), self.sequence, id);
        while self.items.len() >= self.config.entries_max || self.bytes + bytes.len() > self.config.bytes_max {
            // Evict the lowest-priority entry if the new one ranks above it.
            match self.order.last().copied() {
                Some(last) if key < last => {
                    self.remove(&last.2);
                }
                _ => return Err(Rejected::Full),
            }
        }
        self.sequence += 1;
        let item_digest = digest(&bytes);
        self.verified.insert(item_digest);
        self.bytes += bytes.len();
        *self.per_author.entry(envelope.author).or_default() += 1;
        self.order.insert(key);
        self.items.insert(
            id,
            Item { bytes, author: envelope.author, expires_ms: envelope.expires_ms, key, digest: item_digest },
        );
        Ok(id)
    }

    fn remove(&mut self, id: &Id) -> Option<Vec<u8>> {
        let item = self.items.remove(id)?;
        self.order.remove(&item.key);
        self.verified.remove(&item.digest);
        self.bytes -= item.bytes.len();
        if let Some(count) = self.per_author.get_mut(&item.author) {
            *count -= 1;
            if *count == 0 {
                self.per_author.remove(&item.author);
            }
        }
        Some(item.bytes)
    }

    /// Up to `max` entries in priority order, for a proposer (they stay until committed or pruned).
    pub fn candidates(&self, max: usize) -> Vec<Vec<u8>> {
        self.order.iter().take(max).filter_map(|(_, _, id)| self.items.get(id).map(|item| item.bytes.clone())).collect()
    }

    /// Drops entries a block included or a build rejected.
    pub fn remove_all<'a>(&mut self, ids: impl IntoIterator<Item = &'a Id>) {
        for id in ids {
            self.remove(id);
        }
    }

    /// Drops entries that expired by `time_ms` (a committed block's time).
    pub fn prune_expired(&mut self, time_ms: u64) -> usize {
        let expired: Vec<Id> =
            self.items.iter().filter(|(_, item)| item.expires_ms <= time_ms).map(|(id, _)| *id).collect();
        for id in &expired {
            self.remove(id);
        }
        expired.len()
    }
}
