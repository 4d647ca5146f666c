//! Fuzz target for a powercap zone's `name`, `max_energy_range_uj` and `energy_uj`.
//! Body, input and invariants: `node_agent::fuzzing::powercap`.
//! Run: `cargo xtask fuzz powercap`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::powercap(data));
