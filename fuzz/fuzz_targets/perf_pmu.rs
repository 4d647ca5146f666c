//! Fuzz target for the perf power PMU's sysfs description (`type`, `cpumask`, `events/`).
//! Body, input and invariants: `node_agent::fuzzing::perf_pmu`.
//! Run: `cargo xtask fuzz perf_pmu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::perf_pmu(data));
