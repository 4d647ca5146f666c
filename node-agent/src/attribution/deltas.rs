//! What changed in one interval, from the cumulative readings: per workload, what its cgroups
//! did (each cgroup id followed on its own, so a removed cgroup, or a new one at the same path,
//! adds only what it counted itself); the node's busy ratio; the agent's own CPU time; each
//! zone's energy. And how active energy is shared among the workloads that ran.

use crate::ids::IdMap;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use node_agent_common::CgroupCounters;

use super::{OVERFLOW, ShareBy, UNSEEN, split::increase};
use crate::{
    kernel::{CountersSnapshot, PmuCounters},
    power::PowerSnapshot,
    workload::{self, Workload},
};

/// A cgroup id as last read: its workload, its counts, and the read it was seen at.
#[derive(Debug)]
struct Known {
    workload: Workload,
    counts: CgroupCounters,
    read: u64,
    /// Its workload's place in the last interval's order (`NEW` before it had one).
    rank: u32,
}

const NEW: u32 = u32::MAX;

/// The previous readings, to take differences from.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    ids: IdMap<u64, Known>,
    reads: u64,
    last_overflow: Option<CgroupCounters>,
    last_cpu: Option<(u64, u64)>,
    last_agent_ns: Option<u64>,
    last_at: Option<Duration>,
    last_power: Option<(Duration, BTreeMap<String, f64>)>,
}

/// One interval of the kernel counters.
#[derive(Debug)]
pub(crate) struct Interval {
    /// Per workload the kernel reported: what its cgroups did, and whether one of them is alive.
    pub workloads: BTreeMap<Workload, (CgroupCounters, bool)>,
    /// The node's busy CPU time over busy + idle.
    pub busy_ratio: f64,
    /// The agent's own CPU time.
    pub agent_ns: u64,
    /// Seconds since the last interval (0 at the first), and all CPUs' time in them (busy +
    /// idle, ns): the capacity that embodied emissions are shared out of.
    pub seconds: f64,
    pub cpu_capacity_ns: f64,
}

/// One zone's energy over the interval.
#[derive(Debug)]
pub(crate) struct ZoneEnergy<'a> {
    pub zone: &'a str,
    pub joules: f64,
    /// The source's average power over its last reading, when it knows it.
    pub watts: Option<f64>,
}

impl Deltas {
    /// The interval since the last call.
    pub fn interval(
        &mut self,
        counters: &CountersSnapshot,
        cgroup_depth: usize,
        agent_cpu_ns: u64,
    ) -> Interval {
        let mut workloads = self.cgroup_deltas(counters, cgroup_depth);
        if counters.overflow != CgroupCounters::default() || self.last_overflow.is_some() {
            let d = increases(self.last_overflow.as_ref(), &counters.overflow);
            self.last_overflow = Some(counters.overflow);
            let e = workloads
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
        let seconds = (self.last_at.replace(counters.at))
            .map_or(0.0, |t| counters.at.saturating_sub(t).as_secs_f64());
        Interval {
            workloads,
            busy_ratio,
            agent_ns: increase(self.last_agent_ns.replace(agent_cpu_ns), agent_cpu_ns),
            seconds,
            cpu_capacity_ns: (d_busy + d_idle) as f64,
        }
    }

    /// Per workload, what its cgroups counted since the last read. An id is classified once,
    /// when first seen; ids that left the snapshot are forgotten (their counts are in the
    /// ledger already). The cgroups are put in their workloads' order by the place each had
    /// last time (integers), so that ordering the workloads themselves only has the new ones
    /// to place: with 1,000 workloads, searching a map for each was a tenth of the agent's CPU.
    fn cgroup_deltas(
        &mut self,
        counters: &CountersSnapshot,
        cgroup_depth: usize,
    ) -> BTreeMap<Workload, (CgroupCounters, bool)> {
        self.reads += 1;
        let read = self.reads;
        let mut rows = Vec::with_capacity(counters.cgroups.len());
        for (id, sample) in &counters.cgroups {
            let now = sample.counters;
            let (workload, prev, rank) = match self.ids.get_mut(id) {
                Some(known) => {
                    known.read = read;
                    let prev = std::mem::replace(&mut known.counts, now);
                    (known.workload.clone(), Some(prev), known.rank)
                }
                None => {
                    let workload = match sample.path.as_deref() {
                        Some(p) => workload::classify(p, cgroup_depth),
                        None => Workload::Cgroup(Arc::from(UNSEEN)),
                    };
                    let known = Known {
                        workload: workload.clone(),
                        counts: now,
                        read,
                        rank: NEW,
                    };
                    self.ids.insert(*id, known);
                    (workload, None, NEW)
                }
            };
            let alive = !sample.gone;
            rows.push((rank, *id, workload, increases(prev.as_ref(), &now), alive));
        }
        self.ids.retain(|_, known| known.read == read);
        rows.sort_unstable_by_key(|r| r.0);
        // Already in order but for the new workloads: the stable sort merges them in.
        rows.sort_by(|a, b| a.2.cmp(&b.2));
        let mut deltas: Vec<(Workload, (CgroupCounters, bool))> = Vec::with_capacity(rows.len());
        for (_, id, workload, d, alive) in rows {
            match deltas.last_mut() {
                Some((last, e)) if *last == workload => {
                    e.0.add(&d);
                    e.1 |= alive;
                }
                _ => deltas.push((workload, (d, alive))),
            }
            if let Some(known) = self.ids.get_mut(&id) {
                known.rank = (deltas.len() - 1) as u32;
            }
        }
        deltas.into_iter().collect()
    }

    /// Each zone's energy since the last power reading, and the seconds between the two; none
    /// at the first reading. Zones new in this reading are left out.
    pub fn energy<'p>(&mut self, power: &'p PowerSnapshot) -> Option<(f64, Vec<ZoneEnergy<'p>>)> {
        let joules = power
            .zones
            .iter()
            .map(|z| (z.zone.clone(), z.joules))
            .collect();
        let (last_at, last) = self.last_power.replace((power.at, joules))?;
        let dt = power.at.saturating_sub(last_at).as_secs_f64();
        let zones = power
            .zones
            .iter()
            .filter_map(|z| {
                let before = last.get(&z.zone)?;
                Some(ZoneEnergy {
                    zone: &z.zone,
                    joules: (z.joules - before).max(0.0),
                    watts: z.watts,
                })
            })
            .collect();
        Some((dt, zones))
    }

