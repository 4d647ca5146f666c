//! Kernel counters: the sched_switch accounting program and its maps ([`KernelCounters`]:
//! loading, attaching, map reads and deletes), and the cgroup lifecycle over those reads (the
//! `CgroupLedger` in `ledger.rs`: pure, tested without root), into immutable
//! [`CountersSnapshot`]s. Each cgroup id reports what the kernel counted for it.

mod counters;
mod error;
mod ledger;
mod pmu;
pub mod probe;
pub mod snapshot;
pub mod sys;

use std::time::Duration;

pub use counters::{EBPF_OBJECT, KernelCounters, attach};
pub use error::KernelError;
pub(crate) use ledger::CgroupLedger;
pub use snapshot::{CgroupSample, CountersSnapshot, CpuTime, PmuCounters};

/// Which PMU counters to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PmuMode {
    /// Hardware cycles and instructions where the CPU has a PMU; CPU time alone otherwise.
    Auto,
    /// Never open PMU counters.
    Off,
    /// A software clock event as a stand-in for cycles: for testing the counter path on machines
    /// without a PMU. Not a measurement of cycles.
    SoftwareStandIn,
}

#[derive(Clone, Debug)]
pub struct KernelOptions {
    /// Capacity of the per-CPU cgroup map; cgroups beyond it are counted in the overflow slot.
    pub max_cgroups: u32,
    pub pmu: PmuMode,
    /// How long a removed cgroup's final totals stay in snapshots.
    pub gone_retention: Duration,
    /// At most this many removed cgroups are remembered (oldest dropped first).
    pub max_gone: usize,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            max_cgroups: node_agent_common::DEFAULT_MAX_CGROUPS,
            pmu: PmuMode::Auto,
            gone_retention: Duration::from_secs(600),
            max_gone: 10_000,
        }
    }
}
