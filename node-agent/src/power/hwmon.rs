//! hwmon sensors: `<sysfs>/class/hwmon/hwmonN/energyK_input` (µJ, cumulative) or, for chips
//! without energy counters, `powerK_input` / `powerK_average` (µW) integrated over time.
//! amd_energy's per-socket and per-core counters become the `package` and `core` zones; an ACPI
//! power meter is the `platform` zone; other sensors are named by their label.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{
    EnergyCounter, EnergySource, Opened, PowerIntegrator, ReadContext, ReadError, SourceKind,
    SourceReading, Update,
    error::joined,
    sysfs::{list_dir, read_attr, read_u64},
    zone,
};
use crate::units::{JOULES_PER_MICROJOULE, WATTS_PER_MICROWATT};

/// Why hwmon cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HwmonError {
    #[error("{} does not exist: no hwmon drivers loaded", .dir.display())]
    NoHwmon { dir: PathBuf },
    #[error(transparent)]
    List(ReadError),
    #[error(
        "no energy or power sensors among {chips} hwmon chip(s) under {}{}",
        .dir.display(),
        problems_suffix(.problems)
    )]
    NoSensors {
        chips: usize,
        dir: PathBuf,
        /// Sensors found but unreadable.
        problems: Vec<ReadError>,
    },
}

fn problems_suffix(problems: &[ReadError]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!(": {}", joined(problems))
    }
}

#[derive(Debug)]
enum Meter {
    Energy(EnergyCounter),
    Power(PowerIntegrator),
}

#[derive(Debug)]
struct Sensor {
    zone: String,
    path: PathBuf,
    meter: Meter,
}

pub struct Hwmon {
    sensors: Vec<Sensor>,
    ceiling_watts: f64,
    chips: Vec<String>,
}

/// The zone of one sensor: from the chip's name and the sensor's label.
pub fn zone_for(chip: &str, label: Option<&str>, kind: &str, index: u32) -> String {
    match (chip, label) {
        ("amd_energy", Some(l)) if l.starts_with("Esocket") => zone::PACKAGE.into(),
        ("amd_energy", Some(l)) if l.starts_with("Ecore") => zone::CORE.into(),
        ("power_meter", _) => zone::PLATFORM.into(),
        (_, Some(l)) if !l.is_empty() => zone::label(l),
        _ => zone::label(&format!("{chip}_{kind}{index}")),
    }
}

/// `energy3_input` → ("energy", 3, "input").
fn parse_attr(name: &str) -> Option<(&str, u32, &str)> {
    let (sensor, item) = name.split_once('_')?;
    let digits = sensor.find(|c: char| c.is_ascii_digit())?;
    let (kind, index) = sensor.split_at(digits);
    Some((kind, index.parse().ok()?, item))
}

pub fn open(sysfs: &Path, ceiling_watts: f64) -> Result<Opened, HwmonError> {
    let h = Hwmon::open(sysfs, ceiling_watts)?;
    let zones = zone::list(h.sensors.iter().map(|s| s.zone.as_str()));
    let energy = h
        .sensors
        .iter()
        .filter(|s| matches!(s.meter, Meter::Energy(_)))
        .count();
    let description = format!(
        "{} energy counter(s) and {} power sensor(s) on {}, zones {}",
        energy,
        h.sensors.len() - energy,
        h.chips.join(", "),
        zones
    );
    Ok(Opened::measured(
        SourceKind::Hwmon,
        description,
        Box::new(h),
    ))
}

