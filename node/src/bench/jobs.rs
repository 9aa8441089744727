//! `kos bench jobs`: the job marketplace's figures.
//!
//! 1. The job index: open jobs indexed per second, and worker searches answered per second, over 10,000 open jobs
//!    of every kind spread over a city (cells of 6 characters around Berlin) and a quarter of them done anywhere.
//! 2. Supply and logistics: assigning 1,000 requests to 100 providers (random points in a 30 km square, capacities
//!    summing to at least the requests): the heuristic's time and total distance against the exact min-cost-flow
//!    optimum's, and the gap.
//! 3. Award to escrow: four validators in this process (real swarms on loopback TCP, RocksDB each, as in
//!    `kos bench ledger`); each round validator 0 posts a job, validator 1 bids, and validator 0 awards; measured
//!    from the award's submission to the last node's commit of the block that moved the price to escrow.

use ::ledger::reads::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Genesis;
use ledger::state::Event;
use market::assign::{Provider, Request};
use market::geo::Point;
use market::jobs::{JobIndex, Profile};
use protocol::message::{Award, AwardRule, Bid, Empty, Evidence, Job, JobKind};
use protocol::types::{BoundedVec, Cell, Skill, Text, TokenId};
use protocol::{Body, Draft, Id, Keypair, NetworkId, PublicKey};

use crate::bench::consensus::{percentile, start_cluster};
use crate::bench::governance::wait_event;
use crate::clock::now_ms;

/// The results of a run.
#[derive(Debug, Clone)]
pub struct JobsReport {
    pub jobs: usize,
    pub indexed_per_s: f64,
    pub searches: usize,
    pub searches_per_s: f64,
    /// Jobs found per search, on average.
    pub found_per_search: f64,
    pub requests: usize,
    pub providers: usize,
    pub solve_ms: f64,
    pub solve_total_m: u64,
    pub exact_ms: f64,
    pub exact_total_m: u64,
    pub gap_percent: f64,
    pub rounds: usize,
    /// Award submitted to the last node's commit of the escrow.
    pub award_to_escrow_p50_ms: f64,
    pub award_to_escrow_max_ms: f64,
    /// First node's commit of the award to the last node's.
    pub award_spread_p50_ms: f64,
}

/// A small deterministic generator (splitmix64), so runs are repeatable.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A point within `half_km` km of Berlin's centre.
    fn near_berlin(&mut self, half_km: i64) -> Point {
        let span = half_km * 9_000 * 2;
        let (dlat, dlon) = (self.below(span as u64) as i64 - span / 2, self.below(span as u64) as i64 - span / 2);
        Point { lat_e6: 52_520_000 + dlat, lon_e6: 13_405_000 + dlon * 3 / 2 }
    }
}

fn job(random: &mut Random, index: usize, now_ms: u64) -> anyhow::Result<Job> {
    let kind = JobKind::ALL[random.below(JobKind::ALL.len() as u64) as usize];
    let cell = if random.below(4) == 0 { String::new() } else { market::jobs::encode(random.near_berlin(15), 6) };
    let skills = ["electrician", "plumber", "3d-printer", "driver"];
    // Two jobs in three ask for a skill.
    let skill = skills.get(random.below(6) as usize).copied();
    Ok(Job {
        kind,
        title: Text::new(format!("job {index}")).context("title")?,
        text: Text::new("").context("text")?,
        needs: BoundedVec::default(),
        skills: BoundedVec::new(skill.map(Skill::new).transpose().context("skill")?.into_iter().collect())
            .context("skills")?,
        cell: Cell::new(cell).context("cell")?,
        radius_m: 0,
        token: TokenId::new("credit").context("token")?,
        reward: 1_000 + random.below(50_000),
        collateral: 0,
        slash_ppm: 0,
        tier: 0,
        guild: BoundedVec::default(),
        rule: AwardRule::LowestPrice,
        per_km: 0,
        evidence: Evidence::Acceptance(Empty),
        bids_until_ms: now_ms + 3_600_000 + random.below(3_600_000),
        deadline_ms: now_ms + 10_000_000,
    })
}

