//! Processes, bounded: each interval a workload's energy is shared among its processes by their
//! CPU time in it (time no counted process accounts for stays with the workload's remainder),
//! the `top` processes by energy get their own series, and everything else is summed into one
//! `(other)` series. So the process series, `(other)` included, always add up to the workloads:
//! per zone and per interval, exactly (up to rounding).
//!
//! A series counts what its process did while it was shown. A process that drops out of the
//! top N folds into `(other)`: from that interval on its energy and CPU time go there, and its
//! own series stays, frozen at its last value (power 0), for [`LINGER`], holding its place, so
//! that every scraper sees its final value; then the place goes to the next process of the top
//! N. A process shown again continues from where its series stopped. A series keeps the labels
//! its process took its place with (names, workload), so that one process is one series at a
//! time. Every counter is
//! monotonic, each joule is counted by exactly one series, none is lost to a series that went
//! before it was scraped, and there are never more than N + 1 series per zone.

use crate::ids::IdMap;
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use node_agent_common::ProcessKey;

use super::split::increase;
use crate::{
    kernel::{ProcessNames, ProcessSample},
    workload::Workload,
};

/// Label of everything not shown as its own process.
pub const OTHER: &str = "(other)";
/// `comm` of a process that exited before the agent could read its names.
pub const EXITED: &str = "(exited)";

/// One process series (or `(other)`), as the snapshot reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessTotals {
    /// None for `(other)`.
    pub pid: Option<u32>,
    /// None for `(other)`, and for a process that exited before its names were read.
    pub names: Option<Arc<ProcessNames>>,
    /// Where it ran most in the last interval (None for `(other)`).
    pub workload: Option<Workload>,
    pub running: bool,
    /// CPU time while shown.
    pub cpu_ns: u64,
    /// Per zone (in the order of the snapshot's zones): joules while shown, and the last
    /// interval's average power.
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
}

/// One interval of one workload: its CPU time and its energy per zone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadInterval {
    pub cpu_ns: u64,
    pub joules: Vec<f64>,
}

/// One process's interval: its CPU time in each workload it ran in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessInterval {
    pub cpu_ns: Vec<(Workload, u64)>,
}

/// Shares each workload's energy among its processes by CPU time: per process (in the order
/// given), its joules per zone. A workload's denominator is the larger of its own CPU time and
/// its processes' (a copy that raced the program can make the latter slightly larger), so no
/// workload ever gives out more than it has. Pure.
pub fn share_by_cpu(
    workloads: &BTreeMap<Workload, WorkloadInterval>,
    processes: &[impl std::borrow::Borrow<ProcessInterval>],
    zones: usize,
) -> Vec<Vec<f64>> {
    let processes = || processes.iter().map(|p| p.borrow());
    let mut in_workload: HashMap<&Workload, u64> = HashMap::new();
    for p in processes() {
        for (w, ns) in &p.cpu_ns {
            *in_workload.entry(w).or_default() += ns;
        }
    }
    processes()
        .map(|p| {
            let mut joules = vec![0.0; zones];
            for (w, ns) in &p.cpu_ns {
                let Some(wi) = workloads.get(w) else { continue };
                let denominator = wi.cpu_ns.max(in_workload[w]);
                if denominator == 0 {
                    continue;
                }
                let share = *ns as f64 / denominator as f64;
                for (j, e) in joules.iter_mut().zip(&wi.joules) {
                    *j += e * share;
                }
            }
            joules
        })
        .collect()
}

/// The `top` processes of an interval (indices into `energy`/`cpu`): by energy summed over
/// zones, then CPU time, then index; only those that used any.
pub fn top_n(energy: &[Vec<f64>], cpu: &[u64], top: usize) -> Vec<usize> {
    let total = |i: usize| energy[i].iter().sum::<f64>();
    let mut ranked: Vec<usize> = (0..cpu.len())
        .filter(|&i| total(i) > 0.0 || cpu[i] > 0)
        .collect();
    ranked.sort_by(|&a, &b| {
        total(b)
            .total_cmp(&total(a))
            .then(cpu[b].cmp(&cpu[a]))
            .then(a.cmp(&b))
    });
    ranked.truncate(top);
    ranked
}

