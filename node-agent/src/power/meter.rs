//! The meter: reads the chosen source each interval (and the whole-platform meter next to it,
//! if one is configured) and turns their cumulative readings into immutable
//! [`PowerSnapshot`]s, with power between readings and the drops and errors so far.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use log::warn;

use super::{
    BusySample, DropReason, Opened, PlatformKind, PlatformLabels, PlatformOpened, ReadContext,
    SourceError, SourceKind, SourceReading,
};
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
    /// The CPU source. The platform meter's zones (`platform`), if one is configured, are
    /// among [`PowerSnapshot::zones`] too: see [`Meter::platform`].
    pub source: SourceKind,
    /// The CPU source is modelled (the platform meter, if any, is always measured).
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

/// The whole-platform meter as of the last read.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformMeter {
    pub kind: PlatformKind,
    /// What it reads (none until it has answered).
    pub labels: Option<PlatformLabels>,
    /// Its last reading was older than its staleness bound: nothing is counted meanwhile.
    pub stale: bool,
}

/// Reads the chosen source and keeps the running totals the snapshots report.
pub struct Meter {
    opened: Opened,
    platform: Option<PlatformOpened>,
    /// A CPU source's zone that the platform meter's replaced, warned about once.
    warned_clash: bool,
    /// The platform meter was stale at the last read.
    platform_stale: bool,
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
            platform: None,
            warned_clash: false,
            platform_stale: false,
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

    /// Reads a whole-platform meter next to the CPU source: its zones join each snapshot.
    pub fn with_platform(mut self, platform: Option<PlatformOpened>) -> Self {
        self.platform = platform;
        self
    }

    /// The whole-platform meter, if one is configured.
    pub fn platform(&self) -> Option<&PlatformOpened> {
        self.platform.as_ref()
    }

