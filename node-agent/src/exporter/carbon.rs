//! Carbon: the grid intensity in force and its source, the PUE, the intensity sources'
//! failures, and emissions in grams of CO2e — operational (Scope 2: each interval's energy at the
//! intensity in force then, with the energy series' labels plus `source`) and, when configured,
//! embodied (Scope 3: the server's amortised footprint shared by CPU time, no zone).

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::{
    families::{Label, counter_family, flag, gauge, gauge_family},
    workloads::{container_labels, per_zone, pod_labels},
};
use crate::{
    attribution::{Emissions, SourceGrams},
    snapshot::{CarbonRow, Snapshot},
};

pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let Some(c) = &s.carbon else {
        return Ok(());
    };
    intensity(enc, c)?;
    if s.power.is_some() {
        let est = flag(s.estimated());
        node(enc, s, est)?;
        workloads(enc, s, est)?;
    }
    if c.embodied_grams_per_second.is_some() {
        embodied(enc, s)?;
    }
    Ok(())
}

fn intensity(enc: &mut DescriptorEncoder, c: &CarbonRow) -> fmt::Result {
    let r = &c.reading;
    gauge_family(
        enc,
        "wattlet_grid_carbon_intensity_grams_per_kwh",
        "Grid carbon intensity in force during the last interval, gCO2e per kWh, location-based (the grid's average mix, as the GSF SCI specification asks). source: api (--carbon.intensity-url), file (--carbon.intensity-file), static (--carbon.intensity), table (the built-in yearly factor of --carbon.zone or the node's topology.kubernetes.io/region) or default (a world average, not a measurement: configure a source for your grid). zone: the grid zone, empty when the source does not name one.",
        [(
            [("source", r.source.as_str()), ("zone", r.zone_label())],
            r.grams_per_kwh,
        )],
    )?;
    gauge(
        enc,
        "wattlet_carbon_pue",
        "Power usage effectiveness applied to emissions (--carbon.pue): the facility draws this many joules from the grid for each joule the node uses.",
        c.pue,
    )?;
    counter_family(
        enc,
        "wattlet_carbon_intensity_errors",
        "Failed reads of a carbon intensity source, by source and reason (e.g. unreachable, timeout, not_json, missing_field, nan, negative, too_high). A bad value is never used: the last good one stays in force for --carbon.max-age, then the next source takes over.",
        c.errors.iter().map(|e| {
            (
                [("source", e.source.as_str()), ("reason", e.reason)],
                e.count,
            )
        }),
    )
}

fn node(enc: &mut DescriptorEncoder, s: &Snapshot, est: &'static str) -> fmt::Result {
    let a = &s.attribution;
    counter_family(
        enc,
        "wattlet_node_emissions_grams",
        "Operational emissions (Scope 2, location-based) of the node's energy since the agent started, gCO2e: each interval's energy × the grid intensity in force during that interval × PUE, per zone and mode as wattlet_node_energy_joules_total, and per intensity source that was in force (sum over source for the total). Zones overlap: never sum zones. A product of energy and the average intensity is wrong when the intensity changes: use this.",
        a.zones.iter().zip(&a.node).flat_map(|(z, n)| {
            n.emissions.iter().flat_map(move |g| {
                [("active", g.active), ("idle", g.idle)].map(|(mode, v)| {
                    let labels = [
                        ("zone", z.as_str()),
                        ("mode", mode),
                        ("estimated", est),
                        ("source", g.source.as_str()),
                    ];
                    (labels, v)
                })
            })
        }),
    )
}

