//! The page at `/`, in a real browser: the agent reads a simulated RAPL tree while two
//! containers laid out as Kubernetes lays them out run, one busy and one quiet; headless
//! Chromium loads the page, and what a person would see must hold — the busy container first,
//! a chart with points, the numbers those of `/api/v1/snapshot` within their rounding. A
//! screenshot is left in `target/test-artifacts/page.png`.

use std::{
    ffi::OsStr,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use integration_tests::{
    TestCgroup,
    browser::{self, Row},
    free_port, get_json, pod_container,
    rapl_sim::{RaplSim, SimConfig},
    require_root, start_agent, wait_for,
};
use serde_json::Value;

const BUSY_ID: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const QUIET_ID: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const BUSY_POD: &str = "11111111-2222-3333-4444-555555555555";
const QUIET_POD: &str = "66666666-7777-8888-9999-000000000000";

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

#[test]
fn the_page_shows_the_busy_container_first_and_the_snapshots_numbers() -> Result<()> {
    require_root();
    let sim = RaplSim::start(SimConfig {
        // No wrap within the 2 s interval, however busy the machine.
        max_energy_range_uj: 1_000_000_000_000,
        ..SimConfig::default()
    })?;
    let law = sim.config().law;
    let idle = format!(
        "package={},dram={}",
        law.idle_watts,
        2.0 * sim.config().dram_watts_per_socket
    );
    let port = free_port()?;
    let _agent = start_agent(
        port,
        &[
            OsStr::new("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            OsStr::new("--power-source"),
            OsStr::new("powercap"),
            OsStr::new("--interval"),
            OsStr::new("2s"),
            // The law's idle power, so that active power (what containers get) is the busy
            // part from the first interval, whatever else loads the machine.
            OsStr::new("--power.idle-watts"),
            OsStr::new(&idle),
        ],
    )?;
    let addr = format!("127.0.0.1:{port}");

    let base = TestCgroup::new("page")?;
    let busy = pod_container(&base, "besteffort", BUSY_POD, BUSY_ID)?;
    let quiet = pod_container(&base, "burstable", QUIET_POD, QUIET_ID)?;
    let _load = [
        busy.spawn(workload().args(["spin", "60"]))?,
        quiet.spawn(workload().args(["sleep", "6000", "10000"]))?,
    ]
    .map(integration_tests::Running);

    // Both containers with a CPU share, and a few points of history to draw.
    wait_for(
        "both containers and 4 points",
        Duration::from_secs(40),
        || {
            let s = get_json(&addr, "/api/v1/snapshot").ok()?;
            let h = get_json(&addr, "/api/v1/history").ok()?;
            let shared = |id| container(&s, id).is_some_and(|c| c["cpu_share"].is_number());
            // Points with power: the first snapshot has none (power needs two readings).
            let points = h["points"]
                .as_array()?
                .iter()
                .filter(|p| p["active_watts"].is_number())
                .count();
            (shared(BUSY_ID) && shared(QUIET_ID) && points >= 4).then_some(())
        },
    )?;

    let url = format!("http://{addr}/");
    let (dom, s) = page_and_its_snapshot(&addr, &url)?;
    let watts = |id| container(&s, id).map_or(Value::Null, |c| c["watts"].clone());
    println!(
        "page — node {} W, busy container {} W, quiet {} W",
        s["node"]["watts"],
        watts(BUSY_ID),
        watts(QUIET_ID)
    );
    check_header_and_cards(&dom, &s)?;
    check_chart(&dom)?;
    check_containers(&dom, &s)?;

    let shot = browser::artifacts_dir()?.join("page.png");
    browser::screenshot(&url, &shot, 1280, 1500)?;
    println!("page — screenshot saved to {}", shot.display());
    drop((busy, quiet, base));
    Ok(())
}

fn container<'a>(s: &'a Value, id: &str) -> Option<&'a Value> {
    s["containers"].as_array()?.iter().find(|c| c["id"] == id)
}

/// The page's DOM, and the snapshot it shows: every snapshot published while the browser
/// loads the page is kept (polled far more often than the interval), and the one whose time
/// the page shows is the one to compare with.
fn page_and_its_snapshot(addr: &str, url: &str) -> Result<(String, Value)> {
    let stop = AtomicBool::new(false);
    let (dom, seen) = thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut seen: Vec<Value> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = get_json(addr, "/api/v1/snapshot")
                    && seen.last().is_none_or(|l| l["taken_at"] != s["taken_at"])
                {
                    seen.push(s);
                }
                thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let dom = browser::dump_dom(url);
        // One more poll after the load.
        thread::sleep(Duration::from_millis(150));
        stop.store(true, Ordering::Relaxed);
        (dom, poller.join().expect("the poller panicked"))
    });
    let dom = dom?;
    let shown: f64 = browser::attr(&dom, "updated", "data-taken-at")
        .context("the page shows no snapshot time")?
        .parse()?;
    let times: Vec<_> = seen.iter().map(|s| s["taken_at"].clone()).collect();
    let s = seen
        .into_iter()
        .find(|s| s["taken_at"].as_f64().is_some_and(|t| (t - shown).abs() < 1e-6))
        .with_context(|| {
            format!("the page shows the snapshot of {shown}, none of those published meanwhile: {times:?}")
        })?;
    Ok((dom, s))
}

