//! GreenOps end to end: every PromQL expression deploy/ ships — both dashboards' panels and
//! variables, every recording rule and alert — runs against a real Prometheus that scrapes a real
//! agent (a simulated RAPL tree; two pods laid out in cgroups as Kubernetes lays them out, named
//! by a stand-in API server) and evaluates the rules file itself. Every expression must evaluate
//! without error, with the dashboards' variables substituted as Grafana and Perses would; the
//! main panels, the variables and the recording rules must return data.

use std::{collections::BTreeMap, ffi::OsStr, sync::Arc, thread, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::get,
};
use integration_tests::{
    Prometheus, TestCgroup,
    dashboards::{self, LabelVariable, Panel},
    free_port, kube_api,
    rapl_sim::{RaplSim, SimConfig},
    require_root, start_agent_with_env, url_encode, wait_all, wait_for,
};
use serde_json::{Value, json};

/// Panels that must return data from the agent as it is today.
const MUST_RETURN_DATA: &[&str] = &[
    "Node power by zone and mode (W)",
    "Measured vs modelled power (W)",
    "Power source",
    "Idle share of node energy",
    "Idle power estimate (W)",
    "Top namespaces by power (W)",
    "Top pods by power (W)",
    "Top containers by power (W)",
    "Node energy (kWh)",
    "Top namespaces by energy (kWh)",
    "Top pods by energy (kWh)",
    "Top containers by energy (kWh)",
    "CPU by workload (cores)",
    "Context switches by workload (/s)",
    "Read errors (/s)",
    "Power reading age (s)",
    "Pod metadata age (s)",
    "Agent CPU (cores)",
    "Agent power (W)",
];

/// The carbon series (`wattlet_*_emissions_grams_total`,
/// `wattlet_grid_carbon_intensity_grams_per_kwh`, `wattlet_carbon_*`) are on /metrics: the
/// panels and rules below must return data too (false: they must only evaluate).
const CARBON_METRICS: bool = true;

/// Panels over the carbon series.
const NEEDS_CARBON: &[&str] = &[
    "Node emissions (gCO2e)",
    "Top namespaces by carbon (gCO2e)",
    "Top pods by carbon (gCO2e)",
    "Top containers by carbon (gCO2e)",
    "Embodied emissions by namespace (gCO2e, Scope 3)",
    "Grid carbon intensity in use (gCO2e/kWh)",
    "Intensity source",
    "PUE",
];

/// Recording rules over the carbon series.
const RULES_NEEDING_CARBON: &[&str] = &[
    "node:wattlet_emissions_grams:increase1d",
    "namespace:wattlet_emissions_grams:increase1d",
    "pod:wattlet_emissions_grams:increase1d",
    "namespace:wattlet_embodied_emissions_grams:increase1d",
    "pod:wattlet_embodied_emissions_grams:increase1d",
];

/// Agent flags for the embodied series, which only exist with a server footprint configured.
const CARBON_FLAGS: &[&str] = &["--carbon.embodied-kg", "1000"];

/// Panels that may rightly be empty here: the agent's memory comes from the kubelet's cAdvisor
/// (not in this test); dropped readings and intensity errors may only exist once one happened.
const MAY_BE_EMPTY: &[&str] = &[
    "Agent memory (working set)",
    "Dropped power readings (/s)",
    "Intensity errors (/s)",
];

/// The pods of the stand-in API server: (namespace, name, uid, container, container id).
const PODS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "shop",
        "web-1",
        "0a0a0a0a-1111-4222-8333-444444444444",
        "app",
        "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
    ),
    (
        "batch",
        "report-1",
        "0b0b0b0b-5555-4666-8777-888888888888",
        "job",
        "d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2",
    ),
];

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

