//! Why a power source cannot be used here, or why one read of it failed: each source's own error,
//! in words that name the file or setting and the fix.

use std::fmt::Display;

pub use super::sysfs::ReadError;
use super::{
    hwmon::HwmonError, model::ModelError, perf::PerfError, powercap::PowercapError,
    redfish::RedfishError,
};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Perf(#[from] PerfError),
    #[error(transparent)]
    Powercap(#[from] PowercapError),
    #[error(transparent)]
    Hwmon(#[from] HwmonError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Redfish(#[from] RedfishError),
}

/// Several reasons as one line.
pub(crate) fn joined<E: Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
