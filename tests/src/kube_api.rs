//! A real HTTP server standing in for the Kubernetes API server: this node's pods (a list, and a
//! watch stream the test feeds events into) and one node object, on loopback, with a kubeconfig
//! pointing at it. It can be stopped (connections refused) and started again on the same port,
//! for outages.

use std::{
    net::TcpStream,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Result;
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The node the agent under test is told it runs on (`start_agent`'s `--node-name`).
pub const NODE: &str = "e2e-node";

/// What the stand-in serves: the pods it lists, the open watches, and what it was asked.
#[derive(Default)]
pub struct Fake {
    pub pods: Vec<Value>,
    pub resource_version: u64,
    pub watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    pub watch_requests: usize,
    /// Lists of pods served.
    pub list_requests: usize,
    /// The node's region label, and the node requests seen (by name).
    pub region: Option<String>,
    pub node_requests: Vec<String>,
    /// Going away: every request still reaching the server is answered 503, so that no watch
    /// opens while it shuts down (a re-watch racing the shutdown would otherwise stay open).
    pub down: bool,
}

pub type Shared = Arc<Mutex<Fake>>;

impl Fake {
    pub fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Sends a watch event to every open watch.
    pub fn send(&mut self, event: Value) {
        let line = Bytes::from(format!("{event}\n"));
        self.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    /// Adds a pod to the list; with `announce`, also as an ADDED event to open watches.
    pub fn add(&mut self, mut pod: Value, announce: bool) {
        pod["metadata"]["resourceVersion"] = json!(self.bump());
        self.pods.push(pod.clone());
        if announce {
            self.send(json!({"type": "ADDED", "object": pod}));
        }
    }

    pub fn modify(&mut self, uid: &str, f: impl FnOnce(&mut Value)) {
        let rv = self.bump();
        let Some(pod) = self.pods.iter_mut().find(|p| p["metadata"]["uid"] == uid) else {
            return;
        };
        f(pod);
        pod["metadata"]["resourceVersion"] = json!(rv);
        let pod = pod.clone();
        self.send(json!({"type": "MODIFIED", "object": pod}));
    }

    pub fn delete(&mut self, uid: &str) {
        let rv = self.bump();
        if let Some(i) = self.pods.iter().position(|p| p["metadata"]["uid"] == uid) {
            let mut pod = self.pods.remove(i);
            pod["metadata"]["resourceVersion"] = json!(rv);
            self.send(json!({"type": "DELETED", "object": pod}));
        }
    }

    /// The watch's resource version is too old: the client must list again.
    pub fn gone(&mut self) {
        self.send(json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410
        }}));
        self.watchers.clear();
    }
}

/// What a server going away answers.
fn unavailable() -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "ServiceUnavailable", "code": 503, "message": "the server is shutting down"});
    (StatusCode::SERVICE_UNAVAILABLE, status.to_string()).into_response()
}

async fn pods(State(fake): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let mut f = fake.lock().unwrap();
    if f.down {
        return unavailable();
    }
    let selector = q
        .iter()
        .find(|(k, _)| k == "fieldSelector")
        .map(|(_, v)| v.clone());
    if selector != Some(format!("spec.nodeName={NODE}")) {
        return (
            StatusCode::BAD_REQUEST,
            "the agent must select its node's pods",
        )
            .into_response();
    }
    if q.iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    {
        f.watch_requests += 1;
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        f.watchers.push(tx);
        // The API server ends a watch after the timeoutSeconds asked for.
        let ends = q
            .iter()
            .find(|(k, _)| k == "timeoutSeconds")
            .and_then(|(_, v)| v.parse().ok())
            .map_or(Duration::MAX, Duration::from_secs);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        })
        .take_until(tokio::time::sleep(ends));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    f.list_requests += 1;
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": f.resource_version.to_string()},
        "items": f.pods,
    });
    ([("content-type", "application/json")], list.to_string()).into_response()
}

