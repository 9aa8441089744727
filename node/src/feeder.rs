//! A simulated feeder meter (`[feeder]`, a devnet's): the cell's member nodes' meters as measured (`GET /meter`,
//! `measured`: the registers at each interval's end), summed per interval and signed as the feeder's reading
//! (PROTOCOL.md §10, *cells*). The feeder sees the cell's net flow: what the members imported beyond what they
//! exported is its import, the rest its export. A member whose measurement of an interval (or of the one before it)
//! does not come within [`GIVE_UP_INTERVALS`] intervals leaves that interval without a feeder reading (unchecked).
//!
//! The sums are a sans-IO core ([`Sums`]); the loop around it reads the members over HTTP and signs.

use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::message::{Body, MeterSource, Reading};
use tracing::{info, warn};

use crate::config::FeederChecked;
use crate::meter::MeasuredView;

/// Intervals a feeder waits for every member's measurement before it gives an interval up.
pub const GIVE_UP_INTERVALS: u64 = 4;
/// Measurements kept per member (intervals).
const HISTORY: usize = 16;
/// How long a feeder reading may wait to be anchored.
const READING_LIFETIME_MS: u64 = 10 * 60 * 1000;

/// The feeder's reading of one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub interval_start_s: u64,
    pub import_wh: u64,
    pub export_wh: u64,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
}

/// The members' measurements and the feeder's registers.
#[derive(Debug, Clone)]
pub struct Sums {
    interval_s: u32,
    /// Per member: interval start → registers at its end.
    members: Vec<BTreeMap<u64, (u64, u64)>>,
    /// The next interval to sum.
    next: Option<u64>,
    counters: (u64, u64),
}

impl Sums {
    pub fn new(members: usize, interval_s: u32) -> Sums {
        Sums { interval_s, members: vec![BTreeMap::new(); members], next: None, counters: (0, 0) }
    }

    /// A member's latest measurement (of another interval length: ignored).
    pub fn measured(&mut self, member: usize, view: MeasuredView) {
        let Some(history) = self.members.get_mut(member) else { return };
        if view.interval_s != self.interval_s {
            return;
        }
        history.insert(view.interval_start_s, (view.import_counter_wh, view.export_counter_wh));
        while history.len() > HISTORY {
            history.pop_first();
        }
    }

    /// The intervals every member has measured (and the one before it), in order, up to `now_s`; intervals older
    /// than [`GIVE_UP_INTERVALS`] without every measurement are given up.
    pub fn flows(&mut self, now_s: u64) -> Vec<Flow> {
        let length = u64::from(self.interval_s);
        if self.next.is_none() {
            // Start after the latest interval every member has measured: the first whose predecessor all have.
            let latest = self.members.iter().map(|history| history.keys().next_back().copied()).min().flatten();
            self.next = latest.map(|start| start + length);
        }
        let mut flows = Vec::new();
        while let Some(start) = self.next {
            let deltas: Option<Vec<(u64, u64)>> = self
                .members
                .iter()
                .map(|history| {
                    let (import, export) = history.get(&start)?;
                    let (import_before, export_before) = history.get(&start.checked_sub(length)?)?;
                    Some((import.checked_sub(*import_before)?, export.checked_sub(*export_before)?))
                })
                .collect();
            match deltas {
                Some(deltas) => {
                    let net: i128 =
                        deltas.iter().map(|(import, export)| i128::from(*import) - i128::from(*export)).sum();
                    let (import_wh, export_wh) = if net >= 0 {
                        (u64::try_from(net).unwrap_or(u64::MAX), 0)
                    } else {
                        (0, u64::try_from(-net).unwrap_or(u64::MAX))
                    };
                    self.counters.0 = self.counters.0.saturating_add(import_wh);
                    self.counters.1 = self.counters.1.saturating_add(export_wh);
                    flows.push(Flow {
                        interval_start_s: start,
                        import_wh,
                        export_wh,
                        import_counter_wh: self.counters.0,
                        export_counter_wh: self.counters.1,
                    });
                    self.next = Some(start + length);
                }
                None if now_s > start.saturating_add(length.saturating_mul(GIVE_UP_INTERVALS + 1)) => {
                    let missing: Vec<usize> = (0..self.members.len())
                        .filter(|member| {
                            let history = &self.members[*member];
                            !history.contains_key(&start) || !history.contains_key(&start.saturating_sub(length))
                        })
                        .collect();
                    warn!(start, ?missing, "the feeder gives an interval up: members' measurements are missing");
                    self.next = Some(start + length);
                }
                None => break,
            }
        }
        flows
    }
}

