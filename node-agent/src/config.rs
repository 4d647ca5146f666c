//! The command line: each layer's flags (named as Prometheus exporters name them), flattened
//! under a help heading per layer, and what no single flag can check on its own.

use std::{ffi::OsString, fmt::Display, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Args, CommandFactory as _, Parser, Subcommand, error::ErrorKind};

use crate::{
    attribution::AttributionArgs, carbon::CarbonArgs, flags::parse_duration, kernel::KernelOptions,
    power::PowerOptions, report::ReportArgs,
};

/// `wattlet`'s command line, checked whole: [`Cli::try_parse_from`] fails (exit status 2, the
/// flag named) on any value a flag cannot take, alone or with the others.
#[derive(Debug)]
pub struct Cli {
    pub command: Command,
    pub options: Options,
}

#[derive(Parser, Debug)]
#[command(
    name = "wattlet",
    version,
    about = "eBPF node power and energy exporter"
)]
struct Flags {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum Command {
    /// Measure and serve /metrics (the default).
    Run,
    /// Print what this node supports and what the agent will use; non-zero exit if it cannot run.
    Check,
    /// Energy, emissions, average power and CPU-hours per namespace, pod or node over a period,
    /// from the Prometheus that scrapes the agents (table, CSV, JSON, or one HTML file).
    ///
    /// Only the flags under "Report" apply; the agent's own flags, global to every subcommand,
    /// are listed under their layers.
    Report(ReportArgs),
}

impl Cli {
    /// Parses the process's arguments, or prints the usage error and exits with status 2.
    pub fn parse() -> Self {
        Self::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = Flags::try_parse_from(args)?;
        let invalid = |why: &dyn Display| Flags::command().error(ErrorKind::ValueValidation, why);
        flags.options.check().map_err(|why| invalid(&why))?;
        if let Some(Command::Report(report)) = &flags.command {
            report.period().map_err(|why| invalid(&why))?;
        }
        Ok(Self {
            command: flags.command.unwrap_or(Command::Run),
            options: flags.options,
        })
    }
}

/// Every layer's flags.
#[derive(Args, Clone, Debug)]
pub struct Options {
    #[command(flatten)]
    pub agent: AgentOptions,
    #[command(flatten, next_help_heading = "Kernel counters")]
    pub kernel: KernelOptions,
    #[command(flatten, next_help_heading = "Power")]
    pub power: PowerOptions,
    #[command(flatten, next_help_heading = "Attribution")]
    pub attribution: AttributionArgs,
    #[command(flatten, next_help_heading = "Carbon")]
    pub carbon: CarbonArgs,
    #[command(flatten, next_help_heading = "Kubernetes")]
    pub kubernetes: KubernetesOptions,
    #[command(flatten, next_help_heading = "Exporter")]
    pub exporter: ExporterOptions,
}

impl Options {
    /// What the value parsers cannot check one flag at a time.
    fn check(&self) -> Result<(), Box<dyn Display>> {
        self.power.check().map_err(boxed)?;
        self.attribution
            .idle_window_intervals(self.agent.interval)
            .map_err(boxed)?;
        Ok(())
    }
}

fn boxed<E: Display + 'static>(e: E) -> Box<dyn Display> {
    Box::new(e)
}

/// The measuring loop, the node, and the cgroup hierarchy.
#[derive(Args, Clone, Debug)]
pub struct AgentOptions {
    /// How often to read the counters and publish a snapshot (e.g. 5s, 500ms; at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval,
          global = true)]
    pub interval: Duration,

    /// Name of this node, put on every series as `node` (Kubernetes: from the downward API).
    #[arg(long = "node-name", env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,

    /// The host's cgroup v2 hierarchy, mounted here, instead of the mount found in
    /// /proc/self/mountinfo (a container sees only its own cgroup namespace there; the
    /// DaemonSet mounts the host's /sys/fs/cgroup read-only at /host/sys/fs/cgroup).
    #[arg(long = "path.cgroup", value_name = "PATH", global = true)]
    pub cgroup_root: Option<PathBuf>,
}

impl AgentOptions {
    /// The cgroup v2 hierarchy to name cgroups from: `--path.cgroup`, or the mount this process
    /// sees, with a warning when that is a namespaced subtree.
    pub fn cgroup_root(&self) -> Result<PathBuf> {
        if let Some(root) = &self.cgroup_root {
            if !root.join("cgroup.controllers").exists() {
                bail!(
                    "--path.cgroup {}: no cgroup.controllers there; mount the host's cgroup v2 \
                     hierarchy (/sys/fs/cgroup) at this path",
                    root.display()
                );
            }
            return Ok(root.clone());
        }
        let mount = crate::cgroup::locate_cgroup2()?;
        if mount.root != "/" {
            log::warn!(
                "the cgroup v2 mount at {} shows only the subtree {} (a cgroup namespace?): \
                 cgroups outside it cannot be named; mount the host's /sys/fs/cgroup and pass \
                 --path.cgroup",
                mount.mount_point.display(),
                mount.root
            );
        }
        Ok(mount.mount_point)
    }

    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(hostname)
    }
}

