//! Processes over the map reads, as the cgroup ledger does it for cgroups: which (process,
//! cgroup) keys belong to live processes, which processes exited (their entries read a last
//! time and deleted, their final counts reported for a short retention), and the names procfs
//! gives each process. Pure: the loader passes the map's entries and the CPUs' cache slots as
//! data, and procfs and the map deletion as closures.
//!
//! What the kernel counted for a key is its map entry plus whatever CPU caches still hold for it
//! (a slot is written to the map only when another process takes it over). A cached amount can
//! reach the map after the process has exited and its entry was taken: the key is kept while
//! any cache holds it, so that the late entry is taken into the same totals and never counted
//! twice. A copy of the caches that races the program can misplace one slot's time for a read;
//! reported totals never go back.
//!
//! A process is checked against procfs (its `comm` read, which also says whether it still
//! exists) when first seen and after any read in which it did not run; one that ran is alive.
//! The executable's path is read again only when `comm` changed (an exec).

use crate::ids::IdMap;
use std::{collections::BTreeMap, io, path::Path, sync::Arc, time::Duration};

use node_agent_common::ProcessKey;

use super::snapshot::{ProcessNames, ProcessSample};
use crate::retention::Retention;

/// The processes of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessesSeen {
    pub samples: BTreeMap<ProcessKey, ProcessSample>,
    /// Map entries of live processes.
    pub live_entries: usize,
    /// Entries of exited processes taken out of the map so far.
    pub deletions: u64,
}

/// What the agent knows of every process the map has shown it.
#[derive(Debug)]
pub struct ProcessLedger {
    /// Names per tgid, as last read; None if it exited before they could be read.
    names: IdMap<u32, Option<Arc<ProcessNames>>>,
    /// Per key, map entry + cached at the last read (to tell which processes ran since).
    seen: IdMap<ProcessKey, u64>,
    /// Counts taken out of the map, per key (the last reads of exited processes' entries).
    taken: IdMap<ProcessKey, u64>,
    /// Per key, the total last reported: totals never go back.
    reported: IdMap<ProcessKey, u64>,
    /// Keys of exited processes, since when.
    removed: Retention<ProcessKey>,
    keep_removed: Duration,
    max_removed: usize,
    deletions: u64,
}

impl ProcessLedger {
    pub fn new(keep_removed: Duration, max_removed: usize) -> Self {
        Self {
            names: IdMap::default(),
            seen: IdMap::default(),
            taken: IdMap::default(),
            reported: IdMap::default(),
            removed: Retention::new(),
            keep_removed,
            max_removed,
            deletions: 0,
        }
    }

    /// Takes one read at `at`: the map's entries (per-CPU values summed) and the caches' slots
    /// (read after the map). `probe` reads a process's names from procfs, given the names last
    /// read (None: the process is gone); `take` reads and deletes an exited process's entry in
    /// one step (None if it was not there).
    pub fn record<E>(
        &mut self,
        at: Duration,
        map: impl IntoIterator<Item = (ProcessKey, u64)>,
        cached: impl IntoIterator<Item = (ProcessKey, u64)>,
        mut probe: impl FnMut(u32, Option<&Arc<ProcessNames>>) -> Option<Arc<ProcessNames>>,
        mut take: impl FnMut(ProcessKey) -> Result<Option<u64>, E>,
    ) -> Result<ProcessesSeen, E> {
        let mut observed: BTreeMap<ProcessKey, (Option<u64>, u64)> = BTreeMap::new();
        for (k, ns) in map {
            observed.entry(k).or_default().0 = Some(ns);
        }
        for (k, ns) in cached.into_iter().filter(|(_, ns)| *ns > 0) {
            observed.entry(k).or_default().1 += ns;
        }
        let alive = self.liveness(&observed, &mut probe);
        let mut seen = IdMap::with_capacity_and_hasher(observed.len(), Default::default());
        let mut live_entries = 0;
        for (k, (in_map, in_cache)) in observed {
            let counted = if alive[&k.tgid] {
                live_entries += usize::from(in_map.is_some());
                seen.insert(k, in_map.unwrap_or(0) + in_cache);
                self.removed.resume(&k);
                self.taken.get(&k).copied().unwrap_or(0) + in_map.unwrap_or(0)
            } else {
                // After the take, only the cached part is left to see.
                seen.insert(k, in_cache);
                self.exited(at, k, in_map.is_some(), in_cache > 0, &mut take)?
            };
            let r = self.reported.entry(k).or_default();
            *r = (*r).max(counted + in_cache);
        }
        self.seen = seen;
        self.expire(at, &alive);
        Ok(ProcessesSeen {
            samples: self.samples(&alive),
            live_entries,
            deletions: self.deletions,
        })
    }

