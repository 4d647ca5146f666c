//! The power model for nodes without sensors (cloud VMs): Cloud Carbon Footprint's linear
//! SPECpower-derived model. Per vCPU, power runs from an idle to a maximum figure with the
//! vCPU's busy ratio; memory draws a constant per GB:
//!
//! ```text
//! package W = vCPUs × idle + (max − idle) × busy vCPUs      (busy vCPUs = busy CPU-seconds / s)
//! dram W    = memory GB × 0.392
//! ```
//!
//! Integrated exactly: package J over an interval = vCPUs × idle × dt + (max − idle) × busy
//! CPU-seconds in it, with the busy time from the kernel counters. The coefficients are chosen by
//! CPU microarchitecture from /proc/cpuinfo, the all-average where the CPU is not in the table;
//! every one can be overridden. Zones are named as RAPL names them (`package`, `dram`) so that
//! dashboards work across sources, and are labelled as estimated wherever they are exported.

use std::path::{Path, PathBuf};

use clap::{ValueEnum, builder::PossibleValue};

use super::{
    BusySample, EnergySource, Opened, ReadContext, ReadError, SourceKind, SourceReading,
    sysfs::read_text, zone,
};
use crate::{
    flags::non_negative,
    units::{BYTES_PER_GB, BYTES_PER_KIB},
};

/// Why the model cannot be used, or has nothing to integrate at one read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: no MemTotal line", .path.display())]
    NoMemTotal { path: PathBuf },
    #[error("cpuinfo lists no processors")]
    NoProcessors,
    #[error("--power.model.{flag} {value} must be a non-negative number")]
    Negative { flag: &'static str, value: f64 },
    #[error(
        "the model's max power per vCPU ({max} W) is below its idle power ({idle} W): check the \
         --power.model.* overrides"
    )]
    MaxBelowIdle { max: f64, idle: f64 },
    #[error("the model has no CPU busy time: the kernel counters were not read")]
    NoBusyTime,
}

/// Watts per vCPU at idle and at full load, for one CPU microarchitecture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub idle_watts: f64,
    pub max_watts: f64,
}

/// Cloud Carbon Footprint's per-vCPU coefficients (from SPECpower results), and their average:
/// the choices of `--power.model.family`.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "sandy_bridge",
        idle_watts: 2.17,
        max_watts: 8.58,
    },
    Family {
        name: "haswell",
        idle_watts: 1.0,
        max_watts: 4.74,
    },
    Family {
        name: "broadwell",
        idle_watts: 0.71,
        max_watts: 3.69,
    },
    Family {
        name: "skylake",
        idle_watts: 0.65,
        max_watts: 4.26,
    },
    Family {
        name: "cascade_lake",
        idle_watts: 0.64,
        max_watts: 3.97,
    },
    Family {
        name: "epyc_2nd_gen",
        idle_watts: 0.47,
        max_watts: 1.69,
    },
    Family {
        name: "graviton2",
        idle_watts: 0.47,
        max_watts: 1.69,
    },
    AVERAGE,
];

/// The average over all of CCF's AWS microarchitectures: the fallback.
pub const AVERAGE: Family = Family {
    name: "average",
    idle_watts: 0.74,
    max_watts: 3.5,
};

/// Memory, watts per GB (10⁹ bytes) of installed memory.
pub const MEMORY_WATTS_PER_GB: f64 = 0.392;

impl ValueEnum for Family {
    fn value_variants<'a>() -> &'a [Self] {
        FAMILIES
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name))
    }
}

/// Overrides from the command line; `None` keeps the table's figure.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ModelOverrides {
    /// Power model: the CPU family whose coefficients to use instead of the one detected.
    #[arg(long = "power.model.family", value_enum, global = true)]
    pub family: Option<Family>,

    /// Power model: watts per vCPU when idle (default: from the CPU family).
    #[arg(long = "power.model.idle-watts-per-vcpu", value_name = "WATTS",
          value_parser = non_negative, allow_negative_numbers = true, global = true)]
    pub idle_watts_per_vcpu: Option<f64>,

    /// Power model: watts per vCPU at full load (default: from the CPU family).
    #[arg(long = "power.model.max-watts-per-vcpu", value_name = "WATTS",
          value_parser = non_negative, allow_negative_numbers = true, global = true)]
    pub max_watts_per_vcpu: Option<f64>,

    /// Power model: watts per GB of installed memory (default 0.392).
    #[arg(long = "power.model.memory-watts-per-gb", value_name = "WATTS",
          value_parser = non_negative, allow_negative_numbers = true, global = true)]
    pub memory_watts_per_gb: Option<f64>,
}

