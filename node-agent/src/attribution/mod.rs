//! Attribution: each interval, per zone, node energy → idle + active → workloads, by what the
//! kernel counted. A short pipeline over four rooms: `deltas.rs` takes what changed since the
//! last interval (per cgroup id, into per-workload deltas), `idle.rs` estimates each zone's idle
//! power, [`split`] divides the energy (pure math, property-tested for conservation; the
//! `platform` zone of a BMC as package + dram + the rest, the rest split on its own), and
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
    PlatformTotals, PodTotals, SourceGrams, WorkloadTotals,
};
pub use split::{
    IdlePolicy, PlatformSplit, Split, idle_intercept, increase, split, split_platform,
};

use crate::{
    kernel::CountersSnapshot,
    power::{PowerSnapshot, zone},
};
use deltas::{Deltas, Interval, Shares, ZoneEnergy};
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
    /// The platform zone's totals, once one was read.
    platform: Option<PlatformTotals>,
}

impl Attributor {
    pub fn new(opts: AttributionOptions) -> Self {
        Self {
            deltas: Deltas::default(),
            idle: IdleEstimates::new(opts.configured_idle.clone(), opts.idle_window),
            ledger: Ledger::default(),
            processes: Processes::new(opts.processes, processes::LINGER),
            platform: None,
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
        let joules = (self.ledger).interval_joules(zones, interval.workloads.keys());
        let workloads = (interval.workloads.iter().zip(joules))
            .map(|((w, (c, _)), joules)| {
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
    /// both split among the workloads; and in grams at the intensity in force. The `platform`
    /// zone comes last, split on top of the CPU zones (see [`split_platform`]). Returns the
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
        let (platform, zones): (Vec<_>, Vec<_>) =
            zones.into_iter().partition(|z| z.zone == zone::PLATFORM);
        let mut cpu = CpuZones::default();
        for z in zones {
            let estimate = self
                .idle
                .update(z.zone, z.watts, interval.busy_ratio, source_idle);
            let idle_j = estimate.map_or(0.0, |(w, _)| w * dt.max(0.0));
            let policy = self.opts.idle_policy;
            let s = split(z.joules, idle_j, &shares.weights, &shares.running, policy);
            self.book(z.zone, &s, Some(dt), shares, carbon);
            if CPU_ZONES.contains(&z.zone) {
                cpu.idle_watts += estimate.map_or(0.0, |(w, _)| w);
                cpu.splits.push(s);
            }
        }
        for z in platform {
            let s = self.split_platform(&z, &cpu, dt, interval.busy_ratio, shares);
            // A meter that measured nothing this interval (stale) shows no power for it.
            let seconds = z.watts.is_some().then_some(dt);
            self.book(z.zone, &s, seconds, shares, carbon);
        }
        Some(dt)
    }

    /// The platform's interval: the CPU zones' splits plus the rest (its idle by its own
    /// estimate), counted in the platform totals. A stale meter (no power this interval: no
    /// energy either) has nothing to compare the CPU zones with: its interval is split alone.
    fn split_platform(
        &mut self,
        z: &ZoneEnergy<'_>,
        cpu: &CpuZones,
        dt: f64,
        busy_ratio: f64,
        shares: &Shares,
    ) -> Split {
        let measured = z.watts.is_some() && dt > 0.0;
        let cpu_joules: f64 = cpu.splits.iter().map(|s| s.idle + s.active).sum();
        let rest_watts = measured.then(|| (z.joules - cpu_joules).max(0.0) / dt);
        let rest_idle = self
            .idle
            .update_platform(rest_watts, busy_ratio, cpu.idle_watts);
        let splits: Vec<&Split> = if measured {
            cpu.splits.iter().collect()
        } else {
            Vec::new()
        };
        let (w, r) = (&shares.weights, &shares.running);
        let idle_j = rest_idle.unwrap_or(0.0) * dt.max(0.0);
        let p = split::split_platform(z.joules, &splits, idle_j, w, r, self.opts.idle_policy);
        self.platform.get_or_insert_default().add(&p, measured);
        p.split
    }

    /// Adds one zone's split interval to the ledger, in joules and in grams. `seconds`: the
    /// interval's length, if its power is known.
    fn book(
        &mut self,
        zone: &str,
        s: &Split,
        seconds: Option<f64>,
        shares: &Shares,
        carbon: Option<&IntervalCarbon>,
    ) {
        self.ledger
            .charge(zone, s, seconds, &shares.keys, shares.agent_fraction);
        if let Some(c) = carbon {
            let g = emissions::zone_grams(s, c);
            self.ledger.charge_grams(zone, &g, &shares.keys);
        }
    }

    /// The platform zone's own totals, once a platform zone was read.
    pub fn platform(&self) -> Option<PlatformTotals> {
        self.platform
    }
}

/// The zones the platform's figure contains, whose energy is measured beside it.
const CPU_ZONES: [&str; 2] = [zone::PACKAGE, zone::DRAM];

/// The CPU zones' interval, for the platform: their splits and their idle power in use.
#[derive(Debug, Default)]
struct CpuZones {
    splits: Vec<Split>,
    idle_watts: f64,
}

#[cfg(test)]
mod tests;