    /// Whether each process of the read is alive: one whose keys moved since the last read ran
    /// (if its names are known, it is trusted); any other is probed.
    fn liveness(
        &mut self,
        observed: &BTreeMap<ProcessKey, (Option<u64>, u64)>,
        probe: &mut impl FnMut(u32, Option<&Arc<ProcessNames>>) -> Option<Arc<ProcessNames>>,
    ) -> IdMap<u32, bool> {
        let mut ran: IdMap<u32, bool> = IdMap::default();
        for (k, (in_map, in_cache)) in observed {
            let moved = self.seen.get(k) != Some(&(in_map.unwrap_or(0) + in_cache));
            *ran.entry(k.tgid).or_default() |= moved;
        }
        ran.into_iter()
            .map(|(tgid, ran)| {
                let known = self.names.get(&tgid);
                if ran && matches!(known, Some(Some(_))) {
                    return (tgid, true);
                }
                match probe(tgid, known.and_then(Option::as_ref)) {
                    Some(names) => {
                        self.names.insert(tgid, Some(names));
                        (tgid, true)
                    }
                    None => {
                        self.names.entry(tgid).or_insert(None);
                        (tgid, false)
                    }
                }
            })
            .collect()
    }

    /// A key of an exited process: its entry taken out of the map, and kept while a cache
    /// still holds some of its time. Returns its counts taken so far.
    fn exited<E>(
        &mut self,
        at: Duration,
        k: ProcessKey,
        in_map: bool,
        in_cache: bool,
        take: &mut impl FnMut(ProcessKey) -> Result<Option<u64>, E>,
    ) -> Result<u64, E> {
        let last = if in_map { take(k)? } else { None };
        match last {
            Some(last) => {
                self.deletions += 1;
                *self.taken.entry(k).or_default() += last;
                self.removed.renew(k, at, ());
            }
            None if in_cache => self.removed.renew(k, at, ()),
            None => self.removed.end(k, at, ()),
        }
        Ok(self.taken.get(&k).copied().unwrap_or(0))
    }

    /// Forgets exited processes after the retention (the longest-exited first beyond the
    /// bound), with their names once none of their keys is left.
    fn expire(&mut self, at: Duration, alive: &IdMap<u32, bool>) {
        for (k, ()) in self.removed.expire(at, self.keep_removed, self.max_removed) {
            self.taken.remove(&k);
            self.reported.remove(&k);
            self.seen.remove(&k);
        }
        let removed = &self.removed;
        self.reported
            .retain(|k, _| alive.get(&k.tgid) == Some(&true) || removed.contains(k));
        let reported = &self.reported;
        let tgids: crate::ids::IdSet<u32> = reported.keys().map(|k| k.tgid).collect();
        self.names.retain(|tgid, _| tgids.contains(tgid));
    }

    fn samples(&self, alive: &IdMap<u32, bool>) -> BTreeMap<ProcessKey, ProcessSample> {
        self.reported
            .iter()
            .map(|(k, total)| {
                (
                    *k,
                    ProcessSample {
                        cpu_ns: *total,
                        names: self.names.get(&k.tgid).cloned().flatten(),
                        gone: alive.get(&k.tgid) != Some(&true),
                    },
                )
            })
            .collect()
    }
}

/// Reads a process's names from `<procfs>/<tgid>`: None if it no longer exists. `comm` is read
/// every time (that is the existence check); `exe` only when `comm` changed since `last`.
pub fn probe(
    procfs: &Path,
    tgid: u32,
    last: Option<&Arc<ProcessNames>>,
) -> Option<Arc<ProcessNames>> {
    let dir = procfs.join(tgid.to_string());
    let comm = match std::fs::read_to_string(dir.join("comm")) {
        Ok(c) => stable_comm(c.trim_end_matches('\n')).to_owned(),
        Err(e) if is_gone(&e) => return None,
        // Exists, but unreadable: alive, and named by what was known.
        Err(_) => return Some(last.cloned().unwrap_or_else(|| unnamed(""))),
    };
    if let Some(last) = last.filter(|l| *l.comm == comm) {
        return Some(last.clone());
    }
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Arc::new(ProcessNames {
        comm: comm.into(),
        exe: exe.into(),
    }))
}

