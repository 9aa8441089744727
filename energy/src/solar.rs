//! PV generation: a clear-sky curve from the sun's position (latitude, longitude, day of year, time of day) and
//! seeded cloud noise, scaled by the installed peak power.
//!
//! - Sun position: declination δ = 23.45° · sin(2π(284 + n)/365) for day of year n; equation of time
//!   E = 9.87 sin 2B − 7.53 cos B − 1.5 sin B minutes with B = 2π(n − 81)/364; solar time = UTC + longitude/15 h + E;
//!   hour angle ω = 15° · (solar time − 12 h); cos θz = sin φ sin δ + cos φ cos δ cos ω.
//! - Clear-sky global horizontal irradiance (Haurwitz 1945): G = 1098 · cos θz · exp(−0.059 / cos θz) W/m².
//! - PV power: P = kWp · G/1000 · gain · PR · k, with a tilted-module gain of 1.1 over the horizontal, a
//!   performance ratio PR of 0.85 and a clearness k ∈ [0.05, 1] from the cloud model.
//! - Clouds: each day draws a clearness around a seasonal mean (0.70 at midsummer, 0.46 at midwinter, close to the
//!   German test reference year); each quarter hour varies around it, more on broken-cloud days. Both come from
//!   a hash of (seed, day or quarter hour), so any instant can be computed on its own and a seed always gives the
//!   same weather.

use std::f64::consts::PI;

use crate::calendar;

const TILT_GAIN: f64 = 1.1;
const PERFORMANCE_RATIO: f64 = 0.85;

/// Where the panels are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Site {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
}

/// The cosine of the sun's zenith angle at `unix_s`; 0 or less when the sun is down.
#[must_use]
pub fn cos_zenith(site: Site, unix_s: i64) -> f64 {
    let day_of_year = f64::from(calendar::date(unix_s.div_euclid(86_400)).day_of_year);
    let b = 2.0 * PI * (day_of_year - 81.0) / 364.0;
    let equation_of_time_min = 9.87 * (2.0 * b).sin() - 7.53 * b.cos() - 1.5 * b.sin();
    let utc_h = unix_s.rem_euclid(86_400) as f64 / 3600.0;
    let solar_h = utc_h + site.longitude_deg / 15.0 + equation_of_time_min / 60.0;
    let hour_angle = (15.0 * (solar_h - 12.0)).to_radians();
    let declination = (23.45 * (2.0 * PI * (284.0 + day_of_year) / 365.0).sin()).to_radians();
    let latitude = site.latitude_deg.to_radians();
    latitude.sin() * declination.sin() + latitude.cos() * declination.cos() * hour_angle.cos()
}

/// Clear-sky global horizontal irradiance at `unix_s`, W/m² (Haurwitz).
#[must_use]
pub fn clear_sky_w_m2(site: Site, unix_s: i64) -> f64 {
    let cos_z = cos_zenith(site, unix_s);
    if cos_z <= 0.01 { 0.0 } else { 1098.0 * cos_z * (-0.059 / cos_z).exp() }
}

/// A uniform number in [0, 1) from a seed and an index (splitmix64): the same pair always gives the same number.
#[must_use]
pub fn uniform(seed: u64, stream: u64, index: i64) -> f64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The sky's clearness (1 = clear) at `unix_s` for a seed.
#[must_use]
pub fn clearness(seed: u64, unix_s: i64) -> f64 {
    let day = unix_s.div_euclid(86_400);
    let day_of_year = f64::from(calendar::date(day).day_of_year);
    let seasonal = 0.58 + 0.12 * (2.0 * PI * (day_of_year - 172.0) / 365.0).cos();
    let daily = (seasonal * (0.35 + 1.3 * uniform(seed, 1, day))).clamp(0.05, 1.0);
    // Quarter-hour variation, interpolated so that power changes smoothly within a quarter hour.
    let quarter = unix_s.div_euclid(900);
    let fraction = unix_s.rem_euclid(900) as f64 / 900.0;
    let noise = |index: i64| 2.0 * uniform(seed, 2, index) - 1.0;
    let variation = noise(quarter) * (1.0 - fraction) + noise(quarter + 1) * fraction;
    // Broken clouds (daily clearness near 0.5) vary most; clear and overcast days little.
    let spread = 0.8 * daily * (1.0 - daily);
    (daily * (1.0 + spread * variation / daily.max(0.05))).clamp(0.05, 1.0)
}

