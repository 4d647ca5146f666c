//! Fuzz target for `/proc/self/mountinfo`.
//! Body, input and invariants: `node_agent::fuzzing::mountinfo`.
//! Run: `cargo xtask fuzz mountinfo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::mountinfo(data));