/// A workqueue worker's `comm` without the workqueue it last ran (`kworker/u8:3-flush-254:0` →
/// `kworker/u8:3`): procfs appends it, and it changes with every work item.
fn stable_comm(comm: &str) -> &str {
    const WORKER: &str = "kworker/";
    match comm
        .strip_prefix(WORKER)
        .and_then(|rest| rest.find(['+', '-']))
    {
        Some(i) => &comm[..WORKER.len() + i],
        None => comm,
    }
}

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn unnamed(comm: &str) -> Arc<ProcessNames> {
    Arc::new(ProcessNames {
        comm: comm.into(),
        exe: "".into(),
    })
}

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`), the same on every kernel.
const INIT_PID_NS: &str = "pid:[4026531836]";

/// Whether `<procfs>` shows the initial PID namespace (where the kernel's tgids live): false
/// for a container's own /proc; None if it cannot tell (no permission to look at pid 1).
pub fn shows_host_pids(procfs: &Path) -> Option<bool> {
    let ns = std::fs::read_link(procfs.join("1/ns/pid")).ok()?;
    Some(ns.to_str() == Some(INIT_PID_NS))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, convert::Infallible};

    use proptest::prelude::*;

    use super::*;

    fn key(tgid: u32, cgroup_id: u64) -> ProcessKey {
        ProcessKey {
            tgid,
            pad: 0,
            cgroup_id,
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A fake host: live processes by tgid (with their comm), the map, the caches' slots, and
    /// the probes asked for.
    #[derive(Default)]
    struct Host {
        alive: HashMap<u32, &'static str>,
        map: BTreeMap<ProcessKey, u64>,
        cache: Vec<(ProcessKey, u64)>,
        probes: Vec<u32>,
    }

    impl Host {
        fn read(&mut self, ledger: &mut ProcessLedger, at: u64) -> ProcessesSeen {
            let entries: Vec<_> = self.map.iter().map(|(k, v)| (*k, *v)).collect();
            let (alive, probes, map) = (&self.alive, &mut self.probes, &mut self.map);
            ledger
                .record(
                    s(at),
                    entries,
                    self.cache.clone(),
                    |tgid, _| {
                        probes.push(tgid);
                        alive.get(&tgid).map(|c| unnamed(c))
                    },
                    |k| Ok::<_, Infallible>(map.remove(&k)),
                )
                .unwrap()
        }

        /// A cache slot written to the map, as the program does when another process takes it.
        fn flush(&mut self, i: usize) {
            let (k, ns) = self.cache.remove(i);
            *self.map.entry(k).or_default() += ns;
        }
    }

    fn total(r: &ProcessesSeen, k: ProcessKey) -> Option<(u64, bool, &str)> {
        r.samples.get(&k).map(|p| {
            let comm = p.names.as_ref().map_or("(none)", |n| &*n.comm);
            (p.cpu_ns, p.gone, comm)
        })
    }

    #[test]
    fn live_processes_add_map_and_cache_and_only_idle_ones_are_probed() {
        let mut ledger = ProcessLedger::new(s(10), 100);
        let mut host = Host::default();
        host.alive.insert(10, "nginx");
        host.alive.insert(20, "sshd");
        host.map.insert(key(10, 1), 100);
        host.cache.push((key(10, 1), 5));
        host.map.insert(key(20, 2), 50);
        let r = host.read(&mut ledger, 1);
        assert_eq!(total(&r, key(10, 1)), Some((105, false, "nginx")));
        assert_eq!(r.live_entries, 2);
        let mut probed = std::mem::take(&mut host.probes);
        probed.sort();
        assert_eq!(probed, [10, 20], "first sight: both probed");

        host.cache[0].1 = 40; // 10 ran; 20 did not
        let r = host.read(&mut ledger, 2);
        assert_eq!(total(&r, key(10, 1)), Some((140, false, "nginx")));
        assert_eq!(host.probes, [20], "a process that ran is trusted");
    }

    #[test]
    fn an_exited_process_reports_its_final_counts_for_the_retention() {
        let mut ledger = ProcessLedger::new(s(5), 100);
        let mut host = Host::default();
        host.alive.insert(7, "job");
        host.map.insert(key(7, 1), 100);
        host.read(&mut ledger, 1);
        host.map.insert(key(7, 1), 150); // ran, then exited before the next read
        host.alive.clear();
        host.read(&mut ledger, 2); // ran: trusted alive this time
        let r = host.read(&mut ledger, 3);
        assert_eq!(total(&r, key(7, 1)), Some((150, true, "job")));
        assert!(host.map.is_empty(), "its entry was taken out of the map");
        assert_eq!((r.deletions, r.live_entries), (1, 0));
        let r = host.read(&mut ledger, 7);
        assert_eq!(total(&r, key(7, 1)), Some((150, true, "job")), "4 s after");
        let r = host.read(&mut ledger, 8);
        assert!(r.samples.is_empty(), "5 s after its exit it goes");
    }

    #[test]
    fn a_process_that_exited_before_it_was_seen_has_no_names() {
        let mut ledger = ProcessLedger::new(s(5), 100);
        let mut host = Host::default();
        host.map.insert(key(99, 1), 30);
        let r = host.read(&mut ledger, 1);
        assert_eq!(total(&r, key(99, 1)), Some((30, true, "(none)")));
    }

    /// Time still in a CPU's cache when the process exits is counted once: while cached, and
    /// not again when it reaches the map, even long after the retention.
    #[test]
    fn cached_time_of_an_exited_process_is_counted_once() {
        let mut ledger = ProcessLedger::new(s(2), 100);
        let mut host = Host::default();
        host.alive.insert(5, "short");
        host.map.insert(key(5, 1), 100);
        host.cache.push((key(5, 1), 20));
        assert_eq!(
            total(&host.read(&mut ledger, 1), key(5, 1)),
            Some((120, false, "short"))
        );
        host.alive.clear();
        for t in 2..30 {
            let r = host.read(&mut ledger, t);
            assert_eq!(total(&r, key(5, 1)), Some((120, true, "short")), "at {t}");
        }
        host.flush(0); // another process takes the slot at last
        let r = host.read(&mut ledger, 30);
        assert_eq!(total(&r, key(5, 1)), Some((120, true, "short")));
        assert!(host.map.is_empty());
        assert!(host.read(&mut ledger, 33).samples.is_empty());
    }

    #[test]
    fn exe_is_read_again_only_when_comm_changes() {
        let dir = std::env::temp_dir().join(format!("wattlet-procfs-{}", std::process::id()));
        let proc_dir = dir.join("42");
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("comm"), "bash\n").unwrap();
        std::os::unix::fs::symlink("/usr/bin/bash", proc_dir.join("exe")).unwrap();
        let first = probe(&dir, 42, None).unwrap();
        assert_eq!((&*first.comm, &*first.exe), ("bash", "/usr/bin/bash"));
        std::fs::remove_file(proc_dir.join("exe")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/sleep", proc_dir.join("exe")).unwrap();
        let same = probe(&dir, 42, Some(&first)).unwrap();
        assert!(
            Arc::ptr_eq(&same, &first),
            "comm unchanged: nothing re-read"
        );
        std::fs::write(proc_dir.join("comm"), "sleep\n").unwrap();
        let exec = probe(&dir, 42, Some(&first)).unwrap();
        assert_eq!((&*exec.comm, &*exec.exe), ("sleep", "/usr/bin/sleep"));
        assert_eq!(probe(&dir, 43, None), None, "no such process");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workqueue_workers_keep_one_name() {
        assert_eq!(stable_comm("kworker/u8:3-flush-254:0"), "kworker/u8:3");
        assert_eq!(stable_comm("kworker/1:1H+kblockd"), "kworker/1:1H");
        assert_eq!(stable_comm("kworker/0:2"), "kworker/0:2");
        assert_eq!(stable_comm("my-worker"), "my-worker");
        assert_eq!(stable_comm("kworker/"), "kworker/");
    }

    #[test]
    fn this_process_is_alive() {
        let me = probe(Path::new("/proc"), std::process::id(), None).unwrap();
        assert!(!me.comm.is_empty() && me.exe.starts_with('/'), "{me:?}");
    }

    proptest! {
        /// Whatever happens (processes run, exit, caches flush at any time, reads come at any
        /// time), every key's reported total never goes back, and never exceeds what the kernel
        /// counted for it.
        #[test]
        fn totals_never_go_back_nor_overcount(
            steps in proptest::collection::vec((0u8..5, 0usize..4, 1u64..1000), 1..60),
        ) {
            let mut ledger = ProcessLedger::new(s(3), 100);
            let mut host = Host::default();
            let mut counted: HashMap<ProcessKey, u64> = HashMap::new();
            let mut last: HashMap<ProcessKey, u64> = HashMap::new();
            for tgid in 1..=4 {
                host.alive.insert(tgid, "p");
            }
            for (t, (op, which, ns)) in steps.into_iter().enumerate() {
                let k = key(which as u32 + 1, 1);
                match op {
                    // Runs: time into its cache slot.
                    0 | 1 if host.alive.contains_key(&k.tgid) => {
                        match host.cache.iter_mut().find(|(c, _)| *c == k) {
                            Some(slot) => slot.1 += ns,
                            None => host.cache.push((k, ns)),
                        }
                        *counted.entry(k).or_default() += ns;
                    }
                    2 if !host.cache.is_empty() => host.flush(which % host.cache.len()),
                    3 => { host.alive.remove(&k.tgid); }
                    _ => {}
                }
                let r = host.read(&mut ledger, t as u64);
                for (k, p) in &r.samples {
                    let before = last.insert(*k, p.cpu_ns).unwrap_or(0);
                    prop_assert!(p.cpu_ns >= before, "{k:?} went back");
                    prop_assert!(p.cpu_ns <= counted.get(k).copied().unwrap_or(0), "{k:?} over-counted");
                }
            }
        }
    }
}
