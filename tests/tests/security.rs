//! The agent hardened, end to end: a real Prometheus scraping it over mutual TLS with basic
//! auth; SIGTERM (the interval finishes, exit 0 within 2 s; a second signal exits at once);
//! least privilege with exactly the documented capabilities (capsh), as root the way the
//! DaemonSet runs it and as an unprivileged user with ambient capabilities the way a systemd
//! unit can; and the message that names a missing capability.

use std::{
    ffi::OsStr,
    fs,
    net::TcpStream,
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use integration_tests::{
    Prometheus, Running, ScrapeConfig, agent_binary, agent_command, capability_sets, free_port,
    http_get,
    pki::{TestCa, TlsClient, bcrypt_hash},
    rapl_sim::{RaplSim, SimConfig},
    require_root, sample, spawn_agent, wait_for,
};

const USER: (&str, &str) = ("prometheus", "s3cret-for-tests");

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A web config with TLS from `ca`, basic auth for [`USER`], and `extra` lines.
fn web_config(ca: &TestCa, extra: &str) -> Result<std::path::PathBuf> {
    let server = ca.server("agent")?;
    let path = ca.dir.join("web.yml");
    fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra}\
             basic_auth_users:\n  {}: '{}'\n",
            server.cert.display(),
            server.key.display(),
            USER.0,
            bcrypt_hash(USER.1)
        ),
    )?;
    Ok(path)
}

#[test]
fn prometheus_scrapes_the_agent_over_mutual_tls_with_basic_auth() -> Result<()> {
    require_root();
    let ca = TestCa::new("e2e-mtls")?;
    let scraper = ca.client("prometheus")?;
    let config = web_config(
        &ca,
        &format!(
            "  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n",
            ca.ca_file().display()
        ),
    )?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let client = TlsClient::new(&ca.ca_file(), Some(&scraper))?;
    let _agent = spawn_agent(
        agent_command(port, &[os("--web.config.file"), config.as_os_str()])?,
        || {
            client
                .get(&addr, "/readyz", Some(USER))
                .is_ok_and(|(s, _)| s == 200)
        },
    )?;

    // What Prometheus must present: no plain HTTP, no anonymous or wrong password, no
    // handshake without a client certificate.
    let (status, body) = http_get(&addr, "/metrics", None)?;
    assert_eq!(status, 400, "plain HTTP to the TLS port: {body}");
    assert_eq!(client.get(&addr, "/metrics", None)?.0, 401);
    assert_eq!(
        client.get(&addr, "/metrics", Some((USER.0, "wrong")))?.0,
        401
    );
    let anonymous = TlsClient::new(&ca.ca_file(), None)?;
    let refused = anonymous.get(&addr, "/metrics", Some(USER));
    assert!(
        refused.is_err(),
        "no client certificate, no response: {refused:?}"
    );
    println!(
        "security — without a client certificate: {:#}",
        refused.unwrap_err()
    );

    let prom = Prometheus::start_with(
        &[&addr],
        &ScrapeConfig {
            https: true,
            ca_file: Some(ca.ca_file()),
            client: Some(scraper),
            basic_auth: Some((USER.0.to_owned(), USER.1.to_owned())),
        },
    )?;
    let up = wait_for(
        "Prometheus to scrape the agent over TLS",
        Duration::from_secs(30),
        || {
            prom.query("up{job=\"wattlet\"}")
                .ok()
                .flatten()
                .filter(|v| *v == 1.0)
        },
    )?;
    let busy = wait_for(
        "the agent's series in Prometheus",
        Duration::from_secs(30),
        || {
            prom.query("wattlet_node_cpu_seconds_total{mode=\"busy\"}")
                .ok()
                .flatten()
        },
    )?;
    println!("security — Prometheus over mutual TLS + basic auth: up={up}, busy CPU {busy:.2} s");
    assert!(busy > 0.0);
    Ok(())
}

/// Sends `signal` to the agent.
fn signal(agent: &Running, signal: i32) {
    // SAFETY: signalling our own child, which has not been waited for yet.
    unsafe { libc::kill(agent.0.id() as i32, signal) };
}

