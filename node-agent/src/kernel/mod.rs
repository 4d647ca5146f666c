//! Kernel counters: the sched_switch accounting program and its maps ([`KernelCounters`]:
//! loading, attaching, map reads and deletes), and the cgroup lifecycle over those reads (the
//! `CgroupLedger` in `ledger.rs`: pure, tested without root), into immutable
//! [`CountersSnapshot`]s. Each cgroup id reports what the kernel counted for it.

mod counters;
mod error;
mod ledger;
mod options;
mod pmu;
pub mod probe;
pub mod snapshot;

pub use counters::{EBPF_OBJECT, KernelCounters, attach};
pub use error::KernelError;
pub(crate) use ledger::CgroupLedger;
pub use options::{KernelOptions, PmuMode};
pub use snapshot::{CgroupSample, CountersSnapshot, CpuTime, PmuCounters};
