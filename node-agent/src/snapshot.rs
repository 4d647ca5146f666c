//! The immutable snapshot that crosses from the measuring thread to the exporters.
//!
//! Each interval the measuring loop builds one [`Snapshot`] — the kernel counters, node energy,
//! the attribution, and the workloads joined with their pod metadata — and swaps it into
//! [`Latest`] whole. Exporters only read it: a scrape never measures and never waits on
//! measurement. The rows hold plain values (names as the API server spells them, numbers in
//! the units of the layers below), so that every exporter encodes them its own way.
//!
//! When a snapshot is published, what changed since the one before is set on it (`recent`:
//! the interval and each row's CPU share over it), and a point is appended to the short
//! [`History`] kept beside it (node power and the top workloads, for the page's chart).

#[cfg(test)]
pub(crate) mod fixture;
mod history;
mod recent;

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use node_agent_common::CgroupCounters;

use crate::{
    attribution::{
        AttributionSnapshot, EXITED, Emissions, IdlePolicy, OTHER, PlatformTotals, PodTotals,
        ProcessTotals, WorkloadTotals,
    },
    carbon::{ErrorCount, Reading},
    kernel::CountersSnapshot,
    kubernetes::{MetaIndex, MetaView, PodMeta},
    power::{PlatformMeter, PowerSnapshot},
    workload::{Container, Vm, Workload},
};

pub use history::{History, HistoryPoint, TopWorkload, WorkloadKind, ZonePower};
pub use recent::SincePrevious;

/// What the measuring loop hands to the exporters each interval.
///
/// Named for what its readers get (one consistent view of one interval), like the
/// `*Snapshot`s it is made of, rather than for the act of publishing it.
#[derive(Debug)]
pub struct Snapshot {
    pub counters: CountersSnapshot,
    /// Node energy, if a power source was read.
    pub power: Option<PowerSnapshot>,
    pub attribution: AttributionSnapshot,
    pub idle_policy: IdlePolicy,
    /// Pod metadata, when the agent watches the Kubernetes API.
    pub metadata: Option<MetaView>,
    /// How long the interval's work took.
    pub work: Duration,
    /// Reads of the kernel counters that failed so far.
    pub read_errors: u64,
    /// Interval ticks missed so far: ticks that came while the work was still running.
    pub missed_ticks: u64,
    /// The attribution's workloads joined with pod metadata, built once here rather than at
    /// every scrape. Per-zone vectors are in the order of `attribution.zones`.
    pub containers: Vec<ContainerRow>,
    pub pods: Vec<PodRow>,
    pub cgroups: Vec<CgroupRow>,
    /// Wall-clock time the snapshot was built.
    pub taken_at: SystemTime,
    /// The interval since the previously published snapshot; none for the first.
    pub since_previous: Option<SincePrevious>,
    /// The intensity in force and the node's emissions, when the agent computes them.
    pub carbon: Option<CarbonRow>,
    pub vms: Vec<VmRow>,
    /// With `--metrics.processes`: the shown processes, then `(other)`.
    pub processes: Vec<ProcessRow>,
    /// The whole-platform meter (a BMC), when one is configured.
    pub platform: Option<PlatformRow>,
}

/// The whole-platform meter: what it reads, whether it is stale, and the platform zone's own
/// totals (its power and energy are the `platform` zone's, with the others).
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformRow {
    pub meter: PlatformMeter,
    pub totals: PlatformTotals,
}

/// Carbon in one place: the grid intensity in force during the interval, the settings, the
/// node's totals (gCO2e since the agent started), and the intensity sources' failures so far.
#[derive(Clone, Debug, PartialEq)]
pub struct CarbonRow {
    pub reading: Reading,
    pub pue: f64,
    /// The server's embodied footprint per second, when configured.
    pub embodied_grams_per_second: Option<f64>,
    /// Per zone (in the order of `attribution.zones`): operational grams, all sources.
    pub node_grams: Vec<f64>,
    pub node_embodied_grams: f64,
    pub errors: Vec<ErrorCount>,
}

/// What one workload used: counted by the kernel, and the energy attributed to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    /// Some cgroup of it exists now.
    pub running: bool,
    /// Counted since the agent started.
    pub counters: CgroupCounters,
    /// Per zone: joules since the agent started, and average power over the last interval.
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
    /// Operational and embodied grams since the agent started.
    pub emissions: Emissions,
    /// Share of all CPUs' time its tasks ran over the interval since the previous snapshot
    /// (0..=1; set when published, none for the first snapshot).
    pub cpu_share: Option<f64>,
}

