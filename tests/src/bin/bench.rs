//! `cargo xtask bench`. Figures are printed, not asserted.
//! - Cost per event of the sched_switch accounting program, measured by the kernel
//!   (BPF_ENABLE_STATS: run_time_ns / run_cnt) in the same run and under the same load as two
//!   reference programs on the same tracepoint: an empty one, and a "floor" that only reads the
//!   clock and the cgroup id and stores to a per-CPU array. They come from the benchmark's own
//!   eBPF object (node-agent-ebpf's `node-agent-bench` binary, which xtask builds and names in
//!   WATTLET_BENCH_OBJECT): the agent's object carries only the accounting program.
//! - One full read of every zone of a two-socket powercap fixture tree.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    EbpfLoader,
    sys::{Stats, enable_stats},
};
use node_agent::kernel::attach;
use node_agent_common::{DEFAULT_MAX_CGROUPS, names};

const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(3);
const SLEEPERS: usize = 4;

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the benchmark loads eBPF programs: run `sudo -E cargo xtask bench`");
    }
    let object = std::env::var_os("WATTLET_BENCH_OBJECT").context(
        "WATTLET_BENCH_OBJECT is not set: run `sudo -E cargo xtask bench`, which builds the \
         benchmark's eBPF object and names it there",
    )?;
    let _stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?;
    let programs = [names::PROGRAM_EMPTY, names::PROGRAM_FLOOR, names::PROGRAM];
    let mut time = [0u128; 3];
    let mut count = [0u64; 3];

    println!(
        "sched_switch cost per event — {ROUNDS} rounds × {:?}, load: {SLEEPERS} threads sleeping 20µs in a loop; \
         all three programs attached together, attach order rotated each round",
        ROUND
    );
    for round in 0..ROUNDS {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CGROUPS, DEFAULT_MAX_CGROUPS)
            .override_global(names::PMU_FLAGS, &0u32, true)
            .load_file(&object)
            .with_context(|| format!("loading {}", object.display()))?;
        for k in 0..programs.len() {
            attach(&mut ebpf, programs[(k + round) % programs.len()])?;
        }
        let before: Vec<(Duration, u64)> = programs
            .iter()
            .map(|p| stats(&ebpf, p))
            .collect::<Result<_>>()?;
        load_for(ROUND);
        for (i, p) in programs.iter().enumerate() {
            let (t, c) = stats(&ebpf, p)?;
            time[i] += (t - before[i].0).as_nanos();
            count[i] += c - before[i].1;
        }
    }

    let per_event: Vec<f64> = (0..3)
        .map(|i| time[i] as f64 / count[i].max(1) as f64)
        .collect();
    let floor = per_event[1];
    for (i, name) in ["empty", "floor", "wattlet"].iter().enumerate() {
        println!(
            "  {name:<8} {:>7.1} ns/event  ({:>9} events)  {:.2}× floor",
            per_event[i],
            count[i],
            per_event[i] / floor
        );
    }
    let ratio = per_event[2] / floor;
    println!(
        "wattlet sched_switch: {:.1} ns/event = {ratio:.2}× the floor (target ≤ 1.5×); above empty: {:.1} ns vs floor's {:.1} ns",
        per_event[2],
        per_event[2] - per_event[0],
        floor - per_event[0]
    );
    power_read()?;
    render()?;
    agent_cost()?;
    Ok(())
}

/// One full read of a two-socket powercap tree (package, core, uncore, dram per socket: 8
/// counters), as the agent does each interval: median and 99th percentile over many reads.
fn power_read() -> Result<()> {
    use node_agent::power::{ReadContext, powercap};
    const READS: usize = 5_000;
    let root = std::env::temp_dir().join(format!("wattlet-bench-powercap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for socket in 0..2 {
        for (id, name) in [
            (format!("intel-rapl:{socket}"), format!("package-{socket}")),
            (format!("intel-rapl:{socket}:0"), "core".to_owned()),
            (format!("intel-rapl:{socket}:1"), "uncore".to_owned()),
            (format!("intel-rapl:{socket}:2"), "dram".to_owned()),
        ] {
            let d = root.join("class/powercap").join(id);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("name"), format!("{name}\n"))?;
            std::fs::write(d.join("energy_uj"), "123456789\n")?;
            std::fs::write(d.join("max_energy_range_uj"), "262143328850\n")?;
        }
    }
    let mut source = powercap::open(&root, node_agent::power::zone::DEFAULT_CEILING_WATTS)?;
    let mut took = Vec::with_capacity(READS);
    let start = Instant::now();
    for _ in 0..READS {
        let ctx = ReadContext {
            at: start.elapsed(),
            busy: None,
        };
        let t = Instant::now();
        let r = source.source.read(&ctx);
        took.push(t.elapsed());
        assert_eq!(r.zones.len(), 4);
    }
    let _ = std::fs::remove_dir_all(&root);
    took.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = us(took[READS / 2]);
    println!(
        "powercap read, two-socket fixture ({}): median {median:.1} µs, p99 {:.1} µs, {:.2} µs per counter",
        source.description,
        us(took[READS * 99 / 100]),
        median / 8.0
    );
    Ok(())
}

