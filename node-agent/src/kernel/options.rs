//! The kernel counters' flags.

use std::{path::PathBuf, time::Duration};

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

#[derive(clap::Args, Clone, Debug)]
pub struct KernelOptions {
    /// Capacity of the in-kernel cgroup map. Memory: this × possible CPUs × 40 bytes. Cgroups
    /// beyond it are still counted, in an overflow slot (wattlet_bpf_overflow_cpu_seconds_total).
    #[arg(
        long = "bpf.max-cgroups",
        default_value_t = node_agent_common::DEFAULT_MAX_CGROUPS,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub max_cgroups: u32,

    /// PMU counters (cycles, instructions): auto uses them where the CPU has a PMU.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub pmu: PmuMode,

    /// Series for the N processes that used the most energy in the last interval, the rest summed
    /// into one `(other)` series; 0 = no per-process counting at all (the in-kernel program then
    /// does none of it). 20 is a `top` screen: the processes worth a look, and a bound on series.
    #[arg(
        long = "metrics.processes",
        value_name = "N",
        default_value_t = 20,
        global = true
    )]
    pub processes: usize,

    /// Capacity of the in-kernel process map (processes that ran since the last interval, per
    /// cgroup). Memory: this × possible CPUs × 8 bytes. Beyond it, time goes to `(other)`.
    #[arg(
        long = "bpf.max-processes",
        default_value_t = node_agent_common::DEFAULT_MAX_PROCESSES,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub max_processes: u32,

    /// Where procfs is mounted, to name processes and see them exit: `--path.procfs`, set by the
    /// agent (the flag belongs to the power layer).
    #[arg(skip = PathBuf::from("/proc"))]
    pub procfs: PathBuf,

    /// How long an exited process's final totals stay in snapshots (enough for the attribution
    /// to take its last interval).
    #[arg(skip = Duration::from_secs(30))]
    pub process_retention: Duration,

    /// How long a removed cgroup's final totals stay in snapshots: `--retention.terminated`,
    /// set by the agent (the flag belongs to the attribution ledger).
    #[arg(skip = Duration::from_secs(600))]
    pub gone_retention: Duration,

    /// At most this many removed cgroups are remembered (oldest dropped first).
    #[arg(skip = 10_000usize)]
    pub max_gone: usize,
}

impl Default for KernelOptions {
    /// The flags' defaults.
    fn default() -> Self {
        crate::flags::defaults()
    }
}
