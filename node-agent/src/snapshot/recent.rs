//! What changed between two published snapshots: the interval, and the CPU share of the node,
//! of each row and of the agent over it. Watts are already per interval (the attribution's);
//! CPU counters are cumulative, so their share of the interval is taken here, from the two
//! snapshots, without measuring anything.

use std::collections::HashMap;

use super::{ContainerRow, Snapshot};
use crate::kernel::CountersSnapshot;

/// The interval since the previously published snapshot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SincePrevious {
    /// Seconds between the two reads of the kernel counters.
    pub seconds: f64,
    /// Busy CPU time of all CPUs over it, as a share of all CPUs' time (0..=1).
    pub busy_share: f64,
    /// The agent's own CPU time over it, as a share of all CPUs' time.
    pub agent_cpu_share: f64,
}

/// Every CPU's time, busy and idle: the interval's capacity.
fn capacity_ns(c: &CountersSnapshot) -> u64 {
    c.busy_ns() + c.idle_ns()
}

/// Sets `s.since_previous` and every row's `cpu_share` from the difference with `previous`.
/// Rows that were not in `previous` ran only since it (a workload's counters start when the
/// agent first sees it). Left unset when no CPU time passed (the same read twice).
pub(super) fn since(s: &mut Snapshot, previous: &Snapshot) {
    let capacity = capacity_ns(&s.counters).saturating_sub(capacity_ns(&previous.counters));
    if capacity == 0 {
        return;
    }
    let share = |now: u64, before: u64| now.saturating_sub(before) as f64 / capacity as f64;

    let before = container_cpu(previous);
    for c in &mut s.containers {
        c.usage.cpu_share = match before.get(&container_key(c)) {
            // Two workloads under one key (a container id reused in another pod): unknown.
            Some(None) => None,
            Some(Some(was)) => Some(share(c.usage.counters.cpu_ns, *was)),
            None => Some(share(c.usage.counters.cpu_ns, 0)),
        };
    }
    let before: HashMap<&str, u64> = previous
        .cgroups
        .iter()
        .map(|c| (&*c.path, c.usage.counters.cpu_ns))
        .collect();
    for c in &mut s.cgroups {
        let was = before.get(&*c.path).copied().unwrap_or(0);
        c.usage.cpu_share = Some(share(c.usage.counters.cpu_ns, was));
    }
    pod_shares(s);

    let agent_ns = |s: &Snapshot| (s.attribution.agent_cpu_seconds * 1e9) as u64;
    s.since_previous = Some(SincePrevious {
        seconds: s
            .counters
            .at
            .saturating_sub(previous.counters.at)
            .as_secs_f64(),
        busy_share: share(s.counters.busy_ns(), previous.counters.busy_ns()),
        agent_cpu_share: share(agent_ns(s), agent_ns(previous)),
    });
}

/// What tells a container row from another across snapshots.
fn container_key(c: &ContainerRow) -> (&'static str, &str, &str) {
    (c.runtime, &c.id, &c.pod_uid)
}

/// Each container's CPU time by key; `None` where two rows share a key.
fn container_cpu(s: &Snapshot) -> HashMap<(&'static str, &str, &str), Option<u64>> {
    let mut cpu = HashMap::new();
    for c in &s.containers {
        cpu.entry(container_key(c))
            .and_modify(|v| *v = None)
            .or_insert(Some(c.usage.counters.cpu_ns));
    }
    cpu
}

