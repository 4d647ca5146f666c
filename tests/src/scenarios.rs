//! Issue 13's churn, flood and outage scenarios against the real agent, each returning its
//! figures and checking what must hold whatever the scale: tests/tests/stress.rs runs them short,
//! `cargo xtask bench` at full size (10,000 cycles, 50 scrapers for 30 s, a 60 s outage).

use std::{
    ffi::OsStr,
    io::Read as _,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    Running, TestCgroup, cgroup2_root, free_port,
    kube_api::{ApiServer, Fake, pod},
    pod_container,
    rapl_sim::{RaplSim, SimConfig},
    series, start_agent, start_agent_with_env,
    stress::{self, Balance, ChurnPlan, Churned, Flood},
    wait_for,
};

/// How far one scrape's parts may be from the node's total: they are one snapshot's sums, so
/// only floating-point rounding separates them.
pub const BALANCE_TOLERANCE: f64 = 1e-6;

/// The agent on a simulated two-socket RAPL tree, at the harness's 200 ms interval, with
/// `extra` flags.
pub struct SimAgent {
    pub agent: Running,
    pub addr: String,
    pub sim: RaplSim,
}

impl SimAgent {
    pub fn start(extra: &[&str]) -> Result<Self> {
        let sim = RaplSim::start(SimConfig::default())?;
        let port = free_port()?;
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            OsStr::new("--power-source"),
            OsStr::new("powercap"),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let agent = start_agent(port, &args)?;
        Ok(Self {
            agent,
            addr: format!("127.0.0.1:{port}"),
            sim,
        })
    }

    pub fn pid(&self) -> u32 {
        self.agent.0.id()
    }
}

/// What the agent showed at one moment of a churn.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentState {
    pub map_entries: f64,
    pub map_deletions: f64,
    pub rss_kib: u64,
    /// Series in the scrape, and the cgroup series of churned cgroups among them.
    pub series: usize,
    pub churned_series: usize,
    /// Expired energy, all zones.
    pub expired_joules: f64,
}

impl AgentState {
    fn read(text: &str, pid: u32, churned_prefix: &str) -> Result<Self> {
        let map = |m: &str| stress::value(text, m, "map", "cgroups");
        let mut churned: Vec<String> = series(text, "wattlet_cgroup_cpu_seconds_total")
            .into_iter()
            .filter_map(|(l, _)| l.get("cgroup").cloned())
            .filter(|c| c.starts_with(churned_prefix))
            .collect();
        churned.dedup();
        Ok(Self {
            map_entries: map("wattlet_bpf_map_entries"),
            map_deletions: map("wattlet_bpf_map_deletions_total"),
            rss_kib: stress::rss_kib(pid)?,
            series: text.lines().filter(|l| !l.starts_with('#')).count(),
            churned_series: churned.len(),
            expired_joules: stress::total(text, "wattlet_expired_energy_joules_total", |_| true),
        })
    }

    fn max(self, o: Self) -> Self {
        Self {
            map_entries: self.map_entries.max(o.map_entries),
            map_deletions: self.map_deletions.max(o.map_deletions),
            rss_kib: self.rss_kib.max(o.rss_kib),
            series: self.series.max(o.series),
            churned_series: self.churned_series.max(o.churned_series),
            expired_joules: self.expired_joules.max(o.expired_joules),
        }
    }
}

/// One round of a churn, and the agent once the retention has passed.
#[derive(Debug)]
pub struct ChurnRound {
    pub churned: Churned,
    pub after: AgentState,
    /// From the end of the round until no churned cgroup had a series.
    pub settle: Duration,
}

/// The figures of a churn while exporting: two equal rounds, so that memory that grows with
/// every cycle (a leak) is told apart from memory kept at its high-water mark.
#[derive(Debug)]
pub struct ChurnRun {
    pub plan: ChurnPlan,
    pub retention: Duration,
    pub baseline: AgentState,
    pub peak: AgentState,
    pub rounds: Vec<ChurnRound>,
    /// Scrapes taken during the churn, and those that failed.
    pub scrapes: usize,
    pub scrape_failures: usize,
    /// The largest |parts − node| / node of any zone in any scrape during the churn.
    pub max_balance_error: f64,
    pub balances_after: Vec<Balance>,
}

