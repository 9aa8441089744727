//! `kos bench governance`: four validators in this process (real swarms on loopback TCP, RocksDB each, as in
//! `kos bench ledger`), each with its market actor. Each round, validator 0 proposes and three validators vote:
//!
//! - a fee change: measured from the first node's commit of the passing block to the last node's (the effect is
//!   applied by each node's state machine at that block), and from the block's own time to the last commit;
//! - a freeze of an account's trading: from each node's commit of the passing block to that node's market
//!   refusing the frozen account's next offer (offered to every node every 5 ms), the slowest node counted.

use ::ledger::reads::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Genesis;
use ledger::state::Event;
use protocol::message::{Action, Choice, Freeze, Measure, Offer, Override, PoolId, Proposal, SetParameter, Side, Vote};
use protocol::types::{ParameterName, Text};
use protocol::{Body, Draft, Keypair, NetworkId};

use crate::bench::consensus::{percentile, start_cluster};
use crate::clock::now_ms;

/// The results of a run, milliseconds.
#[derive(Debug, Clone)]
pub struct GovernanceReport {
    pub rounds: usize,
    /// First node's commit of the passing block to the last node's.
    pub effect_spread_p50_ms: f64,
    pub effect_spread_max_ms: f64,
    /// The passing block's time to the last node's commit of it.
    pub effect_from_block_p50_ms: f64,
    pub effect_from_block_max_ms: f64,
    /// A freeze's passing block (each node's commit) to that node's first refused offer, the slowest node.
    pub freeze_to_refusal_p50_ms: f64,
    pub freeze_to_refusal_max_ms: f64,
}

fn sign(keypair: &Keypair, network: &NetworkId, nonce: &mut u64, body: Body) -> protocol::Envelope {
    *nonce += 1;
    let now = now_ms();
    Draft { network: network.clone(), nonce: *nonce, created_ms: now, expires_ms: now + 600_000, body }.sign(keypair)
}

/// Passes `action` and measures its effect: how long after the first node the last committed the passing block
/// (ms), and how long after the block's time that was (ms).
async fn effect_of(
    action: Action,
    nodes: &[crate::bench::consensus::Node],
    validators: &[Arc<Keypair>],
    network: &NetworkId,
    nonce: &mut u64,
) -> anyhow::Result<Option<(f64, f64)>> {
    let mut commits: Vec<_> = nodes.iter().map(|node| node.ledger.follow()).collect();
    let passed = pass(nodes, validators, network, nonce, action).await?;
    // Each node's commit of the passing block, watched concurrently.
    let watchers: Vec<_> = commits
        .drain(..)
        .map(|mut receiver| {
            tokio::spawn(
                async move { wait_event(&mut receiver, |event| *event == Event::ProposalPassed(passed)).await },
            )
        })
        .collect();
    let mut times = Vec::new();
    let mut block_ms = 0;
    for watcher in watchers {
        let (at, time_ms) = watcher.await.context("a watcher")??;
        times.push(at);
        block_ms = time_ms;
    }
    let (first, last) = (times.iter().min().copied(), times.iter().max().copied());
    let (Some(first), Some(last)) = (first, last) else { return Ok(None) };
    let last_wall_ms = now_ms() as f64 - last.elapsed().as_secs_f64() * 1000.0;
    Ok(Some((last.duration_since(first).as_secs_f64() * 1000.0, last_wall_ms - block_ms as f64)))
}