impl ModelOverrides {
    /// What the flags say together, before any CPU is identified: max power below idle power,
    /// given both or one and the family.
    pub fn check(&self) -> Result<(), ModelError> {
        let idle = self
            .idle_watts_per_vcpu
            .or(self.family.map(|f| f.idle_watts));
        let max = self.max_watts_per_vcpu.or(self.family.map(|f| f.max_watts));
        match (idle, max) {
            (Some(idle), Some(max)) => check_range(idle, max),
            _ => Ok(()),
        }
    }
}

fn check_range(idle: f64, max: f64) -> Result<(), ModelError> {
    if max < idle {
        return Err(ModelError::MaxBelowIdle { max, idle });
    }
    Ok(())
}

/// What the model needs from /proc/cpuinfo.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuInfo {
    pub vendor: String,
    pub model_name: String,
    pub family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
    pub arm_implementer: Option<u32>,
    pub arm_part: Option<u32>,
    /// `processor` entries: the vCPUs.
    pub processors: usize,
}

fn parse_num(v: &str) -> Option<u32> {
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Parses the fields of the first processor, and counts the processors.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => info.processors += 1,
            _ if info.processors > 1 => {}
            "vendor_id" => info.vendor = value.to_owned(),
            "model name" => info.model_name = value.to_owned(),
            "cpu family" => info.family = parse_num(value),
            "model" => info.model = parse_num(value),
            "stepping" => info.stepping = parse_num(value),
            "CPU implementer" => info.arm_implementer = parse_num(value),
            "CPU part" => info.arm_part = parse_num(value),
            _ => {}
        }
    }
    info
}

/// The microarchitecture in CCF's table, if this CPU is one of them.
pub fn identify(cpu: &CpuInfo) -> Option<&'static Family> {
    let name = match (cpu.vendor.as_str(), cpu.family, cpu.model) {
        ("GenuineIntel", Some(6), Some(m)) => match m {
            42 | 45 => "sandy_bridge",
            60 | 63 | 69 | 70 => "haswell",
            61 | 71 | 79 | 86 => "broadwell",
            78 | 94 => "skylake",
            // Skylake-SP and Cascade Lake share model 85; steppings 5–7 are Cascade Lake.
            85 => match cpu.stepping {
                Some(5..=7) => "cascade_lake",
                Some(0..=4) | None => "skylake",
                Some(_) => return None,
            },
            _ => return None,
        },
        // Zen 2 EPYC (Rome): family 17h, models 30h–3Fh.
        ("AuthenticAMD", Some(0x17), Some(0x30..=0x3f)) => "epyc_2nd_gen",
        _ => match (cpu.arm_implementer, cpu.arm_part) {
            // Arm Neoverse N1, as in Graviton2.
            (Some(0x41), Some(0xd0c)) => "graviton2",
            _ => return None,
        },
    };
    FAMILIES.iter().find(|f| f.name == name)
}

/// The coefficients in use, and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Coefficients {
    pub family: String,
    pub idle_watts_per_vcpu: f64,
    pub max_watts_per_vcpu: f64,
    pub memory_watts_per_gb: f64,
    pub vcpus: usize,
    pub memory_gb: f64,
    /// How the CPU was identified, for `wattlet check`.
    pub identified: String,
}

impl Coefficients {
    /// Power at a busy ratio (0..=1, averaged over the vCPUs): (CPU watts, memory watts).
    pub fn watts(&self, busy_ratio: f64) -> (f64, f64) {
        let busy = busy_ratio.clamp(0.0, 1.0);
        let n = self.vcpus as f64;
        (
            n * (self.idle_watts_per_vcpu
                + (self.max_watts_per_vcpu - self.idle_watts_per_vcpu) * busy),
            self.memory_gb * self.memory_watts_per_gb,
        )
    }
}

