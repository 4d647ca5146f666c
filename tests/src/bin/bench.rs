//! `cargo xtask bench`. Figures are printed (the churn, flood and outage parts also check what
//! must hold, and fail the benchmark otherwise).
//! - Cost per event of the sched_switch accounting program, measured by the kernel
//!   (BPF_ENABLE_STATS: run_time_ns / run_cnt) in the same run and under the same load as two
//!   reference programs on the same tracepoint: an empty one, and a "floor" that only reads the
//!   clock and the cgroup id and stores to a per-CPU array. They come from the benchmark's own
//!   eBPF object (node-agent-ebpf's `node-agent-bench` binary, which xtask builds and names in
//!   WATTLET_BENCH_OBJECT): the agent's object carries only the accounting program. The
//!   accounting program runs twice, loaded with per-process counting off and on, under two
//!   loads: threads of one process, and separate processes (each switch out charges another
//!   process than the CPU's previous one).
//! - One full read of every zone of a two-socket powercap fixture tree.
//! - Churn, floods and outages (issue 13; their checks fail the benchmark): 10,000 cgroups
//!   created, used and removed while the agent exports; 50 concurrent scrapers for 30 s; the API
//!   server refusing connections for 60 s while pods come and go.
//!
//! `WATTLET_BENCH=churn,scrapers` (a comma-separated list of sched_switch, power, render, agent,
//! churn, scrapers, outage) runs only those parts; all of them by default.

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
    Ebpf, EbpfLoader,
    sys::{Stats, enable_stats},
};
use integration_tests::Running;
use node_agent::kernel::attach;
use node_agent_common::{DEFAULT_MAX_CGROUPS, DEFAULT_MAX_PROCESSES, names};

const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(3);
const SLEEPERS: usize = 4;
/// The argument that makes this binary one of the sleeping processes of the process load.
const SLEEPER: &str = "--sleeper";

/// The programs measured: (label, which load of the object, program name).
const PROGRAMS: [(&str, usize, &str); 4] = [
    ("empty", 0, names::PROGRAM_EMPTY),
    ("floor", 0, names::PROGRAM_FLOOR),
    ("wattlet", 0, names::PROGRAM),
    ("+procs", 1, names::PROGRAM),
];

