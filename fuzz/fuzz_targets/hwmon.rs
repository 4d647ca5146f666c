//! Fuzz target for an hwmon chip: `name`, channel values, labels, `_enable`, a chip table.
//! Body, input and invariants: `node_agent::fuzzing::hwmon`.
//! Run: `cargo xtask fuzz hwmon`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::hwmon(data));
