//! A simulated home: PV on the roof, a household load from the standard profile, an optional battery, behind one
//! grid meter. Deterministic for a seed: the same configuration and the same calls give the same counters.
//!
//! Time can run faster than the wall clock (a devnet trades a day in minutes): the home maps wall time to
//! simulated time for the sun and the load profile, while energy is always power × wall time, so every reading
//! stays physically plausible for its interval.

use std::sync::Arc;

use crate::meter::Sample;
use crate::profile::LoadProfile;
use crate::solar::{self, Site};

/// A home battery.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatteryConfig {
    /// Usable capacity, Wh.
    pub capacity_wh: u64,
    /// Most charge or discharge power, W.
    pub power_w: u64,
    /// Round-trip efficiency in parts per million (900,000 = 90 %); losses are split between charge and discharge.
    pub efficiency_ppm: u32,
}

/// What a simulated home is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeConfig {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Installed PV peak power, kWp (0 for none).
    pub pv_kwp: f64,
    /// Household consumption a year, kWh (the load profile is scaled to it).
    pub annual_kwh: f64,
    pub battery: Option<BatteryConfig>,
    /// Weather seed: homes of one neighbourhood share it (one sky).
    pub seed: u64,
    /// The household's own load-noise seed; 0 takes the weather seed.
    pub load_seed: u64,
    /// Local time minus UTC in seconds, for the load profile (3600 for CET).
    pub utc_offset_s: i64,
    /// Simulated seconds per wall-clock second (1 in a real home; 96 plays a day in 15 minutes).
    pub speed: u32,
    /// The simulated time (Unix seconds) at which the wall clock reads `wall_origin_s`; 0 means the same instant.
    pub simulated_origin_s: i64,
    pub wall_origin_s: i64,
}

impl Default for HomeConfig {
    /// A German family home near Potsdam: 6 kWp, 4,000 kWh a year, no battery.
    fn default() -> HomeConfig {
        HomeConfig {
            latitude_deg: 52.38,
            longitude_deg: 13.06,
            pv_kwp: 6.0,
            annual_kwh: 4_000.0,
            battery: None,
            seed: 1,
            load_seed: 0,
            utc_offset_s: 3600,
            speed: 1,
            simulated_origin_s: 0,
            wall_origin_s: 0,
        }
    }
}

/// Why a home configuration is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("home: {0}")]
    Invalid(&'static str),
}

impl HomeConfig {
    /// Checks the configuration is physically meaningful.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason| Err(ConfigError::Invalid(reason));
        if !(-90.0..=90.0).contains(&self.latitude_deg) || !(-180.0..=180.0).contains(&self.longitude_deg) {
            return invalid("latitude must be within ±90° and longitude within ±180°");
        }
        if !(0.0..=1_000.0).contains(&self.pv_kwp) {
            return invalid("pv_kwp must be between 0 and 1,000");
        }
        if !(0.0..=10_000_000.0).contains(&self.annual_kwh) {
            return invalid("annual_kwh must be between 0 and 10,000,000");
        }
        if self.speed == 0 || self.speed > 100_000 {
            return invalid("speed must be between 1 and 100,000");
        }
        if let Some(battery) = self.battery
            && (battery.capacity_wh == 0 || battery.power_w == 0 || !(1..=1_000_000).contains(&battery.efficiency_ppm))
        {
            return invalid("a battery needs capacity_wh and power_w above 0 and efficiency_ppm in 1..=1,000,000");
        }
        Ok(())
    }

    /// Largest power the home can import or export, W: its load peak, PV and battery together, with margin.
    #[must_use]
    pub fn grid_power_max_w(&self) -> u64 {
        let battery = self.battery.map_or(0, |battery| battery.power_w);
        let load_peak = self.annual_kwh * 1000.0 / 8760.0 * 8.0;
        (self.pv_kwp * 1000.0 + load_peak).ceil() as u64 + battery
    }
}

/// What the battery does in the coming interval; set by the dispatch controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatteryCommand {
    /// Charge from surplus PV, discharge to cover the load (what a home battery does on its own).
    #[default]
    SelfConsumption,
    /// Charge at this power, W, from PV first and the grid for the rest.
    Charge(u64),
    /// Discharge at this power, W, exporting what the home does not use.
    Discharge(u64),
    /// Neither charge nor discharge.
    Idle,
}

/// The home's lifetime energy registers, Wh (fractional; meters show whole Wh).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Registers {
    import: f64,
    export: f64,
    generation: f64,
    consumption: f64,
}

/// A simulated home.
#[derive(Debug, Clone)]
pub struct Home {
    config: HomeConfig,
    profile: Arc<LoadProfile>,
    registers: Registers,
    soc_wh: f64,
    command: BatteryCommand,
    flexible_w: u64,
    /// Wall time the registers have been integrated to, ms.
    now_ms: u64,
}

