//! A fixed snapshot for the exporters' tests: two zones of a modelled (estimated) source,
//! containers known and unknown to the API server (one terminated), their pods, plain cgroups
//! with the reserved rows and a path that needs escaping, a VM, processes (in a container, in a
//! cgroup, in the VM, one that exited unnamed) and `(other)`, two CPUs, the agent about
//! itself, hardware PMU, and carbon (an API reading for zone DE, a PUE, embodied emissions, one
//! container and the node with grams from before a failover to the default), and a BMC.
//! Its figures are made up; what matters is that every family has something to show.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use node_agent_common::CgroupCounters;

use super::{PlatformRow, Snapshot};
use crate::{
    attribution::{
        AttributedCarbon, AttributionSnapshot, Emissions, IdleMethod, IdlePolicy, IntervalCarbon,
        NodeGrams, NodeZone, OVERFLOW, PlatformTotals, PodTotals, ProcessTotals, SourceGrams,
        UNSEEN, WorkloadTotals,
    },
    carbon::{self, ErrorCount, Reading},
    kernel::{CountersSnapshot, CpuInfo, CpuTime, PmuCounters, ProcessNames, ProcessesRead},
    kubernetes::{ContainerMeta, MetaIndex, MetaView, PodMeta},
    power::{
        DropReason, PlatformKind, PlatformLabels, PlatformMeter, PowerSnapshot, SourceKind,
        ZoneSample,
    },
    workload::{Container, Qos, Vm, Workload},
};

/// A container the API server names, in pod [`UID_WEB`].
pub(crate) const ID_WEB: &str = "3f2a9c1e4b7d8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";
/// A terminated container of a pod the API server no longer lists.
pub(crate) const ID_UNKNOWN: &str =
    "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
/// A container whose cgroup path does not name its pod; the API server's status does.
pub(crate) const ID_SIDECAR: &str =
    "77aa88bb99cc00dd11ee22ff33aa44bb55cc66dd77ee88ff99aa00bb11cc22dd";
pub(crate) const UID_WEB: &str = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b";
pub(crate) const UID_GONE: &str = "9c0f3f5e-6d2a-4c1e-8f7b-3a2d1e0c9b8a";
/// The cgroup rows, in the attribution's (sorted) order.
pub(crate) const CGROUPS: [&str; 4] = [
    OVERFLOW,
    UNSEEN,
    "/",
    "/system.slice/odd\"unit\\name\n.scope",
];

fn counters(cpu_s: f64, voluntary: u64, involuntary: u64) -> CgroupCounters {
    let cpu_ns = (cpu_s * 1e9) as u64;
    CgroupCounters {
        cpu_ns,
        switches_voluntary: voluntary,
        switches_involuntary: involuntary,
        cycles: cpu_ns * 3,
        instructions: cpu_ns * 4,
    }
}

fn workload(
    workload: Workload,
    running: bool,
    counters: CgroupCounters,
    joules: [f64; 2],
    watts: [Option<f64>; 2],
) -> WorkloadTotals {
    WorkloadTotals {
        workload,
        running,
        counters,
        joules: joules.to_vec(),
        watts: watts.to_vec(),
        emissions: emissions(joules),
    }
}

/// The intensity of the fixture, g/kWh, and its PUE.
const GRAMS_PER_KWH: f64 = 302.0;
const PUE: f64 = 1.25;

/// Grams for the fixture's joules at its intensity (from the API), and embodied grams of a
/// tenth of a gram per kJ.
fn emissions(joules: [f64; 2]) -> Emissions {
    let per_joule = carbon::grams_per_joule(GRAMS_PER_KWH, PUE);
    Emissions {
        operational: vec![SourceGrams {
            source: carbon::SourceKind::Api,
            grams: joules.iter().map(|j| j * per_joule).collect(),
        }],
        embodied: joules.iter().sum::<f64>() * 1e-4,
    }
}

