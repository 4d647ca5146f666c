//! Processes, bounded: the top `--metrics.processes` processes by energy in the last interval,
//! and `(other)` for everything else, so that there are at most N + 1 series per zone. A series
//! counts what its process did while shown (see `attribution::processes`).

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Label, NS_PER_S, counter_family, flag, gauge_family};
use crate::snapshot::{ProcessRow, Snapshot};

fn labels(p: &ProcessRow) -> [Label<'_>; 6] {
    [
        ("pid", &p.pid),
        ("comm", &p.comm),
        ("exe", &p.exe),
        ("container_id", &p.container_id),
        ("vm_id", &p.vm_id),
        ("cgroup", &p.cgroup),
    ]
}

/// Per zone: the zone's labels, then the process's, and the value.
fn per_zone<'a, T: Copy>(
    s: &'a Snapshot,
    est: &'static str,
    p: &'a ProcessRow,
    values: &'a [T],
) -> impl Iterator<Item = ([Label<'a>; 8], T)> + 'a {
    s.attribution.zones.iter().zip(values).map(move |(z, v)| {
        let [a, b, c, d, e, f] = labels(p);
        (
            [("zone", z.as_str()), ("estimated", est), a, b, c, d, e, f],
            *v,
        )
    })
}

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    if s.processes.is_empty() {
        return Ok(());
    }
    let est = flag(s.estimated());
    counter_family(
        enc,
        "wattlet_process_energy_joules",
        "Energy of the processes that used the most in the last interval (--metrics.processes), each its share of its workload's energy by CPU time, counted while it is shown; comm=\"(other)\" is every other process and CPU time no process accounts for. The series add up to the workloads'. Never sum zones.",
        s.processes
            .iter()
            .flat_map(|p| per_zone(s, est, p, &p.joules)),
    )?;
    gauge_family(
        enc,
        "wattlet_process_power_watts",
        "Average power of each shown process (and of (other)) over the last interval, per zone.",
        s.processes
            .iter()
            .flat_map(|p| per_zone(s, est, p, &p.watts).filter_map(|(l, w)| Some((l, w?)))),
    )?;
    counter_family(
        enc,
        "wattlet_process_cpu_seconds",
        "On-CPU time of each shown process, counted in the kernel while it is shown; (other): the rest of the workloads' CPU time.",
        s.processes
            .iter()
            .map(|p| (labels(p), p.cpu_ns as f64 / NS_PER_S)),
    )
}
