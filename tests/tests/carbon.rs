//! Carbon end to end: the real agent on a simulated RAPL tree whose power follows a workload,
//! its grid intensity from `--carbon.intensity-file` stepping mid-run (100 → 700 g/kWh, written
//! by renaming into place) and a PUE of 1.5, scraped at every interval and by a real Prometheus.
//! The agent's emissions equal Σ energy_i × intensity_i × PUE over its own intervals, while the
//! product of the mean intensity and the energy's increase — the PromQL one would naively write
//! — does not. Bad values in the file are counted and never exported as intensity. A run with
//! no carbon flags exports carbon with `source="default"`.

use std::{
    ffi::OsStr,
    fs,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use integration_tests::{
    Prometheus, TestCgroup, free_port, http_get,
    rapl_sim::{PowerLaw, RaplSim, SimConfig},
    rel_diff, require_root, sample, series, start_agent, wait_all, wait_for,
};
use node_agent::carbon::WORLD_AVERAGE;

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

const NODE: &str = "node=\"e2e-node\"";
const INTERVAL: Duration = Duration::from_millis(500);
const PUE: f64 = 1.5;
const LOW: f64 = 100.0;
const HIGH: f64 = 700.0;

/// What one snapshot says about the package zone: the power reading's time, the node's energy
/// and operational grams (idle + active, every source), and the intensity in force.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    at: f64,
    joules: f64,
    grams: f64,
    intensity: f64,
    source: String,
}

/// One scrape, read whole (one snapshot).
fn seen(body: &str) -> Option<Seen> {
    let package = |metric: &str| -> f64 {
        series(body, metric)
            .into_iter()
            .filter(|(l, _)| l["zone"] == "package")
            .map(|(_, v)| v)
            .sum()
    };
    let intensity = series(body, "wattlet_grid_carbon_intensity_grams_per_kwh");
    let [(labels, value)] = &intensity[..] else {
        return None;
    };
    Some(Seen {
        at: sample(
            body,
            &format!("wattlet_power_reading_timestamp_seconds{{{NODE}}}"),
        )?,
        joules: package("wattlet_node_energy_joules_total"),
        grams: package("wattlet_node_emissions_grams_total"),
        intensity: *value,
        source: labels["source"].clone(),
    })
}

/// Scrapes every 20 ms until `stop`, keeping each new snapshot.
fn record(addr: String, stop: Arc<AtomicBool>) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(s) = http_get(&addr, "/metrics", None)
            .ok()
            .and_then(|(_, b)| seen(&b))
            && out.last().is_none_or(|l| l.at != s.at)
        {
            out.push(s);
        }
        thread::sleep(Duration::from_millis(20));
    }
    out
}

/// Replaces `path` by renaming a new file into place, as the flag's help asks.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("new");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Σ energy_i × intensity_i × PUE over the recorded intervals (each snapshot's intensity is the
/// one its interval's energy was weighed with), next to the agent's grams over the same span.
/// An interval the recorder missed is fine while the intensity stayed the same across it;
/// across a step it would be ambiguous, and is refused.
fn integrate(seen: &[Seen]) -> Result<(f64, f64)> {
    let mut expected = 0.0;
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let missed = b.at - a.at > 1.5 * INTERVAL.as_secs_f64();
        ensure!(
            !(missed && a.intensity != b.intensity),
            "the recorder missed the interval of the step ({a:?} → {b:?}): the machine is \
             overloaded; rerun"
        );
        expected += (b.joules - a.joules) * b.intensity * PUE / 3.6e6;
    }
    let (first, last) = (&seen[0], &seen[seen.len() - 1]);
    Ok((last.grams - first.grams, expected))
}

