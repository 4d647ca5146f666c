//! The hwmon source: every chip under `<sysfs>/class/hwmon` scanned, each channel decided
//! ([`super::pairing`]), the chosen ones read at each interval: energy counters as they count,
//! power sensors and voltage × current products integrated over time (trapezoid).

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use super::{
    channels::{Chip, Item, Kind},
    chips::ChipRules,
    pairing::{self, Decision, Skip, Use},
};
use crate::{
    power::{
        EnergyCounter, EnergySource, Opened, PowerIntegrator, ReadContext, ReadError, SourceKind,
        SourceReading, Update,
        error::joined,
        sysfs::{list_dir, read_i64, read_u64},
        zone,
    },
    units::{JOULES_PER_MICROJOULE, WATTS_PER_MICROWATT},
};

/// Why hwmon cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HwmonError {
    #[error("{} does not exist: no hwmon drivers loaded", .dir.display())]
    NoHwmon { dir: PathBuf },
    #[error(transparent)]
    List(ReadError),
    #[error(
        "no energy or power sensors among {chips} hwmon chip(s) under {}{}{}",
        .dir.display(),
        .seen,
        problems_suffix(.problems)
    )]
    NoSensors {
        chips: usize,
        dir: PathBuf,
        /// The voltages and currents seen, none of which could be paired.
        seen: Seen,
        /// Sensors found but unreadable.
        problems: Vec<ReadError>,
    },
}

/// The voltage and current channels seen on chips that gave no power, for saying why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub voltages: usize,
    pub currents: usize,
}

impl Seen {
    fn of<'a>(decisions: impl IntoIterator<Item = &'a Decision>) -> Self {
        let mut seen = Self::default();
        for d in decisions {
            match d.channel.kind {
                Kind::Voltage => seen.voltages += 1,
                Kind::Current => seen.currents += 1,
                _ => {}
            }
        }
        seen
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.voltages, self.currents) {
            (0, 0) => Ok(()),
            (v, 0) => write!(
                f,
                ", and {v} voltage channel(s) give no power without a current"
            ),
            (0, c) => write!(
                f,
                ", and {c} current channel(s) give no power without a voltage"
            ),
            (v, c) => write!(
                f,
                ", and none of the {v} voltage and {c} current channel(s) could be paired into \
                 power (`wattlet check` lists why for each)"
            ),
        }
    }
}

fn problems_suffix(problems: &[ReadError]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!(": {}", joined(problems))
    }
}

/// One used channel: where it is read and what it adds up.
#[derive(Debug)]
enum Sensor {
    /// `energyN_input`, µJ.
    Energy {
        path: PathBuf,
        counter: EnergyCounter,
    },
    /// `powerN_input` or `_average`, µW.
    Power {
        path: PathBuf,
        integrator: PowerIntegrator,
    },
    /// `inN_*` (mV) × `currM_*` (mA) = µW.
    Product {
        volts: PathBuf,
        amps: PathBuf,
        integrator: PowerIntegrator,
    },
}

impl Sensor {
    /// Reads the sensor once at `at`.
    fn update(&mut self, at: std::time::Duration, ceiling_w: f64) -> Result<Update, ReadError> {
        Ok(match self {
            Sensor::Energy { path, counter } => counter.update(read_u64(path)?, at, ceiling_w),
            Sensor::Power { path, integrator } => {
                integrator.update(read_u64(path)? as f64 * WATTS_PER_MICROWATT, at, ceiling_w)
            }
            Sensor::Product {
                volts,
                amps,
                integrator,
            } => integrator.update(
                product_watts(read_i64(volts)?, read_i64(amps)?),
                at,
                ceiling_w,
            ),
        })
    }

    fn joules(&self) -> f64 {
        match self {
            Sensor::Energy { counter, .. } => counter.joules(),
            Sensor::Power { integrator, .. } | Sensor::Product { integrator, .. } => {
                integrator.joules()
            }
        }
    }

