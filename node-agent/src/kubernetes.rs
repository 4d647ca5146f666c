//! Pod metadata from the API server: a watcher and reflector over this node's pods (field
//! selector `spec.nodeName=<node>`, so RBAC needs only pods get/list/watch), joined to
//! containers by the ids in their statuses. It never blocks a scrape: the measuring loop takes
//! the latest index each interval. When the API server goes away, the last index stays in use,
//! the watcher retries with backoff, and the index's age is exported.
//!
//! Also this node's `topology.kubernetes.io/region` label, for the built-in carbon table
//! ([`node_region`]): one `get` of the node object (RBAC `nodes get`; no list or watch).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use log::{info, warn};

use crate::retention::Retention;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub pod_uid: String,
}

/// Pods by uid and containers by runtime id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaIndex {
    pub pods: HashMap<String, PodMeta>,
    pub containers: HashMap<String, ContainerMeta>,
}

/// `containerd://<id>` → `<id>` (also `cri-o://`, `docker://`).
pub fn container_id(status_id: &str) -> &str {
    status_id.split_once("://").map_or(status_id, |(_, id)| id)
}

/// The index of a set of pods: every container of every kind (regular, init, ephemeral) that
/// has an id.
pub fn index_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> MetaIndex {
    let mut index = MetaIndex::default();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        index.pods.insert(
            uid.clone(),
            PodMeta {
                name: pod.name_any(),
                namespace: pod.namespace().unwrap_or_default(),
            },
        );
        let Some(status) = &pod.status else { continue };
        let statuses = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten());
        for c in statuses {
            if let Some(id) = c.container_id.as_deref().map(container_id)
                && !id.is_empty()
            {
                index.containers.insert(
                    id.to_owned(),
                    ContainerMeta {
                        name: c.name.clone(),
                        pod_uid: uid.clone(),
                    },
                );
            }
        }
    }
    index
}

/// The metadata in use, how fresh it is, and what went wrong.
#[derive(Clone, Debug)]
pub struct MetaView {
    pub index: Arc<MetaIndex>,
    /// 0 while the watch is healthy; after a failure, the time since the metadata was last
    /// confirmed by the API server. None before the first list.
    pub age: Option<Duration>,
    pub errors: u64,
}

#[derive(Debug, Default)]
struct State {
    index: Arc<MetaIndex>,
    last_sync: Option<Instant>,
    /// Since when the watch has been failing (None while healthy).
    failing_since: Option<Instant>,
    errors: u64,
    /// Pods the API server no longer lists, kept for the retention so that their
    /// containers' series keep their names until they expire.
    departed: Retention<String, MetaIndex, Instant>,
}

/// Shared between the watcher task (writer) and the measuring loop (reader).
#[derive(Debug, Default)]
pub struct Metadata(RwLock<State>);

impl Metadata {
    pub fn view(&self) -> MetaView {
        let s = self.0.read().unwrap_or_else(|e| e.into_inner());
        MetaView {
            index: s.index.clone(),
            age: s
                .last_sync
                .map(|t| s.failing_since.map_or(Duration::ZERO, |_| t.elapsed())),
            errors: s.errors,
        }
    }

    /// Replaces the index with the store's, keeping departed pods for `retention`.
    pub fn update(&self, current: MetaIndex, retention: Duration) {
        let mut s = self.0.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let previous = s.index.clone();
        for (uid, pod) in &previous.pods {
            if !current.pods.contains_key(uid) && !s.departed.contains(uid) {
                let containers = previous
                    .containers
                    .iter()
                    .filter(|(_, c)| &c.pod_uid == uid)
                    .map(|(id, c)| (id.clone(), c.clone()))
                    .collect();
                let kept = MetaIndex {
                    pods: [(uid.clone(), pod.clone())].into_iter().collect(),
                    containers,
                };
                s.departed.end(uid.clone(), now, kept);
            }
        }
        s.departed.resume_if(|uid| current.pods.contains_key(uid));
        s.departed.expire(now, retention, usize::MAX);
        let mut merged = current;
        for (_, _, kept) in s.departed.iter() {
            merged.pods.extend(kept.pods.clone());
            merged.containers.extend(kept.containers.clone());
        }
        s.index = Arc::new(merged);
        s.last_sync = Some(now);
        s.failing_since = None;
    }

    pub fn error(&self) {
        let mut s = self.0.write().unwrap_or_else(|e| e.into_inner());
        s.errors += 1;
        s.failing_since.get_or_insert_with(Instant::now);
    }
}

/// How long a request may wait for the API server's next bytes before it fails and is retried:
/// without it, a request caught by a partition (connection accepted, never answered) would hang
/// for good and the metadata would never be confirmed again. 60 s is the API server's own
/// default request timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The API server ends each watch after this long, and the watcher resumes from where it was:
/// less than [`READ_TIMEOUT`], so that a quiet node's watch is never taken for a dead one.
pub const WATCH_TIMEOUT_SECS: u32 = 50;

