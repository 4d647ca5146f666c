//! Fuzz target for the Pod and Node objects whose fields the agent reads.
//! Body, input and invariants: `node_agent::fuzzing::kubernetes`.
//! Run: `cargo xtask fuzz kubernetes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::kubernetes(data));
