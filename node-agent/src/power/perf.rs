//! RAPL through the perf `power` PMU: `<sysfs>/bus/event_source/devices/power/{type,cpumask,
//! events/energy-*,format/*}`. Counts are 64-bit (no wrap) in units of each event's `.scale`
//! joules; one CPU per socket, from the PMU's cpumask. Opening the events needs CAP_PERFMON (or
//! kernel.perf_event_paranoid ≤ 0), not root: the least-privilege way to read RAPL.

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use super::{
    EnergyCounter, EnergySource, Opened, ReadContext, ReadError, SourceKind, SourceReading, Update,
    error::joined,
    sysfs::{list_dir, read_attr, read_u64},
    zone,
};
use crate::sys;

/// Why the power PMU cannot be used, or one of its events cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "no power PMU at {}: the CPU or the hypervisor exposes no RAPL counters to perf (most \
         VMs), or the kernel lacks the RAPL perf driver (CONFIG_PERF_EVENTS_INTEL_RAPL / AMD's, \
         Linux 5.8+)",
        .dir.display()
    )]
    NoPmu { dir: PathBuf },
    #[error("{}/type is out of range", .dir.display())]
    TypeOutOfRange { dir: PathBuf },
    #[error("{}/cpumask: {text:?} is not a CPU list", .dir.display())]
    BadCpumask { dir: PathBuf, text: String },
    #[error(
        "{}: cannot make a perf config of {spec:?} with the PMU's format/ files",
        .path.display()
    )]
    BadEventConfig { path: PathBuf, spec: String },
    #[error("{}: {text:?} is not a positive scale", .path.display())]
    BadScale { path: PathBuf, text: String },
    #[error("{}: unit {unit:?}, expected \"Joules\"", .path.display())]
    WrongUnit { path: PathBuf, unit: String },
    #[error("{} lists no energy-* events", .dir.display())]
    NoEvents { dir: PathBuf },
    #[error(
        "opening power/{event} on CPU {cpu}: permission denied: grant CAP_PERFMON (or set \
         kernel.perf_event_paranoid to 0 or lower)"
    )]
    OpenDenied { event: String, cpu: u32 },
    #[error(
        "opening power/{event} on CPU {cpu}: the running kernel has no such event (PMU type \
         {type_} from {}); if --path.sysfs points elsewhere than /sys, that tree does not \
         describe this machine",
        .dir.display()
    )]
    NoSuchEvent {
        event: String,
        cpu: u32,
        type_: u32,
        dir: PathBuf,
    },
    #[error("opening power/{event} on CPU {cpu}: {error}")]
    Open {
        event: String,
        cpu: u32,
        error: io::Error,
    },
    #[error("{}", joined(.0))]
    NoneOpened(Vec<PerfError>),
    #[error("reading the perf power event for {zone}: {error}")]
    Count { zone: String, error: io::Error },
}

/// One energy event of the PMU, as sysfs describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct PmuEvent {
    /// `energy-pkg`, …
    pub name: String,
    /// The zone it measures, named as powercap names it (`package`, `core`, `uncore`, `dram`,
    /// `psys`).
    pub zone: String,
    pub config: u64,
    /// Joules per count.
    pub scale: f64,
}

/// The `power` PMU's sysfs description.
#[derive(Clone, Debug, PartialEq)]
pub struct PmuDescription {
    pub dir: PathBuf,
    pub type_: u32,
    /// One CPU per socket.
    pub cpus: Vec<u32>,
    pub events: Vec<PmuEvent>,
}

/// The zone an event measures: the perf names of RAPL domains mapped to powercap's.
pub fn zone_for_event(event: &str) -> Option<&'static str> {
    Some(match event.strip_prefix("energy-")? {
        "pkg" => zone::PACKAGE,
        "cores" => zone::CORE,
        // PP1, the client GPU plane, is the zone powercap calls "uncore".
        "gpu" => zone::UNCORE,
        "ram" => zone::DRAM,
        "psys" => zone::PSYS,
        _ => return None,
    })
}