fn stats(ebpf: &aya::Ebpf, name: &str) -> Result<(Duration, u64)> {
    let info = ebpf
        .program(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .info()?;
    Ok((info.run_time(), info.run_count()))
}

/// Threads that sleep briefly in a loop: a steady stream of context switches.
fn load_for(d: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..SLEEPERS)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_micros(20));
                }
            })
        })
        .collect();
    let end = Instant::now() + d;
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
}

/// A snapshot of `containers` containers (two per pod) and 50 cgroups, two zones.
fn big_snapshot(containers: usize) -> node_agent::snapshot::Snapshot {
    use node_agent::{
        attribution::{
            AttributedCarbon, AttributionSnapshot, Emissions, IdleMethod, IdlePolicy,
            IntervalCarbon, NodeGrams, NodeZone, SourceGrams, WorkloadTotals,
        },
        carbon::{Reading, SourceKind as Intensity, WORLD_AVERAGE},
        kernel::{CountersSnapshot, CpuTime, PmuCounters},
        power::{PowerSnapshot, SourceKind, ZoneSample},
        workload::{Container, Qos, Workload},
    };
    use node_agent_common::CgroupCounters;
    let zones = vec!["dram".to_owned(), "package".to_owned()];
    // Carbon as a default run has it: one intensity source, no embodied emissions.
    let grams = |joules: &[f64]| Emissions {
        operational: vec![SourceGrams {
            source: Intensity::Default,
            grams: joules.iter().map(|j| j * WORLD_AVERAGE / 3.6e6).collect(),
        }],
        embodied: 0.0,
    };
    let counters = |i: usize| CgroupCounters {
        cpu_ns: 1_000_000_000 + i as u64,
        switches_voluntary: 100 + i as u64,
        switches_involuntary: 10 + i as u64,
        ..Default::default()
    };
    let mut workloads: Vec<WorkloadTotals> = (0..containers)
        .map(|i| WorkloadTotals {
            workload: Workload::Container(Container {
                runtime: "containerd",
                id: format!("{i:064x}").into(),
                pod_uid: Some(format!("{:08x}-0000-4000-8000-{:012x}", i / 2, i / 2).into()),
                qos: Some(Qos::Burstable),
            }),
            running: true,
            counters: counters(i),
            joules: vec![1.5 + i as f64, 12.25 + i as f64],
            watts: vec![Some(0.5), Some(3.25)],
            emissions: grams(&[1.5 + i as f64, 12.25 + i as f64]),
        })
        .collect();
    workloads.extend((0..50).map(|i| WorkloadTotals {
        workload: Workload::Cgroup(format!("/system.slice/unit-{i}.service").into()),
        running: true,
        counters: counters(i),
        joules: vec![0.5, 2.0],
        watts: vec![Some(0.1), Some(0.2)],
        emissions: grams(&[0.5, 2.0]),
    }));
    let node = |z: &str| NodeZone {
        zone: z.into(),
        active_joules: 1e6,
        idle_joules: 4e5,
        kept_joules: 4e5,
        active_watts: Some(60.0),
        idle_watts: Some(40.0),
        idle_estimate: Some((40.0, IdleMethod::Regression)),
        emissions: vec![NodeGrams {
            source: Intensity::Default,
            active: 131.0,
            idle: 52.5,
            kept: 52.5,
        }],
    };
    let attribution = AttributionSnapshot {
        node: zones.iter().map(|z| node(z)).collect(),
        zones: zones.clone(),
        workloads,
        shared_by_cycles: false,
        agent_cpu_seconds: 1.0,
        agent_joules: vec![0.1, 0.2],
        pods: (0..containers / 2)
            .map(|i| node_agent::attribution::PodTotals {
                uid: format!("{i:08x}-0000-4000-8000-{i:012x}").into(),
                running: true,
                joules: vec![3.0 + i as f64, 24.5 + i as f64],
                watts: vec![Some(1.0), Some(6.5)],
                emissions: grams(&[3.0 + i as f64, 24.5 + i as f64]),
            })
            .collect(),
        expired_joules: vec![0.0, 0.0],
        carbon: Some(AttributedCarbon {
            in_force: IntervalCarbon {
                reading: Reading {
                    grams_per_kwh: WORLD_AVERAGE,
                    source: Intensity::Default,
                    zone: None,
                    is_estimated: None,
                    fetched_at: std::time::Instant::now(),
                    datetime: None,
                },
                pue: 1.0,
                embodied_grams_per_second: None,
            },
            embodied_active: 0.0,
            embodied_idle: 0.0,
            expired: grams(&[0.0, 0.0]),
        }),
    };
    let power = PowerSnapshot {
        source: SourceKind::Powercap,
        estimated: false,
        model_family: None,
        at_unix: 1.7e9,
        at: Duration::from_secs(1),
        zones: zones
            .iter()
            .map(|z| ZoneSample {
                zone: z.clone(),
                joules: 1.4e6,
                watts: Some(100.0),
            })
            .collect(),
        dropped: Default::default(),
        errors: 0,
    };
    let counters = CountersSnapshot {
        at: Duration::from_secs(1),
        cgroups: Default::default(),
        cpus: vec![CpuTime::default(); 2],
        cpus_at: Duration::from_secs(1),
        overflow: CgroupCounters::default(),
        map_entries: containers,
        map_capacity: 4096,
        pmu: PmuCounters::None,
        map_deletions: 0,
    };
    node_agent::snapshot::Snapshot::new(
        counters,
        Some(power),
        attribution,
        IdlePolicy::Node,
        None,
        Duration::ZERO,
        0,
    )
}

