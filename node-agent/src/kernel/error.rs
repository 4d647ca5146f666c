//! What can go wrong loading the accounting program and reading its maps, each saying what to do.

use std::{error::Error, io};

/// An error of the kernel-counters layer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this wattlet binary was built without its eBPF programs (AYA_BUILD_SKIP was set): \
         rebuild with `cargo xtask build`"
    )]
    NoObject,
    /// The kernel cannot run the program; the probe says why and what to do.
    #[error("{0}")]
    Unsupported(String),
    #[error("--bpf.max-cgroups must be at least 1")]
    NoCgroupCapacity,
    #[error("reading {path}")]
    CpuList {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("opening the software cpu-clock stand-in counter")]
    StandIn(#[source] io::Error),
    #[error("the eBPF object has no {kind} {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("putting CPU {cpu}'s counter into {array}")]
    PerfArray {
        cpu: u32,
        array: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "reading kernel BTF from /sys/kernel/btf/vmlinux: Wattlet needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 are)"
    )]
    Btf(#[source] aya::BtfError),
    #[error(
        "{what}: permission denied: {}",
        crate::sys::privileges::explain_denied()
    )]
    Denied {
        what: String,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    #[error("{what}")]
    Bpf {
        what: String,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    #[error("{what}")]
    Map {
        what: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("removing a dead cgroup's entry from the map")]
    Delete(#[source] io::Error),
    #[error("reading an in-kernel map in batches")]
    Batch(#[source] io::Error),
}

impl KernelError {
    /// Loading or attaching failed: [`KernelError::Denied`] with the fix when the kernel said
    /// no for want of privileges (the common case), [`KernelError::Bpf`] otherwise.
    pub fn bpf(what: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        let what = what.into();
        if denied(&source) {
            KernelError::Denied {
                what,
                source: Box::new(source),
            }
        } else {
            KernelError::Bpf {
                what,
                source: Box::new(source),
            }
        }
    }
}

/// Whether an EPERM or EACCES is anywhere in the chain.
fn denied(e: &(dyn Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let io_denied = e
            .downcast_ref::<io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)));
        if io_denied || e.to_string().contains("Operation not permitted") {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("loading the program")]
    struct Wrapped(#[source] io::Error);

    #[test]
    fn permission_errors_say_how_to_get_the_privileges() {
        let e = KernelError::bpf(
            "loading the eBPF object",
            Wrapped(io::Error::from_raw_os_error(libc::EPERM)),
        );
        assert!(matches!(e, KernelError::Denied { .. }));
        let text = e.to_string();
        assert!(text.starts_with("loading the eBPF object: permission denied"));
        // What to do depends on what this process holds (the fix, or what else refused).
        let advice = crate::sys::privileges::explain_denied();
        assert!(text.ends_with(&advice), "{text}");
        let e = KernelError::bpf("x", Wrapped(io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(matches!(e, KernelError::Bpf { .. }));
        assert!(e.source().is_some(), "the cause is kept");
    }
}