/// Pod metadata from the Kubernetes API.
#[derive(Args, Clone, Debug)]
pub struct KubernetesOptions {
    /// Pod metadata from the Kubernetes API (in-cluster, or $KUBECONFIG): `auto` uses it when
    /// a configuration is found, `on` requires it, `off` never asks.
    #[arg(long = "kubernetes", value_enum, default_value = "auto", global = true)]
    pub mode: KubeMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    Auto,
    On,
    Off,
}

/// Where and what /metrics serves, and how the endpoint is protected.
#[derive(Args, Clone, Debug)]
pub struct ExporterOptions {
    /// Address to serve /metrics, /healthz and /readyz on (`:9959` = every interface).
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = ":9959",
          value_parser = parse_listen_address, global = true)]
    pub listen_address: SocketAddr,

    /// TLS, basic authentication and response headers, in the web configuration format of
    /// Prometheus exporters (exporter-toolkit). Re-read when it or a certificate changes.
    #[arg(long = "web.config.file", value_name = "PATH", global = true)]
    pub web_config_file: Option<PathBuf>,

    /// Serve /healthz and /readyz without basic authentication (for kubelet probes); every
    /// other path still needs it. TLS, when configured, still applies.
    #[arg(long = "web.health-unauthenticated", global = true)]
    pub health_unauthenticated: bool,

    /// Connections served at once; more wait to be accepted.
    #[arg(long = "web.max-connections", value_name = "N", default_value = "64",
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub max_connections: u16,

    /// Connections one client address may hold at once, so that one client cannot take every
    /// place; more from it are closed at once.
    #[arg(long = "web.max-connections-per-client", value_name = "N", default_value = "8",
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub max_connections_per_client: u16,

    /// Also emit Kepler's metric names and labels, so that Kepler dashboards work unchanged.
    #[arg(long = "metrics-compat", value_enum, global = true)]
    pub metrics_compat: Option<Compat>,
}

/// Other exporters' metric names, emitted as well as Wattlet's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compat {
    Kepler,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// `:9959` → 0.0.0.0:9959; `127.0.0.1:9959`, `[::1]:9959` as given.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .with_context(|| format!("{s:?} is not host:port (examples: :9959, 127.0.0.1:9959)"))
}