impl Hwmon {
    pub fn open(sysfs: &Path, ceiling_watts: f64) -> Result<Self, HwmonError> {
        let dir = sysfs.join("class/hwmon");
        let chips = list_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => HwmonError::NoHwmon { dir: dir.clone() },
            _ => HwmonError::List(ReadError::new(&dir, e)),
        })?;
        let mut sensors = Vec::new();
        let mut used_chips = Vec::new();
        let mut problems = Vec::new();
        let chip_count = chips.len();
        for chip_dir in chips {
            let base = dir.join(&chip_dir);
            let chip = read_attr(&base.join("name")).unwrap_or_else(|_| chip_dir.clone());
            // Older drivers keep their attributes under device/.
            let found = chip_sensors(&base, &chip, &mut problems);
            let found = if found.is_empty() {
                chip_sensors(&base.join("device"), &chip, &mut problems)
            } else {
                found
            };
            if !found.is_empty() {
                used_chips.push(format!("{chip_dir} ({chip})"));
                sensors.extend(found);
            }
        }
        if sensors.is_empty() {
            return Err(HwmonError::NoSensors {
                chips: chip_count,
                dir,
                problems,
            });
        }
        Ok(Self {
            sensors,
            ceiling_watts,
            chips: used_chips,
        })
    }
}

