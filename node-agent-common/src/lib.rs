//! Types shared by Wattlet's in-kernel programs and its agent.
//!
//! Each struct here is the exact layout of a map value: the eBPF side writes it, the agent reads it
//! (with the `user` feature, which implements `aya::Pod`). Keeping one definition means both sides
//! always agree on the layout.
#![no_std]

/// Names of the programs, maps and globals in the eBPF objects; the agent and the benchmark look
/// them up by these names.
pub mod names {
    /// The sched_switch accounting program.
    pub const PROGRAM: &str = "sched_switch";
    /// Reference program, in the benchmark's object only: does nothing.
    pub const PROGRAM_EMPTY: &str = "sched_switch_empty";
    /// Reference program, in the benchmark's object only: clock + cgroup id + per-CPU array store.
    pub const PROGRAM_FLOOR: &str = "sched_switch_floor";
    /// The floor program's per-CPU array, in the benchmark's object only.
    pub const FLOOR: &str = "FLOOR";
    /// Per-CPU hash: cgroup id (u64) → [`CgroupCounters`](crate::CgroupCounters).
    pub const CGROUPS: &str = "CGROUPS";
    /// Per-CPU array of one [`CpuCounters`](crate::CpuCounters).
    pub const CPUS: &str = "CPUS";
    /// Perf event arrays (one fd per CPU) for the hardware counters.
    pub const CYCLES: &str = "CYCLES";
    pub const INSTRUCTIONS: &str = "INSTRUCTIONS";
    /// Global set at load time: bit 0 = read CYCLES, bit 1 = read INSTRUCTIONS.
    pub const PMU_FLAGS: &str = "PMU_FLAGS";
    /// Global set at load time: non-zero = count CPU time per process (`--metrics.processes`).
    pub const TRACK_PROCESSES: &str = "TRACK_PROCESSES";
    /// Per-CPU hash: [`ProcessKey`](crate::ProcessKey) → CPU nanoseconds (u64).
    pub const PROCESSES: &str = "PROCESSES";
    /// Per-CPU array of one [`ProcessCache`](crate::ProcessCache).
    pub const PROCESS_CACHE: &str = "PROCESS_CACHE";
}

/// Bits of the `PMU_FLAGS` global.
pub const PMU_CYCLES: u32 = 1;
pub const PMU_INSTRUCTIONS: u32 = 2;

/// Default number of cgroups the per-CPU hash holds; memory is this × possible CPUs × 40 bytes.
pub const DEFAULT_MAX_CGROUPS: u32 = 4096;

/// Default capacity of the per-process map when processes are counted; memory is this × possible
/// CPUs × 8 bytes, plus the kernel's ~80 bytes per entry.
pub const DEFAULT_MAX_PROCESSES: u32 = 8192;

/// Slots of each CPU's process cache (a power of two: the slot is the tgid's low bits).
pub const PROCESS_SLOTS: usize = 128;

/// A process (thread group) in one cgroup: the key of the per-process map. A process that moves
/// to another cgroup continues under a new key, so its time in each cgroup stays apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessKey {
    /// The thread group id (the process id, in the initial PID namespace).
    pub tgid: u32,
    /// Always 0: hash keys are compared byte for byte.
    pub pad: u32,
    pub cgroup_id: u64,
}

/// One slot of a CPU's process cache: CPU time charged to `key` on this CPU and not yet added to
/// the per-process map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSlot {
    pub key: ProcessKey,
    pub cpu_ns: u64,
}

/// A CPU's cache in front of the per-process map: most switches charge a process that is already
/// in its slot (threads of one process, a process and the idle task taking turns), an array
/// access instead of a hash update. A slot is written to the map only when another process takes
/// it over, so the agent adds the slots to what it reads from the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessCache {
    /// Indexed by `tgid % PROCESS_SLOTS`.
    pub slots: [ProcessSlot; PROCESS_SLOTS],
    /// Time of evicted slots that did not fit in the full per-process map.
    pub overflow_ns: u64,
}

impl Default for ProcessCache {
    fn default() -> Self {
        Self {
            slots: [ProcessSlot::default(); PROCESS_SLOTS],
            overflow_ns: 0,
        }
    }
}

/// What one cgroup did on one CPU, cumulative since the entry was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    /// Nanoseconds its tasks were on the CPU.
    pub cpu_ns: u64,
    /// Times one of its tasks gave up the CPU (blocked, slept, waited).
    pub switches_voluntary: u64,
    /// Times one of its tasks was preempted while runnable.
    pub switches_involuntary: u64,
    /// PMU cycles while its tasks ran (0 without a PMU).
    pub cycles: u64,
    /// PMU instructions retired while its tasks ran (0 without a PMU).
    pub instructions: u64,
}

impl CgroupCounters {
    #[inline(always)]
    pub fn add(&mut self, other: &Self) {
        self.cpu_ns = self.cpu_ns.wrapping_add(other.cpu_ns);
        self.switches_voluntary = self
            .switches_voluntary
            .wrapping_add(other.switches_voluntary);
        self.switches_involuntary = self
            .switches_involuntary
            .wrapping_add(other.switches_involuntary);
        self.cycles = self.cycles.wrapping_add(other.cycles);
        self.instructions = self.instructions.wrapping_add(other.instructions);
    }
}

/// One CPU's accounting state, cumulative since the program was attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// `bpf_ktime_get_ns()` at this CPU's previous context switch (0 = none seen yet).
    pub last_switch_ns: u64,
    /// Last raw values of the PMU counters, to charge deltas.
    pub last_cycles: u64,
    pub last_instructions: u64,
    /// Time charged to any task other than the idle task.
    pub busy_ns: u64,
    /// Time of the idle task (pid 0).
    pub idle_ns: u64,
    /// What could not be charged to a cgroup because the cgroup map was full.
    pub overflow: CgroupCounters,
    /// Address of this CPU's idle task (learned when it is switched out; 0 until then). Only
    /// compared with the `next` argument, never dereferenced.
    pub idle_task: u64,
    /// 1 while the task switched in last is the idle task: the time since `last_switch_ns` is
    /// idle time not yet charged, which the agent adds when it reads.
    pub running_idle: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), Copy, made only of u64s (no padding), so any bit pattern is valid.
    unsafe impl aya::Pod for super::CgroupCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuCounters {}
    // SAFETY: repr(C), Copy, a u32 pair then a u64 (no padding), so any bit pattern is valid.
    unsafe impl aya::Pod for super::ProcessKey {}
    // SAFETY: repr(C), Copy, a ProcessKey then a u64 (no padding).
    unsafe impl aya::Pod for super::ProcessSlot {}
    // SAFETY: repr(C), Copy, an array of ProcessSlot then a u64 (no padding).
    unsafe impl aya::Pod for super::ProcessCache {}
}
