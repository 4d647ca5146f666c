//! The JSON API's documents: `/api/v1/snapshot` (the latest snapshot, the same one a scrape
//! encodes) and `/api/v1/history` (the short history beside it).
//!
//! The shape is its own set of types, not the snapshot's: the snapshot may change as the layers
//! below do, the API changes only with [`VERSION`]. Units are in the names (`_watts`,
//! `_joules`, `_seconds`, `_share` 0..=1); times are Unix seconds. Per-zone values are lists in
//! the snapshot's zone order; `watts` and `joules` without a zone are totals over the zones
//! listed in `total_zones` (zones overlap: never sum the others). `null` means not known yet
//! (power before two readings, shares before two snapshots) or not configured (`carbon`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::{
    snapshot::{
        CgroupRow, ContainerRow, HistoryPoint, Latest, PodRow, Snapshot, Usage, sum_watts,
        sum_zones,
    },
    units::secs_from_ns,
};

/// Bumped on any change that could break a reader; additions keep it.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
pub(crate) struct SnapshotDoc<'a> {
    version: u32,
    /// When the snapshot was taken.
    taken_at: f64,
    /// Seconds since the snapshot before: the span of every `watts` and `_share`.
    interval_seconds: Option<f64>,
    /// The zones the totals add up (see `snapshot::total_zones`).
    total_zones: Vec<&'a str>,
    node: NodeDoc<'a>,
    containers: Vec<ContainerDoc<'a>>,
    pods: Vec<PodDoc<'a>>,
    cgroups: Vec<CgroupDoc<'a>>,
    agent: AgentDoc<'a>,
    /// Grid carbon intensity and the node's emissions rate; null until carbon is configured.
    carbon: Option<CarbonDoc<'a>>,
}

#[derive(Serialize)]
struct NodeDoc<'a> {
    name: &'a str,
    /// `perf`, `powercap`, `hwmon` or `model`; null when no power source was read.
    source: Option<&'a str>,
    /// The power model's coefficient set, when modelled.
    model: Option<&'a str>,
    /// Modelled from CPU time rather than measured.
    estimated: bool,
    watts: Option<f64>,
    active_watts: Option<f64>,
    idle_watts: Option<f64>,
    /// Since the agent started.
    joules: f64,
    zones: Vec<NodeZoneDoc<'a>>,
    cpu: NodeCpuDoc,
}

#[derive(Serialize)]
struct NodeZoneDoc<'a> {
    zone: &'a str,
    watts: Option<f64>,
    active_watts: Option<f64>,
    idle_watts: Option<f64>,
    joules: f64,
    active_joules: f64,
    idle_joules: f64,
    /// The idle (static) power in use and how it is known (`configured`, `model`,
    /// `regression`, `minimum`).
    idle_estimate_watts: Option<f64>,
    idle_method: Option<&'a str>,
}

#[derive(Serialize)]
struct NodeCpuDoc {
    cpus: usize,
    busy_seconds: f64,
    idle_seconds: f64,
    /// Busy share of all CPUs' time over the interval.
    busy_share: Option<f64>,
}

/// A workload's energy and power in one zone.
#[derive(Serialize)]
struct ZoneUseDoc<'a> {
    zone: &'a str,
    watts: Option<f64>,
    joules: f64,
}

/// What every workload row has.
#[derive(Serialize)]
struct UseDoc<'a> {
    running: bool,
    cpu_seconds: f64,
    /// Share of all CPUs' time over the interval (1 = every CPU busy with it).
    cpu_share: Option<f64>,
    watts: Option<f64>,
    joules: f64,
    zones: Vec<ZoneUseDoc<'a>>,
}

#[derive(Serialize)]
struct ContainerDoc<'a> {
    id: &'a str,
    runtime: &'a str,
    /// Empty until the API server names them.
    name: &'a str,
    pod: &'a str,
    namespace: &'a str,
    pod_uid: &'a str,
    /// `namespace/pod/container`, or the runtime and the short id.
    display_name: String,
    #[serde(flatten)]
    usage: UseDoc<'a>,
}

#[derive(Serialize)]
struct PodDoc<'a> {
    uid: &'a str,
    name: &'a str,
    namespace: &'a str,
    #[serde(flatten)]
    usage: UseDoc<'a>,
}

#[derive(Serialize)]
struct CgroupDoc<'a> {
    path: &'a str,
    #[serde(flatten)]
    usage: UseDoc<'a>,
}

