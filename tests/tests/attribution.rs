//! Attribution end to end. The agent reads a simulated two-socket RAPL tree driven by a known
//! power law while cgroups laid out as Kubernetes lays out pods run a 3:1 CPU load; a real
//! Prometheus scrapes it, and PromQL over its data must show the 3:1 split of energy, every
//! joule accounted for, and the law's idle power found by the agent's estimate. And a service
//! restarted at the same cgroup path keeps one series that never goes backwards.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use integration_tests::{
    Prometheus, TestCgroup, free_port, http_get, promtool_check,
    rapl_sim::{RaplSim, SimConfig},
    rel_diff, require_root, series, start_agent, wait_all, wait_for,
};

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

const ID_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const ID_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const UID_A: &str = "11111111-2222-3333-4444-555555555555";
const UID_B: &str = "66666666-7777-8888-9999-000000000000";

#[test]
fn pods_share_measured_energy_three_to_one_and_every_joule_is_accounted_for() -> Result<()> {
    require_root();
    let sim = RaplSim::start(SimConfig::default())?;
    let law_idle = sim.config().law.idle_watts;
    let port = free_port()?;
    let _agent = start_agent(
        port,
        &[
            OsStr::new("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            OsStr::new("--power-source"),
            OsStr::new("powercap"),
            OsStr::new("--metrics-compat"),
            OsStr::new("kepler"),
            // Long enough that the simulator's 2 ms steps are fine-grained against it.
            OsStr::new("--interval"),
            OsStr::new("500ms"),
        ],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let prom = Prometheus::start(&[&addr])?;
    // A quiet spell first: the idle estimate needs load that varies.
    thread::sleep(Duration::from_secs(4));

    let base = TestCgroup::new("k8s")?;
    let kubepods = base.path.join("kubepods.slice");
    let a = TestCgroup::create_at(kubepods.join(format!(
        "kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID_A}.scope",
        UID_A.replace('-', "_")
    )))?;
    let b = TestCgroup::create_at(kubepods.join(format!(
        "kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID_B}.scope",
        UID_B.replace('-', "_")
    )))?;
    // 3:1 in CPU time, whatever the scheduler's placement: three processes that each burn
    // 3 CPU-seconds against one.
    let mut load = Vec::new();
    for _ in 0..3 {
        load.push(a.spawn(workload().args(["burn", "3"]))?);
    }
    load.push(b.spawn(workload().args(["burn", "3"]))?);
    wait_all(load)?;
    let cpu_ratio = a.usage_ns()? as f64 / b.usage_ns()? as f64;
    // Quiet again, then let Prometheus take a few more scrapes.
    thread::sleep(Duration::from_secs(4));

    let q = |expr: &str| -> Result<f64> {
        prom.query(expr)?
            .with_context(|| format!("no result for {expr}"))
    };
    let energy_of = |id: &str| {
        format!(
            "sum(wattlet_container_energy_joules_total{{zone=\"package\",container_id=\"{id}\"}})"
        )
    };
    wait_for(
        "Prometheus to have the containers",
        Duration::from_secs(20),
        || prom.query(&energy_of(ID_B)).ok().flatten(),
    )?;
    let ratio = q(&format!("{} / {}", energy_of(ID_A), energy_of(ID_B)))?;
    let parts = q(
        "sum(wattlet_container_energy_joules_total{zone=\"package\"}) \
                   + sum(wattlet_cgroup_energy_joules_total{zone=\"package\"}) \
                   + sum(wattlet_expired_energy_joules_total{zone=\"package\"}) \
                   + sum(wattlet_node_energy_joules_total{zone=\"package\",mode=\"idle\"})",
    )?;
    let total = q("sum(wattlet_node_energy_joules_total{zone=\"package\"})")?;
    let idle_w = q("wattlet_node_idle_power_watts{zone=\"package\"}")?;
    let method = {
        let (_, body) = http_get(
            &prom.addr,
            "/api/v1/query?query=wattlet_node_idle_power_watts",
            None,
        )?;
        body.contains("\"method\":\"regression\"")
    };
    let pod_a = q(&format!(
        "sum(wattlet_pod_energy_joules_total{{zone=\"package\",pod_uid=\"{UID_A}\"}})"
    ))?;
    let kepler_containers = q("sum(kepler_container_cpu_joules_total{zone=\"package\"})")?;
    let wattlet_containers = q("sum(wattlet_container_energy_joules_total{zone=\"package\"})")?;
    println!(
        "attribution — energy A:B = {ratio:.3} (cpu.stat {cpu_ratio:.3}); containers + cgroups + \
         expired + idle = {parts:.2} J of {total:.2} J ({:+.4}%); idle estimate {idle_w:.2} W against the \
         law's {law_idle} W ({:+.2}%, regression: {method})",
        (parts - total) / total * 100.0,
        (idle_w - law_idle) / law_idle * 100.0
    );
    assert!(rel_diff(ratio, 3.0) < 0.05, "energy ratio {ratio}");
    assert!(rel_diff(parts, total) < 0.005, "{parts} of {total}");
    assert!(rel_diff(idle_w, law_idle) < 0.05, "idle {idle_w} W");
    assert!(method, "the idle estimate should come from the regression");
    assert!(
        rel_diff(pod_a, q(&energy_of(ID_A))?) < 1e-9,
        "pod = its container"
    );
    assert!(rel_diff(kepler_containers, wattlet_containers) < 1e-9);

    // promtool accepts the scrape with Kepler's names too.
    let (_, text) = http_get(&addr, "/metrics", None)?;
    assert!(
        text.contains("kepler_pod_cpu_joules_total{"),
        "kepler names missing"
    );
    promtool_check(&text)?;

    // Dropping the base cgroup removes the pods' cgroups below it.
    drop((a, b, base));
    Ok(())
}

/// A service restarted at the same cgroup path (removed, then re-created under a new cgroup id)
/// is one workload for the user: every series the agent exports for it (CPU time, context
/// switches, energy per zone) never goes backwards, in any scrape, across the restart and after
/// the old cgroup's retention has passed; and it ends up with the CPU time of both.
#[test]
fn restarted_cgroup_path_never_goes_backwards() -> Result<()> {
    require_root();
    let port = free_port()?;
    let retention = Duration::from_secs(1);
    let _agent = start_agent(
        port,
        &[OsStr::new("--retention.terminated"), OsStr::new("1s")],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let first = TestCgroup::new("restart")?;
    let cgroup = format!(
        "/wattlet-tests/{}",
        first.path.file_name().unwrap().to_string_lossy()
    );
    let scraper = Scraper::start(addr.clone(), cgroup.clone());

    wait_all(vec![first.spawn(workload().args(["spin", "0.3"]))?])?;
    let first_ns = first.usage_ns()? as f64;
    // The agent has seen the first cgroup alive, with all it ran.
    wait_for(
        "the first cgroup's CPU time",
        Duration::from_secs(10),
        || cpu_seconds(&addr, &cgroup).filter(|s| rel_diff(s * 1e9, first_ns) < 0.02),
    )?;
    let (path, old_id) = (first.path.clone(), first.id);
    drop(first);
    let second = TestCgroup::new("restart")?;
    assert_eq!(second.path, path, "re-created at the same path");
    assert_ne!(second.id, old_id, "under a new cgroup id");
    wait_all(vec![second.spawn(workload().args(["spin", "0.3"]))?])?;
    let second_ns = second.usage_ns()? as f64;
    // Past the old cgroup's retention (and a few intervals): the kernel layer has forgotten it.
    thread::sleep(retention * 2 + Duration::from_millis(600));
    let total = wait_for("both cgroups' CPU time", Duration::from_secs(10), || {
        cpu_seconds(&addr, &cgroup).filter(|s| rel_diff(s * 1e9, first_ns + second_ns) < 0.02)
    });
    let scrapes = scraper.stop();

    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    let mut went_back = Vec::new();
    for (i, scrape) in scrapes.iter().enumerate() {
        for key in last.keys() {
            assert!(scrape.contains_key(key), "scrape {i}: {key} disappeared");
        }
        for (key, v) in scrape {
            if let Some(before) = last.insert(key.clone(), *v)
                && *v < before
            {
                went_back.push(format!("scrape {i}: {key} {before} → {v}"));
            }
        }
    }
    let series = last.len();
    let cpu = last.get("wattlet_cgroup_cpu_seconds_total").copied();
    println!(
        "restart — {} scrapes of {series} series of {cgroup}: CPU {:.4}s (cpu.stat {:.4}s + \
         {:.4}s), {} went backwards",
        scrapes.len(),
        cpu.unwrap_or(f64::NAN),
        first_ns / 1e9,
        second_ns / 1e9,
        went_back.len()
    );
    assert!(
        went_back.is_empty(),
        "series went backwards: {went_back:#?}"
    );
    total.context("the workload should have the CPU time of both cgroups")?;
    assert!(
        series >= 4 && scrapes.len() >= 20,
        "{series} series in {} scrapes",
        scrapes.len()
    );
    Ok(())
}

/// The workload's CPU time in one scrape.
fn cpu_seconds(addr: &str, cgroup: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics", None).ok()?;
    workload_series(&text, cgroup).remove("wattlet_cgroup_cpu_seconds_total")
}

/// Every series of one non-container workload, by metric name and its other labels.
fn workload_series(text: &str, cgroup: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for metric in [
        "wattlet_cgroup_cpu_seconds_total",
        "wattlet_cgroup_context_switches_total",
        "wattlet_cgroup_energy_joules_total",
    ] {
        for (mut labels, v) in series(text, metric) {
            if labels.remove("cgroup").as_deref() != Some(cgroup) {
                continue;
            }
            labels.remove("node");
            let key = if labels.is_empty() {
                metric.to_owned()
            } else {
                format!("{metric}{labels:?}")
            };
            out.insert(key, v);
        }
    }
    out
}

/// Scrapes the agent every 50 ms in the background, keeping one workload's series.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<BTreeMap<String, f64>>>,
}

impl Scraper {
    fn start(addr: String, cgroup: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut scrapes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok((200, text)) = http_get(&addr, "/metrics", None) {
                    let found = workload_series(&text, &cgroup);
                    if !found.is_empty() || !scrapes.is_empty() {
                        scrapes.push(found);
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
            scrapes
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<BTreeMap<String, f64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the scraper panicked")
    }
}