/// Map entries more than the baseline that still count as back to it: cgroups of the rest of
/// the machine (other tests, services) come and go meanwhile.
pub const MAP_SLACK: f64 = 32.0;

impl ChurnRun {
    fn last(&self) -> &AgentState {
        self.rounds.last().map_or(&self.baseline, |r| &r.after)
    }

    /// What must hold at any scale.
    pub fn check(&self) -> Result<()> {
        for (i, r) in self.rounds.iter().enumerate() {
            let c = &r.churned;
            ensure!(
                c.cycles == self.plan.cycles,
                "round {i}: {} of {} cycles ran",
                c.cycles,
                self.plan.cycles
            );
            ensure!(
                c.uncounted == 0,
                "round {i}: {} cgroups had no CPU time in cpu.stat",
                c.uncounted
            );
            ensure!(
                r.after.churned_series == 0,
                "round {i}: {} churned cgroups still have series after the retention",
                r.after.churned_series
            );
            ensure!(
                r.after.map_entries <= self.baseline.map_entries + MAP_SLACK,
                "round {i}: map entries {} after, {} before: not back to the baseline",
                r.after.map_entries,
                self.baseline.map_entries
            );
        }
        ensure!(
            self.scrape_failures == 0,
            "{} scrapes failed",
            self.scrape_failures
        );
        ensure!(
            self.max_balance_error <= BALANCE_TOLERANCE,
            "energy not conserved during the churn: worst zone off by {:e}",
            self.max_balance_error
        );
        ensure!(
            self.peak.churned_series > 0,
            "no churned cgroup was ever exported: the long holds should let the agent see them"
        );
        let cycles = self.rounds.iter().map(|r| r.churned.cycles).sum::<usize>() as f64;
        let deleted = self.last().map_deletions - self.baseline.map_deletions;
        ensure!(
            deleted >= cycles,
            "{deleted} map entries deleted for {cycles} removed cgroups"
        );
        ensure!(
            self.last().expired_joules > self.baseline.expired_joules,
            "the churned cgroups' energy did not move to expired"
        );
        ensure!(
            self.last().rss_kib <= self.rss_bound_kib(),
            "RSS {} KiB after, {} KiB before (bound {} KiB)",
            self.last().rss_kib,
            self.baseline.rss_kib,
            self.rss_bound_kib()
        );
        let (first, growth) = self.rss_growth_kib();
        ensure!(
            growth <= self.leak_bound_kib(),
            "RSS grew {growth} KiB more in the second round (the first added {first} KiB): a leak"
        );
        Ok(())
    }

    /// Resident memory after the churn "within a bound of the baseline": +50% or +16 MiB,
    /// whichever is more. The allocator keeps the high-water mark of the busiest intervals
    /// (thousands of series at once); what was allocated per cgroup must be gone.
    pub fn rss_bound_kib(&self) -> u64 {
        self.baseline.rss_kib + (self.baseline.rss_kib / 2).max(16 * 1024)
    }

    /// RSS added by the first round over the baseline, and by the second over the first, KiB.
    pub fn rss_growth_kib(&self) -> (i64, i64) {
        let rss = |s: &AgentState| s.rss_kib as i64;
        match &self.rounds[..] {
            [a, b, ..] => (
                rss(&a.after) - rss(&self.baseline),
                rss(&b.after) - rss(&a.after),
            ),
            [a] => (rss(&a.after) - rss(&self.baseline), 0),
            [] => (0, 0),
        }
    }

    /// What the second round may add: a quarter of what the first did, or 2 MiB. An allocator
    /// keeps its high-water mark (the second round reuses it); a leak of even 200 bytes per
    /// cgroup would add 1 MiB per 5,000 cycles, on top of what the first round added.
    pub fn leak_bound_kib(&self) -> i64 {
        (self.rss_growth_kib().0 / 4).max(2048)
    }