/// More CPUs than any kernel supports (x86's MAXSMP is 8192): a list naming more is garbage.
const MAX_CPUS: usize = 65_536;

/// Parses a CPU list like `0`, `0,28` or `0-3,8-11`: sorted, each CPU once (a CPU listed twice
/// would open its events twice and count its socket double).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || (b - a) as usize >= MAX_CPUS {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
        if cpus.len() > MAX_CPUS {
            return None;
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    (!cpus.is_empty()).then_some(cpus)
}

/// An event's `.scale` file: joules per count, finite and positive.
pub fn parse_scale(text: &str) -> Option<f64> {
    text.trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
}

/// Turns an event string like `event=0x02` into the config value, using the PMU's `format/`
/// files (`config:0-7`) to place each term's bits.
pub fn parse_event_config(event: &str, format: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut config = 0u64;
    for term in event.trim().split(',').filter(|t| !t.is_empty()) {
        let (key, value) = term.split_once('=').unwrap_or((term, "1"));
        let value = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => value.parse().ok()?,
        };
        let fmt = format(key)?;
        let bits = fmt.trim().strip_prefix("config:")?;
        let (lo, hi) = match bits.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
            None => {
                let b = bits.parse::<u32>().ok()?;
                (b, b)
            }
        };
        if hi < lo || hi > 63 {
            return None;
        }
        let width = hi - lo + 1;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        if value & !mask != 0 {
            return None;
        }
        config |= value << lo;
    }
    Some(config)
}

/// Reads the PMU's description from `<sysfs>/bus/event_source/devices/power`.
pub fn describe(sysfs: &Path) -> Result<PmuDescription, PerfError> {
    let dir = sysfs.join("bus/event_source/devices/power");
    if !dir.exists() {
        return Err(PerfError::NoPmu { dir });
    }
    let type_ = u32::try_from(read_u64(&dir.join("type"))?)
        .map_err(|_| PerfError::TypeOutOfRange { dir: dir.clone() })?;
    let cpumask = read_attr(&dir.join("cpumask"))?;
    let Some(cpus) = parse_cpu_list(&cpumask) else {
        return Err(PerfError::BadCpumask { dir, text: cpumask });
    };
    let events_dir = dir.join("events");
    let names = list_dir(&events_dir).map_err(|e| ReadError::new(&events_dir, e))?;
    let mut events = Vec::new();
    for name in names {
        if name.contains('.') {
            continue;
        }
        if let Some(zone) = zone_for_event(&name) {
            events.push(describe_event(&dir, name, zone)?);
        }
    }
    if events.is_empty() {
        return Err(PerfError::NoEvents { dir: events_dir });
    }
    Ok(PmuDescription {
        dir,
        type_,
        cpus,
        events,
    })
}

/// One energy event from its `events/` files: config, scale, unit.
fn describe_event(dir: &Path, name: String, zone: &str) -> Result<PmuEvent, PerfError> {
    let events_dir = dir.join("events");
    let spec = read_attr(&events_dir.join(&name))?;
    let config = parse_event_config(&spec, |term| read_attr(&dir.join("format").join(term)).ok())
        .ok_or_else(|| PerfError::BadEventConfig {
        path: events_dir.join(&name),
        spec,
    })?;
    let scale_path = events_dir.join(format!("{name}.scale"));
    let scale_text = read_attr(&scale_path)?;
    let Some(scale) = parse_scale(&scale_text) else {
        return Err(PerfError::BadScale {
            path: scale_path,
            text: scale_text,
        });
    };
    let unit_path = events_dir.join(format!("{name}.unit"));
    let unit = read_attr(&unit_path)?;
    if unit != "Joules" {
        return Err(PerfError::WrongUnit {
            path: unit_path,
            unit,
        });
    }
    Ok(PmuEvent {
        name,
        zone: zone.to_owned(),
        config,
        scale,
    })
}

struct OpenEvent {
    zone: String,
    file: File,
    counter: EnergyCounter,
}

pub struct PerfPower {
    events: Vec<OpenEvent>,
    ceiling_watts: f64,
}

