//! The Localhost seccomp profile, deploy/seccomp/wattlet.json: the real agent runs under it
//! (compiled to a BPF filter here, as a runtime would) through everything it does — eBPF,
//! powercap, TLS with basic auth, the Kubernetes watch, SIGTERM — and a profile without `bpf`
//! stops it, which shows the filter bites. The kustomize overlay installs the same file and
//! points the DaemonSet at it.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use integration_tests::{
    agent_command, free_port,
    pki::{TestCa, TlsClient, bcrypt_hash},
    rapl_sim::{RaplSim, SimConfig},
    require_root, sample, spawn_agent, wait_for,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).to_owned()
}

fn profile() -> Result<Value> {
    let path = deploy().join("seccomp/wattlet.json");
    Ok(serde_json::from_str(&fs::read_to_string(&path)?)?)
}

/// x86_64 system call numbers by name, for the names a profile may list.
macro_rules! syscall_table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

const SYSCALLS: &[(&str, libc::c_long)] = {
    syscall_table![
        SYS_accept4,
        SYS_access,
        SYS_arch_prctl,
        SYS_bind,
        SYS_bpf,
        SYS_brk,
        SYS_clock_getres,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_clone,
        SYS_close,
        SYS_connect,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_pwait,
        SYS_epoll_wait,
        SYS_eventfd2,
        SYS_execve,
        SYS_exit,
        SYS_exit_group,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_fcntl,
        SYS_fstat,
        SYS_futex,
        SYS_getdents64,
        SYS_getegid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getpeername,
        SYS_getpid,
        SYS_getrandom,
        SYS_getrusage,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_gettid,
        SYS_gettimeofday,
        SYS_getuid,
        SYS_ioctl,
        SYS_listen,
        SYS_lseek,
        SYS_madvise,
        SYS_mmap,
        SYS_mprotect,
        SYS_mremap,
        SYS_munmap,
        SYS_nanosleep,
        SYS_newfstatat,
        SYS_openat,
        SYS_perf_event_open,
        SYS_poll,
        SYS_ppoll,
        SYS_prctl,
        SYS_pread64,
        SYS_prlimit64,
        SYS_read,
        SYS_recvfrom,
        SYS_restart_syscall,
        SYS_rseq,
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_sched_getaffinity,
        SYS_sched_yield,
        SYS_sendmmsg,
        SYS_sendto,
        SYS_set_robust_list,
        SYS_set_tid_address,
        SYS_setsockopt,
        SYS_shutdown,
        SYS_sigaltstack,
        SYS_socket,
        SYS_socketpair,
        SYS_statx,
        SYS_tgkill,
        SYS_uname,
        SYS_write,
        SYS_writev,
    ]
};

fn number(name: &str) -> Result<i64> {
    SYSCALLS
        .iter()
        .find(|(n, _)| n.strip_prefix("SYS_") == Some(name))
        .map(|(_, nr)| *nr)
        .with_context(|| format!("{name} is not in this test's x86_64 table: add it"))
}

/// An OCI profile's allow rules, compiled for x86_64 with its default errno (what runc does
/// with libseccomp, for the subset of the format the profile uses).
fn compile(profile: &Value, without: &[&str]) -> Result<BpfProgram> {
    ensure!(
        profile["defaultAction"] == "SCMP_ACT_ERRNO",
        "default: errno"
    );
    let errno = profile["defaultErrnoRet"]
        .as_u64()
        .context("defaultErrnoRet")? as u32;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for rule in profile["syscalls"].as_array().context("syscalls")? {
        ensure!(
            rule["action"] == "SCMP_ACT_ALLOW",
            "only allow rules: {rule}"
        );
        let conditions = conditions(rule)?;
        for name in rule["names"].as_array().context("names")? {
            let name = name.as_str().context("a name")?;
            if without.contains(&name) {
                continue;
            }
            let entry = rules.entry(number(name)?).or_default();
            if !conditions.is_empty() {
                entry.push(SeccompRule::new(conditions.clone())?);
            }
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(errno),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// A rule's argument conditions (SCMP_CMP_MASKED_EQ is the one the profile uses).
fn conditions(rule: &Value) -> Result<Vec<SeccompCondition>> {
    let Some(args) = rule["args"].as_array() else {
        return Ok(Vec::new());
    };
    args.iter()
        .map(|a| {
            let index = a["index"].as_u64().context("index")? as u8;
            let value = a["value"].as_u64().context("value")?;
            let two = a["valueTwo"].as_u64().unwrap_or(0);
            let op = match a["op"].as_str() {
                Some("SCMP_CMP_MASKED_EQ") => SeccompCmpOp::MaskedEq(value),
                other => bail!("op {other:?} is not handled by this test"),
            };
            Ok(SeccompCondition::new(
                index,
                SeccompCmpArgLen::Qword,
                op,
                two,
            )?)
        })
        .collect()
}

/// `cmd`, confined by `filter` from its execve on (as a runtime confines a container).
fn confined(mut cmd: Command, filter: BpfProgram) -> Command {
    // SAFETY: the closure only installs an already compiled filter (prctl/seccomp system calls,
    // no allocation) between fork and exec.
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other));
    }
    cmd
}

