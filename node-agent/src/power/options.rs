//! The power layer's flags: where the host's files are, which sources to use, the ceiling, and
//! the model's coefficients.

use std::path::PathBuf;

use super::{
    SourceError, SourceKind,
    hwmon::{ChipFile, ChipRules},
    model::ModelOverrides,
    zone::DEFAULT_CEILING_WATTS,
};
use crate::flags::positive_watts;

#[derive(clap::Args, Clone, Debug)]
pub struct PowerOptions {
    /// Where sysfs is mounted: power sources (powercap, hwmon, the perf power PMU) are read
    /// below it. The eBPF side always uses the running kernel.
    #[arg(
        long = "path.sysfs",
        value_name = "PATH",
        default_value = "/sys",
        global = true
    )]
    pub sysfs: PathBuf,

    /// Where procfs is mounted: cpuinfo and meminfo for the power model are read below it.
    #[arg(
        long = "path.procfs",
        value_name = "PATH",
        default_value = "/proc",
        global = true
    )]
    pub procfs: PathBuf,

    /// Power sources in order of preference; the first that works here is used.
    #[arg(
        long = "power.sources",
        value_name = "SOURCES",
        value_enum,
        value_delimiter = ',',
        default_value = "perf,powercap,hwmon,model",
        global = true
    )]
    pub preference: Vec<SourceKind>,

    /// Use this power source and no other (fail if it cannot be used).
    #[arg(
        long = "power-source",
        value_name = "SOURCE",
        value_enum,
        global = true
    )]
    pub forced: Option<SourceKind>,

    /// The most power one energy counter (a socket's zone, one sensor) can show: readings
    /// implying more are dropped and counted, never exported as spikes. Whole-platform meters
    /// (psys, an ACPI power meter) get 20 times this.
    #[arg(
        long = "power.ceiling-watts",
        value_name = "WATTS",
        default_value_t = DEFAULT_CEILING_WATTS,
        value_parser = positive_watts,
        allow_negative_numbers = true,
        global = true
    )]
    pub ceiling_watts: f64,

    /// Extra hwmon chip rules (which voltage goes with which current, which channels are
    /// shunts), one chip a line in the format of the built-in table: `NAME pair=IN:CURR,…
    /// shunt=N,… skip-in=N,… skip-curr=N,… index=no`. A chip named here replaces its built-in
    /// rule.
    #[arg(
        long = "power.hwmon.chips",
        value_name = "FILE",
        value_parser = ChipFile::parse_flag,
        global = true
    )]
    pub hwmon_chips: Option<ChipFile>,

    #[command(flatten)]
    pub model: ModelOverrides,
}

impl Default for PowerOptions {
    /// The flags' defaults.
    fn default() -> Self {
        crate::flags::defaults()
    }
}

impl PowerOptions {
    /// The hwmon chip table with `--power.hwmon.chips` over it.
    pub fn chip_rules(&self) -> ChipRules {
        ChipRules::new(self.hwmon_chips.as_ref())
    }

    /// What the flags' value parsers cannot check one at a time; the error names the flags.
    pub fn check(&self) -> Result<(), SourceError> {
        Ok(self.model.check()?)
    }
}