/// Chooses the coefficients for this CPU and memory, applying the overrides.
pub fn coefficients(
    cpu: &CpuInfo,
    mem_total_kib: u64,
    o: &ModelOverrides,
) -> Result<Coefficients, ModelError> {
    if cpu.processors == 0 {
        return Err(ModelError::NoProcessors);
    }
    let what = if cpu.model_name.is_empty() {
        cpu.vendor.clone()
    } else {
        cpu.model_name.clone()
    };
    let id = format!(
        "{what} (family {}, model {}, stepping {})",
        opt(cpu.family),
        opt(cpu.model),
        opt(cpu.stepping)
    );
    let (family, identified) = match &o.family {
        Some(f) => (
            f,
            format!("{id}, family set to {} by --power.model.family", f.name),
        ),
        None => match identify(cpu) {
            Some(f) => (f, format!("{id} is {}", f.name)),
            None => (
                &AVERAGE,
                format!("{id} is not in the coefficient table: using the all-average"),
            ),
        },
    };
    let c = Coefficients {
        family: family.name.to_owned(),
        idle_watts_per_vcpu: o.idle_watts_per_vcpu.unwrap_or(family.idle_watts),
        max_watts_per_vcpu: o.max_watts_per_vcpu.unwrap_or(family.max_watts),
        memory_watts_per_gb: o.memory_watts_per_gb.unwrap_or(MEMORY_WATTS_PER_GB),
        vcpus: cpu.processors,
        memory_gb: mem_total_kib as f64 * BYTES_PER_KIB / BYTES_PER_GB,
        identified,
    };
    for (flag, value) in [
        ("idle-watts-per-vcpu", c.idle_watts_per_vcpu),
        ("max-watts-per-vcpu", c.max_watts_per_vcpu),
        ("memory-watts-per-gb", c.memory_watts_per_gb),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(ModelError::Negative { flag, value });
        }
    }
    check_range(c.idle_watts_per_vcpu, c.max_watts_per_vcpu)?;
    Ok(c)
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// `MemTotal` in KiB from the text of /proc/meminfo.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub struct Model {
    c: Coefficients,
    last: Option<BusySample>,
    /// Busy CPU-seconds counted but not yet turned into energy: a CPU busy with one long task is
    /// charged at its next switch, in a lump that can exceed one interval's vCPUs × dt. The lump
    /// is spread over the following intervals instead of being clamped away.
    carried_busy: f64,
    cpu_joules: f64,
    memory_joules: f64,
}

impl Model {
    pub fn new(c: Coefficients) -> Self {
        Self {
            c,
            last: None,
            carried_busy: 0.0,
            cpu_joules: 0.0,
            memory_joules: 0.0,
        }
    }
}

pub fn open(procfs: &Path, o: &ModelOverrides) -> Result<Opened, ModelError> {
    let cpu = parse_cpuinfo(&read_text(&procfs.join("cpuinfo"))?);
    let meminfo = procfs.join("meminfo");
    let mem =
        mem_total_kib(&read_text(&meminfo)?).ok_or(ModelError::NoMemTotal { path: meminfo })?;
    let c = coefficients(&cpu, mem, o)?;
    let description = format!(
        "power is modelled, not measured: {}; {:.2}–{:.2} W per vCPU × {} vCPU(s) with the busy \
         ratio, + {:.3} W/GB × {:.1} GB of memory (Cloud Carbon Footprint's SPECpower-derived \
         coefficients)",
        c.identified,
        c.idle_watts_per_vcpu,
        c.max_watts_per_vcpu,
        c.vcpus,
        c.memory_watts_per_gb,
        c.memory_gb
    );
    Ok(Opened {
        kind: SourceKind::Model,
        estimated: true,
        description,
        model_family: Some(c.family.clone()),
        // At zero load the model's CPU power is its idle figure; memory power is constant.
        idle_watts: vec![
            (zone::DRAM.into(), c.watts(0.0).1),
            (zone::PACKAGE.into(), c.watts(0.0).0),
        ],
        source: Box::new(Model::new(c)),
    })
}

