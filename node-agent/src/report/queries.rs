//! The PromQL the report runs, in one place: which series each figure comes from, for each
//! grouping, over a range (raw counters through `increase()`, which handles counter resets and
//! agent restarts: a restarted agent's series has the same labels and starts again from 0), or
//! from the daily recording rules of `deploy/rules/wattlet.rules.yaml` for whole UTC days.
//!
//! Zones overlap (`core` and `uncore` are part of `package`, `psys` is the whole platform), so
//! energy and emissions are summed over `package` and `dram` only — the zones the agent's page
//! adds up too (`snapshot::total_zones`).

use super::{args::GroupBy, time::promql_duration};
use crate::snapshot::TOTAL_ZONES;

/// The figures added up per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Joules.
    Energy,
    /// Grams CO2e of the electricity (Scope 2), counted by the agents each interval: its energy
    /// × the grid intensity in force then × PUE.
    Operational,
    /// Grams CO2e of the hardware's manufacture (Scope 3), amortised over its lifetime: a pod's
    /// share by CPU time, or a node's whole.
    Embodied,
    /// CPU-seconds.
    Cpu,
}

impl Measure {
    pub const ALL: [Measure; 4] = [
        Measure::Energy,
        Measure::Operational,
        Measure::Embodied,
        Measure::Cpu,
    ];
}

/// `zone=~"package|dram"`.
fn zones() -> String {
    format!("zone=~\"{}\"", TOTAL_ZONES.join("|"))
}

/// The labels a grouping sums by. Pods keep their uid, so that pods not yet named by the API
/// server stay apart; the report merges those with a name by `namespace/pod`.
pub fn labels(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Namespace => "namespace",
        GroupBy::Pod => "namespace, pod, pod_uid",
        GroupBy::Node => "node",
    }
}

/// The counter (with its selector) a figure comes from.
pub fn series(by: GroupBy, m: Measure) -> String {
    let workloads = by != GroupBy::Node;
    match (m, workloads) {
        (Measure::Energy, true) => format!("wattlet_pod_energy_joules_total{{{}}}", zones()),
        (Measure::Energy, false) => format!("wattlet_node_energy_joules_total{{{}}}", zones()),
        (Measure::Operational, true) => {
            format!("wattlet_pod_emissions_grams_total{{{}}}", zones())
        }
        (Measure::Operational, false) => {
            format!("wattlet_node_emissions_grams_total{{{}}}", zones())
        }
        (Measure::Embodied, true) => "wattlet_pod_embodied_emissions_grams_total".into(),
        // The whole server's: shared among workloads (active) and the capacity none used (idle).
        (Measure::Embodied, false) => "wattlet_node_embodied_emissions_grams_total".into(),
        (Measure::Cpu, true) => "wattlet_container_cpu_seconds_total".into(),
        (Measure::Cpu, false) => "wattlet_node_cpu_seconds_total{mode=\"busy\"}".into(),
    }
}

/// A figure per group over the `range` (milliseconds) before the evaluation time.
pub fn increase(by: GroupBy, m: Measure, range: i64) -> String {
    format!(
        "sum by ({}) (increase({}[{}]))",
        labels(by),
        series(by, m),
        promql_duration(range)
    )
}

/// The daily recording rule for a figure, if the rules file has one: its name, and what turns
/// its value into the figure's unit. A rule's value at `t` covers the day before `t`.
pub fn daily_rule(by: GroupBy, m: Measure) -> Option<(String, f64)> {
    let (figure, factor) = match m {
        Measure::Energy => ("wattlet_energy_kwh", 3.6e6),
        Measure::Operational => ("wattlet_emissions_grams", 1.0),
        Measure::Embodied if by != GroupBy::Node => ("wattlet_embodied_emissions_grams", 1.0),
        Measure::Embodied | Measure::Cpu => return None,
    };
    Some((format!("{}:{figure}:increase1d", by.as_str()), factor))
}

/// A figure per group over the day ending at the evaluation time, from its daily rule.
pub fn from_daily_rule(by: GroupBy, m: Measure, rule: &str, factor: f64) -> String {
    let selector = match m {
        Measure::Energy | Measure::Operational => format!("{{{}}}", zones()),
        Measure::Embodied | Measure::Cpu => String::new(),
    };
    let sum = format!("sum by ({}) ({rule}{selector})", labels(by));
    if factor == 1.0 {
        sum
    } else {
        format!("{sum} * {factor}")
    }
}

/// Whether the agents' series exist in the period at all.
pub fn any_wattlet(range: i64) -> String {
    format!(
        "count(max_over_time(wattlet_node_energy_joules_total[{}]))",
        promql_duration(range)
    )
}

/// The mean grid intensity per source and grid zone.
pub fn intensity(range: i64) -> String {
    format!(
        "avg by (source, zone) (avg_over_time(wattlet_grid_carbon_intensity_grams_per_kwh[{}]))",
        promql_duration(range)
    )
}

/// The mean PUE per node.
pub fn pue(range: i64) -> String {
    format!(
        "avg by (node) (avg_over_time(wattlet_carbon_pue[{}]))",
        promql_duration(range)
    )
}

/// Each node's power source(s) in the period.
pub fn power_sources(range: i64) -> String {
    format!(
        "max by (node, source, estimated, model) \
         (max_over_time(wattlet_node_power_source_info[{}]))",
        promql_duration(range)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_of_namespaces_is_their_pods_package_and_dram() {
        assert_eq!(
            increase(GroupBy::Namespace, Measure::Energy, 300_000),
            "sum by (namespace) (increase(wattlet_pod_energy_joules_total{zone=~\"package|dram\"}[300s]))"
        );
        assert_eq!(
            increase(GroupBy::Node, Measure::Cpu, 86_400_000),
            "sum by (node) (increase(wattlet_node_cpu_seconds_total{mode=\"busy\"}[86400s]))"
        );
        assert_eq!(
            increase(GroupBy::Pod, Measure::Operational, 60_500),
            "sum by (namespace, pod, pod_uid) (increase(wattlet_pod_emissions_grams_total{zone=~\"package|dram\"}[60500ms]))"
        );
    }

    /// The names of deploy/rules/wattlet.rules.yaml's daily rules.
    #[test]
    fn daily_rules() {
        let (rule, factor) = daily_rule(GroupBy::Namespace, Measure::Energy).unwrap();
        assert_eq!(
            (rule.as_str(), factor),
            ("namespace:wattlet_energy_kwh:increase1d", 3.6e6)
        );
        assert_eq!(
            from_daily_rule(GroupBy::Namespace, Measure::Energy, &rule, factor),
            "sum by (namespace) (namespace:wattlet_energy_kwh:increase1d{zone=~\"package|dram\"}) * 3600000"
        );
        let (rule, factor) = daily_rule(GroupBy::Pod, Measure::Embodied).unwrap();
        assert_eq!(
            from_daily_rule(GroupBy::Pod, Measure::Embodied, &rule, factor),
            "sum by (namespace, pod, pod_uid) (pod:wattlet_embodied_emissions_grams:increase1d)"
        );
        assert_eq!(
            daily_rule(GroupBy::Node, Measure::Operational).unwrap().0,
            "node:wattlet_emissions_grams:increase1d"
        );
        assert_eq!(daily_rule(GroupBy::Node, Measure::Embodied), None);
        assert_eq!(
            increase(GroupBy::Node, Measure::Embodied, 60_000),
            "sum by (node) (increase(wattlet_node_embodied_emissions_grams_total[60s]))"
        );
        assert_eq!(daily_rule(GroupBy::Pod, Measure::Cpu), None);
    }
}
