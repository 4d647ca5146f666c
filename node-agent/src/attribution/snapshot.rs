//! The attribution snapshot: what the exporter reads, immutable once built.

use std::sync::Arc;

use node_agent_common::CgroupCounters;

use super::{IdleMethod, ProcessTotals};
use crate::workload::Workload;

/// One zone of the node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeZone {
    pub zone: String,
    /// Joules since the agent started.
    pub active_joules: f64,
    pub idle_joules: f64,
    /// The part no workload took: all idle under the `node` policy, idle with no container to
    /// take it under `even`, and the energy of intervals in which nothing ran.
    pub kept_joules: f64,
    /// Average power over the last interval (none before two readings).
    pub active_watts: Option<f64>,
    pub idle_watts: Option<f64>,
    /// The idle power in use, and how it is known.
    pub idle_estimate: Option<(f64, IdleMethod)>,
}

/// A workload's totals.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadTotals {
    pub workload: Workload,
    /// Some cgroup of it exists now.
    pub running: bool,
    /// Counted since the agent started.
    pub counters: CgroupCounters,
    /// Per zone (same order as [`AttributionSnapshot::zones`]): joules since the agent started,
    /// and average power over the last interval.
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttributionSnapshot {
    pub zones: Vec<String>,
    pub node: Vec<NodeZone>,
    pub workloads: Vec<WorkloadTotals>,
    /// What active energy was shared by in the last interval.
    pub shared_by_cycles: bool,
    /// The agent's own CPU time and the energy attributed to it, per zone.
    pub agent_cpu_seconds: f64,
    pub agent_joules: Vec<f64>,
    /// Pods: their containers' energy, kept while any of their containers is tracked.
    pub pods: Vec<PodTotals>,
    /// Per zone, energy of workloads whose series expired (so that the sums still reconcile).
    pub expired_joules: Vec<f64>,
    /// With `--metrics.processes`: the shown processes, then `(other)`.
    pub processes: Vec<ProcessTotals>,
    /// The node's busy CPU time over busy + idle, in the last interval.
    pub busy_ratio: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodTotals {
    pub uid: Arc<str>,
    pub running: bool,
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
}
