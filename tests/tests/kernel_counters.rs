//! The sched_switch accounting, loaded for real, against the kernel's own per-cgroup accounting
//! (cpu.stat) in real cgroups. Run as root through `cargo xtask test` (serially: these measure
//! CPU time).

use std::time::Duration;

use anyhow::Result;
use integration_tests::{TestCgroup, cgroup2_root, rel_diff, require_root, wait_all};

fn workload() -> std::process::Command {
    integration_tests::workload!()
}
use node_agent::{
    cgroup::CgroupTree,
    kernel::{CountersSnapshot, KernelCounters, KernelOptions, PmuCounters, PmuMode},
};

fn load(options: KernelOptions) -> Result<(KernelCounters, CgroupTree)> {
    require_root();
    let counters = KernelCounters::load(options)?;
    let tree = CgroupTree::new(cgroup2_root()?);
    Ok((counters, tree))
}

fn cpu_only() -> KernelOptions {
    KernelOptions {
        pmu: PmuMode::Off,
        ..KernelOptions::default()
    }
}

fn cpu_ns(s: &node_agent::kernel::CountersSnapshot, id: u64) -> u64 {
    s.cgroups.get(&id).map_or(0, |c| c.counters.cpu_ns)
}

/// Three busy loops in one cgroup against one in another (3:1 on two CPUs): each cgroup's CPU
/// time matches its cpu.stat within 2%.
#[test]
fn cpu_time_matches_cpu_stat_three_to_one() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let three = TestCgroup::new("three")?;
    let one = TestCgroup::new("one")?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(three.spawn(workload().args(["spin", "3"]))?);
    }
    children.push(one.spawn(workload().args(["spin", "3"]))?);
    wait_all(children)?;

    let s = counters.read(&mut tree)?;
    let (ours3, ours1) = (cpu_ns(&s, three.id) as f64, cpu_ns(&s, one.id) as f64);
    let (kern3, kern1) = (three.usage_ns()? as f64, one.usage_ns()? as f64);
    println!(
        "3:1 — three: wattlet {:.4}s cpu.stat {:.4}s ({:+.3}%); one: wattlet {:.4}s cpu.stat {:.4}s ({:+.3}%); ratio {:.3}",
        ours3 / 1e9,
        kern3 / 1e9,
        (ours3 / kern3 - 1.0) * 100.0,
        ours1 / 1e9,
        kern1 / 1e9,
        (ours1 / kern1 - 1.0) * 100.0,
        ours3 / ours1
    );
    assert!(kern3 > 1e9 && kern1 > 0.3e9, "the workloads ran");
    assert!(
        rel_diff(ours3, kern3) < 0.02,
        "three loops: {ours3} vs {kern3}"
    );
    assert!(
        rel_diff(ours1, kern1) < 0.02,
        "one loop: {ours1} vs {kern1}"
    );
    assert!(
        rel_diff(ours3 / ours1, kern3 / kern1) < 0.02,
        "the ratio follows the kernel's"
    );
    let path = s.cgroups[&three.id].path.clone().unwrap();
    assert!(path.ends_with(three.path.file_name().unwrap().to_str().unwrap()));
    Ok(())
}

/// At least 5,000 processes that each live a few milliseconds: ≥ 99% of the cgroup's cpu.stat
/// time is captured.
#[test]
fn fork_storm_is_captured() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let storm = TestCgroup::new("storm")?;
    let out = storm
        .spawn(
            workload()
                .args(["storm", "5000", "2000", "2"])
                .stdout(std::process::Stdio::piped()),
        )?
        .wait_with_output()?;
    assert!(out.status.success());
    let forked: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    assert!(forked >= 5000, "forked {forked}");

    let s = counters.read(&mut tree)?;
    let ours = cpu_ns(&s, storm.id) as f64;
    let kern = storm.usage_ns()? as f64;
    let captured = ours / kern;
    println!(
        "fork storm — {forked} processes: wattlet {:.4}s cpu.stat {:.4}s, captured {:.3}%",
        ours / 1e9,
        kern / 1e9,
        captured * 100.0
    );
    assert!(captured >= 0.99, "captured {captured}");
    assert!(captured <= 1.02, "over-counted: {captured}");
    Ok(())
}

