//! Kernel counters: the sched_switch accounting program and its maps ([`KernelCounters`]:
//! loading, attaching, map reads and deletes), and the cgroup lifecycle over those reads (the
//! `CgroupLedger` in `ledger.rs`: pure, tested without root), into immutable
//! [`CountersSnapshot`]s. Each cgroup id reports what the kernel counted for it. With
//! `--metrics.processes`, the same for each process in each cgroup (`processes.rs`: exits seen
//! in procfs, names read there), and [`cpuinfo`]: the logical CPUs as procfs describes them.

mod counters;
pub mod cpuinfo;
mod error;
mod ledger;
mod options;
mod pmu;
pub mod probe;
mod processes;
pub mod snapshot;

pub use counters::{EBPF_OBJECT, KernelCounters, attach};
pub use cpuinfo::CpuInfo;
pub use error::KernelError;
pub(crate) use ledger::CgroupLedger;
pub use options::{KernelOptions, PmuMode};
pub use snapshot::{
    CgroupSample, CountersSnapshot, CpuTime, PmuCounters, ProcessNames, ProcessSample,
    ProcessesRead,
};
