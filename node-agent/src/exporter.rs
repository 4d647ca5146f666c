//! The Prometheus exporter: scrape-time collectors that encode the latest published snapshot.
//! A scrape never measures and never waits on measurement.

use std::{
    collections::BTreeMap,
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
    kernel::{CountersSnapshot, PmuCounters},
    power::PowerSnapshot,
};

/// What the measuring loop hands to exporters each interval.
#[derive(Debug)]
pub struct Published {
    pub counters: CountersSnapshot,
    /// Node energy, if a power source was read.
    pub power: Option<PowerSnapshot>,
    /// How long the interval's read took.
    pub work: Duration,
    /// Reads that failed so far.
    pub read_errors: u64,
    /// Per-cgroup series, built once here rather than at every scrape: escaped path label →
    /// totals of every cgroup with that path.
    by_cgroup: Vec<(String, CgroupCounters)>,
}

/// Label of removed cgroups whose path the agent never saw.
const UNSEEN: &str = "(removed before it was seen)";

impl Published {
    pub fn new(
        counters: CountersSnapshot,
        power: Option<PowerSnapshot>,
        work: Duration,
        read_errors: u64,
    ) -> Self {
        // One series per cgroup path; removed cgroups keep their final totals for the retention.
        // Two cgroups can share a path (removed and re-created): their totals are summed.
        let mut by_path: BTreeMap<String, CgroupCounters> = BTreeMap::new();
        if counters.retired_unseen != CgroupCounters::default() {
            by_path.insert(UNSEEN.to_owned(), counters.retired_unseen);
        }
        for c in counters.cgroups.values() {
            let path = c.path.as_deref().unwrap_or(UNSEEN);
            by_path
                .entry(escape_label_value(path))
                .or_default()
                .add(&c.counters);
        }
        Self {
            counters,
            power,
            work,
            read_errors,
            by_cgroup: by_path.into_iter().collect(),
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
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(p) = self.latest.get() else {
            return Ok(());
        };
        let s = &p.counters;

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
            encode_power(&mut enc, power)?;
        }

        let by_path = &p.by_cgroup;
        counter_family(
            &mut enc,
            "wattlet_cgroup_cpu_seconds",
            "On-CPU time of the tasks of each cgroup (path under the cgroup v2 root), counted in the kernel.",
            by_path
                .iter()
                .map(|(p, c)| ([("cgroup", p.as_str())], c.cpu_ns as f64 / NS_PER_S)),
        )?;
        counter_family(
            &mut enc,
            "wattlet_cgroup_context_switches",
            "Context switches of each cgroup's tasks: voluntary (blocked or slept) or involuntary (preempted).",
            by_path.iter().flat_map(|(p, c)| {
                [
                    (
                        [("cgroup", p.as_str()), ("kind", "voluntary")],
                        c.switches_voluntary,
                    ),
                    (
                        [("cgroup", p.as_str()), ("kind", "involuntary")],
                        c.switches_involuntary,
                    ),
                ]
            }),
        )?;
        if s.pmu != PmuCounters::None {
            counter_family(
                &mut enc,
                "wattlet_cgroup_cpu_cycles",
                "CPU cycles while each cgroup's tasks ran (PMU).",
                by_path
                    .iter()
                    .map(|(p, c)| ([("cgroup", p.as_str())], c.cycles as f64)),
            )?;
            counter_family(
                &mut enc,
                "wattlet_cgroup_cpu_instructions",
                "Instructions retired while each cgroup's tasks ran (PMU).",
                by_path
                    .iter()
                    .map(|(p, c)| ([("cgroup", p.as_str())], c.instructions as f64)),
            )?;
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
            "Time the last interval's reads of the kernel counters and the power source took.",
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
        Ok(())
    }
}

fn encode_power(enc: &mut DescriptorEncoder, w: &PowerSnapshot) -> Result<(), fmt::Error> {
    let estimated = if w.estimated { "true" } else { "false" };
    let zones: Vec<(String, &crate::power::ZoneSample)> = w
        .zones
        .iter()
        .map(|z| (escape_label_value(&z.zone), z))
        .collect();
    counter_family(
        enc,
        "wattlet_node_energy_joules",
        "Energy of the node since the agent started, per zone. Zones overlap (core and uncore are part of package): never sum zones. estimated=\"true\" when the power is modelled (no sensor), not measured.",
        zones.iter().map(|(zone, z)| {
            (
                [("zone", zone.as_str()), ("estimated", estimated)],
                z.joules,
            )
        }),
    )?;
    {
        let g = ConstGauge::new(0.0);
        let mut m = enc.encode_descriptor(
            "wattlet_node_power_watts",
            "Average power of the node over the last interval, per zone. Zones overlap: never sum zones. estimated=\"true\" when modelled.",
            None,
            g.metric_type(),
        )?;
        for (zone, z) in &zones {
            if let Some(watts) = z.watts {
                ConstGauge::new(watts).encode(
                    m.encode_family(&[("zone", zone.as_str()), ("estimated", estimated)])?,
                )?;
            }
        }
    }
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
    )?;
    Ok(())
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

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// Builds the registry: build info, and the snapshot collector; `node` on every series.
pub fn registry(latest: Arc<Latest>, node: &str) -> Registry {
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
    reg.register_collector(Box::new(SnapshotCollector { latest }));
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
                carried: CgroupCounters::default(),
            },
        );
        cgroups.insert(
            7,
            CgroupSample {
                path: Some("/a b\"c".into()),
                counters: c(500_000_000, 1, 0),
                gone: false,
                carried: CgroupCounters::default(),
            },
        );
        cgroups.insert(
            8,
            CgroupSample {
                path: Some("/a b\"c".into()),
                counters: c(250_000_000, 0, 1),
                gone: true,
                carried: CgroupCounters::default(),
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
            retired_unseen: CgroupCounters::default(),
        }
    }

    #[test]
    fn renders_the_latest_snapshot() {
        let latest = Arc::new(Latest::default());
        let reg = registry(latest.clone(), "n1");
        let empty = render(&reg).unwrap();
        assert!(!empty.contains("wattlet_node_cpu_seconds_total"));
        latest.publish(Published::new(
            snapshot(),
            Some(power()),
            Duration::from_millis(3),
            0,
        ));
        let text = render(&reg).unwrap();
        assert!(
            text.contains("wattlet_node_cpu_seconds_total{node=\"n1\",mode=\"busy\"} 3.0"),
            "{text}"
        );
        assert!(
            text.contains("wattlet_cgroup_cpu_seconds_total{node=\"n1\",cgroup=\"/\"} 2.0"),
            "{text}"
        );
        // Same path twice (removed and re-created): summed, one series, label escaped.
        assert!(text.contains("cgroup=\"/a b\\\"c\"} 0.75"), "{text}");
        assert!(
            !text.contains("wattlet_cgroup_cpu_cycles"),
            "no PMU, no cycles series"
        );
        assert!(text.ends_with("# EOF\n"));
        for line in [
            "wattlet_node_energy_joules_total{node=\"n1\",zone=\"package\",estimated=\"true\"} 120.5",
            "wattlet_node_power_watts{node=\"n1\",zone=\"package\",estimated=\"true\"} 24.1",
            "wattlet_node_power_source_info{node=\"n1\",source=\"model\",estimated=\"true\",model=\"average\"} 1",
            "wattlet_power_readings_dropped_total{node=\"n1\",zone=\"dram\",reason=\"backwards\"} 2",
            "wattlet_read_errors_total{node=\"n1\",source=\"model\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            !text.contains("wattlet_node_power_watts{node=\"n1\",zone=\"dram\""),
            "no power before a second reading"
        );
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