/// A task that sleeps N times gives up the CPU voluntarily at least N times.
#[test]
fn sleeper_switches_voluntarily() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let cg = TestCgroup::new("sleeper")?;
    const N: u64 = 300;
    wait_all(vec![cg.spawn(workload().args([
        "sleep",
        &N.to_string(),
        "1000",
    ]))?])?;
    let s = counters.read(&mut tree)?;
    let c = s.cgroups[&cg.id].counters;
    println!(
        "sleeper — {N} sleeps: {} voluntary, {} involuntary switches",
        c.switches_voluntary, c.switches_involuntary
    );
    assert!(c.switches_voluntary >= N, "{c:?}");
    Ok(())
}

/// The PMU path, with a software clock event standing in for the cycles counter (this machine
/// has no PMU): the per-cgroup counter total tracks the cgroup's CPU time.
#[test]
fn cycles_path_tracks_cpu_time() -> Result<()> {
    let (mut counters, mut tree) = load(KernelOptions {
        pmu: PmuMode::SoftwareStandIn,
        ..KernelOptions::default()
    })?;
    assert_eq!(counters.pmu().0, PmuCounters::SoftwareStandIn);
    let cg = TestCgroup::new("cycles")?;
    wait_all(vec![
        cg.spawn(workload().args(["spin", "2"]))?,
        cg.spawn(workload().args(["sleep", "200", "2000"]))?,
    ])?;
    let s = counters.read(&mut tree)?;
    let c = s.cgroups[&cg.id].counters;
    println!(
        "stand-in cycles — cgroup counter {:.4}s, cgroup cpu time {:.4}s, cpu.stat {:.4}s",
        c.cycles as f64 / 1e9,
        c.cpu_ns as f64 / 1e9,
        cg.usage_ns()? as f64 / 1e9
    );
    assert!(c.cpu_ns > 1_000_000_000);
    assert!(
        rel_diff(c.cycles as f64, c.cpu_ns as f64) < 0.02,
        "counter {} vs cpu time {}",
        c.cycles,
        c.cpu_ns
    );
    assert_eq!(c.instructions, 0, "no instructions stand-in");
    Ok(())
}

/// Without the PMU option the counters stay zero (the agent runs on CPU time alone).
#[test]
fn no_pmu_means_no_cycles() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let cg = TestCgroup::new("nopmu")?;
    wait_all(vec![cg.spawn(workload().args(["spin", "0.3"]))?])?;
    let s = counters.read(&mut tree)?;
    let c = s.cgroups[&cg.id].counters;
    assert!(c.cpu_ns > 0);
    assert_eq!((c.cycles, c.instructions), (0, 0));
    assert_eq!(s.pmu, PmuCounters::None);
    Ok(())
}

/// Create, use and delete 2,000 cgroups while the agent reads: the map ends with no entries for
/// them, and the time they used is still in the totals.
#[test]
fn churned_cgroups_leave_no_entries() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let parent = TestCgroup::new("churn")?;
    let mut ids = Vec::new();
    let mut kernel_ns = 0u64;
    for i in 0..2000 {
        let cg = TestCgroup::create_at(parent.path.join(format!("c{i}")))?;
        wait_all(vec![cg.spawn(workload().args(["sleep", "1", "10"]))?])?;
        kernel_ns += cg.usage_ns()?;
        ids.push(cg.id);
        drop(cg);
        if i % 250 == 249 {
            counters.read(&mut tree)?;
        }
    }
    // One read finds the last ones gone and deletes them; a second must find nothing to delete.
    counters.read(&mut tree)?;
    let s = counters.read(&mut tree)?;
    let in_map: std::collections::HashSet<u64> = counters.map_ids().into_iter().collect();
    let left: Vec<_> = ids.iter().filter(|id| in_map.contains(id)).collect();
    let ours: u64 = ids.iter().map(|id| cpu_ns(&s, *id)).sum();
    let seen = ids.iter().filter(|id| s.cgroups.contains_key(id)).count();
    println!(
        "churn — 2000 cgroups: {} left in the map, {} deletions, {seen} with final totals; \
         time: wattlet {:.4}s cpu.stat {:.4}s",
        left.len(),
        s.map_deletions,
        ours as f64 / 1e9,
        kernel_ns as f64 / 1e9
    );
    assert!(
        left.is_empty(),
        "entries left for {} churned cgroups",
        left.len()
    );
    assert!(s.map_deletions >= 2000);
    assert!(seen >= 1990, "removed cgroups keep their totals");
    assert!(
        ours as f64 >= kernel_ns as f64 * 0.97,
        "time of removed cgroups is kept"
    );
    Ok(())
}

