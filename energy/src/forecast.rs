//! Forecasts of a real home's PV and load from its own measured history, for the home controller and the trader
//! when no simulator knows the future.
//!
//! The method is the one home energy managers start with, and it needs nothing but the meter:
//!
//! 1. **Daily profile.** PV and household load repeat by time of day. The profile of a slot is the mean of what
//!    was measured in the same slot of the last `days` days (slots are aligned to UTC midnight; a slot length
//!    that divides a day keeps them aligned).
//! 2. **Today's correction.** The latest measured slot says how today differs from the profile (clouds, guests):
//!    its deviation is added to the coming slots, fading by `FADE` per slot (a half-life of about an hour of
//!    quarter-hour slots), since weather and habits revert to the usual.
//! 3. **No history yet.** A slot of day without history falls back to the latest measurement (persistence) for
//!    load, and for PV to the latest measurement fading as in 2 — the controller then plans conservatively
//!    until a day of history is there.
//!
//! Deterministic: the same observations give the same forecast. Bounded: at most `days` days of slots are kept.

use std::collections::BTreeMap;

/// What was measured, or is expected, in one slot, Wh.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Flows {
    pub pv_wh: f64,
    pub load_wh: f64,
}

/// Weight of today's deviation one slot further ahead.
pub const FADE: f64 = 0.85;
/// Most days of history kept.
pub const DAYS_MAX: u32 = 28;
const DAY_S: u64 = 86_400;

/// A forecaster fed with each closed interval.
#[derive(Debug, Clone)]
pub struct Forecaster {
    slot_s: u64,
    days: u32,
    /// Slot start (Unix s) → measured flows.
    history: BTreeMap<u64, Flows>,
}

impl Forecaster {
    /// A forecaster for slots of `slot_s` seconds, keeping `days` days (1 to [`DAYS_MAX`]).
    #[must_use]
    pub fn new(slot_s: u32, days: u32) -> Forecaster {
        Forecaster { slot_s: u64::from(slot_s.max(1)), days: days.clamp(1, DAYS_MAX), history: BTreeMap::new() }
    }