/// A chip's energy counters if it has any, else its power sensors (`_input` over `_average`).
fn chip_sensors(dir: &Path, chip: &str, problems: &mut Vec<ReadError>) -> Vec<Sensor> {
    let Ok(names) = list_dir(dir) else {
        return Vec::new();
    };
    let label = |kind: &str, i: u32| read_attr(&dir.join(format!("{kind}{i}_label"))).ok();
    let mut energy = Vec::new();
    let mut power: Vec<(u32, &str)> = Vec::new();
    for name in &names {
        match parse_attr(name) {
            Some(("energy", i, "input")) => energy.push(i),
            Some(("power", i, item @ ("input" | "average"))) => {
                if let Some(p) = power.iter_mut().find(|(j, _)| *j == i) {
                    if item == "input" {
                        p.1 = "input";
                    }
                } else {
                    power.push((i, item));
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut check = |path: PathBuf, zone: String, meter: Meter| match read_u64(&path) {
        Ok(_) => out.push(Sensor { zone, path, meter }),
        Err(e) => problems.push(e),
    };
    if !energy.is_empty() {
        for i in energy {
            check(
                dir.join(format!("energy{i}_input")),
                zone_for(chip, label("energy", i).as_deref(), "energy", i),
                // hwmon energy counters are 64-bit accumulators in the driver.
                Meter::Energy(EnergyCounter::new(JOULES_PER_MICROJOULE, None)),
            );
        }
    } else {
        for (i, item) in power {
            check(
                dir.join(format!("power{i}_{item}")),
                zone_for(chip, label("power", i).as_deref(), "power", i),
                Meter::Power(PowerIntegrator::default()),
            );
        }
    }
    out
}

impl EnergySource for Hwmon {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading {
        let mut out = SourceReading::default();
        for s in &mut self.sensors {
            let raw = match read_u64(&s.path) {
                Ok(raw) => raw,
                Err(e) => {
                    out.errors.push(e.into());
                    out.unread.push(s.zone.clone());
                    continue;
                }
            };
            let ceiling = zone::ceiling(&s.zone, self.ceiling_watts);
            let update = match &mut s.meter {
                Meter::Energy(c) => c.update(raw, ctx.at, ceiling),
                Meter::Power(p) => p.update(raw as f64 * WATTS_PER_MICROWATT, ctx.at, ceiling),
            };
            if let Update::Dropped(reason) = update {
                out.dropped.push((s.zone.clone(), reason));
            }
        }
        out.zones = zone::sum(self.sensors.iter().map(|s| {
            let j = match &s.meter {
                Meter::Energy(c) => c.joules(),
                Meter::Power(p) => p.joules(),
            };
            (s.zone.as_str(), j)
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::fixture::{Tree, at, zones};

    #[test]
    fn amd_energy_counters() {
        let t = Tree::new();
        let d = "class/hwmon/hwmon2";
        t.file(&format!("{d}/name"), "amd_energy")
            .file(&format!("{d}/energy1_label"), "Ecore000")
            .file(&format!("{d}/energy1_input"), "1000000")
            .file(&format!("{d}/energy2_label"), "Ecore001")
            .file(&format!("{d}/energy2_input"), "2000000")
            .file(&format!("{d}/energy3_label"), "Esocket0")
            .file(&format!("{d}/energy3_input"), "9000000");
        // A temperature-only chip is ignored.
        t.file("class/hwmon/hwmon0/name", "k10temp")
            .file("class/hwmon/hwmon0/temp1_input", "40000");
        let o = open(t.root(), 1000.0).unwrap();
        assert_eq!(
            o.description,
            "3 energy counter(s) and 0 power sensor(s) on hwmon2 (amd_energy), zones core, package"
        );
        let mut h = o.source;
        h.read(&at(0.0));
        t.file(&format!("{d}/energy1_input"), "4000000")
            .file(&format!("{d}/energy2_input"), "3000000")
            .file(&format!("{d}/energy3_input"), "21000000");
        assert_eq!(zones(&h.read(&at(1.0))), [("core", 4.0), ("package", 12.0)]);
    }

    #[test]
    fn power_only_sensor_is_integrated_over_time() {
        let t = Tree::new();
        let d = "class/hwmon/hwmon1";
        t.file(&format!("{d}/name"), "ina3221")
            .file(&format!("{d}/power1_label"), "VDD_IN")
            .file(&format!("{d}/power1_input"), "5000000")
            .file(&format!("{d}/power1_average"), "4000000");
        let mut h = Hwmon::open(t.root(), 1000.0).unwrap();
        assert_eq!(zones(&h.read(&at(0.0))), [("vdd_in", 0.0)]);
        t.file(&format!("{d}/power1_input"), "7000000");
        // (5 W + 7 W) / 2 × 2 s = 12 J: _input is used, not _average.
        assert_eq!(zones(&h.read(&at(2.0))), [("vdd_in", 12.0)]);
        t.file(&format!("{d}/power1_input"), "7000000");
        assert_eq!(zones(&h.read(&at(2.5))), [("vdd_in", 15.5)]);
    }

    #[test]
    fn acpi_power_meter_under_device() {
        let t = Tree::new();
        let d = "class/hwmon/hwmon3";
        t.file(&format!("{d}/name"), "power_meter")
            .file(&format!("{d}/device/power1_average"), "250000000");
        let mut h = Hwmon::open(t.root(), 1000.0).unwrap();
        h.read(&at(0.0));
        assert_eq!(zones(&h.read(&at(1.0))), [("platform", 250.0)]);
    }

    #[test]
    fn no_sensors_and_bad_values() {
        let t = Tree::new();
        assert!(
            Hwmon::open(t.root(), 1000.0)
                .err()
                .unwrap()
                .to_string()
                .contains("class/hwmon does not exist")
        );
        t.file("class/hwmon/hwmon0/name", "k10temp")
            .file("class/hwmon/hwmon0/temp1_input", "40000");
        assert!(
            Hwmon::open(t.root(), 1000.0)
                .err()
                .unwrap()
                .to_string()
                .contains("no energy or power sensors among 1 hwmon chip(s)")
        );
        t.file("class/hwmon/hwmon1/name", "x")
            .file("class/hwmon/hwmon1/energy1_input", "n/a");
        let e = Hwmon::open(t.root(), 1000.0).err().unwrap().to_string();
        assert!(e.contains("\"n/a\" is not a non-negative integer"), "{e}");
    }

    #[test]
    fn zone_names() {
        assert_eq!(
            zone_for("amd_energy", Some("Esocket1"), "energy", 9),
            "package"
        );
        assert_eq!(zone_for("mychip", None, "power", 2), "mychip_power2");
        assert_eq!(zone_for("ina3221", Some("VDD CPU"), "power", 1), "vdd_cpu");
        assert_eq!(parse_attr("energy12_input"), Some(("energy", 12, "input")));
        assert_eq!(parse_attr("name"), None);
    }
}
