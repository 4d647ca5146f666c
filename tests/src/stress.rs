//! Churn, floods and outages, shared by tests/tests/stress.rs (short runs, asserted) and
//! `cargo xtask bench` (the full counts, printed): cgroups created, used and removed in a loop;
//! concurrent scrapers, each from its own loopback address; and what the agent's exposition and
//! /proc say about it (energy balance per zone, map entries, resident memory, CPU time).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{TestCgroup, http_get, series};

/// GET /metrics (classic text): its body, or an error unless 200.
pub fn scrape(addr: &str) -> Result<String> {
    let (status, body) = http_get(addr, "/metrics", None)?;
    if status != 200 {
        bail!("GET /metrics: {status} {body}");
    }
    Ok(body)
}

/// The sum of the series of `metric` whose labels pass `keep`.
pub fn total(text: &str, metric: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
    series(text, metric)
        .into_iter()
        .filter(|(l, _)| keep(l))
        .map(|(_, v)| v)
        .sum()
}

/// The value of the series of `metric` with `label` = `value` (0 if absent).
pub fn value(text: &str, metric: &str, label: &str, value: &str) -> f64 {
    total(text, metric, |l| l.get(label).is_some_and(|v| v == value))
}

/// One zone's books at one scrape: what the parts add up to, against the node's total.
#[derive(Clone, Debug)]
pub struct Balance {
    pub zone: String,
    /// Containers + cgroups + VMs + expired + the node's idle, in joules.
    pub parts: f64,
    pub node: f64,
}

impl Balance {
    /// (parts − node) / node.
    pub fn error(&self) -> f64 {
        (self.parts - self.node) / self.node
    }
}

/// Energy conservation per zone, from one scrape, as the exposition documents it (default idle
/// policy): containers + cgroups + VMs + expired + the node's idle = the node's total.
pub fn balances(text: &str) -> Vec<Balance> {
    let mut zones: Vec<String> = series(text, "wattlet_node_energy_joules_total")
        .into_iter()
        .filter_map(|(l, _)| l.get("zone").cloned())
        .collect();
    zones.sort();
    zones.dedup();
    zones
        .into_iter()
        .map(|zone| {
            let in_zone = |l: &BTreeMap<String, String>| l.get("zone") == Some(&zone);
            let idle = |l: &BTreeMap<String, String>| in_zone(l) && l["mode"] == "idle";
            let parts = [
                "wattlet_container_energy_joules_total",
                "wattlet_cgroup_energy_joules_total",
                "wattlet_vm_energy_joules_total",
                "wattlet_expired_energy_joules_total",
            ]
            .iter()
            .map(|m| total(text, m, in_zone))
            .sum::<f64>()
                + total(text, "wattlet_node_energy_joules_total", idle);
            let node = total(text, "wattlet_node_energy_joules_total", in_zone);
            Balance { zone, parts, node }
        })
        .collect()
}

/// Fails unless every zone balances within `tolerance` (relative), naming the zone and figures.
pub fn check_balances(text: &str, tolerance: f64) -> Result<Vec<Balance>> {
    let b = balances(text);
    if b.is_empty() {
        bail!("no wattlet_node_energy_joules_total in the scrape");
    }
    for z in &b {
        if z.error().abs() > tolerance {
            bail!(
                "zone {}: containers + cgroups + VMs + expired + idle = {:.3} J, node {:.3} J \
                 ({:+.4}%, tolerance {}%)",
                z.zone,
                z.parts,
                z.node,
                z.error() * 100.0,
                tolerance * 100.0
            );
        }
    }
    Ok(b)
}

/// `zone: parts of node J (±x%)` for each zone, for printing.
pub fn describe(balances: &[Balance]) -> String {
    balances
        .iter()
        .map(|b| {
            format!(
                "{}: {:.2} of {:.2} J ({:+.4}%)",
                b.zone,
                b.parts,
                b.node,
                b.error() * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resident memory of a process (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system) a process has used, in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name (in parentheses, which may hold spaces): state is field 3, utime
    // and stime fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("/proc/{pid}/stat: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i - 3)
            .with_context(|| format!("/proc/{pid}/stat field {i}"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14)? + ticks(15)?) / hz)
}

/// How cgroups come and go: `cycles` in all, `workers` at a time; each cycle creates a cgroup,
/// runs `true` in it (so the kernel counts it), keeps it for a hold (cycling through `holds`: a
/// short hold removes it before the agent's next read, a long one lets the agent see its path),
/// and removes it.
#[derive(Clone, Debug)]
pub struct ChurnPlan {
    pub cycles: usize,
    pub workers: usize,
    pub holds: Vec<Duration>,
}

/// What a churn did.
#[derive(Clone, Debug, Default)]
pub struct Churned {
    pub cycles: usize,
    pub elapsed: Duration,
    /// CPU time the kernel charged to the churned cgroups (their cpu.stat), summed.
    pub kernel_cpu: Duration,
    /// Cycles whose cgroup's cpu.stat showed no CPU time at all (should be none).
    pub uncounted: usize,
}

/// Runs `plan` under `base` (cgroups `base/c<round>-<n>`).
pub fn churn(base: &Path, plan: &ChurnPlan, round: usize) -> Result<Churned> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<Result<(u64, usize, usize)>> = thread::scope(|s| {
        let workers: Vec<_> = (0..plan.workers)
            .map(|_| s.spawn(|| churn_worker(base, plan, round, &next)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| bail!("a churn worker panicked"))
            })
            .collect()
    });
    let mut out = Churned {
        elapsed: start.elapsed(),
        ..Churned::default()
    };
    for r in results {
        let (ns, cycles, uncounted) = r?;
        out.kernel_cpu += Duration::from_nanos(ns);
        out.cycles += cycles;
        out.uncounted += uncounted;
    }
    Ok(out)
}