/// The heart of issue 10's "Done means": emissions integrated per interval at the intensity in
/// force match Σ E_i × I_i × PUE to 0.1%; the product of averages is off by more than 1%.
#[test]
fn carbon_emissions_follow_an_intensity_that_steps() -> Result<()> {
    require_root();
    // Power follows the test's workload alone (10 W + 150 W × its share of the CPUs), so that
    // the burning half and the idle half differ whatever else the machine runs.
    let cg = TestCgroup::new("carbon")?;
    let sim = RaplSim::start_for_cgroup(
        SimConfig {
            law: PowerLaw {
                idle_watts: 10.0,
                busy_watts: 150.0,
            },
            ..SimConfig::default()
        },
        &cg.path,
    )?;
    let dir = std::env::temp_dir().join(format!("wattlet-carbon-e2e-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let file = dir.join("intensity");
    write_atomic(&file, &format!("{LOW}\n"))?;
    let port = free_port()?;
    let _agent = start_agent(
        port,
        &[
            os("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            os("--power-source"),
            os("powercap"),
            os("--interval"),
            os("500ms"),
            os("--kubernetes"),
            os("off"),
            os("--carbon.intensity-file"),
            file.as_os_str(),
            os("--carbon.pue"),
            os(&PUE.to_string()),
        ],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let prom = Prometheus::start(&[&addr])?;
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = {
        let (addr, stop) = (addr.clone(), stop.clone());
        thread::spawn(move || record(addr, stop))
    };
    let started = Instant::now();

    // Both CPUs busy at the low intensity, then idle at the high one.
    thread::sleep(Duration::from_secs(1));
    let burn: Vec<_> = (0..2)
        .map(|_| cg.spawn(workload().args(["spin", "6"])))
        .collect::<Result<_>>()?;
    wait_all(burn)?;
    write_atomic(&file, &format!("{HIGH}\n"))?;
    thread::sleep(Duration::from_secs(6));
    bad_values_are_counted_never_used(&addr, &file)?;
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let seen = recorder.join().expect("the recorder");
    let range = started.elapsed().as_secs();

    check_intensities(&seen)?;
    emissions_are_the_integral(&seen)?;
    naive_product_is_wrong(&prom, range)?;
    let (_, body) = http_get(&addr, "/metrics", None)?;
    ensure!(
        sample(&body, &format!("wattlet_carbon_pue{{{NODE}}}")) == Some(PUE),
        "wattlet_carbon_pue"
    );
    drop(cg);
    let _ = fs::remove_dir_all(dir);
    Ok(())
}

/// The agent's grams over the recorded span against Σ E_i × I_i × PUE, to 0.1%.
fn emissions_are_the_integral(seen: &[Seen]) -> Result<()> {
    let (agent, expected) = integrate(seen)?;
    let error = rel_diff(agent, expected);
    println!(
        "carbon — {} intervals, {LOW} → {HIGH} g/kWh, PUE {PUE}: agent {agent:.6} g, \
         Σ E_i × I_i × PUE {expected:.6} g ({:.6}% apart)",
        seen.len() - 1,
        error * 100.0
    );
    ensure!(
        error < 1e-3,
        "emissions {agent} g vs Σ E_i × I_i × PUE {expected} g"
    );
    Ok(())
}

/// Every snapshot's intensity is one of the file's good values, from the file.
fn check_intensities(seen: &[Seen]) -> Result<()> {
    ensure!(seen.len() > 20, "only {} snapshots recorded", seen.len());
    for s in seen {
        ensure!(
            (s.intensity == LOW || s.intensity == HIGH) && s.source == "file",
            "exported intensity {} from {} (only {LOW} or {HIGH} from the file)",
            s.intensity,
            s.source
        );
    }
    let steps = seen
        .windows(2)
        .filter(|w| w[0].intensity != w[1].intensity)
        .count();
    ensure!(steps == 1, "{steps} steps of intensity, not one");
    Ok(())
}

/// The mean intensity over the range times the energy's increase, as PromQL a user might
/// write, against the agent's integrated counter over the same range.
fn naive_product_is_wrong(prom: &Prometheus, range_s: u64) -> Result<()> {
    // The last scrapes in, so that both expressions see the same samples.
    thread::sleep(Duration::from_secs(2));
    let r = format!("{}s", range_s + 2);
    let integrated =
        format!("sum(increase(wattlet_node_emissions_grams_total{{zone=\"package\"}}[{r}]))");
    let naive = format!(
        "sum(increase(wattlet_node_energy_joules_total{{zone=\"package\"}}[{r}])) \
         * scalar(avg_over_time(wattlet_grid_carbon_intensity_grams_per_kwh[{r}])) * {PUE} / 3.6e6"
    );
    let integrated = prom
        .query(&integrated)?
        .context("no integrated emissions")?;
    let naive = prom.query(&naive)?.context("no naive product")?;
    let off = rel_diff(naive, integrated);
    println!(
        "carbon — over {r}: increase(emissions) {integrated:.6} g; \
         avg_over_time(intensity) × increase(energy) × PUE {naive:.6} g ({:.1}% off)",
        off * 100.0
    );
    ensure!(
        off > 0.01,
        "the product of averages should be clearly off: {naive} vs {integrated}"
    );
    Ok(())
}

/// Garbage, a negative value and one above 2000 g/kWh: each counted under its reason in
/// wattlet_carbon_intensity_errors_total, none exported (the last good value stays in force).
fn bad_values_are_counted_never_used(addr: &str, file: &Path) -> Result<()> {
    for (text, reason) in [
        ("<html>502</html>", "not_json"),
        ("-5", "negative"),
        ("2500", "too_high"),
    ] {
        write_atomic(file, text)?;
        let series_name = format!(
            "wattlet_carbon_intensity_errors_total{{{NODE},source=\"file\",reason=\"{reason}\"}}"
        );
        let body = wait_for(
            &format!("{reason} to be counted"),
            Duration::from_secs(10),
            || {
                let (_, body) = http_get(addr, "/metrics", None).ok()?;
                (sample(&body, &series_name)? >= 1.0).then_some(body)
            },
        )?;
        let intensity = series(&body, "wattlet_grid_carbon_intensity_grams_per_kwh");
        ensure!(
            intensity.len() == 1 && intensity[0].1 == HIGH,
            "after {text:?}: {intensity:?}"
        );
        println!("carbon — {text:?} in the file: counted as {reason}, {HIGH} g/kWh still in force");
    }
    Ok(())
}

/// Carbon out of the box: no carbon flag, the world average with source="default", and
/// emissions under it.
#[test]
fn carbon_by_default_with_source_default() -> Result<()> {
    require_root();
    let sim = RaplSim::start(SimConfig::default())?;
    let port = free_port()?;
    let _agent = start_agent(
        port,
        &[
            os("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            os("--power-source"),
            os("powercap"),
            os("--kubernetes"),
            os("off"),
        ],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let body = wait_for("emissions", Duration::from_secs(10), || {
        let (_, body) = http_get(&addr, "/metrics", None).ok()?;
        let grams: f64 = series(&body, "wattlet_node_emissions_grams_total")
            .iter()
            .map(|(_, v)| v)
            .sum();
        (grams > 0.0).then_some(body)
    })?;
    let intensity = format!(
        "wattlet_grid_carbon_intensity_grams_per_kwh{{{NODE},source=\"default\",zone=\"\"}}"
    );
    ensure!(
        sample(&body, &intensity) == Some(WORLD_AVERAGE),
        "{intensity} should be the world average {WORLD_AVERAGE}"
    );
    for metric in [
        "wattlet_node_emissions_grams_total",
        "wattlet_cgroup_emissions_grams_total",
    ] {
        let s = series(&body, metric);
        ensure!(
            !s.is_empty() && s.iter().all(|(l, _)| l["source"] == "default"),
            "{metric}: {s:?}"
        );
    }
    if body.contains("embodied") {
        bail!("embodied emissions without --carbon.embodied-kg");
    }
    println!("carbon — default run: {WORLD_AVERAGE} g/kWh with source=\"default\"");
    Ok(())
}

/// `wattlet check` says which intensity source is in use and how to set a better one.
#[test]
fn carbon_check_names_the_source_and_a_better_one() -> Result<()> {
    require_root();
    let check = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(integration_tests::agent_binary()?)
            .arg("check")
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains("] carbon "))
            .map(str::to_owned)
            .with_context(|| format!("no carbon line in\n{text}"))
    };
    let default = check(&[])?;
    println!("carbon — check: {default}");
    ensure!(
        default.contains("[warn]")
            && default.contains("source=default")
            && default.contains("--carbon.intensity-url"),
        "{default}"
    );
    let zone = check(&["--carbon.zone", "eu-west-1", "--carbon.pue", "1.2"])?;
    let factor = node_agent::carbon::lookup(Some("eu-west-1")).context("eu-west-1")?;
    let table = format!("table: {} g/kWh for eu-west-1", factor.grams_per_kwh);
    println!("carbon — check: {zone}");
    ensure!(
        zone.contains("[ok  ]") && zone.contains(&table) && zone.contains("PUE 1.2"),
        "{zone}"
    );
    Ok(())
}