    /// Checks that the sensor can be read now (before it is chosen).
    fn probe(&self) -> Result<(), ReadError> {
        match self {
            Sensor::Energy { path, .. } | Sensor::Power { path, .. } => read_u64(path).map(drop),
            Sensor::Product { volts, amps, .. } => {
                read_i64(volts)?;
                read_i64(amps).map(drop)
            }
        }
    }
}

/// mV × mA = µW. A current flowing back (a battery charging through the monitor) is no draw.
pub fn product_watts(millivolts: i64, milliamps: i64) -> f64 {
    (millivolts as f64 * milliamps as f64 * WATTS_PER_MICROWATT).max(0.0)
}

/// One chip as `wattlet check` lists it: every channel and what it became.
#[derive(Clone, Debug)]
pub struct ChipSurvey {
    /// `hwmonN`.
    pub hwmon: String,
    /// The `name` file.
    pub name: String,
    /// Where its pairing rule comes from, if it has one.
    pub rule: Option<String>,
    pub channels: Vec<Decision>,
}

/// Every chip scanned, and the sensors that can be read.
struct Scan {
    dir: PathBuf,
    chips: Vec<ChipSurvey>,
    sensors: Vec<(String, Sensor)>,
    problems: Vec<ReadError>,
}

fn scan(sysfs: &Path, rules: &ChipRules) -> Result<Scan, HwmonError> {
    let dir = sysfs.join("class/hwmon");
    let names = list_dir(&dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => HwmonError::NoHwmon { dir: dir.clone() },
        _ => HwmonError::List(ReadError::new(&dir, e)),
    })?;
    let mut scan = Scan {
        dir: dir.clone(),
        chips: Vec::new(),
        sensors: Vec::new(),
        problems: Vec::new(),
    };
    for hwmon in names {
        let chip = Chip::read(&dir, &hwmon);
        let rule = rules.get(&chip.name);
        let mut decisions = pairing::plan(&chip, rule.map(|(r, _)| r));
        scan.sensors
            .extend(sensors(&chip, &mut decisions, &mut scan.problems));
        scan.chips.push(ChipSurvey {
            hwmon: chip.hwmon,
            name: chip.name,
            rule: rule.map(|(_, origin)| origin.to_string()),
            channels: decisions,
        });
    }
    Ok(scan)
}

/// The sensors of a chip's used channels that can be read now; the others are marked unreadable.
fn sensors(
    chip: &Chip,
    decisions: &mut [Decision],
    problems: &mut Vec<ReadError>,
) -> Vec<(String, Sensor)> {
    let mut out = Vec::new();
    for i in 0..decisions.len() {
        let ch = &decisions[i].channel;
        let (zone, sensor, partner) = match &decisions[i].what {
            Use::Energy { zone } => (zone.clone(), energy(chip.path(ch, Item::Input)), None),
            Use::Power { zone, item } => (zone.clone(), power(chip.path(ch, *item)), None),
            Use::Voltage {
                current,
                zone,
                item,
                ..
            } => {
                let c = current_position(decisions, *current);
                let sensor = Sensor::Product {
                    volts: chip.path(ch, *item),
                    amps: chip.path(&decisions[c].channel, *item),
                    integrator: PowerIntegrator::default(),
                };
                (zone.clone(), sensor, Some(c))
            }
            Use::Current { .. } | Use::Skipped(_) => continue,
        };
        match sensor.probe() {
            Ok(()) => out.push((zone, sensor)),
            Err(e) => {
                let why = Use::Skipped(Skip::Unreadable(e.to_string()));
                decisions[i].what = why.clone();
                if let Some(c) = partner {
                    decisions[c].what = why;
                }
                problems.push(e);
            }
        }
    }
    out
}

fn current_position(decisions: &[Decision], index: u32) -> usize {
    decisions
        .iter()
        .position(|d| d.channel.kind == Kind::Current && d.channel.index == index)
        .expect("a pair's current is among the chip's channels")
}

