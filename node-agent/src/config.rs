//! Command-line options, named as Prometheus exporters name them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    attribution::{AttributionOptions, IdlePolicy, ShareBy},
    kernel::{KernelOptions, PmuMode},
    power::{DEFAULT_CEILING_WATTS, ModelOverrides, PowerOptions, SourceKind},
};

#[derive(Args, Clone, Debug)]
pub struct Options {
    /// Address to serve /metrics, /healthz and /readyz on (`:9959` = every interface).
    #[arg(long = "web.listen-address", default_value = ":9959", global = true)]
    pub listen_address: String,

    /// Where sysfs is mounted: power sources (powercap, hwmon, the perf power PMU) are read
    /// below it. The eBPF side always uses the running kernel.
    #[arg(long = "path.sysfs", default_value = "/sys", global = true)]
    pub sysfs: PathBuf,

    /// Where procfs is mounted: cpuinfo and meminfo for the power model are read below it.
    #[arg(long = "path.procfs", default_value = "/proc", global = true)]
    pub procfs: PathBuf,

    /// The host's cgroup v2 hierarchy, mounted here, instead of the mount found in
    /// /proc/self/mountinfo (a container sees only its own cgroup namespace there; the
    /// DaemonSet mounts the host's /sys/fs/cgroup read-only at /host/sys/fs/cgroup).
    #[arg(long = "path.cgroup", global = true)]
    pub cgroup_root: Option<PathBuf>,

    /// Power sources in order of preference; the first that works here is used.
    #[arg(
        long = "power.sources",
        value_enum,
        value_delimiter = ',',
        default_value = "perf,powercap,hwmon,model",
        global = true
    )]
    pub power_sources: Vec<SourceKind>,

    /// Use this power source and no other (fail if it cannot be used).
    #[arg(long = "power-source", value_enum, global = true)]
    pub power_source: Option<SourceKind>,

    /// The most power one energy counter (a socket's zone, one sensor) can show: readings
    /// implying more are dropped and counted, never exported as spikes. Whole-platform meters
    /// (psys, an ACPI power meter) get 20 times this.
    #[arg(long = "power.ceiling-watts", default_value_t = DEFAULT_CEILING_WATTS,
          value_parser = parse_watts, global = true)]
    pub ceiling_watts: f64,

    /// Power model: the CPU family whose coefficients to use instead of the one detected
    /// (sandy_bridge, haswell, broadwell, skylake, cascade_lake, epyc_2nd_gen, graviton2, average).
    #[arg(long = "power.model.family", global = true)]
    pub model_family: Option<String>,

    /// Power model: watts per vCPU when idle (default: from the CPU family).
    #[arg(long = "power.model.idle-watts-per-vcpu", global = true)]
    pub model_idle_watts: Option<f64>,

    /// Power model: watts per vCPU at full load (default: from the CPU family).
    #[arg(long = "power.model.max-watts-per-vcpu", global = true)]
    pub model_max_watts: Option<f64>,

    /// Power model: watts per GB of installed memory (default 0.392).
    #[arg(long = "power.model.memory-watts-per-gb", global = true)]
    pub model_memory_watts: Option<f64>,

    /// How often to read the counters and publish a snapshot (e.g. 5s, 500ms; at least 100ms).
    #[arg(long, default_value = "5s", value_parser = parse_interval, global = true)]
    pub interval: Duration,

    /// Capacity of the in-kernel cgroup map. Memory: this × possible CPUs × 40 bytes. Cgroups
    /// beyond it are still counted, in an overflow slot (wattlet_bpf_overflow_cpu_seconds_total).
    #[arg(long = "bpf.max-cgroups", default_value_t = node_agent_common::DEFAULT_MAX_CGROUPS, global = true)]
    pub max_cgroups: u32,

    /// PMU counters (cycles, instructions): auto uses them where the CPU has a PMU.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub pmu: PmuMode,

    /// Name of this node, put on every series as `node` (Kubernetes: from the downward API).
    #[arg(long = "node-name", env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,

    /// Where the node's idle (static) energy goes: `node` keeps it on the node's series,
    /// `proportional` shares it by CPU share, `even` among the running containers.
    #[arg(
        long = "attribution.idle-policy",
        value_enum,
        default_value = "node",
        global = true
    )]
    pub idle_policy: IdlePolicy,

    /// What active energy is shared by: `auto` = cycles where a hardware PMU counts them, busy
    /// CPU time otherwise.
    #[arg(
        long = "attribution.by",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub share_by: ShareBy,

    /// Non-container cgroups are reported at this depth of their path (2:
    /// /system.slice/sshd.service).
    #[arg(long = "attribution.cgroup-depth", default_value_t = 2, global = true)]
    pub cgroup_depth: usize,

    /// Window of the measured idle-power estimate (the intercept of power against load).
    #[arg(long = "attribution.idle-window", default_value = "10m", value_parser = parse_duration, global = true)]
    pub idle_window: Duration,

    /// At most this many workloads (containers and cgroups) are tracked; beyond it, the
    /// longest-stopped expire first.
    #[arg(
        long = "attribution.max-workloads",
        default_value_t = 20_000,
        global = true
    )]
    pub max_workloads: usize,

    /// Idle power of a zone, set rather than estimated: `package=40,dram=3` (watts).
    #[arg(long = "power.idle-watts", value_delimiter = ',', value_parser = parse_zone_watts, global = true)]
    pub idle_watts: Vec<(String, f64)>,

    /// Pod metadata from the Kubernetes API (in-cluster, or $KUBECONFIG): `auto` uses it when
    /// a configuration is found, `on` requires it, `off` never asks.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub kubernetes: KubeMode,

    /// Also emit Kepler's metric names and labels, so that Kepler dashboards work unchanged.
    #[arg(long = "metrics-compat", value_enum, global = true)]
    pub metrics_compat: Option<Compat>,

    /// How long removed cgroups and stopped workloads keep exporting their final totals.
    #[arg(long = "retention.terminated", default_value = "10m", value_parser = parse_duration, global = true)]
    pub gone_retention: Duration,
}

