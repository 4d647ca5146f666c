//! Pod metadata end to end: the agent's Kubernetes client against a real HTTP server standing in
//! for the API server (recorded-style pod lists and a watch stream), with cgroups laid out as
//! Kubernetes lays out pods. The labels follow adds, modifications, a 410 Gone that forces a
//! relist, a dropped connection and a deletion; during an outage the last labels stay and the
//! metadata's age grows. The node's `topology.kubernetes.io/region` label, read with one `get`
//! of the node, picks the built-in carbon table's factor.

use std::{
    ffi::OsStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use integration_tests::{
    TestCgroup, free_port, http_get,
    kube_api::{ApiServer, Fake, Shared, pod},
    require_root, start_agent_with_env, wait_for,
};
use serde_json::json;

fn workload() -> std::process::Command {
    integration_tests::workload!()
}

const UIDS: [&str; 3] = [
    "11111111-aaaa-4aaa-8aaa-000000000001",
    "11111111-aaaa-4aaa-8aaa-000000000002",
    "11111111-aaaa-4aaa-8aaa-000000000003",
];

fn id(n: u8) -> String {
    format!("{n:x}").repeat(64)
}

#[test]
fn labels_follow_the_api_server_and_survive_its_loss() -> Result<()> {
    require_root();
    let fake: Shared = Arc::default();
    fake.lock()
        .unwrap()
        .add(pod(UIDS[0], "web-1", &[("app", &id(1))]), false);
    // The API server: started, and later stopped (connections refused) and started again.
    let mut api = ApiServer::start(fake.clone())?;
    let dir = api.kubeconfig("kubeconfig")?;

    // Containers of pods: cgroups with a sleeping process each, so they stay in the kernel's map.
    let base = TestCgroup::new("k8s-meta")?;
    let mut cgroups = Vec::new();
    let mut container = |uid: &str, n: u8| -> Result<()> {
        let cg = TestCgroup::create_at(base.path.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
            uid.replace('-', "_"),
            id(n)
        )))?;
        let child = cg.spawn(workload().args(["sleep", "1000000", "5000"]))?;
        cgroups.push((cg, integration_tests::Running(child)));
        Ok(())
    };
    container(UIDS[0], 1)?;

    let port = free_port()?;
    let _agent = start_agent_with_env(
        port,
        &[OsStr::new("--kubernetes"), OsStr::new("on")],
        &[("KUBECONFIG", dir.as_os_str())],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let labels = |n: u8, name: &str, pod: &str| {
        format!(
            "wattlet_container_cpu_seconds_total{{node=\"e2e-node\",container_id=\"{}\",container=\"{name}\",pod=\"{pod}\",namespace=\"shop\"}}",
            id(n)
        )
    };
    let shows = |what: &str, series: String| -> Result<()> {
        wait_for(what, Duration::from_secs(20), || {
            let (_, body) = http_get(&addr, "/metrics", None).ok()?;
            body.contains(&series).then_some(())
        })
    };

    // The initial list.
    shows("the listed pod's labels", labels(1, "app", "web-1"))?;
    println!("kubernetes — list: container app of pod web-1 labelled");

    // A modification: an ephemeral debug container appears in the pod's statuses.
    container(UIDS[0], 2)?;
    fake.lock().unwrap().modify(UIDS[0], |p| {
        p["status"]["ephemeralContainerStatuses"] = json!([{
            "name": "debugger", "containerID": format!("containerd://{}", id(2)), "image": "i",
            "imageID": "i", "ready": false, "restartCount": 0
        }]);
    });
    shows(
        "the modified pod's new container",
        labels(2, "debugger", "web-1"),
    )?;
    println!("kubernetes — watch MODIFIED: ephemeral container labelled");

    // 410 Gone: a pod added meanwhile is found by the relist.
    container(UIDS[1], 3)?;
    {
        let mut f = fake.lock().unwrap();
        f.add(pod(UIDS[1], "api-1", &[("server", &id(3))]), false);
        f.gone();
    }
    shows("the relisted pod", labels(3, "server", "api-1"))?;
    println!("kubernetes — 410 Gone: relisted, new pod labelled");

    // A dropped connection: the client watches again and sees the next event.
    let before = fake.lock().unwrap().watch_requests;
    fake.lock().unwrap().watchers.clear();
    wait_for("a new watch", Duration::from_secs(20), || {
        (fake.lock().unwrap().watch_requests > before).then_some(())
    })?;
    container(UIDS[2], 4)?;
    fake.lock()
        .unwrap()
        .add(pod(UIDS[2], "batch-1", &[("job", &id(4))]), true);
    shows(
        "the pod added after the re-watch",
        labels(4, "job", "batch-1"),
    )?;
    println!("kubernetes — dropped connection: re-watched, ADDED pod labelled");

    // A deletion: the container's series keep their names for the retention.
    fake.lock().unwrap().delete(UIDS[2]);
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = http_get(&addr, "/metrics", None)?;
    assert!(
        body.contains(&labels(4, "job", "batch-1")),
        "deleted pod's names kept"
    );

    // The API server goes away (connections refused): labels stay, scrapes stay fast, the
    // metadata ages.
    api.stop();
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    let (status, body) = http_get(&addr, "/metrics", None)?;
    let scrape = t.elapsed();
    assert_eq!(status, 200);
    assert!(
        body.contains(&labels(1, "app", "web-1")),
        "last labels kept in an outage"
    );
    let age = integration_tests::sample(
        &body,
        "wattlet_kubernetes_metadata_age_seconds{node=\"e2e-node\"}",
    )
    .unwrap_or(0.0);
    let errors = integration_tests::sample(
        &body,
        "wattlet_kubernetes_watch_errors_total{node=\"e2e-node\",resource=\"pods\"}",
    )
    .unwrap_or(0.0);
    println!(
        "kubernetes — outage: labels kept, metadata age {age:.1} s, {errors} watch errors, scrape {scrape:?}"
    );
    assert!(age >= 3.0, "metadata age should grow: {age}");
    assert!(errors >= 1.0, "errors counted");
    assert!(
        scrape < Duration::from_secs(1),
        "a scrape never waits on the API server"
    );
    let pod_line = format!(
        "wattlet_pod_energy_joules_total{{node=\"e2e-node\",zone=\"package\",estimated=\"true\",pod=\"web-1\",namespace=\"shop\",pod_uid=\"{}\"}}",
        UIDS[0]
    );
    assert!(
        body.contains(&pod_line) || !body.contains("estimated=\"true\""),
        "pod series named"
    );

    // The API server comes back: the watcher resumes.
    api.resume()?;
    wait_for(
        "the metadata to be fresh again",
        Duration::from_secs(30),
        || {
            let (_, body) = http_get(&addr, "/metrics", None).ok()?;
            integration_tests::sample(
                &body,
                "wattlet_kubernetes_metadata_age_seconds{node=\"e2e-node\"}",
            )
            .filter(|a| *a < 2.0)
        },
    )?;
    println!("kubernetes — API server back: metadata fresh again");
    drop(cgroups);
    drop(base);
    let _ = std::fs::remove_file(dir);
    Ok(())
}