/// Reads one member's `GET /meter` `measured`.
fn read_member(agent: &ureq::Agent, api: &str) -> Option<MeasuredView> {
    let mut response = agent.get(format!("{}/meter", api.trim_end_matches('/'))).call().ok()?;
    let status: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    serde_json::from_value(status.get("measured")?.clone()).ok()
}

/// Runs the feeder: reads the members every poll, signs and submits the feeder's reading of every interval summed.
pub fn spawn(
    settings: FeederChecked,
    signer: Arc<crate::signer::Signer>,
    ledger: crate::ledger::Handle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(2))).build().into();
        let mut sums = Sums::new(settings.meters.len(), settings.interval_s);
        let mut poll = tokio::time::interval(settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(members = settings.meters.len(), meter = %settings.meter_id, "simulated feeder started");
        loop {
            poll.tick().await;
            let (meters, reader) = (settings.meters.clone(), agent.clone());
            let Ok(views) = tokio::task::spawn_blocking(move || {
                meters.iter().map(|api| read_member(&reader, api)).collect::<Vec<_>>()
            })
            .await
            else {
                continue;
            };
            for (member, view) in views.into_iter().enumerate() {
                if let Some(view) = view {
                    sums.measured(member, view);
                }
            }
            let now = crate::clock::now_ms();
            for flow in sums.flows(now / 1000) {
                submit(&settings, &signer, &ledger, flow, now).await;
            }
        }
    })
}

async fn submit(
    settings: &FeederChecked,
    signer: &crate::signer::Signer,
    ledger: &crate::ledger::Handle,
    flow: Flow,
    now: u64,
) {
    // What went through the feeder counts as generated (export) and consumed (import) behind it, so that the
    // reading balances.
    let reading = Reading {
        meter: settings.meter_id.clone(),
        interval_start_s: flow.interval_start_s,
        interval_s: settings.interval_s,
        import_wh: flow.import_wh,
        export_wh: flow.export_wh,
        generation_wh: flow.export_wh,
        consumption_wh: flow.import_wh,
        import_counter_wh: flow.import_counter_wh,
        export_counter_wh: flow.export_counter_wh,
        source: MeterSource::Simulated,
        device: Default::default(),
    };
    let envelope = match signer.sign(Body::Reading(reading), now, now.saturating_add(READING_LIFETIME_MS)) {
        Ok(envelope) => envelope,
        Err(error) => return warn!(error = %format!("{error:#}"), "the feeder could not sign"),
    };
    match ledger.submit(envelope.to_bytes()).await {
        Ok(_) => info!(start = flow.interval_start_s, import = flow.import_wh, export = flow.export_wh, "feeder read"),
        Err(error) => warn!(%error, "the ledger refused the feeder's reading"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(start: u64, import: u64, export: u64) -> MeasuredView {
        MeasuredView { interval_start_s: start, interval_s: 15, import_counter_wh: import, export_counter_wh: export }
    }

    #[test]
    fn the_feeder_sees_the_members_net_flow_of_every_interval_all_of_them_measured() {
        let mut sums = Sums::new(2, 15);
        sums.measured(0, view(0, 100, 50));
        assert_eq!(sums.flows(20), [], "member 1 has measured nothing yet");
        sums.measured(1, view(0, 10, 500));
        assert_eq!(sums.flows(20), []);
        // Interval 15: member 0 imports 30, member 1 exports 40: the cell exported 10.
        sums.measured(0, view(15, 130, 50));
        assert_eq!(sums.flows(35), [], "member 1 has not measured it yet");
        sums.measured(1, view(15, 10, 540));
        let flows = sums.flows(35);
        assert_eq!(flows.len(), 1);
        assert_eq!((flows[0].interval_start_s, flows[0].import_wh, flows[0].export_wh), (15, 0, 10));
        // Interval 30: member 1 never measures it; once four intervals passed, it is given up, and 45 follows.
        sums.measured(0, view(30, 200, 50));
        assert_eq!(sums.flows(60), []);
        sums.measured(0, view(45, 260, 50));
        sums.measured(1, view(45, 20, 560));
        assert_eq!(sums.flows(60), [], "30 is still awaited, and 45 lacks member 1's 30");
        sums.measured(0, view(60, 300, 50));
        sums.measured(1, view(60, 30, 560));
        let flows = sums.flows(200);
        assert_eq!(flows.iter().map(|flow| flow.interval_start_s).collect::<Vec<_>>(), [60]);
        assert_eq!((flows[0].import_wh, flows[0].import_counter_wh, flows[0].export_counter_wh), (50, 50, 10));
    }
}
