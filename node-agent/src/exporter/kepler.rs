//! `--metrics-compat kepler`: Kepler's current (v0.10+) metric names and labels, emitted from
//! the same snapshot as Wattlet's own, so that existing Kepler dashboards work unchanged:
//! node zones (with the powercap `path`), CPU info and usage, build info, processes (the same
//! bounded series as Wattlet's), containers, pods and VMs. Kepler puts the node in `node_name`
//! (not on `kepler_node_cpu_info` and `kepler_build_info`, as in Kepler); Wattlet's `node` label
//! stays as well. With a BMC (`--power.redfish.url`), `kepler_platform_watts` as Kepler's
//! Redfish collector labels it. Kepler's GPU series are not emitted.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::{
    cpuinfo,
    families::{Label, NS_PER_S, counter_family, gauge_family},
};
use crate::{
    attribution::NodeZone,
    power::zone,
    snapshot::{ContainerRow, PodRow, ProcessRow, Snapshot, VmRow},
};

fn container_labels<'a>(c: &'a ContainerRow, zone: &'a str, node: &'a str) -> [Label<'a>; 7] {
    [
        ("container_id", &c.id),
        ("container_name", &c.name),
        ("runtime", c.runtime),
        ("state", state(c.usage.running)),
        ("zone", zone),
        ("pod_id", &c.pod_uid),
        ("node_name", node),
    ]
}

fn pod_labels<'a>(p: &'a PodRow, zone: &'a str, node: &'a str) -> [Label<'a>; 6] {
    [
        ("pod_id", &p.uid),
        ("pod_name", &p.name),
        ("pod_namespace", &p.namespace),
        ("state", state(p.running)),
        ("zone", zone),
        ("node_name", node),
    ]
}

fn process_labels<'a>(p: &'a ProcessRow, zone: &'a str, node: &'a str) -> [Label<'a>; 9] {
    [
        ("pid", &p.pid),
        ("comm", &p.comm),
        ("exe", &p.exe),
        ("type", p.kind),
        ("state", state(p.running)),
        ("container_id", &p.container_id),
        ("vm_id", &p.vm_id),
        ("zone", zone),
        ("node_name", node),
    ]
}

fn vm_labels<'a>(v: &'a VmRow, zone: &'a str, node: &'a str) -> [Label<'a>; 6] {
    [
        ("vm_id", &v.id),
        ("vm_name", &v.name),
        ("hypervisor", v.hypervisor),
        ("state", state(v.usage.running)),
        ("zone", zone),
        ("node_name", node),
    ]
}

fn state(running: bool) -> &'static str {
    if running { "running" } else { "terminated" }
}

/// `node` is the node's name as given (escaped with every other label value).
pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    nodes(enc, s, node)?;
    platform(enc, s, node)?;
    node_info(enc, s, node)?;
    processes(enc, s, node)?;
    containers(enc, s, node)?;
    pods(enc, s, node)?;
    vms(enc, s, node)
}

/// A zone's `path`: the powercap zone's sysfs directory (`aggregated-<zone>` when summed over
/// sockets), empty for other sources.
fn zone_path<'a>(s: &'a Snapshot, zone: &str) -> &'a str {
    (s.power.iter())
        .flat_map(|p| &p.zones)
        .find(|z| z.zone == zone)
        .and_then(|z| z.path.as_deref())
        .unwrap_or("")
}

/// Total, active and idle, as counters and gauges.
fn nodes(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    let a = &s.attribution;
    let node_series = |pick: fn(&NodeZone) -> Option<f64>| {
        a.zones.iter().zip(&a.node).filter_map(move |(z, n)| {
            Some((
                [
                    ("zone", z.as_str()),
                    ("path", zone_path(s, z)),
                    ("node_name", node),
                ],
                pick(n)?,
            ))
        })
    };
    counter_family(
        enc,
        "kepler_node_cpu_joules",
        "Kepler-compatible: energy of the node per zone (active + idle). Never sum zones.",
        node_series(|n| Some(n.active_joules + n.idle_joules)),
    )?;
    counter_family(
        enc,
        "kepler_node_cpu_active_joules",
        "Kepler-compatible: active energy of the node per zone.",
        node_series(|n| Some(n.active_joules)),
    )?;
    counter_family(
        enc,
        "kepler_node_cpu_idle_joules",
        "Kepler-compatible: idle energy of the node per zone.",
        node_series(|n| Some(n.idle_joules)),
    )?;
    gauge_family(
        enc,
        "kepler_node_cpu_watts",
        "Kepler-compatible: power of the node per zone (active + idle).",
        node_series(|n| Some(n.active_watts? + n.idle_watts?)),
    )?;
    gauge_family(
        enc,
        "kepler_node_cpu_active_watts",
        "Kepler-compatible: active power of the node per zone.",
        node_series(|n| n.active_watts),
    )?;
    gauge_family(
        enc,
        "kepler_node_cpu_idle_watts",
        "Kepler-compatible: idle power of the node per zone.",
        node_series(|n| n.idle_watts),
    )
}