#[derive(Clone, Copy)]
enum Load {
    Threads,
    Processes,
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some(SLEEPER) {
        loop {
            thread::sleep(Duration::from_micros(20));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the benchmark loads eBPF programs: run `sudo -E cargo xtask bench`");
    }
    let object = std::env::var_os("WATTLET_BENCH_OBJECT").context(
        "WATTLET_BENCH_OBJECT is not set: run `sudo -E cargo xtask bench`, which builds the \
         benchmark's eBPF object and names it there",
    )?;
    let _stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?;
    if part("sched_switch") {
        println!(
            "sched_switch cost per event — {ROUNDS} rounds × {ROUND:?} per load, all four programs \
             attached together, attach order rotated each round; wattlet = processes not counted \
             (--metrics.processes 0), +procs = counted"
        );
        instructions(&object)?;
        for load in [Load::Threads, Load::Processes] {
            sched_switch_cost(&object, load)?;
        }
    }
    if part("power") {
        power_read()?;
    }
    if part("render") {
        render()?;
    }
    if part("agent") {
        agent_cost()?;
    }
    if part("churn") {
        churn()?;
    }
    if part("scrapers") {
        scrapers()?;
    }
    if part("outage") {
        outage()?;
    }
    Ok(())
}

/// Whether `WATTLET_BENCH` selects this part (every part when it is unset).
fn part(name: &str) -> bool {
    std::env::var("WATTLET_BENCH")
        .map(|list| list.split(',').any(|p| p.trim() == name))
        .unwrap_or(true)
}

/// 10,000 cgroup create/use/delete cycles, in two rounds of 5,000, while the agent exports
/// (depth 3: each churned cgroup its own series), scraped every 100 ms, with a 5 s retention.
fn churn() -> Result<()> {
    use integration_tests::{scenarios, stress::ChurnPlan};
    let plan = ChurnPlan {
        cycles: 5_000,
        workers: 16,
        holds: vec![Duration::ZERO, Duration::from_millis(300)],
    };
    println!("cgroup churn while exporting — interval 200 ms, retention 5 s");
    let run = scenarios::churn_while_exporting(&plan, Duration::from_secs(5))?;
    scenarios::checked("  churn", &run.report(), run.check())
}

/// 50 concurrent scrapers for 30 s, each from its own loopback address.
fn scrapers() -> Result<()> {
    use integration_tests::scenarios;
    println!("concurrent scrapers — interval 200 ms, default connection limits");
    let run = scenarios::flood_run(50, Duration::from_secs(30))?;
    scenarios::checked("  scrapers", &run.report(), run.check())
}

/// The API server refusing connections for the full 60 s while a pod starts every 2 s (every
/// third gone again before it returns); then the same with connections accepted and never
/// answered.
fn outage() -> Result<()> {
    use integration_tests::scenarios::{self, OutagePlan};
    for (hang, what) in [(false, "refused"), (true, "hung")] {
        println!(
            "API-server outage during pod churn — 60 s, {what}; the watcher's backoff capped at 30 s"
        );
        let run = scenarios::api_outage(&OutagePlan {
            outage: Duration::from_secs(60),
            new_every: Duration::from_secs(2),
            die_one_in: 3,
            hang,
        })?;
        scenarios::checked("  outage", &run.report(), run.check())?;
    }
    Ok(())
}

/// The object loaded with per-process counting off or on, as the agent loads it.
fn load_object(object: &std::ffi::OsStr, processes: bool) -> Result<Ebpf> {
    EbpfLoader::new()
        .map_max_entries(names::CGROUPS, DEFAULT_MAX_CGROUPS)
        .map_max_entries(
            names::PROCESSES,
            if processes { DEFAULT_MAX_PROCESSES } else { 1 },
        )
        .override_global(names::PMU_FLAGS, &0u32, true)
        .override_global(names::TRACK_PROCESSES, &u32::from(processes), true)
        .load_file(object)
        .with_context(|| format!("loading {}", object.display()))
}

/// The program as the kernel runs it with processes off and on: with them off, the verifier
/// drops the process accounting (the switch is a constant to it).
fn instructions(object: &std::ffi::OsStr) -> Result<()> {
    let mut sizes = Vec::new();
    for processes in [false, true] {
        let mut ebpf = load_object(object, processes)?;
        attach(&mut ebpf, names::PROGRAM)?;
        let info = ebpf
            .program(names::PROGRAM)
            .context("no accounting program")?
            .info()?;
        sizes.push((info.size_translated().unwrap_or(0) / 8, info.size_jitted()));
    }
    println!(
        "  accounting program as loaded: processes off {} instructions ({} bytes JIT), on {} \
         instructions ({} bytes JIT)",
        sizes[0].0, sizes[0].1, sizes[1].0, sizes[1].1
    );
    Ok(())
}

fn sched_switch_cost(object: &std::ffi::OsStr, load: Load) -> Result<()> {
    let mut time = [0u128; PROGRAMS.len()];
    let mut count = [0u64; PROGRAMS.len()];
    for round in 0..ROUNDS {
        let mut objects = [load_object(object, false)?, load_object(object, true)?];
        for k in 0..PROGRAMS.len() {
            let (_, which, name) = PROGRAMS[(k + round) % PROGRAMS.len()];
            attach(&mut objects[which], name)?;
        }
        let stats_now = |objects: &[Ebpf; 2]| -> Result<Vec<(Duration, u64)>> {
            PROGRAMS
                .iter()
                .map(|(_, which, name)| stats(&objects[*which], name))
                .collect()
        };
        let before = stats_now(&objects)?;
        match load {
            Load::Threads => load_for(ROUND),
            Load::Processes => processes_for(ROUND)?,
        }
        for (i, (t, c)) in stats_now(&objects)?.into_iter().enumerate() {
            time[i] += (t - before[i].0).as_nanos();
            count[i] += c - before[i].1;
        }
    }
    let per_event: Vec<f64> = (0..PROGRAMS.len())
        .map(|i| time[i] as f64 / count[i].max(1) as f64)
        .collect();
    let floor = per_event[1];
    println!(
        "load: {SLEEPERS} {} sleeping 20µs in a loop",
        match load {
            Load::Threads => "threads of one process",
            Load::Processes => "processes",
        }
    );
    for (i, (name, _, _)) in PROGRAMS.iter().enumerate() {
        println!(
            "  {name:<8} {:>7.1} ns/event  ({:>9} events)  {:.2}× floor",
            per_event[i],
            count[i],
            per_event[i] / floor
        );
    }
    println!(
        "wattlet sched_switch: {:.2}× the floor with processes off, {:.2}× with them on (target \
         ≤ 1.5×); processes add {:+.1} ns/event",
        per_event[2] / floor,
        per_event[3] / floor,
        per_event[3] - per_event[2]
    );
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

/// Processes (this binary, as sleepers) that sleep briefly in a loop.
fn processes_for(d: Duration) -> Result<()> {
    let me = std::env::current_exe()?;
    let sleepers = (0..SLEEPERS)
        .map(|_| {
            Ok(Running(
                std::process::Command::new(&me).arg(SLEEPER).spawn()?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    thread::sleep(d);
    drop(sleepers);
    Ok(())
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

/// A snapshot of `containers` containers (two per pod), 50 cgroups, 20 processes and (other),
/// two zones.
fn big_snapshot(containers: usize) -> node_agent::snapshot::Snapshot {
    use node_agent::{
        attribution::{
            AttributedCarbon, AttributionSnapshot, Emissions, IdleMethod, IdlePolicy,
            IntervalCarbon, NodeGrams, NodeZone, ProcessTotals, SourceGrams, WorkloadTotals,
        },
        carbon::{Reading, SourceKind as Intensity, WORLD_AVERAGE},
        kernel::{CountersSnapshot, CpuInfo, CpuTime, PmuCounters, ProcessNames, ProcessesRead},
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
        // The default 20 processes and (other).
        processes: (0..21)
            .map(|i| ProcessTotals {
                pid: (i < 20).then_some(1000 + i),
                names: Some(Arc::new(ProcessNames {
                    comm: format!("worker-{i}").into(),
                    exe: "/usr/bin/worker".into(),
                })),
                workload: None,
                running: true,
                cpu_ns: 1_000_000_000,
                joules: vec![1.0, 2.0],
                watts: vec![Some(0.1), Some(0.2)],
            })
            .collect(),
        busy_ratio: 0.5,
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
                path: Some(format!("aggregated-{z}")),
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
        processes: ProcessesRead {
            map_capacity: 8192,
            ..Default::default()
        },
        cpu_info: (0..2)
            .map(|i| CpuInfo {
                processor: i.to_string(),
                model_name: "bench".into(),
                ..Default::default()
            })
            .collect(),
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
    println!(
        "/metrics render, 1,000 containers in 500 pods, 50 cgroups, 20 processes and (other), 2 zones — {RUNS} runs"
    );
    line("OpenMetrics", None, false)?;
    line("classic text", None, true)?;
    line("OpenMetrics + Kepler names", Some(Compat::Kepler), false)?;
    Ok(())
}

/// The agent's own cost with 1,000 live cgroups, at a 1 s interval, scraped every 5 s, with
/// processes counted and without: CPU per interval (the agent runs in a cgroup of its own, whose
/// cpu.stat is exact) and resident memory (VmRSS).
fn agent_cost() -> Result<()> {
    use integration_tests::TestCgroup;
    const CGROUPS: usize = 1000;
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
    for processes in ["20", "0"] {
        let own = TestCgroup::create_at(base.path.join(format!("agent-{processes}")))?;
        let (series, used, rss_kib) = measure_agent(&own, processes)?;
        drop(own);
        println!(
            "agent with {CGROUPS} live cgroups ({series} series), --metrics.processes {processes}, \
             1 s interval, scraped every 5 s: {:.2} ms CPU per interval = {:.3}% of one core \
             (target ≤ 0.5%); RSS {:.1} MiB (target ≤ 40 MiB)",
            used * 1e3,
            used * 100.0,
            rss_kib / 1024.0
        );
    }
    drop(tasks);
    drop(cgroups);
    drop(base);
    Ok(())
}

/// Runs the agent in `own` for a while: the series it serves, its CPU seconds per second, its
/// resident KiB.
fn measure_agent(
    own: &integration_tests::TestCgroup,
    processes: &str,
) -> Result<(usize, f64, f64)> {
    use integration_tests::{agent_binary, free_port, http_get, wait_for};
    const MEASURE: Duration = Duration::from_secs(30);
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let agent = Running(
        own.spawn(
            std::process::Command::new(agent_binary()?)
                // Depth 3: each test cgroup is its own series, as 1,000 containers would be.
                .args(["run", "--interval", "1s", "--attribution.cgroup-depth", "3"])
                .args(["--metrics.processes", processes])
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
    Ok((series, used / wall, rss_kib))
}
