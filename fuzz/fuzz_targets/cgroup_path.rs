//! `AYA_BUILD_SKIP=1 cargo +nightly fuzz run cgroup_path -- -dict=dicts/cgroup_path.dict` (from
//! `fuzz/`): the cgroup path parser never panics, whatever the bytes. (The parser needs no eBPF
//! object, hence AYA_BUILD_SKIP.) The dictionary holds the pieces of real layouts: containers of
//! every runtime and driver, pods, and libvirt's and Proxmox's virtual machines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent::workload::{Workload, classify};

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    for depth in [0, 2, 5] {
        match classify(&path, depth) {
            Workload::Cgroup(p) => assert!(p.starts_with('/')),
            Workload::Container(c) => assert_eq!(c.id.len(), 64),
            Workload::Vm(v) => assert!(!v.id.is_empty() && !v.name.is_empty()),
        }
    }
});
