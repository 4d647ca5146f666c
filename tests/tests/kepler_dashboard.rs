//! Kepler's own Grafana dashboard (tests/data/kepler-dashboard.json, Kepler's
//! `compose/default/grafana/dashboards/latest/dashboard.json`), every panel and every variable,
//! against the real agent with `--metrics-compat kepler` and processes counted, scraped by a
//! real Prometheus. The node has what each of the dashboard's sections needs: a simulated
//! two-socket RAPL tree, pods laid out in cgroups as Kubernetes lays them out and named by a
//! stand-in API server, a VM laid out as libvirt lays it out with a busy process in it, and
//! processes. Variables are substituted as Grafana would (`All` as the variable's allValue, or
//! as a regex alternation of every value without one; a query_result variable through its
//! regex), and every data panel must return data whose legend labels are not empty.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use axum::{
    Router,
    body::Body,
    extract::Query,
    response::{IntoResponse, Response},
    routing::get,
};
use integration_tests::{
    Prometheus, Running, TestCgroup, dashboards::interpolate, free_port, kube_api,
    rapl_sim::RaplSim, require_root, start_agent_with_env, url_encode, wait_for,
};
use serde_json::{Value, json};

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

/// The pods on the node: (uid, name, namespace, container name, container id).
const PODS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "aaaaaaaa-1111-4111-8111-000000000001",
        "web-7d9f",
        "shop",
        "nginx",
        "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
    ),
    (
        "bbbbbbbb-2222-4222-8222-000000000002",
        "ledger-0",
        "billing",
        "postgres",
        "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
    ),
];
const VM: &str = "testvm";
/// `comm` of the workload binary (the kernel keeps 15 characters).
const COMM: &str = "wattlet-workloa";

#[test]
fn every_panel_of_keplers_dashboard_has_data() -> Result<()> {
    require_root();
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/kepler-dashboard.json"),
    )?)?;
    let sim = RaplSim::start(Default::default())?;
    let rt = tokio::runtime::Runtime::new()?;
    let kubeconfig = stand_in_api_server(&rt)?;
    let port = free_port()?;
    let _agent = start_agent_with_env(
        port,
        &[
            OsStr::new("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            OsStr::new("--power-source"),
            OsStr::new("powercap"),
            OsStr::new("--metrics-compat"),
            OsStr::new("kepler"),
            OsStr::new("--metrics.processes"),
            OsStr::new("20"),
            OsStr::new("--kubernetes"),
            OsStr::new("on"),
            OsStr::new("--interval"),
            OsStr::new("500ms"),
        ],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )?;
    let instance = format!("127.0.0.1:{port}");
    let prom = Prometheus::start(&[&instance])?;
    let start = unix_now();
    let (_base, _cgroups, _load) = the_node()?;

    let subjects = [
        "kepler_node_cpu_info",
        "kepler_node_cpu_watts",
        "kepler_container_cpu_watts{container_name=\"nginx\"}",
        "kepler_pod_cpu_watts{pod_name=\"ledger-0\",pod_namespace=\"billing\"}",
        "kepler_vm_cpu_watts{vm_name=\"testvm\"}",
        "kepler_process_cpu_watts{comm=\"wattlet-workloa\",type=\"vm\"}",
    ];
    for s in subjects {
        wait_for(s, Duration::from_secs(60), || {
            prom.query_all(s).ok().filter(|r| !r.is_empty())
        })?;
    }
    // A few more scrapes, so that range queries see several points.
    std::thread::sleep(Duration::from_secs(3));

    let vars = variables(&prom, &dashboard, start)?;
    // Under load (kernel threads compacting memory, say) the busy process can drop out of the
    // top 10 for a moment: the panels are queried again, for up to 30 s, until each subject
    // shows where it should.
    let mut tries = 0;
    let table = loop {
        let table = panels(&prom, &dashboard, &vars.values, start)?;
        match subjects_shown(&table) {
            Ok(()) => break table,
            Err(e) if tries < 10 => {
                tries += 1;
                println!("kepler dashboard — {e}; querying again in 3 s");
                std::thread::sleep(Duration::from_secs(3));
            }
            Err(e) => return Err(e),
        }
    };
    every_process_option(
        &prom,
        &dashboard,
        &vars.values,
        &vars.options["process"],
        start,
    )?;
    println!("kepler dashboard — panel → series:");
    for row in &table {
        println!(
            "  {:>4} {:<10} {:>4} series  {}",
            row.id, row.kind, row.series, row.title
        );
    }
    cpus_and_conservation(&prom)?;
    Ok(())
}

