//! Pool discovery (PROTOCOL.md §9, "Finding a pool"): which pools the node is in, and what it does for each of them.
//! A sans-IO state machine, run by the network task: inputs in ([`Discovery::join`], [`Discovery::observe`], what
//! came of its effects), effects out ([`Discovery::poll`]); time is passed in.
//!
//! For every pool it joins, the node
//! 1. announces itself as a provider in the DHT, again every [`PROVIDE_INTERVAL_MS`] (and soon after a failure);
//! 2. looks the pool's providers up in the DHT at once, and again while fewer than [`MESH_MIN`] of its peers are in
//!    the pool's gossip mesh, backing off from [`LOOKUP_BACKOFF_MIN_MS`] to [`LOOKUP_BACKOFF_MAX_MS`];
//! 3. dials, during a lookup, providers it is not connected to: at most [`DIALS_PER_LOOKUP_MAX`] a lookup, never
//!    more peers for pools than [`POOL_PEERS_SHARE_PERCENT`] of `peers_max`, and not a peer whose dial failed in the
//!    last [`DIAL_RETRY_MS`]; a lookup stops once it has found [`LOOKUP_PROVIDERS_ENOUGH`] providers. A provider
//!    whose record carries no address is looked up by its peer id in the DHT first (the shell's walk toward it);
//! 4. fetches the pool's recent offers from up to [`FETCH_PEERS_MAX`] peers in the pool as soon as it has one, so
//!    that a newcomer holds the book at once (a round that nobody answers is tried again after a backoff from
//!    [`LOOKUP_BACKOFF_MIN_MS`] to [`LOOKUP_BACKOFF_MAX_MS`]); and when its mesh for the pool was empty and fills
//!    again, it fetches again and publishes its own open offers in the pool again (placed while nobody was there,
//!    they reached nobody); but only while its ledger is current ([`Discovery::ledger_current`]): fetched offers are
//!    checked against the ledger's last commit, and a ledger still syncing would take offers filled long ago for
//!    open ones, and match them;
//! 5. leaves a pool it has not used for [`POOL_IDLE_MS`] (unsubscribes, stops announcing, forgets the book). A pool
//!    named in the node's configuration is never left.
//!
//! Room for all this: DHT queries open connections to many peers, and in a network of a hundred nodes they filled
//! every node's `peers_max`, so that dials for pools were refused at the other end ([`to_trim`] closes the
//! connections kept for nothing when a node is over [`TRIM_ABOVE_PERCENT`] of its limit).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::Id;
use protocol::message::PoolKey;

/// Most pools a node is in at once: room for as many pools of offers as its market holds books for
/// (`market::pools::Limits::pools_max`, 64) and for barter pools, within the gossip topics it may join
/// ([`super::TOPICS_MAX`], of which a few are its own: ledger, bundles, consensus, readings, jobs).
pub const POOLS_MAX: usize = 96;
/// Fewer of the node's peers than this in a pool's mesh, and it looks for more.
pub const MESH_MIN: usize = 2;
/// The first wait before a lookup is repeated; it doubles up to [`LOOKUP_BACKOFF_MAX_MS`].
pub const LOOKUP_BACKOFF_MIN_MS: u64 = 5_000;
/// The longest wait between two lookups of a pool whose mesh stays too small.
pub const LOOKUP_BACKOFF_MAX_MS: u64 = PROVIDE_INTERVAL_MS;
/// How often the node announces each of its pools in the DHT again (records of peers that joined later, churn).
pub const PROVIDE_INTERVAL_MS: u64 = 600_000;
/// Providers dialed during one lookup.
pub const DIALS_PER_LOOKUP_MAX: usize = 3;
/// A lookup stops once it has found this many providers (or as many as it may dial, if more): a lookup run to its
/// end asks the twenty nodes closest to the pool's key, each over a connection of its own, while the first node that
/// holds the pool's records answers with every provider it holds. More are looked up later if the mesh stays small.
pub const LOOKUP_PROVIDERS_ENOUGH: usize = 3;
/// The share of `peers_max` that peers dialed for pools may take, in percent: the rest stays for the ledger's
/// validators, bootnodes and peers that dial in.
pub const POOL_PEERS_SHARE_PERCENT: u32 = 25;
/// A provider whose dial failed is not dialed again for this long.
pub const DIAL_RETRY_MS: u64 = 60_000;
/// Failed dials remembered at once (the oldest is forgotten first).
pub const FAILED_DIALS_MAX: usize = 256;
/// Peers asked for a pool's recent offers when the node's book of it needs filling.
pub const FETCH_PEERS_MAX: usize = 2;
/// Lookups in flight at once, over all pools.
pub const LOOKUPS_MAX: usize = 8;
/// Fetches in flight at once, over all pools.
pub const FETCHES_MAX: usize = 8;
/// Providers remembered per pool (Kademlia keeps as many per key).
pub const PROVIDERS_PER_POOL_MAX: usize = 20;
/// A pool the node has not used (no open offer or unsettled match of its own, no offer placed) for this long is
/// left, unless its configuration names it: two energy intervals of an hour.
pub const POOL_IDLE_MS: u64 = 2 * 3_600_000;
/// Effects waiting to be polled; [`Discovery::tick`] stops producing when this many wait.
pub const EFFECTS_MAX: usize = 4 * POOLS_MAX;

