//! The map operations aya 0.14 does not offer, so that moving to a newer aya is a one-file change:
//! - putting perf event fds into a PERF_EVENT_ARRAY (aya 0.15 added `PerfEventArray::set`);
//! - `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a per-CPU hash, so a dead cgroup's last counts are read
//!   and its entry removed in one step, with nothing charged in between lost.
//!
//! - `BPF_MAP_LOOKUP_BATCH` on a per-CPU hash, so that reading every entry takes a syscall per
//!   few hundred entries instead of two per entry (the next key, then its values).
//!
//! All check the map's layout with `BPF_OBJ_GET_INFO_BY_FD` before they hand the kernel a
//! pointer: the kernel copies as many bytes as the map declares, whatever the caller passed.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    sync::OnceLock,
};

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;

/// The kernel lays out per-CPU values with this stride (`round_up(value_size, 8)`).
const PERCPU_STRIDE: usize = 8;

/// The part of `union bpf_attr` used by BPF_MAP_*_ELEM commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The part of `union bpf_attr` used by BPF_MAP_*_BATCH commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The part of `union bpf_attr` used by BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The leading fields of `struct bpf_map_info`: the kernel fills as much as we ask for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct MapInfo {
    type_: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: every caller passes the bpf_attr prefix its command reads, alive and writable for
    // the call; the pointers inside it are checked by the callers against the map's layout
    // (map_info), so the kernel reads and writes only memory they own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A,
            std::mem::size_of::<A>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The map's type and sizes.
fn map_info(map: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = MapInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: map.as_raw_fd() as u32,
        info_len: std::mem::size_of::<MapInfo>() as u32,
        info: &mut info as *mut MapInfo as u64,
    };
    // The kernel writes at most info_len bytes into info, which is that long.
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

impl std::fmt::Display for MapInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "map {} (type {}, {}-byte keys, {}-byte values)",
            self.id, self.type_, self.key_size, self.value_size
        )
    }
}

fn layout_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Puts `event` at index `cpu` of a PERF_EVENT_ARRAY map.
pub fn perf_array_set(map: BorrowedFd<'_>, cpu: u32, event: BorrowedFd<'_>) -> io::Result<()> {
    let info = map_info(map)?;
    if info.type_ != BPF_MAP_TYPE_PERF_EVENT_ARRAY || info.key_size != 4 || info.value_size != 4 {
        return Err(layout_error(format!(
            "{info} is not a PERF_EVENT_ARRAY with u32 keys and values"
        )));
    }
    let key = cpu;
    let value = event.as_raw_fd() as u32;
    // The kernel reads key_size (4) bytes from key and value_size (4) from value.
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &mut MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        },
    )
}

/// Checks that `map` is a per-CPU hash of `K` keys and `V` values, at the kernel's stride.
fn check_percpu_hash<K, V>(map: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let info = map_info(map)?;
    let size = std::mem::size_of::<V>();
    if !matches!(
        info.type_,
        BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_LRU_PERCPU_HASH
    ) || info.key_size as usize != std::mem::size_of::<K>()
        || info.value_size as usize != size
    {
        let key_type = std::any::type_name::<K>();
        let key_type = key_type.rsplit("::").next().unwrap_or(key_type);
        return Err(layout_error(format!(
            "{info} is not a per-CPU hash of {key_type} keys and {size}-byte values"
        )));
    }
    // The kernel writes value_size bytes per possible CPU, each at an 8-byte stride.
    if !size.is_multiple_of(PERCPU_STRIDE) {
        return Err(layout_error(format!(
            "per-CPU values sit at an {PERCPU_STRIDE}-byte stride: {size}-byte values cannot be \
             read into a slice"
        )));
    }
    Ok(info)
}

/// Entries asked for per BPF_MAP_LOOKUP_BATCH call (more when one hash bucket holds more).
const BATCH: usize = 256;

/// Reads every entry of a per-CPU hash with `K` keys, calling `each` with the key and its
/// values (one `V` per possible CPU), a batch of entries per syscall. Returns false, having
/// called nothing, where the kernel has no batch lookup (before 5.6): read entry by entry then.
/// An entry added or deleted during the walk may be seen or not, as with a key-by-key walk.
pub fn percpu_for_each<K: aya::Pod + Default, V: aya::Pod + Default>(
    map: BorrowedFd<'_>,
    mut each: impl FnMut(K, &[V]),
) -> io::Result<bool> {
    check_percpu_hash::<K, V>(map)?;
    let cpus = possible_cpus()?;
    let mut chunk = BATCH;
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    // The hash map's batch token is a bucket index (u32); 8 bytes leave room to spare.
    let (mut token, mut first) = (0u64, true);
    loop {
        keys.resize(chunk, K::default());
        values.resize(chunk * cpus, V::default());
        let mut next = 0u64;
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u64 as u64
            },
            out_batch: &mut next as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // The kernel writes at most `count` keys and `count` × possible CPUs values, at the
        // layout checked above, which is what the buffers hold.
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // A bucket holds more entries than asked for: ask for more.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < (1 << 20) => {
                chunk *= 4;
                continue;
            }
            Err(e) if first && unsupported(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let n = (attr.count as usize).min(chunk);
        for (key, values) in keys[..n].iter().zip(values.chunks_exact(cpus)) {
            each(*key, values);
        }
        if done {
            return Ok(true);
        }
        (token, first) = (next, false);
    }
}