    /// The figures, one line each.
    pub fn report(&self) -> Vec<String> {
        let mib = |k: u64| k as f64 / 1024.0;
        let mut lines = Vec::new();
        for (i, r) in self.rounds.iter().enumerate() {
            let c = &r.churned;
            lines.push(format!(
                "round {}: {} cycles ({} workers, holds {:?}) in {:.1} s = {:.0} cycles/s; cpu.stat of the churned cgroups {:.3} s in all, {} with none; settled {:.1} s after (retention {:?}): map entries {:.0}, {} series ({} churned), RSS {:.1} MiB",
                i + 1,
                c.cycles,
                self.plan.workers,
                self.plan.holds,
                c.elapsed.as_secs_f64(),
                c.cycles as f64 / c.elapsed.as_secs_f64(),
                c.kernel_cpu.as_secs_f64(),
                c.uncounted,
                r.settle.as_secs_f64(),
                self.retention,
                r.after.map_entries,
                r.after.series,
                r.after.churned_series,
                mib(r.after.rss_kib)
            ));
        }
        let last = self.last();
        let deleted = last.map_deletions - self.baseline.map_deletions;
        let cycles = self.rounds.iter().map(|r| r.churned.cycles).sum::<usize>();
        let (first, second) = self.rss_growth_kib();
        lines.extend([
            format!(
                "map entries (cgroups): baseline {:.0}, peak {:.0}, after {:.0} ({:+.0}; slack {MAP_SLACK}); {deleted:.0} deleted = {:.2}× the {cycles} cycles",
                self.baseline.map_entries,
                self.peak.map_entries,
                last.map_entries,
                last.map_entries - self.baseline.map_entries,
                deleted / cycles as f64
            ),
            format!(
                "series: baseline {}, peak {} ({} churned cgroups at once), after {} (0 churned)",
                self.baseline.series, self.peak.series, self.peak.churned_series, last.series
            ),
            format!(
                "agent RSS: baseline {:.1} MiB, peak {:.1} MiB, after {:.1} MiB ({:.2}× baseline, {:.2}× peak; bound {:.1} MiB); first round {:+.1} MiB, second {:+.1} MiB (leak bound {:+.1} MiB)",
                mib(self.baseline.rss_kib),
                mib(self.peak.rss_kib),
                mib(last.rss_kib),
                last.rss_kib as f64 / self.baseline.rss_kib as f64,
                last.rss_kib as f64 / self.peak.rss_kib as f64,
                mib(self.rss_bound_kib()),
                first as f64 / 1024.0,
                second as f64 / 1024.0,
                self.leak_bound_kib() as f64 / 1024.0
            ),
            format!(
                "{} scrapes during the churn, {} failed; energy balance worst {:.1e} during, after: {}; expired {:.2} J → {:.2} J",
                self.scrapes,
                self.scrape_failures,
                self.max_balance_error,
                stress::describe(&self.balances_after),
                self.baseline.expired_joules,
                last.expired_joules
            ),
        ]);
        lines
    }
}

/// Churns cgroups by `plan`, twice, under an agent exporting each churned cgroup as its own
/// series (depth 3) with a `retention` for removed ones, scraped every 100 ms throughout; after
/// each round, waits for the retention to pass and reads the agent again.
pub fn churn_while_exporting(plan: &ChurnPlan, retention: Duration) -> Result<ChurnRun> {
    let retention_flag = format!("{}ms", retention.as_millis());
    let agent = SimAgent::start(&[
        "--attribution.cgroup-depth",
        "3",
        "--retention.terminated",
        &retention_flag,
    ])?;
    let base = TestCgroup::new("stress-churn")?;
    let prefix = format!("/{}/c", relative(&base.path)?);
    let pid = agent.pid();
    // A few intervals first, so that the baseline has every long-lived cgroup.
    thread::sleep(Duration::from_secs(2));
    let baseline = AgentState::read(&stress::scrape(&agent.addr)?, pid, &prefix)?;
    let watch = Mutex::new(Watch {
        peak: baseline,
        ..Watch::default()
    });
    let mut rounds = Vec::new();
    let mut text = String::new();
    for round in 0..2 {
        let stop = AtomicBool::new(false);
        let churned = thread::scope(|s| {
            s.spawn(|| watch_scrapes(&agent.addr, pid, &prefix, &stop, &watch));
            let r = stress::churn(&base.path, plan, round);
            stop.store(true, Ordering::Relaxed);
            r
        })?;
        let settle = settled(&agent.addr, pid, &prefix, retention)?;
        text = stress::scrape(&agent.addr)?;
        let after = AgentState::read(&text, pid, &prefix)?;
        rounds.push(ChurnRound {
            churned,
            after,
            settle,
        });
    }
    let watch = watch.into_inner().unwrap_or_default();
    Ok(ChurnRun {
        plan: plan.clone(),
        retention,
        baseline,
        peak: rounds.iter().fold(watch.peak, |p, r| p.max(r.after)),
        rounds,
        scrapes: watch.scrapes,
        scrape_failures: watch.failures,
        max_balance_error: watch.max_balance_error,
        balances_after: stress::balances(&text),
    })
}

