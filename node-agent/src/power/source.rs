//! What every power source is: something that reads the cumulative energy per zone since it was
//! opened.

use std::{fmt, time::Duration};

use super::{DropReason, SourceError, select};

/// The kinds of source, in the default order of preference (`--power.sources`). Adding one is a
/// variant here and a row in the selection's table of sources.
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
    /// Every kind, in the default order of preference.
    pub fn all() -> &'static [SourceKind] {
        <Self as clap::ValueEnum>::value_variants()
    }

    /// The name on the command line and in the `source` label.
    pub fn as_str(self) -> &'static str {
        select::source(self).name
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
#[derive(Debug, Default)]
pub struct SourceReading {
    /// Joules per zone since the source was opened, sorted by zone.
    pub zones: Vec<(String, f64)>,
    /// Readings dropped at this read as implausible.
    pub dropped: Vec<(String, DropReason)>,
    /// Zones with a counter that could not be read at this read: their energy is picked up at the
    /// next good read, so no power is reported for them now.
    pub unread: Vec<String>,
    /// Files or counters that could not be read at this read, each with its path and the fix.
    pub errors: Vec<SourceError>,
    /// Zones whose meter has not answered for longer than its staleness bound: their energy is
    /// not counted meanwhile, and their power is measured again from the next fresh reading.
    pub stale: Vec<String>,
}

pub trait EnergySource: Send {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading;

    /// Where each zone is read (zone, path), for sources that have a path per zone.
    fn zone_paths(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What a whole-platform meter reads now, as Kepler labels it; none until it knows.
    fn platform_labels(&self) -> Option<PlatformLabels> {
        None
    }
}

/// What a whole-platform meter reads, as Kepler's `kepler_platform_watts` labels it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformLabels {
    /// The BMC (its host, as in `--power.redfish.url`).
    pub bmc_id: String,
    /// The chassis whose figure it is.
    pub chassis_id: String,
    /// The PowerControl entry's `MemberId` and `Name`, when the figure is one; empty for the
    /// power supplies' input power.
    pub power_control_id: String,
    pub power_control_name: String,
    /// Which resource gives the figure, in words.
    pub resource: String,
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

impl Opened {
    /// A measured source with no idle figure of its own.
    pub fn measured(kind: SourceKind, description: String, source: Box<dyn EnergySource>) -> Self {
        Self {
            kind,
            estimated: false,
            description,
            model_family: None,
            idle_watts: Vec::new(),
            source,
        }
    }
}

/// The kinds of whole-platform meter, read next to the CPU source (`platform` zone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlatformKind {
    /// A BMC's Redfish service (`--power.redfish.url`).
    Redfish,
}

impl PlatformKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformKind::Redfish => "redfish",
        }
    }
}

impl fmt::Display for PlatformKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An opened whole-platform meter: its zones join the CPU source's in the same snapshot.
pub struct PlatformOpened {
    pub kind: PlatformKind,
    /// What it measures and where from (for `wattlet check` and the log).
    pub description: String,
    /// Whether it gave a reading when opened (a slow or failing BMC is still opened, and read
    /// in the background until it answers).
    pub answered: bool,
    pub source: Box<dyn EnergySource>,
}

impl fmt::Debug for PlatformOpened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformOpened")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}
