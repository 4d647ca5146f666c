//! The attribution's flags: how idle and active energy are shared, the idle estimate, and how
//! long ended workloads are kept.

use std::{ops::RangeInclusive, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{AttributionOptions, IdlePolicy, ShareBy};
use crate::{
    flags::{non_negative, parse_duration},
    power::zone,
};

/// The idle estimate's window, in intervals: fewer leave the regression without enough points
/// to see through noise, more only cost memory.
pub const IDLE_WINDOW_INTERVALS: RangeInclusive<usize> = 10..=100_000;

#[derive(clap::Args, Clone, Debug)]
pub struct AttributionArgs {
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

    /// Window of the measured idle-power estimate (the intercept of power against load): 10 to
    /// 100000 intervals of --interval.
    #[arg(long = "attribution.idle-window", value_name = "DURATION", default_value = "10m",
          value_parser = parse_duration, global = true)]
    pub idle_window: Duration,

    /// At most this many workloads (containers and cgroups) are tracked; beyond it, the
    /// longest-stopped expire first.
    #[arg(
        long = "attribution.max-workloads",
        default_value_t = 20_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        global = true
    )]
    pub max_workloads: usize,

    /// Idle power of a zone, set rather than estimated: `package=40,dram=3` (watts).
    #[arg(long = "power.idle-watts", value_name = "ZONE=WATTS", value_delimiter = ',', value_parser = parse_zone_watts,
          help_heading = "Power", global = true)]
    pub idle_watts: Vec<(String, f64)>,

    /// How long removed cgroups and stopped workloads keep exporting their final totals.
    #[arg(long = "retention.terminated", value_name = "DURATION", default_value = "10m", value_parser = parse_duration,
          global = true)]
    pub retention: Duration,
}

/// `--attribution.idle-window` holds too few or too many intervals.
#[derive(Debug, thiserror::Error)]
#[error(
    "--attribution.idle-window {window:?} is {intervals} intervals of --interval {interval:?}: the \
     idle estimate needs {} to {} intervals ({:?} to {:?} at this interval)",
    IDLE_WINDOW_INTERVALS.start(),
    IDLE_WINDOW_INTERVALS.end(),
    span(.interval, *IDLE_WINDOW_INTERVALS.start()),
    span(.interval, *IDLE_WINDOW_INTERVALS.end())
)]
pub struct IdleWindowOutOfRange {
    pub window: Duration,
    pub interval: Duration,
    pub intervals: usize,
}

/// `n` intervals.
fn span(interval: &Duration, n: usize) -> Duration {
    interval.saturating_mul(n as u32)
}

impl AttributionArgs {
    /// The attributor's options when the counters are read every `interval`.
    pub fn options(&self, interval: Duration) -> Result<AttributionOptions, IdleWindowOutOfRange> {
        Ok(AttributionOptions {
            idle_policy: self.idle_policy,
            share_by: self.share_by,
            cgroup_depth: self.cgroup_depth,
            retention: self.retention,
            configured_idle: self.idle_watts.clone(),
            idle_window: self.idle_window_intervals(interval)?,
            max_workloads: self.max_workloads,
            // `--metrics.processes` is the kernel counters' flag: the agent sets it.
            processes: 0,
        })
    }

    /// `--attribution.idle-window` in intervals, if in [`IDLE_WINDOW_INTERVALS`].
    pub fn idle_window_intervals(&self, interval: Duration) -> Result<usize, IdleWindowOutOfRange> {
        let ratio = self.idle_window.as_secs_f64() / interval.as_secs_f64();
        // Saturates for absurd ratios (and NaN from a zero interval), which are out of range.
        let intervals = ratio.round() as usize;
        if ratio.is_finite() && IDLE_WINDOW_INTERVALS.contains(&intervals) {
            Ok(intervals)
        } else {
            Err(IdleWindowOutOfRange {
                window: self.idle_window,
                interval,
                intervals,
            })
        }
    }
}

/// `package=40` → ("package", 40.0): a zone as the sources name them, and non-negative watts.
fn parse_zone_watts(s: &str) -> Result<(String, f64)> {
    let (name, watts) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not zone=watts (example: package=40)"))?;
    let name = name.trim();
    if !zone::is_label(name) {
        bail!(
            "{name:?} is not a zone name: lowercase letters, digits and _, as in the `zone` label \
             (package, core, uncore, dram, psys, platform, …)"
        );
    }
    Ok((name.to_owned(), non_negative(watts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(window: Duration) -> AttributionArgs {
        AttributionArgs {
            idle_window: window,
            ..crate::flags::defaults()
        }
    }

    #[test]
    fn the_idle_window_is_counted_in_intervals_and_bounded() {
        let s = Duration::from_secs;
        assert_eq!(args(s(600)).idle_window_intervals(s(5)).unwrap(), 120);
        assert_eq!(args(s(50)).idle_window_intervals(s(5)).unwrap(), 10);
        let e = args(s(30)).idle_window_intervals(s(5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--attribution.idle-window 30s is 6 intervals of --interval 5s: the idle estimate \
             needs 10 to 100000 intervals (50s to 500000s at this interval)"
        );
        assert!(args(s(600)).idle_window_intervals(s(70)).is_err());
        assert!(
            args(Duration::from_secs(100_001))
                .idle_window_intervals(s(1))
                .is_err()
        );
        assert!(args(s(600)).idle_window_intervals(Duration::ZERO).is_err());
        assert_eq!(args(s(600)).options(s(5)).unwrap().idle_window, 120);
    }

    #[test]
    fn zone_watts() {
        assert_eq!(
            parse_zone_watts("package=40").unwrap(),
            ("package".to_owned(), 40.0)
        );
        assert_eq!(parse_zone_watts("dram=0").unwrap().1, 0.0);
        for bad in [
            "package",
            "x=-1",
            "=5",
            "Package=4",
            "dram 1=2",
            "dram=lots",
        ] {
            assert!(parse_zone_watts(bad).is_err(), "{bad}");
        }
    }
}
