//! Host text: cgroup paths (from the kernel's map, `/proc/<pid>/cgroup`), `/proc/self/mountinfo`
//! and `/proc/cpuinfo`.

use std::{collections::HashSet, path::PathBuf};

use super::input::Fields;
use crate::{
    cgroup::find_cgroup2_mount,
    kernel::cpuinfo::parse_cpuinfo,
    workload::{Workload, classify},
};

/// Any path is classified, at any depth, into a workload whose identity is well formed.
pub fn cgroup_path(data: &[u8]) {
    let path = String::from_utf8_lossy(data);
    for depth in [0, 2, 5] {
        match classify(&path, depth) {
            Workload::Cgroup(p) => assert!(p.starts_with('/'), "{p:?}"),
            Workload::Container(c) => assert_eq!(c.id.len(), 64, "{c:?}"),
            Workload::Vm(v) => assert!(!v.id.is_empty() && !v.name.is_empty(), "{v:?}"),
        }
    }
}

/// One entry per distinct `processor`, whatever the text.
pub fn cpuinfo(data: &[u8]) {
    let cpus = parse_cpuinfo(&String::from_utf8_lossy(data));
    let distinct: HashSet<&str> = cpus.iter().map(|c| c.processor.as_str()).collect();
    assert_eq!(distinct.len(), cpus.len());
    for c in &cpus {
        for v in [&c.processor, &c.vendor_id, &c.model_name, &c.physical_id] {
            assert!(!v.contains('\n') && v.trim() == v, "{v:?}");
        }
    }
}

/// Fields: the text of a mountinfo, then a cgroup root and a mount point. Whatever the text, a
/// mount found comes from a cgroup2 line; and a line the kernel would write for the root and
/// mount point (both made absolute, escaped as the kernel escapes them) gives them back.
pub fn mountinfo(data: &[u8]) {
    let f = Fields::of(data);
    let text = f.get(0);
    if let Some(m) = find_cgroup2_mount(text) {
        assert!(text.contains(" - cgroup2"), "{m:?} from {text:?}");
    }
    let (root, mount_point) = (format!("/{}", f.get(1)), format!("/{}", f.get(2)));
    let line = format!(
        "36 25 0:31 {} {} rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
        escape(&root),
        escape(&mount_point)
    );
    let m = find_cgroup2_mount(&line).unwrap_or_else(|| panic!("nothing found in {line:?}"));
    assert_eq!(m.root, root, "{line:?}");
    assert_eq!(m.mount_point, PathBuf::from(&mount_point), "{line:?}");
}

/// As the kernel's `show_mountinfo` escapes a path: space, tab, newline and backslash as `\ooo`.
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect()
}
