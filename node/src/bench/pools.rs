//! `kos bench pools`: pools among strangers (issue 26). N full nodes in this process (real swarms, TCP on
//! 127.0.0.1, Kademlia on, mDNS off), each started with two random earlier nodes as its bootnodes: no node knows the
//! others of its pool. In each of C cells a few providers join the cell's compute pool and rest an ask there. Once
//! the network is at rest (its nodes' DHT start-up over: [`quiet`]), one newcomer per cell joins its pool, one after
//! another or all at once, knowing only two random background nodes. For each newcomer
//! it measures:
//! - **book**: from its start until it holds every ask of its pool (they came by a fetch of the book, or by gossip);
//! - **first match**: from the publication of its bid, which crosses the asks, until a provider of the pool holds
//!   it (a provider's market matches it on arrival; the newcomer's own book matches it at once).
//!
//! Over every node at the end, it reports the peers connected and the peers dialed for pools, against `peers_max`
//! and the pool budget (a quarter of it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::message::{Body, Offer, PoolId, PoolKey, Side};
use protocol::{Draft, Id, NetworkId};

use super::{SplitMix, percentile};
use crate::network::local::{self, Transport, now_ms};
use crate::network::{Delivery, Topic, wait_for};

/// What `kos bench pools` runs.
#[derive(Debug, Clone)]
pub struct PoolsArgs {
    /// Nodes in all, newcomers included.
    pub nodes: usize,
    pub cells: usize,
    /// Providers per cell's pool.
    pub providers: usize,
    pub seed: u64,
    /// All newcomers at once (else one after another, each measured alone).
    pub together: bool,
    /// The newcomers come as soon as the providers found each other, while the network's nodes are still
    /// starting (else once it is at rest: [`quiet`]).
    pub at_start: bool,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct PoolsReport {
    pub nodes: usize,
    pub cells: usize,
    pub providers: usize,
    /// Newcomers that held their pool's whole book before the deadline, and whose bid reached a provider.
    pub books: usize,
    pub matches: usize,
    pub book_p50_ms: f64,
    pub book_p99_ms: f64,
    pub match_p50_ms: f64,
    pub match_p99_ms: f64,
    /// The newcomers' steps on the way to the book.
    pub steps: Steps,
    /// Seconds the providers took to settle (announced, in a mesh with each other) before the newcomers started.
    pub settle_s: f64,
    /// When the network was at rest before the newcomers came (from the providers' start; `None`: not waited for,
    /// or not at rest within [`QUIET_DEADLINE`]).
    pub quiet_s: Option<f64>,
    /// Over every node at the end: the most peers connected, and the most dialed for pools.
    pub peers_max_seen: usize,
    pub pool_peers_max_seen: usize,
    pub pool_peers_mean: f64,
    /// The limits: `peers_max` and the pool budget (a quarter of it).
    pub peers_max: u32,
    pub pool_budget: usize,
    /// Over every node, from the providers' start until the newcomers came, and from then to the end: peers
    /// connected (a first connection), peers the trim disconnected, and how long that was, s.
    pub churn_before: Churn,
    pub churn_newcomers: Churn,
}

/// Connections made and trimmed over all nodes in a while.
#[derive(Debug, Clone, Copy, Default)]
pub struct Churn {
    pub connected: u64,
    pub trimmed: u64,
    pub seconds: f64,
}

impl Churn {
    fn between(before: (u64, u64), after: (u64, u64), since: Instant) -> Churn {
        Churn {
            connected: after.0.saturating_sub(before.0),
            trimmed: after.1.saturating_sub(before.1),
            seconds: since.elapsed().as_secs_f64(),
        }
    }
}

/// How long a newcomer may take for its book and for its bid.
const DEADLINE: Duration = Duration::from_secs(60);

/// Each node's deliveries, recorded: (topic, message id) -> first arrival.
type Arrivals = Arc<Mutex<BTreeMap<usize, BTreeMap<Id, Instant>>>>;

fn collect(index: usize, mut deliveries: tokio::sync::mpsc::Receiver<Delivery>, arrivals: Arrivals) {
    tokio::spawn(async move {
        while let Some(delivery) = deliveries.recv().await {
            if let (Topic::Pool(_), Ok(mut arrivals)) = (delivery.topic, arrivals.lock()) {
                arrivals.entry(index).or_default().entry(delivery.id).or_insert_with(Instant::now);
            }
        }
    });
}

fn order(
    keypair: &protocol::Keypair,
    network: &NetworkId,
    pool: &PoolId,
    side: Side,
    nonce: u64,
) -> protocol::Envelope {
    let now = now_ms();
    Draft {
        network: network.clone(),
        nonce,
        created_ms: now,
        expires_ms: now + 900_000,
        body: Body::Offer(Offer { pool: pool.clone(), side, quantity: 1_000, unit_price: 5_000, delivery_start_s: 0 }),
    }
    .sign(keypair)
}

/// What the providers see of their pools: peers, peers dialed for pools, and (providers known, mesh, subscribed,
/// lookups, announced, book filled).
async fn diagnose(nodes: &[(crate::network::Handle, protocol::Keypair)], providers: usize) -> anyhow::Result<String> {
    let mut views = Vec::new();
    for (handle, _) in nodes.iter().skip(1).take(providers) {
        let info = handle.info().await?;
        let view = handle.pools().await?.into_iter().next().map(|view| {
            let (announced, filled) = (view.announced_ms.is_some(), view.book_filled_ms.is_some());
            (view.providers, view.mesh, view.subscribed, view.lookups, announced, filled)
        });
        views.push(format!("peers {} pool peers {} {view:?}", info.peers.len(), info.pool_peers));
    }
    Ok(views.join("\n"))
}

/// Waits until each of `waiting` (node index, since) sees all of its `ids` among its deliveries, at most
/// [`DEADLINE`]: the milliseconds each took.
async fn until_delivered(
    arrivals: &Arrivals,
    waiting: &[(Vec<usize>, Instant)],
    ids: &[BTreeSet<Id>],
    all: bool,
) -> Vec<f64> {
    let mut took: BTreeMap<usize, f64> = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    while took.len() < waiting.len() && Instant::now() < deadline {
        if let Ok(arrivals) = arrivals.lock() {
            for (slot, (holders, since)) in waiting.iter().enumerate() {
                // The time it took: when the last of the ids arrived (all) or the first (any), at any of the holders.
                let times = ids[slot].iter().map(|id| {
                    holders
                        .iter()
                        .filter_map(|holder| arrivals.get(holder).and_then(|seen| seen.get(id)))
                        .min()
                        .copied()
                });
                let done = if all {
                    times.collect::<Option<Vec<_>>>().and_then(|times| times.into_iter().max())
                } else {
                    times.flatten().min()
                };
                if let Some(at) = done {
                    took.entry(slot).or_insert_with(|| at.duration_since(*since).as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut took: Vec<f64> = took.into_values().collect();
    took.sort_by(f64::total_cmp);
    took
}

/// The network before the newcomers: `count` nodes, each dialing two random earlier ones; their deliveries recorded.
async fn background_network(
    count: usize,
    network: &NetworkId,
    rng: &mut SplitMix,
    arrivals: &Arrivals,
) -> anyhow::Result<(Vec<(crate::network::Handle, protocol::Keypair)>, Vec<libp2p::Multiaddr>)> {
    let mut nodes = Vec::with_capacity(count);
    let mut addresses: Vec<libp2p::Multiaddr> = Vec::with_capacity(count);
    for index in 0..count {
        let bootnodes: Vec<_> = if index == 0 {
            Vec::new()
        } else {
            (0..2).map(|_| addresses[rng.below(index)].clone()).collect::<BTreeSet<_>>().into_iter().collect()
        };
        let node = local::start(20_000 + index as u64, network, Transport::Tcp, |config| {
            config.bootnodes = bootnodes.clone();
        })
        .await?;
        addresses.push(node.address.clone());
        nodes.push((node.handle, node.keypair));
        collect(index, node.deliveries, arrivals.clone());
    }
    Ok((nodes, addresses))
}

/// The network is at rest when all its nodes together opened fewer connections than there are nodes over the last
/// [`QUIET_WINDOW`].
const QUIET_WINDOW: Duration = Duration::from_secs(5);
/// The longest wait for the network to be at rest: below Kademlia's periodic bootstrap (every 5 minutes from each
/// node's start), which would start the hundred nodes' walks again together.
const QUIET_DEADLINE: Duration = Duration::from_secs(200);

/// Waits until the network is at rest (at most [`QUIET_DEADLINE`]); when it was, in seconds from `started`.
async fn quiet(nodes: &[(crate::network::Handle, protocol::Keypair)], started: Instant) -> Option<f64> {
    let handles: Vec<&crate::network::Handle> = nodes.iter().map(|(handle, _)| handle).collect();
    let deadline = Instant::now() + QUIET_DEADLINE;
    let mut window: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    while Instant::now() < deadline {
        window.push_back(churn(&handles).0);
        // One sample a second: the window's first and last are QUIET_WINDOW apart.
        if window.len() > usize::try_from(QUIET_WINDOW.as_secs()).unwrap_or(5) + 1 {
            window.pop_front();
            let opened = window.back().copied().unwrap_or(0) - window.front().copied().unwrap_or(0);
            if opened < nodes.len() as u64 {
                return Some(started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// Over every node: peers connected and trimmed since it started.
fn churn(handles: &[&crate::network::Handle]) -> (u64, u64) {
    use crate::network::Stats;
    handles.iter().fold((0, 0), |(connected, trimmed), handle| {
        let stats = handle.stats();
        (connected + Stats::get(&stats.peers_connected), trimmed + Stats::get(&stats.peers_trimmed))
    })
}

/// Over every node: the most peers connected, and each node's peers dialed for pools; then the nodes stop.
async fn connections(handles: &[&crate::network::Handle]) -> anyhow::Result<(usize, Vec<usize>)> {
    let (mut peers_seen, mut pool_peers) = (0usize, Vec::with_capacity(handles.len()));
    for handle in handles {
        let info = handle.info().await?;
        peers_seen = peers_seen.max(info.peers.len());
        pool_peers.push(info.pool_peers);
    }
    for handle in handles {
        handle.shutdown().await;
    }
    Ok((peers_seen, pool_peers))
}

/// When each newcomer's discovery first reported a step, in ms from its start (sorted; newcomers that never got
/// there are missing).
#[derive(Debug, Clone, Default)]
pub struct Steps {
    /// Its lookup found a provider.
    pub providers: Vec<f64>,
    /// A peer subscribed to the pool was connected.
    pub subscribed: Vec<f64>,
    /// A peer answered with the pool's recent offers.
    pub filled: Vec<f64>,
}

/// Polls the newcomers' pool views every 10 ms until each has filled its book, at most [`DEADLINE`].
async fn watch_steps(newcomers: &[(crate::network::Handle, Instant)]) -> Steps {
    let mut seen: Vec<[Option<f64>; 3]> = vec![[None; 3]; newcomers.len()];
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline && seen.iter().any(|steps| steps[2].is_none()) {
        for ((handle, start), steps) in newcomers.iter().zip(&mut seen) {
            let Some(view) = handle.pools().await.ok().and_then(|views| views.into_iter().next()) else { continue };
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            for (step, reached) in
                steps.iter_mut().zip([view.providers > 0, view.subscribed > 0, view.book_filled_ms.is_some()])
            {
                if reached && step.is_none() {
                    *step = Some(ms);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let column = |index: usize| {
        let mut times: Vec<f64> = seen.iter().filter_map(|steps| steps[index]).collect();
        times.sort_by(f64::total_cmp);
        times
    };
    Steps { providers: column(0), subscribed: column(1), filled: column(2) }
}

/// The network the newcomers join.
struct World {
    network: NetworkId,
    pools: Vec<PoolId>,
    /// Each cell's providers' asks.
    asks: Vec<BTreeSet<Id>>,
    addresses: Vec<libp2p::Multiaddr>,
    arrivals: Arrivals,
    providers_per_cell: usize,
    /// Nodes before the newcomers (the bootnode, the providers, the others).
    background: usize,
}

/// What a batch of newcomers measured.
struct Joined {
    books: Vec<f64>,
    matches: Vec<f64>,
    steps: Steps,
    handles: Vec<crate::network::Handle>,
}

/// Starts the newcomers of `cells` at once, each knowing two random nodes that are not providers, and measures them:
/// until each holds its pool's book, then until its bid reaches a provider of its pool.
async fn newcomers(world: &World, cells: &[usize], rng: &mut SplitMix) -> anyhow::Result<Joined> {
    let (providers, background) = (world.pools.len() * world.providers_per_cell, world.background);
    let mut joined = Vec::with_capacity(cells.len());
    for &cell in cells {
        let index = background + cell;
        let bootnodes: Vec<_> =
            (0..2).map(|_| world.addresses[providers + 1 + rng.below(background - providers - 1)].clone()).collect();
        let start = Instant::now();
        let node = local::start(20_000 + index as u64, &world.network, Transport::Tcp, |config| {
            config.bootnodes = bootnodes.clone();
        })
        .await?;
        node.handle.join_pool(&PoolKey::Market(world.pools[cell].clone()), true).await?;
        collect(index, node.deliveries, world.arrivals.clone());
        joined.push((index, cell, start, node.handle, node.keypair));
    }
    let waiting: Vec<(Vec<usize>, Instant)> =
        joined.iter().map(|(index, _, start, ..)| (vec![*index], *start)).collect();
    let asks: Vec<BTreeSet<Id>> = joined.iter().map(|(_, cell, ..)| world.asks[*cell].clone()).collect();
    // Meanwhile, each newcomer's steps as its discovery reports them.
    let watched: Vec<(crate::network::Handle, Instant)> =
        joined.iter().map(|(_, _, start, handle, _)| (handle.clone(), *start)).collect();
    let (books, steps) = tokio::join!(until_delivered(&world.arrivals, &waiting, &asks, true), watch_steps(&watched));
    // Each newcomer's bid, once it holds its book (or at the deadline): until a provider of its pool holds it.
    let (mut waiting, mut bids) = (Vec::new(), Vec::new());
    for (_, cell, _, handle, keypair) in &joined {
        let bid = order(keypair, &world.network, &world.pools[*cell], Side::Bid, 2);
        let holders: Vec<usize> = (1..=providers).filter(|index| (index - 1) % world.pools.len() == *cell).collect();
        waiting.push((holders, Instant::now()));
        let _ = handle.publish(&bid, None, now_ms()).await;
        bids.push(BTreeSet::from([bid.id()]));
    }
    let matches = until_delivered(&world.arrivals, &waiting, &bids, false).await;
    Ok(Joined { books, matches, steps, handles: joined.into_iter().map(|(_, _, _, handle, _)| handle).collect() })
}

/// Runs the benchmark.
pub async fn pools(args: &PoolsArgs) -> anyhow::Result<PoolsReport> {
    let (cells, providers) = (args.cells.max(1), args.providers.max(1));
    anyhow::ensure!(args.nodes >= cells * (providers + 1) + 2, "--nodes must leave room for two background nodes");
    let network = NetworkId::new("kos-bench").context("network id")?;
    let mut rng = SplitMix(args.seed);
    let peers_max = crate::network::Config::new(network.clone(), Vec::new()).peers_max;
    let pools: Vec<PoolId> = (0..cells)
        .map(|cell| format!("compute/credit/u33d{}/0", char::from(b'0' + u8::try_from(cell % 10).unwrap_or(0))))
        .map(|text| text.parse::<PoolId>())
        .collect::<Result<_, _>>()
        .context("pool")?;
    anyhow::ensure!(cells <= 10, "--cells at most 10");
    let background = args.nodes - cells;
    let arrivals: Arrivals = Arc::default();
    let (nodes, addresses) = background_network(background, &network, &mut rng, &arrivals).await?;
    // Providers: the first nodes after the bootnode, `providers` per cell; each rests an ask in its cell's pool.
    let started = Instant::now();
    let churn_before = churn(&nodes.iter().map(|(handle, _)| handle).collect::<Vec<_>>());
    let mut asks: Vec<BTreeSet<Id>> = vec![BTreeSet::new(); cells];
    for (slot, (handle, keypair)) in nodes.iter().skip(1).take(cells * providers).enumerate() {
        let cell = slot % cells;
        handle.join_pool(&PoolKey::Market(pools[cell].clone()), true).await?;
        let ask = order(keypair, &network, &pools[cell], Side::Ask, 1);
        asks[cell].insert(ask.id());
        // Published when the provider's mesh is empty, an ask reaches the others when the mesh forms (published
        // again then); the provider's own book holds it from the start.
        let _ = handle.publish(&ask, None, now_ms()).await;
    }
    // Settled: every provider announced its pool and holds the asks of its pool's other providers.
    let settled = wait_for(Duration::from_secs(120), || async {
        let arrivals = arrivals.lock().map(|arrivals| arrivals.clone()).unwrap_or_default();
        (1..=cells * providers).all(|index| {
            let cell = (index - 1) % cells;
            let seen =
                arrivals.get(&index).map(|seen| seen.keys().copied().collect::<BTreeSet<_>>()).unwrap_or_default();
            asks[cell].iter().filter(|id| !seen.contains(id)).count() <= 1
        })
    })
    .await;
    if !settled {
        anyhow::bail!(
            "the providers did not find each other within 120 s:\n{}",
            diagnose(&nodes, cells * providers).await?
        );
    }
    let settle_s = started.elapsed().as_secs_f64();
    // The newcomers join a network at rest, not one whose hundred nodes all started seconds ago: each node's DHT
    // start-up (Kademlia's bootstraps, tens of new connections a node on a loaded machine) is over first.
    let quiet_s = if args.at_start { None } else { quiet(&nodes, started).await };
    let churn_mid = churn(&nodes.iter().map(|(handle, _)| handle).collect::<Vec<_>>());
    let churn_before = Churn::between(churn_before, churn_mid, started);
    let newcomers_started = Instant::now();

    // The newcomers, one after another (or all at once), each knowing two random nodes that are not providers.
    let world = World { network, pools, asks, addresses, arrivals, providers_per_cell: providers, background };
    let batches: Vec<Vec<usize>> =
        if args.together { vec![(0..cells).collect()] } else { (0..cells).map(|cell| vec![cell]).collect() };
    let (mut books, mut matches, mut steps, mut joined) = (Vec::new(), Vec::new(), Steps::default(), Vec::new());
    for batch in batches {
        let outcome = newcomers(&world, &batch, &mut rng).await?;
        books.extend(outcome.books);
        matches.extend(outcome.matches);
        steps.providers.extend(outcome.steps.providers);
        steps.subscribed.extend(outcome.steps.subscribed);
        steps.filled.extend(outcome.steps.filled);
        joined.extend(outcome.handles);
    }
    for times in [&mut books, &mut matches, &mut steps.providers, &mut steps.subscribed, &mut steps.filled] {
        times.sort_by(f64::total_cmp);
    }
    let mut handles: Vec<&crate::network::Handle> = nodes.iter().map(|(handle, _)| handle).collect();
    handles.extend(joined.iter());
    let churn_newcomers = Churn::between(churn_mid, churn(&handles), newcomers_started);
    let (peers_seen, pool_peers) = connections(&handles).await?;
    Ok(PoolsReport {
        nodes: args.nodes,
        cells,
        providers,
        books: books.len(),
        matches: matches.len(),
        book_p50_ms: percentile(&books, 0.50),
        book_p99_ms: percentile(&books, 0.99),
        match_p50_ms: percentile(&matches, 0.50),
        match_p99_ms: percentile(&matches, 0.99),
        steps,
        settle_s,
        quiet_s,
        peers_max_seen: peers_seen,
        pool_peers_max_seen: pool_peers.iter().copied().max().unwrap_or(0),
        pool_peers_mean: pool_peers.iter().sum::<usize>() as f64 / pool_peers.len().max(1) as f64,
        peers_max,
        pool_budget: usize::try_from(peers_max).unwrap_or(0) * 25 / 100,
        churn_before,
        churn_newcomers,
    })
}
