//! The agent about itself: the pod-metadata watch, its own CPU time and energy, how it
//! attributes, the in-kernel map, and how its last interval went.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::families::{NS_PER_S, counter_family, flag, gauge, gauge_family, info};
use crate::{
    attribution::IdlePolicy,
    kernel::{CountersSnapshot, PmuCounters},
    kubernetes::MetaView,
    snapshot::Snapshot,
};

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    if let Some(m) = &s.metadata {
        kubernetes(enc, m)?;
    }
    itself(enc, s)?;
    kernel_map(enc, &s.counters)?;
    interval(enc, s)
}

fn kubernetes(enc: &mut DescriptorEncoder, m: &MetaView) -> fmt::Result {
    if let Some(age) = m.age {
        gauge(
            enc,
            "wattlet_kubernetes_metadata_age_seconds",
            "How stale the pod metadata is: 0 while the watch of this node's pods is healthy; while the API server is unreachable, the time since it last confirmed the metadata (the last known names stay in use).",
            age.as_secs_f64(),
        )?;
    }
    gauge(
        enc,
        "wattlet_kubernetes_pods",
        "Pods of this node known from the API server (and recently deleted ones, kept for the retention).",
        m.index.pods.len() as f64,
    )?;
    counter_family(
        enc,
        "wattlet_kubernetes_watch_errors",
        "Failed lists or watches of this node's pods (retried with backoff).",
        [([("resource", "pods")], m.errors as f64)],
    )
}

/// Its own CPU time and energy, and how it shares energy out.
fn itself(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let a = &s.attribution;
    let est = flag(s.estimated());
    counter_family(
        enc,
        "wattlet_agent_cpu_seconds",
        "CPU time the agent itself used (user + system).",
        [([("process", "wattlet")], a.agent_cpu_seconds)],
    )?;
    counter_family(
        enc,
        "wattlet_agent_energy_joules",
        "Active energy attributed to the agent itself, by its CPU time, per zone.",
        a.zones.iter().enumerate().map(|(i, z)| {
            (
                [("zone", z.as_str()), ("estimated", est)],
                a.agent_joules.get(i).copied().unwrap_or(0.0),
            )
        }),
    )?;
    info(
        enc,
        "wattlet_attribution",
        "How energy is attributed: where idle energy goes (--attribution.idle-policy) and what active energy was shared by in the last interval.",
        &[
            ("idle_policy", idle_policy_name(s.idle_policy)),
            (
                "shared_by",
                if a.shared_by_cycles {
                    "cycles"
                } else {
                    "cpu_time"
                },
            ),
        ],
    )
}

pub(super) fn idle_policy_name(p: IdlePolicy) -> &'static str {
    match p {
        IdlePolicy::Node => "node",
        IdlePolicy::Proportional => "proportional",
        IdlePolicy::Even => "even",
    }
}

fn kernel_map(enc: &mut DescriptorEncoder, c: &CountersSnapshot) -> fmt::Result {
    // The process map exists with --metrics.processes above 0.
    let p = &c.processes;
    let processes = (p.map_capacity > 0).then_some(p);
    counter_family(
        enc,
        "wattlet_bpf_overflow_cpu_seconds",
        "CPU time that could not be charged to a cgroup (a process) because the in-kernel cgroup (process) map was full (raise --bpf.max-cgroups, --bpf.max-processes).",
        std::iter::once(([("map", "cgroups")], c.overflow.cpu_ns as f64 / NS_PER_S))
            .chain(processes.map(|p| ([("map", "processes")], p.overflow_ns as f64 / NS_PER_S))),
    )?;
    gauge_family(
        enc,
        "wattlet_bpf_map_entries",
        "Live entries in the in-kernel maps: cgroups, and processes per cgroup.",
        std::iter::once(([("map", "cgroups")], c.map_entries as f64))
            .chain(processes.map(|p| ([("map", "processes")], p.map_entries as f64))),
    )?;
    gauge_family(
        enc,
        "wattlet_bpf_map_capacity",
        "Capacity of the in-kernel maps (--bpf.max-cgroups, --bpf.max-processes).",
        std::iter::once(([("map", "cgroups")], f64::from(c.map_capacity)))
            .chain(processes.map(|p| ([("map", "processes")], f64::from(p.map_capacity)))),
    )?;
    counter_family(
        enc,
        "wattlet_bpf_map_deletions",
        "Entries of removed cgroups (exited processes) read one last time and deleted from the map.",
        std::iter::once(([("map", "cgroups")], c.map_deletions as f64))
            .chain(processes.map(|p| ([("map", "processes")], p.map_deletions as f64))),
    )
}

/// How the last interval went: its work, the reads that failed, the counters it had.
fn interval(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    gauge(
        enc,
        "wattlet_interval_work_seconds",
        "Time the last interval's work took: reading the kernel counters and the power source, and attributing.",
        s.work.as_secs_f64(),
    )?;
    counter_family(
        enc,
        "wattlet_interval_missed_ticks",
        "Interval ticks that came while the previous interval's work was still running (the next interval then starts at once and the schedule shifts): 0 while measuring keeps time. Raise --interval if it grows.",
        [([] as [(&str, &str); 0], s.missed_ticks as f64)],
    )?;
    let power_errors = s.power.as_ref().map(|w| (w.source.as_str(), w.errors));
    counter_family(
        enc,
        "wattlet_read_errors",
        "Reads that failed, by source: the kernel counters, or the power source's files and counters (see the agent's log).",
        std::iter::once(([("source", "kernel")], s.read_errors as f64))
            .chain(power_errors.map(|(source, n)| ([("source", source)], n as f64))),
    )?;
    let pmu = match s.counters.pmu {
        PmuCounters::None => "none",
        PmuCounters::Hardware => "hardware",
        PmuCounters::SoftwareStandIn => "software_stand_in",
    };
    info(
        enc,
        "wattlet_pmu",
        "Which PMU counters feed cycles and instructions (none: CPU time only).",
        &[("counters", pmu)],
    )
}
