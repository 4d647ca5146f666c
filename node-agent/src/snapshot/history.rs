//! A short in-memory history of what was published, for the page's chart: node power per zone
//! (active and idle) and the few workloads that drew the most. Bounded twice — by age (the last
//! [`WINDOW`]) and by count (at most [`MAX_POINTS`]) — so its memory is bounded whatever the
//! interval: at the default 5 s interval the window holds 180 points; at 200 ms the count
//! bounds it to the last 3 minutes.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use super::{Snapshot, sum_watts};

/// How far back the history reaches.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The most points it keeps.
pub const MAX_POINTS: usize = 900;
/// How many workloads each point names.
pub const TOP: usize = 5;

/// One published snapshot, reduced to what a chart draws.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPoint {
    /// CLOCK_MONOTONIC of the snapshot's read, for the window (the wall clock can step).
    pub at: Duration,
    /// Unix time of the snapshot, to show.
    pub at_unix: f64,
    /// Per zone, in the snapshot's order.
    pub zones: Vec<ZonePower>,
    /// Over the zones that add up ([`super::total_zones`]); none until power is known.
    pub active_watts: Option<f64>,
    pub idle_watts: Option<f64>,
    /// The containers and cgroups that drew the most, most first (at most [`TOP`]).
    pub top: Vec<TopWorkload>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ZonePower {
    pub zone: String,
    pub active_watts: Option<f64>,
    pub idle_watts: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Container,
    Cgroup,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Container => "container",
            WorkloadKind::Cgroup => "cgroup",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TopWorkload {
    pub kind: WorkloadKind,
    /// The container's id, or the cgroup's path.
    pub id: Arc<str>,
    /// As a person would name it (see [`super::ContainerRow::display_name`]).
    pub name: String,
    /// Over the zones that add up.
    pub watts: f64,
}

impl HistoryPoint {
    pub fn of(s: &Snapshot) -> Self {
        let total = s.total_zones();
        let node = &s.attribution.node;
        let active: Vec<_> = node.iter().map(|z| z.active_watts).collect();
        let idle: Vec<_> = node.iter().map(|z| z.idle_watts).collect();
        Self {
            at: s.counters.at,
            at_unix: s
                .taken_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            zones: node
                .iter()
                .map(|z| ZonePower {
                    zone: z.zone.clone(),
                    active_watts: z.active_watts,
                    idle_watts: z.idle_watts,
                })
                .collect(),
            active_watts: sum_watts(&total, &active).filter(|_| !node.is_empty()),
            idle_watts: sum_watts(&total, &idle).filter(|_| !node.is_empty()),
            top: top_workloads(s, &total),
        }
    }
}

/// The [`TOP`] containers and cgroups by power (a stopped one draws none). Only those are
/// named: a node may run thousands.
fn top_workloads(s: &Snapshot, total: &[usize]) -> Vec<TopWorkload> {
    let watts = |w: &[Option<f64>]| sum_watts(total, w).unwrap_or(0.0);
    let mut all: Vec<(f64, WorkloadKind, usize)> = s
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (watts(&c.usage.watts), WorkloadKind::Container, i))
        .chain(
            s.cgroups
                .iter()
                .enumerate()
                .map(|(i, c)| (watts(&c.usage.watts), WorkloadKind::Cgroup, i)),
        )
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all.truncate(TOP);
    all.into_iter()
        .map(|(watts, kind, i)| match kind {
            WorkloadKind::Container => TopWorkload {
                kind,
                id: s.containers[i].id.clone(),
                name: s.containers[i].display_name(),
                watts,
            },
            WorkloadKind::Cgroup => TopWorkload {
                kind,
                id: s.cgroups[i].path.clone(),
                name: s.cgroups[i].path.to_string(),
                watts,
            },
        })
        .collect()
}

/// The points, oldest first.
#[derive(Debug)]
pub struct History {
    window: Duration,
    capacity: usize,
    points: VecDeque<Arc<HistoryPoint>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(WINDOW, MAX_POINTS)
    }
}

impl History {
    /// Keeps the points of the last `window`, at most `capacity` (at least one) of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            window,
            capacity,
            points: VecDeque::with_capacity(capacity),
        }
    }

    /// Appends `p`, first dropping what is older than the window before it and the oldest
    /// point when full.
    pub fn push(&mut self, p: HistoryPoint) {
        let oldest_kept = p.at.saturating_sub(self.window);
        while self.points.front().is_some_and(|f| f.at < oldest_kept) {
            self.points.pop_front();
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(Arc::new(p));
    }

    pub fn points(&self) -> Vec<Arc<HistoryPoint>> {
        self.points.iter().cloned().collect()
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::fixture;

    fn point_at(secs: u64) -> HistoryPoint {
        HistoryPoint {
            at: Duration::from_secs(secs),
            at_unix: secs as f64,
            zones: Vec::new(),
            active_watts: None,
            idle_watts: None,
            top: Vec::new(),
        }
    }

    #[test]
    fn a_point_is_the_node_and_the_top_workloads() {
        let p = HistoryPoint::of(&fixture::snapshot());
        let zones: Vec<_> = p.zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(zones, ["dram", "package"]);
        // package + dram: 9 + 0.5 W active, 6 + 2 W idle.
        assert_eq!(p.active_watts, Some(9.5));
        assert_eq!(p.idle_watts, Some(8.0));
        let top: Vec<_> = p.top.iter().map(|t| (t.name.as_str(), t.watts)).collect();
        assert_eq!(
            top,
            [
                ("shop/web-7d9f/nginx", 2.6),
                ("/", 1.7),
                ("shop/web-7d9f/istio-proxy", 0.55),
                ("/system.slice/odd\"unit\\name\n.scope", 0.26),
                ("(cgroup map full)", 0.1),
            ]
        );
        assert_eq!(p.top[0].kind, WorkloadKind::Container);
    }

    #[test]
    fn points_older_than_the_window_go() {
        let mut h = History::new(Duration::from_secs(10), 100);
        for t in [0, 5, 10, 11, 12, 25] {
            h.push(point_at(t));
        }
        let kept: Vec<_> = h.points().iter().map(|p| p.at.as_secs()).collect();
        assert_eq!(kept, [25]);
        h.push(point_at(30));
        let kept: Vec<_> = h.points().iter().map(|p| p.at.as_secs()).collect();
        assert_eq!(kept, [25, 30]);
    }

    proptest! {
        /// Whatever the intervals (including none, and the clock standing still), never more
        /// than the capacity, never a point older than the window, and the newest always kept.
        #[test]
        fn bounded_by_count_and_age(
            capacity in 1usize..50,
            window in 1u64..100,
            steps in proptest::collection::vec(0u64..20, 0..300),
        ) {
            let mut h = History::new(Duration::from_secs(window), capacity);
            let mut t = 0;
            for step in steps {
                t += step;
                h.push(point_at(t));
                let points = h.points();
                prop_assert!(points.len() <= capacity);
                prop_assert!(points.iter().all(|p| p.at.as_secs() + window >= t));
                prop_assert_eq!(points.last().unwrap().at.as_secs(), t);
                prop_assert!(points.windows(2).all(|w| w[0].at <= w[1].at));
            }
        }
    }
}
