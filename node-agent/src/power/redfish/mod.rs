//! Whole-platform power from the server's BMC over Redfish (DMTF DSP0266), as the `platform`
//! zone next to the CPU source's zones: what the server draws from the wall, fans, disks,
//! NICs and the supplies' own losses included.
//!
//! - [`options`]: the `--power.redfish.*` flags, checked when parsed;
//! - [`client`]: HTTPS with basic authentication, the BMC's CA or the system's;
//! - [`service`]: which system is this node, which chassis and resource give its power, and
//!   reading it;
//! - [`source`]: the background reader (its own schedule, timeout, backoff) and the source
//!   that integrates its readings, with a staleness bound.

mod client;
mod error;
mod options;
pub(crate) mod service;
mod source;
#[cfg(test)]
mod tests;

pub use error::RedfishError;
pub use options::{CaFile, Credentials, RedfishOptions, RedfishUrl};
pub use source::{Redfish, open};