impl Options {
    pub fn kernel_options(&self) -> KernelOptions {
        KernelOptions {
            max_cgroups: self.max_cgroups,
            pmu: self.pmu,
            gone_retention: self.gone_retention,
            ..KernelOptions::default()
        }
    }

    pub fn power_options(&self) -> PowerOptions {
        PowerOptions {
            sysfs: self.sysfs.clone(),
            procfs: self.procfs.clone(),
            preference: self.power_sources.clone(),
            forced: self.power_source,
            ceiling_watts: self.ceiling_watts,
            model: ModelOverrides {
                family: self.model_family.clone(),
                idle_watts_per_vcpu: self.model_idle_watts,
                max_watts_per_vcpu: self.model_max_watts,
                memory_watts_per_gb: self.model_memory_watts,
            },
        }
    }

    pub fn attribution_options(&self) -> AttributionOptions {
        let per_interval = self.interval.as_secs_f64().max(0.1);
        AttributionOptions {
            idle_policy: self.idle_policy,
            share_by: self.share_by,
            cgroup_depth: self.cgroup_depth,
            retention: self.gone_retention,
            configured_idle: self.idle_watts.clone(),
            idle_window: ((self.idle_window.as_secs_f64() / per_interval).round() as usize)
                .clamp(10, 100_000),
            max_workloads: self.max_workloads,
        }
    }

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

    pub fn listen_addr(&self) -> Result<SocketAddr> {
        parse_listen_address(&self.listen_address)
    }

    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(hostname)
    }
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
    full.parse().with_context(|| {
        format!("--web.listen-address {s:?} is not host:port (examples: :9959, 127.0.0.1:9959)")
    })
}

/// A duration like `5s`, `250ms`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (examples: 5s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("{s:?} is not a valid duration");
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    Auto,
    On,
    Off,
}

/// Other exporters' metric names, emitted as well as Wattlet's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compat {
    Kepler,
}

/// `package=40` → ("package", 40.0).
fn parse_zone_watts(s: &str) -> Result<(String, f64)> {
    let (zone, watts) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not zone=watts (example: package=40)"))?;
    Ok((zone.trim().to_owned(), non_negative_watts(watts)?))
}

/// The power ceiling: a positive number of watts.
fn parse_watts(s: &str) -> Result<f64> {
    let w = non_negative_watts(s)?;
    if w == 0.0 {
        bail!("{s:?}: the power ceiling must be a positive number of watts");
    }
    Ok(w)
}

/// A finite, non-negative number of watts.
fn non_negative_watts(s: &str) -> Result<f64> {
    let w: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a number of watts"))?;
    if !w.is_finite() || w < 0.0 {
        bail!("{s:?} must be a finite, non-negative number of watts");
    }
    Ok(w)
}

fn parse_interval(s: &str) -> Result<Duration> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        bail!("--interval {s} is below the 100ms minimum");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_interval("50ms").is_err());
        assert!(parse_interval("100ms").is_ok());
        assert_eq!(parse_watts("1500").unwrap(), 1500.0);
        assert!(parse_watts("NaN").is_err() && parse_watts("0").is_err());
        assert!(parse_watts("-5").is_err() && parse_watts("lots").is_err());
        assert_eq!(
            parse_zone_watts("package=40").unwrap(),
            ("package".to_owned(), 40.0)
        );
        assert_eq!(parse_zone_watts("dram=0").unwrap().1, 0.0);
        assert!(parse_zone_watts("package").is_err() && parse_zone_watts("x=-1").is_err());
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
}