/// How long a process that left the top N keeps its place and its series, frozen: long enough
/// for any scraper to see the series' final value before it goes.
pub const LINGER: Duration = Duration::from_secs(60);

/// What a series has counted.
#[derive(Clone, Debug, Default)]
struct Counted {
    cpu_ns: u64,
    joules: Vec<f64>,
}

impl Counted {
    fn add(&mut self, cpu_ns: u64, joules: &[f64]) {
        self.cpu_ns += cpu_ns;
        self.joules.resize(joules.len().max(self.joules.len()), 0.0);
        for (t, j) in self.joules.iter_mut().zip(joules) {
            // Never backwards, even by a rounding error.
            *t += j.max(0.0);
        }
    }
}

/// A place among the N shown: the process, what its series counted, what it is shown with, and
/// since when it has been out of the top N.
#[derive(Clone, Debug)]
struct Slot {
    pid: u32,
    counted: Counted,
    names: Option<Arc<ProcessNames>>,
    workload: Option<Workload>,
    running: bool,
    leaving_since: Option<Duration>,
}

/// The process series from one interval to the next.
#[derive(Debug)]
pub(crate) struct Processes {
    top: usize,
    linger: Duration,
    /// Per key, its CPU time at the last interval.
    last: IdMap<ProcessKey, u64>,
    /// At most `top`.
    slots: Vec<Slot>,
    /// What the series of live processes no longer shown had counted: shown again, a process
    /// continues where its series stopped.
    history: IdMap<u32, Counted>,
    other: Counted,
}

/// One interval's inputs, besides the kernel's samples.
pub(crate) struct Inputs<'a> {
    pub workloads: &'a BTreeMap<Workload, WorkloadInterval>,
    pub zones: usize,
    /// Seconds of the energy interval (None: no energy this interval).
    pub dt: Option<f64>,
    /// When the interval ends (the kernel counters' clock).
    pub at: Duration,
}

impl Processes {
    pub fn new(top: usize, linger: Duration) -> Self {
        Self {
            top,
            linger,
            last: IdMap::default(),
            slots: Vec::new(),
            history: IdMap::default(),
            other: Counted::default(),
        }
    }

    /// Takes one interval: the samples of every (process, cgroup) key, each cgroup's workload,
    /// and each workload's interval. Returns the series: the shown processes, then `(other)`.
    pub fn update(
        &mut self,
        samples: &BTreeMap<ProcessKey, ProcessSample>,
        workload_of: impl Fn(u64) -> Option<Workload>,
        inputs: Inputs<'_>,
    ) -> Vec<ProcessTotals> {
        let by_pid = self.deltas(samples, workload_of);
        let pids: Vec<u32> = by_pid.keys().copied().collect();
        let intervals: Vec<&ProcessInterval> = by_pid.values().map(|p| &p.interval).collect();
        let energy = share_by_cpu(inputs.workloads, &intervals, inputs.zones);
        let cpu: Vec<u64> = (intervals.iter())
            .map(|p| p.cpu_ns.iter().map(|c| c.1).sum())
            .collect();
        let wanted: Vec<u32> = (top_n(&energy, &cpu, self.top).into_iter())
            .map(|i| pids[i])
            .collect();
        self.reassign(&wanted, inputs.at);
        let watts = |j: &[f64]| -> Vec<Option<f64>> {
            j.iter()
                .map(|j| inputs.dt.filter(|dt| *dt > 0.0).map(|dt| j / dt))
                .collect()
        };
        let mut other_joules: Vec<f64> = (0..inputs.zones)
            .map(|z| {
                (inputs.workloads.values())
                    .map(|w| w.joules.get(z).copied().unwrap_or(0.0))
                    .sum()
            })
            .collect();
        let mut other_cpu: u64 = inputs.workloads.values().map(|w| w.cpu_ns).sum();
        let zero = vec![0.0; inputs.zones];
        let mut rows = Vec::with_capacity(self.slots.len() + 1);
        for slot in &mut self.slots {
            let i = pids.binary_search(&slot.pid).ok();
            if let Some(p) = by_pid.get(&slot.pid) {
                slot.renew(p);
            } else {
                slot.running = false;
            }
            // A lingering process's energy goes to (other); its series stays as it was.
            let (c, e) = match i.filter(|_| slot.leaving_since.is_none()) {
                Some(i) => (cpu[i], &energy[i][..]),
                None => (0, &zero[..]),
            };
            slot.counted.add(c, e);
            for (o, e) in other_joules.iter_mut().zip(e) {
                *o -= e;
            }
            other_cpu = other_cpu.saturating_sub(c);
            rows.push(slot.totals(inputs.zones, watts(e)));
        }
        self.other.add(other_cpu, &other_joules);
        self.history.retain(|pid, _| by_pid.contains_key(pid));
        let other_watts = watts(&other_joules.iter().map(|j| j.max(0.0)).collect::<Vec<_>>());
        rows.push(ProcessTotals {
            pid: None,
            names: None,
            workload: None,
            running: true,
            cpu_ns: self.other.cpu_ns,
            joules: self.other.joules.clone(),
            watts: other_watts,
        });
        rows
    }

