//! The Prometheus exporter: scrape-time collectors that encode the latest published snapshot.
//! A scrape never measures and never waits on measurement.

mod kepler;

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use node_agent_common::CgroupCounters;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::Registry,
};

use crate::{
    attribution::{AttributionSnapshot, IdlePolicy},
    config::Compat,
    kernel::{CountersSnapshot, PmuCounters},
    kubernetes::{MetaIndex, MetaView, PodMeta},
    power::PowerSnapshot,
    workload::Workload,
};

/// What the measuring loop hands to exporters each interval.
#[derive(Debug)]
pub struct Published {
    pub counters: CountersSnapshot,
    /// Node energy, if a power source was read.
    pub power: Option<PowerSnapshot>,
    pub attribution: AttributionSnapshot,
    pub idle_policy: IdlePolicy,
    /// Pod metadata, when the agent watches the Kubernetes API.
    pub metadata: Option<MetaView>,
    /// How long the interval's work took.
    pub work: Duration,
    /// Reads of the kernel counters that failed so far.
    pub read_errors: u64,
    /// Series rows, built once here rather than at every scrape.
    rows: Rows,
}

/// Escaped label values and the numbers of one workload.
#[derive(Debug)]
struct Row {
    counters: CgroupCounters,
    joules: Vec<f64>,
    watts: Vec<Option<f64>>,
    running: bool,
}

#[derive(Debug)]
struct ContainerRow {
    id: String,
    runtime: &'static str,
    /// Names the agent cannot know yet are empty, never invented.
    name: String,
    pod: String,
    namespace: String,
    pod_uid: String,
    row: Row,
}

#[derive(Debug)]
struct PodRow {
    uid: String,
    name: String,
    namespace: String,
    running: bool,
    joules: Vec<f64>,
    watts: Vec<Option<f64>>,
}

#[derive(Debug, Default)]
struct Rows {
    /// Escaped zone names, in the order of every `joules` and `watts` vector.
    zones: Vec<String>,
    estimated: &'static str,
    containers: Vec<ContainerRow>,
    pods: Vec<PodRow>,
    cgroups: Vec<(String, Row)>,
}

impl Rows {
    fn new(a: &AttributionSnapshot, power: Option<&PowerSnapshot>, meta: &MetaIndex) -> Self {
        let unknown = PodMeta::default();
        let pod_of = |uid: &str| meta.pods.get(uid).unwrap_or(&unknown);
        let zones: Vec<String> = a.zones.iter().map(|z| escape_label_value(z)).collect();
        let mut containers = Vec::new();
        let mut cgroups = Vec::new();
        for w in &a.workloads {
            let row = Row {
                counters: w.counters,
                joules: w.joules.clone(),
                watts: w.watts.clone(),
                running: w.running,
            };
            match &w.workload {
                Workload::Container(c) => {
                    let known = meta.containers.get(&*c.id);
                    // The cgroup path names the pod; the API's statuses name the container.
                    let uid = c
                        .pod_uid
                        .as_deref()
                        .or(known.map(|k| k.pod_uid.as_str()))
                        .unwrap_or("");
                    let pod = pod_of(uid);
                    containers.push(ContainerRow {
                        id: escape_label_value(&c.id),
                        runtime: c.runtime,
                        name: known
                            .map(|k| escape_label_value(&k.name))
                            .unwrap_or_default(),
                        pod: escape_label_value(&pod.name),
                        namespace: escape_label_value(&pod.namespace),
                        pod_uid: escape_label_value(uid),
                        row,
                    });
                }
                Workload::Cgroup(path) => cgroups.push((escape_label_value(path), row)),
            }
        }
        Rows {
            zones,
            estimated: if power.is_some_and(|p| p.estimated) {
                "true"
            } else {
                "false"
            },
            containers,
            pods: a
                .pods
                .iter()
                .map(|p| {
                    let known = pod_of(&p.uid);
                    PodRow {
                        uid: escape_label_value(&p.uid),
                        name: escape_label_value(&known.name),
                        namespace: escape_label_value(&known.namespace),
                        running: p.running,
                        joules: p.joules.clone(),
                        watts: p.watts.clone(),
                    }
                })
                .collect(),
            cgroups,
        }
    }
}

