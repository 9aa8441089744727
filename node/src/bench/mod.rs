//! `kos bench`: measurements of real components on this machine (figures for BENCHMARKS.md).
//!
//! `kos bench gossip` starts N full nodes in this process, each with its own swarm and TCP sockets on 127.0.0.1,
//! links them in a random graph of the given degree, and publishes signed offers from random nodes at a fixed
//! rate. For each offer it measures the time until 99 % of the other nodes have validated and delivered it.
//!
//! The other benchmarks: [`consensus`] (`kos bench ledger`), [`matching`] (`kos bench market`), [`readings`]
//! (`kos bench energy`), [`pools`] (`kos bench pools`), [`governance`] and [`jobs`]. All of them are behind the `tools` feature: measuring code,
//! not part of what a node runs.

pub mod consensus;
pub mod governance;
pub mod jobs;
pub mod matching;
pub mod pools;
pub mod readings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::message::PoolId;
use protocol::{Id, NetworkId};

use crate::network::local::{self, Transport, now_ms};
use crate::network::{Topic, wait_for};

/// What `kos bench gossip` measures.
#[derive(Debug, Clone)]
pub struct GossipArgs {
    pub peers: usize,
    pub degree: usize,
    pub messages: usize,
    pub rate_per_s: u64,
    pub seed: u64,
}

/// The results of one run.
#[derive(Debug, Clone)]
pub struct GossipReport {
    pub peers: usize,
    pub links: usize,
    pub messages: usize,
    /// Offers that reached 99 % of the other peers before the deadline.
    pub complete: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Validated deliveries per second across all nodes while offers flowed.
    pub deliveries_per_s: f64,
    pub published_per_s: f64,
}

/// splitmix64: a small deterministic generator for benchmark inputs (topologies, publishers, orders).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// A connected random graph: a ring plus random chords until each node has about `degree` links.
fn topology(peers: usize, degree: usize, rng: &mut SplitMix) -> Vec<(usize, usize)> {
    let mut links: std::collections::BTreeSet<(usize, usize)> =
        (0..peers).map(|i| (i.min((i + 1) % peers), i.max((i + 1) % peers))).collect();
    let target = peers.saturating_mul(degree) / 2;
    let mut attempts = 0;
    while links.len() < target && attempts < target.saturating_mul(20) {
        attempts += 1;
        let (a, b) = (rng.below(peers), rng.below(peers));
        if a != b {
            links.insert((a.min(b), a.max(b)));
        }
    }
    links.into_iter().filter(|(a, b)| a != b).collect()
}

pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the gossip benchmark.
pub async fn gossip(args: &GossipArgs) -> anyhow::Result<GossipReport> {
    anyhow::ensure!(args.peers >= 2, "--peers must be at least 2");
    let network = NetworkId::new("kos-bench").context("network id")?;
    let pool: PoolId = "energy/credit/u33db/900".parse().context("pool")?;
    let topic = Topic::pool(&pool);
    let mut rng = SplitMix(args.seed);
    let mut nodes = Vec::with_capacity(args.peers);
    for seed in 0..args.peers {
        let node = local::start(10_000 + seed as u64, &network, Transport::Tcp, |config| {
            config.kademlia = false;
            config.peers_max = 256;
        })
        .await?;
        node.handle.subscribe(topic).await?;
        nodes.push(node);
    }
    let links = topology(args.peers, args.degree.max(2), &mut rng);
    for (a, b) in &links {
        local::connect(&nodes[*a], &nodes[*b]).await?;
    }
    // Wait until every node has a mesh for the topic, then two more heartbeats.
    for node in &nodes {
        let meshed = wait_for(Duration::from_secs(30), || async {
            node.handle.topic_peers(topic).await.map(|peers| !peers.is_empty()).unwrap_or(false)
        })
        .await;
        anyhow::ensure!(meshed, "a node formed no mesh");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Collect every delivery: message id -> arrival instants.
    let arrivals: Arc<Mutex<HashMap<Id, Vec<Instant>>>> = Arc::default();
    let mut handles = Vec::with_capacity(nodes.len());
    let mut collectors = Vec::new();
    for node in nodes {
        let (handle, mut deliveries, keypair) = (node.handle, node.deliveries, node.keypair);
        let arrivals = arrivals.clone();
        collectors.push(tokio::spawn(async move {
            while let Some(delivery) = deliveries.recv().await {
                if let Ok(mut arrivals) = arrivals.lock() {
                    arrivals.entry(delivery.id).or_default().push(Instant::now());
                }
            }
        }));
        handles.push((handle, keypair));
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate_per_s.max(1) as f64);
    let mut published: Vec<(Id, Instant)> = Vec::with_capacity(args.messages);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    for n in 0..args.messages {
        ticker.tick().await;
        let (handle, keypair) = &handles[rng.below(handles.len())];
        let offer = local::offer(keypair, &network, &pool, n as u64, now_ms());
        let sent = Instant::now();
        handle.publish(&offer, None, now_ms()).await?;
        published.push((offer.id(), sent));
    }
    let publish_s = start.elapsed().as_secs_f64();
    let needed = ((args.peers - 1) as f64 * 0.99).ceil() as usize;
    let everyone = |arrivals: &HashMap<Id, Vec<Instant>>| {
        published.iter().all(|(id, _)| arrivals.get(id).is_some_and(|times| times.len() >= needed))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !arrivals.lock().map(|a| everyone(&a)).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_s = start.elapsed().as_secs_f64();
    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = Vec::new();
    for (id, sent) in &published {
        let Some(times) = arrivals.get(id) else { continue };
        let mut times: Vec<Instant> = times.clone();
        times.sort();
        if times.len() >= needed {
            latencies.push(times[needed - 1].duration_since(*sent).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let deliveries: usize = arrivals.values().map(Vec::len).sum();
    for (handle, _) in &handles {
        handle.shutdown().await;
    }
    for collector in collectors {
        collector.abort();
    }
    Ok(GossipReport {
        peers: args.peers,
        links: links.len(),
        messages: args.messages,
        complete: latencies.len(),
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        deliveries_per_s: deliveries as f64 / total_s.max(publish_s),
        published_per_s: args.messages as f64 / publish_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topology_is_connected_and_near_the_degree() {
        let links = topology(50, 6, &mut SplitMix(1));
        assert!(links.len() >= 140 && links.len() <= 150, "{}", links.len());
        // Connected: a ring is part of it.
        for i in 0..50 {
            let ring = (i.min((i + 1) % 50), i.max((i + 1) % 50));
            assert!(links.contains(&ring));
        }
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }
}
