//! Fuzz target for a BMC's Redfish resources (Systems, Chassis, PowerSubsystem, Power).
//! Body, input and invariants: `node_agent::fuzzing::redfish`.
//! Run: `cargo xtask fuzz redfish`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::redfish(data));
