//! The loaded program and its maps: loading, attaching, and the map reads and deletes. What the
//! reads mean over time is the ledgers' business: [`CgroupLedger`] for cgroups, `ProcessLedger`
//! (processes.rs) for processes.

use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePoint,
    util::nr_cpus,
};
use node_agent_common::{
    CgroupCounters, CpuCounters, PMU_CYCLES, PMU_INSTRUCTIONS, ProcessCache, ProcessKey, names,
};

use super::{
    CgroupLedger, CountersSnapshot, KernelError, KernelOptions, PmuCounters,
    cpuinfo::{CpuInfo, read_cpuinfo},
    pmu::{PerfEvents, open_pmu},
    probe,
    processes::{self, ProcessLedger},
    snapshot::{self, ProcessesRead},
};
use crate::{cgroup::CgroupTree, sys};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/node-agent"));

type CgroupMap = PerCpuHashMap<MapData, u64, CgroupCounters>;
type ProcessMap = PerCpuHashMap<MapData, ProcessKey, u64>;

/// The per-process map and caches, with `--metrics.processes` above 0.
struct ProcessMaps {
    map: ProcessMap,
    cache: PerCpuArray<MapData, ProcessCache>,
    capacity: u32,
    procfs: PathBuf,
    ledger: ProcessLedger,
}

/// The loaded and attached accounting program, and what the agent has read from it.
pub struct KernelCounters {
    // Holds the programs and their links: dropping it detaches.
    ebpf: Ebpf,
    cgroups: CgroupMap,
    cpus: PerCpuArray<MapData, CpuCounters>,
    _perf_events: Vec<OwnedFd>,
    pmu: PmuCounters,
    pmu_reason: String,
    possible_cpus: usize,
    map_capacity: u32,
    ledger: CgroupLedger,
    processes: Option<ProcessMaps>,
    cpu_info: Arc<[CpuInfo]>,
}

impl KernelCounters {
    /// Loads and attaches the accounting program. Errors say what is missing and how to fix it.
    pub fn load(options: KernelOptions) -> Result<Self, KernelError> {
        if EBPF_OBJECT.is_empty() {
            return Err(KernelError::NoObject);
        }
        probe::supported_kernel().map_err(KernelError::Unsupported)?;
        if options.max_cgroups == 0 {
            return Err(KernelError::NoCgroupCapacity);
        }
        let pmu = open_pmu(options.pmu)?;
        let mut ebpf = load_object(&options, &pmu.events)?;
        attach(&mut ebpf, names::PROGRAM)?;
        let processes = ProcessMaps::take(&mut ebpf, &options)?;
        let cgroups = CgroupMap::try_from(take_map(&mut ebpf, names::CGROUPS)?)
            .map_err(map_error("opening the cgroup map"))?;
        let cpus = PerCpuArray::try_from(take_map(&mut ebpf, names::CPUS)?)
            .map_err(map_error("opening the per-CPU state map"))?;
        let possible_cpus =
            nr_cpus().map_err(|(path, source)| KernelError::CpuList { path, source })?;
        let PerfEvents {
            cycles,
            instructions,
        } = pmu.events;
        Ok(Self {
            ebpf,
            cgroups,
            cpus,
            _perf_events: cycles
                .into_iter()
                .chain(instructions)
                .map(|e| e.1)
                .collect(),
            pmu: pmu.counters,
            pmu_reason: pmu.reason,
            possible_cpus,
            map_capacity: options.max_cgroups,
            ledger: CgroupLedger::new(options.gone_retention, options.max_gone),
            processes,
            cpu_info: read_cpuinfo(&options.procfs).into(),
        })
    }

    /// The cgroup ids that have an entry in the in-kernel map right now.
    pub fn map_ids(&self) -> Vec<u64> {
        self.cgroups.keys().filter_map(|k| k.ok()).collect()
    }

    /// The (process, cgroup) keys in the in-kernel process map right now (none when processes
    /// are not counted).
    pub fn process_keys(&self) -> Vec<ProcessKey> {
        (self.processes.iter())
            .flat_map(|p| p.map.keys().filter_map(|k| k.ok()))
            .collect()
    }

    /// The accounting program as the kernel runs it (after the verifier, which drops what a
    /// load-time constant switches off), in instructions.
    pub fn loaded_instructions(&self) -> Result<u32, KernelError> {
        let program = self
            .ebpf
            .program(names::PROGRAM)
            .ok_or(KernelError::Missing {
                kind: "program",
                name: names::PROGRAM,
            })?;
        let info = program
            .info()
            .map_err(|e| KernelError::bpf("reading the accounting program's info", e))?;
        Ok(info.size_translated().unwrap_or(0) / 8)
    }

