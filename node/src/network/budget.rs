//! Per-peer budgets: token buckets of messages and bytes per second for each remote peer (sans-IO: the caller
//! passes the time). Traffic over budget is dropped and counted against the peer; the node keeps serving everyone
//! else. The limits come from a [`Policy`]: the node's is [`ByStanding`], the agent fuel model's standings.

use std::collections::HashMap;
use std::hash::Hash;

/// A rate and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    /// Units refilled per second.
    pub per_s: u64,
    /// Most units the bucket holds (what a peer may send at once after being idle).
    pub burst: u64,
}

/// What one peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub messages: Rate,
    pub bytes: Rate,
}

impl Default for Limits {
    /// 200 messages/s (burst 1,000) and 1 MiB/s (burst 4 MiB) per peer: several times what a busy honest
    /// neighbour forwards on a devnet, far below what one peer needs to starve a 2-core node.
    fn default() -> Limits {
        Limits {
            messages: Rate { per_s: 200, burst: 1_000 },
            bytes: Rate { per_s: 1024 * 1024, burst: 4 * 1024 * 1024 },
        }
    }
}

/// Sets each peer's limits.
pub trait Policy<K> {
    fn limits(&self, peer: &K) -> Limits;
}

/// The same limits for every peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uniform(pub Limits);

impl<K> Policy<K> for Uniform {
    fn limits(&self, _peer: &K) -> Limits {
        self.0
    }
}

/// Limits by standing in the agent fuel model ([`energy::fuel::Standing`]): a newcomer gets the base limits, a
/// member twice, a trusted peer (a genesis validator) four times.
#[derive(Debug, Clone, Default)]
pub struct ByStanding<K> {
    pub base: Limits,
    pub standings: HashMap<K, energy::fuel::Standing>,
}

impl<K: Hash + Eq> Policy<K> for ByStanding<K> {
    fn limits(&self, peer: &K) -> Limits {
        let standing = self.standings.get(peer).copied().unwrap_or(energy::fuel::Standing::Newcomer);
        let times = standing.multiplier();
        let scale =
            |rate: Rate| Rate { per_s: rate.per_s.saturating_mul(times), burst: rate.burst.saturating_mul(times) };
        Limits { messages: scale(self.base.messages), bytes: scale(self.base.bytes) }
    }
}

/// A token bucket in thousandths of a unit, so slow rates refill smoothly.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    updated_ms: u64,
}

impl Bucket {
    fn full(rate: Rate, now_ms: u64) -> Bucket {
        Bucket { milli_tokens: rate.burst.saturating_mul(1000), updated_ms: now_ms }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms);
        let added = elapsed_ms.saturating_mul(rate.per_s);
        self.milli_tokens = self.milli_tokens.saturating_add(added).min(rate.burst.saturating_mul(1000));
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    fn has(&self, amount: u64) -> bool {
        self.milli_tokens >= amount.saturating_mul(1000)
    }

    fn take(&mut self, amount: u64) {
        self.milli_tokens = self.milli_tokens.saturating_sub(amount.saturating_mul(1000));
    }
}

/// What the budget says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget: handle it.
    Within,
    /// Over budget: drop it and count it against the peer.
    Over,
}

#[derive(Debug)]
struct Entry {
    messages: Bucket,
    bytes: Bucket,
    over_total: u64,
}

/// The budgets of all peers, at most `peers_max` at once.
#[derive(Debug)]
pub struct Budgets<K, P> {
    policy: P,
    peers: HashMap<K, Entry>,
    peers_max: usize,
}

impl<K: Hash + Eq + Clone, P: Policy<K>> Budgets<K, P> {
    /// Budgets for at most `peers_max` peers (the connection limit); a new peer beyond that evicts the one that was
    /// refilled longest ago, which is at worst a peer getting a fresh bucket.
    pub fn new(policy: P, peers_max: usize) -> Self {
        Budgets { policy, peers: HashMap::new(), peers_max: peers_max.max(1) }
    }

