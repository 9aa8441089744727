//! Meters: one trait over every source of energy registers (simulated home, SunSpec over Modbus TCP, MQTT), and
//! the accounting that turns a meter's lifetime registers into per-interval readings.

use std::future::Future;

use protocol::message::{MeterSource, Reading};
use protocol::types::MeterId;

/// A meter's lifetime registers at one instant, Wh. Every register only grows; a register that goes back means
/// the meter was reset or replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Wall time of the sample, ms since the Unix epoch.
    pub at_ms: u64,
    /// Energy taken from the grid.
    pub import_wh: u64,
    /// Energy fed into the grid.
    pub export_wh: u64,
    /// Energy generated on site.
    pub generation_wh: u64,
    /// Energy used on site.
    pub consumption_wh: u64,
    /// Whether the grid connection is live, for meters that tell (a voltage at the connection point); `None`
    /// when the meter does not say.
    pub grid_present: Option<bool>,
}

/// The lowest voltage at the connection point at which the grid counts as present (a 230 V grid browns out well
/// above it; a lost grid reads near 0).
pub const GRID_VOLTS_MIN: u64 = 100;

/// Why a meter gave no sample.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The meter could not be reached or did not answer in time.
    #[error("meter unreachable: {0}")]
    Unreachable(String),
    /// The meter answered with something kos cannot read.
    #[error("meter answer unreadable: {0}")]
    Unreadable(String),
    /// The meter has not reported every register it is configured for yet.
    #[error("meter not ready: {0}")]
    NotReady(String),
}

/// A source of lifetime energy registers. The node polls it; implementations do their own IO.
pub trait Meter {
    /// Where the meter's readings come from (recorded in each reading).
    fn source(&self) -> MeterSource;

    /// The registers at wall time `now_ms`.
    fn sample(&mut self, now_ms: u64) -> impl Future<Output = Result<Sample, Error>> + Send;
}

impl Meter for crate::home::Home {
    fn source(&self) -> MeterSource {
        MeterSource::Simulated
    }

    fn sample(&mut self, now_ms: u64) -> impl Future<Output = Result<Sample, Error>> + Send {
        self.advance(now_ms);
        std::future::ready(Ok(crate::home::Home::sample(self)))
    }
}

/// One closed interval of a meter: energy in each direction and the registers at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Start, Unix seconds (a multiple of `interval_s`).
    pub start_s: u64,
    pub interval_s: u32,
    pub import_wh: u64,
    pub export_wh: u64,
    pub generation_wh: u64,
    pub consumption_wh: u64,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
    /// Counting began at the interval's boundary (with the sample that closed the interval before). `false` for
    /// the first interval after the meter is started, after a gap or after a reset: its energy is real and is
    /// published, but it covers only part of the interval, so it says nothing about a whole interval's flows.
    pub whole: bool,
}

impl Interval {
    /// The reading a meter's owner signs for this interval.
    #[must_use]
    pub fn reading(&self, meter: MeterId, source: MeterSource) -> Reading {
        Reading {
            meter,
            interval_start_s: self.start_s,
            interval_s: self.interval_s,
            import_wh: self.import_wh,
            export_wh: self.export_wh,
            generation_wh: self.generation_wh,
            consumption_wh: self.consumption_wh,
            import_counter_wh: self.import_counter_wh,
            export_counter_wh: self.export_counter_wh,
            source,
            device: Default::default(),
        }
    }
}

/// What happened to a sample given to [`Intervals::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// The sample is inside the current interval.
    Inside,
    /// The sample closed an interval: sign and publish its reading.
    Closed(Interval),
    /// The sample came after one or more whole intervals without samples: the energy of the gap cannot be placed
    /// in an interval, so no reading is made for it; counting restarts here.
    Gap { missed: u64 },
    /// A register went back (meter reset or replaced); counting restarts from this sample.
    Reset,
    /// The sample is older than the last one; it is ignored.
    Stale,
}

/// Turns a meter's successive samples into per-interval energy. The first sample at or after an interval
/// boundary closes the interval before it, so the energy between the last sample before the boundary and that
/// sample goes to the closing interval: sampling a few seconds apart, the error is those few seconds.
#[derive(Debug, Clone)]
pub struct Intervals {
    interval_s: u32,
    /// The registers at the start of the current interval and that interval's start.
    start: Option<(u64, Sample)>,
    /// Whether counting in the current interval began at its boundary.
    whole: bool,
    last: Option<Sample>,
}

impl Intervals {
    /// Intervals of `interval_s` seconds (more than 0) aligned to the Unix epoch.
    #[must_use]
    pub fn new(interval_s: u32) -> Intervals {
        Intervals { interval_s: interval_s.max(1), start: None, whole: false, last: None }
    }