/// `GET /api/v1/nodes/<name>`: [`NODE`], labelled with the fake's region; any other name is
/// not found.
async fn node(State(fake): State<Shared>, Path(name): Path<String>) -> Response {
    let mut f = fake.lock().unwrap();
    if f.down {
        return unavailable();
    }
    f.node_requests.push(name.clone());
    if name != NODE {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("nodes \"{name}\" not found")});
        return (StatusCode::NOT_FOUND, status.to_string()).into_response();
    }
    let labels = match &f.region {
        Some(r) => json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/region": r}),
        None => json!({"kubernetes.io/hostname": name}),
    };
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": "n-1", "resourceVersion": "7", "labels": labels}});
    ([("content-type", "application/json")], node.to_string()).into_response()
}

/// The stand-in API server's routes: pods (list and watch) and one node.
pub fn router(fake: Shared) -> Router {
    Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/nodes/{name}", get(node))
        .with_state(fake)
}

/// A kubeconfig pointing at the stand-in API server on `port`, in the temporary directory.
pub fn kubeconfig(name: &str, port: u16) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("wattlet-{name}-{}", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n"
        ),
    )?;
    Ok(path)
}

/// A pod of namespace `shop` on [`NODE`] whose containers (name, containerd id) are running.
pub fn pod(uid: &str, name: &str, containers: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"uid": uid, "name": name, "namespace": "shop",
                     "managedFields": [{"manager": "kubelet"}]},
        "spec": {"nodeName": NODE, "containers": [{"name": "x"}]},
        "status": {"containerStatuses": containers.iter().map(|(n, id)| json!({
            "name": n, "containerID": format!("containerd://{id}"), "image": "i",
            "imageID": "i", "ready": true, "restartCount": 0
        })).collect::<Vec<_>>()}
    })
}

/// The stand-in serving on a loopback port of its own, on a runtime of its own; stopped (every
/// connection refused) or black-holed (connections accepted, never answered), and started again
/// on the same port, at will.
pub struct ApiServer {
    pub fake: Shared,
    pub port: u16,
    rt: tokio::runtime::Runtime,
    stop: Option<oneshot::Sender<()>>,
    black_hole: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
    /// Connections the black hole accepted: held open, never answered, for as long as this
    /// lives (their packets were lost in a partition, as far as the client can tell).
    swallowed: Arc<Mutex<Vec<TcpStream>>>,
}

impl ApiServer {
    pub fn start(fake: Shared) -> Result<Self> {
        let mut s = Self {
            fake,
            port: crate::free_port()?,
            rt: tokio::runtime::Runtime::new()?,
            stop: None,
            black_hole: None,
            swallowed: Arc::default(),
        };
        s.resume()?;
        Ok(s)
    }

    /// Serves again (after [`ApiServer::stop`] or [`ApiServer::black_hole`]); a no-op while
    /// serving. Connections the black hole took stay unanswered.
    pub fn resume(&mut self) -> Result<()> {
        if self.stop.is_some() {
            return Ok(());
        }
        if let Some((done, accepting)) = self.black_hole.take() {
            done.store(true, Ordering::Relaxed);
            let _ = accepting.join();
        }
        self.fake.lock().unwrap().down = false;
        let app = router(self.fake.clone());
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))?;
        let (stop, stopped) = oneshot::channel::<()>();
        self.rt.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        self.stop = Some(stop);
        Ok(())
    }

    /// Ends the open watches and stops listening: from now on connections are refused.
    pub fn stop(&mut self) {
        {
            let mut f = self.fake.lock().unwrap();
            f.down = true;
            f.watchers.clear();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Ends the open watches and stops serving, but keeps accepting connections and never
    /// answers on them: a partition or a hung API server, rather than a refusal.
    pub fn black_hole(&mut self) -> Result<()> {
        self.stop();
        // The server lets go of the port once its shutdown is seen.
        let listener = crate::wait_for("the port to be free", Duration::from_secs(10), || {
            std::net::TcpListener::bind(("127.0.0.1", self.port)).ok()
        })?;
        listener.set_nonblocking(true)?;
        let done = Arc::new(AtomicBool::new(false));
        let swallowed = self.swallowed.clone();
        let stop = done.clone();
        let accepting = thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => swallowed.lock().unwrap().push(conn),
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        self.black_hole = Some((done, accepting));
        Ok(())
    }

    /// A kubeconfig pointing here.
    pub fn kubeconfig(&self, name: &str) -> Result<PathBuf> {
        kubeconfig(name, self.port)
    }
}
