//! `perf_event_open` for one counting event on one CPU: the PMU counters the eBPF program reads
//! (cycles, instructions) and the RAPL energy events of the `power` PMU.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

/// perf_event_attr, up to PERF_ATTR_SIZE_VER0 (64 bytes): all we set.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const _: () = assert!(
    std::mem::size_of::<PerfEventAttr>() == 64,
    "PERF_ATTR_SIZE_VER0"
);

pub const PERF_TYPE_HARDWARE: u32 = 0;
pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
pub const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Opens a counting (non-sampling) event on one CPU, for all tasks, enabled from the start.
/// Reading the returned fd gives the count as a native-endian u64.
pub fn perf_event_open_cpu(type_: u32, config: u64, cpu: u32) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised perf_event_attr of the size it declares, alive
    // for the call; the kernel only reads it. pid -1 with a CPU and no group fd is a valid
    // combination (every task on that CPU).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_software_clock_opens_or_says_why() {
        // The software clock exists on every kernel; only the privileges can stop it.
        match perf_event_open_cpu(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, 0) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
                "{e}"
            ),
        }
    }
}
