//! Fuzz target for a cgroup path (the kernel's map, `/proc/<pid>/cgroup`).
//! Body, input and invariants: `node_agent::fuzzing::cgroup_path`.
//! Run: `cargo xtask fuzz cgroup_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::cgroup_path(data));