/// PV power in W at `unix_s` of `kwp` installed at `site`, under the weather of `seed`.
#[must_use]
pub fn pv_power_w(site: Site, kwp: f64, seed: u64, unix_s: i64) -> f64 {
    let irradiance = clear_sky_w_m2(site, unix_s);
    if irradiance <= 0.0 {
        return 0.0;
    }
    kwp * irradiance * TILT_GAIN * PERFORMANCE_RATIO * clearness(seed, unix_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POTSDAM: Site = Site { latitude_deg: 52.38, longitude_deg: 13.06 };

    fn day_kwh(kwp: f64, seed: u64, day: i64) -> f64 {
        (0..1440).map(|minute| pv_power_w(POTSDAM, kwp, seed, day * 86_400 + minute * 60 + 30) / 60.0).sum::<f64>()
            / 1000.0
    }

    #[test]
    fn the_sun_is_highest_near_solar_noon_and_down_at_night() {
        let day = calendar::days(2025, 6, 21) * 86_400;
        // Solar noon at 13° E is about 11:08 UTC.
        assert!(clear_sky_w_m2(POTSDAM, day + 11 * 3600) > 800.0);
        assert_eq!(clear_sky_w_m2(POTSDAM, day), 0.0);
        let winter = calendar::days(2025, 12, 21) * 86_400;
        assert!(clear_sky_w_m2(POTSDAM, winter + 11 * 3600) < 350.0);
        assert_eq!(clear_sky_w_m2(POTSDAM, winter + 17 * 3600), 0.0);
    }

    #[test]
    fn a_year_of_a_5_kwp_roof_yields_what_such_roofs_yield_in_germany() {
        let first = calendar::days(2025, 1, 1);
        let year: f64 = (first..first + 365).map(|day| day_kwh(5.0, 7, day)).sum();
        // The reference year's 1,074.5 kWh/m² gives 4,500-5,000 kWh for 5 kWp; seeds vary around it.
        assert!((4_300.0..5_400.0).contains(&year), "{year} kWh");
        let june: f64 = (0..30).map(|offset| day_kwh(5.0, 7, calendar::days(2025, 6, 1) + offset)).sum::<f64>() / 30.0;
        let december: f64 =
            (0..31).map(|offset| day_kwh(5.0, 7, calendar::days(2025, 12, 1) + offset)).sum::<f64>() / 31.0;
        assert!((20.0..32.0).contains(&june), "June {june} kWh/day");
        assert!((1.0..5.0).contains(&december), "December {december} kWh/day");
        // Never above the clear-sky maximum of the installed power.
        assert!(day_kwh(5.0, 7, calendar::days(2025, 6, 21)) <= 5.0 * 24.0 * 0.95);
    }

    #[test]
    fn the_weather_is_a_function_of_the_seed() {
        let day = calendar::days(2025, 4, 1);
        assert_eq!(day_kwh(5.0, 1, day).to_bits(), day_kwh(5.0, 1, day).to_bits());
        let days: Vec<f64> = (0..20).map(|offset| day_kwh(5.0, 1, day + offset)).collect();
        let other: Vec<f64> = (0..20).map(|offset| day_kwh(5.0, 2, day + offset)).collect();
        assert_ne!(days, other);
        // Sunny and cloudy days both occur.
        let max = days.iter().copied().fold(0.0, f64::max);
        let min = days.iter().copied().fold(f64::MAX, f64::min);
        assert!(max > 2.0 * min, "{days:?}");
    }
}