/// Each panel shows its subject: the busy process, both containers, the namespace, the VM, and
/// the CPU model.
fn subjects_shown(table: &[PanelRow]) -> Result<()> {
    for (id, label, want) in [
        (203, "model_name", None),
        (208, "comm", Some(COMM)),
        (214, "container_name", Some("nginx")),
        (214, "container_name", Some("postgres")),
        (218, "pod_namespace", Some("billing")),
        (222, "vm_name", Some(VM)),
    ] {
        let row = (table.iter().find(|r| r.id == id)).with_context(|| format!("no panel {id}"))?;
        let values = (row.values.get(label)).with_context(|| format!("panel {id}: no {label}"))?;
        match want {
            Some(v) => ensure!(
                values.contains(v),
                "panel {id}: no {label}={v} in {values:?}"
            ),
            None => ensure!(!values.is_empty(), "panel {id}: no {label}"),
        }
    }
    Ok(())
}

/// The CPU-info panel counts this machine's CPUs; and every joule of the workloads is in exactly
/// one process series (stopped series included, at their last value).
fn cpus_and_conservation(prom: &Prometheus) -> Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let cpus = (cpuinfo.lines())
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count();
    let cores = prom.query("count(kepler_node_cpu_info{job=\"wattlet\"})")?;
    ensure!(
        cores == Some(cpus as f64),
        "{cores:?} cores for {cpus} CPUs"
    );
    let q = |e: &str| -> Result<f64> { prom.query(e)?.with_context(|| format!("no {e}")) };
    let workloads = q(
        "sum(wattlet_container_energy_joules_total{zone=\"package\"}) \
        + sum(wattlet_cgroup_energy_joules_total{zone=\"package\"}) \
        + sum(wattlet_vm_energy_joules_total{zone=\"package\"}) \
        + sum(wattlet_expired_energy_joules_total{zone=\"package\"})",
    )?;
    let processes =
        q("sum(last_over_time(wattlet_process_energy_joules_total{zone=\"package\"}[10m]))")?;
    println!(
        "kepler dashboard — {cores:?} cores; package energy: processes {processes:.3} J, \
         workloads {workloads:.3} J ({:+.2e})",
        processes / workloads - 1.0
    );
    // A process whose labels changed while shown has two series: name them.
    let relabelled = prom.query_all(
        "last_over_time(wattlet_process_energy_joules_total{zone=\"package\"}[10m]) and on (pid) \
         (count by (pid) (last_over_time(wattlet_process_energy_joules_total{zone=\"package\"}[10m])) > 1)",
    )?;
    ensure!(
        (processes - workloads).abs() <= 1e-6 * workloads,
        "processes {processes} J vs workloads {workloads} J; relabelled: {relabelled:?}"
    );
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A Kubernetes API server that lists the node's pods, and watches that never say anything;
/// returns the kubeconfig pointing at it.
fn stand_in_api_server(rt: &tokio::runtime::Runtime) -> Result<std::path::PathBuf> {
    async fn pods(Query(q): Query<Vec<(String, String)>>) -> Response {
        if q.iter()
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        {
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::stream::pending::<
                    Result<axum::body::Bytes, std::io::Error>,
                >()))
                .unwrap();
        }
        let items: Vec<Value> = PODS
            .iter()
            .map(|(uid, name, namespace, container, id)| {
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"uid": uid, "name": name, "namespace": namespace,
                                 "resourceVersion": "1"},
                    "spec": {"nodeName": "e2e-node", "containers": [{"name": container}]},
                    "status": {"containerStatuses": [{
                        "name": container, "containerID": format!("containerd://{id}"),
                        "image": "i", "imageID": "i", "ready": true, "restartCount": 0
                    }]}
                })
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "PodList",
                          "metadata": {"resourceVersion": "1"}, "items": items});
        ([("content-type", "application/json")], list.to_string()).into_response()
    }
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(
        async move { axum::serve(listener, Router::new().route("/api/v1/pods", get(pods))).await },
    );
    kube_api::kubeconfig("kepler-kubeconfig", port)
}