#[derive(Serialize)]
struct AgentDoc<'a> {
    cpu_seconds: f64,
    cpu_share: Option<f64>,
    /// Active energy attributed to the agent by its CPU time: its own cost.
    joules: f64,
    zones: Vec<ZoneUseDoc<'a>>,
    /// How long the last interval's reads and attribution took.
    interval_work_seconds: f64,
    read_errors: u64,
    idle_policy: &'static str,
    shared_by: &'static str,
}

/// The carbon layer's figures, when the snapshot carries them.
#[derive(Serialize)]
pub(crate) struct CarbonDoc<'a> {
    intensity_grams_per_kwh: f64,
    /// Where the intensity comes from (an API, a file, the built-in default).
    source: &'a str,
    /// The grid zone it is for (empty when unknown).
    zone: &'a str,
    /// Power Usage Effectiveness, multiplied into the emissions.
    pue: f64,
    /// The node's operational emissions at its current power (watts × intensity × PUE); null
    /// until power is known.
    grams_per_hour: Option<f64>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The document of `/api/v1/snapshot`.
pub(crate) fn snapshot<'a>(s: &'a Snapshot, node: &'a str) -> SnapshotDoc<'a> {
    let total = s.total_zones();
    let zones = &s.attribution.zones;
    let node = node_doc(s, node, &total);
    let carbon = carbon(s, node.watts);
    SnapshotDoc {
        version: VERSION,
        taken_at: unix(s.taken_at),
        interval_seconds: s.since_previous.map(|r| r.seconds),
        total_zones: total.iter().map(|&i| zones[i].as_str()).collect(),
        node,
        containers: s
            .containers
            .iter()
            .map(|c| container(s, &total, c))
            .collect(),
        pods: s.pods.iter().map(|p| pod(s, &total, p)).collect(),
        cgroups: s.cgroups.iter().map(|c| cgroup(s, &total, c)).collect(),
        agent: agent(s, &total),
        carbon,
    }
}

/// The intensity in force, its source and grid zone, the PUE, and what the node emits at its
/// current power (`node_watts`: the zones of the total) × intensity × PUE, as grams per hour;
/// null when the agent computes no carbon.
fn carbon(s: &Snapshot, node_watts: Option<f64>) -> Option<CarbonDoc<'_>> {
    let c = s.carbon.as_ref()?;
    Some(CarbonDoc {
        intensity_grams_per_kwh: c.reading.grams_per_kwh,
        source: c.reading.source.as_str(),
        zone: c.reading.zone_label(),
        pue: c.pue,
        // kW × g/kWh = g/h.
        grams_per_hour: node_watts.map(|w| w / 1000.0 * c.reading.grams_per_kwh * c.pue),
    })
}

fn node_doc<'a>(s: &'a Snapshot, name: &'a str, total: &[usize]) -> NodeDoc<'a> {
    let node = &s.attribution.node;
    let active: Vec<_> = node.iter().map(|z| z.active_watts).collect();
    let idle: Vec<_> = node.iter().map(|z| z.idle_watts).collect();
    let joules: Vec<_> = node
        .iter()
        .map(|z| z.active_joules + z.idle_joules)
        .collect();
    let (active, idle) = (sum_watts(total, &active), sum_watts(total, &idle));
    let power = s.power.as_ref();
    NodeDoc {
        name,
        source: power.map(|p| p.source.as_str()),
        model: power.and_then(|p| p.model_family.as_deref()),
        estimated: s.estimated(),
        watts: active.zip(idle).map(|(a, i)| a + i),
        active_watts: active,
        idle_watts: idle,
        joules: sum_zones(total, &joules),
        zones: node
            .iter()
            .map(|z| NodeZoneDoc {
                zone: &z.zone,
                watts: z.active_watts.zip(z.idle_watts).map(|(a, i)| a + i),
                active_watts: z.active_watts,
                idle_watts: z.idle_watts,
                joules: z.active_joules + z.idle_joules,
                active_joules: z.active_joules,
                idle_joules: z.idle_joules,
                idle_estimate_watts: z.idle_estimate.map(|(w, _)| w),
                idle_method: z.idle_estimate.map(|(_, m)| m.as_str()),
            })
            .collect(),
        cpu: NodeCpuDoc {
            cpus: s.counters.cpus.len(),
            busy_seconds: secs_from_ns(s.counters.busy_ns()),
            idle_seconds: secs_from_ns(s.counters.idle_ns()),
            busy_share: s.since_previous.map(|r| r.busy_share),
        },
    }
}

