//! The attribution snapshot: what the exporter reads, immutable once built.

use std::sync::Arc;

use node_agent_common::CgroupCounters;

use super::{IdleMethod, ProcessTotals};
use crate::{
    carbon::{Reading, SourceKind},
    workload::Workload,
};

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
    /// Operational grams since the agent started, per intensity source that was in force.
    pub emissions: Vec<NodeGrams>,
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
    pub emissions: Emissions,
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
    /// Emissions, when the agent was given the intensity in force.
    pub carbon: Option<AttributedCarbon>,
    /// With `--metrics.processes`: the shown processes, then `(other)`.
    pub processes: Vec<ProcessTotals>,
    /// The node's busy CPU time over busy + idle, in the last interval.
    pub busy_ratio: f64,
}

/// The platform zone's own totals (joules since the agent started): what it holds beyond the
/// CPU zones, and how often it could not be compared with them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlatformTotals {
    /// The rest (the platform less package and dram: fans, disks, NICs, the supplies' losses),
    /// split into idle and active like a zone.
    pub rest_idle_joules: f64,
    pub rest_active_joules: f64,
    /// The CPU zones' energy above the platform meter's figure, summed over the intervals in
    /// which it read lower than they did (the platform was then the CPU zones scaled down).
    pub cpu_excess_joules: f64,
    /// Intervals in which the meter measured nothing (stale, or a new baseline after a gap).
    pub unmeasured_intervals: u64,
}

impl PlatformTotals {
    pub(crate) fn add(&mut self, p: &super::PlatformSplit, measured: bool) {
        self.rest_idle_joules += p.rest.idle;
        self.rest_active_joules += p.rest.active;
        self.cpu_excess_joules += p.cpu_excess;
        self.unmeasured_intervals += u64::from(!measured);
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodTotals {
    pub uid: Arc<str>,
    pub running: bool,
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
    pub emissions: Emissions,
}

/// One zone's operational grams (gCO2e) since the agent started, under one intensity source:
/// the zone's energy split as its joules are, each interval at the intensity in force then.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGrams {
    pub source: SourceKind,
    pub active: f64,
    pub idle: f64,
    /// The part no workload took (see [`NodeZone::kept_joules`]).
    pub kept: f64,
}

/// A workload's (pod's, expired workloads') operational grams under one intensity source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceGrams {
    pub source: SourceKind,
    /// Per zone, in the order of [`AttributionSnapshot::zones`].
    pub grams: Vec<f64>,
}

/// What a workload emitted since the agent started (gCO2e).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Emissions {
    /// Operational (Scope 2), per intensity source that was in force (a failover adds a
    /// source; none goes back), ordered by source.
    pub operational: Vec<SourceGrams>,
    /// Embodied (Scope 3): its CPU-time share of the server's amortised footprint.
    pub embodied: f64,
}

/// The carbon figures in force during one interval, as the agent hands them in.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalCarbon {
    pub reading: Reading,
    /// Facility energy per IT joule (at least 1).
    pub pue: f64,
    /// The server's embodied footprint per second, when configured.
    pub embodied_grams_per_second: Option<f64>,
}

/// The node's carbon: what was in force in the last interval, and the totals that belong to
/// no zone or workload.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributedCarbon {
    pub in_force: IntervalCarbon,
    /// The node's embodied grams: shared among workloads by CPU time (active), and the
    /// capacity no workload used, kept by the node (idle).
    pub embodied_active: f64,
    pub embodied_idle: f64,
    /// Grams of workloads whose series expired (so that the sums still reconcile).
    pub expired: Emissions,
}
