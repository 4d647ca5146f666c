//! `wattlet run`: measure every interval, publish the snapshot, serve it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use log::{info, warn};

use crate::{
    attribution::{AttributionOptions, Attributor, IdlePolicy, IntervalCarbon},
    carbon::{self, CarbonArgs, Intensity},
    cgroup::CgroupTree,
    config::{KubeMode, Options},
    exporter,
    kernel::{KernelCounters, KernelOptions},
    kubernetes::{self, Metadata},
    power::{self, BusySample, Meter, PowerOptions},
    snapshot::{Latest, PlatformRow, Snapshot},
    sys,
    units::secs_from_ns,
};

pub async fn run(opts: Options) -> Result<()> {
    // Listened for from the start, so that a signal during start-up stops the agent cleanly.
    let signals = Signals::new()?;
    // A bad web config stops the agent before anything is loaded.
    let web = exporter::Web::open(
        opts.exporter.web_config_file.as_deref(),
        opts.exporter.health_unauthenticated,
        opts.exporter.max_connections.into(),
        opts.exporter.max_connections_per_client.into(),
    )?;
    sys::require_bpf_privileges()?;
    let (mut tree, mut counters) = load_kernel(&opts)?;

    let meter = open_power(&opts.power)?;
    let carbon = Carbon::start(&opts.carbon)?;

    let metadata = start_kubernetes(&opts, &carbon.intensity).await?;

    let latest = Arc::new(Latest::default());
    let registry = exporter::registry(
        latest.clone(),
        &opts.agent.node_name(),
        opts.exporter.metrics_compat,
    );
    let listener = exporter::bind(opts.exporter.listen_address).await?;
    let interval = opts.agent.interval;
    info!(
        "serving {}://{}/metrics every {interval:?}",
        web.scheme(),
        listener.local_addr()?
    );

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = {
        let latest = latest.clone();
        let stop = stop.clone();
        let mut meter = meter;
        let mut attributor = Attributor::new(AttributionOptions {
            processes: opts.kernel.processes,
            ..opts.attribution.options(interval)?
        });
        let policy = opts.attribution.idle_policy;
        thread::Builder::new()
            .name("measure".into())
            .spawn(move || {
                measure_loop(
                    Sources {
                        counters: &mut counters,
                        tree: &mut tree,
                        meter: &mut meter,
                        attributor: &mut attributor,
                        metadata,
                        carbon,
                    },
                    &latest,
                    policy,
                    interval,
                    &stop,
                )
            })
            .context("starting the measuring thread")?
    };

    let shutdown = stop_on_signal(signals, stop.clone());
    let node = opts.agent.node_name();
    exporter::serve(listener, registry, latest, &node, web, shutdown).await;
    stop.store(true, Ordering::Relaxed);
    let _ = measuring.join();
    info!("stopped");
    Ok(())
}

/// Finds the cgroup hierarchy, then loads and attaches the accounting program.
fn load_kernel(opts: &Options) -> Result<(CgroupTree, KernelCounters)> {
    let cgroup_root = opts.agent.cgroup_root()?;
    info!("cgroup v2 hierarchy at {}", cgroup_root.display());
    let tree = CgroupTree::new(&cgroup_root);
    let counters = KernelCounters::load(KernelOptions {
        gone_retention: opts.attribution.retention,
        procfs: opts.power.procfs.clone(),
        ..opts.kernel.clone()
    })?;
    let (_, pmu_reason) = counters.pmu();
    info!("sched_switch accounting attached; PMU: {pmu_reason}");
    Ok((tree, counters))
}

/// Completes at the first SIGTERM or SIGINT, after telling the measuring loop to stop; a second
/// signal exits at once.
async fn stop_on_signal(mut signals: Signals, stop: Arc<AtomicBool>) {
    let first = signals.next().await;
    info!(
        "{first} received: finishing the current interval and the requests in progress \
         (a second signal exits at once)"
    );
    stop.store(true, Ordering::Relaxed);
    tokio::spawn(async move {
        let second = signals.next().await;
        warn!("{second} received again: exiting at once");
        std::process::exit(128 + second.number());
    });
}

