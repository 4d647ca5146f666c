//! One hardware energy counter turned into joules since the agent started: wraparound handled,
//! implausible readings dropped and counted, never exported as a spike.

use std::time::Duration;

/// Why a reading was dropped (the `reason` label of `wattlet_power_readings_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Lower than the previous reading, and not a wrap the elapsed time can explain.
    Backwards,
    /// More energy than the power ceiling allows over the elapsed time.
    AboveCeiling,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Backwards => "backwards",
            DropReason::AboveCeiling => "above_ceiling",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// The first reading: it sets the baseline and adds nothing.
    Baseline,
    /// Energy added, in joules (`wrapped` if the counter wrapped since the last reading).
    Added { joules: f64, wrapped: bool },
    /// The reading was dropped; the next one is measured from it.
    Dropped(DropReason),
}

/// A cumulative counter in raw units (µJ for powercap and hwmon, PMU counts for perf).
#[derive(Clone, Debug)]
pub struct EnergyCounter {
    /// Joules per raw unit.
    joules_per_unit: f64,
    /// The highest value before the counter starts again from 0 (powercap's
    /// `max_energy_range_uj`); `None` for counters that do not wrap in practice (64-bit).
    max_raw: Option<u64>,
    last: Option<(u64, Duration)>,
    total_j: f64,
}

/// Elapsed time used for the ceiling check is at least this, so that two reads close together
/// cannot turn one update of the hardware counter (~1 ms for RAPL) into an absurd power.
const MIN_ELAPSED: Duration = Duration::from_millis(10);

impl EnergyCounter {
    pub fn new(joules_per_unit: f64, max_raw: Option<u64>) -> Self {
        Self {
            joules_per_unit,
            max_raw,
            last: None,
            total_j: 0.0,
        }
    }

    /// Joules counted since the first reading.
    pub fn joules(&self) -> f64 {
        self.total_j
    }

    /// Takes a reading made at `at` (monotonic). `ceiling_w` bounds the power one counter can
    /// plausibly show (a socket's package, say): a delta above it is dropped, not added.
    pub fn update(&mut self, raw: u64, at: Duration, ceiling_w: f64) -> Update {
        let Some((last, last_at)) = self.last.replace((raw, at)) else {
            return Update::Baseline;
        };
        let (delta, wrapped) = if raw >= last {
            (raw - last, false)
        } else {
            match self.max_raw {
                // The counter runs 0..=max and then starts again from 0: this is what it counted
                // up to max, then from 0 to raw (the step from max to 0 is one unit, below the
                // counter's resolution, so it is not counted).
                Some(max) if last <= max => ((max - last).saturating_add(raw), true),
                _ => return Update::Dropped(DropReason::Backwards),
            }
        };
        let joules = delta as f64 * self.joules_per_unit;
        let elapsed = at.saturating_sub(last_at).max(MIN_ELAPSED).as_secs_f64();
        if joules / elapsed > ceiling_w {
            return Update::Dropped(if wrapped {
                // A wrap that would mean more than the ceiling is a counter that went backwards.
                DropReason::Backwards
            } else {
                DropReason::AboveCeiling
            });
        }
        self.total_j += joules;
        Update::Added { joules, wrapped }
    }
}

/// A power sensor (watts) integrated into joules with the trapezoid rule.
#[derive(Clone, Debug, Default)]
pub struct PowerIntegrator {
    last: Option<(f64, Duration)>,
    total_j: f64,
}

impl PowerIntegrator {
    pub fn joules(&self) -> f64 {
        self.total_j
    }

    /// Forgets the last sample: the next one is a new baseline, and the time between is not
    /// integrated (a meter that stopped answering: no energy is made up for the gap).
    pub fn gap(&mut self) {
        self.last = None;
    }