    /// Slots of history kept at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        usize::try_from(u64::from(self.days) * DAY_S / self.slot_s).unwrap_or(usize::MAX).max(1)
    }

    /// Slots of history held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.history.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Records the flows measured in the slot starting at `start_s` (rounded down to a slot). Negative or
    /// non-finite values count as 0; a slot measured again replaces the earlier value; the oldest slots go once
    /// more than `days` days are held.
    pub fn observe(&mut self, start_s: u64, flows: Flows) {
        let clean = |value: f64| if value.is_finite() { value.max(0.0) } else { 0.0 };
        let start_s = start_s / self.slot_s * self.slot_s;
        self.history.insert(start_s, Flows { pv_wh: clean(flows.pv_wh), load_wh: clean(flows.load_wh) });
        // Forget what is older than the window behind the newest slot, and bound the count in any case.
        if let Some((&newest, _)) = self.history.last_key_value() {
            let horizon = newest.saturating_sub(u64::from(self.days) * DAY_S);
            while self.history.first_key_value().is_some_and(|(&oldest, _)| oldest <= horizon) {
                self.history.pop_first();
            }
        }
        while self.history.len() > self.capacity() {
            self.history.pop_first();
        }
    }

    /// The mean of the same slot on earlier days, when any was measured.
    fn profile(&self, start_s: u64) -> Option<Flows> {
        let (mut sum, mut count) = (Flows::default(), 0u32);
        for day in 1..=u64::from(self.days) {
            let Some(earlier) = start_s.checked_sub(day * DAY_S) else { break };
            if let Some(flows) = self.history.get(&earlier) {
                sum.pv_wh += flows.pv_wh;
                sum.load_wh += flows.load_wh;
                count += 1;
            }
        }
        (count > 0).then(|| Flows { pv_wh: sum.pv_wh / f64::from(count), load_wh: sum.load_wh / f64::from(count) })
    }

    /// The expected flows of `count` slots from the one starting at `from_s` (rounded down to a slot).
    #[must_use]
    pub fn forecast(&self, from_s: u64, count: usize) -> Vec<Flows> {
        let from_s = from_s / self.slot_s * self.slot_s;
        // The latest slot measured before `from_s`, if it is recent (within two slots).
        let latest = self
            .history
            .range(..from_s)
            .next_back()
            .filter(|(start, _)| from_s - **start <= 2 * self.slot_s)
            .map(|(start, flows)| (*start, *flows));
        // Today's deviation from the profile, where the latest slot has a profile.
        let deviation = latest.and_then(|(start, flows)| {
            self.profile(start)
                .map(|usual| Flows { pv_wh: flows.pv_wh - usual.pv_wh, load_wh: flows.load_wh - usual.load_wh })
        });
        let mut weight = 1.0;
        (0..count as u64)
            .map(|slot| {
                let start_s = from_s + slot * self.slot_s;
                let flows = match (self.profile(start_s), latest) {
                    (Some(usual), _) => {
                        let deviation = deviation.unwrap_or_default();
                        Flows {
                            pv_wh: usual.pv_wh + weight * deviation.pv_wh,
                            load_wh: usual.load_wh + weight * deviation.load_wh,
                        }
                    }
                    (None, Some((_, measured))) => Flows { pv_wh: measured.pv_wh * weight, load_wh: measured.load_wh },
                    (None, None) => Flows::default(),
                };
                weight *= FADE;
                Flows { pv_wh: flows.pv_wh.max(0.0), load_wh: flows.load_wh.max(0.0) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day of quarter hours: PV a bell around noon, load with a morning and an evening peak.
    fn usual(slot: u64) -> Flows {
        let hour = (slot % 96) as f64 / 4.0;
        let pv = (1_000.0 * (1.0 - ((hour - 12.0) / 6.0).powi(2))).max(0.0);
        let load = 100.0 + if (7.0..9.0).contains(&hour) || (18.0..22.0).contains(&hour) { 300.0 } else { 0.0 };
        Flows { pv_wh: pv, load_wh: load }
    }

    #[test]
    fn a_repeating_day_is_forecast_exactly_after_one_day() {
        let mut forecaster = Forecaster::new(900, 7);
        for slot in 0..96 {
            forecaster.observe(slot * 900, usual(slot));
        }
        let forecast = forecaster.forecast(96 * 900, 96);
        for (slot, flows) in forecast.iter().enumerate() {
            let expected = usual(slot as u64);
            assert!((flows.pv_wh - expected.pv_wh).abs() < 1e-9, "slot {slot}: {flows:?} vs {expected:?}");
            assert!((flows.load_wh - expected.load_wh).abs() < 1e-9, "slot {slot}: {flows:?} vs {expected:?}");
        }
    }

    #[test]
    fn a_cloudy_morning_lowers_the_next_slots_and_fades_back_to_the_profile() {
        let mut forecaster = Forecaster::new(900, 7);
        for slot in 0..96 {
            forecaster.observe(slot * 900, usual(slot));
        }
        // Day two, 10:00: half the usual PV.
        let ten = 96 + 40;
        for slot in 96..ten {
            forecaster.observe(slot * 900, usual(slot));
        }
        let cloudy = Flows { pv_wh: usual(ten).pv_wh / 2.0, ..usual(ten) };
        forecaster.observe(ten * 900, cloudy);
        let forecast = forecaster.forecast((ten + 1) * 900, 40);
        let shortfall = |index: usize| usual(ten + 1 + index as u64).pv_wh - forecast[index].pv_wh;
        assert!(shortfall(0) > 0.3 * usual(ten).pv_wh, "{:?}", forecast[0]);
        // Fading: each further slot nearer the profile, and after ten hours within 1 %.
        assert!(shortfall(1) < shortfall(0) && shortfall(8) < shortfall(1) && shortfall(8) > 0.0);
        assert!(shortfall(39).abs() < 0.01 * usual(ten).pv_wh + 1e-9);
        // The load was as usual: its forecast is the profile.
        assert!((forecast[0].load_wh - usual(ten + 1).load_wh).abs() < 1e-9);
    }

    #[test]
    fn without_history_the_latest_slot_persists() {
        let mut forecaster = Forecaster::new(900, 7);
        assert_eq!(forecaster.forecast(0, 3), vec![Flows::default(); 3]);
        forecaster.observe(9_000, Flows { pv_wh: 400.0, load_wh: 250.0 });
        let forecast = forecaster.forecast(9_900, 3);
        assert_eq!(forecast[0], Flows { pv_wh: 400.0, load_wh: 250.0 });
        assert!((forecast[1].pv_wh - 400.0 * FADE).abs() < 1e-9 && forecast[1].load_wh == 250.0);
        // A measurement hours old says nothing about the coming slots.
        assert_eq!(forecaster.forecast(9_900 + 4 * 3600, 1), vec![Flows::default()]);
    }

    #[test]
    fn history_is_bounded_and_values_are_cleaned() {
        let mut forecaster = Forecaster::new(900, 2);
        for slot in 0..96 * 10 {
            forecaster.observe(slot * 900 + 17, Flows { pv_wh: f64::NAN, load_wh: -5.0 });
        }
        assert_eq!(forecaster.len(), forecaster.capacity());
        assert_eq!(forecaster.capacity(), 192);
        assert!(forecaster.forecast(96 * 10 * 900, 4).iter().all(|flows| *flows == Flows::default()));
    }
}
