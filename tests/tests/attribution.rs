//! Attribution end to end: the agent reads a simulated two-socket RAPL tree driven by a known
//! power law while cgroups laid out as Kubernetes lays out pods run a 3:1 CPU load; a real
//! Prometheus scrapes it, and PromQL over its data must show the 3:1 split of energy, every
//! joule accounted for, and the law's idle power found by the agent's estimate.

use std::{ffi::OsStr, thread, time::Duration};

use anyhow::{Context as _, Result};
use integration_tests::{
    Prometheus, TestCgroup, free_port, http_get, promtool_check,
    rapl_sim::{RaplSim, SimConfig},
    rel_diff, require_root, start_agent, wait_all, wait_for,
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