/// The BMC's figure, labelled as Kepler's Redfish collector labels it (the PowerControl labels
/// empty when the figure is the power supplies' input power): the `platform` zone's power
/// since the previous reading. Absent until the BMC has answered, and while it is stale.
fn platform(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    let Some(p) = &s.platform else {
        return Ok(());
    };
    let watts = (s.power.iter())
        .flat_map(|p| &p.zones)
        .find(|z| z.zone == zone::PLATFORM)
        .and_then(|z| z.watts)
        .filter(|_| !p.meter.stale);
    let series = p.meter.labels.as_ref().zip(watts).map(|(l, w)| {
        (
            [
                ("source", p.meter.kind.as_str()),
                ("node_name", node),
                ("bmc_id", l.bmc_id.as_str()),
                ("chassis_id", l.chassis_id.as_str()),
                ("power_control_id", l.power_control_id.as_str()),
                ("power_control_name", l.power_control_name.as_str()),
            ],
            w,
        )
    });
    gauge_family(
        enc,
        "kepler_platform_watts",
        "Kepler-compatible: power of the whole platform from the BMC (Redfish), over the last interval.",
        series,
    )
}

/// CPU information (one series per logical CPU, no `node_name`, as in Kepler), the usage
/// ratio, and build information.
fn node_info(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    gauge_family(
        enc,
        "kepler_node_cpu_info",
        "Kepler-compatible: CPU information from procfs, one series per logical CPU.",
        s.counters
            .cpu_info
            .iter()
            .map(|c| (cpuinfo::labels(c), 1.0)),
    )?;
    gauge_family(
        enc,
        "kepler_node_cpu_usage_ratio",
        "Kepler-compatible: CPU usage ratio of the node over the last interval (0 to 1).",
        [([("node_name", node)], s.attribution.busy_ratio)],
    )?;
    gauge_family(
        enc,
        "kepler_build_info",
        "Kepler-compatible: a constant 1 labelled with Wattlet's version (goversion: Wattlet is not written in Go).",
        [(
            [
                ("arch", std::env::consts::ARCH),
                ("branch", option_env!("WATTLET_GIT_BRANCH").unwrap_or("")),
                (
                    "revision",
                    option_env!("WATTLET_GIT_REVISION").unwrap_or(""),
                ),
                ("version", env!("CARGO_PKG_VERSION")),
                ("goversion", ""),
            ],
            1.0,
        )],
    )
}

/// The same bounded series as Wattlet's own (the top processes and `(other)`).
fn processes(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    if s.processes.is_empty() {
        return Ok(());
    }
    let zones = &s.attribution.zones;
    counter_family(
        enc,
        "kepler_process_cpu_joules",
        "Kepler-compatible: energy of the top processes (and (other)) per zone, counted while shown.",
        s.processes.iter().flat_map(|p| {
            zones
                .iter()
                .zip(&p.joules)
                .map(move |(z, j)| (process_labels(p, z, node), *j))
        }),
    )?;
    gauge_family(
        enc,
        "kepler_process_cpu_watts",
        "Kepler-compatible: power of the top processes (and (other)) per zone.",
        s.processes.iter().flat_map(|p| {
            zones
                .iter()
                .zip(&p.watts)
                .filter_map(move |(z, w)| Some((process_labels(p, z, node), (*w)?)))
        }),
    )?;
    counter_family(
        enc,
        "kepler_process_cpu_seconds",
        "Kepler-compatible: CPU time of the top processes (and (other)), counted while shown.",
        s.processes.iter().map(|p| {
            let [pid, comm, exe, kind, _, container, vm, _, node] = process_labels(p, "", node);
            (
                [pid, comm, exe, kind, container, vm, node],
                p.cpu_ns as f64 / NS_PER_S,
            )
        }),
    )
}

fn containers(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    let zones = &s.attribution.zones;
    counter_family(
        enc,
        "kepler_container_cpu_joules",
        "Kepler-compatible: energy attributed to each container per zone.",
        s.containers.iter().flat_map(|c| {
            zones
                .iter()
                .zip(&c.usage.joules)
                .map(move |(z, j)| (container_labels(c, z, node), *j))
        }),
    )?;
    gauge_family(
        enc,
        "kepler_container_cpu_watts",
        "Kepler-compatible: power attributed to each container per zone.",
        s.containers.iter().flat_map(|c| {
            zones
                .iter()
                .zip(&c.usage.watts)
                .filter_map(move |(z, w)| Some((container_labels(c, z, node), (*w)?)))
        }),
    )
}

fn pods(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    let zones = &s.attribution.zones;
    counter_family(
        enc,
        "kepler_pod_cpu_joules",
        "Kepler-compatible: energy attributed to each pod per zone.",
        s.pods.iter().flat_map(|p| {
            zones
                .iter()
                .zip(&p.joules)
                .map(move |(z, j)| (pod_labels(p, z, node), *j))
        }),
    )?;
    gauge_family(
        enc,
        "kepler_pod_cpu_watts",
        "Kepler-compatible: power attributed to each pod per zone.",
        s.pods.iter().flat_map(|p| {
            zones
                .iter()
                .zip(&p.watts)
                .filter_map(move |(z, w)| Some((pod_labels(p, z, node), (*w)?)))
        }),
    )
}

fn vms(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    if s.vms.is_empty() {
        return Ok(());
    }
    let zones = &s.attribution.zones;
    counter_family(
        enc,
        "kepler_vm_cpu_joules",
        "Kepler-compatible: energy attributed to each virtual machine per zone.",
        s.vms.iter().flat_map(|v| {
            zones
                .iter()
                .zip(&v.usage.joules)
                .map(move |(z, j)| (vm_labels(v, z, node), *j))
        }),
    )?;
    gauge_family(
        enc,
        "kepler_vm_cpu_watts",
        "Kepler-compatible: power attributed to each virtual machine per zone.",
        s.vms.iter().flat_map(|v| {
            zones
                .iter()
                .zip(&v.usage.watts)
                .filter_map(move |(z, w)| Some((vm_labels(v, z, node), (*w)?)))
        }),
    )
}
