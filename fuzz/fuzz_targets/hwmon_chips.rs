//! Fuzz target for the chip table format (`--power.hwmon.chips`).
//! Body, input and invariants: `node_agent::fuzzing::hwmon_chips`.
//! Run: `cargo xtask fuzz hwmon_chips`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::hwmon_chips(data));
