//! `cargo xtask bench`. Figures are printed, not asserted.
//! - Cost per event of the sched_switch accounting program, measured by the kernel
//!   (BPF_ENABLE_STATS: run_time_ns / run_cnt) in the same run and under the same load as two
//!   reference programs on the same tracepoint: an empty one, and a "floor" that only reads the
//!   clock and the cgroup id and stores to a per-CPU array.
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
use node_agent::kernel::{EBPF_OBJECT, attach};
use node_agent_common::{DEFAULT_MAX_CGROUPS, names};

const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(3);
const SLEEPERS: usize = 4;

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the benchmark loads eBPF programs: run `sudo -E cargo xtask bench`");
    }
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
            .load(EBPF_OBJECT)?;
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
    let mut source = powercap::open(&root, 1000.0).map_err(anyhow::Error::msg)?;
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
