//! Fuzz target for the web configuration file (`--web.config.file`).
//! Body, input and invariants: `node_agent::fuzzing::web_config`.
//! Run: `cargo xtask fuzz web_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_agent::fuzzing::web_config(data));
