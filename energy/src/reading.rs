//! Whether a signed reading is physically possible: checked by the home before it signs, by every peer before it
//! forwards, and by the ledger before it anchors.
//!
//! A reading is refused when
//! - its registers go back, or do not account for its energy: the lifetime import register must grow by at
//!   least the interval's import (by exactly that when it follows the previous reading directly), and likewise
//!   for export;
//! - any flow exceeds what the declared capacity can move in the interval (power × interval length, 1 Wh of
//!   rounding allowed);
//! - energy does not balance: generation + import − consumption − export is what went into storage (or came out
//!   of it), so its size is bounded by the storage power × interval length (2 Wh of rounding allowed);
//! - its interval has not ended yet at the checker's clock (with a skew allowance).

use protocol::message::Reading;

/// What a meter's site is declared to be able to do, W. Zero storage power means no storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Largest generation power (PV, wind).
    pub generation_w_max: u64,
    /// Largest power drawn from the grid.
    pub import_w_max: u64,
    /// Largest power fed into the grid.
    pub export_w_max: u64,
    /// Largest power used on site.
    pub consumption_w_max: u64,
    /// Largest charge or discharge power of storage on site.
    pub storage_w_max: u64,
}

impl Capacity {
    /// A household grid connection of 3 × 63 A at 230 V (43.5 kW) with up to 30 kWp and 20 kW of storage: the
    /// limit for meters that declared nothing.
    pub const RESIDENTIAL: Capacity = Capacity {
        generation_w_max: 30_000,
        import_w_max: 43_470,
        export_w_max: 43_470,
        consumption_w_max: 63_470,
        storage_w_max: 20_000,
    };
}

impl Capacity {
    /// What the gossip door holds every reading to before any ledger state is known: 10 MW each way, far above a
    /// household and above any asset a microgrid registers, so only absurd readings are turned away there; the
    /// ledger then holds a meter to its asset's declared limits (or [`Capacity::RESIDENTIAL`]).
    pub const CEILING: Capacity = Capacity {
        generation_w_max: 10_000_000,
        import_w_max: 10_000_000,
        export_w_max: 10_000_000,
        consumption_w_max: 10_000_000,
        storage_w_max: 10_000_000,
    };
}

/// The register values of the meter's previous anchored reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub interval_start_s: u64,
    pub interval_s: u32,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
}

impl From<&Reading> for Previous {
    fn from(reading: &Reading) -> Previous {
        Previous {
            interval_start_s: reading.interval_start_s,
            interval_s: reading.interval_s,
            import_counter_wh: reading.import_counter_wh,
            export_counter_wh: reading.export_counter_wh,
        }
    }
}

/// How long after its interval's end a reading may claim it, by clock skew between peers, seconds.
pub const CLOCK_SKEW_S_MAX: u64 = 30;