fn energy(path: PathBuf) -> Sensor {
    // hwmon energy counters are 64-bit accumulators in the driver.
    Sensor::Energy {
        path,
        counter: EnergyCounter::new(JOULES_PER_MICROJOULE, None),
    }
}

fn power(path: PathBuf) -> Sensor {
    Sensor::Power {
        path,
        integrator: PowerIntegrator::default(),
    }
}

/// Every hwmon chip and channel and what was made of each, for `wattlet check`.
pub fn survey(sysfs: &Path, rules: &ChipRules) -> Result<Vec<ChipSurvey>, HwmonError> {
    scan(sysfs, rules).map(|s| s.chips)
}

pub struct Hwmon {
    sensors: Vec<(String, Sensor)>,
    ceiling_watts: f64,
}

/// The zone of one energy or power sensor: from the chip's name and the sensor's label.
pub fn zone_for(chip: &str, label: Option<&str>, kind: &str, index: u32) -> String {
    match (chip, label) {
        ("amd_energy", Some(l)) if l.starts_with("Esocket") => zone::PACKAGE.into(),
        ("amd_energy", Some(l)) if l.starts_with("Ecore") => zone::CORE.into(),
        ("power_meter", _) => zone::PLATFORM.into(),
        (_, Some(l)) if !l.is_empty() => zone::label(l),
        _ => zone::label(&format!("{chip}_{kind}{index}")),
    }
}

pub fn open(sysfs: &Path, ceiling_watts: f64, rules: &ChipRules) -> Result<Opened, HwmonError> {
    let scan = scan(sysfs, rules)?;
    if scan.sensors.is_empty() {
        return Err(HwmonError::NoSensors {
            chips: scan.chips.len(),
            dir: scan.dir,
            seen: Seen::of(scan.chips.iter().flat_map(|c| &c.channels)),
            problems: scan.problems,
        });
    }
    let description = describe(&scan);
    Ok(Opened::measured(
        SourceKind::Hwmon,
        description,
        Box::new(Hwmon {
            sensors: scan.sensors,
            ceiling_watts,
        }),
    ))
}

/// "3 energy counter(s) and 1 power sensor(s) on hwmon2 (amd_energy), zones core, package".
fn describe(scan: &Scan) -> String {
    let count = |f: fn(&Sensor) -> bool| scan.sensors.iter().filter(|(_, s)| f(s)).count();
    let energy = count(|s| matches!(s, Sensor::Energy { .. }));
    let power = count(|s| matches!(s, Sensor::Power { .. }));
    let products = count(|s| matches!(s, Sensor::Product { .. }));
    let used: Vec<String> = scan
        .chips
        .iter()
        .filter(|c| c.channels.iter().any(|d| d.what.is_used()))
        .map(|c| format!("{} ({})", c.hwmon, c.name))
        .collect();
    let kinds = if products == 0 {
        format!("{energy} energy counter(s) and {power} power sensor(s)")
    } else {
        format!(
            "{energy} energy counter(s), {power} power sensor(s) and {products} voltage × current \
             pair(s)"
        )
    };
    format!(
        "{kinds} on {}, zones {}",
        used.join(", "),
        zone::list(scan.sensors.iter().map(|(z, _)| z.as_str()))
    )
}

impl EnergySource for Hwmon {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading {
        let mut out = SourceReading::default();
        for (zone, s) in &mut self.sensors {
            match s.update(ctx.at, zone::ceiling(zone, self.ceiling_watts)) {
                Ok(Update::Dropped(reason)) => out.dropped.push((zone.clone(), reason)),
                Ok(_) => {}
                Err(e) => {
                    out.errors.push(e.into());
                    out.unread.push(zone.clone());
                }
            }
        }
        out.zones = zone::sum(self.sensors.iter().map(|(z, s)| (z.as_str(), s.joules())));
        out
    }
}