/// Probes the power sources, logs what each offers, and opens the chosen one (or says why none).
pub fn open_power(opts: &PowerOptions) -> Result<Meter> {
    let selection = power::select(opts);
    for p in &selection.probes {
        match &p.outcome {
            Ok(found) => info!("power source {}: {found}", p.kind),
            Err(why) => info!("power source {} cannot be used: {why}", p.kind),
        }
    }
    let Some(opened) = selection.chosen else {
        let reasons: Vec<String> = selection
            .probes
            .iter()
            .filter_map(|p| p.outcome.as_ref().err().map(|e| format!("{}: {e}", p.kind)))
            .collect();
        bail!(
            "no power source: {}. {}. Run `wattlet check` for details; --power-source model \
             estimates power on any node",
            selection.why,
            reasons.join("; ")
        );
    };
    info!("using power source {}: {}", opened.kind, selection.why);
    if opened.estimated {
        warn!(
            "no power sensor used: node power is modelled from CPU busy time and exported with \
             estimated=\"true\""
        );
    }
    let platform = selection
        .platform
        .transpose()
        .context("--power.redfish.url")?;
    if let Some(p) = &platform {
        info!("platform power from {}: {}", p.kind, p.description);
    }
    Ok(Meter::new(opened).with_platform(platform))
}

/// What the measuring loop reads and keeps, in the order data flows.
struct Sources<'a> {
    counters: &'a mut KernelCounters,
    tree: &'a mut CgroupTree,
    meter: &'a mut Meter,
    attributor: &'a mut Attributor,
    metadata: Option<Arc<Metadata>>,
    carbon: Carbon,
}

/// The grid intensity and what multiplies into emissions, handed to attribution each interval.
struct Carbon {
    intensity: Arc<Intensity>,
    pue: f64,
    embodied_grams_per_second: Option<f64>,
}

impl Carbon {
    /// Starts the intensity sources (the API's poller on this runtime) and says which is in use.
    fn start(args: &CarbonArgs) -> Result<Self> {
        let intensity = Arc::new(Intensity::start(args)?);
        info!("carbon intensity: {}", intensity.describe(Instant::now()));
        Ok(Self {
            intensity,
            pue: args.pue,
            embodied_grams_per_second: args
                .embodied_kg
                .map(|kg| carbon::embodied_grams_per_second(kg, args.lifetime)),
        })
    }

    /// The figures in force now, for the interval that just ended.
    fn in_force(&self) -> IntervalCarbon {
        IntervalCarbon {
            reading: self.intensity.current(Instant::now()),
            pue: self.pue,
            embodied_grams_per_second: self.embodied_grams_per_second,
        }
    }
}

/// Starts the pod-metadata watcher when a Kubernetes configuration is found (or required), and
/// reads the node's region for the built-in carbon table.
async fn start_kubernetes(
    opts: &Options,
    intensity: &Arc<Intensity>,
) -> Result<Option<Arc<Metadata>>> {
    let mode = opts.kubernetes.mode;
    if mode == KubeMode::Off {
        return Ok(None);
    }
    let client = tokio::time::timeout(Duration::from_secs(10), kubernetes::client()).await;
    match client {
        Ok(Ok(client)) => {
            let node = opts.agent.node_name();
            let metadata = Arc::new(Metadata::default());
            info!("watching this node's pods ({node}) for container and pod names");
            tokio::spawn(kubernetes::watch(
                client.clone(),
                node.clone(),
                metadata.clone(),
                opts.attribution.retention,
            ));
            // The region only matters to the built-in table, and --carbon.zone overrides it.
            if opts.carbon.zone.is_none() {
                let intensity = intensity.clone();
                tokio::spawn(async move {
                    let region = kubernetes::node_region(client, node).await;
                    intensity.set_region(region.as_deref());
                });
            }
            Ok(Some(metadata))
        }
        Ok(Err(e)) if mode == KubeMode::Auto => {
            info!(
                "no Kubernetes API ({e}): containers are named by id and runtime, cgroups by path"
            );
            Ok(None)
        }
        Ok(Err(e)) => bail!(
            "--kubernetes on: no Kubernetes API configuration ({e}); run in a pod with a service \
             account, or set KUBECONFIG"
        ),
        Err(_) => bail!("connecting to the Kubernetes API timed out after 10s"),
    }
}

