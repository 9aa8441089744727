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

/// How long a follower waits before reading the store again after it failed to (a transient I/O error).
pub const STORE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// A follower of the ledger's commits from one height on (see the module docs).
pub struct Follower {
    commits: broadcast::Receiver<Arc<Commit>>,
    reader: RocksReader,
    /// The next height to yield.
    next: u64,
    /// The first height the broadcast is sure to carry (or to report as missed): the store's tip when the follower
    /// subscribed, plus one. Heights below it come from the store.
    live_from: u64,
    /// A commit received ahead of `next`, waiting while the ones before it are read from the store.
    ahead: Option<Arc<Commit>>,
    /// Commits read back from the store (counted for the tests and the logs).
    read_back: u64,
    /// Whether the last commit yielded was read back from the store (it is late: not a measure of finality).
    last_read_back: bool,
}

/// What reading one height from the store gave.
enum Read {
    Commit(Arc<Commit>),
    /// The store lacks the block or cannot decode it: a damaged store, logged and passed over.
    Damaged,
    /// The store could not be read just now.
    Failed,
}

impl Follower {
    /// Follows from `from` on. `commits` must have been subscribed before this is called, so that no commit falls
    /// between the subscription and the store's tip read here.
    pub fn new(commits: broadcast::Receiver<Arc<Commit>>, reader: RocksReader, from: u64) -> Follower {
        // A `full` node keeps blocks from `first` on (README, *Pruning*): there is nothing to follow below it.
        let next = from.max(reader.first().unwrap_or(1)).max(1);
        let live_from = reader.tip().map_or(next, |tip| tip + 1);
        Follower { commits, reader, next, live_from, ahead: None, read_back: 0, last_read_back: false }
    }

    /// Commits this follower read back from the store because it fell behind or started below the tip.
    pub fn read_back(&self) -> u64 {
        self.read_back
    }

    /// Whether the commit last yielded was read back from the store rather than received as it committed.
    pub fn last_read_back(&self) -> bool {
        self.last_read_back
    }

