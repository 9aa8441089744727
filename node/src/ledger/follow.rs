//! Following the ledger: every committed block, once, in height order, with what it did (its entries' ids and
//! events). One lag policy for every part of the node that follows the ledger (the market's books, fuel credits,
//! the jobs index, overrides, the feed): commits come from a bounded broadcast while the follower keeps up, and a
//! follower that fell behind (the broadcast dropped commits it had not read) reads the ones it missed back from the
//! store, where each block's events are kept beside it. Nothing is skipped, and nobody decodes block bytes again
//! but the rare follower catching up.

use std::sync::Arc;

use ledger::consensus::engine::Commit;
use ledger::store::RocksReader;
use tokio::sync::broadcast;
use tracing::{error, warn};

/// Commits kept in the broadcast for followers that are busy; one further behind reads from the store.
pub const COMMIT_CHANNEL_LEN: usize = 256;

/// A follower of the ledger's commits from one height on (see the module docs).
pub struct Follower {
    commits: broadcast::Receiver<Arc<Commit>>,
    reader: RocksReader,
    /// The next height to yield.
    next: u64,
    /// A commit received ahead of `next`, waiting while the ones before it are read from the store.
    ahead: Option<Arc<Commit>>,
    /// Commits read back from the store (counted for the tests and the logs).
    read_back: u64,
}

impl Follower {
    /// Follows from `from` on. `commits` must have been subscribed before the store's tip was read, so that no
    /// commit falls between the two.
    pub fn new(commits: broadcast::Receiver<Arc<Commit>>, reader: RocksReader, from: u64) -> Follower {
        Follower { commits, reader, next: from.max(1), ahead: None, read_back: 0 }
    }

    /// The next height this follower will yield.
    pub fn next_height(&self) -> u64 {
        self.next
    }

    /// Commits this follower read back from the store because it fell behind.
    pub fn read_back(&self) -> u64 {
        self.read_back
    }

