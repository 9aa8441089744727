//! Civil dates from Unix time, without a time-zone database: what the load profile and the sun need.

/// A day of the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    /// 1..=366
    pub day_of_year: u32,
    /// 0 = Monday ... 6 = Sunday.
    pub weekday: u32,
}

/// The civil date of day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
#[must_use]
pub fn date(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year_march = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year_march + 2) / 153;
    let day = day_of_year_march - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let month_index = usize::try_from(month - 1).unwrap_or(0).min(11);
    let day_of_year = BEFORE_MONTH[month_index] + day + i64::from(leap && month > 2);
    Date {
        year,
        month: u32::try_from(month).unwrap_or(1),
        day: u32::try_from(day).unwrap_or(1),
        day_of_year: u32::try_from(day_of_year).unwrap_or(1),
        // 1970-01-01 was a Thursday (3 when Monday is 0).
        weekday: u32::try_from((days + 3).rem_euclid(7)).unwrap_or(0),
    }
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's `days_from_civil`).
#[must_use]
pub fn days(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(date(0), Date { year: 1970, month: 1, day: 1, day_of_year: 1, weekday: 3 });
        // 2025-06-21 was a Saturday, day 172 of the year.
        let day = days(2025, 6, 21);
        assert_eq!(date(day), Date { year: 2025, month: 6, day: 21, day_of_year: 172, weekday: 5 });
        // 2024-12-31 is day 366 of a leap year.
        assert_eq!(date(days(2024, 12, 31)).day_of_year, 366);
        for day in -1000..40_000 {
            let civil = date(day);
            assert_eq!(days(civil.year, civil.month, civil.day), day);
        }
    }
}
