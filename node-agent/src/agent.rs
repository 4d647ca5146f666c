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
    attribution::{AttributionOptions, Attributor, IdlePolicy},
    cgroup::CgroupTree,
    config::{KubeMode, Options},
    exporter,
    kernel::{KernelCounters, KernelOptions},
    kubernetes::{self, Metadata},
    power::{self, BusySample, Meter, PowerOptions},
    snapshot::{Latest, Snapshot},
    sys,
    units::secs_from_ns,
};

pub async fn run(opts: Options) -> Result<()> {
    sys::require_bpf_privileges()?;
    let cgroup_root = opts.agent.cgroup_root()?;
    info!("cgroup v2 hierarchy at {}", cgroup_root.display());
    let mut tree = CgroupTree::new(&cgroup_root);
    let mut counters = KernelCounters::load(KernelOptions {
        gone_retention: opts.attribution.retention,
        procfs: opts.power.procfs.clone(),
        ..opts.kernel.clone()
    })?;
    let (_, pmu_reason) = counters.pmu();
    info!("sched_switch accounting attached; PMU: {pmu_reason}");

    let meter = open_power(&opts.power)?;

    let metadata = start_kubernetes(&opts).await?;

    let latest = Arc::new(Latest::default());
    let registry = exporter::registry(
        latest.clone(),
        &opts.agent.node_name(),
        opts.exporter.metrics_compat,
    );
    let listener = exporter::bind(opts.exporter.listen_address).await?;
    let interval = opts.agent.interval;
    info!(
        "serving http://{}/metrics every {interval:?}",
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
                    },
                    &latest,
                    policy,
                    interval,
                    &stop,
                )
            })
            .context("starting the measuring thread")?
    };

    let shutdown = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            info!("shutting down");
            stop.store(true, Ordering::Relaxed);
        }
    };
    let served = exporter::serve(listener, registry, latest, shutdown).await;
    stop.store(true, Ordering::Relaxed);
    let _ = measuring.join();
    Ok(served?)
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
    Ok(Meter::new(opened))
}

/// What the measuring loop reads and keeps, in the order data flows.
struct Sources<'a> {
    counters: &'a mut KernelCounters,
    tree: &'a mut CgroupTree,
    meter: &'a mut Meter,
    attributor: &'a mut Attributor,
    metadata: Option<Arc<Metadata>>,
}

/// Starts the pod-metadata watcher when a Kubernetes configuration is found (or required).
async fn start_kubernetes(opts: &Options) -> Result<Option<Arc<Metadata>>> {
    let mode = opts.kubernetes.mode;
    if mode == KubeMode::Off {
        return Ok(None);
    }
    let client = tokio::time::timeout(Duration::from_secs(10), kube::Client::try_default()).await;
    match client {
        Ok(Ok(client)) => {
            let node = opts.agent.node_name();
            let metadata = Arc::new(Metadata::default());
            info!("watching this node's pods ({node}) for container and pod names");
            tokio::spawn(kubernetes::watch(
                client,
                node,
                metadata.clone(),
                opts.attribution.retention,
            ));
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
    } = src;
    let mut errors = 0u64;
    let mut power_errors = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let read = counters.read(tree);
        let busy = read.as_ref().ok().map(|s| BusySample {
            at: s.cpus_at,
            seconds: secs_from_ns(s.busy_ns()),
        });
        let (power, failures) = meter.read(busy);
        for f in failures {
            power_errors += 1;
            // The first failures, then one in a hundred: a broken file fails at every tick.
            if power_errors <= 10 || power_errors.is_multiple_of(100) {
                warn!(
                    "reading power from {} failed ({power_errors} so far): {f}",
                    meter.kind()
                );
            }
        }
        match read {
            Ok(snapshot) => {
                let attribution = attributor.update(
                    &snapshot,
                    Some(&power),
                    &meter.opened().idle_watts,
                    sys::own_cpu_ns(),
                );
                latest.publish(Snapshot::new(
                    snapshot,
                    Some(power),
                    attribution,
                    policy,
                    metadata.as_ref().map(|m| m.view()),
                    started.elapsed(),
                    errors,
                ))
            }
            Err(e) => {
                errors += 1;
                let e = anyhow::Error::from(e);
                warn!("reading kernel counters failed ({errors} so far): {e:#}");
            }
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
}