    /// The whole-platform meter as of the last read, if one is configured.
    pub fn platform_meter(&self) -> Option<PlatformMeter> {
        self.platform.as_ref().map(|p| PlatformMeter {
            kind: p.kind,
            labels: p.source.platform_labels(),
            stale: self.platform_stale,
        })
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
        let mut r = self.opened.source.read(ctx);
        if let Some(p) = &mut self.platform {
            let pr = p.source.read(ctx);
            self.platform_stale = !pr.stale.is_empty();
            self.warned_clash |= merge(&mut r, pr, !self.warned_clash);
        }
        for (zone, reason) in &r.dropped {
            *self.dropped.entry((zone.clone(), *reason)).or_default() += 1;
        }
        self.errors += r.errors.len() as u64;
        let zones = r
            .zones
            .iter()
            .map(|(zone, joules)| {
                let dropped = r.dropped.iter().any(|(z, _)| z == zone);
                let state = if r.stale.contains(zone) {
                    Freshness::Stale
                } else if r.unread.contains(zone) {
                    Freshness::Unread
                } else if dropped {
                    Freshness::Dropped
                } else {
                    Freshness::Read
                };
                ZoneSample {
                    zone: zone.clone(),
                    joules: *joules,
                    watts: self.power(zone, *joules, ctx, state),
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
        state: Freshness,
    ) -> Option<f64> {
        match state {
            // The energy of an unread counter comes at the next good read: measure that read's
            // power from the last complete one, over both intervals.
            Freshness::Unread => return None,
            // Nothing is counted while a meter is stale: power is measured again from the
            // first fresh reading on.
            Freshness::Stale => {
                self.baseline.remove(zone);
                return None;
            }
            Freshness::Read | Freshness::Dropped => {}
        }
        // A dropped reading is the new baseline, as it is its counter's.
        let before = self.baseline.insert(zone.to_owned(), (ctx.at, joules));
        match before {
            Some((at, before)) if state == Freshness::Read => ctx
                .at
                .checked_sub(at)
                .map(|dt| dt.as_secs_f64())
                .filter(|dt| *dt > 0.0)
                .map(|dt| (joules - before) / dt),
            _ => None,
        }
    }
}

/// How a zone was read this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freshness {
    Read,
    Dropped,
    Unread,
    Stale,
}

/// Adds the platform meter's reading to the CPU source's. A zone both report (an ACPI
/// `power_meter` read by hwmon and a BMC, both `platform`) is the platform meter's. Returns
/// whether there was such a zone, warning about it if `warn_clash`.
fn merge(cpu: &mut SourceReading, platform: SourceReading, warn_clash: bool) -> bool {
    let theirs = |z: &String| platform.zones.iter().any(|(p, _)| p == z);
    let before = cpu.zones.len();
    cpu.zones.retain(|(z, _)| !theirs(z));
    let clash = cpu.zones.len() != before;
    if clash && warn_clash {
        warn!(
            "the CPU power source and the platform meter both report a zone named {}: the \
             platform meter's is used",
            platform
                .zones
                .iter()
                .map(|(z, _)| z.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    cpu.dropped.retain(|(z, _)| !theirs(z));
    cpu.unread.retain(|z| !theirs(z));
    cpu.zones.extend(platform.zones);
    cpu.zones.sort_by(|a, b| a.0.cmp(&b.0));
    cpu.dropped.extend(platform.dropped);
    cpu.unread.extend(platform.unread);
    cpu.errors.extend(platform.errors);
    cpu.stale.extend(platform.stale);
    clash
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
            stale: vec![],
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

    /// A platform meter at `joules`, stale or not.
    fn platform(joules: f64, stale: bool) -> SourceReading {
        SourceReading {
            zones: vec![("platform".into(), joules)],
            stale: if stale {
                vec!["platform".into()]
            } else {
                vec![]
            },
            ..SourceReading::default()
        }
    }

    #[test]
    fn the_platform_zone_joins_the_cpu_zones_and_a_stale_meter_makes_no_spike() {
        let cpu = (0..6)
            .map(|i| reading(10.0 * i as f64, false, false))
            .collect();
        let mut m = meter(cpu).with_platform(Some(PlatformOpened {
            kind: crate::power::PlatformKind::Redfish,
            description: String::new(),
            answered: true,
            source: Box::new(Fake(vec![
                platform(0.0, false),
                platform(200.0, false),
                platform(200.0, true),
                platform(200.0, true),
                // The first fresh reading after the gap: a new baseline, nothing added.
                platform(200.0, false),
                platform(400.0, false),
            ])),
        }));
        let zones = |s: &PowerSnapshot| -> Vec<(String, f64, Option<f64>)> {
            s.zones
                .iter()
                .map(|z| (z.zone.clone(), z.joules, z.watts))
                .collect()
        };
        m.read_with(&ctx(0));
        let (s, _) = m.read_with(&ctx(1));
        assert_eq!(
            s.source,
            SourceKind::Powercap,
            "the CPU source names the snapshot"
        );
        assert_eq!(
            zones(&s),
            [
                ("package".into(), 10.0, Some(10.0)),
                ("platform".into(), 200.0, Some(200.0))
            ]
        );
        assert!(!m.platform_meter().unwrap().stale);
        for t in [2, 62] {
            let (s, _) = m.read_with(&ctx(t));
            assert!(m.platform_meter().unwrap().stale);
            assert_eq!(s.zones[1].watts, None, "stale at {t} s");
            assert_eq!(s.zones[1].joules, 200.0);
            assert!(s.zones[0].watts.is_some(), "the CPU zones go on");
        }
        assert_eq!(m.read_with(&ctx(63)).0.zones[1].watts, None);
        assert_eq!(m.read_with(&ctx(64)).0.zones[1].watts, Some(200.0));
    }

    #[test]
    fn the_platform_meters_zone_replaces_a_cpu_zone_of_the_same_name() {
        let mut cpu = reading(5.0, false, false);
        cpu.zones.push(("platform".into(), 7.0));
        let mut r = cpu;
        assert!(merge(&mut r, platform(100.0, false), false));
        assert_eq!(
            r.zones,
            [("package".into(), 5.0), ("platform".into(), 100.0)]
        );
    }
}