/// `shown` is `expected` as the page rounds it ("—" for none).
fn matches(what: &str, shown: &str, expected: &Value) -> Result<()> {
    match (browser::shown_number(shown), expected.as_f64()) {
        (Some((value, half)), Some(want)) => ensure!(
            (value - want).abs() <= half * 1.001 + 1e-9,
            "{what}: the page shows {shown:?}, the snapshot says {want}"
        ),
        (None, None) => ensure!(shown == "—", "{what}: {shown:?} for none"),
        _ => bail!("{what}: the page shows {shown:?}, the snapshot says {expected}"),
    }
    Ok(())
}

fn check_header_and_cards(dom: &str, s: &Value) -> Result<()> {
    let text = |id| browser::text(dom, id).with_context(|| format!("no #{id} on the page"));
    ensure!(
        text("source")? == "measured · powercap",
        "the source badge says {:?}",
        text("source")?
    );
    ensure!(text("node-name")?.contains("e2e-node"));
    let node = &s["node"];
    matches("node power", &text("node-watts")?, &node["watts"])?;
    matches("idle power", &text("node-idle")?, &node["idle_watts"])?;
    matches("active power", &text("node-active")?, &node["active_watts"])?;
    matches("node energy", &text("node-energy")?, &node["joules"])?;
    matches("CPU busy", &text("node-busy")?, &node["cpu"]["busy_share"])?;
    matches("agent CPU", &text("agent-cpu")?, &s["agent"]["cpu_share"])?;
    matches(
        "agent energy",
        &text("agent-energy")?,
        &s["agent"]["joules"],
    )?;
    // With no carbon flags the agent uses the documented world average (source "default"):
    // the card shows it, as the JSON has it.
    let carbon = &s["carbon"];
    ensure!(
        browser::attr(dom, "carbon-card", "hidden").is_none(),
        "the carbon card is hidden though the snapshot has carbon: {carbon}"
    );
    let intensity = text("carbon-intensity")?;
    let expected = carbon["intensity_grams_per_kwh"]
        .as_f64()
        .context("carbon intensity in the JSON")?
        .round();
    ensure!(
        intensity.starts_with(&format!("{expected} gCO₂e/kWh")) && intensity.contains("default"),
        "carbon intensity shown as {intensity:?}, the JSON says {carbon}"
    );
    let rate = text("carbon-rate")?;
    let rate = rate.trim_end_matches("gCO₂e/h").trim();
    matches("grams per hour", rate, &carbon["grams_per_hour"])?;
    Ok(())
}

fn check_chart(dom: &str) -> Result<()> {
    let points = browser::attr(dom, "total-line", "points").context("the chart has no line")?;
    let n = points.split_whitespace().count();
    ensure!(n >= 4, "the chart's line has {n} points: {points}");
    Ok(())
}

fn check_containers(dom: &str, s: &Value) -> Result<()> {
    let rows = browser::table_rows(dom, "containers");
    let first = rows.first().context("the containers table is empty")?;
    ensure!(
        first.title.as_deref() == Some(BUSY_ID),
        "the first container is {:?}, not the busy one: {rows:?}",
        first.cells
    );
    let busy = container(s, BUSY_ID).context("busy container not in the snapshot")?;
    ensure!(first.cells[0] == busy["display_name"].as_str().unwrap_or_default());
    for row in rows.iter().filter(|r| r.title.is_some()) {
        check_row(row, s)?;
    }
    Ok(())
}

/// name | power | share of node power | CPU | energy since start
fn check_row(row: &Row, s: &Value) -> Result<()> {
    let id = row.title.as_deref().unwrap_or_default();
    let c = container(s, id).with_context(|| format!("row {id} not in the snapshot"))?;
    matches(&format!("{id} power"), &row.cells[1], &c["watts"])?;
    matches(&format!("{id} CPU"), &row.cells[3], &c["cpu_share"])?;
    matches(&format!("{id} energy"), &row.cells[4], &c["joules"])
}
