//! Wattlet's in-kernel accounting: on every context switch, charge the time since this CPU's
//! previous switch to the cgroup of the task being switched out.
//!
//! At `sched_switch`, `current` is still the outgoing task, so `bpf_get_current_cgroup_id()` and
//! `bpf_get_current_pid_tgid()` describe it without reading any kernel struct (Rust eBPF has no
//! CO-RE relocations). All state is per CPU: no atomics on the hot path.
//!
//! This library holds the maps and the accounting; each binary is one eBPF object and names its
//! programs: `node-agent` (src/main.rs) is the object the agent embeds and loads on every node,
//! `node-agent-bench` (src/bench.rs) adds the benchmark's reference programs beside the same
//! accounting program.
#![no_std]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_CPU, BPF_NOEXIST, bpf_perf_event_value},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, generated::bpf_perf_event_read_value,
    },
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, PerfEventArray},
    programs::BtfTracePointContext,
};
use node_agent_common::{
    CgroupCounters, CpuCounters, PMU_CYCLES, PMU_INSTRUCTIONS, PROCESS_SLOTS, ProcessCache,
    ProcessKey,
};

/// Per-CPU counters per cgroup id. Plain (not LRU) per-CPU hash: LRU costs about twice as much
/// per event and evicts silently; the agent deletes dead cgroups itself. Sized at load time.
#[map]
static CGROUPS: PerCpuHashMap<u64, CgroupCounters> = PerCpuHashMap::with_max_entries(1, 0);

#[map]
static CPUS: PerCpuArray<CpuCounters> = PerCpuArray::with_max_entries(1, 0);

/// One perf event fd per CPU, inserted by the agent when the CPU has a PMU.
#[map]
static CYCLES: PerfEventArray<u32> = PerfEventArray::new(0);
#[map]
static INSTRUCTIONS: PerfEventArray<u32> = PerfEventArray::new(0);

/// Which PMU counters the agent opened (bits PMU_CYCLES, PMU_INSTRUCTIONS); set at load time.
#[unsafe(no_mangle)]
static PMU_FLAGS: u32 = 0;

/// CPU nanoseconds per process and cgroup, summed from the CPUs' caches as slots are taken over.
/// Plain per-CPU hash like CGROUPS; the agent deletes exited processes. Sized at load time (one
/// entry when processes are not counted).
#[map]
static PROCESSES: PerCpuHashMap<ProcessKey, u64> = PerCpuHashMap::with_max_entries(1, 0);

/// Each CPU's cache in front of PROCESSES (see `ProcessCache`).
#[map]
static PROCESS_CACHE: PerCpuArray<ProcessCache> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero when the agent counts CPU time per process; set at load time. The kernel sees it as
/// a constant (a frozen read-only map), so with 0 the verifier removes the process accounting
/// from the program before it ever runs.
#[unsafe(no_mangle)]
static TRACK_PROCESSES: u32 = 0;

/// `prev_state` value of a task that is still runnable (TASK_RUNNING).
const TASK_RUNNING: u64 = 0;