/// Waits for the agent's exit, polling every 5 ms so that the time measured is the exit's.
fn wait_exit(agent: &mut Running, within: Duration) -> Result<ExitStatus> {
    let end = Instant::now() + within;
    loop {
        if let Some(status) = agent.0.try_wait()? {
            return Ok(status);
        }
        ensure!(
            Instant::now() < end,
            "the agent did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(agent: &mut Running) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    if let Some(mut e) = agent.0.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

/// A TLS agent (no auth) with a connection that never sends its ClientHello: shutdown waits
/// on it for its grace second.
fn agent_with_a_stalled_handshake(ca: &TestCa) -> Result<(Running, TcpStream)> {
    let server = ca.server("agent")?;
    let config = ca.dir.join("tls-only.yml");
    fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            server.cert.display(),
            server.key.display()
        ),
    )?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let client = TlsClient::new(&ca.ca_file(), None)?;
    let agent = spawn_agent(
        agent_command(
            port,
            &[
                os("--web.config.file"),
                config.as_os_str(),
                os("--interval"),
                os("1s"),
            ],
        )?,
        || {
            client
                .get(&addr, "/readyz", None)
                .is_ok_and(|(s, _)| s == 200)
        },
    )?;
    let stalled = TcpStream::connect(&addr)?;
    Ok((agent, stalled))
}

#[test]
fn sigterm_finishes_the_interval_and_exits_zero_within_two_seconds() -> Result<()> {
    require_root();
    // Plain HTTP, nothing in progress.
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut agent = spawn_agent(agent_command(port, &[os("--interval"), os("1s")])?, || {
        http_get(&addr, "/readyz", None).is_ok_and(|(s, _)| s == 200)
    })?;
    let started = Instant::now();
    signal(&agent, libc::SIGTERM);
    let status = wait_exit(&mut agent, Duration::from_secs(5))?;
    let idle = started.elapsed();
    let log = stderr_of(&mut agent);
    assert_eq!(status.code(), Some(0), "{status}\n{log}");
    assert!(
        log.contains("SIGTERM received: finishing the current interval"),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the port is closed after exit"
    );

    // With a connection that holds shutdown for its whole grace period.
    let ca = TestCa::new("sigterm")?;
    let (mut agent, _stalled) = agent_with_a_stalled_handshake(&ca)?;
    let started = Instant::now();
    signal(&agent, libc::SIGTERM);
    let status = wait_exit(&mut agent, Duration::from_secs(5))?;
    let held = started.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    println!(
        "security — SIGTERM with --interval 1s: exit 0 after {} ms (idle), {} ms (a client \
         holding the grace period)",
        idle.as_millis(),
        held.as_millis()
    );
    assert!(idle < Duration::from_secs(2), "{idle:?}");
    assert!(held < Duration::from_secs(2), "{held:?}");
    Ok(())
}

#[test]
fn a_second_signal_exits_at_once() -> Result<()> {
    require_root();
    let ca = TestCa::new("second-signal")?;
    let (mut agent, _stalled) = agent_with_a_stalled_handshake(&ca)?;
    signal(&agent, libc::SIGTERM);
    // Shutdown is waiting on the stalled connection (for up to its 1 s grace).
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        agent.0.try_wait()?.is_none(),
        "the first signal's shutdown should still be waiting"
    );
    let started = Instant::now();
    signal(&agent, libc::SIGINT);
    let status = wait_exit(&mut agent, Duration::from_secs(5))?;
    let took = started.elapsed();
    let log = stderr_of(&mut agent);
    println!(
        "security — second signal (SIGINT) during shutdown: exit {:?} after {} ms",
        status.code(),
        took.as_millis()
    );
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status}\n{log}");
    assert!(status.signal().is_none(), "an exit, not a kill");
    assert!(
        log.contains("SIGINT received again: exiting at once"),
        "{log}"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    Ok(())
}

/// The capabilities the README documents: CAP_DAC_READ_SEARCH (2), CAP_PERFMON (38), CAP_BPF
/// (39).
const DOCUMENTED: [(u32, &str); 3] = [
    (2, "cap_dac_read_search"),
    (38, "cap_perfmon"),
    (39, "cap_bpf"),
];

fn mask(caps: &[(u32, &str)]) -> u64 {
    caps.iter().fold(0, |m, (c, _)| m | (1 << c))
}

fn names(caps: &[(u32, &str)]) -> String {
    caps.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(",")
}

