//! The meter: reads the chosen source each interval and turns its cumulative readings into
//! immutable [`PowerSnapshot`]s, with power between readings and the drops and errors so far.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{BusySample, DropReason, Opened, ReadContext, SourceError, SourceKind};
use crate::sys;

/// One zone in a [`PowerSnapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneSample {
    pub zone: String,
    /// Joules since the agent started.
    pub joules: f64,
    /// Average power since the previous reading (none at the first).
    pub watts: Option<f64>,
    /// Where the zone is read, when the source has one place for it: a powercap zone's sysfs
    /// directory, or `aggregated-<zone>` for a zone summed over sockets (as Kepler labels them).
    pub path: Option<String>,
}

/// Node energy at one instant, immutable, handed to the exporter.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerSnapshot {
    pub source: SourceKind,
    pub estimated: bool,
    pub model_family: Option<String>,
    /// Wall-clock time of the reading (Unix seconds), so that consumers can align it.
    pub at_unix: f64,
    /// CLOCK_MONOTONIC of the reading, for intervals.
    pub at: Duration,
    pub zones: Vec<ZoneSample>,
    /// Dropped readings so far, per zone and reason.
    pub dropped: BTreeMap<(String, DropReason), u64>,
    /// Failed file or counter reads so far.
    pub errors: u64,
}

/// Reads the chosen source and keeps the running totals the snapshots report.
pub struct Meter {
    opened: Opened,
    /// Each zone's path, as the source gave it when opened.
    paths: BTreeMap<String, String>,
    /// Per zone, the last complete reading (time, joules) power is measured from.
    baseline: BTreeMap<String, (Duration, f64)>,
    dropped: BTreeMap<(String, DropReason), u64>,
    errors: u64,
}

impl Meter {
    pub fn new(opened: Opened) -> Self {
        Self {
            paths: opened.source.zone_paths().into_iter().collect(),
            opened,
            baseline: BTreeMap::new(),
            dropped: BTreeMap::new(),
            errors: 0,
        }
    }

    pub fn kind(&self) -> SourceKind {
        self.opened.kind
    }

    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Reads the source now, with the kernel counters' busy time for the model. Returns the
    /// snapshot and this read's errors (for the log).
    pub fn read(&mut self, busy: Option<BusySample>) -> (PowerSnapshot, Vec<SourceError>) {
        let ctx = ReadContext {
            at: sys::monotonic_now(),
            busy,
        };
        self.read_with(&ctx)
    }

    /// [`Meter::read`] at a given instant (tests).
    pub fn read_with(&mut self, ctx: &ReadContext) -> (PowerSnapshot, Vec<SourceError>) {
        let at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let r = self.opened.source.read(ctx);
        for (zone, reason) in &r.dropped {
            *self.dropped.entry((zone.clone(), *reason)).or_default() += 1;
        }
        self.errors += r.errors.len() as u64;
        let zones = r
            .zones
            .iter()
            .map(|(zone, joules)| {
                let dropped = r.dropped.iter().any(|(z, _)| z == zone);
                let unread = r.unread.contains(zone);
                ZoneSample {
                    zone: zone.clone(),
                    joules: *joules,
                    watts: self.power(zone, *joules, ctx, dropped, unread),
                    path: self.paths.get(zone).cloned(),
                }
            })
            .collect();
        let snapshot = PowerSnapshot {
            source: self.opened.kind,
            estimated: self.opened.estimated,
            model_family: self.opened.model_family.clone(),
            at_unix,
            at: ctx.at,
            zones,
            dropped: self.dropped.clone(),
            errors: self.errors,
        };
        (snapshot, r.errors)
    }

    /// A zone's average power since its last complete reading, and the new baseline.
    fn power(
        &mut self,
        zone: &str,
        joules: f64,
        ctx: &ReadContext,
        dropped: bool,
        unread: bool,
    ) -> Option<f64> {
        if unread {
            // The energy of an unread counter comes at the next good read: measure that read's
            // power from the last complete one, over both intervals.
            return None;
        }
        // A dropped reading is the new baseline, as it is its counter's.
        let before = self.baseline.insert(zone.to_owned(), (ctx.at, joules));
        match before {
            Some((at, before)) if !dropped => ctx
                .at
                .checked_sub(at)
                .map(|dt| dt.as_secs_f64())
                .filter(|dt| *dt > 0.0)
                .map(|dt| (joules - before) / dt),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{EnergySource, ReadError, SourceReading};

    struct Fake(Vec<SourceReading>);
    impl EnergySource for Fake {
        fn read(&mut self, _: &ReadContext) -> SourceReading {
            self.0.remove(0)
        }
    }

    fn ctx(secs: u64) -> ReadContext {
        ReadContext {
            at: Duration::from_secs(secs),
            busy: None,
        }
    }

    /// The package zone at `joules`; `dropped` or `unread` at this read.
    fn reading(joules: f64, dropped: bool, unread: bool) -> SourceReading {
        SourceReading {
            zones: vec![("package".into(), joules)],
            dropped: if dropped {
                vec![("package".into(), DropReason::Backwards)]
            } else {
                vec![]
            },
            errors: if unread {
                vec![ReadError::Missing { path: "x".into() }.into()]
            } else {
                vec![]
            },
            unread: if unread {
                vec!["package".into()]
            } else {
                vec![]
            },
        }
    }

    fn meter(readings: Vec<SourceReading>) -> Meter {
        Meter::new(Opened::measured(
            SourceKind::Powercap,
            String::new(),
            Box::new(Fake(readings)),
        ))
    }

    #[test]
    fn meter_reports_power_between_readings_and_counts_drops() {
        let mut m = meter(vec![
            reading(0.0, false, false),
            reading(100.0, false, false),
            reading(100.0, true, false),
        ]);
        let (first, _) = m.read_with(&ctx(0));
        assert_eq!(first.zones[0].watts, None);
        let (second, _) = m.read_with(&ctx(2));
        assert_eq!(second.zones[0].watts, Some(50.0));
        let (third, _) = m.read_with(&ctx(3));
        assert_eq!(
            third.zones[0].watts, None,
            "no power from a dropped reading"
        );
        assert_eq!(
            third
                .dropped
                .get(&("package".into(), DropReason::Backwards)),
            Some(&1)
        );
    }

    #[test]
    fn an_unread_counter_makes_no_dip_and_no_spike() {
        let mut m = meter(vec![
            reading(0.0, false, false),
            reading(50.0, false, false),
            reading(50.0, false, true),
            reading(150.0, false, false),
        ]);
        m.read_with(&ctx(0));
        assert_eq!(m.read_with(&ctx(1)).0.zones[0].watts, Some(50.0));
        let (unread, errors) = m.read_with(&ctx(2));
        assert_eq!(unread.zones[0].watts, None);
        assert_eq!((unread.errors, errors.len()), (1, 1));
        // The next good read: 100 J over the two intervals since the last complete reading.
        assert_eq!(m.read_with(&ctx(3)).0.zones[0].watts, Some(50.0));
    }
}
