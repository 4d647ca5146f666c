//! RAPL through the powercap class: `<sysfs>/class/powercap/intel-rapl:N[:M]/{name,energy_uj,
//! max_energy_range_uj}`. Every package (socket) and its subzones; same-named zones of several
//! sockets summed; `intel-rapl-mmio` duplicates of the packages dropped; each counter's wrap
//! handled with its own `max_energy_range_uj`. AMD Zen uses the same driver and names.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{
    EnergyCounter, EnergySource, Opened, ReadContext, ReadError, SourceKind, SourceReading, Update,
    error::joined,
    sysfs::{list_dir, read_attr, read_u64},
    zone,
};
use crate::units::JOULES_PER_MICROJOULE;

/// Why the powercap class cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PowercapError {
    #[error(
        "{} does not exist: the kernel has no powercap support (CONFIG_POWERCAP and the \
         intel_rapl modules), or the machine exposes no RAPL (most VMs)",
        .dir.display()
    )]
    NoPowercap { dir: PathBuf },
    #[error(transparent)]
    List(ReadError),
    #[error(
        "no intel-rapl zones under {}: load the intel_rapl_msr module (Intel, or AMD Zen on \
         Linux 5.11+); most VMs expose no RAPL",
        .dir.display()
    )]
    NoZones { dir: PathBuf },
    /// Every zone found failed to open.
    #[error("{}", joined(.0))]
    NoneOpened(Vec<ReadError>),
}

#[derive(Debug)]
struct Counter {
    /// The package the zone belongs to, e.g. `intel-rapl:1` for `intel-rapl:1:0`.
    socket: String,
    zone: String,
    /// The zone's directory, `<sysfs>/class/powercap/intel-rapl:N[:M]`.
    dir: PathBuf,
    energy_path: PathBuf,
    counter: EnergyCounter,
}

#[derive(Debug)]
pub struct Powercap {
    counters: Vec<Counter>,
    ceiling_watts: f64,
    sockets: usize,
    mmio_dropped: usize,
    /// Zones that could not be opened, with the reason.
    skipped: Vec<ReadError>,
}

pub fn open(sysfs: &Path, ceiling_watts: f64) -> Result<Opened, PowercapError> {
    let p = Powercap::open(sysfs, ceiling_watts)?;
    Ok(Opened::measured(
        SourceKind::Powercap,
        p.describe(),
        Box::new(p),
    ))
}

/// `package-0` → `package`, `package-1-die-0` → `package`, `psys` → `psys`: the socket (and
/// die) number is not part of the zone.
pub fn zone_name(name: &str) -> String {
    if name.starts_with("package-") {
        return zone::PACKAGE.into();
    }
    let base = match name.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    zone::label(base)
}

impl Powercap {
    pub fn open(sysfs: &Path, ceiling_watts: f64) -> Result<Self, PowercapError> {
        let dir = sysfs.join("class/powercap");
        let names = list_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => PowercapError::NoPowercap { dir: dir.clone() },
            _ => PowercapError::List(ReadError::new(&dir, e)),
        })?;
        let mut counters = Vec::new();
        let mut mmio = Vec::new();
        let mut skipped = Vec::new();
        for name in names {
            // intel-rapl-mmio:N repeats package N through another interface: counting both
            // would double the package.
            let (is_mmio, rest) = match name.strip_prefix("intel-rapl-mmio:") {
                Some(rest) => (true, rest),
                None => match name.strip_prefix("intel-rapl:") {
                    Some(rest) => (false, rest),
                    None => continue,
                },
            };
            if !rest.split(':').all(|p| p.parse::<u32>().is_ok()) {
                continue;
            }
            match open_counter(&dir.join(&name), &name) {
                Ok(c) if is_mmio => mmio.push(c),
                Ok(c) => counters.push(c),
                Err(e) => skipped.push(e),
            }
        }
        // An MMIO package is a duplicate only if the same package opened through the MSR
        // interface; otherwise (MMIO only, or the MSR one broken) it is the package's reading.
        let mmio_twin = |c: &Counter| c.socket.replacen("intel-rapl-mmio:", "intel-rapl:", 1);
        let (duplicates, unique): (Vec<Counter>, Vec<Counter>) = mmio
            .into_iter()
            .partition(|m| counters.iter().any(|c| c.socket == mmio_twin(m)));
        let mmio_dropped = duplicates.len();
        counters.extend(unique);
        if counters.is_empty() {
            return Err(if skipped.is_empty() {
                PowercapError::NoZones { dir }
            } else {
                PowercapError::NoneOpened(skipped)
            });
        }
        let mut sockets: Vec<&str> = counters
            .iter()
            .filter(|c| c.zone == zone::PACKAGE)
            .map(|c| c.socket.as_str())
            .collect();
        sockets.sort_unstable();
        sockets.dedup();
        let sockets = sockets.len();
        Ok(Self {
            counters,
            ceiling_watts,
            sockets,
            mmio_dropped,
            skipped,
        })
    }

    pub fn describe(&self) -> String {
        let zones = zone::list(self.counters.iter().map(|c| c.zone.as_str()));
        let mut d = format!(
            "{} RAPL counter(s) on {} package(s), zones {}",
            self.counters.len(),
            self.sockets,
            zones
        );
        if self.mmio_dropped > 0 {
            d.push_str(&format!(
                "; {} intel-rapl-mmio duplicate(s) dropped",
                self.mmio_dropped
            ));
        }
        for s in &self.skipped {
            d.push_str(&format!("; skipped: {s}"));
        }
        d
    }
}

