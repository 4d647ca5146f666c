//! Fuzz target for the carbon intensity API's response (`--carbon.intensity-url`).
//! Body, input and invariants: `node_agent::fuzzing::carbon_intensity`.
//! Run: `cargo xtask fuzz carbon_intensity`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::carbon_intensity(data));
