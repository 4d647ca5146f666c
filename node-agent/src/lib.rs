//! Wattlet's node agent. Data flows one way:
//! kernel counters ([`kernel`]), the cgroup hierarchy ([`cgroup`]) and node energy ([`power`]) →
//! an immutable snapshot ([`snapshot`]) → exporters ([`exporter`]). Exporters never measure; a scrape reads the latest snapshot.
//!
//! Beneath every layer: host syscalls in [`sys`] (bpf map ops, perf_event_open, clocks, uname,
//! capabilities) and units in [`units`]. Each layer declares its own flags; [`config`] flattens
//! them into the command line, with what they share in [`flags`].
//!
//! [`fuzzing`] holds the bodies of the fuzz targets, one per parser of outside input.

pub mod agent;
pub mod attribution;
pub mod carbon;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod exporter;
pub mod flags;
pub mod fuzzing;
pub(crate) mod http_client;
pub mod ids;
pub mod kernel;
pub mod kubernetes;
pub mod power;
pub mod report;
pub(crate) mod retention;
pub mod snapshot;
pub mod sys;
pub mod units;
pub mod workload;
