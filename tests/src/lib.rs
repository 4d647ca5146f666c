//! Helpers for Wattlet's integration tests: test cgroups in the real v2 hierarchy, the kernel's
//! own accounting to compare against, and the agent binary.

use std::{
    ffi::CString,
    fs,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub mod browser;
pub mod dashboards;
pub mod kube_api;
pub mod pki;
pub mod rapl_sim;
pub mod scenarios;
pub mod stress;

/// The cgroup v2 mount of this machine.
pub fn cgroup2_root() -> Result<PathBuf> {
    Ok(node_agent::cgroup::locate_cgroup2()?.mount_point)
}

/// Whether we can do what the eBPF tests need.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the eBPF tests need root: run `sudo -E cargo xtask test`"
    );
}

/// A cgroup created for a test under `<v2 root>/wattlet-tests/`, removed (with its processes
/// killed) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
    pub id: u64,
    procs: CString,
}

impl TestCgroup {
    pub fn new(name: &str) -> Result<Self> {
        let parent = cgroup2_root()?.join("wattlet-tests");
        fs::create_dir_all(&parent)?;
        let path = parent.join(format!("{name}-{}", std::process::id()));
        if path.exists() {
            kill_and_remove(&path);
        }
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Self::at(path)
    }

    /// Creates the cgroup at `path` (and any missing parents) and adopts it.
    pub fn create_at(path: PathBuf) -> Result<Self> {
        fs::create_dir_all(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Self::at(path)
    }

    fn at(path: PathBuf) -> Result<Self> {
        let id = fs::metadata(&path)?.ino();
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_encoded_bytes())?;
        Ok(Self { path, id, procs })
    }

    /// Starts `cmd` inside this cgroup: the child moves itself in before exec, so everything it
    /// runs is charged here.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        let procs = self.procs.clone();
        // SAFETY: the closure only calls async-signal-safe functions (open, write, close) on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n < 0 { Err(err) } else { Ok(()) }
            });
        }
        cmd.spawn().with_context(|| format!("spawning {cmd:?}"))
    }

    /// The kernel's own accounting of this cgroup's CPU time (cpu.stat usage_usec), in ns.
    pub fn usage_ns(&self) -> Result<u64> {
        let stat = fs::read_to_string(self.path.join("cpu.stat"))?;
        parse_usage_usec(&stat)
            .map(|us| us * 1000)
            .context("no usage_usec in cpu.stat")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.path);
        // The shared parent goes when the last test cgroup does (fails harmlessly otherwise).
        if let Some(parent) = self.path.parent()
            && parent.file_name().is_some_and(|n| n == "wattlet-tests")
        {
            let _ = fs::remove_dir(parent);
        }
    }
}

pub fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Kills what runs in the cgroup and removes it, children first.
pub fn kill_and_remove(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_and_remove(&e.path());
            }
        }
    }
    let _ = fs::write(path.join("cgroup.kill"), "1");
    for _ in 0..200 {
        match fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A container's cgroup laid out as the kubelet (systemd driver) and containerd lay it out,
/// under `base`: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/
/// cri-containerd-<id>.scope`. `qos` is `besteffort` or `burstable`.
pub fn pod_container(base: &TestCgroup, qos: &str, pod_uid: &str, id: &str) -> Result<TestCgroup> {
    TestCgroup::create_at(base.path.join(format!(
        "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/cri-containerd-{id}.scope",
        pod_uid.replace('-', "_")
    )))
}

/// The workload binary, built with these tests (cargo sets its path for integration tests).
#[macro_export]
macro_rules! workload {
    () => {
        std::process::Command::new(env!("CARGO_BIN_EXE_wattlet-workload"))
    };
}

/// The agent binary that `cargo xtask test` built (release, eBPF embedded).
pub fn agent_binary() -> Result<PathBuf> {
    let path = std::env::var_os("WATTLET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/wattlet"));
    if !path.exists() {
        bail!(
            "agent binary {} not found: run the tests with `cargo xtask test`",
            path.display()
        );
    }
    Ok(path)
}

/// Waits for every child and checks that each exited cleanly.
pub fn wait_all(children: Vec<Child>) -> Result<()> {
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            bail!("workload exited with {status}");
        }
    }
    Ok(())
}

/// Relative difference |a - b| / b.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}

/// A minimal HTTP/1.0 GET on loopback (no client library needed): (status, body).
pub fn http_get(addr: &str, path: &str, accept: Option<&str>) -> Result<(u16, String)> {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    get_over(std::net::TcpStream::connect(addr)?, addr, path, &accept)
}