/// Waits until no churned cgroup has a series: how long that took.
fn settled(addr: &str, pid: u32, prefix: &str, retention: Duration) -> Result<Duration> {
    let ended = Instant::now();
    wait_for(
        "the churned cgroups' series to expire",
        retention + Duration::from_secs(60),
        || {
            let text = stress::scrape(addr).ok()?;
            let s = AgentState::read(&text, pid, prefix).ok()?;
            (s.churned_series == 0).then_some(())
        },
    )?;
    let settle = ended.elapsed();
    // Two more intervals: removed entries are deleted at the read after their last one.
    thread::sleep(Duration::from_millis(500));
    Ok(settle)
}

/// A cgroup's path under the v2 root, without the leading slash.
fn relative(path: &Path) -> Result<String> {
    Ok(path
        .strip_prefix(cgroup2_root()?)?
        .to_string_lossy()
        .into_owned())
}

#[derive(Debug, Default)]
struct Watch {
    peak: AgentState,
    scrapes: usize,
    failures: usize,
    max_balance_error: f64,
}

/// Scrapes every 100 ms until `stop`: the peaks, failures and the worst energy balance.
fn watch_scrapes(addr: &str, pid: u32, prefix: &str, stop: &AtomicBool, watch: &Mutex<Watch>) {
    while !stop.load(Ordering::Relaxed) {
        let got = stress::scrape(addr).and_then(|text| {
            Ok((
                AgentState::read(&text, pid, prefix)?,
                stress::balances(&text),
            ))
        });
        let mut w = watch.lock().unwrap();
        w.scrapes += 1;
        match got {
            Ok((state, balances)) => {
                w.peak = w.peak.max(state);
                for b in balances {
                    w.max_balance_error = w.max_balance_error.max(b.error().abs());
                }
            }
            Err(_) => w.failures += 1,
        }
        drop(w);
        thread::sleep(Duration::from_millis(100));
    }
}

/// The figures of concurrent scrapers.
#[derive(Debug)]
pub struct FloodRun {
    pub scrapers: usize,
    pub flood: Flood,
    /// The agent's CPU seconds over the flood (from /proc), per second of wall time.
    pub agent_cpu_per_second: f64,
    /// Interval ticks missed during the flood, and the intervals that passed.
    pub missed_ticks: f64,
    pub intervals: f64,
    pub interval: Duration,
    pub body_bytes: usize,
    pub series: usize,
}

impl FloodRun {
    pub fn check(&self) -> Result<()> {
        let f = &self.flood;
        ensure!(
            f.not_ok == 0 && f.failed == 0,
            "{} answers not 200 and {} scrapes failed of {}",
            f.not_ok,
            f.failed,
            f.latencies.len() + f.not_ok + f.failed
        );
        ensure!(!f.latencies.is_empty(), "no scrape answered");
        ensure!(
            self.missed_ticks == 0.0,
            "the measuring loop missed {} interval ticks during the flood",
            self.missed_ticks
        );
        Ok(())
    }

    pub fn report(&self) -> Vec<String> {
        let f = &self.flood;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        vec![
            format!(
                "{} scrapers (one loopback address each) × {:.1} s: {} scrapes = {:.0}/s, {} not 200, {} failed; body {:.1} KiB, {} series",
                self.scrapers,
                f.elapsed.as_secs_f64(),
                f.latencies.len(),
                f.rate(),
                f.not_ok,
                f.failed,
                self.body_bytes as f64 / 1024.0,
                self.series
            ),
            format!(
                "scrape latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (p99/p50 {:.1}×)",
                ms(f.percentile(50.0)),
                ms(f.percentile(90.0)),
                ms(f.percentile(99.0)),
                ms(f.percentile(100.0)),
                f.percentile(99.0).as_secs_f64() / f.percentile(50.0).as_secs_f64().max(1e-9)
            ),
            format!(
                "agent CPU {:.1}% of one core ({:.3} ms per scrape); interval {:?}: {:.0} intervals, {} ticks missed, longest interval work seen {:.2} ms ({:.1}% of the interval)",
                self.agent_cpu_per_second * 100.0,
                self.agent_cpu_per_second * f.elapsed.as_secs_f64() * 1e3
                    / f.latencies.len().max(1) as f64,
                self.interval,
                self.intervals,
                self.missed_ticks,
                f.max_work_seconds * 1e3,
                f.max_work_seconds / self.interval.as_secs_f64() * 100.0
            ),
        ]
    }
}