/// The shortest interval: reads more often than this cost more than they tell.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_interval(s: &str) -> Result<Duration> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        bail!("{s} is below the {MIN_INTERVAL:?} minimum");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::{IdlePolicy, ShareBy},
        kernel::PmuMode,
        power::SourceKind,
    };

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["wattlet"].iter().chain(args))
    }

    /// The flag's rejection: a usage error (exit status 2) whose message names `names`.
    fn rejected(args: &[&str], names: &[&str]) {
        let e = parse(args).expect_err(&format!("{args:?} must be rejected"));
        assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        let text = e.to_string();
        for n in names {
            assert!(text.contains(n), "{args:?}: {n:?} not in\n{text}");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let cli = parse(&[]).unwrap();
        let o = &cli.options;
        assert_eq!(cli.command, Command::Run);
        assert_eq!(o.agent.interval, Duration::from_secs(5));
        assert_eq!(o.exporter.listen_address.to_string(), "0.0.0.0:9959");
        assert_eq!(o.kernel.pmu, PmuMode::Auto);
        assert_eq!(o.kernel.max_cgroups, node_agent_common::DEFAULT_MAX_CGROUPS);
        assert_eq!(o.kernel.processes, 20);
        assert_eq!(
            o.kernel.max_processes,
            node_agent_common::DEFAULT_MAX_PROCESSES
        );
        assert_eq!(o.power.preference, SourceKind::all());
        assert_eq!(o.power.ceiling_watts, 1000.0);
        assert_eq!(o.attribution.idle_policy, IdlePolicy::Node);
        assert_eq!(o.attribution.share_by, ShareBy::Auto);
        assert_eq!(
            o.attribution
                .idle_window_intervals(o.agent.interval)
                .unwrap(),
            120
        );
        assert_eq!(o.attribution.retention, Duration::from_secs(600));
        assert_eq!(o.kubernetes.mode, KubeMode::Auto);
        assert_eq!(o.carbon, CarbonArgs::default());
        assert_eq!(o.exporter.web_config_file, None);
        assert!(!o.exporter.health_unauthenticated);
        assert_eq!(
            (
                o.exporter.max_connections,
                o.exporter.max_connections_per_client
            ),
            (64, 8)
        );
    }

    #[test]
    fn web_flags() {
        let o = parse(&[
            "--web.config.file",
            "/etc/wattlet/web.yml",
            "--web.health-unauthenticated",
            "--web.max-connections",
            "16",
            "--web.max-connections-per-client",
            "2",
        ])
        .unwrap()
        .options;
        assert_eq!(
            o.exporter.web_config_file.as_deref(),
            Some(std::path::Path::new("/etc/wattlet/web.yml"))
        );
        assert!(o.exporter.health_unauthenticated);
        assert_eq!(o.exporter.max_connections, 16);
        assert_eq!(o.exporter.max_connections_per_client, 2);
        for flag in ["--web.max-connections", "--web.max-connections-per-client"] {
            rejected(&[flag, "0"], &[flag]);
            rejected(&[flag, "many"], &[flag]);
        }
    }

    #[test]
    fn flags_reach_their_layer() {
        let cli = parse(&[
            "check",
            "--power.model.family",
            "cascade_lake",
            "--power.model.idle-watts-per-vcpu",
            "0.5",
            "--power.idle-watts",
            "package=40,dram=3",
            "--power.sources",
            "hwmon,model",
            "--bpf.max-cgroups",
            "64",
            "--metrics.processes",
            "0",
            "--bpf.max-processes",
            "100",
            "--attribution.idle-window",
            "1m",
            "--interval",
            "1s",
            "--web.listen-address",
            "127.0.0.1:1",
            "--carbon.zone",
            "DE",
            "--carbon.pue",
            "1.2",
            "--carbon.lifetime",
            "5y",
        ])
        .unwrap();
        let o = &cli.options;
        assert_eq!(cli.command, Command::Check);
        assert_eq!(o.power.model.family.unwrap().name, "cascade_lake");
        assert_eq!(o.power.model.idle_watts_per_vcpu, Some(0.5));
        assert_eq!(
            o.attribution.idle_watts,
            [("package".to_owned(), 40.0), ("dram".to_owned(), 3.0)]
        );
        assert_eq!(o.power.preference, [SourceKind::Hwmon, SourceKind::Model]);
        assert_eq!(o.kernel.max_cgroups, 64);
        assert_eq!((o.kernel.processes, o.kernel.max_processes), (0, 100));
        let a = o.attribution.options(o.agent.interval).unwrap();
        assert_eq!(a.idle_window, 60);
        assert_eq!(o.exporter.listen_address.to_string(), "127.0.0.1:1");
        assert_eq!(o.carbon.zone.unwrap().0.zone, "DE");
        assert_eq!(o.carbon.pue, 1.2);
        assert_eq!(o.carbon.lifetime, Duration::from_secs(5 * 365 * 86_400));
    }

    #[test]
    fn a_family_typo_names_the_flag_and_the_families() {
        rejected(
            &["--power.model.family", "cascadelake"],
            &[
                "--power.model.family",
                "cascadelake",
                "sandy_bridge",
                "cascade_lake",
                "graviton2",
                "average",
            ],
        );
    }

    #[test]
    fn negative_coefficients_are_rejected() {
        for flag in [
            "--power.model.idle-watts-per-vcpu",
            "--power.model.max-watts-per-vcpu",
            "--power.model.memory-watts-per-gb",
        ] {
            rejected(&[flag, "-1"], &[flag, "non-negative"]);
            rejected(&[flag, "NaN"], &[flag]);
        }
        // Together, or with the family's figure: max below idle.
        rejected(
            &[
                "--power.model.idle-watts-per-vcpu",
                "3",
                "--power.model.max-watts-per-vcpu",
                "2",
            ],
            &["below its idle power", "--power.model.*"],
        );
        rejected(
            &[
                "--power.model.family",
                "haswell",
                "--power.model.max-watts-per-vcpu",
                "0.5",
            ],
            &["(0.5 W) is below its idle power (1 W)"],
        );
    }

    #[test]
    fn malformed_idle_watts_are_rejected() {
        for bad in ["package", "package=-1", "package=lots", "=5", "Package=40"] {
            rejected(&["--power.idle-watts", bad], &["--power.idle-watts"]);
        }
        rejected(
            &["--power.idle-watts", "package=40,dram"],
            &["--power.idle-watts", "\"dram\" is not zone=watts"],
        );
    }

    #[test]
    fn an_idle_window_out_of_range_is_an_error_not_a_clamp() {
        rejected(
            &["--attribution.idle-window", "30s"],
            &[
                "--attribution.idle-window 30s",
                "--interval 5s",
                "10 to 100000",
            ],
        );
        rejected(
            &["--interval", "100ms", "--attribution.idle-window", "3h"],
            &["--attribution.idle-window", "108000 intervals"],
        );
        // The default window with a long interval: both flags named, and the way out.
        rejected(
            &["--interval", "2m"],
            &["--attribution.idle-window 600s", "--interval 120s", "1200s"],
        );
        assert!(parse(&["--interval", "2m", "--attribution.idle-window", "20m"]).is_ok());
    }

    #[test]
    fn other_values_are_checked_when_parsed() {
        rejected(&["--interval", "50ms"], &["--interval", "minimum"]);
        rejected(&["--bpf.max-cgroups", "0"], &["--bpf.max-cgroups"]);
        rejected(&["--bpf.max-processes", "0"], &["--bpf.max-processes"]);
        rejected(&["--metrics.processes", "lots"], &["--metrics.processes"]);
        rejected(
            &["--attribution.max-workloads", "0"],
            &["--attribution.max-workloads"],
        );
        rejected(&["--power.ceiling-watts", "0"], &["--power.ceiling-watts"]);
        rejected(&["--power.ceiling-watts", "-5"], &["--power.ceiling-watts"]);
        rejected(
            &["--power.sources", "perf,rapl"],
            &["--power.sources", "powercap"],
        );
        rejected(
            &["--web.listen-address", "nonsense"],
            &["--web.listen-address"],
        );
        rejected(
            &["--retention.terminated", "5 parsecs"],
            &["--retention.terminated"],
        );
        rejected(&["--carbon.pue", "0.9"], &["--carbon.pue", "below 1"]);
        rejected(&["--carbon.intensity", "2500"], &["--carbon.intensity"]);
        rejected(&["--carbon.lifetime", "4 parsecs"], &["--carbon.lifetime"]);
    }

    #[test]
    fn the_report_subcommand() {
        use crate::report::{Format, GroupBy};
        let cli = parse(&[
            "report",
            "--prometheus",
            "http://prometheus:9090",
            "--since",
            "5m",
            "--to",
            "2026-11-01T00:00:00Z",
            "--by",
            "pod",
            "--format",
            "html",
            "--output",
            "r.html",
        ])
        .unwrap();
        let Command::Report(r) = cli.command else {
            panic!("not the report: {:?}", cli.command);
        };
        assert_eq!((r.by, r.format), (GroupBy::Pod, Format::Html));
        let (from, to) = r.period().unwrap();
        assert_eq!(to - from, 300_000);
        fn report<'a>(extra: &[&'a str]) -> Vec<&'a str> {
            let mut args = vec!["report", "--prometheus", "http://p:9090"];
            args.extend(extra);
            args
        }
        // The default: the last 30 days, by namespace, as a table.
        let Command::Report(r) = parse(&report(&[])).unwrap().command else {
            unreachable!()
        };
        let (from, to) = r.period().unwrap();
        assert_eq!(
            (to - from, r.by, r.format),
            (30 * 86_400_000, GroupBy::Namespace, Format::Table)
        );
        rejected(
            &report(&["--since", "5m", "--from", "2026-11-01"]),
            &["--since", "--from"],
        );
        rejected(&report(&["--since", "5 parsecs"]), &["--since", "30d"]);
        rejected(&report(&["--from", "yesterday"]), &["--from", "2026-11-01"]);
        rejected(
            &report(&["--from", "2026-11-02", "--to", "2026-11-01"]),
            &["the period is empty", "--from 2026-11-02T00:00:00Z"],
        );
        rejected(&["report"], &["--prometheus"]);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_address(":9959").unwrap().to_string(),
            "0.0.0.0:9959"
        );
        assert_eq!(
            parse_listen_address("127.0.0.1:1").unwrap().to_string(),
            "127.0.0.1:1"
        );
        assert!(parse_listen_address("[::1]:9959").is_ok());
        assert!(parse_listen_address("nonsense").is_err());
    }

    #[test]
    fn help_has_a_heading_per_layer() {
        let help = Flags::command().render_long_help().to_string();
        for heading in [
            "Kernel counters:",
            "Power:",
            "Attribution:",
            "Carbon:",
            "Kubernetes:",
            "Exporter:",
        ] {
            assert!(help.contains(heading), "{heading} not in\n{help}");
        }
        let power = &help[help.find("Power:").unwrap()..];
        let power = &power[..power.find("Attribution:").unwrap_or(power.len())];
        assert!(power.contains("--power.idle-watts"), "{help}");
    }
}
