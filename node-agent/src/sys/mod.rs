//! Host syscalls, in one place: what the agent asks of the kernel besides reading files.
//!
//! - [`bpf`]: the map operations aya 0.14 does not offer (putting perf events into a
//!   PERF_EVENT_ARRAY; reading and deleting a per-CPU hash entry in one step);
//! - [`perf`]: `perf_event_open` for one counting event on one CPU (PMU counters, RAPL);
//! - [`clock`]: CLOCK_MONOTONIC (the time base of the eBPF programs) and this process's CPU time;
//! - [`uname`]: the kernel release;
//! - [`privileges`]: root and capabilities, and what to do without them.
//!
//! Each safe wrapper owns its safety argument: it checks what the syscall needs (buffer sizes,
//! map layouts) itself rather than trusting its caller.

pub mod bpf;
pub mod clock;
pub mod perf;
pub mod privileges;
pub mod uname;

pub use bpf::{percpu_for_each, percpu_lookup_and_delete, perf_array_set};
pub use clock::{monotonic_now, own_cpu_ns};
pub use perf::{
    PERF_COUNT_HW_CPU_CYCLES, PERF_COUNT_HW_INSTRUCTIONS, PERF_COUNT_SW_CPU_CLOCK,
    PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE, perf_event_open_cpu,
};
pub use privileges::{
    MissingPrivileges, NEEDS_PRIVILEGES, has_bpf_privileges, is_root, require_bpf_privileges,
};
pub use uname::kernel_release;