#[test]
fn greenops_rules_and_dashboards_run_against_a_real_agent() -> Result<()> {
    require_root();
    let grafana = dashboards::read_json("dashboards/grafana/wattlet.json")?;
    let perses = dashboards::read_json("dashboards/perses/wattlet.json")?;
    let panels = [
        ("grafana", dashboards::grafana_panels(&grafana)?),
        ("perses", dashboards::perses_panels(&perses)?),
    ];
    for (_, ps) in &panels {
        check_lists_cover(ps)?;
    }

    let rt = tokio::runtime::Runtime::new()?;
    let kubeconfig = start_api_server(&rt)?;
    let sim = RaplSim::start(SimConfig::default())?;
    let port = free_port()?;
    let mut args = vec![
        OsStr::new("--path.sysfs"),
        sim.sysfs_root().as_os_str(),
        OsStr::new("--power-source"),
        OsStr::new("powercap"),
        OsStr::new("--interval"),
        OsStr::new("500ms"),
        OsStr::new("--kubernetes"),
        OsStr::new("on"),
    ];
    if CARBON_METRICS {
        args.extend(CARBON_FLAGS.iter().map(OsStr::new));
    }
    let _agent = start_agent_with_env(port, &args, &[("KUBECONFIG", kubeconfig.as_os_str())])?;
    let rules_file = rules_for_the_test()?;
    let prom = Prometheus::start_with_rules(&[&format!("127.0.0.1:{port}")], &[&rules_file])?;

    // The pods' containers, each burning CPU for a while, then idle but still there.
    let base = TestCgroup::new("greenops")?;
    let mut containers = Vec::new();
    for (_, _, uid, _, id) in PODS {
        containers.push(TestCgroup::create_at(base.path.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        )))?);
    }
    let load = containers
        .iter()
        .map(|c| c.spawn(workload().args(["burn", "2"])))
        .collect::<Result<Vec<_>>>()?;
    wait_all(load)?;

    // Named pods scraped and every rule evaluated; a rule that fails stops the wait at once.
    wait_for(
        "Prometheus to have the named pods and every rule evaluated",
        Duration::from_secs(40),
        || {
            let named = prom
                .query_all("wattlet_pod_energy_joules_total{pod=\"web-1\",namespace=\"shop\"}")
                .ok()?;
            let rules = prom.api("/api/v1/rules").ok()?;
            match rules_evaluated(&rules) {
                Ok(all) => (all && !named.is_empty()).then_some(Ok(())),
                Err(e) => Some(Err(e)),
            }
        },
    )??;
    // A few more scrapes, so that rates over the rate interval have samples.
    thread::sleep(Duration::from_secs(3));

    check_rules(&prom, &rules_file)?;
    check_variables(&prom, &grafana, &perses)?;
    for selection in [Selection::All, Selection::One] {
        let vars = variables(selection);
        for (dashboard, ps) in &panels {
            check_panels(&prom, dashboard, ps, &vars)?;
        }
    }
    drop((containers, base));
    let _ = std::fs::remove_file(kubeconfig);
    let _ = std::fs::remove_file(rules_file);
    Ok(())
}

/// Every panel is in exactly one of the lists: a new panel must say what it is expected to show.
fn check_lists_cover(panels: &[Panel]) -> Result<()> {
    for p in panels {
        let lists = [MUST_RETURN_DATA, NEEDS_CARBON, MAY_BE_EMPTY]
            .iter()
            .filter(|l| l.contains(&p.title.as_str()))
            .count();
        ensure!(
            lists == 1,
            "panel {:?} must be in exactly one of MUST_RETURN_DATA, NEEDS_CARBON, MAY_BE_EMPTY",
            p.title
        );
        let carbon = p
            .exprs
            .iter()
            .any(|e| e.contains("emissions") || e.contains("carbon"));
        ensure!(
            !carbon || !MUST_RETURN_DATA.contains(&p.title.as_str()),
            "panel {:?} is over carbon series: list it in NEEDS_CARBON",
            p.title
        );
        ensure!(
            carbon || !NEEDS_CARBON.contains(&p.title.as_str()),
            "panel {:?} is in NEEDS_CARBON but over no carbon series",
            p.title
        );
    }
    Ok(())
}

