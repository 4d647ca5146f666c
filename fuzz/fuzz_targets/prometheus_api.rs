//! Fuzz target for Prometheus's HTTP API answers, as `wattlet report` reads them.
//! Body, input and invariants: `node_agent::fuzzing::prometheus_api`.
//! Run: `cargo xtask fuzz prometheus_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::prometheus_api(data));