/// A container, named by the runtime (id) and the API server (name, pod, namespace).
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRow {
    pub id: Arc<str>,
    pub runtime: &'static str,
    /// Names the agent cannot know yet are empty, never invented.
    pub name: String,
    pub pod: String,
    pub namespace: String,
    /// From the cgroup path, else from the API server's container statuses; empty if neither.
    pub pod_uid: String,
    pub usage: Usage,
}

/// A pod: the sums of its containers.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRow {
    pub uid: Arc<str>,
    /// Empty until pod metadata is known.
    pub name: String,
    pub namespace: String,
    pub running: bool,
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
    pub emissions: Emissions,
    /// Its containers' CPU time now tracked, and their CPU share (see [`Usage::cpu_share`]).
    pub cpu_ns: u64,
    pub cpu_share: Option<f64>,
}

/// A non-container cgroup, by its path cut to `--attribution.cgroup-depth`, or one of the
/// reserved names ([`crate::attribution::OVERFLOW`], [`crate::attribution::UNSEEN`]).
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupRow {
    pub path: Arc<str>,
    pub usage: Usage,
}

/// A virtual machine, named by its cgroup.
#[derive(Clone, Debug, PartialEq)]
pub struct VmRow {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub hypervisor: &'static str,
    pub usage: Usage,
}

/// A process series: one process while it is among the top N, or `(other)` (`pid` empty).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRow {
    pub pid: String,
    /// `(other)`, or `(exited)` for a process that exited before its names were read.
    pub comm: Arc<str>,
    pub exe: Arc<str>,
    /// Kepler's `type`: `container`, `vm` or `regular` (empty for `(other)`).
    pub kind: &'static str,
    /// The workload it ran in: a container's id, a VM's id, or a cgroup's name; the others empty.
    pub container_id: Arc<str>,
    pub vm_id: Arc<str>,
    pub cgroup: Arc<str>,
    pub running: bool,
    /// CPU time and energy per zone while shown, and the last interval's power.
    pub cpu_ns: u64,
    pub joules: Vec<f64>,
    pub watts: Vec<Option<f64>>,
}

impl Snapshot {
    pub fn new(
        counters: CountersSnapshot,
        power: Option<PowerSnapshot>,
        attribution: AttributionSnapshot,
        idle_policy: IdlePolicy,
        metadata: Option<MetaView>,
        work: Duration,
        read_errors: u64,
    ) -> Self {
        let empty = MetaIndex::default();
        let index = metadata.as_ref().map_or(&empty, |m| &*m.index);
        let (containers, cgroups, vms) = workload_rows(&attribution.workloads, index);
        let pods = attribution
            .pods
            .iter()
            .map(|p| pod_row(p, &containers, index))
            .collect();
        let carbon = carbon_row(&attribution);
        let processes = attribution.processes.iter().map(process_row).collect();
        Self {
            counters,
            power,
            attribution,
            idle_policy,
            metadata,
            work,
            read_errors,
            missed_ticks: 0,
            containers,
            pods,
            cgroups,
            carbon,
            taken_at: SystemTime::now(),
            since_previous: None,
            vms,
            processes,
            platform: None,
        }
    }

    /// The whole-platform meter's row, when one is configured.
    pub fn with_platform(mut self, platform: Option<PlatformRow>) -> Self {
        self.platform = platform;
        self
    }

    /// The intensity sources' failures so far (`Intensity::errors`), when carbon is computed.
    pub fn with_intensity_errors(mut self, errors: Vec<ErrorCount>) -> Self {
        if let Some(c) = &mut self.carbon {
            c.errors = errors;
        }
        self
    }

    /// The interval ticks the measuring loop missed so far.
    pub fn with_missed_ticks(mut self, missed: u64) -> Self {
        self.missed_ticks = missed;
        self
    }

    /// Whether node power is modelled rather than measured.
    pub fn estimated(&self) -> bool {
        self.power.as_ref().is_some_and(|p| p.estimated)
    }

    /// The zones whose sum is the node's (or a workload's) total: see [`total_zones`].
    pub fn total_zones(&self) -> Vec<usize> {
        total_zones(&self.attribution.zones)
    }
}