/// A client for the API server from the in-cluster service account or KUBECONFIG, with
/// [`READ_TIMEOUT`].
pub async fn client() -> Result<Client, String> {
    let mut config = kube::Config::infer().await.map_err(|e| e.to_string())?;
    config.read_timeout = Some(READ_TIMEOUT);
    // Counted from each request sent, not from when its pooled connection last went idle.
    config.reset_reader_on_write = true;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Watches this node's pods until the process ends. Any failure (the API server unreachable, a
/// dropped watch it cannot resume) restarts the watch from a fresh list after a backoff of 1 s
/// doubling to 30 s, so that the metadata is confirmed again as soon as the API server answers;
/// a 410 Gone is a relist within the watcher.
pub async fn watch(client: Client, node: String, shared: Arc<Metadata>, retention: Duration) {
    let api: Api<Pod> = Api::all(client);
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let config = watcher::Config::default()
            .fields(&format!("spec.nodeName={node}"))
            .timeout(WATCH_TIMEOUT_SECS);
        let (reader, writer) = reflector::store::<Pod>();
        // Only what the join needs is kept: no managed fields, annotations or spec.
        let events = watcher(api.clone(), config).modify(|pod| {
            pod.managed_fields_mut().clear();
            pod.annotations_mut().clear();
            pod.spec = None;
        });
        let stream = reflector(writer, events);
        futures::pin_mut!(stream);
        let failure = loop {
            match stream.next().await {
                // Mid-list: the store is swapped whole at InitDone.
                Some(Ok(watcher::Event::Init)) | Some(Ok(watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => {
                    if std::mem::take(&mut failing) {
                        info!("Kubernetes API server reachable again: pod metadata is current");
                    }
                    backoff = Duration::from_secs(1);
                    let pods = reader.state();
                    shared.update(index_pods(pods.iter().map(|p| &**p)), retention);
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the watch ended".to_owned(),
            }
        };
        shared.error();
        failing = true;
        warn!(
            "watching pods on node {node} failed: {failure}; keeping the last metadata, listing \
             again in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The well-known label of the cloud region a node runs in.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// This node's [`REGION_LABEL`], from one `get` of its node object, retried with backoff (1 s
/// doubling to 5 min) while the API server cannot be reached. None when the node has no such
/// label, or when the API server refuses (no `nodes get` in the agent's role) or does not know
/// the node: said once in the log, not retried.
pub async fn node_region(client: Client, node: String) -> Option<String> {
    let api: Api<Node> = Api::all(client);
    let mut backoff = Duration::from_secs(1);
    loop {
        match api.get(&node).await {
            Ok(n) => {
                let region = n.labels().get(REGION_LABEL).cloned();
                if region.is_none() {
                    info!(
                        "node {node} has no {REGION_LABEL} label: set --carbon.zone for the built-in carbon table"
                    );
                }
                return region;
            }
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => {
                info!(
                    "reading node {node}'s {REGION_LABEL} label failed (HTTP {}: {}): the agent's \
                     role needs `nodes get` for it; set --carbon.zone instead",
                    status.code, status.message
                );
                return None;
            }
            Err(e) => {
                warn!(
                    "reading node {node}'s {REGION_LABEL} label failed: {e}; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, containers: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"uid": uid, "name": name, "namespace": "shop"},
            "status": {
                "containerStatuses": containers.iter().map(|(n, id)| serde_json::json!({
                    "name": n, "containerID": id, "image": "x", "imageID": "x",
                    "ready": true, "restartCount": 0
                })).collect::<Vec<_>>(),
                "initContainerStatuses": [{
                    "name": "init", "containerID": format!("cri-o://init-{uid}"), "image": "x",
                    "imageID": "x", "ready": true, "restartCount": 0
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn joins_containers_by_id_without_the_runtime_prefix() {
        let p = pod(
            "u1",
            "web-1",
            &[("app", "containerd://abc"), ("waiting", "")],
        );
        let index = index_pods([&p]);
        assert_eq!(
            index.containers["abc"],
            ContainerMeta {
                name: "app".into(),
                pod_uid: "u1".into()
            }
        );
        assert_eq!(index.containers["init-u1"].name, "init");
        assert!(!index.containers.contains_key(""), "no id, no entry");
        assert_eq!(
            index.pods["u1"],
            PodMeta {
                name: "web-1".into(),
                namespace: "shop".into()
            }
        );
        assert_eq!(container_id("docker://x"), "x");
        assert_eq!(container_id("bare"), "bare");
    }

    #[test]
    fn departed_pods_keep_their_names_for_the_retention() {
        let m = Metadata::default();
        let p = pod("u1", "web-1", &[("app", "containerd://abc")]);
        m.update(index_pods([&p]), Duration::from_secs(60));
        m.update(MetaIndex::default(), Duration::from_secs(60));
        assert_eq!(m.view().index.containers["abc"].name, "app", "kept");
        m.update(MetaIndex::default(), Duration::ZERO);
        assert!(m.view().index.containers.is_empty(), "expired");
        assert!(m.view().age.is_some());
    }
}
