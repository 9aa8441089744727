//! The BDEW H25 standard household load profile (2025 edition): the energy a household uses in each quarter
//! hour, by month and day type, for 1,000,000 kWh a year. Scaled by a home's annual kWh it gives that home's
//! expected load. The data file ships in the crate (`energy/data/bdew-h25.csv`, from `demandlib` 0.2.2, MIT).

use crate::calendar;

/// The profile's CSV, as published.
pub const H25_CSV: &str = include_str!("../data/bdew-h25.csv");
/// Quarter hours in a day.
pub const QUARTERS_PER_DAY: usize = 96;
/// The annual consumption the profile's values are given for, kWh.
pub const PROFILE_ANNUAL_KWH: f64 = 1_000_000.0;

/// The profile's day types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayType {
    /// `SA`
    Saturday = 0,
    /// `FT`: Sunday or public holiday.
    Sunday = 1,
    /// `WT`
    Workday = 2,
}

impl DayType {
    /// The day type of a weekday (0 = Monday). Public holidays are taken as working days, as the profile's own
    /// check total does.
    #[must_use]
    pub fn of_weekday(weekday: u32) -> DayType {
        match weekday {
            5 => DayType::Saturday,
            6 => DayType::Sunday,
            _ => DayType::Workday,
        }
    }
}

/// Why the profile could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("load profile: {0}")]
    Format(&'static str),
}

/// A household load profile: kWh per quarter hour by month (0..12), day type and quarter hour, for
/// [`PROFILE_ANNUAL_KWH`] a year.
#[derive(Debug, Clone)]
pub struct LoadProfile {
    kwh: Vec<[[f64; QUARTERS_PER_DAY]; 3]>,
}

impl LoadProfile {
    /// The BDEW H25 profile shipped with the crate.
    pub fn h25() -> Result<LoadProfile, Error> {
        LoadProfile::parse(H25_CSV)
    }

    /// Reads a profile in the BDEW layout: a row of month names, a row of day types (`SA`, `FT`, `WT` for each
    /// month), then 96 rows `HH:MM-HH:MM,v1,...,v36`.
    pub fn parse(csv: &str) -> Result<LoadProfile, Error> {
        let mut lines = csv.lines().filter(|line| !line.trim().is_empty());
        lines.next().ok_or(Error::Format("no month row"))?;
        let day_types: Vec<&str> = lines.next().ok_or(Error::Format("no day type row"))?.split(',').skip(1).collect();
        if day_types.len() != 36 {
            return Err(Error::Format("the day type row must have 36 columns"));
        }
        let mut columns = Vec::with_capacity(36);
        for name in &day_types {
            columns.push(match name.trim() {
                "SA" => DayType::Saturday,
                "FT" => DayType::Sunday,
                "WT" => DayType::Workday,
                _ => return Err(Error::Format("unknown day type (expected SA, FT or WT)")),
            });
        }
        let mut kwh = vec![[[f64::NAN; QUARTERS_PER_DAY]; 3]; 12];
        let mut quarters = 0;
        for line in lines {
            if quarters == QUARTERS_PER_DAY {
                return Err(Error::Format("more than 96 quarter-hour rows"));
            }
            let values: Vec<&str> = line.split(',').skip(1).collect();
            if values.len() != 36 {
                return Err(Error::Format("a quarter-hour row must have 36 values"));
            }
            for (column, value) in values.iter().enumerate() {
                let value: f64 = value.trim().parse().map_err(|_| Error::Format("a value is not a number"))?;
                if !value.is_finite() || value < 0.0 {
                    return Err(Error::Format("a value is negative or not finite"));
                }
                kwh[column / 3][columns[column] as usize][quarters] = value;
            }
            quarters += 1;
        }
        if quarters != QUARTERS_PER_DAY {
            return Err(Error::Format("fewer than 96 quarter-hour rows"));
        }
        if kwh.iter().flatten().flatten().any(|value| value.is_nan()) {
            return Err(Error::Format("a month lacks one of the day types SA, FT, WT"));
        }
        Ok(LoadProfile { kwh })
    }

    /// kWh in quarter hour `quarter` (0..96) of a day of month `month` (1..=12) and type `day_type`, for a
    /// household of `annual_kwh`.
    #[must_use]
    pub fn quarter_kwh(&self, month: u32, day_type: DayType, quarter: usize, annual_kwh: f64) -> f64 {
        let month = usize::try_from(month.clamp(1, 12) - 1).unwrap_or(0);
        self.kwh[month][day_type as usize][quarter.min(QUARTERS_PER_DAY - 1)] * annual_kwh / PROFILE_ANNUAL_KWH
    }

    /// Mean load power in W at local time `local_s` (seconds since 1970-01-01 in local time) of a household of
    /// `annual_kwh`: the quarter hour's energy spread evenly over it.
    #[must_use]
    pub fn power_w(&self, local_s: i64, annual_kwh: f64) -> f64 {
        let date = calendar::date(local_s.div_euclid(86_400));
        let quarter = usize::try_from(local_s.rem_euclid(86_400) / 900).unwrap_or(0);
        // kWh per quarter hour to W: × 1000 Wh/kWh × 4 quarters/h.
        self.quarter_kwh(date.month, DayType::of_weekday(date.weekday), quarter, annual_kwh) * 4000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_year_of_the_profile_sums_to_its_published_check_total() {
        let profile = LoadProfile::h25().expect("the shipped profile parses");
        let first = calendar::days(2025, 1, 1);
        let mut total = 0.0;
        for day in first..first + 365 {
            let date = calendar::date(day);
            for quarter in 0..QUARTERS_PER_DAY {
                total += profile.quarter_kwh(date.month, DayType::of_weekday(date.weekday), quarter, 1_000_000.0);
            }
        }
        // The data's README: 998,627 kWh for 2025 with holidays as working days.
        assert!((total - 998_627.0).abs() < 1.0, "total {total}");
    }

    #[test]
    fn malformed_profiles_are_errors() {
        assert!(LoadProfile::parse("").is_err());
        let short = H25_CSV.lines().take(50).collect::<Vec<_>>().join("\n");
        assert_eq!(LoadProfile::parse(&short).err(), Some(Error::Format("fewer than 96 quarter-hour rows")));
        let negative = H25_CSV.replacen("22.152", "-1", 1);
        assert!(LoadProfile::parse(&negative).is_err());
    }
}