/// A pod's share is the sum of its containers'.
fn pod_shares(s: &mut Snapshot) {
    let mut by_pod: HashMap<&str, f64> = HashMap::new();
    for c in &s.containers {
        *by_pod.entry(&c.pod_uid).or_default() += c.usage.cpu_share.unwrap_or(0.0);
    }
    for p in &mut s.pods {
        p.cpu_share = Some(by_pod.get(&*p.uid).copied().unwrap_or(0.0));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{kernel::CpuTime, snapshot::fixture};

    /// The fixture a second later: every CPU 1 s further (0.5 s busy each), the web container
    /// 0.5 s more CPU, `/` 0.25 s more, the rest unchanged.
    fn a_second_later() -> Snapshot {
        let mut s = fixture::snapshot();
        s.counters.at += Duration::from_secs(1);
        for cpu in &mut s.counters.cpus {
            *cpu = CpuTime {
                busy_ns: cpu.busy_ns + 500_000_000,
                idle_ns: cpu.idle_ns + 500_000_000,
            };
        }
        let web = s
            .containers
            .iter_mut()
            .find(|c| &*c.id == fixture::ID_WEB)
            .unwrap();
        web.usage.counters.cpu_ns += 500_000_000;
        let root = s.cgroups.iter_mut().find(|c| &*c.path == "/").unwrap();
        root.usage.counters.cpu_ns += 250_000_000;
        s.attribution.agent_cpu_seconds += 0.02;
        s
    }

    #[test]
    fn shares_are_of_all_cpus_time_over_the_interval() {
        let before = fixture::snapshot();
        let mut s = a_second_later();
        since(&mut s, &before);
        let recent = s.since_previous.unwrap();
        assert_eq!(recent.seconds, 1.0);
        // Two CPUs, 2 s of CPU time in all, 1 s of it busy.
        assert_eq!(recent.busy_share, 0.5);
        assert!((recent.agent_cpu_share - 0.01).abs() < 1e-9);
        let share = |id: &str| {
            let c = s.containers.iter().find(|c| &*c.id == id).unwrap();
            c.usage.cpu_share.unwrap()
        };
        assert_eq!(share(fixture::ID_WEB), 0.25);
        assert_eq!(share(fixture::ID_SIDECAR), 0.0);
        let root = s.cgroups.iter().find(|c| &*c.path == "/").unwrap();
        assert_eq!(root.usage.cpu_share, Some(0.125));
        // The web pod: its two containers (web and the sidecar).
        let pod = s.pods.iter().find(|p| &*p.uid == fixture::UID_WEB).unwrap();
        assert_eq!(pod.cpu_share, Some(0.25));
    }

    #[test]
    fn a_row_new_since_the_previous_snapshot_ran_only_in_the_interval() {
        let mut before = fixture::snapshot();
        before.containers.retain(|c| &*c.id != fixture::ID_SIDECAR);
        let mut s = a_second_later();
        since(&mut s, &before);
        let sidecar = s
            .containers
            .iter()
            .find(|c| &*c.id == fixture::ID_SIDECAR)
            .unwrap();
        // 0.75 s of CPU time of the 2 s the interval had.
        assert_eq!(sidecar.usage.cpu_share, Some(0.375));
    }

    /// The same container id in two pods (seen: tests reusing ids) are two rows, each with its
    /// own share.
    #[test]
    fn rows_are_told_apart_by_runtime_id_and_pod() {
        let twin = |s: &mut Snapshot, cpu_ns: u64| {
            let mut c = s.containers[0].clone();
            c.pod_uid = "another-pod".into();
            c.usage.counters.cpu_ns = cpu_ns;
            s.containers.push(c);
        };
        let mut before = fixture::snapshot();
        twin(&mut before, 100_000_000_000);
        let mut s = a_second_later();
        twin(&mut s, 100_000_000_000);
        since(&mut s, &before);
        let web: Vec<_> = s
            .containers
            .iter()
            .filter(|c| &*c.id == fixture::ID_WEB)
            .map(|c| c.usage.cpu_share)
            .collect();
        assert_eq!(web, [Some(0.25), Some(0.0)]);
        // Two rows under one key: unknown rather than wrong.
        let mut before = fixture::snapshot();
        before.containers.push(before.containers[0].clone());
        let mut s = a_second_later();
        since(&mut s, &before);
        assert_eq!(s.containers[0].usage.cpu_share, None);
    }

    #[test]
    fn the_same_read_twice_sets_nothing() {
        let before = fixture::snapshot();
        let mut s = fixture::snapshot();
        since(&mut s, &before);
        assert_eq!(s.since_previous, None);
        assert!(s.containers.iter().all(|c| c.usage.cpu_share.is_none()));
    }
}
