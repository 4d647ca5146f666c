//! Workloads: what a cgroup is. A container (runtime, container id, and the pod it belongs to),
//! or a non-container cgroup, named by its path cut to a configurable depth
//! (`/system.slice/sshd.service`).

use std::sync::Arc;

/// The QoS class of a Kubernetes pod, from its cgroup's place in the hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Container {
    /// `containerd`, `cri-o`, `docker`, `podman`, or `cri` where the path does not say.
    pub runtime: &'static str,
    /// The runtime's id (64 hex digits).
    pub id: Arc<str>,
    /// The pod's uid (with `-`), if the container runs in a Kubernetes pod.
    pub pod_uid: Option<Arc<str>>,
    pub qos: Option<Qos>,
}

/// The unit energy and CPU time are reported by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    Container(Container),
    /// A non-container cgroup, by its path cut to the configured depth.
    Cgroup(Arc<str>),
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container scope of the systemd cgroup driver: `cri-containerd-<id>.scope`, `crio-<id>.scope`
/// (and `crio-conmon-<id>.scope`, the container's monitor), `docker-<id>.scope`,
/// `libpod-<id>.scope` (and `libpod-conmon-<id>.scope`).
fn container_scope(component: &str) -> Option<(&'static str, &str)> {
    let stem = component.strip_suffix(".scope")?;
    let (runtime, id) = [
        ("cri-containerd-", "containerd"),
        ("crio-conmon-", "cri-o"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
        ("libpod-conmon-", "podman"),
        ("libpod-", "podman"),
    ]
    .iter()
    .find_map(|(prefix, runtime)| stem.strip_prefix(prefix).map(|id| (*runtime, id)))?;
    is_container_id(id).then_some((runtime, id))
}

/// A pod's cgroup: `kubepods-<qos>-pod<uid>.slice` / `kubepods-pod<uid>.slice` (systemd driver,
/// uid written with `_`) or `pod<uid>` (cgroupfs driver).
fn pod_uid(component: &str) -> Option<String> {
    let uid = match component.strip_suffix(".slice") {
        Some(stem) => stem.rsplit_once("-pod")?.1,
        None => component.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

fn qos(component: &str) -> Option<Qos> {
    match component {
        "kubepods-besteffort.slice" | "besteffort" => Some(Qos::BestEffort),
        "kubepods-burstable.slice" | "burstable" => Some(Qos::Burstable),
        _ => None,
    }
}

/// What the cgroup at `path` is. The outermost container component wins: cgroups below a
/// container's scope belong to it.
pub fn classify(path: &str, depth: usize) -> Workload {
    let mut pod: Option<String> = None;
    let mut class: Option<Qos> = None;
    let mut in_kubepods = false;
    let mut parent = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if component == "kubepods" || component == "kubepods.slice" {
            in_kubepods = true;
        }
        if let Some(q) = qos(component) {
            class = Some(q);
        }
        if let Some(uid) = pod_uid(component) {
            pod = Some(uid);
        }
        let found = container_scope(component).or_else(|| {
            // cgroupfs driver: the bare id under a pod, or under /docker.
            (is_container_id(component) && (pod.is_some() || parent == "docker"))
                .then(|| (if parent == "docker" { "docker" } else { "cri" }, component))
        });
        if let Some((runtime, id)) = found {
            let pod_uid = pod.take().map(Arc::from);
            let qos = pod_uid
                .as_ref()
                .map(|_| class.unwrap_or(Qos::Guaranteed))
                .filter(|_| in_kubepods);
            return Workload::Container(Container {
                runtime,
                id: Arc::from(id),
                pod_uid,
                qos,
            });
        }
        parent = component;
    }
    Workload::Cgroup(Arc::from(cut(path, depth)))
}

/// `path` cut to its first `depth` components (`/` stays `/`).
pub fn cut(path: &str, depth: usize) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .take(depth)
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "6f1c3a2e-8a55-4b3e-9a4e-2d0f4c1b7e21";

    fn container(path: &str) -> Container {
        match classify(path, 2) {
            Workload::Container(c) => c,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn kubernetes_systemd_driver() {
        let u = UID.replace('-', "_");
        let c = container(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(
            (c.runtime, &*c.id, c.pod_uid.as_deref(), c.qos),
            ("containerd", ID, Some(UID), Some(Qos::BestEffort))
        );
        let c = container(&format!(
            "/kubepods.slice/kubepods-pod{u}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!((c.runtime, c.qos), ("cri-o", Some(Qos::Guaranteed)));
        // Below the container's scope: still the container.
        let c = container(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope/init"
        ));
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver_and_plain_runtimes() {
        let c = container(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref(), c.qos),
            ("cri", Some(UID), Some(Qos::Burstable))
        );
        let c = container(&format!("/docker/{ID}"));
        assert_eq!((c.runtime, c.pod_uid), ("docker", None));
        let c = container(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(c.runtime, "docker");
        let c = container(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(c.runtime, "podman");
    }

    #[test]
    fn everything_else_is_a_cgroup_at_depth() {
        assert_eq!(
            classify("/system.slice/sshd.service", 2),
            Workload::Cgroup("/system.slice/sshd.service".into())
        );
        assert_eq!(
            classify("/user.slice/user-0.slice/session-1.scope", 2),
            Workload::Cgroup("/user.slice/user-0.slice".into())
        );
        assert_eq!(classify("/", 2), Workload::Cgroup("/".into()));
        assert_eq!(
            classify("/kubepods.slice/kubepods-burstable.slice", 1),
            Workload::Cgroup("/kubepods.slice".into())
        );
        // Not quite ids: not containers.
        assert!(matches!(
            classify("/system.slice/docker-abc.scope", 2),
            Workload::Cgroup(_)
        ));
        assert!(matches!(
            classify(&format!("/{ID}"), 2),
            Workload::Cgroup(_)
        ));
    }
}