/// Reads the kernel counters and the power source at each tick, attributes, and publishes the
/// snapshot. A failed read is logged, counted and retried at the next tick; the previous
/// snapshot stays published.
fn measure_loop(
    src: Sources<'_>,
    latest: &Latest,
    policy: IdlePolicy,
    interval: Duration,
    stop: &AtomicBool,
) {
    let Sources {
        counters,
        tree,
        meter,
        attributor,
        metadata,
        carbon,
    } = src;
    let mut errors = 0u64;
    let mut power_errors = 0u64;
    let mut missed = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let read = counters.read(tree);
        let busy = read.as_ref().ok().map(|s| BusySample {
            at: s.cpus_at,
            seconds: secs_from_ns(s.busy_ns()),
        });
        let (power, failures) = meter.read(busy);
        log_power_failures(meter, failures, &mut power_errors);
        match read {
            Ok(snapshot) => {
                let in_force = carbon.in_force();
                let attribution = attributor.update(
                    &snapshot,
                    Some(&power),
                    &meter.opened().idle_watts,
                    sys::own_cpu_ns(),
                    Some(&in_force),
                );
                let s = Snapshot::new(
                    snapshot,
                    Some(power),
                    attribution,
                    policy,
                    metadata.as_ref().map(|m| m.view()),
                    started.elapsed(),
                    errors,
                );
                let platform = (meter.platform_meter()).map(|meter| PlatformRow {
                    meter,
                    totals: attributor.platform().unwrap_or_default(),
                });
                latest.publish(
                    s.with_intensity_errors(carbon.intensity.errors())
                        .with_platform(platform)
                        .with_missed_ticks(missed),
                )
            }
            Err(e) => {
                errors += 1;
                let e = anyhow::Error::from(e);
                warn!("reading kernel counters failed ({errors} so far): {e:#}");
            }
        }
        next = next_tick(next, interval, Instant::now(), &mut missed);
        // Sleep in short steps so that shutdown is prompt.
        while !stop.load(Ordering::Relaxed) {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// When the next interval starts: one interval after the last tick, or at once if that tick
/// has already passed while the work ran (the schedule then shifts rather than bursting to catch
/// up), counting every tick that passed into `missed`.
fn next_tick(last: Instant, interval: Duration, now: Instant, missed: &mut u64) -> Instant {
    let next = last + interval;
    if next >= now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos() / interval.as_nanos().max(1);
    *missed += 1 + u64::try_from(behind).unwrap_or(u64::MAX);
    now
}

/// The first failures, then one in a hundred: a broken file fails at every tick.
fn log_power_failures(meter: &Meter, failures: Vec<power::SourceError>, count: &mut u64) {
    for f in failures {
        *count += 1;
        if *count <= 10 || count.is_multiple_of(100) {
            warn!(
                "reading power from {} failed ({count} so far): {f}",
                meter.kind()
            );
        }
    }
}

/// SIGTERM (what Kubernetes and systemd send) and SIGINT (Ctrl-C).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopSignal {
    Term,
    Int,
}

impl StopSignal {
    fn number(self) -> i32 {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Int => libc::SIGINT,
        }
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
        })
    }
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Term,
            _ = self.int.recv() => StopSignal::Int,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_interval_counts_the_ticks_it_missed_and_shifts_the_schedule() {
        let t0 = Instant::now();
        let i = Duration::from_millis(100);
        let mut missed = 0;
        // On time: the next tick is one interval on, nothing missed.
        assert_eq!(next_tick(t0, i, t0 + i / 2, &mut missed), t0 + i);
        assert_eq!(missed, 0);
        // The work ran past the next tick: one missed, the next interval starts now.
        let now = t0 + i + Duration::from_millis(30);
        assert_eq!(next_tick(t0, i, now, &mut missed), now);
        assert_eq!(missed, 1);
        // Past two more ticks: three in all.
        let now = t0 + i * 3 + Duration::from_millis(1);
        assert_eq!(next_tick(t0, i, now, &mut missed), now);
        assert_eq!(missed, 4);
    }
}
