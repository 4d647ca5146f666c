//! The node: CPU time, energy and power per zone (idle and active), the idle power in use, and
//! where the energy comes from.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::families::{NS_PER_S, counter_family, flag, gauge, gauge_family, info};
use crate::{
    attribution::AttributionSnapshot,
    kernel::CountersSnapshot,
    power::PowerSnapshot,
    snapshot::{PlatformRow, Snapshot},
};

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    cpu_time(enc, &s.counters)?;
    if let Some(power) = &s.power {
        energy(enc, &s.attribution, flag(power.estimated))?;
        idle_power(enc, &s.attribution, flag(power.estimated))?;
        source(enc, power)?;
        if let Some(p) = &s.platform {
            platform(enc, p)?;
        }
    }
    Ok(())
}

fn cpu_time(enc: &mut DescriptorEncoder, c: &CountersSnapshot) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_node_cpu_seconds",
        "CPU time of all CPUs, busy (any task) or idle (the idle task), counted in the kernel at every context switch.",
        [
            ([("mode", "busy")], c.busy_ns() as f64 / NS_PER_S),
            ([("mode", "idle")], c.idle_ns() as f64 / NS_PER_S),
        ],
    )
}

fn energy(enc: &mut DescriptorEncoder, a: &AttributionSnapshot, est: &str) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_node_energy_joules",
        "Energy of the node since the agent started, per zone, split into idle (the node's static baseline, see wattlet_node_idle_power_watts) and active (the rest, attributed to workloads). Zones overlap (core and uncore are part of package): never sum zones. estimated=\"true\" when the power is modelled (no sensor), not measured.",
        a.zones.iter().zip(&a.node).flat_map(|(z, n)| {
            [("active", n.active_joules), ("idle", n.idle_joules)].map(|(mode, j)| {
                (
                    [("zone", z.as_str()), ("mode", mode), ("estimated", est)],
                    j,
                )
            })
        }),
    )?;
    gauge_family(
        enc,
        "wattlet_node_power_watts",
        "Average power of the node over the last interval, per zone, idle and active. Never sum zones. estimated=\"true\" when modelled.",
        a.zones.iter().zip(&a.node).flat_map(|(z, n)| {
            [("active", n.active_watts), ("idle", n.idle_watts)]
                .into_iter()
                .filter_map(move |(mode, w)| {
                    Some((
                        [("zone", z.as_str()), ("mode", mode), ("estimated", est)],
                        w?,
                    ))
                })
        }),
    )
}

fn idle_power(enc: &mut DescriptorEncoder, a: &AttributionSnapshot, est: &str) -> fmt::Result {
    gauge_family(
        enc,
        "wattlet_node_idle_power_watts",
        "The node's idle (static) power in use, per zone, and how it is known: configured (--power.idle-watts), model (the power model's idle figure), regression (intercept of power against busy ratio over --attribution.idle-window) or minimum (lowest power seen, until load varies enough for a regression).",
        a.zones.iter().zip(&a.node).filter_map(|(z, n)| {
            let (w, method) = n.idle_estimate?;
            Some((
                [
                    ("zone", z.as_str()),
                    ("method", method.as_str()),
                    ("estimated", est),
                ],
                w,
            ))
        }),
    )
}

fn source(enc: &mut DescriptorEncoder, w: &PowerSnapshot) -> fmt::Result {
    info(
        enc,
        "wattlet_node_power_source",
        "Where node energy comes from: perf (RAPL through the perf power PMU), powercap (RAPL through sysfs), hwmon (sensors), or model (estimated from CPU busy time; model names the coefficient set).",
        &[
            ("source", w.source.as_str()),
            ("estimated", flag(w.estimated)),
            ("model", w.model_family.as_deref().unwrap_or("")),
        ],
    )?;
    gauge(
        enc,
        "wattlet_power_reading_timestamp_seconds",
        "When the power source was last read (Unix time).",
        w.at_unix,
    )?;
    counter_family(
        enc,
        "wattlet_power_readings_dropped",
        "Energy readings dropped as implausible instead of being exported as spikes: backwards (a counter went back without a plausible wrap) or above_ceiling (more power than --power.ceiling-watts).",
        w.dropped.iter().map(|((zone, reason), n)| {
            ([("zone", zone.as_str()), ("reason", reason.as_str())], *n)
        }),
    )
}

/// The whole-platform meter: whether it is stale, and what the platform holds beyond the CPU
/// zones (its energy is the `platform` zone's in the families above).
fn platform(enc: &mut DescriptorEncoder, p: &PlatformRow) -> fmt::Result {
    let source = [("source", p.meter.kind.as_str())];
    gauge_family(
        enc,
        "wattlet_platform_stale",
        "1 while the whole-platform meter's last reading is older than its staleness bound (--power.redfish.staleness): the platform zone then counts no energy and shows no power.",
        [(source, if p.meter.stale { 1.0 } else { 0.0 })],
    )?;
    let t = &p.totals;
    counter_family(
        enc,
        "wattlet_platform_rest_joules",
        "Energy of the platform beyond package and dram (fans, disks, NICs, the supplies' losses), idle and active: platform = package + dram + this rest.",
        [
            ("active", t.rest_active_joules),
            ("idle", t.rest_idle_joules),
        ]
        .map(|(mode, j)| ([("source", source[0].1), ("mode", mode)], j)),
    )?;
    counter_family(
        enc,
        "wattlet_platform_cpu_excess_joules",
        "Energy by which package + dram exceeded the whole-platform meter, in intervals where it read lower than they did (its lag and averaging): the platform was then shared as the CPU zones scaled down to its figure.",
        [(source, t.cpu_excess_joules)],
    )
}
