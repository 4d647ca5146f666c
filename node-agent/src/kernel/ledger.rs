//! The cgroup lifecycle, as bookkeeping over what the map reads show: which ids are alive and at
//! which path, which ran since the last read, which were removed (reported with their final counts
//! for the retention), and the counts already taken out of the map. Pure: the loader feeds it
//! the map's entries as plain data, and the two things that touch the host as closures (is this
//! id alive? take this entry out of the map).
//!
//! Each cgroup id reports what the kernel counted for it. A path re-created under a new id (a
//! restarted service) is a new cgroup here; the attribution ledger keeps the workload's totals.

use crate::ids::IdMap;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use node_agent_common::{CgroupCounters, CpuCounters};

use super::snapshot::{self, CgroupSample, CpuTime};
use crate::{cgroup::Lookup, retention::Retention};

/// The cgroups of one read, as the snapshot reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupsRead {
    pub samples: BTreeMap<u64, CgroupSample>,
    /// Map entries of live cgroups.
    pub live_entries: usize,
    /// Entries of removed cgroups taken out of the map so far.
    pub deletions: u64,
}

/// What the agent knows of every cgroup id the map has shown it.
#[derive(Debug)]
pub struct CgroupLedger {
    /// Path of every id last seen alive.
    paths: IdMap<u64, Arc<str>>,
    /// Per map entry, its summed CPU time at the last read (to tell which ran since).
    cpu_seen: IdMap<u64, u64>,
    /// Counts already taken out of the map, per id (the last read of a removed cgroup's entry).
    taken: IdMap<u64, CgroupCounters>,
    /// Removed cgroups, since when, and their last known path.
    removed: Retention<u64, Option<Arc<str>>>,
    keep_removed: Duration,
    max_removed: usize,
    deletions: u64,
    /// Idle time per CPU last reported, so that it never goes backwards.
    last_idle: Vec<u64>,
}

impl CgroupLedger {
    /// Removed cgroups are reported for `keep_removed`; at most `max_removed` of them (the
    /// longest-removed go first).
    pub fn new(keep_removed: Duration, max_removed: usize) -> Self {
        Self {
            paths: IdMap::default(),
            cpu_seen: IdMap::default(),
            taken: IdMap::default(),
            removed: Retention::new(),
            keep_removed,
            max_removed,
            deletions: 0,
            last_idle: Vec::new(),
        }
    }

    /// Takes one read of the map at `at`: each entry's id and its per-CPU values summed.
    /// `lookup` says whether an id is a live cgroup (asked only for ids that did not run since
    /// the last read: one that ran existed during the interval, and its cached path is
    /// trusted). `take` reads and deletes a removed cgroup's entry in one step, returning its
    /// last counts (None if it was not there any more).
    pub fn record<E>(
        &mut self,
        at: Duration,
        entries: impl IntoIterator<Item = (u64, CgroupCounters)>,
        mut lookup: impl FnMut(u64) -> Lookup,
        mut take: impl FnMut(u64) -> Result<Option<CgroupCounters>, E>,
    ) -> Result<CgroupsRead, E> {
        let mut samples = BTreeMap::new();
        let mut cpu_now = IdMap::with_capacity_and_hasher(self.cpu_seen.len(), Default::default());
        for (id, counted) in entries {
            let ran = self.cpu_seen.get(&id).is_some_and(|c| *c != counted.cpu_ns);
            cpu_now.insert(id, counted.cpu_ns);
            let alive = match self.paths.get(&id) {
                Some(path) if ran => Lookup::Alive(path.clone()),
                _ => lookup(id),
            };
            match alive {
                Lookup::Alive(path) => {
                    samples.insert(id, self.alive(id, path, counted));
                }
                Lookup::Gone => self.removed_at(at, id, take(id)?),
            }
        }
        let live_entries = samples.len();
        self.cpu_seen = cpu_now;
        self.expire(at, &samples);
        self.report_removed(&mut samples);
        Ok(CgroupsRead {
            samples,
            live_entries,
            deletions: self.deletions,
        })
    }

    fn alive(&mut self, id: u64, path: Arc<str>, counted: CgroupCounters) -> CgroupSample {
        // Alive after all (a rescan had missed it, and its entry was taken): not removed.
        self.removed.resume(&id);
        let mut counters = self.taken.get(&id).copied().unwrap_or_default();
        counters.add(&counted);
        self.paths.insert(id, path.clone());
        CgroupSample {
            path: Some(path),
            counters,
            gone: false,
        }
    }