pub fn open(sysfs: &Path, ceiling_watts: f64) -> Result<Opened, PerfError> {
    let d = describe(sysfs)?;
    let mut events = Vec::new();
    let mut zones = Vec::new();
    let mut skipped = Vec::new();
    for e in &d.events {
        // An event counts only if it opens on every socket: a zone missing a socket would
        // under-count.
        let opened: Result<Vec<OpenEvent>, PerfError> = d
            .cpus
            .iter()
            .map(|&cpu| {
                let fd: OwnedFd = sys::perf_event_open_cpu(d.type_, e.config, cpu)
                    .map_err(|err| open_error(&d, e, cpu, err))?;
                Ok(OpenEvent {
                    zone: e.zone.clone(),
                    file: File::from(fd),
                    counter: EnergyCounter::new(e.scale, None),
                })
            })
            .collect();
        match opened {
            Ok(o) => {
                events.extend(o);
                zones.push(e.zone.as_str());
            }
            Err(why) => skipped.push(why),
        }
    }
    if events.is_empty() {
        return Err(PerfError::NoneOpened(skipped));
    }
    let mut description = format!(
        "{} event(s) on {} socket(s) (CPUs {:?}), zones {}",
        zones.len(),
        d.cpus.len(),
        d.cpus,
        zones.join(", ")
    );
    for s in &skipped {
        description.push_str(&format!("; skipped: {s}"));
    }
    Ok(Opened::measured(
        SourceKind::Perf,
        description,
        Box::new(PerfPower {
            events,
            ceiling_watts,
        }),
    ))
}

fn open_error(d: &PmuDescription, e: &PmuEvent, cpu: u32, error: io::Error) -> PerfError {
    let event = e.name.clone();
    match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => PerfError::OpenDenied { event, cpu },
        Some(libc::ENOENT | libc::ENODEV | libc::EINVAL | libc::EOPNOTSUPP) => {
            PerfError::NoSuchEvent {
                event,
                cpu,
                type_: d.type_,
                dir: d.dir.clone(),
            }
        }
        _ => PerfError::Open { event, cpu, error },
    }
}

impl EnergySource for PerfPower {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading {
        let mut out = SourceReading::default();
        for e in &mut self.events {
            let mut buf = [0u8; 8];
            match e.file.read_exact(&mut buf) {
                Ok(()) => {
                    let raw = u64::from_ne_bytes(buf);
                    if let Update::Dropped(reason) =
                        e.counter
                            .update(raw, ctx.at, zone::ceiling(&e.zone, self.ceiling_watts))
                    {
                        out.dropped.push((e.zone.clone(), reason));
                    }
                }
                Err(error) => {
                    out.errors.push(
                        PerfError::Count {
                            zone: e.zone.clone(),
                            error,
                        }
                        .into(),
                    );
                    out.unread.push(e.zone.clone());
                }
            }
        }
        out.zones = zone::sum(
            self.events
                .iter()
                .map(|e| (e.zone.as_str(), e.counter.joules())),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::fixture::Tree;

    const PMU: &str = "bus/event_source/devices/power";

    /// A two-socket Intel server's `power` PMU, as sysfs shows it.
    fn pmu_tree(type_: &str) -> Tree {
        let t = Tree::new();
        let scale = "2.3283064365386962890625e-10";
        t.file(&format!("{PMU}/type"), type_)
            .file(&format!("{PMU}/cpumask"), "0,28")
            .file(&format!("{PMU}/format/event"), "config:0-7")
            .file(&format!("{PMU}/events/energy-pkg"), "event=0x02")
            .file(&format!("{PMU}/events/energy-pkg.scale"), scale)
            .file(&format!("{PMU}/events/energy-pkg.unit"), "Joules")
            .file(&format!("{PMU}/events/energy-ram"), "event=0x03")
            .file(&format!("{PMU}/events/energy-ram.scale"), scale)
            .file(&format!("{PMU}/events/energy-ram.unit"), "Joules")
            .file(&format!("{PMU}/events/energy-psys"), "event=0x05")
            .file(&format!("{PMU}/events/energy-psys.scale"), scale)
            .file(&format!("{PMU}/events/energy-psys.unit"), "Joules");
        t
    }

    #[test]
    fn parses_a_fixture_pmu() {
        let t = pmu_tree("24");
        let d = describe(t.root()).unwrap();
        assert_eq!(d.type_, 24);
        assert_eq!(d.cpus, [0, 28]);
        let got: Vec<(&str, &str, u64)> = d
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.zone.as_str(), e.config))
            .collect();
        assert_eq!(
            got,
            [
                ("energy-pkg", "package", 2),
                ("energy-psys", "psys", 5),
                ("energy-ram", "dram", 3)
            ]
        );
        assert_eq!(d.events[0].scale, 2f64.powi(-32));
    }