    /// The workload of a cgroup id of the last interval.
    pub fn workload_of(&self, id: u64) -> Option<&Workload> {
        self.ids.get(&id).map(|k| &k.workload)
    }

    /// The agent's CPU time at the last interval, in seconds.
    pub fn agent_cpu_seconds(&self) -> f64 {
        self.last_agent_ns.unwrap_or(0) as f64 / 1e9
    }
}

/// How active energy is shared in one interval, in the order of [`Interval::workloads`].
#[derive(Debug)]
pub(crate) struct Shares {
    pub keys: Vec<Workload>,
    /// Each workload's busy CPU time or cycles.
    pub weights: Vec<f64>,
    /// Whether each is a running container (for the `even` idle policy).
    pub running: Vec<bool>,
    pub by_cycles: bool,
    /// The agent's part of active energy (its CPU time over everyone's), if anything ran.
    pub agent_fraction: Option<f64>,
}

impl Interval {
    /// Shares by cycles where a hardware PMU counts them (and asked for), else by CPU time.
    pub fn shares(&self, share_by: ShareBy, pmu: PmuCounters) -> Shares {
        let by_cycles = match share_by {
            ShareBy::Cpu => false,
            ShareBy::Auto => pmu == PmuCounters::Hardware,
            ShareBy::Cycles => pmu != PmuCounters::None,
        } && self.workloads.values().any(|(d, _)| d.cycles > 0);
        let weight = |d: &CgroupCounters| {
            if by_cycles {
                d.cycles as f64
            } else {
                d.cpu_ns as f64
            }
        };
        let total_cpu: u64 = self.workloads.values().map(|(d, _)| d.cpu_ns).sum();
        Shares {
            keys: self.workloads.keys().cloned().collect(),
            weights: self.workloads.values().map(|(d, _)| weight(d)).collect(),
            running: self
                .workloads
                .iter()
                .map(|(w, (_, r))| *r && matches!(w, Workload::Container(_)))
                .collect(),
            by_cycles,
            agent_fraction: (total_cpu > 0)
                .then(|| self.agent_ns.min(total_cpu) as f64 / total_cpu as f64),
        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::attribution::tests::counters;

    proptest! {
        /// Each workload's interval is what its cgroups counted since they were last seen,
        /// however cgroups and workloads come, go and come back: ordered by last time's places,
        /// it is what a search per cgroup gives.
        #[test]
        fn each_workload_gets_what_its_cgroups_counted(
            steps in proptest::collection::vec(
                proptest::collection::btree_map(0u64..40, (0u64..1_000, any::<bool>()), 0..30),
                1..12,
            ),
        ) {
            // Cut at depth 1, ids 3, 12, 21… are one workload (`/s3`).
            let path = |id: u64| format!("/s{}/c{id}", id % 9);
            let mut deltas = Deltas::default();
            let (mut total, mut last) = (HashMap::<u64, u64>::new(), HashMap::<u64, u64>::new());
            for (t, step) in steps.iter().enumerate() {
                let mut rows = Vec::new();
                let mut expected: BTreeMap<Workload, (u64, bool)> = BTreeMap::new();
                let mut seen = HashMap::new();
                for (id, (ran, gone)) in step {
                    let now = *total.entry(*id).and_modify(|n| *n += ran).or_insert(*ran);
                    rows.push((*id, path(*id), now, *gone));
                    let e = expected
                        .entry(Workload::Cgroup(Arc::from(format!("/s{}", id % 9))))
                        .or_default();
                    e.0 += now - last.get(id).copied().unwrap_or(0);
                    e.1 |= !gone;
                    seen.insert(*id, now);
                }
                last = seen;
                let rows: Vec<(u64, &str, u64, bool)> =
                    rows.iter().map(|(id, p, n, g)| (*id, p.as_str(), *n, *g)).collect();
                let got: BTreeMap<Workload, (u64, bool)> = deltas
                    .interval(&counters(t as u64 + 1, &rows, 0), 1, 0)
                    .workloads
                    .into_iter()
                    .map(|(w, (c, alive))| (w, (c.cpu_ns, alive)))
                    .collect();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