/// Above this share of `peers_max` connected, in percent, the node closes connections kept for nothing.
pub const TRIM_ABOVE_PERCENT: usize = 75;
/// ... down to this share.
pub const TRIM_TO_PERCENT: usize = 60;
/// Never below this many connections: a node with a small `peers_max` keeps what it has.
pub const TRIM_KEEP_MIN: usize = 16;

/// The connected peers to close: none while at most [`TRIM_ABOVE_PERCENT`] of `peers_max` (or [`TRIM_KEEP_MIN`]) are
/// connected; else those
/// not in `keep` (the shell keeps gossip mesh peers, peers in a pool the node is in or dialed for one, trusted peers
/// and bootnodes), in the order of `connected`, down to [`TRIM_TO_PERCENT`]. What DHT queries connect to is closed
/// this way; the routing table keeps their addresses.
pub fn to_trim<P: Ord + Copy>(connected: &[P], keep: &BTreeSet<P>, peers_max: u32) -> Vec<P> {
    let limit = usize::try_from(peers_max).unwrap_or(usize::MAX);
    if connected.len() <= TRIM_KEEP_MIN
        || connected.len().saturating_mul(100) <= limit.saturating_mul(TRIM_ABOVE_PERCENT)
    {
        return Vec::new();
    }
    let target = (limit.saturating_mul(TRIM_TO_PERCENT) / 100).max(TRIM_KEEP_MIN);
    let excess = connected.len().saturating_sub(target);
    connected.iter().filter(|peer| !keep.contains(peer)).take(excess).copied().collect()
}

/// What the network task does for discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<P> {
    /// Announce the node as a provider of the pool.
    Provide(Id),
    /// Look up the pool's providers and dial up to `dial_max` of them the node is not connected to, none of
    /// `exclude`; answer with [`Discovery::found`].
    Lookup { pool: Id, dial_max: usize, exclude: Vec<P> },
    /// Ask `peer` for the pool's recent offers, take them in as gossip, answer with [`Discovery::fetched`].
    Fetch { pool: Id, peer: P },
    /// Publish the node's own open offers in the pool again: its mesh was empty and has peers again.
    Republish(Id),
    /// Leave the pool: unsubscribe, stop announcing, forget its book.
    Leave(PoolKey),
}

/// What the node's gossip layer says of a pool at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<P> {
    /// Peers in the node's mesh for the pool's topic.
    pub mesh: Vec<P>,
    /// Connected peers subscribed to the pool's topic (the mesh among them).
    pub subscribed: Vec<P>,
}

/// A pool as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    pub pool: PoolKey,
    /// Named in the node's configuration: never left.
    pub pinned: bool,
    pub joined_ms: u64,
    pub used_ms: u64,
    /// Providers the last lookup found (this node aside).
    pub providers: usize,
    pub mesh: usize,
    pub subscribed: usize,
    /// When peers last answered with the pool's recent offers (`None`: never).
    pub book_filled_ms: Option<u64>,
    /// Offers taken from the last answers.
    pub offers_fetched: u64,
    pub lookups: u64,
    /// When it is looked up next, if its mesh is still too small then.
    pub next_lookup_ms: u64,
    pub announced_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Pool<P> {
    pool: PoolKey,
    pinned: bool,
    joined_ms: u64,
    used_ms: u64,
    providers: BTreeSet<P>,
    observed: Observed<P>,
    /// A lookup of this pool is in flight.
    looking: bool,
    lookups: u64,
    next_lookup_ms: u64,
    backoff_ms: u64,
    /// The mesh was big enough at the last observation (a fall below restarts the backoff).
    satisfied: bool,
    next_provide_ms: u64,
    provide_backoff_ms: u64,
    announced_ms: Option<u64>,
    /// The book needs filling from peers (joined, or the mesh came back after being empty).
    fill: bool,
    /// Peers asked in this round of fetching, answered or not.
    asked: BTreeSet<P>,
    fetching: usize,
    /// When the next round of fetching may start (after a round nobody answered), and the wait after the next.
    next_fetch_ms: u64,
    fetch_backoff_ms: u64,
    /// The mesh has peers again after being empty: the node's own offers are to be published again.
    republish: bool,
    book_filled_ms: Option<u64>,
    offers_fetched: u64,
}

/// Why a pool was not joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the node is in {0} pools already, the most it joins")]
    TooMany(usize),
}

/// The discovery state of every pool the node is in.
#[derive(Debug, Clone)]
pub struct Discovery<P> {
    pools: BTreeMap<Id, Pool<P>>,
    /// Peers dialed for pools (and for which) and not yet disconnected, failed, or released by leaving the pool.
    dialed: BTreeMap<P, Id>,
    /// Peers whose dial failed, with when they may be dialed again (oldest first).
    failed: VecDeque<(P, u64)>,
    /// The most peers dialed for pools at once.
    dial_budget: usize,
    /// Whether the node runs the DHT: without it, pools are neither announced nor looked up.
    dht: bool,
    lookups: usize,
    fetches: usize,
    /// Whether the node's ledger is current (no fetches while it is not).
    ledger_current: bool,
    effects: VecDeque<Effect<P>>,
}