    /// Which PMU counters are in use, and why.
    pub fn pmu(&self) -> (PmuCounters, &str) {
        (self.pmu, &self.pmu_reason)
    }

    /// Reads every counter into a snapshot. Entries of removed cgroups are read one last time and
    /// deleted from the map in the same step, so nothing they did is lost and the map does not
    /// fill up with the dead.
    pub fn read(&mut self, tree: &mut CgroupTree) -> Result<CountersSnapshot, KernelError> {
        let at = snapshot::monotonic_now();
        tree.begin_cycle();
        let entries = self.cgroup_entries()?;
        let mut scratch = vec![CgroupCounters::default(); self.possible_cpus];
        let map = &self.cgroups;
        let cgroups = self.ledger.record(
            at,
            entries,
            |id| tree.lookup(id),
            |id| take_entry(map, id, &mut scratch),
        )?;
        // The clock is read before the per-CPU state so that pending idle time never reaches
        // past a switch the copy does not show yet.
        let cpus_at = snapshot::monotonic_now();
        let per_cpu = self
            .cpus
            .get(&0, 0)
            .map_err(map_error("reading the per-CPU state map"))?;
        let (cpus, overflow) = self.ledger.cpu_times(&per_cpu, cpus_at.as_nanos() as u64);
        let processes = match &mut self.processes {
            Some(p) => p.read(at, self.possible_cpus)?,
            None => ProcessesRead::default(),
        };
        Ok(CountersSnapshot {
            at,
            cgroups: cgroups.samples,
            cpus,
            cpus_at,
            overflow,
            map_entries: cgroups.live_entries,
            map_capacity: self.map_capacity,
            pmu: self.pmu,
            map_deletions: cgroups.deletions,
            processes,
            cpu_info: self.cpu_info.clone(),
        })
    }

    /// Every entry of the cgroup map, its per-CPU values summed: in batches where the kernel
    /// has them, else key by key.
    fn cgroup_entries(&self) -> Result<Vec<(u64, CgroupCounters)>, KernelError> {
        let mut entries = Vec::new();
        let batched = sys::percpu_for_each(self.cgroups.map().fd().as_fd(), |id, values| {
            entries.push((id, snapshot::sum_cgroup(values)))
        })
        .map_err(KernelError::Batch)?;
        if batched {
            return Ok(entries);
        }
        for id in self.map_ids() {
            match self.cgroups.get(&id, 0) {
                Ok(values) => entries.push((id, snapshot::sum_cgroup(&values))),
                // Deleted since the keys were listed.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("reading the cgroup map")(e)),
            }
        }
        Ok(entries)
    }
}

/// Reads and deletes one entry in a single step, so that nothing charged in between is lost.
/// None if the entry was not there.
fn take_entry(
    map: &CgroupMap,
    id: u64,
    scratch: &mut [CgroupCounters],
) -> Result<Option<CgroupCounters>, KernelError> {
    let deleted = sys::percpu_lookup_and_delete(map.map().fd().as_fd(), id, scratch)
        .map_err(KernelError::Delete)?;
    Ok(deleted.then(|| snapshot::sum_cgroup(scratch)))
}

impl ProcessMaps {
    /// The maps, when processes are counted; a warning when procfs cannot name them.
    fn take(ebpf: &mut Ebpf, options: &KernelOptions) -> Result<Option<Self>, KernelError> {
        if options.processes == 0 {
            return Ok(None);
        }
        if processes::shows_host_pids(&options.procfs) == Some(false) {
            log::warn!(
                "{} shows a container's PID namespace: processes cannot be named nor seen to \
                 exit; mount the host's /proc and pass --path.procfs (or run with hostPID)",
                options.procfs.display()
            );
        }
        Ok(Some(Self {
            map: ProcessMap::try_from(take_map(ebpf, names::PROCESSES)?)
                .map_err(map_error("opening the process map"))?,
            cache: PerCpuArray::try_from(take_map(ebpf, names::PROCESS_CACHE)?)
                .map_err(map_error("opening the process caches"))?,
            capacity: options.max_processes,
            procfs: options.procfs.clone(),
            ledger: ProcessLedger::new(options.process_retention, options.max_gone),
        }))
    }