/// The zones that add up to a total without counting any energy twice: `package` and `dram`
/// where the source has them (`core` and `uncore` are part of `package`; `psys` is the whole
/// platform, overlapping both), else the first zone (a sensor's single reading). Every total
/// Wattlet shows — the page's, the report's — is over these zones.
pub fn total_zones(zones: &[impl AsRef<str>]) -> Vec<usize> {
    let named: Vec<usize> = zones
        .iter()
        .enumerate()
        .filter(|(_, z)| TOTAL_ZONES.contains(&z.as_ref()))
        .map(|(i, _)| i)
        .collect();
    if named.is_empty() && !zones.is_empty() {
        vec![0]
    } else {
        named
    }
}

/// The zones [`total_zones`] sums when present.
pub const TOTAL_ZONES: [&str; 2] = ["package", "dram"];

/// The sum of `values` over the zones `which`.
pub fn sum_zones(which: &[usize], values: &[f64]) -> f64 {
    which.iter().filter_map(|&i| values.get(i)).sum()
}

/// The sum of `values` over the zones `which`; none if any of them is unknown.
pub fn sum_watts(which: &[usize], values: &[Option<f64>]) -> Option<f64> {
    which
        .iter()
        .map(|&i| values.get(i).copied().flatten())
        .sum()
}

impl ContainerRow {
    /// How a person would name it: `namespace/pod/container` when the API server named it,
    /// else the runtime and the id's first 12 digits (as `docker ps` shows it).
    pub fn display_name(&self) -> String {
        if self.pod.is_empty() {
            let short = self.id.get(..12).unwrap_or(&self.id);
            format!("{} {short}", self.runtime)
        } else {
            let container = if self.name.is_empty() {
                "?"
            } else {
                &self.name
            };
            format!("{}/{}/{container}", self.namespace, self.pod)
        }
    }
}

/// Containers, cgroups and VMs, in the attribution's order.
fn workload_rows(
    workloads: &[WorkloadTotals],
    meta: &MetaIndex,
) -> (Vec<ContainerRow>, Vec<CgroupRow>, Vec<VmRow>) {
    let mut containers = Vec::new();
    let mut cgroups = Vec::new();
    let mut vms = Vec::new();
    for w in workloads {
        let usage = Usage {
            running: w.running,
            counters: w.counters,
            joules: w.joules.clone(),
            watts: w.watts.clone(),
            emissions: w.emissions.clone(),
            cpu_share: None,
        };
        match &w.workload {
            Workload::Container(c) => containers.push(container_row(c, usage, meta)),
            Workload::Cgroup(path) => cgroups.push(CgroupRow {
                path: path.clone(),
                usage,
            }),
            Workload::Vm(vm) => vms.push(vm_row(vm, usage)),
        }
    }
    (containers, cgroups, vms)
}

fn vm_row(vm: &Vm, usage: Usage) -> VmRow {
    VmRow {
        id: vm.id.clone(),
        name: vm.name.clone(),
        hypervisor: vm.hypervisor,
        usage,
    }
}

fn process_row(p: &ProcessTotals) -> ProcessRow {
    let empty: Arc<str> = Arc::from("");
    let (kind, container_id, vm_id, cgroup) = match &p.workload {
        Some(Workload::Container(c)) => ("container", c.id.clone(), empty.clone(), empty),
        Some(Workload::Vm(v)) => ("vm", empty.clone(), v.id.clone(), empty),
        Some(Workload::Cgroup(path)) => ("regular", empty.clone(), empty, path.clone()),
        None if p.pid.is_some() => ("regular", empty.clone(), empty.clone(), empty),
        None => ("", empty.clone(), empty.clone(), empty),
    };
    let (comm, exe) = match (&p.names, p.pid) {
        (Some(n), _) => (n.comm.clone(), n.exe.clone()),
        (None, Some(_)) => (Arc::from(EXITED), Arc::from("")),
        (None, None) => (Arc::from(OTHER), Arc::from("")),
    };
    ProcessRow {
        pid: p.pid.map(|p| p.to_string()).unwrap_or_default(),
        comm,
        exe,
        kind,
        container_id,
        vm_id,
        cgroup,
        running: p.running,
        cpu_ns: p.cpu_ns,
        joules: p.joules.clone(),
        watts: p.watts.clone(),
    }
}

fn container_row(c: &Container, usage: Usage, meta: &MetaIndex) -> ContainerRow {
    let known = meta.containers.get(&*c.id);
    // The cgroup path names the pod; the API's statuses name the container.
    let pod_uid = c
        .pod_uid
        .as_deref()
        .or(known.map(|k| k.pod_uid.as_str()))
        .unwrap_or("");
    let pod = pod_meta(meta, pod_uid);
    ContainerRow {
        id: c.id.clone(),
        runtime: c.runtime,
        name: known.map(|k| k.name.clone()).unwrap_or_default(),
        pod: pod.name.clone(),
        namespace: pod.namespace.clone(),
        pod_uid: pod_uid.to_owned(),
        usage,
    }
}