/// Per zone and over the total zones.
fn use_doc<'a>(
    s: &'a Snapshot,
    total: &[usize],
    running: bool,
    cpu_ns: u64,
    cpu_share: Option<f64>,
    joules: &[f64],
    watts: &[Option<f64>],
) -> UseDoc<'a> {
    UseDoc {
        running,
        cpu_seconds: secs_from_ns(cpu_ns),
        cpu_share,
        watts: sum_watts(total, watts),
        joules: sum_zones(total, joules),
        zones: zone_uses(s, joules, watts),
    }
}

fn zone_uses<'a>(s: &'a Snapshot, joules: &[f64], watts: &[Option<f64>]) -> Vec<ZoneUseDoc<'a>> {
    let zones = &s.attribution.zones;
    zones
        .iter()
        .enumerate()
        .map(|(i, z)| ZoneUseDoc {
            zone: z,
            watts: watts.get(i).copied().flatten(),
            joules: joules.get(i).copied().unwrap_or(0.0),
        })
        .collect()
}

fn usage<'a>(s: &'a Snapshot, total: &[usize], u: &Usage) -> UseDoc<'a> {
    let cpu = u.counters.cpu_ns;
    use_doc(s, total, u.running, cpu, u.cpu_share, &u.joules, &u.watts)
}

fn container<'a>(s: &'a Snapshot, total: &[usize], c: &'a ContainerRow) -> ContainerDoc<'a> {
    ContainerDoc {
        id: &c.id,
        runtime: c.runtime,
        name: &c.name,
        pod: &c.pod,
        namespace: &c.namespace,
        pod_uid: &c.pod_uid,
        display_name: c.display_name(),
        usage: usage(s, total, &c.usage),
    }
}

fn pod<'a>(s: &'a Snapshot, total: &[usize], p: &'a PodRow) -> PodDoc<'a> {
    PodDoc {
        uid: &p.uid,
        name: &p.name,
        namespace: &p.namespace,
        usage: use_doc(
            s,
            total,
            p.running,
            p.cpu_ns,
            p.cpu_share,
            &p.joules,
            &p.watts,
        ),
    }
}

fn cgroup<'a>(s: &'a Snapshot, total: &[usize], c: &'a CgroupRow) -> CgroupDoc<'a> {
    CgroupDoc {
        path: &c.path,
        usage: usage(s, total, &c.usage),
    }
}

fn agent<'a>(s: &'a Snapshot, total: &[usize]) -> AgentDoc<'a> {
    let a = &s.attribution;
    AgentDoc {
        cpu_seconds: a.agent_cpu_seconds,
        cpu_share: s.since_previous.map(|r| r.agent_cpu_share),
        joules: sum_zones(total, &a.agent_joules),
        zones: zone_uses(s, &a.agent_joules, &[]),
        interval_work_seconds: s.work.as_secs_f64(),
        read_errors: s.read_errors,
        idle_policy: super::agent::idle_policy_name(s.idle_policy),
        shared_by: if a.shared_by_cycles {
            "cycles"
        } else {
            "cpu_time"
        },
    }
}

#[derive(Serialize)]
pub(crate) struct HistoryDoc {
    version: u32,
    /// The history keeps the points of the last `window_seconds`, at most `max_points`.
    window_seconds: f64,
    max_points: usize,
    points: Vec<PointDoc>,
}

#[derive(Serialize)]
struct PointDoc {
    at: f64,
    /// Over the total zones.
    active_watts: Option<f64>,
    idle_watts: Option<f64>,
    zones: Vec<PointZoneDoc>,
    /// The containers and cgroups that drew the most, most first.
    top: Vec<TopDoc>,
}

#[derive(Serialize)]
struct PointZoneDoc {
    zone: String,
    active_watts: Option<f64>,
    idle_watts: Option<f64>,
}

#[derive(Serialize)]
struct TopDoc {
    kind: &'static str,
    id: String,
    name: String,
    watts: f64,
}

/// The document of `/api/v1/history`, oldest point first.
pub(crate) fn history(latest: &Latest) -> HistoryDoc {
    let (points, window, max_points) = latest.history();
    HistoryDoc {
        version: VERSION,
        window_seconds: window.as_secs_f64(),
        max_points,
        points: points.iter().map(|p| point(p)).collect(),
    }
}