impl EnergySource for Model {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading {
        let mut out = SourceReading::default();
        match ctx.busy {
            None => {
                out.errors.push(ModelError::NoBusyTime.into());
                out.unread = vec![zone::DRAM.into(), zone::PACKAGE.into()];
            }
            Some(busy) => {
                if let Some(last) = self.last {
                    let dt = busy.at.saturating_sub(last.at).as_secs_f64();
                    let n = self.c.vcpus as f64;
                    self.carried_busy += (busy.seconds - last.seconds).max(0.0);
                    let busy_s = self.carried_busy.min(n * dt);
                    self.carried_busy -= busy_s;
                    self.cpu_joules += n * self.c.idle_watts_per_vcpu * dt
                        + (self.c.max_watts_per_vcpu - self.c.idle_watts_per_vcpu) * busy_s;
                    self.memory_joules += self.c.memory_gb * self.c.memory_watts_per_gb * dt;
                }
                self.last = Some(busy);
            }
        }
        out.zones = vec![
            (zone::DRAM.into(), self.memory_joules),
            (zone::PACKAGE.into(), self.cpu_joules),
        ];
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const XEON_CASCADE_LAKE: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz\n\
        stepping\t: 7\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model\t\t: 85\nstepping\t: 7\n";

    fn cpus(text: &str, n: usize) -> String {
        (0..n)
            .map(|i| text.replace("processor\t: 0", &format!("processor\t: {i}")))
            .collect()
    }

    #[test]
    fn cascade_lake_by_hand() {
        let mut cpu = parse_cpuinfo(XEON_CASCADE_LAKE);
        assert_eq!(cpu.processors, 2);
        cpu.processors = 8;
        // 32 GiB = 34.359738368 GB.
        let c = coefficients(&cpu, 32 * 1024 * 1024, &ModelOverrides::default()).unwrap();
        assert_eq!(c.family, "cascade_lake");
        // 8 × (0.64 + (3.97 − 0.64) × 0.5) = 8 × 2.305 = 18.44 W.
        let (cpu_w, mem_w) = c.watts(0.5);
        assert!((cpu_w - 18.44).abs() < 1e-9, "{cpu_w}");
        // 34.359738368 × 0.392 = 13.469017440256 W.
        assert!((mem_w - 13.469_017_440_256).abs() < 1e-9, "{mem_w}");
        // Idle and full load: 5.12 W and 31.76 W.
        assert!((c.watts(0.0).0 - 5.12).abs() < 1e-9);
        assert!((c.watts(1.0).0 - 31.76).abs() < 1e-9);
    }

    #[test]
    fn graviton2_by_hand() {
        let text = "processor\t: 0\nBogoMIPS\t: 243.75\nCPU implementer\t: 0x41\n\
                    CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n\n\
                    processor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n\
                    processor\t: 2\n\nprocessor\t: 3\n";
        let cpu = parse_cpuinfo(text);
        let c = coefficients(&cpu, 16_000_000, &ModelOverrides::default()).unwrap();
        assert_eq!((c.family.as_str(), c.vcpus), ("graviton2", 4));
        // 4 × (0.47 + 1.22 × 0.25) = 4 × 0.775 = 3.1 W.
        assert!((c.watts(0.25).0 - 3.1).abs() < 1e-9);
    }

    #[test]
    fn unknown_cpus_use_the_average_and_overrides_win() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n\
                    model name\t: AMD EPYC\nstepping\t: 1\n";
        let cpu = parse_cpuinfo(&cpus(text, 2));
        let c = coefficients(&cpu, 1_000_000, &ModelOverrides::default()).unwrap();
        assert_eq!(c.family, "average");
        assert!(
            c.identified
                .contains("AMD EPYC (family 26, model 2, stepping 1) is not in")
        );
        // 2 × (0.74 + 2.76 × 1) = 7 W.
        assert!((c.watts(1.0).0 - 7.0).abs() < 1e-9);

