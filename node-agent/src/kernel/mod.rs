//! Kernel counters: loads the sched_switch accounting program, attaches it, and reads its per-CPU
//! maps into immutable snapshots.

mod options;
pub mod probe;
pub mod snapshot;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{IterableMap as _, Map, MapData, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePoint,
    util::{nr_cpus, online_cpus},
};
use node_agent_common::{CgroupCounters, CpuCounters, PMU_CYCLES, PMU_INSTRUCTIONS, names};

pub use options::{KernelOptions, PmuMode};
pub use snapshot::{CgroupSample, CountersSnapshot, CpuTime, PmuCounters};

use crate::{
    cgroup::{CgroupTree, Lookup},
    sys,
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/node-agent"));

/// The loaded and attached accounting program, and what the agent has read from it.
pub struct KernelCounters {
    // Holds the programs and their links: dropping it detaches.
    _ebpf: Ebpf,
    cgroups: PerCpuHashMap<MapData, u64, CgroupCounters>,
    cpus: PerCpuArray<MapData, CpuCounters>,
    _perf_events: Vec<OwnedFd>,
    pmu: PmuCounters,
    pmu_reason: String,
    possible_cpus: usize,
    options: KernelOptions,
    /// Totals already taken out of the map (entries of removed cgroups).
    base: HashMap<u64, CgroupCounters>,
    /// Per cgroup id, the totals carried into it from removed cgroups with the same path.
    carried: HashMap<u64, CgroupCounters>,
    /// Removed cgroups: when first seen gone, and their last known path.
    gone: HashMap<u64, (Duration, Option<Arc<str>>)>,
    paths: HashMap<u64, Arc<str>>,
    /// Per live map entry, its summed CPU time at the last read (to tell which ran since).
    cpu_seen: HashMap<u64, u64>,
    deletions: u64,
    /// Totals of expired removed cgroups whose path was never seen (never decreases).
    /// Idle time per CPU last exported, so that it never goes backwards.
    last_idle: Vec<u64>,
}

impl KernelCounters {
    /// Loads and attaches the accounting program. Errors say what is missing and how to fix it.
    pub fn load(options: KernelOptions) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this wattlet binary was built without its eBPF programs (AYA_BUILD_SKIP was set): \
                 rebuild with `cargo xtask build`"
            );
        }
        probe::supported_kernel().map_err(|why| anyhow!(why))?;
        if options.max_cgroups == 0 {
            bail!("--bpf.max-cgroups must be at least 1");
        }
        let (perf_events, pmu, pmu_reason) = open_pmu(options.pmu)?;
        let mut flags = 0u32;
        if !perf_events.cycles.is_empty() {
            flags |= PMU_CYCLES;
        }
        if !perf_events.instructions.is_empty() {
            flags |= PMU_INSTRUCTIONS;
        }

        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CGROUPS, options.max_cgroups)
            .override_global(names::PMU_FLAGS, &flags, true)
            .load(EBPF_OBJECT)
            .map_err(|e| explain_bpf_error(anyhow!(e).context("loading the eBPF object")))?;

        for (name, events) in [
            (names::CYCLES, &perf_events.cycles),
            (names::INSTRUCTIONS, &perf_events.instructions),
        ] {
            let Some(Map::PerfEventArray(array)) = ebpf.map(name) else {
                bail!("the eBPF object has no perf event array {name}");
            };
            for (cpu, fd) in events {
                sys::perf_array_set(array.fd().as_fd(), *cpu, fd.as_fd())
                    .with_context(|| format!("putting CPU {cpu}'s counter into {name}"))?;
            }
        }

        attach(&mut ebpf, names::PROGRAM)?;

        let cgroups = PerCpuHashMap::try_from(
            ebpf.take_map(names::CGROUPS)
                .ok_or_else(|| anyhow!("the eBPF object has no map {}", names::CGROUPS))?,
        )?;
        let cpus = PerCpuArray::try_from(
            ebpf.take_map(names::CPUS)
                .ok_or_else(|| anyhow!("the eBPF object has no map {}", names::CPUS))?,
        )?;
        let possible_cpus =
            nr_cpus().map_err(|(path, e)| anyhow!(e).context(format!("reading {path}")))?;
        let mut fds = perf_events
            .cycles
            .into_iter()
            .map(|(_, fd)| fd)
            .collect::<Vec<_>>();
        fds.extend(perf_events.instructions.into_iter().map(|(_, fd)| fd));
        Ok(Self {
            _ebpf: ebpf,
            cgroups,
            cpus,
            _perf_events: fds,
            pmu,
            pmu_reason,
            possible_cpus,
            options,
            base: HashMap::new(),
            carried: HashMap::new(),
            gone: HashMap::new(),
            paths: HashMap::new(),
            cpu_seen: HashMap::new(),
            deletions: 0,
            last_idle: Vec::new(),
        })
    }

    /// The cgroup ids that have an entry in the in-kernel map right now.
    pub fn map_ids(&self) -> Vec<u64> {
        self.cgroups.keys().filter_map(|k| k.ok()).collect()
    }

    /// Which PMU counters are in use, and why.
    pub fn pmu(&self) -> (PmuCounters, &str) {
        (self.pmu, &self.pmu_reason)
    }

    /// Reads every counter into a snapshot. Entries of removed cgroups are read one last time and
    /// deleted from the map in the same step, so nothing they did is lost and the map does not
    /// fill up with the dead.
    pub fn read(&mut self, tree: &mut CgroupTree) -> Result<CountersSnapshot> {
        let at = snapshot::monotonic_now();
        tree.begin_cycle();
        let keys = self.map_ids();
        let mut cgroups = BTreeMap::new();
        let mut scratch = vec![CgroupCounters::default(); self.possible_cpus];
        let mut live_entries = 0usize;
        let mut alive_by_path: HashMap<Arc<str>, u64> = HashMap::new();
        let mut cpu_now: HashMap<u64, u64> = HashMap::with_capacity(keys.len());
        for id in keys {
            let values = match self.cgroups.get(&id, 0) {
                Ok(v) => v,
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading the cgroup map"),
            };
            // A cgroup whose tasks ran since the last read existed in this interval: its
            // cached path is trusted without a stat (a cgroup removed after running is found
            // at the next read, when it is idle). Only idle cgroups are checked on disk.
            let cpu_ns = values
                .iter()
                .map(|v| v.cpu_ns)
                .fold(0u64, u64::wrapping_add);
            let ran = self.cpu_seen.get(&id).is_some_and(|c| *c != cpu_ns);
            cpu_now.insert(id, cpu_ns);
            let lookup = match self.paths.get(&id) {
                Some(path) if ran => Lookup::Alive(path.clone()),
                _ => tree.lookup(id),
            };
            match lookup {
                Lookup::Alive(path) => {
                    live_entries += 1;
                    // Alive after all (e.g. a rescan had missed it): not removed.
                    self.gone.remove(&id);
                    let mut total = self.base.get(&id).copied().unwrap_or_default();
                    total.add(&snapshot::sum_cgroup(&values));
                    self.paths.insert(id, path.clone());
                    alive_by_path.insert(path.clone(), id);
                    cgroups.insert(
                        id,
                        CgroupSample {
                            path: Some(path),
                            counters: total,
                            gone: false,
                            carried: CgroupCounters::default(),
                        },
                    );
                }
                Lookup::Gone => {
                    let fd = self.cgroups.map().fd().as_fd();
                    let deleted = sys::percpu_lookup_and_delete(fd, id, &mut scratch)
                        .context("removing a dead cgroup's entry from the map")?;
                    let path = self
                        .paths
                        .remove(&id)
                        .or_else(|| self.gone.get(&id).and_then(|(_, p)| p.clone()));
                    if deleted {
                        self.deletions += 1;
                        self.base
                            .entry(id)
                            .or_default()
                            .add(&snapshot::sum_cgroup(&scratch));
                        // Fresh counts: the retention starts again.
                        self.gone.insert(id, (at, path));
                    } else {
                        self.gone.entry(id).or_insert((at, path));
                    }
                }
            }
        }

        self.cpu_seen = cpu_now;

        // Forget removed cgroups after the retention (oldest first beyond the bound) without
        // letting a path's total go backwards: a total whose path lives on in a new cgroup (a
        // restarted service) is carried into it. (Workload series never go backwards anyway: the
        // attribution ledger keeps their totals.)
        let retention = self.options.gone_retention;
        let mut by_age: Vec<(Duration, u64)> = self
            .gone
            .iter()
            .map(|(id, (since, _))| (*since, *id))
            .collect();
        by_age.sort_unstable();
        let over = self.gone.len().saturating_sub(self.options.max_gone);
        let expired: Vec<u64> = by_age
            .iter()
            .enumerate()
            .filter(|(i, (since, _))| *i < over || at.saturating_sub(*since) >= retention)
            .map(|(_, (_, id))| *id)
            .collect();
        for id in expired {
            let Some((_, path)) = self.gone.remove(&id) else {
                continue;
            };
            let total = self.base.remove(&id).unwrap_or_default();
            if let Some(&heir) = path.and_then(|p| alive_by_path.get(&p)) {
                self.base.entry(heir).or_default().add(&total);
                self.carried.entry(heir).or_default().add(&total);
                if let Some(sample) = cgroups.get_mut(&heir) {
                    sample.counters.add(&total);
                }
            }
        }
        let gone = &self.gone;
        self.base
            .retain(|id, _| gone.contains_key(id) || cgroups.contains_key(id));
        self.carried
            .retain(|id, _| gone.contains_key(id) || cgroups.contains_key(id));
        for (id, (_, path)) in &self.gone {
            if let Some(total) = self.base.get(id) {
                cgroups.entry(*id).or_insert_with(|| CgroupSample {
                    path: path.clone(),
                    counters: *total,
                    gone: true,
                    carried: CgroupCounters::default(),
                });
            }
        }

        for (id, sample) in cgroups.iter_mut() {
            if let Some(c) = self.carried.get(id) {
                sample.carried = *c;
            }
        }

        // The clock is read before the per-CPU state so that pending idle time never reaches
        // past a switch the copy does not show yet; the copy is not atomic with the program, so
        // each CPU's idle time is also held at least at what was last exported.
        let now = snapshot::monotonic_now();
        let per_cpu = self
            .cpus
            .get(&0, 0)
            .context("reading the per-CPU state map")?;
        let (mut cpus, overflow) = snapshot::sum_cpus(&per_cpu, now.as_nanos() as u64);
        self.last_idle.resize(cpus.len(), 0);
        for (cpu, last) in cpus.iter_mut().zip(self.last_idle.iter_mut()) {
            cpu.idle_ns = cpu.idle_ns.max(*last);
            *last = cpu.idle_ns;
        }
        Ok(CountersSnapshot {
            at,
            cgroups,
            cpus,
            cpus_at: now,
            overflow,
            map_entries: live_entries,
            map_capacity: self.options.max_cgroups,
            pmu: self.pmu,
            map_deletions: self.deletions,
        })
    }
}

