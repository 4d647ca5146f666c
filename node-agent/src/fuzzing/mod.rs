//! The fuzz targets' bodies: one function per parser of outside input (host files, the web
//! configuration, what network sources answer). Each takes any bytes, never panics, and asserts
//! what must hold of what was parsed (values finite and non-negative, round trips, links that
//! point at what exists).
//!
//! Each `fuzz/fuzz_targets/<name>.rs` is one call of its body here, so the same code runs in
//! three ways: libFuzzer for a bounded time (`cargo xtask fuzz`), the smoke test on every
//! `cargo test` (`smoke.rs`: each seed of `fuzz/corpus/<name>/` and a few thousand deterministic
//! mutations of them), and a reproducer's bytes pasted into a unit test.
//!
//! Targets that read several host files take them as NUL-separated fields of the input (each
//! target's documentation lists them), so that one corpus file is one host's worth of files.

mod host;
mod input;
mod network;
mod power;
#[cfg(test)]
mod smoke;
mod web;

pub use host::{cgroup_path, cpuinfo, mountinfo};
pub use network::{carbon_intensity, kubernetes, prometheus_api, redfish};
pub use power::{hwmon, hwmon_chips, perf_pmu, powercap};
pub use web::web_config;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary, corpus directory and dictionary.
pub const TARGETS: [(&str, Target); 12] = [
    ("cgroup_path", cgroup_path),
    ("mountinfo", mountinfo),
    ("cpuinfo", cpuinfo),
    ("powercap", powercap),
    ("hwmon", hwmon),
    ("hwmon_chips", hwmon_chips),
    ("perf_pmu", perf_pmu),
    ("web_config", web_config),
    ("carbon_intensity", carbon_intensity),
    ("redfish", redfish),
    ("kubernetes", kubernetes),
    ("prometheus_api", prometheus_api),
];