/// The pods' containers (light load) and the VM (one busy process), in cgroups laid out as
/// Kubernetes and libvirt lay them out.
fn the_node() -> Result<(TestCgroup, Vec<TestCgroup>, Vec<Running>)> {
    let base = TestCgroup::new("kepler")?;
    let mut cgroups = Vec::new();
    let mut load = Vec::new();
    for (i, (uid, _, _, _, id)) in PODS.iter().enumerate() {
        let qos = ["besteffort", "burstable"][i];
        let cg = TestCgroup::create_at(base.path.join(format!(
            "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        )))?;
        load.push(Running(
            cg.spawn(workload().args(["sleep", "1000000", "2000"]))?,
        ));
        cgroups.push(cg);
    }
    let vm = TestCgroup::create_at(
        base.path
            .join(r"machine.slice/machine-qemu\x2d1\x2dtestvm.scope/libvirt/vcpu0"),
    )?;
    load.push(Running(vm.spawn(workload().args(["spin", "120"]))?));
    cgroups.push(vm);
    Ok((base, cgroups, load))
}

/// A variable's options: (value, text).
type Options = Vec<(String, String)>;

/// The dashboard's variables: what Grafana substitutes for each, and all their options.
struct Variables<'d> {
    values: BTreeMap<&'d str, String>,
    options: BTreeMap<&'d str, Options>,
}

/// Every query variable's options, resolved in dependency order, and the value Grafana
/// substitutes for each (its default: `All` where it has one, else the first option).
fn variables<'d>(prom: &Prometheus, d: &'d Value, start: f64) -> Result<Variables<'d>> {
    let list: Vec<&Value> = (d["templating"]["list"].as_array().context("no variables")?)
        .iter()
        .filter(|v| v["type"] == "query")
        .collect();
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    let mut all = BTreeMap::new();
    let mut pending = list.clone();
    println!("kepler dashboard — variables:");
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for v in pending {
            let query = v["definition"]
                .as_str()
                .context("a variable without a query")?;
            let Ok(query) = interpolate(query, &vars) else {
                rest.push(v);
                continue;
            };
            let name = v["name"].as_str().context("a variable without a name")?;
            let options = options(prom, &query, v["regex"].as_str().unwrap_or(""), start)?;
            println!("  ${name:<10} {} option(s): {options:?}", options.len());
            ensure!(
                !options.is_empty(),
                "variable ${name}: no options from {query}"
            );
            vars.insert(name, substitute(v, &options));
            all.insert(name, options);
        }
        ensure!(
            rest.len() < before,
            "variables that never resolve: {rest:?}"
        );
        pending = rest;
    }
    Ok(Variables {
        values: vars,
        options: all,
    })
}

