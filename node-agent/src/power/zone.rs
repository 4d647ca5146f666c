//! Zone names, shared by every source so that dashboards work across them, and the power
//! ceilings that tell a reading from a misread counter.

use std::collections::{BTreeMap, BTreeSet};

/// A CPU socket (RAPL PKG; amd_energy's socket counters; the model's CPU power).
pub const PACKAGE: &str = "package";
/// The cores of a package (RAPL PP0).
pub const CORE: &str = "core";
/// The client GPU plane (RAPL PP1), as powercap names it.
pub const UNCORE: &str = "uncore";
/// Memory (RAPL DRAM; the model's memory power).
pub const DRAM: &str = "dram";
/// The whole platform as RAPL sees it (PSys).
pub const PSYS: &str = "psys";
/// The whole platform as a power meter sees it (ACPI power_meter).
pub const PLATFORM: &str = "platform";

/// Far above any one CPU socket or memory domain, far below the spikes of a misread counter.
pub const DEFAULT_CEILING_WATTS: f64 = 1000.0;

/// Whole-platform meters (RAPL psys, an ACPI power meter) see the whole machine, GPUs included:
/// their ceiling is this many times the per-counter one.
pub const PLATFORM_CEILING_FACTOR: f64 = 20.0;

/// The ceiling for one counter of `zone`.
pub fn ceiling(zone: &str, ceiling_watts: f64) -> f64 {
    match zone {
        PSYS | PLATFORM => ceiling_watts * PLATFORM_CEILING_FACTOR,
        _ => ceiling_watts,
    }
}

/// A zone name from host text: lowercase ASCII letters and digits, anything else `_`.
pub fn label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `s` is a zone name as [`label`] makes them (for zones named on the command line).
pub fn is_label(s: &str) -> bool {
    !s.is_empty() && label(s) == s
}

/// Sums counters of the same zone (the sockets of a two-socket node, say), sorted by zone.
pub fn sum<'a>(counters: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<(String, f64)> {
    let mut by_zone: BTreeMap<&str, f64> = BTreeMap::new();
    for (zone, j) in counters {
        *by_zone.entry(zone).or_default() += j;
    }
    by_zone
        .into_iter()
        .map(|(z, j)| (z.to_owned(), j))
        .collect()
}

/// The distinct zone names of a source's counters, sorted, for its description.
pub fn list<'a>(zones: impl IntoIterator<Item = &'a str>) -> String {
    let set: BTreeSet<&str> = zones.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_same_named_zones() {
        assert_eq!(
            sum([("package", 1.0), ("dram", 0.5), ("package", 2.0)]),
            vec![("dram".to_owned(), 0.5), ("package".to_owned(), 3.0)]
        );
    }

    #[test]
    fn labels_and_ceilings() {
        assert_eq!(label("VDD CPU"), "vdd_cpu");
        assert!(is_label("package") && is_label("vdd_in0"));
        assert!(!is_label("") && !is_label("Package") && !is_label("dram 1"));
        assert_eq!(ceiling("package", 1000.0), 1000.0);
        assert_eq!(ceiling("psys", 1000.0), 20_000.0);
        assert_eq!(ceiling("platform", 10.0), 200.0);
    }
}