/// Freezes the trader, who offers to every node all along: how long after the passing block the slowest node's
/// market refused the frozen account's offer (ms).
async fn freeze_to_refusal(
    nodes: &[crate::bench::consensus::Node],
    markets: &[crate::market::Handle],
    validators: &[Arc<Keypair>],
    trader: &Arc<Keypair>,
    network: &NetworkId,
    nonce: &mut u64,
) -> anyhow::Result<f64> {
    let mut commits: Vec<_> = nodes.iter().map(|node| node.ledger.follow()).collect();
    let before: Vec<u64> = markets.iter().map(|market| market.stats().frozen).collect();
    let offering = {
        let (markets, trader, network) = (markets.to_vec(), trader.clone(), network.clone());
        tokio::spawn(async move {
            let pool: PoolId = "energy/credit/u33db/0".parse().unwrap_or_else(|_| unreachable!());
            let mut nonce = now_ms() * 1000 + 500_000;
            loop {
                let offer =
                    Offer { pool: pool.clone(), side: Side::Ask, quantity: 1, unit_price: 1, delivery_start_s: 0 };
                let envelope = Arc::new(sign(&trader, &network, &mut nonce, Body::Offer(offer)));
                for market in &markets {
                    market.offer(envelope.clone());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let freeze = Action::Override(Override {
        measure: Measure::Freeze(Freeze { account: trader.public() }),
        duration_blocks: 3,
    });
    let passed = pass(nodes, validators, network, nonce, freeze).await?;
    // Each node: its commit of the passing block, then its market's first refusal of the frozen account.
    let watchers: Vec<_> = commits
        .drain(..)
        .zip(markets.iter().cloned())
        .zip(before)
        .map(|((mut receiver, market), before)| {
            tokio::spawn(async move {
                let in_force =
                    |event: &Event| matches!(event, Event::OverrideInForce { proposal, .. } if *proposal == passed);
                let (at, _) = wait_event(&mut receiver, in_force).await?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while market.stats().frozen <= before && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::ensure!(market.stats().frozen > before, "a node did not refuse the frozen account's offers");
                Ok(at.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut slowest: f64 = 0.0;
    for watcher in watchers {
        slowest = slowest.max(watcher.await.context("a watcher")??);
    }
    offering.abort();
    Ok(slowest)
}

/// Runs `rounds` rounds of each measurement.
pub async fn governance(rounds: usize) -> anyhow::Result<GovernanceReport> {
    let network = NetworkId::new("kos-bench").context("network id")?;
    let validators: Vec<Arc<Keypair>> =
        (0..4u8).map(|index| Arc::new(Keypair::from_seed(blake3::hash(&[b'v', index]).as_bytes()))).collect();
    let trader = Arc::new(Keypair::from_seed(blake3::hash(b"runaway trader").as_bytes()));
    let keys: Vec<protocol::PublicKey> = validators.iter().map(|keypair| keypair.public()).collect();
    let text = Genesis::devnet_text(network.as_str(), now_ms(), &keys, &[trader.public()], 1_000_000);
    let genesis = Arc::new(Genesis::parse(&text)?);
    let nodes = start_cluster(&genesis, validators.iter().map(|keypair| keypair.as_ref())).await?;
    let markets: Vec<crate::market::Handle> = nodes
        .iter()
        .zip(&validators)
        .map(|(node, keypair)| {
            let signer = Arc::new(crate::signer::Signer::in_memory(keypair.clone(), network.clone()));
            crate::market::spawn(signer, node.ledger.clone(), node.network.clone(), market::pools::Limits::default()).0
        })
        .collect();
    let mut nonce = now_ms() * 1000;
    let (mut spreads, mut from_block, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let action = Action::SetParameter(SetParameter {
            name: ParameterName::new("grid_fee_per_kwh").context("name")?,
            value: 10 + round as u64,
        });
        if let Some((spread, after_block)) = effect_of(action, &nodes, &validators, &network, &mut nonce).await? {
            spreads.push(spread);
            from_block.push(after_block);
        }
        refusals.push(freeze_to_refusal(&nodes, &markets, &validators, &trader, &network, &mut nonce).await?);
        // Let the freeze expire before the next round.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for list in [&mut spreads, &mut from_block, &mut refusals] {
        list.sort_by(f64::total_cmp);
    }
    crate::bench::consensus::stop(nodes).await;
    let max = |list: &[f64]| list.last().copied().unwrap_or(f64::NAN);
    Ok(GovernanceReport {
        rounds,
        effect_spread_p50_ms: percentile(&spreads, 0.5),
        effect_spread_max_ms: max(&spreads),
        effect_from_block_p50_ms: percentile(&from_block, 0.5),
        effect_from_block_max_ms: max(&from_block),
        freeze_to_refusal_p50_ms: percentile(&refusals, 0.5),
        freeze_to_refusal_max_ms: max(&refusals),
    })
}

/// Validator 0 proposes; validators 0 to 2 vote yes. Returns the proposal's id.
async fn pass(
    nodes: &[crate::bench::consensus::Node],
    validators: &[Arc<Keypair>],
    network: &NetworkId,
    nonce: &mut u64,
    action: Action,
) -> anyhow::Result<protocol::Id> {
    let proposal = Proposal {
        action,
        title: Text::new("bench").context("title")?,
        text: Text::new("").context("text")?,
        voting_period_blocks: 100,
    };
    let envelope = sign(&validators[0], network, nonce, Body::Proposal(proposal));
    let id = envelope.id();
    nodes[0].ledger.submit(envelope.to_bytes()).await.map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let open = crate::network::wait_for(Duration::from_secs(30), || async {
        nodes[0].ledger.query(move |state| state.proposal(&id).is_some()).await.unwrap_or(false)
    })
    .await;
    anyhow::ensure!(open, "the proposal was not committed");
    for (index, keypair) in validators.iter().enumerate().take(3) {
        let vote = sign(keypair, network, nonce, Body::Vote(Vote { proposal: id, choice: Choice::Yes, stake: 0 }));
        nodes[index].ledger.submit(vote.to_bytes()).await.map_err(|error| anyhow::anyhow!("{error:?}"))?;
    }
    Ok(id)
}

/// Waits for a commit carrying an event; returns when it arrived and the block's time.
pub(crate) async fn wait_event(
    commits: &mut crate::ledger::Follower,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<(Instant, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let commit = tokio::time::timeout_at(deadline, commits.next())
            .await
            .context("no commit with the event in 60 s")?
            .context("the ledger stopped")?;
        if commit.events.iter().any(&wanted) {
            return Ok((Instant::now(), commit.block.header().time_ms));
        }
    }
}