/// The node's region label (one get of the node object, never a list or a watch) selects the
/// built-in table's factor: eu-west-1's figure, exported with source="table", and emissions
/// under that source.
#[test]
fn kubernetes_node_region_picks_the_carbon_tables_factor() -> Result<()> {
    require_root();
    let fake: Shared = Arc::new(Mutex::new(Fake {
        region: Some("eu-west-1".into()),
        ..Fake::default()
    }));
    let api = ApiServer::start(fake.clone())?;
    let config = api.kubeconfig("region-kubeconfig")?;
    let want = node_agent::carbon::lookup(Some("eu-west-1"))
        .expect("eu-west-1 is in the table")
        .grams_per_kwh;

    let port = free_port()?;
    let _agent = start_agent_with_env(
        port,
        &[OsStr::new("--kubernetes"), OsStr::new("on")],
        &[("KUBECONFIG", config.as_os_str())],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let intensity = "wattlet_grid_carbon_intensity_grams_per_kwh{node=\"e2e-node\",source=\"table\",zone=\"eu-west-1\"}";
    let (got, body) = wait_for(
        "the table's factor for eu-west-1",
        Duration::from_secs(20),
        || {
            let (_, body) = http_get(&addr, "/metrics", None).ok()?;
            let v = integration_tests::sample(&body, intensity)?;
            body.contains("_emissions_grams_total{")
                .then_some((v, body))
        },
    )?;
    println!("kubernetes — region eu-west-1: {got} g/kWh from the table (table: {want})");
    assert_eq!(got, want);
    let node_emissions = integration_tests::series(&body, "wattlet_node_emissions_grams_total");
    assert!(
        node_emissions.iter().any(|(l, _)| l["source"] == "table"),
        "emissions under source=\"table\": {node_emissions:?}"
    );
    assert_eq!(
        fake.lock().unwrap().node_requests,
        ["e2e-node"],
        "one get of the agent's own node"
    );
    let _ = std::fs::remove_file(config);
    Ok(())
}
