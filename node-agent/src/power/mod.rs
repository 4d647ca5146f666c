//! Power sources: node energy per zone, measured (perf power PMU, powercap RAPL, hwmon) or, on
//! nodes without sensors, modelled and labelled as estimated.
//!
//! Each source sits behind [`EnergySource`]: read the cumulative energy per zone since it was
//! opened. [`select`] probes them in the configured order; [`Meter`] turns the chosen one's
//! readings into [`PowerSnapshot`]s for the exporter. Every host path is below `--path.sysfs` or
//! `--path.procfs`, so fixture trees stand in for the host in tests.

pub mod counter;
pub mod hwmon;
pub mod model;
pub mod perf;
pub mod powercap;

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use counter::{DropReason, EnergyCounter, PowerIntegrator, Update};
pub use model::ModelOverrides;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum SourceKind {
    /// The perf `power` PMU (RAPL through perf_event_open; needs CAP_PERFMON, not root).
    Perf,
    /// RAPL through /sys/class/powercap (energy_uj is root-only since CVE-2020-8694).
    Powercap,
    /// hwmon energy counters, or power sensors integrated over time.
    Hwmon,
    /// No sensor: a documented power model driven by CPU busy time.
    Model,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Perf,
        SourceKind::Powercap,
        SourceKind::Hwmon,
        SourceKind::Model,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Perf => "perf",
            SourceKind::Powercap => "powercap",
            SourceKind::Hwmon => "hwmon",
            SourceKind::Model => "model",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Busy CPU time of all CPUs since the kernel counters started, and when it was read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BusySample {
    /// CLOCK_MONOTONIC of the per-CPU read.
    pub at: Duration,
    pub seconds: f64,
}

/// What a source may use at each read besides its own files.
#[derive(Clone, Copy, Debug)]
pub struct ReadContext {
    /// CLOCK_MONOTONIC just before the source's files are read.
    pub at: Duration,
    /// From the kernel counters, if they could be read this interval (the model needs it).
    pub busy: Option<BusySample>,
}

/// One read of a source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceReading {
    /// Joules per zone since the source was opened, sorted by zone.
    pub zones: Vec<(String, f64)>,
    /// Readings dropped at this read as implausible.
    pub dropped: Vec<(String, DropReason)>,
    /// Zones with a counter that could not be read at this read: their energy is picked up at the
    /// next good read, so no power is reported for them now.
    pub unread: Vec<String>,
    /// Files or counters that could not be read at this read, each with its path and the fix.
    pub errors: Vec<String>,
}

pub trait EnergySource: Send {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading;
}