/// Every capability of this kernel but `keep`, for capsh's --drop (the bounding set).
fn all_but(keep: &[(u32, &str)]) -> Result<String> {
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()?;
    Ok((0..=last)
        .filter(|c| !keep.iter().any(|(k, _)| k == c))
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// `argv` under capsh with exactly `keep` in the inheritable, permitted, effective and bounding
/// sets: as root (execve gives root its bounding set), or as `nobody` with `keep` ambient.
fn with_only(keep: &[(u32, &str)], as_nobody: bool, argv: &Command) -> Result<Command> {
    let mut cmd = Command::new("capsh");
    let keep_names = names(keep);
    if as_nobody {
        let switch = format!("{keep_names},cap_setuid,cap_setgid,cap_setpcap");
        cmd.arg(format!("--caps={switch}+eip"))
            .args(["--keep=1", "--user=nobody"])
            .arg(format!("--caps={switch}+eip"))
            .arg(format!("--drop={}", all_but(keep)?))
            .arg(format!("--caps={keep_names}+eip"))
            .arg(format!("--addamb={keep_names}"));
    } else {
        cmd.arg(format!("--drop={}", all_but(keep)?))
            .arg(format!("--inh={keep_names}"));
    }
    cmd.args(["--", "-c", "exec \"$0\" \"$@\""])
        .arg(argv.get_program())
        .args(argv.get_args());
    Ok(cmd)
}

/// The agent with exactly the documented capabilities loads, attaches, reads the simulated
/// powercap tree (in a root-only directory, as energy_uj is on a real host) and serves.
fn runs_with_only_the_documented_capabilities(as_nobody: bool) -> Result<()> {
    require_root();
    let sim = RaplSim::start(SimConfig::default())?;
    fs::set_permissions(sim.sysfs_root(), fs::Permissions::from_mode(0o700))?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let agent = agent_command(
        port,
        &[
            os("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            os("--power-source"),
            os("powercap"),
            os("--kubernetes"),
            os("off"),
        ],
    )?;
    let agent = spawn_agent(with_only(&DOCUMENTED, as_nobody, &agent)?, || {
        http_get(&addr, "/readyz", None).is_ok_and(|(s, _)| s == 200)
    })?;
    let [inh, prm, eff, bnd, amb] = capability_sets(agent.0.id())?;
    let want = mask(&DOCUMENTED);
    assert_eq!(
        (inh, prm, eff, bnd),
        (want, want, want, want),
        "sets I/P/E/B {inh:x} {prm:x} {eff:x} {bnd:x}, want {want:x}"
    );
    assert_eq!(amb, if as_nobody { want } else { 0 }, "ambient {amb:x}");
    let status = fs::read_to_string(format!("/proc/{}/status", agent.0.id()))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .context("Uid")?
        .split_whitespace()
        .next()
        .context("uid")?
        .to_owned();
    assert_eq!(uid, if as_nobody { "65534" } else { "0" });

    let body = wait_for("measured node energy", Duration::from_secs(10), || {
        let (_, body) = http_get(&addr, "/metrics", None).ok()?;
        let energy = sample(
            &body,
            "wattlet_node_energy_joules_total{node=\"e2e-node\",zone=\"package\",mode=\"active\",estimated=\"false\"}",
        )?;
        (energy > 0.0).then_some(body)
    })?;
    let busy = sample(
        &body,
        "wattlet_node_cpu_seconds_total{node=\"e2e-node\",mode=\"busy\"}",
    )
    .context("busy CPU")?;
    assert!(busy > 0.0, "sched_switch counted nothing");
    assert!(
        body.contains("source=\"powercap\",estimated=\"false\""),
        "the powercap tree was read"
    );
    println!(
        "security — uid {uid} with only {} (I/P/E/B {want:#x}, ambient {amb:#x}): eBPF attached \
         ({busy:.2} s busy), powercap read, /metrics served",
        names(&DOCUMENTED)
    );
    Ok(())
}

#[test]
fn least_privilege_as_root_with_only_the_documented_capabilities() -> Result<()> {
    runs_with_only_the_documented_capabilities(false)
}

#[test]
fn least_privilege_as_nobody_with_ambient_capabilities() -> Result<()> {
    runs_with_only_the_documented_capabilities(true)
}

#[test]
fn a_missing_capability_is_named_with_the_fix() -> Result<()> {
    require_root();
    for (missing, name) in [(39, "CAP_BPF"), (38, "CAP_PERFMON")] {
        let keep: Vec<(u32, &str)> = DOCUMENTED
            .iter()
            .copied()
            .filter(|(c, _)| *c != missing)
            .collect();
        let mut agent = Command::new(agent_binary()?);
        agent.args([
            "run",
            "--web.listen-address",
            "127.0.0.1:0",
            "--kubernetes",
            "off",
        ]);
        let started = Instant::now();
        let out = with_only(&keep, false, &agent)?.output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "security — without {name}: {} after {:?}",
            out.status,
            started.elapsed()
        );
        assert!(
            !out.status.success(),
            "without {name} the agent must not run"
        );
        assert!(err.contains(&format!("missing {name}: ")), "{name}: {err}");
        assert!(
            err.contains("setcap") && err.contains("capabilities.add"),
            "{err}"
        );
    }
    Ok(())
}
