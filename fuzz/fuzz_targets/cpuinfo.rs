//! Fuzz target for `/proc/cpuinfo`.
//! Body, input and invariants: `node_agent::fuzzing::cpuinfo`.
//! Run: `cargo xtask fuzz cpuinfo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::cpuinfo(data));