/// The rules file as shipped, but with the daily group evaluated every second rather than every
/// 5 minutes (its first evaluation could otherwise come minutes after the test's end).
fn rules_for_the_test() -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(dashboards::deploy_dir().join("rules/wattlet.rules.yaml"))?;
    ensure!(
        text.matches("interval: 5m").count() == 1,
        "the daily group's interval moved: update rules_for_the_test"
    );
    let path = std::env::temp_dir().join(format!("wattlet-rules-{}.yaml", std::process::id()));
    std::fs::write(&path, text.replace("interval: 5m", "interval: 1s"))?;
    Ok(path)
}

/// Whether every rule of `/api/v1/rules`' answer has been evaluated; Err at the first rule
/// that failed.
fn rules_evaluated(rules: &Value) -> Result<bool> {
    let groups = rules["groups"].as_array().context("no rule groups")?;
    let mut all = !groups.is_empty();
    for g in groups {
        for r in g["rules"].as_array().context("no rules")? {
            match r["health"].as_str() {
                Some("ok") => {}
                Some("err") => bail!("rule {} fails: {}", r["name"], r["lastError"]),
                _ => all = false,
            }
        }
    }
    Ok(all)
}

/// Every rule evaluates; every recording rule not over carbon series records something, and
/// every alert's expression is valid PromQL that Prometheus evaluates.
fn check_rules(prom: &Prometheus, rules_file: &std::path::Path) -> Result<()> {
    let file: Value = serde_yaml::from_str(&std::fs::read_to_string(rules_file)?)?;
    let rules = dashboards::rules(&file)?;
    ensure!(
        rules_evaluated(&prom.api("/api/v1/rules")?)?,
        "some rules were never evaluated"
    );
    for rule in &rules {
        let carbon = rule.expr.contains("emissions") || rule.expr.contains("carbon");
        if !rule.alert {
            ensure!(
                carbon == RULES_NEEDING_CARBON.contains(&rule.name.as_str()),
                "{}: RULES_NEEDING_CARBON lists exactly the rules over carbon series",
                rule.name
            );
        }
        let direct = prom.query_all(&rule.expr)?;
        let recorded = if rule.alert {
            direct.len()
        } else {
            prom.query_all(&rule.name)?.len()
        };
        println!(
            "greenops — rule {}: {} series (expression: {})",
            rule.name,
            recorded,
            direct.len()
        );
        if !rule.alert && (!carbon || CARBON_METRICS) {
            ensure!(
                recorded > 0,
                "recording rule {} recorded nothing",
                rule.name
            );
        }
    }
    Ok(())
}

/// Values of the dashboards' label variables, found as Grafana and Perses find them (series
/// matching the variable's selector, with every other variable at "All"); both dashboards must
/// define the same variables.
fn check_variables(prom: &Prometheus, grafana: &Value, perses: &Value) -> Result<()> {
    let mut g = dashboards::grafana_label_variables(grafana)?;
    let mut p = dashboards::perses_label_variables(perses)?;
    g.sort();
    p.sort();
    ensure!(g == p, "the dashboards' variables differ:\n{g:?}\n{p:?}");
    let all = variables(Selection::All);
    let mut values = BTreeMap::new();
    for LabelVariable {
        name,
        label,
        selector,
    } in g
    {
        let selector = dashboards::interpolate(&selector, &all)?;
        let series = prom.api(&format!(
            "/api/v1/series?match[]={}&start={}",
            url_encode(&selector),
            now() - 300.0
        ))?;
        let mut found: Vec<String> = series
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s[&label].as_str())
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect();
        found.sort();
        found.dedup();
        println!("greenops — variable {name}: {found:?}");
        values.insert(name, found);
    }
    let expect = [
        ("node", "e2e-node"),
        ("zone", "package"),
        ("namespace", "shop"),
        ("pod", "web-1"),
    ];
    for (name, value) in expect {
        ensure!(
            values
                .get(name)
                .is_some_and(|v| v.iter().any(|x| x == value)),
            "variable {name} should offer {value}: {values:?}"
        );
    }
    Ok(())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[derive(Clone, Copy, Debug)]
