//! `AYA_BUILD_SKIP=1 cargo +nightly fuzz run cpuinfo -- -dict=dicts/cpuinfo.dict` (from `fuzz/`):
//! the /proc/cpuinfo parser never panics and gives one entry per distinct `processor`, whatever
//! the bytes.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use node_agent::kernel::cpuinfo::parse_cpuinfo;

fuzz_target!(|data: &[u8]| {
    let cpus = parse_cpuinfo(&String::from_utf8_lossy(data));
    let distinct: HashSet<&str> = cpus.iter().map(|c| c.processor.as_str()).collect();
    assert_eq!(distinct.len(), cpus.len());
});
