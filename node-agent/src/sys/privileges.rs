//! Root and capabilities: whether this process may load the eBPF programs, which capability is
//! missing if not, and what to do.

use std::{fs, io};

/// What to do without the privileges to load eBPF: said once, by `wattlet run` at start, by
/// `wattlet check`, and when the kernel refuses the programs.
pub const NEEDS_PRIVILEGES: &str = "wattlet needs root, or the capabilities CAP_BPF and \
    CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8), to load its eBPF programs: run `sudo \
    wattlet run` (from a checkout: `sudo -E cargo xtask run`), or grant them with `sudo setcap \
    cap_bpf,cap_perfmon,cap_dac_read_search+ep $(command -v wattlet)` (systemd: \
    AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH; Kubernetes: \
    securityContext.capabilities.add: [BPF, PERFMON, DAC_READ_SEARCH], as deploy/kustomize does)";

/// This process cannot load the eBPF programs: the capabilities it lacks, by name.
#[derive(Debug, thiserror::Error)]
#[error("missing {}: {NEEDS_PRIVILEGES}", missing.join(" and "))]
pub struct MissingPrivileges {
    pub missing: Vec<&'static str>,
}

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What loading and attaching need since Linux 5.8 (CAP_SYS_ADMIN covers both before and since).
const NEEDED: [(u32, &str); 2] = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")];

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

/// The capabilities missing for loading tracing programs and opening per-CPU perf events (none
/// with CAP_SYS_ADMIN).
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    NEEDED
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, name)| *name)
        .collect()
}

/// Whether the capabilities allow loading tracing programs and opening per-CPU perf events.
pub fn can_load_bpf(caps: u64) -> bool {
    missing_caps(caps).is_empty()
}

/// This process's effective capabilities (always the live /proc: they are its own).
pub fn read_caps() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    effective_caps(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

/// Whether this process may load the programs. Its effective capabilities decide, not its
/// uid: root in a container whose capabilities were dropped cannot load them either.
pub fn has_bpf_privileges() -> bool {
    match read_caps() {
        Ok(caps) => can_load_bpf(caps),
        Err(_) => is_root(),
    }
}

/// Stops early, naming the missing capabilities and the fix, when this process cannot load
/// eBPF.
pub fn require_bpf_privileges() -> Result<(), MissingPrivileges> {
    let missing = match read_caps() {
        Ok(caps) => missing_caps(caps),
        Err(_) if is_root() => Vec::new(),
        Err(_) => NEEDED.iter().map(|(_, n)| *n).collect(),
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingPrivileges { missing })
    }
}

/// Why the kernel may have refused a bpf() or perf_event_open() call, for its error message:
/// the missing capabilities, or — when they are all held — what else refuses these calls.
pub fn explain_denied() -> String {
    match read_caps().map(missing_caps) {
        Ok(missing) if missing.is_empty() => "the capabilities are held, so something else \
            refused the call: a seccomp profile (CRI-O's default before containers/common's \
            CAP_BPF/CAP_PERFMON rules allows bpf() and perf_event_open() only with \
            CAP_SYS_ADMIN: use the Localhost profile deploy/seccomp/wattlet.json), an LSM \
            (SELinux, AppArmor), or kernel.perf_event_paranoid / kernel.unprivileged_bpf_disabled"
            .to_owned(),
        Ok(missing) => MissingPrivileges { missing }.to_string(),
        Err(_) => NEEDS_PRIVILEGES.to_owned(),
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
    fn the_missing_capability_is_named() {
        // Every capability but CAP_SYS_ADMIN, which would stand in for the others.
        let all = ((1u64 << 41) - 1) & !(1 << CAP_SYS_ADMIN);
        assert_eq!(missing_caps(all), Vec::<&str>::new());
        assert_eq!(missing_caps(all & !(1 << CAP_BPF)), ["CAP_BPF"]);
        assert_eq!(missing_caps(all & !(1 << CAP_PERFMON)), ["CAP_PERFMON"]);
        assert_eq!(missing_caps(0), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_caps(1 << CAP_SYS_ADMIN), Vec::<&str>::new());
        let e = MissingPrivileges {
            missing: missing_caps(all & !(1 << CAP_PERFMON)),
        };
        assert!(
            e.to_string()
                .starts_with("missing CAP_PERFMON: wattlet needs root")
        );
    }

    #[test]
    fn the_message_says_what_to_run() {
        let m = MissingPrivileges {
            missing: vec!["CAP_BPF"],
        }
        .to_string();
        assert!(m.contains("needs root") && m.contains("sudo") && m.contains("setcap"));
        assert!(m.contains("AmbientCapabilities") && m.contains("capabilities.add"));
    }
}