impl<P: Ord + Copy + std::fmt::Debug> Discovery<P> {
    /// Discovery for a node that keeps at most `peers_max` connections, with or without the DHT.
    pub fn new(peers_max: u32, dht: bool) -> Self {
        let budget = u64::from(peers_max) * u64::from(POOL_PEERS_SHARE_PERCENT) / 100;
        Discovery {
            pools: BTreeMap::new(),
            dialed: BTreeMap::new(),
            failed: VecDeque::new(),
            dial_budget: usize::try_from(budget).unwrap_or(usize::MAX),
            dht,
            lookups: 0,
            fetches: 0,
            ledger_current: true,
            effects: VecDeque::new(),
        }
    }

    /// Whether the node's ledger is current (as the node says: not syncing, a block lately): while it is not, no
    /// book is fetched (a pool waiting for its book gets it at the first tick after). A node without a ledger is
    /// always current.
    pub fn ledger_current(&mut self, current: bool) {
        self.ledger_current = current;
    }

    /// The node joins a pool (or uses one it is in: pinning sticks). It is announced and looked up at once.
    pub fn join(&mut self, pool: &PoolKey, pinned: bool, now_ms: u64) -> Result<(), JoinError> {
        let digest = pool.digest();
        if let Some(known) = self.pools.get_mut(&digest) {
            known.pinned |= pinned;
            known.used_ms = known.used_ms.max(now_ms);
            return Ok(());
        }
        if self.pools.len() >= POOLS_MAX {
            return Err(JoinError::TooMany(POOLS_MAX));
        }
        self.pools.insert(
            digest,
            Pool {
                pool: pool.clone(),
                pinned,
                joined_ms: now_ms,
                used_ms: now_ms,
                providers: BTreeSet::new(),
                observed: Observed { mesh: Vec::new(), subscribed: Vec::new() },
                looking: false,
                lookups: 0,
                next_lookup_ms: now_ms,
                backoff_ms: LOOKUP_BACKOFF_MIN_MS,
                satisfied: false,
                next_provide_ms: now_ms,
                provide_backoff_ms: LOOKUP_BACKOFF_MIN_MS,
                announced_ms: None,
                fill: true,
                asked: BTreeSet::new(),
                fetching: 0,
                next_fetch_ms: now_ms,
                fetch_backoff_ms: LOOKUP_BACKOFF_MIN_MS,
                republish: false,
                book_filled_ms: None,
                offers_fetched: 0,
            },
        );
        Ok(())
    }

