//! The microgrid controller: when the grid connection is lost (configuration; the node's own meter seeing no
//! voltage at the connection point; or a signal posted to the API by whatever else watches the grid), it shares the microgrid's local supply among its members every interval — essential
//! loads first, max-min fair (`energy::island`) — from the members' latest signed readings; when the grid has been
//! back for a few intervals it returns to grid mode, where the market trades.

use std::collections::HashMap;
use std::time::Duration;

use energy::island::{Allocation, Microgrid, Mode, Need, Signal};
use protocol::PublicKey;
use protocol::message::Reading;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// One member of the microgrid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account: PublicKey,
    /// Energy per interval the member's essential loads need, Wh.
    pub essential_wh: u64,
}

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub members: Vec<Member>,
    pub interval_s: u32,
    /// Island mode forced by configuration.
    pub forced: bool,
    /// Intervals the grid must be seen back before leaving island mode.
    pub return_intervals: u32,
    /// The microgrid's cell, which governance may order into island mode.
    pub cell: Option<protocol::types::Cell>,
}

/// What the controller shows.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[schemars(rename = "IslandStatus")]
pub struct Status {
    pub mode: String,
    /// Governance ordered island mode (an `island` override in force for the microgrid's cell).
    pub ordered: bool,
    pub members: usize,
    /// Members whose reading arrived for the last interval.
    pub reporting: usize,
    pub supply_wh: u64,
    pub unallocated_wh: u64,
    pub allocations: Vec<MemberAllocation>,
    pub switches: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MemberAllocation {
    pub account: String,
    pub need_essential_wh: u64,
    pub need_other_wh: u64,
    pub essential_wh: u64,
    pub other_wh: u64,
}

enum Input {
    Reading(PublicKey, Reading),
    Grid(bool),
    Ordered(bool),
}

/// Feeds the controller and reads its status.
#[derive(Clone)]
pub struct Handle {
    inputs: mpsc::Sender<Input>,
    status: watch::Receiver<Status>,
}

impl Handle {
    /// A member's signed reading (from gossip or this node's meter); readings of non-members are ignored.
    pub fn reading(&self, author: PublicKey, reading: Reading) {
        let _ = self.inputs.try_send(Input::Reading(author, reading));
    }

    /// Whether the grid is present (from whatever watches the connection point).
    pub async fn grid(&self, present: bool) -> bool {
        self.inputs.send(Input::Grid(present)).await.is_ok()
    }

    /// Whether an override in force orders the microgrid into island mode.
    pub async fn ordered(&self, island: bool) -> bool {
        self.inputs.send(Input::Ordered(island)).await.is_ok()
    }

    #[must_use]
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }
}

/// Readings waiting for the controller.
const INPUT_QUEUE_LEN_MAX: usize = 1024;

/// Starts the controller on the current runtime.
pub fn spawn(settings: Settings) -> (Handle, tokio::task::JoinHandle<()>) {
    let (inputs, receiver) = mpsc::channel(INPUT_QUEUE_LEN_MAX);
    let (status_sender, status) =
        watch::channel(Status { mode: "grid".into(), members: settings.members.len(), ..Status::default() });
    let task = tokio::spawn(run(settings, receiver, status_sender));
    (Handle { inputs, status }, task)
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Grid => "grid",
        Mode::Island => "island",
    }
}

async fn run(settings: Settings, mut inputs: mpsc::Receiver<Input>, status: watch::Sender<Status>) {
    let mut grid = Microgrid::new(settings.return_intervals);
    let mut switches = 0u64;
    if settings.forced && grid.signal(Signal::Configured(true)).is_some() {
        switches += 1;
        warn!("island mode (configured): local supply is shared among the members");
    }
    let index: HashMap<PublicKey, usize> =
        settings.members.iter().enumerate().map(|(position, member)| (member.account, position)).collect();
    // The latest reading of each member: (interval start, generation, consumption).
    let mut latest: Vec<Option<(u64, u64, u64)>> = vec![None; settings.members.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(settings.interval_s.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut grid_present = true;
    let mut ordered = false;
    loop {
        tokio::select! {
            input = inputs.recv() => match input {
                None => return,
                Some(Input::Reading(author, reading)) => {
                    if let Some(&position) = index.get(&author)
                        && latest[position].is_none_or(|(start, _, _)| reading.interval_start_s > start)
                    {
                        latest[position] = Some((reading.interval_start_s, reading.generation_wh, reading.consumption_wh));
                    }
                }
                Some(Input::Ordered(island)) if island != ordered => {
                    ordered = island;
                    if let Some(mode) = grid.signal(Signal::Configured(island || settings.forced)) {
                        switches += 1;
                        warn!(mode = mode_name(mode), ordered = island, "island mode ordered by governance");
                    } else {
                        info!(ordered = island, "island order by governance changed");
                    }
                }
                Some(Input::Ordered(_)) => {}
                Some(Input::Grid(present)) => {
                    grid_present = present;
                    if !present && let Some(mode) = grid.signal(Signal::Meter { grid_present: false }) {
                        switches += 1;
                        warn!(mode = mode_name(mode), "grid lost: island mode");
                    }
                }
            },
            _ = tick.tick() => {
                if grid_present && let Some(mode) = grid.signal(Signal::Meter { grid_present: true }) {
                    switches += 1;
                    info!(mode = mode_name(mode), "grid back: grid mode");
                }
                // The newest interval any member reported is the one allocated; older readings are stale.
                let newest = latest.iter().flatten().map(|(start, _, _)| *start).max();
                let current: Vec<Option<(u64, u64)>> = latest
                    .iter()
                    .map(|entry| entry.filter(|(start, _, _)| Some(*start) == newest).map(|(_, g, c)| (g, c)))
                    .collect();
                let supply: u64 = current.iter().flatten().map(|(generation, _)| *generation).sum();
                let needs: Vec<Need> = settings
                    .members
                    .iter()
                    .zip(&current)
                    .map(|(member, reading)| {
                        let consumption = reading.map_or(member.essential_wh, |(_, consumption)| consumption);
                        let essential_wh = member.essential_wh.min(consumption);
                        Need { essential_wh, other_wh: consumption.saturating_sub(essential_wh) }
                    })
                    .collect();
                let mut next = Status {
                    mode: mode_name(grid.mode()).into(),
                    ordered,
                    members: settings.members.len(),
                    reporting: current.iter().flatten().count(),
                    supply_wh: supply,
                    switches,
                    ..Status::default()
                };
                if let Some((allocations, left)) = grid.interval(supply, &needs) {
                    next.unallocated_wh = left;
                    next.allocations = settings
                        .members
                        .iter()
                        .zip(needs.iter().zip(&allocations))
                        .map(|(member, (need, allocation)): (&Member, (&Need, &Allocation))| MemberAllocation {
                            account: member.account.to_hex(),
                            need_essential_wh: need.essential_wh,
                            need_other_wh: need.other_wh,
                            essential_wh: allocation.essential_wh,
                            other_wh: allocation.other_wh,
                        })
                        .collect();
                    info!(supply_wh = supply, unallocated_wh = left, reporting = next.reporting, "island allocation");
                }
                status.send_replace(next);
            }
        }
    }
}