impl Home {
    /// A home whose registers start at 0 at wall time `now_ms`, with its battery half full.
    pub fn new(config: HomeConfig, profile: Arc<LoadProfile>, now_ms: u64) -> Result<Home, ConfigError> {
        config.validate()?;
        let soc_wh = config.battery.map_or(0.0, |battery| battery.capacity_wh as f64 / 2.0);
        Ok(Home {
            config,
            profile,
            registers: Registers::default(),
            soc_wh,
            command: BatteryCommand::default(),
            flexible_w: 0,
            now_ms,
        })
    }

    #[must_use]
    pub fn config(&self) -> &HomeConfig {
        &self.config
    }

    /// The battery's state of charge, Wh (0 without a battery).
    #[must_use]
    pub fn soc_wh(&self) -> u64 {
        self.soc_wh.max(0.0) as u64
    }

    /// Sets what the battery does from now on.
    pub fn set_battery(&mut self, command: BatteryCommand) {
        self.command = command;
    }

    /// Adds a flexible load (heat pump, car, dishwasher) of this power from now on, W; 0 switches it off.
    pub fn set_flexible_load(&mut self, power_w: u64) {
        self.flexible_w = power_w;
    }

    /// The simulated instant of a wall-clock instant, Unix seconds.
    #[must_use]
    pub fn simulated_s(&self, wall_ms: u64) -> f64 {
        let elapsed = wall_ms as f64 / 1000.0 - self.config.wall_origin_s as f64;
        self.config.simulated_origin_s as f64 + elapsed * f64::from(self.config.speed)
    }

    /// PV power at a simulated instant, W.
    #[must_use]
    pub fn pv_power_w(&self, simulated_s: f64) -> f64 {
        let site = Site { latitude_deg: self.config.latitude_deg, longitude_deg: self.config.longitude_deg };
        solar::pv_power_w(site, self.config.pv_kwp, self.config.seed, simulated_s as i64)
    }

    /// Household load at a simulated instant, W: the profile's quarter-hour mean with minute-by-minute noise
    /// (mean 1, so totals keep the profile's).
    #[must_use]
    pub fn load_power_w(&self, simulated_s: f64) -> f64 {
        let local_s = simulated_s as i64 + self.config.utc_offset_s;
        let seed = if self.config.load_seed == 0 { self.config.seed } else { self.config.load_seed };
        let noise = 0.5 + solar::uniform(seed, 3, local_s.div_euclid(60));
        self.profile.power_w(local_s, self.config.annual_kwh) * noise
    }

    /// Integrates the home's flows up to wall time `to_ms` (earlier times are ignored).
    pub fn advance(&mut self, to_ms: u64) {
        // One step per simulated minute at most, and at least one per wall second.
        let step_ms = (60_000 / u64::from(self.config.speed)).clamp(1, 1_000).max(1);
        while self.now_ms < to_ms {
            let dt_ms = step_ms.min(to_ms - self.now_ms);
            let middle = self.simulated_s(self.now_ms + dt_ms / 2);
            self.step(middle, dt_ms as f64 / 3_600_000.0);
            self.now_ms += dt_ms;
        }
    }

    /// One step of `hours` at powers taken at simulated instant `simulated_s`.
    fn step(&mut self, simulated_s: f64, hours: f64) {
        let pv = self.pv_power_w(simulated_s) * hours;
        let load = (self.load_power_w(simulated_s) + self.flexible_w as f64) * hours;
        let (charge_in, discharge_out) = match self.config.battery {
            None => (0.0, 0.0),
            Some(battery) => self.battery_step(battery, pv - load, hours),
        };
        let grid = load + charge_in - pv - discharge_out;
        if grid > 0.0 {
            self.registers.import += grid;
        } else {
            self.registers.export -= grid;
        }
        self.registers.generation += pv;
        self.registers.consumption += load;
    }

    /// Energy into and out of the battery's terminals in one step, Wh, given the home's surplus (PV − load).
    fn battery_step(&mut self, battery: BatteryConfig, surplus: f64, hours: f64) -> (f64, f64) {
        let one_way = (f64::from(battery.efficiency_ppm) / 1e6).sqrt();
        let limit = battery.power_w as f64 * hours;
        let room = (battery.capacity_wh as f64 - self.soc_wh).max(0.0) / one_way;
        let stored = self.soc_wh.max(0.0) * one_way;
        let (charge_in, discharge_out) = match self.command {
            BatteryCommand::SelfConsumption if surplus > 0.0 => (surplus.min(limit).min(room), 0.0),
            BatteryCommand::SelfConsumption => (0.0, (-surplus).min(limit).min(stored)),
            BatteryCommand::Charge(w) => ((w as f64 * hours).min(limit).min(room), 0.0),
            BatteryCommand::Discharge(w) => (0.0, (w as f64 * hours).min(limit).min(stored)),
            BatteryCommand::Idle => (0.0, 0.0),
        };
        self.soc_wh += charge_in * one_way - discharge_out / one_way;
        (charge_in, discharge_out)
    }

