//! Root and capabilities: whether this process may load the eBPF programs, and what to do if not.

use std::{fs, io};

/// What to do without the privileges to load eBPF: said once, by `wattlet run` at start, by
/// `wattlet check`, and when the kernel refuses the programs.
pub const NEEDS_PRIVILEGES: &str = "wattlet needs root, or the capabilities CAP_BPF and \
    CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8), to load its eBPF programs: run `sudo \
    wattlet run` (from a checkout: `sudo -E cargo xtask run`), or grant them with `sudo setcap \
    cap_bpf,cap_perfmon+ep $(command -v wattlet)`";

/// This process cannot load the eBPF programs.
#[derive(Debug, thiserror::Error)]
#[error("{NEEDS_PRIVILEGES}")]
pub struct MissingPrivileges;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

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

/// This process's effective capabilities (always the live /proc: they are its own).
pub fn read_caps() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    effective_caps(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

/// Whether this process may load the programs: root, or the capabilities.
pub fn has_bpf_privileges() -> bool {
    is_root() || read_caps().is_ok_and(can_load_bpf)
}

/// Stops early, with the fix, when this process cannot load eBPF.
pub fn require_bpf_privileges() -> Result<(), MissingPrivileges> {
    if has_bpf_privileges() {
        Ok(())
    } else {
        Err(MissingPrivileges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_message_says_what_to_run() {
        let m = MissingPrivileges.to_string();
        assert!(m.contains("needs root") && m.contains("sudo") && m.contains("setcap"));
    }
}