fn point(p: &HistoryPoint) -> PointDoc {
    PointDoc {
        at: p.at_unix,
        active_watts: p.active_watts,
        idle_watts: p.idle_watts,
        zones: p
            .zones
            .iter()
            .map(|z| PointZoneDoc {
                zone: z.zone.clone(),
                active_watts: z.active_watts,
                idle_watts: z.idle_watts,
            })
            .collect(),
        top: p
            .top
            .iter()
            .map(|t| TopDoc {
                kind: t.kind.as_str(),
                id: t.id.to_string(),
                name: t.name.clone(),
                watts: t.watts,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::snapshot::fixture;

    fn doc() -> Value {
        let s = fixture::snapshot();
        serde_json::to_value(snapshot(&s, "node-1")).unwrap()
    }

    #[test]
    fn the_node_with_totals_over_package_and_dram() {
        let d = doc();
        assert_eq!(d["version"], 1);
        assert_eq!(d["total_zones"], json!(["dram", "package"]));
        let n = &d["node"];
        assert_eq!(n["name"], "node-1");
        assert_eq!(
            (n["source"].as_str(), n["estimated"].as_bool()),
            (Some("model"), Some(true))
        );
        assert_eq!(n["model"], "average");
        // package 9 + 6 W, dram 0.5 + 2 W.
        assert_eq!(n["watts"], 17.5);
        assert_eq!(
            (n["active_watts"].as_f64(), n["idle_watts"].as_f64()),
            (Some(9.5), Some(8.0))
        );
        assert_eq!(n["joules"], 900.25 + 600.0 + 12.5 + 40.0);
        let package = &n["zones"][1];
        assert_eq!(package["zone"], "package");
        assert_eq!(package["idle_method"], "model");
        assert_eq!(package["idle_estimate_watts"], 6.0);
        assert_eq!(n["cpu"]["cpus"], 2);
        assert_eq!(n["cpu"]["busy_seconds"], 30.0);
        // One snapshot: no interval yet, so no shares.
        assert_eq!(d["interval_seconds"], Value::Null);
        assert_eq!(n["cpu"]["busy_share"], Value::Null);
        // The fixture's intensity (302 g/kWh from the API, zone DE, PUE 1.25) at the node's
        // 9.5 W active + 8 W idle over the zones of the total.
        let c = &d["carbon"];
        assert_eq!(
            (c["source"].as_str(), c["zone"].as_str()),
            (Some("api"), Some("DE"))
        );
        assert_eq!(c["intensity_grams_per_kwh"], 302.0);
        let expected = (9.5 + 8.0) / 1000.0 * 302.0 * 1.25;
        assert!((c["grams_per_hour"].as_f64().unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn workloads_with_names_usage_and_zones() {
        let d = doc();
        let web = &d["containers"][0];
        assert_eq!(web["id"], fixture::ID_WEB);
        assert_eq!(web["display_name"], "shop/web-7d9f/nginx");
        assert_eq!(web["namespace"], "shop");
        assert_eq!(web["cpu_seconds"], 4.5);
        assert_eq!(web["joules"], 253.5);
        assert_eq!(
            web["zones"][1],
            json!({"zone": "package", "watts": 2.5, "joules": 250.5})
        );
        // A stopped container: no power, its energy kept.
        let gone = &d["containers"][1];
        assert_eq!(
            (gone["running"].as_bool(), gone["watts"].is_null()),
            (Some(false), true)
        );
        assert_eq!(gone["joules"], 81.0);
        // The web pod: both of its containers' CPU time.
        let pod = &d["pods"][0];
        assert_eq!(
            (pod["name"].as_str(), pod["cpu_seconds"].as_f64()),
            (Some("web-7d9f"), Some(5.25))
        );
        let paths: Vec<_> = d["cgroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, fixture::CGROUPS);
        let agent = &d["agent"];
        assert_eq!(agent["cpu_seconds"], 1.25);
        assert!((agent["joules"].as_f64().unwrap() - 0.76).abs() < 1e-12);
        assert_eq!(agent["shared_by"], "cycles");
        assert_eq!(agent["idle_policy"], "node");
    }

    #[test]
    fn the_history_document() {
        let latest = Latest::default();
        latest.publish(fixture::snapshot());
        let d = serde_json::to_value(history(&latest)).unwrap();
        assert_eq!(d["window_seconds"], 900.0);
        assert_eq!(d["max_points"], 900);
        let p = &d["points"][0];
        assert_eq!(
            (p["active_watts"].as_f64(), p["idle_watts"].as_f64()),
            (Some(9.5), Some(8.0))
        );
        assert_eq!(p["top"][0]["kind"], "container");
        assert_eq!(p["top"][0]["name"], "shop/web-7d9f/nginx");
        assert_eq!(p["zones"][0]["zone"], "dram");
    }
}