/// A map sized below the number of live cgroups: the rest goes to the overflow slot, and
/// cgroups + overflow still add up to the node's busy time.
#[test]
fn full_map_overflows_without_loss() -> Result<()> {
    let (mut counters, mut tree) = load(KernelOptions {
        max_cgroups: 3,
        pmu: PmuMode::Off,
        ..KernelOptions::default()
    })?;
    let cgs: Vec<TestCgroup> = (0..8)
        .map(|i| TestCgroup::new(&format!("full{i}")))
        .collect::<Result<_>>()?;
    let mut children = Vec::new();
    for cg in &cgs {
        children.push(cg.spawn(workload().args(["spin", "0.5"]))?);
    }
    wait_all(children)?;
    std::thread::sleep(Duration::from_millis(50));
    let s = counters.read(&mut tree)?;
    let charged: u64 =
        s.cgroups.values().map(|c| c.counters.cpu_ns).sum::<u64>() + s.overflow.cpu_ns;
    let busy = s.busy_ns();
    println!(
        "full map — capacity {}: {} entries, overflow {:.4}s; cgroups+overflow {:.4}s vs busy {:.4}s",
        s.map_capacity,
        s.map_entries,
        s.overflow.cpu_ns as f64 / 1e9,
        charged as f64 / 1e9,
        busy as f64 / 1e9
    );
    // Every test cgroup that got no entry must be in the overflow slot, whole.
    let mut without_entry = 0u64;
    for cg in &cgs {
        if !s.cgroups.contains_key(&cg.id) {
            without_entry += cg.usage_ns()?;
        }
    }
    println!(
        "full map — cpu.stat of the test cgroups without an entry: {:.4}s",
        without_entry as f64 / 1e9
    );
    assert!(s.map_entries <= 3);
    assert!(without_entry > 0, "some cgroups found the map full");
    assert!(
        s.overflow.cpu_ns as f64 >= without_entry as f64 * 0.98,
        "overflow {} < cgroups without entry {without_entry}",
        s.overflow.cpu_ns
    );
    // Cgroups are read before the per-CPU state, so busy can only be ahead, by what ran
    // during the read itself.
    assert!(charged <= busy, "charged {charged} > busy {busy}");
    assert!(rel_diff(charged as f64, busy as f64) < 0.01);
    Ok(())
}

/// Node busy + idle time covers the wall-clock time of every CPU.
#[test]
fn busy_and_idle_cover_wall_time() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let a = counters.read(&mut tree)?;
    let cg = TestCgroup::new("wall")?;
    wait_all(vec![cg.spawn(workload().args(["spin", "1"]))?])?;
    std::thread::sleep(Duration::from_millis(500));
    let b = counters.read(&mut tree)?;
    let cpus = b.cpus.iter().filter(|c| c.busy_ns + c.idle_ns > 0).count() as f64;
    let wall = (b.at - a.at).as_nanos() as f64 * cpus;
    let covered = ((b.busy_ns() + b.idle_ns()) - (a.busy_ns() + a.idle_ns())) as f64;
    println!(
        "wall — {cpus} CPUs × {:.3}s: busy+idle {:.4}s ({:.2}%)",
        (b.at - a.at).as_secs_f64(),
        covered / 1e9,
        covered / wall * 100.0
    );
    // Idle time up to the read is included; a busy CPU's time since its last switch is not
    // charged yet (it lands at the next switch), hence a little under.
    assert!(
        covered <= wall * 1.01 && covered >= wall * 0.97,
        "{covered} vs {wall}"
    );
    Ok(())
}

/// The processes of one cgroup in a snapshot: (tgid, CPU ns, comm, exe, gone).
fn processes_in(s: &CountersSnapshot, cgroup: u64) -> Vec<(u32, u64, String, String, bool)> {
    (s.processes.samples.iter())
        .filter(|(k, _)| k.cgroup_id == cgroup)
        .map(|(k, p)| {
            let (comm, exe) = p
                .names
                .as_ref()
                .map_or((String::new(), String::new()), |n| {
                    (n.comm.to_string(), n.exe.to_string())
                });
            (k.tgid, p.cpu_ns, comm, exe, p.gone)
        })
        .collect()
}

