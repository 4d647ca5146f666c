//! deploy/: every kustomize overlay renders with `kubectl kustomize` and the Helm chart with real
//! Helm (its Go library, through helm-python-sdk); every object of both deserializes into its API
//! type and passes the same least-privilege checks (not privileged, only the documented
//! capabilities, every host path read-only, RBAC limited to reading pods). The rules pass
//! `promtool test rules`; the dashboards are well-formed and agree with each other; the
//! PrometheusRules and ConfigMaps carry exactly the files under deploy/rules and deploy/dashboards.
//! (tests/tests/greenops.rs runs every query against a real agent.)

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use integration_tests::dashboards::{self, deploy_dir};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde_json::Value;

/// The capabilities the README's "Deploy on Kubernetes" section explains, and no others.
const DOCUMENTED_CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "DAC_READ_SEARCH"];

/// What every rendering of the agent holds.
const AGENT_KINDS: [&str; 5] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "DaemonSet",
    "Service",
    "ServiceAccount",
];

/// `kubectl kustomize <dir>`, split into documents.
fn render(dir: &str) -> Result<Vec<Value>> {
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
    yaml_documents(&String::from_utf8(out.stdout)?)
}

/// Every non-empty YAML document of `text`, as JSON.
fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The chart rendered as `helm install wattlet deploy/helm/wattlet -n monitoring` would with
/// `values`, by Helm's own library; Err if `helm lint --strict` finds anything above info.
fn render_helm(values: &Value) -> Result<Vec<Value>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm_render.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(deploy_dir().join("helm/wattlet"))
        .args(["wattlet", "monitoring"])
        .arg(values.to_string())
        .output()
        .context("python3 not found: it runs Helm's library (helm-python-sdk)")?;
    ensure!(
        out.status.success(),
        "rendering the Helm chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout)?;
    let lint = &result["lint"];
    let findings: Vec<&Value> = lint["messages"]
        .as_array()
        .into_iter()
        .flatten()
        // 1 is info ("icon is recommended"); 2 warning, 3 error.
        .filter(|m| m["severity"].as_u64().unwrap_or(3) > 1)
        .chain(lint["errors"].as_array().into_iter().flatten())
        .collect();
    ensure!(findings.is_empty(), "helm lint --strict: {findings:?}");
    let mut docs = Vec::new();
    let manifests = result["manifests"].as_object().context("no manifests")?;
    for text in manifests.values() {
        docs.extend(yaml_documents(text.as_str().context("a manifest")?)?);
    }
    Ok(docs)
}

/// The least-privilege and shape checks, for any rendering: deserializes every object into its
/// API type (a typo in a field fails here) and checks the DaemonSet, RBAC, rules and dashboards.
/// Returns the kinds, sorted.
fn check_objects(source: &str, docs: &[Value]) -> Result<Vec<String>> {
    let mut kinds = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().context("an object without kind")?;
        kinds.push(kind.to_owned());
        let context = || format!("{source}: {kind} {}", doc["metadata"]["name"]);
        match kind {
            "DaemonSet" => check_daemonset(&parse(doc)?).with_context(context)?,
            "ClusterRole" => check_role(&parse(doc)?).with_context(context)?,
            "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(doc)?),
            "Namespace" => drop(parse::<Namespace>(doc)?),
            "ServiceAccount" => drop(parse::<ServiceAccount>(doc)?),
            "Service" => drop(parse::<Service>(doc)?),
            "ConfigMap" if is_seccomp_profile(doc) => {
                check_seccomp_profile(&parse(doc)?).with_context(context)?
            }
            "ConfigMap" => check_dashboards(&parse(doc)?).with_context(context)?,
            "Secret" => check_web_secret(&parse(doc)?).with_context(context)?,
            // CRDs of the Prometheus Operator: not in k8s-openapi; their shape is checked by hand.
            "ServiceMonitor" => ensure!(
                doc["spec"]["endpoints"][0]["port"] == "http-metrics",
                "{source}: the ServiceMonitor must scrape the http-metrics port"
            ),
            "PrometheusRule" => ensure!(
                doc["spec"] == rules_file()?,
                "{source}: the PrometheusRule's spec is not deploy/rules/wattlet.rules.yaml"
            ),
            other => bail!("{source}: unexpected kind {other}"),
        }
    }
    kinds.sort();
    Ok(kinds)
}