/// An HTTP/1.0 GET over a connected stream, with `headers` (each ending in CRLF) besides Host:
/// (status, body).
pub fn get_over(
    mut s: std::net::TcpStream,
    host: &str,
    path: &str,
    headers: &str,
) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

/// GET `path` and parse the body as JSON; an error unless the status is 200.
pub fn get_json(addr: &str, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http_get(addr, path, None)?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if std::time::Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `wattlet run` on 127.0.0.1:`port` (node name `e2e-node`, interval 200ms unless `extra`
/// sets one) with `extra` arguments, and waits until /readyz says a snapshot was taken.
pub fn start_agent(port: u16, extra: &[&std::ffi::OsStr]) -> Result<Running> {
    start_agent_with_env(port, extra, &[])
}

/// [`start_agent`] with environment variables set for the agent.
pub fn start_agent_with_env(
    port: u16,
    extra: &[&std::ffi::OsStr],
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<Running> {
    let interval: &[&str] = if extra.iter().any(|a| *a == "--interval") {
        &[]
    } else {
        &["--interval", "200ms"]
    };
    let child = Command::new(agent_binary()?)
        .args(["run", "--node-name", "e2e-node"])
        .args(interval)
        .envs(env.iter().copied())
        .arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stderr(if std::env::var_os("WATTLET_DEBUG_IDLE").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::piped()
        })
        .spawn()?;
    let agent = Running(child);
    let addr = format!("127.0.0.1:{port}");
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(&addr, "/readyz", None)
            .ok()
            .filter(|(s, _)| *s == 200)
    })?;
    Ok(agent)
}

/// `wattlet run` on 127.0.0.1:`port` (node name `e2e-node`, interval 200ms unless `extra` sets
/// one) with `extra` arguments, as a command to spawn (see [`spawn_agent`]).
pub fn agent_command(port: u16, extra: &[&std::ffi::OsStr]) -> Result<Command> {
    let mut cmd = Command::new(agent_binary()?);
    cmd.args(["run", "--node-name", "e2e-node"]);
    if !extra.iter().any(|a| *a == "--interval") {
        cmd.args(["--interval", "200ms"]);
    }
    cmd.arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra);
    Ok(cmd)
}

