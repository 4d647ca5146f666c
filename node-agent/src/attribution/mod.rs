//! Attribution: each interval, per zone, node energy → idle + active → workloads, by what the
//! kernel counted. A short pipeline over four rooms: `deltas.rs` takes what changed since the
//! last interval (per cgroup id, into per-workload deltas), `idle.rs` estimates each zone's idle
//! power, [`split`] divides the energy (pure math, property-tested for conservation), and
//! `ledger.rs` keeps the totals per workload, pod and node and expires stopped workloads.
//! `emissions.rs` turns each zone's split into grams at the intensity in force during the
//! interval, and shares the server's embodied footprint by CPU time; the ledger keeps the
//! grams beside the joules. With `--metrics.processes`, [`processes`] then shares each
//! workload's energy among its processes and keeps the bounded process series. [`Attributor`]
//! runs it and hands an immutable [`AttributionSnapshot`] to the exporter.

mod deltas;
mod emissions;
mod idle;
mod ledger;
mod options;
pub mod processes;
mod snapshot;
pub mod split;

use std::time::Duration;

pub use idle::IdleMethod;
pub use options::{AttributionArgs, IDLE_WINDOW_INTERVALS, IdleWindowOutOfRange};
pub use processes::{EXITED, OTHER, ProcessTotals};
pub use snapshot::{
    AttributedCarbon, AttributionSnapshot, Emissions, IntervalCarbon, NodeGrams, NodeZone,
    PodTotals, SourceGrams, WorkloadTotals,
};
pub use split::{IdlePolicy, Split, idle_intercept, increase, split};

use crate::{kernel::CountersSnapshot, power::PowerSnapshot};
use deltas::{Deltas, Interval, Shares};
use idle::IdleEstimates;
use ledger::Ledger;
use processes::{Inputs, Processes};

/// What active energy is shared by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ShareBy {
    /// Cycles where a hardware PMU counts them, busy CPU time otherwise.
    #[default]
    Auto,
    /// Busy CPU time.
    Cpu,
    /// CPU cycles (needs a PMU; falls back to CPU time without one).
    Cycles,
}

#[derive(Clone, Debug)]
pub struct AttributionOptions {
    pub idle_policy: IdlePolicy,
    pub share_by: ShareBy,
    /// Non-container cgroups are reported at this depth of the path.
    pub cgroup_depth: usize,
    /// How long a workload that stopped keeps its series.
    pub retention: Duration,
    /// Idle power per zone set by the operator, in watts.
    pub configured_idle: Vec<(String, f64)>,
    /// Intervals in the sliding window of the measured idle estimate.
    pub idle_window: usize,
    /// At most this many workloads are tracked; beyond it, the longest-stopped expire first.
    pub max_workloads: usize,
    /// Processes shown as their own series (`--metrics.processes`); 0 = none, no `(other)`.
    pub processes: usize,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        Self {
            idle_policy: IdlePolicy::Node,
            share_by: ShareBy::Auto,
            cgroup_depth: 2,
            retention: Duration::from_secs(600),
            configured_idle: Vec::new(),
            idle_window: 120,
            max_workloads: 20_000,
            processes: 0,
        }
    }
}

/// Label of cgroups removed before the agent saw their path.
pub const UNSEEN: &str = "(removed before it was seen)";
/// Label of CPU time charged while the in-kernel cgroup map was full.
pub const OVERFLOW: &str = "(cgroup map full)";

/// Keeps what attribution needs from one interval to the next, and the totals.
#[derive(Debug)]
pub struct Attributor {
    opts: AttributionOptions,
    deltas: Deltas,
    idle: IdleEstimates,
    ledger: Ledger,
    processes: Processes,
}

impl Attributor {
    pub fn new(opts: AttributionOptions) -> Self {
        Self {
            deltas: Deltas::default(),
            idle: IdleEstimates::new(opts.configured_idle.clone(), opts.idle_window),
            ledger: Ledger::default(),
            processes: Processes::new(opts.processes, processes::LINGER),
            opts,
        }
    }