/// Two busy processes in one cgroup: each is counted on its own and named from procfs, their
/// time adds up to the cgroup's, and once they exit their entries are read a last time and
/// deleted, their totals kept.
#[test]
fn processes_add_up_to_their_cgroup_and_leave_when_they_exit() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let cg = TestCgroup::new("procs")?;
    let children = vec![
        cg.spawn(workload().args(["spin", "1.5"]))?,
        cg.spawn(workload().args(["spin", "1.5"]))?,
    ];
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let running = counters.read(&mut tree)?;
    wait_all(children)?;
    let after = counters.read(&mut tree)?;
    let last = counters.read(&mut tree)?;
    let procs = processes_in(&last, cg.id);
    let ours: u64 = procs.iter().map(|p| p.1).sum();
    let cgroup = cpu_ns(&last, cg.id);
    println!(
        "processes — {} in the cgroup: {:.4}s together, cgroup {:.4}s, cpu.stat {:.4}s; {} \
         deletions, {} live entries in all",
        procs.len(),
        ours as f64 / 1e9,
        cgroup as f64 / 1e9,
        cg.usage_ns()? as f64 / 1e9,
        last.processes.map_deletions - running.processes.map_deletions,
        last.processes.map_entries
    );
    for pid in &pids {
        let named = processes_in(&running, cg.id)
            .into_iter()
            .find(|p| p.0 == *pid)
            .unwrap_or_else(|| panic!("process {pid} not counted: {procs:?}"));
        assert_eq!(named.2, "wattlet-workloa", "comm, truncated by the kernel");
        assert!(named.3.ends_with("/wattlet-workload"), "{named:?}");
        let done = procs.iter().find(|p| p.0 == *pid).unwrap();
        assert!(done.4, "exited: {done:?}");
        assert!(done.1 as f64 > 0.3 * cgroup as f64, "{done:?}");
    }
    assert!(
        rel_diff(ours as f64, cgroup as f64) < 0.01,
        "processes {ours} vs cgroup {cgroup}"
    );
    // They ran in the interval before `after`: alive then, exited at the next read.
    assert!(processes_in(&after, cg.id).iter().all(|p| p.1 > 0));
    let left: Vec<_> = (counters.process_keys().into_iter())
        .filter(|k| pids.contains(&k.tgid))
        .collect();
    assert!(
        left.is_empty(),
        "entries left for exited processes: {left:?}"
    );
    Ok(())
}

/// 3,000 processes that each live a few milliseconds: their time adds up to ≥ 99% of the
/// cgroup's cpu.stat, though most exit before the agent reads.
#[test]
fn fork_storm_processes_are_counted() -> Result<()> {
    let (mut counters, mut tree) = load(cpu_only())?;
    let storm = TestCgroup::new("pstorm")?;
    let out = storm
        .spawn(
            workload()
                .args(["storm", "3000", "2000", "2"])
                .stdout(std::process::Stdio::piped()),
        )?
        .wait_with_output()?;
    assert!(out.status.success());
    let s = counters.read(&mut tree)?;
    let procs = processes_in(&s, storm.id);
    let ours: u64 = procs.iter().map(|p| p.1).sum();
    let kern = storm.usage_ns()? as f64;
    println!(
        "process storm — {} processes counted: {:.4}s, cpu.stat {:.4}s ({:.2}%); overflow \
         {:.4}s",
        procs.len(),
        ours as f64 / 1e9,
        kern / 1e9,
        ours as f64 / kern * 100.0,
        s.processes.overflow_ns as f64 / 1e9
    );
    assert!(procs.len() >= 3000, "{} processes", procs.len());
    assert!(ours as f64 >= 0.99 * kern && ours as f64 <= 1.02 * kern);
    Ok(())
}

/// With --metrics.processes 0 the process accounting is not in the program the kernel runs (the
/// verifier drops it: the switch is a constant), and nothing is counted per process.
#[test]
fn processes_off_is_not_in_the_running_program() -> Result<()> {
    let (on, _) = load(cpu_only())?;
    let on_size = on.loaded_instructions()?;
    drop(on);
    let (mut off, mut tree) = load(KernelOptions {
        processes: 0,
        ..cpu_only()
    })?;
    let off_size = off.loaded_instructions()?;
    let s = off.read(&mut tree)?;
    println!("processes off — program as loaded: {off_size} instructions, {on_size} with them on");
    assert!(s.processes.samples.is_empty() && s.processes.map_capacity == 0);
    assert!(
        off_size + 40 < on_size,
        "off {off_size} vs on {on_size} instructions"
    );
    Ok(())
}
