//! Replay protection for gossip: per author, the recent nonces and the ids of the messages that used them
//! (sans-IO, bounded). The same message again is a duplicate; another message with a used nonce is a replay.
//!
//! Bounds: at most `authors_max` authors (least recently seen evicted) and `window` nonces per author. A nonce below
//! an author's window is stale. An evicted author's window is forgotten; expiry (PROTOCOL.md §6) still bounds how
//! long a captured message can be replayed.

use std::collections::{BTreeMap, HashMap};

use protocol::{Id, PublicKey};

/// What the guard says about a validated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First time this nonce is seen: accept.
    Fresh,
    /// The same message again: ignore it, nobody is to blame.
    Duplicate,
    /// Another message with a nonce the author already used: reject it.
    Replay,
    /// A nonce older than the author's window: ignore it.
    Stale,
}

#[derive(Debug, Default)]
struct Window {
    nonces: BTreeMap<u64, Id>,
    seen_tick: u64,
}

/// Recent nonces of recent authors.
#[derive(Debug)]
pub struct Guard {
    authors: HashMap<PublicKey, Window>,
    authors_max: usize,
    window: usize,
    tick: u64,
}

impl Guard {
    /// A guard for at most `authors_max` authors with `window` nonces each.
    pub fn new(authors_max: usize, window: usize) -> Guard {
        Guard { authors: HashMap::new(), authors_max: authors_max.max(1), window: window.max(1), tick: 0 }
    }

    /// Checks a validated message's (author, nonce, id), and records it when fresh.
    pub fn check(&mut self, author: &PublicKey, nonce: u64, id: &Id) -> Verdict {
        self.tick = self.tick.saturating_add(1);
        if !self.authors.contains_key(author) && self.authors.len() >= self.authors_max {
            self.evict();
        }
        let window = self.authors.entry(*author).or_default();
        window.seen_tick = self.tick;
        if let Some(known) = window.nonces.get(&nonce) {
            return if known == id { Verdict::Duplicate } else { Verdict::Replay };
        }
        if window.nonces.len() >= self.window && window.nonces.keys().next().is_some_and(|oldest| nonce < *oldest) {
            return Verdict::Stale;
        }
        window.nonces.insert(nonce, *id);
        while window.nonces.len() > self.window {
            window.nonces.pop_first();
        }
        Verdict::Fresh
    }

    /// Authors tracked now.
    pub fn len(&self) -> usize {
        self.authors.len()
    }

    /// True when no author is tracked.
    pub fn is_empty(&self) -> bool {
        self.authors.is_empty()
    }

    /// Evicts the least recently seen eighth of the authors (amortised O(1) per check).
    fn evict(&mut self) {
        let mut ticks: Vec<u64> = self.authors.values().map(|window| window.seen_tick).collect();
        let cut = ticks.len() / 8;
        ticks.select_nth_unstable(cut);
        let threshold = ticks[cut];
        self.authors.retain(|_, window| window.seen_tick > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    #[test]
    fn duplicates_replays_and_stale_nonces() {
        let mut guard = Guard::new(16, 4);
        assert_eq!(guard.check(&key(1), 10, &Id([1; 32])), Verdict::Fresh);
        assert_eq!(guard.check(&key(1), 10, &Id([1; 32])), Verdict::Duplicate);
        assert_eq!(guard.check(&key(1), 10, &Id([2; 32])), Verdict::Replay);
        assert_eq!(guard.check(&key(2), 10, &Id([2; 32])), Verdict::Fresh, "nonces are per author");
        for nonce in 11..14 {
            assert_eq!(guard.check(&key(1), nonce, &Id([nonce as u8; 32])), Verdict::Fresh);
        }
        // Out of order within the window is fine; below it is stale.
        assert_eq!(guard.check(&key(1), 20, &Id([20; 32])), Verdict::Fresh);
        assert_eq!(guard.check(&key(1), 9, &Id([9; 32])), Verdict::Stale);
    }

    #[test]
    fn authors_are_bounded() {
        let mut guard = Guard::new(64, 4);
        for n in 0..=255u8 {
            assert_eq!(guard.check(&key(n), 1, &Id([n; 32])), Verdict::Fresh);
            assert!(guard.len() <= 64);
        }
        // The most recent author is still remembered.
        assert_eq!(guard.check(&key(255), 1, &Id([0; 32])), Verdict::Replay);
    }
}