        let o = ModelOverrides {
            family: Family::from_str("haswell", false).ok(),
            max_watts_per_vcpu: Some(10.0),
            ..Default::default()
        };
        let c = coefficients(&cpu, 1_000_000, &o).unwrap();
        assert_eq!((c.idle_watts_per_vcpu, c.max_watts_per_vcpu), (1.0, 10.0));
        assert!(Family::from_str("pentium", false).is_err());
        // Below the detected family's idle figure: known only once the CPU is.
        let bad = ModelOverrides {
            max_watts_per_vcpu: Some(0.1),
            ..Default::default()
        };
        assert!(bad.check().is_ok());
        assert!(
            coefficients(&cpu, 1, &bad)
                .unwrap_err()
                .to_string()
                .contains("below its idle")
        );
        let bad = ModelOverrides {
            max_watts_per_vcpu: Some(-1.0),
            ..Default::default()
        };
        assert!(
            coefficients(&cpu, 1, &bad)
                .unwrap_err()
                .to_string()
                .contains("--power.model.max-watts-per-vcpu -1 must be a non-negative number")
        );
    }

    #[test]
    fn families_by_model_number() {
        let intel = |model, stepping| CpuInfo {
            vendor: "GenuineIntel".into(),
            family: Some(6),
            model: Some(model),
            stepping: Some(stepping),
            processors: 1,
            ..Default::default()
        };
        let name = |c: &CpuInfo| identify(c).map(|f| f.name);
        assert_eq!(name(&intel(85, 4)), Some("skylake"));
        assert_eq!(name(&intel(85, 7)), Some("cascade_lake"));
        assert_eq!(name(&intel(63, 2)), Some("haswell"));
        assert_eq!(name(&intel(79, 1)), Some("broadwell"));
        assert_eq!(name(&intel(45, 7)), Some("sandy_bridge"));
        assert_eq!(name(&intel(143, 8)), None);
        let rome = CpuInfo {
            vendor: "AuthenticAMD".into(),
            family: Some(23),
            model: Some(49),
            ..Default::default()
        };
        assert_eq!(name(&rome), Some("epyc_2nd_gen"));
    }

    #[test]
    fn integrates_busy_time_exactly() {
        let cpu = parse_cpuinfo(XEON_CASCADE_LAKE); // 2 vCPUs
        let c = coefficients(&cpu, 10_000_000, &ModelOverrides::default()).unwrap();
        let mem_w = c.watts(0.0).1;
        let mut m = Model::new(c);
        let read = |m: &mut Model, s: u64, busy: f64| {
            m.read(&ReadContext {
                at: Duration::from_secs(s + 1000),
                busy: Some(BusySample {
                    at: Duration::from_secs(s),
                    seconds: busy,
                }),
            })
        };
        read(&mut m, 10, 100.0);
        // 4 s, 3 busy CPU-seconds: 2 × 0.64 × 4 + 3.33 × 3 = 5.12 + 9.99 = 15.11 J.
        let r = read(&mut m, 14, 103.0);
        assert!((r.zones[1].1 - 15.11).abs() < 1e-9, "{:?}", r.zones);
        assert!((r.zones[0].1 - mem_w * 4.0).abs() < 1e-9);
        // A lump of busy time beyond vCPUs × dt (a long task charged at its next switch) is
        // spread over the next intervals: full load now, the remaining 5 s over the next ones.
        let r = read(&mut m, 15, 110.0);
        assert!((r.zones[1].1 - (15.11 + 2.0 * 3.97)).abs() < 1e-9);
        let r = read(&mut m, 17, 110.0);
        assert!((r.zones[1].1 - (15.11 + 3.0 * 2.0 * 3.97)).abs() < 1e-9);
        let r = read(&mut m, 19, 110.0);
        let expected = 15.11 + 3.0 * 2.0 * 3.97 + 2.0 * 0.64 * 2.0 + 3.33;
        assert!((r.zones[1].1 - expected).abs() < 1e-9, "{:?}", r.zones);
        // A missing read changes nothing, and says so.
        let none = m.read(&ReadContext {
            at: Duration::from_secs(20),
            busy: None,
        });
        assert_eq!(none.zones[1], r.zones[1]);
        assert_eq!(none.errors.len(), 1);
        assert_eq!(none.unread, ["dram", "package"]);
    }

    #[test]
    fn this_machine_has_a_model() {
        let o = open(Path::new("/proc"), &ModelOverrides::default()).unwrap();
        assert!(o.estimated);
        assert!(o.description.starts_with("power is modelled, not measured"));
    }
}