/// An opened source, ready to read.
pub struct Opened {
    pub kind: SourceKind,
    /// Modelled, not measured.
    pub estimated: bool,
    /// What was found: zones, sockets, sensors or coefficients.
    pub description: String,
    /// For the model: the coefficient set in use (a CPU family, or `average`).
    pub model_family: Option<String>,
    /// Idle power per zone, where the source knows it (the model does; sensors do not).
    pub idle_watts: Vec<(String, f64)>,
    pub source: Box<dyn EnergySource>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct PowerOptions {
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    /// Sources in order of preference.
    pub preference: Vec<SourceKind>,
    /// Use this source and no other.
    pub forced: Option<SourceKind>,
    /// The most power one counter (a socket's zone, one sensor) can plausibly show, in watts.
    pub ceiling_watts: f64,
    pub model: ModelOverrides,
}

impl Default for PowerOptions {
    fn default() -> Self {
        Self {
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
            preference: SourceKind::ALL.to_vec(),
            forced: None,
            ceiling_watts: DEFAULT_CEILING_WATTS,
            model: ModelOverrides::default(),
        }
    }
}

/// Far above any one CPU socket or memory domain, far below the spikes of a misread counter.
pub const DEFAULT_CEILING_WATTS: f64 = 1000.0;

/// Whole-platform meters (RAPL psys, an ACPI power meter) see the whole machine, GPUs included:
/// their ceiling is this many times the per-counter one.
pub const PLATFORM_CEILING_FACTOR: f64 = 20.0;

/// The ceiling for one counter of `zone`.
pub fn ceiling_for(zone: &str, ceiling_watts: f64) -> f64 {
    match zone {
        "psys" | "platform" => ceiling_watts * PLATFORM_CEILING_FACTOR,
        _ => ceiling_watts,
    }
}

pub fn open(kind: SourceKind, opts: &PowerOptions) -> Result<Opened, String> {
    match kind {
        SourceKind::Perf => perf::open(&opts.sysfs, opts.ceiling_watts),
        SourceKind::Powercap => powercap::open(&opts.sysfs, opts.ceiling_watts),
        SourceKind::Hwmon => hwmon::open(&opts.sysfs, opts.ceiling_watts),
        SourceKind::Model => model::open(&opts.procfs, &opts.model),
    }
}

/// What probing one source found.
#[derive(Debug)]
pub struct Probe {
    pub kind: SourceKind,
    /// What it found, or why it cannot be used here.
    pub outcome: Result<String, String>,
}

/// Every source probed, and the one chosen with the reason.
#[derive(Debug)]
pub struct Selection {
    pub probes: Vec<Probe>,
    pub chosen: Option<Opened>,
    /// Why the chosen source was chosen, or why none was.
    pub why: String,
}

/// Probes every source (the preferred ones in order, then the rest, for `wattlet check`) and
/// chooses the forced source, or else the first preferred one that works.
pub fn select(opts: &PowerOptions) -> Selection {
    let mut order: Vec<SourceKind> = Vec::new();
    for k in opts
        .forced
        .iter()
        .chain(&opts.preference)
        .chain(&SourceKind::ALL)
    {
        if !order.contains(k) {
            order.push(*k);
        }
    }
    let mut probes = Vec::new();
    let mut chosen: Option<Opened> = None;
    for kind in order {
        let eligible = match opts.forced {
            Some(f) => f == kind,
            None => opts.preference.contains(&kind),
        };
        match open(kind, opts) {
            Ok(o) => {
                probes.push(Probe {
                    kind,
                    outcome: Ok(o.description.clone()),
                });
                if eligible && chosen.is_none() {
                    chosen = Some(o);
                }
            }
            Err(why) => probes.push(Probe {
                kind,
                outcome: Err(why),
            }),
        }
    }
    let names = |ks: &[SourceKind]| ks.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    let why = match (&chosen, opts.forced) {
        (Some(o), Some(_)) => format!("{} was forced with --power-source", o.kind),
        (None, Some(f)) => format!("{f} was forced with --power-source and cannot be used here"),
        (Some(o), None) => {
            let skipped: Vec<SourceKind> = opts
                .preference
                .iter()
                .copied()
                .take_while(|k| *k != o.kind)
                .collect();
            if skipped.is_empty() {
                format!("{} is the first preference (--power.sources)", o.kind)
            } else {
                format!(
                    "{} is the first of --power.sources that works here ({} cannot be used)",
                    o.kind,
                    names(&skipped)
                )
            }
        }
        (None, None) => format!(
            "none of --power.sources ({}) can be used here",
            names(&opts.preference)
        ),
    };
    Selection {
        probes,
        chosen,
        why,
    }
}

/// One zone in a [`PowerSnapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneSample {
    pub zone: String,
    /// Joules since the agent started.
    pub joules: f64,
    /// Average power since the previous reading (none at the first).
    pub watts: Option<f64>,
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
    /// Per zone, the last complete reading (time, joules) power is measured from.
    baseline: BTreeMap<String, (Duration, f64)>,
    dropped: BTreeMap<(String, DropReason), u64>,
    errors: u64,
}

