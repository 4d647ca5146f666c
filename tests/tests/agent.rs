//! The `wattlet` binary end to end: serving, scraped by a real Prometheus, linted by promtool,
//! health endpoints, clean shutdown, and the message without privileges.

use std::{
    fs,
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use integration_tests::{
    Running, TestCgroup, agent_binary, free_port, http_get, rel_diff, require_root, sample,
    start_agent, wait_all, wait_for,
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
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool not found: `cargo xtask test` installs it")?;
    promtool.stdin.take().unwrap().write_all(text.as_bytes())?;
    let lint = promtool.wait_with_output()?;
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
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
    let dir = std::env::temp_dir().join(format!("wattlet-e2e-prom-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: wattlet\n    static_configs: [{{targets: ['{addr}']}}]\n"
        ),
    )?;
    let prom_port = free_port()?;
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let _prom = Running(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("prometheus not found: `cargo xtask test` installs it")?,
    );
    let query = format!(
        "/api/v1/query?query=wattlet_cgroup_cpu_seconds_total%7Bcgroup%3D%22%2Fwattlet-tests%2F{}%22%7D",
        cg.path.file_name().unwrap().to_string_lossy()
    );
    let scraped = wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(30),
        || {
            let (status, body) = http_get(&prom_addr, &query, None).ok()?;
            if status != 200 {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        },
    )?;
    println!("e2e — Prometheus: {scraped:.4}s vs cpu.stat {kernel:.4}s");
    assert!(rel_diff(scraped, kernel) < 0.02);
    let (_, up) = http_get(
        &prom_addr,
        "/api/v1/query?query=up%7Bjob%3D%22wattlet%22%7D",
        None,
    )?;
    assert!(up.contains("\"1\""), "target up: {up}");
    drop(_prom);
    let _ = fs::remove_dir_all(&dir);

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