    /// The next committed block, waiting for it if need be; `None` once the commit channel has closed (every
    /// sender gone). Cancel-safe (for `select!`): it waits only before taking anything, or before moving past a
    /// height it has not yielded.
    pub async fn next(&mut self) -> Option<Arc<Commit>> {
        loop {
            // Catching up from the store never waits on the broadcast: give the runtime its turn.
            tokio::task::consume_budget().await;
            let wanted = match self.ahead.take() {
                Some(commit) if commit.height == self.next => {
                    self.next += 1;
                    self.last_read_back = false;
                    return Some(commit);
                }
                Some(commit) if commit.height > self.next => {
                    self.ahead = Some(commit);
                    Some(self.next)
                }
                // Below `next`: already yielded.
                Some(_) => continue,
                // Heights the store had when this follower subscribed.
                None if self.next < self.live_from => Some(self.next),
                None => None,
            };
            if let Some(height) = wanted {
                match self.read(height) {
                    Read::Commit(commit) => return Some(commit),
                    Read::Damaged => {}
                    Read::Failed => tokio::time::sleep(STORE_RETRY).await,
                }
                continue;
            }
            match self.commits.recv().await {
                Ok(commit) => {
                    // A commit below `next` was already yielded (read from the store).
                    if commit.height >= self.next {
                        self.ahead = Some(commit);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        from = self.next,
                        "a ledger follower fell behind; it reads the commits it missed from the store"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Reads the commit at `height` from the store and moves past it. A block the store lacks below its tip, or
    /// cannot decode, is a damaged store: it is logged as such and passed over, so that a follower does not stop.
    /// A read that failed (I/O) moves past nothing: the caller tries again.
    fn read(&mut self, height: u64) -> Read {
        // The tip first: a commit writes its block and the tip in one batch, so a tip at or above `height` read
        // before the block means the block is there unless pruned or thrown away.
        let tip = self.reader.tip();
        let stored = match self.reader.block(height) {
            Ok(stored) => stored,
            Err(error) => {
                warn!(height, "{error:#}: a ledger follower could not read the store; it tries again");
                return Read::Failed;
            }
        };
        // A ledger taking a snapshot (state sync) is empty while it writes it: wait. The tip is read again, since a
        // state sync may have emptied the ledger between the reads of the tip and the block.
        if stored.is_none() && (tip.is_ok_and(|tip| tip < height) || self.reader.tip().is_ok_and(|tip| tip < height)) {
            return Read::Failed;
        }
        // A block pruned while this follower lagged behind: the commits below the first block kept are gone.
        let first = self.reader.first().unwrap_or(1);
        if stored.is_none() && height < first {
            if self.reader.restored().ok().flatten() == Some(first) {
                // The ledger took a snapshot of the state (state sync: an empty ledger, or one far behind, whose
                // blocks the snapshot replaced) after this follower was made.
                tracing::info!(
                    from = height,
                    first,
                    "the ledger starts at a snapshot of the state: a follower goes on there"
                );
            } else {
                warn!(
                    from = height,
                    to = first,
                    "a ledger follower fell behind past the blocks this node keeps (pruned by [storage] mode = \
                     \"full\", or replaced by a snapshot of the state); it skips the commits it cannot read"
                );
            }
            self.next = first;
            return Read::Damaged;
        }
        self.next = height + 1;
        match stored
            .ok_or_else(|| anyhow::anyhow!("block {height} is not in the store"))
            .and_then(|stored| commit_of(&self.reader, height, stored))
        {
            Ok(commit) => {
                self.read_back += 1;
                self.last_read_back = true;
                Read::Commit(Arc::new(commit))
            }
            Err(error) => {
                error!(height, "{error:#}: a ledger follower passes over this block");
                Read::Damaged
            }
        }
    }
}

/// The commit at `height` as the store has it (`stored` is its block).
fn commit_of(reader: &RocksReader, height: u64, stored: ledger::store::Stored) -> anyhow::Result<Commit> {
    let block = ledger::Block::from_bytes(&stored.block)
        .map_err(|error| anyhow::anyhow!("block {height} in the store does not decode: {error}"))?;
    let events = match reader.events(height)? {
        Some(events) => events,
        // Pruned between reading the block and its events: as if the block had been pruned already.
        None if height < reader.first()? => anyhow::bail!("block {height} was pruned while it was read"),
        None => {
            // Blocks an older kos stored have no events.
            warn!(height, "block {height} was stored without its events (by an older kos); followers see none");
            Vec::new()
        }
    };
    // The ids are the entries' own (the store keeps them only in the index).
    let entry_ids = block
        .entries()
        .map(|bytes| protocol::Envelope::from_bytes(bytes).map(|envelope| envelope.id()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("an entry of block {height} in the store does not decode: {error}"))?;
    Ok(Commit { height, block, certificate: stored.certificate, entry_ids, events })
}

/// A commit of a block without entries at `height`, proposed at `time_ms`, with `events` (for tests).
#[cfg(test)]
pub(crate) fn empty_commit(height: u64, time_ms: u64, events: Vec<ledger::state::Event>) -> Commit {
    let header = ledger::block::Header {
        version: ledger::block::BLOCK_VERSION,
        network: protocol::NetworkId::new("kos-test").unwrap_or_else(|_| unreachable!()),
        height,
        time_ms,
        parent: ledger::Hash([0; 32]),
        proposer: protocol::Keypair::from_seed(&[1; 32]).public(),
        entries_root: ledger::Hash([0; 32]),
        entry_count: 0,
        state_root: ledger::Hash([0; 32]),
        validators_hash: ledger::Hash([0; 32]),
    };
    let block = ledger::Block::new(header, Vec::new());
    Commit { height, block, certificate: height.to_be_bytes().to_vec(), entry_ids: Vec::new(), events }
}

#[cfg(test)]
mod tests {
    use ledger::state::Event;
    use ledger::store::{Outcome, RocksStore, Store, Stored};
    use protocol::Id;

    use super::*;

    /// Commits block `height` to a real store, as the engine does, and returns the commit it would broadcast.
    fn commit(store: &mut RocksStore, height: u64) -> Arc<Commit> {
        let cycle = cycle(height);
        let commit = empty_commit(height, 1_000 * height, vec![Event::BarterSettled { cycle, legs: vec![] }]);
        let outcome = Outcome { events: commit.events.clone(), ..Outcome::default() };
        let stored = Stored { block: commit.block.to_bytes(), certificate: commit.certificate.clone() };
        store.commit(height, &stored, &ledger::state::Writes::new(), &outcome).unwrap();
        Arc::new(commit)
    }

    /// The event's id of block `height`: the height, big-endian, then zeros.
    fn cycle(height: u64) -> Id {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&height.to_be_bytes());
        Id(id)
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
        heights.map(|height| (height, vec![Event::BarterSettled { cycle: cycle(height), legs: vec![] }])).collect()
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
        assert!(!follower.last_read_back());
    }

    /// Issue 28, item 3: on a `full` node, a follower that fell behind past the blocks the store keeps skips to the
    /// first one kept (with a warning), and yields every commit from there, once, in order.
    #[tokio::test]
    async fn a_follower_that_fell_behind_past_the_pruned_blocks_goes_on_from_the_first_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        store.set_keep_blocks(Some(ledger::store::KEEP_BLOCKS_MIN));
        let (sender, _) = broadcast::channel(4);
        let mut follower = Follower::new(sender.subscribe(), store.reader(), 1);
        for height in 1..=1_100 {
            let _ = sender.send(commit(&mut store, height));
        }
        let first = 1_100 - ledger::store::KEEP_BLOCKS_MIN + 1;
        assert_eq!(store.first().unwrap(), first);
        let count = usize::try_from(ledger::store::KEEP_BLOCKS_MIN).unwrap();
        assert_eq!(heights(&mut follower, count).await, expected(first..=1_100));
    }

    #[tokio::test]
    async fn a_follower_that_keeps_up_takes_commits_from_the_broadcast_not_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let (sender, _) = broadcast::channel(16);
        commit(&mut store, 1);
        let mut follower = Follower::new(sender.subscribe(), store.reader(), 2);
        // Block 2 is in the store before the engine broadcasts it (it always is): the follower waits for the
        // broadcast's copy rather than reading and decoding the block again.
        let second = commit(&mut store, 2);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(100), follower.next()).await;
        assert!(waiting.is_err(), "nothing is yielded before the broadcast");
        let _ = sender.send(second);
        assert_eq!(heights(&mut follower, 1).await, expected(2..=2));
        assert_eq!(follower.read_back(), 0);
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