/// Loads and attaches one of the object's sched_switch programs.
pub fn attach(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let btf = Btf::from_sys_fs().map_err(|e| {
        anyhow!(e).context(
            "reading kernel BTF from /sys/kernel/btf/vmlinux: Wattlet needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 are)",
        )
    })?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
        .try_into()?;
    program.load("sched_switch", &btf).map_err(|e| {
        explain_bpf_error(anyhow!(e).context(format!("loading {name} into the kernel")))
    })?;
    program.attach().map_err(|e| {
        explain_bpf_error(anyhow!(e).context(format!("attaching {name} to tp_btf/sched_switch")))
    })?;
    Ok(())
}

/// Adds the fix to permission errors, which are the common case.
fn explain_bpf_error(e: anyhow::Error) -> anyhow::Error {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)))
    }) || format!("{e:#}").contains("Operation not permitted");
    if denied {
        e.context(format!(
            "permission denied: {}",
            sys::privileges::explain_denied()
        ))
    } else {
        e
    }
}

struct PerfEvents {
    cycles: Vec<(u32, OwnedFd)>,
    instructions: Vec<(u32, OwnedFd)>,
}

/// Opens one counter per online CPU, or none at all (a counter on only some CPUs would skew
/// attribution).
fn open_pmu(mode: PmuMode) -> Result<(PerfEvents, PmuCounters, String)> {
    let none = || PerfEvents {
        cycles: Vec::new(),
        instructions: Vec::new(),
    };
    if mode == PmuMode::Off {
        return Ok((
            none(),
            PmuCounters::None,
            "PMU counters turned off (--pmu off)".into(),
        ));
    }
    let cpus = online_cpus().map_err(|(path, e)| anyhow!(e).context(format!("reading {path}")))?;
    let open_all = |type_, config| -> io::Result<Vec<(u32, OwnedFd)>> {
        cpus.iter()
            .map(|&cpu| sys::perf_event_open_cpu(type_, config, cpu).map(|fd| (cpu, fd)))
            .collect()
    };
    if mode == PmuMode::SoftwareStandIn {
        let cycles = open_all(sys::PERF_TYPE_SOFTWARE, sys::PERF_COUNT_SW_CPU_CLOCK)
            .context("opening the software cpu-clock stand-in counter")?;
        return Ok((
            PerfEvents {
                cycles,
                instructions: Vec::new(),
            },
            PmuCounters::SoftwareStandIn,
            "software cpu-clock event standing in for cycles (test mode)".into(),
        ));
    }
    match (
        open_all(sys::PERF_TYPE_HARDWARE, sys::PERF_COUNT_HW_CPU_CYCLES),
        open_all(sys::PERF_TYPE_HARDWARE, sys::PERF_COUNT_HW_INSTRUCTIONS),
    ) {
        (Ok(cycles), Ok(instructions)) => Ok((
            PerfEvents {
                cycles,
                instructions,
            },
            PmuCounters::Hardware,
            "hardware cycles and instructions per cgroup".into(),
        )),
        (Err(e), _) | (_, Err(e)) => Ok((
            none(),
            PmuCounters::None,
            format!(
                "no usable hardware PMU ({}): cycles and instructions are not counted; \
                 attribution uses CPU time",
                probe::describe_perf_error(&e)
            ),
        )),
    }
}
