//! Clocks: the monotonic clock the eBPF programs use, and the CPU time of this process.

use std::time::Duration;

/// CLOCK_MONOTONIC, the time base of `bpf_ktime_get_ns()`.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so the
    // call cannot fail and ts is filled.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time this process has used (user + system), in nanoseconds; 0 if it cannot be read.
pub fn own_cpu_ns() -> u64 {
    // SAFETY: rusage is plain data (integers only): all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable rusage; getrusage writes only into it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (time(u.ru_utime) + time(u.ru_stime)).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let (a, cpu_a) = (monotonic_now(), own_cpu_ns());
        // Burn a little CPU so that the process clock has something to count.
        let mut x = 0u64;
        while own_cpu_ns() < cpu_a + 1_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(monotonic_now() > a);
        assert!(own_cpu_ns() > cpu_a);
    }
}