    pub fn update(&mut self, watts: f64, at: Duration, ceiling_w: f64) -> Update {
        if !watts.is_finite() || watts < 0.0 || watts > ceiling_w {
            // Keep the last good sample: the next interval integrates from it.
            return Update::Dropped(DropReason::AboveCeiling);
        }
        let Some((last_w, last_at)) = self.last.replace((watts, at)) else {
            return Update::Baseline;
        };
        let dt = at.saturating_sub(last_at).as_secs_f64();
        let joules = (last_w + watts) / 2.0 * dt;
        self.total_j += joules;
        Update::Added {
            joules,
            wrapped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::JOULES_PER_MICROJOULE as UJ;
    use proptest::prelude::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn counts_deltas_from_the_first_reading() {
        let mut c = EnergyCounter::new(UJ, Some(1_000_000_000));
        assert_eq!(c.update(5_000_000, s(0.0), 1000.0), Update::Baseline);
        assert_eq!(
            c.update(15_000_000, s(1.0), 1000.0),
            Update::Added {
                joules: 10.0,
                wrapped: false
            }
        );
        assert_eq!(c.joules(), 10.0);
    }

    #[test]
    fn wrap_is_exact() {
        // max 262143.999 J; 2 J before the top, then 3 J after it: 5 J in all.
        let max = 262_143_999_999;
        let mut c = EnergyCounter::new(UJ, Some(max));
        c.update(max - 2_000_000, s(0.0), 1000.0);
        assert_eq!(
            c.update(3_000_000, s(1.0), 1000.0),
            Update::Added {
                joules: 5.0,
                wrapped: true
            }
        );
        assert_eq!(c.joules(), 5.0);
    }

    #[test]
    fn backwards_jump_is_dropped_and_the_next_reading_counts_from_it() {
        let mut c = EnergyCounter::new(UJ, Some(262_143_999_999));
        c.update(100_000_000, s(0.0), 1000.0);
        // 1 J backwards: as a wrap it would be 262 kJ in one second.
        assert_eq!(
            c.update(99_000_000, s(1.0), 1000.0),
            Update::Dropped(DropReason::Backwards)
        );
        assert_eq!(
            c.update(109_000_000, s(2.0), 1000.0),
            Update::Added {
                joules: 10.0,
                wrapped: false
            }
        );
        assert_eq!(c.joules(), 10.0);
    }

    #[test]
    fn no_wrap_range_means_backwards_is_dropped() {
        let mut c = EnergyCounter::new(UJ, None);
        c.update(10, s(0.0), 1000.0);
        assert_eq!(
            c.update(5, s(1.0), 1000.0),
            Update::Dropped(DropReason::Backwards)
        );
    }

    #[test]
    fn spike_above_the_ceiling_is_dropped() {
        // The 300 kW seen at VM boot: 300 kJ in one second.
        let mut c = EnergyCounter::new(UJ, Some(u64::MAX));
        c.update(0, s(0.0), 1000.0);
        assert_eq!(
            c.update(300_000_000_000, s(1.0), 1000.0),
            Update::Dropped(DropReason::AboveCeiling)
        );
        assert_eq!(c.joules(), 0.0);
    }

    #[test]
    fn integrates_power_with_the_trapezoid_rule() {
        let mut p = PowerIntegrator::default();
        assert_eq!(p.update(50.0, s(0.0), 1000.0), Update::Baseline);
        p.update(70.0, s(2.0), 1000.0);
        assert!((p.joules() - 120.0).abs() < 1e-9);
        assert_eq!(
            p.update(5000.0, s(3.0), 1000.0),
            Update::Dropped(DropReason::AboveCeiling)
        );
        p.update(70.0, s(4.0), 1000.0);
        assert!((p.joules() - 260.0).abs() < 1e-9, "{}", p.joules());
        // A gap of a minute: not integrated, the next sample is a baseline.
        p.gap();
        assert_eq!(p.update(80.0, s(64.0), 1000.0), Update::Baseline);
        p.update(80.0, s(65.0), 1000.0);
        assert!((p.joules() - 340.0).abs() < 1e-9, "{}", p.joules());
    }

    proptest! {
        /// Any sequence of plausible increments, wrapping any number of times, sums exactly.
        #[test]
        fn wrapping_counter_sums_its_increments(
            start in 0u64..1_000_000,
            steps in proptest::collection::vec(0u64..400_000, 1..200),
        ) {
            let max = 999_999u64; // values 0..=999_999; a step from max to 0 counts 0
            let mut c = EnergyCounter::new(1.0, Some(max));
            let mut raw = start.min(max);
            c.update(raw, s(0.0), 1e12);
            let mut expected = 0u64;
            for (i, step) in steps.iter().enumerate() {
                // Advance by `step` units on the 0..=max ring, where max → 0 is free.
                let to_top = max - raw;
                raw = if *step <= to_top { raw + step } else { step - to_top };
                expected += step;
                let u = c.update(raw, s(i as f64 + 1.0), 1e12);
                prop_assert!(matches!(u, Update::Added { .. }), "{u:?}");
            }
            prop_assert_eq!(c.joules(), expected as f64);
        }
    }
}