impl Meter {
    pub fn new(opened: Opened) -> Self {
        Self {
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
    pub fn read(&mut self, busy: Option<BusySample>) -> (PowerSnapshot, Vec<String>) {
        let ctx = ReadContext {
            at: crate::kernel::snapshot::monotonic_now(),
            busy,
        };
        self.read_with(&ctx)
    }

    /// [`Meter::read`] at a given instant (tests).
    pub fn read_with(&mut self, ctx: &ReadContext) -> (PowerSnapshot, Vec<String>) {
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
                let watts = match self.baseline.get(zone) {
                    // The energy of an unread counter comes at the next good read: measure that
                    // read's power from the last complete one, over both intervals.
                    _ if unread => None,
                    Some((at, before)) if !dropped => ctx
                        .at
                        .checked_sub(*at)
                        .map(|dt| dt.as_secs_f64())
                        .filter(|dt| *dt > 0.0)
                        .map(|dt| (joules - before) / dt),
                    _ => None,
                };
                if !unread {
                    // A dropped reading is the new baseline, as it is its counter's.
                    self.baseline.insert(zone.clone(), (ctx.at, *joules));
                }
                ZoneSample {
                    zone: zone.clone(),
                    joules: *joules,
                    watts,
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
}

/// Sums counters of the same zone (the sockets of a two-socket node, say), sorted by zone.
pub fn sum_by_zone<'a>(counters: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<(String, f64)> {
    let mut by_zone: BTreeMap<&str, f64> = BTreeMap::new();
    for (zone, j) in counters {
        *by_zone.entry(zone).or_default() += j;
    }
    by_zone
        .into_iter()
        .map(|(z, j)| (z.to_owned(), j))
        .collect()
}

/// A zone name from host text: lowercase ASCII letters and digits, anything else `_`.
pub fn zone_label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The distinct zone names of a source's counters, sorted, for its description.
pub fn zone_list<'a>(zones: impl IntoIterator<Item = &'a str>) -> String {
    let set: std::collections::BTreeSet<&str> = zones.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}

/// Reads a sysfs attribute as a trimmed string, with an error that names the file and the fix.
pub fn read_attr(path: &Path) -> Result<String, String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| describe_read_error(path, &e))
}

/// Reads a sysfs attribute holding an unsigned integer.
pub fn read_u64(path: &Path) -> Result<u64, String> {
    let text = read_attr(path)?;
    text.parse().map_err(|_| {
        format!(
            "{}: {text:?} is not a non-negative integer (a broken driver or a wrong --path.sysfs?)",
            path.display()
        )
    })
}

pub fn describe_read_error(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!("{} is missing", path.display()),
        io::ErrorKind::PermissionDenied if path.file_name().is_some_and(|n| n == "energy_uj") => {
            format!(
                "{} is readable only by root since CVE-2020-8694: run the agent as root or with \
                 CAP_DAC_READ_SEARCH, or use the perf power PMU (--power-source perf, needs \
                 CAP_PERFMON only)",
                path.display()
            )
        }
        io::ErrorKind::PermissionDenied => format!(
            "{} is not readable by this user: run the agent as root or with CAP_DAC_READ_SEARCH",
            path.display()
        ),
        _ => format!("reading {}: {e}", path.display()),
    }
}

/// Names under `dir`, sorted naturally (`hwmon2` before `hwmon10`), or why the directory cannot
/// be listed.
pub fn list_dir(dir: &Path) -> Result<Vec<String>, io::Error> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_by_key(|a| natural_key(a));
    Ok(names)
}

/// `intel-rapl:10` sorts after `intel-rapl:2`.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            errors: if unread { vec!["x".into()] } else { vec![] },
            unread: if unread {
                vec!["package".into()]
            } else {
                vec![]
            },
        }
    }

    fn meter(readings: Vec<SourceReading>) -> Meter {
        Meter::new(Opened {
            kind: SourceKind::Powercap,
            estimated: false,
            description: String::new(),
            model_family: None,
            idle_watts: Vec::new(),
            source: Box::new(Fake(readings)),
        })
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

    #[test]
    fn natural_order() {
        let mut v = vec![
            "intel-rapl:10",
            "intel-rapl:2",
            "intel-rapl:1:0",
            "intel-rapl:1",
        ];
        v.sort_by_key(|a| natural_key(a));
        assert_eq!(
            v,
            [
                "intel-rapl:1",
                "intel-rapl:1:0",
                "intel-rapl:2",
                "intel-rapl:10"
            ]
        );
    }

    #[test]
    fn sums_same_named_zones() {
        assert_eq!(
            sum_by_zone([("package", 1.0), ("dram", 0.5), ("package", 2.0)]),
            vec![("dram".to_owned(), 0.5), ("package".to_owned(), 3.0)]
        );
    }
}

