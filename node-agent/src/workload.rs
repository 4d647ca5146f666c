//! Workloads: what a cgroup is. A container (runtime, container id, and the pod it belongs to),
//! a virtual machine (a QEMU/KVM guest of libvirt or Proxmox), or a non-container cgroup, named
//! by its path cut to a configurable depth (`/system.slice/sshd.service`).

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

/// A virtual machine: a hypervisor's guest, known from the cgroup it runs in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vm {
    /// `kvm`, as Kepler names QEMU/KVM guests (libvirt's and Proxmox's both are).
    pub hypervisor: &'static str,
    /// libvirt: the domain's name (its numeric id changes each time it starts); Proxmox: the
    /// VM id.
    pub id: Arc<str>,
    /// libvirt: the domain's name; Proxmox: the VM id, the only name its cgroup gives.
    pub name: Arc<str>,
}

/// The unit energy and CPU time are reported by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    Container(Container),
    /// A non-container cgroup, by its path cut to the configured depth.
    Cgroup(Arc<str>),
    /// A virtual machine (KubeVirt's are pods: they run in a virt-launcher pod's container).
    Vm(Vm),
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container's cgroup named by its runtime: `cri-containerd-<id>.scope`, `crio-<id>.scope`
/// (and `crio-conmon-<id>.scope`, the container's monitor), `docker-<id>.scope`,
/// `libpod-<id>.scope` (and `libpod-conmon-<id>.scope`) under the systemd driver; the same
/// names without `.scope` under the cgroupfs driver (`crio-<id>`, `libpod-<id>`).
fn container_scope(component: &str) -> Option<(&'static str, &str)> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
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

/// `kubepods-besteffort.slice`, kind's `kubelet-kubepods-burstable.slice`, or cgroupfs's
/// `besteffort` / `burstable`.
fn qos(component: &str) -> Option<Qos> {
    let stem = component.strip_suffix(".slice").unwrap_or(component);
    if stem == "besteffort" || stem.ends_with("kubepods-besteffort") {
        Some(Qos::BestEffort)
    } else if stem == "burstable" || stem.ends_with("kubepods-burstable") {
        Some(Qos::Burstable)
    } else {
        None
    }
}

/// systemd's unit-name escaping undone: `\x2d` → `-`, any `\xNN` → that byte.
fn unescape_unit(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 2..i + 4)
            .filter(|_| bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x'))
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A QEMU guest's cgroup: libvirt's `machine-qemu\x2d<id>\x2d<name>.scope` (systemd; older
/// libvirt without the id), `qemu-<id>-<name>.libvirt-qemu` (cgroupfs; older: `<name>.libvirt-qemu`),
/// or Proxmox's `<vmid>.scope` under `qemu.slice`.
fn vm_scope(component: &str, parent: &str) -> Option<Vm> {
    let kvm = |id: &str, name: &str| {
        Some(Vm {
            hypervisor: "kvm",
            id: id.into(),
            name: name.into(),
        })
    };
    if parent == "qemu.slice" {
        let vmid = component.strip_suffix(".scope")?;
        let numeric = !vmid.is_empty() && vmid.bytes().all(|b| b.is_ascii_digit());
        return if numeric { kvm(vmid, vmid) } else { None };
    }
    let unit = unescape_unit(component);
    let rest = match unit.strip_suffix(".scope") {
        Some(scope) => scope.strip_prefix("machine-qemu-")?,
        None => {
            let stem = unit.strip_suffix(".libvirt-qemu")?;
            stem.strip_prefix("qemu-").unwrap_or(stem)
        }
    };
    let name = match rest.split_once('-') {
        Some((id, name)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => rest,
    };
    if name.is_empty() {
        None
    } else {
        kvm(name, name)
    }
}

/// The root of the pods' hierarchy: `kubepods.slice`, kind's `kubelet-kubepods.slice`,
/// cgroupfs's `kubepods`.
fn is_kubepods(component: &str) -> bool {
    let stem = component.strip_suffix(".slice").unwrap_or(component);
    stem == "kubepods" || stem.ends_with("-kubepods")
}

/// What the cgroup at `path` is. The outermost container component wins: cgroups below a
/// container's scope belong to it.
pub fn classify(path: &str, depth: usize) -> Workload {
    let mut pod: Option<String> = None;
    let mut class: Option<Qos> = None;
    let mut in_kubepods = false;
    let mut parent = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if is_kubepods(component) {
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
        if found.is_none()
            && let Some(vm) = vm_scope(component, parent)
        {
            return Workload::Vm(vm);
        }
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

    /// Real-looking paths of every layout: (path, runtime, pod uid, QoS).
    #[test]
    fn table_of_layouts() {
        let u = UID.replace('-', "_");
        let be = Some(Qos::BestEffort);
        let bu = Some(Qos::Burstable);
        let gu = Some(Qos::Guaranteed);
        let cases: Vec<(String, &str, Option<&str>, Option<Qos>)> = vec![
            // containerd, systemd driver: BestEffort, Burstable, Guaranteed.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some(UID),
                be,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some(UID),
                bu,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope"),
                "containerd",
                Some(UID),
                gu,
            ),
            // CRI-O, systemd driver, and its conmon scope (the container's monitor).
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-{ID}.scope"
                ),
                "cri-o",
                Some(UID),
                bu,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{ID}.scope"
                ),
                "cri-o",
                Some(UID),
                bu,
            ),
            // cri-dockerd, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/docker-{ID}.scope"
                ),
                "docker",
                Some(UID),
                be,
            ),
            // cgroupfs driver: containerd (bare id), CRI-O, uid with dashes; Guaranteed.
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                "cri",
                Some(UID),
                be,
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                "cri-o",
                Some(UID),
                bu,
            ),
            (format!("/kubepods/pod{UID}/{ID}"), "cri", Some(UID), gu),
            // kind: the node's kubelet nests the pods under kubelet.slice.
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some(UID),
                be,
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some(UID),
                gu,
            ),
            // Below a container's scope: still the container.
            (
                format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope/init"),
                "containerd",
                Some(UID),
                gu,
            ),
            // Docker and podman outside Kubernetes, both drivers; rootless podman.
            (
                format!("/system.slice/docker-{ID}.scope"),
                "docker",
                None,
                None,
            ),
            (format!("/docker/{ID}"), "docker", None, None),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
                None,
                None,
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                "podman",
                None,
                None,
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                "podman",
                None,
                None,
            ),
            (format!("/libpod_parent/libpod-{ID}"), "podman", None, None),
        ];
        for (path, runtime, pod, qos) in cases {
            let c = container(&path);
            assert_eq!(
                (c.runtime, &*c.id, c.pod_uid.as_deref(), c.qos),
                (runtime, ID, pod, qos),
                "{path}"
            );
        }
    }

    #[test]
    fn the_pod_sandbox_belongs_to_its_pod() {
        // The pause container's scope is a container of the pod like any other.
        let u = UID.replace('-', "_");
        let sandbox = "f".repeat(64);
        let c = container(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{sandbox}.scope"
        ));
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
    }

    fn vm(path: &str) -> (String, String) {
        match classify(path, 2) {
            Workload::Vm(v) => {
                assert_eq!(v.hypervisor, "kvm", "{path}");
                (v.id.to_string(), v.name.to_string())
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Virtual machines as libvirt (systemd and cgroupfs, old and new names) and Proxmox lay
    /// them out: (path, vm_id, vm_name).
    #[test]
    fn table_of_vm_layouts() {
        let cases = [
            (
                r"/machine.slice/machine-qemu\x2d1\x2dtestvm.scope",
                "testvm",
            ),
            // Below the scope: libvirt's own sub-cgroups.
            (
                r"/machine.slice/machine-qemu\x2d12\x2dweb\x2d01.scope/libvirt/vcpu0",
                "web-01",
            ),
            (
                r"/machine.slice/machine-qemu\x2d3\x2dweb.scope/emulator",
                "web",
            ),
            // Older libvirt: no domain id in the name.
            (r"/machine.slice/machine-qemu\x2ddb.scope", "db"),
            // A custom partition.
            (
                r"/machine.slice/machine-tenant.slice/machine-qemu\x2d7\x2dvm\x2eone.scope",
                "vm.one",
            ),
            // cgroupfs driver.
            ("/machine/qemu-2-guest.libvirt-qemu", "guest"),
            ("/machine/guest2.libvirt-qemu/vcpu1", "guest2"),
        ];
        for (path, name) in cases {
            assert_eq!(vm(path), (name.to_owned(), name.to_owned()), "{path}");
        }
        assert_eq!(vm("/qemu.slice/100.scope"), ("100".into(), "100".into()));
        assert_eq!(
            vm("/qemu.slice/101.scope/vcpu0"),
            ("101".into(), "101".into())
        );
    }

    #[test]
    fn not_vms() {
        for path in [
            // Not QEMU guests: systemd-nspawn and LXC machines, Proxmox's LXC containers.
            r"/machine.slice/machine-lxc\x2d1234\x2dbox.scope",
            r"/machine.slice/systemd-nspawn@box.service",
            "/lxc/105",
            "/qemu.slice/abc.scope",
            "/qemu.slice",
            r"/machine.slice/machine-qemu\x2d1\x2d.scope",
            "/system.slice/100.scope",
        ] {
            assert!(matches!(classify(path, 2), Workload::Cgroup(_)), "{path}");
        }
        // Podman's containers share machine.slice: still containers.
        assert!(matches!(
            classify(&format!("/machine.slice/libpod-{ID}.scope"), 2),
            Workload::Container(_)
        ));
        // KubeVirt: the guest runs in its virt-launcher pod's container, a pod like any other.
        let u = UID.replace('-', "_");
        let c = container(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn unescapes_systemd_names() {
        assert_eq!(unescape_unit(r"a\x2db\x5cc"), r"a-b\c");
        assert_eq!(unescape_unit(r"\x"), r"\x");
        assert_eq!(unescape_unit(r"\xz1\x2"), r"\xz1\x2");
        assert_eq!(unescape_unit(r"\xff"), "\u{fffd}");
    }

    proptest::proptest! {
        /// No input makes the parser panic, and a cgroup is always named by a path that starts
        /// with `/`.
        #[test]
        fn never_panics(path in "\\PC{0,300}", depth in 0usize..6) {
            match classify(&path, depth) {
                Workload::Cgroup(p) => proptest::prop_assert!(p.starts_with('/')),
                Workload::Container(c) => proptest::prop_assert_eq!(c.id.len(), 64),
                Workload::Vm(v) => proptest::prop_assert!(!v.id.is_empty() && !v.name.is_empty()),
            }
        }

        /// Nor do paths built from the pieces the parser looks for.
        #[test]
        fn never_panics_on_near_misses(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("kubepods.slice".to_owned()),
                    proptest::strategy::Just("kubepods-burstable.slice".to_owned()),
                    "kubepods-pod[0-9a-f_]{0,40}\\.slice",
                    "pod[0-9a-f-]{0,40}",
                    "(cri-containerd-|crio-|crio-conmon-|docker-|libpod-)[0-9a-f]{0,70}(\\.scope)?",
                    "[0-9a-f]{60,68}",
                    "[a-z.@-]{0,12}",
                    proptest::strategy::Just("machine.slice".to_owned()),
                    proptest::strategy::Just("qemu.slice".to_owned()),
                    "machine-qemu(\\\\x2d[0-9a-z]{0,4}){0,3}(\\\\x[0-9a-fz]{0,2})?(\\.scope)?",
                    "(qemu-)?[0-9]{0,3}-?[a-z]{0,4}\\.libvirt-qemu",
                    "[0-9]{0,4}\\.scope",
                ],
                0..8,
            ),
        ) {
            let path = format!("/{}", parts.join("/"));
            let _ = classify(&path, 3);
        }
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
