//! Sensorized maintenance: rules over an asset's metered intervals that raise alerts before a fault cascades.
//!
//! Each interval a watch is given what the meter measured (PV, grid import and export, consumption) and, where
//! the node knows it, the energy stored in the asset's battery. Four rules:
//!
//! - **wear**: the battery's round-trip efficiency η over the last `window` intervals. With `into` the energy its
//!   terminals took, `out` what they gave and ΔE the change of stored energy, `into·a − out/a = ΔE` for `a = √η`,
//!   so `a = (ΔE + √(ΔE² + 4·into·out)) / (2·into)`. Measured once the window moved at least half the battery's
//!   capacity through it; alerts when η falls below `efficiency_min_ppm`.
//! - **depletion**: the stored energy below `reserve_ppm` of the capacity (0, the default: no reserve kept).
//! - **misuse**: an interval's consumption above `misuse_factor` times the mean of the previous `window` (and
//!   above `misuse_floor_wh`, so a quiet home switching on a kettle is no misuse).
//! - **silent**: no measurement for `silent_intervals` intervals.
//!
//! An alert of one rule is raised once and again only after `repeat_intervals` intervals while the condition
//! lasts. Deterministic: no clock inside; time is the intervals' start.

use std::collections::VecDeque;

/// What an interval measured, Wh (and the stored energy at its end when known).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    pub interval_start_s: u64,
    pub generation_wh: u64,
    pub import_wh: u64,
    pub export_wh: u64,
    pub consumption_wh: u64,
    pub stored_wh: Option<f64>,
}

/// Which rule raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    Wear,
    Depletion,
    Misuse,
    Silent,
}

/// An alert: the rule, what was measured and the threshold it crossed (ppm for wear and depletion, Wh for
/// misuse, intervals for silence), at an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    pub rule: Rule,
    pub measured: u64,
    pub threshold: u64,
    pub interval_start_s: u64,
}

/// The rules' thresholds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Intervals the wear and misuse rules look back over.
    pub window: usize,
    pub efficiency_min_ppm: u32,
    pub reserve_ppm: u32,
    pub misuse_factor: f64,
    pub misuse_floor_wh: u64,
    pub silent_intervals: u64,
    pub repeat_intervals: u64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            window: 96,
            efficiency_min_ppm: 800_000,
            // Off by default: a home battery running empty overnight is what it is for; community storage
            // that must keep a reserve for outages sets one.
            reserve_ppm: 0,
            misuse_factor: 4.0,
            misuse_floor_wh: 1_000,
            silent_intervals: 4,
            repeat_intervals: 96,
        }
    }
}

/// The watch over one asset.
#[derive(Debug, Clone)]
pub struct Watch {
    rules: Rules,
    interval_s: u64,
    /// The battery's usable capacity, Wh (0: no battery).
    capacity_wh: u64,
    history: VecDeque<Observation>,
    /// The interval each rule last alerted at.
    last_alert: [Option<u64>; 4],
}

impl Watch {
    #[must_use]
    pub fn new(rules: Rules, interval_s: u32, capacity_wh: u64) -> Watch {
        Watch {
            rules,
            interval_s: u64::from(interval_s.max(1)),
            capacity_wh,
            history: VecDeque::new(),
            last_alert: [None; 4],
        }
    }

    /// The last measured interval's start.
    #[must_use]
    pub fn last_interval_start_s(&self) -> Option<u64> {
        self.history.back().map(|observation| observation.interval_start_s)
    }

    /// Raises `alert` unless its rule alerted less than `repeat_intervals` ago.
    fn raise(&mut self, alert: Alert, alerts: &mut Vec<Alert>) {
        let slot = &mut self.last_alert[alert.rule as usize];
        let repeat_s = self.rules.repeat_intervals.max(1) * self.interval_s;
        if slot.is_some_and(|last| alert.interval_start_s < last + repeat_s) {
            return;
        }
        *slot = Some(alert.interval_start_s);
        alerts.push(alert);
    }