    /// Every entry of the process map, its per-CPU times summed: in batches where the kernel has
    /// them, else key by key.
    fn entries(&self) -> Result<Vec<(ProcessKey, u64)>, KernelError> {
        let mut entries = Vec::new();
        let batched = sys::percpu_for_each(self.map.map().fd().as_fd(), |key, values: &[u64]| {
            entries.push((key, values.iter().sum::<u64>()))
        })
        .map_err(KernelError::Batch)?;
        if batched {
            return Ok(entries);
        }
        for key in self.map.keys().filter_map(|k| k.ok()) {
            match self.map.get(&key, 0) {
                Ok(values) => entries.push((key, values.iter().sum::<u64>())),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("reading the process map")(e)),
            }
        }
        Ok(entries)
    }

    /// The map's entries, then the caches (in that order: a slot written to the map between the
    /// two reads is missed for one read rather than counted twice).
    fn read(&mut self, at: Duration, possible_cpus: usize) -> Result<ProcessesRead, KernelError> {
        let entries = self.entries()?;
        let caches = self
            .cache
            .get(&0, 0)
            .map_err(map_error("reading the process caches"))?;
        let overflow_ns = caches.iter().map(|c| c.overflow_ns).sum();
        let cached = caches
            .iter()
            .flat_map(|c| c.slots.iter().map(|s| (s.key, s.cpu_ns)));
        let mut scratch = vec![0u64; possible_cpus];
        let (map, procfs) = (&self.map, &self.procfs);
        let seen = self.ledger.record(
            at,
            entries,
            cached,
            |tgid, last| processes::probe(procfs, tgid, last),
            |key| {
                let deleted =
                    sys::percpu_lookup_and_delete(map.map().fd().as_fd(), key, &mut scratch)
                        .map_err(KernelError::Delete)?;
                Ok(deleted.then(|| scratch.iter().sum()))
            },
        )?;
        Ok(ProcessesRead {
            samples: seen.samples,
            overflow_ns,
            map_entries: seen.live_entries,
            map_capacity: self.capacity,
            map_deletions: seen.deletions,
        })
    }
}

/// Loads the object with the maps sized, processes counted or not, and the PMU counters in place.
fn load_object(options: &KernelOptions, events: &PerfEvents) -> Result<Ebpf, KernelError> {
    let mut flags = 0u32;
    if !events.cycles.is_empty() {
        flags |= PMU_CYCLES;
    }
    if !events.instructions.is_empty() {
        flags |= PMU_INSTRUCTIONS;
    }
    let track = u32::from(options.processes > 0);
    let ebpf = EbpfLoader::new()
        .map_max_entries(names::CGROUPS, options.max_cgroups)
        .map_max_entries(
            names::PROCESSES,
            if track == 1 { options.max_processes } else { 1 },
        )
        .override_global(names::PMU_FLAGS, &flags, true)
        .override_global(names::TRACK_PROCESSES, &track, true)
        .load(EBPF_OBJECT)
        .map_err(|e| KernelError::bpf("loading the eBPF object", e))?;
    for (array, events) in [
        (names::CYCLES, &events.cycles),
        (names::INSTRUCTIONS, &events.instructions),
    ] {
        let Some(Map::PerfEventArray(map)) = ebpf.map(array) else {
            return Err(KernelError::Missing {
                kind: "perf event array",
                name: array,
            });
        };
        for (cpu, fd) in events {
            sys::perf_array_set(map.fd().as_fd(), *cpu, fd.as_fd()).map_err(|source| {
                KernelError::PerfArray {
                    cpu: *cpu,
                    array,
                    source,
                }
            })?;
        }
    }
    Ok(ebpf)
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, KernelError> {
    ebpf.take_map(name)
        .ok_or(KernelError::Missing { kind: "map", name })
}

fn map_error(what: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { what, source }
}

/// Loads and attaches one of the object's sched_switch programs.
pub fn attach(ebpf: &mut Ebpf, name: &'static str) -> Result<(), KernelError> {
    let btf = Btf::from_sys_fs().map_err(KernelError::Btf)?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|e| KernelError::bpf(format!("{name} is not a tp_btf program"), e))?;
    program
        .load("sched_switch", &btf)
        .map_err(|e| KernelError::bpf(format!("loading {name} into the kernel"), e))?;
    program
        .attach()
        .map_err(|e| KernelError::bpf(format!("attaching {name} to tp_btf/sched_switch"), e))?;
    Ok(())
}
