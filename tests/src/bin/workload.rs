//! Known workloads for the tests, run inside test cgroups.
//!
//!   spin <seconds>                     busy loop for that long (wall clock), then exit
//!   burn <cpu-seconds>                 busy loop until this process has used that much CPU
//!   sleep <count> <micros>             sleep `count` times
//!   storm <count> <child_micros> <parallel>
//!                                      fork `count` children that each spin `child_micros`
//!                                      and exit, keeping `parallel` in flight

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..1000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    black_box(x);
}

/// CPU time this process has used.
fn own_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; the clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("wattlet-workload: missing or bad <{what}>"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("spin") => spin_for(Duration::from_secs_f64(arg(&args, 2, "seconds"))),
        Some("burn") => {
            let target = Duration::from_secs_f64(arg(&args, 2, "cpu-seconds"));
            while own_cpu() < target {
                spin_for(Duration::from_millis(1));
            }
        }
        Some("sleep") => {
            let n: u64 = arg(&args, 2, "count");
            let us: u64 = arg(&args, 3, "micros");
            for _ in 0..n {
                std::thread::sleep(Duration::from_micros(us));
            }
        }
        Some("storm") => {
            let n: u64 = arg(&args, 2, "count");
            let child = Duration::from_micros(arg(&args, 3, "child_micros"));
            let parallel: u64 = arg(&args, 4, "parallel");
            let mut in_flight = 0;
            let mut started = 0;
            let mut failed = 0;
            while started < n || in_flight > 0 {
                while started < n && in_flight < parallel {
                    // SAFETY: the child only spins and calls _exit: no locks, no allocation.
                    match unsafe { libc::fork() } {
                        0 => {
                            spin_for(child);
                            // SAFETY: ends the child without running the parent's destructors.
                            unsafe { libc::_exit(0) }
                        }
                        -1 => {
                            failed += 1;
                            std::thread::sleep(Duration::from_millis(1));
                            if failed > 1000 {
                                eprintln!("wattlet-workload: fork keeps failing");
                                std::process::exit(1);
                            }
                        }
                        _ => {
                            started += 1;
                            in_flight += 1;
                        }
                    }
                }
                let mut status = 0;
                // SAFETY: waits for any child; status is a valid out pointer.
                if unsafe { libc::waitpid(-1, &mut status, 0) } > 0 {
                    in_flight -= 1;
                }
            }
            println!("{started}");
        }
        _ => {
            eprintln!(
                "usage: wattlet-workload spin <s> | sleep <n> <us> | storm <n> <us> <parallel>"
            );
            std::process::exit(2);
        }
    }
}