/// Runs the three measurements.
pub async fn jobs(jobs: usize, searches: usize, rounds: usize) -> anyhow::Result<JobsReport> {
    let mut random = Random(7);
    let now = now_ms();
    // 1. The index.
    let postings: Vec<(Id, Job)> = (0..jobs)
        .map(|index| Ok((Id(*blake3::hash(&index.to_le_bytes()).as_bytes()), job(&mut random, index, now)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut index = JobIndex::new();
    let started = Instant::now();
    for (id, posting) in postings {
        index.insert(id, PublicKey([1; 32]), posting, now);
    }
    let indexed_per_s = jobs as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let profiles: Vec<Profile> = (0..searches)
        .map(|_| {
            let kinds = vec![JobKind::ALL[random.below(7) as usize], JobKind::ALL[random.below(7) as usize]];
            Ok(Profile {
                kinds,
                skills: vec![Skill::new("electrician").context("skill")?],
                cell: Cell::new(market::jobs::encode(random.near_berlin(15), 6)).context("cell")?,
                radius_m: 2_000 + random.below(8_000),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let mut found = 0usize;
    for profile in &profiles {
        found += index.matching(profile, now, 50).len();
    }
    let searches_per_s = searches as f64 / started.elapsed().as_secs_f64().max(1e-9);

    // 2. The assignment.
    let requests: Vec<Request> = (0..1_000u32).map(|id| Request { id, at: random.near_berlin(15) }).collect();
    let providers: Vec<Provider> = (0..100u32)
        .map(|id| Provider { id, at: random.near_berlin(15), capacity: 5 + random.below(16) as u32 })
        .collect();
    let started = Instant::now();
    let solved = market::assign::solve(&requests, &providers);
    let solve_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let exact = market::assign::exact(&requests, &providers);
    let exact_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(solved.pairs.len() == exact.pairs.len(), "the heuristic left requests the optimum serves");
    let gap_percent = (solved.total_m as f64 - exact.total_m as f64) / (exact.total_m as f64).max(1.0) * 100.0;

    // 3. Award to escrow on four validators.
    let (to_escrow, spreads) = award_to_escrow(rounds).await?;
    let max = |list: &[f64]| list.last().copied().unwrap_or(f64::NAN);
    Ok(JobsReport {
        jobs,
        indexed_per_s,
        searches,
        searches_per_s,
        found_per_search: found as f64 / searches.max(1) as f64,
        requests: requests.len(),
        providers: providers.len(),
        solve_ms,
        solve_total_m: solved.total_m,
        exact_ms,
        exact_total_m: exact.total_m,
        gap_percent,
        rounds,
        award_to_escrow_p50_ms: percentile(&to_escrow, 0.5),
        award_to_escrow_max_ms: max(&to_escrow),
        award_spread_p50_ms: percentile(&spreads, 0.5),
    })
}

fn sign(keypair: &Keypair, network: &NetworkId, nonce: &mut u64, body: Body) -> protocol::Envelope {
    *nonce += 1;
    let now = now_ms();
    Draft { network: network.clone(), nonce: *nonce, created_ms: now, expires_ms: now + 600_000, body }.sign(keypair)
}

/// Per round: the award's submission to the last node's commit of it, and the spread of the nodes' commits (ms).
async fn award_to_escrow(rounds: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let network = NetworkId::new("kos-bench").context("network id")?;
    let validators: Vec<Arc<Keypair>> =
        (0..4u8).map(|index| Arc::new(Keypair::from_seed(blake3::hash(&[b'j', index]).as_bytes()))).collect();
    let keys: Vec<PublicKey> = validators.iter().map(|keypair| keypair.public()).collect();
    let text = Genesis::devnet_text(network.as_str(), now_ms(), &keys, &keys, 1_000_000_000);
    let genesis = Arc::new(Genesis::parse(&text)?);
    let nodes = start_cluster(&genesis, validators.iter().map(|keypair| keypair.as_ref())).await?;
    let mut nonce = now_ms() * 1000;
    let (mut to_escrow, mut spreads) = (Vec::new(), Vec::new());
    let mut random = Random(11);
    for round in 0..rounds {
        let mut posting = job(&mut random, round, now_ms())?;
        posting.rule = AwardRule::LowestPrice;
        posting.bids_until_ms = now_ms() + 600_000;
        posting.deadline_ms = now_ms() + 1_200_000;
        let envelope = sign(&validators[0], &network, &mut nonce, Body::Job(posting.clone()));
        let job_id = envelope.id();
        nodes[0].ledger.submit(envelope.to_bytes()).await.map_err(|error| anyhow::anyhow!("{error:?}"))?;
        let bid = Bid {
            job: job_id,
            price: posting.reward / 2,
            start_ms: now_ms(),
            collateral: 0,
            cell: Cell::new("").context("cell")?,
            distance_m: 0,
        };
        let bid = sign(&validators[1], &network, &mut nonce, Body::Bid(bid));
        let bid_id = bid.id();
        // The bid once the posting is on the ledger (it is refused before).
        let posted = crate::network::wait_for(Duration::from_secs(30), || async {
            nodes[1].ledger.query(move |state| state.job(&job_id).is_some()).await.unwrap_or(false)
        })
        .await;
        anyhow::ensure!(posted, "the job was not committed");
        nodes[1].ledger.submit(bid.to_bytes()).await.map_err(|error| anyhow::anyhow!("{error:?}"))?;
        let bid_in = crate::network::wait_for(Duration::from_secs(30), || async {
            nodes[0].ledger.query(move |state| !state.job_bids(&job_id).is_empty()).await.unwrap_or(false)
        })
        .await;
        anyhow::ensure!(bid_in, "the bid was not committed");
        let mut commits: Vec<_> = nodes.iter().map(|node| node.ledger.follow()).collect();
        let award = sign(&validators[0], &network, &mut nonce, Body::Award(Award { job: job_id, bid: bid_id }));
        let submitted = Instant::now();
        nodes[0].ledger.submit(award.to_bytes()).await.map_err(|error| anyhow::anyhow!("{error:?}"))?;
        let watchers: Vec<_> = commits
            .drain(..)
            .map(|mut receiver| {
                tokio::spawn(async move {
                    wait_event(&mut receiver, |event| matches!(event, Event::JobAwarded { job, .. } if *job == job_id))
                        .await
                })
            })
            .collect();
        let mut times = Vec::new();
        for watcher in watchers {
            times.push(watcher.await.context("a watcher")??.0);
        }
        let (first, last) = (times.iter().min().copied(), times.iter().max().copied());
        if let (Some(first), Some(last)) = (first, last) {
            to_escrow.push(last.duration_since(submitted).as_secs_f64() * 1000.0);
            spreads.push(last.duration_since(first).as_secs_f64() * 1000.0);
        }
    }
    to_escrow.sort_by(f64::total_cmp);
    spreads.sort_by(f64::total_cmp);
    crate::bench::consensus::stop(nodes).await;
    Ok((to_escrow, spreads))
}
