//! The few syscalls aya 0.14 does not offer, in one place so that moving to a newer aya is a
//! one-file change:
//! - `perf_event_open` for per-CPU counters, and putting their fds into a PERF_EVENT_ARRAY
//!   (aya 0.15 added `PerfEventArray::set`);
//! - `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a per-CPU hash, so a dead cgroup's last counts are read
//!   and its entry removed in one step, with nothing charged in between lost.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd},
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

pub const PERF_TYPE_HARDWARE: u32 = 0;
pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
pub const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Opens a counting (non-sampling) event on one CPU, for all tasks, enabled from the start.
pub fn perf_event_open_cpu(type_: u32, config: u64, cpu: u32) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised perf_event_attr of the size it declares.
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
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The part of `union bpf_attr` used by BPF_MAP_*_ELEM commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

fn bpf_map_elem(cmd: libc::c_long, attr: &MapElemAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for map element commands; the pointers it holds
    // are valid for the sizes the map declares (checked by the callers).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Puts `event` at index `cpu` of a PERF_EVENT_ARRAY map.
pub fn perf_array_set(map: BorrowedFd<'_>, cpu: u32, event: BorrowedFd<'_>) -> io::Result<()> {
    let key = cpu;
    let value = event.as_raw_fd() as u32;
    bpf_map_elem(
        BPF_MAP_UPDATE_ELEM,
        &MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        },
    )
}

/// Reads and deletes one entry of a per-CPU hash with u64 keys. `values` must hold one `V` per
/// possible CPU; `V` must be a multiple of 8 bytes (the kernel's per-CPU value stride).
/// Returns false if the key was not there.
pub fn percpu_lookup_and_delete<V: aya::Pod>(
    map: BorrowedFd<'_>,
    key: u64,
    values: &mut [V],
) -> io::Result<bool> {
    assert!(
        std::mem::size_of::<V>().is_multiple_of(8),
        "per-CPU values are laid out with an 8-byte stride"
    );
    match bpf_map_elem(
        BPF_MAP_LOOKUP_AND_DELETE_ELEM,
        &MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u64 as u64,
            value: values.as_mut_ptr() as u64,
            flags: 0,
        },
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