    /// A removed cgroup, and its entry's last counts if there still was one.
    fn removed_at(&mut self, at: Duration, id: u64, last: Option<CgroupCounters>) {
        let path = self
            .paths
            .remove(&id)
            .or_else(|| self.removed.get(&id).and_then(|(_, p)| p.clone()));
        match last {
            Some(last) => {
                self.deletions += 1;
                self.taken.entry(id).or_default().add(&last);
                // Fresh counts (a task was still charged to it): the retention starts again.
                self.removed.renew(id, at, path);
            }
            None => self.removed.end(id, at, path),
        }
    }

    /// Forgets removed cgroups after the retention (the longest-removed first beyond the bound),
    /// and counts taken from entries no longer reported.
    fn expire(&mut self, at: Duration, alive: &BTreeMap<u64, CgroupSample>) {
        self.removed.expire(at, self.keep_removed, self.max_removed);
        let removed = &self.removed;
        self.taken
            .retain(|id, _| removed.contains(id) || alive.contains_key(id));
        // Without this, every cgroup ever seen would keep its path for good.
        self.paths
            .retain(|id, _| removed.contains(id) || alive.contains_key(id));
    }

    /// Removed cgroups whose counts were taken are reported with their final totals.
    fn report_removed(&self, samples: &mut BTreeMap<u64, CgroupSample>) {
        for (id, _, path) in self.removed.iter() {
            if let Some(total) = self.taken.get(id) {
                samples.entry(*id).or_insert_with(|| CgroupSample {
                    path: path.clone(),
                    counters: *total,
                    gone: true,
                });
            }
        }
    }

    /// Busy and idle time per CPU and the overflow slot, from the per-CPU state read at
    /// `now_ns`. The copy of the per-CPU state is not atomic with the program, so each CPU's
    /// idle time is held at least at what was last reported.
    pub fn cpu_times(
        &mut self,
        per_cpu: &[CpuCounters],
        now_ns: u64,
    ) -> (Vec<CpuTime>, CgroupCounters) {
        let (mut cpus, overflow) = snapshot::sum_cpus(per_cpu, now_ns);
        self.last_idle.resize(cpus.len(), 0);
        for (cpu, last) in cpus.iter_mut().zip(self.last_idle.iter_mut()) {
            cpu.idle_ns = cpu.idle_ns.max(*last);
            *last = cpu.idle_ns;
        }
        (cpus, overflow)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, convert::Infallible};

    use proptest::prelude::*;

    use super::*;
    use crate::{
        attribution::{AttributionOptions, AttributionSnapshot, Attributor},
        kernel::CountersSnapshot,
        power::{PowerSnapshot, SourceKind, ZoneSample},
    };

