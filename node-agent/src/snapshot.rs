//! The immutable snapshot that crosses from the measuring thread to the exporters.
//!
//! Each interval the measuring loop builds one [`Snapshot`] — the kernel counters, node energy,
//! the attribution, and the workloads joined with their pod metadata — and swaps it into
//! [`Latest`] whole. Exporters only read it: a scrape never measures and never waits on
//! measurement. The rows hold plain values (names as the API server spells them, numbers in
//! the units of the layers below), so that every exporter encodes them its own way.

#[cfg(test)]
pub(crate) mod fixture;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use node_agent_common::CgroupCounters;

use crate::{
    attribution::{
        AttributionSnapshot, EXITED, IdlePolicy, OTHER, PodTotals, ProcessTotals, WorkloadTotals,
    },
    kernel::CountersSnapshot,
    kubernetes::{MetaIndex, MetaView, PodMeta},
    power::PowerSnapshot,
    workload::{Container, Vm, Workload},
};

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
    /// The attribution's workloads joined with pod metadata, built once here rather than at
    /// every scrape. Per-zone vectors are in the order of `attribution.zones`.
    pub containers: Vec<ContainerRow>,
    pub pods: Vec<PodRow>,
    pub cgroups: Vec<CgroupRow>,
    pub vms: Vec<VmRow>,
    /// With `--metrics.processes`: the shown processes, then `(other)`.
    pub processes: Vec<ProcessRow>,
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
        let pods = attribution.pods.iter().map(|p| pod_row(p, index)).collect();
        let processes = attribution.processes.iter().map(process_row).collect();
        Self {
            counters,
            power,
            attribution,
            idle_policy,
            metadata,
            work,
            read_errors,
            containers,
            pods,
            cgroups,
            vms,
            processes,
        }
    }

    /// Whether node power is modelled rather than measured.
    pub fn estimated(&self) -> bool {
        self.power.as_ref().is_some_and(|p| p.estimated)
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

fn pod_row(p: &PodTotals, meta: &MetaIndex) -> PodRow {
    let known = pod_meta(meta, &p.uid);
    PodRow {
        uid: p.uid.clone(),
        name: known.name.clone(),
        namespace: known.namespace.clone(),
        running: p.running,
        joules: p.joules.clone(),
        watts: p.watts.clone(),
    }
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
/// long as they need it, and the measuring thread never waits for a scrape.
#[derive(Debug, Default)]
pub struct Latest(RwLock<Option<Arc<Snapshot>>>);

impl Latest {
    pub fn publish(&self, s: Snapshot) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
    }
    /// None until the first interval has been measured.
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
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
    fn latest_is_empty_until_published() {
        let latest = Latest::default();
        assert!(latest.get().is_none());
        latest.publish(fixture::snapshot());
        let first = latest.get().unwrap();
        latest.publish(fixture::snapshot());
        // A reader keeps the snapshot it took; the slot holds the new one.
        assert!(!Arc::ptr_eq(&first, &latest.get().unwrap()));
    }
}
