//! Power sources: node energy per zone, measured (perf power PMU, powercap RAPL, hwmon) or, on
//! nodes without sensors, modelled and labelled as estimated.
//!
//! - [`EnergySource`]: what every source is — it reads the cumulative energy per zone since it
//!   was opened — and [`SourceKind`], the kinds of source;
//! - [`select`]: every source probed in the configured order, one chosen, and why (adding a
//!   source is a variant of [`SourceKind`] and a row in the selection's table);
//! - [`Meter`]: the chosen source's readings turned into [`PowerSnapshot`]s for attribution and
//!   the exporter;
//! - [`zone`]: zone names shared by every source, and the power ceilings;
//! - one module per source ([`perf`], [`powercap`], [`hwmon`], [`model`]), each with its errors,
//!   its fixtures and its tests; [`counter`] turns a raw hardware counter into joules;
//! - [`redfish`]: the server's BMC, a whole-platform meter read next to the CPU source (its
//!   `platform` zone joins the same snapshots);
//! - [`PowerOptions`]: the layer's flags.
//!
//! Every host path is below `--path.sysfs` or `--path.procfs`, so fixture trees stand in for the
//! host in tests.

pub mod counter;
mod error;
#[cfg(test)]
pub(crate) mod fixture;
pub mod hwmon;
mod meter;
pub mod model;
mod options;
pub mod perf;
pub mod powercap;
pub mod redfish;
mod select;
mod source;
pub(crate) mod sysfs;
pub mod zone;

pub use counter::{DropReason, EnergyCounter, PowerIntegrator, Update};
pub use error::{ReadError, SourceError};
pub use meter::{Meter, PlatformMeter, PowerSnapshot, ZoneSample};
pub use model::ModelOverrides;
pub use options::PowerOptions;
pub use select::{Probe, Selection, open, select};
pub use source::{
    BusySample, EnergySource, Opened, PlatformKind, PlatformLabels, PlatformOpened, ReadContext,
    SourceKind, SourceReading,
};
