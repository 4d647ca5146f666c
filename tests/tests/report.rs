//! `wattlet report` end to end: a real Prometheus scrapes the agent while two pods in two
//! namespaces (named by a stand-in API server) run a 3:1 CPU load on a simulated RAPL tree; the
//! report's figures per namespace must be the agent's counters, in every format, and the HTML
//! file must render in a real browser (a screenshot is left in
//! `target/test-artifacts/report.png`). Its errors must name the fix.

use std::{
    ffi::OsStr,
    process::{Command, Output},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use axum::{
    Router,
    body::{Body, Bytes},
    response::{IntoResponse, Response},
    routing::get,
};
use integration_tests::{
    Prometheus, Running, TestCgroup, agent_binary, browser, free_port, http_get, kube_api,
    pod_container,
    rapl_sim::{RaplSim, SimConfig},
    rel_diff, require_root, start_agent_with_env, wait_all, wait_for,
};
use serde_json::{Value, json};

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

const ID_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const ID_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const UID_A: &str = "11111111-2222-3333-4444-555555555555";
const UID_B: &str = "66666666-7777-8888-9999-000000000000";
const ZONES: &str = "zone=~\"package|dram\"";

fn pod(uid: &str, name: &str, namespace: &str, id: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"uid": uid, "name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {"nodeName": "e2e-node", "containers": [{"name": "app"}]},
        "status": {"containerStatuses": [{
            "name": "app", "containerID": format!("containerd://{id}"), "image": "i",
            "imageID": "i", "ready": true, "restartCount": 0
        }]}
    })
}

/// The API server's pods: listed once; a watch stays open and says nothing.
async fn pods(query: axum::extract::RawQuery) -> Response {
    if query
        .0
        .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"))
    {
        let quiet = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(quiet))
            .unwrap();
    }
    let list = json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": [pod(UID_A, "batch-a", "team-a", ID_A), pod(UID_B, "web-b", "team-b", ID_B)],
    });
    ([("content-type", "application/json")], list.to_string()).into_response()
}

/// Serves the stand-in API server on the runtime; a kubeconfig pointing at it.
fn api_server(rt: &tokio::runtime::Runtime) -> Result<std::path::PathBuf> {
    let port = free_port()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))?;
    rt.spawn(
        async move { axum::serve(listener, Router::new().route("/api/v1/pods", get(pods))).await },
    );
    kube_api::kubeconfig("report-kube", port)
}

/// `wattlet report` with `args`: its output, whatever its exit status.
fn report(args: &[&str]) -> Result<Output> {
    Command::new(agent_binary()?)
        .arg("report")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .context("running wattlet report")
}