fn open_counter(dir: &Path, id: &str) -> Result<Counter, ReadError> {
    let zone = zone_name(&read_attr(&dir.join("name"))?);
    let max = read_u64(&dir.join("max_energy_range_uj"))?;
    let energy_path = dir.join("energy_uj");
    // Read once now, so that an unreadable or broken counter is reported at start.
    read_u64(&energy_path)?;
    Ok(Counter {
        socket: id.split(':').take(2).collect::<Vec<_>>().join(":"),
        zone,
        dir: dir.to_owned(),
        energy_path,
        counter: EnergyCounter::new(JOULES_PER_MICROJOULE, Some(max)),
    })
}

impl EnergySource for Powercap {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading {
        let mut out = SourceReading::default();
        for c in &mut self.counters {
            match read_u64(&c.energy_path) {
                Ok(raw) => {
                    if let Update::Dropped(reason) =
                        c.counter
                            .update(raw, ctx.at, zone::ceiling(&c.zone, self.ceiling_watts))
                    {
                        out.dropped.push((c.zone.clone(), reason));
                    }
                }
                Err(e) => {
                    out.errors.push(e.into());
                    out.unread.push(c.zone.clone());
                }
            }
        }
        out.zones = zone::sum(
            self.counters
                .iter()
                .map(|c| (c.zone.as_str(), c.counter.joules())),
        );
        out
    }