/// Per source, per zone: the zone's labels, the source, and the grams.
fn per_source<'a>(
    s: &'a Snapshot,
    est: &'static str,
    e: &'a Emissions,
) -> impl Iterator<Item = ([Label<'a>; 3], f64)> + 'a {
    e.operational
        .iter()
        .flat_map(move |SourceGrams { source, grams }| {
            per_zone(s, est, grams).map(|([z, e], g)| ([z, e, ("source", source.as_str())], g))
        })
}

fn workloads(enc: &mut DescriptorEncoder, s: &Snapshot, est: &'static str) -> fmt::Result {
    counter_family(
        enc,
        "wattlet_container_emissions_grams",
        "Operational emissions (Scope 2) attributed to each container since the agent started, gCO2e: its energy of each interval × the grid intensity in force then × PUE, per zone and intensity source (sum over source). Never sum zones.",
        s.containers.iter().flat_map(|c| {
            per_source(s, est, &c.usage.emissions).map(|([z, e, src], g)| {
                let [a, b, d, f] = container_labels(c);
                ([z, e, a, b, d, f, src], g)
            })
        }),
    )?;
    counter_family(
        enc,
        "wattlet_pod_emissions_grams",
        "Operational emissions (Scope 2) attributed to each pod (the sum of its containers) since the agent started, gCO2e, per zone and intensity source (sum over source). Never sum zones.",
        s.pods.iter().flat_map(|p| {
            per_source(s, est, &p.emissions).map(|([z, e, src], g)| {
                let [a, b, c] = pod_labels(p);
                ([z, e, a, b, c, src], g)
            })
        }),
    )?;
    counter_family(
        enc,
        "wattlet_cgroup_emissions_grams",
        "Operational emissions (Scope 2) attributed to each non-container cgroup since the agent started, gCO2e, per zone and intensity source (sum over source). Never sum zones.",
        s.cgroups.iter().flat_map(|cg| {
            per_source(s, est, &cg.usage.emissions)
                .map(|([z, e, src], g)| ([z, e, ("cgroup", &*cg.path), src], g))
        }),
    )?;
    let expired = s.attribution.carbon.as_ref().map(|c| &c.expired);
    counter_family(
        enc,
        "wattlet_expired_emissions_grams",
        "Operational emissions of workloads whose series expired after --retention.terminated, per zone and intensity source: with it, containers + cgroups + expired + the node's idle equal the node's total (default idle policy), as for energy.",
        expired.into_iter().flat_map(|e| per_source(s, est, e)),
    )
}

fn embodied(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let node = s.attribution.carbon.as_ref();
    counter_family(
        enc,
        "wattlet_node_embodied_emissions_grams",
        "Embodied emissions (Scope 3) of the server since the agent started, gCO2e: its manufacturing footprint (--carbon.embodied-kg) amortised over --carbon.lifetime. mode=\"active\": shared among workloads by CPU time; mode=\"idle\": the CPU capacity no workload used. Report apart from operational (Scope 2) emissions.",
        node.into_iter().flat_map(|c| {
            [
                ([("mode", "active")], c.embodied_active),
                ([("mode", "idle")], c.embodied_idle),
            ]
        }),
    )?;
    counter_family(
        enc,
        "wattlet_container_embodied_emissions_grams",
        "Embodied emissions (Scope 3) attributed to each container since the agent started, gCO2e: its CPU time's share of the server's amortised manufacturing footprint. No zone; report apart from operational (Scope 2) emissions.",
        s.containers
            .iter()
            .map(|c| (container_labels(c), c.usage.emissions.embodied)),
    )?;
    counter_family(
        enc,
        "wattlet_pod_embodied_emissions_grams",
        "Embodied emissions (Scope 3) attributed to each pod (the sum of its containers) since the agent started, gCO2e. Report apart from operational (Scope 2) emissions.",
        s.pods.iter().map(|p| (pod_labels(p), p.emissions.embodied)),
    )?;
    counter_family(
        enc,
        "wattlet_cgroup_embodied_emissions_grams",
        "Embodied emissions (Scope 3) attributed to each non-container cgroup since the agent started, gCO2e.",
        s.cgroups
            .iter()
            .map(|cg| ([("cgroup", &*cg.path)], cg.usage.emissions.embodied)),
    )?;
    let expired: [Label<'_>; 0] = [];
    counter_family(
        enc,
        "wattlet_expired_embodied_emissions_grams",
        "Embodied emissions of workloads whose series expired: with it, containers + cgroups + expired + the node's idle part equal the node's total.",
        node.map(|c| (expired, c.expired.embodied)),
    )
}