    /// Takes one interval: the kernel counters, the power reading (if any), the idle power the
    /// source knows (the model's), the agent's own CPU time, and the carbon figures in force
    /// during the interval (none: no emissions).
    pub fn update(
        &mut self,
        counters: &CountersSnapshot,
        power: Option<&PowerSnapshot>,
        source_idle: &[(String, f64)],
        agent_cpu_ns: u64,
        carbon: Option<&IntervalCarbon>,
    ) -> AttributionSnapshot {
        let interval = self
            .deltas
            .interval(counters, self.opts.cgroup_depth, agent_cpu_ns);
        let shares = interval.shares(self.opts.share_by, counters.pmu);
        self.ledger.count(counters.at, &interval.workloads);
        let dt = power.and_then(|p| self.charge_energy(p, &interval, &shares, source_idle, carbon));
        if let Some(g_per_s) = carbon.and_then(|c| c.embodied_grams_per_second) {
            let g = emissions::embodied(&interval, g_per_s);
            self.ledger.charge_embodied(&g, &shares.keys);
        }
        let zones: Vec<String> = power
            .map(|p| p.zones.iter().map(|z| z.zone.clone()).collect())
            .unwrap_or_default();
        let processes = self.process_series(counters, &interval, &zones, dt);
        self.ledger.roll_up_pods();
        let o = &self.opts;
        self.ledger
            .expire(counters.at, o.retention, o.max_workloads);
        let agent_s = self.deltas.agent_cpu_seconds();
        let mut snapshot =
            self.ledger
                .snapshot(zones, &self.idle, shares.by_cycles, agent_s, carbon);
        snapshot.processes = processes;
        snapshot.busy_ratio = interval.busy_ratio;
        snapshot
    }

    /// The process series, when processes are counted.
    fn process_series(
        &mut self,
        counters: &CountersSnapshot,
        interval: &Interval,
        zones: &[String],
        dt: Option<f64>,
    ) -> Vec<ProcessTotals> {
        if self.opts.processes == 0 || counters.processes.map_capacity == 0 {
            return Vec::new();
        }
        let joules = self.ledger.interval_joules(zones);
        let workloads = (interval.workloads.iter())
            .map(|(w, (c, _))| {
                let joules = joules
                    .get(w)
                    .cloned()
                    .unwrap_or_else(|| vec![0.0; zones.len()]);
                let cpu_ns = c.cpu_ns;
                (w.clone(), processes::WorkloadInterval { cpu_ns, joules })
            })
            .collect();
        let deltas = &self.deltas;
        self.processes.update(
            &counters.processes.samples,
            |id| deltas.workload_of(id).cloned(),
            Inputs {
                workloads: &workloads,
                zones: zones.len(),
                dt,
                at: counters.at,
            },
        )
    }

    /// Each zone's energy since the last reading: idle by the zone's estimate, the rest active,
    /// both split among the workloads; and in grams at the intensity in force. Returns the
    /// seconds since that reading (none at the first).
    fn charge_energy(
        &mut self,
        power: &PowerSnapshot,
        interval: &Interval,
        shares: &Shares,
        source_idle: &[(String, f64)],
        carbon: Option<&IntervalCarbon>,
    ) -> Option<f64> {
        let (dt, zones) = self.deltas.energy(power)?;
        for z in zones {
            let estimate = self
                .idle
                .update(z.zone, z.watts, interval.busy_ratio, source_idle);
            let idle_j = estimate.map_or(0.0, |(w, _)| w * dt.max(0.0));
            let policy = self.opts.idle_policy;
            let s = split(z.joules, idle_j, &shares.weights, &shares.running, policy);
            self.ledger
                .charge(z.zone, &s, dt, &shares.keys, shares.agent_fraction);
            if let Some(c) = carbon {
                let g = emissions::zone_grams(&s, c);
                self.ledger.charge_grams(z.zone, &g, &shares.keys);
            }
        }
        Some(dt)
    }
}

#[cfg(test)]
mod tests;