    #[test]
    fn fixture_events_cannot_be_opened_here_and_say_why() {
        // Type 4242 is no PMU of this kernel: the tree parses, opening reports the mismatch.
        let t = pmu_tree("4242");
        let e = open(t.root(), 1000.0).unwrap_err().to_string();
        assert!(
            e.contains("opening power/energy-pkg on CPU 0")
                && (e.contains("the running kernel has no such event")
                    || e.contains("permission denied")),
            "{e}"
        );
    }

    #[test]
    fn the_live_machine_has_no_power_pmu_and_says_so() {
        // These VMs have no RAPL; on hardware with RAPL this would open.
        match open(Path::new("/sys"), 1000.0) {
            Ok(o) => assert!(o.description.contains("zones")),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("no power PMU at /sys/bus/event_source/devices/power")
                        || e.contains("permission denied"),
                    "{e}"
                )
            }
        }
    }

    #[test]
    fn bad_descriptions_are_errors_not_panics() {
        let t = pmu_tree("24");
        t.file(&format!("{PMU}/events/energy-pkg.unit"), "Watts");
        assert!(
            describe(t.root())
                .unwrap_err()
                .to_string()
                .contains("expected \"Joules\"")
        );
        let t = pmu_tree("24");
        t.file(&format!("{PMU}/cpumask"), "zero");
        assert!(
            describe(t.root())
                .unwrap_err()
                .to_string()
                .contains("not a CPU list")
        );
        let t = pmu_tree("x");
        assert!(
            describe(t.root())
                .unwrap_err()
                .to_string()
                .contains("not a non-negative")
        );
        let t = pmu_tree("24");
        t.file(&format!("{PMU}/events/energy-pkg"), "event=0x1ff");
        assert!(
            describe(t.root())
                .unwrap_err()
                .to_string()
                .contains("cannot make a perf config")
        );
        let t = pmu_tree("24");
        t.remove(&format!("{PMU}/events/energy-ram.scale"));
        assert!(
            describe(t.root())
                .unwrap_err()
                .to_string()
                .contains("energy-ram.scale is missing")
        );
    }

    #[test]
    fn cpu_lists_and_configs() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-2,8\n"), Some(vec![0, 1, 2, 8]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        // A CPU listed twice would be opened twice; a list of millions is garbage, not held.
        assert_eq!(parse_cpu_list("28,0-1,0"), Some(vec![0, 1, 28]));
        assert_eq!(parse_cpu_list("0-65536"), None);
        assert_eq!(parse_cpu_list("0-60000,60001-120000"), None);
        assert_eq!(
            parse_scale(" 2.3283064365386962890625e-10\n"),
            Some(2f64.powi(-32))
        );
        assert_eq!(parse_scale("0"), None);
        assert_eq!(parse_scale("inf"), None);
        let fmt = |t: &str| match t {
            "event" => Some("config:0-7".to_owned()),
            "umask" => Some("config:8-15".to_owned()),
            _ => None,
        };
        assert_eq!(parse_event_config("event=0x02", fmt), Some(2));
        assert_eq!(parse_event_config("event=0x3c,umask=1", fmt), Some(0x13c));
        assert_eq!(parse_event_config("cmask=1", fmt), None);
        assert_eq!(parse_event_config("event=zz", fmt), None);
    }
}
