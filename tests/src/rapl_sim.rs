//! A simulated powercap RAPL tree driven by a known power law: the ground truth for energy and
//! idle power in the power and attribution tests.
//!
//! A thread reads the node's busy fraction (wall-clock time minus /proc/stat's precise idle
//! time, over a 50 ms trailing window) every step, integrates
//! `idle + busy × busy fraction` watts, and writes the energy into `class/powercap/intel-rapl:N`
//! (one package per socket, the law's power split evenly, plus a constant-power dram subzone),
//! wrapping at a small `max_energy_range_uj` so that tests cross several wraps. Files are
//! replaced by rename, as a reader of sysfs sees a whole value. The history of the law's integral
//! is kept so that a test can ask what it was at any instant.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};

/// `idle_watts + busy_watts × busy fraction` (busy fraction of all CPUs, 0..=1).
#[derive(Clone, Copy, Debug)]
pub struct PowerLaw {
    pub idle_watts: f64,
    pub busy_watts: f64,
}

impl PowerLaw {
    pub fn watts(&self, busy_fraction: f64) -> f64 {
        self.idle_watts + self.busy_watts * busy_fraction
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub law: PowerLaw,
    pub sockets: u32,
    /// Each counter wraps after this many µJ.
    pub max_energy_range_uj: u64,
    /// Constant power of each socket's dram subzone (not part of the law).
    pub dram_watts_per_socket: f64,
    pub step: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            law: PowerLaw {
                idle_watts: 40.0,
                busy_watts: 60.0,
            },
            sockets: 2,
            // 60 J: at 20–50 W a socket wraps every few seconds.
            max_energy_range_uj: 60_000_000,
            dram_watts_per_socket: 1.5,
            // A reader sees the energy at most one step stale: the power it measures over a
            // 500 ms interval is within ±1% of the law's. Shorter steps wake the CPUs more
            // often, and time spent entering and leaving idle is idle to the scheduler but not
            // to /proc/stat: that skews the law's busy fraction.
            step: Duration::from_millis(5),
        }
    }
}

#[derive(Debug, Default)]
struct History {
    /// (Unix time of a write, law's energy in joules up to it).
    points: Vec<(f64, f64)>,
    /// Unix times at which a package counter wrapped.
    wraps: Vec<f64>,
}

pub struct RaplSim {
    dir: PathBuf,
    config: SimConfig,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Idle time of all CPUs (idle + iowait, in seconds) and the number of CPUs, from /proc/stat.
/// Under NO_HZ the kernel reports idle time from its precise idle-sleep accounting (printed in
/// 10 ms units), whereas busy time is sampled at ticks and misses short, timer-aligned runs: so
/// busy is taken as wall-clock time minus idle.
pub fn proc_stat_idle() -> Result<(f64, usize)> {
    let text = fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((idle as f64 / hz, cpus.max(1)))
}

/// Over this trailing window the 10 ms resolution of /proc/stat's idle time is fine enough.
const BUSY_WINDOW: Duration = Duration::from_millis(50);

fn write_atomic(path: &Path, value: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{value}\n"))?;
    fs::rename(tmp, path)
}

/// The CPU time of one cgroup's tasks (cpu.stat `usage_usec`, in seconds) and the number of
/// CPUs.
fn cgroup_busy(cgroup: &Path) -> Result<(f64, usize)> {
    let stat = fs::read_to_string(cgroup.join("cpu.stat"))?;
    let usec = crate::parse_usage_usec(&stat).context("no usage_usec in cpu.stat")?;
    Ok((usec as f64 / 1e6, proc_stat_idle()?.1))
}

impl RaplSim {
    /// Creates the tree under a fresh temporary directory and starts the simulation.
    pub fn start(config: SimConfig) -> Result<Self> {
        Self::start_with(config, None)
    }

    /// As [`RaplSim::start`], but the law's busy fraction is the CPU time of `cgroup`'s tasks
    /// over all CPUs' time, rather than the whole machine's: the power then follows the test's
    /// own workload, whatever else the machine runs.
    pub fn start_for_cgroup(config: SimConfig, cgroup: &Path) -> Result<Self> {
        Self::start_with(config, Some(cgroup.to_owned()))
    }

