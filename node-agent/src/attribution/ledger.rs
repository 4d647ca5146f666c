//! The attribution ledger: what each workload, each pod, the node and the agent have been given
//! so far, per zone, and when stopped workloads expire. Workload totals live here and nowhere
//! else: they only ever grow, whatever happens to the cgroups behind them (removed, re-created
//! under a new id at the same path, dropped from the kernel's snapshot), until the workload
//! expires and its energy moves to the expired total.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use node_agent_common::CgroupCounters;

use super::{
    AttributionSnapshot, IntervalCarbon, NodeZone, PodTotals, WorkloadTotals,
    emissions::{Account, NodeCarbon, ZoneGrams},
    idle::IdleEstimates,
    split::Split,
};
use crate::{carbon::GramsSplit, retention::Retention, workload::Workload};

#[derive(Debug, Default)]
struct Entry {
    counters: CgroupCounters,
    /// Per zone index (see `Ledger::zone_names`): joules so far, this interval's joules, and
    /// this interval's power.
    joules: Vec<f64>,
    interval: Vec<f64>,
    watts: Vec<Option<f64>>,
    running: bool,
    carbon: Account,
}

#[derive(Debug, Default)]
struct PodEntry {
    joules: Vec<f64>,
    watts: Vec<Option<f64>>,
    running: bool,
    carbon: Account,
}

#[derive(Debug, Default)]
struct NodeEntry {
    active: f64,
    idle: f64,
    kept: f64,
    active_watts: Option<f64>,
    idle_watts: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Zone names, in the order of the per-zone vectors.
    zone_names: Vec<String>,
    workloads: BTreeMap<Workload, Entry>,
    /// Workloads not running, since the kernel last reported them.
    stopped: Retention<Workload>,
    /// When the previous interval was counted.
    last_at: Duration,
    /// Pods' totals are kept here, not summed from the containers still tracked, so that a
    /// pod's series never goes back when one of its containers expires.
    pods: BTreeMap<Arc<str>, PodEntry>,
    node: BTreeMap<String, NodeEntry>,
    agent_joules: Vec<f64>,
    /// Energy of workloads whose series expired, per zone.
    expired_joules: Vec<f64>,
    /// The node's grams, and expired workloads'.
    carbon: NodeCarbon,
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

/// The entries of `keys`, each with its place in `keys`, in one walk of the ledger: `keys` are in
/// order (an interval's workloads are a sorted map's), so each is found by stepping on rather
/// than by a search of its own (with 1,000 workloads, the searches' comparisons were a quarter
/// of the agent's CPU).
fn entries_of<'a>(
    workloads: &'a mut BTreeMap<Workload, Entry>,
    keys: &'a [Workload],
) -> impl Iterator<Item = (usize, &'a mut Entry)> {
    debug_assert!(keys.is_sorted(), "keys out of order");
    let mut ledger = workloads.iter_mut().peekable();
    (keys.iter().enumerate()).filter_map(move |(i, k)| step_to(&mut ledger, k).map(|e| (i, e)))
}

/// Steps a sorted map's iterator on to `key`: its value if the map has it (the iterator then
/// past it), else None (the iterator at the first key after it).
fn step_to<'a, V>(
    it: &mut std::iter::Peekable<impl Iterator<Item = (&'a Workload, V)>>,
    key: &Workload,
) -> Option<V> {
    loop {
        match it.peek()?.0.cmp(key) {
            std::cmp::Ordering::Less => {
                it.next();
            }
            std::cmp::Ordering::Equal => return it.next().map(|(_, v)| v),
            std::cmp::Ordering::Greater => return None,
        }
    }
}

/// The keys of `b` that `a` lacks, both sorted, in one walk.
fn missing<'a>(
    a: impl Iterator<Item = &'a Workload>,
    b: impl Iterator<Item = &'a Workload>,
) -> impl Iterator<Item = &'a Workload> {
    let mut a = a.map(|w| (w, ())).peekable();
    b.filter(move |w| step_to(&mut a, w).is_none())
}

impl Ledger {
    /// Starts the interval at `now`: every workload starts it stopped and without power; those
    /// the kernel reported add what they counted and say whether they run.
    pub fn count(&mut self, now: Duration, reported: &BTreeMap<Workload, (CgroupCounters, bool)>) {
        let new: Vec<Workload> = missing(self.workloads.keys(), reported.keys())
            .cloned()
            .collect();
        self.workloads
            .extend(new.into_iter().map(|w| (w, Entry::default())));
        let mut reported = reported.iter().peekable();
        for (w, e) in &mut self.workloads {
            e.watts.fill(None);
            e.interval.fill(0.0);
            e.carbon.start_interval();
            let was_running = std::mem::take(&mut e.running);
            match step_to(&mut reported, w) {
                Some((d, running)) => {
                    e.counters.add(d);
                    e.running = *running;
                    if !running {
                        self.stopped.renew(w.clone(), now, ());
                    } else if !was_running {
                        // Only a workload that was not running can be among the stopped.
                        self.stopped.resume(w);
                    }
                }
                // Running at the last interval and not reported now: stopped as of then.
                None if was_running => self.stopped.end(w.clone(), self.last_at, ()),
                None => {}
            }
        }
        self.last_at = now;
    }

