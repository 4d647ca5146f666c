//! deploy/: every kustomize overlay renders with `kubectl kustomize`, its objects deserialize
//! into the Kubernetes API types, and the DaemonSet is least-privilege: not privileged, only the
//! documented capabilities, every host path read-only, RBAC limited to reading pods.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};

/// The capabilities the README's "Deploy on Kubernetes" section explains, and no others.
const DOCUMENTED_CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "DAC_READ_SEARCH"];

fn deploy_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

/// `kubectl kustomize <dir>`, split into documents.
fn render(dir: &str) -> Result<Vec<serde_json::Value>> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir().join("kustomize").join(dir))
        .output()
        .context("kubectl not found: it renders the kustomize overlays")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
            Ok(v)
        })
        .collect()
}

/// Deserializes every object into its API type (a typo in a field fails here) and checks the
/// DaemonSet and RBAC rules.
fn check_objects(dir: &str, docs: &[serde_json::Value]) -> Result<Vec<String>> {
    let mut kinds = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().context("an object without kind")?;
        kinds.push(kind.to_owned());
        match kind {
            "DaemonSet" => check_daemonset(&serde_json::from_value(doc.clone())?)?,
            "ClusterRole" => check_role(&serde_json::from_value(doc.clone())?)?,
            "ClusterRoleBinding" => {
                serde_json::from_value::<ClusterRoleBinding>(doc.clone())?;
            }
            "Namespace" => {
                serde_json::from_value::<Namespace>(doc.clone())?;
            }
            "ServiceAccount" => {
                serde_json::from_value::<ServiceAccount>(doc.clone())?;
            }
            "Service" => {
                serde_json::from_value::<Service>(doc.clone())?;
            }
            // A CRD of the Prometheus Operator: not in k8s-openapi; its shape is checked by hand.
            "ServiceMonitor" => ensure!(
                doc["spec"]["endpoints"][0]["port"] == "http-metrics",
                "{dir}: the ServiceMonitor must scrape the http-metrics port"
            ),
            other => bail!("{dir}: unexpected kind {other}"),
        }
    }
    kinds.sort();
    Ok(kinds)
}

fn check_daemonset(ds: &DaemonSet) -> Result<()> {
    let spec = ds.spec.as_ref().context("spec")?;
    let pod = spec.template.spec.as_ref().context("pod spec")?;
    ensure!(pod.host_network != Some(true), "no hostNetwork");
    ensure!(pod.host_pid != Some(true), "no hostPID");
    ensure!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint, to run on every node"
    );
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    for c in &pod.containers {
        let sc = c.security_context.as_ref().context("securityContext")?;
        ensure!(sc.privileged != Some(true), "{}: privileged", c.name);
        ensure!(
            sc.allow_privilege_escalation == Some(false),
            "no privilege escalation"
        );
        ensure!(
            sc.read_only_root_filesystem == Some(true),
            "read-only root filesystem"
        );
        let caps = sc.capabilities.as_ref().context("capabilities")?;
        ensure!(
            caps.drop.iter().flatten().any(|d| d == "ALL"),
            "capabilities dropped to none first"
        );
        for cap in caps.add.iter().flatten() {
            ensure!(
                DOCUMENTED_CAPABILITIES.contains(&cap.as_str()),
                "capability {cap} is not in the documented list {DOCUMENTED_CAPABILITIES:?}"
            );
        }
        for m in c.volume_mounts.iter().flatten() {
            let v = volumes
                .iter()
                .find(|v| v.name == m.name)
                .with_context(|| format!("volume {}", m.name))?;
            if v.host_path.is_some() {
                ensure!(
                    m.read_only == Some(true),
                    "host path {} is mounted writable",
                    m.mount_path
                );
            }
        }
        let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        ensure!(
            probe_path(&c.liveness_probe).as_deref() == Some("/healthz"),
            "liveness"
        );
        ensure!(
            probe_path(&c.readiness_probe).as_deref() == Some("/readyz"),
            "readiness"
        );
        let res = c.resources.as_ref().context("resources")?;
        ensure!(
            res.requests.is_some() && res.limits.is_some(),
            "requests and limits"
        );
        ensure!(
            c.env.iter().flatten().any(|e| e.name == "NODE_NAME"
                && e.value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == "spec.nodeName")),
            "NODE_NAME from the downward API"
        );
        ensure!(
            c.args
                .iter()
                .flatten()
                .any(|a| a == "--path.cgroup=/host/sys/fs/cgroup"),
            "the host's cgroup hierarchy"
        );
    }
    Ok(())
}