    /// The node used these pools at `now_ms` (it has open offers or unsettled matches in them); unknown ones are
    /// ignored.
    pub fn used<'a>(&mut self, pools: impl IntoIterator<Item = &'a Id>, now_ms: u64) {
        for digest in pools {
            if let Some(pool) = self.pools.get_mut(digest) {
                pool.used_ms = pool.used_ms.max(now_ms);
            }
        }
    }

    /// The node left a pool (its topic unsubscribed): what was in flight for it is over (the shell drops it), and
    /// the peers dialed for it no longer count against the budget.
    pub fn forget(&mut self, digest: &Id) {
        if let Some(pool) = self.pools.remove(digest) {
            self.lookups -= usize::from(pool.looking);
            self.fetches -= pool.fetching;
            self.dialed.retain(|_, dialed_for| dialed_for != digest);
        }
    }

    /// Whether the node is in this pool.
    pub fn contains(&self, digest: &Id) -> bool {
        self.pools.contains_key(digest)
    }

    /// The pools the node is in.
    pub fn pools(&self) -> impl Iterator<Item = (&Id, &PoolKey)> {
        self.pools.iter().map(|(digest, pool)| (digest, &pool.pool))
    }

    /// What the gossip layer says of a pool now.
    pub fn observe(&mut self, digest: &Id, observed: Observed<P>) {
        let Some(pool) = self.pools.get_mut(digest) else { return };
        // A mesh that was empty and fills again (a partition healed, every peer restarted): the book may have missed
        // what was offered meanwhile.
        // Its own offers placed meanwhile reached nobody.
        if pool.observed.mesh.is_empty() && !observed.mesh.is_empty() {
            pool.republish = true;
            if pool.book_filled_ms.is_some() {
                pool.fill = true;
            }
        }
        pool.observed = observed;
    }

    /// Whether a lookup may dial one more provider now, with `connected` peers: within the budget for pools and
    /// below `peers_max` (checked at each dial, since lookups run at once).
    pub fn may_dial(&self, connected: usize, peers_max: u32) -> bool {
        self.dialed.len() < self.dial_budget && connected < usize::try_from(peers_max).unwrap_or(usize::MAX)
    }

    /// A lookup of `pool` dialed a provider: it counts against the budget until it disconnects, the dial fails or
    /// the node leaves the pool.
    pub fn dialing(&mut self, peer: P, pool: &Id) {
        self.dialed.insert(peer, *pool);
    }

    /// A lookup ended: the providers found (this node aside).
    pub fn found(&mut self, digest: &Id, providers: Vec<P>) {
        let Some(pool) = self.pools.get_mut(digest) else { return };
        if pool.looking {
            pool.looking = false;
            self.lookups -= 1;
        }
        pool.providers = providers.into_iter().take(PROVIDERS_PER_POOL_MAX).collect();
    }

    /// An announcement ended.
    pub fn provided(&mut self, digest: &Id, ok: bool, now_ms: u64) {
        let Some(pool) = self.pools.get_mut(digest) else { return };
        if ok {
            pool.announced_ms = Some(now_ms);
            pool.provide_backoff_ms = LOOKUP_BACKOFF_MIN_MS;
        } else {
            // Too few peers known yet, say: try again soon rather than in ten minutes.
            pool.next_provide_ms = now_ms + pool.provide_backoff_ms;
            pool.provide_backoff_ms = (pool.provide_backoff_ms * 2).min(PROVIDE_INTERVAL_MS);
        }
    }

    /// A fetch ended: `Some(offers taken)`, or `None` when the peer did not answer with offers.
    pub fn fetched(&mut self, digest: &Id, offers: Option<u64>, now_ms: u64) {
        let Some(pool) = self.pools.get_mut(digest) else { return };
        if pool.fetching > 0 {
            pool.fetching -= 1;
            self.fetches -= 1;
        }
        if let Some(offers) = offers {
            pool.book_filled_ms = Some(now_ms);
            pool.offers_fetched = offers;
        }
        if offers.is_some_and(|offers| offers > 0) {
            pool.fill = false;
            pool.asked.clear();
            pool.fetch_backoff_ms = LOOKUP_BACKOFF_MIN_MS;
        } else if pool.fill && pool.fetching == 0 {
            // Nobody asked in this round answered with offers new to the node (an empty pool, or peers that joined
            // after it): a new round, with whoever is in the pool then, after a wait.
            pool.asked.clear();
            pool.next_fetch_ms = now_ms + pool.fetch_backoff_ms;
            pool.fetch_backoff_ms = (pool.fetch_backoff_ms * 2).min(LOOKUP_BACKOFF_MAX_MS);
        }
    }

    /// A peer's last connection closed, or a dial to it failed (`failed`). Only failed dials of discovery's own
    /// keep a provider from being dialed again for a while.
    pub fn disconnected(&mut self, peer: &P, failed: bool, now_ms: u64) {
        if self.dialed.remove(peer).is_some() && failed {
            if self.failed.len() >= FAILED_DIALS_MAX {
                self.failed.pop_front();
            }
            self.failed.push_back((*peer, now_ms + DIAL_RETRY_MS));
        }
    }

    /// Decides what to do at `now_ms`, given the node's connections now: queues the effects for [`Self::poll`].
    pub fn tick(&mut self, connected: usize, peers_max: u32, now_ms: u64) {
        while self.failed.front().is_some_and(|(_, until)| *until <= now_ms) {
            self.failed.pop_front();
        }
        let idle: Vec<Id> = self
            .pools
            .iter()
            .filter(|(_, pool)| !pool.pinned && now_ms.saturating_sub(pool.used_ms) >= POOL_IDLE_MS)
            .map(|(digest, _)| *digest)
            .collect();
        for digest in idle {
            if let Some(pool) = self.pools.get(&digest) {
                self.effects.push_back(Effect::Leave(pool.pool.clone()));
            }
            self.forget(&digest);
        }
        let room = usize::try_from(peers_max).unwrap_or(usize::MAX).saturating_sub(connected);
        let exclude: Vec<P> = self.failed.iter().map(|(peer, _)| *peer).collect();
        for (digest, pool) in &mut self.pools {
            if self.effects.len() >= EFFECTS_MAX {
                break;
            }
            // Without a connection there is nobody to ask: announcements and lookups wait for the first one (they
            // would fail at once, and the next try would come only after a backoff).
            if self.dht && connected > 0 && now_ms >= pool.next_provide_ms {
                self.effects.push_back(Effect::Provide(*digest));
                pool.next_provide_ms = now_ms + PROVIDE_INTERVAL_MS;
            }
            let enough = pool.observed.mesh.len() >= MESH_MIN;
            if enough {
                pool.satisfied = true;
            } else if pool.satisfied {
                // The mesh fell: look again soon.
                pool.satisfied = false;
                pool.backoff_ms = LOOKUP_BACKOFF_MIN_MS;
                pool.next_lookup_ms = pool.next_lookup_ms.min(now_ms);
            }
            // The first lookup runs whatever the mesh (it counts the providers); later ones while it is too small.
            let wanted = pool.lookups == 0 || !enough;
            if self.dht
                && connected > 0
                && wanted
                && !pool.looking
                && now_ms >= pool.next_lookup_ms
                && self.lookups < LOOKUPS_MAX
            {
                let dial_max = DIALS_PER_LOOKUP_MAX.min(self.dial_budget.saturating_sub(self.dialed.len())).min(room);
                self.effects.push_back(Effect::Lookup { pool: *digest, dial_max, exclude: exclude.clone() });
                pool.looking = true;
                pool.lookups += 1;
                self.lookups += 1;
                pool.next_lookup_ms = now_ms + pool.backoff_ms;
                pool.backoff_ms = (pool.backoff_ms * 2).min(LOOKUP_BACKOFF_MAX_MS);
            }
            if pool.republish {
                pool.republish = false;
                self.effects.push_back(Effect::Republish(*digest));
            }
            if pool.fill && self.ledger_current && now_ms >= pool.next_fetch_ms {
                // Mesh peers first: they stay.
                let candidates: Vec<P> = pool
                    .observed
                    .mesh
                    .iter()
                    .chain(pool.observed.subscribed.iter())
                    .copied()
                    .filter(|peer| !pool.asked.contains(peer))
                    .collect();
                for peer in candidates {
                    if pool.asked.len() >= FETCH_PEERS_MAX || self.fetches >= FETCHES_MAX {
                        break;
                    }
                    if pool.asked.insert(peer) {
                        self.effects.push_back(Effect::Fetch { pool: *digest, peer });
                        pool.fetching += 1;
                        self.fetches += 1;
                    }
                }
            }
        }
    }

    /// The next effect to carry out.
    pub fn poll(&mut self) -> Option<Effect<P>> {
        self.effects.pop_front()
    }

    /// Peers dialed for pools the node is in and still connected (or being dialed).
    pub fn pool_peers(&self) -> usize {
        self.dialed.len()
    }

    /// Whether a peer was dialed for a pool the node is in.
    pub fn dialed_for_pool(&self, peer: &P) -> bool {
        self.dialed.contains_key(peer)
    }

    /// The most peers dialed for pools at once.
    pub fn dial_budget(&self) -> usize {
        self.dial_budget
    }

    /// Every pool as the API shows it.
    pub fn views(&self) -> Vec<PoolView> {
        self.pools
            .values()
            .map(|pool| PoolView {
                pool: pool.pool.clone(),
                pinned: pool.pinned,
                joined_ms: pool.joined_ms,
                used_ms: pool.used_ms,
                providers: pool.providers.len(),
                mesh: pool.observed.mesh.len(),
                subscribed: pool.observed.subscribed.len(),
                book_filled_ms: pool.book_filled_ms,
                offers_fetched: pool.offers_fetched,
                lookups: pool.lookups,
                next_lookup_ms: pool.next_lookup_ms,
                announced_ms: pool.announced_ms,
            })
            .collect()
    }
}