    /// The places for this interval: a process in the top N keeps its place (or takes it back
    /// while lingering); one that left the top N lingers, frozen, for `linger`, then gives its
    /// place to the next process of the top N without one.
    fn reassign(&mut self, wanted: &[u32], now: Duration) {
        for slot in &mut self.slots {
            if wanted.contains(&slot.pid) {
                slot.leaving_since = None;
            } else {
                slot.leaving_since.get_or_insert(now);
            }
        }
        let linger = self.linger;
        let (gone, kept): (Vec<Slot>, Vec<Slot>) =
            std::mem::take(&mut self.slots).into_iter().partition(|s| {
                s.leaving_since
                    .is_some_and(|t| now.saturating_sub(t) >= linger)
            });
        self.history
            .extend(gone.into_iter().map(|s| (s.pid, s.counted)));
        self.slots = kept;
        for pid in wanted {
            if self.slots.len() >= self.top {
                break;
            }
            if self.slots.iter().all(|s| s.pid != *pid) {
                self.slots.push(Slot {
                    pid: *pid,
                    counted: self.history.remove(pid).unwrap_or_default(),
                    names: None,
                    workload: None,
                    running: true,
                    leaving_since: None,
                });
            }
        }
    }

    /// Each process's interval (its keys' CPU time since the last interval, per workload).
    fn deltas(
        &mut self,
        samples: &BTreeMap<ProcessKey, ProcessSample>,
        workload_of: impl Fn(u64) -> Option<Workload>,
    ) -> BTreeMap<u32, Pid> {
        let mut by_pid: BTreeMap<u32, Pid> = BTreeMap::new();
        let mut last = IdMap::with_capacity_and_hasher(samples.len(), Default::default());
        for (k, s) in samples {
            let d = increase(self.last.get(k).copied(), s.cpu_ns);
            last.insert(*k, s.cpu_ns);
            let p = by_pid.entry(k.tgid).or_default();
            p.running |= !s.gone;
            if p.names.is_none() {
                p.names = s.names.clone();
            }
            if let Some(w) = workload_of(k.cgroup_id) {
                p.interval.cpu_ns.push((w.clone(), d));
                // Where it ran most this interval, else where it ran most in all.
                if (d, s.cpu_ns) > p.home.as_ref().map_or((0, 0), |h| (h.1, h.2)) {
                    p.home = Some((w, d, s.cpu_ns));
                }
            }
        }
        self.last = last;
        by_pid
    }
}

impl Slot {
    /// Whether it still runs; its names and workload are those it took its place with (a
    /// series' labels never change).
    fn renew(&mut self, p: &Pid) {
        self.running = p.running;
        if self.names.is_none() {
            self.names.clone_from(&p.names);
        }
        if self.workload.is_none() {
            self.workload = p.home();
        }
    }

    fn totals(&self, zones: usize, watts: Vec<Option<f64>>) -> ProcessTotals {
        let mut joules = self.counted.joules.clone();
        joules.resize(zones.max(joules.len()), 0.0);
        ProcessTotals {
            pid: Some(self.pid),
            names: self.names.clone(),
            workload: self.workload.clone(),
            running: self.running,
            cpu_ns: self.counted.cpu_ns,
            joules,
            watts,
        }
    }
}

