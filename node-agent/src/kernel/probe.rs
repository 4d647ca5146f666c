//! Feature probing for `wattlet check` and the loader: what this kernel supports, in plain words.

use std::io;

use crate::sys;

/// Parses "major.minor" from a release string like "6.18.44-foo".
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The oldest kernel the sched_switch program loads on: it reads the `prev_state` argument,
/// added to the tracepoint in 5.18.
pub const MIN_KERNEL: (u32, u32) = (5, 18);

/// The kernel release, or why it is too old and what to do.
pub fn supported_kernel() -> Result<String, String> {
    let release = sys::kernel_release();
    if parse_release(&release).is_some_and(|v| v < MIN_KERNEL) {
        return Err(format!(
            "kernel {release} is too old: Wattlet needs Linux {}.{} or later (its sched_switch \
             program reads the prev_state argument added in 5.18); upgrade the kernel",
            MIN_KERNEL.0, MIN_KERNEL.1
        ));
    }
    Ok(release)
}

/// What the CPU's PMU offers: tries to open a hardware cycles counter on CPU 0.
pub fn hardware_pmu() -> Result<(), String> {
    match sys::perf_event_open_cpu(sys::PERF_TYPE_HARDWARE, sys::PERF_COUNT_HW_CPU_CYCLES, 0) {
        Ok(_) => Ok(()),
        Err(e) => Err(describe_perf_error(&e)),
    }
}

pub fn describe_perf_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => {
            "the CPU exposes no hardware cycles counter (no `cpu` PMU; common on VMs)".into()
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "opening per-CPU counters needs CAP_PERFMON or kernel.perf_event_paranoid <= 0".into()
        }
        _ => format!("perf_event_open failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("weird"), None);
    }
}