/// The body of the `sched_switch` program (`tp_btf/sched_switch`), which each object declares.
#[inline(always)]
pub fn account(ctx: &BtfTracePointContext) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(cpu) = CPUS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array slot, only touched by this program on this CPU with preemption off.
    let cpu = unsafe { &mut *cpu };

    // SAFETY: a valid, aligned reference. Volatile so that the compiler does not fold the 0 it
    // was compiled with: the agent sets the real value at load time.
    let flags = unsafe { core::ptr::read_volatile(&PMU_FLAGS) };
    let cycles = if flags & PMU_CYCLES != 0 {
        pmu_delta(&CYCLES, &mut cpu.last_cycles)
    } else {
        0
    };
    let instructions = if flags & PMU_INSTRUCTIONS != 0 {
        pmu_delta(&INSTRUCTIONS, &mut cpu.last_instructions)
    } else {
        0
    };

    // The idle task is pid 0 on every CPU; its time is idle, not any cgroup's. Remember its
    // address (fixed for the CPU's lifetime, so learned once) so that switching *to* it can be
    // recognised from the `next` argument.
    let pid_tgid = bpf_get_current_pid_tgid();
    let prev_is_idle = pid_tgid as u32 == 0;
    if prev_is_idle && cpu.idle_task == 0 {
        // SAFETY: bpf_get_current_task has no preconditions; the address is never dereferenced.
        cpu.idle_task = unsafe { bpf_get_current_task() };
    }
    let next: u64 = ctx.arg(2);
    cpu.running_idle = (cpu.idle_task != 0 && next == cpu.idle_task) as u64;

    let last = cpu.last_switch_ns;
    cpu.last_switch_ns = now;
    if last == 0 {
        // First switch seen on this CPU: nothing to charge yet.
        return;
    }
    let delta = now.saturating_sub(last);

    if prev_is_idle {
        cpu.idle_ns += delta;
        return;
    }
    cpu.busy_ns += delta;

    // sched_switch(bool preempt, task_struct *prev, task_struct *next, unsigned int prev_state):
    // the switch is voluntary when not a preemption and the task is no longer runnable, which is
    // how the kernel itself counts nvcsw/nivcsw.
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    let voluntary = (preempt & 0xff) == 0 && (prev_state & 0xffff_ffff) != TASK_RUNNING;

    let charge = CgroupCounters {
        cpu_ns: delta,
        switches_voluntary: voluntary as u64,
        switches_involuntary: (!voluntary) as u64,
        cycles,
        instructions,
    };
    // SAFETY: bpf_get_current_cgroup_id has no preconditions.
    let id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: as for PMU_FLAGS.
    if unsafe { core::ptr::read_volatile(&TRACK_PROCESSES) } != 0 {
        charge_process((pid_tgid >> 32) as u32, id, delta);
    }
    if let Some(entry) = CGROUPS.get_ptr_mut(id) {
        // SAFETY: this CPU's slot of a per-CPU value.
        unsafe { (*entry).add(&charge) };
        return;
    }
    if CGROUPS.insert(id, charge, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Another CPU may have inserted it meanwhile; otherwise the map is full.
    match CGROUPS.get_ptr_mut(id) {
        // SAFETY: as above.
        Some(entry) => unsafe { (*entry).add(&charge) },
        None => cpu.overflow.add(&charge),
    }
}

/// Charges `delta` ns to the process in this CPU's cache; a process that finds its slot held by
/// another first writes the other's time to the map.
#[inline(always)]
fn charge_process(tgid: u32, cgroup_id: u64, delta: u64) {
    let Some(cache) = PROCESS_CACHE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array slot, only touched by this program on this CPU with preemption off.
    let cache = unsafe { &mut *cache };
    let slot = &mut cache.slots[tgid as usize & (PROCESS_SLOTS - 1)];
    if slot.key.tgid == tgid && slot.key.cgroup_id == cgroup_id {
        slot.cpu_ns += delta;
        return;
    }
    if slot.cpu_ns != 0 && !add_process(&slot.key, slot.cpu_ns) {
        cache.overflow_ns += slot.cpu_ns;
    }
    slot.key = ProcessKey {
        tgid,
        pad: 0,
        cgroup_id,
    };
    slot.cpu_ns = delta;
}

/// Adds `ns` to the process's entry (creating it); false if the map is full.
#[inline(always)]
fn add_process(key: &ProcessKey, ns: u64) -> bool {
    if let Some(entry) = PROCESSES.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value.
        unsafe { *entry += ns };
        return true;
    }
    if PROCESSES.insert(key, ns, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    // Another CPU may have inserted it meanwhile; otherwise the map is full.
    match PROCESSES.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: as above.
            unsafe { *entry += ns };
            true
        }
        None => false,
    }
}

/// Reads this CPU's counter from `array` and returns how much it moved since `last`.
#[inline(always)]
fn pmu_delta(array: &PerfEventArray<u32>, last: &mut u64) -> u64 {
    let mut value = bpf_perf_event_value {
        counter: 0,
        enabled: 0,
        running: 0,
    };
    // SAFETY: PerfEventArray is repr(transparent) over its map definition, which is what the
    // helper takes; the buffer is a valid, correctly sized bpf_perf_event_value.
    let ret = unsafe {
        bpf_perf_event_read_value(
            array as *const _ as *mut c_void,
            BPF_F_CURRENT_CPU,
            &mut value,
            core::mem::size_of::<bpf_perf_event_value>() as u32,
        )
    };
    if ret != 0 {
        return 0;
    }
    let prev = *last;
    *last = value.counter;
    if prev == 0 {
        0
    } else {
        value.counter.wrapping_sub(prev)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