    /// A zone read from one counter: its directory; summed over sockets: `aggregated-<zone>`.
    fn zone_paths(&self) -> Vec<(String, String)> {
        let mut paths: Vec<(String, String)> = Vec::new();
        for c in &self.counters {
            match paths.iter_mut().find(|(z, _)| *z == c.zone) {
                Some((z, path)) => *path = format!("aggregated-{z}"),
                None => paths.push((c.zone.clone(), c.dir.display().to_string())),
            }
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{
        DropReason,
        fixture::{Tree, at, zones},
    };

    const MAX: u64 = 262_143_328_850;

    fn zone(t: &Tree, id: &str, name: &str, uj: u64) {
        let d = format!("class/powercap/{id}");
        t.file(&format!("{d}/name"), name)
            .file(&format!("{d}/energy_uj"), &uj.to_string())
            .file(&format!("{d}/max_energy_range_uj"), &MAX.to_string());
    }

    fn set(t: &Tree, id: &str, uj: u64) {
        t.file(&format!("class/powercap/{id}/energy_uj"), &uj.to_string());
    }

    #[test]
    fn one_socket_with_subzones() {
        let t = Tree::new();
        t.file("class/powercap/intel-rapl/enabled", "1"); // the control type: not a zone
        zone(&t, "intel-rapl:0", "package-0", 1_000_000);
        zone(&t, "intel-rapl:0:0", "core", 500_000);
        zone(&t, "intel-rapl:0:1", "uncore", 0);
        zone(&t, "intel-rapl:0:2", "dram", 7);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        assert_eq!(
            p.describe(),
            "4 RAPL counter(s) on 1 package(s), zones core, dram, package, uncore"
        );
        assert_eq!(
            zones(&p.read(&at(0.0))),
            [
                ("core", 0.0),
                ("dram", 0.0),
                ("package", 0.0),
                ("uncore", 0.0)
            ]
        );
        set(&t, "intel-rapl:0", 31_000_000);
        set(&t, "intel-rapl:0:0", 20_500_000);
        set(&t, "intel-rapl:0:1", 1_000_000);
        set(&t, "intel-rapl:0:2", 5_000_007);
        let r = p.read(&at(1.0));
        assert_eq!(
            zones(&r),
            [
                ("core", 20.0),
                ("dram", 5.0),
                ("package", 30.0),
                ("uncore", 1.0)
            ]
        );
        assert!(r.dropped.is_empty() && r.errors.is_empty());
    }

    /// Kepler's `path` label: a zone's directory, or `aggregated-<zone>` when several sockets'
    /// zones are summed.
    #[test]
    fn zone_paths_as_kepler_labels_them() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        zone(&t, "intel-rapl:0:0", "core", 0);
        let p = Powercap::open(t.root(), 1000.0).unwrap();
        let dir = t.root().join("class/powercap");
        let mut paths = p.zone_paths();
        paths.sort();
        assert_eq!(
            paths,
            [
                (
                    "core".into(),
                    dir.join("intel-rapl:0:0").display().to_string()
                ),
                (
                    "package".into(),
                    dir.join("intel-rapl:0").display().to_string()
                ),
            ]
        );
        zone(&t, "intel-rapl:1", "package-1", 0);
        let p = Powercap::open(t.root(), 1000.0).unwrap();
        let package = p.zone_paths().into_iter().find(|(z, _)| z == "package");
        assert_eq!(package.unwrap().1, "aggregated-package");
    }

    #[test]
    fn two_sockets_are_summed_per_zone() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        zone(&t, "intel-rapl:0:0", "dram", 0);
        zone(&t, "intel-rapl:1", "package-1", 0);
        zone(&t, "intel-rapl:1:0", "dram", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        assert!(
            p.describe()
                .contains("on 2 package(s), zones dram, package")
        );
        p.read(&at(0.0));
        set(&t, "intel-rapl:0", 100_000_000);
        set(&t, "intel-rapl:1", 60_000_000);
        set(&t, "intel-rapl:0:0", 10_000_000);
        set(&t, "intel-rapl:1:0", 12_000_000);
        assert_eq!(
            zones(&p.read(&at(1.0))),
            [("dram", 22.0), ("package", 160.0)]
        );
    }

    #[test]
    fn amd_package_and_core_without_dram() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 5);
        zone(&t, "intel-rapl:0:0", "core", 5);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        set(&t, "intel-rapl:0", 40_000_005);
        set(&t, "intel-rapl:0:0", 25_000_005);
        assert_eq!(
            zones(&p.read(&at(1.0))),
            [("core", 25.0), ("package", 40.0)]
        );
    }

    #[test]
    fn mmio_duplicates_are_dropped() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        zone(&t, "intel-rapl-mmio:0", "package-0", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        assert!(
            p.describe()
                .contains("1 intel-rapl-mmio duplicate(s) dropped")
        );
        p.read(&at(0.0));
        set(&t, "intel-rapl:0", 10_000_000);
        set(&t, "intel-rapl-mmio:0", 10_000_000);
        assert_eq!(zones(&p.read(&at(1.0))), [("package", 10.0)]);
    }

    #[test]
    fn mmio_alone_is_used() {
        let t = Tree::new();
        zone(&t, "intel-rapl-mmio:0", "package-0", 0);
        // Package 1's MSR zone is broken: its MMIO twin stands in.
        zone(&t, "intel-rapl:1", "package-1", 0);
        t.file("class/powercap/intel-rapl:1/energy_uj", "broken");
        zone(&t, "intel-rapl-mmio:1", "package-1", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        assert!(!p.describe().contains("duplicate"), "{}", p.describe());
        p.read(&at(0.0));
        set(&t, "intel-rapl-mmio:0", 3_000_000);
        set(&t, "intel-rapl-mmio:1", 4_000_000);
        assert_eq!(zones(&p.read(&at(1.0))), [("package", 7.0)]);
    }

    #[test]
    fn multi_die_packages_are_one_zone() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0-die-0", 0);
        zone(&t, "intel-rapl:1", "package-0-die-1", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        set(&t, "intel-rapl:0", 3_000_000);
        set(&t, "intel-rapl:1", 4_000_000);
        assert_eq!(zones(&p.read(&at(1.0))), [("package", 7.0)]);
    }

    #[test]
    fn platform_zones_have_a_higher_ceiling() {
        let t = Tree::new();
        zone(&t, "intel-rapl:1", "psys", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        set(&t, "intel-rapl:1", 3_000_000_000); // 3 kW: a GPU server's platform
        let r = p.read(&at(1.0));
        assert_eq!(zones(&r), [("psys", 3000.0)]);
        assert!(r.dropped.is_empty());
    }

    #[test]
    fn wrap_between_reads_is_exact() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", MAX - 4_000_000);
        zone(&t, "intel-rapl:1", "package-1", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        // Socket 0 wraps: 4 J to the top, then 6 J. Socket 1 adds 2 J.
        set(&t, "intel-rapl:0", 6_000_000);
        set(&t, "intel-rapl:1", 2_000_000);
        let r = p.read(&at(1.0));
        assert_eq!(zones(&r), [("package", 12.0)]);
        assert!(r.dropped.is_empty());
    }

    #[test]
    fn backwards_jump_is_dropped_and_counted() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 50_000_000);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        set(&t, "intel-rapl:0", 60_000_000);
        assert_eq!(zones(&p.read(&at(1.0))), [("package", 10.0)]);
        set(&t, "intel-rapl:0", 1_000_000); // counter reset, not a wrap
        let r = p.read(&at(2.0));
        assert_eq!(zones(&r), [("package", 10.0)]);
        assert_eq!(r.dropped, [("package".to_owned(), DropReason::Backwards)]);
        set(&t, "intel-rapl:0", 21_000_000);
        assert_eq!(zones(&p.read(&at(3.0))), [("package", 30.0)]);
    }

    #[test]
    fn spike_above_the_ceiling_is_dropped() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        set(&t, "intel-rapl:0", 250_000_000_000); // 250 kJ in a second
        let r = p.read(&at(1.0));
        assert_eq!(zones(&r), [("package", 0.0)]);
        assert_eq!(
            r.dropped,
            [("package".to_owned(), DropReason::AboveCeiling)]
        );
    }

    #[test]
    fn non_numeric_value() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        zone(&t, "intel-rapl:0:0", "dram", 0);
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        p.read(&at(0.0));
        t.file("class/powercap/intel-rapl:0:0/energy_uj", "garbage");
        set(&t, "intel-rapl:0", 1_000_000);
        let r = p.read(&at(1.0));
        assert_eq!(zones(&r), [("dram", 0.0), ("package", 1.0)]);
        assert_eq!(r.errors.len(), 1);
        assert!(
            r.errors[0]
                .to_string()
                .contains("intel-rapl:0:0/energy_uj: \"garbage\" is not"),
            "{:?}",
            r.errors
        );

        // At start, a broken counter is skipped and said so; if it is the only one, the source
        // cannot be used.
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        t.file("class/powercap/intel-rapl:0/energy_uj", "-5");
        let e = Powercap::open(t.root(), 1000.0).unwrap_err().to_string();
        assert!(e.contains("\"-5\" is not a non-negative integer"), "{e}");
    }

    #[test]
    fn missing_file() {
        let t = Tree::new();
        zone(&t, "intel-rapl:0", "package-0", 0);
        zone(&t, "intel-rapl:0:0", "dram", 0);
        t.remove("class/powercap/intel-rapl:0:0/max_energy_range_uj");
        let mut p = Powercap::open(t.root(), 1000.0).unwrap();
        assert!(
            p.describe().contains("skipped: ")
                && p.describe()
                    .contains("intel-rapl:0:0/max_energy_range_uj is missing"),
            "{}",
            p.describe()
        );
        p.read(&at(0.0));
        t.remove("class/powercap/intel-rapl:0/energy_uj");
        let r = p.read(&at(1.0));
        assert_eq!(zones(&r), [("package", 0.0)]);
        assert!(
            r.errors[0]
                .to_string()
                .ends_with("intel-rapl:0/energy_uj is missing")
        );
    }

    #[test]
    fn no_powercap_at_all() {
        let t = Tree::new();
        let e = Powercap::open(t.root(), 1000.0).unwrap_err().to_string();
        assert!(e.contains("class/powercap does not exist"), "{e}");
        t.file("class/powercap/dtpm/enabled", "1");
        let e = Powercap::open(t.root(), 1000.0).unwrap_err().to_string();
        assert!(e.contains("no intel-rapl zones"), "{e}");
    }

    #[test]
    fn zone_names() {
        assert_eq!(zone_name("package-0"), "package");
        assert_eq!(zone_name("package-12"), "package");
        assert_eq!(zone_name("package-1-die-1"), "package");
        assert_eq!(zone_name("psys"), "psys");
        assert_eq!(zone_name("DRAM"), "dram");
        assert_eq!(zone_name("odd name-x"), "odd_name_x");
    }
}