impl Published {
    pub fn new(
        counters: CountersSnapshot,
        power: Option<PowerSnapshot>,
        attribution: AttributionSnapshot,
        idle_policy: IdlePolicy,
        metadata: Option<MetaView>,
        work: Duration,
        read_errors: u64,
    ) -> Self {
        let empty = MetaIndex::default();
        let index = metadata.as_ref().map_or(&empty, |m| &*m.index);
        let rows = Rows::new(&attribution, power.as_ref(), index);
        Self {
            counters,
            power,
            attribution,
            idle_policy,
            metadata,
            work,
            read_errors,
            rows,
        }
    }
}

/// The latest snapshot, swapped whole each interval.
#[derive(Debug, Default)]
pub struct Latest(RwLock<Option<Arc<Published>>>);

impl Latest {
    pub fn publish(&self, p: Published) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(p));
    }
    pub fn get(&self) -> Option<Arc<Published>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

const NS_PER_S: f64 = 1e9;

#[derive(Debug)]
struct SnapshotCollector {
    latest: Arc<Latest>,
    compat: Option<Compat>,
    node: String,
}

const SWITCH_KINDS: [&str; 2] = ["voluntary", "involuntary"];

fn switches(c: &CgroupCounters) -> [u64; 2] {
    [c.switches_voluntary, c.switches_involuntary]
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(p) = self.latest.get() else {
            return Ok(());
        };
        let s = &p.counters;
        let r = &p.rows;
        let est = r.estimated;

        let busy = ConstCounter::new(s.busy_ns() as f64 / NS_PER_S);
        let idle = ConstCounter::new(s.idle_ns() as f64 / NS_PER_S);
        {
            let mut m = enc.encode_descriptor(
                "wattlet_node_cpu_seconds",
                "CPU time of all CPUs, busy (any task) or idle (the idle task), counted in the kernel at every context switch.",
                None,
                busy.metric_type(),
            )?;
            busy.encode(m.encode_family(&[("mode", "busy")])?)?;
            idle.encode(m.encode_family(&[("mode", "idle")])?)?;
        }

        if let Some(power) = &p.power {
            encode_node_energy(&mut enc, &p.attribution, r)?;
            encode_power_source(&mut enc, power)?;
        }

        // Containers.
        let c_labels = container_labels;
        counter_family(
            &mut enc,
            "wattlet_container_energy_joules",
            "Energy attributed to each container since the agent started, per zone: its share of active energy by CPU time (or cycles), plus idle energy under the proportional and even idle policies. Zones overlap: never sum zones. container, pod and namespace are empty until pod metadata is known.",
            r.containers.iter().flat_map(|c| {
                r.zones.iter().enumerate().map(move |(i, z)| {
                    let [a, b, d, e] = c_labels(c);
                    (
                        [("zone", z.as_str()), ("estimated", est), a, b, d, e],
                        c.row.joules[i],
                    )
                })
            }),
        )?;
        gauge_family(
            &mut enc,
            "wattlet_container_power_watts",
            "Average power attributed to each container over the last interval, per zone.",
            r.containers.iter().flat_map(|c| {
                r.zones.iter().enumerate().filter_map(move |(i, z)| {
                    let [a, b, d, e] = c_labels(c);
                    c.row.watts[i]
                        .map(|w| ([("zone", z.as_str()), ("estimated", est), a, b, d, e], w))
                })
            }),
        )?;
        counter_family(
            &mut enc,
            "wattlet_container_cpu_seconds",
            "On-CPU time of each container's tasks, counted in the kernel.",
            r.containers
                .iter()
                .map(|c| (c_labels(c), c.row.counters.cpu_ns as f64 / NS_PER_S)),
        )?;
        counter_family(
            &mut enc,
            "wattlet_container_context_switches",
            "Context switches of each container's tasks: voluntary (blocked or slept) or involuntary (preempted).",
            r.containers.iter().flat_map(|c| {
                SWITCH_KINDS
                    .iter()
                    .zip(switches(&c.row.counters))
                    .map(move |(kind, n)| {
                        let [a, b, d, e] = c_labels(c);
                        ([a, b, d, e, ("kind", *kind)], n)
                    })
            }),
        )?;
        if s.pmu != PmuCounters::None {
            counter_family(
                &mut enc,
                "wattlet_container_cpu_cycles",
                "CPU cycles while each container's tasks ran (PMU).",
                r.containers
                    .iter()
                    .map(|c| (c_labels(c), c.row.counters.cycles as f64)),
            )?;
            counter_family(
                &mut enc,
                "wattlet_container_cpu_instructions",
                "Instructions retired while each container's tasks ran (PMU).",
                r.containers
                    .iter()
                    .map(|c| (c_labels(c), c.row.counters.instructions as f64)),
            )?;
        }

        // Pods: the sums of their containers.
        let p_labels = pod_labels;
        counter_family(
            &mut enc,
            "wattlet_pod_energy_joules",
            "Energy attributed to each pod (the sum of its containers) since the agent started, per zone. Never sum zones.",
            r.pods.iter().flat_map(|p| {
                r.zones.iter().enumerate().map(move |(i, z)| {
                    let [a, b, c] = p_labels(p);
                    (
                        [("zone", z.as_str()), ("estimated", est), a, b, c],
                        p.joules[i],
                    )
                })
            }),
        )?;
        gauge_family(
            &mut enc,
            "wattlet_pod_power_watts",
            "Average power attributed to each pod over the last interval, per zone.",
            r.pods.iter().flat_map(|p| {
                r.zones.iter().enumerate().filter_map(move |(i, z)| {
                    let [a, b, c] = p_labels(p);
                    p.watts[i].map(|w| ([("zone", z.as_str()), ("estimated", est), a, b, c], w))
                })
            }),
        )?;

        // Non-container cgroups, at the configured depth.
        counter_family(
            &mut enc,
            "wattlet_cgroup_energy_joules",
            "Energy attributed to each non-container cgroup (systemd services, user sessions; / is kernel threads and host processes), at --attribution.cgroup-depth, since the agent started, per zone. Never sum zones.",
            r.cgroups.iter().flat_map(|(cg, row)| {
                r.zones.iter().enumerate().map(move |(i, z)| {
                    (
                        [
                            ("zone", z.as_str()),
                            ("estimated", est),
                            ("cgroup", cg.as_str()),
                        ],
                        row.joules[i],
                    )
                })
            }),
        )?;
        counter_family(
            &mut enc,
            "wattlet_cgroup_cpu_seconds",
            "On-CPU time of each non-container cgroup's tasks (path under the cgroup v2 root, at --attribution.cgroup-depth), counted in the kernel.",
            r.cgroups.iter().map(|(cg, row)| {
                (
                    [("cgroup", cg.as_str())],
                    row.counters.cpu_ns as f64 / NS_PER_S,
                )
            }),
        )?;
        counter_family(
            &mut enc,
            "wattlet_cgroup_context_switches",
            "Context switches of each non-container cgroup's tasks: voluntary (blocked or slept) or involuntary (preempted).",
            r.cgroups.iter().flat_map(|(cg, row)| {
                SWITCH_KINDS
                    .iter()
                    .zip(switches(&row.counters))
                    .map(move |(kind, n)| ([("cgroup", cg.as_str()), ("kind", *kind)], n))
            }),
        )?;
        if s.pmu != PmuCounters::None {
            counter_family(
                &mut enc,
                "wattlet_cgroup_cpu_cycles",
                "CPU cycles while each non-container cgroup's tasks ran (PMU).",
                r.cgroups
                    .iter()
                    .map(|(cg, row)| ([("cgroup", cg.as_str())], row.counters.cycles as f64)),
            )?;
            counter_family(
                &mut enc,
                "wattlet_cgroup_cpu_instructions",
                "Instructions retired while each non-container cgroup's tasks ran (PMU).",
                r.cgroups
                    .iter()
                    .map(|(cg, row)| ([("cgroup", cg.as_str())], row.counters.instructions as f64)),
            )?;
        }

        counter_family(
            &mut enc,
            "wattlet_expired_energy_joules",
            "Energy of workloads whose series expired after --retention.terminated, per zone: with it, containers + cgroups + expired + the node's idle equal the node's total at all times (default idle policy).",
            r.zones.iter().enumerate().map(|(i, z)| {
                (
                    [("zone", z.as_str()), ("estimated", est)],
                    p.attribution.expired_joules.get(i).copied().unwrap_or(0.0),
                )
            }),
        )?;

        if let Some(m) = &p.metadata {
            if let Some(age) = m.age {
                gauge(
                    &mut enc,
                    "wattlet_kubernetes_metadata_age_seconds",
                    "How stale the pod metadata is: 0 while the watch of this node's pods is healthy; while the API server is unreachable, the time since it last confirmed the metadata (the last known names stay in use).",
                    age.as_secs_f64(),
                )?;
            }
            gauge(
                &mut enc,
                "wattlet_kubernetes_pods",
                "Pods of this node known from the API server (and recently deleted ones, kept for the retention).",
                m.index.pods.len() as f64,
            )?;
            counter_family(
                &mut enc,
                "wattlet_kubernetes_watch_errors",
                "Failed lists or watches of this node's pods (retried with backoff).",
                [([("resource", "pods")], m.errors as f64)],
            )?;
        }

        // The agent about itself.
        counter_family(
            &mut enc,
            "wattlet_agent_cpu_seconds",
            "CPU time the agent itself used (user + system).",
            [([("process", "wattlet")], p.attribution.agent_cpu_seconds)],
        )?;
        counter_family(
            &mut enc,
            "wattlet_agent_energy_joules",
            "Active energy attributed to the agent itself, by its CPU time, per zone.",
            r.zones.iter().enumerate().map(|(i, z)| {
                (
                    [("zone", z.as_str()), ("estimated", est)],
                    p.attribution.agent_joules.get(i).copied().unwrap_or(0.0),
                )
            }),
        )?;
        {
            let info = Info::new([
                ("idle_policy", idle_policy_name(p.idle_policy)),
                (
                    "shared_by",
                    if p.attribution.shared_by_cycles {
                        "cycles"
                    } else {
                        "cpu_time"
                    },
                ),
            ]);
            let m = enc.encode_descriptor(
                "wattlet_attribution",
                "How energy is attributed: where idle energy goes (--attribution.idle-policy) and what active energy was shared by in the last interval.",
                None,
                info.metric_type(),
            )?;
            info.encode(m)?;
        }

        counter_family(
            &mut enc,
            "wattlet_bpf_overflow_cpu_seconds",
            "CPU time that could not be charged to a cgroup because the in-kernel cgroup map was full (raise --bpf.max-cgroups).",
            [([("map", "cgroups")], s.overflow.cpu_ns as f64 / NS_PER_S)],
        )?;
        gauge(
            &mut enc,
            "wattlet_bpf_map_entries",
            "Live entries in the in-kernel cgroup map.",
            s.map_entries as f64,
        )?;
        gauge(
            &mut enc,
            "wattlet_bpf_map_capacity",
            "Capacity of the in-kernel cgroup map (--bpf.max-cgroups).",
            f64::from(s.map_capacity),
        )?;
        counter_family(
            &mut enc,
            "wattlet_bpf_map_deletions",
            "Entries of removed cgroups read one last time and deleted from the map.",
            [([("map", "cgroups")], s.map_deletions as f64)],
        )?;
        gauge(
            &mut enc,
            "wattlet_interval_work_seconds",
            "Time the last interval's work took: reading the kernel counters and the power source, and attributing.",
            p.work.as_secs_f64(),
        )?;
        let power_errors = p.power.as_ref().map(|w| (w.source.as_str(), w.errors));
        counter_family(
            &mut enc,
            "wattlet_read_errors",
            "Reads that failed, by source: the kernel counters, or the power source's files and counters (see the agent's log).",
            std::iter::once(([("source", "kernel")], p.read_errors as f64))
                .chain(power_errors.map(|(source, n)| ([("source", source)], n as f64))),
        )?;
        {
            let pmu = match s.pmu {
                PmuCounters::None => "none",
                PmuCounters::Hardware => "hardware",
                PmuCounters::SoftwareStandIn => "software_stand_in",
            };
            let info = Info::new([("counters", pmu)]);
            let m = enc.encode_descriptor(
                "wattlet_pmu",
                "Which PMU counters feed cycles and instructions (none: CPU time only).",
                None,
                info.metric_type(),
            )?;
            info.encode(m)?;
        }

        if self.compat == Some(Compat::Kepler) && p.power.is_some() {
            kepler::encode(&mut enc, &p.attribution, r, &self.node)?;
        }
        Ok(())
    }
}