fn pod_row(p: &PodTotals, containers: &[ContainerRow], meta: &MetaIndex) -> PodRow {
    let known = pod_meta(meta, &p.uid);
    let cpu_ns = containers
        .iter()
        .filter(|c| c.pod_uid == *p.uid)
        .map(|c| c.usage.counters.cpu_ns)
        .sum();
    PodRow {
        uid: p.uid.clone(),
        name: known.name.clone(),
        namespace: known.namespace.clone(),
        running: p.running,
        joules: p.joules.clone(),
        watts: p.watts.clone(),
        emissions: p.emissions.clone(),
        cpu_ns,
        cpu_share: None,
    }
}

fn carbon_row(a: &AttributionSnapshot) -> Option<CarbonRow> {
    let c = a.carbon.as_ref()?;
    let node_grams = (a.node.iter())
        .map(|z| z.emissions.iter().map(|g| g.active + g.idle).sum())
        .collect();
    Some(CarbonRow {
        reading: c.in_force.reading.clone(),
        pue: c.in_force.pue,
        embodied_grams_per_second: c.in_force.embodied_grams_per_second,
        node_grams,
        node_embodied_grams: c.embodied_active + c.embodied_idle,
        errors: Vec::new(),
    })
}

/// A pod's names, or empty ones while the API server has not named it.
fn pod_meta<'a>(meta: &'a MetaIndex, uid: &str) -> &'a PodMeta {
    static UNKNOWN: PodMeta = PodMeta {
        name: String::new(),
        namespace: String::new(),
    };
    meta.pods.get(uid).unwrap_or(&UNKNOWN)
}

/// The latest snapshot, swapped whole each interval: readers keep the one they took for as
/// long as they need it, and the measuring thread never waits for a scrape. Beside it, the
/// short history of what was published.
#[derive(Debug, Default)]
pub struct Latest {
    slot: RwLock<Option<Arc<Snapshot>>>,
    history: Mutex<History>,
}

impl Latest {
    /// Sets what changed since the previous snapshot on `s`, appends it to the history, and
    /// makes it the latest.
    pub fn publish(&self, mut s: Snapshot) {
        if let Some(previous) = self.get() {
            recent::since(&mut s, &previous);
        }
        let point = HistoryPoint::of(&s);
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(point);
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
    }

