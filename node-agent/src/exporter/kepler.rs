//! `--metrics-compat kepler`: Kepler's current (v0.10+) metric names and labels, emitted from
//! the same snapshot as Wattlet's own, so that existing Kepler dashboards work unchanged.
//! Kepler puts the node in `node_name`; Wattlet's `node` label stays as well.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Label, counter_family, gauge_family};
use crate::{
    attribution::NodeZone,
    snapshot::{ContainerRow, PodRow, Snapshot},
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

fn state(running: bool) -> &'static str {
    if running { "running" } else { "terminated" }
}

/// `node` is the node's name as given (escaped with every other label value).
pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    nodes(enc, s, node)?;
    containers(enc, s, node)?;
    pods(enc, s, node)
}

/// Total, active and idle, as counters and gauges; `path` is the sysfs path Kepler reads,
/// which has no single value here.
fn nodes(enc: &mut DescriptorEncoder, s: &Snapshot, node: &str) -> fmt::Result {
    let a = &s.attribution;
    let node_series = |pick: fn(&NodeZone) -> Option<f64>| {
        a.zones.iter().zip(&a.node).filter_map(move |(z, n)| {
            Some((
                [("zone", z.as_str()), ("path", ""), ("node_name", node)],
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