/// `wattlet report` that must succeed: its standard output.
fn report_ok(args: &[&str]) -> Result<String> {
    let out = report(args)?;
    ensure!(
        out.status.success(),
        "wattlet report {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn the_report_adds_up_what_the_agents_counted() -> Result<()> {
    require_root();
    let rt = tokio::runtime::Runtime::new()?;
    let kubeconfig = api_server(&rt)?;
    let sim = RaplSim::start(SimConfig {
        max_energy_range_uj: 1_000_000_000_000,
        ..SimConfig::default()
    })?;
    let idle = format!(
        "package={},dram={}",
        sim.config().law.idle_watts,
        2.0 * sim.config().dram_watts_per_socket
    );
    let port = free_port()?;
    let _agent = start_agent_with_env(
        port,
        &[
            OsStr::new("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            OsStr::new("--power-source"),
            OsStr::new("powercap"),
            OsStr::new("--interval"),
            OsStr::new("500ms"),
            // The law's idle power: active energy (what pods get) is the busy part from the
            // first interval, whatever else loads the machine.
            OsStr::new("--power.idle-watts"),
            OsStr::new(&idle),
            OsStr::new("--kubernetes"),
            OsStr::new("on"),
        ],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let prom = Prometheus::start(&[&addr])?;
    // The pods are named before their cgroups exist: one series per pod from the start.
    wait_for(
        "the agent to know both pods",
        Duration::from_secs(30),
        || {
            let (_, body) = http_get(&addr, "/metrics", None).ok()?;
            let pods = integration_tests::sample(&body, "wattlet_kubernetes_pods{")?;
            (pods == 2.0).then_some(())
        },
    )?;

    let base = TestCgroup::new("report")?;
    let a = pod_container(&base, "besteffort", UID_A, ID_A)?;
    let b = pod_container(&base, "burstable", UID_B, ID_B)?;
    // A sleeper in each first, so that each pod's series starts near 0 J: increase() then has
    // nothing to extrapolate at the start.
    let _sleepers = [
        Running(a.spawn(workload().args(["sleep", "100000", "20000"]))?),
        Running(b.spawn(workload().args(["sleep", "100000", "20000"]))?),
    ];
    let namespaces =
        "count(wattlet_pod_energy_joules_total{zone=\"package\",namespace=~\"team-a|team-b\"})";
    wait_for(
        "Prometheus to have both namespaces",
        Duration::from_secs(30),
        || prom.query(namespaces).ok().flatten().filter(|n| *n == 2.0),
    )?;
    thread::sleep(Duration::from_secs(2));
    let mut load = Vec::new();
    for _ in 0..3 {
        load.push(a.spawn(workload().args(["burn", "2"]))?);
    }
    load.push(b.spawn(workload().args(["burn", "2"]))?);
    wait_all(load)?;
    thread::sleep(Duration::from_secs(3));

    // End the period on Prometheus's last scrape, to the millisecond: nothing to extrapolate at
    // its end either, so the report must be the counters themselves.
    let to = prom
        .query("max(timestamp(wattlet_node_energy_joules_total))")?
        .context("no scrape yet")?;
    let to = format!("{to:.3}");
    let truth = |expr: &str| -> Result<Vec<(String, f64)>> {
        Ok(prom
            .query_series_at(expr, Some(&to))?
            .into_iter()
            .map(|(l, v)| (l.get("namespace").cloned().unwrap_or_default(), v))
            .filter(|(ns, _)| ns.starts_with("team-"))
            .collect())
    };
    let energy = truth(&format!(
        "sum by (namespace) (wattlet_pod_energy_joules_total{{{ZONES}}})"
    ))?;
    let cpu = truth("sum by (namespace) (wattlet_container_cpu_seconds_total)")?;
    let emissions = truth(&format!(
        "sum by (namespace) (wattlet_pod_emissions_grams_total{{{ZONES}}})"
    ))?;
    ensure!(energy.len() == 2, "counters per namespace: {energy:?}");

    let url = format!("http://{}", prom.addr);
    let period = ["--prometheus", &url, "--since", "5m", "--to", &to];
    let doc: Value =
        serde_json::from_str(&report_ok(&[&period[..], &["--format", "json"]].concat())?)?;
    check_json(&doc, &energy, &cpu, &emissions)?;
    check_table(&report_ok(&period)?, &energy, !emissions.is_empty())?;
    check_csv(
        &report_ok(&[&period[..], &["--format", "csv"]].concat())?,
        &energy,
    )?;
    check_html(&period, &doc)?;
    check_errors(&url)?;
    drop((a, b, base));
    let _ = std::fs::remove_file(kubeconfig);
    Ok(())
}

fn group<'a>(doc: &'a Value, name: &str) -> Result<&'a Value> {
    doc["period"]["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == name))
        .with_context(|| format!("no group {name} in {}", doc["period"]))
}

fn check_json(
    doc: &Value,
    energy: &[(String, f64)],
    cpu: &[(String, f64)],
    emissions: &[(String, f64)],
) -> Result<()> {
    for (ns, joules) in energy {
        let g = group(doc, ns)?;
        let kwh = g["energy_kwh"].as_f64().context("energy_kwh")?;
        ensure!(
            rel_diff(kwh * 3.6e6, *joules) < 0.01,
            "{ns}: the report says {} J, the counters {joules} J",
            kwh * 3.6e6
        );
        let (_, cpu_s) = cpu.iter().find(|(n, _)| n == ns).context("cpu")?;
        let hours = g["cpu_hours"].as_f64().context("cpu_hours")?;
        ensure!(
            rel_diff(hours * 3600.0, *cpu_s) < 0.01,
            "{ns}: CPU {hours} h against {cpu_s} s"
        );
        match emissions.iter().find(|(n, _)| n == ns) {
            Some((_, grams)) => {
                let o = g["operational_gco2e"]
                    .as_f64()
                    .context("operational_gco2e")?;
                ensure!(rel_diff(o, *grams) < 0.01, "{ns}: {o} g against {grams} g");
            }
            // No carbon series: n/a, not 0.
            None => ensure!(g["operational_gco2e"].is_null(), "{ns}: {g}"),
        }
    }
    let kwh = |ns| group(doc, ns).and_then(|g| g["energy_kwh"].as_f64().context("kwh"));
    let ratio = kwh("team-a")? / kwh("team-b")?;
    println!(
        "report — team-a {:.3} J, team-b {:.3} J (ratio {ratio:.2}); counters {energy:?}",
        kwh("team-a")? * 3.6e6,
        kwh("team-b")? * 3.6e6
    );
    ensure!(rel_diff(ratio, 3.0) < 0.1, "3:1 load, energy ratio {ratio}");
    ensure!(
        doc["sci"]["power"]["measured_nodes"] == 1,
        "{}",
        doc["sci"]["power"]
    );
    ensure!(
        doc["days"].as_array().is_some_and(|d| !d.is_empty()),
        "no days"
    );
    Ok(())
}

/// namespace | energy (kWh) | avg power (W) | CPU-hours | operational | embodied
fn check_table(table: &str, energy: &[(String, f64)], carbon: bool) -> Result<()> {
    for (ns, joules) in energy {
        let line = table
            .lines()
            .find(|l| l.starts_with(ns.as_str()))
            .with_context(|| format!("no row for {ns} in\n{table}"))?;
        let cells: Vec<&str> = line.split_whitespace().collect();
        let kwh: f64 = cells[1].replace(',', "").parse()?;
        ensure!(rel_diff(kwh * 3.6e6, *joules) < 0.01, "table: {line}");
        ensure!(carbon || cells[4] == "n/a", "no carbon series, yet: {line}");
    }
    ensure!(table.contains("measured on 1 node: powercap"), "{table}");
    Ok(())
}

fn check_csv(csv: &str, energy: &[(String, f64)]) -> Result<()> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let column = |name| header.iter().position(|h| *h == name).context(name);
    let (day, grp, kwh) = (column("day")?, column("group")?, column("energy_kwh")?);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    ensure!(
        rows.iter().all(|r| r.len() == header.len()),
        "ragged CSV:\n{csv}"
    );
    for (ns, joules) in energy {
        let row = rows
            .iter()
            .find(|r| r[day] == "period" && r[grp] == ns)
            .with_context(|| format!("no period row for {ns}:\n{csv}"))?;
        let v: f64 = row[kwh].parse()?;
        ensure!(rel_diff(v * 3.6e6, *joules) < 0.01, "csv: {row:?}");
    }
    Ok(())
}

/// The HTML file in a real browser: the numbers a person reads are the JSON's, rounded.
fn check_html(period: &[&str], doc: &Value) -> Result<()> {
    let dir = browser::artifacts_dir()?;
    let file = dir.join("report.html");
    let path = file.to_str().context("path")?;
    report_ok(&[period, &["--format", "html", "--output", path]].concat())?;
    let url = format!("file://{}", file.display());
    let dom = browser::dump_dom(&url)?;
    let rows = browser::table_rows(&dom, "groups");
    for ns in ["team-a", "team-b"] {
        let row = rows
            .iter()
            .find(|r| r.cells.first().is_some_and(|c| c == ns))
            .with_context(|| format!("no {ns} row in the rendered report: {rows:?}"))?;
        let (shown, half) = browser::shown_number(&row.cells[1]).context("kWh cell")?;
        let want = group(doc, ns)?["energy_kwh"].as_f64().unwrap_or_default();
        ensure!(
            (shown - want).abs() <= half * 1.001,
            "{ns}: the page shows {} kWh, the report {want}",
            row.cells[1]
        );
    }
    ensure!(dom.matches("<svg").count() >= 2, "the charts are missing");
    ensure!(!dom.contains("<script"), "the report has a script");
    let shot = dir.join("report.png");
    browser::screenshot(&url, &shot, 1100, 1800)?;
    println!(
        "report — rendered in Chromium; screenshot saved to {}",
        shot.display()
    );
    Ok(())
}

fn stderr_of(args: &[&str]) -> Result<String> {
    let out = report(args)?;
    if out.status.success() {
        bail!("wattlet report {args:?} should have failed");
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The errors a person meets first name what to do.
fn check_errors(url: &str) -> Result<()> {
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let e = stderr_of(&["--prometheus", &closed, "--since", "5m"])?;
    ensure!(
        e.contains(&format!("cannot reach Prometheus at {closed}")) && e.contains("--prometheus"),
        "{e}"
    );
    let e = stderr_of(&[
        "--prometheus",
        url,
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-02",
    ])?;
    ensure!(
        e.contains("no Wattlet series between 2020-01-01T00:00:00Z"),
        "{e}"
    );
    let e = stderr_of(&["--prometheus", "prometheus:9090"])?;
    ensure!(e.contains("not an http:// or https:// URL"), "{e}");
    println!("report — errors name the fix: unreachable, no series, not a URL");
    Ok(())
}

type Asked = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A stand-in Prometheus that evaluates every recording rule to 2 (kWh or grams) and every
/// other query to 1, and keeps what it was asked.
async fn fake_query(
    axum::extract::State(asked): axum::extract::State<Asked>,
    axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (expr, at) = (
        get("query").unwrap_or_default(),
        get("time").unwrap_or_default(),
    );
    asked.lock().unwrap().push((expr.clone(), at));
    let value = if expr.contains("wattlet_energy_kwh:increase1d") {
        2.0 * 3.6e6
    } else if expr.contains(":increase1d") {
        2.0
    } else {
        1.0
    };
    let metric = if expr.starts_with("sum by (namespace)") {
        json!({"namespace": "team-a"})
    } else {
        json!({})
    };
    let body = json!({"status": "success", "data": {"resultType": "vector",
        "result": [{"metric": metric, "value": [0, value.to_string()]}]}});
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn fake_rules() -> Response {
    let rules: Vec<Value> = [
        "namespace:wattlet_energy_kwh:increase1d",
        "namespace:wattlet_emissions_grams:increase1d",
        "namespace:wattlet_embodied_emissions_grams:increase1d",
    ]
    .iter()
    .map(|name| json!({"name": name, "type": "recording", "query": "…"}))
    .collect();
    let body = json!({"status": "success", "data": {"groups": [
        {"name": "wattlet.daily", "interval": 300, "rules": rules}
    ]}});
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// Whole UTC days come from the daily recording rules where Prometheus has them, the partial
/// last day and the period from raw counters through increase().
#[test]
fn the_report_reads_whole_days_from_the_recording_rules() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let asked = Asked::default();
    let port = free_port()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))?;
    let app = Router::new()
        .route("/api/v1/query", get(fake_query))
        .route("/api/v1/rules", get(fake_rules))
        .with_state(asked.clone());
    rt.spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://127.0.0.1:{port}");
    let out = report_ok(&[
        "--prometheus",
        &url,
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03T12:00:00Z",
        "--format",
        "json",
    ])?;
    let doc: Value = serde_json::from_str(&out)?;
    let days = doc["days"].as_array().context("days")?;
    let sources: Vec<_> = days
        .iter()
        .map(|d| d["source"].as_str().unwrap_or(""))
        .collect();
    ensure!(sources == ["rules", "rules", "raw"], "{sources:?}");
    let kwh: Vec<_> = days
        .iter()
        .map(|d| d["groups"][0]["energy_kwh"].clone())
        .collect();
    ensure!(kwh[0] == 2.0 && kwh[1] == 2.0, "the rule's kWh: {kwh:?}");
    ensure!(
        days[0]["groups"][0]["operational_gco2e"] == 2.0,
        "{}",
        days[0]
    );
    // The rule of a day is read at the day's end; the partial day's counters at --to.
    let asked = asked.lock().unwrap().clone();
    let at = |rule: &str| -> Vec<String> {
        asked
            .iter()
            .filter(|(q, _)| q.contains(rule))
            .map(|(_, t)| t.clone())
            .collect()
    };
    ensure!(
        at("namespace:wattlet_energy_kwh:increase1d") == ["1793577600.000", "1793664000.000"],
        "{asked:?}"
    );
    ensure!(
        asked
            .iter()
            .any(|(q, t)| q.contains("wattlet_pod_energy_joules_total")
                && q.contains("[43200s]")
                && t == "1793707200.000"),
        "no raw query for the last half day: {asked:?}"
    );
    // CPU has no rule: raw on every day.
    ensure!(
        at("wattlet_container_cpu_seconds_total").len() == 4,
        "{asked:?}"
    );
    println!("report — whole days from the recording rules, the rest from raw counters");
    Ok(())
}