    /// None until the first interval has been measured.
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The history's points, oldest first, and its bounds (window, most points). A copy of
    /// the pointers only: the measuring thread waits for no reader's encoding.
    pub fn history(&self) -> (Vec<Arc<HistoryPoint>>, Duration, usize) {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (h.points(), h.window(), h.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::{fixture, *};

    #[test]
    fn joins_workloads_with_pod_metadata() {
        let s = fixture::snapshot();
        let by_id = |id: &str| s.containers.iter().find(|c| &*c.id == id).unwrap();

        // Named by the API server; the cgroup path gave the pod uid.
        let known = by_id(fixture::ID_WEB);
        assert_eq!(
            (
                known.name.as_str(),
                known.pod.as_str(),
                known.namespace.as_str()
            ),
            ("nginx", "web-7d9f", "shop")
        );
        assert_eq!(known.pod_uid, fixture::UID_WEB);
        // The path did not name the pod (docker): the container status did.
        let via_status = by_id(fixture::ID_SIDECAR);
        assert_eq!(via_status.pod_uid, fixture::UID_WEB);
        assert_eq!(via_status.pod, "web-7d9f");
        // Unknown to the API server: empty names, never invented ones.
        let unknown = by_id(fixture::ID_UNKNOWN);
        assert_eq!((unknown.name.as_str(), unknown.pod.as_str()), ("", ""));
        assert_eq!(unknown.pod_uid, fixture::UID_GONE);

        let pods: Vec<_> = s.pods.iter().map(|p| (&*p.uid, p.name.as_str())).collect();
        assert_eq!(
            pods,
            [(fixture::UID_WEB, "web-7d9f"), (fixture::UID_GONE, "")]
        );
        // Cgroups keep the attribution's order and their raw paths (no escaping here).
        let paths: Vec<_> = s.cgroups.iter().map(|c| &*c.path).collect();
        assert_eq!(paths, fixture::CGROUPS);
        assert!(s.estimated());
    }

    #[test]
    fn process_and_vm_rows_name_their_workloads() {
        let s = fixture::snapshot();
        let rows: Vec<_> = (s.processes.iter())
            .map(|p| {
                let ids = (&*p.container_id, &*p.vm_id, &*p.cgroup);
                (p.pid.as_str(), &*p.comm, p.kind, ids)
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("1234", "nginx", "container", (fixture::ID_WEB, "", "")),
                ("777", "qemu-system-x86", "vm", ("", "web-vm", "")),
                ("42", "sshd", "regular", ("", "", "/")),
                ("4242", EXITED, "regular", ("", "", "/")),
                ("", OTHER, "", ("", "", "")),
            ]
        );
        assert!(!s.processes[3].running, "exited");
        let vms: Vec<_> = s.vms.iter().map(|v| (&*v.name, v.hypervisor)).collect();
        assert_eq!(vms, [("web-vm", "kvm")]);
        assert!(
            s.cgroups.iter().all(|c| !c.path.contains("qemu")),
            "a VM is not a cgroup row"
        );
    }

    #[test]
    fn without_metadata_names_stay_empty() {
        let s = fixture::snapshot();
        let s = Snapshot::new(
            s.counters,
            s.power,
            s.attribution,
            s.idle_policy,
            None,
            s.work,
            s.read_errors,
        );
        assert!(
            s.containers
                .iter()
                .all(|c| c.name.is_empty() && c.pod.is_empty())
        );
        assert!(s.pods.iter().all(|p| p.name.is_empty()));
    }

    #[test]
    fn the_carbon_row_sums_the_sources_and_keeps_the_errors() {
        let s = fixture::snapshot();
        let c = s.carbon.as_ref().expect("the fixture has carbon");
        let a = s.attribution.carbon.as_ref().unwrap();
        assert_eq!(c.reading, a.in_force.reading);
        assert_eq!(c.errors, fixture::intensity_errors());
        for (zone, grams) in s.attribution.node.iter().zip(&c.node_grams) {
            let sum: f64 = zone.emissions.iter().map(|g| g.active + g.idle).sum();
            assert_eq!(*grams, sum, "{}", zone.zone);
        }
        assert_eq!(c.node_embodied_grams, a.embodied_active + a.embodied_idle);
    }

    #[test]
    fn latest_is_empty_until_published() {
        let latest = Latest::default();
        assert!(latest.get().is_none());
        latest.publish(fixture::snapshot());
        let first = latest.get().unwrap();
        latest.publish(fixture::snapshot());
        // A reader keeps the snapshot it took; the slot holds the new one.
        assert!(!Arc::ptr_eq(&first, &latest.get().unwrap()));
        let (points, window, capacity) = latest.history();
        assert_eq!(points.len(), 2);
        assert_eq!((window, capacity), (history::WINDOW, history::MAX_POINTS));
    }

    #[test]
    fn publishing_sets_what_changed_since_the_previous_snapshot() {
        let latest = Latest::default();
        latest.publish(fixture::snapshot());
        assert_eq!(latest.get().unwrap().since_previous, None);
        let mut next = fixture::snapshot();
        next.counters.at += Duration::from_secs(2);
        for cpu in &mut next.counters.cpus {
            cpu.idle_ns += 2_000_000_000;
        }
        latest.publish(next);
        let recent = latest.get().unwrap().since_previous.unwrap();
        assert_eq!((recent.seconds, recent.busy_share), (2.0, 0.0));
    }

    #[test]
    fn totals_are_over_package_and_dram_or_the_only_zone() {
        assert_eq!(total_zones(&["core", "dram", "package", "uncore"]), [1, 2]);
        assert_eq!(total_zones(&["package", "psys"]), [0]);
        assert_eq!(total_zones(&["platform"]), [0]);
        assert!(total_zones(&[] as &[&str]).is_empty());
        assert_eq!(sum_watts(&[0, 2], &[Some(1.0), None, Some(2.0)]), Some(3.0));
        assert_eq!(sum_watts(&[0, 1], &[Some(1.0), None]), None);
        assert_eq!(sum_zones(&[1], &[5.0, 7.0]), 7.0);
    }

    #[test]
    fn containers_are_named_as_a_person_would() {
        let s = fixture::snapshot();
        let names: Vec<_> = s.containers.iter().map(|c| c.display_name()).collect();
        assert_eq!(
            names,
            [
                "shop/web-7d9f/nginx",
                "containerd c0ffee00c0ff",
                "shop/web-7d9f/istio-proxy"
            ]
        );
    }
}