/// Spawns the agent as `cmd` (perhaps under a wrapper such as capsh) with stderr captured, and
/// waits until `ready` says so; if the agent exits first, the error carries its stderr.
pub fn spawn_agent(mut cmd: Command, mut ready: impl FnMut() -> bool) -> Result<Running> {
    let child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let mut agent = Running(child);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if ready() {
            return Ok(agent);
        }
        if let Some(status) = agent.0.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = agent.0.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            bail!("the agent exited with {status} before it was ready:\n{err}");
        }
        if std::time::Instant::now() > end {
            bail!("the agent was not ready after 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The capability sets of a process, from /proc/<pid>/status: (CapInh, CapPrm, CapEff, CapBnd,
/// CapAmb).
pub fn capability_sets(pid: u32) -> Result<[u64; 5]> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut out = [0u64; 5];
    for (i, key) in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
        .iter()
        .enumerate()
    {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        out[i] = u64::from_str_radix(line.trim(), 16)?;
    }
    Ok(out)
}

/// The value of the series whose line starts with `prefix` in classic text.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every series of `metric` in classic text: its labels and value.
pub fn series(text: &str, metric: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((parse_labels(labels), value.trim().parse().ok()?))
        })
        .collect()
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn parse_labels(s: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// A real Prometheus (Debian's package) scraping `targets` every second, on loopback, with its
/// data in a temporary directory removed on drop.
pub struct Prometheus {
    process: Option<Running>,
    pub addr: String,
    dir: PathBuf,
}

/// How Prometheus scrapes the targets: `scheme`, `tls_config` and `basic_auth` of its
/// scrape_config (plain HTTP without auth by default).
#[derive(Clone, Debug, Default)]
pub struct ScrapeConfig {
    pub https: bool,
    pub ca_file: Option<PathBuf>,
    /// A client certificate, for mutual TLS.
    pub client: Option<pki::Issued>,
    pub basic_auth: Option<(String, String)>,
}

impl ScrapeConfig {
    /// The scrape_config keys beyond job_name and targets, as YAML lines (indented for a list
    /// item).
    fn yaml(&self) -> String {
        let mut y = String::new();
        if self.https {
            y.push_str("    scheme: https\n");
        }
        let mut tls = Vec::new();
        if let Some(ca) = &self.ca_file {
            tls.push(format!("ca_file: '{}'", ca.display()));
        }
        if let Some(c) = &self.client {
            tls.push(format!("cert_file: '{}'", c.cert.display()));
            tls.push(format!("key_file: '{}'", c.key.display()));
        }
        if !tls.is_empty() {
            y.push_str(&format!("    tls_config: {{{}}}\n", tls.join(", ")));
        }
        if let Some((user, password)) = &self.basic_auth {
            y.push_str(&format!(
                "    basic_auth: {{username: '{user}', password: '{password}'}}\n"
            ));
        }
        y
    }
}

impl Prometheus {
    pub fn start(targets: &[&str]) -> Result<Self> {
        Self::start_full(targets, &ScrapeConfig::default(), &[])
    }

    /// A Prometheus whose scrape_config for `targets` has `scrape`'s scheme, TLS and auth.
    pub fn start_with(targets: &[&str], scrape: &ScrapeConfig) -> Result<Self> {
        Self::start_full(targets, scrape, &[])
    }

    /// [`Prometheus::start`] with rule files loaded (evaluated every second, as groups without
    /// their own interval are).
    pub fn start_with_rules(targets: &[&str], rule_files: &[&Path]) -> Result<Self> {
        Self::start_full(targets, &ScrapeConfig::default(), rule_files)
    }

    fn start_full(targets: &[&str], scrape: &ScrapeConfig, rule_files: &[&Path]) -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("wattlet-prom-{}-{port}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: String = rule_files
            .iter()
            .map(|f| format!("  - '{}'\n", f.display()))
            .collect();
        let rules = if rules.is_empty() {
            rules
        } else {
            format!("rule_files:\n{rules}")
        };
        fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: wattlet\n{}    static_configs: [{{targets: [{}]}}]\n{rules}",
                scrape.yaml(),
                list.join(", ")
            ),
        )?;
        let addr = format!("127.0.0.1:{port}");
        let process = Running(
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("prometheus not found: `cargo xtask test` installs it")?,
        );
        Ok(Self {
            process: Some(process),
            addr,
            dir,
        })
    }

    /// GETs an API path (`/api/v1/...` with its query string): the `data` of a successful
    /// answer, or an error with Prometheus' own message (a PromQL parse error, for one).
    pub fn api(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = http_get(&self.addr, path, None)?;
        let mut v: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{path}: HTTP {status}, not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!("{path}: HTTP {status}: {} {}", v["errorType"], v["error"]);
        }
        Ok(v["data"].take())
    }

    /// Evaluates a PromQL expression now: every series of the result (an error names the
    /// expression and what Prometheus said about it).
    pub fn query_all(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", url_encode(expr)))
            .with_context(|| format!("query {expr}"))?;
        Ok(match &data["result"] {
            serde_json::Value::Array(series) => series.clone(),
            // A scalar or string result is one value.
            serde_json::Value::Null => Vec::new(),
            other => vec![other.clone()],
        })
    }

    /// Evaluates a PromQL expression now: the value of its first result, if any.
    pub fn query(&self, expr: &str) -> Result<Option<f64>> {
        let (status, body) = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", url_encode(expr)),
            None,
        )?;
        if status != 200 {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok()))
    }

    /// Every series of a PromQL expression evaluated at `time` (Prometheus's form: Unix
    /// seconds, fractions allowed), or now: labels and value.
    pub fn query_series_at(
        &self,
        expr: &str,
        time: Option<&str>,
    ) -> Result<Vec<(std::collections::BTreeMap<String, String>, f64)>> {
        let at = time.map(|t| format!("&time={t}")).unwrap_or_default();
        let (status, body) = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}{at}", url_encode(expr)),
            None,
        )?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        if status != 200 {
            bail!("{expr}: {}", v["error"]);
        }
        let rows = v["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(rows
            .iter()
            .filter_map(|r| {
                let labels = r["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect();
                Some((labels, r["value"][1].as_str()?.parse().ok()?))
            })
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        drop(self.process.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `promtool check metrics` on a scrape; Err with its complaints.
pub fn promtool_check(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("promtool not found: `cargo xtask test` installs it")?;
    promtool
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let lint = promtool.wait_with_output()?;
    if !lint.status.success() {
        bail!(
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
    Ok(())
}

/// A child process killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series() {
        let text = "m_total{a=\"x\",b=\"y\\\"z\"} 2.5\nm_total{a=\"q\"} 1\nother 3\n";
        let s = series(text, "m_total");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0["b"], "y\"z");
        assert_eq!(s[0].1, 2.5);
        assert_eq!(url_encode("a{b=\"/\"}"), "a%7Bb%3D%22%2F%22%7D");
    }

    #[test]
    fn parses_cpu_stat() {
        let s = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(parse_usage_usec(s), Some(1234));
        assert_eq!(parse_usage_usec("user_usec 5\n"), None);
    }
}
