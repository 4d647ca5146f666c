//! Wattlet's node agent. Data flows one way:
//! kernel counters ([`kernel`]), the cgroup hierarchy ([`cgroup`]) and node energy ([`power`]) →
//! an immutable snapshot → exporters ([`exporter`]). Exporters never measure; a scrape reads the latest snapshot.

pub mod agent;
pub mod attribution;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod exporter;
pub mod kernel;
pub mod kubernetes;
pub mod power;
pub(crate) mod retention;
pub mod workload;
