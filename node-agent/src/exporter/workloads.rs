//! Workloads: containers, pods (the sums of their containers), non-container cgroups, and the
//! energy of those whose series expired.

use std::fmt;

use node_agent_common::CgroupCounters;
use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Label, NS_PER_S, counter_family, flag, gauge_family};
use crate::{
    kernel::PmuCounters,
    snapshot::{ContainerRow, PodRow, Snapshot},
};

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let est = flag(s.estimated());
    let pmu = s.counters.pmu != PmuCounters::None;
    containers(enc, s, est)?;
    if pmu {
        container_pmu(enc, s)?;
    }
    pods(enc, s, est)?;
    cgroups(enc, s, est)?;
    if pmu {
        cgroup_pmu(enc, s)?;
    }
    expired(enc, s, est)
}

/// The `kind` label's values and the counts.
fn switches(c: &CgroupCounters) -> [(&'static str, u64); 2] {
    [
        ("voluntary", c.switches_voluntary),
        ("involuntary", c.switches_involuntary),
    ]
}

/// Per zone: the zone's labels and the value, skipping zones without one.
pub(super) fn per_zone<'a, T: Copy>(
    s: &'a Snapshot,
    est: &'static str,
    values: &'a [T],
) -> impl Iterator<Item = ([Label<'a>; 2], T)> + 'a {
    s.attribution
        .zones
        .iter()
        .zip(values)
        .map(move |(z, v)| ([("zone", z.as_str()), ("estimated", est)], *v))
}

pub(super) fn container_labels(c: &ContainerRow) -> [Label<'_>; 4] {
    [
        ("container_id", &c.id),
        ("container", &c.name),
        ("pod", &c.pod),
        ("namespace", &c.namespace),
    ]
}

pub(super) fn pod_labels(p: &PodRow) -> [Label<'_>; 3] {
    [
        ("pod", &p.name),
        ("namespace", &p.namespace),
        ("pod_uid", &p.uid),
    ]
}

fn containers(enc: &mut DescriptorEncoder, s: &Snapshot, est: &'static str) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_container_energy_joules",
        "Energy attributed to each container since the agent started, per zone: its share of active energy by CPU time (or cycles), plus idle energy under the proportional and even idle policies. Zones overlap: never sum zones. container, pod and namespace are empty until pod metadata is known.",
        s.containers.iter().flat_map(|c| {
            per_zone(s, est, &c.usage.joules).map(|([z, e], j)| {
                let [a, b, d, f] = container_labels(c);
                ([z, e, a, b, d, f], j)
            })
        }),
    )?;
    gauge_family(
        enc,
        "wattlet_container_power_watts",
        "Average power attributed to each container over the last interval, per zone.",
        s.containers.iter().flat_map(|c| {
            per_zone(s, est, &c.usage.watts).filter_map(|([z, e], w)| {
                let [a, b, d, f] = container_labels(c);
                Some(([z, e, a, b, d, f], w?))
            })
        }),
    )?;
    counter_family(
        enc,
        "wattlet_container_cpu_seconds",
        "On-CPU time of each container's tasks, counted in the kernel.",
        s.containers.iter().map(|c| {
            (
                container_labels(c),
                c.usage.counters.cpu_ns as f64 / NS_PER_S,
            )
        }),
    )?;
    counter_family(
        enc,
        "wattlet_container_context_switches",
        "Context switches of each container's tasks: voluntary (blocked or slept) or involuntary (preempted).",
        s.containers.iter().flat_map(|c| {
            switches(&c.usage.counters).map(|(kind, n)| {
                let [a, b, d, e] = container_labels(c);
                ([a, b, d, e, ("kind", kind)], n)
            })
        }),
    )
}

fn container_pmu(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_container_cpu_cycles",
        "CPU cycles while each container's tasks ran (PMU).",
        s.containers
            .iter()
            .map(|c| (container_labels(c), c.usage.counters.cycles as f64)),
    )?;
    counter_family(
        enc,
        "wattlet_container_cpu_instructions",
        "Instructions retired while each container's tasks ran (PMU).",
        s.containers
            .iter()
            .map(|c| (container_labels(c), c.usage.counters.instructions as f64)),
    )
}

fn pods(enc: &mut DescriptorEncoder, s: &Snapshot, est: &'static str) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_pod_energy_joules",
        "Energy attributed to each pod (the sum of its containers) since the agent started, per zone. Never sum zones.",
        s.pods.iter().flat_map(|p| {
            per_zone(s, est, &p.joules).map(|([z, e], j)| {
                let [a, b, c] = pod_labels(p);
                ([z, e, a, b, c], j)
            })
        }),
    )?;
    gauge_family(
        enc,
        "wattlet_pod_power_watts",
        "Average power attributed to each pod over the last interval, per zone.",
        s.pods.iter().flat_map(|p| {
            per_zone(s, est, &p.watts).filter_map(|([z, e], w)| {
                let [a, b, c] = pod_labels(p);
                Some(([z, e, a, b, c], w?))
            })
        }),
    )
}

/// Non-container cgroups, at the configured depth.
fn cgroups(enc: &mut DescriptorEncoder, s: &Snapshot, est: &'static str) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_cgroup_energy_joules",
        "Energy attributed to each non-container cgroup (systemd services, user sessions; / is kernel threads and host processes), at --attribution.cgroup-depth, since the agent started, per zone. Never sum zones.",
        s.cgroups.iter().flat_map(|cg| {
            per_zone(s, est, &cg.usage.joules).map(|([z, e], j)| ([z, e, ("cgroup", &*cg.path)], j))
        }),
    )?;
    counter_family(
        enc,
        "wattlet_cgroup_cpu_seconds",
        "On-CPU time of each non-container cgroup's tasks (path under the cgroup v2 root, at --attribution.cgroup-depth), counted in the kernel.",
        s.cgroups.iter().map(|cg| {
            (
                [("cgroup", &*cg.path)],
                cg.usage.counters.cpu_ns as f64 / NS_PER_S,
            )
        }),
    )?;
    counter_family(
        enc,
        "wattlet_cgroup_context_switches",
        "Context switches of each non-container cgroup's tasks: voluntary (blocked or slept) or involuntary (preempted).",
        s.cgroups.iter().flat_map(|cg| {
            switches(&cg.usage.counters)
                .map(|(kind, n)| ([("cgroup", &*cg.path), ("kind", kind)], n))
        }),
    )
}

fn cgroup_pmu(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_cgroup_cpu_cycles",
        "CPU cycles while each non-container cgroup's tasks ran (PMU).",
        s.cgroups
            .iter()
            .map(|cg| ([("cgroup", &*cg.path)], cg.usage.counters.cycles as f64)),
    )?;
    counter_family(
        enc,
        "wattlet_cgroup_cpu_instructions",
        "Instructions retired while each non-container cgroup's tasks ran (PMU).",
        s.cgroups.iter().map(|cg| {
            (
                [("cgroup", &*cg.path)],
                cg.usage.counters.instructions as f64,
            )
        }),
    )
}

/// Keeps the sums whole after series expire.
fn expired(enc: &mut DescriptorEncoder, s: &Snapshot, est: &'static str) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_expired_energy_joules",
        "Energy of workloads whose series expired after --retention.terminated, per zone: with it, containers + cgroups + VMs + expired + the node's idle equal the node's total at all times (default idle policy).",
        s.attribution.zones.iter().enumerate().map(|(i, z)| {
            (
                [("zone", z.as_str()), ("estimated", est)],
                s.attribution.expired_joules.get(i).copied().unwrap_or(0.0),
            )
        }),
    )
}