/// Why a reading is physically impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the interval starts at or before the meter's previous reading's")]
    NotAfterPrevious,
    #[error("the {register} register went back or grew less than the interval's {register} energy")]
    Register { register: &'static str },
    #[error("{flow} of {wh} Wh exceeds the declared {limit_wh} Wh for the interval")]
    OverCapacity { flow: &'static str, wh: u64, limit_wh: u64 },
    #[error("energy does not balance: {imbalance_wh} Wh unaccounted for, storage can move at most {limit_wh} Wh")]
    Unbalanced { imbalance_wh: u64, limit_wh: u64 },
    #[error("the interval has not ended yet")]
    InTheFuture,
}

/// Most energy `power_w` moves in `interval_s`, Wh, rounded up.
fn energy_wh(power_w: u64, interval_s: u32) -> u64 {
    power_w.saturating_mul(u64::from(interval_s)).div_ceil(3600)
}

/// Checks a reading against its meter's declared capacity, its previous reading, and the time `now_s`.
pub fn check(reading: &Reading, previous: Option<&Previous>, capacity: &Capacity, now_s: u64) -> Result<(), Invalid> {
    let end_s = reading.interval_start_s.saturating_add(u64::from(reading.interval_s));
    if end_s > now_s.saturating_add(CLOCK_SKEW_S_MAX) {
        return Err(Invalid::InTheFuture);
    }
    if reading.import_counter_wh < reading.import_wh {
        return Err(Invalid::Register { register: "import" });
    }
    if reading.export_counter_wh < reading.export_wh {
        return Err(Invalid::Register { register: "export" });
    }
    if let Some(previous) = previous {
        if reading.interval_start_s <= previous.interval_start_s {
            return Err(Invalid::NotAfterPrevious);
        }
        let adjacent =
            previous.interval_start_s.saturating_add(u64::from(previous.interval_s)) == reading.interval_start_s;
        let registers = [
            ("import", previous.import_counter_wh, reading.import_counter_wh, reading.import_wh),
            ("export", previous.export_counter_wh, reading.export_counter_wh, reading.export_wh),
        ];
        for (register, before, after, flow) in registers {
            let grown = after.checked_sub(before).ok_or(Invalid::Register { register })?;
            if grown < flow || (adjacent && grown != flow) {
                return Err(Invalid::Register { register });
            }
        }
    }
    let flows = [
        ("generation", reading.generation_wh, capacity.generation_w_max),
        ("import", reading.import_wh, capacity.import_w_max),
        ("export", reading.export_wh, capacity.export_w_max),
        ("consumption", reading.consumption_wh, capacity.consumption_w_max),
    ];
    for (flow, wh, power_w) in flows {
        let limit_wh = energy_wh(power_w, reading.interval_s).saturating_add(1);
        if wh > limit_wh {
            return Err(Invalid::OverCapacity { flow, wh, limit_wh });
        }
    }
    let into = u128::from(reading.generation_wh) + u128::from(reading.import_wh);
    let out = u128::from(reading.consumption_wh) + u128::from(reading.export_wh);
    let imbalance_wh = u64::try_from(into.abs_diff(out)).unwrap_or(u64::MAX);
    let limit_wh = energy_wh(capacity.storage_w_max, reading.interval_s).saturating_add(2);
    if imbalance_wh > limit_wh {
        return Err(Invalid::Unbalanced { imbalance_wh, limit_wh });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::MeterSource;
    use protocol::types::MeterId;

    fn reading(start_s: u64, import_wh: u64, export_wh: u64, counters: (u64, u64)) -> Reading {
        Reading {
            meter: MeterId::new("main").expect("id"),
            interval_start_s: start_s,
            interval_s: 900,
            import_wh,
            export_wh,
            generation_wh: 1_000,
            consumption_wh: 1_000 + import_wh - export_wh,
            import_counter_wh: counters.0,
            export_counter_wh: counters.1,
            source: MeterSource::Simulated,
            device: Default::default(),
        }
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn plausible_readings_pass() {
        let first = reading(9_000, 200, 0, (5_200, 300));
        assert_eq!(check(&first, None, &Capacity::RESIDENTIAL, NOW), Ok(()));
        let second = reading(9_900, 100, 50, (5_300, 350));
        assert_eq!(check(&second, Some(&Previous::from(&first)), &Capacity::RESIDENTIAL, NOW), Ok(()));
        // After a gap the registers may have grown by more than the interval's flow.
        let later = reading(18_000, 100, 50, (9_000, 900));
        assert_eq!(check(&later, Some(&Previous::from(&second)), &Capacity::RESIDENTIAL, NOW), Ok(()));
    }

    #[test]
    fn impossible_readings_are_refused() {
        let first = reading(9_000, 200, 0, (5_200, 300));
        let previous = Previous::from(&first);
        let capacity = Capacity::RESIDENTIAL;
        let check = |reading: &Reading| check(reading, Some(&previous), &capacity, NOW);
        assert_eq!(check(&reading(9_000, 100, 0, (5_300, 300))), Err(Invalid::NotAfterPrevious));
        assert_eq!(check(&reading(9_900, 100, 0, (5_100, 300))), Err(Invalid::Register { register: "import" }));
        assert_eq!(check(&reading(9_900, 100, 0, (5_350, 300))), Err(Invalid::Register { register: "import" }));
        assert_eq!(check(&reading(9_900, 0, 50, (5_200, 340))), Err(Invalid::Register { register: "export" }));
        // 43.47 kW for 15 minutes is 10,868 Wh at most.
        let over = reading(9_900, 20_000, 0, (25_200, 300));
        assert!(matches!(check(&over), Err(Invalid::OverCapacity { flow: "import", .. })));
        let mut unbalanced = reading(9_900, 100, 0, (5_300, 300));
        unbalanced.generation_wh = 7_000;
        assert!(matches!(check(&unbalanced), Err(Invalid::Unbalanced { imbalance_wh: 6_000, .. })));
        let future = reading(NOW, 100, 0, (5_300, 300));
        assert_eq!(check(&future), Err(Invalid::InTheFuture));
        let mut overflowing = reading(9_900, 100, 0, (u64::MAX, 300));
        overflowing.import_wh = u64::MAX;
        overflowing.consumption_wh = u64::MAX;
        assert!(super::check(&overflowing, None, &capacity, NOW).is_err());
    }
}