    fn start_with(config: SimConfig, busy_of: Option<PathBuf>) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "wattlet-rapl-sim-{}-{}",
            std::process::id(),
            unix_now().to_bits()
        ));
        let _ = fs::remove_dir_all(&dir);
        let zone = |id: &str, name: &str, start_uj: u64| -> Result<PathBuf> {
            let z = dir.join("class/powercap").join(id);
            fs::create_dir_all(&z)?;
            fs::write(z.join("name"), format!("{name}\n"))?;
            fs::write(
                z.join("max_energy_range_uj"),
                format!("{}\n", config.max_energy_range_uj),
            )?;
            write_atomic(&z.join("energy_uj"), start_uj)?;
            Ok(z.join("energy_uj"))
        };
        let mut package = Vec::new();
        let mut dram = Vec::new();
        for s in 0..config.sockets {
            // Start near the top, so that the first wrap comes early.
            let start = config.max_energy_range_uj - 5_000_000 * u64::from(s + 1);
            package.push(zone(
                &format!("intel-rapl:{s}"),
                &format!("package-{s}"),
                start,
            )?);
            dram.push(zone(&format!("intel-rapl:{s}:0"), "dram", 0)?);
        }
        fs::create_dir_all(dir.join("class/powercap/intel-rapl"))?;

        let history = Arc::new(Mutex::new(History::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let history = history.clone();
            let stop = stop.clone();
            let starts: Vec<u64> = (0..config.sockets)
                .map(|s| config.max_energy_range_uj - 5_000_000 * u64::from(s + 1))
                .collect();
            thread::Builder::new()
                .name("rapl-sim".into())
                .spawn(move || {
                    // Real-time priority, so that the test's own CPU load cannot delay the
                    // simulated counters (real RAPL counters do not wait for the scheduler).
                    let param = libc::sched_param { sched_priority: 10 };
                    // SAFETY: sets this thread's own policy; param is valid.
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                    let range = config.max_energy_range_uj + 1;
                    let n = f64::from(config.sockets);
                    let mut joules = 0.0f64;
                    let mut dram_joules = 0.0f64;
                    let mut last = Instant::now();
                    // (time, idle seconds of the machine or busy seconds of the cgroup) over
                    // the trailing window.
                    let mut idle_window: std::collections::VecDeque<(Instant, f64)> =
                        Default::default();
                    let mut busy_fraction = 0.0;
                    let mut last_raw: Vec<u64> = starts.clone();
                    history.lock().unwrap().points.push((unix_now(), 0.0));
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(config.step);
                        let now = Instant::now();
                        let dt = now.duration_since(last).as_secs_f64();
                        last = now;
                        // Idle seconds of the machine, or busy seconds of the cgroup.
                        let read = match &busy_of {
                            None => proc_stat_idle(),
                            Some(cg) => cgroup_busy(cg),
                        };
                        if let Ok((idle, cpus)) = read {
                            idle_window.push_back((now, idle));
                            while idle_window.len() > 2
                                && now.duration_since(idle_window[1].0) >= BUSY_WINDOW
                            {
                                idle_window.pop_front();
                            }
                            let (t0, i0) = idle_window[0];
                            let span = now.duration_since(t0).as_secs_f64();
                            if span >= BUSY_WINDOW.as_secs_f64() / 2.0 {
                                // Not clamped: the quantization noise averages out in the
                                // integral, and stays far from making power negative.
                                let part = (idle - i0) / (span * cpus as f64);
                                busy_fraction = match &busy_of {
                                    None => 1.0 - part,
                                    Some(_) => part,
                                };
                            }
                        }
                        joules += config.law.watts(busy_fraction) * dt;
                        dram_joules += config.dram_watts_per_socket * dt;
                        let mut wrapped = 0;
                        for s in 0..config.sockets as usize {
                            let uj = (joules / n * 1e6) as u64;
                            let raw = (starts[s] + uj) % range;
                            if raw < last_raw[s] {
                                wrapped += 1;
                            }
                            last_raw[s] = raw;
                            let _ = write_atomic(&package[s], raw);
                            let _ = write_atomic(&dram[s], (dram_joules * 1e6) as u64 % range);
                        }
                        let now = unix_now();
                        let mut h = history.lock().unwrap();
                        h.points.push((now, joules));
                        h.wraps.extend(std::iter::repeat_n(now, wrapped));
                    }
                })?
        };
        Ok(Self {
            dir,
            config,
            history,
            stop,
            thread: Some(thread),
        })
    }

    /// The directory to pass as `--path.sysfs`.
    pub fn sysfs_root(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The law's energy (all sockets' packages) that the files held at Unix time `t`: the value
    /// of the last write at or before `t`.
    pub fn package_joules_at(&self, t: f64) -> Option<f64> {
        let h = self.history.lock().unwrap();
        let i = h.points.partition_point(|(at, _)| *at <= t);
        (i > 0).then(|| h.points[i - 1].1)
    }

    /// How many times a package counter wrapped between Unix times `t1` and `t2`.
    pub fn wraps_between(&self, t1: f64, t2: f64) -> usize {
        let h = self.history.lock().unwrap();
        h.wraps.iter().filter(|t| **t > t1 && **t <= t2).count()
    }
}

impl Drop for RaplSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