    /// A measured interval: the alerts it raises.
    pub fn observe(&mut self, observation: Observation) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if self.last_interval_start_s().is_some_and(|last| observation.interval_start_s <= last) {
            return alerts;
        }
        let at = observation.interval_start_s;
        // Misuse: against the mean of the intervals before this one.
        if !self.history.is_empty() {
            let mean =
                self.history.iter().map(|seen| seen.consumption_wh as f64).sum::<f64>() / self.history.len() as f64;
            let limit = (mean * self.rules.misuse_factor).max(self.rules.misuse_floor_wh as f64);
            if observation.consumption_wh as f64 > limit && self.history.len() >= self.rules.window / 4 {
                let alert = Alert {
                    rule: Rule::Misuse,
                    measured: observation.consumption_wh,
                    threshold: limit.round() as u64,
                    interval_start_s: at,
                };
                self.raise(alert, &mut alerts);
            }
        }
        self.history.push_back(observation);
        while self.history.len() > self.rules.window.max(1) {
            self.history.pop_front();
        }
        if self.capacity_wh > 0 {
            if let Some(stored) = observation.stored_wh {
                let reserve = self.capacity_wh as f64 * f64::from(self.rules.reserve_ppm) / 1e6;
                if stored < reserve {
                    let alert = Alert {
                        rule: Rule::Depletion,
                        measured: (stored.max(0.0) / self.capacity_wh as f64 * 1e6) as u64,
                        threshold: u64::from(self.rules.reserve_ppm),
                        interval_start_s: at,
                    };
                    self.raise(alert, &mut alerts);
                }
            }
            if let Some(efficiency) = self.efficiency_ppm()
                && efficiency < u64::from(self.rules.efficiency_min_ppm)
            {
                let alert = Alert {
                    rule: Rule::Wear,
                    measured: efficiency,
                    threshold: u64::from(self.rules.efficiency_min_ppm),
                    interval_start_s: at,
                };
                self.raise(alert, &mut alerts);
            }
        }
        alerts
    }

    /// Time passed without a measurement: the silence alert, once `silent_intervals` whole intervals went by.
    pub fn tick(&mut self, now_s: u64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let Some(last) = self.last_interval_start_s() else { return alerts };
        // The last measured interval ended at last + interval; whole intervals since then are missing.
        let missing = now_s.saturating_sub(last + self.interval_s) / self.interval_s;
        if missing >= self.rules.silent_intervals {
            let alert = Alert {
                rule: Rule::Silent,
                measured: missing,
                threshold: self.rules.silent_intervals,
                interval_start_s: last + missing * self.interval_s,
            };
            self.raise(alert, &mut alerts);
        }
        alerts
    }

    /// The battery's round-trip efficiency over the window, ppm, when enough energy moved through it and the
    /// stored energy is known at both ends.
    #[must_use]
    pub fn efficiency_ppm(&self) -> Option<u64> {
        let first = self.history.front()?;
        let last = self.history.back()?;
        let (start, end) = (first.stored_wh?, last.stored_wh?);
        // The first interval's flows happened before its stored energy was measured: they are not counted.
        let (mut into, mut out) = (0.0, 0.0);
        for seen in self.history.iter().skip(1) {
            let net =
                seen.generation_wh as f64 + seen.import_wh as f64 - seen.export_wh as f64 - seen.consumption_wh as f64;
            if net > 0.0 {
                into += net;
            } else {
                out -= net;
            }
        }
        if into < self.capacity_wh as f64 / 2.0 || out <= 0.0 {
            return None;
        }
        let change = end - start;
        let a = (change + (change * change + 4.0 * into * out).sqrt()) / (2.0 * into);
        Some((a * a * 1e6).round().clamp(0.0, 1e6) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(start: u64, consumption_wh: u64) -> Observation {
        Observation {
            interval_start_s: start * 900,
            consumption_wh,
            import_wh: consumption_wh,
            ..Observation::default()
        }
    }

    #[test]
    fn a_consumption_spike_is_misuse_once_and_again_only_after_the_repeat() {
        let mut watch = Watch::new(Rules { window: 8, repeat_intervals: 4, ..Rules::default() }, 900, 0);
        for slot in 0..8 {
            assert!(watch.observe(observation(slot, 300)).is_empty());
        }
        let alerts = watch.observe(observation(8, 5_000));
        assert_eq!(
            alerts,
            vec![Alert { rule: Rule::Misuse, measured: 5_000, threshold: 1_200, interval_start_s: 8 * 900 }]
        );
        // Still high: not again within four intervals.
        assert!(watch.observe(observation(9, 9_000)).is_empty());
        // Replays and old intervals are ignored.
        assert!(watch.observe(observation(9, 50_000)).is_empty());
    }

    #[test]
    fn a_silent_meter_alerts_after_whole_intervals_without_a_measurement() {
        let mut watch = Watch::new(Rules { silent_intervals: 3, ..Rules::default() }, 900, 0);
        assert!(watch.tick(1_000_000).is_empty(), "nothing measured yet: nothing to miss");
        let _ = watch.observe(observation(10, 300));
        // Interval 10 ended at 11 × 900; intervals 11 and 12 missing at 13 × 900: not yet three.
        assert!(watch.tick(13 * 900).is_empty());
        let alerts = watch.tick(14 * 900);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].rule, alerts[0].measured), (Rule::Silent, 3));
    }

    #[test]
    fn depletion_alerts_below_the_reserve() {
        let mut watch = Watch::new(Rules { reserve_ppm: 100_000, ..Rules::default() }, 900, 10_000);
        let mut seen = observation(0, 300);
        seen.stored_wh = Some(2_000.0);
        assert!(watch.observe(seen).is_empty());
        seen.interval_start_s = 900;
        seen.stored_wh = Some(900.0);
        let alerts = watch.observe(seen);
        assert_eq!(
            alerts,
            vec![Alert { rule: Rule::Depletion, measured: 90_000, threshold: 100_000, interval_start_s: 900 }]
        );
    }
}