    /// Charges one message of `bytes` bytes from `peer` at `now_ms`.
    pub fn charge(&mut self, peer: &K, bytes: u64, now_ms: u64) -> Verdict {
        let limits = self.policy.limits(peer);
        if !self.peers.contains_key(peer) && self.peers.len() >= self.peers_max {
            self.evict_oldest();
        }
        let entry = self.peers.entry(peer.clone()).or_insert_with(|| Entry {
            messages: Bucket::full(limits.messages, now_ms),
            bytes: Bucket::full(limits.bytes, now_ms),
            over_total: 0,
        });
        entry.messages.refill(limits.messages, now_ms);
        entry.bytes.refill(limits.bytes, now_ms);
        if entry.messages.has(1) && entry.bytes.has(bytes) {
            entry.messages.take(1);
            entry.bytes.take(bytes);
            Verdict::Within
        } else {
            entry.over_total = entry.over_total.saturating_add(1);
            Verdict::Over
        }
    }

    /// Messages from `peer` dropped for being over budget since it was first seen.
    pub fn over_total(&self, peer: &K) -> u64 {
        self.peers.get(peer).map_or(0, |entry| entry.over_total)
    }

    /// Forgets a peer (on disconnect).
    pub fn remove(&mut self, peer: &K) {
        self.peers.remove(peer);
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn evict_oldest(&mut self) {
        let oldest = self.peers.iter().min_by_key(|(_, entry)| entry.messages.updated_ms).map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.peers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limits(per_s: u64, burst: u64) -> Limits {
        Limits { messages: Rate { per_s, burst }, bytes: Rate { per_s: 1_000_000, burst: 1_000_000 } }
    }

    #[test]
    fn trusted_peers_get_four_times_a_newcomers_room() {
        let policy = ByStanding {
            base: limits(10, 5),
            standings: [(1u8, energy::fuel::Standing::Trusted), (2, energy::fuel::Standing::Member)].into(),
        };
        let mut budgets = Budgets::new(policy, 8);
        let sent = |budgets: &mut Budgets<u8, ByStanding<u8>>, peer| {
            (0..100).take_while(|_| budgets.charge(&peer, 1, 0) == Verdict::Within).count()
        };
        assert_eq!(sent(&mut budgets, 0), 5);
        assert_eq!(sent(&mut budgets, 2), 10);
        assert_eq!(sent(&mut budgets, 1), 20);
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut budgets = Budgets::new(Uniform(limits(10, 5)), 8);
        let accepted = (0..20).filter(|_| budgets.charge(&"flood", 100, 0) == Verdict::Within).count();
        assert_eq!(accepted, 5, "the burst");
        assert_eq!(budgets.over_total(&"flood"), 15);
        // 10 per second: 100 ms buys one more message.
        assert_eq!(budgets.charge(&"flood", 100, 99), Verdict::Over);
        assert_eq!(budgets.charge(&"flood", 100, 100), Verdict::Within);
        // Other peers are not affected.
        assert_eq!(budgets.charge(&"honest", 100, 100), Verdict::Within);
    }

    #[test]
    fn bytes_are_limited_too() {
        let limits = Limits { messages: Rate { per_s: 1000, burst: 1000 }, bytes: Rate { per_s: 1000, burst: 3000 } };
        let mut budgets = Budgets::new(Uniform(limits), 8);
        assert_eq!(budgets.charge(&1, 2000, 0), Verdict::Within);
        assert_eq!(budgets.charge(&1, 2000, 0), Verdict::Over);
        assert_eq!(budgets.charge(&1, 2000, 1000), Verdict::Within);
    }

    #[test]
    fn the_peer_map_is_bounded() {
        let mut budgets = Budgets::new(Uniform(limits(1, 1)), 4);
        for peer in 0..100u32 {
            let _ = budgets.charge(&peer, 1, u64::from(peer));
        }
        assert_eq!(budgets.len(), 4);
    }

    proptest! {
        /// Over any window, a peer gets at most burst + rate × duration messages through.
        #[test]
        fn never_more_than_burst_plus_rate(per_s in 1..1000u64, burst in 1..500u64, times in prop::collection::vec(0..10u64, 1..500)) {
            let mut budgets = Budgets::new(Uniform(limits(per_s, burst)), 2);
            let mut now_ms = 0;
            let mut accepted = 0u64;
            for step in times {
                now_ms += step;
                if budgets.charge(&0, 1, now_ms) == Verdict::Within {
                    accepted += 1;
                }
            }
            prop_assert!(accepted <= burst + per_s * now_ms / 1000 + 1);
        }
    }
}