fn container(runtime: &'static str, id: &str, pod_uid: Option<&str>, qos: Qos) -> Workload {
    Workload::Container(Container {
        runtime,
        id: id.into(),
        pod_uid: pod_uid.map(Into::into),
        qos: Some(qos),
    })
}

fn workloads() -> Vec<WorkloadTotals> {
    let mut w = workload_energy();
    // The first container also ran while the agent used the world average.
    w[0].emissions = failed_over(w[0].emissions.clone());
    w
}

/// `e` with grams from a time the agent used the world average.
fn failed_over(mut e: Emissions) -> Emissions {
    e.operational.push(SourceGrams {
        source: carbon::SourceKind::Default,
        grams: vec![0.25, 12.5],
    });
    e
}

fn workload_energy() -> Vec<WorkloadTotals> {
    let cgroup = |path: &str| Workload::Cgroup(path.into());
    vec![
        workload(
            container("containerd", ID_WEB, Some(UID_WEB), Qos::Burstable),
            true,
            counters(4.5, 120, 30),
            [3.0, 250.5],
            [Some(0.1), Some(2.5)],
        ),
        workload(
            container("containerd", ID_UNKNOWN, Some(UID_GONE), Qos::BestEffort),
            false,
            counters(1.25, 40, 2),
            [1.0, 80.0],
            [None, None],
        ),
        workload(
            container("docker", ID_SIDECAR, None, Qos::Guaranteed),
            true,
            counters(0.75, 9, 1),
            [0.5, 20.25],
            [Some(0.05), Some(0.5)],
        ),
        workload(
            cgroup(CGROUPS[0]),
            true,
            counters(0.25, 0, 0),
            [0.0, 1.5],
            [Some(0.0), Some(0.1)],
        ),
        workload(
            cgroup(CGROUPS[1]),
            false,
            counters(0.05, 3, 0),
            [0.0, 0.25],
            [None, None],
        ),
        workload(
            cgroup(CGROUPS[2]),
            true,
            counters(20.0, 5000, 700),
            [5.0, 400.0],
            [Some(0.2), Some(1.5)],
        ),
        workload(
            cgroup(CGROUPS[3]),
            true,
            counters(2.0, 60, 6),
            [0.5, 36.0],
            [Some(0.01), Some(0.25)],
        ),
        workload(
            vm(),
            true,
            counters(8.0, 900, 80),
            [1.5, 120.0],
            [Some(0.05), Some(1.25)],
        ),
    ]
}

/// A libvirt guest.
fn vm() -> Workload {
    Workload::Vm(Vm {
        hypervisor: "kvm",
        id: "web-vm".into(),
        name: "web-vm".into(),
    })
}

fn process(
    pid: Option<u32>,
    names: Option<(&str, &str)>,
    workload: Option<Workload>,
    cpu_s: f64,
    joules: [f64; 2],
    watts: [Option<f64>; 2],
) -> ProcessTotals {
    ProcessTotals {
        pid,
        names: names.map(|(comm, exe)| {
            Arc::new(ProcessNames {
                comm: comm.into(),
                exe: exe.into(),
            })
        }),
        workload,
        running: pid != Some(4242),
        cpu_ns: (cpu_s * 1e9) as u64,
        joules: joules.to_vec(),
        watts: watts.to_vec(),
    }
}