/// `scrapers` concurrent scrapers for `duration` against an agent at the harness's interval.
pub fn flood_run(scrapers: usize, duration: Duration) -> Result<FloodRun> {
    let agent = SimAgent::start(&[])?;
    let interval = Duration::from_millis(200);
    thread::sleep(Duration::from_secs(1));
    let pid = agent.pid();
    let missed = |text: &str| stress::total(text, "wattlet_interval_missed_ticks_total", |_| true);
    let before = stress::scrape(&agent.addr)?;
    let cpu0 = stress::cpu_seconds(pid)?;
    let t0 = Instant::now();
    let flood = stress::flood(&agent.addr, scrapers, duration)?;
    let cpu = stress::cpu_seconds(pid)? - cpu0;
    let wall = t0.elapsed();
    let after = stress::scrape(&agent.addr)?;
    Ok(FloodRun {
        scrapers,
        agent_cpu_per_second: cpu / wall.as_secs_f64(),
        missed_ticks: missed(&after) - missed(&before),
        intervals: wall.as_secs_f64() / interval.as_secs_f64(),
        interval,
        body_bytes: after.len(),
        series: after.lines().filter(|l| !l.starts_with('#')).count(),
        flood,
    })
}

/// The agent's Kubernetes client's read timeout (`kubernetes::READ_TIMEOUT`): a request that
/// gets no answer fails after this long.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How pods come and go while the API server is away.
#[derive(Clone, Debug)]
pub struct OutagePlan {
    pub outage: Duration,
    /// A new pod (one container) starts this often during the outage...
    pub new_every: Duration,
    /// ...and every `die_one_in`-th of them is gone again before the outage ends.
    pub die_one_in: usize,
    /// The API server accepts connections and never answers (a partition, a hung server),
    /// rather than refusing them.
    pub hang: bool,
}

/// The figures of an API-server outage during pod churn.
#[derive(Debug, Default)]
pub struct OutageRun {
    pub outage: Duration,
    pub hang: bool,
    pub started: usize,
    pub died: usize,
    /// Scrapes during the outage, those not 200 or failed, the slowest.
    pub scrapes: usize,
    pub scrape_failures: usize,
    pub slowest_scrape: Duration,
    /// Containers started during the outage that were exported (unnamed) before it ended.
    pub exported_unnamed: usize,
    /// Whether the first pod kept its names throughout.
    pub kept_names: bool,
    pub max_age_seconds: f64,
    pub watch_errors: f64,
    /// From the API server's return until every live new container had its pod's names.
    pub catch_up: Option<Duration>,
    pub agent_alive: bool,
    pub panicked: bool,
}

impl OutageRun {
    pub fn check(&self) -> Result<()> {
        ensure!(self.agent_alive, "the agent exited during the outage");
        ensure!(!self.panicked, "the agent panicked (see its stderr above)");
        ensure!(
            self.scrape_failures == 0,
            "{} scrapes failed in the outage",
            self.scrape_failures
        );
        ensure!(
            self.kept_names,
            "the first pod lost its names in the outage"
        );
        ensure!(
            self.exported_unnamed > 0,
            "no container started in the outage was exported before it ended"
        );
        if self.hang && self.outage < CLIENT_READ_TIMEOUT {
            // A request caught in the hang fails only at the client's read timeout, after the
            // outage: whether the agent noticed it depends on whether its watch was re-sent
            // before the hang began (refused: counted) or into it (unanswered: not yet). Either
            // way, what it exports must agree: an age only with an error.
            ensure!(
                (self.watch_errors >= 1.0) == (self.max_age_seconds > 0.0),
                "metadata age up to {} s with {} watch errors: an age needs an error, an error \
                 an age",
                self.max_age_seconds,
                self.watch_errors
            );
        } else {
            ensure!(
                self.max_age_seconds >= self.outage.as_secs_f64() * 0.5,
                "metadata age {} s: should grow through a {:?} outage",
                self.max_age_seconds,
                self.outage
            );
            ensure!(self.watch_errors >= 1.0, "no watch error counted");
        }
        ensure!(
            self.catch_up.is_some(),
            "labels did not catch up after the outage"
        );
        Ok(())
    }

