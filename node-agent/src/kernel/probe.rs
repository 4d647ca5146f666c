//! Feature probing for `wattlet check`: what this node supports, in plain words.

use std::{fs, io};

use super::sys;

/// Kernel release and machine, from uname.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} ({})", field(&u.release), field(&u.machine))
}

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
    let release = kernel_release();
    if parse_release(&release).is_some_and(|v| v < MIN_KERNEL) {
        return Err(format!(
            "kernel {release} is too old: Wattlet needs Linux {}.{} or later (its sched_switch \
             program reads the prev_state argument added in 5.18); upgrade the kernel",
            MIN_KERNEL.0, MIN_KERNEL.1
        ));
    }
    Ok(release)
}

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability mask from the text of /proc/self/status.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether the capabilities allow loading tracing programs and opening per-CPU perf events.
pub fn can_load_bpf(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN)
}

/// Whether this process may load the programs: root, or the capabilities in /proc/self/status
/// (always the live /proc: these are this process's own capabilities).
pub fn has_bpf_privileges() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root || read_caps().is_ok_and(can_load_bpf)
}

pub fn read_caps() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    effective_caps(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
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

    #[test]
    fn parses_caps() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = effective_caps(status).unwrap();
        assert!(can_load_bpf(caps));
        assert!(!can_load_bpf(0));
        assert!(can_load_bpf(1 << CAP_SYS_ADMIN));
        assert!(
            !can_load_bpf(1 << CAP_BPF),
            "CAP_BPF alone cannot attach tracing"
        );
        assert!(can_load_bpf((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert_eq!(effective_caps("nothing"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }
}