/// One process in one interval.
#[derive(Clone, Debug, Default)]
struct Pid {
    interval: ProcessInterval,
    names: Option<Arc<ProcessNames>>,
    running: bool,
    /// The workload it is shown in, with its CPU time there in the interval and in all.
    home: Option<(Workload, u64, u64)>,
}

impl Pid {
    /// The workload it ran most in during the interval (ties: the one it ran most in in all,
    /// so that an idle interval does not move it).
    fn home(&self) -> Option<Workload> {
        self.home.as_ref().map(|h| h.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn w(name: &str) -> Workload {
        Workload::Cgroup(name.into())
    }

    fn key(tgid: u32, cgroup_id: u64) -> ProcessKey {
        ProcessKey {
            tgid,
            pad: 0,
            cgroup_id,
        }
    }

    fn sample(cpu_ns: u64) -> ProcessSample {
        ProcessSample {
            cpu_ns,
            names: None,
            gone: false,
        }
    }

    /// Cgroup ids 1..=3 are workloads /a, /b, /c.
    fn workload_of(id: u64) -> Option<Workload> {
        ["/a", "/b", "/c"].get(id as usize - 1).map(|n| w(n))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn interval(cpu_ns: u64, joules: &[f64]) -> WorkloadInterval {
        WorkloadInterval {
            cpu_ns,
            joules: joules.to_vec(),
        }
    }

    #[test]
    fn a_workloads_energy_goes_to_its_processes_by_cpu_time() {
        let workloads = BTreeMap::from([(w("/a"), interval(100, &[10.0, 2.0]))]);
        let procs = [
            ProcessInterval {
                cpu_ns: vec![(w("/a"), 60)],
            },
            ProcessInterval {
                cpu_ns: vec![(w("/a"), 20)],
            },
        ];
        let e = share_by_cpu(&workloads, &procs, 2);
        assert_eq!(e, [vec![6.0, 1.2], vec![2.0, 0.4]]);
        // Processes that account for more than the workload counted share what it has.
        let over = [ProcessInterval {
            cpu_ns: vec![(w("/a"), 200)],
        }];
        assert_eq!(share_by_cpu(&workloads, &over, 2), [vec![10.0, 2.0]]);
    }

    #[test]
    fn top_n_by_energy_then_cpu_then_pid() {
        let energy = [vec![1.0], vec![3.0], vec![0.0], vec![3.0], vec![0.0]];
        let cpu = [5, 1, 9, 1, 0];
        assert_eq!(top_n(&energy, &cpu, 3), [1, 3, 0]);
        assert_eq!(
            top_n(&energy, &cpu, 10),
            [1, 3, 0, 2],
            "idle ones are not shown"
        );
    }

    /// A process that drops out of the top N folds into (other): its series stays, frozen, for
    /// the linger (holding its place: the new top process's energy is in (other) meanwhile),
    /// then goes; shown again, it continues where it stopped.
    #[test]
    fn dropping_out_folds_into_other_lingers_and_coming_back_continues() {
        let mut p = Processes::new(1, Duration::from_secs(2));
        let workloads = BTreeMap::from([(w("/a"), interval(100, &[10.0]))]);
        // At second `t`, processes 1 and 2 have used `a` and `b` ns in all.
        let mut step = |t: u64, a: u64, b: u64| {
            let samples = BTreeMap::from([(key(1, 1), sample(a)), (key(2, 1), sample(b))]);
            let inputs = Inputs {
                workloads: &workloads,
                zones: 1,
                dt: Some(1.0),
                at: Duration::from_secs(t),
            };
            let r = p.update(&samples, workload_of, inputs);
            let shown: Vec<_> = r.iter().map(|r| (r.pid, r.joules[0], r.watts[0])).collect();
            shown
        };
        // 1 is top: 7 J; 2's 3 J in (other).
        assert_eq!(
            step(1, 70, 30),
            [(Some(1), 7.0, Some(7.0)), (None, 3.0, Some(3.0))]
        );
        // 2 is top now, but 1 lingers: frozen, 0 W; all 10 J in (other).
        assert_eq!(
            step(2, 80, 120),
            [(Some(1), 7.0, Some(0.0)), (None, 13.0, Some(10.0))]
        );
        // (The workload's 10th CPU-second is no process's: (other)'s in any case.)
        assert_eq!(
            step(3, 80, 210),
            [(Some(1), 7.0, Some(0.0)), (None, 23.0, Some(10.0))]
        );
        // 2 s after it left, 1 gives its place to 2.
        assert_eq!(
            step(4, 80, 300),
            [(Some(2), 9.0, Some(9.0)), (None, 24.0, Some(1.0))]
        );
        // 1 comes back to the top: it waits for 2 to linger out, then continues from 7 J.
        step(5, 180, 300);
        step(6, 280, 300);
        assert_eq!(
            step(7, 380, 300),
            [(Some(1), 17.0, Some(10.0)), (None, 44.0, Some(0.0))]
        );
    }

    /// Through the attributor: a VM's and a service's energy go to their processes, CPU time no
    /// process accounts for goes to (other), and the process series add up to the workloads.
    #[test]
    fn the_attributor_shares_workloads_among_processes() {
        use std::time::Duration;

        use node_agent_common::CgroupCounters;

        use crate::{
            attribution::{AttributionOptions, Attributor},
            kernel::{CgroupSample, CountersSnapshot, CpuTime, PmuCounters, ProcessesRead},
            power::{PowerSnapshot, SourceKind, ZoneSample},
        };
        let vm_path = r"/machine.slice/machine-qemu\x2d1\x2dtestvm.scope/libvirt/vcpu0";
        let read = |at: u64, cpu: [u64; 2], procs: [u64; 3]| {
            let cgroup = |path: &str, cpu_ns| CgroupSample {
                path: Some(path.into()),
                counters: CgroupCounters {
                    cpu_ns,
                    ..Default::default()
                },
                gone: false,
            };
            CountersSnapshot {
                at: Duration::from_secs(at),
                cgroups: BTreeMap::from([
                    (1, cgroup(vm_path, cpu[0])),
                    (2, cgroup("/system.slice/svc.service", cpu[1])),
                ]),
                cpus: vec![CpuTime {
                    busy_ns: cpu[0] + cpu[1],
                    idle_ns: at * 2_000_000_000 - cpu[0] - cpu[1],
                }],
                cpus_at: Duration::from_secs(at),
                overflow: CgroupCounters::default(),
                map_entries: 2,
                map_capacity: 16,
                pmu: PmuCounters::None,
                map_deletions: 0,
                processes: ProcessesRead {
                    samples: BTreeMap::from([
                        (key(100, 1), sample(procs[0])),
                        (key(200, 2), sample(procs[1])),
                        (key(201, 2), sample(procs[2])),
                    ]),
                    map_capacity: 64,
                    ..Default::default()
                },
                cpu_info: Arc::new([]),
            }
        };
        let power = |at: u64, joules: f64| PowerSnapshot {
            source: SourceKind::Powercap,
            estimated: false,
            model_family: None,
            at_unix: at as f64,
            at: Duration::from_secs(at),
            zones: vec![ZoneSample {
                zone: "package".into(),
                joules,
                watts: None,
                path: None,
            }],
            dropped: BTreeMap::new(),
            errors: 0,
        };
        let mut a = Attributor::new(AttributionOptions {
            configured_idle: vec![("package".into(), 20.0)],
            processes: 1,
            ..AttributionOptions::default()
        });
        a.update(
            &read(10, [0, 0], [0, 0, 0]),
            Some(&power(10, 0.0)),
            &[],
            0,
            None,
        );
        // 10 s at 50 W: 200 J idle (the node's), 300 J active; the VM ran 6 s, the service 2 s,
        // of which its two processes 1 s and 0.5 s.
        let s = 1_000_000_000;
        let snap = a.update(
            &read(20, [6 * s, 2 * s], [6 * s, s, s / 2]),
            Some(&power(20, 500.0)),
            &[],
            0,
            None,
        );
        let vm = snap
            .workloads
            .iter()
            .find(|w| matches!(w.workload, Workload::Vm(_)));
        assert!(close(vm.unwrap().joules[0], 225.0), "{vm:?}");
        assert_eq!(snap.processes.len(), 2, "the top 1 and (other)");
        let (qemu, other) = (&snap.processes[0], &snap.processes[1]);
        assert_eq!(qemu.pid, Some(100));
        assert!(matches!(qemu.workload, Some(Workload::Vm(_))));
        assert!(close(qemu.joules[0], 225.0), "{qemu:?}");
        // The service's 75 J: 37.5 J for its processes, 37.5 J for its unaccounted second; all
        // in (other) with a top of 1.
        assert!(close(other.joules[0], 75.0), "{other:?}");
        assert!(close(
            other.watts[0].unwrap() + qemu.watts[0].unwrap(),
            30.0
        ));
        assert_eq!(other.cpu_ns, 2 * s);
        assert!((snap.busy_ratio - 0.4).abs() < 1e-9, "{}", snap.busy_ratio);
    }

    /// One interval of a random host: (CPU ns, joules per zone) per workload, and per process
    /// its (workload index, CPU ns) keys.
    type Host = (Vec<(u64, Vec<f64>)>, Vec<Vec<(usize, u64)>>);

    fn host() -> impl Strategy<Value = Host> {
        let workloads = proptest::collection::vec(
            (0u64..1_000_000, proptest::collection::vec(0.0f64..1e4, 2)),
            1..4,
        );
        let processes = proptest::collection::vec(
            proptest::collection::vec((0usize..3, 0u64..600_000), 1..3),
            0..30,
        );
        (workloads, processes)
    }

    proptest! {
        /// Per zone and interval, the shown processes plus (other) are the workloads' energy, to
        /// 1e-9; every counter is monotonic; at most N + 1 series.
        #[test]
        fn processes_and_other_add_up_to_the_workloads(
            intervals in proptest::collection::vec(host(), 1..8),
            top in 0usize..8,
        ) {
            let mut p = Processes::new(top, Duration::from_secs(3));
            // The kernel keeps reporting every process seen (they all stay alive here).
            let mut samples = BTreeMap::new();
            let mut last: HashMap<Option<u32>, (u64, Vec<f64>)> = HashMap::new();
            let mut other_before = 0.0;
            for (t, (ws, procs)) in intervals.into_iter().enumerate() {
                let workloads: BTreeMap<Workload, WorkloadInterval> = ws
                    .iter()
                    .enumerate()
                    .map(|(i, (c, j))| (workload_of(i as u64 + 1).unwrap(), interval(*c, j)))
                    .collect();
                for (pid, keys) in procs.iter().enumerate() {
                    for (wi, ns) in keys {
                        let k = key(pid as u32 + 1, (*wi % ws.len()) as u64 + 1);
                        samples.entry(k).or_insert_with(|| sample(0)).cpu_ns += ns;
                    }
                }
                let at = Duration::from_secs(2 * t as u64);
                let rows = p.update(&samples, workload_of, Inputs { workloads: &workloads, zones: 2, dt: Some(2.0), at });
                prop_assert!(rows.len() <= top + 1);
                for z in 0..2 {
                    let want: f64 = ws.iter().map(|w| w.1[z]).sum();
                    let got: f64 = rows.iter().map(|r| r.watts[z].unwrap() * 2.0).sum();
                    prop_assert!(close(got, want), "zone {z}: {got} vs {want}");
                }
                for r in &rows {
                    let (cpu, joules) = last.entry(r.pid).or_insert((0, vec![0.0; 2]));
                    prop_assert!(r.cpu_ns >= *cpu);
                    prop_assert!(r.joules.iter().zip(joules.iter()).all(|(a, b)| a >= b));
                    *cpu = r.cpu_ns;
                    joules.clone_from(&r.joules);
                }
                let other = rows.last().unwrap();
                prop_assert!(other.pid.is_none());
                prop_assert!(other.joules[0] >= other_before);
                other_before = other.joules[0];
            }
        }
    }
}