    pub fn report(&self) -> Vec<String> {
        vec![
            format!(
                "API server {} for {:?}: {} pods started, {} gone again meanwhile; {} new containers exported unnamed before it returned",
                if self.hang {
                    "accepted connections and never answered"
                } else {
                    "refused connections"
                },
                self.outage,
                self.started,
                self.died,
                self.exported_unnamed
            ),
            format!(
                "{} scrapes in the outage, {} failed, slowest {:.2} ms; metadata age up to {:.1} s; {:.0} watch errors; first pod's names kept: {}",
                self.scrapes,
                self.scrape_failures,
                self.slowest_scrape.as_secs_f64() * 1e3,
                self.max_age_seconds,
                self.watch_errors,
                self.kept_names
            ),
            format!(
                "labels caught up {} after the API server returned; agent alive {}, panicked {}",
                self.catch_up
                    .map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                self.agent_alive,
                self.panicked
            ),
        ]
    }
}

fn container_id(k: usize) -> String {
    format!("{:064x}", 0x00c0_ffee_0000_usize + k)
}

fn pod_uid(k: usize) -> String {
    format!("22222222-bbbb-4bbb-8bbb-{k:012x}")
}

/// The pod of each container series (container_id → pod label).
fn pods_of_containers(text: &str) -> std::collections::HashMap<String, String> {
    series(text, "wattlet_container_cpu_seconds_total")
        .into_iter()
        .filter_map(|(l, _)| Some((l.get("container_id")?.clone(), l.get("pod")?.clone())))
        .collect()
}

/// A pod's container: its cgroup, laid out as the kubelet does, with a mostly sleeping process.
struct PodContainer {
    _process: Running,
    _cgroup: TestCgroup,
}

fn start_container(base: &TestCgroup, k: usize) -> Result<PodContainer> {
    let cgroup = pod_container(base, "besteffort", &pod_uid(k), &container_id(k))?;
    // Wakes every second, so that the kernel charges the container at every interval's read.
    let process = Running(
        cgroup.spawn(
            std::process::Command::new("tail")
                .args(["---disable-inotify", "-f", "-s", "1", "/dev/null"])
                .stdout(std::process::Stdio::null()),
        )?,
    );
    Ok(PodContainer {
        _process: process,
        _cgroup: cgroup,
    })
}

/// The API server refuses connections (or never answers) for `plan.outage` while pods start
/// (and some end); then it returns and lists them all. The agent must keep exporting, keep the
/// names it had, and name the new containers once the API server is back.
pub fn api_outage(plan: &OutagePlan) -> Result<OutageRun> {
    let fake = Arc::new(Mutex::new(Fake::default()));
    fake.lock().unwrap().add(
        pod(&pod_uid(0), "churn-0", &[("c", &container_id(0))]),
        false,
    );
    let mut api = ApiServer::start(fake.clone())?;
    let config = api.kubeconfig("outage-kubeconfig")?;
    let base = TestCgroup::new("stress-outage")?;
    let mut live = vec![(0, start_container(&base, 0)?)];
    let port = free_port()?;
    let mut agent = start_agent_with_env(
        port,
        &[OsStr::new("--kubernetes"), OsStr::new("on")],
        &[("KUBECONFIG", config.as_os_str())],
    )?;
    let stderr = drain_stderr(&mut agent);
    let addr = format!("127.0.0.1:{port}");
    wait_for("the first pod's names", Duration::from_secs(20), || {
        let text = stress::scrape(&addr).ok()?;
        (pod_of(0, &text)? == "churn-0").then_some(())
    })?;
    let errors_before = watch_errors(&stress::scrape(&addr)?);

    if plan.hang {
        api.black_hole()?;
    } else {
        api.stop();
    }
    let mut run = OutageRun {
        outage: plan.outage,
        hang: plan.hang,
        kept_names: true,
        ..OutageRun::default()
    };
    let last_text = pods_come_and_go(plan, &addr, &base, &fake, &mut live, &mut run)?;
    run.exported_unnamed = live
        .iter()
        .filter(|(k, _)| *k > 0 && pod_of(*k, &last_text).is_some_and(|p| p.is_empty()))
        .count();
    run.watch_errors = watch_errors(&last_text) - errors_before;

    api.resume()?;
    let back = Instant::now();
    let all_named = || {
        let text = stress::scrape(&addr).ok()?;
        live.iter()
            .all(|(k, _)| pod_of(*k, &text) == Some(format!("churn-{k}")))
            .then_some(())
    };
    // The watcher's backoff is capped at 30 s, and a request lost in a hang fails after the
    // client's 60 s read timeout: within either of the return, it lists again.
    run.catch_up = wait_for(
        "labels after the outage",
        Duration::from_secs(75),
        all_named,
    )
    .ok()
    .map(|()| back.elapsed());
    run.agent_alive = agent.0.try_wait()?.is_none();
    drop(agent);
    let log = stderr.join().unwrap_or_default();
    run.panicked = log.contains("panicked");
    if run.panicked {
        eprintln!("agent's stderr:\n{log}");
    }
    drop(live);
    drop(base);
    let _ = std::fs::remove_file(config);
    Ok(run)
}

