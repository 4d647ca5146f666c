//! The `wattlet` binary end to end: serving, scraped by a real Prometheus, linted by promtool,
//! health endpoints, clean shutdown, and the message without privileges.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result};
use integration_tests::{
    Prometheus, TestCgroup, agent_binary, free_port, http_get, promtool_check, rel_diff,
    require_root, sample, start_agent, wait_all, wait_for,
};

fn workload() -> Command {
    integration_tests::workload!()
}

#[test]
fn agent_serves_what_the_kernel_counted_and_prometheus_scrapes_it() -> Result<()> {
    require_root();
    let port = free_port()?;
    let agent = start_agent(port, &[])?;
    let addr = format!("127.0.0.1:{port}");

    assert_eq!(http_get(&addr, "/healthz", None)?, (200, "ok\n".into()));

    let cg = TestCgroup::new("e2e")?;
    wait_all(vec![cg.spawn(workload().args(["spin", "1"]))?])?;
    let kernel = cg.usage_ns()? as f64 / 1e9;
    let label = format!(
        "wattlet_cgroup_cpu_seconds_total{{node=\"e2e-node\",cgroup=\"/wattlet-tests/{}\"}}",
        cg.path.file_name().unwrap().to_string_lossy()
    );
    let ours = wait_for("the cgroup's series", Duration::from_secs(10), || {
        let (_, body) = http_get(&addr, "/metrics", None).ok()?;
        sample(&body, &label).filter(|v| rel_diff(*v, kernel) < 0.02)
    })
    .with_context(|| format!("{label} should match cpu.stat {kernel}s"))?;
    println!("e2e — /metrics {ours:.4}s vs cpu.stat {kernel:.4}s");

    // Classic text for curl-like clients passes promtool's lint; OpenMetrics when asked.
    let (_, text) = http_get(&addr, "/metrics", None)?;
    promtool_check(&text)?;
    let (_, om) = http_get(&addr, "/metrics", Some("application/openmetrics-text"))?;
    assert!(om.ends_with("# EOF\n"));
    assert!(
        sample(
            &text,
            "wattlet_node_cpu_seconds_total{node=\"e2e-node\",mode=\"busy\"}"
        )
        .unwrap()
            > 0.0
    );

    // A real Prometheus scrapes the agent and answers PromQL about it.
    let prom = Prometheus::start(&[&addr])?;
    let expr = format!(
        "wattlet_cgroup_cpu_seconds_total{{cgroup=\"/wattlet-tests/{}\"}}",
        cg.path.file_name().unwrap().to_string_lossy()
    );
    let scraped = wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(30),
        || prom.query(&expr).ok().flatten(),
    )?;
    println!("e2e — Prometheus: {scraped:.4}s vs cpu.stat {kernel:.4}s");
    assert!(rel_diff(scraped, kernel) < 0.02);
    assert_eq!(prom.query("up{job=\"wattlet\"}")?, Some(1.0), "target up");
    drop(prom);

    // SIGTERM: a clean, prompt exit.
    let mut agent = agent;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let status = wait_for("the agent to exit", Duration::from_secs(10), || {
        agent.0.try_wait().ok().flatten()
    })?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

/// Without privileges, `run` stops at once and says how to run it; `check` says what fails.
#[test]
fn without_privileges_the_agent_says_how_to_run() -> Result<()> {
    require_root();
    let bin = agent_binary()?;
    // setpriv drops to nobody with no capabilities.
    let drop_privs = |args: &[&str]| -> Result<std::process::Output> {
        Ok(Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin)
            .args(args)
            .output()?)
    };
    let run = drop_privs(&["run", "--web.listen-address", "127.0.0.1:0"])?;
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");

    let check = drop_privs(&["check"])?;
    let out = String::from_utf8_lossy(&check.stdout);
    println!("{out}");
    assert!(!check.status.success());
    assert!(out.contains("[FAIL] privileges"), "{out}");
    assert!(out.contains("cannot run"), "{out}");
    Ok(())
}

/// `check` as root on this machine: everything needed works, and it says there is no PMU.
#[test]
fn check_reports_this_node() -> Result<()> {
    require_root();
    let out = Command::new(agent_binary()?).arg("check").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[ok  ] eBPF"), "{text}");
    assert!(text.contains("[ok  ] cgroup v2"), "{text}");
    assert!(text.contains("PMU"), "{text}");
    Ok(())
}