enum Selection {
    /// Every multi-value variable at "All" (Grafana's and Perses' `.*`).
    All,
    /// One node, namespace and pod picked, as a user narrowing down would.
    One,
}

/// The variables a dashboard substitutes: the label variables (`zone` is single-valued), the
/// built-in intervals for a 1 s scrape interval (Grafana's rate interval is 4 × that), and the
/// range: the last 5 minutes.
fn variables(selection: Selection) -> BTreeMap<&'static str, String> {
    let (node, namespace, pod) = match selection {
        Selection::All => (".*", ".*", ".*"),
        Selection::One => ("e2e-node", PODS[0].0, PODS[0].1),
    };
    BTreeMap::from([
        ("node", node.to_owned()),
        ("namespace", namespace.to_owned()),
        ("pod", pod.to_owned()),
        ("zone", "package".to_owned()),
        ("__range", "5m".to_owned()),
        ("__rate_interval", "4s".to_owned()),
        ("__interval", "1s".to_owned()),
    ])
}

/// Every query of every panel evaluates; those that must return data do.
fn check_panels(
    prom: &Prometheus,
    dashboard: &str,
    panels: &[Panel],
    vars: &BTreeMap<&str, String>,
) -> Result<()> {
    for p in panels {
        let mut series = 0;
        for expr in &p.exprs {
            let expr = dashboards::interpolate(expr, vars)?;
            series += prom
                .query_all(&expr)
                .with_context(|| format!("{dashboard}: panel {:?}", p.title))?
                .len();
        }
        println!(
            "greenops — {dashboard} {:?} (node={}, pod={}): {series} series",
            p.title, vars["node"], vars["pod"]
        );
        let required = MUST_RETURN_DATA.contains(&p.title.as_str())
            || (CARBON_METRICS && NEEDS_CARBON.contains(&p.title.as_str()));
        ensure!(
            !required || series > 0,
            "{dashboard}: panel {:?} returned no data (node={}, namespace={}, pod={})",
            p.title,
            vars["node"],
            vars["namespace"],
            vars["pod"]
        );
    }
    Ok(())
}

/// A stand-in API server that lists [`PODS`] on node e2e-node and then watches quietly; returns
/// a kubeconfig pointing at it.
fn start_api_server(rt: &tokio::runtime::Runtime) -> Result<std::path::PathBuf> {
    let items: Vec<Value> = PODS
        .iter()
        .map(|(namespace, name, uid, container, id)| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"uid": uid, "name": name, "namespace": namespace, "resourceVersion": "1"},
                "spec": {"nodeName": "e2e-node", "containers": [{"name": container}]},
                "status": {"containerStatuses": [{
                    "name": container, "containerID": format!("containerd://{id}"), "image": "i",
                    "imageID": "i", "ready": true, "restartCount": 0
                }]}
            })
        })
        .collect();
    let list = Arc::new(json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "1"}, "items": items,
    }));
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .with_state(list);
    let port = free_port()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))?;
    rt.spawn(async move { axum::serve(listener, app).await });
    kube_api::kubeconfig("greenops-kubeconfig", port)
}

async fn pods(State(list): State<Arc<Value>>, Query(q): Query<Vec<(String, String)>>) -> Response {
    if q.iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    {
        // Nothing changes during the test: a watch that stays open and says nothing.
        let quiet = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(quiet))
            .unwrap_or_default();
    }
    ([("content-type", "application/json")], list.to_string()).into_response()
}