/// The pod label of container `k`'s series, if it has one.
fn pod_of(k: usize, text: &str) -> Option<String> {
    pods_of_containers(text).get(&container_id(k)).cloned()
}

fn watch_errors(text: &str) -> f64 {
    stress::total(text, "wattlet_kubernetes_watch_errors_total", |_| true)
}

/// For the outage: a pod starts every `plan.new_every` (every `die_one_in`-th ends two pods
/// later), the API server's list following (it will tell once back); the agent is scraped every
/// 500 ms. Returns the last scrape.
fn pods_come_and_go(
    plan: &OutagePlan,
    addr: &str,
    base: &TestCgroup,
    fake: &Arc<Mutex<Fake>>,
    live: &mut Vec<(usize, PodContainer)>,
    run: &mut OutageRun,
) -> Result<String> {
    let began = Instant::now();
    let mut next_pod = began;
    let mut last_text = String::new();
    while began.elapsed() < plan.outage {
        if Instant::now() >= next_pod {
            next_pod += plan.new_every;
            run.started += 1;
            let k = run.started;
            live.push((k, start_container(base, k)?));
            let p = pod(
                &pod_uid(k),
                &format!("churn-{k}"),
                &[("c", &container_id(k))],
            );
            fake.lock().unwrap().add(p, false);
            if let Some(j) = k
                .checked_sub(2)
                .filter(|j| *j > 0 && j % plan.die_one_in == 0)
            {
                live.retain(|(i, _)| *i != j);
                fake.lock().unwrap().delete(&pod_uid(j));
                run.died += 1;
            }
        }
        let t = Instant::now();
        match stress::scrape(addr) {
            Ok(text) => {
                run.slowest_scrape = run.slowest_scrape.max(t.elapsed());
                run.kept_names &= pod_of(0, &text).as_deref() == Some("churn-0");
                let age = stress::total(&text, "wattlet_kubernetes_metadata_age_seconds", |_| true);
                run.max_age_seconds = run.max_age_seconds.max(age);
                last_text = text;
            }
            Err(_) => run.scrape_failures += 1,
        }
        run.scrapes += 1;
        thread::sleep(Duration::from_millis(500));
    }
    Ok(last_text)
}

/// Reads the agent's stderr as it comes (so that its log never fills the pipe): all of it, once
/// the agent has exited.
fn drain_stderr(agent: &mut Running) -> thread::JoinHandle<String> {
    let pipe = agent.0.stderr.take();
    thread::spawn(move || {
        let mut log = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut log);
        }
        log
    })
}

/// Fails with every line of `lines` when `r` is an error, so that a failed check shows its
/// figures.
pub fn checked(name: &str, lines: &[String], r: Result<()>) -> Result<()> {
    for l in lines {
        println!("{name} — {l}");
    }
    r.with_context(|| format!("{name}: a check failed"))
}