    #[must_use]
    pub fn interval_s(&self) -> u32 {
        self.interval_s
    }

    fn interval_of(&self, at_ms: u64) -> u64 {
        let interval_s = u64::from(self.interval_s);
        at_ms / 1000 / interval_s * interval_s
    }

    /// Takes the next sample.
    pub fn push(&mut self, sample: Sample) -> Push {
        if let Some(last) = self.last {
            if sample.at_ms < last.at_ms {
                return Push::Stale;
            }
            let back = sample.import_wh < last.import_wh
                || sample.export_wh < last.export_wh
                || sample.generation_wh < last.generation_wh
                || sample.consumption_wh < last.consumption_wh;
            if back {
                self.last = Some(sample);
                self.start = Some((self.interval_of(sample.at_ms), sample));
                self.whole = false;
                return Push::Reset;
            }
        }
        self.last = Some(sample);
        let current = self.interval_of(sample.at_ms);
        let Some((start_s, start)) = self.start else {
            self.start = Some((current, sample));
            return Push::Inside;
        };
        if current == start_s {
            return Push::Inside;
        }
        self.start = Some((current, sample));
        let next_s = start_s.saturating_add(u64::from(self.interval_s));
        let whole = std::mem::replace(&mut self.whole, current == next_s);
        if current != next_s {
            return Push::Gap { missed: (current - next_s) / u64::from(self.interval_s) };
        }
        Push::Closed(Interval {
            start_s,
            interval_s: self.interval_s,
            import_wh: sample.import_wh - start.import_wh,
            export_wh: sample.export_wh - start.export_wh,
            generation_wh: sample.generation_wh - start.generation_wh,
            consumption_wh: sample.consumption_wh - start.consumption_wh,
            import_counter_wh: sample.import_wh,
            export_counter_wh: sample.export_wh,
            whole,
        })
    }
}

/// A consumption register for meters that have none: generation + import − export, offset so that it starts at 0
/// or above, and held where it would go back (a battery charging makes the sum fall).
#[derive(Debug, Clone, Default)]
pub struct Derived {
    offset: Option<i128>,
    last: u64,
}

impl Derived {
    /// The derived consumption register for this sample, Wh.
    pub fn consumption(&mut self, sample: &Sample) -> u64 {
        let raw = i128::from(sample.generation_wh) + i128::from(sample.import_wh) - i128::from(sample.export_wh);
        let offset = *self.offset.get_or_insert((-raw).max(0));
        let value = u64::try_from(raw + offset).unwrap_or(0).max(self.last);
        self.last = value;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: u64, import_wh: u64, export_wh: u64) -> Sample {
        Sample {
            at_ms: at_s * 1000,
            import_wh,
            export_wh,
            generation_wh: export_wh * 2,
            consumption_wh: import_wh,
            grid_present: None,
        }
    }

    #[test]
    fn samples_become_intervals() {
        let mut intervals = Intervals::new(900);
        assert_eq!(intervals.push(sample(9_001, 100, 0)), Push::Inside);
        assert_eq!(intervals.push(sample(9_500, 150, 10)), Push::Inside);
        let Push::Closed(interval) = intervals.push(sample(9_902, 180, 30)) else { panic!("closes") };
        assert_eq!(
            interval,
            Interval {
                start_s: 9_000,
                interval_s: 900,
                import_wh: 80,
                export_wh: 30,
                generation_wh: 60,
                consumption_wh: 80,
                import_counter_wh: 180,
                export_counter_wh: 30,
                // Counting began at 9 001 s, after the boundary.
                whole: false,
            }
        );
        assert_eq!(intervals.push(sample(10_000, 190, 30)), Push::Inside);
        assert_eq!(intervals.push(sample(9_990, 190, 30)), Push::Stale);
        // The next interval is counted from the sample that closed the one before: whole.
        assert!(
            matches!(intervals.push(sample(10_801, 200, 30)), Push::Closed(i) if i.start_s == 9_900 && i.import_wh == 20 && i.whole)
        );
        // A silent meter: no reading for the intervals it missed.
        assert_eq!(intervals.push(sample(13_000, 400, 40)), Push::Gap { missed: 1 });
        assert!(
            matches!(intervals.push(sample(13_500, 410, 40)), Push::Closed(i) if i.start_s == 12_600 && i.import_wh == 10 && !i.whole)
        );
        // A reset meter restarts counting.
        assert!(matches!(intervals.push(sample(14_400, 420, 40)), Push::Closed(i) if i.whole));
        assert_eq!(intervals.push(sample(14_500, 5, 0)), Push::Reset);
        assert!(
            matches!(intervals.push(sample(15_300, 25, 0)), Push::Closed(i) if i.start_s == 14_400 && i.import_wh == 20 && !i.whole)
        );
    }
}