fn check_role(role: &ClusterRole) -> Result<()> {
    for rule in role.rules.iter().flatten() {
        ensure!(
            rule.api_groups.as_deref() == Some(&[String::new()][..]),
            "core API group only"
        );
        ensure!(
            rule.resources.as_deref() == Some(&["pods".to_owned()][..]),
            "pods only (no nodes/proxy)"
        );
        for verb in &rule.verbs {
            ensure!(
                ["get", "list", "watch"].contains(&verb.as_str()),
                "verb {verb}"
            );
        }
    }
    Ok(())
}

#[test]
fn every_overlay_renders_and_is_least_privilege() -> Result<()> {
    let base = [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Namespace",
        "Service",
        "ServiceAccount",
    ];
    for (dir, extra) in [
        ("base", None),
        ("overlays/prometheus-operator", Some("ServiceMonitor")),
        ("overlays/kepler-compat", Some("ServiceMonitor")),
    ] {
        let docs = render(dir)?;
        let kinds = check_objects(dir, &docs)?;
        let mut expected: Vec<String> = base.iter().map(|k| k.to_string()).collect();
        expected.extend(extra.map(String::from));
        expected.sort();
        assert_eq!(kinds, expected, "{dir}");
        let kepler = docs.iter().filter(|d| d["kind"] == "DaemonSet").any(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "--metrics-compat=kepler"))
        });
        assert_eq!(kepler, dir.ends_with("kepler-compat"), "{dir}");
        println!("deploy — {dir}: {} objects, checks pass", docs.len());
    }
    Ok(())
}

#[test]
fn the_readme_explains_every_capability() -> Result<()> {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md"))?;
    let section = readme
        .split("## Deploy on Kubernetes")
        .nth(1)
        .context("README has no \"Deploy on Kubernetes\" section")?;
    for cap in DOCUMENTED_CAPABILITIES {
        assert!(
            section.contains(&format!("CAP_{cap}")),
            "CAP_{cap} unexplained"
        );
    }
    Ok(())
}

#[test]
fn the_helm_chart_mirrors_the_base() -> Result<()> {
    // No helm here: the chart is checked for the same least-privilege settings as text.
    let ds = std::fs::read_to_string(deploy_dir().join("helm/wattlet/templates/daemonset.yaml"))?;
    for needle in [
        "privileged: false",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "drop: [\"ALL\"]",
        "add: [\"BPF\", \"PERFMON\", \"DAC_READ_SEARCH\"]",
        "--path.cgroup=/host/sys/fs/cgroup",
        "fieldPath: spec.nodeName",
    ] {
        assert!(ds.contains(needle), "chart DaemonSet lacks {needle}");
    }
    assert_eq!(
        ds.matches("readOnly: true").count(),
        ds.matches("hostPath:").count(),
        "every host path read-only"
    );
    let rbac = std::fs::read_to_string(deploy_dir().join("helm/wattlet/templates/rbac.yaml"))?;
    assert!(
        rbac.contains("resources: [\"pods\"]")
            && rbac.contains("verbs: [\"get\", \"list\", \"watch\"]")
    );
    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        deploy_dir().join("helm/wattlet/values.yaml"),
    )?)?;
    assert!(values["image"]["repository"].is_string());
    Ok(())
}
