//! hwmon sensors under `<sysfs>/class/hwmon`: energy counters (`energyN_input`, µJ), power
//! sensors (`powerN_input` / `_average`, µW) integrated over time, and, for chips that report
//! only voltages (`inN`, mV) and currents (`currN`, mA), their products, paired by label, by the
//! chip table ([`chips`]) or by index. amd_energy's per-socket and per-core counters become the
//! `package` and `core` zones; an ACPI power meter is the `platform` zone; other sensors are
//! named by their label.
//!
//! - [`channels`]: what a chip shows in sysfs;
//! - [`pairing`]: what each channel becomes and why (pure);
//! - [`chips`]: the chip table (data, `chips.txt`) and `--power.hwmon.chips`;
//! - [`source`]: the scan, the source read at each interval, and the survey `wattlet check`
//!   lists.

pub mod channels;
pub mod chips;
pub mod pairing;
mod source;
#[cfg(test)]
mod tests;

pub use chips::{ChipFile, ChipRules};
pub use pairing::{Decision, PairedBy, Skip, Use};
pub use source::{ChipSurvey, Hwmon, HwmonError, Seen, open, product_watts, survey, zone_for};
