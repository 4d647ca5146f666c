//! `--metrics-compat kepler`: Kepler's current (v0.10+) metric names and labels, emitted from
//! the same snapshot as Wattlet's own, so that existing Kepler dashboards work unchanged.
//! Kepler puts the node in `node_name`; Wattlet's `node` label stays as well.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::{ContainerRow, PodRow, Rows, counter_family, gauge_family};
use crate::attribution::AttributionSnapshot;

fn container_labels<'a>(
    c: &'a ContainerRow,
    zone: &'a str,
    node: &'a str,
) -> [(&'static str, &'a str); 7] {
    [
        ("container_id", c.id.as_str()),
        ("container_name", c.name.as_str()),
        ("runtime", c.runtime),
        ("state", state(c.row.running)),
        ("zone", zone),
        ("pod_id", c.pod_uid.as_str()),
        ("node_name", node),
    ]
}

fn pod_labels<'a>(p: &'a PodRow, zone: &'a str, node: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("pod_id", p.uid.as_str()),
        ("pod_name", p.name.as_str()),
        ("pod_namespace", p.namespace.as_str()),
        ("state", state(p.running)),
        ("zone", zone),
        ("node_name", node),
    ]
}

fn state(running: bool) -> &'static str {
    if running { "running" } else { "terminated" }
}

pub(super) fn encode(
    enc: &mut DescriptorEncoder,
    a: &AttributionSnapshot,
    r: &Rows,
    node: &str,
) -> Result<(), fmt::Error> {
    // Node: total, active and idle, as counters and gauges; `path` is the sysfs path Kepler
    // reads, which has no single value here.
    let node_series = |pick: fn(&crate::attribution::NodeZone) -> f64| {
        r.zones.iter().zip(&a.node).map(move |(z, n)| {
            (
                [("zone", z.as_str()), ("path", ""), ("node_name", node)],
                pick(n),
            )
        })
    };
    counter_family(
        enc,
        "kepler_node_cpu_joules",
        "Kepler-compatible: energy of the node per zone (active + idle). Never sum zones.",
        node_series(|n| n.active_joules + n.idle_joules),
    )?;
    counter_family(
        enc,
        "kepler_node_cpu_active_joules",
        "Kepler-compatible: active energy of the node per zone.",
        node_series(|n| n.active_joules),
    )?;
    counter_family(
        enc,
        "kepler_node_cpu_idle_joules",
        "Kepler-compatible: idle energy of the node per zone.",
        node_series(|n| n.idle_joules),
    )?;
    let node_watts = |pick: fn(&crate::attribution::NodeZone) -> Option<f64>| {
        r.zones.iter().zip(&a.node).filter_map(move |(z, n)| {
            pick(n).map(|w| ([("zone", z.as_str()), ("path", ""), ("node_name", node)], w))
        })
    };
    gauge_family(
        enc,
        "kepler_node_cpu_watts",
        "Kepler-compatible: power of the node per zone (active + idle).",
        node_watts(|n| Some(n.active_watts? + n.idle_watts?)),
    )?;
    gauge_family(
        enc,
        "kepler_node_cpu_active_watts",
        "Kepler-compatible: active power of the node per zone.",
        node_watts(|n| n.active_watts),
    )?;
    gauge_family(
        enc,
        "kepler_node_cpu_idle_watts",
        "Kepler-compatible: idle power of the node per zone.",
        node_watts(|n| n.idle_watts),
    )?;

    counter_family(
        enc,
        "kepler_container_cpu_joules",
        "Kepler-compatible: energy attributed to each container per zone.",
        r.containers.iter().flat_map(|c| {
            r.zones
                .iter()
                .enumerate()
                .map(move |(i, z)| (container_labels(c, z, node), c.row.joules[i]))
        }),
    )?;
    gauge_family(
        enc,
        "kepler_container_cpu_watts",
        "Kepler-compatible: power attributed to each container per zone.",
        r.containers.iter().flat_map(|c| {
            r.zones
                .iter()
                .enumerate()
                .filter_map(move |(i, z)| c.row.watts[i].map(|w| (container_labels(c, z, node), w)))
        }),
    )?;
    let pod_labels = |p, z| pod_labels(p, z, node);
    counter_family(
        enc,
        "kepler_pod_cpu_joules",
        "Kepler-compatible: energy attributed to each pod per zone.",
        r.pods.iter().flat_map(|p| {
            r.zones
                .iter()
                .enumerate()
                .map(move |(i, z)| (pod_labels(p, z), p.joules[i]))
        }),
    )?;
    gauge_family(
        enc,
        "kepler_pod_cpu_watts",
        "Kepler-compatible: power attributed to each pod per zone.",
        r.pods.iter().flat_map(|p| {
            r.zones
                .iter()
                .enumerate()
                .filter_map(move |(i, z)| p.watts[i].map(|w| (pod_labels(p, z), w)))
        }),
    )
}
