//! Attribution: each interval, per zone, node energy → idle + active → workloads, by what the
//! kernel counted. The math is in [`split`] (pure); [`Attributor`] keeps the running totals per
//! workload and hands an immutable [`AttributionSnapshot`] to the exporter.

mod options;
pub mod split;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use node_agent_common::CgroupCounters;

pub use options::{AttributionArgs, IDLE_WINDOW_INTERVALS, IdleWindowOutOfRange};
pub use split::{IdlePolicy, Split, idle_intercept, increase, split};

use crate::{
    kernel::{CountersSnapshot, PmuCounters},
    power::PowerSnapshot,
    workload::{self, Workload},
};

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
        }
    }
}

/// Label of cgroups removed before the agent saw their path.
pub const UNSEEN: &str = "(removed before it was seen)";
/// Label of CPU time charged while the in-kernel cgroup map was full.
pub const OVERFLOW: &str = "(cgroup map full)";

/// How a zone's idle power is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleMethod {
    /// Set with --power.idle-watts.
    Configured,
    /// The power model's idle figure.
    Model,
    /// The intercept of power against busy ratio over the recent window.
    Regression,
    /// Not enough spread in load yet for a regression: the lowest power seen, an upper bound.
    Minimum,
}

impl IdleMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            IdleMethod::Configured => "configured",
            IdleMethod::Model => "model",
            IdleMethod::Regression => "regression",
            IdleMethod::Minimum => "minimum",
        }
    }
}

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
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodTotals {
    pub uid: Arc<str>,
    pub running: bool,
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
}

#[derive(Debug)]
struct Entry {
    counters: CgroupCounters,
    /// Per zone index (see `Attributor::zone_names`): joules so far, this interval's joules,
    /// and this interval's power.
    joules: Vec<f64>,
    interval: Vec<f64>,
    watts: Vec<Option<f64>>,
    running: bool,
    /// Last time a cgroup of it was in the kernel's snapshot (alive, or removed and still
    /// reported with its final totals).
    last_seen: Duration,
}

#[derive(Debug)]
struct PodEntry {
    joules: Vec<f64>,
    watts: Vec<Option<f64>>,
    running: bool,
    last_seen: Duration,
}

#[derive(Debug, Default)]
struct NodeEntry {
    active: f64,
    idle: f64,
    kept: f64,
    active_watts: Option<f64>,
    idle_watts: Option<f64>,
    estimate: Option<(f64, IdleMethod)>,
    window: VecDeque<(f64, f64)>,
    /// The last regression result: kept when the window's load stops varying, rather than
    /// falling back to the minimum.
    last_regression: Option<f64>,
}

/// Keeps the running totals: per cgroup id its last own counts, per workload its totals.
#[derive(Debug)]
pub struct Attributor {
    opts: AttributionOptions,
    /// Per cgroup id: its workload, its own counts at the last read, and the read it was last
    /// seen at.
    ids: HashMap<u64, (Workload, CgroupCounters, u64)>,
    reads: u64,
    last_overflow: Option<CgroupCounters>,
    last_cpu: Option<(u64, u64)>,
    last_power: Option<(Duration, BTreeMap<String, f64>)>,
    last_agent_ns: Option<u64>,
    workloads: BTreeMap<Workload, Entry>,
    pods: BTreeMap<Arc<str>, PodEntry>,
    /// Energy of workloads whose series expired, per zone.
    expired_joules: Vec<f64>,
    /// Zone names, in the order of the per-zone vectors.
    zone_names: Vec<String>,
    node: BTreeMap<String, NodeEntry>,
    agent_joules: Vec<f64>,
}

/// `v[i]`, growing `v` as needed.
fn at<T: Default + Clone>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize(i + 1, T::default());
    }
    &mut v[i]
}

fn get<T: Default + Clone>(v: &[T], i: Option<usize>) -> T {
    i.and_then(|i| v.get(i).cloned()).unwrap_or_default()
}

fn sub(a: &CgroupCounters, b: &CgroupCounters) -> CgroupCounters {
    CgroupCounters {
        cpu_ns: a.cpu_ns.saturating_sub(b.cpu_ns),
        switches_voluntary: a.switches_voluntary.saturating_sub(b.switches_voluntary),
        switches_involuntary: a
            .switches_involuntary
            .saturating_sub(b.switches_involuntary),
        cycles: a.cycles.saturating_sub(b.cycles),
        instructions: a.instructions.saturating_sub(b.instructions),
    }
}