    /// Adds one zone's energy of the interval, split, over `dt` seconds (none: its power is not
    /// known): the node's parts, each workload's (`keys` in the order of the split), and the
    /// agent's part of active energy.
    pub fn charge(
        &mut self,
        zone: &str,
        s: &Split,
        dt: Option<f64>,
        keys: &[Workload],
        agent_fraction: Option<f64>,
    ) {
        let zi = self.zone_index(zone);
        let per_s = |j: f64| dt.filter(|dt| *dt > 0.0).map(|dt| j / dt);
        let node = self.node.entry(zone.to_owned()).or_default();
        node.active += s.active;
        node.idle += s.idle;
        node.kept += s.kept_by_node;
        node.active_watts = per_s(s.active);
        node.idle_watts = per_s(s.idle);
        for (i, e) in entries_of(&mut self.workloads, keys) {
            let j = s.workload_active[i] + s.workload_idle[i];
            *at(&mut e.joules, zi) += j;
            *at(&mut e.interval, zi) += j;
            *at(&mut e.watts, zi) = per_s(j);
        }
        if let Some(f) = agent_fraction {
            *at(&mut self.agent_joules, zi) += s.active * f;
        }
    }

    /// Adds one zone's interval in grams: the node's parts and each workload's (`keys` in the
    /// order of the split).
    pub fn charge_grams(&mut self, zone: &str, g: &ZoneGrams, keys: &[Workload]) {
        let zi = self.zone_index(zone);
        self.carbon.charge(zi, g);
        for (i, e) in entries_of(&mut self.workloads, keys) {
            if let Some(grams) = g.split.workloads.get(i) {
                e.carbon.charge(g.source, zi, *grams);
            }
        }
    }

    /// Adds the interval's embodied grams: the node's, and each workload's.
    pub fn charge_embodied(&mut self, g: &GramsSplit, keys: &[Workload]) {
        self.carbon.charge_embodied(g);
        for (i, e) in entries_of(&mut self.workloads, keys) {
            if let Some(grams) = g.workloads.get(i) {
                e.carbon.charge_embodied(*grams);
            }
        }
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

    /// Adds the interval's container energy and power to their pods.
    pub fn roll_up_pods(&mut self) {
        for p in self.pods.values_mut() {
            p.watts.fill(None);
            p.running = false;
        }
        for (w, e) in &self.workloads {
            let Workload::Container(c) = w else { continue };
            let Some(uid) = &c.pod_uid else { continue };
            let p = self.pods.entry(uid.clone()).or_default();
            p.running |= e.running;
            p.carbon.add_interval_of(&e.carbon);
            for (zi, j) in e.interval.iter().enumerate() {
                *at(&mut p.joules, zi) += j;
            }
            for (zi, watts) in e.watts.iter().enumerate() {
                if let Some(w) = watts {
                    *at(&mut p.watts, zi).get_or_insert(0.0) += w;
                }
            }
        }
    }

    /// Stopped workloads go `keep_for` after the kernel last reported them, and beyond `max`
    /// workloads the longest-stopped go first (running ones never); their energy moves to the
    /// expired total so that the node's sums still reconcile. A pod goes with its last container.
    pub fn expire(&mut self, now: Duration, keep_for: Duration, max: usize) {
        let running = self.workloads.values().filter(|e| e.running).count();
        let room = max.saturating_sub(running);
        for (w, ()) in self.stopped.expire(now, keep_for, room) {
            if let Some(e) = self.workloads.remove(&w) {
                for (zi, j) in e.joules.iter().enumerate() {
                    *at(&mut self.expired_joules, zi) += j;
                }
                self.carbon.expired.absorb(&e.carbon);
            }
        }
        let live_pods: HashSet<&Arc<str>> = self
            .workloads
            .keys()
            .filter_map(|w| match w {
                Workload::Container(c) => c.pod_uid.as_ref(),
                Workload::Cgroup(_) | Workload::Vm(_) => None,
            })
            .collect();
        self.pods.retain(|uid, _| live_pods.contains(uid));
    }

    /// The energy of the interval of each of `keys` (in order), per zone in the order of
    /// `zones`; zeros for a key the ledger does not have.
    pub fn interval_joules<'a>(
        &self,
        zones: &[String],
        keys: impl Iterator<Item = &'a Workload>,
    ) -> Vec<Vec<f64>> {
        let idx: Vec<Option<usize>> = (zones.iter())
            .map(|z| self.zone_names.iter().position(|n| n == z))
            .collect();
        let mut ledger = self.workloads.iter().peekable();
        keys.map(|k| match step_to(&mut ledger, k) {
            Some(e) => idx.iter().map(|i| get(&e.interval, *i)).collect(),
            None => vec![0.0; zones.len()],
        })
        .collect()
    }

