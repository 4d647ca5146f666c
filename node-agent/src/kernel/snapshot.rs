//! What the kernel counters say at one instant, and the pure arithmetic that builds it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use node_agent_common::{CgroupCounters, CpuCounters, ProcessKey};

use super::cpuinfo::CpuInfo;

/// Where the kernel layer reads the clock; defined in [`crate::sys`].
pub use crate::sys::monotonic_now;

/// Sums one cgroup's per-CPU values.
pub fn sum_cgroup(per_cpu: &[CgroupCounters]) -> CgroupCounters {
    let mut total = CgroupCounters::default();
    for v in per_cpu {
        total.add(v);
    }
    total
}

/// One CPU's busy and idle time, cumulative since the program was attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub busy_ns: u64,
    pub idle_ns: u64,
}

/// Splits the per-CPU state into busy/idle per CPU and the summed overflow slot. `now_ns` is
/// CLOCK_MONOTONIC at the read: a CPU that is idle right now has been idle since its last switch,
/// time the kernel charges only when the idle period ends, so it is added here.
pub fn sum_cpus(per_cpu: &[CpuCounters], now_ns: u64) -> (Vec<CpuTime>, CgroupCounters) {
    let mut overflow = CgroupCounters::default();
    let cpus = per_cpu
        .iter()
        .map(|c| {
            overflow.add(&c.overflow);
            let pending_idle = if c.running_idle != 0 && c.last_switch_ns != 0 {
                now_ns.saturating_sub(c.last_switch_ns)
            } else {
                0
            };
            CpuTime {
                busy_ns: c.busy_ns,
                idle_ns: c.idle_ns + pending_idle,
            }
        })
        .collect();
    (cpus, overflow)
}

/// One cgroup in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSample {
    /// Path under the cgroup v2 root (`/` is the root cgroup: kernel threads, host processes);
    /// `None` for a cgroup that was created and removed between two reads.
    pub path: Option<Arc<str>>,
    /// What the kernel counted for this cgroup id since the agent started, including time
    /// before its removal. A cgroup re-created at the same path has a new id and starts at zero.
    pub counters: CgroupCounters,
    /// The cgroup has been removed; its totals are final.
    pub gone: bool,
}

/// A process's names, from procfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessNames {
    /// `/proc/<pid>/comm`.
    pub comm: Arc<str>,
    /// The target of `/proc/<pid>/exe`; empty where there is none (kernel threads) or it cannot
    /// be read.
    pub exe: Arc<str>,
}

/// A process in one cgroup, in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    /// CPU time the kernel counted for it in that cgroup since the agent started. Never goes
    /// back.
    pub cpu_ns: u64,
    /// Its names when the agent last looked; None if it exited before the agent could read them.
    pub names: Option<Arc<ProcessNames>>,
    /// The process has exited; its totals are final.
    pub gone: bool,
}

/// The per-process counts of one read (all empty when processes are not counted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessesRead {
    pub samples: BTreeMap<ProcessKey, ProcessSample>,
    /// Time that could not be charged to a process because the process map was full.
    pub overflow_ns: u64,
    /// Live entries in the process map after this read, and its capacity (0: not counted).
    pub map_entries: usize,
    pub map_capacity: u32,
    /// Entries of exited processes deleted from the map so far.
    pub map_deletions: u64,
}

/// Which PMU counters feed the cycles/instructions columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuCounters {
    /// No PMU: cycles and instructions stay 0; attribution uses CPU time.
    None,
    /// Hardware cycles and instructions.
    Hardware,
    /// A software clock standing in for cycles (tests only); instructions stay 0.
    SoftwareStandIn,
}

/// Everything the kernel counters say at one instant. Immutable once built.
#[derive(Clone, Debug)]
pub struct CountersSnapshot {
    /// CLOCK_MONOTONIC at the read, the clock the eBPF program uses.
    pub at: Duration,
    pub cgroups: BTreeMap<u64, CgroupSample>,
    /// Indexed by CPU number (all possible CPUs).
    pub cpus: Vec<CpuTime>,
    /// CLOCK_MONOTONIC when the per-CPU busy and idle times were read (after the cgroups).
    pub cpus_at: Duration,
    /// Time that could not be charged to a cgroup because the map was full.
    pub overflow: CgroupCounters,
    /// Live entries in the cgroup map after this read, and its capacity.
    pub map_entries: usize,
    pub map_capacity: u32,
    pub pmu: PmuCounters,
    /// Entries of removed cgroups deleted from the map so far.
    pub map_deletions: u64,
    /// Per process and cgroup, with `--metrics.processes`.
    pub processes: ProcessesRead,
    /// The logical CPUs as procfs describes them, read when the agent started.
    pub cpu_info: Arc<[CpuInfo]>,
}

impl CountersSnapshot {
    pub fn busy_ns(&self) -> u64 {
        self.cpus.iter().map(|c| c.busy_ns).sum()
    }
    pub fn idle_ns(&self) -> u64 {
        self.cpus.iter().map(|c| c.idle_ns).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(cpu_ns: u64, v: u64, i: u64) -> CgroupCounters {
        CgroupCounters {
            cpu_ns,
            switches_voluntary: v,
            switches_involuntary: i,
            cycles: cpu_ns * 3,
            instructions: cpu_ns * 2,
        }
    }

    #[test]
    fn sums_per_cpu_values() {
        let total = sum_cgroup(&[c(10, 1, 2), c(5, 0, 1), CgroupCounters::default()]);
        assert_eq!(total, c(15, 1, 3));
        assert_eq!(sum_cgroup(&[]), CgroupCounters::default());
    }

    #[test]
    fn splits_cpu_state() {
        let cpus = [
            CpuCounters {
                busy_ns: 7,
                idle_ns: 3,
                overflow: c(2, 1, 0),
                ..Default::default()
            },
            CpuCounters {
                busy_ns: 1,
                idle_ns: 9,
                overflow: c(1, 0, 1),
                // Idle since t=100: at t=150, 50 ns of idle are not charged yet.
                last_switch_ns: 100,
                running_idle: 1,
                ..Default::default()
            },
        ];
        let (times, overflow) = sum_cpus(&cpus, 150);
        assert_eq!(
            times,
            vec![
                CpuTime {
                    busy_ns: 7,
                    idle_ns: 3
                },
                CpuTime {
                    busy_ns: 1,
                    idle_ns: 59
                }
            ]
        );
        assert_eq!(overflow, c(3, 1, 1));
    }

    proptest! {
        #[test]
        fn sum_is_order_independent_and_additive(values in prop::collection::vec((0u64..1<<40, 0u64..1<<20, 0u64..1<<20), 0..64)) {
            let per_cpu: Vec<_> = values.iter().map(|&(a, b, d)| c(a, b, d)).collect();
            let mut reversed = per_cpu.clone();
            reversed.reverse();
            let total = sum_cgroup(&per_cpu);
            prop_assert_eq!(total, sum_cgroup(&reversed));
            prop_assert_eq!(total.cpu_ns, values.iter().map(|v| v.0).sum::<u64>());
            let (head, tail) = per_cpu.split_at(per_cpu.len() / 2);
            let mut parts = sum_cgroup(head);
            parts.add(&sum_cgroup(tail));
            prop_assert_eq!(parts, total);
        }
    }
}
