//! Virtual machines: QEMU/KVM guests of libvirt or Proxmox, known from their cgroups.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Label, NS_PER_S, counter_family, flag, gauge_family};
use crate::snapshot::{Snapshot, VmRow};

fn labels(v: &VmRow) -> [Label<'_>; 3] {
    [
        ("vm_name", &v.name),
        ("vm_id", &v.id),
        ("hypervisor", v.hypervisor),
    ]
}

fn per_zone<'a, T: Copy>(
    s: &'a Snapshot,
    est: &'static str,
    v: &'a VmRow,
    values: &'a [T],
) -> impl Iterator<Item = ([Label<'a>; 5], T)> + 'a {
    s.attribution.zones.iter().zip(values).map(move |(z, x)| {
        let [a, b, c] = labels(v);
        ([("zone", z.as_str()), ("estimated", est), a, b, c], *x)
    })
}

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    if s.vms.is_empty() {
        return Ok(());
    }
    let est = flag(s.estimated());
    counter_family(
        enc,
        "wattlet_vm_energy_joules",
        "Energy attributed to each virtual machine (its cgroup: vCPUs, emulator, I/O threads) since the agent started, per zone. Never sum zones.",
        s.vms
            .iter()
            .flat_map(|v| per_zone(s, est, v, &v.usage.joules)),
    )?;
    gauge_family(
        enc,
        "wattlet_vm_power_watts",
        "Average power attributed to each virtual machine over the last interval, per zone.",
        s.vms
            .iter()
            .flat_map(|v| per_zone(s, est, v, &v.usage.watts).filter_map(|(l, w)| Some((l, w?)))),
    )?;
    counter_family(
        enc,
        "wattlet_vm_cpu_seconds",
        "On-CPU time of each virtual machine's tasks, counted in the kernel.",
        s.vms
            .iter()
            .map(|v| (labels(v), v.usage.counters.cpu_ns as f64 / NS_PER_S)),
    )
}