#[test]
fn the_agent_runs_under_the_shipped_seccomp_profile() -> Result<()> {
    require_root();
    let profile = profile()?;
    let sim = RaplSim::start(SimConfig::default())?;
    let ca = TestCa::new("seccomp")?;
    let server = ca.server("agent")?;
    let config = ca.dir.join("web.yml");
    fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  p: '{}'\n",
            server.cert.display(),
            server.key.display(),
            bcrypt_hash("pw")
        ),
    )?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    // The Kubernetes watch goes to the agent's own port: a TLS handshake and a 401 each time.
    let kubeconfig = ca.dir.join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \
             'https://localhost:{port}', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  \
             user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n"
        ),
    )?;
    let os = OsStr::new;
    let mut cmd = agent_command(
        port,
        &[
            os("--web.config.file"),
            config.as_os_str(),
            os("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            os("--power-source"),
            os("powercap"),
            os("--kubernetes"),
            os("on"),
            os("--interval"),
            os("1s"),
        ],
    )?;
    cmd.env("KUBECONFIG", &kubeconfig);
    let client = TlsClient::new(&ca.ca_file(), None)?;
    let mut agent = spawn_agent(confined(cmd, compile(&profile, &[])?), || {
        client
            .get(&addr, "/readyz", Some(("p", "pw")))
            .is_ok_and(|(s, _)| s == 200)
    })?;
    let status = fs::read_to_string(format!("/proc/{}/status", agent.0.id()))?;
    assert!(
        status.contains("Seccomp:\t2") && status.contains("Seccomp_filters:\t1"),
        "the agent runs under one seccomp filter:\n{status}"
    );
    let body = wait_for(
        "measured energy under seccomp",
        Duration::from_secs(15),
        || {
            let (_, body) = client.get(&addr, "/metrics", Some(("p", "pw"))).ok()?;
            sample(
            &body,
            "wattlet_node_energy_joules_total{node=\"e2e-node\",zone=\"package\",mode=\"active\",estimated=\"false\"}",
        )
        .filter(|e| *e > 0.0)
        .map(|_| body)
        },
    )?;
    assert!(
        sample(
            &body,
            "wattlet_node_cpu_seconds_total{node=\"e2e-node\",mode=\"busy\"}"
        )
        .is_some_and(|b| b > 0.0)
    );
    assert_eq!(client.get(&addr, "/metrics", None)?.0, 401);
    // Let the Kubernetes watch try (and retry) at least once.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let exit = wait_for("the agent to exit", Duration::from_secs(5), || {
        agent.0.try_wait().ok().flatten()
    })?;
    let mut log = String::new();
    if let Some(mut e) = agent.0.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut log);
    }
    assert!(exit.success(), "{exit}\n{log}");
    assert!(log.contains("watching this node's pods"), "{log}");
    assert!(
        !log.contains("Function not implemented"),
        "a call was refused:\n{log}"
    );
    println!(
        "seccomp — the agent under deploy/seccomp/wattlet.json: eBPF, powercap, TLS + basic \
         auth, the Kubernetes watch; SIGTERM exit 0 after {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

#[test]
fn without_bpf_in_the_profile_the_agent_cannot_start() -> Result<()> {
    require_root();
    let port = free_port()?;
    let cmd = agent_command(port, &[OsStr::new("--kubernetes"), OsStr::new("off")])?;
    let out = confined(cmd, compile(&profile()?, &["bpf"])?).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    println!(
        "seccomp — without bpf in the profile: {}, {}",
        out.status,
        err.lines()
            .find(|l| l.starts_with("Error"))
            .unwrap_or_default()
    );
    Ok(())
}

#[test]
fn the_seccomp_overlay_installs_and_uses_the_profile() -> Result<()> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy().join("kustomize/overlays/seccomp-localhost"))
        .output()
        .context("kubectl renders the overlay")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout)?)
        .map(|d| Ok(serde::Deserialize::deserialize(d)?))
        .collect::<Result<_>>()?;
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned();
    let ds = find("DaemonSet").context("DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    assert_eq!(
        agent["securityContext"]["seccompProfile"],
        serde_json::json!({"type": "Localhost", "localhostProfile": "wattlet/wattlet.json"})
    );
    assert_eq!(
        agent["securityContext"]["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON", "DAC_READ_SEARCH"])
    );
    // The agent's own mounts stay read-only; only the installer writes, and only there.
    for m in agent["volumeMounts"].as_array().context("mounts")? {
        assert_eq!(m["readOnly"], true, "{m}");
    }
    let init = &pod["initContainers"][0];
    let volume = |name: &Value| {
        pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == *name).cloned())
    };
    let mounts = init["volumeMounts"].as_array().context("init mounts")?;
    let host = mounts
        .iter()
        .find(|m| m["readOnly"] != true)
        .context("the writable mount")?;
    assert_eq!(
        volume(&host["name"]).context("host volume")?["hostPath"]["path"],
        "/var/lib/kubelet/seccomp/wattlet",
        "the kubelet resolves localhostProfile wattlet/wattlet.json below /var/lib/kubelet/seccomp"
    );
    let script = init["command"][2].as_str().context("script")?;
    assert!(script.contains(&format!(
        "{}/wattlet.json",
        host["mountPath"].as_str().unwrap_or("?")
    )));
    assert_eq!(
        init["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(init["securityContext"]["allowPrivilegeEscalation"], false);
    let source = mounts
        .iter()
        .find(|m| m["readOnly"] == true)
        .context("profile mount")?;
    let cm_name = volume(&source["name"]).context("configMap volume")?["configMap"]["name"].clone();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name)
        .context("the profile's ConfigMap")?;
    let shipped: Value =
        serde_json::from_str(cm["data"]["wattlet.json"].as_str().context("data")?)?;
    assert_eq!(
        shipped,
        profile()?,
        "the ConfigMap carries deploy/seccomp/wattlet.json"
    );
    Ok(())
}
