//! The cgroup v2 hierarchy: where it is mounted, and which directory a cgroup id names.
//!
//! A cgroup's id (what `bpf_get_current_cgroup_id()` returns) is the inode number of its directory
//! in the v2 hierarchy. The agent caches id → path and rescans the tree when it meets an id it does
//! not know, at most once per read cycle.

use crate::ids::IdMap;
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};

/// A cgroup v2 mount found in mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// The cgroup this mount shows as its root (`/` unless inside a cgroup namespace).
    pub root: String,
}

/// Finds the cgroup v2 mount in the text of `/proc/self/mountinfo`: /sys/fs/cgroup on a pure-v2
/// host, /sys/fs/cgroup/unified on a hybrid one. Prefers a mount of the hierarchy's root.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    let mut found: Option<Cgroup2Mount> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 5 || fields.get(sep + 1) != Some(&"cgroup2") {
            continue;
        }
        let mount = Cgroup2Mount {
            mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            root: unescape_mountinfo(fields[3]),
        };
        if mount.root == "/" {
            return Some(mount);
        }
        found.get_or_insert(mount);
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads this process's own mountinfo and returns the cgroup v2 mount, or says what to do.
/// Always the live `/proc/self`, never `--path.procfs`: the eBPF side counts in this kernel, so
/// its cgroups must be named from the mounts this process sees.
pub fn locate_cgroup2() -> Result<Cgroup2Mount> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading {} to find the cgroup v2 mount", path.display()))?;
    match find_cgroup2_mount(&text) {
        Some(m) => Ok(m),
        None => bail!(
            "no cgroup v2 (cgroup2) filesystem is mounted (looked in {}): Wattlet needs the unified \
             hierarchy; mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with \
             systemd.unified_cgroup_hierarchy=1",
            path.display()
        ),
    }
}

/// Whether a cgroup id names a live cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Alive, at this path relative to the hierarchy root (`/` for the root cgroup).
    Alive(Arc<str>),
    /// No directory with that id exists any more (or never did).
    Gone,
}

/// Cache of cgroup id → path, over one cgroup v2 mount.
#[derive(Debug)]
pub struct CgroupTree {
    mount: PathBuf,
    by_id: IdMap<u64, Arc<str>>,
    rescanned_this_cycle: bool,
    scans: u64,
}

impl CgroupTree {
    pub fn new(mount: impl Into<PathBuf>) -> Self {
        Self {
            mount: mount.into(),
            by_id: IdMap::default(),
            rescanned_this_cycle: false,
            scans: 0,
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// How many full scans of the tree have been made (for self-monitoring).
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Starts a read cycle: allows one more rescan.
    pub fn begin_cycle(&mut self) {
        self.rescanned_this_cycle = false;
    }

    /// Says whether `id` is a live cgroup, and where. A cached path is confirmed with one `stat`
    /// (a new cgroup at the same path has a new id); an unknown or stale id triggers one rescan
    /// per cycle.
    pub fn lookup(&mut self, id: u64) -> Lookup {
        if let Some(path) = self.by_id.get(&id) {
            if self.inode_of(path) == Some(id) {
                return Lookup::Alive(path.clone());
            }
            self.by_id.remove(&id);
        }
        if !self.rescanned_this_cycle {
            self.rescan();
            if let Some(path) = self.by_id.get(&id) {
                return Lookup::Alive(path.clone());
            }
        }
        Lookup::Gone
    }

    /// Path of a cached id without touching the filesystem.
    pub fn cached_path(&self, id: u64) -> Option<Arc<str>> {
        self.by_id.get(&id).cloned()
    }

    fn inode_of(&self, rel: &str) -> Option<u64> {
        fs::metadata(self.abs(rel)).ok().map(|m| m.ino())
    }

    fn abs(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }

    /// Walks the whole hierarchy and rebuilds the cache.
    pub fn rescan(&mut self) {
        self.rescanned_this_cycle = true;
        self.scans += 1;
        self.by_id.clear();
        let mut stack = vec![(self.mount.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            // A cgroup can vanish while we walk: skip what we cannot read.
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            self.by_id.insert(meta.ino(), Arc::from(rel.as_str()));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
";
    const PURE_V2: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_hybrid_mount() {
        let m = find_cgroup2_mount(HYBRID).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, "/");
    }

    #[test]
    fn finds_pure_v2_mount() {
        let m = find_cgroup2_mount(PURE_V2).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn none_without_cgroup2() {
        let v1_only: String = HYBRID.lines().filter(|l| !l.contains("cgroup2")).collect();
        assert_eq!(find_cgroup2_mount(&v1_only), None);
        assert_eq!(find_cgroup2_mount(""), None);
        assert_eq!(find_cgroup2_mount("garbage\n- cgroup2\n1 2 3"), None);
    }

    #[test]
    fn prefers_root_mount_over_namespaced_one() {
        let text = "\
40 1 0:50 /kubepods/pod1 /host/cg rw - cgroup2 cgroup2 rw
41 1 0:50 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(text).unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
        let only_ns = "40 1 0:50 /kubepods/pod1 /host/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2_mount(only_ns).unwrap().root, "/kubepods/pod1");
    }

    #[test]
    fn unescapes_octal() {
        let text = "41 1 0:50 / /mnt/with\\040space rw shared:1 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(text).unwrap().mount_point,
            PathBuf::from("/mnt/with space")
        );
        assert_eq!(unescape_mountinfo("a\\134b"), "a\\b");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn id_to_path_cache_follows_the_tree() {
        let dir = tempdir();
        let root = dir.join("cg");
        fs::create_dir_all(root.join("system.slice/sshd.service")).unwrap();
        let mut tree = CgroupTree::new(&root);

        let sshd = ino(&root.join("system.slice/sshd.service"));
        tree.begin_cycle();
        assert_eq!(
            tree.lookup(sshd),
            Lookup::Alive(Arc::from("/system.slice/sshd.service"))
        );
        assert_eq!(tree.lookup(ino(&root)), Lookup::Alive(Arc::from("/")));
        assert_eq!(tree.scans(), 1, "one scan serves every id of the cycle");

        // A new cgroup appears: unknown in this cycle once scanned, found in the next.
        fs::create_dir(root.join("system.slice/new.service")).unwrap();
        let new = ino(&root.join("system.slice/new.service"));
        assert_eq!(tree.lookup(new), Lookup::Gone);
        tree.begin_cycle();
        assert_eq!(
            tree.lookup(new),
            Lookup::Alive(Arc::from("/system.slice/new.service"))
        );

        // Removed: reported gone, and a cached hit does not rescan.
        let scans = tree.scans();
        tree.begin_cycle();
        assert!(matches!(tree.lookup(sshd), Lookup::Alive(_)));
        assert_eq!(tree.scans(), scans);
        fs::remove_dir(root.join("system.slice/sshd.service")).unwrap();
        assert_eq!(tree.lookup(sshd), Lookup::Gone);

        // Same path, new directory: the old id is gone, the new one is alive.
        fs::create_dir(root.join("system.slice/sshd.service")).unwrap();
        let again = ino(&root.join("system.slice/sshd.service"));
        tree.begin_cycle();
        assert_eq!(
            tree.lookup(again),
            Lookup::Alive(Arc::from("/system.slice/sshd.service"))
        );
        if again != sshd {
            assert_eq!(tree.lookup(sshd), Lookup::Gone);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "wattlet-cgroup-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }
}