/// A variable's options (value, text): `label_values(selector, label)` over the dashboard's
/// range, or `query_result(expr)` through the variable's regex (Kepler's process picker: text
/// from the `process` label, value from `pid`).
fn options(prom: &Prometheus, query: &str, regex: &str, start: f64) -> Result<Options> {
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        let (selector, label) = inner
            .rsplit_once(',')
            .context("label_values(series, label)")?;
        let path = format!(
            "/api/v1/label/{}/values?match[]={}&start={start}&end={}",
            label.trim(),
            url_encode(selector.trim()),
            unix_now()
        );
        let values = prom.api(&path)?;
        return Ok((values.as_array().context("label values")?.iter())
            .filter_map(|v| v.as_str())
            .map(|v| (v.to_owned(), v.to_owned()))
            .collect());
    }
    let expr = query
        .strip_prefix("query_result(")
        .and_then(|q| q.trim_end().strip_suffix(')'))
        .with_context(|| format!("{query}: neither label_values nor query_result"))?;
    ensure!(
        regex.contains("process=") && regex.contains("pid="),
        "a query_result regex this test does not know: {regex}"
    );
    Ok((prom.query_all(expr)?.iter())
        .filter_map(|r| {
            let m = &r["metric"];
            Some((
                m["pid"].as_str()?.to_owned(),
                m["process"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// What Grafana puts in place of `$name` for the variable's default selection.
fn substitute(v: &Value, options: &[(String, String)]) -> String {
    if v["includeAll"] != true {
        return options[0].0.clone();
    }
    match v["allValue"].as_str() {
        Some(all) => all.to_owned(),
        // Every value, regex-escaped, as an alternation (Grafana's Prometheus data source).
        None => {
            let escaped: Vec<String> = options.iter().map(|(v, _)| regex_escape(v)).collect();
            format!("({})", escaped.join("|"))
        }
    }
}

/// A regex metacharacter escaped inside a PromQL string (`\\.`), as Grafana escapes values.
fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\^$*+?.()|{}[]".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// One data panel's outcome.
struct PanelRow {
    id: u64,
    title: String,
    kind: String,
    series: usize,
    /// Every value of each legend label, over the series.
    values: BTreeMap<String, BTreeSet<String>>,
}

/// Runs every data panel's queries (instant for instant tables, over the range otherwise) and
/// checks each series' legend labels: `{{label}}` of the legend, or the `by (...)` labels of a
/// table.
fn panels(
    prom: &Prometheus,
    d: &Value,
    vars: &BTreeMap<&str, String>,
    start: f64,
) -> Result<Vec<PanelRow>> {
    let mut rows = Vec::new();
    for p in d["panels"].as_array().context("no panels")? {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            continue; // rows and the text panel
        }
        let title = p["title"].as_str().unwrap_or("").to_owned();
        let mut row = PanelRow {
            id: p["id"].as_u64().unwrap_or(0),
            title,
            kind: p["type"].as_str().unwrap_or("").to_owned(),
            series: 0,
            values: BTreeMap::new(),
        };
        for t in &targets {
            let expr = interpolate(t["expr"].as_str().context("a target without expr")?, vars)?;
            let instant = t["instant"] == true && t["range"] != true;
            let result = if instant {
                prom.query_all(&expr)?
            } else {
                range(prom, &expr, start)?
            };
            ensure!(
                !result.is_empty(),
                "panel {} {:?}: no data for {expr}",
                row.id,
                row.title
            );
            let labels = legend_labels(t["legendFormat"].as_str(), &expr);
            for r in &result {
                for l in &labels {
                    let v = r["metric"][l].as_str().unwrap_or("");
                    if v.is_empty() && !unnamed_elsewhere(prom, l)? {
                        bail!(
                            "panel {} {:?}: empty {l} in {}",
                            row.id,
                            row.title,
                            r["metric"]
                        );
                    }
                    row.values
                        .entry(l.clone())
                        .or_default()
                        .insert(v.to_owned());
                }
            }
            row.series += result.len();
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The process panel (by pid) has data for every process the picker offers, not only the
/// first.
fn every_process_option(
    prom: &Prometheus,
    d: &Value,
    vars: &BTreeMap<&str, String>,
    pids: &Options,
    start: f64,
) -> Result<()> {
    let panel = (d["panels"].as_array().context("no panels")?.iter())
        .find(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("${process}"))
        })
        .context("no panel by process")?;
    let expr = panel["targets"][0]["expr"].as_str().unwrap_or_default();
    for (pid, text) in pids {
        let mut vars = vars.clone();
        vars.insert("process", pid.clone());
        let series = range(prom, &interpolate(expr, &vars)?, start)?;
        ensure!(!series.is_empty(), "process {text:?}: no data");
        ensure!(
            series
                .iter()
                .all(|s| s["metric"]["comm"].as_str().is_some_and(|c| !c.is_empty())),
            "process {text:?}: a series without comm"
        );
    }
    println!(
        "kepler dashboard — the process panel has data for all {} processes offered",
        pids.len()
    );
    Ok(())
}

fn range(prom: &Prometheus, expr: &str, start: f64) -> Result<Vec<Value>> {
    let data = prom.api(&format!(
        "/api/v1/query_range?query={}&start={start}&end={}&step=1",
        url_encode(expr),
        unix_now()
    ))?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// The labels a panel shows: `{{label}}` in the legend, else the `by (...)` of the query.
fn legend_labels(legend: Option<&str>, expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut rest = legend.unwrap_or("");
    while let Some(i) = rest.find("{{") {
        let Some(end) = rest[i..].find("}}") else {
            break;
        };
        labels.push(rest[i + 2..i + end].trim().to_owned());
        rest = &rest[i + end + 2..];
    }
    if labels.is_empty()
        && let Some(i) = expr.find(" by (").or_else(|| expr.find("by("))
    {
        let inner = &expr[i..];
        let open = inner.find('(').unwrap_or(0);
        let close = inner.find(')').unwrap_or(inner.len());
        labels = (inner[open + 1..close].split(','))
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
    }
    labels
}

/// An empty pod or container name is fine where it belongs to a workload of this node that is
/// not the test's (another test's cgroups, whose pods the stand-in API server does not name):
/// Kepler shows those empty too.
fn unnamed_elsewhere(prom: &Prometheus, label: &str) -> Result<bool> {
    let (metric, id) = match label {
        "container_name" => ("kepler_container_cpu_watts", "container_id"),
        "pod_name" | "pod_namespace" => ("kepler_pod_cpu_watts", "pod_id"),
        _ => return Ok(false),
    };
    let ours: Vec<&str> = PODS
        .iter()
        .map(|p| if id == "pod_id" { p.0 } else { p.4 })
        .collect();
    let q = format!("{metric}{{{label}=\"\",{id}!~\"{}\"}}", ours.join("|"));
    Ok(!prom.query_all(&q)?.is_empty())
}