    /// The meter's registers now, whole Wh.
    #[must_use]
    pub fn sample(&self) -> Sample {
        Sample {
            at_ms: self.now_ms,
            import_wh: self.registers.import as u64,
            export_wh: self.registers.export as u64,
            generation_wh: self.registers.generation as u64,
            consumption_wh: self.registers.consumption as u64,
            // The simulation has no grid connection to watch.
            grid_present: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar;

    fn profile() -> Arc<LoadProfile> {
        Arc::new(LoadProfile::h25().expect("profile"))
    }

    fn run(config: HomeConfig, (year, month, day): (i64, u32, u32), days: u64) -> Sample {
        let start = calendar::days(year, month, day) as u64 * 86_400_000;
        let mut home = Home::new(config, profile(), start).expect("home");
        home.advance(start + days * 86_400_000);
        home.sample()
    }

    fn year(config: HomeConfig) -> Sample {
        run(config, (2025, 1, 1), 365)
    }

    #[test]
    fn a_year_of_load_totals_the_annual_consumption() {
        let sample = year(HomeConfig { pv_kwp: 0.0, ..HomeConfig::default() });
        assert!((3_960..=4_040).contains(&sample.consumption_wh.div_ceil(1000)), "{sample:?}");
        assert_eq!(sample.generation_wh, 0);
        assert_eq!(sample.import_wh, sample.consumption_wh);
    }

    #[test]
    fn energy_balances_and_a_battery_raises_self_consumption() {
        // May: sunny days and long evenings.
        let without = run(HomeConfig::default(), (2025, 5, 1), 31);
        let battery = BatteryConfig { capacity_wh: 10_000, power_w: 5_000, efficiency_ppm: 900_000 };
        let with = run(HomeConfig { battery: Some(battery), ..HomeConfig::default() }, (2025, 5, 1), 31);
        for sample in [without, with] {
            let into = sample.generation_wh + sample.import_wh;
            let out = sample.consumption_wh + sample.export_wh;
            // Without a battery in and out balance (up to rounding); with one, only by its losses and charge.
            assert!(into + 2 >= out && into - out < 100_000, "{sample:?}");
        }
        assert_eq!(without.generation_wh, with.generation_wh);
        // A 10 kWh battery covers most May evenings from the day's surplus.
        assert!(with.import_wh * 2 < without.import_wh, "{with:?} {without:?}");
        assert!(with.export_wh < without.export_wh);
    }

    #[test]
    fn accelerated_time_plays_a_day_in_minutes_with_plausible_power() {
        let start_s = calendar::days(2025, 6, 21) * 86_400;
        let config =
            HomeConfig { speed: 96, simulated_origin_s: start_s, wall_origin_s: 1_000_000, ..HomeConfig::default() };
        let max_w = config.grid_power_max_w();
        let mut home = Home::new(config, profile(), 1_000_000_000).expect("home");
        let mut previous = home.sample();
        // 15 wall minutes = one simulated day, read every 15 wall seconds.
        for step in 1..=60 {
            home.advance(1_000_000_000 + step * 15_000);
            let sample = home.sample();
            let generation = sample.generation_wh - previous.generation_wh;
            assert!(generation as f64 <= 6_000.0 * 15.0 / 3600.0 + 1.0);
            assert!((sample.import_wh - previous.import_wh) as f64 <= max_w as f64 * 15.0 / 3600.0 + 1.0);
            previous = sample;
        }
        // A midsummer day of 6 kWp yields real energy, even in 15 wall minutes.
        assert!(previous.generation_wh > 10, "{previous:?}");
        assert!(home.simulated_s(1_000_000_000 + 900_000) - start_s as f64 >= 86_400.0 - 1.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_home() {
        let config = HomeConfig { seed: 42, ..HomeConfig::default() };
        let start = calendar::days(2025, 5, 1) as u64 * 86_400_000;
        let run = || {
            let mut home = Home::new(config.clone(), profile(), start).expect("home");
            home.advance(start + 3 * 86_400_000);
            home.sample()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn invalid_homes_are_refused() {
        for config in [
            HomeConfig { latitude_deg: 91.0, ..HomeConfig::default() },
            HomeConfig { speed: 0, ..HomeConfig::default() },
            HomeConfig {
                battery: Some(BatteryConfig { capacity_wh: 0, power_w: 1, efficiency_ppm: 900_000 }),
                ..HomeConfig::default()
            },
        ] {
            assert!(Home::new(config, profile(), 0).is_err());
        }
    }
}