/// Fixture trees for the sources' tests: files written under a fresh temporary directory,
/// removed on drop.
#[cfg(test)]
pub(crate) mod fixture {
    use std::{
        fs,
        path::{Path, PathBuf},
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::{ReadContext, SourceReading};

    pub struct Tree(pub PathBuf);

    /// A read at `secs` on the monotonic clock, without kernel counters.
    pub fn at(secs: f64) -> ReadContext {
        ReadContext {
            at: std::time::Duration::from_secs_f64(secs),
            busy: None,
        }
    }

    /// The zones of a reading, for comparing with a literal.
    pub fn zones(r: &SourceReading) -> Vec<(&str, f64)> {
        r.zones.iter().map(|(z, j)| (z.as_str(), *j)).collect()
    }

    impl Tree {
        pub fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wattlet-fixture-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        pub fn root(&self) -> &Path {
            &self.0
        }

        /// Writes `contents` (plus a newline, as sysfs does) at `rel`, creating directories.
        pub fn file(&self, rel: &str, contents: &str) -> &Self {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("{contents}\n")).unwrap();
            self
        }

        pub fn remove(&self, rel: &str) {
            fs::remove_file(self.0.join(rel)).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod selection_tests {
    use super::{fixture::Tree, *};

    fn powercap_tree() -> Tree {
        let t = Tree::new();
        t.file("class/powercap/intel-rapl:0/name", "package-0")
            .file("class/powercap/intel-rapl:0/energy_uj", "1")
            .file(
                "class/powercap/intel-rapl:0/max_energy_range_uj",
                "262143328850",
            );
        t
    }

    fn opts(sysfs: &Path) -> PowerOptions {
        PowerOptions {
            sysfs: sysfs.to_owned(),
            ..PowerOptions::default()
        }
    }

    #[test]
    fn first_working_preference_is_chosen() {
        let t = powercap_tree();
        let s = select(&opts(t.root()));
        assert_eq!(s.chosen.as_ref().unwrap().kind, SourceKind::Powercap);
        assert_eq!(
            s.why,
            "powercap is the first of --power.sources that works here (perf cannot be used)"
        );
        let kinds: Vec<_> = s
            .probes
            .iter()
            .map(|p| (p.kind, p.outcome.is_ok()))
            .collect();
        assert_eq!(
            kinds,
            [
                (SourceKind::Perf, false),
                (SourceKind::Powercap, true),
                (SourceKind::Hwmon, false),
                (SourceKind::Model, true)
            ]
        );
    }

    #[test]
    fn no_sensor_falls_back_to_the_model() {
        let t = Tree::new();
        let s = select(&opts(t.root()));
        let chosen = s.chosen.unwrap();
        assert_eq!(chosen.kind, SourceKind::Model);
        assert!(chosen.estimated);
        assert!(
            s.why.contains("(perf, powercap, hwmon cannot be used)"),
            "{}",
            s.why
        );
    }

    #[test]
    fn forced_and_restricted() {
        let t = powercap_tree();
        let forced = PowerOptions {
            forced: Some(SourceKind::Model),
            ..opts(t.root())
        };
        let s = select(&forced);
        assert_eq!(s.chosen.unwrap().kind, SourceKind::Model);
        assert_eq!(s.why, "model was forced with --power-source");
        assert_eq!(s.probes[0].kind, SourceKind::Model);

        let forced = PowerOptions {
            forced: Some(SourceKind::Hwmon),
            ..opts(t.root())
        };
        let s = select(&forced);
        assert!(s.chosen.is_none());
        assert!(s.why.contains("hwmon was forced"));

        let only = PowerOptions {
            preference: vec![SourceKind::Perf, SourceKind::Hwmon],
            ..opts(t.root())
        };
        let s = select(&only);
        assert!(s.chosen.is_none());
        assert_eq!(
            s.why,
            "none of --power.sources (perf, hwmon) can be used here"
        );
        assert_eq!(
            s.probes.len(),
            4,
            "every source is still probed for the report"
        );
    }
}