/// The shown processes, then `(other)`.
fn processes() -> Vec<ProcessTotals> {
    let web = container("containerd", ID_WEB, Some(UID_WEB), Qos::Burstable);
    vec![
        process(
            Some(1234),
            Some(("nginx", "/usr/sbin/nginx")),
            Some(web),
            4.0,
            [2.5, 200.0],
            [Some(0.1), Some(2.0)],
        ),
        process(
            Some(777),
            Some(("qemu-system-x86", "/usr/bin/qemu-system-x86_64")),
            Some(vm()),
            8.0,
            [1.5, 120.0],
            [Some(0.05), Some(1.25)],
        ),
        process(
            Some(42),
            Some(("sshd", "/usr/sbin/sshd")),
            Some(Workload::Cgroup(CGROUPS[2].into())),
            1.5,
            [0.25, 30.0],
            [Some(0.01), Some(0.5)],
        ),
        // Exited before its names were read.
        process(
            Some(4242),
            None,
            Some(Workload::Cgroup(CGROUPS[2].into())),
            0.5,
            [0.0, 2.0],
            [Some(0.0), Some(0.1)],
        ),
        process(
            None,
            None,
            None,
            23.0,
            [8.0, 554.5],
            [Some(0.25), Some(1.5)],
        ),
    ]
}

fn node_zone(zone: &str, joules: [f64; 3], watts: [f64; 2], method: IdleMethod) -> NodeZone {
    NodeZone {
        zone: zone.into(),
        active_joules: joules[0],
        idle_joules: joules[1],
        kept_joules: joules[2],
        active_watts: Some(watts[0]),
        idle_watts: Some(watts[1]),
        idle_estimate: Some((watts[1], method)),
        emissions: {
            let g = carbon::grams_per_joule(GRAMS_PER_KWH, PUE);
            vec![
                NodeGrams {
                    source: carbon::SourceKind::Api,
                    active: joules[0] * g,
                    idle: joules[1] * g,
                    kept: joules[2] * g,
                },
                NodeGrams {
                    source: carbon::SourceKind::Default,
                    active: 1.5,
                    idle: 2.5,
                    kept: 2.5,
                },
            ]
        },
    }
}

fn carbon() -> AttributedCarbon {
    AttributedCarbon {
        in_force: IntervalCarbon {
            reading: Reading {
                grams_per_kwh: GRAMS_PER_KWH,
                source: carbon::SourceKind::Api,
                zone: Some("DE".into()),
                is_estimated: Some(true),
                fetched_at: Instant::now(),
                datetime: Some("2026-11-22T14:00:00.000Z".into()),
            },
            pue: PUE,
            embodied_grams_per_second: Some(0.0079),
        },
        embodied_active: 0.25,
        embodied_idle: 0.5,
        expired: emissions([0.5, 30.0]),
    }
}

/// The intensity sources' failures of the fixture.
pub(crate) fn intensity_errors() -> Vec<ErrorCount> {
    vec![
        ErrorCount {
            source: carbon::SourceKind::Api,
            reason: "timeout",
            count: 3,
        },
        ErrorCount {
            source: carbon::SourceKind::File,
            reason: "not_json",
            count: 1,
        },
    ]
}

fn attribution() -> AttributionSnapshot {
    AttributionSnapshot {
        zones: vec!["dram".into(), "package".into()],
        node: vec![
            node_zone(
                "dram",
                [12.5, 40.0, 40.0],
                [0.5, 2.0],
                IdleMethod::Configured,
            ),
            node_zone(
                "package",
                [900.25, 600.0, 610.5],
                [9.0, 6.0],
                IdleMethod::Model,
            ),
        ],
        workloads: workloads(),
        shared_by_cycles: true,
        agent_cpu_seconds: 1.25,
        agent_joules: vec![0.01, 0.75],
        pods: vec![
            PodTotals {
                uid: UID_WEB.into(),
                running: true,
                joules: vec![3.0, 250.5],
                watts: vec![Some(0.1), Some(2.5)],
                emissions: failed_over(emissions([3.0, 250.5])),
            },
            PodTotals {
                uid: UID_GONE.into(),
                running: false,
                joules: vec![1.0, 80.0],
                watts: vec![None, None],
                emissions: emissions([1.0, 80.0]),
            },
        ],
        expired_joules: vec![0.5, 30.0],
        carbon: Some(carbon()),
        processes: processes(),
        busy_ratio: 0.3,
    }
}