    fn cpu(ns: u64) -> CgroupCounters {
        CgroupCounters {
            cpu_ns: ns,
            switches_voluntary: ns / 10,
            ..Default::default()
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A fake host: live cgroups by id, the map's entries, and the lookups asked for.
    #[derive(Default)]
    struct Host {
        alive: HashMap<u64, &'static str>,
        map: BTreeMap<u64, CgroupCounters>,
        lookups: Vec<u64>,
    }

    impl Host {
        fn read(&mut self, ledger: &mut CgroupLedger, at: u64) -> CgroupsRead {
            let entries: Vec<_> = self.map.iter().map(|(id, c)| (*id, *c)).collect();
            let (alive, lookups, map) = (&self.alive, &mut self.lookups, &mut self.map);
            ledger
                .record(
                    s(at),
                    entries,
                    |id| {
                        lookups.push(id);
                        alive
                            .get(&id)
                            .map_or(Lookup::Gone, |p| Lookup::Alive(Arc::from(*p)))
                    },
                    |id| Ok::<_, Infallible>(map.remove(&id)),
                )
                .unwrap()
        }
    }

    fn counted(r: &CgroupsRead, id: u64) -> Option<(Option<&str>, u64, bool)> {
        r.samples
            .get(&id)
            .map(|c| (c.path.as_deref(), c.counters.cpu_ns, c.gone))
    }

    #[test]
    fn live_cgroups_report_their_counts_and_only_idle_ones_are_looked_up() {
        let mut ledger = CgroupLedger::new(s(10), 100);
        let mut host = Host::default();
        host.alive.insert(1, "/a");
        host.alive.insert(2, "/b");
        host.map.insert(1, cpu(100));
        host.map.insert(2, cpu(50));
        let r = host.read(&mut ledger, 1);
        assert_eq!(counted(&r, 1), Some((Some("/a"), 100, false)));
        assert_eq!(r.live_entries, 2);
        assert_eq!(
            std::mem::take(&mut host.lookups),
            [1, 2],
            "first sight: both looked up"
        );

        host.map.insert(1, cpu(300)); // 1 ran; 2 did not
        let r = host.read(&mut ledger, 2);
        assert_eq!(counted(&r, 1), Some((Some("/a"), 300, false)));
        assert_eq!(r.samples[&1].counters, cpu(300));
        assert_eq!(
            std::mem::take(&mut host.lookups),
            [2],
            "a cgroup that ran is trusted"
        );
    }

    #[test]
    fn a_removed_cgroup_reports_its_final_counts_for_the_retention() {
        let mut ledger = CgroupLedger::new(s(10), 100);
        let mut host = Host::default();
        host.alive.insert(1, "/svc");
        host.map.insert(1, cpu(100));
        host.read(&mut ledger, 1);
        host.map.insert(1, cpu(150)); // ran, then was removed before the next read
        host.alive.remove(&1);
        host.read(&mut ledger, 2); // ran: trusted alive this time
        let r = host.read(&mut ledger, 3);
        assert_eq!(counted(&r, 1), Some((Some("/svc"), 150, true)));
        assert!(host.map.is_empty(), "its entry was taken out of the map");
        assert_eq!((r.deletions, r.live_entries), (1, 0));
        for t in 4..13 {
            let r = host.read(&mut ledger, t);
            assert_eq!(counted(&r, 1), Some((Some("/svc"), 150, true)), "at {t} s");
        }
        let r = host.read(&mut ledger, 13);
        assert!(r.samples.is_empty(), "10 s after its removal it goes");
        assert_eq!(r.deletions, 1);
        assert!(
            ledger.paths.is_empty() && ledger.taken.is_empty(),
            "nothing of it is kept"
        );
    }

    #[test]
    fn a_path_recreated_under_a_new_id_reports_only_its_own_counts() {
        let mut ledger = CgroupLedger::new(s(2), 100);
        let mut host = Host::default();
        host.alive.insert(1, "/svc");
        host.map.insert(1, cpu(100));
        host.read(&mut ledger, 1);
        host.alive.clear();
        host.alive.insert(2, "/svc");
        host.map.insert(2, cpu(30));
        let r = host.read(&mut ledger, 2);
        assert_eq!(counted(&r, 1), Some((Some("/svc"), 100, true)));
        assert_eq!(counted(&r, 2), Some((Some("/svc"), 30, false)));
        host.map.insert(2, cpu(40));
        let r = host.read(&mut ledger, 4);
        assert_eq!(counted(&r, 1), None, "expired; nothing carried over");
        assert_eq!(counted(&r, 2), Some((Some("/svc"), 40, false)));
    }

    #[test]
    fn counts_charged_after_the_removal_are_added_and_restart_the_retention() {
        let mut ledger = CgroupLedger::new(s(5), 100);
        let mut host = Host::default();
        host.alive.insert(1, "/x");
        host.map.insert(1, cpu(100));
        host.read(&mut ledger, 1);
        host.alive.clear();
        host.read(&mut ledger, 2);
        // An exiting task was still charged to it: the entry comes back with fresh counts.
        host.map.insert(1, cpu(7));
        let r = host.read(&mut ledger, 6);
        assert_eq!(counted(&r, 1), Some((Some("/x"), 107, true)));
        assert_eq!(r.deletions, 2);
        let r = host.read(&mut ledger, 10);
        assert_eq!(counted(&r, 1), Some((Some("/x"), 107, true)), "4 s since");
        assert!(host.read(&mut ledger, 11).samples.is_empty());
    }

    #[test]
    fn a_cgroup_taken_for_removed_by_mistake_keeps_its_counts_when_found_alive() {
        let mut ledger = CgroupLedger::new(s(5), 100);
        let mut host = Host::default();
        // Created after this cycle's rescan: not found, so its entry is taken.
        host.map.insert(1, cpu(40));
        let r = host.read(&mut ledger, 1);
        assert_eq!(
            counted(&r, 1),
            Some((None, 40, true)),
            "removed before it was seen"
        );
        host.alive.insert(1, "/late");
        host.map.insert(1, cpu(10));
        let r = host.read(&mut ledger, 2);
        assert_eq!(counted(&r, 1), Some((Some("/late"), 50, false)));
        host.map.insert(1, cpu(20));
        let r = host.read(&mut ledger, 30);
        assert_eq!(
            counted(&r, 1),
            Some((Some("/late"), 60, false)),
            "never expires"
        );
    }

    #[test]
    fn beyond_the_bound_the_longest_removed_go_first() {
        let mut ledger = CgroupLedger::new(s(600), 2);
        let mut host = Host::default();
        for id in 1..=3 {
            host.map.insert(id, cpu(id * 10));
            host.read(&mut ledger, id);
        }
        let r = host.read(&mut ledger, 4);
        assert_eq!(r.samples.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r.deletions, 3);
    }

    #[test]
    fn idle_time_never_goes_backwards() {
        let mut ledger = CgroupLedger::new(s(5), 100);
        let state = |idle_ns| CpuCounters {
            busy_ns: 5,
            idle_ns,
            ..Default::default()
        };
        let (cpus, _) = ledger.cpu_times(&[state(100), state(10)], 0);
        assert_eq!((cpus[0].idle_ns, cpus[1].idle_ns), (100, 10));
        // A copy that raced the program shows CPU 0 with less idle than reported before.
        let (cpus, _) = ledger.cpu_times(&[state(90), state(20)], 0);
        assert_eq!((cpus[0].idle_ns, cpus[1].idle_ns), (100, 20));
    }

    /// A live cgroup's map entry deleted under the agent (by hand with bpftool, say) and
    /// created again by the program's next charge: the cgroup reports what the kernel counted
    /// since, less than before; attribution takes the drop as a restart (see the property below).
    #[test]
    fn an_entry_deleted_under_the_agent_starts_again_from_what_the_kernel_counts() {
        let mut ledger = CgroupLedger::new(s(10), 100);
        let mut host = Host::default();
        host.alive.insert(1, "/svc");
        host.map.insert(1, cpu(1000));
        host.read(&mut ledger, 1);
        host.map.remove(&1);
        let r = host.read(&mut ledger, 2);
        assert_eq!(
            counted(&r, 1),
            None,
            "no entry: nothing to report, nothing removed"
        );
        assert_eq!(r.deletions, 0);
        host.map.insert(1, cpu(30));
        let r = host.read(&mut ledger, 3);
        assert_eq!(counted(&r, 1), Some((Some("/svc"), 30, false)));
    }

    /// What one read does to a cgroup's map entry.
    #[derive(Clone, Copy, Debug)]
    enum Entry {
        /// The cgroup ran this much more.
        Grow(u64),
        /// The entry was deleted and created again with this count (or the counter wrapped).
        Reset(u64),
        /// The entry was deleted and not yet created again.
        Deleted,
        Unchanged,
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            4 => (1u64..5_000_000_000).prop_map(Entry::Grow),
            1 => (0u64..1_000_000).prop_map(Entry::Reset),
            1 => Just(Entry::Deleted),
            1 => Just(Entry::Unchanged),
        ]
    }

    /// One interval: seconds since the last, what each of three cgroups' entries did, the
    /// source's cumulative energy change (negative: the source restarted), and a step of the
    /// wall clock (which nothing here may read).
    type Step = (u64, [Entry; 3], f64, i64);

    fn counters(at: u64, samples: &BTreeMap<u64, CgroupSample>, busy: u64) -> CountersSnapshot {
        CountersSnapshot {
            at: s(at),
            cgroups: samples.clone(),
            cpus: vec![snapshot::CpuTime {
                busy_ns: busy,
                idle_ns: (at * 2_000_000_000).saturating_sub(busy),
            }],
            cpus_at: s(at),
            overflow: CgroupCounters::default(),
            map_entries: samples.len(),
            map_capacity: 16,
            pmu: snapshot::PmuCounters::None,
            map_deletions: 0,
            processes: Default::default(),
            cpu_info: Arc::new([]),
        }
    }

    fn power(at: u64, at_unix: f64, joules: f64) -> PowerSnapshot {
        PowerSnapshot {
            source: SourceKind::Powercap,
            estimated: false,
            model_family: None,
            at_unix,
            at: s(at),
            zones: vec![ZoneSample {
                zone: "package".into(),
                joules,
                watts: None,
                path: None,
            }],
            dropped: BTreeMap::new(),
            errors: 0,
        }
    }

    /// Per workload: its CPU time and package joules.
    fn totals(a: &AttributionSnapshot) -> BTreeMap<String, (u64, f64)> {
        (a.workloads.iter())
            .map(|w| {
                (
                    format!("{:?}", w.workload),
                    (w.counters.cpu_ns, w.joules[0]),
                )
            })
            .collect()
    }

    /// Runs the steps from the map through the ledger and attribution; returns each interval's
    /// snapshot.
    fn drive(steps: &[Step]) -> Vec<AttributionSnapshot> {
        let mut ledger = CgroupLedger::new(s(3600), 100);
        let mut host = Host::default();
        let mut attributor = Attributor::new(AttributionOptions::default());
        let (mut at, mut at_unix, mut joules, mut busy) = (1, 1.7e9, 0.0, 0);
        for (id, path) in [(1, "/a"), (2, "/b"), (3, "/c")] {
            host.alive.insert(id, path);
        }
        let mut out = Vec::new();
        for (dt, entries, dj, clock_step) in steps {
            (at, at_unix, joules) = (at + dt, at_unix + *clock_step as f64, joules + dj);
            for (id, e) in (1..=3).zip(entries) {
                match *e {
                    Entry::Grow(ns) => {
                        host.map.entry(id).or_default().cpu_ns += ns;
                        busy += ns;
                    }
                    Entry::Reset(ns) => drop(host.map.insert(id, cpu(ns))),
                    Entry::Deleted => drop(host.map.remove(&id)),
                    Entry::Unchanged => {}
                }
            }
            let read = host.read(&mut ledger, at);
            let c = counters(at, &read.samples, busy);
            let p = power(at, at_unix, joules.max(0.0));
            out.push(attributor.update(&c, Some(&p), &[], 0, None));
        }
        out
    }

    proptest! {
        /// Entries deleted, re-created or wrapped under the agent, the power source restarting,
        /// the wall clock stepping an hour either way: every workload's CPU time and joules
        /// only grow, and every power is finite, non-negative and within what the source gave.
        #[test]
        fn map_resets_and_clock_steps_never_make_exports_go_back(
            steps in proptest::collection::vec(
                (1u64..10, [entry(), entry(), entry()], -50.0f64..200.0, -3600i64..=3600),
                1..40,
            )
        ) {
            let mut before: BTreeMap<String, (u64, f64)> = BTreeMap::new();
            for (a, (dt, ..)) in drive(&steps).iter().zip(&steps) {
                let now = totals(a);
                for (w, (cpu, j)) in &now {
                    prop_assert!(j.is_finite() && *j >= 0.0, "{w}: {j} J");
                    if let Some((cpu0, j0)) = before.get(w) {
                        prop_assert!(cpu >= cpu0 && j >= j0, "{w}: {cpu0}→{cpu}ns {j0}→{j}J");
                    }
                }
                // At most 200 J a step (the source's largest change), over `dt` seconds.
                let most = 200.0 / *dt as f64 + 1e-6;
                let watts = (a.workloads.iter()).flat_map(|w| w.watts.iter().flatten().copied());
                for w in watts.chain(a.node.iter().filter_map(|z| z.active_watts)) {
                    prop_assert!(w.is_finite() && (0.0..=most).contains(&w), "{w} W");
                }
                before.extend(now);
            }
        }
    }

    /// The same intervals with and without the wall clock stepping give the same snapshots:
    /// rates and energy come from CLOCK_MONOTONIC (`at`) alone.
    #[test]
    fn a_wall_clock_step_changes_nothing() {
        let grow = [
            Entry::Grow(2_000_000_000),
            Entry::Grow(500_000_000),
            Entry::Unchanged,
        ];
        let steady: Vec<Step> = (0..6).map(|_| (5, grow, 100.0, 5)).collect();
        let mut stepped = steady.clone();
        stepped[2].3 = -3600;
        stepped[4].3 = 7200;
        let (a, b) = (drive(&steady), drive(&stepped));
        assert_eq!(a, b);
        let last = a.last().unwrap();
        assert!(
            last.node[0]
                .active_watts
                .is_some_and(|w| w > 0.0 && w <= 20.0),
            "{last:?}"
        );
    }
}