/// Rendering /metrics with 1,000 containers: OpenMetrics (what Prometheus asks for), classic
/// text (OpenMetrics rewritten), and both with Kepler's names added.
fn render() -> Result<()> {
    use node_agent::{config::Compat, exporter};
    const RUNS: usize = 50;
    let latest = std::sync::Arc::new(node_agent::snapshot::Latest::default());
    latest.publish(big_snapshot(1000));
    let line = |name: &str, compat: Option<Compat>, classic: bool| -> Result<()> {
        let reg = exporter::registry(latest.clone(), "bench-node", compat);
        let mut took = Vec::with_capacity(RUNS);
        let mut series = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let om = exporter::render(&reg).map_err(|e| anyhow!("render: {e}"))?;
            let body = if classic {
                exporter::openmetrics_to_text_004(&om)
            } else {
                om
            };
            took.push(t.elapsed());
            series = body.lines().filter(|l| !l.starts_with('#')).count();
        }
        took.sort_unstable();
        println!(
            "  {name:<28} {series:>6} series: median {:.2} ms, p90 {:.2} ms (target ≤ 10 ms)",
            took[RUNS / 2].as_secs_f64() * 1e3,
            took[RUNS * 9 / 10].as_secs_f64() * 1e3
        );
        Ok(())
    };
    println!("/metrics render, 1,000 containers in 500 pods, 50 cgroups, 2 zones — {RUNS} runs");
    line("OpenMetrics", None, false)?;
    line("classic text", None, true)?;
    line("OpenMetrics + Kepler names", Some(Compat::Kepler), false)?;
    Ok(())
}

/// The agent's own cost with 1,000 live cgroups, at a 1 s interval, scraped every 5 s: CPU per
/// interval (the agent runs in a cgroup of its own, whose cpu.stat is exact) and resident memory
/// (VmRSS).
fn agent_cost() -> Result<()> {
    use integration_tests::{Running, TestCgroup, agent_binary, free_port, http_get, wait_for};
    const CGROUPS: usize = 1000;
    const MEASURE: Duration = Duration::from_secs(30);
    let base = TestCgroup::new("bench")?;
    let mut cgroups = Vec::with_capacity(CGROUPS);
    let mut tasks = Vec::with_capacity(CGROUPS);
    for i in 0..CGROUPS {
        let cg = TestCgroup::create_at(base.path.join(format!("cg-{i}")))?;
        // A process in each that wakes every second (tail polling /dev/null), so that every
        // cgroup is live in the kernel's map at every interval.
        tasks.push(Running(
            cg.spawn(
                std::process::Command::new("tail")
                    .args(["---disable-inotify", "-f", "-s", "1", "/dev/null"])
                    .stdout(std::process::Stdio::null()),
            )?,
        ));
        cgroups.push(cg);
    }
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let own = TestCgroup::create_at(base.path.join("agent"))?;
    let agent = Running(
        own.spawn(
            std::process::Command::new(agent_binary()?)
                // Depth 3: each test cgroup is its own series, as 1,000 containers would be.
                .args(["run", "--interval", "1s", "--attribution.cgroup-depth", "3"])
                .args(["--web.listen-address", &addr])
                .stderr(std::process::Stdio::null()),
        )?,
    );
    let pid = agent.0.id();
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(&addr, "/readyz", None)
            .ok()
            .filter(|(s, _)| *s == 200)
    })?;
    thread::sleep(Duration::from_secs(3));
    let cpu = || -> Result<f64> { Ok(own.usage_ns()? as f64 / 1e9) };
    let (c0, t0) = (cpu()?, Instant::now());
    let mut series = 0;
    while t0.elapsed() < MEASURE {
        let (_, body) = http_get(&addr, "/metrics", None)?;
        series = body.lines().filter(|l| !l.starts_with('#')).count();
        thread::sleep(Duration::from_secs(5));
    }
    let used = cpu()? - c0;
    let wall = t0.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    drop(agent);
    drop(own);
    drop(tasks);
    drop(cgroups);
    drop(base);
    println!(
        "agent with {CGROUPS} live cgroups ({series} series), 1 s interval, scraped every 5 s: \
         {:.2} ms CPU per interval = {:.3}% of one core (target ≤ 0.5%); RSS {:.1} MiB (target ≤ 40 MiB)",
        used / wall * 1e3,
        used / wall * 100.0,
        rss_kib / 1024.0
    );
    Ok(())
}
