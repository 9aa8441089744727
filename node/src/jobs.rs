//! The node's job index: open jobs heard on the jobs topic or committed to the ledger, bounded
//! ([`::market::jobs::OPEN_JOBS_MAX`]), dropped when awarded, closed or past their bidding; and the DHT records by
//! which workers find the peers posting jobs of a kind near a cell.

use ::ledger::reads::*;
use std::sync::{Arc, Mutex};

use ::market::jobs::{JobIndex, Open, Profile};
use protocol::message::Job;
use protocol::{Id, PublicKey};
use tracing::warn;

use crate::network;

/// The index, shared by the API and the tasks that feed it.
#[derive(Clone, Default)]
pub struct Index(Arc<Mutex<JobIndex>>);

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Indexes an open job; `false` if it was not taken (known, over, or the index is full of later ones).
    pub fn insert(&self, id: Id, poster: PublicKey, job: Job, now_ms: u64) -> bool {
        self.0.lock().map(|mut index| index.insert(id, poster, job, now_ms)).unwrap_or(false)
    }

    pub fn remove(&self, id: &Id) -> bool {
        self.0.lock().map(|mut index| index.remove(id)).unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|index| index.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open jobs a worker could take, best paid first.
    pub fn matching(&self, profile: &Profile, now_ms: u64, limit: usize) -> Vec<Open> {
        self.0
            .lock()
            .map(|mut index| {
                index.expire(now_ms);
                index.matching(profile, now_ms, limit)
            })
            .unwrap_or_default()
    }
}

/// Announces in the DHT that this node has an open job of the job's kind near its cell (best effort).
pub fn announce(network: &network::Handle, job: &Job) {
    let (network, key) = (network.clone(), ::market::jobs::dht_key(job.kind, job.cell.as_str()));
    tokio::spawn(async move {
        if let Err(problem) = network.provide(key).await {
            warn!(%problem, "announcing a job in the DHT failed");
        }
    });
}

/// Keeps the index in step with the ledger: committed postings in, awarded and closed jobs out. On start (after a
/// state sync, if one is under way) it reads every open job from the ledger's state (the follower was made before,
/// so no commit falls in between).
pub async fn follow(index: Index, ledger: crate::ledger::Handle, mut commits: crate::ledger::Follower) {
    // The open jobs of the snapshot a state sync takes, not of the state it replaces.
    if !ledger.state_synced().await {
        return;
    }
    let now = crate::clock::now_ms();
    let open = ledger
        .query_until_read(|state| {
            state
                .jobs()
                .filter(|(_, job)| job.status == ::ledger::state::JobStatus::Open)
                .map(|(id, job)| (id, job.poster, job.job))
                .collect::<Vec<_>>()
        })
        .await;
    let Some(open) = open else { return };
    for (id, poster, job) in open {
        index.insert(id, poster, job, now);
    }
    while let Some(commit) = commits.next().await {
        let mut posted = Vec::new();
        for event in &commit.events {
            match event {
                ::ledger::state::Event::JobPosted { job, .. } => posted.push(*job),
                ::ledger::state::Event::JobAwarded { job, .. } | ::ledger::state::Event::JobClosed { job } => {
                    index.remove(job);
                }
                _ => {}
            }
        }
        if !posted.is_empty() {
            let read = ledger
                .query_until_read(move |state| {
                    posted
                        .iter()
                        .filter_map(|id| {
                            state
                                .job(id)
                                .filter(|job| job.status == ::ledger::state::JobStatus::Open)
                                .map(|job| (*id, job))
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            let Some(open) = read else { return };
            let now = crate::clock::now_ms();
            for (id, job) in open {
                index.insert(id, job.poster, job.job, now);
            }
        }
    }
}
