//! Units and their conversions, each defined once. Host interfaces count in µJ, µW and ns; the
//! agent computes and exports joules, watts and seconds.

/// powercap's `energy_uj` and hwmon's `energyN_input`.
pub const JOULES_PER_MICROJOULE: f64 = 1e-6;

/// hwmon's `powerN_input` and `powerN_average`.
pub const WATTS_PER_MICROWATT: f64 = 1e-6;

pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// /proc/meminfo counts in KiB; the power model's memory coefficient is per GB (10⁹ bytes).
pub const BYTES_PER_KIB: f64 = 1024.0;
pub const BYTES_PER_GB: f64 = 1e9;

/// Nanoseconds (the eBPF counters, CPU time) as seconds.
pub fn secs_from_ns(ns: u64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}
