//! Churn, floods and outages, short enough for every run (`cargo xtask bench` runs the first,
//! second and fourth at full size: 10,000 cycles, 50 scrapers for 30 s, a 60 s outage):
//! - cgroups created, used and removed in a loop, in two rounds, while the agent exports and is
//!   scraped: energy balances at every scrape, the map's entries return to their baseline (every
//!   removed cgroup's entry deleted), no removed cgroup keeps a series past the retention, and
//!   the agent's memory stays within a bound of its baseline, the second round adding nothing to
//!   speak of (no leak);
//! - concurrent scrapers, each from its own address: every scrape answered, no interval missed;
//! - more busy cgroups than the in-kernel map holds: the overflow is counted, no CPU time is
//!   lost, energy balances;
//! - the API server refusing connections, or accepting them and never answering, while pods come
//!   and go: the agent keeps exporting, keeps the names it had, and names the new pods'
//!   containers once the API server is back.

use std::{thread, time::Duration};

use anyhow::{Result, ensure};
use integration_tests::{
    TestCgroup, require_root,
    scenarios::{self, BALANCE_TOLERANCE, OutagePlan, SimAgent, checked},
    stress::{self, ChurnPlan},
    wait_all,
};

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

/// 1,000 cycles in two rounds of 500 (the benchmark runs 10,000), half removed before the
/// agent's next read, half kept a little longer than an interval so that the agent names them.
#[test]
fn stress_cgroup_churn_returns_to_baseline_and_conserves_energy() -> Result<()> {
    require_root();
    let plan = ChurnPlan {
        cycles: 500,
        workers: 8,
        holds: vec![Duration::ZERO, Duration::from_millis(300)],
    };
    let run = scenarios::churn_while_exporting(&plan, Duration::from_secs(3))?;
    checked("stress churn", &run.report(), run.check())
}

/// 10 scrapers for 5 s (the benchmark: 50 for 30 s).
#[test]
fn stress_concurrent_scrapers_all_answered_and_no_interval_missed() -> Result<()> {
    require_root();
    let run = scenarios::flood_run(10, Duration::from_secs(5))?;
    checked("stress scrapers", &run.report(), run.check())
}

/// A 20 s outage (the benchmark waits the full 60 s): long enough for the watcher's backoff to
/// reach 16 s, so the return is noticed only at its next retry.
#[test]
fn stress_api_server_outage_during_pod_churn_labels_catch_up() -> Result<()> {
    require_root();
    short_outage("stress outage", false)
}

/// The same, with the API server accepting connections and never answering them (a partition
/// or a hung server), even after it serves again: a request caught in the hang must not keep the
/// watcher from trying again. A hang shorter than the client's read timeout may go unnoticed
/// until it ends (no error, age 0): the check then asks only that age and errors agree.
#[test]
fn stress_api_server_hang_during_pod_churn_labels_catch_up() -> Result<()> {
    require_root();
    short_outage("stress hang", true)
}

/// 20 s of outage, a pod every 2 s, every third gone again before the end.
fn short_outage(name: &str, hang: bool) -> Result<()> {
    let run = scenarios::api_outage(&OutagePlan {
        outage: Duration::from_secs(20),
        new_every: Duration::from_secs(2),
        die_one_in: 3,
        hang,
    })?;
    checked(name, &run.report(), run.check())
}

/// A map of 8 cgroups (the machine fills it from the start) and 16 busy cgroups of ours: the
/// map stays at its capacity, the CPU time that found no place is counted in the overflow, our
/// cgroups' CPU time is all there (their own series plus the overflow), and the energy of the
/// `(cgroup map full)` workload keeps the books balanced.
#[test]
fn stress_more_live_cgroups_than_map_entries_overflow_counted() -> Result<()> {
    require_root();
    const CAPACITY: f64 = 8.0;
    const CGROUPS: usize = 16;
    let agent = SimAgent::start(&["--bpf.max-cgroups", "8", "--attribution.cgroup-depth", "3"])?;
    thread::sleep(Duration::from_secs(1));
    let overflow = |text: &str| {
        stress::value(
            text,
            "wattlet_bpf_overflow_cpu_seconds_total",
            "map",
            "cgroups",
        )
    };
    let before = overflow(&stress::scrape(&agent.addr)?);

    let base = TestCgroup::new("stress-overflow")?;
    let cgroups: Vec<TestCgroup> = (0..CGROUPS)
        .map(|i| TestCgroup::create_at(base.path.join(format!("busy-{i}"))))
        .collect::<Result<_>>()?;
    let load = cgroups
        .iter()
        .map(|cg| cg.spawn(workload().args(["burn", "0.25"])))
        .collect::<Result<Vec<_>>>()?;
    wait_all(load)?;
    let kernel: f64 = cgroups
        .iter()
        .map(|cg| cg.usage_ns().map(|ns| ns as f64 / 1e9))
        .sum::<Result<f64>>()?;
    // Two intervals: the last switches are read.
    thread::sleep(Duration::from_millis(600));
    let text = stress::scrape(&agent.addr)?;
    let rel = base
        .path
        .strip_prefix(integration_tests::cgroup2_root()?)?
        .to_string_lossy()
        .into_owned();
    let own = stress::total(&text, "wattlet_cgroup_cpu_seconds_total", |l| {
        l["cgroup"].starts_with(&format!("/{rel}/"))
    });
    let overflowed = overflow(&text) - before;
    let entries = stress::value(&text, "wattlet_bpf_map_entries", "map", "cgroups");
    let capacity = stress::value(&text, "wattlet_bpf_map_capacity", "map", "cgroups");
    let map_full_joules = stress::value(
        &text,
        "wattlet_cgroup_energy_joules_total",
        "cgroup",
        node_agent::attribution::OVERFLOW,
    );
    let balances = stress::balances(&text);
    println!(
        "stress overflow — map {entries} of {capacity} entries; our {CGROUPS} cgroups used \
         {kernel:.3} CPU-s (cpu.stat): {own:.3} s on their own series, overflow grew {overflowed:.3} \
         s (own + overflow = {:.2}× cpu.stat); (cgroup map full) {map_full_joules:.2} J; {}",
        (own + overflowed) / kernel,
        stress::describe(&balances)
    );
    ensure!(capacity == CAPACITY, "capacity {capacity}");
    ensure!(
        entries <= CAPACITY,
        "{entries} entries in a map of {CAPACITY}"
    );
    ensure!(overflowed > 0.0, "no overflow counted");
    ensure!(
        own + overflowed >= kernel * 0.95,
        "CPU time lost: {own} + {overflowed} s of {kernel} s"
    );
    ensure!(map_full_joules > 0.0, "the overflow has no energy");
    stress::check_balances(&text, BALANCE_TOLERANCE)?;
    drop(cgroups);
    Ok(())
}