    /// The next committed block, waiting for it if need be; `None` when the ledger has stopped. Cancel-safe (for
    /// `select!`): its only wait is the broadcast's, and nothing is taken before it.
    pub async fn next(&mut self) -> Option<Arc<Commit>> {
        loop {
            if let Some(commit) = self.ahead.take() {
                if commit.height == self.next {
                    self.next += 1;
                    return Some(commit);
                }
                if commit.height > self.next {
                    let height = self.next;
                    self.ahead = Some(commit);
                    if let Some(commit) = self.read(height) {
                        return Some(commit);
                    }
                }
                continue;
            }
            // The broadcast first: what it holds needs no reading or decoding.
            match self.commits.try_recv() {
                Ok(commit) => {
                    self.take(commit);
                    continue;
                }
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    self.lagged(missed);
                    continue;
                }
                Err(broadcast::error::TryRecvError::Closed) => return None,
                Err(broadcast::error::TryRecvError::Empty) => {}
            }
            // The store may be ahead of the broadcast: a follower that started below the tip reads up to it.
            if self.reader.tip().is_ok_and(|tip| tip >= self.next)
                && let Some(commit) = self.read(self.next)
            {
                return Some(commit);
            }
            match self.commits.recv().await {
                Ok(commit) => self.take(commit),
                Err(broadcast::error::RecvError::Lagged(missed)) => self.lagged(missed),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn take(&mut self, commit: Arc<Commit>) {
        // A commit below `next` was already yielded (read from the store before the broadcast got to it).
        if commit.height >= self.next {
            self.ahead = Some(commit);
        }
    }

    fn lagged(&self, missed: u64) {
        warn!(missed, from = self.next, "a ledger follower fell behind; it reads the commits it missed from the store");
    }

    /// Reads the commit at `height` from the store and moves past it. A block the store lacks below its tip, or
    /// cannot decode, is a damaged store: it is logged as such and passed over, so that a follower does not stop.
    fn read(&mut self, height: u64) -> Option<Arc<Commit>> {
        self.next = height + 1;
        let commit = match read_commit(&self.reader, height) {
            Ok(commit) => commit,
            Err(error) => {
                error!(height, "{error:#}: a ledger follower passes over this block");
                return None;
            }
        };
        self.read_back += 1;
        Some(Arc::new(commit))
    }
}

/// The commit at `height` as the store has it.
pub fn read_commit(reader: &RocksReader, height: u64) -> anyhow::Result<Commit> {
    let stored = reader.block(height)?.ok_or_else(|| anyhow::anyhow!("block {height} is not in the store"))?;
    let block = ledger::Block::from_bytes(&stored.block)
        .map_err(|error| anyhow::anyhow!("block {height} in the store does not decode: {error}"))?;
    let events = reader.events(height)?.unwrap_or_else(|| {
        // Blocks an older kos stored have no events.
        warn!(height, "block {height} was stored without its events (by an older kos); followers see none");
        Vec::new()
    });
    // The ids are the entries' own (the store keeps them only in the index).
    let entry_ids = block
        .entries()
        .map(|bytes| protocol::Envelope::from_bytes(bytes).map(|envelope| envelope.id()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("an entry of block {height} in the store does not decode: {error}"))?;
    Ok(Commit { height, block, certificate: stored.certificate, entry_ids, events })
}

#[cfg(test)]
mod tests {
    use ledger::hash::Hash;
    use ledger::state::Event;
    use ledger::store::{Outcome, RocksStore, Store, Stored};
    use protocol::{Id, Keypair, NetworkId};

    use super::*;

    /// Commits block `height` to a real store, as the engine does, and returns the commit it would broadcast.
    fn commit(store: &mut RocksStore, height: u64) -> Arc<Commit> {
        let header = ledger::block::Header {
            version: ledger::block::BLOCK_VERSION,
            network: NetworkId::new("kos-test").unwrap(),
            height,
            time_ms: 1_000 * height,
            parent: Hash([0; 32]),
            proposer: Keypair::from_seed(&[1; 32]).public(),
            entries_root: Hash([0; 32]),
            entry_count: 0,
            state_root: Hash([0; 32]),
            validators_hash: Hash([0; 32]),
        };
        let block = ledger::Block::new(header, Vec::new());
        let cycle = Id([u8::try_from(height).unwrap(); 32]);
        let outcome = Outcome { entry_ids: Vec::new(), events: vec![Event::BarterSettled { cycle, legs: vec![] }] };
        let stored = Stored { block: block.to_bytes(), certificate: vec![u8::try_from(height).unwrap()] };
        store.commit(height, &stored, &ledger::state::Writes::new(), &outcome).unwrap();
        Arc::new(Commit {
            height,
            block,
            certificate: stored.certificate,
            entry_ids: outcome.entry_ids,
            events: outcome.events,
        })
    }

    async fn heights(follower: &mut Follower, count: usize) -> Vec<(u64, Vec<Event>)> {
        let mut seen = Vec::new();
        for _ in 0..count {
            let commit = tokio::time::timeout(std::time::Duration::from_secs(5), follower.next())
                .await
                .expect("a commit in time")
                .expect("the ledger runs");
            seen.push((commit.height, commit.events.clone()));
        }
        seen
    }

    fn expected(heights: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<Event>)> {
        heights
            .map(|height| {
                let cycle = Id([u8::try_from(height).unwrap(); 32]);
                (height, vec![Event::BarterSettled { cycle, legs: vec![] }])
            })
            .collect()
    }

    #[tokio::test]
    async fn a_follower_that_fell_behind_reads_what_it_missed_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let (sender, _) = broadcast::channel(4);
        let mut follower = Follower::new(sender.subscribe(), store.reader(), 1);
        // 40 commits while the follower is busy: the broadcast keeps the last 4.
        for height in 1..=40 {
            let _ = sender.send(commit(&mut store, height));
        }
        assert_eq!(heights(&mut follower, 40).await, expected(1..=40), "every commit, once, in order");
        assert_eq!(follower.read_back(), 36, "only the ones the broadcast dropped are read back");
        // Then it keeps up from the broadcast alone.
        let _ = sender.send(commit(&mut store, 41));
        assert_eq!(heights(&mut follower, 1).await, expected(41..=41));
        assert_eq!(follower.read_back(), 36);
    }

    #[tokio::test]
    async fn a_follower_fills_a_gap_and_starts_below_the_tip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let (sender, _) = broadcast::channel(16);
        for height in 1..=5 {
            commit(&mut store, height);
        }
        // Started at 3 with 5 committed: 3..=5 from the store, then the broadcast.
        let mut follower = Follower::new(sender.subscribe(), store.reader(), 3);
        let _ = sender.send(commit(&mut store, 6));
        commit(&mut store, 7);
        let _ = sender.send(commit(&mut store, 8));
        assert_eq!(heights(&mut follower, 6).await, expected(3..=8), "the gap at 7 is read from the store");
        drop(sender);
        assert!(follower.next().await.is_none(), "a stopped ledger ends the follower");
    }
}
