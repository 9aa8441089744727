//! Maintenance rules on simulated homes: two days of 15-minute intervals of a home with a healthy battery raise
//! nothing; the same home with a worn battery (60 % round trip) raises a wear alert; a home whose meter stops
//! reporting raises a silence alert.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use energy::calendar;
use energy::home::{BatteryConfig, Home, HomeConfig};
use energy::maintenance::{Alert, Observation, Rule, Rules, Watch};
use energy::profile::LoadProfile;

const SLOT_S: u64 = 900;

/// Runs a home for `slots` intervals from a spring morning, feeding each interval to a watch; the meter stops
/// reporting after `reporting` intervals. Returns the alerts.
fn watch_home(efficiency_ppm: u32, slots: u64, reporting: u64) -> Vec<Alert> {
    let battery = BatteryConfig { capacity_wh: 10_000, power_w: 4_000, efficiency_ppm };
    let config = HomeConfig { battery: Some(battery), seed: 3, ..HomeConfig::default() };
    let start_s = calendar::days(2025, 4, 14) as u64 * 86_400;
    let mut home = Home::new(config, Arc::new(LoadProfile::h25().unwrap()), start_s * 1000).unwrap();
    let mut watch = Watch::new(Rules::default(), SLOT_S as u32, battery.capacity_wh);
    let mut alerts = Vec::new();
    for slot in 0..slots {
        let at_s = start_s + slot * SLOT_S;
        let before = home.sample();
        home.advance((at_s + SLOT_S) * 1000);
        let after = home.sample();
        if slot < reporting {
            alerts.extend(watch.observe(Observation {
                interval_start_s: at_s,
                generation_wh: after.generation_wh - before.generation_wh,
                import_wh: after.import_wh - before.import_wh,
                export_wh: after.export_wh - before.export_wh,
                consumption_wh: after.consumption_wh - before.consumption_wh,
                stored_wh: Some(home.soc_wh() as f64),
            }));
        }
        alerts.extend(watch.tick(at_s + SLOT_S));
    }
    alerts
}

#[test]
fn a_healthy_home_raises_nothing() {
    let alerts = watch_home(920_000, 2 * 96, u64::MAX);
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn a_worn_battery_raises_a_wear_alert_with_its_measured_efficiency() {
    let alerts = watch_home(600_000, 2 * 96, u64::MAX);
    let wear: Vec<&Alert> = alerts.iter().filter(|alert| alert.rule == Rule::Wear).collect();
    assert!(!wear.is_empty(), "{alerts:?}");
    // The efficiency is measured from metered flows and whole-Wh states of charge: close to the true 60 %.
    assert!((550_000..650_000).contains(&wear[0].measured), "{wear:?}");
    assert_eq!(wear[0].threshold, 800_000);
    assert!(alerts.iter().all(|alert| alert.rule == Rule::Wear), "nothing else is wrong: {alerts:?}");
}

#[test]
fn a_meter_gone_silent_raises_a_silence_alert() {
    let alerts = watch_home(920_000, 2 * 96, 96);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, Rule::Silent);
    assert_eq!(alerts[0].measured, 4, "after four whole silent intervals");
}
