//! The node's CPUs: one info series per logical CPU (from `--path.procfs`/cpuinfo) and how busy
//! they were in the last interval.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Label, gauge, info_family};
use crate::{kernel::CpuInfo, snapshot::Snapshot};

/// A CPU's labels, as Kepler names them.
pub(super) fn labels(c: &CpuInfo) -> [Label<'_>; 5] {
    [
        ("processor", &c.processor),
        ("vendor_id", &c.vendor_id),
        ("model_name", &c.model_name),
        ("physical_id", &c.physical_id),
        ("core_id", &c.core_id),
    ]
}

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    info_family(
        enc,
        "wattlet_node_cpu",
        "One series per logical CPU, as /proc/cpuinfo describes it (read when the agent started).",
        s.counters.cpu_info.iter().map(labels),
    )?;
    gauge(
        enc,
        "wattlet_node_cpu_usage_ratio",
        "Busy CPU time over all CPU time of all CPUs in the last interval (0 to 1), counted in the kernel.",
        s.attribution.busy_ratio,
    )
}