fn container_labels(c: &ContainerRow) -> [(&'static str, &str); 4] {
    [
        ("container_id", c.id.as_str()),
        ("container", c.name.as_str()),
        ("pod", c.pod.as_str()),
        ("namespace", c.namespace.as_str()),
    ]
}

fn pod_labels(p: &PodRow) -> [(&'static str, &str); 3] {
    [
        ("pod", p.name.as_str()),
        ("namespace", p.namespace.as_str()),
        ("pod_uid", p.uid.as_str()),
    ]
}

fn idle_policy_name(p: IdlePolicy) -> &'static str {
    match p {
        IdlePolicy::Node => "node",
        IdlePolicy::Proportional => "proportional",
        IdlePolicy::Even => "even",
    }
}

fn encode_node_energy(
    enc: &mut DescriptorEncoder,
    a: &AttributionSnapshot,
    r: &Rows,
) -> Result<(), fmt::Error> {
    let est = r.estimated;
    counter_family(
        enc,
        "wattlet_node_energy_joules",
        "Energy of the node since the agent started, per zone, split into idle (the node's static baseline, see wattlet_node_idle_power_watts) and active (the rest, attributed to workloads). Zones overlap (core and uncore are part of package): never sum zones. estimated=\"true\" when the power is modelled (no sensor), not measured.",
        r.zones.iter().zip(&a.node).flat_map(|(z, n)| {
            [
                (
                    [("zone", z.as_str()), ("mode", "active"), ("estimated", est)],
                    n.active_joules,
                ),
                (
                    [("zone", z.as_str()), ("mode", "idle"), ("estimated", est)],
                    n.idle_joules,
                ),
            ]
        }),
    )?;
    gauge_family(
        enc,
        "wattlet_node_power_watts",
        "Average power of the node over the last interval, per zone, idle and active. Never sum zones. estimated=\"true\" when modelled.",
        r.zones.iter().zip(&a.node).flat_map(|(z, n)| {
            [("active", n.active_watts), ("idle", n.idle_watts)]
                .into_iter()
                .filter_map(move |(mode, w)| {
                    w.map(|w| {
                        (
                            [("zone", z.as_str()), ("mode", mode), ("estimated", est)],
                            w,
                        )
                    })
                })
        }),
    )?;
    gauge_family(
        enc,
        "wattlet_node_idle_power_watts",
        "The node's idle (static) power in use, per zone, and how it is known: configured (--power.idle-watts), model (the power model's idle figure), regression (intercept of power against busy ratio over --attribution.idle-window) or minimum (lowest power seen, until load varies enough for a regression).",
        r.zones.iter().zip(&a.node).filter_map(|(z, n)| {
            n.idle_estimate.map(|(w, method)| {
                (
                    [
                        ("zone", z.as_str()),
                        ("method", method.as_str()),
                        ("estimated", est),
                    ],
                    w,
                )
            })
        }),
    )
}

fn encode_power_source(enc: &mut DescriptorEncoder, w: &PowerSnapshot) -> Result<(), fmt::Error> {
    let estimated = if w.estimated { "true" } else { "false" };
    {
        let info = Info::new([
            ("source", w.source.as_str()),
            ("estimated", estimated),
            ("model", w.model_family.as_deref().unwrap_or("")),
        ]);
        let m = enc.encode_descriptor(
            "wattlet_node_power_source",
            "Where node energy comes from: perf (RAPL through the perf power PMU), powercap (RAPL through sysfs), hwmon (sensors), or model (estimated from CPU busy time; model names the coefficient set).",
            None,
            info.metric_type(),
        )?;
        info.encode(m)?;
    }
    gauge(
        enc,
        "wattlet_power_reading_timestamp_seconds",
        "When the power source was last read (Unix time).",
        w.at_unix,
    )?;
    let dropped: Vec<(String, &str, u64)> = w
        .dropped
        .iter()
        .map(|((zone, reason), n)| (escape_label_value(zone), reason.as_str(), *n))
        .collect();
    counter_family(
        enc,
        "wattlet_power_readings_dropped",
        "Energy readings dropped as implausible instead of being exported as spikes: backwards (a counter went back without a plausible wrap) or above_ceiling (more power than --power.ceiling-watts).",
        dropped
            .iter()
            .map(|(zone, reason, n)| ([("zone", zone.as_str()), ("reason", *reason)], *n)),
    )
}

/// prometheus-client writes label values as given; the exposition format needs `\\`, `\"` and
/// `\n` escaped, and cgroup names may contain any of them.
pub fn escape_label_value(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn counter_family<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> Result<(), fmt::Error> {
    let ty = ConstCounter::new(0u64).metric_type();
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), fmt::Error> {
    let ty = ConstGauge::new(0.0).metric_type();
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// Builds the registry: build info, and the snapshot collector; `node` on every series.
pub fn registry(latest: Arc<Latest>, node: &str, compat: Option<Compat>) -> Registry {
    let mut reg = Registry::with_labels(
        [(
            std::borrow::Cow::Borrowed("node"),
            std::borrow::Cow::Owned(node.to_owned()),
        )]
        .into_iter(),
    );
    reg.register(
        "wattlet_build",
        "Wattlet's version",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    reg.register_collector(Box::new(SnapshotCollector {
        latest,
        compat,
        node: escape_label_value(node),
    }));
    reg
}

/// Renders OpenMetrics text.
pub fn render(reg: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, reg)?;
    Ok(out)
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites prometheus-client's OpenMetrics output as the classic Prometheus text format
/// (0.0.4), for scrapers and tools that do not ask for OpenMetrics (curl, promtool, older
/// agents): counter families are named with their `_total` suffix, `info` becomes a gauge named
/// `_info`, and the `# EOF` and `# UNIT` lines go.
pub fn openmetrics_to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, ty) = match ty {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, help)) = pending_help.take() {
                out.push_str(&format!("# HELP {name} {help}\n"));
            }
            out.push_str(&format!("# TYPE {name} {ty}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    latest: Arc<Latest>,
}

/// Binds the listener first so that a taken port is an error at start, not later.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr}: pick a free address with --web.listen-address")
    })
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    latest: Arc<Latest>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = AppState {
        registry: Arc::new(registry),
        latest,
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>Wattlet</title></head><body><h1>Wattlet</h1>\
         <p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a> · \
         <a href=\"/readyz\">/readyz</a></p></body></html>\n",
    )
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match render(&s.registry) {
        Ok(body) if wants_openmetrics => {
            (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body)
        }
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT_004)],
            openmetrics_to_text_004(&body),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "encoding metrics failed\n".to_owned(),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.latest.get() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot taken yet\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernel::CgroupSample;
    use node_agent_common::CgroupCounters;

    fn snapshot() -> CountersSnapshot {
        let mut cgroups = BTreeMap::new();
        let c = |ns, v, i| CgroupCounters {
            cpu_ns: ns,
            switches_voluntary: v,
            switches_involuntary: i,
            ..Default::default()
        };
        cgroups.insert(
            1,
            CgroupSample {
                path: Some("/".into()),
                counters: c(2_000_000_000, 5, 6),
                gone: false,
            },
        );
        cgroups.insert(
            7,
            CgroupSample {
                path: Some("/a b\"c".into()),
                counters: c(500_000_000, 1, 0),
                gone: false,
            },
        );
        cgroups.insert(
            8,
            CgroupSample {
                path: Some("/a b\"c".into()),
                counters: c(250_000_000, 0, 1),
                gone: true,
            },
        );
        CountersSnapshot {
            at: Duration::ZERO,
            cgroups,
            cpus: vec![crate::kernel::CpuTime {
                busy_ns: 3_000_000_000,
                idle_ns: 1_000_000_000,
            }],
            cpus_at: Duration::ZERO,
            overflow: CgroupCounters::default(),
            map_entries: 2,
            map_capacity: 16,
            pmu: PmuCounters::None,
            map_deletions: 1,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "6f1c3a2e-8a55-4b3e-9a4e-2d0f4c1b7e21";

    fn attribution() -> AttributionSnapshot {
        use crate::{
            attribution::{IdleMethod, NodeZone, WorkloadTotals},
            workload::{Container, Qos},
        };
        let c = |ns, v, i| CgroupCounters {
            cpu_ns: ns,
            switches_voluntary: v,
            switches_involuntary: i,
            ..Default::default()
        };
        let zone = |z: &str, a, i, w| NodeZone {
            zone: z.into(),
            active_joules: a,
            idle_joules: i,
            kept_joules: i,
            active_watts: w,
            idle_watts: w.map(|_| 1.0),
            idle_estimate: Some((1.0, IdleMethod::Model)),
        };
        AttributionSnapshot {
            zones: vec!["dram".into(), "package".into()],
            node: vec![
                zone("dram", 0.0, 3.0, None),
                zone("package", 100.5, 20.0, Some(20.1)),
            ],
            workloads: vec![
                WorkloadTotals {
                    workload: Workload::Container(Container {
                        runtime: "containerd",
                        id: ID.into(),
                        pod_uid: Some(UID.into()),
                        qos: Some(Qos::BestEffort),
                    }),
                    running: true,
                    counters: c(1_500_000_000, 3, 4),
                    joules: vec![0.0, 75.0],
                    watts: vec![None, Some(15.0)],
                },
                WorkloadTotals {
                    workload: Workload::Cgroup("/".into()),
                    running: true,
                    counters: c(2_000_000_000, 5, 6),
                    joules: vec![0.0, 20.0],
                    watts: vec![None, Some(4.0)],
                },
                WorkloadTotals {
                    workload: Workload::Cgroup("/a b\"c".into()),
                    running: false,
                    counters: c(750_000_000, 1, 1),
                    joules: vec![0.0, 5.5],
                    watts: vec![None, None],
                },
            ],
            shared_by_cycles: false,
            agent_cpu_seconds: 0.25,
            agent_joules: vec![0.0, 0.5],
            pods: vec![crate::attribution::PodTotals {
                uid: UID.into(),
                running: true,
                joules: vec![0.0, 75.0],
                watts: vec![None, Some(15.0)],
            }],
            expired_joules: vec![0.0, 2.5],
        }
    }

    fn publish(latest: &Latest) {
        latest.publish(Published::new(
            snapshot(),
            Some(power()),
            attribution(),
            IdlePolicy::Node,
            None,
            Duration::from_millis(3),
            0,
        ));
    }

    #[test]
    fn renders_the_latest_snapshot() {
        let latest = Arc::new(Latest::default());
        let reg = registry(latest.clone(), "n1", None);
        let empty = render(&reg).unwrap();
        assert!(!empty.contains("wattlet_node_cpu_seconds_total"));
        publish(&latest);
        let text = render(&reg).unwrap();
        assert!(text.ends_with("# EOF\n"));
        let c = format!("container_id=\"{ID}\",container=\"\",pod=\"\",namespace=\"\"");
        for line in [
            "wattlet_node_cpu_seconds_total{node=\"n1\",mode=\"busy\"} 3.0".to_owned(),
            "wattlet_node_energy_joules_total{node=\"n1\",zone=\"package\",mode=\"active\",estimated=\"true\"} 100.5".into(),
            "wattlet_node_energy_joules_total{node=\"n1\",zone=\"package\",mode=\"idle\",estimated=\"true\"} 20.0".into(),
            "wattlet_node_power_watts{node=\"n1\",zone=\"package\",mode=\"active\",estimated=\"true\"} 20.1".into(),
            "wattlet_node_idle_power_watts{node=\"n1\",zone=\"package\",method=\"model\",estimated=\"true\"} 1.0".into(),
            "wattlet_node_power_source_info{node=\"n1\",source=\"model\",estimated=\"true\",model=\"average\"} 1".into(),
            "wattlet_power_readings_dropped_total{node=\"n1\",zone=\"dram\",reason=\"backwards\"} 2".into(),
            "wattlet_read_errors_total{node=\"n1\",source=\"model\"} 1".into(),
            format!("wattlet_container_energy_joules_total{{node=\"n1\",zone=\"package\",estimated=\"true\",{c}}} 75.0"),
            format!("wattlet_container_power_watts{{node=\"n1\",zone=\"package\",estimated=\"true\",{c}}} 15.0"),
            format!("wattlet_container_cpu_seconds_total{{node=\"n1\",{c}}} 1.5"),
            format!("wattlet_container_context_switches_total{{node=\"n1\",{c},kind=\"involuntary\"}} 4"),
            format!("wattlet_pod_energy_joules_total{{node=\"n1\",zone=\"package\",estimated=\"true\",pod=\"\",namespace=\"\",pod_uid=\"{UID}\"}} 75.0"),
            "wattlet_cgroup_energy_joules_total{node=\"n1\",zone=\"package\",estimated=\"true\",cgroup=\"/\"} 20.0".into(),
            "wattlet_cgroup_cpu_seconds_total{node=\"n1\",cgroup=\"/\"} 2.0".into(),
            // Label values escaped.
            "wattlet_cgroup_cpu_seconds_total{node=\"n1\",cgroup=\"/a b\\\"c\"} 0.75".into(),
            "wattlet_agent_energy_joules_total{node=\"n1\",zone=\"package\",estimated=\"true\"} 0.5".into(),
            "wattlet_attribution_info{node=\"n1\",idle_policy=\"node\",shared_by=\"cpu_time\"} 1".into(),
            "wattlet_expired_energy_joules_total{node=\"n1\",zone=\"package\",estimated=\"true\"} 2.5".into(),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        for absent in [
            "wattlet_cgroup_cpu_cycles",
            "wattlet_node_power_watts{node=\"n1\",zone=\"dram\"",
            "kepler_",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn kepler_names_on_request() {
        let latest = Arc::new(Latest::default());
        let reg = registry(latest.clone(), "n1", Some(Compat::Kepler));
        publish(&latest);
        let text = render(&reg).unwrap();
        for line in [
            "kepler_node_cpu_joules_total{node=\"n1\",zone=\"package\",path=\"\",node_name=\"n1\"} 120.5".to_owned(),
            "kepler_node_cpu_idle_joules_total{node=\"n1\",zone=\"package\",path=\"\",node_name=\"n1\"} 20.0".into(),
            "kepler_node_cpu_watts{node=\"n1\",zone=\"package\",path=\"\",node_name=\"n1\"} 21.1".into(),
            format!("kepler_container_cpu_joules_total{{node=\"n1\",container_id=\"{ID}\",container_name=\"\",runtime=\"containerd\",state=\"running\",zone=\"package\",pod_id=\"{UID}\",node_name=\"n1\"}} 75.0"),
            format!("kepler_pod_cpu_watts{{node=\"n1\",pod_id=\"{UID}\",pod_name=\"\",pod_namespace=\"\",state=\"running\",zone=\"package\",node_name=\"n1\"}} 15.0"),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    fn power() -> PowerSnapshot {
        use crate::power::{DropReason, SourceKind, ZoneSample};
        PowerSnapshot {
            source: SourceKind::Model,
            estimated: true,
            model_family: Some("average".into()),
            at_unix: 1.7e9,
            at: Duration::from_secs(100),
            zones: vec![
                ZoneSample {
                    zone: "dram".into(),
                    joules: 3.0,
                    watts: None,
                },
                ZoneSample {
                    zone: "package".into(),
                    joules: 120.5,
                    watts: Some(24.1),
                },
            ],
            dropped: [(("dram".to_owned(), DropReason::Backwards), 2)]
                .into_iter()
                .collect(),
            errors: 1,
        }
    }

    #[test]
    fn converts_to_classic_text() {
        let om = "# HELP a_seconds Help text.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\n\
                  a_seconds_total{x=\"1\"} 2.0\n# HELP b Build.\n# TYPE b info\nb_info{v=\"1\"} 1\n\
                  # TYPE g gauge\ng 3\n# EOF\n";
        assert_eq!(
            openmetrics_to_text_004(om),
            "# HELP a_seconds_total Help text.\n# TYPE a_seconds_total counter\n\
             a_seconds_total{x=\"1\"} 2.0\n# HELP b_info Build.\n# TYPE b_info gauge\n\
             b_info{v=\"1\"} 1\n# TYPE g gauge\ng 3\n"
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("/plain.slice"), "/plain.slice");
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