/// The kernel has no batch operations for this map (EINVAL before 5.6, ENOTSUPP = 524).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// Reads and deletes one entry of a per-CPU hash with `K` keys into `values`, one `V` per
/// possible CPU. Returns false if the key was not there. Fails without a syscall on the entry if
/// the map's keys are not `K`, its values are not `V`, or `values` is shorter than the possible
/// CPUs.
pub fn percpu_lookup_and_delete<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    key: K,
    values: &mut [V],
) -> io::Result<bool> {
    check_percpu_hash::<K, V>(map)?;
    let cpus = possible_cpus()?;
    if values.len() < cpus {
        return Err(layout_error(format!(
            "{} values cannot hold one per possible CPU ({cpus})",
            values.len()
        )));
    }
    match bpf(
        BPF_MAP_LOOKUP_AND_DELETE_ELEM,
        &mut MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const K as u64,
            value: values.as_mut_ptr() as u64,
            flags: 0,
        },
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The kernel's possible CPUs (per-CPU maps have a slot for each), read once.
fn possible_cpus() -> io::Result<usize> {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if let Some(n) = CPUS.get() {
        return Ok(*n);
    }
    let n = aya::util::nr_cpus()
        .map_err(|(path, e)| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    Ok(*CPUS.get_or_init(|| n))
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;

    #[repr(C)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }

    /// A per-CPU hash of u64 keys and `value_size`-byte values, or None without CAP_BPF.
    fn percpu_hash(value_size: u32) -> Option<OwnedFd> {
        percpu_hash_of(value_size, 4)
    }

    fn percpu_hash_of(value_size: u32, max_entries: u32) -> Option<OwnedFd> {
        let mut attr = CreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_HASH,
            key_size: 8,
            value_size,
            max_entries,
        };
        // SAFETY: attr is a valid BPF_MAP_CREATE prefix, alive for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                &mut attr as *mut CreateAttr,
                std::mem::size_of::<CreateAttr>() as u32,
            )
        };
        if fd < 0 {
            println!("no BPF map here: {}", io::Error::last_os_error());
            return None;
        }
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    #[test]
    fn lookup_and_delete_checks_the_buffer_and_the_layout() {
        let Some(map) = percpu_hash(16) else { return };
        let cpus = possible_cpus().unwrap();
        let fd = map.as_fd();
        let values: Vec<[u64; 2]> = (0..cpus as u64).map(|c| [c, 100 + c]).collect();
        let key = 7u64;
        update(fd, key, &values);

        let mut short = vec![[0u64; 2]; cpus - 1];
        let e = percpu_lookup_and_delete(fd, key, &mut short).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let mut wrong_size = vec![0u64; cpus * 2];
        let e = percpu_lookup_and_delete(fd, key, &mut wrong_size).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("16-byte values) is not a per-CPU hash of u64 keys and 8-byte values"),
            "{e}"
        );

        let mut out = vec![[0u64; 2]; cpus];
        assert!(percpu_lookup_and_delete(fd, key, &mut out).unwrap());
        assert_eq!(
            out, values,
            "read whole, after both refusals left the entry alone"
        );
        assert!(
            !percpu_lookup_and_delete(fd, key, &mut out).unwrap(),
            "deleted"
        );
    }

    fn update(fd: BorrowedFd<'_>, key: u64, values: &[[u64; 2]]) {
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut MapElemAttr {
                map_fd: fd.as_raw_fd() as u32,
                _pad: 0,
                key: &key as *const u64 as u64,
                value: values.as_ptr() as u64,
                flags: 0,
            },
        )
        .unwrap();
    }

    #[test]
    fn for_each_reads_every_entry_across_batches_and_checks_the_layout() {
        // More entries than one batch asks for, so that the walk takes several calls.
        let n = 3 * BATCH as u64 + 7;
        let Some(map) = percpu_hash_of(16, n as u32) else {
            return;
        };
        let cpus = possible_cpus().unwrap();
        let fd = map.as_fd();
        let mut seen = Vec::new();
        assert!(percpu_for_each(fd, |k: u64, _: &[[u64; 2]]| seen.push(k)).unwrap());
        assert!(seen.is_empty(), "an empty map has no entries");
        for key in 0..n {
            let values: Vec<[u64; 2]> = (0..cpus as u64).map(|c| [key, c]).collect();
            update(fd, key, &values);
        }
        let mut seen = Vec::new();
        let batched = percpu_for_each(fd, |k: u64, v: &[[u64; 2]]| {
            assert_eq!(v.len(), cpus);
            assert!(v.iter().enumerate().all(|(c, x)| *x == [k, c as u64]));
            seen.push(k);
        })
        .unwrap();
        assert!(batched, "kernel 5.6+ has batch lookups");
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "each entry once");
        let e = percpu_for_each(fd, |_: u64, _: &[u64]| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn perf_array_set_refuses_other_maps() {
        let Some(map) = percpu_hash(8) else { return };
        let e = perf_array_set(map.as_fd(), 0, map.as_fd()).unwrap_err();
        assert!(e.to_string().contains("not a PERF_EVENT_ARRAY"), "{e}");
    }
}
