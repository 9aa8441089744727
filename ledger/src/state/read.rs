//! Reads of the committed state, one interface over every place the state lives: the ledger thread's [`State`]
//! and a RocksDB snapshot of a block's commit ([`crate::store::StateSnapshot`]), so the node answers its API
//! from a snapshot on any thread, never on the consensus thread, with the same code.
//!
//! [`Kv`] is the map (PROTOCOL.md §10); the named reads are extension traits of it, one per domain
//! ([`TokenReads`](super::TokenReads), [`TradeReads`](super::TradeReads), …), implemented for every `Kv`. Bring them
//! into scope with `use ledger::reads::*`.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::State;
use crate::genesis::Genesis;

/// The pairs of a key range, in key order.
pub type Pairs<'a> = Box<dyn Iterator<Item = (Cow<'a, [u8]>, Cow<'a, [u8]>)> + 'a>;

/// The state as a sorted map of byte keys to byte values, with the genesis it started from.
pub trait Kv {
    fn genesis(&self) -> &Genesis;
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>>;
    /// The pairs with keys in `start..end` (none when `start >= end`), in key order.
    fn range<'a>(&'a self, start: &[u8], end: &[u8]) -> Pairs<'a>;
}

impl Kv for State {
    fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        match &self.map {
            super::Map::Memory { map, .. } => map.get(key).map(|value| Cow::Borrowed(value.as_slice())),
            super::Map::Disk(backing) => backing.get(key).map(Cow::Owned),
        }
    }

    fn range<'a>(&'a self, start: &[u8], end: &[u8]) -> Pairs<'a> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        match &self.map {
            super::Map::Memory { map, .. } => Box::new(
                map.range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Excluded(end)))
                    .map(|(key, value)| (Cow::Borrowed(key.as_slice()), Cow::Borrowed(value.as_slice()))),
            ),
            super::Map::Disk(backing) => backing.range(start, end),
        }
    }
}

/// Whether an entry with this id is on the ledger, as the state remembers it (for its lifetime: PROTOCOL.md §10,
/// `x`), whichever block holds it and whether or not that block is still kept.
pub fn entry_included(kv: &(impl Kv + ?Sized), id: &protocol::Id) -> bool {
    kv.get(&super::keys::key(super::keys::INCLUDED, &[id.as_bytes()])).is_some()
}

/// The value under `key`, decoded.
pub(crate) fn value<T: Serialize + DeserializeOwned>(kv: &(impl Kv + ?Sized), key: &[u8]) -> Option<T> {
    kv.get(key).and_then(|bytes| super::decode(&bytes))
}

/// The pairs of every key that starts with `prefix`.
pub(crate) fn prefixed<'a>(kv: &'a (impl Kv + ?Sized), prefix: &[u8]) -> Pairs<'a> {
    match end_of_prefix(prefix) {
        Some(end) => kv.range(prefix, &end),
        None => kv.range(prefix, &[0xff; 64]),
    }
}

/// The first key after every key that starts with `prefix` (`None`: the prefix is all `0xff`).
pub(crate) fn end_of_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::end_of_prefix;

    #[test]
    fn the_end_of_a_prefix_is_the_first_key_past_all_its_keys() {
        assert_eq!(end_of_prefix(b"b"), Some(b"c".to_vec()));
        assert_eq!(end_of_prefix(&[7, 0xff]), Some(vec![8]));
        assert_eq!(end_of_prefix(&[0xff, 0xff]), None);
    }
}
