//! The eBPF object of `cargo xtask bench`: the agent's accounting program and two reference
//! programs on the same tracepoint, whose cost per event frames its cost. Never loaded by the
//! agent.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};

/// The same program as the agent's object (src/main.rs).
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    node_agent_ebpf::account(&ctx);
    0
}

/// What any program on this tracepoint costs: nothing done.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[map]
static FLOOR: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// The least any correct accounting must do: read the clock and the cgroup id, store per CPU.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_floor(_ctx: BtfTracePointContext) -> i32 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: bpf_get_current_cgroup_id has no preconditions.
    let id = unsafe { bpf_get_current_cgroup_id() };
    if let Some(slot) = FLOOR.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array, only touched by this program on this CPU
        // with preemption off.
        unsafe { *slot = [now, id] };
    }
    0
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