/// Takes cycles from `next` until all are done: (CPU ns counted, cycles, uncounted cycles).
fn churn_worker(
    base: &Path,
    plan: &ChurnPlan,
    round: usize,
    next: &AtomicUsize,
) -> Result<(u64, usize, usize)> {
    let (mut ns, mut cycles, mut uncounted) = (0, 0, 0);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.cycles {
            return Ok((ns, cycles, uncounted));
        }
        let cg = TestCgroup::create_at(base.join(format!("c{round}-{i}")))?;
        let status = cg
            .spawn(std::process::Command::new("true").stdout(std::process::Stdio::null()))?
            .wait()?;
        if !status.success() {
            bail!("`true` in {} exited with {status}", cg.path.display());
        }
        thread::sleep(plan.holds[i % plan.holds.len().max(1)]);
        let used = cg.usage_ns()?;
        ns += used;
        cycles += 1;
        uncounted += usize::from(used == 0);
        drop(cg);
    }
}

/// What the scrapers saw.
#[derive(Clone, Debug, Default)]
pub struct Flood {
    /// Latency of every answered scrape, sorted.
    pub latencies: Vec<Duration>,
    /// Answers other than 200, and scrapes that failed (connection refused or reset, timeout).
    pub not_ok: usize,
    pub failed: usize,
    /// The largest `wattlet_interval_work_seconds` any scrape showed.
    pub max_work_seconds: f64,
    pub elapsed: Duration,
}

impl Flood {
    /// The `p`-th percentile (0..=100) of the latencies.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * p / 100.0).round() as usize;
        self.latencies[i]
    }

    /// Scrapes answered per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `scrapers` clients scraping /metrics back to back for `duration`, each from its own
/// loopback address (127.0.0.2, .3, …), as separate Prometheus servers would.
pub fn flood(addr: &str, scrapers: usize, duration: Duration) -> Result<Flood> {
    let target: SocketAddr = addr.parse().context("the agent's address")?;
    if scrapers > 250 {
        bail!("at most 250 scrapers (one loopback address each)");
    }
    let end = Instant::now() + duration;
    let start = Instant::now();
    let per_scraper: Vec<Flood> = thread::scope(|s| {
        let threads: Vec<_> = (0..scrapers)
            .map(|i| {
                let from = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
                s.spawn(move || scraper(from, target, end))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let mut all = Flood {
        elapsed: start.elapsed(),
        ..Flood::default()
    };
    for f in per_scraper {
        all.latencies.extend(f.latencies);
        all.not_ok += f.not_ok;
        all.failed += f.failed;
        all.max_work_seconds = all.max_work_seconds.max(f.max_work_seconds);
    }
    all.latencies.sort_unstable();
    Ok(all)
}

fn scraper(from: Ipv4Addr, target: SocketAddr, end: Instant) -> Flood {
    let mut f = Flood::default();
    while Instant::now() < end {
        let t = Instant::now();
        match get_from(from, target, "/metrics") {
            Ok((200, body)) => {
                f.latencies.push(t.elapsed());
                if let Some(w) = crate::sample(&body, "wattlet_interval_work_seconds{") {
                    f.max_work_seconds = f.max_work_seconds.max(w);
                }
            }
            Ok(_) => f.not_ok += 1,
            Err(_) => f.failed += 1,
        }
    }
    f
}

/// An HTTP/1.0 GET from the local address `from`: (status, body).
pub fn get_from(from: Ipv4Addr, to: SocketAddr, path: &str) -> Result<(u16, String)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddrV4::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(10))?;
    crate::get_over(socket.into(), &to.to_string(), path, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_add_the_parts_per_zone() {
        let text = "\
wattlet_node_energy_joules_total{node=\"n\",zone=\"package\",mode=\"active\",estimated=\"false\"} 60
wattlet_node_energy_joules_total{node=\"n\",zone=\"package\",mode=\"idle\",estimated=\"false\"} 40
wattlet_container_energy_joules_total{node=\"n\",zone=\"package\",container_id=\"a\"} 30
wattlet_cgroup_energy_joules_total{node=\"n\",zone=\"package\",cgroup=\"/x\"} 20
wattlet_expired_energy_joules_total{node=\"n\",zone=\"package\",estimated=\"false\"} 9
wattlet_cgroup_energy_joules_total{node=\"n\",zone=\"dram\",cgroup=\"/x\"} 5
";
        let b = balances(text);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].parts, b[0].node), (99.0, 100.0));
        assert!(check_balances(text, 0.02).is_ok());
        assert!(check_balances(text, 0.005).is_err());
    }

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