/// The increase of every counter (a counter that went down restarted from zero).
fn increases(prev: Option<&CgroupCounters>, now: &CgroupCounters) -> CgroupCounters {
    let f = |p: Option<u64>, n: u64| increase(p, n);
    CgroupCounters {
        cpu_ns: f(prev.map(|p| p.cpu_ns), now.cpu_ns),
        switches_voluntary: f(prev.map(|p| p.switches_voluntary), now.switches_voluntary),
        switches_involuntary: f(
            prev.map(|p| p.switches_involuntary),
            now.switches_involuntary,
        ),
        cycles: f(prev.map(|p| p.cycles), now.cycles),
        instructions: f(prev.map(|p| p.instructions), now.instructions),
    }
}

impl Attributor {
    pub fn new(opts: AttributionOptions) -> Self {
        Self {
            opts,
            ids: HashMap::new(),
            reads: 0,
            last_overflow: None,
            last_cpu: None,
            last_power: None,
            last_agent_ns: None,
            workloads: BTreeMap::new(),
            pods: BTreeMap::new(),
            expired_joules: Vec::new(),
            zone_names: Vec::new(),
            node: BTreeMap::new(),
            agent_joules: Vec::new(),
        }
    }

    /// Takes one interval: the kernel counters, the power reading (if any), the idle power the
    /// source knows (the model's), and the agent's own CPU time.
    pub fn update(
        &mut self,
        counters: &CountersSnapshot,
        power: Option<&PowerSnapshot>,
        source_idle: &[(String, f64)],
        agent_cpu_ns: u64,
    ) -> AttributionSnapshot {
        let now = counters.at;
        // Per workload, what its cgroups did this interval.
        let mut deltas: BTreeMap<Workload, (CgroupCounters, bool)> = BTreeMap::new();
        self.reads += 1;
        let read = self.reads;
        for (id, sample) in &counters.cgroups {
            // Totals carried in from a removed cgroup of the same path were counted already.
            let own = sub(&sample.counters, &sample.carried);
            let (workload, prev) = match self.ids.get_mut(id) {
                Some(known) => {
                    let prev = std::mem::replace(&mut known.1, own);
                    known.2 = read;
                    (known.0.clone(), Some(prev))
                }
                None => {
                    let w = match sample.path.as_deref() {
                        Some(p) => workload::classify(p, self.opts.cgroup_depth),
                        None => Workload::Cgroup(Arc::from(UNSEEN)),
                    };
                    self.ids.insert(*id, (w.clone(), own, read));
                    (w, None)
                }
            };
            let d = increases(prev.as_ref(), &own);
            let e = deltas.entry(workload).or_default();
            e.0.add(&d);
            e.1 |= !sample.gone;
        }
        self.ids.retain(|_, known| known.2 == read);
        if counters.overflow != CgroupCounters::default() || self.last_overflow.is_some() {
            let d = increases(self.last_overflow.as_ref(), &counters.overflow);
            self.last_overflow = Some(counters.overflow);
            let e = deltas
                .entry(Workload::Cgroup(Arc::from(OVERFLOW)))
                .or_default();
            e.0.add(&d);
            e.1 = true;
        }

        let (busy, idle) = (counters.busy_ns(), counters.idle_ns());
        let (d_busy, d_idle) = match self.last_cpu.replace((busy, idle)) {
            Some((b, i)) => (busy.saturating_sub(b), idle.saturating_sub(i)),
            None => (busy, idle),
        };
        let busy_ratio = if d_busy + d_idle > 0 {
            d_busy as f64 / (d_busy + d_idle) as f64
        } else {
            0.0
        };
        let d_agent = increase(self.last_agent_ns.replace(agent_cpu_ns), agent_cpu_ns);

        // Shares: cycles where a hardware PMU counts them (and asked for), else CPU time.
        let by_cycles = match self.opts.share_by {
            ShareBy::Cpu => false,
            ShareBy::Auto => counters.pmu == PmuCounters::Hardware,
            ShareBy::Cycles => counters.pmu != PmuCounters::None,
        } && deltas.values().any(|(d, _)| d.cycles > 0);
        let keys: Vec<Workload> = deltas.keys().cloned().collect();
        let weights: Vec<f64> = deltas
            .values()
            .map(|(d, _)| {
                if by_cycles {
                    d.cycles as f64
                } else {
                    d.cpu_ns as f64
                }
            })
            .collect();
        let running: Vec<bool> = deltas
            .iter()
            .map(|(w, (_, r))| *r && matches!(w, Workload::Container(_)))
            .collect();
        let total_cpu: u64 = deltas.values().map(|(d, _)| d.cpu_ns).sum();

        // Counters and liveness: every workload starts the interval stopped and without power;
        // those the kernel reported this time are updated.
        for e in self.workloads.values_mut() {
            e.watts.fill(None);
            e.interval.fill(0.0);
            e.running = false;
        }
        for (w, (d, r)) in &deltas {
            let e = self.workloads.entry(w.clone()).or_insert_with(|| Entry {
                counters: CgroupCounters::default(),
                joules: Vec::new(),
                interval: Vec::new(),
                watts: Vec::new(),
                running: *r,
                last_seen: now,
            });
            e.counters.add(d);
            e.running = *r;
            e.last_seen = now;
        }

        // Energy, per zone.
        if let Some(p) = power {
            let indices: Vec<usize> = p.zones.iter().map(|z| self.zone_index(&z.zone)).collect();
            let joules: BTreeMap<String, f64> =
                p.zones.iter().map(|z| (z.zone.clone(), z.joules)).collect();
            if let Some((last_at, last)) = self.last_power.replace((p.at, joules.clone())) {
                let dt = p.at.saturating_sub(last_at).as_secs_f64();
                for (z, &zi) in p.zones.iter().zip(&indices) {
                    let Some(before) = last.get(&z.zone) else {
                        continue;
                    };
                    let energy = (z.joules - before).max(0.0);
                    let node = self.node.entry(z.zone.clone()).or_default();
                    if let Some(w) = z.watts {
                        node.window.push_back((busy_ratio, w));
                        while node.window.len() > self.opts.idle_window.max(2) {
                            node.window.pop_front();
                        }
                    }
                    node.estimate = idle_estimate(
                        &z.zone,
                        &self.opts.configured_idle,
                        source_idle,
                        &node.window,
                        node.last_regression,
                    );
                    if let Some((w, IdleMethod::Regression)) = node.estimate {
                        node.last_regression = Some(w);
                    }
                    let idle_j = node.estimate.map_or(0.0, |(w, _)| w * dt.max(0.0));
                    let s = split(energy, idle_j, &weights, &running, self.opts.idle_policy);
                    node.active += s.active;
                    node.idle += s.idle;
                    node.kept += s.kept_by_node;
                    let per_s = |j: f64| (dt > 0.0).then(|| j / dt);
                    node.active_watts = per_s(s.active);
                    node.idle_watts = per_s(s.idle);
                    for (i, w) in keys.iter().enumerate() {
                        let j = s.workload_active[i] + s.workload_idle[i];
                        if let Some(e) = self.workloads.get_mut(w) {
                            *at(&mut e.joules, zi) += j;
                            *at(&mut e.interval, zi) += j;
                            *at(&mut e.watts, zi) = per_s(j);
                        }
                    }
                    // The agent's own share of active energy, by its CPU time.
                    if total_cpu > 0 {
                        *at(&mut self.agent_joules, zi) +=
                            s.active * (d_agent.min(total_cpu) as f64 / total_cpu as f64);
                    }
                }
            }
        }

        // Pods: their totals are kept here, not summed from the containers still tracked, so
        // that a pod's series never goes back when one of its containers expires.
        for p in self.pods.values_mut() {
            p.watts.fill(None);
            p.running = false;
        }
        for (w, e) in &self.workloads {
            let Workload::Container(c) = w else { continue };
            let Some(uid) = &c.pod_uid else { continue };
            let p = self.pods.entry(uid.clone()).or_insert_with(|| PodEntry {
                joules: Vec::new(),
                watts: Vec::new(),
                running: false,
                last_seen: now,
            });
            if deltas.contains_key(w) {
                p.last_seen = now;
            }
            p.running |= e.running;
            for (zi, j) in e.interval.iter().enumerate() {
                *at(&mut p.joules, zi) += j;
            }
            for (zi, watts) in e.watts.iter().enumerate() {
                if let Some(w) = watts {
                    *at(&mut p.watts, zi).get_or_insert(0.0) += w;
                }
            }
        }

        // Workloads no longer in the kernel's snapshot go after the retention; their energy
        // moves to the expired total so the node's sums still reconcile. Beyond the bound, the
        // longest-gone go first.
        let retention = self.opts.retention;
        let expired: Vec<Workload> = self
            .workloads
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_seen) >= retention)
            .map(|(w, _)| w.clone())
            .collect();
        let mut expired = expired;
        let over = (self.workloads.len() - expired.len()).saturating_sub(self.opts.max_workloads);
        if over > 0 {
            let mut stopped: Vec<(Duration, Workload)> = self
                .workloads
                .iter()
                .filter(|(w, e)| !e.running && !expired.contains(w))
                .map(|(w, e)| (e.last_seen, w.clone()))
                .collect();
            stopped.sort();
            expired.extend(stopped.into_iter().take(over).map(|(_, w)| w));
        }
        for w in expired {
            if let Some(e) = self.workloads.remove(&w) {
                for (zi, j) in e.joules.iter().enumerate() {
                    *at(&mut self.expired_joules, zi) += j;
                }
            }
        }
        let live_pods: std::collections::HashSet<Arc<str>> = self
            .workloads
            .keys()
            .filter_map(|w| match w {
                Workload::Container(c) => c.pod_uid.clone(),
                Workload::Cgroup(_) => None,
            })
            .collect();
        self.pods.retain(|uid, _| live_pods.contains(uid));

        self.snapshot(power, by_cycles)
    }

    fn zone_index(&mut self, zone: &str) -> usize {
        match self.zone_names.iter().position(|z| z == zone) {
            Some(i) => i,
            None => {
                self.zone_names.push(zone.to_owned());
                self.zone_names.len() - 1
            }
        }
    }

    fn snapshot(&self, power: Option<&PowerSnapshot>, by_cycles: bool) -> AttributionSnapshot {
        let zones: Vec<String> = power
            .map(|p| p.zones.iter().map(|z| z.zone.clone()).collect())
            .unwrap_or_default();
        let idx: Vec<Option<usize>> = zones
            .iter()
            .map(|z| self.zone_names.iter().position(|n| n == z))
            .collect();
        let node = zones
            .iter()
            .map(|z| {
                let n = self.node.get(z);
                NodeZone {
                    zone: z.clone(),
                    active_joules: n.map_or(0.0, |n| n.active),
                    idle_joules: n.map_or(0.0, |n| n.idle),
                    kept_joules: n.map_or(0.0, |n| n.kept),
                    active_watts: n.and_then(|n| n.active_watts),
                    idle_watts: n.and_then(|n| n.idle_watts),
                    idle_estimate: n.and_then(|n| n.estimate),
                }
            })
            .collect();
        let workloads = self
            .workloads
            .iter()
            .map(|(w, e)| WorkloadTotals {
                workload: w.clone(),
                running: e.running,
                counters: e.counters,
                joules: idx.iter().map(|i| get(&e.joules, *i)).collect(),
                watts: idx.iter().map(|i| get(&e.watts, *i)).collect(),
            })
            .collect();
        AttributionSnapshot {
            node,
            workloads,
            shared_by_cycles: by_cycles,
            agent_cpu_seconds: self.last_agent_ns.unwrap_or(0) as f64 / 1e9,
            agent_joules: idx.iter().map(|i| get(&self.agent_joules, *i)).collect(),
            pods: self
                .pods
                .iter()
                .map(|(uid, p)| PodTotals {
                    uid: uid.clone(),
                    running: p.running,
                    joules: idx.iter().map(|i| get(&p.joules, *i)).collect(),
                    watts: idx.iter().map(|i| get(&p.watts, *i)).collect(),
                })
                .collect(),
            expired_joules: idx.iter().map(|i| get(&self.expired_joules, *i)).collect(),
            zones,
        }
    }
}

/// The idle power of a zone: configured, else the source's own (the model), else measured.
fn idle_estimate(
    zone: &str,
    configured: &[(String, f64)],
    source: &[(String, f64)],
    window: &VecDeque<(f64, f64)>,
    last_regression: Option<f64>,
) -> Option<(f64, IdleMethod)> {
    if let Some((_, w)) = configured.iter().find(|(z, _)| z == zone) {
        return Some((*w, IdleMethod::Configured));
    }
    if let Some((_, w)) = source.iter().find(|(z, _)| z == zone) {
        return Some((*w, IdleMethod::Model));
    }
    let points: Vec<(f64, f64)> = window.iter().copied().collect();
    if let Some(w) = idle_intercept(&points).or(last_regression) {
        return Some((w, IdleMethod::Regression));
    }
    points
        .iter()
        .map(|p| p.1)
        .filter(|w| w.is_finite())
        .reduce(f64::min)
        .map(|w| (w.max(0.0), IdleMethod::Minimum))
}

#[cfg(test)]
mod tests;