    /// The totals, per zone in the order of `zones`.
    pub fn snapshot(
        &self,
        zones: Vec<String>,
        idle: &IdleEstimates,
        shared_by_cycles: bool,
        agent_cpu_seconds: f64,
        carbon: Option<&IntervalCarbon>,
    ) -> AttributionSnapshot {
        let idx: Vec<Option<usize>> = zones
            .iter()
            .map(|z| self.zone_names.iter().position(|n| n == z))
            .collect();
        let per_zone = |v: &[f64]| idx.iter().map(|i| get(v, *i)).collect::<Vec<_>>();
        let watts = |v: &[Option<f64>]| idx.iter().map(|i| get(v, *i)).collect::<Vec<_>>();
        AttributionSnapshot {
            node: zones.iter().map(|z| self.node_zone(z, idle)).collect(),
            workloads: (self.workloads.iter())
                .map(|(w, e)| WorkloadTotals {
                    workload: w.clone(),
                    running: e.running,
                    counters: e.counters,
                    joules: per_zone(&e.joules),
                    watts: watts(&e.watts),
                    emissions: e.carbon.totals(&idx),
                })
                .collect(),
            shared_by_cycles,
            agent_cpu_seconds,
            agent_joules: per_zone(&self.agent_joules),
            pods: (self.pods.iter())
                .map(|(uid, p)| PodTotals {
                    uid: uid.clone(),
                    running: p.running,
                    joules: per_zone(&p.joules),
                    watts: watts(&p.watts),
                    emissions: p.carbon.totals(&idx),
                })
                .collect(),
            expired_joules: per_zone(&self.expired_joules),
            carbon: carbon.map(|c| self.carbon.snapshot(c, &idx)),
            zones,
            processes: Vec::new(),
            busy_ratio: 0.0,
        }
    }

    fn node_zone(&self, zone: &str, idle: &IdleEstimates) -> NodeZone {
        let n = self.node.get(zone);
        NodeZone {
            zone: zone.to_owned(),
            active_joules: n.map_or(0.0, |n| n.active),
            idle_joules: n.map_or(0.0, |n| n.idle),
            kept_joules: n.map_or(0.0, |n| n.kept),
            active_watts: n.and_then(|n| n.active_watts),
            idle_watts: n.and_then(|n| n.idle_watts),
            idle_estimate: idle.estimate(zone),
            emissions: self
                .carbon
                .zone(self.zone_names.iter().position(|n| n == zone)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cgroup(n: u8) -> Workload {
        Workload::Cgroup(Arc::from(format!("/w{n:03}")))
    }

    proptest! {
        /// The walks find what searches would: every key the ledger has, at its place in
        /// `keys`, and every key it lacks.
        #[test]
        fn walks_find_what_searches_would(
            ledger in proptest::collection::btree_set(any::<u8>(), 0..40),
            keys in proptest::collection::btree_set(any::<u8>(), 0..40),
        ) {
            let mut workloads: BTreeMap<Workload, Entry> =
                ledger.iter().map(|n| (cgroup(*n), Entry::default())).collect();
            for n in &ledger {
                workloads.get_mut(&cgroup(*n)).unwrap().counters.cpu_ns = u64::from(*n);
            }
            let keys: Vec<Workload> = keys.iter().map(|n| cgroup(*n)).collect();
            let walked: Vec<(usize, u64)> = entries_of(&mut workloads, &keys)
                .map(|(i, e)| (i, e.counters.cpu_ns))
                .collect();
            let searched: Vec<(usize, u64)> = (keys.iter().enumerate())
                .filter_map(|(i, k)| workloads.get(k).map(|e| (i, e.counters.cpu_ns)))
                .collect();
            prop_assert_eq!(walked, searched);
            let lacking: Vec<&Workload> = missing(workloads.keys(), keys.iter()).collect();
            let searched: Vec<&Workload> =
                keys.iter().filter(|k| !workloads.contains_key(k)).collect();
            prop_assert_eq!(lacking, searched);
        }
    }
}