/// When a node announces a key of its own in the DHT (an archive node: [`super::archive_key`]): at once, again every
/// [`PROVIDE_INTERVAL_MS`], and after a failure (too few peers known yet) soon, backing off from
/// [`LOOKUP_BACKOFF_MIN_MS`] to the interval. Sans-IO: the swarm asks [`Announcement::due`] each tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub key: Id,
    next_ms: u64,
    backoff_ms: u64,
    in_flight: bool,
}

impl Announcement {
    pub fn new(key: Id) -> Announcement {
        Announcement { key, next_ms: 0, backoff_ms: LOOKUP_BACKOFF_MIN_MS, in_flight: false }
    }

    /// Whether to start an announcement now (then it is in flight until [`Announcement::provided`]).
    pub fn due(&mut self, now_ms: u64) -> bool {
        if self.in_flight || now_ms < self.next_ms {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// An announcement ended: stored by some peer (`ok`), or not.
    pub fn provided(&mut self, ok: bool, now_ms: u64) {
        self.in_flight = false;
        if ok {
            self.next_ms = now_ms + PROVIDE_INTERVAL_MS;
            self.backoff_ms = LOOKUP_BACKOFF_MIN_MS;
        } else {
            self.next_ms = now_ms + self.backoff_ms;
            self.backoff_ms = (self.backoff_ms * 2).min(PROVIDE_INTERVAL_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_announcement_repeats_every_interval_and_soon_after_a_failure() {
        let mut announcement = Announcement::new(Id([7; 32]));
        assert!(announcement.due(0));
        assert!(!announcement.due(1), "one at a time");
        announcement.provided(false, 10);
        assert!(!announcement.due(10 + LOOKUP_BACKOFF_MIN_MS - 1));
        assert!(announcement.due(10 + LOOKUP_BACKOFF_MIN_MS));
        announcement.provided(false, 20_000);
        assert!(!announcement.due(20_000 + LOOKUP_BACKOFF_MIN_MS), "backing off");
        assert!(announcement.due(20_000 + 2 * LOOKUP_BACKOFF_MIN_MS));
        announcement.provided(true, 40_000);
        assert!(!announcement.due(40_000 + PROVIDE_INTERVAL_MS - 1));
        assert!(announcement.due(40_000 + PROVIDE_INTERVAL_MS));
    }

    fn pool(cell: &str) -> PoolKey {
        format!("energy/credit/{cell}/900").parse().unwrap()
    }

    fn drain(discovery: &mut Discovery<u8>) -> Vec<Effect<u8>> {
        std::iter::from_fn(|| discovery.poll()).collect()
    }

    fn seen(mesh: &[u8], subscribed: &[u8]) -> Observed<u8> {
        Observed { mesh: mesh.to_vec(), subscribed: subscribed.to_vec() }
    }

    #[test]
    fn a_joined_pool_is_announced_looked_up_and_its_book_fetched_from_two_peers_in_it() {
        let mut discovery = Discovery::new(64, true);
        let (energy, digest) = (pool("u33db"), pool("u33db").digest());
        discovery.join(&energy, false, 0).unwrap();
        // Not connected yet: nobody to announce to or to ask; both wait for the first connection.
        discovery.tick(0, 64, 0);
        assert_eq!(drain(&mut discovery), vec![]);
        discovery.tick(1, 64, 0);
        assert_eq!(
            drain(&mut discovery),
            vec![Effect::Provide(digest), Effect::Lookup { pool: digest, dial_max: 3, exclude: vec![] }]
        );
        // The lookup found three providers and dialed two; nobody is in the pool's topic yet: nothing to fetch from.
        discovery.dialing(7, &digest);
        discovery.dialing(8, &digest);
        discovery.found(&digest, vec![7, 8, 9]);
        discovery.tick(3, 64, 500);
        assert_eq!(drain(&mut discovery), vec![]);
        // Two of them are in the mesh, a third subscribed: the first two are asked for the book.
        discovery.observe(&digest, seen(&[7, 8], &[7, 8, 9]));
        discovery.tick(3, 64, 1_000);
        // (Its mesh had nobody before: its own offers, if any, are published again.)
        assert_eq!(
            drain(&mut discovery),
            vec![
                Effect::Republish(digest),
                Effect::Fetch { pool: digest, peer: 7 },
                Effect::Fetch { pool: digest, peer: 8 }
            ]
        );
        discovery.fetched(&digest, Some(12), 1_200);
        discovery.fetched(&digest, Some(3), 1_300);
        discovery.tick(3, 64, 2_000);
        assert_eq!(drain(&mut discovery), vec![], "filled, with a mesh big enough: nothing more to do");
        let view = &discovery.views()[0];
        assert_eq!((view.providers, view.mesh, view.subscribed, view.book_filled_ms), (3, 2, 3, Some(1_300)));
        // Ten minutes on, it is announced again.
        discovery.tick(3, 64, PROVIDE_INTERVAL_MS);
        assert_eq!(drain(&mut discovery), vec![Effect::Provide(digest)]);
    }

    #[test]
    fn a_small_mesh_is_looked_for_again_with_backoff_and_dials_stay_within_their_share_of_peers_max() {
        // 16 peers at most: a quarter of them, 4, may be dialed for pools.
        let mut discovery = Discovery::new(16, true);
        assert_eq!(discovery.dial_budget(), 4);
        let (energy, digest) = (pool("u33db"), pool("u33db").digest());
        discovery.join(&energy, true, 0).unwrap();
        discovery.tick(1, 16, 0);
        drain(&mut discovery);
        discovery.dialing(1, &digest);
        discovery.dialing(2, &digest);
        discovery.dialing(3, &digest);
        discovery.found(&digest, vec![1, 2, 3]);
        let mut lookups = Vec::new();
        for second in 1..=120u64 {
            discovery.tick(4, 16, second * 1_000);
            for effect in drain(&mut discovery) {
                if let Effect::Lookup { dial_max, .. } = effect {
                    lookups.push((second, dial_max));
                    discovery.found(&digest, vec![1, 2, 3, 4, 5]);
                }
            }
        }
        // 5 s, then 10, 20, 40 s later: one dial left in the budget each time (3 of 4 peers taken).
        assert_eq!(lookups, vec![(5, 1), (15, 1), (35, 1), (75, 1)]);
        // A peer dialed for the pool disconnects, and the mesh fills: no more lookups until it falls again (the next
        // was due at 155 s).
        discovery.disconnected(&1, false, 121_000);
        discovery.observe(&digest, seen(&[2, 3], &[2, 3]));
        discovery.tick(3, 16, 121_000);
        let effects = drain(&mut discovery);
        assert!(effects.iter().all(|effect| matches!(effect, Effect::Fetch { .. } | Effect::Republish(_))));
        discovery.tick(3, 16, 125_000);
        assert_eq!(drain(&mut discovery), vec![]);
        // The mesh falls at 130 s: looked up at once, not at 155 s, with two dials left in the budget (2 of 4 taken)
        // but room for one below peers_max; then the waits start again at 5 s.
        discovery.observe(&digest, seen(&[3], &[3]));
        discovery.tick(15, 16, 130_000);
        assert_eq!(drain(&mut discovery), vec![Effect::Lookup { pool: digest, dial_max: 1, exclude: vec![] }]);
        discovery.found(&digest, vec![2, 3]);
        discovery.tick(3, 16, 134_000);
        assert_eq!(drain(&mut discovery), vec![]);
        discovery.tick(3, 16, 135_000);
        assert_eq!(drain(&mut discovery), vec![Effect::Lookup { pool: digest, dial_max: 2, exclude: vec![] }]);
    }

    #[test]
    fn lookups_running_at_once_share_the_dial_budget_and_a_pool_left_gives_its_peers_back() {
        let mut discovery = Discovery::new(16, true);
        let (a, b) = (pool("u33db"), pool("u33dc"));
        discovery.join(&a, true, 0).unwrap();
        discovery.join(&b, true, 0).unwrap();
        discovery.tick(1, 16, 0);
        let lookups: Vec<usize> = drain(&mut discovery)
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Lookup { dial_max, .. } => Some(dial_max),
                _ => None,
            })
            .collect();
        // Each lookup may dial 3, but the dials are checked against the budget of 4 as they happen.
        assert_eq!(lookups, vec![3, 3]);
        let mut dialed = 0;
        for (peer, pool) in [(1, a.digest()), (2, a.digest()), (3, a.digest()), (4, b.digest()), (5, b.digest())] {
            if discovery.may_dial(1 + dialed, 16) {
                discovery.dialing(peer, &pool);
                dialed += 1;
            }
        }
        assert_eq!((dialed, discovery.pool_peers()), (4, 4));
        assert!(!discovery.may_dial(5, 16));
        // Leaving pool a gives its three peers back to the budget (they may stay connected for other topics).
        discovery.forget(&a.digest());
        assert_eq!(discovery.pool_peers(), 1);
        assert!(discovery.may_dial(5, 16));
        assert!(!discovery.may_dial(16, 16), "never at or above peers_max");
    }

    #[test]
    fn a_fetch_nobody_answers_is_tried_again_after_a_growing_wait() {
        let mut discovery = Discovery::new(64, false);
        let (energy, digest) = (pool("u33db"), pool("u33db").digest());
        discovery.join(&energy, true, 0).unwrap();
        discovery.observe(&digest, seen(&[9], &[9]));
        let mut asked = Vec::new();
        for second in 0..=40u64 {
            discovery.tick(1, 64, second * 1_000);
            for effect in drain(&mut discovery) {
                if let Effect::Fetch { peer, .. } = effect {
                    asked.push((second, peer));
                    discovery.fetched(&digest, None, second * 1_000);
                }
            }
        }
        // Without the DHT nothing is announced or looked up; the one peer in the pool is asked at 0, 5, 15 and 35 s.
        assert_eq!(asked, vec![(0, 9), (5, 9), (15, 9), (35, 9)]);
        // An answer with nothing new (an empty pool, or a peer that joined after the node) is an answer, but the
        // rounds go on, waiting longer: a peer that holds the book may come.
        discovery.tick(1, 64, 75_000);
        assert_eq!(drain(&mut discovery), vec![Effect::Fetch { pool: digest, peer: 9 }]);
        discovery.fetched(&digest, Some(0), 75_100);
        assert_eq!(discovery.views()[0].book_filled_ms, Some(75_100));
        discovery.tick(1, 64, 150_000);
        assert_eq!(drain(&mut discovery), vec![]);
        discovery.observe(&digest, seen(&[9, 10], &[9, 10]));
        discovery.tick(2, 64, 155_100);
        assert_eq!(
            drain(&mut discovery),
            vec![Effect::Fetch { pool: digest, peer: 9 }, Effect::Fetch { pool: digest, peer: 10 }]
        );
        // An answer with offers fills the book and ends the rounds.
        discovery.fetched(&digest, Some(3), 155_200);
        discovery.fetched(&digest, None, 155_300);
        discovery.tick(2, 64, 900_000);
        assert_eq!(drain(&mut discovery), vec![]);
        assert_eq!(discovery.views()[0].offers_fetched, 3);
    }

    /// A node whose ledger is behind would check fetched offers against an old state, take offers filled since for
    /// open ones, and match them: it fetches no book until its ledger is current, and then at once.
    #[test]
    fn no_book_is_fetched_while_the_ledger_is_behind() {
        let mut discovery = Discovery::new(64, false);
        let (energy, digest) = (pool("u33db"), pool("u33db").digest());
        discovery.ledger_current(false);
        discovery.join(&energy, true, 0).unwrap();
        discovery.observe(&digest, seen(&[9], &[9]));
        let fetches = |discovery: &mut Discovery<u8>| {
            drain(discovery).into_iter().filter(|effect| matches!(effect, Effect::Fetch { .. })).collect::<Vec<_>>()
        };
        for second in 0..=30u64 {
            discovery.tick(1, 64, second * 1_000);
            assert_eq!(fetches(&mut discovery), vec![], "at {second} s");
        }
        discovery.ledger_current(true);
        discovery.tick(1, 64, 31_000);
        assert_eq!(fetches(&mut discovery), vec![Effect::Fetch { pool: digest, peer: 9 }]);
    }

    #[test]
    fn a_provider_whose_dial_failed_is_not_dialed_again_for_a_minute() {
        let mut discovery = Discovery::new(64, true);
        let (energy, digest) = (pool("u33db"), pool("u33db").digest());
        discovery.join(&energy, true, 0).unwrap();
        discovery.tick(1, 64, 0);
        drain(&mut discovery);
        discovery.dialing(5, &digest);
        discovery.found(&digest, vec![5]);
        discovery.disconnected(&5, true, 1_000);
        // Lookups at 5, 15 and 35 s leave it out; the one at 75 s may dial it again.
        let mut excluded = Vec::new();
        for second in 2..=80u64 {
            discovery.tick(1, 64, second * 1_000);
            for effect in drain(&mut discovery) {
                if let Effect::Lookup { exclude, .. } = effect {
                    excluded.push((second, exclude));
                    discovery.found(&digest, vec![5]);
                }
            }
        }
        assert_eq!(excluded, vec![(5, vec![5]), (15, vec![5]), (35, vec![5]), (75, vec![])]);
    }

    #[test]
    fn an_unused_pool_is_left_after_its_idle_time_and_a_configured_one_never() {
        let mut discovery = Discovery::new(64, true);
        let (used, configured) = (pool("u33db"), pool("u33dc"));
        discovery.join(&used, false, 0).unwrap();
        discovery.join(&configured, true, 0).unwrap();
        discovery.used([&used.digest()], POOL_IDLE_MS / 2);
        discovery.tick(0, 64, POOL_IDLE_MS);
        assert!(!drain(&mut discovery).iter().any(|effect| matches!(effect, Effect::Leave(_))));
        discovery.tick(0, 64, POOL_IDLE_MS / 2 + POOL_IDLE_MS);
        let left: Vec<_> = drain(&mut discovery)
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Leave(pool) => Some(pool),
                _ => None,
            })
            .collect();
        assert_eq!(left, vec![used.clone()]);
        assert!(!discovery.contains(&used.digest()) && discovery.contains(&configured.digest()));
        discovery.tick(0, 64, 100 * POOL_IDLE_MS);
        assert!(!drain(&mut discovery).iter().any(|effect| matches!(effect, Effect::Leave(_))));
    }

    #[test]
    fn an_empty_mesh_that_fills_again_refills_the_book_and_a_failed_announcement_is_retried_soon() {
        let mut discovery = Discovery::new(64, true);
        let (energy, digest) = (pool("u33db"), pool("u33db").digest());
        discovery.join(&energy, true, 0).unwrap();
        discovery.tick(2, 64, 0);
        drain(&mut discovery);
        discovery.provided(&digest, false, 100);
        discovery.found(&digest, vec![1, 2]);
        discovery.observe(&digest, seen(&[1, 2], &[1, 2]));
        discovery.tick(2, 64, 1_000);
        let effects = drain(&mut discovery);
        assert_eq!(effects.iter().filter(|effect| matches!(effect, Effect::Fetch { .. })).count(), 2, "{effects:?}");
        discovery.fetched(&digest, Some(4), 1_100);
        discovery.fetched(&digest, None, 1_100);
        discovery.tick(2, 64, 5_100);
        assert_eq!(drain(&mut discovery), vec![Effect::Provide(digest)], "announced again 5 s after the failure");
        discovery.provided(&digest, true, 5_200);
        // A partition: the mesh empties (and is looked for), then heals: the book is fetched again.
        discovery.observe(&digest, seen(&[], &[]));
        discovery.tick(1, 64, 6_000);
        assert!(matches!(drain(&mut discovery)[..], [Effect::Lookup { .. }]));
        discovery.found(&digest, vec![1, 2]);
        discovery.observe(&digest, seen(&[2], &[2]));
        discovery.tick(1, 64, 7_000);
        assert_eq!(drain(&mut discovery), vec![Effect::Republish(digest), Effect::Fetch { pool: digest, peer: 2 }]);
    }

    #[test]
    fn connections_kept_for_nothing_are_closed_only_above_three_quarters_of_peers_max() {
        let connected: Vec<u8> = (0..48).collect();
        let keep: BTreeSet<u8> = (0..10).collect();
        assert_eq!(to_trim(&connected, &keep, 64), Vec::<u8>::new(), "48 of 64 is three quarters: nothing closed");
        let connected: Vec<u8> = (0..60).collect();
        // Down to 38 (60 % of 64): 22 closed, none of those kept.
        let closed = to_trim(&connected, &keep, 64);
        assert_eq!(closed, (10..32).collect::<Vec<u8>>());
        // With almost everyone kept, only what may be closed is.
        let keep: BTreeSet<u8> = (0..55).collect();
        assert_eq!(to_trim(&connected, &keep, 64), (55..60).collect::<Vec<u8>>());
        // A small peers_max keeps what it has up to 16 connections, and trims to no fewer.
        assert_eq!(to_trim(&[1, 2], &BTreeSet::new(), 2), Vec::<u8>::new());
        let connected: Vec<u8> = (0..20).collect();
        assert_eq!(to_trim(&connected, &BTreeSet::new(), 20), (0..4).collect::<Vec<u8>>());
    }

    #[test]
    fn the_pools_joined_are_bounded() {
        let mut discovery: Discovery<u8> = Discovery::new(64, true);
        for index in 0..POOLS_MAX {
            discovery.join(&pool(&format!("u{index:04}")), false, 0).unwrap();
        }
        assert_eq!(discovery.join(&pool("zzzz"), false, 0), Err(JoinError::TooMany(POOLS_MAX)));
        // Joining one it is in again is using it.
        discovery.join(&pool("u0000"), true, 10).unwrap();
        assert!(discovery.views().iter().any(|view| view.pinned && view.used_ms == 10));
    }
}