fn power() -> PowerSnapshot {
    let zone = |zone: &str, joules, watts| ZoneSample {
        zone: zone.into(),
        joules,
        watts: Some(watts),
        path: Some(format!("/sys/class/powercap/{zone}")),
    };
    PowerSnapshot {
        source: SourceKind::Model,
        estimated: true,
        model_family: Some("average".into()),
        at_unix: 1_700_000_000.5,
        at: Duration::from_secs(100),
        zones: vec![
            zone("dram", 52.5, 2.5),
            zone("package", 1500.25, 15.0),
            ZoneSample {
                path: None,
                ..zone("platform", 10_812.5, 112.5)
            },
        ],
        dropped: [
            (("dram".to_owned(), DropReason::Backwards), 1),
            (("package".to_owned(), DropReason::AboveCeiling), 2),
        ]
        .into_iter()
        .collect(),
        errors: 1,
    }
}

fn kernel() -> CountersSnapshot {
    let cpu = |busy_s: u64, idle_s: u64| CpuTime {
        busy_ns: busy_s * 1_000_000_000,
        idle_ns: idle_s * 1_000_000_000,
    };
    CountersSnapshot {
        at: Duration::from_secs(100),
        // The exporters read the attribution's workloads, not the kernel's cgroups.
        cgroups: Default::default(),
        cpus: vec![cpu(20, 80), cpu(10, 90)],
        cpus_at: Duration::from_secs(100),
        overflow: counters(0.25, 0, 0),
        map_entries: 9,
        map_capacity: 4096,
        pmu: PmuCounters::Hardware,
        map_deletions: 3,
        processes: ProcessesRead {
            samples: Default::default(),
            overflow_ns: 125_000_000,
            map_entries: 57,
            map_capacity: 8192,
            map_deletions: 812,
        },
        cpu_info: [0, 1]
            .map(|i| CpuInfo {
                processor: i.to_string(),
                vendor_id: "GenuineIntel".into(),
                model_name: "Intel(R) Xeon(R) CPU @ 2.20GHz".into(),
                physical_id: "0".into(),
                core_id: i.to_string(),
            })
            .into(),
    }
}

fn metadata() -> MetaView {
    let pods = HashMap::from([(
        UID_WEB.to_owned(),
        PodMeta {
            name: "web-7d9f".into(),
            namespace: "shop".into(),
        },
    )]);
    let container = |name: &str| ContainerMeta {
        name: name.into(),
        pod_uid: UID_WEB.into(),
    };
    let containers = HashMap::from([
        (ID_WEB.to_owned(), container("nginx")),
        (ID_SIDECAR.to_owned(), container("istio-proxy")),
    ]);
    MetaView {
        index: Arc::new(MetaIndex { pods, containers }),
        age: Some(Duration::ZERO),
        errors: 2,
    }
}

/// The fixed snapshot.
pub(crate) fn snapshot() -> Snapshot {
    Snapshot::new(
        kernel(),
        Some(power()),
        attribution(),
        IdlePolicy::Node,
        Some(metadata()),
        Duration::from_millis(4),
        1,
    )
    .with_intensity_errors(intensity_errors())
    .with_platform(Some(platform()))
    .with_missed_ticks(2)
}

/// A BMC read through a PowerControl entry (its zone is in [`power`] only).
fn platform() -> PlatformRow {
    PlatformRow {
        meter: PlatformMeter {
            kind: PlatformKind::Redfish,
            labels: Some(PlatformLabels {
                bmc_id: "bmc-1.example:443".into(),
                chassis_id: "1U".into(),
                power_control_id: "0".into(),
                power_control_name: "Server \"Power\" Control".into(),
                resource: "the system's consumed power".into(),
            }),
            stale: false,
        },
        totals: PlatformTotals {
            rest_idle_joules: 8000.0,
            rest_active_joules: 1250.5,
            cpu_excess_joules: 3.25,
            unmeasured_intervals: 2,
        },
    }
}