/// An object as its API type: a misspelt or misplaced field fails here.
fn parse<T: serde::de::DeserializeOwned>(doc: &Value) -> Result<T> {
    Ok(serde_json::from_value(doc.clone())?)
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

/// Read-only RBAC: pods get/list/watch (this node's pods, by field selector) and nodes get (this
/// node's region label; a DaemonSet's role cannot name each pod's own node, so no
/// resourceNames), in the core group; nothing else.
fn check_role(role: &ClusterRole) -> Result<()> {
    let mut granted = Vec::new();
    for rule in role.rules.iter().flatten() {
        ensure!(
            rule.api_groups.as_deref() == Some(&[String::new()][..]),
            "core API group only"
        );
        ensure!(rule.non_resource_urls.is_none(), "no non-resource URLs");
        for resource in rule.resources.iter().flatten() {
            let allowed: &[&str] = match resource.as_str() {
                "pods" => &["get", "list", "watch"],
                "nodes" => &["get"],
                other => bail!("resource {other}: only pods and nodes (no nodes/proxy)"),
            };
            for verb in &rule.verbs {
                ensure!(allowed.contains(&verb.as_str()), "{resource}: verb {verb}");
                granted.push(format!("{resource} {verb}"));
            }
        }
    }
    granted.sort();
    ensure!(
        granted == ["nodes get", "pods get", "pods list", "pods watch"],
        "granted {granted:?}: the agent needs pods get/list/watch and nodes get"
    );
    Ok(())
}

/// A dashboards ConfigMap: labelled for its sidecar, holding exactly the dashboard file.
fn check_dashboards(cm: &ConfigMap) -> Result<()> {
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    let (dir, label) = if labels.get("grafana_dashboard").is_some_and(|v| v == "1") {
        ("grafana", "grafana_dashboard")
    } else if labels
        .get("perses.dev/resource")
        .is_some_and(|v| v == "true")
    {
        ("perses", "perses.dev/resource")
    } else {
        bail!("a ConfigMap labelled for neither Grafana's nor Perses' sidecar: {labels:?}");
    };
    let data = cm.data.clone().unwrap_or_default();
    let file = format!("dashboards/{dir}/wattlet.json");
    ensure!(
        data.keys().eq(["wattlet.json"]),
        "{label}: keys {:?}",
        data.keys()
    );
    ensure!(
        serde_json::from_str::<Value>(&data["wattlet.json"])? == dashboards::read_json(&file)?,
        "{label}: the ConfigMap does not hold deploy/{file}"
    );
    Ok(())
}

/// The ConfigMap carrying the Localhost seccomp profile (the chart's `<release>-seccomp`, the
/// overlay's `wattlet-seccomp-<hash>`).
fn is_seccomp_profile(doc: &Value) -> bool {
    doc["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.ends_with("-seccomp") || n.starts_with("wattlet-seccomp"))
}

/// The seccomp profile's ConfigMap holds exactly deploy/seccomp/wattlet.json.
fn check_seccomp_profile(cm: &ConfigMap) -> Result<()> {
    let data = cm.data.clone().unwrap_or_default();
    ensure!(data.keys().eq(["wattlet.json"]), "keys {:?}", data.keys());
    let shipped: Value = serde_json::from_str(&std::fs::read_to_string(
        deploy_dir().join("seccomp/wattlet.json"),
    )?)?;
    ensure!(
        serde_json::from_str::<Value>(&data["wattlet.json"])? == shipped,
        "the ConfigMap does not hold deploy/seccomp/wattlet.json"
    );
    Ok(())
}

/// The web configuration's Secret: one file, web.yml, that the agent's own parser accepts.
fn check_web_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Result<()> {
    let data = secret.string_data.clone().unwrap_or_default();
    ensure!(data.keys().eq(["web.yml"]), "keys {:?}", data.keys());
    let dir = std::env::temp_dir().join(format!("wattlet-helm-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("web.yml");
    std::fs::write(&file, &data["web.yml"])?;
    let loaded = node_agent::exporter::web::WebConfig::load(&file);
    let _ = std::fs::remove_dir_all(&dir);
    loaded.context("the agent refuses the chart's web.yml")?;
    Ok(())
}

/// deploy/rules/wattlet.rules.yaml, as JSON.
fn rules_file() -> Result<Value> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(
        deploy_dir().join("rules/wattlet.rules.yaml"),
    )?)?)
}

fn expected(extra: &[&str]) -> Vec<String> {
    let mut kinds: Vec<String> = AGENT_KINDS
        .iter()
        .chain(extra)
        .map(|k| k.to_string())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn deploy_every_overlay_renders_and_is_least_privilege() -> Result<()> {
    let monitoring = ["ServiceMonitor"];
    let greenops = ["ServiceMonitor", "PrometheusRule", "ConfigMap", "ConfigMap"];
    for (dir, extra) in [
        ("base", &[][..]),
        ("overlays/prometheus-operator", &monitoring[..]),
        ("overlays/kepler-compat", &monitoring[..]),
        ("overlays/greenops", &greenops[..]),
    ] {
        let docs = render(dir)?;
        let kinds = check_objects(dir, &docs)?;
        let mut extra = extra.to_vec();
        extra.push("Namespace");
        assert_eq!(kinds, expected(&extra), "{dir}");
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
fn deploy_readme_explains_every_capability() -> Result<()> {
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

/// The chart, rendered and linted by Helm itself, gets the kustomize base's checks; its flags
/// add the ServiceMonitor, the PrometheusRule and the dashboards, with the same contents.
#[test]
fn deploy_helm_chart_renders_lints_and_is_least_privilege() -> Result<()> {
    let defaults = render_helm(&serde_json::json!({}))?;
    assert_eq!(check_objects("helm (defaults)", &defaults)?, expected(&[]));
    let everything = serde_json::json!({
        "serviceMonitor": {"enabled": true},
        "prometheusRule": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
        "dashboards": {"grafana": {"enabled": true}, "perses": {"enabled": true}},
        "keplerCompat": true,
    });
    let docs = render_helm(&everything)?;
    assert_eq!(
        check_objects("helm (everything on)", &docs)?,
        expected(&["ConfigMap", "ConfigMap", "PrometheusRule", "ServiceMonitor"])
    );
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .context("no PrometheusRule")?;
    assert_eq!(
        rule["metadata"]["labels"]["release"], "kube-prometheus-stack",
        "the PrometheusRule carries the labels asked for"
    );
    println!(
        "deploy — helm: {} objects by default, {} with everything on; lint clean",
        defaults.len(),
        docs.len()
    );
    Ok(())
}

/// A bcrypt hash (of "change-me", as in the README's example).
const HASH: &str = "$2b$10$k/IJ23yf.LcaJSGDaMF.yOIJAvZkGbU.akuAA/YyAKz/l6VBF7fDi";

/// The DaemonSet's pod spec, its agent container, and a volume of the pod by name.
fn pod_of(docs: &[Value]) -> Result<Value> {
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .context("no DaemonSet")?;
    Ok(ds["spec"]["template"]["spec"].clone())
}

fn volume(pod: &Value, name: &str) -> Result<Value> {
    pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name).cloned())
        .with_context(|| format!("no volume {name}"))
}

fn has_arg(pod: &Value, arg: &str) -> bool {
    pod["containers"][0]["args"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == arg))
}

/// The web configuration as the kustomize docs and the README describe it (a Secret mounted as
/// `--web.config.file`, TLS from a certificate Secret, the health exemption for the probes) and
/// the Localhost seccomp profile exactly as the seccomp-localhost overlay installs it.
#[test]
fn deploy_helm_chart_web_config_and_seccomp_localhost() -> Result<()> {
    let config = serde_json::json!({
        "tls_server_config": {"cert_file": "/etc/wattlet/tls/tls.crt",
                              "key_file": "/etc/wattlet/tls/tls.key"},
        "basic_auth_users": {"prometheus": HASH},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
    });
    let values = serde_json::json!({
        "web": {"config": config, "tlsSecret": "wattlet-tls", "healthUnauthenticated": true},
        "seccomp": {"profile": "Localhost"},
        "serviceMonitor": {"enabled": true},
    });
    let docs = render_helm(&values)?;
    assert_eq!(
        check_objects("helm (web config, seccomp Localhost)", &docs)?,
        expected(&["ConfigMap", "Secret", "ServiceMonitor"])
    );
    let pod = pod_of(&docs)?;
    let agent = &pod["containers"][0];

    // The web config: the Secret holds the values' config, mounted where the flag points.
    assert!(has_arg(&pod, "--web.config.file=/etc/wattlet/web/web.yml"));
    assert!(has_arg(&pod, "--web.health-unauthenticated"));
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .context("no Secret")?;
    let web_yml: Value = serde_yaml::from_str(
        secret["stringData"]["web.yml"]
            .as_str()
            .context("web.yml")?,
    )?;
    assert_eq!(web_yml, config, "the Secret holds web.config");
    let mounted = |path: &str| -> Result<Value> {
        let m = agent["volumeMounts"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["mountPath"] == path).cloned())
            .with_context(|| format!("nothing mounted at {path}"))?;
        assert_eq!(m["readOnly"], true, "{path} read-only");
        volume(&pod, m["name"].as_str().context("mount name")?)
    };
    assert_eq!(
        mounted("/etc/wattlet/web")?["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    assert_eq!(
        mounted("/etc/wattlet/tls")?["secret"]["secretName"],
        "wattlet-tls"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(agent[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .context("no ServiceMonitor")?;
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");

    // Seccomp: what the overlay does, to the letter.
    let overlay = pod_of(&render("overlays/seccomp-localhost")?)?;
    assert_eq!(
        agent["securityContext"]["seccompProfile"],
        overlay["containers"][0]["securityContext"]["seccompProfile"]
    );
    assert_eq!(pod["initContainers"], overlay["initContainers"]);
    assert_eq!(
        volume(&pod, "host-seccomp")?,
        volume(&overlay, "host-seccomp")?
    );
    let profile_cm = volume(&pod, "seccomp-profile")?["configMap"]["name"].clone();
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == profile_cm),
        "the profile's ConfigMap {profile_cm} is rendered"
    );

    // Mutual TLS: the kubelet has no client certificate, so the probes only connect.
    let mtls = serde_json::json!({"web": {"config": {"tls_server_config": {
        "cert_file": "/etc/wattlet/tls/tls.crt", "key_file": "/etc/wattlet/tls/tls.key",
        "client_ca_file": "/etc/wattlet/tls/ca.crt",
        "client_auth_type": "RequireAndVerifyClientCert"}}, "tlsSecret": "wattlet-tls"}});
    let mtls_pod = pod_of(&render_helm(&mtls)?)?;
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &mtls_pod["containers"][0][probe];
        assert_eq!(p["tcpSocket"]["port"], "http-metrics", "{probe}: {p}");
        assert!(p["httpGet"].is_null(), "{probe}: {p}");
    }

    // An existing Secret: mounted, none rendered.
    let existing =
        render_helm(&serde_json::json!({"web": {"existingSecret": "my-web", "tls": true}}))?;
    assert!(!existing.iter().any(|d| d["kind"] == "Secret"));
    let existing_pod = pod_of(&existing)?;
    assert_eq!(
        volume(&existing_pod, "web-config")?["secret"]["secretName"],
        "my-web"
    );
    assert!(has_arg(
        &existing_pod,
        "--web.config.file=/etc/wattlet/web/web.yml"
    ));
    assert!(!has_arg(&existing_pod, "--web.health-unauthenticated"));

    // Refused: basic auth whose probes could not authenticate, and an unconfined profile.
    let locked_out = render_helm(
        &serde_json::json!({"web": {"config": {"basic_auth_users": {"prometheus": HASH}}}}),
    )
    .expect_err("basic auth without the health exemption must not render");
    assert!(
        format!("{locked_out:#}").contains("web.healthUnauthenticated"),
        "{locked_out:#}"
    );
    let unconfined = render_helm(&serde_json::json!({"seccomp": {"profile": "Unconfined"}}))
        .expect_err("an Unconfined profile must not render");
    assert!(
        format!("{unconfined:#}").contains("never Unconfined"),
        "{unconfined:#}"
    );
    println!(
        "deploy — helm: web config (TLS + basic auth) and seccomp Localhost render {} objects, \
         the overlay's seccomp to the letter; mutual TLS probes by TCP; bad values refused",
        docs.len()
    );
    Ok(())
}

/// `promtool test rules`, and a test file that covers every rule: each recording rule is
/// checked for its value, each alert both firing and not firing.
#[test]
fn deploy_rules_pass_promtool_tests() -> Result<()> {
    let dir = deploy_dir().join("rules");
    for args in [
        ["check", "rules", "wattlet.rules.yaml"],
        ["test", "rules", "wattlet.rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .context("promtool not found: `cargo xtask test` installs it")?;
        ensure!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tests: Value = serde_yaml::from_str(&std::fs::read_to_string(
        dir.join("wattlet.rules.test.yaml"),
    )?)?;
    let cases = tests["tests"].as_array().context("no tests")?;
    let exprs: BTreeSet<&str> = cases
        .iter()
        .flat_map(|t| t["promql_expr_test"].as_array().into_iter().flatten())
        .filter_map(|e| e["expr"].as_str())
        .collect();
    let alert_tests: Vec<&Value> = cases
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    let rules = dashboards::rules(&rules_file()?)?;
    for rule in &rules {
        if rule.alert {
            let fired = |firing: bool| {
                alert_tests.iter().any(|t| {
                    t["alertname"] == rule.name.as_str()
                        && t["exp_alerts"]
                            .as_array()
                            .is_some_and(|a| a.is_empty() != firing)
                })
            };
            ensure!(
                fired(true) && fired(false),
                "alert {} must be tested both firing and not firing",
                rule.name
            );
        } else {
            ensure!(
                exprs.contains(rule.name.as_str()),
                "recording rule {} has no promql_expr_test",
                rule.name
            );
        }
    }
    println!("deploy — promtool: {} rules, each tested", rules.len());
    Ok(())
}

/// The kustomize component's PrometheusRule is the rules file with a header; kustomize cannot
/// embed a file into an object, so the copy is generated here and must match byte for byte.
/// `WATTLET_UPDATE_DEPLOY=1 cargo xtask test deploy` rewrites it.
#[test]
fn deploy_prometheus_rule_component_is_the_rules_file() -> Result<()> {
    let rules = std::fs::read_to_string(deploy_dir().join("rules/wattlet.rules.yaml"))?;
    let mut want = String::from(
        "# Generated from deploy/rules/wattlet.rules.yaml by tests/tests/deploy.rs\n\
         # (WATTLET_UPDATE_DEPLOY=1 cargo xtask test deploy): edit that file, not this one.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: wattlet\n  namespace: wattlet\n  labels:\n    app.kubernetes.io/name: wattlet\n\
         spec:\n",
    );
    for line in rules.lines() {
        if !line.is_empty() {
            want.push_str("  ");
        }
        want.push_str(line);
        want.push('\n');
    }
    let path = deploy_dir().join("kustomize/components/prometheus-rules/prometheusrule.yaml");
    if std::env::var_os("WATTLET_UPDATE_DEPLOY").is_some() {
        std::fs::write(&path, &want)?;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    ensure!(
        have == want,
        "{} is not deploy/rules/wattlet.rules.yaml: run WATTLET_UPDATE_DEPLOY=1 cargo xtask test deploy",
        path.display()
    );
    Ok(())
}

/// Known kinds, from the Perses documentation (perses/plugins: docs/*/model.md).
const PERSES_PANEL_KINDS: &[&str] = &[
    "BarChart",
    "FlameChart",
    "GaugeChart",
    "HeatMapChart",
    "HistogramChart",
    "LogsTable",
    "Markdown",
    "PieChart",
    "ScatterChart",
    "StatChart",
    "StatusHistoryChart",
    "Table",
    "TimeSeriesChart",
    "TimeSeriesTable",
    "TraceTable",
    "TracingGanttChart",
];
const PERSES_VARIABLE_PLUGINS: &[&str] = &[
    "DatasourceVariable",
    "PrometheusLabelNamesVariable",
    "PrometheusLabelValuesVariable",
    "PrometheusPromQLVariable",
    "StaticListVariable",
];
/// Perses' format units (perses/shared: cue/common/format.cue) that these dashboards may use.
const PERSES_UNITS: &[&str] = &[
    "decimal",
    "percent",
    "percent-decimal",
    "seconds",
    "milliseconds",
    "bytes",
    "counts/sec",
];
/// Perses' calculations (the `calculation` of stat and bar charts, a legend's values).
const PERSES_CALCULATIONS: &[&str] = &[
    "first",
    "last",
    "first-number",
    "last-number",
    "mean",
    "sum",
    "min",
    "max",
];
/// Grafana's built-in unit ids these dashboards may use (or `suffix:<text>`).
const GRAFANA_UNITS: &[&str] = &[
    "watt",
    "kwatth",
    "massg",
    "percentunit",
    "s",
    "bytes",
    "cps",
    "short",
    "none",
];
const GRAFANA_PANEL_TYPES: &[&str] = &["timeseries", "stat", "bargauge", "table"];
/// Variables both dashboards define, and the built-ins their queries may use.
const VARIABLES: &[&str] = &["datasource", "node", "zone", "namespace", "pod"];
const BUILT_INS: &[&str] = &["__range", "__rate_interval", "__interval"];

/// Every `$var` in `expr` is a dashboard variable or a built-in.
fn check_variables_known(expr: &str) -> Result<()> {
    let known: BTreeMap<&str, String> = VARIABLES
        .iter()
        .chain(BUILT_INS)
        .map(|v| (*v, "x".to_owned()))
        .collect();
    dashboards::interpolate(expr, &known).map(drop)
}

#[test]
fn deploy_grafana_dashboard_is_well_formed() -> Result<()> {
    let d = dashboards::read_json("dashboards/grafana/wattlet.json")?;
    ensure!(
        d["uid"] == "wattlet" && d["title"].is_string(),
        "uid, title"
    );
    let mut ids = BTreeSet::new();
    let mut rects = Vec::new();
    for p in d["panels"].as_array().context("panels")? {
        let title = p["title"].as_str().context("a panel without a title")?;
        let id = p["id"].as_u64().with_context(|| format!("{title}: id"))?;
        ensure!(ids.insert(id), "duplicate panel id {id}");
        let pos = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_u64().unwrap_or(0));
        ensure!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {pos}");
        for (other, r) in &rects {
            let (ox, oy, ow, oh) = *r;
            ensure!(
                x >= ox + ow || ox >= x + w || y >= oy + oh || oy >= y + h,
                "{title} overlaps {other}"
            );
        }
        rects.push((title.to_owned(), (x, y, w, h)));
        if p["type"] == "row" {
            continue;
        }
        ensure!(
            GRAFANA_PANEL_TYPES.contains(&p["type"].as_str().unwrap_or_default()),
            "{title}: panel type {}",
            p["type"]
        );
        ensure!(
            p["datasource"]["uid"] == "${datasource}",
            "{title}: datasource"
        );
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            GRAFANA_UNITS.contains(&unit) || unit.starts_with("suffix:"),
            "{title}: unit {unit:?}"
        );
        let targets = p["targets"].as_array().context("targets")?;
        let ref_ids: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
        ensure!(ref_ids.len() == targets.len(), "{title}: refIds");
        for t in targets {
            ensure!(
                t["datasource"]["uid"] == "${datasource}",
                "{title}: target datasource"
            );
            check_variables_known(t["expr"].as_str().context("expr")?)?;
        }
    }
    let panels = dashboards::grafana_panels(&d)?;
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .context("templating")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    ensure!(vars == VARIABLES, "variables {vars:?}");
    for v in dashboards::grafana_label_variables(&d)? {
        check_variables_known(&v.selector)?;
    }
    println!("deploy — grafana: {} panels", panels.len());
    Ok(())
}

/// Every `{"$ref": "#/a/b"}` in `doc` points at something in `doc`.
fn check_refs(doc: &Value, at: &Value) -> Result<()> {
    match at {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref") {
                let pointer = r
                    .as_str()
                    .and_then(|r| r.strip_prefix('#'))
                    .with_context(|| format!("$ref {r} is not local"))?;
                ensure!(
                    doc.pointer(pointer).is_some(),
                    "$ref {r} resolves to nothing"
                );
            }
            map.values().try_for_each(|v| check_refs(doc, v))
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_refs(doc, v)),
        _ => Ok(()),
    }
}

#[test]
fn deploy_perses_dashboard_is_well_formed() -> Result<()> {
    let d = dashboards::read_json("dashboards/perses/wattlet.json")?;
    ensure!(d["kind"] == "Dashboard", "kind");
    ensure!(
        d["metadata"]["name"].is_string() && d["metadata"]["project"].is_string(),
        "metadata name and project"
    );
    let spec = &d["spec"];
    check_refs(&d, &d)?;
    for (name, ds) in spec["datasources"].as_object().context("datasources")? {
        ensure!(
            ds["plugin"]["kind"] == "PrometheusDatasource",
            "datasource {name}"
        );
    }
    let panels = spec["panels"].as_object().context("panels")?;
    let mut shown = BTreeMap::new();
    for layout in spec["layouts"].as_array().context("layouts")? {
        ensure!(layout["kind"] == "Grid", "layout kind {}", layout["kind"]);
        for item in layout["spec"]["items"].as_array().context("items")? {
            let [x, w, h] = ["x", "width", "height"].map(|k| item[k].as_u64().unwrap_or(0));
            ensure!(
                w > 0 && h > 0 && x + w <= 24 && item["y"].is_u64(),
                "item {item}"
            );
            let key = item["content"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/spec/panels/"))
                .with_context(|| format!("item {item} refers to no panel"))?;
            *shown.entry(key.to_owned()).or_insert(0) += 1;
        }
    }
    for (key, p) in panels {
        ensure!(
            shown.get(key) == Some(&1),
            "panel {key} shown {:?} times",
            shown.get(key)
        );
        ensure!(p["kind"] == "Panel", "{key}: kind");
        check_perses_plugin(key, &p["spec"]["plugin"])?;
        for q in p["spec"]["queries"].as_array().context("queries")? {
            ensure!(q["kind"] == "TimeSeriesQuery", "{key}: query kind");
            let plugin = &q["spec"]["plugin"];
            ensure!(
                plugin["kind"] == "PrometheusTimeSeriesQuery",
                "{key}: query plugin"
            );
            ensure!(
                plugin["spec"]["datasource"]["kind"] == "PrometheusDatasource",
                "{key}: datasource selector"
            );
            check_variables_known(plugin["spec"]["query"].as_str().context("query")?)?;
        }
    }
    let mut names = Vec::new();
    for v in spec["variables"].as_array().context("variables")? {
        ensure!(v["kind"] == "ListVariable", "variable kind {}", v["kind"]);
        let plugin = v["spec"]["plugin"]["kind"].as_str().unwrap_or_default();
        ensure!(
            PERSES_VARIABLE_PLUGINS.contains(&plugin),
            "variable plugin {plugin}"
        );
        names.push(v["spec"]["name"].as_str().context("variable name")?);
    }
    ensure!(names == VARIABLES, "variables {names:?}");
    for v in dashboards::perses_label_variables(&d)? {
        check_variables_known(&v.selector)?;
    }
    println!(
        "deploy — perses: {} panels, every $ref resolves",
        panels.len()
    );
    Ok(())
}

/// A panel's plugin: a known kind, with the fields its schema requires and known units.
fn check_perses_plugin(key: &str, plugin: &Value) -> Result<()> {
    let kind = plugin["kind"].as_str().unwrap_or_default();
    ensure!(
        PERSES_PANEL_KINDS.contains(&kind),
        "{key}: panel kind {kind:?}"
    );
    let spec = &plugin["spec"];
    if ["StatChart", "BarChart", "GaugeChart"].contains(&kind) {
        let calc = spec["calculation"].as_str().unwrap_or_default();
        ensure!(
            PERSES_CALCULATIONS.contains(&calc),
            "{key}: calculation {calc:?}"
        );
    }
    for values in spec["legend"]["values"].as_array().into_iter().flatten() {
        let calc = values.as_str().unwrap_or_default();
        ensure!(
            PERSES_CALCULATIONS.contains(&calc),
            "{key}: legend value {calc:?}"
        );
    }
    for format in [&spec["format"], &spec["yAxis"]["format"]] {
        if let Some(unit) = format["unit"].as_str() {
            ensure!(PERSES_UNITS.contains(&unit), "{key}: unit {unit:?}");
        }
    }
    Ok(())
}

/// Both dashboards show the same panels with the same queries, and the same variables.
#[test]
fn deploy_dashboards_agree() -> Result<()> {
    let grafana = dashboards::read_json("dashboards/grafana/wattlet.json")?;
    let perses = dashboards::read_json("dashboards/perses/wattlet.json")?;
    let mut g = dashboards::grafana_panels(&grafana)?;
    let mut p = dashboards::perses_panels(&perses)?;
    g.sort();
    p.sort();
    for (a, b) in g.iter().zip(&p) {
        ensure!(
            a == b,
            "the dashboards differ:\ngrafana: {a:?}\nperses:  {b:?}"
        );
    }
    ensure!(
        g.len() == p.len(),
        "{} Grafana panels, {} Perses panels",
        g.len(),
        p.len()
    );
    let mut gv = dashboards::grafana_label_variables(&grafana)?;
    let mut pv = dashboards::perses_label_variables(&perses)?;
    gv.sort();
    pv.sort();
    ensure!(
        gv == pv,
        "the dashboards' variables differ:\n{gv:?}\n{pv:?}"
    );
    Ok(())
}
